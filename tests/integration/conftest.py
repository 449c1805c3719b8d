"""Real brokers for integration tests: `twistd kafkaw` subprocesses on free ports of 127.0.0.1."""

import datetime
import ipaddress
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kafkaw.protocol import schema
from kafkaw.protocol.framing import frame

ROOT = Path(__file__).resolve().parents[2]
NODE_DIR = ROOT / "tests" / "clients" / "node"

# librdkafka / kcat settings for a 0.8 broker (see ../shared/CLIENTS.md).
RDKAFKA_08 = {"api.version.request": False, "broker.version.fallback": "0.8.0"}
KCAT_08 = ["-X", "api.version.request=false", "-X", "broker.version.fallback=0.8.0"]


def freePort():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def waitForPort(port, timeout=20.0, process=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"broker exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


class BrokerProcess:
    """One `twistd -n kafkaw` process; restartable on the same data dir."""

    def __init__(self, dataDir, extraArgs=(), plugin="kafkaw", preexec=None):
        self.dataDir = Path(dataDir)
        self.port = freePort()
        # Every broker also serves WebSocket (on by default); give it a free port
        # too, unless the test passes its own --websocket / --no-websocket.
        self.websocketPort = freePort()
        self.extraArgs = list(extraArgs)
        self.plugin = plugin
        self.preexec = preexec  # run in the child before exec, e.g. to set resource limits
        self.process = None
        self.logPath = self.dataDir.parent / f"{self.dataDir.name}-broker.log"

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    @property
    def websocketURL(self):
        return f"ws://127.0.0.1:{self.websocketPort}/"

    def command(self):
        websocket = []
        if not any(a.startswith(("--websocket", "--no-websocket")) for a in self.extraArgs):
            websocket = ["--websocket", f"tcp:{self.websocketPort}:interface=127.0.0.1"]
        return [
            sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
            "-n", "--pidfile=", self.plugin,
            "--listen", f"tcp:{self.port}:interface=127.0.0.1",
            *websocket,
            "--data-dir", str(self.dataDir), *self.extraArgs,
        ]

    def start(self, wait=True):
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.log = open(self.logPath, "ab")
        self.process = subprocess.Popen(
            self.command(), stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=self.dataDir.parent, preexec_fn=self.preexec
        )
        if wait:
            waitForPort(self.port, process=self.process)
        return self

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self.process = None
        self.log.close()
        return code

    def expectExit(self, timeout=20):
        """Start a broker that must stop by itself (a failed start-up); return its exit status."""
        self.start(wait=False)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"the broker kept running ({' '.join(self.extraArgs)}); log:\n{self.logText()}")
        return self.stop()

    def restart(self, sig=signal.SIGTERM):
        self.stop(sig)
        return self.start()

    def logText(self):
        return self.logPath.read_text(errors="replace")


@pytest.fixture
def brokerFactory(tmp_path):
    """Make brokers with extra options: brokerFactory('--num-partitions', '3')."""
    brokers = []

    def make(*extraArgs, start=True):
        broker = BrokerProcess(tmp_path / f"data{len(brokers)}", extraArgs)
        broker.dataDir.mkdir()
        brokers.append(broker)
        return broker.start() if start else broker

    yield make
    for broker in brokers:
        broker.stop()


@pytest.fixture
def broker(brokerFactory):
    """A LevelDB broker with 4 partitions per auto-created topic."""
    return brokerFactory("--num-partitions", "4")


class ShimProcess:
    """One `twistd -n kafkaw-shim` process on a free port of 127.0.0.1."""

    def __init__(self, workDir, connect, *extraArgs):
        self.port = freePort()
        self.logPath = workDir / f"shim-{self.port}.log"
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        command = [
            sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
            "-n", "--pidfile=", "kafkaw-shim",
            "--listen", f"tcp:{self.port}:interface=127.0.0.1",
            "--connect", connect, *extraArgs,
        ]
        self.log = open(self.logPath, "ab")
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=workDir)
        waitForPort(self.port, process=self.process)

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()

    def logText(self):
        return self.logPath.read_text(errors="replace")


@pytest.fixture
def shimFactory(tmp_path):
    """Make `twistd kafkaw-shim` processes: shimFactory(broker.websocketURL, *extraArgs)."""
    shims = []

    def make(connect, *extraArgs):
        shim = ShimProcess(tmp_path, connect, *extraArgs)
        shims.append(shim)
        return shim

    yield make
    for shim in shims:
        shim.stop()


def kcat(*args, input=None, timeout=30):
    """Run Debian's kcat; returns its stdout (bytes)."""
    if shutil.which("kcat") is None:
        pytest.fail("kcat is not installed (apt-get install kcat)")
    result = subprocess.run(["kcat", *args], input=input, capture_output=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"kcat {args} failed ({result.returncode}): {result.stderr.decode(errors='replace')}")
    return result.stdout


def selfSignedCertificate(directory, name, dnsNames=("localhost",), ipAddresses=("127.0.0.1",)):
    """A self-signed CA certificate with these subject alternative names; (key path, cert path)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"kafkaw test {name}")])
    now = datetime.datetime.now(datetime.timezone.utc)
    names = [x509.DNSName(n) for n in dnsNames] + [x509.IPAddress(ipaddress.ip_address(a)) for a in ipAddresses]
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(key, hashes.SHA256())
    )
    keyPath, certPath = directory / f"{name}-key.pem", directory / f"{name}-cert.pem"
    keyPath.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    certPath.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return keyPath, certPath


# ---------------------------------------------------------------------------
# Helpers for the broker-core tests (test_core_*.py): raw v0 frames, waiting,
# and confluent-kafka produce/consume round trips.
# ---------------------------------------------------------------------------

import functools  # noqa: E402

from tests import frames  # noqa: E402
from tests.frames import (  # noqa: E402, F401 (for the integration tests)
    decodeFetchResponse,
    decodeListOffsetsResponse,
    decodeMetadataResponse,
    decodeProduceResponse,
    fetchBody,
    listOffsetsBody,
    metadataBody,
    produceBody,
)

RAW_CLIENT_ID = "kafkaw-raw"  # the client id of the hand-built requests
requestHeader = functools.partial(frames.requestHeader, clientId=RAW_CLIENT_ID)


def waitUntil(predicate, timeout=10.0, interval=0.02, what="condition"):
    """Poll C{predicate} until it returns something true; return that, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class RawClient:
    """A plain socket speaking hand-built Kafka 0.8 frames to a broker."""

    def __init__(self, broker, timeout=10.0):
        self.sock = socket.create_connection(("127.0.0.1", broker.port), timeout=timeout)
        self.localPort = self.sock.getsockname()[1]
        self._correlationId = 0
        self._buffer = b""

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def sendRaw(self, data):
        self.sock.sendall(data)

    def send(self, apiKey, body, apiVersion=0):
        """Send one framed request; return its correlation id."""
        self._correlationId += 1
        self.sock.sendall(frames.requestFrame(apiKey, self._correlationId, body, apiVersion, clientId=RAW_CLIENT_ID))
        return self._correlationId

    def _recvExactly(self, size):
        while len(self._buffer) < size:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError(f"connection closed by the broker with {len(self._buffer)} bytes pending")
            self._buffer += chunk
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def receive(self, correlationId):
        """Read one response frame; check its correlation id; return the body after it."""
        (size,) = struct.unpack(">i", self._recvExactly(4))
        frame = self._recvExactly(size)
        (got,) = struct.unpack(">i", frame[:4])
        assert got == correlationId, f"response correlation id {got}, expected {correlationId}"
        return frame[4:]

    def call(self, apiKey, body):
        return self.receive(self.send(apiKey, body))

    def produce(self, topics, acks=1, timeout=5000):
        return decodeProduceResponse(self.call(0, produceBody(acks, topics, timeout)))

    def fetch(self, topics, maxWait=0, minBytes=0):
        return decodeFetchResponse(self.call(1, fetchBody(topics, maxWait, minBytes)))

    def listOffsets(self, topics):
        return decodeListOffsetsResponse(self.call(2, listOffsetsBody(topics)))

    def metadata(self, topics=()):
        return decodeMetadataResponse(self.call(3, metadataBody(list(topics))))

    def latest(self, topic, partition):
        error, offsets = self.listOffsets({topic: {partition: (-1, 1)}})[topic][partition]
        assert error == 0, f"ListOffsets {topic}/{partition} error {error}"
        return offsets[0]

    def closedByBroker(self, timeout=5.0):
        """True once the broker closes the connection (recv returns b''), False if it stays open.

        A reset counts as a close too, but is reported by returning "reset".
        """
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return False
        except ConnectionResetError:
            return "reset"
        if data:
            raise AssertionError(f"expected the connection to close, got {len(data)} bytes: {data[:64]!r}")
        return True


# --- confluent-kafka round trips -------------------------------------------


def rdProduce(bootstrap, topic, messages, timeout=15.0, **conf):
    """Produce [(partition, key, value)] with confluent-kafka; return the delivery reports.

    Each report is (error or None, partition, offset, key, value), in delivery order.
    """
    from confluent_kafka import Producer

    producer = Producer(
        {
            **RDKAFKA_08,
            "bootstrap.servers": bootstrap,
            "acks": 1,
            "linger.ms": 5,
            "message.timeout.ms": int(timeout * 1000),
            **conf,
        }
    )
    reports = []

    def delivered(err, msg):
        reports.append((err, msg.partition(), msg.offset(), msg.key(), msg.value()))

    for partition, key, value in messages:
        while True:
            try:
                producer.produce(topic, value, key, partition=partition, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    left = producer.flush(timeout + 5)
    assert left == 0, f"{left} messages still undelivered after {timeout}s"
    return reports


def rdConsumer(bootstrap, **conf):
    from confluent_kafka import Consumer

    return Consumer(
        {
            **RDKAFKA_08,
            "bootstrap.servers": bootstrap,
            "group.id": "kafkaw-core-tests",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "fetch.wait.max.ms": 100,
            **conf,
        }
    )


def rdConsume(bootstrap, topic, expected, start=0, timeout=15.0, **conf):
    """Read C{expected} {partition: count} messages from offset C{start} with assign().

    Returns {partition: [(offset, key, value)]}; fails on a consumer error or at the deadline.
    """
    from confluent_kafka import TopicPartition

    consumer = rdConsumer(bootstrap, **conf)
    got = {partition: [] for partition in expected}
    try:
        consumer.assign([TopicPartition(topic, partition, start) for partition in expected])
        deadline = time.monotonic() + timeout
        while any(len(got[p]) < n for p, n in expected.items()):
            if time.monotonic() > deadline:
                counts = {p: len(m) for p, m in got.items()}
                raise AssertionError(f"consumed {counts}, expected {expected} within {timeout}s")
            for message in consumer.consume(1000, 0.2):
                if message.error() is not None:
                    raise AssertionError(f"consumer error: {message.error()}")
                got[message.partition()].append((message.offset(), message.key(), message.value()))
    finally:
        consumer.close()
    return got


# --- kafkajs (node) -----------------------------------------------------------


def kafkajs(*args, timeout=30):
    """Run tests/clients/node/kafkajs-client.js with C{args}; return the JSON of its last line.

    Skips without node. The first call installs kafkajs from the lock file
    (`npm ci`) when it is not there yet, so the suite needs no set-up step.
    """
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    if not (NODE_DIR / "node_modules" / "kafkajs").is_dir():
        if shutil.which("npm") is None:
            pytest.fail(f"kafkajs is not installed and npm is missing: install npm, or run `npm ci` in {NODE_DIR}")
        installed = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, capture_output=True, text=True, timeout=300)
        if installed.returncode != 0:
            pytest.fail(f"`npm ci` in {NODE_DIR} failed: {installed.stdout}{installed.stderr}")
    result = subprocess.run(["node", str(NODE_DIR / "kafkajs-client.js"), *args], capture_output=True, timeout=timeout, text=True)
    lines = result.stdout.strip().splitlines()
    assert result.returncode == 0 and lines, f"kafkajs failed ({result.returncode}): {result.stdout}{result.stderr}"
    return json.loads(lines[-1])


# --- raw requests of any version ----------------------------------------------


class Connection:
    """One TCP connection sending requests of any API and version, encoded with
    the broker's schema codec (kafkaw.protocol.schema); a context manager."""

    def __init__(self, bootstrap, timeout=10.0, sourceHost=None):
        host, port = bootstrap.split(":")
        # sourceHost (e.g. 127.0.0.2, still loopback) makes the broker see another client host.
        source = None if sourceHost is None else (sourceHost, 0)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout, source_address=source)
        self.correlationId = 0

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, apiKey, version, value):
        self.correlationId += 1
        self.sock.sendall(frame(schema.encodeRequest(apiKey, version, self.correlationId, "kafkaw-tests", value)))
        return self.correlationId

    def receiveFrame(self):
        size = struct.unpack(">i", self._exactly(4))[0]
        return self._exactly(size)

    def receive(self, apiKey, version):
        return schema.decodeResponse(apiKey, version, self.receiveFrame())[1]

    def call(self, apiKey, version, value):
        self.send(apiKey, version, value)
        return self.receive(apiKey, version)

    def _exactly(self, size):
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise ConnectionError("the broker closed the connection")
            data += chunk
        return data
