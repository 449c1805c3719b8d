"""C{twistd kafkaw-shim}: stock Kafka clients on TCP, a kafkaw broker on WebSocket.

For each TCP connection the shim opens one WebSocket to the broker
(kafka-websocket-shim framing: each request, size prefix included, is one
binary message; each response comes back as one binary message, size prefix
included) and pipes both ways. Reading from the client waits until the
WebSocket is open; connecting is retried a bounded number of times; when
either side closes, so does the other.

Metadata and FindCoordinator: a client that follows their answers must
reconnect to the shim, not to the broker's WebSocket address (which speaks a
different framing and may not be reachable). The shim remembers the
correlation id and version of every Metadata and FindCoordinator request it
forwards, and in the matching response replaces every broker's (or the coordinator's)
host and port with the address the client reached the shim on (or
C{--advertised-host}/C{--advertised-port}). kafkaw is a single broker, so
"every broker" is that one broker.
"""

import re
import struct

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from autobahn.websocket.protocol import WebSocketProtocol
from autobahn.websocket.util import parse_url
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
from kafkaw.protocol.framing import Framer, FrameTooLarge
from kafkaw.protocol.primitives import Reader
from kafkaw.transport.tcp import Backpressure, hostAndPort

DEFAULT_LISTEN = "tcp:9092:interface=127.0.0.1"
CONNECT_ATTEMPTS = 5  # 1 try + 4 retries
RETRY_DELAYS = (0.25, 0.5, 1.0, 2.0)  # seconds before retry 1, 2, 3, 4 (and after)
MAX_RESPONSE_BYTES = 2**31 - 1

_SIZE = struct.Struct(">i")
_HEADER = struct.Struct(">hhi")  # api key, api version, correlation id

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


def expectsResponse(frame):
    """(apiKey, apiVersion, correlationId) of a request frame, or None when no response comes (acks=0 Produce)."""
    apiKey, apiVersion, correlationId = _HEADER.unpack_from(frame)
    if apiKey == ApiKey.PRODUCE:
        reader = Reader(frame, _HEADER.size)
        reader.string()  # client id
        if reader.int16() == 0:
            return None
    return apiKey, apiVersion, correlationId


def _noDelay(transport):
    """Turn Nagle's algorithm off on a TCP transport (or the TCP under TLS):
    the shim forwards each request and response as soon as it is whole, and a
    small one held back until the last is acknowledged waits for the peer's
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
    """The WebSocket to the broker of one shimmed client connection."""

    shim = None  # the ShimProtocol, set by its factory

    def onOpen(self):
        self.shim.webSocketOpen(self)

    def onMessage(self, payload, isBinary):
        self.shim.responseMessage(payload, isBinary)

    def onClose(self, wasClean, code, reason):
        self.shim.webSocketClosed(self, code, reason)


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
        self.advertisedHost = advertisedHost
        self.advertisedPort = advertisedPort
        self._requests = Framer(maxRequestBytes)
        self._responses = Framer(MAX_RESPONSE_BYTES)
        self._addressing = {}  # correlation id -> [(api key, version) of the ADDRESSING requests outstanding with it]
        self._attempt = 0
        self._connecting = None  # the endpoint's connect Deferred, while it is pending
        self._retryCall = None  # the DelayedCall of the next attempt
        self._ws = None  # the BrokerWebSocket of the current attempt, once built
        self._open = False
        self._waiting = []  # requests received before the WebSocket opened
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
        try:
            frames = self._requests.feed(data)
        except FrameTooLarge as e:
            log.warn("request frame from {peer} rejected: {why}; closing", peer=self.peer, why=str(e))
            return self._closeBoth()
        for frame in frames:
            try:
                expected = expectsResponse(frame)
            except (struct.error, CodecError):
                expected = None  # the broker will reject it; pass it on as it is
            if expected is not None and expected[0] in ADDRESSING:
                self._addressing.setdefault(expected[2], []).append(expected[:2])
            message = _SIZE.pack(len(frame)) + frame
            if not self._open:
                self._waiting.append(message)
            elif self._ws.state == WebSocketProtocol.STATE_OPEN:
                self._ws.sendMessage(message, isBinary=True)
            # else the WebSocket is closing, and the client will be closed with it

    def connectionLost(self, reason):
        log.info("client {peer} disconnected", peer=self.peer)
        self._done = True
        self._stopConnecting()
        if self._ws is not None:
            if self._ws.state == WebSocketProtocol.STATE_OPEN:
                self._ws.sendClose(1000)
            elif self._ws.state != WebSocketProtocol.STATE_CLOSED:
                self._ws.dropConnection(abort=True)

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
        for message in waiting:
            ws.sendMessage(message, isBinary=True)
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

    def responseMessage(self, payload, isBinary):
        if self._done:
            return
        if not isBinary:
            log.warn("text message from {url} for client {peer}; closing both", url=self.connector.url, peer=self.peer)
            return self._closeBoth()
        if not self._responses.buffered and len(payload) >= 8 and _SIZE.unpack_from(payload)[0] == len(payload) - 4:
            self._response(payload)  # the usual case: exactly one response, as sent
            return
        try:
            frames = self._responses.feed(payload)
        except FrameTooLarge as e:
            log.warn("response from {url} for client {peer} rejected: {why}; closing both", url=self.connector.url, peer=self.peer, why=str(e))
            return self._closeBoth()
        for frame in frames:
            self._response(_SIZE.pack(len(frame)) + frame)

    def _response(self, message):
        """Send one response (size prefix included) to the client; rewrite it
        if it answers Metadata or FindCoordinator."""
        if self._addressing and len(message) >= 8:
            (correlationId,) = _SIZE.unpack_from(message, 4)
            requests = self._addressing.get(correlationId)
            if requests:
                apiKey, version = requests.pop(0)
                if not requests:
                    del self._addressing[correlationId]
                message = self._rewrite(message, apiKey, version)
        self.transport.write(message)

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
        if self._ws is not None and self._ws.state == WebSocketProtocol.STATE_OPEN:
            self._ws.sendClose(1000)
        self._closeClient()

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
        strports.service(description, factory, reactor=reactor).setServiceParent(top)
    return top
