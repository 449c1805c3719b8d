"""The WebSocket transport and the TCP-to-WebSocket shim, without real sockets.

A real Autobahn client protocol talks to L{KafkaWebSocketProtocol} over
C{twisted.test.iosim} fake transports, against a memory-store broker; the
shim's TCP side is a C{StringTransport}, its WebSocket side the same kind of
in-memory pair.
"""

import gc
import os
import struct

import pytest
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol, WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python import usage
from twisted.test import iosim
from zope.interface.verify import verifyObject

from kafkaw import shim, tap
from kafkaw.broker.gateway import SLOW_READER, Broker, IKafkaConnection
from kafkaw.broker.services import ClusterService
from kafkaw.protocol import schema
from kafkaw.protocol.errors import CodecError
from kafkaw.protocol.framing import frame
from kafkaw.protocol.messages import decodeMessageSet, encodeMessageSet
from kafkaw.storage.memory import MemoryStore
from kafkaw.transport.tcp import Backpressure, KafkaProtocol
from kafkaw.transport.websocket import KafkaWebSocketFactory
from tests.unit.helpers import (
    correlationId,
    fetchRequest,
    metadataRequest,
    parseFetchResponse,
    parseMetadataResponse,
    parseProduceResponse,
    produceRequest,
    responseFrames,
)

SERVER = IPv4Address("TCP", "10.0.0.5", 9093)
CLIENT = IPv4Address("TCP", "10.0.0.9", 40000)
SIZE = struct.Struct(">i")


@pytest.fixture
def logged():
    """Formatted log lines emitted during the test."""
    lines = []

    def observe(event):
        lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    yield lines
    globalLogPublisher.removeObserver(observe)


class PausableTransport(iosim.FakeTransport):
    """A fake transport that remembers whether reading is paused and holds input meanwhile."""

    paused = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.held = []
        self.pauses = 0

    def pauseProducing(self):
        self.paused = True
        self.pauses += 1

    def resumeProducing(self):
        self.paused = False
        held, self.held = self.held, []
        for data in held:
            self.protocol.dataReceived(data)

    def bufferReceived(self, buf):
        if self.paused:
            self.held.append(buf)
        else:
            super().bufferReceived(buf)


class RecordingClient(WebSocketClientProtocol):
    """A test WebSocket client: records messages and how the connection ended."""

    def __init__(self):
        super().__init__()
        self.opened = False
        self.messages = []  # (payload, isBinary)
        self.closed = None  # (wasClean, code, reason)

    def onOpen(self):
        self.opened = True

    def onMessage(self, payload, isBinary):
        self.messages.append((payload, isBinary))

    def onClose(self, wasClean, code, reason):
        self.closed = (wasClean, code, reason)

    def send(self, data):
        self.sendMessage(data, isBinary=True)


def makeBroker(clock, **kwargs):
    return Broker(ClusterService(MemoryStore(), clock), clock, **kwargs)


def connectPair(clientProtocol, serverProtocol, clock, serverTransportClass=iosim.FakeTransport, greet=True):
    serverTransport = serverTransportClass(serverProtocol, isServer=True, hostAddress=SERVER, peerAddress=CLIENT)
    clientTransport = iosim.FakeTransport(clientProtocol, isServer=False, hostAddress=CLIENT, peerAddress=SERVER)
    pump = iosim.connect(serverProtocol, serverTransport, clientProtocol, clientTransport, clock=clock, greet=greet)
    return pump


class WebSocketPair:
    """A memory-store broker served over WebSocket to a real Autobahn client."""

    def __init__(self, maxRequestBytes=1 << 20, url="ws://10.0.0.5:9093/", broker=None, serverTransportClass=iosim.FakeTransport, origin=None, allowedOrigins=(), clock=None, authenticate=False):
        self.clock = clock or MemoryReactorClock()
        self.broker = broker or makeBroker(self.clock)
        self.serverFactory = KafkaWebSocketFactory(
            self.broker, maxRequestBytes, reactor=self.clock, allowedOrigins=allowedOrigins, authenticate=authenticate
        )
        self.server = self.serverFactory.buildProtocol(CLIENT)
        clientFactory = WebSocketClientFactory(url, reactor=self.clock, origin=origin)
        clientFactory.protocol = RecordingClient
        self.client = clientFactory.buildProtocol(SERVER)
        self.pump = connectPair(self.client, self.server, self.clock, serverTransportClass)
        self.flush()

    def flush(self):
        self.pump.flush()
        self.clock.advance(0)
        self.pump.flush()

    def exchange(self, *messages):
        """Send each of C{messages} as one binary message; return the payloads of the messages received."""
        before = len(self.client.messages)
        for message in messages:
            self.client.send(message)
        self.flush()
        received = self.client.messages[before:]
        assert all(isBinary for _, isBinary in received), "a response came as a text message"
        return [payload for payload, _ in received]

    def closeAfter(self, seconds=2):
        self.clock.advance(seconds)
        self.flush()


def oneResponse(payload):
    """The response in a message, checking that the message is exactly one size-prefixed response."""
    (size,) = SIZE.unpack_from(payload)
    assert size == len(payload) - 4, f"size prefix {size} for a {len(payload)}-byte message"
    return payload[4:]


# --- the broker's WebSocket transport ------------------------------------------


def test_oneRequestOneResponseMessage():
    pair = WebSocketPair()
    assert pair.client.opened
    [payload] = pair.exchange(metadataRequest(7, ["t"]))
    cid, brokers, topics = parseMetadataResponse(oneResponse(payload))
    assert cid == 7
    assert topics == {"t": (0, {0: (0, 0, [0], [0])})}


def test_metadataAdvertisesTheWebSocketAddress():
    """The gateway puts the address the WebSocket client reached in Metadata."""
    pair = WebSocketPair()
    [payload] = pair.exchange(metadataRequest(1))
    _, brokers, _ = parseMetadataResponse(oneResponse(payload))
    assert brokers == [(0, "10.0.0.5", 9093)]


def test_requestSplitAcrossMessages():
    pair = WebSocketPair()
    request = metadataRequest(3, ["split"])
    pieces = [request[:2], request[2:9], request[9:]]
    received = pair.exchange(*pieces)
    assert len(received) == 1
    assert correlationId(oneResponse(received[0])) == 3


def test_requestsInFragmentedMessagesAreFramedFromEachFrame():
    """The framer is fed each frame's payload as it is read (the message is
    never collected): requests cut by frames anywhere are served in order."""
    pair = WebSocketPair()
    requests = metadataRequest(1, ["a"]) + metadataRequest(2, ["b"])
    for fragmentSize in range(1, len(requests) + 1):
        before = len(pair.client.messages)
        pair.client.sendMessage(requests, isBinary=True, fragmentSize=fragmentSize)
        pair.client.sendMessage(metadataRequest(3)[:6], isBinary=True, fragmentSize=fragmentSize)
        pair.client.sendMessage(metadataRequest(3)[6:], isBinary=True, fragmentSize=fragmentSize)
        pair.flush()
        received = [payload for payload, _ in pair.client.messages[before:]]
        assert [correlationId(oneResponse(p)) for p in received] == [1, 2, 3], f"fragments of {fragmentSize} bytes"


def test_severalRequestsInOneMessageGetOneMessageEachInOrder():
    pair = WebSocketPair()
    merged = b"".join(metadataRequest(cid, [f"topic{cid}"]) for cid in (10, 11, 12))
    received = pair.exchange(merged)
    assert [correlationId(oneResponse(p)) for p in received] == [10, 11, 12]


def test_pipelinedProduceAndFetchRoundTrip():
    """Stored bytes go back out in one message per response, in request order."""
    pair = WebSocketPair()
    pair.exchange(metadataRequest(1, ["data"]))  # creates the topic
    messageSet = encodeMessageSet([(b"k1", b"v1"), (None, b"v2" * 1000)])
    received = pair.exchange(
        produceRequest(2, {"data": {0: messageSet}}),
        fetchRequest(3, {"data": {0: (0, 1 << 20)}}),
    )
    assert [correlationId(oneResponse(p)) for p in received] == [2, 3]
    assert parseProduceResponse(oneResponse(received[0]))[1] == {"data": {0: (0, 0)}}
    error, highWatermark, data = parseFetchResponse(oneResponse(received[1]))[1]["data"][0]
    assert (error, highWatermark) == (0, 2)
    assert [(m.offset, m.key, m.value) for m in decodeMessageSet(data)] == [(0, b"k1", b"v1"), (1, None, b"v2" * 1000)]


def test_sameBrokerOverTcpAndWebSocket():
    """What is produced over WebSocket is fetched over TCP from the same Broker."""
    pair = WebSocketPair()
    pair.exchange(metadataRequest(0, ["shared"]))  # creates the topic
    pair.exchange(produceRequest(1, {"shared": {0: encodeMessageSet([(None, b"hello")])}}))
    pair.exchange(produceRequest(2, {"shared": {0: encodeMessageSet([(None, b"again")])}}))
    tcp = KafkaProtocol(pair.broker, 1 << 20)
    transport = StringTransport(hostAddress=IPv4Address("TCP", "127.0.0.1", 9092))
    tcp.makeConnection(transport)
    tcp.dataReceived(fetchRequest(5, {"shared": {0: (0, 1 << 20)}}))
    [response] = responseFrames(transport.value())
    _, _, data = parseFetchResponse(response)[1]["shared"][0]
    assert [m.value for m in decodeMessageSet(data)] == [b"hello", b"again"]


def test_textMessageClosesWith1003(logged):
    pair = WebSocketPair()
    pair.client.sendMessage(b"hello", isBinary=False)
    pair.flush()
    pair.closeAfter()
    assert pair.client.closed is not None
    assert pair.client.closed[1] == 1003
    assert pair.client.messages == []
    assert any("text WebSocket message" in line and "1003" in line for line in logged)


def test_answersPendingWhenClosingAreDropped():
    """A parked Fetch is not answered once the connection is closing (and nothing raises)."""
    pair = WebSocketPair()
    pair.exchange(metadataRequest(1, ["parked"]))
    pair.exchange(fetchRequest(2, {"parked": {0: (0, 1024)}}, maxWait=1000, minBytes=1))
    pair.client.sendMessage(b"bye", isBinary=False)
    pair.flush()
    pair.broker.clock.advance(1.5)
    pair.closeAfter()
    assert pair.client.closed[1] == 1003
    assert [correlationId(oneResponse(p)) for p, _ in pair.client.messages] == [1]


def test_answerReadyWhileTheClientClosesIsDropped():
    """The client's close frame arrives while a Fetch is parked; its answer is not sent (nothing raises)."""
    pair = WebSocketPair()
    pair.exchange(metadataRequest(1, ["parked"]))
    pair.exchange(fetchRequest(2, {"parked": {0: (0, 1024)}}, maxWait=1000, minBytes=1))
    pair.client.sendClose(1000)
    pair.pump.pump()  # the close frame reaches the server; its TCP connection is not yet lost
    assert pair.server.state != pair.server.STATE_OPEN
    assert not pair.server.gateway._closed
    pair.broker.clock.advance(1.5)  # the Fetch expires and answers
    pair.closeAfter()
    assert pair.client.closed[1] == 1000
    assert [correlationId(oneResponse(p)) for p, _ in pair.client.messages] == [1]
    del pair
    gc.collect()  # a failure in the answer's Deferred is logged (and fails the test) when it is collected


def test_oversizedMessageClosesWith1009(logged):
    pair = WebSocketPair(maxRequestBytes=100)
    pair.exchange(metadataRequest(1, ["x" * 200]))
    pair.closeAfter()
    assert pair.client.closed[1] == 1009
    assert pair.client.messages == []
    assert any("too large" in line and "1009" in line for line in logged)


def test_requestAtTheLimitIsServed():
    """The limit counts the request without its size prefix, like --max-request-bytes over TCP."""
    request = metadataRequest(1, ["limit"])
    pair = WebSocketPair(maxRequestBytes=len(request) - 4)
    [payload] = pair.exchange(request)
    assert correlationId(oneResponse(payload)) == 1


def test_fragmentedOversizedMessageClosesWith1009(logged):
    """Small frames adding up to more than the limit are refused, even if each request in them is small.

    A message may hold several requests, but not more bytes than one largest request.
    """
    request = metadataRequest(1, ["x"])
    pair = WebSocketPair(maxRequestBytes=len(request))
    pair.client.sendMessage(request * 4, isBinary=True, fragmentSize=10)
    pair.flush()
    pair.closeAfter()
    assert pair.client.closed[1] == 1009
    assert pair.client.messages == []


def test_responsesLargerThanTheRequestLimitAreSent():
    """The limit bounds requests only: a Fetch answer may be far larger."""
    pair = WebSocketPair(maxRequestBytes=200)
    pair.exchange(metadataRequest(1, ["big"]))
    tcp = KafkaProtocol(pair.broker, 1 << 20)
    tcp.makeConnection(StringTransport())
    tcp.dataReceived(produceRequest(2, {"big": {0: encodeMessageSet([(None, b"b" * 50000)])}}))
    [payload] = pair.exchange(fetchRequest(3, {"big": {0: (0, 1 << 20)}}))
    _, _, data = parseFetchResponse(oneResponse(payload))[1]["big"][0]
    assert [m.value for m in decodeMessageSet(data)] == [b"b" * 50000]


def test_oversizedSizePrefixClosesWith1009(logged):
    """A small message whose size prefix announces more than the limit is refused at once."""
    pair = WebSocketPair(maxRequestBytes=100)
    pair.exchange(SIZE.pack(10**6) + b"\0" * 10)
    pair.closeAfter()
    assert pair.client.closed[1] == 1009
    assert any("rejected" in line and "1009" in line for line in logged)


def test_unsupportedRequestClosesWith1008():
    pair = WebSocketPair()
    request = metadataRequest(1)
    unsupported = request[:4] + struct.pack(">h", 42) + request[6:]  # api key 42
    pair.exchange(unsupported)
    pair.closeAfter()
    assert pair.client.closed[1] == 1008
    assert pair.client.messages == []


def test_otherPathsAreRefused():
    pair = WebSocketPair(url="ws://10.0.0.5:9093/kafka")
    assert not pair.client.opened
    pair.closeAfter()
    assert pair.client.closed is not None


def test_browsersAreRefused(logged):
    """A handshake with an Origin header (only browsers send one) is refused."""
    pair = WebSocketPair(origin="http://evil.example")
    assert not pair.client.opened
    assert any("Origin 'http://evil.example' refused" in line for line in logged)
    assert WebSocketPair().client.opened  # the same without an Origin


@pytest.mark.parametrize(
    "origin, opened",
    [("https://app.example.com", True), ("https://a.apps.example.com", True), ("http://app.example.com", False), ("https://evil.example", False)],
)
def test_allowedBrowserOrigins(origin, opened):
    """--websocket-allowed-origin lets the named browser origins in, and only them."""
    pair = WebSocketPair(origin=origin, allowedOrigins=["https://app.example.com", "https://*.apps.example.com"])
    assert pair.client.opened is opened
    if opened:
        assert len(pair.exchange(metadataRequest(5, []))) == 1


def test_otherClientsKeepBeingServedAfterAClose():
    broker = makeBroker(MemoryReactorClock())
    bad = WebSocketPair(broker=broker)
    good = WebSocketPair(broker=broker)
    bad.client.sendMessage(b"text", isBinary=False)
    bad.flush()
    bad.closeAfter()
    assert bad.client.closed[1] == 1003
    [payload] = good.exchange(metadataRequest(9))
    assert correlationId(oneResponse(payload)) == 9


def test_slowReaderPausesRequestReading():
    """When the transport's write buffer fills, the gateway stops reading requests."""
    pair = WebSocketPair(serverTransportClass=PausableTransport)
    serverTransport = pair.server.transport
    producer = serverTransport.producer
    assert isinstance(producer, Backpressure), "no Backpressure is the transport's producer"
    assert (producer.pauser, producer.reason) == (pair.server.gateway, SLOW_READER)
    assert serverTransport.streamingProducer
    producer.pauseProducing()  # what the transport does when its buffer is full
    assert serverTransport.paused
    assert pair.exchange(metadataRequest(1)) == []  # held: not read
    producer.resumeProducing()
    assert not serverTransport.paused
    pair.flush()
    assert [correlationId(oneResponse(p)) for p, _ in pair.client.messages] == [1]


def test_tooManyInFlightPausesReading():
    """The gateway's in-flight bound reaches the WebSocket transport too."""
    clock = MemoryReactorClock()
    pair = WebSocketPair(broker=makeBroker(clock, maxInFlightRequests=1), serverTransportClass=PausableTransport)
    pair.exchange(metadataRequest(2, ["parked"]))  # creates the topic
    pausesBefore = pair.server.transport.pauses
    # A Fetch that parks (max_wait 1 s, min_bytes 1) is in flight until the clock moves.
    pair.exchange(fetchRequest(3, {"parked": {0: (0, 1024)}}, maxWait=1000, minBytes=1))
    assert pair.server.transport.paused
    assert pair.server.transport.pauses == pausesBefore + 1
    pair.broker.clock.advance(1.5)
    pair.flush()
    assert not pair.server.transport.paused
    assert correlationId(oneResponse(pair.client.messages[-1][0])) == 3


# --- twistd kafkaw options -------------------------------------------------------


def parseBrokerOptions(*args):
    options = tap.Options()
    options.parseOptions(["--storage", "memory", *args])
    return options


def test_websocketOnByDefault():
    assert parseBrokerOptions()["websocket"] == ["tcp:9093:interface=127.0.0.1"]


def test_websocketRepeatableAndReplacesDefault():
    options = parseBrokerOptions("--websocket", "tcp:1", "--websocket", "ssl:2:privateKey=k.pem")
    assert options["websocket"] == ["tcp:1", "ssl:2:privateKey=k.pem"]


def test_noWebsocket():
    assert parseBrokerOptions("--no-websocket")["websocket"] == []
    assert parseBrokerOptions("--no-websocket", "--websocket", "tcp:1")["websocket"] == []


def test_makeServiceListensOnBothTransports(tmp_path):
    from twisted.internet.testing import MemoryReactorClock

    reactor = MemoryReactorClock()  # a clock too: the retention timer runs on it
    options = parseBrokerOptions("--data-dir", str(tmp_path), "--listen", "tcp:1092", "--websocket", "tcp:1093", "--websocket", "tcp:1094")
    top = tap.makeService(options, reactor=reactor)
    top.startService()
    try:
        listening = {port: type(factory).__name__ for port, factory, _, _ in reactor.tcpServers}
        assert listening == {1092: "KafkaFactory", 1093: "KafkaWebSocketFactory", 1094: "KafkaWebSocketFactory"}
        factories = [factory for _, factory, _, _ in reactor.tcpServers]
        assert len({id(f.broker) for f in factories}) == 1, "the transports do not share one Broker"
        assert factories[1].maxMessageBytes == 104857600 + 4
    finally:
        top.stopService()


# --- the shim: Metadata rewrite as pure functions ----------------------------------


def metadataResponse(correlationId, brokers, topics):
    """A Metadata v0 answer; brokers: [(node id, host, port)]."""
    value = {"brokers": [{"nodeId": n, "host": h, "port": p} for n, h, p in brokers], "topics": topics}
    return b"".join(schema.encodeResponse(3, 0, correlationId, value))


def partition(number):
    return {"errorCode": 0, "partitionIndex": number, "leaderId": 1, "replicaNodes": [1], "isrNodes": [1]}


TOPICS = [
    {"errorCode": 0, "name": "a", "partitions": [partition(0), partition(1)]},
    {"errorCode": 3, "name": "missing", "partitions": []},
]


def test_rewriteMetadataResponseReplacesEveryBrokerAddressOnly():
    frame = metadataResponse(5, [(1, "broker.internal", 9093)], TOPICS)
    rewritten = shim.rewriteMetadataResponse(frame, 0, "127.0.0.1", 19092)
    # Golden bytes of the broker list: count, node id, host, port; the rest is unchanged.
    expected = (
        struct.pack(">i", 5)  # correlation id
        + struct.pack(">i", 1)  # broker count
        + struct.pack(">i", 1)  # node id
        + struct.pack(">h", 9) + b"127.0.0.1"  # host
        + struct.pack(">i", 19092)  # port
    )
    assert rewritten.startswith(expected)
    assert rewritten[len(expected):] == frame[4 + 4 + 4 + 2 + len("broker.internal") + 4:]


@pytest.mark.parametrize(
    "frame",
    [b"", struct.pack(">i", 1), metadataResponse(1, [(0, "h", 1)], TOPICS) + b"\0", b"\0\0\0\1\x7f\xff\xff\xff"],
)
def test_rewriteRejectsWhatIsNotAMetadataResponse(frame):
    with pytest.raises(CodecError):
        shim.rewriteMetadataResponse(frame, 0, "h", 1)


# --- the shim, end to end in memory ----------------------------------------------


class FakeEndpoint:
    """Connects the shim's WebSocket factory to a broker's WebSocket protocol in memory."""

    def __init__(self, clock, serverFactory, failures=0):
        self.clock = clock
        self.serverFactory = serverFactory
        self.failures = failures
        self.attempts = 0
        self.pumps = []
        self.servers = []

    def connect(self, factory):
        self.attempts += 1
        if self.failures:
            self.failures -= 1
            return defer.fail(ConnectionRefusedError("refused"))
        client = factory.buildProtocol(SERVER)
        server = self.serverFactory.buildProtocol(CLIENT)
        self.servers.append(server)
        self.pumps.append(connectPair(client, server, self.clock, greet=False))
        return defer.succeed(client)

    def flush(self):
        for _ in range(3):
            for pump in self.pumps:
                pump.flush()
            self.clock.advance(0)


SHIM_ADDRESS = IPv4Address("TCP", "192.168.1.20", 19092)


class ShimHarness:
    """The shim with a StringTransport client, its WebSocket in memory to a
    memory-store kafkaw (or to C{serverFactory}'s protocol)."""

    def __init__(self, failures=0, attempts=shim.CONNECT_ATTEMPTS, serverFactory=None, maxRequestBytes=1 << 20, **shimKwargs):
        self.clock = MemoryReactorClock()
        self.broker = makeBroker(self.clock)
        if serverFactory is None:
            serverFactory = KafkaWebSocketFactory(self.broker, 1 << 20, reactor=self.clock)
        else:
            serverFactory = serverFactory(self.clock)
        self.endpoint = FakeEndpoint(self.clock, serverFactory, failures)
        connector = shim.Connector("ws://10.0.0.5:9093/", self.clock, attempts=attempts)
        connector.endpoint = self.endpoint
        self.factory = shim.ShimFactory(connector, maxRequestBytes, **shimKwargs)
        self.protocol = self.factory.buildProtocol(IPv4Address("TCP", "192.168.1.30", 50000))
        self.transport = StringTransport(hostAddress=SHIM_ADDRESS, peerAddress=IPv4Address("TCP", "192.168.1.30", 50000))
        self.protocol.makeConnection(self.transport)

    def flush(self):
        self.endpoint.flush()

    def responses(self, *requests):
        self.transport.clear()
        for request in requests:
            self.protocol.dataReceived(request)
        self.flush()
        return responseFrames(self.transport.value())


def test_shimReadsOnlyOnceTheWebSocketIsOpen():
    harness = ShimHarness()
    assert harness.transport.producerState == "paused"
    harness.flush()
    assert harness.transport.producerState == "producing"


def test_shimRewritesMetadataToItsOwnAddress():
    harness = ShimHarness()
    harness.flush()
    [response] = harness.responses(metadataRequest(4, ["t"]))
    cid, brokers, topics = parseMetadataResponse(response)
    assert (cid, brokers) == (4, [(0, "192.168.1.20", 19092)])
    assert topics == {"t": (0, {0: (0, 0, [0], [0])})}


def test_shimAdvertisedAddressOverrides():
    harness = ShimHarness(advertisedHost="kafka.example", advertisedPort=9092)
    harness.flush()
    [response] = harness.responses(metadataRequest(4))
    assert parseMetadataResponse(response)[1] == [(0, "kafka.example", 9092)]


def test_shimPassesOtherResponsesThroughUnchanged():
    """Produce and Fetch are piped as they are; requests split or merged on TCP still go one per message."""
    harness = ShimHarness()
    harness.flush()
    harness.responses(metadataRequest(0, ["p"]))  # creates the topic
    messageSet = encodeMessageSet([(b"k", b"v" * 5000)])
    stream = produceRequest(1, {"p": {0: messageSet}}) + fetchRequest(2, {"p": {0: (0, 1 << 20)}}) + metadataRequest(3)
    # Deliver the TCP stream in awkward pieces.
    pieces = [stream[:3], stream[3:100], stream[100:]]
    responses = harness.responses(*pieces)
    assert [correlationId(r) for r in responses] == [1, 2, 3]
    _, _, data = parseFetchResponse(responses[1])[1]["p"][0]
    assert [m.value for m in decodeMessageSet(data)] == [b"v" * 5000]
    assert parseMetadataResponse(responses[2])[1] == [(0, "192.168.1.20", 19092)]


def test_shimDoesNotRewriteAResponseWhoseCorrelationIdWasNotMetadata():
    """Only correlation ids of forwarded Metadata requests are rewritten."""
    harness = ShimHarness()
    harness.flush()
    harness.protocol._addressing.clear()
    # Pretend correlation id 8 was a Metadata request: its (Produce) response cannot be decoded,
    # and is passed on unchanged.
    harness.protocol._addressing[8] = [(3, 0)]
    [response] = harness.responses(produceRequest(8, {"q": {0: encodeMessageSet([(None, b"x")])}}))
    assert parseProduceResponse(response)[0] == 8
    assert harness.protocol._addressing == {}


def test_shimRetriesConnectingThenSucceeds():
    harness = ShimHarness(failures=2)
    assert harness.endpoint.attempts == 1
    harness.clock.advance(shim.RETRY_DELAYS[0])
    assert harness.endpoint.attempts == 2
    harness.clock.advance(shim.RETRY_DELAYS[1])
    assert harness.endpoint.attempts == 3
    harness.flush()
    assert harness.transport.producerState == "producing"
    [response] = harness.responses(metadataRequest(1))
    assert correlationId(response) == 1


def test_shimGivesUpAfterTheAttempts(logged):
    harness = ShimHarness(failures=100, attempts=3)
    for delay in shim.RETRY_DELAYS:
        harness.clock.advance(delay)
    assert harness.endpoint.attempts == 3
    assert harness.transport.disconnecting
    assert any("after 3 attempts" in line for line in logged)


def test_shimStopsRetryingWhenTheClientLeaves():
    harness = ShimHarness(failures=100)
    harness.protocol.connectionLost(None)
    harness.clock.advance(10)
    assert harness.endpoint.attempts == 1


def test_brokerClosingClosesTheClient():
    harness = ShimHarness()
    harness.flush()
    [server] = harness.endpoint.servers
    server.sendClose(1000)
    harness.flush()
    assert harness.transport.disconnecting


def test_clientClosingClosesTheWebSocket():
    harness = ShimHarness()
    harness.flush()
    [server] = harness.endpoint.servers
    harness.protocol.connectionLost(None)
    harness.flush()
    harness.clock.advance(2)
    harness.flush()
    assert server.state == server.STATE_CLOSED
    assert server.gateway._closed


def test_shimSlowClientPausesReadingFromTheBroker():
    harness = ShimHarness()
    harness.flush()
    wsTransport = harness.protocol._ws.transport
    paused = []
    wsTransport.pauseProducing = lambda: paused.append(True)
    wsTransport.resumeProducing = lambda: paused.append(False)
    harness.transport.producer.pauseProducing()  # the client's TCP write buffer is full
    harness.transport.producer.resumeProducing()
    assert paused == [True, False]


def test_shimSlowBrokerPausesReadingFromTheClient():
    harness = ShimHarness()
    harness.flush()
    wsTransport = harness.protocol._ws.transport
    wsTransport.producer.pauseProducing()  # the WebSocket's write buffer is full
    assert harness.transport.producerState == "paused"
    wsTransport.producer.resumeProducing()
    assert harness.transport.producerState == "producing"


# --- the shim's streaming, against a scripted broker ----------------------------------


class ScriptedBroker(WebSocketServerProtocol):
    """A WebSocket server the test drives: it records what the shim sends
    (each message, and how many frames it came in) and sends what it is told."""

    def __init__(self):
        super().__init__()
        self.messages = []  # (payload, isBinary)
        self.frames = []  # frames of each message
        self.closed = None  # (wasClean, code, reason)

    def onMessageBegin(self, isBinary):
        super().onMessageBegin(isBinary)
        self.frames.append(0)

    def onMessageFrameBegin(self, length):
        super().onMessageFrameBegin(length)
        self.frames[-1] += 1

    def onMessage(self, payload, isBinary):
        self.messages.append((payload, isBinary))

    def onClose(self, wasClean, code, reason):
        self.closed = (wasClean, code, reason)


def scriptedFactory(clock):
    factory = WebSocketServerFactory(reactor=clock)
    factory.protocol = ScriptedBroker
    return factory


def scriptedShim(open=True, **kwargs):
    """A ShimHarness whose WebSocket goes to a ScriptedBroker (opened unless C{open} is false)."""
    harness = ShimHarness(serverFactory=scriptedFactory, **kwargs)
    if open:
        harness.flush()
        assert harness.protocol._open
    return harness, harness.endpoint.servers[0]


REWRITTEN_AS = ("192.168.1.20", 19092)  # SHIM_ADDRESS


def responseStream():
    """Three responses back to back, as the broker would send them: an
    answer to correlation id 1, a Metadata v0 answer to id 2 (rewritten by
    the shim), an answer to id 3. Returns the stream, the stream the client
    should get, and the three parts' lengths."""
    first = frame(struct.pack(">i", 1) + bytes(range(20)))  # not decoded by the shim: any bytes
    metadata = frame(metadataResponse(2, [(1, "broker.internal", 9093)], TOPICS))
    last = frame(struct.pack(">i", 3) + bytes(range(200, 150, -1)))
    rewritten = frame(shim.rewriteMetadataResponse(metadata[4:], 0, *REWRITTEN_AS))
    return first + metadata + last, first + rewritten + last, (len(first), len(metadata), len(last))


def test_shimStreamsResponsesSplitAtEveryByteBoundary():
    """Split between two messages anywhere, responses reach the client whole and
    in order; what passes unchanged is written as soon as it arrives (once its
    size and correlation id, 8 bytes, are read), the Metadata answer once it
    is whole, rewritten."""
    stream, expected, (first, metadata, last) = responseStream()
    rewritten = len(expected) - first - last
    for cut in range(1, len(stream)):
        harness, broker = scriptedShim()
        harness.protocol.dataReceived(metadataRequest(2))
        harness.flush()
        broker.sendMessage(stream[:cut], isBinary=True)
        harness.flush()
        if cut < 8:
            written = b""
        elif cut <= first:
            written = stream[:cut]
        elif cut < first + metadata:
            written = stream[:first]
        else:
            tail = cut - first - metadata
            written = expected[: first + rewritten + (tail if tail >= 8 else 0)]
        assert harness.transport.value() == written, f"cut at {cut}"
        broker.sendMessage(stream[cut:], isBinary=True)
        harness.flush()
        assert harness.transport.value() == expected, f"cut at {cut}"
        assert harness.protocol._addressing == {}


@pytest.mark.parametrize("how", ["one message", "a message per byte", "fragmented message"])
def test_shimStreamsResponsesHoweverTheyAreCut(how):
    stream, expected, _ = responseStream()
    harness, broker = scriptedShim()
    harness.protocol.dataReceived(metadataRequest(2))
    harness.flush()
    if how == "one message":
        broker.sendMessage(stream, isBinary=True)
    elif how == "a message per byte":
        for i in range(len(stream)):
            broker.sendMessage(stream[i : i + 1], isBinary=True)
    else:
        broker.sendMessage(stream, isBinary=True, fragmentSize=7)
    harness.flush()
    assert harness.transport.value() == expected
    assert not harness.transport.disconnecting


def test_shimStreamsALargeResponseWithoutHoldingIt():
    """A large answer (a Fetch's) is written on in the pieces the WebSocket delivers."""
    harness, broker = scriptedShim()
    response = frame(struct.pack(">i", 9) + bytes(200_000))
    broker.sendMessage(response[:70_000], isBinary=True)
    harness.flush()
    assert harness.transport.value() == response[:70_000]
    broker.sendMessage(response[70_000:], isBinary=True, fragmentSize=50_000)
    harness.flush()
    assert harness.transport.value() == response


def test_shimRewritesAMetadataResponseReusingACorrelationId():
    """Two Metadata requests with one id: both answers are rewritten, in order."""
    harness, broker = scriptedShim()
    harness.protocol.dataReceived(metadataRequest(2) + metadataRequest(2, apiVersion=0))
    harness.flush()
    answer = frame(metadataResponse(2, [(1, "broker.internal", 9093)], TOPICS))
    broker.sendMessage(answer + answer[:10], isBinary=True)
    broker.sendMessage(answer[10:], isBinary=True)
    harness.flush()
    once = frame(shim.rewriteMetadataResponse(answer[4:], 0, *REWRITTEN_AS))
    assert harness.transport.value() == once + once
    assert harness.protocol._addressing == {}


def test_shimTextMessageClosesBoth(logged):
    harness, broker = scriptedShim()
    broker.sendMessage(b"\0\0\0\4\0\0\0\1", isBinary=False)
    harness.flush()
    harness.clock.advance(2)
    harness.flush()
    assert harness.transport.disconnecting
    assert broker.closed is not None
    assert any("text message" in line for line in logged)


@pytest.mark.parametrize("size", [-1, -(2**31), 0, 3])
def test_shimAbsurdResponseSizeClosesBoth(logged, size):
    """A size prefix no response can have (negative, or too short for a
    correlation id): the responses before it are passed on, then both sides close."""
    harness, broker = scriptedShim()
    before = frame(struct.pack(">i", 1) + b"ok")
    broker.sendMessage(before + struct.pack(">ii", size, 2) + b"more", isBinary=True)
    harness.flush()
    assert harness.transport.value() == before
    assert harness.transport.disconnecting
    harness.clock.advance(2)
    harness.flush()
    assert broker.closed is not None
    assert any("rejected" in line and f"size {size:,d}" in line for line in logged)


def test_shimSendsEachRequestAsOneFrameWhateverTheTcpReads():
    """Requests cut anywhere by TCP go out one binary message each, in one
    frame (so the broker parses one frame per request), bytes unchanged; only
    Metadata requests' ids are remembered."""
    requests = [
        metadataRequest(1, ["a"]),
        produceRequest(2, {"t": {0: encodeMessageSet([(b"k", b"v" * 100)])}}),  # frame length >= 126: 16-bit length
        metadataRequest(3),
    ]
    stream = b"".join(requests)
    cuts = [[cut] for cut in range(1, len(stream))] + [list(range(1, len(stream)))]  # two reads; a read per byte
    for cut in cuts:
        harness, broker = scriptedShim()
        for start, stop in zip([0] + cut, cut + [len(stream)]):
            harness.protocol.dataReceived(stream[start:stop])
        harness.flush()
        assert broker.messages == [(request, True) for request in requests], f"cut at {cut[:3]}"
        assert broker.frames == [1, 1, 1]
        assert harness.protocol._addressing == {1: [(3, 0)], 3: [(3, 0)]}


def test_shimSendsALargeRequestAsItArrives():
    """A request over 64 KB (64-bit frame length) is framed at once and sent
    on as each TCP read arrives, not held until it is whole."""
    harness, broker = scriptedShim()
    request = produceRequest(7, {"t": {0: encodeMessageSet([(None, os.urandom(100_000))])}})
    wsTransport = harness.protocol._ws.transport
    written = []
    write, wsTransport.writeSequence = wsTransport.writeSequence, lambda chunks: (written.append(sum(map(len, chunks))), write(chunks))
    for start in range(0, len(request), 30_000):
        harness.protocol.dataReceived(request[start : start + 30_000])
    assert len(written) == 4 and written[0] == 14 + 30_000  # header (2 + 8 + mask) and the first read
    harness.flush()
    assert broker.messages == [(request, True)]
    assert broker.frames == [1]


def test_shimQueuesWhatArrivesBeforeTheWebSocketOpens():
    harness, broker = scriptedShim(open=False)
    harness.protocol.dataReceived(metadataRequest(1)[:5])
    harness.protocol.dataReceived(metadataRequest(1)[5:] + metadataRequest(2))
    harness.flush()
    assert broker.messages == [(metadataRequest(1), True), (metadataRequest(2), True)]


def test_shimRequestAboveTheLimitClosesBoth(logged):
    harness, broker = scriptedShim(maxRequestBytes=100)
    big = produceRequest(2, {"t": {0: encodeMessageSet([(None, b"x" * 200)])}})
    harness.protocol.dataReceived(metadataRequest(1) + big)
    harness.flush()
    harness.clock.advance(2)
    harness.flush()
    assert broker.messages == [(metadataRequest(1), True)]
    assert harness.transport.disconnecting
    assert broker.closed is not None and broker.closed[1] == 1000
    assert any("rejected" in line and "outside 0..100" in line for line in logged)


def test_shimClientLeavingMidRequestDropsTheWebSocket():
    """A close frame written now would land inside the half-sent request's
    payload: the WebSocket is dropped instead."""
    harness, broker = scriptedShim()
    request = metadataRequest(1, ["a" * 200])
    harness.protocol.dataReceived(request[:100])
    harness.flush()
    harness.protocol.connectionLost(None)
    harness.flush()
    assert broker.messages == []
    assert broker.closed is not None and broker.closed[0] is False


def test_shimAcksZeroProduceGetsNoResponseAndLeavesNothing():
    """An acks=0 Produce is forwarded and answered by nothing; the answers around it are passed on."""
    harness = ShimHarness()
    harness.flush()
    harness.responses(metadataRequest(0, ["z"]))  # creates the topic
    messageSet = encodeMessageSet([(None, b"fire and forget")])
    responses = harness.responses(
        produceRequest(1, {"z": {0: messageSet}}, acks=0), fetchRequest(2, {"z": {0: (0, 1 << 20)}}), metadataRequest(3)
    )
    assert [correlationId(r) for r in responses] == [2, 3]
    _, _, data = parseFetchResponse(responses[0])[1]["z"][0]
    assert [m.value for m in decodeMessageSet(data)] == [b"fire and forget"]
    assert parseMetadataResponse(responses[1])[1] == [(0, "192.168.1.20", 19092)]
    assert harness.protocol._addressing == {}


# --- twistd kafkaw-shim options -----------------------------------------------------


def parseShimOptions(*args):
    options = shim.Options()
    options.parseOptions(list(args))
    return options


def test_shimOptions():
    options = parseShimOptions("--connect", "ws://broker:9093/")
    assert options["listen"] == ["tcp:9092:interface=127.0.0.1"]
    assert options["connect-attempts"] == shim.CONNECT_ATTEMPTS
    options = parseShimOptions("--listen", "tcp:1", "--listen", "tcp:2", "--connect", "wss://b/", "--ca-cert", "ca.pem")
    assert options["listen"] == ["tcp:1", "tcp:2"]


@pytest.mark.parametrize(
    "args",
    [[], ["--connect", "http://broker/"], ["--connect", "ws://broker:9093/", "--ca-cert", "ca.pem"]],
)
def test_shimOptionErrors(args):
    with pytest.raises(usage.UsageError):
        parseShimOptions(*args)


def test_shimPluginIsFound():
    from twisted.plugin import getPlugins
    from twisted.application.service import IServiceMaker
    import twisted.plugins

    names = {plugin.tapname for plugin in getPlugins(IServiceMaker, twisted.plugins)}
    assert {"kafkaw", "kafkaw-shim"} <= names


def test_webSocketConnectionsProvideTheConnectionInterface():
    assert verifyObject(IKafkaConnection, WebSocketPair().server)


def test_connectionsOverTheLimitAreClosedWithTryAgainLater(logged):
    broker = makeBroker(MemoryReactorClock(), maxConnections=1)
    kept = WebSocketPair(broker=broker)
    refused = WebSocketPair(broker=broker)
    refused.closeAfter()
    assert refused.client.closed is not None and refused.client.closed[1] == 1013
    assert any("refusing connection" in line for line in logged)
    assert len(kept.exchange(metadataRequest(1, []))) == 1
    assert broker.connections == 1


@pytest.mark.parametrize("version", [1, 5, 8])
def test_rewriteMetadataResponseOfModernVersions(version):
    """Metadata v1+ (rack, controller, cluster id...): only the broker addresses change."""
    from kafkaw.protocol import schema

    response = {
        "brokers": [{"nodeId": 3, "host": "broker.internal", "port": 9093, "rack": None}],
        "clusterId": "c" * 22, "controllerId": 3,
        "topics": [{"errorCode": 0, "name": "t", "partitions": [{"partitionIndex": 0, "leaderId": 3, "replicaNodes": [3], "isrNodes": [3]}]}],
    }
    frame = b"".join(schema.encodeResponse(3, version, 9, response))
    rewritten = shim.rewriteMetadataResponse(frame, version, "127.0.0.1", 19092)
    correlationId, decoded = schema.decodeResponse(3, version, rewritten)
    _, original = schema.decodeResponse(3, version, frame)
    assert correlationId == 9
    assert [(b.nodeId, b.host, b.port) for b in decoded.brokers] == [(3, "127.0.0.1", 19092)]
    assert decoded._replace(brokers=original.brokers) == original


@pytest.mark.parametrize("version", [0, 1, 2])
def test_rewriteFindCoordinatorResponse(version):
    """A group's coordinator is the shim too: clients must not go to the broker's WebSocket port."""
    from kafkaw.protocol import schema

    frame = b"".join(schema.encodeResponse(10, version, 4, {"errorCode": 0, "nodeId": 3, "host": "broker.internal", "port": 9093}))
    correlationId, answer = schema.decodeResponse(10, version, shim.rewriteFindCoordinatorResponse(frame, version, "127.0.0.1", 19092))
    assert (correlationId, answer.errorCode, answer.nodeId, answer.host, answer.port) == (4, 0, 3, "127.0.0.1", 19092)
    refused = b"".join(schema.encodeResponse(10, version, 5, {"errorCode": 15, "nodeId": -1, "host": "", "port": -1}))
    assert shim.rewriteFindCoordinatorResponse(refused, version, "127.0.0.1", 19092) == refused
