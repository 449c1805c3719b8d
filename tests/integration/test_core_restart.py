"""Broker core across restarts: SIGTERM (clean shutdown) and SIGKILL, same data dir."""

import signal
import threading
import time

import pytest
from confluent_kafka import Producer

from tests.integration.conftest import (
    KCAT_08,
    RDKAFKA_08,
    RawClient,
    kcat,
    rdConsume,
    rdProduce,
)
from kafkaw.protocol.messages import expandMessageSet

PARTITIONS = 4


def batch(count, tag):
    return [(i % PARTITIONS, b"%s-k%d" % (tag, i), b"%s-v%d" % (tag, i)) for i in range(count)]


def perPartition(messages):
    out = {p: [] for p in range(PARTITIONS)}
    for partition, key, value in messages:
        out[partition].append((key, value))
    return out


def assertLog(consumed, expected):
    for partition, pairs in expected.items():
        got = consumed[partition]
        assert [o for o, _, _ in got] == list(range(len(pairs))), f"partition {partition}: offsets"
        assert [(k, v) for _, k, v in got] == pairs, f"partition {partition}: keys/values"


def rawAll(broker, topic, partition):
    """Every message of a partition via raw Fetches: [(offset, value)] and the high watermark."""
    out = []
    with RawClient(broker) as raw:
        while True:
            error, hw, data = raw.fetch({topic: {partition: (len(out), 1 << 20)}})[topic][partition]
            assert error == 0, f"fetch {topic}/{partition} at {len(out)}: error {error}"
            fresh = [(m.offset, m.value) for m in expandMessageSet(data) if m.offset >= len(out)]
            if not fresh:
                return out, hw
            out.extend(fresh)


def test_sigterm_exits_cleanly(broker):
    """A SIGTERMed broker closes its store, logs it and ends by SIGTERM.

    twistd re-raises the signal after a clean shutdown (runApp ->
    _exitWithSignal), so the status is -SIGTERM, which systemd counts as a
    clean stop; an unclean stop would show a traceback or another status.
    """
    rdProduce(broker.bootstrap, "term", batch(20, b"t"))
    code = broker.stop(signal.SIGTERM)
    log = broker.logText()
    assert "store closed" in log
    assert "Traceback" not in log
    assert code == -signal.SIGTERM, f"exit status {code} after SIGTERM"


def test_restart_after_sigterm_keeps_everything(broker):
    first = batch(800, b"a")
    rdProduce(broker.bootstrap, "durable", first)
    code = broker.stop(signal.SIGTERM)
    assert code == -signal.SIGTERM, f"unclean exit {code}"  # see test_sigterm_exits_cleanly
    assert "store closed" in broker.logText()
    broker.start()

    assertLog(rdConsume(broker.bootstrap, "durable", {p: 200 for p in range(PARTITIONS)}), perPartition(first))
    second = batch(400, b"b")
    reports = rdProduce(broker.bootstrap, "durable", second)
    assert all(err is None for err, *_ in reports)
    for partition in range(PARTITIONS):
        offsets = sorted(o for _, p, o, _, _ in reports if p == partition)
        assert offsets == list(range(200, 300)), f"partition {partition}: new produces did not continue at 200"
    expected = perPartition(first + second)
    assertLog(rdConsume(broker.bootstrap, "durable", {p: 300 for p in range(PARTITIONS)}), expected)
    out = kcat("-b", broker.bootstrap, *KCAT_08, "-C", "-t", "durable", "-p", "3", "-o", "beginning", "-e", "-f", "%o %k\n")
    assert out.splitlines() == [b"%d %s" % (o, k) for o, (k, _) in enumerate(expected[3])]


def test_restart_after_sigkill_keeps_acked_messages(broker):
    """Kill -9 while a producer is busy: every acked message is at its acked offset
    after the restart, offsets are contiguous from 0, and new produces go on from the end."""
    rdProduce(broker.bootstrap, "kill", [(p, None, b"seed") for p in range(PARTITIONS)])  # creates the topic
    producer = Producer(
        {
            **RDKAFKA_08,
            "bootstrap.servers": broker.bootstrap,
            "acks": 1,
            "linger.ms": 2,
            "message.send.max.retries": 0,  # a retry after the kill could store a message twice
            "message.timeout.ms": 3000,
        }
    )
    acked = []
    stop = threading.Event()

    def delivered(err, msg):
        if err is None:
            acked.append((msg.partition(), msg.offset(), msg.value()))

    def produce():
        number = 0
        while not stop.is_set():
            for _ in range(100):
                try:
                    producer.produce("kill", b"n%d" % number, partition=number % PARTITIONS, on_delivery=delivered)
                except BufferError:
                    break
                number += 1
            producer.poll(0.002)

    worker = threading.Thread(target=produce)
    worker.start()
    try:
        deadline = time.monotonic() + 15
        while len(acked) < 3000 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert broker.stop(signal.SIGKILL) == -signal.SIGKILL
    finally:
        stop.set()
        worker.join(10)
    producer.flush(5)
    assert len(acked) >= 3000, f"only {len(acked)} messages acked before the kill"

    broker.start()
    for partition in range(PARTITIONS):
        stored, hw = rawAll(broker, "kill", partition)
        assert [o for o, _ in stored] == list(range(hw)), f"partition {partition}: offsets not contiguous"
        assert stored[0] == (0, b"seed")
        mine = {(o, v) for p, o, v in acked if p == partition}
        assert mine <= set(stored), f"partition {partition}: acked messages lost or moved"
        assert len({v for _, v in stored}) == len(stored), f"partition {partition}: a message stored twice"
    # new produces continue at the old log end
    ends = {p: rawAll(broker, "kill", p)[1] for p in range(PARTITIONS)}
    reports = rdProduce(broker.bootstrap, "kill", [(p, None, b"after") for p in range(PARTITIONS)])
    assert sorted((p, o) for _, p, o, _, _ in reports) == sorted(ends.items())
    for partition, end in ends.items():
        stored, hw = rawAll(broker, "kill", partition)
        assert hw == end + 1 and stored[-1] == (end, b"after")


def test_partition_counts_survive_restart(brokerFactory):
    broker = brokerFactory("--num-partitions", "3")
    kcat("-b", broker.bootstrap, *KCAT_08, "-P", "-t", "three", "-p", "2", input=b"on two\n")
    broker.extraArgs = ["--num-partitions", "5"]
    broker.restart(signal.SIGKILL)
    kcat("-b", broker.bootstrap, *KCAT_08, "-P", "-t", "five", "-p", "4", input=b"on four\n")
    broker.extraArgs = ["--num-partitions", "1", "--no-auto-create-topics"]
    broker.restart(signal.SIGTERM)
    with RawClient(broker) as raw:
        _, topics = raw.metadata()
        assert {name: (error, sorted(parts)) for name, (error, parts) in topics.items()} == {
            "three": (0, [0, 1, 2]),
            "five": (0, [0, 1, 2, 3, 4]),
        }
        assert raw.metadata(["new"])[1] == {"new": (3, {})}
    assert rdConsume(broker.bootstrap, "three", {2: 1}) == {2: [(0, None, b"on two")]}
    assert rdConsume(broker.bootstrap, "five", {4: 1}) == {4: [(0, None, b"on four")]}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_memory_storage_starts_empty_after_restart(brokerFactory, sig):
    """The memory backend keeps nothing: after a restart the topic is gone."""
    broker = brokerFactory("--storage", "memory")
    kcat("-b", broker.bootstrap, *KCAT_08, "-P", "-t", "volatile", "-p", "0", input=b"gone\n")
    broker.extraArgs = ["--storage", "memory", "--no-auto-create-topics"]
    broker.restart(sig)
    with RawClient(broker) as raw:
        assert raw.metadata() == ([(0, "127.0.0.1", broker.port)], {})
