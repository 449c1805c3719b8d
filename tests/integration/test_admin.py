"""Operating a real broker: the `kafkaw` admin CLI (run as `python -m
kafkaw.cli`, as the console script runs it) and retention with real clients."""

import os
import re
import subprocess
import sys
import time

from confluent_kafka import OFFSET_BEGINNING

from kafkaw.protocol.messages import encodeMessageSet
from tests.integration.conftest import ROOT, RawClient, rdConsume, rdProduce, waitUntil

OFFSET_OUT_OF_RANGE = 1


def kafkaw(broker, *args, bootstrap=None):
    """Run the CLI; (exit status, stdout, stderr)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run(
        [sys.executable, "-m", "kafkaw.cli", "--bootstrap", bootstrap or broker.bootstrap, *args],
        capture_output=True, text=True, env=env, timeout=30,
    )
    return result.returncode, result.stdout, result.stderr


def consoleExamples(path):
    """[(command, expected output)] of the ```console blocks of a doc, in order."""
    examples = []
    for block in re.findall(r"```console\n(.*?)```", path.read_text(), re.S):
        for chunk in re.split(r"(?m)^\$ ", block)[1:]:
            command, _, output = chunk.partition("\n")
            examples.append((command, output))
    return examples


def test_docsExamples(brokerFactory):
    """Every example of docs/cli.md, in order, against a fresh broker."""
    broker = brokerFactory("--num-partitions", "1")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    examples = consoleExamples(ROOT / "docs" / "cli.md")
    assert len(examples) >= 20
    for command, expected in examples:
        shell = command.replace("127.0.0.1:9092", broker.bootstrap)
        if shell.startswith("kafkaw "):
            shell = f"{sys.executable} -m kafkaw.cli --bootstrap {broker.bootstrap} " + shell[len("kafkaw "):]
        result = subprocess.run(["bash", "-c", shell], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, timeout=30)
        assert result.stdout == expected, command
        assert (result.returncode == 0) == (not expected.startswith("kafkaw: ")), command
    # asking about an unknown topic did not create it, though auto-create is on
    assert kafkaw(broker, "topics", "list") == (0, "logs\n", "")


def test_cliAgainstAStrictBroker(brokerFactory):
    broker = brokerFactory("--strict-0.8")
    for command, api, version in [(["topics", "create", "t"], "CreateTopics", 3), (["topics", "list"], "Metadata", 4)]:
        status, out, err = kafkaw(broker, *command)
        assert (status, out) == (1, "")
        assert f"kafkaw: {broker.bootstrap} closed the connection on {api} (it does not serve {api} v{version}" in err


def test_deleteAndAlter(brokerFactory):
    """Deleted topics are gone with their messages (a new one of the same name
    starts empty); grown ones keep theirs, and every partition takes messages."""
    broker = brokerFactory("--no-auto-create-topics")
    assert kafkaw(broker, "topics", "create", "a", "-p", "2")[0] == 0
    assert kafkaw(broker, "topics", "create", "b", "--config", "retention.bytes=500")[0] == 0
    rdProduce(broker.bootstrap, "a", [(1, b"k", b"one"), (1, b"k", b"two")])
    rdProduce(broker.bootstrap, "b", [(0, b"k", b"x")])

    assert kafkaw(broker, "topics", "alter", "a", "--partitions", "3") == (0, "topic a now has 3 partitions\n", "")
    rdProduce(broker.bootstrap, "a", [(2, b"k", b"new")])
    bounds = kafkaw(broker, "offsets", "a")[1].splitlines()[1:]
    assert bounds == ["0          0      0", "1          0      2", "2          0      1"]
    status, _, err = kafkaw(broker, "topics", "alter", "a", "-p", "3")
    assert status == 1
    assert err == "kafkaw: cannot alter topic a: topic 'a' has 3 partitions, which is not fewer than the 3 asked for\n"

    assert kafkaw(broker, "topics", "delete", "b", "nosuch", "a") == (
        1, "deleted topic b\ndeleted topic a\n", "kafkaw: cannot delete topic nosuch: unknown topic\n"
    )
    assert kafkaw(broker, "topics", "list") == (0, "", "")
    assert kafkaw(broker, "offsets", "a") == (1, "", "kafkaw: unknown topic a\n")
    # made again: empty, one partition, the broker's default configs
    assert kafkaw(broker, "topics", "create", "b")[0] == 0
    status, out, _ = kafkaw(broker, "topics", "describe", "b")
    assert status == 0
    assert "0          0       0         0    0      0\n" in out
    assert "retention.bytes         -1          default\n" in out

    broker.restart()  # deletions and the new partition are stored
    assert kafkaw(broker, "topics", "list") == (0, "b\n", "")


def test_retention(brokerFactory):
    broker = brokerFactory("--retention-check-interval-ms", "100")
    # two partitions: confluent-kafka 2.16 (librdkafka) cannot parse a Metadata v0
    # answer listing only 1-partition topics when there are two or more
    assert kafkaw(broker, "topics", "create", "aging", "-p", "2", "--config", "retention.ms=1000")[0] == 0
    assert kafkaw(broker, "topics", "create", "sized", "--config", "retention.bytes=500")[0] == 0
    old = rdProduce(broker.bootstrap, "aging", [(0, b"k", b"old-%d" % n) for n in range(5)])
    assert [offset for _, _, offset, _, _ in old] == list(range(5))
    with RawClient(broker) as raw:
        # ten appends of one 100-byte message: 126 bytes each as stored; the
        # oldest go while what stays is still at least 500 bytes, so 4 stay
        for n in range(10):
            assert raw.produce({"sized": {0: encodeMessageSet([(None, b"%03d" % n + b"x" * 97)])}}) == {"sized": {0: (0, n)}}
        waitUntil(lambda: raw.listOffsets({"sized": {0: (-2, 1)}})["sized"][0] == (0, [6]), what="retention by size")
        time.sleep(1.1)
        new = rdProduce(broker.bootstrap, "aging", [(0, b"k", b"new-%d" % n) for n in range(3)])
        assert [offset for _, _, offset, _, _ in new] == [5, 6, 7]
        waitUntil(lambda: raw.listOffsets({"aging": {0: (-2, 1)}})["aging"][0] == (0, [5]), what="retention by time")
        assert raw.listOffsets({"aging": {0: (-1, 1)}})["aging"][0] == (0, [8])
        assert raw.fetch({"aging": {0: (0, 1 << 20)}})["aging"][0] == (OFFSET_OUT_OF_RANGE, -1, b"")
    consumed = rdConsume(broker.bootstrap, "aging", {0: 3}, start=OFFSET_BEGINNING)
    assert consumed == {0: [(5, b"k", b"new-0"), (6, b"k", b"new-1"), (7, b"k", b"new-2")]}

    broker.restart()  # the log starts and the topics' configs are stored
    start, end = map(int, kafkaw(broker, "offsets", "aging")[1].splitlines()[1].split()[1:])
    assert start >= 5 and end == 8  # retention may have run again since
    assert kafkaw(broker, "offsets", "sized")[1].splitlines()[1:] == ["0          6      10"]
    with RawClient(broker) as raw:
        raw.produce({"sized": {0: encodeMessageSet([(None, b"x" * 100)])}})
        waitUntil(lambda: raw.listOffsets({"sized": {0: (-2, 1)}})["sized"][0] == (0, [7]), what="retention after restart")


def _groupConsumer(bootstrap, group, clientId):
    from confluent_kafka import Consumer

    return Consumer({
        "bootstrap.servers": bootstrap, "group.id": group, "client.id": clientId, "enable.auto.commit": False,
        "auto.offset.reset": "earliest", "fetch.wait.max.ms": 100,
    })


def _read(consumer, count, timeout=20.0):
    """[(partition, offset)] of the next C{count} messages a subscribed consumer gets."""
    read = []
    deadline = time.monotonic() + timeout
    while len(read) < count:
        assert time.monotonic() < deadline, f"read {read} of {count} messages"
        message = consumer.poll(0.2)
        if message is not None and message.error() is None:
            read.append((message.partition(), message.offset()))
    return read


def test_groups(brokerFactory):
    """A confluent-kafka consumer group described while it consumes; its
    offsets reset only once it has no members, which the next consumer of the
    group then reads from; and the group deleted."""
    from confluent_kafka import TopicPartition

    broker = brokerFactory("--no-auto-create-topics", "--group-initial-rebalance-delay-ms", "0")
    assert kafkaw(broker, "topics", "create", "orders", "-p", "2")[0] == 0
    rdProduce(broker.bootstrap, "orders", [(n % 2, None, b"order-%d" % n) for n in range(6)])
    assert kafkaw(broker, "groups", "list") == (0, "", "")

    consumer = _groupConsumer(broker.bootstrap, "shipping", "shipper")
    try:
        consumer.subscribe(["orders"])
        assert sorted(_read(consumer, 6)) == [(p, o) for p in (0, 1) for o in range(3)]
        consumer.commit(offsets=[TopicPartition("orders", 0, 3), TopicPartition("orders", 1, 2)], asynchronous=False)
        member = consumer.memberid()
        status, out, err = kafkaw(broker, "groups", "describe", "shipping")
        assert (status, err) == (0, "")
        assert out.splitlines() == [
            "group shipping: Stable, 1 member (consumer/range)",
            "",
            "member" + " " * (len(member) - 4) + "client   host        partitions",
            f"{member}  shipper  /127.0.0.1  orders 0,1",
            "",
            "topic   partition  committed  end  lag  member",
            f"orders  0          3          3    0    {member}",
            f"orders  1          2          3    1    {member}",
        ]
        assert kafkaw(broker, "groups", "list") == (
            0, "group     type      state   members\nshipping  consumer  Stable  1\n", ""
        )
        # a group with members keeps its offsets, and is not deleted
        status, out, err = kafkaw(broker, "groups", "reset-offsets", "shipping", "--topic", "orders", "--to-earliest")
        assert (status, out) == (1, "")
        assert err == (
            "kafkaw: cannot reset the offsets of group shipping: it is Stable with 1 member; a group takes offsets"
            " from outside its generation only while it has none: stop its consumers first\n"
        )
        assert kafkaw(broker, "groups", "delete", "shipping") == (
            1, "", "kafkaw: cannot delete group shipping: it has members: stop its consumers first\n"
        )
    finally:
        consumer.close()

    assert kafkaw(broker, "groups", "reset-offsets", "shipping", "-t", "orders", "--to-offset", "1") == (0, (
        "topic   partition  previous  new\n"
        "orders  0          3         1\n"
        "orders  1          2         1\n"
    ), "")
    assert kafkaw(broker, "groups", "describe", "shipping") == (0, (
        "group shipping: Empty, 0 members (consumer)\n"
        "\n"
        "topic   partition  committed  end  lag  member\n"
        "orders  0          1          3    2    -\n"
        "orders  1          1          3    2    -\n"
    ), "")
    # the group's next consumer starts at the offsets reset
    consumer = _groupConsumer(broker.bootstrap, "shipping", "shipper")
    try:
        consumer.subscribe(["orders"])
        assert sorted(_read(consumer, 4)) == [(0, 1), (0, 2), (1, 1), (1, 2)]
    finally:
        consumer.close()

    assert kafkaw(broker, "groups", "reset-offsets", "shipping", "-t", "orders", "--to-latest")[0] == 0
    broker.restart()  # the offsets reset are stored
    status, out, _ = kafkaw(broker, "groups", "describe", "shipping")
    assert out.splitlines()[-2:] == ["orders  0          3          3    0    -", "orders  1          3          3    0    -"]
    assert kafkaw(broker, "groups", "delete", "shipping", "shipping") == (0, "deleted group shipping\n", "")
    assert kafkaw(broker, "groups", "describe", "shipping") == (1, "", "kafkaw: unknown group shipping\n")
    assert kafkaw(broker, "groups", "list") == (0, "", "")
    assert kafkaw(broker, "groups", "reset-offsets", "shipping", "-t", "nosuch", "--to-latest") == (
        1, "", "kafkaw: unknown topic nosuch\n"
    )
