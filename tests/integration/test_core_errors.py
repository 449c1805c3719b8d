"""Broker core error paths, provoked with hand-built v0 frames on raw sockets
(and confluent-kafka where a client can provoke them)."""

import re
import socket
import struct
import zlib

import pytest

from tests.integration.conftest import (
    KCAT_08,
    RawClient,
    decodeProduceResponse,
    kcat,
    metadataBody,
    produceBody,
    rdConsume,
    rdProduce,
    requestHeader,
    waitUntil,
)
from kafkaw.protocol.messages import encodeMessage, encodeMessageSet, expandMessageSet

UNKNOWN_TOPIC_OR_PARTITION = 3
INVALID_MESSAGE = 2
MESSAGE_SIZE_TOO_LARGE = 10
OFFSET_OUT_OF_RANGE = 1


def messages(*values):
    return encodeMessageSet([(b"k", v) for v in values])


def createTopic(raw, topic):
    _, topics = raw.metadata([topic])
    assert topics[topic][0] == 0, topics


def readAll(raw, topic, partition):
    error, hw, data = raw.fetch({topic: {partition: (0, 1 << 20)}})[topic][partition]
    assert error == 0
    return [(m.offset, m.key, m.value) for m in expandMessageSet(data)], hw


# --- unknown topics and partitions ------------------------------------------------


def test_unknown_topic_without_auto_create(brokerFactory):
    broker = brokerFactory("--no-auto-create-topics")
    with RawClient(broker) as raw:
        brokers, topics = raw.metadata(["nosuch"])
        assert brokers == [(0, "127.0.0.1", broker.port)]
        assert topics == {"nosuch": (UNKNOWN_TOPIC_OR_PARTITION, {})}
        assert raw.produce({"nosuch": {0: messages(b"lost")}}) == {"nosuch": {0: (UNKNOWN_TOPIC_OR_PARTITION, -1)}}
        error, hw, data = raw.fetch({"nosuch": {0: (0, 1024)}})["nosuch"][0]
        assert (error, data) == (UNKNOWN_TOPIC_OR_PARTITION, b"")
        assert raw.listOffsets({"nosuch": {0: (-1, 1)}}) == {"nosuch": {0: (UNKNOWN_TOPIC_OR_PARTITION, [])}}
        # still not created by any of that, and the connection is still usable
        assert raw.metadata() == ([(0, "127.0.0.1", broker.port)], {})
        assert raw.metadata(["nosuch"])[1] == {"nosuch": (UNKNOWN_TOPIC_OR_PARTITION, {})}


def test_produce_to_unknown_topic_is_refused_even_with_auto_create(broker):
    """Kafka 0.8.0 creates topics on Metadata only; Produce and Fetch answer 3."""
    with RawClient(broker) as raw:
        assert raw.produce({"fresh": {0: messages(b"v")}}) == {"fresh": {0: (UNKNOWN_TOPIC_OR_PARTITION, -1)}}
        assert raw.fetch({"fresh": {0: (0, 1024)}})["fresh"][0][0] == UNKNOWN_TOPIC_OR_PARTITION
        assert raw.metadata()[1] == {}
        createTopic(raw, "fresh")
        assert raw.produce({"fresh": {0: messages(b"v")}}) == {"fresh": {0: (0, 0)}}


def test_unknown_partition(broker):
    with RawClient(broker) as raw:
        createTopic(raw, "fourp")
        result = raw.produce({"fourp": {4: messages(b"no"), 1: messages(b"yes"), 99: messages(b"no")}})
        assert result == {"fourp": {4: (UNKNOWN_TOPIC_OR_PARTITION, -1), 1: (0, 0), 99: (UNKNOWN_TOPIC_OR_PARTITION, -1)}}
        fetched = raw.fetch({"fourp": {4: (0, 1024), 1: (0, 1024)}})["fourp"]
        assert fetched[4][0] == UNKNOWN_TOPIC_OR_PARTITION and fetched[4][2] == b""
        assert fetched[1][:2] == (0, 1)
        assert raw.listOffsets({"fourp": {4: (-1, 1), -1: (-2, 1)}}) == {
            "fourp": {4: (UNKNOWN_TOPIC_OR_PARTITION, []), -1: (UNKNOWN_TOPIC_OR_PARTITION, [])}
        }
        assert readAll(raw, "fourp", 1) == ([(0, b"k", b"yes")], 1)


# --- bad message sets ------------------------------------------------------------


def corruptCrc(messageSet):
    data = bytearray(messageSet)
    data[-1] ^= 0xFF  # last byte of the last value: the CRC no longer matches
    return bytes(data)


def withMessage(magic=0, attributes=0, value=b"payload"):
    body = bytes((magic, attributes)) + struct.pack(">i", -1) + struct.pack(">i", len(value)) + value
    return struct.pack(">qiI", 0, len(body) + 4, zlib.crc32(body)) + body


BAD_SETS = {
    "bad-crc": lambda: messages(b"good one") + corruptCrc(messages(b"bad one")),
    "bad-magic": lambda: withMessage(magic=1),
    "bad-attributes": lambda: withMessage(attributes=0x10),
    "lz4-codec": lambda: withMessage(attributes=3),
    "undecodable-gzip": lambda: withMessage(attributes=1, value=b"not gzip at all"),
    "size-below-minimum": lambda: struct.pack(">qi", 0, 6) + b"\0" * 6,
}


@pytest.mark.parametrize("kind", sorted(BAD_SETS))
def test_invalid_message_set_is_rejected_and_nothing_stored(broker, kind):
    with RawClient(broker) as raw:
        createTopic(raw, "crc")
        assert raw.produce({"crc": {0: messages(b"before")}}) == {"crc": {0: (0, 0)}}
        result = raw.produce({"crc": {0: BAD_SETS[kind](), 2: messages(b"other partition")}})
        # the bad partition stores nothing; the other partition of the request is independent
        assert result == {"crc": {0: (INVALID_MESSAGE, -1), 2: (0, 0)}}
        assert raw.latest("crc", 0) == 1
        assert readAll(raw, "crc", 0) == ([(0, b"k", b"before")], 1)
        assert raw.produce({"crc": {0: messages(b"after")}}) == {"crc": {0: (0, 1)}}
        assert readAll(raw, "crc", 0) == ([(0, b"k", b"before"), (1, b"k", b"after")], 2)
        assert readAll(raw, "crc", 2) == ([(0, b"k", b"other partition")], 1)


def test_message_over_message_max_bytes(brokerFactory):
    broker = brokerFactory("--num-partitions", "2", "--message-max-bytes", "10000")
    with RawClient(broker) as raw:
        createTopic(raw, "size")
        small = messages(b"s" * 9000)
        large = messages(b"L" * 10000)
        result = raw.produce({"size": {0: small + large, 1: small}})
        assert result == {"size": {0: (MESSAGE_SIZE_TOO_LARGE, -1), 1: (0, 0)}}
        assert raw.latest("size", 0) == 0
        assert raw.produce({"size": {0: small}}) == {"size": {0: (0, 0)}}

    # confluent-kafka sees the broker's refusal (its own limit is the default 1 MB)
    noRetry = {"linger.ms": 0, "message.send.max.retries": 0}
    [(err, partition, offset, _, _)] = rdProduce(broker.bootstrap, "size", [(1, b"big", b"x" * 50000)], **noRetry)
    assert err is not None and err.name() == "MSG_SIZE_TOO_LARGE", err
    [(err, partition, offset, _, _)] = rdProduce(broker.bootstrap, "size", [(1, b"ok", b"fine")], **noRetry)
    assert (err, partition, offset) == (None, 1, 1)
    assert rdConsume(broker.bootstrap, "size", {1: 2}) == {1: [(0, b"k", b"s" * 9000), (1, b"ok", b"fine")]}


def test_fetch_offset_out_of_range(broker):
    with RawClient(broker) as raw:
        createTopic(raw, "oor")
        assert raw.produce({"oor": {0: messages(b"a", b"b", b"c")}}) == {"oor": {0: (0, 0)}}
        answer = raw.fetch({"oor": {0: (4, 1024), 1: (1, 1024), 2: (-1, 1024), 3: (0, 1024)}})["oor"]
        assert answer[0] == (OFFSET_OUT_OF_RANGE, -1, b"")
        assert answer[1] == (OFFSET_OUT_OF_RANGE, -1, b"")
        assert answer[2] == (OFFSET_OUT_OF_RANGE, -1, b"")
        assert answer[3] == (0, 0, b"")  # offset == log end: empty, no error
        assert raw.fetch({"oor": {0: (3, 1024)}})["oor"][0] == (0, 3, b"")
        error, hw, data = raw.fetch({"oor": {0: (1, 1024)}})["oor"][0]
        assert (error, hw) == (0, 3)
        assert [(m.offset, m.value) for m in expandMessageSet(data)] == [(1, b"b"), (2, b"c")]


# --- requests that make the broker close the connection ---------------------------


def _frame(payload):
    return struct.pack(">i", len(payload)) + payload


def _produceFrame(apiVersion=0):
    body = produceBody(1, {"keep": {0: messages(b"never stored")}})
    return _frame(requestHeader(0, 7, apiVersion) + body)


BAD_FRAMES = {
    # name: (bytes to send, what the log line must say[, extra broker options])
    # ApiVersions is answered for modern clients unless --strict-0.8 asks for 0.8.0's close.
    "api-key-18-strict": (_frame(requestHeader(18, 1) + b""), r"key\W{0,3}18\b", "--strict-0.8"),
    "api-key-10-strict": (_frame(requestHeader(10, 1) + struct.pack(">h", 5) + b"group"), r"key\W{0,3}10\b", "--strict-0.8"),
    "api-key-21": (_frame(requestHeader(21, 1) + b"\0" * 16), r"key\W{0,3}21\b"),  # DeleteRecords: not served
    "api-key-4": (_frame(requestHeader(4, 1) + b"\0" * 16), r"key\W{0,3}4\b"),
    "produce-v8": (_produceFrame(apiVersion=8), r"key\W{0,3}0\b.*version\W{0,3}8\b|v8\b"),  # past Kafka 2.3.0's table
    "produce-v1-strict": (_produceFrame(apiVersion=1), r"key\W{0,3}0\b.*version\W{0,3}1\b|v1\b", "--strict-0.8"),
    "truncated-produce": (_frame((requestHeader(0, 1) + produceBody(1, {"keep": {0: messages(b"x")}}))[:-9]), r"truncat|malformed"),
    "truncated-header": (_frame(b"\x00\x03\x00"), r"truncat|header|malformed"),
    "trailing-bytes": (_frame(requestHeader(3, 1) + metadataBody([]) + b"junk"), r"unexpected|malformed|trailing"),
    "frame-too-large": (struct.pack(">i", 4096 + 1) + b"\0" * 64, r"4,?097"),
    "negative-size": (struct.pack(">i", -5) + b"\0" * 64, r"-5\b"),
}


@pytest.mark.parametrize("case", sorted(BAD_FRAMES))
def test_bad_request_closes_connection_and_broker_keeps_serving(brokerFactory, case):
    data, reason, *extra = BAD_FRAMES[case]
    broker = brokerFactory("--num-partitions", "2", "--max-request-bytes", "4096", *extra)
    with RawClient(broker) as raw:
        createTopic(raw, "keep")
        assert raw.produce({"keep": {0: messages(b"one", b"two")}}) == {"keep": {0: (0, 0)}}
    kcat("-b", broker.bootstrap, *KCAT_08, "-P", "-t", "keep", "-p", "1", input=b"kcat one\n")

    with RawClient(broker) as raw:
        # a good request first on the same connection is answered normally
        assert raw.latest("keep", 0) == 2
        logBefore = len(broker.logText())
        raw.sendRaw(data)
        closed = raw.closedByBroker(timeout=5)
        assert closed is True, f"connection not closed cleanly by the broker: {closed!r}"
        port = raw.localPort

    def complaint():
        lines = broker.logText()[logBefore:].splitlines()
        return [line for line in lines if f"port={port}" in line and ("#warn" in line or "#error" in line)]

    lines = waitUntil(complaint, timeout=5, what="a log line about the bad request")
    assert any(re.search(reason, line) for line in lines), lines
    assert "Traceback" not in broker.logText()

    # the process keeps serving: a real client round-trips, earlier data is intact
    assert broker.process.poll() is None
    with RawClient(broker) as raw:
        assert readAll(raw, "keep", 0) == ([(0, b"k", b"one"), (1, b"k", b"two")], 2)
    reports = rdProduce(broker.bootstrap, "after", [(0, b"a", b"after-1"), (1, b"b", b"after-2")])
    assert all(err is None for err, *_ in reports)
    assert rdConsume(broker.bootstrap, "after", {0: 1, 1: 1}) == {0: [(0, b"a", b"after-1")], 1: [(0, b"b", b"after-2")]}
    out = kcat("-b", broker.bootstrap, *KCAT_08, "-C", "-t", "keep", "-p", "1", "-o", "beginning", "-e", "-f", "%o %s\n")
    assert out == b"0 kcat one\n"


def test_request_at_max_request_bytes_is_served(brokerFactory):
    """The limit is inclusive: a frame of exactly --max-request-bytes is served."""
    broker = brokerFactory("--max-request-bytes", "4096")
    with RawClient(broker) as raw:
        createTopic(raw, "edge")
        header = requestHeader(0, 1000)
        empty = produceBody(1, {"edge": {0: b""}})
        filler = 4096 - len(header) - len(empty) - 12 - 14  # one message with a value that fills the frame
        body = produceBody(1, {"edge": {0: encodeMessage(0, None, b"f" * filler)}})
        assert len(header + body) == 4096
        raw.sendRaw(_frame(header + body))
        assert decodeProduceResponse(raw.receive(1000)) == {"edge": {0: (0, 0)}}


@pytest.mark.parametrize("busy", ["--listen", "--websocket"])
def test_start_fails_when_an_endpoint_cannot_listen(brokerFactory, busy):
    """A broker missing one of its endpoints must not look healthy: it exits at once."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        broker = brokerFactory(busy, f"tcp:{port}:interface=127.0.0.1", start=False)
        assert broker.expectExit() == 1
    log = broker.logText()
    assert f"kafkaw: Couldn't listen on 127.0.0.1:{port}" in log and "Traceback" not in log


@pytest.mark.parametrize(
    "option, value, why",
    [
        ("--listen", "tcpx:9092", "Unknown endpoint type: 'tcpx'"),
        ("--websocket", "ssl:0:privateKey=missing.pem:certKey=missing.pem:interface=127.0.0.1", "missing.pem"),
        ("--metrics", "tcp:notaport", "notaport"),
    ],
)
def test_start_fails_with_one_line_for_an_endpoint_that_does_not_parse(brokerFactory, option, value, why):
    broker = brokerFactory(option, value, start=False)
    assert broker.expectExit() == 1
    log = broker.logText()
    assert "kafkaw: " in log and why in log and "Traceback" not in log
