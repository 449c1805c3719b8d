"""TurnWritesServer: writes leave at the end of the turn, and Twisted's
guarantees (order, backpressure, closing, errors) hold. A fake socket takes
as many bytes as it has room for; the reactor is a MemoryReactorClock, whose
clock.advance(0) ends the turn."""

import errno

from twisted.internet import protocol
from twisted.internet.interfaces import IPushProducer, IReactorTCP, IReactorTime
from twisted.internet.main import CONNECTION_DONE, CONNECTION_LOST
from twisted.python.failure import Failure
from twisted.internet.testing import MemoryReactor, MemoryReactorClock
from zope.interface import implementer

from kafkaw.transport.turnwrites import TurnWritesPort, TurnWritesReactor, TurnWritesServer, _TurnEnd


class FakeSocket:
    """A non-blocking socket whose kernel buffer has C{room} bytes."""

    def __init__(self, room=1 << 20):
        self.room = room
        self.sent = []  # what each send() took
        self.error = None

    def setblocking(self, flag):
        pass

    def fileno(self):
        return 99

    def send(self, data):
        if self.error is not None:
            raise OSError(self.error, "fake")
        if not self.room:
            raise BlockingIOError(errno.EAGAIN, "fake")
        taken = bytes(data[: self.room])
        self.room -= len(taken)
        self.sent.append(taken)
        return len(taken)

    def shutdown(self, how):
        pass

    def close(self):
        pass

    def received(self):
        return b"".join(self.sent)


class FakePort:
    _realPortNumber = 9092

    def __init__(self, reactor):
        self.turnEnd = _TurnEnd(reactor)


@implementer(IPushProducer)
class Producer:
    def __init__(self):
        self.events = []

    def pauseProducing(self):
        self.events.append("pause")

    def resumeProducing(self):
        self.events.append("resume")

    def stopProducing(self):
        self.events.append("stop")


def connection(room=1 << 20):
    reactor = MemoryReactorClock()
    skt = FakeSocket(room)
    proto = protocol.Protocol()
    transport = TurnWritesServer(skt, proto, ("127.0.0.1", 40000), FakePort(reactor), 1, reactor)
    proto.makeConnection(transport)
    return reactor, skt, transport


def test_writesOfOneTurnLeaveTogetherAtItsEnd():
    reactor, skt, transport = connection()
    transport.write(b"one")
    transport.writeSequence([b"two", b"three"])
    assert skt.sent == []  # nothing before the turn ends
    reactor.advance(0)
    assert skt.sent == [b"onetwothree"]  # one send
    assert transport not in reactor.getWriters()  # the reactor never watched the socket
    transport.write(b"four")
    reactor.advance(0)
    assert skt.sent == [b"onetwothree", b"four"]


def test_whatTheKernelDoesNotTakeWaitsForTheWritableEvent():
    reactor, skt, transport = connection(room=4)
    transport.write(b"abcdefgh")
    reactor.advance(0)
    assert skt.received() == b"abcd"
    assert transport in reactor.getWriters()
    # Written while the reactor watches: it goes with the rest, in order, on
    # the writable event, not at the end of the turn.
    transport.write(b"ijkl")
    reactor.advance(0)
    assert skt.received() == b"abcd"
    skt.room = 100
    assert transport.doWrite() is None
    assert skt.received() == b"abcdefghijkl"
    assert transport not in reactor.getWriters()
    transport.write(b"m")  # back to sending at the end of the turn
    reactor.advance(0)
    assert skt.received() == b"abcdefghijklm"
    assert transport not in reactor.getWriters()


def test_aFullBufferPausesTheProducerUntilItIsSent():
    reactor, skt, transport = connection(room=0)
    producer = Producer()
    transport.registerProducer(producer, True)
    transport.write(b"x" * (transport.bufferSize + 1))
    assert producer.events == ["pause"]
    reactor.advance(0)
    assert skt.sent == [] and transport in reactor.getWriters()
    skt.room = 1 << 20
    transport.doWrite()
    assert producer.events == ["pause", "resume"]
    assert len(skt.received()) == transport.bufferSize + 1


def test_closingAfterAWriteSendsItThenCloses():
    reactor, skt, transport = connection()
    transport.write(b"last answer")
    transport.loseConnection()
    reactor.advance(0)
    assert transport in reactor.getWriters()  # closing is Twisted's own path
    assert transport.doWrite() is CONNECTION_DONE
    assert skt.received() == b"last answer"


def test_anErrorIsLeftToTheReactor():
    reactor, skt, transport = connection()
    skt.error = errno.ECONNRESET
    transport.write(b"lost")
    reactor.advance(0)
    assert transport in reactor.getWriters()  # whose doWrite reports the loss, as always
    assert transport.doWrite() is CONNECTION_LOST


def test_aConnectionLostBeforeTheTurnEndsSendsNothing():
    reactor, skt, transport = connection()
    transport.write(b"never sent")
    transport.connectionLost(Failure(CONNECTION_LOST))
    reactor.advance(0)
    assert skt.sent == []
    assert transport not in reactor.getWriters()


def test_manyConnectionsShareOneTimedCallPerTurn():
    reactor = MemoryReactorClock()
    port = FakePort(reactor)
    sockets = [FakeSocket() for _ in range(3)]
    for number, skt in enumerate(sockets):
        proto = protocol.Protocol()
        proto.makeConnection(TurnWritesServer(skt, proto, ("127.0.0.1", 40000 + number), port, number, reactor))
        proto.transport.write(b"answer %d" % number)
    assert len(reactor.getDelayedCalls()) == 1
    reactor.advance(0)
    assert [skt.sent for skt in sockets] == [[b"answer 0"], [b"answer 1"], [b"answer 2"]]


def test_otherReactorsListenAsTheyDo():
    memory = MemoryReactor()
    factory = protocol.Factory.forProtocol(protocol.Protocol)
    TurnWritesReactor(memory).listenTCP(9092, factory, interface="127.0.0.1")
    assert memory.tcpServers == [(9092, factory, 50, "127.0.0.1")]
    TurnWritesReactor(memory).listenSSL(9093, factory, "context", interface="127.0.0.1")
    assert memory.sslServers == [(9093, factory, "context", 50, "127.0.0.1")]
    assert TurnWritesReactor(memory).listenUNIX == memory.listenUNIX  # everything else is the reactor's
    assert IReactorTCP.providedBy(TurnWritesReactor(memory)) and IReactorTime.providedBy(TurnWritesReactor(MemoryReactorClock()))
    assert TurnWritesPort.transport is TurnWritesServer
