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
  TCP, 100 B and 10 KB, at least 3 paired runs, when the plugin exists, with
  the broker's and the shim's CPU per message; and through a plain Twisted TCP
  relay (bench/tcprelay.py), the floor for one more Python process on the path.

The rows above pin librdkafka to Kafka 0.8.0 (v0 requests, magic-0 message
sets). For Kafka 2.3.0's protocol, in the same run:

- modern (`--only modern`): librdkafka with its default settings (ApiVersions,
  then Produce v7 with v2 record batches, Fetch v11) against
  `nullbroker.py --modern` (acks v2 batches unopened: the floor for a broker
  that stores them) and kafkaw on LevelDB: produce acks=1 100 B and 10 KB and
  consume 100 B from 0 (vs the floor's produce rate), 1 partition, ratios and
  broker CPU µs per message, against the targets (produce 100 B >= 0.9 x the
  floor at <= 0.35 µs CPU per message; consume >= 1 x; 10 KB produce >= 0.6 x);
  its consumers use queued.min.messages 1,000,000 (see MODERN_CONSUMER);
- downconvert: that 100 B data (v2 batches) consumed again by librdkafka
  pinned to 0.8.0 (Fetch v0: kafkaw converts each batch to magic-0 messages),
  msgs/s and broker CPU µs per message next to the Fetch v11 consume;
- metadata: kafkaw with --storage memory (--metadata-storage to change),
  10,000 topics made by raw CreateTopics v3 requests of 1,000, then raw
  Metadata v8 requests naming 1,000 of them back to back, p50/p99, while raw
  Produce v7 round trips run on another connection (p50/p99/max); targets
  Metadata p99 < 100 ms, produce max < 50 ms. Raw requests use kafkaw's
  kafkaw.protocol.schema codec.

Consumer groups (`--only groups`), kafkaw on LevelDB started with
--group-initial-rebalance-delay-ms 0 (Kafka's default 3000 would hold every
new group's first join 3 s), librdkafka with its default settings:

- group consume: `subscribe()` with a new group.id (auto.offset.reset
  earliest) next to `assign()` at offset 0, the same 100 B data on 1 and 4
  partitions, alternating in order, both with queued.min.messages 1,000,000 as
  the modern rows; timed from the assignment to the last message; target
  subscribe >= 0.9 x assign;
- rebalance: two members consuming a 6-partition topic being written, a third
  subscribes; time from its subscribe() to every member having consumed from
  its new assignment; target < heartbeat.interval.ms (3000) + 500 ms;
- synchronous commits/s: `commit(asynchronous=False)` of one partition in a
  loop (no target).

The request path (issue 14), raw requests from a load generator of its own
(rawLoad: 2 processes, non-blocking sockets and a selector each, so that 900
connections do not make the client the limit; the null broker's row shows it):

- small: many small producers, 50, 500 and 900 connections (--small-connections)
  each with one Produce v0 of 10 × 100 B in flight, the null broker (8
  partitions) and kafkaw on LevelDB (8 partitions) in the same run: msg/s, broker
  CPU per request, p50/p99 latency, the longest wait of any request;
  targets >= 0.5 x the null broker at <= 75 µs per request, p99 <= 3 x, no wait > 1 s;
- wsraw: one connection, Produce v0 of 100 × 100 B, 1 and 10 in flight,
  over raw TCP and raw WebSocket (the same bytes, one binary message each) to
  the same kafkaw; target WebSocket >= 0.9 x TCP.

ACLs (`--only acls`): librdkafka with its defaults producing 100 B acks=1 to one
partition of kafkaw on LevelDB without and with `--acls` (300 ACLs: the
producer's Write through a prefixed ACL among literal and prefixed ones of
other users), two brokers, runs alternating which goes first; ratio with /
without (target >= 0.95) and broker CPU per message; and, in this process,
the cost of one `AclAuthorizer.authorize()` call (a remembered decision, and
one decided afresh over the same ACLs), which the shared machine's noise
does not blur.

A cluster on PostgreSQL (`--only postgresql`, docs/cluster.md): librdkafka
with its default settings produces 100 B messages (acks=all) to a 6-partition
topic, bootstrapped at broker 1, then consumes them from offset 0, against one
broker on LevelDB and 1, 2 and 3 brokers sharing one PostgreSQL (the database
from $KAFKAW_TEST_POSTGRESQL_DSN or .ci/postgresql's, a schema of its own);
msgs/s, the brokers' CPU per message, and the PostgreSQL server's share of
the CPU used (every process named postgres on the machine, so it counts any
other load of that server too). Skipped when no PostgreSQL answers.

--skip and --only take comma lists of parts: throughput, modern, downconvert,
metadata, groups, acls, latency, rss, shim, small, wsraw, postgresql (e.g. `--only modern,downconvert,metadata`);
--quick runs every part at small sizes.

Message values are distinct random bytes by default (--payload x for b"x" *
size, which LevelDB's snappy compresses away and so flatters storage).
Absolute figures are noisy on shared machines: compare ratios within a run.
Runs are paired (floor, then kafkaw, back to back) and repeated; the table
shows medians. --tree DIR benchmarks another kafkaw tree (an A/B copy).

    python bench/run.py --load produce --bootstrap 127.0.0.1:9092 -n 1000000
drives load only, against a broker you started (--modern: librdkafka's defaults);
bench/profile_broker.py profiles kafkaw under such a load with py-spy.
"""

import argparse
import collections
import datetime
import gc
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
# librdkafka's defaults: it asks ApiVersions and uses the highest versions both sides list
# (against kafkaw: Produce v7 with v2 record batches, Fetch v11).
RDKAFKA_MODERN = {}


def clientSettings(modern):
    return dict(RDKAFKA_MODERN if modern else RDKAFKA_08)

MODES = {
    # reps, messages for 100 B, messages for 10 KB, round-trip samples, wake-up samples, RSS steps;
    # metadata at scale: topics made, topics named per Metadata request, Metadata requests timed
    "quick": dict(reps=2, n100=300_000, n10k=20_000, rtt=1000, wake=500, rss=[1_000_000],
                  topics=10_000, named=1_000, metaSamples=30, rebalances=3, commits=1000,
                  loadSeconds=5, loadProcesses=2, smallConnections=[50, 500]),
    "default": dict(reps=3, n100=1_000_000, n10k=50_000, rtt=2000, wake=2000, rss=[1_000_000, 10_000_000],
                    topics=10_000, named=1_000, metaSamples=200, rebalances=5, commits=3000,
                    loadSeconds=10, loadProcesses=2, smallConnections=[50, 500, 900]),
    "full": dict(reps=5, n100=2_000_000, n10k=100_000, rtt=5000, wake=5000, rss=[1_000_000, 10_000_000],
                 topics=10_000, named=1_000, metaSamples=500, rebalances=10, commits=5000,
                 loadSeconds=10, loadProcesses=2, smallConnections=[50, 200, 500, 900]),
}
PARTS = ["throughput", "modern", "downconvert", "metadata", "groups", "acls", "latency", "rss", "shim", "small", "wsraw", "postgresql"]


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


def startNull(workDir, partitions, modern=False):
    """The null broker; modern=True adds --modern (it lists Produce 0-7 and Fetch 0-11 in
    ApiVersions and acks v2 batches unopened: the floor for a broker that stores v2 batches)."""
    port = freePort()
    return Process(
        f"null{'-modern' if modern else ''}-p{partitions}",
        [sys.executable, str(BENCH / "nullbroker.py"), str(port), str(partitions)] + (["--modern"] if modern else []),
        port, workDir,
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


def startKafkaw(workDir, partitions, name=None, websocketPort=None, storage="leveldb", extra=()):
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
        *extra,
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


def producer(bootstrap, acks, modern=False, **extra):
    from confluent_kafka import Producer

    config = {
        **clientSettings(modern),
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


def produceLoad(bootstrap, topic, partitions, n, size, acks, broker=None, waitForLogEnd=None, drain=False,
                modern=False):
    """Warm up (one message per partition), then produce n messages of `size` bytes.

    modern=False: librdkafka pinned to Kafka 0.8.0 (Produce v0, magic-0 message sets);
    modern=True: librdkafka's defaults (Produce v7 with v2 record batches where listed).

    Returns (seconds, broker CPU seconds or None). With waitForLogEnd=port (kafkaw,
    acks=0) the clock stops when ListOffsets shows every message stored, not when
    librdkafka has written them to the socket; with drain=True (null broker,
    acks=0) when the broker has read every byte sent (kernel queues empty).
    """
    failed = collections.Counter()

    def report(err, msg):
        failed[str(err)] += 1

    # Only failed deliveries are reported (cheap), and any fails the run.
    p = producer(bootstrap, acks, modern, **{"delivery.report.only.error": True, "on_delivery": report})
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


# For the Kafka 2.3.0 protocol parts' consumers: librdkafka 2.x stops fetching for
# fetch.queue.backoff.ms (1 s) whenever its prefetch queue holds queued.min.messages
# (100,000 by default); with ~10,000-record v2 batches its Fetch v11 consumer then idles
# (~215,000 msg/s with the broker at ~5% CPU on this machine). A deeper queue measures the broker.
MODERN_CONSUMER = {"queued.min.messages": 1_000_000}


def consumeLoad(bootstrap, topic, partitions, total, broker=None, timeout=300, modern=False, info=None, extra=None):
    """Consume `total` messages from offset 0 of each partition.

    The consumer first connects (assigned at the log end, ListOffsets answered);
    the clock runs from the assign() at offset 0 to the last message.
    Returns (seconds, messages, broker CPU seconds). modern: as for produceLoad
    (False: Fetch v0; True: librdkafka's defaults, Fetch v11 against kafkaw).
    info (a dict), if given, gets the timestamp type of the first message
    ("timestampType": 0 none, as magic 0 has; 1 create time; 2 log append time).
    extra: more consumer settings (MODERN_CONSUMER).
    """
    from confluent_kafka import OFFSET_END, Consumer, TopicPartition

    c = Consumer({
        **clientSettings(modern),
        "bootstrap.servers": bootstrap,
        "group.id": "kafkaw-bench",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "fetch.wait.max.ms": 100,
        "fetch.message.max.bytes": 1 << 20,
        **(extra or {}),
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
            if info is not None and good and "timestampType" not in info:
                info["timestampType"] = next(m for m in batch if m.error() is None).timestamp()[0]
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
    """produce acks=1 and consume, 100 B and 10 KB, 1 partition: direct TCP vs
    through the shim, the same kafkaw process, at least 3 paired runs (medians
    of the paired ratios); and through a plain Twisted TCP relay
    (bench/tcprelay.py, in front of a second kafkaw advertising the relay's
    port), the floor for one more Python process on the path."""
    if "--websocket" not in kafkawOptions():
        return None, "kafkaw has no --websocket option yet"
    if not shimAvailable():
        return None, "no `twistd kafkaw-shim` plugin yet"
    wsPort = freePort()
    kafkaw = startKafkaw(work, 1, name="kafkaw-ws", websocketPort=wsPort)
    shimPort = relayPort = None
    shimProc = relayBroker = relayProc = None
    try:
        shimPort = freePort()
        shimProc = Process(
            "shim",
            twistdCommand("kafkaw-shim", "--listen", f"tcp:{shimPort}:interface=127.0.0.1",
                          "--connect", f"ws://127.0.0.1:{wsPort}/"),
            shimPort, work,
        )
        relayPort = freePort()
        relayBroker = startKafkaw(work, 1, name="kafkaw-relayed", extra=["--advertised-port", str(relayPort)])
        relayProc = Process("relay", [sys.executable, str(BENCH / "tcprelay.py"), str(relayPort), str(relayBroker.port)],
                            relayPort, work)
        paths = {"tcp": (kafkaw, None), "shim": (kafkaw, shimProc), "relay": (relayBroker, relayProc)}
        rows, relayRows, targets = [], [], []
        for size, n in ((100, mode["n100"]), (10240, mode["n10k"])):
            rate = {(what, how): [] for what in ("produce", "consume") for how in paths}
            cpu = {(what, how): [] for what in ("produce", "consume") for how in paths}  # (broker, hop) s/msg
            order = list(paths)
            for rep in range(max(3, mode["reps"])):
                # Which goes first rotates: a run may leave work (compactions) to the next.
                for how in order[rep % 3:] + order[: rep % 3]:
                    broker, hop = paths[how]
                    bootstrap = (hop or broker).bootstrap
                    topic = f"ws-{how}-{size}-{rep}"

                    def cpus():
                        return broker.cpu(), hop.cpu() if hop else 0.0

                    (k0, h0) = cpus()
                    dt, _ = produceLoad(bootstrap, topic, 1, n, size, 1)
                    (k1, h1) = cpus()
                    rate["produce", how].append(n / dt)
                    cpu["produce", how].append(((k1 - k0) / n, (h1 - h0) / n))
                    dt, timed, _ = consumeLoad(bootstrap, topic, 1, n + 1)
                    (k2, h2) = cpus()
                    rate["consume", how].append(timed / dt)
                    cpu["consume", how].append(((k2 - k1) / n, (h2 - h1) / n))
                    log(f"  {how:5} {size} B produce {rate['produce', how][-1]:,.0f} msg/s, consume {rate['consume', how][-1]:,.0f} msg/s; "
                        f"CPU µs/msg broker {cpu['produce', how][-1][0] * 1e6:.1f} / {cpu['consume', how][-1][0] * 1e6:.1f}, "
                        f"{how if hop else 'no hop'} {cpu['produce', how][-1][1] * 1e6:.1f} / {cpu['consume', how][-1][1] * 1e6:.1f}")
            label = "100 B" if size == 100 else f"{size // 1024} KB"
            for what in ("produce acks=1", "consume from 0"):
                kind = what.split()[0]
                t, s_, r = (med(rate[kind, how]) for how in ("tcp", "shim", "relay"))
                ratios = [b / a for a, b in zip(rate[kind, "tcp"], rate[kind, "shim"])]
                relayRatios = [b / a for a, b in zip(rate[kind, "tcp"], rate[kind, "relay"])]

                def cpuOf(how, which):
                    return med([c[which] for c in cpu[kind, how]]) * 1e6

                rows.append(
                    f"| {what}, {label}, 1 partition | {t:,.0f} | {t * size / 1e6:.1f} | {s_:,.0f} | {s_ * size / 1e6:.1f} | "
                    f"**{med(ratios):.2f}** ({min(ratios):.2f}–{max(ratios):.2f}) | {cpuOf('tcp', 0):.2f} / {cpuOf('shim', 0):.2f} | "
                    f"{cpuOf('shim', 1):.2f} |"
                )
                relayRows.append(
                    f"| {what}, {label}, 1 partition | {r:,.0f} | **{med(relayRatios):.2f}** ({min(relayRatios):.2f}–{max(relayRatios):.2f}) | "
                    f"{cpuOf('relay', 0):.2f} | {cpuOf('relay', 1):.2f} | {med(ratios) / med(relayRatios):.2f} |"
                )
                targets.append(f"- through the shim / TCP, {what}, {label}: {med(ratios):.2f} (target ≥ 0.9): {metMark(med(ratios) >= 0.9)}"
                               f" (a plain TCP relay: {med(relayRatios):.2f})")
        return (rows, relayRows, targets), None
    except Exception as e:  # the shim is another helper's work in progress
        return None, f"shim run failed: {e!r}"[:300]
    finally:
        for proc in (shimProc, relayProc, relayBroker):
            if proc is not None:
                proc.stop()
        kafkaw.stop()


# ---------------------------------------------------------------------------
# Raw request load: many small producers, raw WebSocket vs raw TCP
# ---------------------------------------------------------------------------


def _wsFrame(payload):
    """A masked binary WebSocket frame (the all-zero mask key: XOR with it is
    the identity, so the load generator spends nothing on masking)."""
    n = len(payload)
    if n < 126:
        head = struct.pack(">BB", 0x82, 0x80 | n)
    elif n < 65536:
        head = struct.pack(">BBH", 0x82, 0x80 | 126, n)
    else:
        head = struct.pack(">BBQ", 0x82, 0x80 | 127, n)
    return head + b"\0\0\0\0" + payload


def _wsHandshake(sock):
    key = "a2Fma2F3LWJlbmNoLWtleQ=="
    sock.sendall(
        f"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    answer = b""
    while b"\r\n\r\n" not in answer:
        data = sock.recv(4096)
        if not data:
            raise ConnectionError("WebSocket handshake refused")
        answer += data
    if not answer.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(f"WebSocket handshake refused: {answer[:60]!r}")
    return answer.split(b"\r\n\r\n", 1)[1]


def _countResponses(buffer, websocket):
    """How many whole responses C{buffer} starts with, and the bytes they take.

    TCP: size-prefixed frames; WebSocket: binary messages (final frames), each
    one response."""
    count = position = 0
    end = len(buffer)
    if not websocket:
        while end - position >= 4:
            (size,) = struct.unpack_from(">i", buffer, position)
            if end - position < 4 + size:
                break
            position += 4 + size
            count += 1
        return count, position
    while end - position >= 2:
        first, second = buffer[position], buffer[position + 1] & 0x7F
        head = 2
        if second == 126:
            if end - position < 4:
                break
            (second,) = struct.unpack_from(">H", buffer, position + 2)
            head = 4
        elif second == 127:
            if end - position < 10:
                break
            (second,) = struct.unpack_from(">Q", buffer, position + 2)
            head = 10
        if end - position < head + second:
            break
        position += head + second
        if first & 0x80 and first & 0x0F in (0, 2):
            count += 1
    return count, position


def _rawLoadWorker(port, requests, inFlight, websocket, starts, results):
    """One load process: a connection per entry of C{requests} (its request
    bytes), each kept at C{inFlight} requests outstanding by a selector loop;
    reports (responses in the window, latencies in it, longest wait)."""
    import array

    selector = selectors.DefaultSelector()
    conns = []
    try:
        for payload in requests:
            sock = socket.create_connection(("127.0.0.1", port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            leftover = _wsHandshake(sock) if websocket else b""
            sock.setblocking(False)
            conn = [sock, bytearray(leftover), collections.deque(), _wsFrame(payload) if websocket else payload]
            conns.append(conn)
            selector.register(sock, selectors.EVENT_READ, conn)
    except OSError as e:
        results.put(("error", f"{type(e).__name__}: {e}"))
        return
    results.put(("ready",))
    startAt, measureFrom, stopAt = starts.get()
    now = time.perf_counter
    while time.time() < startAt:
        time.sleep(0.001)
    t0 = now() + (measureFrom - time.time())
    tEnd = now() + (stopAt - time.time())
    latencies = array.array("d")
    answered = 0
    longest = 0.0
    for conn in conns:
        sent = now()
        conn[0].sendall(conn[3] * inFlight)
        conn[2].extend([sent] * inFlight)
    while True:
        for key, _ in selector.select(0.05):
            sock, buffer, sentAt, wire = key.data
            try:
                data = sock.recv(1 << 18)
            except BlockingIOError:
                continue
            if not data:
                results.put(("error", "the broker closed a connection"))
                return
            buffer += data
            count, used = _countResponses(buffer, websocket)
            if not count:
                continue
            del buffer[:used]
            t = now()
            for _ in range(count):
                waited = t - sentAt.popleft()
                if t0 <= t < tEnd:
                    answered += 1
                    latencies.append(waited)
                if waited > longest:
                    longest = waited
            if t < tEnd:
                sock.sendall(wire * count)
                sentAt.extend([t] * count)
        if now() >= tEnd:
            break
    t = now()
    for conn in conns:  # still waiting at the end counts too
        if conn[2]:
            longest = max(longest, t - conn[2][0])
        conn[0].close()
    results.put(("ok", answered, latencies.tobytes(), longest))


def rawLoad(proc, requests, inFlight=1, seconds=10.0, warmup=1.0, websocketPort=None, processes=2):
    """Drive C{proc} with one raw connection per request of C{requests}, each
    keeping C{inFlight} copies outstanding, from C{processes} load processes
    (pipelined non-blocking sockets); measure for C{seconds} after C{warmup}.

    Returns dict(requests=answered/s, cpu=broker CPU s per request, p50, p99
    and longest wait in seconds)."""
    import array
    import multiprocessing

    context = multiprocessing.get_context("fork")
    results, starts = context.Queue(), context.Queue()
    port = websocketPort or proc.port
    workers = [
        context.Process(
            target=_rawLoadWorker,
            args=(port, requests[i::processes], inFlight, websocketPort is not None, starts, results),
        )
        for i in range(processes)
    ]
    for worker in workers:
        worker.start()
    for _ in workers:  # every connection open (and its handshake done) before the start
        ready = results.get(timeout=60 + len(requests) / 10)
        if ready[0] == "error":
            for worker in workers:
                worker.terminate()
            raise RuntimeError(f"raw load failed: {ready[1]}")
    startAt = time.time() + 0.2
    measureFrom, stopAt = startAt + warmup, startAt + warmup + seconds
    for _ in workers:
        starts.put((startAt, measureFrom, stopAt))
    time.sleep(max(0, measureFrom - time.time()))
    cpu0 = proc.cpu()
    time.sleep(max(0, stopAt - time.time()))
    cpu1 = proc.cpu()
    answered, latencies, longest = 0, array.array("d"), 0.0
    for _ in workers:
        result = results.get(timeout=warmup + seconds + 60)
        if result[0] == "error":
            for worker in workers:
                worker.terminate()
            raise RuntimeError(f"raw load failed: {result[1]}")
        answered += result[1]
        latencies.frombytes(result[2])
        longest = max(longest, result[3])
    for worker in workers:
        worker.join()
    latencies = sorted(latencies)
    return dict(
        rate=answered / seconds, cpu=(cpu1 - cpu0) / max(answered, 1),
        p50=pct(latencies, 50), p99=pct(latencies, 99), longest=longest,
    )


def produceRequests(topic, connections, partitions, messages, size, acks=1):
    """One raw Produce v0 per connection (C{messages} × C{size} B, partition i % C{partitions})."""
    values = payloads(size)
    out = []
    for i in range(connections):
        mset = messageSet([values[(i * messages + j) % len(values)] for j in range(messages)])
        out.append(request(0, i + 1, produceBody(acks, topic, i % partitions, mset)))
    return out


def smallProducers(work, mode, connectionCounts):
    """Many small producers (issue 14): each connection keeps one Produce v0
    of 10 × 100 B in flight (partition i % 8), against the null broker and
    kafkaw on LevelDB (8 partitions), paired runs; markdown lines."""
    seconds = mode["loadSeconds"]
    rows = {count: collections.defaultdict(list) for count in connectionCounts}
    for rep in range(mode["reps"]):
        for count in connectionCounts:
            requests = produceRequests("small", count, 8, 10, 100)
            for name in ("null", "kafkaw"):
                proc = startNull(work, 8) if name == "null" else startKafkaw(
                    work, 8, extra=["--max-connections", str(count + 100)] if count + 100 > 1000 else ())
                try:
                    if name == "kafkaw":
                        createTopic(proc.port, "small")
                    result = rawLoad(proc, requests, seconds=seconds, processes=mode["loadProcesses"])
                finally:
                    proc.stop()
                rows[count][name].append(result)
                log(f"  {count} connections, {name:6}: {result['rate'] * 10:,.0f} msg/s, "
                    f"{result['cpu'] * 1e6:.0f} µs CPU/request, p50 {result['p50'] * 1e3:.1f} ms, "
                    f"p99 {result['p99'] * 1e3:.1f} ms, longest wait {result['longest'] * 1e3:.0f} ms")
    lines = [
        "| many small producers (10 × 100 B Produce v0 in flight per connection, 8 partitions) | msg/s | × null | "
        "broker CPU µs/request | p50 / p99 ms | p99 × null | longest wait ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    targets = []
    for count in connectionCounts:
        null, kafkaw = rows[count]["null"], rows[count]["kafkaw"]

        def m(results, key):
            return med([r[key] for r in results])

        nullRate, rate = m(null, "rate") * 10, m(kafkaw, "rate") * 10
        ratio = med([k["rate"] / n["rate"] for n, k in zip(null, kafkaw)])
        p99ratio = med([k["p99"] / n["p99"] for n, k in zip(null, kafkaw)])
        for label, results, rateShown, ratioShown, p99Shown in (
            ("null broker", null, nullRate, "1", "1"), ("kafkaw, LevelDB", kafkaw, rate, f"**{ratio:.2f}**", f"{p99ratio:.1f}"),
        ):
            lines.append(
                f"| {count} connections, {label} | {rateShown:,.0f} | {ratioShown} | {m(results, 'cpu') * 1e6:.0f} | "
                f"{m(results, 'p50') * 1e3:.1f} / {m(results, 'p99') * 1e3:.1f} | {p99Shown} | "
                f"{max(r['longest'] for r in results) * 1e3:.0f} |"
            )
        cpu = m(kafkaw, "cpu") * 1e6
        longest = max(r["longest"] for r in kafkaw)
        targets.append(
            f"- {count} small producers: {ratio:.2f} × the null broker's msg/s (target ≥ 0.5) and {cpu:.0f} µs broker CPU "
            f"per request (target ≤ 75): {metMark(ratio >= 0.5 and cpu <= 75)}; p99 {p99ratio:.1f} × the null broker's "
            f"(target ≤ 3): {metMark(p99ratio <= 3)}; longest wait {longest * 1e3:.0f} ms (target ≤ 1000): "
            f"{metMark(longest <= 1)}"
        )
    lines += [
        "",
        f"Each connection sends its next request when the last is answered; {mode['loadProcesses']} load processes "
        f"(non-blocking sockets, one selector each) drive all connections; {seconds:g} s measured after 1 s of warm-up, "
        f"{mode['reps']} paired runs, medians (longest wait: the longest of all runs, requests still unanswered at the "
        "end included). Broker CPU is user+system time of the broker process (all threads) over the interval, per "
        "answered request. The null broker's figures show what the load generator and the machine allow.",
        "",
    ]
    return lines, targets


def rawWebSocket(work, mode):
    """Raw WebSocket vs raw TCP (issue 14): one connection, Produce v0 of 100 × 100 B,
    1 and 10 in flight, the same kafkaw process (LevelDB), alternating; markdown lines."""
    seconds = mode["loadSeconds"]
    wsPort = freePort()
    kafkaw = startKafkaw(work, 1, name="kafkaw-wsraw", websocketPort=wsPort)
    results = collections.defaultdict(list)
    try:
        createTopic(kafkaw.port, "wsraw")
        requests = produceRequests("wsraw", 1, 1, 100, 100)
        for rep in range(mode["reps"]):
            for inFlight in (1, 10):
                for how in ("tcp", "ws"):
                    r = rawLoad(kafkaw, requests, inFlight=inFlight, seconds=seconds, processes=1,
                                websocketPort=wsPort if how == "ws" else None)
                    results[inFlight, how].append(r)
                    log(f"  {how:3} {inFlight:2} in flight: {r['rate'] * 100:,.0f} msg/s, {r['cpu'] * 1e6:.0f} µs CPU/request, "
                        f"p50 {r['p50'] * 1e3:.2f} ms, p99 {r['p99'] * 1e3:.2f} ms")
    finally:
        kafkaw.stop()
    lines = [
        "| raw Produce v0, 100 × 100 B, one connection | TCP msg/s | WebSocket msg/s | WebSocket / TCP | "
        "broker CPU µs/request TCP / WebSocket | p50 ms TCP / WebSocket |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    targets = []
    for inFlight in (1, 10):
        tcp, ws = results[inFlight, "tcp"], results[inFlight, "ws"]
        ratio = med([w["rate"] / t["rate"] for t, w in zip(tcp, ws)])
        lines.append(
            f"| {inFlight} in flight | {med([r['rate'] for r in tcp]) * 100:,.0f} | {med([r['rate'] for r in ws]) * 100:,.0f} | "
            f"**{ratio:.2f}** | {med([r['cpu'] for r in tcp]) * 1e6:.0f} / {med([r['cpu'] for r in ws]) * 1e6:.0f} | "
            f"{med([r['p50'] for r in tcp]) * 1e3:.2f} / {med([r['p50'] for r in ws]) * 1e3:.2f} |"
        )
        targets.append(f"- raw WebSocket / raw TCP, {inFlight} in flight: {ratio:.2f} (target ≥ 0.9): {metMark(ratio >= 0.9)}")
    lines += [
        "",
        f"Identical request bytes on both (the WebSocket client sends each as one binary message, masked with the "
        f"all-zero key, so it spends nothing on masking; kafkaw still unmasks); {seconds:g} s per run after 1 s of "
        f"warm-up, {mode['reps']} runs alternating TCP and WebSocket, medians.",
        "",
    ]
    return lines, targets


# ---------------------------------------------------------------------------
# Kafka 2.3.0's protocol: librdkafka defaults, down-conversion, metadata at scale
# ---------------------------------------------------------------------------


def modern(work, mode, rowsWanted=True, downWanted=True):
    """librdkafka with its defaults (Produce v7 / v2 batches, Fetch v11) against
    `nullbroker.py --modern` (the v2 floor) and kafkaw on LevelDB, 1 partition.

    Rows (rowsWanted): produce acks=1 100 B and 10 KB, consume 100 B from 0
    (floor: the null broker's modern produce rate). Down-conversion (downWanted):
    the same v2 data consumed again by librdkafka pinned to 0.8.0 (Fetch v0, so
    kafkaw converts every batch to magic-0 messages), next to its Fetch v11
    consume; the two consumes alternate in order from run to run.
    Returns (rows, down) where down = {"v11"|"v0": [(msg/s, µs/msg)], "ts": {..}}.
    """
    rows, down = [], None
    null = startNull(work, 1, modern=True) if rowsWanted else None
    kafkaw = startKafkaw(work, 1, name="kafkaw-modern")
    try:
        n100, n10k = mode["n100"], mode["n10k"]
        r100 = Row("produce acks=1", 100, 1)
        rc = Row("consume from 0", 100, 1, floorLabel="null --modern produce acks=1")
        r10k = Row("produce acks=1", 10240, 1)
        down = {"v11": [], "v0": [], "ts": {}}
        for rep in range(mode["reps"]):
            for size, n, row in ((100, n100, r100), (10240, n10k, r10k)):
                if size != 100 and not rowsWanted:
                    continue
                topic = f"modern-s{size}-r{rep}"
                res = {}
                for who, proc in (("null", null), ("kafkaw", kafkaw)):
                    if proc is None:
                        continue
                    dt, cpu = produceLoad(proc.bootstrap, topic, 1, n, size, 1, proc, modern=True)
                    if who == "kafkaw":
                        stored = waitForStored(kafkaw.port, topic, 1, n + 1)
                        if stored != n + 1:
                            raise RuntimeError(f"{topic}: stored {stored}, produced {n + 1}")
                    res[who] = (n / dt, cpu * 1e6 / n)
                    log(f"  {who:6} modern produce acks=1 {size:>5} B: {n / dt:>10,.0f} msg/s  "
                        f"{n * size / dt / 1e6:7.1f} MB/s  broker CPU {cpu * 1e6 / n:6.2f} µs/msg")
                if rowsWanted:
                    row.add(res["null"][0], res["kafkaw"][0], res["null"][1], res["kafkaw"][1])
                if size != 100:
                    continue
                order = ("v11", "v0") if rep % 2 == 0 else ("v0", "v11")
                if not downWanted:
                    order = ("v11",)
                for how in order:
                    info = {}
                    dt, timed, cpu = consumeLoad(kafkaw.bootstrap, topic, 1, n + 1, kafkaw, modern=how == "v11", info=info,
                                                 extra=MODERN_CONSUMER)
                    down[how].append((timed / dt, cpu * 1e6 / timed))
                    down["ts"][how] = info.get("timestampType")
                    log(f"  kafkaw consume ({'Fetch v11' if how == 'v11' else 'Fetch v0, down-converted'}) 100 B: "
                        f"{timed / dt:>10,.0f} msg/s  broker CPU {cpu * 1e6 / timed:6.2f} µs/msg")
                if rowsWanted:
                    rc.add(res["null"][0], down["v11"][-1][0], None, down["v11"][-1][1])
        if rowsWanted:
            rows = [r100, rc, r10k]
    finally:
        if null is not None:
            null.stop()
        kafkaw.stop()
    return rows, (down if downWanted else None)


# ---------------------------------------------------------------------------
# ACLs: produce with --acls vs without, and the cost of authorize()
# ---------------------------------------------------------------------------

ANONYMOUS = "User:ANONYMOUS"


def benchAcls():
    """The ACLs of the `acls` part, as (resource type, name, pattern type, principal, host, operation, permission):
    the producer (User:ANONYMOUS) may write topics starting `acl-` (a prefixed ACL) and has the cluster;
    296 ACLs of other users on other topics, literal and prefixed, make the index no toy."""
    acls = [
        (4, "kafka-cluster", 3, ANONYMOUS, "*", 2, 3),  # All on the cluster
        (2, "acl-", 4, ANONYMOUS, "*", 4, 3),  # Write on acl-*
        (2, "acl-", 4, ANONYMOUS, "*", 8, 3),  # Describe on acl-*
        (2, "acl-denied", 3, ANONYMOUS, "*", 4, 2),  # a deny elsewhere
    ]
    for i in range(148):
        acls.append((2, f"team{i}-events", 3, f"User:user{i}", "*", 3, 3))
        acls.append((2, f"a{i % 10}-{i}", 4, f"User:user{i}", "*", 4, 3))
    return acls


def createAcls(port, acls):
    conn = SchemaConnection(port)
    try:
        answer = conn.request(30, 1, {"creations": [
            {"resourceType": t, "resourceName": n, "resourcePatternType": p, "principal": who, "host": h, "operation": o,
             "permissionType": perm}
            for t, n, p, who, h, o, perm in acls
        ]})
    finally:
        conn.close()
    errors = {r.errorCode for r in answer.results}
    if errors != {0}:
        raise RuntimeError(f"CreateAcls: error codes {errors}")


def authorizeCost(calls=200_000):
    """µs per AclAuthorizer.authorize() call: (a remembered decision, a decision made afresh) over benchAcls()."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from kafkaw.broker.authorizer import AclAuthorizer, Operation, ResourceType
    from kafkaw.storage.memory import MemoryStore

    store = MemoryStore()
    store.addAcls(benchAcls())
    authorizer = AclAuthorizer(store)
    authorize = authorizer.authorize
    write, topic = Operation.WRITE, ResourceType.TOPIC
    if not authorize(ANONYMOUS, "127.0.0.1", write, topic, "acl-0"):
        raise RuntimeError("the bench ACLs do not allow the producer")
    t0 = time.perf_counter()
    for _ in range(calls):
        authorize(ANONYMOUS, "127.0.0.1", write, topic, "acl-0")
    remembered = (time.perf_counter() - t0) / calls
    names = [f"acl-{i}" for i in range(calls // 10)]
    t0 = time.perf_counter()
    for name in names:  # each name once: decided over the index, then remembered
        authorize(ANONYMOUS, "127.0.0.1", write, topic, name)
    fresh = (time.perf_counter() - t0) / len(names)
    return remembered * 1e6, fresh * 1e6, len(store.acls()), produceEntryCost(authorizer, calls // 4)


def produceEntryCost(authorizer, calls):
    """µs per Produce v7 request (one topic, one partition, a 100-record batch) of the checks
    --acls adds at its entry: is the batch idempotent, may the principal write the topic."""
    from twisted.internet import task

    from kafkaw.broker import data
    from kafkaw.broker.authorizer import Operation, ResourceType
    from kafkaw.broker.gateway import Broker, Gateway
    from kafkaw.protocol import api, records, schema

    class Connection:
        peer = "IPv4Address(type='TCP', host='127.0.0.1', port=50000)"

    gateway = Gateway(Broker(None, task.Clock(), authorizer=authorizer), Connection())
    batch = records.encodeBatch([(None, b"m" * 100)] * 100)
    frame = schema.encodeRequest(0, 7, 1, "bench", {"transactionalId": None, "acks": 1, "timeoutMs": 5000, "topics": [
        {"name": "acl-0", "partitions": [{"partitionIndex": 0, "records": batch}]}]})
    header, reader = api.decodeHeader(frame)
    request = schema.decodeRequestBody(0, 7, reader)
    cluster = (Operation.IDEMPOTENT_WRITE, ResourceType.CLUSTER, "kafka-cluster")
    if not gateway.sees(*cluster):
        raise RuntimeError("the bench ACLs do not allow the producer IdempotentWrite")
    t0 = time.perf_counter()
    for _ in range(calls):  # as data.produce does: the batches are parsed only without IdempotentWrite
        if (not gateway.sees(*cluster) and data._idempotent(request.topics)) or gateway.denied(
            Operation.WRITE, ResourceType.TOPIC, [t.name for t in request.topics]
        ):
            raise RuntimeError("the bench ACLs do not allow the producer")
    sees = (time.perf_counter() - t0) / calls * 1e6
    t0 = time.perf_counter()
    for _ in range(calls // 4):
        data._idempotent(request.topics)
    return sees, (time.perf_counter() - t0) / (calls // 4) * 1e6


def gatewayProduceCost(withAcls, requests=500, rounds=15, count=100):
    """µs per Produce v7 request (one batch of `count` 100 B values) through a
    gateway over a memory store, in this process, without and with an authorizer
    over benchAcls(): the broker's own work per request, free of the client and
    of the scheduling noise between two processes. Rounds alternate; medians."""
    from twisted.internet import task

    from kafkaw.broker.authorizer import AclAuthorizer
    from kafkaw.broker.gateway import Broker
    from kafkaw.broker.services import ClusterService
    from kafkaw.protocol import records, schema
    from kafkaw.storage.memory import MemoryStore

    class Connection:
        peer = "IPv4Address(type='TCP', host='127.0.0.1', port=50000)"
        answers = 0

        def localAddress(self):
            return ("127.0.0.1", 9092)

        def sendResponse(self, chunks):
            Connection.answers += 1

        pauseReading = resumeReading = close = abort = lambda self: None

    batch = records.encodeBatch([(None, os.urandom(100)) for _ in range(count)])
    frame = schema.encodeRequest(0, 7, 1, "bench", {"transactionalId": None, "acks": 1, "timeoutMs": 5000, "topics": [
        {"name": "acl-0", "partitions": [{"partitionIndex": 0, "records": batch}]}]})
    times = {False: [], True: []}
    for _ in range(rounds):
        for acls in (False, True) if withAcls else (False,):
            store = MemoryStore()
            store.addAcls(benchAcls())
            cluster = ClusterService(store, task.Clock())
            cluster.createTopic("acl-0", 1)
            broker = Broker(cluster, task.Clock(), maxInFlightRequests=1 << 30,
                            authorizer=AclAuthorizer(store) if acls else None)
            gateway = broker.openGateway(Connection())
            before = Connection.answers
            gc.collect()
            gc.disable()  # a collection inside one round and not the other is noise
            try:
                t0 = time.process_time()  # CPU time: less of the shared machine's noise than wall time
                for _ in range(requests):
                    gateway.requestReceived(frame)
                times[acls].append((time.process_time() - t0) / requests * 1e6)
            finally:
                gc.enable()
            if Connection.answers - before != requests or store.partitionLog("acl-0", 0).endOffset != count * requests:
                raise RuntimeError("in-process produce: not every request was answered and stored")
    return med(times[False]), med(times[True])


def aclsBench(work, mode):
    """Produce 100 B acks=1 (librdkafka defaults) to kafkaw without and with --acls, 1 partition each."""
    plain = startKafkaw(work, 1, name="kafkaw-noacls")
    secured = startKafkaw(work, 1, name="kafkaw-acls", extra=("--acls", "--allow-everyone-if-no-acl"))
    out = {"plain": [], "acls": []}
    try:
        createAcls(secured.port, benchAcls())
        n = mode["n100"]
        for rep in range(mode["reps"]):
            order = (("plain", plain), ("acls", secured)) if rep % 2 == 0 else (("acls", secured), ("plain", plain))
            for who, proc in order:
                topic = f"acl-r{rep}"
                dt, cpu = produceLoad(proc.bootstrap, topic, 1, n, 100, 1, proc, modern=True)
                stored = waitForStored(proc.port, topic, 1, n + 1)
                if stored != n + 1:
                    raise RuntimeError(f"{who} {topic}: stored {stored}, produced {n + 1}")
                out[who].append((n / dt, cpu * 1e6 / n))
                log(f"  {who:5} produce acks=1 100 B: {n / dt:>10,.0f} msg/s  broker CPU {cpu * 1e6 / n:6.2f} µs/msg")
    finally:
        plain.stop()
        secured.stop()
    out["authorize"] = authorizeCost()
    out["gateway"] = {count: gatewayProduceCost(True, requests=50_000 // count, count=count) for count in (100, 1000)}
    for count, (plainUs, aclsUs) in out["gateway"].items():
        log(f"  in-process Produce v7 ({count} records) through the gateway: {plainUs:.1f} µs a request without "
            f"--acls, {aclsUs:.1f} µs with")
    log(f"  authorize(): {out['authorize'][0]:.3f} µs remembered, {out['authorize'][1]:.2f} µs decided afresh "
        f"({out['authorize'][2]} ACLs); a Produce's entry checks {out['authorize'][3][0]:.2f} µs "
        f"(+{out['authorize'][3][1]:.2f} µs without IdempotentWrite)")
    return out


def aclsReport(acls):
    if not acls:
        return [], []
    plain, secured = acls["plain"], acls["acls"]
    ratios = [s[0] / p[0] for p, s in zip(plain, secured)]
    ratio = med(ratios)
    remembered, fresh, count, (entry, parse) = acls["authorize"]
    lines = [
        "| ACLs: produce acks=1, 100 B, 1 partition, librdkafka defaults | msg/s | broker CPU µs/msg |",
        "|---|---:|---:|",
        f"| kafkaw without --acls | {fmtRate(med(r for r, _ in plain))} | {med(c for _, c in plain):.2f} |",
        f"| kafkaw with --acls ({count} ACLs, Write through a prefixed one) | {fmtRate(med(r for r, _ in secured))} | "
        f"{med(c for _, c in secured):.2f} |",
        f"| with / without (per run: {', '.join(f'{r:.2f}' for r in ratios)}) | **{ratio:.2f}** | "
        f"{med(c for _, c in secured) / med(c for _, c in plain):.2f} |",
        "",
        f"`AclAuthorizer.authorize()` in-process over the same {count} ACLs: {remembered:.3f} µs a call for a "
        f"remembered decision (every Produce after the first to a topic), {fresh:.2f} µs for one decided afresh; "
        f"everything --acls adds at a Produce's entry (one topic, one 100-record batch: may it be written, may it "
        f"write idempotently): {entry:.2f} µs a request, and {parse:.2f} µs more when the principal lacks "
        f"IdempotentWrite (the batch is read for a producer id).",
        "",
    ]
    inProcess = "; ".join(
        f"{count}-record batches {plainUs:.1f} µs a request without --acls, {aclsUs:.1f} µs with: "
        f"**{plainUs / aclsUs:.3f}** × the rate"
        for count, (plainUs, aclsUs) in acls["gateway"].items()
    )
    lines[-1:-1] = [
        "",
        "In this process, without the client nor a second broker process, Produce v7 (one batch of 100 B values) "
        f"through a gateway over a memory store (process CPU time, medians of 15 alternating rounds): {inProcess}.",
    ]
    targets = [f"- produce with --acls / without: {ratio:.2f} (target ≥ 0.95): **{'met' if ratio >= 0.95 else 'NOT met'}**"]
    for count, (plainUs, aclsUs) in acls["gateway"].items():
        targets.append(f"- the same in-process, {count}-record batches (the broker's work alone): {plainUs / aclsUs:.3f} "
                       f"(target ≥ 0.95): **{'met' if plainUs / aclsUs >= 0.95 else 'NOT met'}**")
    return lines, targets


def importKafkaw():
    """kafkaw's codec (the tree under test): schema and records modules."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from kafkaw.protocol import records, schema

    return schema, records


class SchemaConnection(RawConnection):
    """Requests of any version, encoded and decoded with kafkaw.protocol.schema."""

    def frameFor(self, apiKey, version, value):
        """A whole request frame (size prefix included), correlation id = next."""
        schema, _ = importKafkaw()
        self.correlationId += 1
        payload = schema.encodeRequest(apiKey, version, self.correlationId, "kafkaw-bench", value)
        return struct.pack(">i", len(payload)) + payload

    def request(self, apiKey, version, value):
        schema, _ = importKafkaw()
        self.sock.sendall(self.frameFor(apiKey, version, value))
        return schema.decodeResponse(apiKey, version, self.receive())[1]


def metadataAtScale(work, mode, storage="memory"):
    """`topics` one-partition topics made by CreateTopics v3 (1,000 per request), then
    Metadata v8 naming `named` of them (every k-th), back to back on one connection,
    while a Produce v7 (one 100-byte record in a v2 batch, acks=1) goes round trip
    after round trip on another. One client thread multiplexes both sockets and
    only frames answers while timing (no decoding), so neither side waits for the
    other's client-side work. Returns a dict of timings (seconds)."""
    schema, records = importKafkaw()
    kafkaw = startKafkaw(work, 1, name="kafkaw-metadata", storage=storage)
    out = {"storage": storage, "topics": mode["topics"], "named": mode["named"]}
    admin = SchemaConnection(kafkaw.port)
    prod = SchemaConnection(kafkaw.port)
    try:
        names = [f"meta-{i:05d}" for i in range(mode["topics"])]
        creates = []
        for start in range(0, len(names), 1000):
            t0 = time.perf_counter()
            answer = admin.request(19, 3, {
                "topics": [{"name": n, "numPartitions": 1, "replicationFactor": 1} for n in names[start:start + 1000]],
                "timeoutMs": 60000,
            })
            creates.append(time.perf_counter() - t0)
            errors = {t.errorCode for t in answer.topics}
            if errors != {0}:
                raise RuntimeError(f"CreateTopics: error codes {errors}")
        out["create"] = creates
        log(f"  created {len(names):,} topics: CreateTopics v3 of 1,000 took (ms) "
            + ", ".join(f"{t * 1e3:.0f}" for t in creates))
        step = max(1, len(names) // mode["named"])
        asked = {"topics": [{"name": n} for n in names[::step][: mode["named"]]], "allowAutoTopicCreation": False}
        batch = records.encodeBatch([(None, b"m" * 100)])
        produceValue = {"transactionalId": None, "acks": 1, "timeoutMs": 5000,
                        "topics": [{"name": names[0], "partitions": [{"partitionIndex": 0, "records": batch}]}]}
        produceFrame = prod.frameFor(0, 7, produceValue)
        metaFrame = admin.frameFor(3, 8, asked)

        def checkProduce(body):
            answer = schema.decodeResponse(0, 7, body)[1]
            errors = {p.errorCode for t in answer.responses for p in t.partitions}
            if errors != {0}:
                raise RuntimeError(f"Produce v7: error codes {errors}")

        # warm up both, and check the answers once
        prod.sock.sendall(produceFrame)
        checkProduce(prod.receive())
        admin.sock.sendall(metaFrame)
        answer = schema.decodeResponse(3, 8, admin.receive())[1]
        if len(answer.topics) != len(asked["topics"]) or {t.errorCode for t in answer.topics} != {0}:
            raise RuntimeError(f"Metadata v8: {len(answer.topics)} topics, errors {({t.errorCode for t in answer.topics})}")
        out["metaBytes"] = len(metaFrame)
        # produce alone, for comparison
        idle = []
        for _ in range(mode["metaSamples"] * 4):
            t0 = time.perf_counter()
            prod.sock.sendall(produceFrame)
            body = prod.receive()
            idle.append(time.perf_counter() - t0)
        checkProduce(body)
        out["produceIdle"] = idle
        # both at once
        sel = selectors.DefaultSelector()
        sel.register(admin.sock, selectors.EVENT_READ, admin)
        sel.register(prod.sock, selectors.EVENT_READ, prod)
        metaTimes, prodTimes = [], []
        lastMeta = lastProd = None
        tP = time.perf_counter()
        prod.sock.sendall(produceFrame)
        tM = time.perf_counter()
        admin.sock.sendall(metaFrame)
        metaInFlight = prodInFlight = True
        while metaInFlight or prodInFlight:
            events = sel.select(30)
            if not events:
                raise RuntimeError("no answer in 30 s")
            for key, _ in events:
                conn = key.data
                conn.fill()
                while True:
                    body = conn.frame()
                    if body is None:
                        break
                    now = time.perf_counter()
                    if conn is prod:
                        prodTimes.append(now - tP)
                        lastProd = body
                        if len(metaTimes) < mode["metaSamples"]:
                            tP = time.perf_counter()
                            prod.sock.sendall(produceFrame)
                        else:
                            prodInFlight = False
                    else:
                        metaTimes.append(now - tM)
                        lastMeta = body
                        if len(metaTimes) < mode["metaSamples"]:
                            tM = time.perf_counter()
                            admin.sock.sendall(metaFrame)
                        else:
                            metaInFlight = False
        checkProduce(lastProd)
        answer = schema.decodeResponse(3, 8, lastMeta)[1]
        if len(answer.topics) != len(asked["topics"]):
            raise RuntimeError("Metadata v8: wrong answer under load")
        out["metadata"], out["produceBusy"] = metaTimes, prodTimes
        ms = lambda v: f"{v * 1e3:.2f}"
        log(f"  Metadata v8 naming {len(asked['topics']):,} of {len(names):,}: p50 {ms(pct(metaTimes, 50))} ms, "
            f"p99 {ms(pct(metaTimes, 99))} ms (n={len(metaTimes)}); produce meanwhile p50 {ms(pct(prodTimes, 50))}, "
            f"p99 {ms(pct(prodTimes, 99))}, max {ms(max(prodTimes))} ms (n={len(prodTimes)}); "
            f"produce alone p50 {ms(pct(idle, 50))}, p99 {ms(pct(idle, 99))}, max {ms(max(idle))} ms")
    finally:
        admin.close()
        prod.close()
        kafkaw.stop()
    return out


# ---------------------------------------------------------------------------
# Consumer groups: group consume vs assign, a 2 -> 3 rebalance, synchronous commits
# ---------------------------------------------------------------------------

GROUPS_PARTITIONS = (1, 4)
# librdkafka's heartbeat.interval.ms default: members already in a group learn of a rebalance
# from their next heartbeat's answer (REBALANCE_IN_PROGRESS).
RDKAFKA_HEARTBEAT_S = 3.0
GROUPS_TARGETS = dict(groupConsume=0.9, rebalanceSlack=0.5)


def createTopics(port, partitionsByTopic):
    """Raw CreateTopics v3 (kafkaw's codec): {topic: partitions}."""
    conn = SchemaConnection(port)
    try:
        answer = conn.request(19, 3, {
            "topics": [{"name": t, "numPartitions": p, "replicationFactor": 1} for t, p in partitionsByTopic.items()],
            "timeoutMs": 30000,
        })
    finally:
        conn.close()
    errors = {t.errorCode for t in answer.topics}
    if errors != {0}:
        raise RuntimeError(f"CreateTopics: error codes {errors}")


def groupConsumeLoad(bootstrap, topic, total, groupId, broker=None, timeout=300, extra=None):
    """A group consumer (librdkafka defaults: subscribe(), auto commit every 5 s) of a new
    group reading `total` messages; auto.offset.reset earliest, as a new group has no offsets.

    The clock runs from the assignment (on_assign, the SyncGroup answered) to the last
    message, as consumeLoad's from assign() at offset 0: the group consumer then fetches
    its committed offsets (none) and the earliest ones before fetching.
    Returns (seconds, messages, broker CPU seconds, seconds from subscribe() to the assignment,
    seconds from the assignment to the first message).
    """
    from confluent_kafka import Consumer

    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": groupId,
        "auto.offset.reset": "earliest",
        **(extra or {}),
    })
    got = errors = 0
    mark = {}

    def assigned(consumer, partitions):
        mark["t0"] = time.perf_counter()
        mark["cpu0"] = broker.cpu() if broker else None

    try:
        c.list_topics(topic, timeout=30)  # connected, as consumeLoad's consumer is before its clock starts
        tSubscribe = time.perf_counter()
        c.subscribe([topic], on_assign=assigned)
        deadline = time.monotonic() + timeout
        consume = c.consume
        while got < total and time.monotonic() < deadline:
            batch = consume(min(10000, total - got), 0.5)
            good = sum(1 for m in batch if m.error() is None)
            errors += len(batch) - good
            if good and "first" not in mark:
                mark["first"] = time.perf_counter()
            got += good
        dt = time.perf_counter() - mark["t0"]
        cpu = broker.cpu() - mark["cpu0"] if broker else None
    finally:
        c.close()
    if got < total:
        raise RuntimeError(f"group consumer read {got} of {total} from {bootstrap} ({errors} errors)")
    return dt, got, cpu, mark["t0"] - tSubscribe, mark["first"] - mark["t0"]


class _Member:
    """A librdkafka group consumer (defaults) polling in its own thread, noting each
    assignment and the first message after it."""

    def __init__(self, bootstrap, topic, groupId, name):
        import threading
        from confluent_kafka import Consumer

        self.name = name
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": groupId,
                                  "auto.offset.reset": "latest", "client.id": name})
        self.consumer.list_topics(topic, timeout=30)
        self.topic = topic
        self.assignments = []  # [time, partitions, time of the first message after it or None]
        self.revoked = []  # times of on_revoke
        self.errors = collections.Counter()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _assigned(self, consumer, partitions):
        self.assignments.append([time.perf_counter(), sorted(p.partition for p in partitions), None])

    def _revoked(self, consumer, partitions):
        self.revoked.append(time.perf_counter())

    def subscribe(self):
        t = time.perf_counter()
        self.consumer.subscribe([self.topic], on_assign=self._assigned, on_revoke=self._revoked)
        self.thread.start()
        return t

    def _run(self):
        consume = self.consumer.consume
        while not self.stopping.is_set():
            for m in consume(1000, 0.01):
                if m.error() is not None:
                    self.errors[str(m.error())] += 1
                elif self.assignments and self.assignments[-1][2] is None and m.partition() in self.assignments[-1][1]:
                    self.assignments[-1][2] = time.perf_counter()

    def consumingSince(self, t0):
        """When this member first consumed after its last assignment made after t0, or None."""
        if not self.assignments or self.assignments[-1][0] < t0 or not self.assignments[-1][1]:
            return None
        return self.assignments[-1][2]

    def stop(self):
        self.stopping.set()
        if self.thread.is_alive():
            self.thread.join(30)
        self.consumer.close()


def rebalanceOnce(bootstrap, topic, groupId, partitions, phase, timeout=60):
    """Two members consuming (`partitions` partitions, a producer writing to each every few ms),
    then a third subscribes `phase` seconds into the two members' heartbeat interval
    (librdkafka starts its heartbeat timer at the SyncGroup answer: counted from the later
    of the two members' on_assign, one interval on). Returns seconds from its
    subscribe() to the moment every member has consumed a message of its new assignment, to
    each member's, to the first on_revoke of the two (the first heartbeat answered
    REBALANCE_IN_PROGRESS), and the assignment sizes."""
    import threading

    producer_ = producer(bootstrap, 1, True, **{"linger.ms": 0})
    stopProducing = threading.Event()

    def produceSteadily():
        i = 0
        while not stopProducing.is_set():
            producer_.produce(topic, b"r" * 100, partition=i % partitions)
            producer_.poll(0)
            i += 1
            if i % partitions == 0:
                time.sleep(0.002)
        producer_.flush(10)

    feeder = threading.Thread(target=produceSteadily, daemon=True)
    feeder.start()
    members = []
    try:
        for k in range(2):
            members.append(_Member(bootstrap, topic, groupId, f"member-{k}"))
            members[-1].subscribe()
        # wait for the two to share the partitions and consume
        deadline = time.monotonic() + timeout
        while True:
            last = [m.assignments[-1] if m.assignments else None for m in members]
            if (all(a is not None and a[2] is not None for a in last)
                    and sum(len(a[1]) for a in last) == partitions):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"two members not consuming after {timeout} s: {[m.assignments for m in members]}")
            time.sleep(0.01)
        third = _Member(bootstrap, topic, groupId, "member-2")  # connected before the clock starts
        at = max(m.assignments[-1][0] for m in members) + RDKAFKA_HEARTBEAT_S + phase
        while time.perf_counter() < at:
            time.sleep(min(0.05, max(0.0, at - time.perf_counter())))
        members.append(third)
        t0 = members[-1].subscribe()
        deadline = time.monotonic() + timeout
        while True:
            since = [m.consumingSince(t0) for m in members]
            if all(s is not None for s in since):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"three members not consuming after {timeout} s: "
                                   f"{[(m.name, m.assignments, dict(m.errors)) for m in members]}")
            time.sleep(0.005)
        sizes = sorted(len(m.assignments[-1][1]) for m in members)
        if sum(sizes) != partitions:
            raise RuntimeError(f"assignments after the rebalance: {[m.assignments[-1][1] for m in members]}")
        revoked = min(r for m in members[:2] for r in m.revoked if r >= t0)
        return max(since) - t0, [s - t0 for s in since], revoked - t0, sizes
    finally:
        stopProducing.set()
        feeder.join(30)
        for m in members:
            m.stop()


def syncCommits(bootstrap, topic, groupId, count):
    """A group member of a one-partition topic commits offsets 1..count with
    commit(asynchronous=False), one after another: seconds for each."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": groupId, "auto.offset.reset": "earliest",
                  "enable.auto.commit": False})
    ready = {}
    try:
        c.subscribe([topic], on_assign=lambda consumer, parts: ready.setdefault("t", time.perf_counter()))
        deadline = time.monotonic() + 30
        while "t" not in ready:
            c.consume(1, 0.1)
            if time.monotonic() > deadline:
                raise RuntimeError("the committing consumer got no assignment")
        for i in range(1, 11):  # warm up
            c.commit(offsets=[TopicPartition(topic, 0, i)], asynchronous=False)
        times = []
        for i in range(11, 11 + count):
            t = time.perf_counter()
            c.commit(offsets=[TopicPartition(topic, 0, i)], asynchronous=False)
            times.append(time.perf_counter() - t)
        committed = c.committed([TopicPartition(topic, 0)], timeout=10)[0].offset
        if committed != 10 + count:
            raise RuntimeError(f"committed offset {committed}, expected {10 + count}")
    finally:
        c.close()
    return times


def groupsBench(work, mode):
    """The groups part on one kafkaw (LevelDB, --group-initial-rebalance-delay-ms 0)."""
    out = {"consume": {}, "rebalance": [], "commits": []}
    kafkaw = startKafkaw(work, 1, name="kafkaw-groups", extra=["--group-initial-rebalance-delay-ms", "0"])
    try:
        n = mode["n100"]
        for rep in range(mode["reps"]):
            topics = {f"groups-p{p}-r{rep}": p for p in GROUPS_PARTITIONS}
            createTopics(kafkaw.port, topics)
            for topic, partitions in topics.items():
                # the modern producer spreads messages over the partitions (i % P)
                produceLoad(kafkaw.bootstrap, topic, partitions, n, 100, 1, modern=True)
                total = waitForStored(kafkaw.port, topic, partitions, n + partitions)
                order = ("assign", "group") if rep % 2 == 0 else ("group", "assign")
                res = {}
                for how in order:
                    if how == "assign":
                        # consumeLoad's fetch.wait.max.ms 100 back to librdkafka's default, as the group consumer's
                        dt, got, cpu = consumeLoad(kafkaw.bootstrap, topic, partitions, total, kafkaw, modern=True,
                                                   extra={**MODERN_CONSUMER, "fetch.wait.max.ms": 500})
                        join = first = None
                    else:
                        dt, got, cpu, join, first = groupConsumeLoad(kafkaw.bootstrap, topic, total, f"bench-{topic}",
                                                                     kafkaw, extra=MODERN_CONSUMER)
                    res[how] = (got / dt, cpu * 1e6 / got, join, first)
                    log(f"  kafkaw {how:6} consume 100 B x{partitions}p: {got / dt:>10,.0f} msg/s  "
                        f"broker CPU {cpu * 1e6 / got:6.2f} µs/msg" + (
                            f"  (subscribe → assigned {join * 1e3:.0f} ms, → first message {first * 1e3:.0f} ms more)"
                            if join is not None else ""))
                out["consume"].setdefault(partitions, []).append(res)
        partitions = 6
        runs = mode["rebalances"]
        for rep in range(runs):
            topic = f"groups-rebalance-r{rep}"
            createTopics(kafkaw.port, {topic: partitions})
            # the third member subscribes at phases spread over the two members' heartbeat interval,
            # the first just after a heartbeat (the worst case: it waits almost a whole interval)
            phase = 0.05 + RDKAFKA_HEARTBEAT_S * rep / runs
            took, each, revoked, sizes = rebalanceOnce(kafkaw.bootstrap, topic, f"bench-rebalance-{rep}", partitions, phase)
            out["rebalance"].append((took, each, revoked, sizes))
            log(f"  rebalance 2 → 3 members ({partitions} partitions, subscribe {phase:.2f} s into the heartbeat interval): "
                f"every member consuming after {took * 1e3:.0f} ms (each: {', '.join(f'{s * 1e3:.0f}' for s in each)} ms; "
                f"first revoke {revoked * 1e3:.0f} ms; partitions {sizes})")
        for rep in range(mode["reps"]):
            topic = f"groups-commit-r{rep}"
            createTopics(kafkaw.port, {topic: 1})
            times = syncCommits(kafkaw.bootstrap, topic, f"bench-commit-{rep}", mode["commits"])
            out["commits"].append(times)
            log(f"  synchronous commits: {len(times) / sum(times):,.0f}/s, p50 {pct(times, 50) * 1e3:.3f} ms, "
                f"p99 {pct(times, 99) * 1e3:.3f} ms")
    finally:
        kafkaw.stop()
    return out


def groupsReport(groups):
    """Markdown for the groups part, and its target lines."""
    out, targets = [], []
    if not groups:
        return out, targets
    T = GROUPS_TARGETS
    consume = groups["consume"]
    reps = len(next(iter(consume.values()))) if consume else 0
    out.append("Consumer groups: kafkaw on LevelDB started with `--group-initial-rebalance-delay-ms 0` (Kafka's "
               "default, 3000, would hold a new group's first join 3 s). Group consume: librdkafka with default "
               "settings, `subscribe()` with a new group.id (auto.offset.reset earliest; auto commit on, every 5 s) "
               "next to the same settings with `assign()` at offset 0 (no group), reading the same 100 B messages "
               "(produced as v2 batches, i % P), both with `queued.min.messages` 1,000,000 as the modern rows "
               "(and librdkafka's fetch.wait.max.ms, 500); timed "
               "from the assignment (on_assign; assign()) to the last message; medians of "
               f"{reps} runs, the two alternating in order:")
    out.append("")
    out.append("| consume 100 B from 0 | parts | assign() msg/s | subscribe() msg/s | subscribe / assign "
               "| broker CPU µs/msg assign / subscribe | subscribe() → assigned ms | assigned → first message ms "
               "| target |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for partitions, runs in sorted(consume.items()):
        a = med([r["assign"][0] for r in runs])
        g = med([r["group"][0] for r in runs])
        ratio = med([r["group"][0] / r["assign"][0] for r in runs])
        ac, gc = med([r["assign"][1] for r in runs]), med([r["group"][1] for r in runs])
        join = med([r["group"][2] for r in runs])
        first = med([r["group"][3] for r in runs])
        ok = ratio >= T["groupConsume"]
        out.append(f"| group vs assign | {partitions} | {fmtRate(a)} | {fmtRate(g)} | **{ratio:.2f}** | {ac:.2f} / {gc:.2f} "
                   f"| {join * 1e3:.0f} | {first * 1e3:.0f} | ≥ {T['groupConsume']} ×: {metMark(ok)} |")
        targets.append(f"- group consume 100 B, {partitions} partition{'s' if partitions > 1 else ''}: {ratio:.2f} × "
                       f"assign-style (target ≥ {T['groupConsume']}): {metMark(ok)}")
    out.append("")
    out.append("Assigned → first message is mostly librdkafka's: with no committed offset it starts its offset "
               "query timer and sends ListOffsets (earliest) ~100 ms after the OffsetFetch answer (seen with "
               "`debug=cgrp,fetch`); it counts in the subscribe() rate.")
    out.append("")
    if groups["rebalance"]:
        runs = groups["rebalance"]
        took = [t for t, _, _, _ in runs]
        after = [t - r for t, _, r, _ in runs]
        goal = RDKAFKA_HEARTBEAT_S + T["rebalanceSlack"]
        worst = max(took)
        out.append("Rebalance: a group of two librdkafka consumers (defaults: heartbeat.interval.ms 3000, "
                   "session.timeout.ms 45000, range/roundrobin assignors, eager protocol) consuming a 6-partition topic "
                   "that a producer writes to every few ms; a third consumer subscribes. Timed from its `subscribe()` "
                   "to every member having consumed a message of its new assignment. The two learn of the rebalance "
                   "from their next heartbeat's answer (REBALANCE_IN_PROGRESS), so the time is mostly where their "
                   "heartbeat timers stood: the third subscribes at "
                   f"{len(runs)} phases of their 3 s heartbeat interval (counted from their SyncGroup answer, when "
                   "librdkafka starts the timer), spread evenly from just after a heartbeat (the worst case). The "
                   "second row is the rest, from the first of the two revoking its partitions (on_revoke) to all "
                   "consuming; the worst case is about the heartbeat interval plus that:")
        out.append("")
        out.append("| rebalance 2 → 3 members | p50 ms | max ms | runs | each run ms | target |")
        out.append("|---|---:|---:|---:|---|---|")
        out.append(f"| third member's subscribe() → all 3 consuming | {pct(took, 50) * 1e3:.0f} | {worst * 1e3:.0f} "
                   f"| {len(took)} | {', '.join(f'{t * 1e3:.0f}' for t in took)} "
                   f"| max < {goal * 1e3:.0f} ms: {metMark(worst < goal)} |")
        out.append(f"| first on_revoke → all 3 consuming | {pct(after, 50) * 1e3:.0f} | {max(after) * 1e3:.0f} "
                   f"| {len(after)} | {', '.join(f'{t * 1e3:.0f}' for t in after)} | — |")
        bound = RDKAFKA_HEARTBEAT_S + max(after)
        out.append(f"| worst case: heartbeat interval + the slowest rest | | {bound * 1e3:.0f} | | "
                   f"| < {goal * 1e3:.0f} ms: {metMark(bound < goal)} |")
        out.append("")
        targets.append(f"- rebalance 2 → 3 members: max {worst * 1e3:.0f} ms, p50 {pct(took, 50) * 1e3:.0f} ms over "
                       f"{len(took)} runs, worst case {bound * 1e3:.0f} ms (target < heartbeat interval "
                       f"{RDKAFKA_HEARTBEAT_S * 1e3:.0f} + {T['rebalanceSlack'] * 1e3:.0f} ms): "
                       f"{metMark(worst < goal and bound < goal)}")
    if groups["commits"]:
        runs = groups["commits"]
        rates = [len(t) / sum(t) for t in runs]
        every = [x for t in runs for x in t]
        out.append("Synchronous commits: a group member (librdkafka defaults, enable.auto.commit off) of a "
                   "one-partition topic calls `commit(offsets=[…], asynchronous=False)` in a loop, a new offset each "
                   "time: one OffsetCommit v7 and one LevelDB write each (no `--sync`):")
        out.append("")
        out.append("| synchronous commit, 1 partition | commits/s | p50 ms | p99 ms | n | target |")
        out.append("|---|---:|---:|---:|---:|---|")
        out.append(f"| `commit(asynchronous=False)` | {fmtRate(med(rates))} | {pct(every, 50) * 1e3:.3f} "
                   f"| {pct(every, 99) * 1e3:.3f} | {len(every):,} | — |")
        out.append("")
        targets.append(f"- synchronous commits, 1 partition: {med(rates):,.0f}/s (no target)")
    return out, targets


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------


def postgresqlCPU():
    """CPU seconds used so far by every process named postgres (the server's backends and workers)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                data = f.read()
        except OSError:
            continue
        name, fields = data[data.index("(") + 1 : data.rindex(")")], data.rsplit(")", 1)[1].split()
        if name == "postgres":
            total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


class _Brokers:
    """Several broker processes, measured as one."""

    def __init__(self, processes):
        self.processes = processes

    def cpu(self):
        return sum(process.cpu() for process in self.processes)


def postgresqlBench(work, mode):
    """Produce and consume msgs/s: one broker on LevelDB, then 1, 2, 3 brokers on one PostgreSQL."""
    sys.path.insert(0, str(ROOT))
    from tests.postgresql import Schema, serverDSN

    if serverDSN() is None:
        return None, "no PostgreSQL (set KAFKAW_TEST_POSTGRESQL_DSN, see .ci/postgresql)"
    n, partitions, topic = mode["n100"] // 2, 6, "bench-pg"
    rows = []
    for brokers in (0, 1, 2, 3):  # 0: LevelDB
        schema = Schema() if brokers else None
        os.environ["KAFKAW_POSTGRESQL_DSN"] = schema.dsn if schema else ""
        processes = []
        try:
            for i in range(1, max(brokers, 1) + 1):
                processes.append(startKafkaw(
                    work, partitions, name=f"pg{brokers}-b{i}", storage="postgresql:" if brokers else "leveldb",
                    extra=["--broker-id", str(i)] if brokers else [],
                ))
            createTopic(processes[0].port, topic)
            bootstrap = processes[0].bootstrap
            if brokers:  # every partition led
                from confluent_kafka.admin import AdminClient

                admin = AdminClient({"bootstrap.servers": bootstrap})
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    led = {p.leader for p in admin.list_topics(topic, timeout=10).topics[topic].partitions.values()}
                    if led == set(range(1, brokers + 1)):
                        break
                    time.sleep(0.2)
            together = _Brokers(processes)
            database0 = postgresqlCPU()
            produced, brokerCPU = produceLoad(bootstrap, topic, partitions, n, 100, -1, broker=together, modern=True)
            database1 = postgresqlCPU()
            consumed, got, consumeCPU = consumeLoad(bootstrap, topic, partitions, n + partitions, broker=together,
                                                    modern=True, extra=MODERN_CONSUMER)
            database2 = postgresqlCPU()
            rows.append(dict(
                storage="LevelDB" if not brokers else "PostgreSQL", brokers=max(brokers, 1), n=n,
                produce=n / produced, produceCPU=brokerCPU / n * 1e6,
                produceDB=(database1 - database0) / n * 1e6 if brokers else None,
                consume=got / consumed, consumeCPU=consumeCPU / got * 1e6,
                consumeDB=(database2 - database1) / got * 1e6 if brokers else None,
            ))
            log(f"  {rows[-1]}")
        finally:
            for process in processes:
                process.stop()
            if schema is not None:
                schema.drop()
    return rows, None


def postgresqlReport(rows, note):
    out = ["", "### A cluster on PostgreSQL (librdkafka defaults, 100 B, acks=all, 6 partitions, bootstrapped at broker 1)", ""]
    if note:
        return "\n".join(out + [f"skipped: {note}", ""])
    out.append("| storage | brokers | produce msg/s | consume msg/s | brokers CPU µs/msg produce / consume "
               "| PostgreSQL CPU µs/msg produce / consume | PostgreSQL share of CPU produce / consume |")
    out.append("|---|---|---|---|---|---|---|")
    for r in rows:
        if r["produceDB"] is None:
            db = share = "-"
        else:
            db = f"{r['produceDB']:.1f} / {r['consumeDB']:.1f}"
            share = (f"{r['produceDB'] / (r['produceDB'] + r['produceCPU']):.0%} / "
                     f"{r['consumeDB'] / (r['consumeDB'] + r['consumeCPU']):.0%}")
        out.append(f"| {r['storage']} | {r['brokers']} | {fmtRate(r['produce'])} | {fmtRate(r['consume'])} "
                   f"| {r['produceCPU']:.1f} / {r['consumeCPU']:.1f} | {db} | {share} |")
    out.append("")
    out.append(f"{rows[0]['n']:,} messages per row; this machine has {os.cpu_count()} CPUs shared with other work: "
               "brokers and PostgreSQL compete for them, so more brokers cannot add CPU here.")
    return "\n".join(out + [""])


def gitRevision():
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "kafkaw"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
        return (rev or "?") + (" + uncommitted changes in kafkaw/" if dirty else "")
    except OSError:
        return "?"


def fmtRate(v):
    return f"{v:,.0f}" if v is not None else "—"


MODERN_TARGETS = dict(produce100=0.9, produce100Cpu=0.35, consume100=1.0, produce10k=0.6, metadataP99=0.100, produceMax=0.050)


def metMark(ok):
    return "**met**" if ok else "**NOT met**"


def modernReport(modernRows, down, meta):
    """Markdown for the Kafka 2.3.0 protocol parts, and their target lines."""
    out, targets = [], []
    T = MODERN_TARGETS
    if modernRows:
        out.append("Kafka 2.3.0's protocol: librdkafka with default settings (ApiVersions, then Produce v7 with v2 record "
                   "batches and Fetch v11 against kafkaw; Produce v7 against the floor, `nullbroker.py --modern`, "
                   "which acks v2 batches unopened), acks=1, 1 partition, kafkaw on LevelDB; "
                   "producer tuning as in the v0 rows (linger.ms 5, batch.num.messages 10,000, no compression):")
        out.append("")
        out.append("| workload (librdkafka defaults) | size | v2 floor msg/s | floor MB/s | kafkaw msg/s | kafkaw MB/s "
                   "| kafkaw / floor | broker CPU µs/msg floor / kafkaw | target |")
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|---|")
        for r in modernRows:
            f, k, ratio = med(r.floor), med(r.kafkaw), med(r.ratios)
            fc, kc = med(r.floorCpu), med(r.kafkawCpu)
            cpu = f"{fc:.2f} / {kc:.2f}" if fc is not None else f"— / {kc:.2f}"
            size = "100 B" if r.size <= 100 else f"{r.size // 1024} KB"
            if r.what.startswith("consume"):
                goal = f"≥ {T['consume100']:.1f} × floor produce: {metMark(ratio >= T['consume100'])}"
                targets.append(f"- modern consume 100 B (vs v2 floor produce): {ratio:.2f} × (target ≥ {T['consume100']:.1f}): "
                               f"{metMark(ratio >= T['consume100'])}")
            elif r.size <= 100:
                goal = (f"≥ {T['produce100']:.1f} ×: {metMark(ratio >= T['produce100'])}; "
                        f"≤ {T['produce100Cpu']} µs/msg: {metMark(kc <= T['produce100Cpu'])}")
                targets.append(f"- modern produce 100 B acks=1: {ratio:.2f} × v2 floor (target ≥ {T['produce100']}): "
                               f"{metMark(ratio >= T['produce100'])}")
                targets.append(f"- modern produce 100 B acks=1: broker CPU {kc:.2f} µs/msg (target ≤ {T['produce100Cpu']}): "
                               f"{metMark(kc <= T['produce100Cpu'])}")
            else:
                goal = f"≥ {T['produce10k']:.1f} ×: {metMark(ratio >= T['produce10k'])}"
                targets.append(f"- modern produce 10 KB acks=1: {ratio:.2f} × v2 floor (target ≥ {T['produce10k']}): "
                               f"{metMark(ratio >= T['produce10k'])}")
            label = r.what + (" ¹" if r.floorLabel else "")
            out.append(f"| {label} | {size} | {fmtRate(f)} | {f * r.size / 1e6:.1f} | {fmtRate(k)} | {k * r.size / 1e6:.1f} "
                       f"| **{ratio:.2f}** | {cpu} | {goal} |")
        out.append("")
        out.append("¹ Against the v2 floor's produce rate (it stores nothing to fetch). Medians of the paired runs. "
                   "The consumers here (Fetch v11 and, below, Fetch v0) use `queued.min.messages` 1,000,000: with "
                   "librdkafka 2.x's default (100,000) the Fetch v11 consumer backs off for `fetch.queue.backoff.ms` "
                   "(1 s) whenever its prefetch queue is full and idles at ~0.2 M msg/s with the broker at ~5% CPU.")
        out.append("")
    if down:
        ts = {0: "none (magic 0)", 1: "create time", 2: "log append time", None: "?"}
        v11 = (med([r for r, _ in down["v11"]]), med([c for _, c in down["v11"]]))
        v0 = (med([r for r, _ in down["v0"]]), med([c for _, c in down["v0"]]))
        out.append("Down-conversion: the same 100 B messages, produced as v2 batches (librdkafka defaults; a few "
                   "thousand records a batch at linger.ms 5), consumed from offset 0 by librdkafka with defaults (Fetch v11: batches sent as "
                   "stored) and pinned to 0.8.0 (Fetch v0: kafkaw converts every batch to magic-0 messages); kafkaw on "
                   f"LevelDB, medians of {len(down['v0'])} runs, the two consumers alternating in order:")
        out.append("")
        out.append("| consume 100 B from 0, 1 partition | msg/s | MB/s | broker CPU µs/msg | first message's timestamp type |")
        out.append("|---|---:|---:|---:|---|")
        out.append(f"| Fetch v11 (librdkafka defaults) | {fmtRate(v11[0])} | {v11[0] * 100 / 1e6:.1f} | {v11[1]:.2f} | {ts[down['ts'].get('v11')]} |")
        out.append(f"| Fetch v0 (librdkafka pinned to 0.8.0; down-converted) | {fmtRate(v0[0])} | {v0[0] * 100 / 1e6:.1f} | {v0[1]:.2f} | {ts[down['ts'].get('v0')]} |")
        out.append(f"| Fetch v0 / Fetch v11 | **{v0[0] / v11[0]:.2f}** | | **{v0[1] / v11[1]:.1f} ×** | |")
        out.append("")
    if meta:
        ms = lambda v: f"{v * 1e3:.2f}"

        def line(label, values, goal="—"):
            return (f"| {label} | {ms(pct(values, 50))} | {ms(pct(values, 99))} | {ms(max(values))} | {len(values):,} | {goal} |")

        mp99, pmax = pct(meta["metadata"], 99), max(meta["produceBusy"])
        out.append(f"Metadata at scale: kafkaw with `--storage {meta['storage']}` (the in-memory store, not LevelDB), "
                   f"{meta['topics']:,} one-partition topics made by raw CreateTopics v3 requests of 1,000; then raw "
                   f"Metadata v8 requests naming {meta['named']:,} of them ({meta['metaBytes']:,}-byte request), back to "
                   "back on one connection, while raw Produce v7 requests (one 100 B record in a v2 batch, acks=1) go "
                   "round trip after round trip on another (one client thread multiplexes both sockets):")
        out.append("")
        out.append("| metadata at scale, latency in ms | p50 | p99 | max | n | target |")
        out.append("|---|---:|---:|---:|---:|---|")
        out.append(line("CreateTopics v3, 1,000 topics per request", meta["create"]))
        out.append(line(f"Metadata v8 naming {meta['named']:,} of {meta['topics']:,} topics", meta["metadata"],
                        f"p99 < {T['metadataP99'] * 1e3:.0f} ms: {metMark(mp99 < T['metadataP99'])}"))
        out.append(line("Produce v7 round trip on another connection, meanwhile", meta["produceBusy"],
                        f"max < {T['produceMax'] * 1e3:.0f} ms: {metMark(pmax < T['produceMax'])}"))
        out.append(line("the same Produce round trip with no Metadata running", meta["produceIdle"]))
        out.append("")
        targets.append(f"- Metadata v8 naming {meta['named']:,} of {meta['topics']:,} topics: p99 {ms(mp99)} ms "
                       f"(target < {T['metadataP99'] * 1e3:.0f} ms): {metMark(mp99 < T['metadataP99'])}")
        targets.append(f"- produce round trip meanwhile: max {ms(pmax)} ms (p99 {ms(pct(meta['produceBusy'], 99))}) "
                       f"(target < {T['produceMax'] * 1e3:.0f} ms): {metMark(pmax < T['produceMax'])}")
    return out, targets


def report(args, modeName, mode, rows, latencyLines, wake99, rss, du, shimRows, shimNote, started, elapsed, loads,
           modernRows=None, down=None, meta=None, groups=None, acls=None, requestPath=None):
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
    modernLines, modernTargets = modernReport(modernRows, down, meta)
    out.extend(modernLines)
    groupsLines, groupsTargets = groupsReport(groups)
    out.extend(groupsLines)
    aclsLines, aclsTargets = aclsReport(acls)
    out.extend(aclsLines)
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
        out.append("| through the WebSocket shim vs TCP | TCP msg/s | TCP MB/s | shim msg/s | shim MB/s | shim / TCP (range) | "
                   "broker CPU µs/msg TCP / via shim | shim CPU µs/msg |")
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        shimLines, relayLines, shimTargets = shimRows
        out.extend(shimLines)
        out.append("")
        out.append("Same kafkaw process (LevelDB) for both: librdkafka (pinned to 0.8.0) → TCP, and librdkafka → `twistd kafkaw-shim` "
                   "→ WebSocket → kafkaw; TCP and shim runs alternate (which goes first alternates too), at least 3 of each; medians, "
                   "and the median and range of the paired ratios. CPU: user+system time of the broker and of the shim process "
                   "over each run, per message (medians).")
        out.append("")
        out.append("| through a plain Twisted TCP relay vs TCP (the floor for one more Python process) | relay msg/s | "
                   "relay / TCP (range) | broker CPU µs/msg | relay CPU µs/msg | shim / relay |")
        out.append("|---|---:|---:|---:|---:|---:|")
        out.extend(relayLines)
        out.append("")
        out.append("`bench/tcprelay.py`: Twisted's portforward with Nagle off, no WebSocket, nothing parsed or rewritten, "
                   "in front of a second kafkaw (LevelDB) started with `--advertised-port` of the relay; its runs rotate "
                   "with the TCP and shim runs above, and its ratios are to the same TCP runs.")
        out.append("")
        out.append("Targets (issue 14, through the shim):")
        out.append("")
        out.extend(shimTargets)
        out.append("")
    elif shimNote is not None:
        out.append(f"WebSocket shim: not measured ({shimNote}).")
        out.append("")
    requestLines, requestTargets = requestPath or ([], [])
    out.extend(requestLines)
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
    if modernTargets:
        out.append("Targets (Kafka 2.3.0 protocol):")
        out.append("")
        out.extend(modernTargets)
        out.append("")
    if groupsTargets:
        out.append("Targets (consumer groups):")
        out.append("")
        out.extend(groupsTargets)
        out.append("")
    if requestTargets:
        out.append("Targets (issue 14, the request path):")
        out.append("")
        out.extend(requestTargets)
    if aclsTargets:
        out.append("Targets (ACLs):")
        out.append("")
        out.extend(aclsTargets)
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
    g.add_argument("--quick", action="store_true", help="smaller runs, 2 per row, RSS to 1 M only (~2 min)")
    g.add_argument("--full", action="store_true", help="bigger runs, 5 per row (~15 min)")
    ap.add_argument("--reps", type=int, help="paired runs per row")
    ap.add_argument("--n100", type=int, help="messages per run at 100 B")
    ap.add_argument("--n10k", type=int, help="messages per run at 10 KB")
    ap.add_argument("--rss-10m", action="store_true", help="also measure RSS after 10 M messages (default except in --quick)")
    ap.add_argument("--no-rss-10m", action="store_true", help="stop the RSS measurement at 1 M messages")
    ap.add_argument("--partitions", default="1,8", help="partition counts (default 1,8)")
    ap.add_argument("--sizes", default="100,10240", help="message sizes in bytes (default 100,10240)")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: " + ",".join(PARTS))
    ap.add_argument("--only", default="", help="comma list of the parts to run (the others skipped)")
    ap.add_argument("--small-connections", help="many small producers: connection counts (default 50,500,900; --quick 50,500)")
    ap.add_argument("--load-seconds", type=float, help="raw request load (small, wsraw): seconds measured per run")
    ap.add_argument("--topics", type=int, help="metadata at scale: topics to create (default 10,000)")
    ap.add_argument("--named", type=int, help="metadata at scale: topics named per Metadata request (default 1,000)")
    ap.add_argument("--metadata-storage", default="memory",
                    help="kafkaw --storage for the metadata-at-scale part (default memory)")
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
    ap.add_argument("--modern", action="store_true",
                    help="with --load: librdkafka's default settings (Produce v7 / Fetch v11), not pinned to 0.8.0 "
                         "(consume: with queued.min.messages 1,000,000, as the modern rows)")
    ap.add_argument("--load-partitions", type=int, default=1, help="with --load: partitions to spread over")
    args = ap.parse_args()
    global PAYLOAD, ROOT
    PAYLOAD = args.payload
    if args.tree:
        ROOT = Path(args.tree).resolve()

    if args.load:
        if args.load == "produce":
            dt, _ = produceLoad(args.bootstrap, args.topic, args.load_partitions, args.n, args.size, args.acks,
                                modern=args.modern)
            print(f"produce: {args.n / dt:,.0f} msg/s ({dt:.2f} s)")
        else:
            dt, timed, _ = consumeLoad(args.bootstrap, args.topic, args.load_partitions, args.n, modern=args.modern,
                                       extra=MODERN_CONSUMER if args.modern else None)
            print(f"consume: {timed / dt:,.0f} msg/s ({dt:.2f} s)")
        return

    modeName = "quick" if args.quick else "full" if args.full else "default"
    mode = dict(MODES[modeName])
    for key in ("reps", "n100", "n10k", "topics", "named"):
        if getattr(args, key):
            mode[key] = getattr(args, key)
    if args.small_connections:
        mode["smallConnections"] = [int(x) for x in args.small_connections.split(",")]
    if args.load_seconds:
        mode["loadSeconds"] = args.load_seconds
    if args.rss_10m and 10_000_000 not in mode["rss"]:
        mode["rss"] = mode["rss"] + [10_000_000]
    if args.no_rss_10m:
        mode["rss"] = [1_000_000]
    skip = set(filter(None, args.skip.split(",")))
    if args.only:
        skip |= set(PARTS) - set(filter(None, args.only.split(",")))
    unknown = (skip | set(filter(None, args.only.split(",")))) - set(PARTS)
    if unknown:
        ap.error(f"unknown parts {sorted(unknown)}; parts are {','.join(PARTS)}")
    partitionCounts = [int(x) for x in args.partitions.split(",")]
    sizes = [int(x) for x in args.sizes.split(",")]

    work = tempfile.mkdtemp(prefix="kafkaw-bench-")
    started = time.perf_counter()
    loads = [loadAverage(), None]
    rows = latencyLines = rss = shimRows = shimNote = modernRows = down = meta = groups = acls = None
    requestPath = ([], [])
    pgRows = pgNote = None
    wake99 = None
    du = 0
    try:
        if "throughput" not in skip:
            log("== throughput (floor vs kafkaw)")
            rows = throughput(work, mode, partitionCounts, sizes)
        if "modern" not in skip or "downconvert" not in skip:
            log("== Kafka 2.3.0 protocol: librdkafka defaults vs the v2 floor" + ("" if "modern" not in skip else " (kafkaw only)")
                + (", down-conversion" if "downconvert" not in skip else ""))
            modernRows, down = modern(work, mode, rowsWanted="modern" not in skip, downWanted="downconvert" not in skip)
        if "metadata" not in skip:
            log(f"== metadata at scale ({mode['topics']:,} topics, --storage {args.metadata_storage})")
            meta = metadataAtScale(work, mode, args.metadata_storage)
        if "groups" not in skip:
            log("== consumer groups (kafkaw with --group-initial-rebalance-delay-ms 0)")
            groups = groupsBench(work, mode)
        if "acls" not in skip:
            log("== ACLs: produce with --acls vs without")
            acls = aclsBench(work, mode)
        if "latency" not in skip:
            log("== latency")
            latencyLines, wake99 = latency(work, mode)
        if "rss" not in skip:
            log("== peak RSS")
            rss, du = memory(work, mode["rss"])
        if "small" not in skip:
            log("== many small producers (null broker vs kafkaw)")
            lines, targets = smallProducers(work, mode, mode["smallConnections"])
            requestPath = (requestPath[0] + lines, requestPath[1] + targets)
        if "wsraw" not in skip:
            log("== raw WebSocket vs raw TCP")
            lines, targets = rawWebSocket(work, mode)
            requestPath = (requestPath[0] + lines, requestPath[1] + targets)
        if "shim" not in skip:
            log("== WebSocket shim")
            shimRows, shimNote = shim(work, mode)
            if shimNote:
                log(f"  skipped: {shimNote}")
        if "postgresql" not in skip:
            log("== a cluster on PostgreSQL (LevelDB, then 1, 2, 3 brokers on one database)")
            pgRows, pgNote = postgresqlBench(work, mode)
            if pgNote:
                log(f"  skipped: {pgNote}")
    finally:
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    loads[1] = loadAverage()
    text = report(args, modeName, mode, rows, latencyLines, wake99, rss, du, shimRows, shimNote,
                  started, time.perf_counter() - started, loads, modernRows, down, meta, groups, acls, requestPath)
    if pgRows is not None or pgNote is not None:
        text += postgresqlReport(pgRows, pgNote)
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
