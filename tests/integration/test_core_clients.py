"""Broker core against real clients: confluent-kafka, kcat and kafka-python round trips.

Every test talks to a real `twistd kafkaw` subprocess (LevelDB, 4 partitions per
auto-created topic) over real sockets.
"""

import struct
import threading
import time

import pytest
from confluent_kafka import TopicPartition

from tests.integration.conftest import (
    KCAT_08,
    RawClient,
    decodeFetchResponse,
    decodeListOffsetsResponse,
    decodeProduceResponse,
    decodeMetadataResponse,
    fetchBody,
    kcat,
    listOffsetsBody,
    metadataBody,
    produceBody,
    rdConsume,
    requestHeader,
    rdConsumer,
    rdProduce,
    waitUntil,
)
from kafkaw.protocol.messages import decodeMessageSet, encodeMessageSet, expandMessageSet

PARTITIONS = 4


def keyed(count, prefix="m", size=None):
    """[(partition, key, value)]: message i goes to partition i % 4."""
    out = []
    for i in range(count):
        value = f"{prefix}-value-{i}".encode()
        if size is not None:
            value = (value + b"." * size)[:size]
        out.append((i % PARTITIONS, f"{prefix}-key-{i}".encode(), value))
    return out


def expectedByPartition(messages):
    byPartition = {p: [] for p in range(PARTITIONS)}
    for partition, key, value in messages:
        byPartition[partition].append((key, value))
    return byPartition


def assertRoundTrip(messages, reports, consumed):
    """Produced in order per partition, acked at 0..n-1, read back intact at those offsets."""
    assert all(err is None for err, *_ in reports), [r for r in reports if r[0] is not None][:3]
    expected = expectedByPartition(messages)
    for partition, pairs in expected.items():
        acked = [(offset, key, value) for _, p, offset, key, value in reports if p == partition]
        assert sorted(o for o, _, _ in acked) == list(range(len(pairs)))
        assert sorted(acked) == [(i, k, v) for i, (k, v) in enumerate(pairs)]
        got = consumed[partition]
        assert [o for o, _, _ in got] == list(range(len(pairs))), f"partition {partition} offsets"
        assert [(k, v) for _, k, v in got] == pairs, f"partition {partition} keys/values"


# --- confluent-kafka ---------------------------------------------------------


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy"])
def test_confluent_keyed_round_trip(broker, codec):
    messages = keyed(2000, prefix=codec)
    reports = rdProduce(broker.bootstrap, f"rt-{codec}", messages, **{"compression.codec": codec})
    consumed = rdConsume(broker.bootstrap, f"rt-{codec}", {p: 500 for p in range(PARTITIONS)})
    assertRoundTrip(messages, reports, consumed)


def test_confluent_compressed_sets_get_one_offset_per_message(broker):
    """A gzip wrapper is stored with per-message offsets: a raw Fetch sees wrappers
    whose offset is their last inner offset, and inner offsets are contiguous."""
    messages = [(0, b"k%d" % i, b"v%d" % i) for i in range(300)]
    rdProduce(broker.bootstrap, "wrapped", messages, **{"compression.codec": "gzip", "linger.ms": 50})
    with RawClient(broker) as raw:
        error, hw, data = raw.fetch({"wrapped": {0: (0, 1 << 20)}})["wrapped"][0]
    assert (error, hw) == (0, 300)
    inner = expandMessageSet(data)
    assert [m.offset for m in inner] == list(range(300))
    assert [(m.key, m.value) for m in inner] == [(k, v) for _, k, v in messages]
    # at least one compressed wrapper really was stored
    wrappers = decodeMessageSet(data)
    assert any(w.attributes & 3 == 1 for w in wrappers)
    assert len(wrappers) < 300


def test_confluent_large_messages(broker):
    messages = keyed(24, prefix="big", size=100 * 1024)
    reports = rdProduce(broker.bootstrap, "big", messages)
    consumed = rdConsume(broker.bootstrap, "big", {p: 6 for p in range(PARTITIONS)})
    assertRoundTrip(messages, reports, consumed)


def test_confluent_consumer_parked_on_empty_partition_wakes_up(broker):
    """With fetch.wait.max.ms = 10 s the only way to see a new message quickly is the
    broker answering the parked Fetch as soon as the append lands."""
    rdProduce(broker.bootstrap, "wake", [(1, b"x", b"other partition")])  # creates the topic
    consumer = rdConsumer(broker.bootstrap, **{"fetch.wait.max.ms": 10000})
    try:
        consumer.assign([TopicPartition("wake", 2, 0)])
        assert consumer.consume(10, 1.5) == []  # the consumer is now parked on partition 2
        received = []

        def consume():
            deadline = time.monotonic() + 12
            while not received and time.monotonic() < deadline:
                received.extend((time.monotonic(), m) for m in consumer.consume(10, 0.05))

        reader = threading.Thread(target=consume)
        reader.start()
        time.sleep(0.5)
        rdProduce(broker.bootstrap, "wake", [(2, b"k", b"late message")], **{"linger.ms": 0})
        producedAt = time.monotonic()
        reader.join(15)
    finally:
        consumer.close()
    assert received, "the parked consumer never received the message"
    at, message = received[0]
    assert message.error() is None
    assert (message.partition(), message.offset(), message.key(), message.value()) == (2, 0, b"k", b"late message")
    assert at - producedAt < 2.0, f"message arrived {at - producedAt:.2f}s after it was acked"


def test_raw_fetch_long_poll(broker):
    """max_wait parks a Fetch until data arrives (answered at once), or until max_wait."""
    with RawClient(broker) as raw:
        raw.metadata(["poll"])
        started = time.monotonic()
        error, hw, data = raw.fetch({"poll": {0: (0, 65536)}}, maxWait=400, minBytes=1)["poll"][0]
        waited = time.monotonic() - started
        assert (error, hw, data) == (0, 0, b"")
        assert 0.3 < waited < 3.0, f"empty Fetch with max_wait 400 ms answered after {waited:.2f}s"

        correlationId = raw.send(1, fetchBody({"poll": {0: (0, 65536)}}, maxWait=20000, minBytes=1))
        time.sleep(0.3)
        with RawClient(broker) as producer:
            result = producer.produce({"poll": {0: encodeMessageSet([(b"a", b"woke")])}})
        producedAt = time.monotonic()
        answer = decodeFetchResponse(raw.receive(correlationId))
        answeredIn = time.monotonic() - producedAt
    assert result == {"poll": {0: (0, 0)}}
    error, hw, data = answer["poll"][0]
    assert (error, hw) == (0, 1)
    assert [(m.offset, m.key, m.value) for m in expandMessageSet(data)] == [(0, b"a", b"woke")]
    assert answeredIn < 2.0, f"parked Fetch answered {answeredIn:.2f}s after the produce"


# --- kcat --------------------------------------------------------------------


def test_kcat_round_trip_several_partitions(broker):
    for partition in range(3):
        lines = b"".join(b"k%d-%d:value %d on %d\n" % (partition, i, i, partition) for i in range(50))
        kcat("-b", broker.bootstrap, *KCAT_08, "-P", "-t", "kc", "-p", str(partition), "-K", ":", input=lines)
    for partition in range(3):
        out = kcat(
            "-b", broker.bootstrap, *KCAT_08, "-C", "-t", "kc", "-p", str(partition),
            "-o", "beginning", "-e", "-f", "%p %o %k %s\n",
        )
        expected = b"".join(b"%d %d k%d-%d value %d on %d\n" % (partition, i, partition, i, i, partition) for i in range(50))
        assert out == expected
    # partition 3 exists (4 partitions) but is empty
    out = kcat("-b", broker.bootstrap, *KCAT_08, "-C", "-t", "kc", "-p", "3", "-o", "beginning", "-e", "-f", "%o %s\n")
    assert out == b""


def test_kcat_metadata_lists_topics(broker):
    for topic in ("alpha", "beta", "gamma"):
        kcat("-b", broker.bootstrap, *KCAT_08, "-P", "-t", topic, "-p", "0", input=b"x\n")
    out = kcat("-b", broker.bootstrap, *KCAT_08, "-L").decode()
    for topic in ("alpha", "beta", "gamma"):
        assert f'topic "{topic}" with 4 partitions' in out
    assert "1 brokers" in out and f"broker 0 at {broker.bootstrap}" in out
    assert "partition 3, leader 0, replicas: 0, isrs: 0" in out


@pytest.mark.parametrize("codec", ["gzip", "snappy"])
def test_kcat_compressed_round_trip(broker, codec):
    topic = f"kz-{codec}"
    lines = b"".join(b"%s line %04d %s\n" % (codec.encode(), i, b"z" * (i % 40)) for i in range(400))
    kcat("-b", broker.bootstrap, *KCAT_08, "-P", "-t", topic, "-p", "1", "-z", codec, input=lines)
    out = kcat("-b", broker.bootstrap, *KCAT_08, "-C", "-t", topic, "-p", "1", "-o", "beginning", "-e", "-f", "%o %s\n")
    assert out == b"".join(b"%d %s\n" % (i, line) for i, line in enumerate(lines.splitlines()))
    with RawClient(broker) as raw:
        error, hw, data = raw.fetch({topic: {1: (0, 1 << 20)}})[topic][1]
    assert (error, hw) == (0, 400)
    assert any(m.attributes & 3 == {"gzip": 1, "snappy": 2}[codec] for m in decodeMessageSet(data))


# --- kafka-python 3 ------------------------------------------------------------


def kafkaPython(kind, bootstrap, **conf):
    import kafka

    cls = {"producer": kafka.KafkaProducer, "consumer": kafka.KafkaConsumer}[kind]
    common = dict(bootstrap_servers=bootstrap, api_version=(0, 8, 0), request_timeout_ms=10000)
    if kind == "consumer":
        common.update(enable_auto_commit=False, group_id=None, fetch_max_wait_ms=100)
    return cls(**common, **conf)


def kafkaPythonConsume(bootstrap, topic, expected, timeout=15.0):
    from kafka import TopicPartition as KTP

    consumer = kafkaPython("consumer", bootstrap)
    got = {p: [] for p in expected}
    try:
        consumer.assign([KTP(topic, p) for p in expected])
        consumer.seek_to_beginning()
        deadline = time.monotonic() + timeout
        while any(len(got[p]) < n for p, n in expected.items()):
            assert time.monotonic() < deadline, f"kafka-python consumed {[len(v) for v in got.values()]} of {expected}"
            for tp, records in consumer.poll(timeout_ms=200).items():
                got[tp.partition].extend((r.offset, r.key, r.value) for r in records)
    finally:
        consumer.close()
    return got


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_kafka_python_round_trip(broker, compression):
    topic = f"kp-{compression}"
    producer = kafkaPython("producer", broker.bootstrap, acks=1, linger_ms=5, compression_type=compression)
    messages = keyed(400, prefix=f"kp{compression}")
    try:
        futures = [producer.send(topic, value=v, key=k, partition=p) for p, k, v in messages]
        producer.flush(15)
        metadata = [f.get(timeout=10) for f in futures]
    finally:
        producer.close(5)
    reports = [(None, m.partition, m.offset, k, v) for m, (_, k, v) in zip(metadata, messages)]
    consumed = kafkaPythonConsume(broker.bootstrap, topic, {p: 100 for p in range(PARTITIONS)})
    assertRoundTrip(messages, reports, consumed)
    if compression == "gzip":
        with RawClient(broker) as raw:
            _, _, data = raw.fetch({topic: {0: (0, 1 << 20)}})[topic][0]
        assert any(m.attributes & 3 == 1 for m in decodeMessageSet(data))


# --- ListOffsets -------------------------------------------------------------


def produceCounts(broker, topic, counts):
    """Produce counts[p] messages to partition p (raw, one request)."""
    with RawClient(broker) as raw:
        raw.metadata([topic])
        sets = {p: encodeMessageSet([(None, b"%d-%d" % (p, i)) for i in range(n)]) for p, n in counts.items() if n}
        result = raw.produce({topic: sets})
    assert all(error == 0 for error, _ in result[topic].values()), result


def test_list_offsets_confluent_watermarks(broker):
    counts = {0: 7, 1: 0, 2: 30, 3: 1}
    produceCounts(broker, "wm", counts)
    consumer = rdConsumer(broker.bootstrap)
    try:
        for partition, count in counts.items():
            assert consumer.get_watermark_offsets(TopicPartition("wm", partition), timeout=10) == (0, count)
    finally:
        consumer.close()


def test_list_offsets_kcat_query(broker):
    counts = {0: 3, 1: 12, 2: 0, 3: 5}
    produceCounts(broker, "kq", counts)
    for partition, count in counts.items():
        latest = kcat("-b", broker.bootstrap, *KCAT_08, "-Q", "-t", f"kq:{partition}:-1")
        earliest = kcat("-b", broker.bootstrap, *KCAT_08, "-Q", "-t", f"kq:{partition}:-2")
        assert latest.decode().split() == ["kq", f"[{partition}]", "offset", str(count)]
        assert earliest.decode().split() == ["kq", f"[{partition}]", "offset", "0"]


def test_list_offsets_kafka_python(broker):
    from kafka import TopicPartition as KTP

    counts = {0: 4, 1: 9, 2: 0, 3: 2}
    produceCounts(broker, "kpo", counts)
    consumer = kafkaPython("consumer", broker.bootstrap)
    try:
        partitions = [KTP("kpo", p) for p in counts]
        assert consumer.end_offsets(partitions) == {KTP("kpo", p): n for p, n in counts.items()}
        assert consumer.beginning_offsets(partitions) == {KTP("kpo", p): 0 for p in counts}
    finally:
        consumer.close()


def test_list_offsets_raw_semantics(broker):
    """0.8.0 OffsetRequest: -1 latest, -2 earliest, empty log [0], a time before all data []."""
    produceCounts(broker, "lo", {0: 5})
    with RawClient(broker) as raw:
        answer = raw.listOffsets({"lo": {0: (-1, 10), 1: (-2, 10), 2: (-1, 10)}})["lo"]
        assert answer == {0: (0, [5]), 1: (0, [0]), 2: (0, [0])}
        assert raw.listOffsets({"lo": {0: (-2, 10)}}) == {"lo": {0: (0, [0])}}
        assert raw.listOffsets({"lo": {0: (1, 10)}}) == {"lo": {0: (0, [])}}
        future = int(time.time() * 1000) + 3_600_000
        error, offsets = raw.listOffsets({"lo": {0: (future, 10)}})["lo"][0]
        assert error == 0 and offsets[0] == 5 and offsets == sorted(offsets, reverse=True)
        assert raw.listOffsets({"lo": {0: (future, 1)}}) == {"lo": {0: (0, [5])}}


def test_metadata_is_served_for_all_topics(broker):
    produceCounts(broker, "meta-a", {0: 1})
    with RawClient(broker) as raw:
        raw.metadata(["meta-b"])  # auto-created by Metadata
        brokers, topics = raw.metadata()
    assert brokers == [(0, "127.0.0.1", broker.port)]
    assert set(topics) == {"meta-a", "meta-b"}
    for error, partitions in topics.values():
        assert error == 0
        assert partitions == {p: (0, 0, [0], [0]) for p in range(PARTITIONS)}
    waitUntil(lambda: "created topic meta-b" in broker.logText(), what="the creation log line")


# --- raw protocol behaviour every client relies on ------------------------------


def test_raw_pipelined_responses_come_back_in_request_order(broker):
    """A parked Fetch, then an acks=0 Produce (no answer, no slot), then Metadata and
    ListOffsets on the same connection: answers come back in request order."""
    with RawClient(broker) as raw:
        raw.metadata(["order"])
        fetchId = raw.send(1, fetchBody({"order": {3: (0, 65536)}}, maxWait=600, minBytes=1))
        raw.send(0, produceBody(0, {"order": {0: encodeMessageSet([(None, b"fire and forget")])}}))
        metadataId = raw.send(3, metadataBody(["order"]))
        offsetsId = raw.send(2, listOffsetsBody({"order": {2: (-1, 1)}}))
        started = time.monotonic()
        fetched = decodeFetchResponse(raw.receive(fetchId))
        waited = time.monotonic() - started
        assert fetched == {"order": {3: (0, 0, b"")}}
        assert decodeMetadataResponse(raw.receive(metadataId))[1]["order"][0] == 0
        assert decodeListOffsetsResponse(raw.receive(offsetsId)) == {"order": {2: (0, [0])}}
        waitUntil(lambda: raw.latest("order", 0) == 1, timeout=5, what="the acks=0 message to be stored")
    assert 0.4 < waited < 3.0, f"the parked Fetch was answered after {waited:.2f}s"


@pytest.mark.parametrize("acks", [0, 1])
def test_raw_pipelined_reads_see_earlier_produce_on_same_connection(broker, acks):
    with RawClient(broker) as raw:
        raw.metadata(["ryw"])
        produce = produceBody(acks, {"ryw": {0: encodeMessageSet([(None, b"first")])}})
        frames = [(0, produce), (2, listOffsetsBody({"ryw": {0: (-1, 1)}})), (1, fetchBody({"ryw": {0: (0, 65536)}}))]
        ids = []
        data = b""
        for number, (apiKey, body) in enumerate(frames, start=100):
            payload = requestHeader(apiKey, number) + body
            data += struct.pack(">i", len(payload)) + payload
            ids.append(number)
        raw.sendRaw(data)  # one segment: the broker reads all three requests at once
        if acks:
            assert decodeProduceResponse(raw.receive(ids[0])) == {"ryw": {0: (0, 0)}}
        offsets = decodeListOffsetsResponse(raw.receive(ids[1]))
        fetched = decodeFetchResponse(raw.receive(ids[2]))
    assert offsets == {"ryw": {0: (0, [1])}}
    error, hw, data = fetched["ryw"][0]
    assert (error, hw) == (0, 1) and [m.value for m in expandMessageSet(data)] == [b"first"]


def test_raw_fetch_max_bytes_slices_stored_bytes(broker):
    """Fetch returns at most max_bytes of the stored set, possibly ending in a partial message."""
    with RawClient(broker) as raw:
        raw.metadata(["slice"])
        values = [bytes([65 + i]) * 300 for i in range(5)]
        assert raw.produce({"slice": {0: encodeMessageSet([(None, v) for v in values])}}) == {"slice": {0: (0, 0)}}
        _, _, whole = raw.fetch({"slice": {0: (0, 1 << 20)}})["slice"][0]
        assert [m.value for m in expandMessageSet(whole)] == values
        for maxBytes in (100, 326, 700, 1000):
            error, hw, data = raw.fetch({"slice": {0: (0, maxBytes)}})["slice"][0]
            assert (error, hw) == (0, 5)
            assert 0 < len(data) <= maxBytes and whole.startswith(data), maxBytes
            assert [m.value for m in expandMessageSet(data)] == values[: len(data) // 326]
        error, hw, data = raw.fetch({"slice": {0: (3, 1 << 20)}})["slice"][0]
        assert [(m.offset, m.value) for m in expandMessageSet(data)] == [(3, values[3]), (4, values[4])]
