"""Kafka over WebSocket, framed as kafka-websocket-shim frames it.

Each binary message carries request bytes *including* their 4-byte size
prefix. The bytes of all messages go through the same L{Framer} as a TCP
stream, so a request split across messages, or several requests in one
message, are reassembled; each response goes out as exactly one binary
message, size prefix included. Request handling is the shared L{Gateway}.

Messages are not collected: Autobahn's frame-level hooks (its "advanced"
receive API) hand each piece of payload to the framer as it is read, so a
request is joined once, by the framer, as over TCP.

No subprotocol is needed (one offered as C{binary} is accepted, since the
bytes are treated as a stream anyway); the path must be C{/}. Handshakes that
carry an C{Origin} header (only browsers send one) are refused unless the
origin is allowed (C{--websocket-allowed-origin}): otherwise any web page open
on the broker's machine could read and write topics through
C{ws://127.0.0.1:9093/} (the TCP endpoint is out of a browser's reach).
"""

import fnmatch
import struct

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.logger import Logger
from zope.interface import implementer

from kafkaw.broker.gateway import SLOW_READER, IKafkaConnection
from kafkaw.protocol.framing import Framer, FrameTooLarge
from kafkaw.transport.tcp import Backpressure, hostAndPort

_SIZE = struct.Struct(">i")
# RFC 6455 frame header of a final binary frame, by payload length: < 126, < 2**16, else.
_FIN_BINARY = 0x82
_FRAME_HEAD_7 = struct.Struct(">BB")
_FRAME_HEAD_16 = struct.Struct(">BBH")
_FRAME_HEAD_64 = struct.Struct(">BBQ")

# RFC 6455 close codes used here.
CLOSE_UNSUPPORTED_DATA = 1003  # a text message
CLOSE_POLICY_VIOLATION = 1008  # the gateway rejected a request (unsupported API, malformed…)
CLOSE_MESSAGE_TOO_BIG = 1009  # a message or a request frame above --max-request-bytes
CLOSE_TRY_AGAIN_LATER = 1013  # --max-connections are open

log = Logger()


@implementer(IKafkaConnection)
class KafkaWebSocketProtocol(WebSocketServerProtocol):
    """One WebSocket client: binary messages in, one binary message per response out.

    Backpressure as in L{kafkaw.transport.tcp.KafkaProtocol}: a L{Backpressure}
    is the push producer of the underlying (TCP or TLS) transport, so when the
    client stops reading and the write buffer fills, the gateway stops reading
    requests; the gateway pauses reading through the same transport.
    """

    def __init__(self, broker, maxRequestBytes, authenticate=False):
        super().__init__()
        self._broker = broker
        self._maxRequestBytes = maxRequestBytes
        self._authenticate = authenticate  # an endpoint served with --sasl
        self._framer = Framer(maxRequestBytes)
        self._kafkaClosing = False
        self._badFrame = False  # a bad size prefix was read: the rest is not read
        self._messageBytes = 0  # payload bytes announced so far by the frames of the current message
        self.gateway = None
        self.peerHost = None

    def dataReceived(self, data):
        # Autobahn's Twisted dataReceived only adds a debug log line whose
        # arguments it formats on every read: its _dataReceived is called directly.
        self._dataReceived(data)

    # --- WebSocket events -------------------------------------------------

    def onConnect(self, request):
        if request.path != "/":
            log.info("WebSocket request from {peer} for path {path!r} refused (only / is served)", peer=self.peer, path=request.path)
            raise ConnectionDeny(ConnectionDeny.NOT_FOUND, "kafkaw serves Kafka on path /")
        if request.origin and not self.factory.originAllowed(request.origin):  # origin is "" when absent
            log.warn("WebSocket request from {peer} with Origin {origin!r} refused (browsers are not served)", peer=self.peer, origin=request.origin)
            raise ConnectionDeny(ConnectionDeny.FORBIDDEN, "kafkaw does not serve browsers (Origin header present)")
        if "binary" in request.protocols:
            return "binary"
        return None

    def onOpen(self):
        if hasattr(self.transport, "setTcpNoDelay"):  # TCP and TLS; not UNIX sockets
            self.transport.setTcpNoDelay(True)  # a small response must not wait for a delayed ACK
        self.peerHost = getattr(self.transport.getPeer(), "host", None) or self.peer  # by which SASL failures are slowed
        self.gateway = self._broker.openGateway(self, self._authenticate)
        if self.gateway is None:
            self._closeWith(CLOSE_TRY_AGAIN_LATER, "too many connections; try again later")
            return
        self.transport.registerProducer(Backpressure(self.gateway, SLOW_READER), True)
        self._broker.metrics.connectionOpened("websocket")
        log.info("{transport} connection from {peer}", transport="websocket", peer=self.peer)

    def onMessageBegin(self, isBinary):
        self._messageBytes = 0
        if not isBinary and not self._kafkaClosing:
            log.warn("text WebSocket message from {peer}; only binary messages carry Kafka requests; closing with {code}", peer=self.peer, code=CLOSE_UNSUPPORTED_DATA)
            self._closeWith(CLOSE_UNSUPPORTED_DATA, "kafkaw accepts binary messages only")

    def onMessageFrameBegin(self, length):
        # Called with each frame's announced length, before its payload is
        # read: a message above the limit is refused before it is read.
        self._messageBytes += length
        maximum = self.factory.maxMessageBytes
        if self.gateway is not None:  # smaller until SASL authentication
            maximum = self.gateway.requestBytesLimit(self._maxRequestBytes) + 4
        if not self._kafkaClosing and self._messageBytes > maximum:
            self._kafkaClosing = True
            log.warn(
                "WebSocket message from {peer} too large ({size:,d} > {maximum:,d} bytes); closing with {code}",
                peer=self.peer, size=self._messageBytes, maximum=maximum, code=CLOSE_MESSAGE_TOO_BIG,
            )
            self._broker.metrics.requestRefused(None)
            self._closeWith(CLOSE_MESSAGE_TOO_BIG, "message larger than --max-request-bytes")

    def onMessageFrameData(self, payload):
        if self._kafkaClosing or self._badFrame:
            return
        self._framer.maxFrameSize = self.gateway.requestBytesLimit(self._maxRequestBytes)
        try:
            frames = self._framer.feed(payload)
        except FrameTooLarge as e:
            self._badFrame = True
            return self.gateway.framingFailed(
                e.frames,
                f"{e} (close code {CLOSE_MESSAGE_TOO_BIG})",
                lambda: self._closeWith(CLOSE_MESSAGE_TOO_BIG, "request larger than --max-request-bytes"),
            )
        for frame in frames:
            self.gateway.requestReceived(frame)

    # Autobahn's own versions of these two collect the frame and the message
    # (and join them for onMessage); here every byte has gone to the framer.
    def onMessageFrameEnd(self):
        pass

    def onMessageEnd(self):
        pass

    def onClose(self, wasClean, code, reason):
        if self.gateway is not None:
            self.gateway.connectionLost()
            if self.closedByMe:
                code = self.localCloseCode
            self._broker.metrics.connectionClosed("websocket")
            log.info(
                "{transport} connection from {peer} closed (code {code}) after {duration:.1f} s and {requests} requests",
                transport="websocket", peer=self.peer, code=code,
                duration=self._broker.clock.seconds() - self.gateway.openedAt, requests=self.gateway.requests,
            )

    def _closeWith(self, code, reason):
        self._kafkaClosing = True
        if self.gateway is not None:
            self.gateway.connectionLost()  # no more answers: cancel parked fetches now
        self.transport.resumeProducing()  # the gateway may have paused reading; the close handshake reads
        if self.transport.producer is not None:
            self.transport.unregisterProducer()  # a paused producer would keep the connection open after the close
        # sendClose() only allows application codes (1000, 3000-4999). Failing
        # the connection sends these RFC 6455 codes in a close frame (failByDrop
        # is off) and makes Autobahn discard whatever the client still sends.
        self._fail_connection(code, reason)

    # --- IKafkaConnection -------------------------------------------------

    def localAddress(self):
        return hostAndPort(self.transport.getHost(), 9093)

    def sendResponse(self, chunks):
        if self.state != self.STATE_OPEN:
            return  # closing: Autobahn refuses to send, and the client is not reading answers
        # One unfragmented binary frame, as Autobahn's sendMessage would send
        # (a server's frames are not masked; no extension is negotiated), but
        # its header is written next to the chunks: no copy of the whole
        # response into one message and again into one frame (two copies of
        # every Fetch answer), and none of sendMessage's per-call checks and
        # debug formatting.
        size = sum(map(len, chunks))
        length = size + _SIZE.size
        if length < 126:
            header = _FRAME_HEAD_7.pack(_FIN_BINARY, length)
        elif length < 65536:
            header = _FRAME_HEAD_16.pack(_FIN_BINARY, 126, length)
        else:
            header = _FRAME_HEAD_64.pack(_FIN_BINARY, 127, length)
        self.transport.writeSequence([header, _SIZE.pack(size), *chunks])

    def pauseReading(self):
        self.transport.pauseProducing()

    def resumeReading(self):
        self.transport.resumeProducing()

    def close(self):
        if not self._kafkaClosing:
            self._closeWith(CLOSE_POLICY_VIOLATION, "request rejected; see the broker log")

    def abort(self):
        self._kafkaClosing = True
        self.dropConnection(abort=True)


class KafkaWebSocketFactory(WebSocketServerFactory):
    """Serves one L{kafkaw.broker.gateway.Broker} to WebSocket clients."""

    def __init__(self, broker, maxRequestBytes, reactor=None, allowedOrigins=(), authenticate=False):
        super().__init__(reactor=reactor)
        self.broker = broker
        self.authenticate = authenticate  # connections must authenticate with SASL (--sasl)
        self.maxRequestBytes = maxRequestBytes
        # A message holds at most one largest request with its size prefix.
        # Autobahn's maxMessagePayloadSize would also refuse to *send* larger
        # messages (a Fetch answer may well be larger), so the limit is checked
        # in onMessageFrameBegin instead, as each frame header arrives; that
        # also covers what maxFramePayloadSize would.
        self.maxMessageBytes = maxRequestBytes + 4
        self.setProtocolOptions(failByDrop=False)  # close frames carry the code; not just a TCP drop
        self.browserOrigins = list(allowedOrigins)

    def originAllowed(self, origin):
        """Whether a browser's C{Origin} (C{scheme://host[:port]}, as sent)
        matches one of the allowed patterns (C{*} matches anything)."""
        return any(fnmatch.fnmatchcase(origin, pattern) for pattern in self.browserOrigins)

    def buildProtocol(self, addr):
        protocol = KafkaWebSocketProtocol(self.broker, self.maxRequestBytes, self.authenticate)
        protocol.factory = self
        return protocol
