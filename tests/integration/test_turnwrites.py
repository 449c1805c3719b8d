"""TurnWritesServer on a real reactor and a real socket on 127.0.0.1: answers
of one turn leave together, and one larger than the kernel's buffers reaches
a slow reader whole and in order through the writable events."""

import socket
import time

from twisted.internet import epollreactor, protocol

from kafkaw.transport.turnwrites import TurnWritesReactor, TurnWritesServer


class Answering(protocol.Protocol):
    """Answers each request byte with the answers the test set for it."""

    answers = {}
    connections = []

    def connectionMade(self):
        self.connections.append(self)

    def dataReceived(self, data):
        for byte in data:
            for answer in self.answers[byte]:
                self.transport.write(answer)


def serve(answers):
    reactor = epollreactor.EPollReactor()
    Answering.answers, Answering.connections = answers, []
    port = TurnWritesReactor(reactor).listenTCP(0, protocol.Factory.forProtocol(Answering), interface="127.0.0.1")
    client = socket.create_connection(("127.0.0.1", port.getHost().port))
    client.setblocking(False)
    return reactor, port, client


def exchange(reactor, client, request, expected, readSize=65536, deadline=30.0, watched=None):
    """Send C{request}, read C{expected} bytes; C{watched}: a transport whose
    being watched by the reactor (a send pending) is asserted first."""
    client.sendall(request)
    if watched is not None:
        for _ in range(100):
            reactor.iterate(0.001)
            if watched in reactor.getWriters():
                break
        assert watched in reactor.getWriters()
    received = bytearray()
    stop = time.monotonic() + deadline
    while len(received) < expected and time.monotonic() < stop:
        reactor.iterate(0.001)
        try:
            received += client.recv(readSize)
        except BlockingIOError:
            pass
    return bytes(received)


def test_answersOfOneTurnArriveTogetherAndLargeOnesWhole():
    large = bytes(range(256)) * (32 * 1024)  # 8 MB: more than the socket buffers hold
    reactor, port, client = serve({ord("a"): [b"one", b"two", b"three"], ord("b"): [large, b"end"]})
    try:
        assert exchange(reactor, client, b"a", 11) == b"onetwothree"
        (connection,) = Answering.connections
        assert isinstance(connection.transport, TurnWritesServer)
        assert connection.transport not in reactor.getWriters()  # sent at the turn's end, never watched
        # What the kernel did not take goes through the writable events, in order.
        answer = exchange(reactor, client, b"b", len(large) + 3, readSize=16384, watched=connection.transport)
        assert answer == large + b"end"
        assert connection.transport not in reactor.getWriters()
    finally:
        client.close()
        port.stopListening()
        for _ in range(10):
            reactor.iterate(0)
        reactor.removeAll()
