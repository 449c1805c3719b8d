"""Consumer groups with stock clients: `twistd kafkaw` as the group coordinator.

Kafka 2.3.0's classic group protocol (FindCoordinator, JoinGroup, SyncGroup,
Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch, ListGroups, DescribeGroups)
as confluent-kafka (librdkafka 2.x), kafka-python 3, aiokafka 0.14 and kafkajs
2.2.4 use it with their default settings: members split a topic's partitions,
rebalance when one joins, leaves or dies, commit offsets that a later member
resumes after, and those offsets survive a kill -9 of the broker.

Client settings are the clients' defaults but for the group id, reading from
the earliest offset where nothing is committed, committing by hand (auto-commit
off: a test says when offsets are committed) and, where a test waits for a
dead member to be dropped, the broker's shortest session timeout (6 s).
Brokers run with --group-initial-rebalance-delay-ms 0: no test is about it.
"""

import asyncio
import select
import signal
import subprocess
import sys
import time

import pytest

from tests.integration.conftest import BrokerProcess, Connection, kafkajs

PARTITIONS = 4
NO_DELAY = ("--group-initial-rebalance-delay-ms", "0")


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    """One LevelDB broker for the module; every test has its own topics and groups."""
    dataDir = tmp_path_factory.mktemp("groups") / "data"
    dataDir.mkdir()
    broker = BrokerProcess(dataDir, ["--num-partitions", str(PARTITIONS), *NO_DELAY]).start()
    yield broker
    broker.stop()


def createTopic(bootstrap, topic, partitions=PARTITIONS):
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        future.result(10)


def produce(bootstrap, topic, count, first=0):
    """Messages first..first+count-1: message i, key k-i and value v-i, to partition i % PARTITIONS.

    Returns {(partition, offset, key, value)} from the delivery reports.
    """
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    reports = []

    def delivered(err, msg):
        assert err is None, f"delivery failed: {err}"
        reports.append((msg.partition(), msg.offset(), msg.key(), msg.value()))

    for i in range(first, first + count):
        producer.produce(topic, b"v-%d" % i, b"k-%d" % i, partition=i % PARTITIONS, on_delivery=delivered)
    assert producer.flush(15) == 0, "messages left undelivered"
    assert len(reports) == count
    return set(reports)


def checkOnce(records, expected):
    """records: [(partition, offset, key, value)] as read; each expected one exactly once, in order per partition."""
    assert len(records) == len(set(records)), f"read twice: {sorted(r for r in records if records.count(r) > 1)}"
    assert set(records) == expected
    for partition in range(PARTITIONS):
        offsets = [offset for p, offset, _, _ in records if p == partition]
        assert offsets == sorted(offsets), f"partition {partition} read out of order: {offsets}"


def groupLog(broker, group):
    """The broker's log lines about C{group}."""
    return [line for line in broker.logText().splitlines() if f"group {group}" in line]


# --- confluent-kafka (librdkafka) ---------------------------------------------------


class Member:
    """A confluent-kafka consumer in a group, and what it has read: [(partition, offset, key, value)]."""

    def __init__(self, bootstrap, group, topic, **conf):
        from confluent_kafka import Consumer

        self.consumer = Consumer({
            "bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
            "enable.auto.commit": False, **conf,
        })
        self.consumer.subscribe([topic])
        self.records = []
        self.closed = False

    def poll(self, timeout=0.05):
        for message in self.consumer.consume(100, timeout):
            assert message.error() is None, f"consumer error: {message.error()}"
            self.records.append((message.partition(), message.offset(), message.key(), message.value()))

    def assigned(self):
        return sorted(tp.partition for tp in self.consumer.assignment())

    def committed(self):
        """{partition: committed offset} of the partitions assigned."""
        return {tp.partition: tp.offset for tp in self.consumer.committed(self.consumer.assignment(), timeout=10)}

    def close(self):
        if not self.closed:
            self.closed = True
            self.consumer.close()


def spin(members, condition, timeout=20.0, what="condition"):
    """Poll every member until C{condition()}; return the seconds it took."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            state = {i: (m.assigned(), len(m.records)) for i, m in enumerate(members)}
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; (assigned, read) per member: {state}")
        for member in members:
            member.poll()
    return time.monotonic() - started


@pytest.fixture
def members():
    """Make Members; close whatever a test left open."""
    made = []

    def make(*args, **conf):
        made.append(Member(*args, **conf))
        return made[-1]

    yield make
    for member in made:
        member.close()


def describeGroup(bootstrap, group):
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    return admin.describe_consumer_groups([group], request_timeout=10)[group].result(10)


def test_confluentMembersSplitATopicAndRebalance(broker, members):
    """Two members split 4 partitions 2 and 2 and together read every message once;
    AdminClient lists and describes the group; commit() and committed() agree; when
    one closes (LeaveGroup) the other takes all 4 partitions at once and goes on
    from the offsets the second committed. Once empty, AdminClient reads the group's
    offsets and deletes it."""
    from confluent_kafka import ConsumerGroupState
    from confluent_kafka.admin import AdminClient

    topic = group = "split"
    createTopic(broker.bootstrap, topic)
    first = members(broker.bootstrap, group, topic)
    alone = spin([first], lambda: first.assigned() == [0, 1, 2, 3], what="the first member to get all 4 partitions")
    second = members(broker.bootstrap, group, topic)
    joined = spin(
        [first, second], lambda: len(first.assigned()) == 2 and len(second.assigned()) == 2,
        what="a rebalance to 2 partitions each after the second member joined",
    )
    assert sorted(first.assigned() + second.assigned()) == [0, 1, 2, 3]

    expected = produce(broker.bootstrap, topic, 40)
    spin([first, second], lambda: len(first.records) + len(second.records) >= 40, what="40 messages")
    for member in (first, second):
        member.poll(0.3)  # nothing more comes
        assert {p for p, *_ in member.records} == set(member.assigned())
    checkOnce(first.records + second.records, expected)

    # The admin client's view of the group.
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    listed = admin.list_consumer_groups(request_timeout=10).result(10)
    assert listed.errors == []
    [listing] = [g for g in listed.valid if g.group_id == group]
    assert not listing.is_simple_consumer_group  # protocol type "consumer"
    assert listing.state == ConsumerGroupState.UNKNOWN  # ListGroups v0-v2 (Kafka 2.3) carry no state: v4 added it
    described = describeGroup(broker.bootstrap, group)
    assert described.state == ConsumerGroupState.STABLE
    assert described.partition_assignor == "range"  # librdkafka's first choice, both members list it
    assert described.coordinator.id == 0 and described.coordinator.port == broker.port
    byMember = {m.member_id: sorted(tp.partition for tp in m.assignment.topic_partitions) for m in described.members}
    assert sorted(byMember.values()) == sorted([first.assigned(), second.assigned()])
    assert {m.host for m in described.members} == {"/127.0.0.1"}
    assert all(tp.topic == topic for m in described.members for tp in m.assignment.topic_partitions)

    # Synchronous commits; committed() reads them back (the next offset to read: 10 in each partition).
    for member in (first, second):
        assert member.committed() == {p: -1001 for p in member.assigned()}  # OFFSET_INVALID: nothing committed yet
        member.consumer.commit(asynchronous=False)
        assert member.committed() == {p: 10 for p in member.assigned()}

    # The second member leaves: the first takes its partitions without waiting for a session
    # timeout (librdkafka's default is 45 s), and starts them at the offsets committed.
    # (New messages only after that: an eager rebalance revokes every partition, and the first
    # member would read again what it read but did not commit before it.)
    firstRead = len(first.records)
    second.close()
    left = spin([first], lambda: first.assigned() == [0, 1, 2, 3], what="the first member to get all 4 partitions back")
    assert left < 10
    assert first.committed() == {p: 10 for p in range(PARTITIONS)}
    expected = produce(broker.bootstrap, topic, 8, first=40)
    spin([first], lambda: len(first.records) >= firstRead + 8, what="8 new messages")
    first.poll(0.3)
    checkOnce(first.records[firstRead:], expected)
    assert any(f"member {m} left group {group}" in line for line in groupLog(broker, group) for m in byMember)

    first.consumer.commit(asynchronous=False)
    first.close()
    emptied = describeGroup(broker.bootstrap, group)
    assert emptied.state == ConsumerGroupState.EMPTY and emptied.members == []

    # The admin client reads the group's offsets, then deletes the group (DeleteGroups).
    from confluent_kafka import ConsumerGroupTopicPartitions

    [offsets] = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)], request_timeout=10).values()
    assert {(tp.topic, tp.partition, tp.offset) for tp in offsets.result(10).topic_partitions} == {(topic, p, 12) for p in range(PARTITIONS)}
    [deleted] = admin.delete_consumer_groups([group], request_timeout=10).values()
    deleted.result(10)
    assert group not in {g.group_id for g in admin.list_consumer_groups(request_timeout=10).result(10).valid}
    assert describeGroup(broker.bootstrap, group).state == ConsumerGroupState.DEAD
    print(f"alone {alone:.2f} s, rebalance on join {joined:.2f} s, on leave {left:.2f} s")


def test_confluentNewMemberResumesAfterCommittedOffsets(broker, members):
    """A member reads and commits part of a topic and closes; a new member of the
    group sees the committed offsets and reads only what came after them."""
    topic = group = "resume"
    createTopic(broker.bootstrap, topic)
    produce(broker.bootstrap, topic, 20)
    reader = members(broker.bootstrap, group, topic)
    spin([reader], lambda: len(reader.records) >= 20, what="20 messages")
    # Commit 3 of the 5 messages of each partition: the next offset to read is 3.
    from confluent_kafka import TopicPartition

    reader.consumer.commit(offsets=[TopicPartition(topic, p, 3) for p in range(PARTITIONS)], asynchronous=False)
    assert reader.committed() == {p: 3 for p in range(PARTITIONS)}
    reader.close()

    expected = {r for r in produce(broker.bootstrap, topic, 4, first=20)}
    expected |= {(p, o, b"k-%d" % (o * PARTITIONS + p), b"v-%d" % (o * PARTITIONS + p)) for p in range(PARTITIONS) for o in (3, 4)}
    newcomer = members(broker.bootstrap, group, topic)
    spin([newcomer], lambda: len(newcomer.records) >= 12, what="12 messages after the committed offsets")
    newcomer.poll(0.3)
    assert newcomer.committed() == {p: 3 for p in range(PARTITIONS)}
    checkOnce(newcomer.records, expected)


def test_confluentCommittedOffsetsSurviveKill9(brokerFactory, members):
    """A commit answered is stored: the broker killed -9 right after it, restarted, gives
    the offsets to a new member, which resumes after them."""
    from confluent_kafka import TopicPartition

    broker = brokerFactory("--num-partitions", str(PARTITIONS), *NO_DELAY)  # LevelDB
    topic = group = "durable"
    createTopic(broker.bootstrap, topic)
    produce(broker.bootstrap, topic, 12)
    reader = members(broker.bootstrap, group, topic)
    spin([reader], lambda: len(reader.records) >= 12, what="12 messages")
    reader.consumer.commit(asynchronous=False)
    reader.consumer.commit(offsets=[TopicPartition(topic, 0, 1)], asynchronous=False)  # a second commit of one partition
    broker.restart(signal.SIGKILL)
    reader.close()

    expected = produce(broker.bootstrap, topic, 4, first=12)
    expected.add((0, 1, b"k-4", b"v-4"))
    expected.add((0, 2, b"k-8", b"v-8"))
    newcomer = members(broker.bootstrap, group, topic)
    spin([newcomer], lambda: len(newcomer.records) >= 6, what="6 messages after the committed offsets")
    newcomer.poll(0.3)
    assert newcomer.committed() == {0: 1, 1: 3, 2: 3, 3: 3}
    checkOnce(newcomer.records, expected)


KILLED_MEMBER = """
import sys
from confluent_kafka import Consumer

bootstrap, group, topic = sys.argv[1:]
consumer = Consumer({
    "bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
    "enable.auto.commit": False, "session.timeout.ms": 6000,
})

def assigned(consumer, partitions):
    print(len(partitions), flush=True)

consumer.subscribe([topic], on_assign=assigned)
while True:
    consumer.poll(0.1)
"""


def test_confluentKilledMemberIsDroppedAfterItsSessionTimeout(broker, members):
    """A member killed -9 cannot leave: after its session timeout (6 s) the broker drops it
    and the survivor gets all 4 partitions, and reads what comes next on every one."""
    topic = group = "killed"
    createTopic(broker.bootstrap, topic)
    survivor = members(broker.bootstrap, group, topic)
    spin([survivor], lambda: survivor.assigned() == [0, 1, 2, 3], what="the survivor to get all 4 partitions")
    victim = subprocess.Popen(
        [sys.executable, "-c", KILLED_MEMBER, broker.bootstrap, group, topic], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        spin([survivor], lambda: len(survivor.assigned()) == 2, what="the survivor to give 2 partitions to the victim")
        ready, _, _ = select.select([victim.stdout], [], [], 10)
        assert ready and victim.stdout.readline().strip() == "2"  # the victim's on_assign: it took the other two
        victim.kill()
        victim.wait(10)
        killed = time.monotonic()
        spin([survivor], lambda: survivor.assigned() == [0, 1, 2, 3], timeout=20, what="the survivor to get all 4 partitions back")
        took = time.monotonic() - killed
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()
    # Its last heartbeat was at most 3 s (librdkafka's interval) before the kill; the survivor
    # hears of the rebalance at its next heartbeat, at most 3 s after the timeout.
    assert 2.5 < took < 12, took
    assert any("missed its session timeout: removed" in line for line in groupLog(broker, group))
    expected = produce(broker.bootstrap, topic, 8)
    spin([survivor], lambda: len(survivor.records) >= 8, what="8 messages")
    survivor.poll(0.3)
    checkOnce(survivor.records, expected)
    print(f"killed member dropped and partitions reassigned in {took:.2f} s")


# --- kafka-python 3 ----------------------------------------------------------------


def kafkaPythonRead(consumer, count, timeout=20.0):
    records = []
    deadline = time.monotonic() + timeout
    while len(records) < count and time.monotonic() < deadline:
        for messages in consumer.poll(timeout_ms=200).values():
            records.extend((m.partition, m.offset, m.key, m.value) for m in messages)
    for messages in consumer.poll(timeout_ms=300).values():  # nothing more comes
        records.extend((m.partition, m.offset, m.key, m.value) for m in messages)
    return records


def test_kafkaPythonGroupConsumerCommitsAndResumes(broker):
    from kafka import KafkaConsumer, TopicPartition

    topic = group = "kp-group"
    createTopic(broker.bootstrap, topic)
    expected = produce(broker.bootstrap, topic, 12)

    def consumer():
        made = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=group, auto_offset_reset="earliest", enable_auto_commit=False)
        made.subscribe([topic])
        return made

    first = consumer()
    try:
        checkOnce(kafkaPythonRead(first, 12), expected)
        assert sorted(tp.partition for tp in first.assignment()) == [0, 1, 2, 3]
        first.commit()
        assert {p: first.committed(TopicPartition(topic, p)) for p in range(PARTITIONS)} == {p: 3 for p in range(PARTITIONS)}
    finally:
        first.close()

    expected = produce(broker.bootstrap, topic, 4, first=12)
    second = consumer()
    try:
        checkOnce(kafkaPythonRead(second, 4), expected)
    finally:
        second.close()


# --- aiokafka 0.14 -------------------------------------------------------------------


def test_aiokafkaGroupConsumerCommitsAndResumes(broker):
    from aiokafka import AIOKafkaConsumer, TopicPartition

    topic = group = "aio-group"
    createTopic(broker.bootstrap, topic)
    expected = produce(broker.bootstrap, topic, 12)

    async def read(count, commit):
        consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=group, auto_offset_reset="earliest", enable_auto_commit=False)
        await consumer.start()
        records = []
        try:
            consumer.subscribe([topic])
            deadline = time.monotonic() + 20
            while len(records) < count and time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=200)
                records.extend((m.partition, m.offset, m.key, m.value) for messages in batches.values() for m in messages)
            batches = await consumer.getmany(timeout_ms=300)
            records.extend((m.partition, m.offset, m.key, m.value) for messages in batches.values() for m in messages)
            assigned = sorted(tp.partition for tp in consumer.assignment())
            committed = None
            if commit:
                await consumer.commit()
                committed = {p: await consumer.committed(TopicPartition(topic, p)) for p in range(PARTITIONS)}
        finally:
            await consumer.stop()
        return records, assigned, committed

    records, assigned, committed = asyncio.run(asyncio.wait_for(read(12, commit=True), 60))
    checkOnce(records, expected)
    assert assigned == [0, 1, 2, 3]
    assert committed == {p: 3 for p in range(PARTITIONS)}

    expected = produce(broker.bootstrap, topic, 4, first=12)
    records, _, _ = asyncio.run(asyncio.wait_for(read(4, commit=False), 60))
    checkOnce(records, expected)


# --- kafkajs 2.2.4 (node) --------------------------------------------------------------


def test_kafkajsGroupConsumerAndOffsetsSharedWithOtherClients(broker, members):
    """kafkajs's subscribe + run reads every message; the offsets it commits are the ones
    confluent-kafka's committed() reads, and a confluent-kafka member of the group resumes after them."""
    topic = group = "js-group"
    createTopic(broker.bootstrap, topic)
    expected = produce(broker.bootstrap, topic, 12)
    result = kafkajs("consume", broker.bootstrap, topic, "12", group, timeout=30)
    assert result["ok"], result
    assert result["joined"]["assigned"] == {topic: [0, 1, 2, 3]}, result["joined"]
    checkOnce([(m["partition"], m["offset"], m["key"].encode(), m["value"].encode()) for m in result["messages"]], expected)

    expected = produce(broker.bootstrap, topic, 4, first=12)
    member = members(broker.bootstrap, group, topic)
    spin([member], lambda: len(member.records) >= 4, what="4 messages after kafkajs's commits")
    member.poll(0.3)
    assert member.committed() == {p: 3 for p in range(PARTITIONS)}
    checkOnce(member.records, expected)


# --- through twistd kafkaw-shim (TCP to the broker's WebSocket endpoint) ---------------

FIND_COORDINATOR = 10


def findCoordinator(bootstrap, group):
    """A raw FindCoordinator v2 for C{group} sent to C{bootstrap}: (error code, host, port)."""
    with Connection(bootstrap) as connection:
        answer = connection.call(FIND_COORDINATOR, 2, {"key": group, "keyType": 0})
    return answer.errorCode, answer.host, answer.port


def test_confluentGroupConsumerThroughTheShim(broker, shimFactory, members):
    """FindCoordinator through the shim names the shim, as Metadata does."""
    shim = shimFactory(broker.websocketURL)
    answered = findCoordinator(shim.bootstrap, "shim")
    assert answered == (0, "127.0.0.1", shim.port), f"shim port {shim.port}, broker's WebSocket port {broker.websocketPort}: {answered}"
    topic = group = "shim"
    createTopic(shim.bootstrap, topic)
    expected = produce(shim.bootstrap, topic, 8)
    member = members(shim.bootstrap, group, topic)
    spin([member], lambda: len(member.records) >= 8, what="8 messages through the shim")
    member.poll(0.3)
    checkOnce(member.records, expected)
