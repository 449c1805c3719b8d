"""C{--metrics}: a real broker scraped over HTTP after real clients used it."""

import socket
import subprocess
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
