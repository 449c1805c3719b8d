"""Kafka's own transport: a stream of size-prefixed frames (TCP, TLS, UNIX sockets)."""

import struct

from twisted.internet import protocol
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from kafkaw.broker.gateway import SLOW_READER, IKafkaConnection
from kafkaw.protocol.framing import Framer, FrameTooLarge

_SIZE = struct.Struct(">i")


def hostAndPort(address, fallbackPort=9092):
    """(host, port) of a Twisted address; UNIX sockets have neither."""
    host = getattr(address, "host", None) or "localhost"
    return host, getattr(address, "port", fallbackPort)


@implementer(IPushProducer)
class Backpressure:
    """A transport's push producer: while its write buffer is full, C{pauser}
    (a L{Gateway}, or the shim's other side) holds C{reason} and stops reading."""

    def __init__(self, pauser, reason):
        self.pauser = pauser
        self.reason = reason

    def pauseProducing(self):
        self.pauser.pause(self.reason)

    def resumeProducing(self):
        self.pauser.resume(self.reason)

    def stopProducing(self):
        pass


@implementer(IKafkaConnection)
class KafkaProtocol(protocol.Protocol):
    """Frames a byte stream for a L{Gateway}.

    It registers a L{Backpressure} on the transport, so when the client stops
    reading and the write buffer fills, the gateway stops reading requests too.
    """

    log = Logger()

    def __init__(self, broker, maxRequestBytes, authenticate=False):
        self._broker = broker
        self._maxRequestBytes = maxRequestBytes
        self._authenticate = authenticate  # an endpoint served with --sasl
        self._framer = Framer(maxRequestBytes)
        self._badFrame = False  # a bad size prefix was read: closing, the rest is not read
        self.gateway = None
        self.peer = None
        self.peerHost = None

    def connectionMade(self):
        address = self.transport.getPeer()
        self.peer = str(address)
        self.peerHost = getattr(address, "host", None) or self.peer  # UNIX sockets: no host
        self.gateway = self._broker.openGateway(self, self._authenticate)
        if self.gateway is None:
            self.transport.loseConnection()
            return
        self.transport.registerProducer(Backpressure(self.gateway, SLOW_READER), True)
        if hasattr(self.transport, "setTcpNoDelay"):  # TCP and TLS; not UNIX sockets
            self.transport.setTcpNoDelay(True)  # a small response must not wait for a delayed ACK
        self._broker.metrics.connectionOpened("tcp")
        self.log.info("{transport} connection from {peer}", transport="tcp", peer=self.peer)

    def dataReceived(self, data):
        if self.gateway is None or self._badFrame:
            return  # refused (--max-connections), or after a bad size prefix; closing
        self._framer.maxFrameSize = self.gateway.requestBytesLimit(self._maxRequestBytes)
        try:
            frames = self._framer.feed(data)
        except FrameTooLarge as e:
            self._badFrame = True
            return self.gateway.framingFailed(e.frames, str(e))
        for frame in frames:
            self.gateway.requestReceived(frame)

    def connectionLost(self, reason):
        if self.gateway is not None:
            self.gateway.connectionLost()
            self._broker.metrics.connectionClosed("tcp")
            self.log.info(
                "{transport} connection from {peer} closed after {duration:.1f} s and {requests} requests",
                transport="tcp", peer=self.peer, duration=self._broker.clock.seconds() - self.gateway.openedAt,
                requests=self.gateway.requests,
            )

    # IKafkaConnection
    def localAddress(self):
        return hostAndPort(self.transport.getHost())

    def sendResponse(self, chunks):
        size = sum(map(len, chunks))
        self.transport.writeSequence([_SIZE.pack(size), *chunks])

    def pauseReading(self):
        self.transport.pauseProducing()

    def resumeReading(self):
        self.transport.resumeProducing()

    def close(self):
        # A paused push producer would keep the connection open once its
        # output is written (Twisted resumes the producer instead of closing).
        if self.transport.producer is not None:
            self.transport.unregisterProducer()
        self.transport.loseConnection()

    def abort(self):
        self.transport.abortConnection()


class KafkaFactory(protocol.Factory):
    def __init__(self, broker, maxRequestBytes, authenticate=False):
        self.broker = broker
        self.maxRequestBytes = maxRequestBytes
        self.authenticate = authenticate  # connections must authenticate with SASL (--sasl)

    def buildProtocol(self, addr):
        return KafkaProtocol(self.broker, self.maxRequestBytes, self.authenticate)
