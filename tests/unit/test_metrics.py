"""Broker metrics (C{--metrics}): the gateway and the transports report into a
registry of the broker's own; and the connection log lines. StringTransport,
task.Clock and a memory store, as in test_gateway."""

import struct

import pytest
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, capturedLogs, formatEvent
from zope.interface.verify import verifyObject

from kafkaw.broker.gateway import Broker
from kafkaw.broker.services import ClusterService
from kafkaw.metrics import NO_METRICS, IBrokerMetrics, PrometheusMetrics
from kafkaw.protocol.api import LATEST
from kafkaw.protocol.messages import encodeMessage
from kafkaw.storage.memory import MemoryStore
from tests.unit.helpers import (
    fetchRequest,
    listOffsetsRequest,
    metadataRequest,
    parseProduceResponse,
    produceRequest,
    requestFrame,
)
from tests.unit.test_coordinator import Coordinated, fired
from tests.unit.test_gateway import Harness
from tests.unit.test_websocket import WebSocketPair


def messages(*values):
    return b"".join(encodeMessage(0, None, value) for value in values)


class MeteredHarness(Harness):
    """A broker over a memory store with Prometheus metrics; topic t has 2 partitions."""

    def __init__(self, **options):
        super().__init__(**options)
        self.createTopic("t", 2)
        self.metrics = self.broker.metrics = PrometheusMetrics(self.cluster)

    def value(self, name, **labels):
        """A sample's value; 0 for a series never created."""
        return self.metrics.registry.get_sample_value(name, labels) or 0


@pytest.fixture
def harness():
    return MeteredHarness()


def test_bothImplementTheInterface(harness):
    assert verifyObject(IBrokerMetrics, NO_METRICS)
    assert verifyObject(IBrokerMetrics, harness.metrics)


def test_requestsAndBytesByApi(harness):
    client = harness.connect()
    frames = [
        produceRequest(1, {"t": {0: messages(b"a", b"b")}}),
        produceRequest(2, {"t": {1: messages(b"c")}}),
        fetchRequest(3, {"t": {0: (0, 1000)}}),
        listOffsetsRequest(4, {"t": {0: (LATEST, 1)}}),
        metadataRequest(5, ["t"]),
    ]
    sent = {}
    for name, frame in zip(["Produce", "Produce", "Fetch", "ListOffsets", "Metadata"], frames):
        client.send(frame)
        response = client.transport.value()
        client.transport.clear()
        received, out = sent.get(name, (0, 0))
        sent[name] = (received + len(frame), out + len(response))
    for name, (received, out) in sent.items():
        assert harness.value("kafkaw_request_bytes_total", api=name) == received
        assert harness.value("kafkaw_response_bytes_total", api=name) == out
    assert harness.value("kafkaw_requests_total", api="Produce", outcome="ok") == 2
    for name in ("Fetch", "ListOffsets", "Metadata"):
        assert harness.value("kafkaw_requests_total", api=name, outcome="ok") == 1
    assert harness.value("kafkaw_request_duration_seconds_count", api="Produce") == 2
    assert harness.value("kafkaw_partition_errors_total", api="Produce", error="UNKNOWN_TOPIC_OR_PARTITION") == 0


def test_partitionErrorsByApiAndCode():
    harness = MeteredHarness(maxMessageBytes=20)
    client = harness.connect()
    response = client.request(produceRequest(1, {"t": {0: messages(b"x" * 20), 9: messages(b"y")}, "nope": {0: messages(b"z")}}))
    assert parseProduceResponse(response)[1] == {"t": {0: (10, -1), 9: (3, -1)}, "nope": {0: (3, -1)}}
    client.request(fetchRequest(2, {"t": {0: (5, 1000), 1: (0, 1000)}}))
    client.request(listOffsetsRequest(3, {"nope": {0: (LATEST, 1)}}))
    assert harness.value("kafkaw_partition_errors_total", api="Produce", error="UNKNOWN_TOPIC_OR_PARTITION") == 2
    assert harness.value("kafkaw_partition_errors_total", api="Produce", error="MESSAGE_SIZE_TOO_LARGE") == 1
    assert harness.value("kafkaw_partition_errors_total", api="Fetch", error="OFFSET_OUT_OF_RANGE") == 1
    assert harness.value("kafkaw_partition_errors_total", api="ListOffsets", error="UNKNOWN_TOPIC_OR_PARTITION") == 1
    # Partition errors are answers: the requests themselves went fine.
    assert harness.value("kafkaw_requests_total", api="Fetch", outcome="ok") == 1


def test_aParkedFetchCountsItsErrorsOnce(harness):
    client = harness.connect()
    client.send(fetchRequest(1, {"t": {0: (0, 1000)}, "nope": {0: (0, 1000)}}, maxWait=1000, minBytes=1))
    client.send(produceRequest(2, {"t": {1: messages(b"elsewhere")}}))  # not enough for the fetch
    harness.clock.advance(1)
    assert len(client.responses()) == 2
    assert harness.value("kafkaw_partition_errors_total", api="Fetch", error="UNKNOWN_TOPIC_OR_PARTITION") == 1


@pytest.mark.parametrize(
    "frame, api",
    [
        (struct.pack(">i", 3) + b"\x00\x03\x00", "unknown"),  # header cut short
        (requestFrame(8, 1, b""), "OffsetCommit"),  # not served
        (requestFrame(3, 1, b"\x00\x00"), "Metadata"),  # malformed body
        (requestFrame(999, 1, b""), "unknown"),  # no such API
    ],
)
def test_refusalsAreTheirOwnOutcome(harness, frame, api):
    client = harness.connect()
    client.send(frame)
    assert client.transport.disconnecting
    assert harness.value("kafkaw_requests_total", api=api, outcome="refused") == 1
    assert harness.value("kafkaw_requests_total", api=api, outcome="ok") == 0
    assert harness.value("kafkaw_request_bytes_total", api=api) == len(frame)


def test_anOversizedFrameIsRefused(harness):
    client = harness.connect()
    client.send(struct.pack(">i", 1 << 20) + b"\x00\x00")  # above the harness's 64 KiB limit
    assert client.transport.disconnecting
    assert harness.value("kafkaw_requests_total", api="unknown", outcome="refused") == 1


@pytest.mark.logs_errors
def test_aFailedRequestIsRefused(harness):
    client = harness.connect()
    harness.cluster.describeTopics = lambda names: 1 / 0
    client.send(metadataRequest(1))
    assert client.transport.disconnecting
    assert harness.value("kafkaw_requests_total", api="Metadata", outcome="refused") == 1


def test_latencyFromArrivalToResponse(harness):
    client = harness.connect()
    client.send(fetchRequest(1, {"t": {0: (0, 1000)}}, maxWait=400, minBytes=1))
    harness.clock.advance(0.3)
    client.send(produceRequest(2, {"t": {0: messages(b"wake")}}))
    assert len(client.responses()) == 2
    assert harness.value("kafkaw_request_duration_seconds_sum", api="Fetch") == pytest.approx(0.3)
    assert harness.value("kafkaw_request_duration_seconds_bucket", api="Fetch", le="0.25") == 0
    assert harness.value("kafkaw_request_duration_seconds_bucket", api="Fetch", le="0.5") == 1
    assert harness.value("kafkaw_request_duration_seconds_sum", api="Produce") == 0


def test_latencyIncludesTheWaitBehindAPause():
    harness = MeteredHarness(maxInFlightRequests=1)
    client = harness.connect()
    client.send(fetchRequest(1, {"t": {0: (0, 1000)}}, maxWait=200, minBytes=1) + metadataRequest(2))
    harness.clock.advance(0.2)  # the fetch expires; the metadata request waited behind it
    assert len(client.responses()) == 2
    assert harness.value("kafkaw_request_duration_seconds_sum", api="Metadata") == pytest.approx(0.2)


def test_acks0ProduceIsDoneWhenStored(harness):
    client = harness.connect()
    client.send(produceRequest(1, {"t": {0: messages(b"fire", b"forget")}}, acks=0))
    assert client.transport.value() == b""
    assert harness.value("kafkaw_requests_total", api="Produce", outcome="ok") == 1
    assert harness.value("kafkaw_request_duration_seconds_count", api="Produce") == 1
    assert harness.value("kafkaw_response_bytes_total", api="Produce") == 0


def test_messagesInAndOffsetsAreReadAtScrapeTime():
    h = Harness()
    h.createTopic("t", 2)
    client = h.connect()
    client.request(produceRequest(1, {"t": {0: messages(b"before", b"start")}}))
    metrics = PrometheusMetrics(h.cluster)  # the broker starts with 2 messages in t/0
    h.broker.metrics = metrics
    client.request(produceRequest(2, {"t": {0: messages(b"a", b"b", b"c"), 1: messages(b"d")}}))
    h.createTopic("new", 1)
    client.request(produceRequest(3, {"new": {0: messages(b"e")}}))
    metrics.partitions.refresh()

    def value(name, **labels):
        return metrics.registry.get_sample_value(name, labels)

    assert value("kafkaw_messages_in_total", topic="t") == 4
    assert value("kafkaw_messages_in_total", topic="new") == 1
    assert value("kafkaw_partition_log_end_offset", topic="t", partition="0") == 5
    assert value("kafkaw_partition_log_end_offset", topic="t", partition="1") == 1
    assert value("kafkaw_partition_log_end_offset", topic="new", partition="0") == 1
    assert value("kafkaw_partition_log_start_offset", topic="t", partition="0") == 0


def test_groupsAreReadAtScrapeTime():
    """Members, rebalances, committed offsets and lag: copied from the
    coordinator and the partitions as a scrape arrives, nothing per request."""
    h = Harness()
    h.createTopic("t", 2)
    client = h.connect()
    client.request(produceRequest(1, {"t": {0: messages(*[b"m"] * 5), 1: messages(b"a", b"b")}}))
    c = Coordinated()
    metrics = PrometheusMetrics(h.cluster, c.coordinator)

    def value(name, **labels):
        return metrics.registry.get_sample_value(name, labels)

    [leader, follower], generation = c.stable(2)
    assert fired(c.commit(leader, generation, {("t", 0): (3, -1, "")})) == {("t", 0): 0}
    assert fired(c.commit(follower, generation, {("t", 1): (2, -1, ""), ("gone", 0): (7, -1, "")})) == {("t", 1): 0, ("gone", 0): 0}
    fired(c.commit("", -1, {("t", 0): (5, -1, "")}, group="simple"))  # a group of offsets only
    assert value("kafkaw_group_members", group="g") is None  # not scraped yet
    metrics.refresh()
    assert value("kafkaw_group_members", group="g") == 2
    assert value("kafkaw_group_members", group="simple") == 0
    assert value("kafkaw_group_rebalances_total", group="g") == 1
    assert value("kafkaw_group_rebalances_total", group="simple") == 0
    assert value("kafkaw_group_committed_offset", group="g", topic="t", partition="0") == 3
    assert value("kafkaw_group_lag", group="g", topic="t", partition="0") == 2
    assert value("kafkaw_group_committed_offset", group="g", topic="t", partition="1") == 2
    assert value("kafkaw_group_lag", group="g", topic="t", partition="1") == 0
    assert value("kafkaw_group_committed_offset", group="simple", topic="t", partition="0") == 5
    assert value("kafkaw_group_lag", group="simple", topic="t", partition="0") == 0
    # a partition that does not exist has a committed offset but no lag
    assert value("kafkaw_group_committed_offset", group="g", topic="gone", partition="0") == 7
    assert value("kafkaw_group_lag", group="g", topic="gone", partition="0") is None

    # Appends and commits change nothing until the next scrape.
    client.request(produceRequest(2, {"t": {0: messages(b"x", b"y")}}))
    fired(c.commit(leader, generation, {("t", 0): (4, -1, "")}))
    assert value("kafkaw_group_lag", group="g", topic="t", partition="0") == 2
    metrics.refresh()
    assert value("kafkaw_group_committed_offset", group="g", topic="t", partition="0") == 4
    assert value("kafkaw_group_lag", group="g", topic="t", partition="0") == 3

    # The follower leaves: the leader rejoins, a second rebalance.
    assert c.coordinator.leaveGroup("g", follower) == 0
    rejoined = fired(c.join(leader))
    assert fired(c.sync(leader, rejoined.generationId, {leader: b""})).errorCode == 0
    metrics.refresh()
    assert value("kafkaw_group_members", group="g") == 1
    assert value("kafkaw_group_rebalances_total", group="g") == 2


def test_aGroupBeingDeletedIsLeftOut():
    h = Harness()
    h.createTopic("t")
    c = Coordinated()
    metrics = PrometheusMetrics(h.cluster, c.coordinator)
    fired(c.commit("", -1, {("t", 0): (0, -1, "")}, group="old"))
    c.store.hold()
    deleting = c.coordinator.deleteGroups(["old"])
    metrics.refresh()  # Dead while its deletion is stored
    assert metrics.registry.get_sample_value("kafkaw_group_members", {"group": "old"}) is None
    assert metrics.registry.get_sample_value("kafkaw_group_committed_offset", {"group": "old", "topic": "t", "partition": "0"}) is None
    c.store.release()
    assert fired(deleting) == {"old": 0}


def test_withoutACoordinatorNoGroupsAreReported(harness):
    harness.metrics.refresh()
    names = {sample.name for family in harness.metrics.registry.collect() for sample in family.samples}
    assert "kafkaw_partition_log_end_offset" in names
    assert not any(name.startswith("kafkaw_group_") for name in names)


def test_connectionsByTransport(harness):
    first, second = harness.connect(), harness.connect()
    assert harness.value("kafkaw_connections", transport="tcp") == 2
    first.lose()
    assert harness.value("kafkaw_connections", transport="tcp") == 1
    pair = WebSocketPair(broker=harness.broker)
    assert harness.value("kafkaw_connections", transport="websocket") == 1
    pair.client.sendClose()
    pair.closeAfter()
    assert harness.value("kafkaw_connections", transport="websocket") == 0
    second.lose()
    assert harness.value("kafkaw_connections", transport="tcp") == 0


def test_refusedConnectionsAreNotOpen():
    harness = MeteredHarness(maxConnections=1)
    harness.connect()
    with capturedLogs():
        refused = harness.connect()
    assert refused.transport.disconnecting
    refused.lose()
    assert harness.value("kafkaw_connections", transport="tcp") == 1


def test_eachBrokerHasItsOwnRegistry():
    first, second = MeteredHarness(), MeteredHarness()
    first.connect().request(metadataRequest(1))
    assert first.value("kafkaw_requests_total", api="Metadata", outcome="ok") == 1
    assert second.value("kafkaw_requests_total", api="Metadata", outcome="ok") == 0


def test_withoutMetricsNothingIsCounted():
    harness = Harness()
    assert harness.broker.metrics is NO_METRICS
    harness.createTopic("t")
    harness.connect().request(produceRequest(1, {"t": {0: messages(b"a")}}))


# --- logging: one line per connection open and close, none per request ---------


def test_aProduceFetchExchangeLogsOnlyOpenAndClose():
    harness = Harness()
    harness.createTopic("t")
    with capturedLogs() as events:
        client = harness.connect()
        client.request(produceRequest(1, {"t": {0: messages(b"a", b"b")}}))
        client.request(fetchRequest(2, {"t": {0: (0, 1000)}}))
        harness.clock.advance(2.5)
        client.lose()
    assert [(e["log_level"], formatEvent(e)) for e in events] == [
        (LogLevel.info, "tcp connection from IPv4Address(type='TCP', host='192.168.1.1', port=54321)"),
        (LogLevel.info, "tcp connection from IPv4Address(type='TCP', host='192.168.1.1', port=54321) closed after 2.5 s and 2 requests"),
    ]
    assert events[1]["transport"] == "tcp" and events[1]["requests"] == 2 and events[1]["duration"] == 2.5


def test_webSocketLogsOpenAndCloseOnce():
    clock = MemoryReactorClock()
    broker = Broker(ClusterService(MemoryStore(), clock), clock)
    with capturedLogs() as events:
        pair = WebSocketPair(broker=broker)
        pair.exchange(metadataRequest(1))
        pair.client.sendClose(1000)
        pair.closeAfter()
    lines = [formatEvent(e) for e in events if e.get("transport") == "websocket"]
    assert len(lines) == 2, lines
    assert lines[0].startswith("websocket connection from ")
    assert lines[1].endswith("closed (code 1000) after 0.0 s and 1 requests")
    assert [e for e in events if e.get("log_level", LogLevel.info) > LogLevel.info] == []
