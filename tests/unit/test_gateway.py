"""The gateway through the TCP protocol: StringTransport, task.Clock and a
memory store; requests in, size-prefixed responses out, no sockets."""

import struct

import pytest
from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.python.failure import Failure
from zope.interface.verify import verifyObject

from kafkaw.broker.coordinator import GroupCoordinator
from kafkaw.broker.gateway import SLOW_READER, Broker, IKafkaConnection
from kafkaw.broker.services import ClusterService
from kafkaw.protocol.messages import decodeMessageSet, encodeMessageSet
from kafkaw.protocol.primitives import Reader, encodeString
from kafkaw.storage.memory import MemoryStore
from kafkaw.transport.tcp import Backpressure, KafkaProtocol
from tests.unit.helpers import (
    Gate,
    correlationId,
    fetchRequest,
    listOffsetsRequest,
    metadataRequest,
    parseFetchResponse,
    parseListOffsetsResponse,
    parseMetadataResponse,
    parseProduceResponse,
    produceRequest,
    requestFrame,
    responseFrames,
)

BIG = 1 << 20
MAX_REQUEST = 64 * 1024


class Harness:
    """One broker over a memory store, and connections to it."""

    def __init__(self, autoCreateTopics=True, maxMessageBytes=1000000, numPartitions=1, groups=False, **brokerOptions):
        self.clock = task.Clock()
        self.store = MemoryStore()
        self.cluster = ClusterService(
            self.store,
            self.clock,
            brokerId=7,
            numPartitions=numPartitions,
            autoCreateTopics=autoCreateTopics,
            maxMessageBytes=maxMessageBytes,
        )
        # With groups: a coordinator that starts a new group's rebalance at once.
        coordinator = GroupCoordinator(self.clock, self.store, initialRebalanceDelayMs=0) if groups else None
        self.broker = Broker(self.cluster, self.clock, coordinator, **brokerOptions)

    def createTopic(self, name, partitions=1):
        d = self.cluster.createTopic(name, partitions)
        assert d.called  # a memory store answers at once
        return d

    def connect(self, hostAddress=None):
        return Client(self.broker, StringTransport(hostAddress=hostAddress))

    def stored(self, topic, partition):
        """(offset, value) of everything stored in a partition."""
        log = self.store.partitionLog(topic, partition)
        d = log.read(0, BIG, log.endOffset)
        return [(m.offset, m.value) for m in decodeMessageSet(d.result)]

    def totalStored(self):
        return sum(self.store.partitionLog(t, p).endOffset for t, n in self.store.topics().items() for p in range(n))


class Client:
    def __init__(self, broker, transport):
        self.transport = transport
        self.protocol = KafkaProtocol(broker, MAX_REQUEST)
        self.protocol.makeConnection(transport)

    def send(self, *frames):
        self.protocol.dataReceived(b"".join(frames))

    def responses(self):
        """The responses written since the last call."""
        frames = responseFrames(self.transport.value())
        self.transport.clear()
        return frames

    def request(self, frame):
        """Send one request that is answered at once; return its response."""
        self.send(frame)
        (response,) = self.responses()
        return response

    def lose(self):
        self.protocol.connectionLost(Failure(ConnectionDone()))


@pytest.fixture
def harness():
    h = Harness()
    h.createTopic("t", 2)
    return h


@pytest.fixture
def client(harness):
    return harness.connect()


@pytest.fixture
def logged():
    with capturedLogs() as events:
        yield events


def fetchTimers(harness):
    """Pending timers other than the connections' idle checks."""
    return [call for call in harness.clock.getDelayedCalls() if call.func.__name__ != "_checkIdle"]


def warnings(events):
    return [formatEvent(e) for e in events if e.get("log_level") == LogLevel.warn]


def messageSet(*vals):
    return encodeMessageSet([(None, v) for v in vals])


def badCrc(data):
    return data[:-1] + bytes([data[-1] ^ 0xFF])


def fetched(response, topic="t", partition=0):
    """(error, high watermark, [(offset, value)]) of one partition of a Fetch response."""
    _, topics = parseFetchResponse(response)
    error, hw, data = topics[topic][partition]
    return error, hw, [(m.offset, m.value) for m in decodeMessageSet(data)]


# -- Metadata ---------------------------------------------------------------


def test_metadataAutoCreatesAndAdvertisesTheConnectionAddress():
    harness = Harness(numPartitions=2)
    client = harness.connect(IPv4Address("TCP", "10.1.2.3", 19092))
    cid, brokers, topics = parseMetadataResponse(client.request(metadataRequest(41, ["new"])))
    assert cid == 41
    assert brokers == [(7, "10.1.2.3", 19092)]
    assert topics == {"new": (0, {0: (0, 7, [7], [7]), 1: (0, 7, [7], [7])})}
    assert harness.store.topics() == {"new": 2}
    # an empty list describes every topic
    _, _, topics = parseMetadataResponse(client.request(metadataRequest(42, [])))
    assert list(topics) == ["new"]


@pytest.mark.parametrize(
    "options, advertised",
    [
        ({"advertisedHost": "kafka.example"}, ("kafka.example", 19092)),
        ({"advertisedPort": 9999}, ("10.1.2.3", 9999)),
        ({"advertisedHost": "kafka.example", "advertisedPort": 9999}, ("kafka.example", 9999)),
    ],
)
def test_metadataAdvertisedAddressOverride(options, advertised):
    harness = Harness(**options)
    client = harness.connect(IPv4Address("TCP", "10.1.2.3", 19092))
    _, brokers, _ = parseMetadataResponse(client.request(metadataRequest(1, [])))
    assert brokers == [(7, *advertised)]


def test_metadataWithoutAutoCreate():
    harness = Harness(autoCreateTopics=False)
    harness.createTopic("known", 1)
    client = harness.connect()
    _, _, topics = parseMetadataResponse(client.request(metadataRequest(1, ["missing", "known"])))
    assert topics == {"missing": (3, {}), "known": (0, {0: (0, 7, [7], [7])})}
    assert harness.store.topics() == {"known": 1}


# -- Produce, Fetch, ListOffsets --------------------------------------------


def test_produceFetchRoundTrip(harness, client):
    cid, topics = parseProduceResponse(
        client.request(produceRequest(5, {"t": {0: messageSet(b"a", b"b"), 1: messageSet(b"c")}}))
    )
    assert cid == 5
    assert topics == {"t": {0: (0, 0), 1: (0, 0)}}
    _, topics = parseProduceResponse(client.request(produceRequest(6, {"t": {0: messageSet(b"d")}}, acks=-1)))
    assert topics == {"t": {0: (0, 2)}}

    response = client.request(fetchRequest(7, {"t": {0: (0, BIG), 1: (0, BIG)}}))
    assert correlationId(response) == 7
    assert fetched(response, "t", 0) == (0, 3, [(0, b"a"), (1, b"b"), (2, b"d")])
    assert fetched(response, "t", 1) == (0, 1, [(0, b"c")])
    assert fetched(client.request(fetchRequest(8, {"t": {0: (1, BIG)}}))) == (0, 3, [(1, b"b"), (2, b"d")])
    assert fetched(client.request(fetchRequest(9, {"t": {0: (3, BIG)}}))) == (0, 3, [])

    cid, topics = parseListOffsetsResponse(
        client.request(listOffsetsRequest(10, {"t": {0: (-1, 5), 1: (-2, 5)}, "nope": {0: (-1, 5)}}))
    )
    assert cid == 10
    assert topics == {"t": {0: (0, [3]), 1: (0, [0])}, "nope": {0: (3, [])}}


def test_fetchCutAtMaxBytes(harness, client):
    client.request(produceRequest(1, {"t": {0: messageSet(b"first", b"second")}}))
    full = parseFetchResponse(client.request(fetchRequest(2, {"t": {0: (0, BIG)}})))[1]["t"][0][2]
    _, topics = parseFetchResponse(client.request(fetchRequest(3, {"t": {0: (0, len(full) - 3)}})))
    error, hw, data = topics["t"][0]
    assert (error, hw, data) == (0, 2, full[:-3])  # ends with a partial message
    assert [m.value for m in decodeMessageSet(data)] == [b"first"]


def test_produceErrorsPerPartition():
    harness = Harness(maxMessageBytes=200, autoCreateTopics=True)
    harness.createTopic("t", 3)
    client = harness.connect()
    request = produceRequest(
        1,
        {
            "t": {
                0: badCrc(messageSet(b"x")),
                1: messageSet(b"y" * 200),
                2: messageSet(b"ok"),
                3: messageSet(b"no such partition"),
            },
            "unknown": {0: messageSet(b"z")},
        },
    )
    _, topics = parseProduceResponse(client.request(request))
    assert topics == {
        "t": {0: (2, -1), 1: (10, -1), 2: (0, 0), 3: (3, -1)},
        "unknown": {0: (3, -1)},
    }
    assert "unknown" not in harness.store.topics()  # Produce creates no topic
    assert harness.stored("t", 0) == [] and harness.stored("t", 1) == []
    assert harness.stored("t", 2) == [(0, b"ok")]


def test_fetchErrors(harness, client):
    client.request(produceRequest(1, {"t": {0: messageSet(b"a")}}))
    _, topics = parseFetchResponse(
        client.request(fetchRequest(2, {"t": {0: (2, BIG), 1: (-1, BIG), 5: (0, BIG)}, "nope": {0: (0, BIG)}}))
    )
    assert topics == {
        "t": {0: (1, -1, b""), 1: (1, -1, b""), 5: (3, -1, b"")},
        "nope": {0: (3, -1, b"")},
    }


# -- ordering and acks=0 ----------------------------------------------------


def test_responsesGoOutInRequestOrder(harness, client):
    client.send(
        fetchRequest(1, {"t": {0: (0, BIG)}}, maxWait=5000, minBytes=1),
        metadataRequest(2, ["t"]),
        listOffsetsRequest(3, {"t": {0: (-1, 1)}}),
    )
    assert client.responses() == []  # metadata is ready but must wait for the fetch
    other = harness.connect()
    other.request(produceRequest(9, {"t": {0: messageSet(b"wake")}}))
    responses = client.responses()
    assert [correlationId(r) for r in responses] == [1, 2, 3]
    assert fetched(responses[0]) == (0, 1, [(0, b"wake")])
    assert parseListOffsetsResponse(responses[2])[1] == {"t": {0: (0, [0])}}  # read before the append


def test_ordersResponsesAfterAnExpiredFetch(harness, client):
    client.send(fetchRequest(1, {"t": {0: (0, BIG)}}, maxWait=100, minBytes=1), metadataRequest(2, []))
    assert client.responses() == []
    harness.clock.advance(0.1)
    assert [correlationId(r) for r in client.responses()] == [1, 2]


def test_acksZeroProduceIsSilentAndTakesNoSlot(harness, client):
    client.send(
        produceRequest(1, {"t": {0: messageSet(b"quiet")}}, acks=0),
        produceRequest(2, {"t": {0: badCrc(messageSet(b"bad"))}, "unknown": {0: messageSet(b"x")}}, acks=0),
        metadataRequest(3, ["t"]),
    )
    assert [correlationId(r) for r in client.responses()] == [3]
    assert harness.stored("t", 0) == [(0, b"quiet")]
    assert not client.transport.disconnecting
    # behind a parked fetch, it adds nothing to wait for
    client.send(fetchRequest(4, {"t": {1: (0, BIG)}}, maxWait=5000, minBytes=1))
    client.send(produceRequest(5, {"t": {1: messageSet(b"wake")}}, acks=0))
    responses = client.responses()
    assert [correlationId(r) for r in responses] == [4]
    assert fetched(responses[0], "t", 1) == (0, 1, [(0, b"wake")])


@pytest.mark.parametrize("acks", [0, 1])
def test_readsWaitForEarlierProducesOfTheSameConnection(harness, client, acks):
    gate = Gate(harness.store.partitionLog("t", 0), "append")
    client.send(
        produceRequest(1, {"t": {0: messageSet(b"first")}}, acks=acks),
        listOffsetsRequest(2, {"t": {0: (-1, 1)}}),
        fetchRequest(3, {"t": {0: (0, BIG)}}),
        metadataRequest(4, ["t"]),
    )
    assert client.responses() == []  # even Metadata waits: answers stay in order
    gate.open()
    responses = client.responses()
    assert [correlationId(r) for r in responses] == [1, 2, 3, 4][1 - acks :]
    assert parseListOffsetsResponse(responses[-3])[1] == {"t": {0: (0, [1])}}
    assert fetched(responses[-2]) == (0, 1, [(0, b"first")])


def test_readsOfOtherConnectionsDoNotWaitForAProduce(harness, client):
    gate = Gate(harness.store.partitionLog("t", 0), "append")
    client.send(produceRequest(1, {"t": {0: messageSet(b"held")}}))
    other = harness.connect()
    assert parseListOffsetsResponse(other.request(listOffsetsRequest(2, {"t": {0: (-1, 1)}})))[1] == {"t": {0: (0, [0])}}
    gate.open()
    assert parseProduceResponse(client.responses()[0])[1] == {"t": {0: (0, 0)}}


def test_aReadWaitingForAProduceIsDroppedWithTheConnection(harness, client):
    gate = Gate(harness.store.partitionLog("t", 0), "append")
    client.send(produceRequest(1, {"t": {0: messageSet(b"held")}}), fetchRequest(2, {"t": {0: (0, BIG)}}, maxWait=5000, minBytes=1))
    client.lose()
    gate.open()
    assert client.responses() == [] and not client.protocol.gateway.parked
    assert fetchTimers(harness) == []
    assert harness.stored("t", 0) == [(0, b"held")]


# -- Fetch long-poll --------------------------------------------------------


def test_fetchWithoutMaxWaitAnswersAtOnce(harness, client):
    for maxWait in (0, -1):
        response = client.request(fetchRequest(1, {"t": {0: (0, BIG)}}, maxWait=maxWait, minBytes=1000))
        assert fetched(response) == (0, 0, [])
    response = client.request(fetchRequest(2, {"t": {0: (0, BIG)}}, maxWait=5000, minBytes=0))
    assert fetched(response) == (0, 0, [])
    assert fetchTimers(harness) == []


def test_parkedFetchAnsweredRightAfterAnAppend(harness, client):
    client.send(fetchRequest(1, {"t": {0: (0, BIG)}}, maxWait=5000, minBytes=1))
    assert client.responses() == []
    assert len(fetchTimers(harness)) == 1
    harness.connect().request(produceRequest(2, {"t": {1: messageSet(b"elsewhere")}}))
    assert client.responses() == []  # another partition: still waiting
    harness.connect().request(produceRequest(3, {"t": {0: messageSet(b"here")}}))
    (response,) = client.responses()
    assert fetched(response) == (0, 1, [(0, b"here")])
    assert fetchTimers(harness) == []


def test_parkedFetchAnsweredAtMaxWait(harness, client):
    client.send(fetchRequest(1, {"t": {0: (0, BIG)}}, maxWait=250, minBytes=1))
    harness.clock.advance(0.249)
    assert client.responses() == []
    harness.clock.advance(0.001)
    (response,) = client.responses()
    assert fetched(response) == (0, 0, [])
    assert fetchTimers(harness) == []


def test_fetchWaitIsCappedByTheBroker():
    harness = Harness(maxFetchWaitMs=100)
    harness.createTopic("t")
    client = harness.connect()
    client.send(fetchRequest(1, {"t": {0: (0, BIG)}}, maxWait=60000, minBytes=1))
    harness.clock.advance(0.1)
    assert [correlationId(r) for r in client.responses()] == [1]


def test_minBytesIsSummedOverPartitions(harness, client):
    one = messageSet(b"0123456789")
    client.send(fetchRequest(1, {"t": {0: (0, BIG), 1: (0, BIG)}}, maxWait=5000, minBytes=2 * len(one)))
    producer = harness.connect()
    producer.request(produceRequest(2, {"t": {0: one}}))
    assert client.responses() == []  # half of min_bytes
    producer.request(produceRequest(3, {"t": {1: one}}))
    (response,) = client.responses()
    assert fetched(response, "t", 0)[2] == [(0, b"0123456789")]
    assert fetched(response, "t", 1)[2] == [(0, b"0123456789")]
    assert fetchTimers(harness) == []


def test_appendDuringTheFirstReadWakesTheFetch(harness, client):
    """An append landing while the fetch's first read is in progress is not missed."""
    one = messageSet(b"0123456789")
    client.request(produceRequest(1, {"t": {0: one}}))
    gate = Gate(harness.store.partitionLog("t", 0), "read")
    client.send(fetchRequest(2, {"t": {0: (0, BIG)}}, maxWait=5000, minBytes=2 * len(one)))
    assert len(gate.calls) == 1
    harness.connect().request(produceRequest(3, {"t": {0: messageSet(b"9876543210")}}))
    gate.open()  # the first read finds the log as it was: too little
    (response,) = client.responses()
    assert fetched(response) == (0, 2, [(0, b"0123456789"), (1, b"9876543210")])
    assert fetchTimers(harness) == []


# -- connection loss --------------------------------------------------------


def test_connectionLossCancelsParkedFetches(harness, client):
    client.send(
        fetchRequest(1, {"t": {0: (0, BIG)}}, maxWait=5000, minBytes=1),
        fetchRequest(2, {"t": {0: (0, BIG), 1: (0, BIG)}}, maxWait=9000, minBytes=1),
    )
    assert len(fetchTimers(harness)) == 2
    client.lose()
    assert fetchTimers(harness) == []
    harness.connect().request(produceRequest(3, {"t": {0: messageSet(b"a"), 1: messageSet(b"b")}}))
    assert client.transport.value() == b""


def test_connectionLossDuringAFetchReadLeavesNoTimer(harness, client):
    client.request(produceRequest(1, {"t": {0: messageSet(b"a")}}))
    gate = Gate(harness.store.partitionLog("t", 0), "read")
    client.send(fetchRequest(2, {"t": {0: (0, BIG)}}, maxWait=5000, minBytes=1000))
    assert len(gate.calls) == 1
    client.lose()
    gate.open()
    assert fetchTimers(harness) == []
    harness.connect().request(produceRequest(3, {"t": {0: messageSet(b"b")}}))
    assert client.transport.value() == b""


# -- bad requests close the connection ---------------------------------------


def _truncatedProduce():
    whole = produceRequest(1, {"t": {0: messageSet(b"cut")}})
    body = whole[4:-5]
    return len(body).to_bytes(4, "big") + body


BAD_REQUESTS = {
    "unknown api key": requestFrame(99, 1, b""),
    "metadata version 9": metadataRequest(1, ["t"], apiVersion=9),
    "produce version 8": requestFrame(0, 1, produceRequest(1, {"t": {0: messageSet(b"v1")}})[14 + 4 :], apiVersion=8),
    "truncated body": _truncatedProduce(),
    "trailing bytes": requestFrame(3, 1, b"\x00\x00\x00\x00" + b"junk"),
    "truncated header": b"\x00\x00\x00\x05" + b"\x00\x00\x00\x00\x00",
    "oversized size prefix": (MAX_REQUEST + 1).to_bytes(4, "big") + produceRequest(1, {"t": {0: messageSet(b"big")}})[4:],
    "negative size prefix": b"\xff\xff\xff\xfe" + produceRequest(1, {"t": {0: messageSet(b"neg")}})[4:],
}


@pytest.mark.parametrize("bad", list(BAD_REQUESTS), ids=list(BAD_REQUESTS))
def test_badRequestClosesTheConnection(harness, client, logged, bad):
    client.send(BAD_REQUESTS[bad], produceRequest(2, {"t": {0: messageSet(b"after")}}))
    assert client.transport.disconnecting
    assert len(warnings(logged)) == 1, warnings(logged)
    assert "closing" in warnings(logged)[0]
    assert client.transport.value() == b""
    assert harness.totalStored() == 0


def test_requestsBeforeABadOneAreAnswered(harness, client, logged):
    client.send(metadataRequest(1, ["t"]), requestFrame(99, 2, b""), metadataRequest(3, ["t"]))
    assert [correlationId(r) for r in client.responses()] == [1]
    assert client.transport.disconnecting


def test_badRequestAnswersParkedFetchesAtOnceThenCloses(harness, client, logged):
    client.send(fetchRequest(1, {"t": {0: (0, BIG)}}, maxWait=5000, minBytes=1), requestFrame(99, 2, b""))
    responses = client.responses()
    assert [correlationId(r) for r in responses] == [1] and fetched(responses[0]) == (0, 0, [])
    assert client.transport.disconnecting
    assert fetchTimers(harness) == []


def test_answersOwedBeforeABadRequestAreSentBeforeTheClose(harness, client, logged):
    """A Produce still being stored when a bad request arrives is answered, then the connection closes."""
    gate = Gate(harness.store.partitionLog("t", 0), "append")
    client.send(produceRequest(1, {"t": {0: messageSet(b"kept")}}), requestFrame(99, 2, b""), metadataRequest(3, []))
    assert client.responses() == [] and not client.transport.disconnecting
    assert client.transport.producerState == "paused"  # nothing more is read
    gate.open()
    responses = client.responses()
    assert [correlationId(r) for r in responses] == [1]
    assert parseProduceResponse(responses[0])[1] == {"t": {0: (0, 0)}}
    assert client.transport.disconnecting


# -- backpressure -----------------------------------------------------------


def test_slowReaderPausesReading(client):
    producer = client.transport.producer
    assert isinstance(producer, Backpressure) and client.transport.streaming
    assert (producer.pauser, producer.reason) == (client.protocol.gateway, SLOW_READER)
    assert client.transport.producerState == "producing"
    producer.pauseProducing()
    assert client.transport.producerState == "paused"
    producer.resumeProducing()
    assert client.transport.producerState == "producing"


def test_tooManyRequestsInFlightPauseReading():
    harness = Harness(maxInFlightRequests=2)
    harness.createTopic("t", 2)
    client = harness.connect()
    client.send(fetchRequest(1, {"t": {0: (0, BIG)}}, maxWait=5000, minBytes=1))
    assert client.transport.producerState == "producing"
    client.send(fetchRequest(2, {"t": {1: (0, BIG)}}, maxWait=5000, minBytes=1))
    assert client.transport.producerState == "paused"
    client.transport.producer.pauseProducing()  # and the client stops reading too
    harness.connect().request(produceRequest(3, {"t": {0: messageSet(b"a")}}))
    assert client.transport.producerState == "paused"
    client.transport.producer.resumeProducing()  # fewer in flight, reader fast again
    assert client.transport.producerState == "producing"
    assert [correlationId(r) for r in client.responses()] == [1]


def test_transportsProvideTheConnectionInterface(client):
    assert verifyObject(IKafkaConnection, client.protocol)


# -- resource bounds --------------------------------------------------------


def test_connectionsOverTheLimitAreRefused(logged):
    harness = Harness(maxConnections=2)
    first, second = harness.connect(), harness.connect()
    third = harness.connect()
    assert third.transport.disconnecting and not first.transport.disconnecting
    assert any("refusing connection" in line and "2 connections open" in line for line in warnings(logged))
    third.send(metadataRequest(1, []))  # whatever it still sends is ignored
    third.lose()
    assert third.responses() == []
    first.lose()
    fourth = harness.connect()
    assert not fourth.transport.disconnecting
    assert correlationId(fourth.request(metadataRequest(2, []))) == 2
    assert harness.broker.connections == 2  # second and fourth


def test_idleConnectionsAreClosed(logged):
    harness = Harness(idleTimeoutMs=10000)
    client = harness.connect()
    harness.clock.advance(6)
    client.request(metadataRequest(1, []))
    harness.clock.advance(9)  # 9 s since the last request
    assert not client.transport.disconnecting
    harness.clock.advance(2)
    assert client.transport.disconnecting
    client.lose()
    assert harness.clock.getDelayedCalls() == []


def test_aConnectionOwedAnAnswerIsNotIdle():
    harness = Harness(idleTimeoutMs=1000)
    harness.createTopic("t")
    client = harness.connect()
    client.send(fetchRequest(1, {"t": {0: (0, BIG)}}, maxWait=5000, minBytes=1))
    harness.clock.advance(4.5)
    assert not client.transport.disconnecting
    harness.clock.advance(0.5)
    assert [correlationId(r) for r in client.responses()] == [1]
    harness.clock.advance(0.9)
    assert not client.transport.disconnecting
    harness.clock.pump([1.0] * 2)
    assert client.transport.disconnecting


def test_aClientThatDoesNotReadIsDropped(logged):
    harness = Harness(slowReaderTimeoutMs=5000)
    harness.createTopic("t")
    client = harness.connect()
    client.transport.producer.pauseProducing()  # its send buffer is full
    harness.clock.advance(4)
    client.transport.producer.resumeProducing()  # it read some: the clock starts again
    client.transport.producer.pauseProducing()
    client.send(fetchRequest(1, {"t": {0: (0, BIG)}}, maxWait=60000, minBytes=1))
    harness.clock.advance(4.9)
    assert not client.transport.disconnecting
    harness.clock.advance(0.1)
    assert client.transport.disconnected  # aborted: its unread output is dropped
    assert any("has not read its responses for 5 s" in line for line in warnings(logged))
    assert not client.protocol.gateway.parked
    client.lose()
    assert harness.clock.getDelayedCalls() == [] and harness.broker.connections == 0


def test_requestsReadTogetherWaitWhileReadingIsPaused():
    """A pause bounds the work taken on, not only the bytes read: requests the
    transport had already read wait until reading resumes."""
    harness = Harness(maxInFlightRequests=2)
    harness.createTopic("t", 1)
    client = harness.connect()
    client.send(*[fetchRequest(n, {"t": {0: (0, BIG)}}, maxWait=5000, minBytes=1) for n in range(1, 6)])
    assert len(client.protocol.gateway.parked) == 2
    client.transport.producer.pauseProducing()  # and the client does not read
    harness.connect().request(produceRequest(9, {"t": {0: messageSet(b"a")}}))
    assert len(client.protocol.gateway.parked) == 0  # the two were answered; the rest wait
    client.transport.producer.resumeProducing()
    assert [correlationId(r) for r in client.responses()] == [1, 2, 3, 4, 5]
    assert client.transport.producerState == "producing"


def test_aPartitionRepeatedInAFetchIsAnsweredOnce(harness, client):
    """As Kafka 0.8 (which reads a Fetch into a map): once, as last asked."""
    client.request(produceRequest(1, {"t": {0: messageSet(b"a", b"b")}}))
    asked = [(0, 0), (1, 0), (0, 1)]
    body = struct.pack(">iiii", -1, 0, 0, 1) + encodeString("t") + struct.pack(">i", len(asked))
    body += b"".join(struct.pack(">iqi", p, offset, BIG) for p, offset in asked)
    response = client.request(requestFrame(1, 2, body))
    reader = Reader(response)
    assert (reader.int32(), reader.int32(), reader.string(), reader.int32()) == (2, 1, "t", 2)  # two partitions
    assert fetched(response) == (0, 2, [(1, b"b")])


def test_anAcksZeroProduceStillBeingStoredDelaysTheCloseUntilStored(harness, client, logged):
    gate = Gate(harness.store.partitionLog("t", 0), "append")
    client.send(produceRequest(1, {"t": {0: messageSet(b"quiet")}}, acks=0), requestFrame(99, 2, b""))
    assert not client.transport.disconnecting
    gate.open()
    assert client.transport.disconnecting and client.responses() == []
    assert harness.stored("t", 0) == [(0, b"quiet")]
