"""C{--metrics}: a real broker scraped over HTTP after real clients used it."""

import socket
import subprocess
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import freePort, kcat, rdConsume, rdProduce, waitForPort


def scrape(port):
    """{(sample name, frozenset of labels): value} from GET /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0)


def test_scrapeAfterProduceAndConsume(brokerFactory):
    port = freePort()
    broker = brokerFactory("--metrics", f"tcp:{port}:interface=127.0.0.1")
    waitForPort(port, process=broker.process)
    messages = [(0, None, f"m{i}".encode()) for i in range(50)]
    reports = rdProduce(broker.bootstrap, "metered", messages)
    assert all(error is None for error, *_ in reports)
    assert len(rdConsume(broker.bootstrap, "metered", {0: 50})[0]) == 50
    kcat("-b", broker.bootstrap, "-L", "-t", "metered")

    samples = scrape(port)
    assert value(samples, "kafkaw_messages_in_total", topic="metered") == 50
    assert value(samples, "kafkaw_partition_log_end_offset", topic="metered", partition="0") == 50
    assert value(samples, "kafkaw_partition_log_start_offset", topic="metered", partition="0") == 0
    produced = value(samples, "kafkaw_requests_total", api="Produce", outcome="ok")
    assert 1 <= produced <= 50  # librdkafka batches
    assert value(samples, "kafkaw_request_duration_seconds_count", api="Produce") == produced
    assert value(samples, "kafkaw_request_duration_seconds_bucket", api="Produce", le="+Inf") == produced
    assert value(samples, "kafkaw_requests_total", api="Fetch", outcome="ok") >= 1
    assert value(samples, "kafkaw_requests_total", api="Metadata", outcome="ok") >= 3  # one per client at least
    assert value(samples, "kafkaw_request_bytes_total", api="Produce") > sum(len(v) for _, _, v in messages)
    assert value(samples, "kafkaw_response_bytes_total", api="Fetch") > sum(len(v) for _, _, v in messages)


def test_startFailsWhenTheMetricsEndpointCannotListen(brokerFactory):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        broker = brokerFactory("--metrics", f"tcp:{port}:interface=127.0.0.1", start=False)
        broker.start(wait=False)
        try:
            code = broker.process.wait(20)
        except subprocess.TimeoutExpired:
            raise AssertionError("the broker kept running without its metrics endpoint")
    assert code == 1
    log = broker.logText()
    assert f"kafkaw: Couldn't listen on 127.0.0.1:{port}" in log and "Traceback" not in log


def test_groupMetrics(brokerFactory):
    """A confluent-kafka consumer group's members, rebalances, committed offsets and lag."""
    from confluent_kafka import Consumer, TopicPartition

    port = freePort()
    broker = brokerFactory(
        "--metrics", f"tcp:{port}:interface=127.0.0.1", "--num-partitions", "2", "--group-initial-rebalance-delay-ms", "0"
    )
    waitForPort(port, process=broker.process)
    rdProduce(broker.bootstrap, "orders", [(n % 2, None, b"o%d" % n) for n in range(10)])
    consumer = Consumer({
        "bootstrap.servers": broker.bootstrap, "group.id": "shipping", "enable.auto.commit": False,
        "auto.offset.reset": "earliest", "fetch.wait.max.ms": 100,
    })
    try:
        consumer.subscribe(["orders"])
        read = 0
        deadline = time.monotonic() + 20
        while read < 10:
            assert time.monotonic() < deadline, f"read {read} of 10"
            message = consumer.poll(0.2)
            if message is not None and message.error() is None:
                read += 1
        # 3 of partition 0's 5 messages and all of partition 1's
        consumer.commit(offsets=[TopicPartition("orders", 0, 3), TopicPartition("orders", 1, 5)], asynchronous=False)
        samples = scrape(port)
        assert value(samples, "kafkaw_group_members", group="shipping") == 1
        assert value(samples, "kafkaw_group_rebalances_total", group="shipping") == 1
    finally:
        consumer.close()
    rdProduce(broker.bootstrap, "orders", [(1, None, b"late")])
    samples = scrape(port)
    assert samples[("kafkaw_group_members", frozenset({"group": "shipping"}.items()))] == 0  # it left; the offsets stay
    for partition, committed, lag in [("0", 3, 2), ("1", 5, 1)]:
        assert value(samples, "kafkaw_group_committed_offset", group="shipping", topic="orders", partition=partition) == committed
        assert value(samples, "kafkaw_group_lag", group="shipping", topic="orders", partition=partition) == lag
