"""Crash safety: what was acknowledged survives kill -9, exactly once, without holes."""

import random
import signal
import time

from confluent_kafka import Consumer, Producer, TopicPartition

from tests.integration.conftest import RDKAFKA_08, BrokerProcess

PARTITIONS = 3


def produceUntilKilled(broker, cycle, acked, rng):
    """Produce numbered messages until the broker is SIGKILLed at a random moment."""
    producer = Producer(
        {
            **RDKAFKA_08,
            "bootstrap.servers": broker.bootstrap,
            "acks": 1,
            "linger.ms": 2,
            # No retries: a retried send that had been stored but not acked
            # would be stored twice, and this test counts copies.
            "message.send.max.retries": 0,
            "message.timeout.ms": 5000,
        }
    )

    def delivered(err, msg):
        if err is None:
            acked.append((msg.partition(), msg.offset(), msg.value()))

    killAt = time.monotonic() + rng.uniform(0.3, 1.2)
    number = 0
    while time.monotonic() < killAt:
        for _ in range(50):
            value = f"c{cycle}-m{number}".encode()
            producer.produce("crash", value, partition=number % PARTITIONS, on_delivery=delivered)
            number += 1
        producer.poll(0.005)
    broker.stop(signal.SIGKILL)
    producer.flush(10)
    return number


def readAll(bootstrap):
    consumer = Consumer(
        {**RDKAFKA_08, "bootstrap.servers": bootstrap, "group.id": "crash", "enable.auto.commit": False}
    )
    found = {}
    for partition in range(PARTITIONS):
        low, high = consumer.get_watermark_offsets(TopicPartition("crash", partition), timeout=10)
        consumer.assign([TopicPartition("crash", partition, 0)])
        messages = []
        deadline = time.monotonic() + 30
        while len(messages) < high and time.monotonic() < deadline:
            for message in consumer.consume(1000, 1.0):
                if message.error() is None:
                    messages.append((message.offset(), message.value()))
        found[partition] = (low, high, messages)
    consumer.close()
    return found


def test_kill9_loop_loses_nothing_acknowledged(tmp_path):
    rng = random.Random(20261125)
    (tmp_path / "data").mkdir()
    broker = BrokerProcess(tmp_path / "data", ["--num-partitions", str(PARTITIONS)]).start()
    acked = []
    sent = 0
    try:
        for cycle in range(4):
            sent += produceUntilKilled(broker, cycle, acked, rng)
            broker.start()
        found = readAll(broker.bootstrap)
    finally:
        broker.stop()
    assert len(acked) > 1000, f"too few acknowledged messages to mean anything: {len(acked)}"
    for partition, (low, high, messages) in found.items():
        offsets = [offset for offset, _ in messages]
        assert low == 0
        assert offsets == list(range(high)), f"partition {partition}: holes or duplicates in offsets"
        values = [value for _, value in messages]
        assert len(values) == len(set(values)), f"partition {partition}: a message is stored twice"
        mine = {(offset, value) for p, offset, value in acked if p == partition}
        assert mine <= set(messages), f"partition {partition}: acknowledged messages missing or moved"
    assert sum(high for _, high, _ in found.values()) <= sent


def test_second_broker_on_same_data_dir_fails_clearly(brokerFactory, tmp_path):
    first = brokerFactory()
    from tests.integration.conftest import KCAT_08, kcat

    kcat("-b", first.bootstrap, *KCAT_08, "-P", "-t", "lock", "-p", "0", input=b"kept\n")
    second = BrokerProcess(first.dataDir, [])
    assert second.expectExit() != 0
    assert "lock" in second.logText().lower()
    out = kcat("-b", first.bootstrap, *KCAT_08, "-C", "-t", "lock", "-p", "0", "-o", "beginning", "-e")
    assert out == b"kept\n"
