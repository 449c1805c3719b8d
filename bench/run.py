"""kafkaw benchmark suite (issue 6): kafkaw on LevelDB against the Twisted floor.

    python bench/run.py [--quick | --full] [options]

In one run, on this machine, it starts the reference null broker
(bench/nullbroker.py: Twisted framing, no storage) and kafkaw on LevelDB (a
temporary data dir), each a subprocess on a free port of 127.0.0.1, drives the
same librdkafka client (confluent-kafka pinned to Kafka 0.8.0) against both and
prints a markdown table, also appended to bench/results.md:

- produce acks=1 and acks=0, consume from offset 0; 100 B and 10 KB messages;
  1 and 8 partitions (explicit partition i % P); msgs/s, MB/s of payload,
  the ratio kafkaw / floor (for consume, the floor is the null broker's
  produce acks=1 rate: it stores nothing, so it has nothing to fetch), and the
  broker process's CPU time per message (user+sys, all threads);
- single produce round trip p50/p99 (librdkafka produce + flush one at a time,
  and raw v0 frames on one socket);
- long-poll wake-up p50/p99: raw Fetch parked on an empty partition
  (max_wait 5 s, min_bytes 1), time from the Produce ack (and from the Produce
  send) to the Fetch answer;
- broker peak RSS (VmHWM) after 1 M and 10 M 100-byte messages in a partition
  (10 M skipped by --quick and --no-rss-10m);
- throughput through the WebSocket shim (`twistd kafkaw-shim`) next to direct
  TCP, when the plugin exists.

Message values are distinct random bytes by default (--payload x for b"x" *
size, which LevelDB's snappy compresses away and so flatters storage).
Absolute figures are noisy on shared machines: compare ratios within a run.
Runs are paired (floor, then kafkaw, back to back) and repeated; the table
shows medians. --tree DIR benchmarks another kafkaw tree (an A/B copy).

    python bench/run.py --load produce --bootstrap 127.0.0.1:9092 -n 1000000
drives load only, against a broker you started; bench/profile_broker.py profiles
kafkaw under such a load with py-spy.
"""

import argparse
import collections
import datetime
import os
import platform
import random
import selectors
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

BENCH = Path(__file__).resolve().parent
# The kafkaw tree under test (default: this checkout; --tree or $KAFKAW_TREE for another, e.g. an A/B copy).
ROOT = Path(os.environ.get("KAFKAW_TREE") or BENCH.parent).resolve()
RESULTS = BENCH / "results.md"
CLK_TCK = os.sysconf("SC_CLK_TCK")

RDKAFKA_08 = {
    "api.version.request": False,
    "broker.version.fallback": "0.8.0",
    "log_level": 3,  # no CONFWARN about the 0.8 settings
}

MODES = {
    # reps, messages for 100 B, messages for 10 KB, round-trip samples, wake-up samples, RSS steps
    "quick": dict(reps=2, n100=300_000, n10k=20_000, rtt=1000, wake=500, rss=[1_000_000]),
    "default": dict(reps=3, n100=1_000_000, n10k=50_000, rtt=2000, wake=2000, rss=[1_000_000, 10_000_000]),
    "full": dict(reps=5, n100=2_000_000, n10k=100_000, rtt=5000, wake=5000, rss=[1_000_000, 10_000_000]),
}


def log(*args):
    print(*args, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------


def freePort():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def twistdCommand(plugin, *args):
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=", plugin, *args]


def repoEnv():
    return dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))


class Process:
    """A broker (or shim) subprocess listening on 127.0.0.1:port."""

    def __init__(self, name, command, port, workDir, cwd=None):
        self.name = name
        self.port = port
        self.logPath = Path(workDir) / f"{name}.log"
        self._log = open(self.logPath, "wb")
        self.proc = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, env=repoEnv(), cwd=cwd or workDir
        )
        self.pid = self.proc.pid
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {self.proc.returncode}:\n{self.logPath.read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} does not listen on {port}")
                time.sleep(0.05)

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def cpu(self):
        """User + system CPU seconds of the process (all its threads)."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def status(self, field):
        """A /proc/PID/status field in kB (VmHWM, VmRSS)."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        return None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def startNull(workDir, partitions):
    port = freePort()
    return Process(
        f"null-p{partitions}", [sys.executable, str(BENCH / "nullbroker.py"), str(port), str(partitions)], port, workDir
    )


_options = None


def kafkawOptions():
    """The text of `twistd kafkaw --help` (options differ as kafkaw grows)."""
    global _options
    if _options is None:
        _options = subprocess.run(
            twistdCommand("kafkaw", "--help"), capture_output=True, text=True, env=repoEnv(), cwd=ROOT
        ).stdout
    return _options


def shimAvailable():
    out = subprocess.run(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "--help"],
        capture_output=True, text=True, env=repoEnv(), cwd=ROOT,
    ).stdout
    return "kafkaw-shim" in out


def startKafkaw(workDir, partitions, name=None, websocketPort=None, storage="leveldb"):
    options = kafkawOptions()
    port = freePort()
    name = name or f"kafkaw-p{partitions}"
    dataDir = Path(workDir) / f"{name}-data"
    shutil.rmtree(dataDir, ignore_errors=True)
    args = [
        "--listen", f"tcp:{port}:interface=127.0.0.1",
        "--data-dir", str(dataDir),
        "--num-partitions", str(partitions),
        "--storage", storage,
    ]
    if websocketPort is not None:
        args += ["--websocket", f"tcp:{websocketPort}:interface=127.0.0.1"]
    elif "--no-websocket" in options:
        args += ["--no-websocket"]
    elif "--websocket" in options:
        # Keep a default-on WebSocket listener off well-known ports.
        args += ["--websocket", f"tcp:{freePort()}:interface=127.0.0.1"]
    return Process(name, twistdCommand("kafkaw", *args), port, workDir)


# ---------------------------------------------------------------------------
# Raw Kafka 0.8 frames (independent of kafkaw's codec)
# ---------------------------------------------------------------------------


def _str(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack(">h", len(b)) + b


def request(apiKey, correlationId, body, clientId=b"kafkaw-bench"):
    header = struct.pack(">hhi", apiKey, 0, correlationId) + _str(clientId)
    return struct.pack(">i", len(header) + len(body)) + header + body


def messageSet(values):
    out = []
    for value in values:
        body = b"\x00\x00" + struct.pack(">i", -1) + struct.pack(">i", len(value)) + value
        message = struct.pack(">I", zlib.crc32(body)) + body
        out.append(struct.pack(">qi", 0, len(message)) + message)
    return b"".join(out)


def produceBody(acks, topic, partition, mset, timeout=10000):
    return (
        struct.pack(">hii", acks, timeout, 1) + _str(topic)
        + struct.pack(">iii", 1, partition, len(mset)) + mset
    )


def fetchBody(topic, partition, offset, maxBytes=1 << 20, maxWait=0, minBytes=0):
    return struct.pack(">iiii", -1, maxWait, minBytes, 1) + _str(topic) + struct.pack(">iiqi", 1, partition, offset, maxBytes)


def listOffsetsBody(topic, partitions, when=-1):
    return struct.pack(">ii", -1, 1) + _str(topic) + struct.pack(">i", len(partitions)) + b"".join(
        struct.pack(">iqi", p, when, 1) for p in partitions
    )


def metadataBody(topics):
    return struct.pack(">i", len(topics)) + b"".join(_str(t) for t in topics)


class RawConnection:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = bytearray()
        self.correlationId = 0

    def send(self, apiKey, body):
        self.correlationId += 1
        self.sock.sendall(request(apiKey, self.correlationId, body))
        return self.correlationId

    def frame(self):
        """A complete response frame from the buffer, or None."""
        if len(self.buffer) >= 4:
            (size,) = struct.unpack_from(">i", self.buffer)
            if len(self.buffer) >= 4 + size:
                body = bytes(self.buffer[4 : 4 + size])
                del self.buffer[: 4 + size]
                return body
        return None

    def fill(self):
        data = self.sock.recv(1 << 20)
        if not data:
            raise ConnectionError("broker closed the connection")
        self.buffer += data

    def receive(self):
        while True:
            body = self.frame()
            if body is not None:
                return body
            self.fill()

    def call(self, apiKey, body):
        self.send(apiKey, body)
        return self.receive()

    def close(self):
        self.sock.close()


def createTopic(port, topic):
    """Metadata for the topic (kafkaw auto-creates it); wait until it has partitions."""
    c = RawConnection(port)
    try:
        for _ in range(100):
            body = c.call(3, metadataBody([topic]))
            # skip brokers
            pos = 4
            (nb,) = struct.unpack_from(">i", body, pos); pos += 4
            for _ in range(nb):
                pos += 4
                (hl,) = struct.unpack_from(">h", body, pos); pos += 2 + hl + 4
            pos += 4  # topic count
            (error,) = struct.unpack_from(">h", body, pos); pos += 2
            (tl,) = struct.unpack_from(">h", body, pos); pos += 2 + tl
            (np_,) = struct.unpack_from(">i", body, pos)
            if error == 0 and np_ > 0:
                return np_
            time.sleep(0.05)
    finally:
        c.close()
    raise RuntimeError(f"topic {topic} not created")


def logEnds(conn, topic, partitions):
    """{partition: log end offset} by ListOffsets(latest)."""
    body = conn.call(2, listOffsetsBody(topic, partitions))
    pos = 4 + 4
    (tl,) = struct.unpack_from(">h", body, pos); pos += 2 + tl
    (n,) = struct.unpack_from(">i", body, pos); pos += 4
    ends = {}
    for _ in range(n):
        p, err, count = struct.unpack_from(">ihi", body, pos); pos += 10
        offsets = struct.unpack_from(f">{count}q", body, pos); pos += 8 * count
        ends[p] = offsets[0] if (err == 0 and offsets) else -1
    return ends


def fetchMessageSetSize(body):
    """Size of the (single) message set in a one-partition Fetch response, and its error."""
    pos = 4 + 4
    (tl,) = struct.unpack_from(">h", body, pos); pos += 2 + tl
    pos += 4
    _, err, _, size = struct.unpack_from(">ihqi", body, pos)
    return err, size


# ---------------------------------------------------------------------------
# librdkafka drivers
# ---------------------------------------------------------------------------


PAYLOAD = "random"


def payloads(size):
    """Message values: with --payload random (default), a pool of distinct random values
    (> 64 KB in all, so LevelDB's snappy finds nothing to compress); with --payload x, b"x" * size."""
    if PAYLOAD == "x":
        return [b"x" * size]
    count = 1
    while count * size < (1 << 17) or count < 64:
        count *= 2
    rng = random.Random(size)
    return [rng.randbytes(size) for _ in range(count)]


def producer(bootstrap, acks, **extra):
    from confluent_kafka import Producer

    config = {
        **RDKAFKA_08,
        "bootstrap.servers": bootstrap,
        "acks": str(acks),
        "linger.ms": 5,
        "batch.num.messages": 10000,
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 2_097_151,
        "compression.codec": "none",
    }
    config.update(extra)
    return Producer(config)


def socketBacklog(port):
    """Bytes queued in the kernel on TCP connections to 127.0.0.1:port (client send + broker receive queues)."""
    total = 0
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(name).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, state, queues = fields[1], fields[2], fields[3], fields[4]
            if state != "01":
                continue
            if int(local.rsplit(":", 1)[1], 16) == port or int(remote.rsplit(":", 1)[1], 16) == port:
                tx, rx = queues.split(":")
                total += int(tx, 16) + int(rx, 16)
    return total


def waitForDrain(port, timeout=60):
    deadline = time.monotonic() + timeout
    while socketBacklog(port) and time.monotonic() < deadline:
        time.sleep(0.001)


def produceLoad(bootstrap, topic, partitions, n, size, acks, broker=None, waitForLogEnd=None, drain=False):
    """Warm up (one message per partition), then produce n messages of `size` bytes.

    Returns (seconds, broker CPU seconds or None). With waitForLogEnd=port (kafkaw,
    acks=0) the clock stops when ListOffsets shows every message stored, not when
    librdkafka has written them to the socket; with drain=True (null broker,
    acks=0) when the broker has read every byte sent (kernel queues empty).
    """
    failed = collections.Counter()

    def report(err, msg):
        failed[str(err)] += 1

    # Only failed deliveries are reported (cheap), and any fails the run.
    p = producer(bootstrap, acks, **{"delivery.report.only.error": True, "on_delivery": report})
    pool = payloads(size)
    mask = len(pool) - 1
    payload = pool[0]
    for part in range(partitions):
        p.produce(topic, payload, partition=part)
    if p.flush(30):
        raise RuntimeError(f"warm-up produce to {bootstrap} failed")
    produce, poll = p.produce, p.poll
    cpu0 = broker.cpu() if broker else None
    t0 = time.perf_counter()
    for i in range(n):
        payload = pool[i & mask]
        try:
            produce(topic, payload, partition=i % partitions)
        except BufferError:
            while True:
                poll(0.005)
                try:
                    produce(topic, payload, partition=i % partitions)
                    break
                except BufferError:
                    pass
        if not i & 8191:
            poll(0)
    left = p.flush(300)
    if left:
        raise RuntimeError(f"{left} messages undelivered to {bootstrap}")
    if failed:
        raise RuntimeError(f"failed deliveries to {bootstrap}: {dict(failed)}")
    if waitForLogEnd is not None:
        waitForStored(waitForLogEnd, topic, partitions, n + partitions)
    if drain:
        waitForDrain(int(bootstrap.rsplit(":", 1)[1]))
    dt = time.perf_counter() - t0
    cpu = broker.cpu() - cpu0 if broker else None
    return dt, cpu


def waitForStored(port, topic, partitions, expected, timeout=300):
    conn = RawConnection(port)
    try:
        deadline = time.monotonic() + timeout
        last, lastChange = -1, time.monotonic()
        while True:
            total = sum(logEnds(conn, topic, list(range(partitions))).values())
            if total >= expected:
                return total
            now = time.monotonic()
            if total != last:
                last, lastChange = total, now
            elif now - lastChange > 15 or now > deadline:
                raise RuntimeError(f"{topic}: {total} of {expected} messages stored")
            time.sleep(0.003)
    finally:
        conn.close()


def consumeLoad(bootstrap, topic, partitions, total, broker=None, timeout=300):
    """Consume `total` messages from offset 0 of each partition.

    The consumer first connects (assigned at the log end, ListOffsets answered);
    the clock runs from the assign() at offset 0 to the last message.
    Returns (seconds, messages, broker CPU seconds).
    """
    from confluent_kafka import OFFSET_END, Consumer, TopicPartition

    c = Consumer({
        **RDKAFKA_08,
        "bootstrap.servers": bootstrap,
        "group.id": "kafkaw-bench",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "fetch.wait.max.ms": 100,
        "fetch.message.max.bytes": 1 << 20,
    })
    got = errors = 0
    try:
        c.assign([TopicPartition(topic, part, OFFSET_END) for part in range(partitions)])
        c.get_watermark_offsets(TopicPartition(topic, 0), timeout=30)
        c.consume(1, 0.05)
        cpu0 = broker.cpu() if broker else None
        t0 = time.perf_counter()
        c.assign([TopicPartition(topic, part, 0) for part in range(partitions)])
        deadline = time.monotonic() + timeout
        consume = c.consume
        while got < total and time.monotonic() < deadline:
            # never ask for more than is left: consume() waits for the count or the timeout
            batch = consume(min(10000, total - got), 0.5)
            good = sum(1 for m in batch if m.error() is None)
            errors += len(batch) - good
            got += good
        dt = time.perf_counter() - t0
        cpu = broker.cpu() - cpu0 if broker else None
    finally:
        c.close()
    if got < total:
        raise RuntimeError(f"consumed {got} of {total} from {bootstrap} ({errors} errors)")
    return dt, got, cpu


# ---------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def pct(values, q):
    values = sorted(values)
    if not values:
        return float("nan")
    k = min(len(values) - 1, max(0, int(round(q / 100 * (len(values) - 1)))))
    return values[k]


class Row:
    def __init__(self, what, size, partitions, floorLabel=None):
        self.what, self.size, self.partitions = what, size, partitions
        self.floor, self.kafkaw, self.ratios = [], [], []  # rates (msg/s)
        self.floorCpu, self.kafkawCpu = [], []  # µs per message
        self.floorLabel = floorLabel

    def add(self, floorRate, kafkawRate, floorCpu, kafkawCpu):
        self.floor.append(floorRate)
        self.kafkaw.append(kafkawRate)
        self.ratios.append(kafkawRate / floorRate)
        self.floorCpu.append(floorCpu)
        self.kafkawCpu.append(kafkawCpu)


def throughput(work, mode, partitionCounts, sizes, log_=log):
    rows = []
    for partitions in partitionCounts:
        null = startNull(work, partitions)
        kafkaw = startKafkaw(work, partitions)
        try:
            for size in sizes:
                n = mode["n100"] if size <= 100 else mode["n10k"]
                r1 = Row("produce acks=1", size, partitions)
                r0 = Row("produce acks=0", size, partitions)
                rc = Row("consume from 0", size, partitions, floorLabel="null produce acks=1")
                for rep in range(mode["reps"]):
                    tag = f"s{size}-p{partitions}-r{rep}"
                    results = {}
                    for acks in (1, 0):
                        for who, proc in (("null", null), ("kafkaw", kafkaw)):
                            topic = f"bench-{tag}-a{acks}"
                            wait = kafkaw.port if (who == "kafkaw" and acks == 0) else None
                            drain = who == "null" and acks == 0
                            dt, cpu = produceLoad(proc.bootstrap, topic, partitions, n, size, acks, proc, wait, drain)
                            if who == "kafkaw":
                                stored = waitForStored(kafkaw.port, topic, partitions, n + partitions)
                                if stored != n + partitions:
                                    raise RuntimeError(f"{topic}: stored {stored}, produced {n + partitions}")
                            results[who, acks] = (n / dt, cpu * 1e6 / n)
                            log_(f"  {who:6} produce acks={acks} {size:>5} B x{partitions}p: {n / dt:>10,.0f} msg/s  "
                                 f"{n * size / dt / 1e6:7.1f} MB/s  broker CPU {cpu * 1e6 / n:6.2f} µs/msg")
                    dt, timed, cpu = consumeLoad(kafkaw.bootstrap, f"bench-{tag}-a1", partitions, n + partitions, kafkaw)
                    results["kafkaw", "consume"] = (timed / dt, cpu * 1e6 / timed)
                    log_(f"  kafkaw consume         {size:>5} B x{partitions}p: {timed / dt:>10,.0f} msg/s  "
                         f"{timed * size / dt / 1e6:7.1f} MB/s  broker CPU {cpu * 1e6 / timed:6.2f} µs/msg")
                    for row, acks in ((r1, 1), (r0, 0)):
                        row.add(results["null", acks][0], results["kafkaw", acks][0], results["null", acks][1], results["kafkaw", acks][1])
                    rc.add(results["null", 1][0], results["kafkaw", "consume"][0], None, results["kafkaw", "consume"][1])
                rows += [r1, r0, rc]
        finally:
            null.stop()
            kafkaw.stop()
    return rows


def rdkafkaRoundTrips(proc, topic, samples):
    """librdkafka: produce one message and flush, `samples` times; seconds each."""
    p = producer(proc.bootstrap, 1, **{"linger.ms": 0, "batch.num.messages": 1})
    payload = b"x" * 100
    p.produce(topic, payload, partition=0)
    p.flush(30)
    times = []
    for _ in range(samples):
        t0 = time.perf_counter()
        p.produce(topic, payload, partition=0)
        p.flush(10)
        times.append(time.perf_counter() - t0)
    return times


def rawRoundTrips(proc, topic, samples):
    """Raw v0 Produce acks=1 of one 100-byte message, one at a time on one socket."""
    c = RawConnection(proc.port)
    body = produceBody(1, topic, 0, messageSet([b"x" * 100]))
    c.call(0, body)
    times = []
    for _ in range(samples):
        t0 = time.perf_counter()
        c.call(0, body)
        times.append(time.perf_counter() - t0)
    c.close()
    return times


def wakeUps(proc, topic, samples, park=0.005):
    """A raw Fetch parked at the log end of an empty partition, then a raw Produce.

    Returns (ack→fetch answer, produce sent→fetch answer, produce sent→ack) in
    seconds per sample, and how many fetches were answered before the produce.
    """
    fetchConn, produceConn = RawConnection(proc.port), RawConnection(proc.port)
    mset = messageSet([b"w" * 100])
    offset = logEnds(produceConn, topic, [0])[0]
    sel = selectors.DefaultSelector()
    sel.register(fetchConn.sock, selectors.EVENT_READ, fetchConn)
    sel.register(produceConn.sock, selectors.EVENT_READ, produceConn)
    afterAck, afterSend, ack = [], [], []
    early = 0
    for _ in range(samples):
        fetchConn.send(1, fetchBody(topic, 0, offset, maxWait=5000, minBytes=1))
        time.sleep(park)
        tSend = time.perf_counter()
        produceConn.send(0, produceBody(1, topic, 0, mset))
        tAck = tFetch = None
        fetchBody_ = None
        while tAck is None or tFetch is None:
            for key, _ in sel.select(10):
                conn = key.data
                conn.fill()
                now = time.perf_counter()
                body = conn.frame()
                if body is None:
                    continue
                if conn is produceConn:
                    tAck = now
                else:
                    tFetch, fetchBody_ = now, body
        err, size = fetchMessageSetSize(fetchBody_)
        if err or size == 0:
            early += 1
        afterAck.append(tFetch - tAck)
        afterSend.append(tFetch - tSend)
        ack.append(tAck - tSend)
        offset += 1
    fetchConn.close()
    produceConn.close()
    return afterAck, afterSend, ack, early


def latency(work, mode):
    lines = []
    null = startNull(work, 1)
    kafkaw = startKafkaw(work, 1, name="kafkaw-latency")
    try:
        res = {}
        # librdkafka first, while kafkaw has one topic: librdkafka 2.x fails to parse some
        # all-topics Metadata answers (tmpabuf memory shortage), depending on topic name lengths.
        for who, proc in (("null", null), ("kafkaw", kafkaw)):
            res[who, "rd"] = rdkafkaRoundTrips(proc, "lat-rtt", mode["rtt"])
        createTopic(kafkaw.port, "lat-raw")
        createTopic(kafkaw.port, "lat-wake")
        for who, proc in (("null", null), ("kafkaw", kafkaw)):
            res[who, "raw"] = rawRoundTrips(proc, "lat-raw", mode["rtt"])
        ms = lambda v: f"{v * 1e3:.3f}"
        for kind, label in (("rd", "librdkafka produce+flush"), ("raw", "raw v0 Produce")):
            f, k = res["null", kind], res["kafkaw", kind]
            lines.append(
                f"| produce round trip, acks=1, 100 B ({label}, n={len(k)}) | {ms(pct(f, 50))} / {ms(pct(f, 99))} "
                f"| {ms(pct(k, 50))} / {ms(pct(k, 99))} |"
            )
            log(lines[-1])
        afterAck, afterSend, ack, early = wakeUps(kafkaw, "lat-wake", mode["wake"])
        note = f"; {early} answered without data" if early else ""
        lines.append(
            f"| parked Fetch wake-up: Produce ack → Fetch answer (raw, n={len(afterAck)}{note}) | n/a (answers at once) "
            f"| {ms(pct(afterAck, 50))} / {ms(pct(afterAck, 99))} |"
        )
        lines.append(
            f"| parked Fetch wake-up: Produce sent → Fetch answer (Produce ack: {ms(pct(ack, 50))} / {ms(pct(ack, 99))}) | n/a "
            f"| {ms(pct(afterSend, 50))} / {ms(pct(afterSend, 99))} |"
        )
        log(lines[-2]); log(lines[-1])
        wake99 = pct(afterAck, 99)
    finally:
        null.stop()
        kafkaw.stop()
    return lines, wake99


def memory(work, steps):
    """Peak RSS of a fresh kafkaw after each step's count of 100-byte messages in one partition."""
    kafkaw = startKafkaw(work, 1, name="kafkaw-rss")
    out = [("start", kafkaw.status("VmHWM"), kafkaw.status("VmRSS"), 0.0)]
    done = 0
    try:
        topic = "rss"
        for target in steps:
            t0 = time.perf_counter()
            # produceLoad adds one warm-up message per call: count it.
            n = target - done - 1
            produceLoad(kafkaw.bootstrap, topic, 1, n, 100, 1, kafkaw)
            done = waitForStored(kafkaw.port, topic, 1, target)
            dt = time.perf_counter() - t0
            out.append((f"{target:,}", kafkaw.status("VmHWM"), kafkaw.status("VmRSS"), dt))
            log(f"  RSS after {target:,} messages: VmHWM {out[-1][1]:,} kB, VmRSS {out[-1][2]:,} kB ({dt:.1f} s)")
        du = sum(f.stat().st_size for f in (Path(work) / "kafkaw-rss-data").rglob("*") if f.is_file())
    finally:
        kafkaw.stop()
    return out, du


def shim(work, mode):
    """produce acks=1 and consume, 100 B, 1 partition: direct TCP vs through the shim."""
    if "--websocket" not in kafkawOptions():
        return None, "kafkaw has no --websocket option yet"
    if not shimAvailable():
        return None, "no `twistd kafkaw-shim` plugin yet"
    wsPort = freePort()
    kafkaw = startKafkaw(work, 1, name="kafkaw-ws", websocketPort=wsPort)
    shimPort = freePort()
    shimProc = None
    try:
        shimProc = Process(
            "shim",
            twistdCommand("kafkaw-shim", "--listen", f"tcp:{shimPort}:interface=127.0.0.1",
                          "--connect", f"ws://127.0.0.1:{wsPort}/"),
            shimPort, work,
        )
        n = mode["n100"]
        rows = []
        prod = {"tcp": [], "shim": []}
        cons = {"tcp": [], "shim": []}
        for rep in range(mode["reps"]):
            for how, bootstrap in (("tcp", kafkaw.bootstrap), ("shim", shimProc.bootstrap)):
                topic = f"ws-{how}-{rep}"
                dt, _ = produceLoad(bootstrap, topic, 1, n, 100, 1)
                prod[how].append(n / dt)
                dt, timed, _ = consumeLoad(bootstrap, topic, 1, n + 1)
                cons[how].append(timed / dt)
                log(f"  {how:4} produce {prod[how][-1]:,.0f} msg/s, consume {cons[how][-1]:,.0f} msg/s")
        for what, d in (("produce acks=1", prod), ("consume from 0", cons)):
            t, s = med(d["tcp"]), med(d["shim"])
            rows.append(f"| {what}, 100 B, 1 partition | {t:,.0f} | {t * 100 / 1e6:.1f} | {s:,.0f} | {s * 100 / 1e6:.1f} | {s / t:.2f} |")
        return rows, None
    except Exception as e:  # the shim is another helper's work in progress
        return None, f"shim run failed: {e!r}"[:300]
    finally:
        if shimProc is not None:
            shimProc.stop()
        kafkaw.stop()


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------


def gitRevision():
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "kafkaw"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
        return (rev or "?") + (" + uncommitted changes in kafkaw/" if dirty else "")
    except OSError:
        return "?"


def fmtRate(v):
    return f"{v:,.0f}" if v is not None else "—"


def report(args, modeName, mode, rows, latencyLines, wake99, rss, du, shimRows, shimNote, started, elapsed, loads):
    out = []
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out.append(f"## {now} — `{' '.join(['python bench/run.py'] + sys.argv[1:])}`")
    out.append("")
    out.append(
        f"kafkaw {gitRevision()}{'' if ROOT == BENCH.parent else f' (tree {ROOT})'}; Python {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"load average {loads[0]} at start, {loads[1]} at end; {elapsed / 60:.1f} min. "
        f"Mode {modeName}: {mode['reps']} paired runs per row (medians shown), "
        f"{mode['n100']:,} × 100 B and {mode['n10k']:,} × 10 KB messages per run; "
        f"payload {'distinct random values' if PAYLOAD == 'random' else 'x-filled'}."
    )
    out.append("")
    if rows:
        out.append("| workload | size | parts | floor msg/s | floor MB/s | kafkaw msg/s | kafkaw MB/s | kafkaw / floor | broker CPU µs/msg floor / kafkaw |")
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            f, k, ratio = med(r.floor), med(r.kafkaw), med(r.ratios)
            label = r.what + (" ¹" if r.floorLabel else "")
            fc, kc = med(r.floorCpu), med(r.kafkawCpu)
            cpu = f"{fc:.2f} / {kc:.2f}" if fc is not None else f"— / {kc:.2f}"
            size = "100 B" if r.size <= 100 else f"{r.size // 1024} KB"
            out.append(
                f"| {label} | {size} | {r.partitions} | {fmtRate(f)} | {f * r.size / 1e6:.1f} | {fmtRate(k)} | "
                f"{k * r.size / 1e6:.1f} | **{ratio:.2f}** | {cpu} |"
            )
        out.append("")
        out.append(
            "¹ The null broker stores nothing, so it has nothing to fetch: the floor for consume is its "
            "produce acks=1 rate for the same size and partitions. MB/s counts payload bytes. "
            "kafkaw acks=0 is timed until ListOffsets shows every message stored; the null broker's "
            "acks=0 until the kernel's socket queues to it are empty (it has read every byte). Broker CPU is user+system time of the "
            "broker process (all threads, LevelDB's compaction thread included) over the timed interval, per "
            "message; runs short enough to finish before LevelDB's compaction catches up (--quick) understate it."
        )
        out.append("")
    if latencyLines:
        out.append("| latency, p50 / p99 in ms | floor | kafkaw |")
        out.append("|---|---:|---:|")
        out.extend(latencyLines)
        out.append("")
    if rss:
        out.append("| kafkaw (LevelDB), 100 B messages in 1 partition | VmHWM (peak RSS) | VmRSS | time to produce |")
        out.append("|---|---:|---:|---:|")
        for label, hwm, rss_, dt in rss:
            out.append(f"| {'after start' if label == 'start' else 'after ' + label + ' messages'} | {hwm / 1024:.1f} MB | {rss_ / 1024:.1f} MB | {dt:.1f} s |")
        out.append("")
        out.append(f"Data directory after the last step: {du / 1e6:.0f} MB.")
        out.append("")
    if shimRows:
        out.append("| through the WebSocket shim vs TCP | TCP msg/s | TCP MB/s | shim msg/s | shim MB/s | shim / TCP |")
        out.append("|---|---:|---:|---:|---:|---:|")
        out.extend(shimRows)
        out.append("")
        out.append("Same kafkaw process (LevelDB) for both: librdkafka → TCP, and librdkafka → `twistd kafkaw-shim` → WebSocket → kafkaw.")
        out.append("")
    elif shimNote is not None:
        out.append(f"WebSocket shim: not measured ({shimNote}).")
        out.append("")
    # Targets
    targets = []

    def find(what, size, parts):
        for r in rows or []:
            if r.what.startswith(what) and r.size == size and r.partitions == parts:
                return med(r.ratios)
        return None

    for label, what in (("produce 100 B acks=1, 1 partition", "produce acks=1"),
                        ("produce 100 B acks=0, 1 partition", "produce acks=0"),
                        ("consume 100 B, 1 partition (vs floor produce)", "consume")):
        ratio = find(what, 100, 1)
        if ratio is not None:
            targets.append(f"- {label}: {ratio:.2f} × floor (target ≥ 0.6): **{'met' if ratio >= 0.6 else 'NOT met'}**")
    if rss and len(rss) >= 3:
        first = next(h for label, h, _, _ in rss if label == "1,000,000")
        last = rss[-1][1]
        targets.append(f"- RSS after {rss[-1][0]} / after 1,000,000: {last / first:.2f} (target ≤ 1.5): **{'met' if last <= 1.5 * first else 'NOT met'}**")
    elif rss:
        targets.append("- RSS 10 M vs 1 M: not measured in this run (10 M step skipped; drop `--no-rss-10m`, or add `--rss-10m` to `--quick`)")
    if wake99 is not None:
        targets.append(f"- parked Fetch answered {wake99 * 1e3:.2f} ms (p99) after the Produce ack (target ≤ 5 ms): **{'met' if wake99 <= 0.005 else 'NOT met'}**")
    if targets:
        out.append("Targets (issue 6):")
        out.append("")
        out.extend(targets)
        out.append("")
    return "\n".join(out) + "\n"


def loadAverage():
    try:
        return open("/proc/loadavg").read().split()[0]
    except OSError:
        return "?"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="smaller runs, 2 per row, RSS to 1 M only (~1-2 min)")
    g.add_argument("--full", action="store_true", help="bigger runs, 5 per row (~15 min)")
    ap.add_argument("--reps", type=int, help="paired runs per row")
    ap.add_argument("--n100", type=int, help="messages per run at 100 B")
    ap.add_argument("--n10k", type=int, help="messages per run at 10 KB")
    ap.add_argument("--rss-10m", action="store_true", help="also measure RSS after 10 M messages (default except in --quick)")
    ap.add_argument("--no-rss-10m", action="store_true", help="stop the RSS measurement at 1 M messages")
    ap.add_argument("--partitions", default="1,8", help="partition counts (default 1,8)")
    ap.add_argument("--sizes", default="100,10240", help="message sizes in bytes (default 100,10240)")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: throughput,latency,rss,shim")
    ap.add_argument("--payload", choices=["random", "x"], default="random",
                    help="message values: distinct random bytes (default) or b'x' * size (compresses away in LevelDB)")
    ap.add_argument("--no-write", action="store_true", help="do not append to bench/results.md")
    ap.add_argument("--tree", help="kafkaw source tree to benchmark (default: this checkout)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (broker logs, data)")
    # load-only mode, for profiling a broker you started
    ap.add_argument("--load", choices=["produce", "consume"], help="only drive load against --bootstrap")
    ap.add_argument("--bootstrap", default="127.0.0.1:9092", help="with --load: the broker")
    # (librdkafka 2.x cannot parse the Metadata of a 1-partition topic with a 1-character name)
    ap.add_argument("--topic", default="bench-load")
    ap.add_argument("-n", type=int, default=1_000_000, help="with --load: messages")
    ap.add_argument("--size", type=int, default=100, help="with --load: bytes per message")
    ap.add_argument("--acks", type=int, default=1, help="with --load produce")
    ap.add_argument("--load-partitions", type=int, default=1, help="with --load: partitions to spread over")
    args = ap.parse_args()
    global PAYLOAD, ROOT
    PAYLOAD = args.payload
    if args.tree:
        ROOT = Path(args.tree).resolve()

    if args.load:
        if args.load == "produce":
            dt, _ = produceLoad(args.bootstrap, args.topic, args.load_partitions, args.n, args.size, args.acks)
            print(f"produce: {args.n / dt:,.0f} msg/s ({dt:.2f} s)")
        else:
            dt, timed, _ = consumeLoad(args.bootstrap, args.topic, args.load_partitions, args.n)
            print(f"consume: {timed / dt:,.0f} msg/s ({dt:.2f} s)")
        return

    modeName = "quick" if args.quick else "full" if args.full else "default"
    mode = dict(MODES[modeName])
    for key in ("reps", "n100", "n10k"):
        if getattr(args, key):
            mode[key] = getattr(args, key)
    if args.rss_10m and 10_000_000 not in mode["rss"]:
        mode["rss"] = mode["rss"] + [10_000_000]
    if args.no_rss_10m:
        mode["rss"] = [1_000_000]
    skip = set(filter(None, args.skip.split(",")))
    partitionCounts = [int(x) for x in args.partitions.split(",")]
    sizes = [int(x) for x in args.sizes.split(",")]

    work = tempfile.mkdtemp(prefix="kafkaw-bench-")
    started = time.perf_counter()
    loads = [loadAverage(), None]
    rows = latencyLines = rss = shimRows = shimNote = None
    wake99 = None
    du = 0
    try:
        if "throughput" not in skip:
            log("== throughput (floor vs kafkaw)")
            rows = throughput(work, mode, partitionCounts, sizes)
        if "latency" not in skip:
            log("== latency")
            latencyLines, wake99 = latency(work, mode)
        if "rss" not in skip:
            log("== peak RSS")
            rss, du = memory(work, mode["rss"])
        if "shim" not in skip:
            log("== WebSocket shim")
            shimRows, shimNote = shim(work, mode)
            if shimNote:
                log(f"  skipped: {shimNote}")
    finally:
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    loads[1] = loadAverage()
    text = report(args, modeName, mode, rows, latencyLines, wake99, rss, du, shimRows, shimNote,
                  started, time.perf_counter() - started, loads)
    print(text)
    if not args.no_write:
        new = not RESULTS.exists()
        with open(RESULTS, "a") as f:
            if new:
                f.write("# kafkaw benchmark results\n\nAppended by `python bench/run.py` (see README.md, Benchmarks). "
                        "Compare ratios within a run; absolute figures drift on shared machines.\n\n")
            f.write(text + "\n")


if __name__ == "__main__":
    main()
