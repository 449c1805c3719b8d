"""The client matrix: stock Kafka clients against `twistd kafkaw` over TCP.

Each case is a real round trip: produce N keyed messages to several partitions,
read them back with assign() and explicit offsets (no consumer group), and
check partitions, offsets, keys and values. Where a codec is listed, the test
also reads the stored message set raw to see whether it really went compressed.
The cases with default client settings also run once through `twistd
kafkaw-shim` to the broker's WebSocket endpoint (the `bootstrap` fixture).
docs/clients.md is the table of what these tests check; keep the two in step.
"""

import re
import shutil
import struct
import subprocess
import time

import pytest

from tests.integration.conftest import Connection, kafkajs

PARTITIONS = 3
COUNT = 12  # messages per round trip: 4 in each partition
RDKAFKA_08 = {"api.version.request": False, "broker.version.fallback": "0.8.0"}
KCAT_08 = ["-X", "api.version.request=false", "-X", "broker.version.fallback=0.8.0"]

# The compression codec of a stored entry: attributes & 0x03 of a message v0/v1, & 0x07 of a batch v2.
NONE, GZIP, SNAPPY, LZ4, ZSTD = 0, 1, 2, 3, 4
FETCH = 1


@pytest.fixture
def broker(brokerFactory):
    return brokerFactory("--num-partitions", str(PARTITIONS), "--storage", "memory")


@pytest.fixture
def bootstrap(request, broker, shimFactory):
    """Where the clients connect: the broker's TCP port ("tcp", the default), or a
    shim in front of its WebSocket endpoint ("shim", by indirect parametrization)."""
    if getattr(request, "param", "tcp") == "shim":
        return shimFactory(broker.websocketURL).bootstrap
    return broker.bootstrap


# Run a test with default client settings both straight to the broker and through the shim.
TCP_AND_SHIM = pytest.mark.parametrize("bootstrap", ["tcp", "shim"], indirect=True)


# Values compress well, so that a client never finds a compressed batch bigger
# than the plain one (librdkafka then sends it plain: the check would be flaky).
PADDING = b"-kafkaw" * 30


def wanted(count=COUNT):
    """[(partition, key, value)] in send order: message i goes to partition i % PARTITIONS."""
    return [(i % PARTITIONS, b"key-%d" % i, b"value-%d" % i + PADDING) for i in range(count)]


def expectedRecords(count=COUNT):
    """{(partition, offset, key, value)}: each partition numbered from 0 in send order."""
    nextOffset = [0] * PARTITIONS
    records = set()
    for partition, key, value in wanted(count):
        records.add((partition, nextOffset[partition], key, value))
        nextOffset[partition] += 1
    return records


def checkConsumed(consumed, count=COUNT):
    """consumed: [(partition, offset, key, value)] as a client read them back."""
    assert len(consumed) == len(set(consumed)), f"duplicates in {consumed}"
    assert set(consumed) == expectedRecords(count)
    for partition in range(PARTITIONS):
        offsets = [o for p, o, _, _ in consumed if p == partition]
        assert offsets == sorted(offsets), f"partition {partition} read out of order: {offsets}"


def checkProduced(reports, count=COUNT):
    """reports: [(partition, offset, key, value)] from the producer's delivery reports."""
    assert sorted(reports) == sorted(expectedRecords(count))


def brokerLog(broker):
    return broker.logText()


def unservedRequests(broker):
    """Broker log lines about requests it closed the connection on."""
    return [line for line in brokerLog(broker).splitlines() if "unsupported request" in line]


def apiVersionsSeen(broker):
    """[(version, error)] of the ApiVersions requests the broker answered."""
    return [(int(v), int(e)) for v, e in re.findall(r"ApiVersions v(\d+) from .*: error (-?\d+)", brokerLog(broker))]


def storedCodecs(broker, topic):
    """{compression codec} of the entries stored in every partition of C{topic}, read
    with a raw Fetch v4 (stored bytes as they are, whatever their magic)."""
    request = {
        "replicaId": -1, "maxWait": 0, "minBytes": 0, "maxBytes": 1 << 24, "isolationLevel": 0,
        "topics": [{"name": topic, "fetchPartitions": [{"partitionIndex": p, "fetchOffset": 0, "maxBytes": 1 << 20} for p in range(PARTITIONS)]}],
    }
    with Connection(broker.bootstrap) as connection:
        response = connection.call(FETCH, 4, request)
    codecs = set()
    for partition in response.topics[0].partitions:
        assert partition.errorCode == 0
        stored, position = partition.records, 0
        while position + 12 <= len(stored):
            size = struct.unpack_from(">i", stored, position + 8)[0]
            if stored[position + 16] == 2:  # record batch v2: attributes int16 after magic and CRC
                codecs.add(struct.unpack_from(">h", stored, position + 21)[0] & 0x07)
            else:  # message v0/v1: crc 4, magic 1, attributes 1
                codecs.add(stored[position + 17] & 0x03)
            position += 12 + size
    return codecs


def answeredApiVersions(broker):
    """True when the broker answered an ApiVersions request with error 0 (after
    any error-35 answers to versions it does not serve)."""
    return any(error == 0 for _, error in apiVersionsSeen(broker))


# --- confluent-kafka (librdkafka) --------------------------------------------


def rdRoundTrip(bootstrap, topic, settings, codec):
    from confluent_kafka import Consumer, Producer, TopicPartition

    producer = Producer(
        {"bootstrap.servers": bootstrap, "compression.codec": codec, "linger.ms": 5, "message.timeout.ms": 10000, **settings}
    )
    reports = []

    def delivered(err, msg):
        assert err is None, f"delivery failed: {err}"
        reports.append((msg.partition(), msg.offset(), msg.key(), msg.value()))

    for partition, key, value in wanted():
        producer.produce(topic, value, key, partition=partition, on_delivery=delivered)
    assert producer.flush(15) == 0, "messages left undelivered"
    checkProduced(reports)

    # group.id is required by the Python binding but never used: assign() + own offsets, no commits.
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False, "fetch.wait.max.ms": 100, **settings}
    )
    consumed = []
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
        deadline = time.monotonic() + 15
        while len(consumed) < COUNT and time.monotonic() < deadline:
            for message in consumer.consume(100, 0.2):
                assert message.error() is None, f"consumer error: {message.error()}"
                consumed.append((message.partition(), message.offset(), message.key(), message.value()))
    finally:
        consumer.close()
    checkConsumed(consumed)


# Pinned to 0.8.0, librdkafka sends gzip and snappy as compressed wrappers and
# lz4 and zstd uncompressed (and says nothing). With its defaults it sends v2
# batches of every codec (lz4 too: librdkafka ties it to FindCoordinator being
# listed, which kafkaw serves since it coordinates consumer groups).
RD_CODECS_08 = {"none": NONE, "gzip": GZIP, "snappy": SNAPPY, "lz4": NONE, "zstd": NONE}
RD_CODECS = {"none": NONE, "gzip": GZIP, "snappy": SNAPPY, "lz4": LZ4, "zstd": ZSTD}


@pytest.mark.parametrize(
    "settings, bootstrap", [({}, "tcp"), (RDKAFKA_08, "tcp"), ({}, "shim")],
    ids=["defaults", "fallback-0.8.0", "defaults-shim"], indirect=["bootstrap"],
)
def test_confluentKafka(broker, bootstrap, settings):
    for codec, stored in (RD_CODECS_08 if settings else RD_CODECS).items():
        topic = f"rd-{codec}"
        rdRoundTrip(bootstrap, topic, settings, codec)
        assert storedCodecs(broker, topic) == {stored}, codec
    assert unservedRequests(broker) == []
    if settings:
        assert apiVersionsSeen(broker) == []
    else:
        # v3 first (error 35 + the list), then a version served (error 0) on each connection.
        assert (3, 35) in apiVersionsSeen(broker) and answeredApiVersions(broker)


# --- kcat (Debian) -------------------------------------------------------------


def runKcat(bootstrap, args, input=None, timeout=30):
    if shutil.which("kcat") is None:
        pytest.fail("kcat is not installed (apt-get install kcat)")
    return subprocess.run(["kcat", "-b", bootstrap, "-m", "5", *args], input=input, capture_output=True, timeout=timeout)


def kcatOk(bootstrap, args, input=None):
    result = runKcat(bootstrap, args, input)
    assert result.returncode == 0, f"kcat {args} failed ({result.returncode}): {result.stderr.decode(errors='replace')}"
    return result.stdout


def kcatRoundTrip(bootstrap, topic, flags, codec):
    for partition in range(PARTITIONS):
        lines = b"".join(key + b":" + value + b"\n" for p, key, value in wanted() if p == partition)
        kcatOk(bootstrap, [*flags, "-P", "-t", topic, "-p", str(partition), "-K", ":", "-z", codec], input=lines)
    out = kcatOk(bootstrap, [*flags, "-C", "-t", topic, "-o", "beginning", "-e", "-f", r"%p %o %k %s\n"])
    consumed = []
    for line in out.splitlines():
        partition, offset, key, value = line.split(b" ", 3)
        consumed.append((int(partition), int(offset), key, value))
    checkConsumed(consumed)


KCAT_CODECS = {"none": NONE, "gzip": GZIP, "snappy": SNAPPY}


@pytest.mark.parametrize(
    "flags, bootstrap", [([], "tcp"), (KCAT_08, "tcp"), ([], "shim")],
    ids=["no-flags", "fallback-0.8.0", "no-flags-shim"], indirect=["bootstrap"],
)
def test_kcat(broker, bootstrap, flags):
    for codec, stored in KCAT_CODECS.items():
        topic = f"kcat-{codec}"
        kcatRoundTrip(bootstrap, topic, flags, codec)
        assert storedCodecs(broker, topic) == {stored}, codec
    assert unservedRequests(broker) == []
    assert bool(apiVersionsSeen(broker)) == (not flags)


def test_strict08StockKcatFailsFastFallbackWorks(brokerFactory):
    """--strict-0.8 closes on ApiVersions like 0.8.0: stock kcat gives up, the fallback flags work."""
    broker = brokerFactory("--num-partitions", str(PARTITIONS), "--storage", "memory", "--strict-0.8")
    started = time.monotonic()
    result = runKcat(broker.bootstrap, ["-L", "-m", "3"], timeout=20)
    assert result.returncode != 0
    assert time.monotonic() - started < 10
    assert b"ApiVersion" in result.stderr
    assert any("api key 18 (ApiVersions)" in line for line in unservedRequests(broker))
    kcatRoundTrip(broker.bootstrap, "strict", KCAT_08, "none")


# --- kafka-python 3 ------------------------------------------------------------


def kafkaPythonProduce(bootstrap, topic, codec=None, **settings):
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, compression_type=codec, request_timeout_ms=10000, **settings)
    try:
        futures = [producer.send(topic, key=key, value=value, partition=p) for p, key, value in wanted()]
        producer.flush(15)
        reports = []
        for future, (_, key, value) in zip(futures, wanted()):
            metadata = future.get(5)
            reports.append((metadata.partition, metadata.offset, key, value))
    finally:
        producer.close(5)
    checkProduced(reports)


def kafkaPythonConsume(bootstrap, topic, **settings):
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
        consumer_timeout_ms=5000, fetch_max_wait_ms=100, **settings,
    )
    consumed = []
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(partitions)
        for tp in partitions:
            consumer.seek(tp, 0)
        for message in consumer:
            consumed.append((message.partition, message.offset, message.key, message.value))
            if len(consumed) == COUNT:
                break
    finally:
        consumer.close()
    checkConsumed(consumed)


@pytest.mark.parametrize("codec, stored", [(None, NONE), ("gzip", GZIP)])
def test_kafkaPythonApiVersion080(broker, codec, stored):
    kafkaPythonProduce(broker.bootstrap, "kp", codec, api_version=(0, 8, 0))
    kafkaPythonConsume(broker.bootstrap, "kp", api_version=(0, 8, 0))
    assert storedCodecs(broker, "kp") == {stored}
    assert unservedRequests(broker) == []
    assert apiVersionsSeen(broker) == []


def test_kafkaPythonDefaultsConsumer(broker):
    """The stock consumer (no api_version) reads what a 0.8 producer wrote, with Fetch v11."""
    kafkaPythonProduce(broker.bootstrap, "kp", api_version=(0, 8, 0))
    kafkaPythonConsume(broker.bootstrap, "kp")
    assert unservedRequests(broker) == []
    assert answeredApiVersions(broker)


@TCP_AND_SHIM
def test_kafkaPythonDefaultsProducer(broker, bootstrap):
    """The stock producer: idempotent, v2 batches in Produce v7."""
    kafkaPythonProduce(bootstrap, "kp")
    kafkaPythonConsume(bootstrap, "kp")
    assert unservedRequests(broker) == []


# --- kafkajs 2.2.4 (node) --------------------------------------------------------


@TCP_AND_SHIM
@pytest.mark.parametrize("codec, stored", [("none", NONE), ("gzip", GZIP)])
def test_kafkajsProducerDefaults(broker, bootstrap, codec, stored):
    result = kafkajs("produce", bootstrap, "js", str(COUNT), str(PARTITIONS), codec)
    assert result["ok"], result
    checkProduced([(m["partition"], m["offset"], m["key"].encode(), m["value"].encode()) for m in result["sent"]])
    assert storedCodecs(broker, "js") == {stored}
    assert unservedRequests(broker) == []
    assert answeredApiVersions(broker)
    # Read back with another stock client (kafkajs has no consumer without a group).
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False})
    consumed = []
    try:
        consumer.assign([TopicPartition("js", p, 0) for p in range(PARTITIONS)])
        deadline = time.monotonic() + 15
        while len(consumed) < COUNT and time.monotonic() < deadline:
            for message in consumer.consume(100, 0.2):
                assert message.error() is None
                consumed.append((message.partition(), message.offset(), message.key(), message.value()))
    finally:
        consumer.close()
    checkConsumed(consumed)


def test_kafkajsConsumerGroupRoundTrip(brokerFactory):
    """kafkajs's consumer always joins a group: subscribe + run reads every message of
    every partition once, in order; its commits make a second run read only what is new."""
    broker = brokerFactory("--num-partitions", str(PARTITIONS), "--storage", "memory", "--group-initial-rebalance-delay-ms", "0")
    assert kafkajs("produce", broker.bootstrap, "js", str(COUNT), str(PARTITIONS))["ok"]
    started = time.monotonic()
    result = kafkajs("consume", broker.bootstrap, "js", str(COUNT), "matrix-js", timeout=30)
    assert result["ok"], result
    assert time.monotonic() - started < 10
    assert result["joined"]["leader"] and result["joined"]["assigned"] == {"js": list(range(PARTITIONS))}, result["joined"]
    checkConsumed([(m["partition"], m["offset"], m["key"].encode(), m["value"].encode()) for m in result["messages"]])
    # The disconnect committed the offsets read: the next member of the group starts after them.
    assert kafkajs("produce", broker.bootstrap, "js", str(PARTITIONS), str(PARTITIONS))["ok"]
    again = kafkajs("consume", broker.bootstrap, "js", str(PARTITIONS), "matrix-js", timeout=30)
    assert again["ok"], again
    assert sorted((m["partition"], m["offset"], m["key"]) for m in again["messages"]) == [(p, COUNT // PARTITIONS, f"key-{p}") for p in range(PARTITIONS)]
    assert unservedRequests(broker) == []


# --- pykafka 2.8 -----------------------------------------------------------------


@TCP_AND_SHIM
@pytest.mark.parametrize("codec, stored", [("none", NONE), ("gzip", GZIP)])
def test_pykafka(broker, bootstrap, codec, stored):
    from pykafka import KafkaClient
    from pykafka.common import CompressionType, OffsetType

    client = KafkaClient(hosts=bootstrap, broker_version="0.8.2", socket_timeout_ms=5000)
    topic = client.topics["pk"]
    producer = topic.get_producer(
        partitioner=lambda partitions, key: partitions[int(key.split(b"-")[1]) % PARTITIONS],
        compression={"none": CompressionType.NONE, "gzip": CompressionType.GZIP}[codec],
        delivery_reports=True, required_acks=1, linger_ms=10, sync=False,
    )
    try:
        for _, key, value in wanted():
            producer.produce(value, partition_key=key)
        reports = []
        for _ in range(COUNT):
            message, error = producer.get_delivery_report(block=True, timeout=10)
            assert error is None, error
            reports.append((message.partition_id, message.offset, message.partition_key, message.value))
    finally:
        producer.stop()
    checkProduced(reports)

    # No consumer group: offsets come from the consumer's own reset to EARLIEST.
    consumer = topic.get_simple_consumer(
        consumer_group=None, auto_offset_reset=OffsetType.EARLIEST, reset_offset_on_start=True,
        auto_commit_enable=False, consumer_timeout_ms=1000, fetch_wait_max_ms=100,
    )
    try:
        consumed = [(m.partition_id, m.offset, m.partition_key, m.value) for m in consumer]
    finally:
        consumer.stop()
    checkConsumed(consumed)
    assert storedCodecs(broker, "pk") == {stored}
    assert unservedRequests(broker) == []
    assert apiVersionsSeen(broker) == []
