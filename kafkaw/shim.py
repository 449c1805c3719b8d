"""C{twistd kafkaw-shim}: stock Kafka clients on TCP, a kafkaw broker on WebSocket.

For each TCP connection the shim opens one WebSocket to the broker
(kafka-websocket-shim framing: each request, size prefix included, is one
binary message; each response comes back as one binary message, size prefix
included) and pipes both ways. Reading from the client waits until the
WebSocket is open; connecting is retried a bounded number of times; when
either side closes, so does the other.

Both ways, bytes are streamed, not reassembled: a request goes out as one
WebSocket frame whose header is written as soon as the request's size prefix
and header are read, its bytes masked and written as they arrive; response
bytes are written to the client as each WebSocket read delivers them. A large
Fetch answer or Produce request is never copied whole in the shim (fresh
megabyte allocations cost more than the copying itself).

Metadata and FindCoordinator: a client that follows their answers must
reconnect to the shim, not to the broker's WebSocket address (which speaks a
different framing and may not be reachable). The shim remembers the
correlation id and version of every Metadata and FindCoordinator request it
forwards, holds the matching response whole, and in it replaces every broker's
(or the coordinator's) host and port with the address the client reached the shim on (or
C{--advertised-host}/C{--advertised-port}). kafkaw is a single broker, so
"every broker" is that one broker.
"""

import os
import re
import struct

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from autobahn.websocket.protocol import WebSocketProtocol
from autobahn.websocket.util import parse_url
from autobahn.websocket.xormasker import create_xor_masker
from twisted.application import service, strports
from twisted.internet import defer, protocol
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.ssl import Certificate, optionsForClientTLS, trustRootFromCertificates
from twisted.logger import Logger
from twisted.python import usage

from kafkaw.config import ConfigFileOptions, positive
from kafkaw.protocol import apiversions, schema
from kafkaw.protocol.api import ApiKey
from kafkaw.protocol.errors import CodecError
from kafkaw.protocol.framing import FrameTooLarge
from kafkaw.transport.tcp import Backpressure, hostAndPort
from kafkaw.transport.turnwrites import TurnWritesReactor

DEFAULT_LISTEN = "tcp:9092:interface=127.0.0.1"
CONNECT_ATTEMPTS = 5  # 1 try + 4 retries
RETRY_DELAYS = (0.25, 0.5, 1.0, 2.0)  # seconds before retry 1, 2, 3, 4 (and after)
MAX_RESPONSE_BYTES = 2**31 - 1

_SIZE = struct.Struct(">i")
_HEADER = struct.Struct(">hhi")  # api key, api version, correlation id
_REQUEST_HEAD = struct.Struct(">ihhi")  # size prefix, then the request header's first three fields
_RESPONSE_HEAD = struct.Struct(">ii")  # size prefix, correlation id
# RFC 6455 header of a client's (masked) final binary frame, by payload length: < 126, < 2**16, else.
_FIN_BINARY = 0x82
_MASKED = 0x80
_FRAME_HEAD_7 = struct.Struct(">BB")
_FRAME_HEAD_16 = struct.Struct(">BBH")
_FRAME_HEAD_64 = struct.Struct(">BBQ")

log = Logger()


FIND_COORDINATOR = 10
# The answers that name a broker's address, which the shim replaces by its own.
ADDRESSING = (ApiKey.METADATA, FIND_COORDINATOR)


def rewriteMetadataResponse(frame, version, host, port):
    """A Metadata response frame (no size prefix) of C{version} with every broker at C{host}:C{port}.

    Raises L{CodecError} if C{frame} is not a Metadata response of that version.
    """
    correlationId, response = schema.decodeResponse(ApiKey.METADATA, version, frame)
    brokers = [broker._replace(host=host, port=port) for broker in response.brokers]
    return b"".join(schema.encodeResponse(ApiKey.METADATA, version, correlationId, response._replace(brokers=brokers)))


def rewriteFindCoordinatorResponse(frame, version, host, port):
    """A FindCoordinator response frame of C{version} naming C{host}:C{port}
    as the coordinator (an error answer names none and is kept as it is).

    Raises L{CodecError} if C{frame} is not a FindCoordinator response of that version.
    """
    correlationId, response = schema.decodeResponse(FIND_COORDINATOR, version, frame)
    if response.errorCode:
        return frame
    return b"".join(schema.encodeResponse(FIND_COORDINATOR, version, correlationId, response._replace(host=host, port=port)))


_REWRITES = {ApiKey.METADATA: rewriteMetadataResponse, FIND_COORDINATOR: rewriteFindCoordinatorResponse}


def maskedFrameHead(length, mask):
    """The RFC 6455 header of one final binary frame of C{length} payload
    bytes, masked (as a client's frames must be) with the 4 bytes C{mask}."""
    if length < 126:
        return _FRAME_HEAD_7.pack(_FIN_BINARY, _MASKED | length) + mask
    if length < 65536:
        return _FRAME_HEAD_16.pack(_FIN_BINARY, _MASKED | 126, length) + mask
    return _FRAME_HEAD_64.pack(_FIN_BINARY, _MASKED | 127, length) + mask


def _noDelay(transport):
    """Turn Nagle's algorithm off on a TCP transport (or the TCP under TLS):
    the shim forwards bytes as soon as it has them, and a small request or
    response held back until the last is acknowledged waits for the peer's
    delayed ACK (up to 40 ms on Linux), once per round trip."""
    for candidate in (transport, getattr(transport, "transport", None)):
        if hasattr(candidate, "setTcpNoDelay"):
            candidate.setTcpNoDelay(True)
            return


class _ReadPauser:
    """Pauses reading on a transport while any of several reasons holds."""

    def __init__(self, transport):
        self.transport = transport
        self.reasons = set()

    def pause(self, reason):
        if not self.reasons:
            self.transport.pauseProducing()
        self.reasons.add(reason)

    def resume(self, reason):
        if reason in self.reasons:
            self.reasons.discard(reason)
            if not self.reasons:
                self.transport.resumeProducing()


class BrokerWebSocket(WebSocketClientProtocol):
    """The WebSocket to the broker of one shimmed client connection.

    It overrides Autobahn's frame-level hooks (its "advanced" receive API), so
    Autobahn never collects a message: each piece of payload goes to the shim
    as it is read. Requests go out through L{sendRequestBytes}, not
    C{sendMessage}.
    """

    shim = None  # the ShimProtocol, set by its factory

    def dataReceived(self, data):
        # Autobahn's Twisted dataReceived only adds a debug log line whose
        # arguments it formats on every read: its _dataReceived is called directly.
        self._dataReceived(data)

    def onOpen(self):
        self.shim.webSocketOpen(self)

    def onMessageBegin(self, isBinary):
        self.shim.responseMessageBegins(isBinary)

    def onMessageFrameBegin(self, length):
        pass  # the shim follows the responses' own size prefixes, not frame or message boundaries

    def onMessageFrameData(self, payload):
        self.shim.responseBytes(payload)

    def onMessageFrameEnd(self):
        pass

    def onMessageEnd(self):
        pass

    def onClose(self, wasClean, code, reason):
        self.shim.webSocketClosed(self, code, reason)

    def sendRequestBytes(self, chunks):
        """Write frame headers and masked payload bytes, as the shim cut them.

        Autobahn's C{sendMessage} would copy each request into a message and
        again into a frame (and its streaming send API ends every message with
        an extra empty frame, which the broker would parse once per request);
        the shim writes one frame per request itself, as the broker writes
        its answers.
        """
        if self.state == self.STATE_OPEN:
            self.transport.writeSequence(chunks)

class _BrokerWebSocketFactory(WebSocketClientFactory):
    protocol = BrokerWebSocket
    noisy = False  # one per client connection: the shim logs its own line

    def __init__(self, shim, url, reactor):
        super().__init__(url, reactor=reactor)
        self.shim = shim
        self.setProtocolOptions(openHandshakeTimeout=10, closeHandshakeTimeout=1)

    def buildProtocol(self, addr):
        proto = super().buildProtocol(addr)
        proto.shim = self.shim
        self.shim.webSocketBuilt(proto)
        return proto


class Connector:
    """Where and how the shim opens WebSockets: URL, TLS trust, retries."""

    def __init__(self, url, reactor, trustRoot=None, attempts=CONNECT_ATTEMPTS, delays=RETRY_DELAYS):
        isSecure, host, port, _, _, _ = parse_url(url)
        self.url = url
        self.reactor = reactor
        self.attempts = attempts
        self.delays = delays
        self.endpoint = HostnameEndpoint(reactor, host, port, timeout=10)
        if isSecure:
            self.endpoint = wrapClientTLS(optionsForClientTLS(host, trustRoot=trustRoot), self.endpoint)

    def delay(self, attempt):
        """Seconds to wait after failed attempt number C{attempt} (1-based)."""
        return self.delays[min(attempt, len(self.delays)) - 1]


class ShimProtocol(protocol.Protocol):
    """One stock Kafka client on TCP, piped to one WebSocket to the broker."""

    def __init__(self, connector, maxRequestBytes, advertisedHost=None, advertisedPort=None):
        self.connector = connector
        self.maxRequestBytes = maxRequestBytes
        self.advertisedHost = advertisedHost
        self.advertisedPort = advertisedPort
        # Requests, client to broker: each becomes one masked frame, written as its bytes arrive.
        self._requestHead = b""  # the start of the next request, until its size and header are whole
        self._requestLeft = 0  # bytes of the current request (its frame's payload) still to come
        self._masker = None  # the current frame's XOR masker
        # Responses, broker to client: written as they arrive, but for the ADDRESSING ones, held and rewritten.
        self._responseHead = b""  # the start of the next response, until its size and correlation id are whole
        self._responseLeft = 0  # bytes of the current response, size prefix included, still to come
        self._held = None  # the pieces of a response held for a rewrite, while it is incomplete
        self._heldAs = None  # its (api key, version)
        self._addressing = {}  # correlation id -> [(api key, version) of the ADDRESSING requests outstanding with it]
        self._attempt = 0
        self._connecting = None  # the endpoint's connect Deferred, while it is pending
        self._retryCall = None  # the DelayedCall of the next attempt
        self._ws = None  # the BrokerWebSocket of the current attempt, once built
        self._open = False
        self._waiting = []  # what the client sent before the WebSocket opened (reading is paused: one read at most)
        self._done = False
        self.peer = None

    # --- the client's TCP connection ------------------------------------------

    def connectionMade(self):
        self.peer = str(self.transport.getPeer())
        _noDelay(self.transport)
        self._tcpReading = _ReadPauser(self.transport)
        self._tcpReading.pause("connecting")
        log.info("client {peer} connected; opening {url}", peer=self.peer, url=self.connector.url)
        self._connect()

    def dataReceived(self, data):
        if self._done:
            return
        if not self._open:
            self._waiting.append(data)
            return
        if self._ws.state != WebSocketProtocol.STATE_OPEN:
            return  # the WebSocket is closing, and the client will be closed with it
        if self._requestHead:
            data, self._requestHead = self._requestHead + data, b""
        out = []  # frame headers and masked payload, written at once
        view = memoryview(data)  # the masker reads slices of it without copying them
        position, end = 0, len(data)
        while position < end:
            left = self._requestLeft
            if not left:
                if end - position < 4:
                    break
                (size,) = _SIZE.unpack_from(data, position)
                if size < 0 or size > self.maxRequestBytes:
                    self._ws.sendRequestBytes(out)  # the whole requests before it
                    log.warn(
                        "request frame from {peer} rejected: {why}; closing",
                        peer=self.peer, why=str(FrameTooLarge(size, self.maxRequestBytes)),
                    )
                    return self._closeBoth()
                if size >= _HEADER.size:
                    if end - position < _REQUEST_HEAD.size:
                        break
                    _, apiKey, apiVersion, correlationId = _REQUEST_HEAD.unpack_from(data, position)
                    if apiKey in ADDRESSING:
                        self._addressing.setdefault(correlationId, []).append((apiKey, apiVersion))
                # else the broker will reject it; it is passed on as it is
                left = 4 + size
                mask = os.urandom(4)
                out.append(maskedFrameHead(left, mask))
                self._masker = create_xor_masker(mask, left)
            stop = min(end, position + left)
            out.append(self._masker.process(data if stop - position == end else view[position:stop]))
            self._requestLeft = left - (stop - position)
            position = stop
        if position < end:
            self._requestHead = data[position:]
        if out:
            self._ws.sendRequestBytes(out)

    def connectionLost(self, reason):
        log.info("client {peer} disconnected", peer=self.peer)
        self._done = True
        self._stopConnecting()
        self._closeWebSocket()

    # --- the WebSocket ----------------------------------------------------------

    def _connect(self):
        self._retryCall = None
        self._attempt += 1
        factory = _BrokerWebSocketFactory(self, self.connector.url, self.connector.reactor)
        d = self._connecting = self.connector.endpoint.connect(factory)
        d.addCallbacks(self._connected, self._attemptFailed)

    def webSocketBuilt(self, ws):
        self._ws = ws

    def _connected(self, ws):
        self._connecting = None  # TCP (and TLS) is up; the WebSocket handshake follows

    def _attemptFailed(self, reason):
        self._connecting = None
        if reason.check(defer.CancelledError):
            return
        self._retry(reason.getErrorMessage())

    def _retry(self, why):
        if self._done:
            return
        self._ws = None
        if self._attempt >= self.connector.attempts:
            log.warn(
                "could not open {url} for client {peer} after {attempts} attempts ({why}); closing the client",
                url=self.connector.url, peer=self.peer, attempts=self._attempt, why=why,
            )
            return self._closeBoth()
        delay = self.connector.delay(self._attempt)
        log.info(
            "attempt {attempt}/{attempts} to open {url} failed ({why}); retrying in {delay}s",
            attempt=self._attempt, attempts=self.connector.attempts, url=self.connector.url, why=why, delay=delay,
        )
        self._retryCall = self.connector.reactor.callLater(delay, self._connect)

    def _stopConnecting(self):
        connecting, self._connecting = self._connecting, None
        if connecting is not None:
            connecting.cancel()
        retryCall, self._retryCall = self._retryCall, None
        if retryCall is not None and retryCall.active():
            retryCall.cancel()

    def webSocketOpen(self, ws):
        if self._done:
            return ws.sendClose(1000)
        self._ws = ws
        self._open = True
        _noDelay(ws.transport)
        self._wsReading = _ReadPauser(ws.transport)
        # A slow client pauses reading from the broker, a slow broker reading from the client.
        self.transport.registerProducer(Backpressure(self._wsReading, "client slow"), True)
        ws.transport.registerProducer(Backpressure(self._tcpReading, "broker slow"), True)
        log.info("client {peer} piped to {url}", peer=self.peer, url=self.connector.url)
        waiting, self._waiting = self._waiting, []
        for data in waiting:
            self.dataReceived(data)
        self._tcpReading.resume("connecting")

    def webSocketClosed(self, ws, code, reason):
        if ws is not self._ws:
            return  # an earlier attempt's WebSocket
        if not self._open:
            return self._retry(reason or f"WebSocket closed with code {code}")
        if not self._done:
            log.info(
                "broker closed the WebSocket of client {peer} (code {code}: {reason}); closing the client",
                peer=self.peer, code=code, reason=reason,
            )
            self._done = True
            self._closeClient()

    def responseMessageBegins(self, isBinary):
        if not isBinary and not self._done:
            log.warn("text message from {url} for client {peer}; closing both", url=self.connector.url, peer=self.peer)
            self._closeBoth()

    def responseBytes(self, data):
        """Write the bytes of responses to the client as they come, in
        whatever pieces the WebSocket delivers them (a response may span
        messages, a message hold several); hold those that answer Metadata or
        FindCoordinator until they are whole, and rewrite them."""
        if self._done:
            return
        if self._responseHead:
            data, self._responseHead = self._responseHead + data, b""
        position, end = 0, len(data)
        passFrom = 0  # where the bytes to pass on unchanged, not yet written, start
        while position < end:
            left = self._responseLeft
            if not left:
                if end - position < _RESPONSE_HEAD.size:
                    self._responseHead = data[position:]
                    break
                size, correlationId = _RESPONSE_HEAD.unpack_from(data, position)
                if not 4 <= size <= MAX_RESPONSE_BYTES:
                    self._pass(data, passFrom, position)
                    log.warn(
                        "response from {url} for client {peer} rejected: size {size:,d} outside 4..{maximum:,d}; closing both",
                        url=self.connector.url, peer=self.peer, size=size, maximum=MAX_RESPONSE_BYTES,
                    )
                    return self._closeBoth()
                left = 4 + size
                requests = self._addressing.get(correlationId) if self._addressing else None
                if requests:
                    self._heldAs = requests.pop(0)
                    if not requests:
                        del self._addressing[correlationId]
                    self._held = []
                    self._pass(data, passFrom, position)
            stop = min(end, position + left)
            self._responseLeft = left - (stop - position)
            if self._held is not None:
                self._held.append(data[position:stop])
                passFrom = stop
                if not self._responseLeft:
                    held, self._held = self._held, None
                    self.transport.write(self._rewrite(b"".join(held), *self._heldAs))
            position = stop
        self._pass(data, passFrom, position)

    def _pass(self, data, start, stop):
        """Write C{data[start:stop]} to the client (C{data} itself, uncopied, when that is all of it)."""
        if start < stop:
            self.transport.write(data if stop - start == len(data) else data[start:stop])

    def _rewrite(self, message, apiKey, version):
        host, port = hostAndPort(self.transport.getHost())
        if self.advertisedHost is not None:
            host = self.advertisedHost
        if self.advertisedPort is not None:
            port = self.advertisedPort
        try:
            frame = _REWRITES[apiKey](message[4:], version, host, port)
        except CodecError as e:
            log.warn(
                "undecodable {api} response for client {peer} ({why}); passed on unchanged",
                api=apiversions.apiName(apiKey), peer=self.peer, why=str(e),
            )
            return message
        return _SIZE.pack(len(frame)) + frame

    def _closeBoth(self):
        self._done = True
        self._stopConnecting()
        self._closeWebSocket()
        self._closeClient()

    def _closeWebSocket(self):
        ws = self._ws
        if ws is None:
            return
        if ws.state == WebSocketProtocol.STATE_OPEN and not self._requestLeft:
            ws.sendClose(1000)
        elif ws.state != WebSocketProtocol.STATE_CLOSED:
            # Still connecting, or a request's frame is half written (a close
            # frame now would land inside its payload): drop the connection.
            ws.dropConnection(abort=True)

    def _closeClient(self):
        # A paused push producer would keep the connection open once its
        # output is written (Twisted resumes the producer instead of closing).
        if self.transport.producer is not None:
            self.transport.unregisterProducer()
        self.transport.loseConnection()


class ShimFactory(protocol.Factory):
    def __init__(self, connector, maxRequestBytes, advertisedHost=None, advertisedPort=None):
        self.connector = connector
        self.maxRequestBytes = maxRequestBytes
        self.advertisedHost = advertisedHost
        self.advertisedPort = advertisedPort

    def buildProtocol(self, addr):
        proto = ShimProtocol(self.connector, self.maxRequestBytes, self.advertisedHost, self.advertisedPort)
        proto.factory = self
        return proto


def loadTrustRoot(path):
    """A trust root of every PEM certificate in the file at C{path}."""
    with open(path, "rb") as f:
        data = f.read()
    blocks = re.findall(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", data, re.DOTALL)
    if not blocks:
        raise ValueError(f"no PEM certificate in {path}")
    return trustRootFromCertificates([Certificate.loadPEM(block) for block in blocks])


class Options(ConfigFileOptions):
    commandName = "kafkaw-shim"
    synopsis = "--connect ws://HOST:PORT/ [options]"
    longdesc = (
        "Listen for stock Kafka clients on TCP and pipe each connection over its own "
        "WebSocket to a kafkaw broker (kafka-websocket-shim framing). Metadata responses "
        "are rewritten so that clients reconnect to this shim."
    )
    optParameters = [
        ["connect", "c", None, "the broker's WebSocket URL: ws://HOST:PORT/ or wss://HOST:PORT/ (required)"],
        ["ca-cert", None, None, "PEM file of the CA certificate(s) to verify a wss:// broker with (default: the system's trust store)"],
        ["connect-attempts", None, CONNECT_ATTEMPTS, "attempts to open the WebSocket per client connection before closing it", positive("connect-attempts")],
        ["max-request-bytes", None, 104857600, "largest request frame from a client; a bigger one closes the connection", positive("max-request-bytes")],
        ["advertised-host", None, None, "host put in Metadata responses (default: the address the client connected to)"],
        ["advertised-port", None, None, "port put in Metadata responses (default: the port the client connected to)", int],
    ]

    def __init__(self):
        super().__init__()
        self["listen"] = []

    def opt_listen(self, description):
        """Kafka (TCP) endpoint for clients, as a strports string; repeatable [default: tcp:9092:interface=127.0.0.1]."""
        self["listen"].append(description)

    def postOptions(self):
        if not self["listen"]:
            self["listen"].append(DEFAULT_LISTEN)
        url = self["connect"]
        if not url:
            raise usage.UsageError("--connect ws://HOST:PORT/ is required")
        try:
            isSecure, _, _, _, _, _ = parse_url(url)
        except Exception as e:
            raise usage.UsageError(f"bad --connect URL {url!r}: {e}")
        if self["ca-cert"] is not None and not isSecure:
            raise usage.UsageError("--ca-cert needs a wss:// --connect URL")


def makeService(options, reactor=None):
    if reactor is None:
        from twisted.internet import reactor
    trustRoot = None
    if options["ca-cert"] is not None:
        try:
            trustRoot = loadTrustRoot(options["ca-cert"])
        except (OSError, ValueError) as e:
            raise SystemExit(f"kafkaw-shim: cannot load --ca-cert: {e}")
    connector = Connector(options["connect"], reactor, trustRoot, attempts=options["connect-attempts"])
    factory = ShimFactory(connector, options["max-request-bytes"], options["advertised-host"], options["advertised-port"])
    top = service.MultiService()
    for description in options["listen"]:
        strports.service(description, factory, reactor=TurnWritesReactor(reactor)).setServiceParent(top)
    return top
