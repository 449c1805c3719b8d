"""What SASL costs a connection's set-up: connect + authenticate + one Metadata,
without SASL (a --sasl-exempt endpoint of the same broker) and with PLAIN,
SCRAM-SHA-256 and SCRAM-SHA-512, one connection after another.

    python bench/saslcost.py [CONNECTIONS]

Prints, per way in, the median and p99 wall time of a set-up and the broker's
CPU time (user + system, all threads) per set-up. The client side is raw
sockets and scramp's client (its PBKDF2 is the client's share, in the wall
time, not in the broker's CPU). Then the same ways in with confluent-kafka:
a new Producer until its first Metadata answer. Compare rows of one run.
"""

import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scramp import ScramClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kafkaw.protocol import schema  # noqa: E402
from kafkaw.protocol.framing import frame  # noqa: E402

PASSWORD = "bench-password"


def freePort():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpuSeconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Connection:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.correlationId = 0

    def call(self, apiKey, version, value):
        self.correlationId += 1
        self.sock.sendall(frame(schema.encodeRequest(apiKey, version, self.correlationId, "bench", value)))
        size = struct.unpack(">i", self._exactly(4))[0]
        return schema.decodeResponse(apiKey, version, self._exactly(size))[1]

    def _exactly(self, size):
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data


def setUp(port, mechanism):
    connection = Connection(port)
    try:
        if mechanism == "PLAIN":
            connection.call(17, 1, {"mechanism": "PLAIN"})
            assert connection.call(36, 1, {"authBytes": f"\0bench\0{PASSWORD}".encode()}).errorCode == 0
        elif mechanism:
            scram = ScramClient([mechanism], "bench", PASSWORD)
            connection.call(17, 1, {"mechanism": mechanism})
            first = connection.call(36, 1, {"authBytes": scram.get_client_first().encode()})
            scram.set_server_first(first.authBytes.decode())
            final = connection.call(36, 1, {"authBytes": scram.get_client_final().encode()})
            assert final.errorCode == 0
            scram.set_server_final(final.authBytes.decode())
        assert connection.call(3, 1, {"topics": []}).brokers
    finally:
        connection.sock.close()


def main(count=300):
    with tempfile.TemporaryDirectory() as directory:
        dataDir = Path(directory) / "data"
        dataDir.mkdir()
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        subprocess.run(
            [sys.executable, "-m", "kafkaw.cli", "users", "add", "bench", "--data-dir", str(dataDir)],
            input=PASSWORD + "\n", text=True, check=True, env=env, capture_output=True,
        )
        saslPort, openPort = freePort(), freePort()
        exempt = f"tcp:{openPort}:interface=127.0.0.1"
        broker = subprocess.Popen(
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=", "kafkaw",
             "--data-dir", str(dataDir), "--no-websocket", "--sasl",
             "--listen", f"tcp:{saslPort}:interface=127.0.0.1", "--listen", exempt, "--sasl-exempt", exempt],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=directory,
        )
        try:
            for _ in range(200):
                try:
                    socket.create_connection(("127.0.0.1", saslPort), timeout=0.2).close()
                    break
                except OSError:
                    time.sleep(0.05)
            print(f"{count} connections each, one after another; connect + authenticate + Metadata v1")
            print("| way in | median ms | p99 ms | broker CPU ms per set-up |")
            print("|---|---:|---:|---:|")
            for name, port, mechanism in [
                ("no SASL", openPort, None), ("PLAIN", saslPort, "PLAIN"),
                ("SCRAM-SHA-256", saslPort, "SCRAM-SHA-256"), ("SCRAM-SHA-512", saslPort, "SCRAM-SHA-512"),
            ]:
                for _ in range(20):
                    setUp(port, mechanism)  # warm up
                times = []
                cpuBefore = cpuSeconds(broker.pid)
                for _ in range(count):
                    started = time.perf_counter()
                    setUp(port, mechanism)
                    times.append(time.perf_counter() - started)
                cpu = (cpuSeconds(broker.pid) - cpuBefore) / count
                times.sort()
                print(f"| {name} | {statistics.median(times) * 1000:.2f} | {times[int(len(times) * 0.99) - 1] * 1000:.2f} | {cpu * 1000:.2f} |")
            librdkafka(saslPort, openPort, max(count // 10, 10))
        finally:
            broker.terminate()
            broker.wait(20)


def librdkafka(saslPort, openPort, count):
    """The same with a real client: a new confluent-kafka Producer until its first Metadata answer."""
    from confluent_kafka import Producer

    print(f"\nconfluent-kafka: {count} new producers each, from creation to the first Metadata answer (list_topics)")
    print("| way in | median ms | max ms |")
    print("|---|---:|---:|")
    for name, port, mechanism in [
        ("no SASL", openPort, None), ("PLAIN", saslPort, "PLAIN"),
        ("SCRAM-SHA-256", saslPort, "SCRAM-SHA-256"), ("SCRAM-SHA-512", saslPort, "SCRAM-SHA-512"),
    ]:
        conf = {"bootstrap.servers": f"127.0.0.1:{port}"}
        if mechanism:
            conf.update({"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": mechanism,
                         "sasl.username": "bench", "sasl.password": PASSWORD})
        times = []
        for _ in range(count):
            started = time.perf_counter()
            Producer(conf).list_topics(timeout=10)
            times.append(time.perf_counter() - started)
        print(f"| {name} | {statistics.median(times) * 1000:.1f} | {max(times) * 1000:.1f} |")


if __name__ == "__main__":
    main(*map(int, sys.argv[1:]))
