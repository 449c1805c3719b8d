"""Kafka over TLS (`--listen ssl:...`) with stock clients that verify the broker.

librdkafka >= 2.0 checks the broker's certificate chain against
`ssl.ca.location` and its name against the address dialled
(`ssl.endpoint.identification.algorithm=https` is the default), so the test
certificate names DNS localhost and IP 127.0.0.1 — Metadata sends clients back
to 127.0.0.1. wss:// (through the shim, verified) is covered in test_websocket.py.
"""

import re
import socket
import struct
import subprocess

import pytest
from confluent_kafka import KafkaException, Producer

from tests.integration.conftest import (
    KCAT_08,
    RDKAFKA_08,
    BrokerProcess,
    freePort,
    kcat,
    metadataBody,
    rdConsume,
    rdProduce,
    requestHeader,
    selfSignedCertificate,
    waitForPort,
)

# librdkafka's own defaults for what RDKAFKA_08 changes: ask for ApiVersions.
RDKAFKA_DEFAULTS = {"api.version.request": True, "broker.version.fallback": "0.10.0"}


def startTlsBroker(directory, name, **sans):
    """A broker with a TLS listener (besides its plain one) using a fresh certificate."""
    directory.mkdir(exist_ok=True)
    keyPath, certPath = selfSignedCertificate(directory, name, **sans)
    tlsPort = freePort()
    broker = BrokerProcess(
        directory / "data",
        ["--storage", "memory", "--num-partitions", "2",
         "--listen", f"ssl:{tlsPort}:privateKey={keyPath}:certKey={certPath}:interface=127.0.0.1"],
    )
    broker.dataDir.mkdir()
    broker.start()
    waitForPort(tlsPort, process=broker.process)
    broker.tlsPort, broker.certPath = tlsPort, certPath
    return broker


@pytest.fixture(scope="module")
def tlsBroker(tmp_path_factory):
    broker = startTlsBroker(tmp_path_factory.mktemp("tls"), "broker")
    yield broker
    broker.stop()
    assert not re.search(r"Traceback|Unhandled", broker.logText())


@pytest.fixture(scope="module")
def otherCa(tmp_path_factory):
    return selfSignedCertificate(tmp_path_factory.mktemp("other"), "other")[1]


def sslConf(caPath):
    return {"security.protocol": "ssl", "ssl.ca.location": str(caPath)}


@pytest.mark.parametrize(
    "settings, host",
    [(RDKAFKA_08, "127.0.0.1"), (RDKAFKA_DEFAULTS, "localhost")],
    ids=["0.8 settings", "librdkafka defaults"],
)
def test_confluentKafkaOverTls(tlsBroker, settings, host):
    topic = "tls-rd-" + ("08" if settings is RDKAFKA_08 else "defaults")
    bootstrap = f"{host}:{tlsBroker.tlsPort}"
    conf = {**settings, **sslConf(tlsBroker.certPath)}
    messages = [(i % 2, f"k{i}".encode(), f"secret {i}".encode() * (1 + i % 30)) for i in range(400)]
    reports = rdProduce(bootstrap, topic, messages, **conf, **{"compression.codec": "gzip"})
    assert [err for err, *_ in reports] == [None] * 400
    got = rdConsume(bootstrap, topic, {0: 200, 1: 200}, **conf)
    for partition in (0, 1):
        assert [offset for offset, _, _ in got[partition]] == list(range(200))
        assert [(k, v) for _, k, v in got[partition]] == [(k, v) for p, k, v in messages if p == partition]
    # The same data over the plain listener.
    assert rdConsume(tlsBroker.bootstrap, topic, {0: 200, 1: 200}) == got
    if settings is RDKAFKA_DEFAULTS:
        assert "ApiVersions v" in tlsBroker.logText(), "the client did not ask for ApiVersions"


@pytest.mark.parametrize("settings", [KCAT_08, []], ids=["0.8 settings", "librdkafka defaults"])
def test_kcatOverTls(tlsBroker, settings):
    topic = "tls-kcat-" + ("08" if settings else "defaults")
    tls = ["-b", f"localhost:{tlsBroker.tlsPort}", *settings, "-X", "security.protocol=ssl", "-X", f"ssl.ca.location={tlsBroker.certPath}"]
    lines = b"".join(f"line {i}\n".encode() for i in range(300))
    kcat(*tls, "-P", "-t", topic, "-p", "1", input=lines)
    consume = ["-C", "-t", topic, "-p", "1", "-o", "beginning", "-e", "-f", "%o %s\n"]
    expected = b"".join(f"{i} line {i}\n".encode() for i in range(300))
    assert kcat(*tls, *consume) == expected
    assert kcat("-b", tlsBroker.bootstrap, *KCAT_08, *consume) == expected


def tlsFailure(bootstrap, caPath, **conf):
    """The errors confluent-kafka reports when it cannot get Metadata over TLS (it must not)."""
    errors = []
    producer = Producer({"bootstrap.servers": bootstrap, **sslConf(caPath), "error_cb": errors.append, "log_level": 0, **conf})
    with pytest.raises(KafkaException):
        producer.list_topics(timeout=1)
    producer.poll(0.2)
    return " ".join(str(e) for e in errors)


def kcatFailure(bootstrap, *args):
    """kcat's stderr when it cannot list Metadata (it must not); kcat 1.7.1 may crash on the way out."""
    result = subprocess.run(["kcat", "-b", bootstrap, *args, "-L", "-m", "1"], capture_output=True, timeout=30)
    assert result.returncode != 0, "kcat listed the broker's Metadata"
    return result.stderr.decode(errors="replace")


def test_aCertificateFromAnotherCaIsRefused(tlsBroker, otherCa):
    bootstrap = f"localhost:{tlsBroker.tlsPort}"
    assert "certificate verify failed" in tlsFailure(bootstrap, otherCa)
    assert "certificate verify failed" in kcatFailure(bootstrap, "-X", "security.protocol=ssl", "-X", f"ssl.ca.location={otherCa}")


def test_aCertificateForAnotherNameIsRefused(tmp_path):
    """Hostname verification is on by default: the right CA but a certificate for another name fails."""
    broker = startTlsBroker(tmp_path / "wrong", "wrong-name", dnsNames=("kafka.invalid",), ipAddresses=())
    try:
        bootstrap = f"127.0.0.1:{broker.tlsPort}"
        assert "certificate verify failed" in tlsFailure(bootstrap, broker.certPath)
        assert "certificate verify failed" in kcatFailure(bootstrap, "-X", "security.protocol=ssl", "-X", f"ssl.ca.location={broker.certPath}")
        # Only the name was wrong: without the name check the same chain is accepted.
        producer = Producer({"bootstrap.servers": bootstrap, **sslConf(broker.certPath), "ssl.endpoint.identification.algorithm": "none"})
        assert list(producer.list_topics(timeout=10).brokers) == [0]
    finally:
        broker.stop()


def test_aPlaintextClientOnTheTlsPortFailsCleanly(tlsBroker):
    payload = requestHeader(3, 1) + metadataBody([])
    with socket.create_connection(("127.0.0.1", tlsBroker.tlsPort), timeout=10) as sock:
        sock.sendall(struct.pack(">i", len(payload)) + payload)
        assert sock.recv(1 << 16) == b"", "a plaintext request over TLS got an answer"
    assert "Failed to acquire metadata" in kcatFailure(f"127.0.0.1:{tlsBroker.tlsPort}", *KCAT_08)
    # Still serving, over TLS and in plain.
    tls = ["-X", "security.protocol=ssl", "-X", f"ssl.ca.location={tlsBroker.certPath}"]
    assert f"broker 0 at 127.0.0.1:{tlsBroker.tlsPort}" in kcat("-b", f"localhost:{tlsBroker.tlsPort}", *tls, "-L").decode()
    assert f"broker 0 at 127.0.0.1:{tlsBroker.port}" in kcat("-b", tlsBroker.bootstrap, *KCAT_08, "-L").decode()
