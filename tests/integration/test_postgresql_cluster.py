"""Brokers on PostgreSQL (--storage postgresql:), driven by librdkafka.

One broker on PostgreSQL keeps its log across a restart; three brokers on one
database share a 6-partition topic (each leads two partitions); a killed
broker's partitions move while a producer carries on and no acknowledged
message is lost; a broker paused past its lease and resumed appends nothing.
Each test has a schema of its own (tests/postgresql.py); they skip only when
no PostgreSQL answers. Leases are short (--lease-ms 1500) so failover is quick.
"""

import signal
import threading
import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from kafkaw.protocol.api import ApiKey
from tests.integration.conftest import BrokerProcess, Connection, waitUntil
from tests.postgresql import Schema

LEASE_MS = 1500
TOPIC = "six"


@pytest.fixture
def schema(monkeypatch):
    s = Schema()
    # Brokers read the DSN from the environment: no password in their command line.
    monkeypatch.setenv("KAFKAW_POSTGRESQL_DSN", s.dsn)
    try:
        yield s
    finally:
        s.drop()


@pytest.fixture
def cluster(schema, tmp_path):
    """Start C{n} brokers (ids 1..n) on the test's schema; all stopped after the test."""
    started = []

    def start(n):
        brokers = [
            BrokerProcess(
                tmp_path / f"broker{i}",
                ["--storage", "postgresql:", "--broker-id", str(i), "--lease-ms", str(LEASE_MS), "--no-websocket"],
            )
            for i in range(1, n + 1)
        ]
        for broker in brokers:
            broker.dataDir.mkdir()
            broker.start()
            started.append(broker)
        return brokers

    yield start
    for broker in started:
        if broker.process is not None:
            broker.process.send_signal(signal.SIGCONT)
            broker.stop()


def leaders(bootstrap, topic=TOPIC):
    """{partition: leader id} as the broker at C{bootstrap} itself answers Metadata (v4, no auto-creation)."""
    with Connection(bootstrap) as connection:
        answer = connection.call(ApiKey.METADATA, 4, {"topics": [{"name": topic}], "allowAutoTopicCreation": False})
    return {p.partitionIndex: p.leaderId for p in answer.topics[0].partitions}


def createTopic(brokers, partitions=6):
    """Create the topic through the first broker; wait until every broker says each one leads its share."""
    admin = AdminClient({"bootstrap.servers": brokers[0].bootstrap})
    for future in admin.create_topics([NewTopic(TOPIC, partitions, 1)]).values():
        future.result(10)
    # Leaders are given at the brokers' next lease rounds.
    share = sorted(list(range(1, len(brokers) + 1)) * (partitions // len(brokers)))

    def agreed():
        views = [leaders(broker.bootstrap) for broker in brokers]
        return sorted(views[0].values()) == share and all(view == views[0] for view in views)

    waitUntil(agreed, timeout=10, what="every broker agreeing on a leader per partition")


def produce(bootstrap, count, first=0, **conf):
    """Produce C{count} numbered messages round-robin over the partitions; return the acknowledged (partition, offset, value)."""
    acked, errors = [], []

    def delivered(err, msg):
        (errors if err else acked).append(err or (msg.partition(), msg.offset(), msg.value()))

    producer = Producer({"bootstrap.servers": bootstrap, **conf})
    for i in range(first, first + count):
        producer.produce(TOPIC, str(i).encode(), partition=i % 6, on_delivery=delivered)
        producer.poll(0)
    assert producer.flush(30) == 0
    assert errors == []
    return acked


def consumeAll(bootstrap, ends, timeout=30):
    """Every message of every partition up to C{ends} ({partition: end offset}), read from C{bootstrap}."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "readers", "enable.auto.commit": False})
    consumer.assign([TopicPartition(TOPIC, p, 0) for p in ends])
    got = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < sum(ends.values()) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                assert msg.error().code() == KafkaError._PARTITION_EOF, msg.error()
                continue
            got.append((msg.partition(), msg.offset(), msg.value()))
    finally:
        consumer.close()
    return got


def endOffsets(schema):
    return dict(schema.execute("SELECT partition, end_offset FROM kafkaw_partitions ORDER BY partition"))


def test_oneBrokerOnPostgreSQLKeepsItsLogAcrossARestart(cluster, schema):
    [broker] = cluster(1)
    createTopic([broker])
    acked = produce(broker.bootstrap, 600)
    broker.restart()
    assert sorted(consumeAll(broker.bootstrap, endOffsets(schema))) == sorted(acked)
    assert schema.execute("SELECT count(*) FROM kafkaw_batches")[0][0] >= 6  # batches as rows


def test_threeBrokersShareATopicOnePostgreSQL(cluster, schema):
    brokers = cluster(3)
    createTopic(brokers)
    led = leaders(brokers[2].bootstrap)
    assert sorted(led.values()) == [1, 1, 2, 2, 3, 3]  # spread evenly
    assert leaders(brokers[1].bootstrap) == led  # every broker says the same
    acked = produce(brokers[0].bootstrap, 3000)
    got = consumeAll(brokers[2].bootstrap, endOffsets(schema))
    assert sorted(got) == sorted(acked)
    for partition in range(6):
        offsets = sorted(o for p, o, _ in got if p == partition)
        assert offsets == list(range(len(offsets)))


def test_produceToAPartitionLedElsewhereIsNotLeader(cluster):
    brokers = cluster(3)
    createTopic(brokers)
    led = leaders(brokers[0].bootstrap)
    partition = next(p for p, leader in led.items() if leader != 1)
    with Connection(brokers[0].bootstrap) as connection:
        answer = connection.call(ApiKey.PRODUCE, 2, {
            "transactionalId": None, "acks": -1, "timeoutMs": 5000,
            "topics": [{"name": TOPIC, "partitions": [{"partitionIndex": partition, "records": b""}]}],
        })
        assert answer.responses[0].partitions[0].errorCode == 6
        answer = connection.call(ApiKey.FETCH, 4, {
            "replicaId": -1, "maxWait": 0, "minBytes": 0, "maxBytes": 1 << 20, "isolationLevel": 0,
            "topics": [{"name": TOPIC, "fetchPartitions": [{"partitionIndex": partition, "fetchOffset": 0, "maxBytes": 1 << 20}]}],
        })
        assert answer.topics[0].partitions[0].errorCode == 6


class LoadProducer(threading.Thread):
    """Produces numbered messages round-robin, as fast as acknowledged, until stopped."""

    def __init__(self, bootstrap):
        super().__init__(daemon=True)
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all"})
        self.acked = []
        self.errors = []
        self.stopping = threading.Event()

    def delivered(self, err, msg):
        if err:
            self.errors.append(err)
        else:
            self.acked.append((msg.partition(), msg.offset(), msg.value(), time.monotonic()))

    def run(self):
        i = 0
        while not self.stopping.is_set():
            try:
                self.producer.produce(TOPIC, str(i).encode(), partition=i % 6, on_delivery=self.delivered)
                i += 1
            except BufferError:
                pass
            self.producer.poll(0.001 if i % 50 == 0 else 0)
        self.producer.flush(60)


def test_killedBrokerPartitionsMoveAndNoAcknowledgedMessageIsLost(cluster, schema):
    brokers = cluster(3)
    createTopic(brokers)
    moved = [p for p, leader in leaders(brokers[0].bootstrap).items() if leader == 2]
    assert len(moved) == 2
    load = LoadProducer(brokers[0].bootstrap)
    load.start()
    waitUntil(lambda: len(load.acked) > 500, timeout=20, what="acknowledged messages")
    brokers[1].stop(signal.SIGKILL)
    killedAt = time.monotonic()
    # What the killed broker appended is in the database: acks above it came from the new leaders.
    endAtKill = {p: end for p, end in endOffsets(schema).items() if p in moved}

    def afterFailover():
        return [at for p, o, _, at in list(load.acked) if p in moved and o >= endAtKill[p]]

    waitUntil(afterFailover, timeout=LEASE_MS / 1000 * 6, what="a produce acknowledged on a moved partition")
    failover = min(afterFailover()) - killedAt
    count = len(load.acked)
    waitUntil(lambda: len(load.acked) > count + 500, timeout=20, what="more acknowledged messages")
    load.stopping.set()
    load.join(60)
    assert load.errors == []
    assert set(leaders(brokers[0].bootstrap).values()) == {1, 3}
    got = consumeAll(brokers[2].bootstrap, endOffsets(schema), timeout=60)
    stored = {(p, o): v for p, o, v in got}
    for p, o, v, _ in load.acked:
        assert stored.get((p, o)) == v  # every acknowledged message, at its offset
    for partition in range(6):
        offsets = sorted(o for p, o in stored if p == partition)
        assert offsets == list(range(len(offsets)))  # contiguous
    print(f"failover (kill -9 -> first produce acknowledged on a moved partition): {failover:.2f} s")
    assert failover < LEASE_MS / 1000 * 4


def test_brokerPausedPastItsLeaseAppendsNothing(cluster, schema):
    brokers = cluster(3)
    createTopic(brokers)
    paused = brokers[1]
    partition = next(p for p, leader in leaders(brokers[0].bootstrap).items() if leader == 2)
    produce(brokers[0].bootstrap, 60)
    before = endOffsets(schema)[partition]
    with Connection(paused.bootstrap) as connection:
        paused.process.send_signal(signal.SIGSTOP)
        # Sent while it is stopped: read (with a stale view of the cluster) once it resumes.
        connection.send(ApiKey.PRODUCE, 2, {
            "transactionalId": None, "acks": -1, "timeoutMs": 5000,
            "topics": [{"name": TOPIC, "partitions": [{"partitionIndex": partition, "records": _messageSet(before)}]}],
        })
        waitUntil(lambda: leaders(brokers[0].bootstrap)[partition] != 2, timeout=LEASE_MS / 1000 * 5, what="the partition moving")
        after = produce(brokers[0].bootstrap, 60, first=1000)  # the new leader appends
        paused.process.send_signal(signal.SIGCONT)
        answer = connection.receive(ApiKey.PRODUCE, 2)
    assert answer.responses[0].partitions[0].errorCode == 6
    ends = endOffsets(schema)
    got = consumeAll(brokers[0].bootstrap, ends)
    values = [v for p, _, v in sorted(got) if p == partition]
    assert b"from-the-paused-broker" not in values
    assert ends[partition] == before + sum(1 for p, _, _ in after if p == partition)


def _messageSet(offset):
    from kafkaw.protocol.messages import encodeMessageSet

    return encodeMessageSet([(None, b"from-the-paused-broker")], offset)


def test_consumerGroupKeepsConsumingThroughItsCoordinatorsDeath(cluster, schema):
    from kafkaw.broker.membership import groupCoordinator

    brokers = cluster(3)
    createTopic(brokers)
    group = "spread"
    coordinator = groupCoordinator(group, [1, 2, 3])
    survivor = next(b for i, b in enumerate(brokers, 1) if i != coordinator)
    first = produce(survivor.bootstrap, 600)
    consumer = Consumer({
        "bootstrap.servers": survivor.bootstrap, "group.id": group, "auto.offset.reset": "earliest",
        "enable.auto.commit": False, "session.timeout.ms": 6000,
    })
    consumer.subscribe([TOPIC])
    seen = set()
    commitErrors = []

    def commit(**where):
        try:
            consumer.commit(asynchronous=False, **where)
            return True
        except KafkaException as e:
            # The new coordinator knows the group's offsets (from the database), not its
            # members: the first commits after the move get UNKNOWN_MEMBER_ID, and the member rejoins.
            commitErrors.append(e.args[0].code())
            return False

    def consumeUntil(values, timeout):
        deadline = time.monotonic() + timeout
        while not values <= seen and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                seen.add(msg.value())
                commit(message=msg)

    try:
        consumeUntil({v for _, _, v in first}, 30)
        assert {v for _, _, v in first} <= seen
        brokers[coordinator - 1].stop(signal.SIGKILL)
        second = produce(survivor.bootstrap, 600, first=600)
        consumeUntil({v for _, _, v in second}, 60)
        assert {v for _, _, v in second} <= seen
        def committedEverything():
            consumer.poll(0.2)
            positions = [tp for tp in consumer.position(consumer.assignment()) if tp.offset >= 0]
            if positions:
                commit(offsets=positions)
            # in the database, committed through the new coordinator
            committed = dict(schema.execute(
                "SELECT partition, committed_offset FROM kafkaw_committed_offsets WHERE group_id = %s", (group.encode(),)
            ))
            return committed == endOffsets(schema)

        waitUntil(committedEverything, timeout=30, what="every offset committed through the new coordinator")
        assert set(commitErrors) <= {KafkaError.UNKNOWN_MEMBER_ID, KafkaError.ILLEGAL_GENERATION,
                                     KafkaError.REBALANCE_IN_PROGRESS, KafkaError.NOT_COORDINATOR}
    finally:
        consumer.close()


def test_cleanStopHandsPartitionsOverAtOnce(cluster, schema, tmp_path):
    """SIGTERM: the broker hands its partitions over before it exits, so they
    move at the others' next round (a fifth of the lease), not after the lease."""
    slow = 10000  # a lease the handover must not wait for
    brokers = [
        BrokerProcess(tmp_path / f"slow{i}", ["--storage", "postgresql:", "--broker-id", str(i), "--lease-ms", str(slow), "--no-websocket"])
        for i in (1, 2)
    ]
    try:
        for broker in brokers:
            broker.dataDir.mkdir()
            broker.start()
        createTopic(brokers)
        acked = produce(brokers[0].bootstrap, 120)
        stoppedAt = time.monotonic()
        assert brokers[1].stop() in (0, -signal.SIGTERM)
        waitUntil(lambda: set(leaders(brokers[0].bootstrap).values()) == {1}, timeout=slow / 1000 / 2, what="the handover")
        handover = time.monotonic() - stoppedAt
        acked += produce(brokers[0].bootstrap, 120, first=120)
        assert sorted(consumeAll(brokers[0].bootstrap, endOffsets(schema))) == sorted(acked)
        print(f"clean stop -> every partition led by the survivor: {handover:.2f} s (lease {slow / 1000:.0f} s)")
    finally:
        for broker in brokers:
            broker.stop()


def test_saslUsersAndAclsAddedThroughOneBrokerServeAtTheOther(schema, tmp_path):
    """--sasl on two brokers sharing the database: alice, added through broker
    1's exempt endpoint, produces with SCRAM-SHA-256 at broker 1 and consumes
    at broker 2; an ACL added at broker 1 is listed by broker 2."""
    from tests.integration.conftest import freePort, rdConsume, rdProduce, waitForPort
    from tests.integration.test_sasl import PASSWORD, cli, rdSasl

    brokers = []
    for i in (1, 2):
        exempt = f"tcp:{freePort()}:interface=127.0.0.1"
        broker = BrokerProcess(tmp_path / f"sasl{i}", [
            "--storage", "postgresql:", "--broker-id", str(i), "--lease-ms", str(LEASE_MS), "--no-websocket",
            "--sasl", "--super-user", "User:alice", "--num-partitions", "2",
            "--listen", exempt, "--sasl-exempt", exempt, "--super-user", "User:ANONYMOUS",
        ])
        broker.exempt = "127.0.0.1:" + exempt.split(":")[1]
        brokers.append(broker)
    try:
        for broker in brokers:
            broker.dataDir.mkdir()
            broker.start()
            waitForPort(int(broker.exempt.split(":")[1]), process=broker.process)
        added = cli("--bootstrap", brokers[0].exempt, "users", "add", "alice", password=PASSWORD + "\n")
        assert added.returncode == 0, added.stderr
        granted = cli("--bootstrap", brokers[0].exempt, "acls", "add", "--allow-principal", "User:bob",
                      "--operation", "Read", "--topic", "bobs")
        assert granted.returncode == 0, granted.stderr
        conf = rdSasl("SCRAM-SHA-256")
        messages = [(p, b"k", f"m{p}-{i}".encode()) for p in (0, 1) for i in range(3)]
        reports = rdProduce(brokers[0].bootstrap, "secure", messages, **conf)  # auto-created: one partition led by each broker
        assert [error for error, *_ in reports] == [None] * len(messages)
        got = rdConsume(brokers[1].bootstrap, "secure", {0: 3, 1: 3}, **conf)
        assert sorted(value for p in got for _, _, value in got[p]) == sorted(value for _, _, value in messages)
        assert "authenticated as User:alice with SCRAM-SHA-256" in brokers[1].logText()
        listed = lambda: cli("--bootstrap", brokers[1].exempt, "acls", "list").stdout  # noqa: E731
        waitUntil(lambda: "User:bob" in listed() and "bobs" in listed(), timeout=LEASE_MS / 1000, what="broker 2 listing the ACL")
    finally:
        for broker in brokers:
            broker.stop()
    for broker in brokers:
        assert "Traceback" not in broker.logText() and "Unhandled" not in broker.logText()
