"""Random and mutated frames against a running broker, over TCP and WebSocket.

Thousands of frames — garbage behind a valid size prefix, lying sizes, lengths
and counts, truncations, wrong CRCs, unknown keys and versions, compression
bombs, and mutations of valid Produce/Fetch/ListOffsets/Metadata/ApiVersions
requests — must leave the broker alive, its memory bounded, its log free of
unexpected errors, and the data stored before them intact. The seed is fixed
and printed (KAFKAW_FUZZ_SEED overrides it), so a failure can be replayed.
"""

import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib

import cramjam
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.sync.client import connect as wsConnect

from kafkaw.protocol.messages import decodeMessageSet, encodeMessage, encodeMessageSet
from tests.integration.conftest import (
    ROOT,
    RawClient,
    decodeFetchResponse,
    decodeProduceResponse,
    fetchBody,
    listOffsetsBody,
    metadataBody,
    produceBody,
    rdConsume,
    rdProduce,
    requestHeader,
)

SEED = int(os.environ.get("KAFKAW_FUZZ_SEED", "20261126"))
KNOWN = "known-topic"  # produced before the fuzzing, checked byte for byte after it
FUZZ_TOPICS = ["fz0", "fz1", "vec"]  # what fuzzed Produce requests write to ("vec": the captured vectors)
PARTITIONS = 2
MAX_REQUEST_BYTES = 104857600  # the broker's default --max-request-bytes
PROBE_ID = 0x7AFE0001  # correlation id of the Metadata probe that follows each fuzzed frame
TCP_FRAMES = 5000
WS_FRAMES = 2000
RSS_GROWTH_LIMIT_MB = 300  # peak RSS above the baseline: refusing a gzip bomb costs twice --max-request-bytes (~200 MB)

SIZE = struct.Struct(">i")
VECTORS = [path.read_bytes() for path in sorted((ROOT / "tests" / "vectors").glob("*.bin"))]
INTERESTING_32 = [0, 1, -1, -2, 0x7FFFFFFF, -0x80000000, 0xFFFF, 0x10000, 1 << 24, MAX_REQUEST_BYTES + 1]
INTERESTING_16 = [0, 1, -1, -2, 0x7FFF, -0x8000, 0xFF, 249, 250]


def memory(pid):
    """{"VmRSS": MB, "VmHWM": MB} of a process."""
    found = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                found[name] = int(value.split()[0]) / 1024
    return found


# --- valid requests to start from --------------------------------------------------


def gzipped(data):
    deflater = zlib.compressobj(6, zlib.DEFLATED, 31)
    return deflater.compress(data) + deflater.flush()


def xerial(data):
    block = bytes(cramjam.snappy.compress_raw(data))
    return b"\x82SNAPPY\x00" + struct.pack(">ii", 1, 1) + SIZE.pack(len(block)) + block


def randomMessageSet(rng):
    """Plain, gzip, raw snappy or xerial snappy; sometimes a compressed wrapper inside a compressed one."""
    messages = [
        (rng.choice([None, b"", rng.randbytes(rng.randrange(1, 16))]), rng.choice([None, b"", rng.randbytes(rng.randrange(1, 400))]))
        for _ in range(rng.randrange(1, 8))
    ]
    plain = encodeMessageSet(messages)
    kind = rng.randrange(6)
    if kind == 0:
        plain = encodeMessage(0, None, gzipped(plain), 1)  # nested: refused
    if kind <= 1:
        return encodeMessage(0, None, gzipped(plain), 1)
    if kind == 2:
        return encodeMessage(0, b"k", bytes(cramjam.snappy.compress_raw(plain)), 2)
    if kind == 3:
        return encodeMessage(0, None, xerial(plain), 2)
    return plain


def fixCrcs(messageSet):
    """Recompute each entry's CRC, so that mutations get past the CRC check to what follows it."""
    data = bytearray(messageSet)
    position = 0
    while len(data) - position >= 16:
        (size,) = SIZE.unpack_from(data, position + 8)
        body = position + 12
        if size < 4 or body + size > len(data):
            break
        struct.pack_into(">I", data, body, zlib.crc32(data[body + 4 : body + size]))
        position = body + size
    return bytes(data)


def mutateBytes(rng, data, maxOps=3):
    """Flip bits, overwrite with interesting ints, insert, delete, truncate or extend."""
    data = bytearray(data)
    for _ in range(rng.randrange(1, maxOps + 1)):
        op = rng.randrange(8)
        at = rng.randrange(len(data)) if data else 0
        if op == 0 and data:
            data[at] ^= 1 << rng.randrange(8)
        elif op == 1 and data:
            data[at] = rng.randrange(256)
        elif op == 2 and len(data) >= 4:
            struct.pack_into(">I", data, min(at, len(data) - 4), rng.choice(INTERESTING_32) & 0xFFFFFFFF)
        elif op == 3 and len(data) >= 2:
            struct.pack_into(">H", data, min(at, len(data) - 2), rng.choice(INTERESTING_16) & 0xFFFF)
        elif op == 4:
            data[at:at] = rng.randbytes(rng.randrange(1, 32))
        elif op == 5 and data:
            del data[at : at + rng.randrange(1, 32)]
        elif op == 6:
            del data[at:]
        else:
            data += rng.randbytes(rng.randrange(1, 64))
    return bytes(data)


def validRequest(rng, cid):
    """A well-formed request (header + body, no size prefix) of a random served API."""
    kind = rng.randrange(7)
    partition = rng.choice([0, 1, 0, 1, 2, -1, 99])
    if kind == 0:
        ms = randomMessageSet(rng)
        if rng.random() < 0.3:
            ms = mutateBytes(rng, ms)
            if rng.random() < 0.7:
                ms = fixCrcs(ms)
        acks = rng.choice([1, 1, 0, -1, 2])
        return requestHeader(0, cid) + produceBody(acks, {rng.choice(FUZZ_TOPICS): {partition: ms}}, timeout=rng.choice([0, 1000, -1]))
    if kind == 1:
        topic = rng.choice([KNOWN, KNOWN, *FUZZ_TOPICS, "absent"])
        offset = rng.choice([0, 0, 1, 5, 100, -1, 1 << 40, rng.randrange(3000)])
        maxBytes = rng.choice([0, 1, 100, 4096, 1 << 20, -1])
        body = fetchBody({topic: {partition: (offset, maxBytes)}}, maxWait=rng.choice([0, 0, 10, 100]), minBytes=rng.choice([0, 1, 1 << 30]))
        return requestHeader(1, cid) + body
    if kind == 2:
        topic = rng.choice([KNOWN, *FUZZ_TOPICS, "absent"])
        when = rng.choice([-1, -2, 0, int(time.time() * 1000), 1 << 62, -3])
        return requestHeader(2, cid) + listOffsetsBody({topic: {partition: (when, rng.choice([0, 1, 10, 0x7FFFFFFF, -1]))}})
    if kind == 3:
        return requestHeader(3, cid) + metadataBody(rng.choice([[], [KNOWN], FUZZ_TOPICS, ["fz0", "fz0"]]))
    if kind == 4:
        version = rng.choice([0, 1, 2, 3, 4])
        body = b"" if version < 3 else b"\x00\x05fuzz\x061.0.0\x00"
        return requestHeader(18, cid, apiVersion=version) + body
    vector = bytearray(rng.choice(VECTORS))
    struct.pack_into(">i", vector, 4, cid)
    return bytes(vector)


def mutatedRequest(rng, cid):
    """A valid request, mutated one way or another; the size prefix is added by the caller."""
    payload = validRequest(rng, cid)
    choice = rng.random()
    if choice < 0.15:
        return payload  # stays valid: keeps long connections going
    if choice < 0.25:  # an unknown API key or version
        return struct.pack(">hh", rng.choice([-1, 4, 8, 10, 17, 19, 42, 75, 0x7FFF, 0, 1, 2, 3]), rng.choice([-1, 0, 1, 2, 9, 0x7FFF])) + payload[4:]
    # Mostly leave the header alone so that the mutations reach the decoders.
    keep = min(len(payload), 8 + rng.randrange(0, 12))
    return payload[:keep] + mutateBytes(rng, payload[keep:])


def hugeCountRequest(rng, cid):
    """Array counts, string and bytes lengths that the bytes behind them cannot hold."""
    big = rng.choice([0x7FFFFFFF, 1 << 28, 100000, -2, -0x80000000])
    small = rng.choice([0x7FFF, 1000, -2, -0x8000])
    kind = rng.randrange(7)
    if kind == 0:
        body = SIZE.pack(big) + b"\x00\x03fz0"
        return requestHeader(3, cid) + body
    if kind == 1:  # Produce: topics count
        return requestHeader(0, cid) + struct.pack(">hii", 1, 1000, big) + b"\x00\x03fz0"
    if kind == 2:  # Produce: partitions count
        return requestHeader(0, cid) + struct.pack(">hii", 1, 1000, 1) + b"\x00\x03fz0" + SIZE.pack(big) + SIZE.pack(0)
    if kind == 3:  # Produce: message set length
        return requestHeader(0, cid) + struct.pack(">hii", 1, 1000, 1) + b"\x00\x03fz0" + struct.pack(">ii", 1, 0) + SIZE.pack(big) + b"\x00" * 30
    if kind == 4:  # Fetch: partitions count
        return requestHeader(1, cid) + struct.pack(">iiii", -1, 0, 0, 1) + b"\x00\x0b" + KNOWN.encode() + SIZE.pack(big)
    if kind == 5:  # a topic name length
        return requestHeader(2, cid) + struct.pack(">ii", -1, 1) + struct.pack(">h", small) + b"abc"
    return struct.pack(">hhi", 3, 0, cid) + struct.pack(">h", small) + b"client"  # the client id length


def bomb(rng):
    """A message set whose compressed value expands past the broker's limit (or claims to)."""
    kind = rng.randrange(3)
    if kind == 0:
        value = _gzipBomb()
        return fixCrcs(encodeMessage(0, None, value, 1))
    if kind == 1:  # raw snappy whose length varint claims ~99 MB, with almost nothing behind it
        value = b"\x80\x80\x80\x2f" + b"\x00" * 20
        return encodeMessage(0, None, value, 2)
    inner = encodeMessageSet([(None, b"\x00" * 4000)] * 20)  # a valid set: expanded, checked, recompressed
    return encodeMessage(0, None, gzipped(inner), 1)


_bombs = {}


def _gzipBomb():
    """~110 MB of zeros in ~110 KB of gzip: more than --max-request-bytes allows to expand."""
    if "gzip" not in _bombs:
        deflater = zlib.compressobj(9, zlib.DEFLATED, 31)
        chunk = b"\x00" * (1 << 20)
        _bombs["gzip"] = b"".join(deflater.compress(chunk) for _ in range(110)) + deflater.flush()
    return _bombs["gzip"]


def withSize(rng, payload):
    """Frame C{payload}, mostly with its true size, sometimes with a lying one."""
    r = rng.random()
    if r < 0.80:
        return SIZE.pack(len(payload)) + payload
    if r < 0.88:  # claims more than follows: the broker waits, then sees the close
        return SIZE.pack(len(payload) + rng.randrange(1, 100000)) + payload
    if r < 0.94:  # claims less: the rest is read as the next frame
        return SIZE.pack(rng.randrange(0, len(payload))) + payload
    return SIZE.pack(rng.choice([-1, -0x80000000, MAX_REQUEST_BYTES + 1, 0x7FFFFFFF])) + payload


def structuralWire(rng, cid):
    """One short connection's worth of bytes, from garbage to a bomb: (bytes, frames in them)."""
    kind = rng.randrange(10)
    if kind == 0:  # garbage behind a valid size prefix
        garbage = rng.randbytes(rng.randrange(0, 300))
        return SIZE.pack(len(garbage)) + garbage, 1
    if kind == 1:  # frames too short to hold a header
        size = rng.randrange(0, 10)
        return SIZE.pack(size) + rng.randbytes(size), 1
    if kind == 2:  # pure garbage, size prefix included
        return rng.randbytes(rng.randrange(1, 200)), 1
    if kind == 3:
        return withSize(rng, hugeCountRequest(rng, cid)), 1
    if kind == 4 and rng.random() < 0.08:
        body = produceBody(1, {rng.choice(FUZZ_TOPICS): {0: bomb(rng)}})
        return withSize(rng, requestHeader(0, cid) + body), 1
    if kind == 5:  # a truncated valid frame
        wire = withSize(rng, validRequest(rng, cid))
        return wire[: rng.randrange(1, len(wire))], 1
    if kind == 6:  # several pipelined frames, one of them bad
        frames = [SIZE.pack(len(p)) + p for p in (validRequest(rng, cid + i) for i in range(rng.randrange(1, 6)))]
        frames.insert(rng.randrange(len(frames) + 1), withSize(rng, mutatedRequest(rng, cid + 9)))
        return b"".join(frames), len(frames)
    return withSize(rng, mutatedRequest(rng, cid)), 1


# --- the two transports ----------------------------------------------------------------


class Tally:
    """What was sent and how the broker reacted; the last wires sent, to replay a crash."""

    def __init__(self):
        self.frames = 0
        self.answered = 0
        self.closed = 0
        self.connections = 0
        self.recent = []

    def sent(self, wire, frames=1):
        self.frames += frames
        self.recent = (self.recent + [wire])[-10:]


def readFrame(sock, buffer):
    """One response frame from C{sock}: (frame, rest of buffer), or (None, buffer) on close."""
    while True:
        if len(buffer) >= 4:
            (size,) = SIZE.unpack_from(buffer)
            assert 4 <= size <= 200 << 20, f"response size prefix {size}"
            if len(buffer) >= 4 + size:
                return buffer[4 : 4 + size], buffer[4 + size :]
        try:
            chunk = sock.recv(1 << 20)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return None, buffer
        buffer += chunk


def probe(cid):
    payload = requestHeader(3, cid) + metadataBody([])
    return SIZE.pack(len(payload)) + payload


def tcpProbed(broker, rng, tally, frames):
    """Send mutated frames with their true size, each followed by a Metadata probe.

    The probe's answer (the connection survived the frame) or the broker closing
    the connection ends each frame's wait, so no time is spent on timeouts;
    after a close a new connection is made.
    """
    sock = None
    cid = 0
    try:
        for _ in range(frames):
            if sock is None:
                sock = socket.create_connection(("127.0.0.1", broker.port), timeout=15)
                tally.connections += 1
                buffer = b""
            cid += 1
            payload = mutatedRequest(rng, cid)
            wire = SIZE.pack(len(payload)) + payload
            tally.sent(wire)
            try:
                sock.sendall(wire + probe(PROBE_ID))
            except (BrokenPipeError, ConnectionResetError):
                pass
            while True:
                response, buffer = readFrame(sock, buffer)
                if response is None:
                    tally.closed += 1
                    sock.close()
                    sock = None
                    break
                if SIZE.unpack_from(response)[0] == PROBE_ID:
                    tally.answered += 1
                    break
    finally:
        if sock is not None:
            sock.close()


def tcpShort(broker, rng, tally, connections):
    """One connection per wire: send it, half-close, read until the broker closes."""
    for number in range(connections):
        wire, frames = structuralWire(rng, number)
        tally.sent(wire, frames)
        with socket.create_connection(("127.0.0.1", broker.port), timeout=15) as sock:
            tally.connections += 1
            sendHalfClosed(sock, wire, "the broker neither answered nor closed a half-closed connection")
        tally.closed += 1


def sendHalfClosed(sock, wire, silence):
    """Send C{wire}, half-close, read until the broker closes; C{silence}
    is the failure when it neither answers nor closes in time."""
    try:
        sock.sendall(wire)
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(1 << 20):
            pass
    except TimeoutError as e:
        raise AssertionError(silence) from e
    except OSError:  # reset, broken pipe, not connected: the broker closed first
        pass


def wsOpen(broker):
    return wsConnect(broker.websocketURL, proxy=None, max_size=None, compression=None, open_timeout=10, close_timeout=5)


def wsProbed(broker, rng, tally, frames):
    """The WebSocket version of L{tcpProbed}: each request in its own binary message, or split/merged."""
    cid = 0
    while cid < frames:
        with wsOpen(broker) as ws:
            tally.connections += 1
            while cid < frames:
                cid += 1
                r = rng.random()
                if r < 0.75:
                    payload = mutatedRequest(rng, cid)
                    messages = [SIZE.pack(len(payload)) + payload, probe(PROBE_ID)]
                elif r < 0.85:  # split anywhere, probe merged into the last piece
                    payload = mutatedRequest(rng, cid)
                    wire = SIZE.pack(len(payload)) + payload + probe(PROBE_ID)
                    cut = sorted(rng.sample(range(1, len(wire)), 2))
                    messages = [wire[: cut[0]], wire[cut[0] : cut[1]], wire[cut[1] :]]
                elif r < 0.95:
                    payload = hugeCountRequest(rng, cid)
                    messages = [SIZE.pack(len(payload)) + payload, probe(PROBE_ID)]
                else:  # a text message or an empty binary one
                    messages = [rng.choice(["fuzz", "", b""]), probe(PROBE_ID)]
                tally.sent(messages[0])
                try:
                    for message in messages:
                        ws.send(message)
                    while True:
                        answer = ws.recv(15)
                        assert isinstance(answer, bytes)
                        (size,) = SIZE.unpack_from(answer)
                        assert size == len(answer) - 4, "a WebSocket answer is not exactly one response"
                        if SIZE.unpack_from(answer, 4)[0] == PROBE_ID:
                            tally.answered += 1
                            break
                except ConnectionClosed:
                    tally.closed += 1
                    break  # closes this one; the next frame goes on a new connection


def wsRawFrames(broker, rng, tally, connections):
    """Garbage below the Kafka framing: random WebSocket frame headers and bytes after the handshake."""
    for _ in range(connections):
        try:
            connection = wsOpen(broker)
        except (InvalidHandshake, OSError):
            raise AssertionError("the WebSocket handshake failed during the fuzzing")
        with connection as ws:
            tally.connections += 1
            kind = rng.randrange(4)
            if kind == 0:  # a binary frame announcing 2**62 bytes
                wire = b"\x82\xff" + struct.pack(">Q", 1 << 62) + rng.randbytes(4)
            elif kind == 1:  # reserved bits, bad opcodes, unmasked frames
                wire = bytes([rng.choice([0x72, 0x83, 0x8B, 0x09, 0x02])]) + bytes([rng.randrange(126)]) + rng.randbytes(40)
            elif kind == 2:  # a masked binary frame holding a size prefix above --max-request-bytes
                wire = b"\x82\x84\x00\x00\x00\x00" + SIZE.pack(MAX_REQUEST_BYTES + 1)
            else:
                wire = rng.randbytes(rng.randrange(1, 100))
            tally.sent(wire)
            try:
                ws.socket.sendall(wire)
                ws.socket.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        tally.closed += 1


# --- the test ----------------------------------------------------------------------------


def knownMessages():
    """Varied keys and values for the topic checked byte for byte after the fuzzing."""
    rng = random.Random(SEED + 1)
    messages = []
    for i in range(1200):
        key = None if i % 7 == 0 else f"key-{i}".encode()
        value = b"" if i % 50 == 0 else rng.randbytes(rng.choice([1, 10, 100, 1000, 20000]))
        messages.append((i % PARTITIONS, key, value))
    return messages


def checkKnownTopic(broker, expected):
    """Every message of the known topic is there, in order, byte for byte, at offsets 0..n-1."""
    counts = {p: len(expected[p]) for p in expected}
    found = rdConsume(broker.bootstrap, KNOWN, counts, timeout=30)
    for partition, messages in found.items():
        assert [offset for offset, _, _ in messages] == list(range(counts[partition])), f"{KNOWN}/{partition}: offsets not contiguous"
        assert [(key, value) for _, key, value in messages] == expected[partition], f"{KNOWN}/{partition}: data changed"
    with RawClient(broker) as client:
        for partition in expected:
            assert client.latest(KNOWN, partition) == counts[partition], f"{KNOWN}/{partition}: log end moved"


def test_fuzzedFramesLeaveTheBrokerServing(brokerFactory):
    print(f"fuzz seed {SEED} (set KAFKAW_FUZZ_SEED to change it)")
    rng = random.Random(SEED)
    broker = brokerFactory("--num-partitions", str(PARTITIONS), "--max-fetch-wait-ms", "300")
    pid = broker.process.pid
    started = memory(pid)

    # Data stored before the fuzzing, half of it gzip-compressed by the client.
    messages = knownMessages()
    reports = rdProduce(broker.bootstrap, KNOWN, messages[:600])
    reports += rdProduce(broker.bootstrap, KNOWN, messages[600:], **{"compression.codec": "gzip"})
    assert all(err is None for err, *_ in reports)
    expected = {p: [(k, v) for q, k, v in messages if q == p] for p in range(PARTITIONS)}
    with RawClient(broker) as client:
        client.metadata(FUZZ_TOPICS)
    baseline = memory(pid)

    tcp, ws = Tally(), Tally()
    peakRss = baseline["VmRSS"]
    began = time.monotonic()
    try:
        # Rounds alternate the ways in, with a bystander connection that must
        # keep being served throughout.
        with RawClient(broker) as bystander:
            for _ in range(5):
                tcpShort(broker, rng, tcp, 500)
                tcpProbed(broker, rng, tcp, 500)
                wsProbed(broker, rng, ws, 380)
                wsRawFrames(broker, rng, ws, 30)
                assert broker.process.poll() is None, "the broker died"
                peakRss = max(peakRss, memory(pid)["VmRSS"])
                _, topics = bystander.metadata([KNOWN])
                assert topics[KNOWN] == (0, {p: (0, 0, [0], [0]) for p in range(PARTITIONS)})
                error, highWatermark, _ = decodeFetchResponse(bystander.call(1, fetchBody({KNOWN: {0: (0, 100)}})))[KNOWN][0]
                assert (error, highWatermark) == (0, len(expected[0]))
    except BaseException:
        print("last TCP wires sent:", *(w[:200].hex() for w in tcp.recent), sep="\n  ")
        print("last WebSocket messages sent:", *(repr(w[:200]) for w in ws.recent), sep="\n  ")
        raise
    elapsed = time.monotonic() - began
    after = memory(pid)

    with RawClient(broker) as client:
        _, topics = client.metadata([])
    print(
        f"fuzz: {tcp.frames} TCP frames on {tcp.connections} connections ({tcp.answered} answered, {tcp.closed} closed), "
        f"{ws.frames} WebSocket messages on {ws.connections} connections ({ws.answered} answered, {ws.closed} closed), "
        f"{elapsed:.1f} s; RSS at start {started['VmRSS']:.0f} MB, baseline {baseline['VmRSS']:.0f} MB, "
        f"peak (VmHWM) {after['VmHWM']:.0f} MB, now {after['VmRSS']:.0f} MB; {len(topics)} topics"
    )
    assert tcp.frames >= TCP_FRAMES and ws.frames >= WS_FRAMES
    assert broker.process.poll() is None, "the broker died"
    assert after["VmHWM"] - baseline["VmRSS"] < RSS_GROWTH_LIMIT_MB, f"peak RSS {after['VmHWM']:.0f} MB"
    assert after["VmRSS"] - baseline["VmRSS"] < 100, f"RSS stays at {after['VmRSS']:.0f} MB after the fuzzing"

    # A real client still works, and what was stored before is intact.
    checkKnownTopic(broker, expected)
    fresh = [(i % PARTITIONS, None, f"after-{i}".encode()) for i in range(200)]
    assert all(err is None for err, *_ in rdProduce(broker.bootstrap, "after-fuzz", fresh))
    got = rdConsume(broker.bootstrap, "after-fuzz", {0: 100, 1: 100})
    assert [v for _, _, v in got[0]] == [f"after-{i}".encode() for i in range(0, 200, 2)]
    more = rdProduce(broker.bootstrap, KNOWN, [(0, b"k", b"appended after the fuzzing")])
    assert more[0][0] is None and more[0][2] == len(expected[0])
    expected[0].append((b"k", b"appended after the fuzzing"))
    checkKnownTopic(broker, expected)

    log = broker.logText()
    unexpected = [line for line in log.splitlines() if re.search(r"Traceback|Unhandled|CRITICAL|#critical|#error\]", line)]
    assert not unexpected, "unexpected errors in the broker log:\n" + "\n".join(unexpected[:20])
    # Every refusal was logged as one.
    assert "closing the connection" in log and "rejected records" in log


# --- what the fuzzing and bench/soak.py found -------------------------------------------


def test_pipelinedProducesKeepEveryAcknowledgedMessage(brokerFactory):
    """Pipelined Produce requests, as librdkafka sends them: every ack is stored, in order, at its offset."""
    broker = brokerFactory()
    requests = 300  # well above --max-in-flight-requests: the gateway pauses and resumes reading
    with RawClient(broker) as client:
        client.metadata(["pipe"])
        wire, ids = b"", []
        for i in range(requests):
            client._correlationId += 1
            ids.append(client._correlationId)
            messageSet = encodeMessageSet([(None, b"%d-%d" % (i, j)) for j in range(1 + i % 3)])
            payload = requestHeader(0, client._correlationId) + produceBody(1, {"pipe": {0: messageSet}})
            wire += SIZE.pack(len(payload)) + payload
        client.sendRaw(wire)
        acks = [decodeProduceResponse(client.receive(cid))["pipe"][0] for cid in ids]
        total = sum(1 + i % 3 for i in range(requests))
        logEnd = client.latest("pipe", 0)
        stored = []
        while len(stored) < logEnd:
            error, _, data = client.fetch({"pipe": {0: (len(stored), 1 << 20)}})["pipe"][0]
            assert error == 0
            stored += [m.value for m in decodeMessageSet(data) if m.offset >= len(stored)]
    assert all(error == 0 for error, _ in acks)
    assert [offset for _, offset in acks] == [sum(1 + k % 3 for k in range(i)) for i in range(requests)]
    assert logEnd == total, f"{total} messages acknowledged, the log ends at {logEnd}"
    assert stored == [b"%d-%d" % (i, j) for i in range(requests) for j in range(1 + i % 3)]


def test_sigtermUnderLoadKeepsEveryAck(brokerFactory):
    """Clients producing at full speed while the broker gets SIGTERM: every ack kept, no error answered or logged.

    Requests still arriving once the store is closing are not answered (the
    connections close), so clients see a dropped connection, which they retry.
    """
    # No in-flight pause: the bug of test_pipelinedProducesKeepEveryAcknowledgedMessage would lose acks here too.
    broker = brokerFactory("--max-in-flight-requests", "1000000")
    with RawClient(broker) as client:
        client.metadata(["term"])
    messageSet = encodeMessageSet([(None, b"x" * 100)] * 10)
    payload = requestHeader(0, 1) + produceBody(1, {"term": {0: messageSet}})
    burst = (SIZE.pack(len(payload)) + payload) * 20
    acked, failed = [], []  # base offsets of acknowledged message sets; error codes
    sockets = [socket.create_connection(("127.0.0.1", broker.port), timeout=20) for _ in range(4)]

    def send(sock):
        try:
            while True:
                sock.sendall(burst)
        except OSError:
            pass

    def receive(sock):
        buffer = b""
        while True:
            response, buffer = readFrame(sock, buffer)
            if response is None:
                return
            error, offset = decodeProduceResponse(response[4:])["term"][0]
            if error:
                failed.append(error)
            else:
                acked.append(offset)

    threads = [threading.Thread(target=f, args=(s,), daemon=True) for s in sockets for f in (send, receive)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    code = broker.stop(signal.SIGTERM)
    for sock in sockets:
        sock.close()
    for thread in threads:
        thread.join(10)
    assert code in (0, -signal.SIGTERM)
    assert not re.search(r"#critical|#error\]|Traceback", broker.logText())
    broker.start()
    with RawClient(broker) as client:
        assert acked and max(acked) + 10 <= client.latest("term", 0)
    assert not failed, f"{len(failed)} Produce requests answered with errors {set(failed)} at the clean stop"


def test_fetchRepeatingAPartitionIsNotAmplified(brokerFactory):
    broker = brokerFactory("--storage", "memory")
    stored = encodeMessageSet([(None, b"x" * 1000)] * 16)
    with RawClient(broker) as client:
        client.metadata(["amp"])
        assert client.produce({"amp": {0: stored}}) == {"amp": {0: (0, 0)}}
        repeats = 300
        body = struct.pack(">iiii", -1, 0, 0, 1) + struct.pack(">h", 3) + b"amp" + SIZE.pack(repeats)
        body += struct.pack(">iqi", 0, 0, 1 << 20) * repeats
        response = client.receive(client.send(1, body))
    assert len(response) < 2 * len(stored), f"a {len(body)}-byte Fetch got a {len(response):,d}-byte answer"


# --- SASL frames (issue 15) ------------------------------------------------------------

SASL_FRAMES = 1500
SASL_MECHANISMS = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI", "", "plain", "SCRAM-SHA-256-PLUS"]


def _string(text):
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    return struct.pack(">h", len(data)) + data


def saslToken(rng):
    """A SASL token: right, wrong, almost right, or garbage."""
    kind = rng.randrange(6)
    if kind == 0:
        return b"\0alice\0" + rng.choice([b"fuzz-pass", b"wrong", b"", b"\xff\xfe"])  # PLAIN
    if kind == 1:
        return rng.choice([b"n,,n=alice,r=", b"y,,n=alice,r=", b"p=tls-unique,,n=alice,r=", b"n,a=x,n=alice,r="]) + rng.randbytes(8).hex().encode()
    if kind == 2:
        return b"c=biws,r=" + rng.randbytes(20).hex().encode() + b",p=" + rng.choice([b"AAAA", b"!!", b"", b"=" * 44])
    if kind == 3:
        return mutateBytes(rng, rng.choice([b"\0alice\0fuzz-pass", b"n,,n=alice,r=abcdef", b"c=biws,r=abc,p=AAAA"]))
    if kind == 4:
        return rng.randbytes(rng.choice([0, 1, 100, 5000]))
    return b"x" * rng.choice([65 * 1024, 200 * 1024])  # above the 64 KB allowed before authentication


def saslWire(rng, cid):
    """Size-prefixed frames of a SASL exchange in random order, truncated, oversized or mutated."""
    handshake = lambda version, mechanism: requestHeader(17, cid, apiVersion=version) + _string(mechanism)  # noqa: E731
    authenticate = lambda version, token: requestHeader(36, cid, apiVersion=version) + struct.pack(">i", len(token)) + token  # noqa: E731
    frames = []
    for _ in range(rng.randrange(1, 5)):
        step = rng.randrange(8)
        if step == 0:
            frames.append(handshake(rng.choice([0, 1, 1, 2, -1]), rng.choice(SASL_MECHANISMS)))
        elif step == 1:
            frames.append(authenticate(rng.choice([0, 1, 1, 2]), saslToken(rng)))
        elif step == 2:
            frames.append(saslToken(rng))  # a bare token, as after a handshake v0 (or out of place)
        elif step == 3:
            frames.append(requestHeader(3, cid) + metadataBody([]))  # before authentication: closes
        elif step == 4:
            frames.append(mutateBytes(rng, handshake(1, rng.choice(SASL_MECHANISMS))))
        elif step == 5:
            frames.append(mutateBytes(rng, authenticate(1, saslToken(rng))))
        elif step == 6:
            frames.append(requestHeader(18, cid, apiVersion=rng.choice([0, 1, 2, 3])) + (b"\x00\x05fuzz\x061.0.0\x00" if rng.random() < 0.5 else b""))
        else:
            frames.append(validRequest(rng, cid))
    wire = b"".join(SIZE.pack(len(f)) + f for f in frames)
    cut = rng.random()
    if cut < 0.1:
        wire = wire[: rng.randrange(len(wire))]  # truncated
    elif cut < 0.15:
        wire = SIZE.pack(rng.choice([-1, 1 << 30, 64 * 1024 + 1])) + wire  # a size the broker refuses
    return wire


def saslAuthenticated(broker, password):
    """A raw connection that authenticated with SaslHandshake v1 + SaslAuthenticate v1 PLAIN."""
    sock = socket.create_connection(("127.0.0.1", broker.port), timeout=15)
    token = b"\0alice\0" + password
    for payload in (requestHeader(17, 1, apiVersion=1) + _string("PLAIN"), requestHeader(36, 2, apiVersion=1) + struct.pack(">i", len(token)) + token):
        sock.sendall(SIZE.pack(len(payload)) + payload)
        response, _ = readFrame(sock, b"")
        assert response is not None and response[4:6] == b"\x00\x00", "authentication failed"
    return sock


def test_fuzzedSaslFramesLeaveTheBrokerServing(tmp_path):
    """SASL frames truncated, oversized, mutated and in the wrong order, from
    rotating client hosts (127.0.0.2-.250, loopback all; failures slow each down),
    while an authenticated connection from 127.0.0.1 is served throughout."""
    from tests.integration.conftest import BrokerProcess

    rng = random.Random(SEED + 15)
    dataDir = tmp_path / "data"
    dataDir.mkdir()
    added = subprocess.run(
        [sys.executable, "-m", "kafkaw.cli", "users", "add", "alice", "--data-dir", str(dataDir)],
        input="fuzz-pass\n", capture_output=True, text=True, timeout=30, cwd=ROOT,
    )
    assert added.returncode == 0, added.stderr
    broker = BrokerProcess(dataDir, ["--sasl", "--sasl-failure-delay-ms", "1"]).start()
    try:
        pid = broker.process.pid
        bystander = saslAuthenticated(broker, b"fuzz-pass")
        baseline = memory(pid)
        tally = Tally()
        for number in range(SASL_FRAMES):
            wire = saslWire(rng, number)
            tally.sent(wire)
            host = f"127.0.0.{2 + number % 249}"
            with socket.create_connection(("127.0.0.1", broker.port), timeout=15, source_address=(host, 0)) as sock:
                tally.connections += 1
                sendHalfClosed(sock, wire, f"the broker neither answered nor closed: {wire[:200].hex()}")
            if number % 100 == 0:
                assert broker.process.poll() is None, "the broker died"
                payload = requestHeader(3, PROBE_ID) + metadataBody([])
                bystander.sendall(SIZE.pack(len(payload)) + payload)
                response, _ = readFrame(bystander, b"")
                assert response is not None and SIZE.unpack_from(response)[0] == PROBE_ID
        bystander.close()
        after = memory(pid)
        print(f"SASL fuzz: {tally.frames} wires on {tally.connections} connections; RSS {baseline['VmRSS']:.0f} -> {after['VmRSS']:.0f} MB")
        assert after["VmRSS"] - baseline["VmRSS"] < 100
        assert saslAuthenticated(broker, b"fuzz-pass").close() is None  # still authenticates
        log = broker.logText()
        unexpected = [line for line in log.splitlines() if re.search(r"Traceback|Unhandled|CRITICAL|#critical|#error\]", line)]
        assert not unexpected, "unexpected errors in the broker log:\n" + "\n".join(unexpected[:20])
        assert "authentication failed for" in log and "request before SASL authentication" in log
    finally:
        broker.stop()
