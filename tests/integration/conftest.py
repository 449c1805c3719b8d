"""Real brokers for integration tests: `twistd kafkaw` subprocesses on free ports of 127.0.0.1."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

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

    def __init__(self, dataDir, extraArgs=(), plugin="kafkaw"):
        self.dataDir = Path(dataDir)
        self.port = freePort()
        self.extraArgs = list(extraArgs)
        self.plugin = plugin
        self.process = None
        self.logPath = self.dataDir.parent / f"{self.dataDir.name}-broker.log"

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def command(self):
        return [
            sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
            "-n", "--pidfile=", self.plugin,
            "--listen", f"tcp:{self.port}:interface=127.0.0.1",
            "--data-dir", str(self.dataDir), *self.extraArgs,
        ]

    def start(self, wait=True):
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.log = open(self.logPath, "ab")
        self.process = subprocess.Popen(self.command(), stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=self.dataDir.parent)
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


def kcat(*args, input=None, timeout=30):
    """Run Debian's kcat; returns its stdout (bytes)."""
    if shutil.which("kcat") is None:
        pytest.fail("kcat is not installed (apt-get install kcat)")
    result = subprocess.run(["kcat", *args], input=input, capture_output=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"kcat {args} failed ({result.returncode}): {result.stderr.decode(errors='replace')}")
    return result.stdout
