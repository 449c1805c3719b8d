"""Stock clients with default settings against `twistd kafkaw` speaking Kafka 2.3.0's protocol.

Each client negotiates its versions from the ApiVersions table kafkaw
serves: record batches v2 (headers, timestamps, every codec), idempotent
producers, the admin APIs (create/delete topics, add partitions, describe
configs), and old clients reading what new ones wrote (down-conversion).
"""

import asyncio
import signal
import subprocess
import threading
import time

import pytest

from kafkaw.protocol import schema
from kafkaw.protocol.records import encodeBatch
from tests.integration.conftest import KCAT_08, Connection, kafkajs, kcat, rdConsume, rdProduce

MODERN = {"api.version.request": True}  # librdkafka's default, over conftest's 0.8 pinning


@pytest.fixture
def broker(brokerFactory):
    return brokerFactory("--storage", "memory")


# --- confluent-kafka (librdkafka 2.x), default settings -------------------------


def test_confluentHeadersAndCreateTimeRoundTrip(broker):
    from confluent_kafka import Consumer, Producer, TopicPartition

    producer = Producer({"bootstrap.servers": broker.bootstrap})
    created = 1_600_000_000_123
    reports = []
    for i in range(5):
        producer.produce(
            "headers", f"value-{i}".encode(), f"key-{i}".encode(), partition=0, timestamp=created + i,
            headers=[("trace", f"t-{i}".encode()), ("empty", None)],
            on_delivery=lambda err, msg: reports.append((err, msg.offset())),
        )
    assert producer.flush(15) == 0
    assert [err for err, _ in reports] == [None] * 5
    assert sorted(offset for _, offset in reports) == [0, 1, 2, 3, 4]

    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "unused", "enable.auto.commit": False})
    consumer.assign([TopicPartition("headers", 0, 0)])
    got = []
    deadline = time.monotonic() + 15
    while len(got) < 5 and time.monotonic() < deadline:
        for message in consumer.consume(10, 0.2):
            assert message.error() is None, message.error()
            got.append(message)
    consumer.close()
    assert [m.offset() for m in got] == [0, 1, 2, 3, 4]
    assert [m.key() for m in got] == [f"key-{i}".encode() for i in range(5)]
    assert [m.timestamp() for m in got] == [(1, created + i) for i in range(5)]  # 1: TIMESTAMP_CREATE_TIME
    assert [m.headers() for m in got] == [[("trace", f"t-{i}".encode()), ("empty", None)] for i in range(5)]


@pytest.mark.parametrize("names", [[f"{chr(97 + i % 26)}{i // 26 or ''}" for i in range(30)], ["t"]], ids=["30-short", "t"])
def test_confluentListTopicsWithShortOnePartitionTopics(broker, names):
    """librdkafka's Metadata parse buffer (4x the answer) overflowed on v0 answers for these."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for future in admin.create_topics([NewTopic(name, 1, 1) for name in names]).values():
        future.result(10)
    listed = admin.list_topics(timeout=10)
    assert sorted(listed.topics) == sorted(names)
    assert all(len(topic.partitions) == 1 and topic.error is None for topic in listed.topics.values())
    assert listed.cluster_id and listed.controller_id == 0
    reports = rdProduce(broker.bootstrap, names[-1], [(0, None, b"one")], **MODERN)
    assert reports[0][0] is None


def test_confluentAdminClient(broker):
    from confluent_kafka.admin import AdminClient, ConfigResource, NewPartitions, NewTopic

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    timings = {}

    def timed(name, futures):
        started = time.monotonic()
        results = [future.result(10) for future in futures.values()]
        timings[name] = time.monotonic() - started
        return results

    timed("create", admin.create_topics([NewTopic("admin", 3, 1, config={"retention.ms": "60000", "message.timestamp.type": "LogAppendTime"})]))
    with pytest.raises(Exception, match="TOPIC_ALREADY_EXISTS"):
        timed("create again", admin.create_topics([NewTopic("admin", 3, 1)]))
    timed("partitions", admin.create_partitions([NewPartitions("admin", 5)]))
    assert len(admin.list_topics("admin", timeout=10).topics["admin"].partitions) == 5
    [configs] = timed("describe", admin.describe_configs([ConfigResource("topic", "admin")]))
    assert configs["retention.ms"].value == "60000" and not configs["retention.ms"].is_default
    assert configs["message.timestamp.type"].value == "LogAppendTime"
    assert configs["retention.bytes"].is_default
    timed("delete", admin.delete_topics(["admin"]))
    assert "admin" not in admin.list_topics(timeout=10).topics
    assert max(timings.values()) < 1.0, timings


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "kill-9"])
def test_confluentIdempotentProducerThroughARestart(brokerFactory, sig):
    """enable.idempotence=true: a restart of the broker mid-stream loses nothing and duplicates
    nothing, even when it is killed between storing batches and answering them (the retries
    of those are recognised by the producer state stored with them)."""
    from confluent_kafka import Producer

    broker = brokerFactory()  # LevelDB: producer state must survive the restart
    producer = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True, "linger.ms": 5})
    errors = []

    def delivered(err, msg):
        if err is not None:
            errors.append(err)

    sent = 0
    for round in range(3):
        for _ in range(500):
            producer.produce("idem", f"m-{sent}".encode(), partition=0, on_delivery=delivered)
            sent += 1
        producer.poll(0)
        if round == 1:
            broker.restart(sig)
    assert producer.flush(30) == 0
    assert errors == []
    got = rdConsume(broker.bootstrap, "idem", {0: sent}, **MODERN)[0]
    assert [value for _, _, value in got] == [f"m-{i}".encode() for i in range(sent)]
    assert [offset for offset, _, _ in got] == list(range(sent))


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_oldClientsReadWhatNewOnesWrote(broker, codec):
    """v2 batches of every codec, read by kcat pinned to 0.8 and by pykafka (both Fetch v0: down-converted)."""
    topic = f"down-{codec}"
    messages = [(0, f"k{i}".encode(), f"value-{i}".encode() * 5) for i in range(20)]
    reports = rdProduce(broker.bootstrap, topic, messages, **MODERN, **{"compression.codec": codec})
    assert all(err is None for err, *_ in reports)
    lines = kcat("-b", broker.bootstrap, *KCAT_08, "-C", "-t", topic, "-p", "0", "-o", "beginning", "-e", "-f", "%o %k %s\n").decode().splitlines()
    assert lines == [f"{i} k{i} {('value-%d' % i) * 5}" for i in range(20)]

    from pykafka import KafkaClient

    client = KafkaClient(hosts=broker.bootstrap, broker_version="0.8.2")
    consumer = client.topics[topic].get_simple_consumer(consumer_timeout_ms=3000)
    got = [(m.offset, m.partition_key, m.value) for m in consumer]
    consumer.stop()
    assert got == [(i, key, value) for i, (_, key, value) in enumerate(messages)]


# --- kafka-python 3, default settings -------------------------------------------


def test_kafkaPythonDefaultProducerAndConsumer(broker):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    assert producer.config["enable_idempotence"], "kafka-python 3 turns idempotence on against a 0.11+ broker"
    futures = [producer.send("kp", key=f"k{i}".encode(), value=f"v{i}".encode(), partition=0, headers=[("h", b"x")]) for i in range(10)]
    offsets = [future.get(15).offset for future in futures]
    producer.close()
    assert offsets == list(range(10))

    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, consumer_timeout_ms=3000)
    consumer.assign([TopicPartition("kp", 0)])
    consumer.seek_to_beginning()
    got = [(m.offset, m.key, m.value, m.headers) for m in consumer]
    consumer.close()
    assert got == [(i, f"k{i}".encode(), f"v{i}".encode(), [("h", b"x")]) for i in range(10)]


def test_kafkaPythonAdminClient(broker):
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewPartitions, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    timings = {}

    def timed(name, call, *args):
        started = time.monotonic()
        result = call(*args)
        timings[name] = time.monotonic() - started
        return result

    timed("create", admin.create_topics, [NewTopic("kpadmin", 2, 1, topic_configs={"retention.bytes": "1048576"})])
    timed("partitions", admin.create_partitions, {"kpadmin": NewPartitions(4)})
    described = timed("describe", admin.describe_configs, [ConfigResource(ConfigResourceType.TOPIC, "kpadmin")])
    text = repr(described)
    assert "retention.bytes" in text and "1048576" in text
    assert "kpadmin" in timed("list", admin.list_topics)
    timed("delete", admin.delete_topics, ["kpadmin"])
    assert "kpadmin" not in admin.list_topics()
    admin.close()
    assert max(timings.values()) < 1.0, timings


# --- aiokafka 0.14, default settings ---------------------------------------------


def test_aiokafkaProducerAndConsumer(broker):
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    async def roundTrip():
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        await producer.start()
        try:
            sent = [await producer.send_and_wait("aio", f"v{i}".encode(), key=f"k{i}".encode(), partition=0) for i in range(10)]
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap)
        await consumer.start()
        got = []
        try:
            partition = TopicPartition("aio", 0)
            consumer.assign([partition])
            await consumer.seek_to_beginning(partition)
            deadline = time.monotonic() + 15
            while len(got) < 10 and time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=500)
                got.extend(m for messages in batches.values() for m in messages)
        finally:
            await consumer.stop()
        return sent, got

    sent, got = asyncio.run(asyncio.wait_for(roundTrip(), 60))
    assert [metadata.offset for metadata in sent] == list(range(10))
    assert [(m.offset, m.key, m.value) for m in got] == [(i, f"k{i}".encode(), f"v{i}".encode()) for i in range(10)]


# --- kafkajs 2.2.4 (node), default settings -------------------------------------


def test_kafkajsAdmin(broker):
    answer = kafkajs("admin", broker.bootstrap, "jsadmin", timeout=60)
    assert answer["ok"], answer
    assert answer["partitions"] == 5
    assert answer["configs"]["retention.ms"] == "60000"
    assert not answer["listedAfterDelete"]
    assert max(answer["steps"].values()) < 1000, answer["steps"]


# --- many topics -------------------------------------------------------------------


def test_metadataOfAThousandTopicsAmongTenThousandIsQuick(brokerFactory):
    """A broker holding 10,000 topics: a Metadata naming 1,000 of them is
    answered in < 100 ms, and a produce on another connection meanwhile in
    < 50 ms (no request holds the reactor)."""
    broker = brokerFactory()
    admin = Connection(broker.bootstrap, timeout=120)
    names = [f"topic-{i:05d}" for i in range(10000)]
    for start in range(0, len(names), 1000):
        created = admin.call(19, 3, {"topics": [{"name": n, "numPartitions": 1, "replicationFactor": 1} for n in names[start:start + 1000]], "timeoutMs": 60000})
        assert {t.errorCode for t in created.topics} == {0}
    admin.close()
    broker.restart()  # as a broker that holds them runs: loaded at start-up
    admin = Connection(broker.bootstrap, timeout=120)
    asked = {"topics": [{"name": n} for n in names[::10]], "allowAutoTopicCreation": False}
    producer = Connection(broker.bootstrap)
    produce = {"acks": 1, "timeoutMs": 5000, "topics": [{"name": names[0], "partitions": [{"partitionIndex": 0, "records": encodeBatch([(None, b"x")])}]}]}
    assert producer.call(0, 7, produce).responses[0].partitions[0].errorCode == 0  # warm up

    produceTimes = []
    stop = threading.Event()

    def produceMeanwhile():
        while not stop.is_set():
            started = time.monotonic()
            producer.call(0, 7, produce)
            produceTimes.append(time.monotonic() - started)

    thread = threading.Thread(target=produceMeanwhile)
    thread.start()
    metadataTimes, answers = [], []
    try:
        for _ in range(5):
            started = time.monotonic()
            admin.send(3, 8, asked)
            answers.append(admin.receiveFrame())  # decoded after: this thread holds the GIL while it decodes
            metadataTimes.append(time.monotonic() - started)
    finally:
        stop.set()
        thread.join()
    for answer in answers:
        topics = schema.decodeResponse(3, 8, answer)[1].topics
        assert len(topics) == 1000 and {t.errorCode for t in topics} == {0}
    assert min(metadataTimes) < 0.1, metadataTimes
    assert max(produceTimes) < 0.05, max(produceTimes)


def test_clusterIdIsStablePerDataDirAndReadByClients(brokerFactory):
    """Metadata v2+ carries the data dir's cluster id: librdkafka 2.16 and kcat's 2.0.2 read it; a restart keeps it."""
    from confluent_kafka.admin import AdminClient

    broker = brokerFactory()
    clusterId = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=10).cluster_id
    assert clusterId and len(clusterId) == 22
    listing = subprocess.run(["kcat", "-b", broker.bootstrap, "-L", "-d", "broker"], capture_output=True, timeout=30, text=True)
    assert f'ClusterId update "" -> "{clusterId}"' in listing.stderr
    broker.restart()
    assert AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=10).cluster_id == clusterId
