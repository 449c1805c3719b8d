"""Capture request frames from real modern clients into tests/vectors/modern/.

    python tests/vectors/capture.py [--out DIR] [--clients librdkafka,kafka-python,aiokafka,kafkajs]
                                    [--codec-path DIR]

A tiny stand-in broker on 127.0.0.1 (asyncio, in a thread) answers just enough
for each client to send its requests: ApiVersions lists Kafka 2.3.0's versions
of Produce 0-7, Fetch 0-11, ListOffsets 0-5, Metadata 0-8, ApiVersions 0-2 and
InitProducerId 0-1 (an ApiVersions above 2 gets Kafka's v0-format error 35 with
the table); Metadata names this broker (node 1) as the leader of partition 0 of
every topic asked and as the controller, with a cluster id; InitProducerId
gives a new producer id, epoch 0; Produce answers offset 0, no error; Fetch
answers empty, ListOffsets offset 0. Any other request closes the connection.

Each request frame (without its 4-byte size prefix) is kept with its parsed
header; this script parses every body it answers to the end (a frame with bytes
left over or missing fails the run), checks the CRC-32C of every produced
record batch, decodes its records, and writes the frames chosen for each client
to DIR as CLIENT-API-vVERSION[-VARIANT].bin. It prints one line per file, which
is where the table in tests/vectors/README.md comes from.

Not a test: run by hand when a vector is to be added. The Python clients run in
this process (kafka-python takes its snappy/lz4/zstd libraries from
--codec-path if given: pip install --target DIR python-snappy lz4 zstandard);
kafkajs runs under node from tests/clients/node.
"""

import argparse
import asyncio
import gzip
import itertools
import json
import os
import struct
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
NODE_DIR = os.path.join(HERE, "..", "clients", "node")

TOPIC = "vec"
KEYS = [None, b"key-1", None, b"key-3", None]
VALUES = [b"value-%d" % i for i in range(5)]
# when a client sends the 5 short records uncompressed although a codec was asked
# (librdkafka does when compressing does not make the batch smaller), they are sent again
# with these values, as in tests/integration/test_client_matrix.py
PADDED = [b"value-%d" % i + b"-kafkaw" * 30 for i in range(5)]
HEADERS = [("trace", b"t-%d" % i) for i in range(5)]  # one header per record in the headers case
TIMESTAMP = 1700000000000  # create-time timestamps of the headers case: TIMESTAMP + i

PRODUCE, FETCH, LIST_OFFSETS, METADATA, API_VERSIONS, INIT_PRODUCER_ID = 0, 1, 2, 3, 18, 22
NAMES = {PRODUCE: "produce", FETCH: "fetch", LIST_OFFSETS: "listoffsets", METADATA: "metadata",
         API_VERSIONS: "apiversions", INIT_PRODUCER_ID: "initproducerid"}
DISPLAY = {PRODUCE: "Produce", FETCH: "Fetch", LIST_OFFSETS: "ListOffsets", METADATA: "Metadata",
           API_VERSIONS: "ApiVersions", INIT_PRODUCER_ID: "InitProducerId"}
VERSIONS = {PRODUCE: (0, 7), FETCH: (0, 11), LIST_OFFSETS: (0, 5), METADATA: (0, 8),
            API_VERSIONS: (0, 2), INIT_PRODUCER_ID: (0, 1)}
FIND_COORDINATOR = {10: (0, 2)}
CODECS = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}
NODE_ID = 1
CLUSTER_ID = "kafkaw-capture"


# -- encoding -------------------------------------------------------------------


def i8(v):
    return struct.pack(">b", v)


def i16(v):
    return struct.pack(">h", v)


def i32(v):
    return struct.pack(">i", v)


def i64(v):
    return struct.pack(">q", v)


def string(s):
    if s is None:
        return i16(-1)
    b = s.encode()
    return i16(len(b)) + b


def array(items):
    items = list(items)
    return i32(len(items)) + b"".join(items)


# -- decoding -------------------------------------------------------------------


class Short(ValueError):
    pass


class Reader:
    def __init__(self, data, pos=0):
        self.data, self.pos = data, pos

    def take(self, n):
        if n < 0 or self.pos + n > len(self.data):
            raise Short("need %d bytes at %d of %d" % (n, self.pos, len(self.data)))
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def fmt(self, f):
        return struct.unpack(f, self.take(struct.calcsize(f)))[0]

    def i8(self):
        return self.fmt(">b")

    def i16(self):
        return self.fmt(">h")

    def i32(self):
        return self.fmt(">i")

    def i64(self):
        return self.fmt(">q")

    def string(self):
        n = self.i16()
        return None if n == -1 else self.take(n).decode()

    def bytes(self):
        n = self.i32()
        return None if n == -1 else self.take(n)

    def array(self, item):
        n = self.i32()
        return None if n == -1 else [item() for _ in range(n)]

    def uvarint(self):
        shift = value = 0
        while True:
            b = self.take(1)[0]
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value
            shift += 7

    def varint(self):
        v = self.uvarint()
        return (v >> 1) ^ -(v & 1)

    def vbytes(self):
        n = self.varint()
        return None if n < 0 else self.take(n)

    def taggedFields(self):
        for _ in range(self.uvarint()):
            self.uvarint()
            self.take(self.uvarint())

    def end(self):
        if self.pos != len(self.data):
            raise ValueError("%d bytes left over" % (len(self.data) - self.pos))


def _crc32cTable():
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C = _crc32cTable()


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC32C[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def decompress(codec, data):
    import cramjam

    if codec == 0:
        return data
    if codec == 1:
        return gzip.decompress(data)
    if codec == 2:
        if data.startswith(b"\x82SNAPPY\x00"):  # xerial / snappy-java framing
            r, out = Reader(data, 16), b""
            while r.pos < len(data):
                out += bytes(cramjam.snappy.decompress_raw(r.take(r.i32())))
            return out
        return bytes(cramjam.snappy.decompress_raw(data))
    if codec == 3:
        return bytes(cramjam.lz4.decompress(data))
    if codec == 4:
        return bytes(cramjam.zstd.decompress(data))
    raise ValueError("codec %d" % codec)


def decodeBatches(records):
    """Record batches v2 (or a v0/v1 message set, summarised) of one partition."""
    out = []
    r = Reader(records)
    while r.pos < len(records):
        start = r.pos
        baseOffset = r.i64()
        length = r.i32()
        body = Reader(r.take(length))
        leaderEpoch = body.i32()
        magic = body.i8()
        if magic != 2:
            out.append({"magic": magic, "bytes": length + 12})
            continue
        crc = body.fmt(">I")
        if crc32c(body.data[body.pos:]) != crc:
            raise ValueError("batch at %d: CRC-32C mismatch" % start)
        attributes = body.i16()
        batch = {
            "magic": 2, "baseOffset": baseOffset, "leaderEpoch": leaderEpoch,
            "codec": CODECS[attributes & 7], "timestampType": "log-append" if attributes & 8 else "create",
            "transactional": bool(attributes & 16), "control": bool(attributes & 32),
            "lastOffsetDelta": body.i32(), "baseTimestamp": body.i64(), "maxTimestamp": body.i64(),
            "producerId": body.i64(), "producerEpoch": body.i16(), "baseSequence": body.i32(),
        }
        count = body.i32()
        payload = body.take(len(body.data) - body.pos)
        if attributes & 7 == 2:
            batch["snappyFraming"] = "xerial" if payload.startswith(b"\x82SNAPPY\x00") else "raw"
        inner = Reader(decompress(attributes & 7, payload))
        recs = []
        for _ in range(count):
            size = inner.varint()
            rec = Reader(inner.take(size))
            rec.i8()
            tsDelta, offDelta = rec.varint(), rec.varint()
            key, value = rec.vbytes(), rec.vbytes()
            headers = [(rec.vbytes(), rec.vbytes()) for _ in range(rec.varint())]
            rec.end()
            recs.append({"offsetDelta": offDelta, "timestampDelta": tsDelta, "key": key, "value": value,
                         "headers": headers})
        inner.end()
        batch["records"] = recs
        out.append(batch)
    return out


# -- requests: header and body --------------------------------------------------


def parseHeader(frame):
    r = Reader(frame)
    apiKey, version, correlationId = r.i16(), r.i16(), r.i32()
    clientId = r.string()
    if apiKey == API_VERSIONS and version >= 3:
        r.taggedFields()  # request header v2
    return r, {"apiKey": apiKey, "version": version, "correlationId": correlationId, "clientId": clientId}


def parseProduce(r, v):
    req = {"transactionalId": r.string() if v >= 3 else None, "acks": r.i16(), "timeout": r.i32()}
    req["topics"] = r.array(lambda: (r.string(), r.array(lambda: (r.i32(), r.bytes()))))
    return req


def parseFetch(r, v):
    req = {"replicaId": r.i32(), "maxWait": r.i32(), "minBytes": r.i32()}
    if v >= 3:
        req["maxBytes"] = r.i32()
    if v >= 4:
        req["isolationLevel"] = r.i8()
    if v >= 7:
        req["sessionId"], req["sessionEpoch"] = r.i32(), r.i32()

    def partition():
        p = {"partition": r.i32()}
        if v >= 9:
            p["currentLeaderEpoch"] = r.i32()
        p["fetchOffset"] = r.i64()
        if v >= 5:
            p["logStartOffset"] = r.i64()
        p["maxBytes"] = r.i32()
        return p

    req["topics"] = r.array(lambda: (r.string(), r.array(partition)))
    if v >= 7:
        req["forgotten"] = r.array(lambda: (r.string(), r.array(r.i32)))
    if v >= 11:
        req["rackId"] = r.string()
    return req


def parseListOffsets(r, v):
    req = {"replicaId": r.i32()}
    if v >= 2:
        req["isolationLevel"] = r.i8()

    def partition():
        p = {"partition": r.i32()}
        if v >= 4:
            p["currentLeaderEpoch"] = r.i32()
        p["timestamp"] = r.i64()
        if v == 0:
            p["maxOffsets"] = r.i32()
        return p

    req["topics"] = r.array(lambda: (r.string(), r.array(partition)))
    return req


def parseMetadata(r, v):
    req = {"topics": r.array(r.string)}
    if v >= 4:
        req["allowAutoTopicCreation"] = bool(r.i8())
    if v >= 8:
        req["includeClusterAuthorizedOperations"] = bool(r.i8())
        req["includeTopicAuthorizedOperations"] = bool(r.i8())
    return req


def parseApiVersions(r, v):
    req = {}
    if v >= 3:
        req["clientSoftwareName"] = r.take(r.uvarint() - 1).decode()
        req["clientSoftwareVersion"] = r.take(r.uvarint() - 1).decode()
        r.taggedFields()
    return req


def parseInitProducerId(r, v):
    return {"transactionalId": r.string(), "transactionTimeoutMs": r.i32()}


PARSERS = {PRODUCE: parseProduce, FETCH: parseFetch, LIST_OFFSETS: parseListOffsets, METADATA: parseMetadata,
           API_VERSIONS: parseApiVersions, INIT_PRODUCER_ID: parseInitProducerId}


def parseRequest(frame):
    """(header, body) of a request this broker serves; raises if it is not complete."""
    r, header = parseHeader(frame)
    key, v = header["apiKey"], header["version"]
    if key not in PARSERS:
        return header, None
    if key != API_VERSIONS and not VERSIONS[key][0] <= v <= VERSIONS[key][1]:
        raise ValueError("%s v%d is not listed" % (NAMES[key], v))
    body = PARSERS[key](r, v)
    r.end()
    if key == PRODUCE:
        for _, partitions in body["topics"]:
            for _, records in partitions:
                decodeBatches(records)
    return header, body


# -- the stand-in broker --------------------------------------------------------


class Broker:
    def __init__(self):
        self.frames = []  # (header, body, frame bytes, connection number)
        self.lock = threading.Lock()
        self.producerIds = itertools.count(1000)
        self.extra = {}  # more ApiVersions entries for one scenario
        self.connections = itertools.count(1)
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.ready.wait()

    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = self.server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()

    def take(self):
        with self.lock:
            frames, self.frames = self.frames, []
        return frames

    async def _serve(self, reader, writer):
        number = next(self.connections)
        try:
            while True:
                size = struct.unpack(">i", await reader.readexactly(4))[0]
                frame = await reader.readexactly(size)
                header, body = parseRequest(frame)
                with self.lock:
                    self.frames.append((header, body, frame, number))
                answer = await self.answer(header, body)
                if answer is False:
                    print("  closing on %s v%d from %s" % (header["apiKey"], header["version"], header["clientId"]))
                    break
                if answer is not None:
                    payload = i32(header["correlationId"]) + answer
                    writer.write(i32(len(payload)) + payload)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except Exception as e:  # a broken frame: keep it visible, fail the capture
            print("  BAD FRAME: %r" % (e,))
            with self.lock:
                self.frames.append(({"apiKey": -1, "version": -1, "error": repr(e)}, None, b"", number))
        finally:
            writer.close()

    async def answer(self, header, body):
        key, v = header["apiKey"], header["version"]
        if key == API_VERSIONS:
            table = array(i16(k) + i16(lo) + i16(hi) for k, (lo, hi) in sorted({**VERSIONS, **self.extra}.items()))
            if v > VERSIONS[API_VERSIONS][1]:
                return i16(35) + table  # Kafka: a v0-format answer, UNSUPPORTED_VERSION
            return i16(0) + table + (i32(0) if v >= 1 else b"")
        if key == METADATA:
            return self.metadata(v, body["topics"])
        if key == INIT_PRODUCER_ID:
            return i32(0) + i16(0) + i64(next(self.producerIds)) + i16(0)
        if key == PRODUCE:
            if body["acks"] == 0:
                return None
            topics = array(string(t) + array(
                i32(p) + i16(0) + i64(0) + (i64(-1) if v >= 2 else b"") + (i64(0) if v >= 5 else b"")
                for p, _ in parts) for t, parts in body["topics"])
            return topics + (i32(0) if v >= 1 else b"")
        if key == FETCH:
            await asyncio.sleep(min(body["maxWait"], 200) / 1000)

            def partition(p):
                out = i32(p["partition"]) + i16(0) + i64(0)
                if v >= 4:
                    out += i64(0) + (i64(0) if v >= 5 else b"") + i32(-1)  # lso, log start, no aborted txns
                if v >= 11:
                    out += i32(-1)  # preferred read replica
                return out + i32(0)  # empty records

            topics = array(string(t) + array(partition(p) for p in parts) for t, parts in body["topics"])
            head = (i32(0) if v >= 1 else b"") + (i16(0) + i32(0) if v >= 7 else b"")
            return head + topics
        if key == LIST_OFFSETS:
            def partition(p):
                if v == 0:
                    return i32(p["partition"]) + i16(0) + array([i64(0)])
                return i32(p["partition"]) + i16(0) + i64(-1) + i64(0) + (i32(-1) if v >= 4 else b"")

            topics = array(string(t) + array(partition(p) for p in parts) for t, parts in body["topics"])
            return (i32(0) if v >= 2 else b"") + topics
        return False

    def metadata(self, v, topics):
        if not topics:
            topics = [] if (topics == [] and v >= 1) else [TOPIC]
        broker = i32(NODE_ID) + string("127.0.0.1") + i32(self.port) + (string(None) if v >= 1 else b"")
        out = (i32(0) if v >= 3 else b"") + array([broker])
        if v >= 2:
            out += string(CLUSTER_ID)
        if v >= 1:
            out += i32(NODE_ID)

        def topic(name):
            part = i16(0) + i32(0) + i32(NODE_ID)
            if v >= 7:
                part += i32(0)  # leader epoch
            part += array([i32(NODE_ID)]) + array([i32(NODE_ID)])
            if v >= 5:
                part += array([])  # offline replicas
            t = i16(0) + string(name) + (i8(0) if v >= 1 else b"") + array([part])
            return t + (i32(-2147483648) if v >= 8 else b"")

        out += array(topic(t) for t in topics)
        return out + (i32(-2147483648) if v >= 8 else b"")


# -- drivers --------------------------------------------------------------------


def records(headers, values=VALUES):
    for i in range(5):
        yield KEYS[i], values[i], ([HEADERS[i]] if headers else None), (TIMESTAMP + i if headers else None)


def librdkafkaProduce(address, codec, headers, values=VALUES):
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": address, "enable.idempotence": True, "compression.type": codec,
                  "linger.ms": 100})
    for key, value, hdrs, ts in records(headers, values):
        kwargs = {"partition": 0, "key": key}
        if hdrs:
            kwargs.update(headers=hdrs, timestamp=ts)
        p.produce(TOPIC, value, **kwargs)
    if p.flush(10) != 0:
        raise RuntimeError("librdkafka: messages left after flush")


def librdkafkaConsume(address):
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": address, "group.id": "vec-capture", "enable.auto.commit": False})
    c.assign([TopicPartition(TOPIC, 0, OFFSET_BEGINNING)])
    deadline = time.time() + 2
    while time.time() < deadline:
        c.poll(0.2)
    c.close()


def _kafkaPython(codecPath):
    if codecPath and codecPath not in sys.path:
        sys.path.insert(0, codecPath)
    import kafka
    return kafka


def kafkaPythonProduce(address, codec, headers, values=VALUES, codecPath=None):
    kafka = _kafkaPython(codecPath)
    p = kafka.KafkaProducer(bootstrap_servers=address, compression_type=None if codec == "none" else codec,
                            linger_ms=100)
    futures = []
    for key, value, hdrs, ts in records(headers, values):
        futures.append(p.send(TOPIC, value=value, key=key, partition=0, headers=hdrs, timestamp_ms=ts))
    p.flush(10)
    for f in futures:
        f.get(10)
    p.close(5)


def kafkaPythonConsume(address, codecPath=None):
    kafka = _kafkaPython(codecPath)
    c = kafka.KafkaConsumer(bootstrap_servers=address, group_id=None, enable_auto_commit=False)
    tp = kafka.TopicPartition(TOPIC, 0)
    c.assign([tp])
    c.seek_to_beginning(tp)
    c.poll(timeout_ms=1500)
    c.close()


def aiokafkaProduce(address, codec, headers, values=VALUES):
    from aiokafka import AIOKafkaProducer

    async def run():
        p = AIOKafkaProducer(bootstrap_servers=address, enable_idempotence=True,
                             compression_type=None if codec == "none" else codec, linger_ms=100)
        await p.start()
        try:
            futures = [await p.send(TOPIC, value=value, key=key, partition=0, headers=hdrs, timestamp_ms=ts)
                       for key, value, hdrs, ts in records(headers, values)]
            await asyncio.gather(*futures)
        finally:
            await p.stop()

    asyncio.run(run())


def aiokafkaConsume(address):
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def run():
        c = AIOKafkaConsumer(bootstrap_servers=address, group_id=None, enable_auto_commit=False)
        await c.start()
        try:
            tp = TopicPartition(TOPIC, 0)
            c.assign([tp])
            await c.seek_to_beginning(tp)
            await c.getmany(timeout_ms=1500)
        finally:
            await c.stop()

    asyncio.run(run())


KAFKAJS = r"""
const { CompressionTypes, Kafka, logLevel, Partitioners } = require('kafkajs')
const [mode, broker, codec, headers] = process.argv.slice(1)
const kafka = new Kafka({ clientId: 'kafkajs-capture', brokers: [broker], logLevel: logLevel.NOTHING,
  retry: { retries: 1, initialRetryTime: 100, maxRetryTime: 500 } })
const KEYS = [null, 'key-1', null, 'key-3', null]
async function produce () {
  const producer = kafka.producer({ idempotent: true, createPartitioner: Partitioners.DefaultPartitioner })
  await producer.connect()
  const messages = KEYS.map((key, i) => {
    const m = { key, value: `value-${i}`, partition: 0 }
    if (headers === 'headers') Object.assign(m, { headers: { trace: `t-${i}` }, timestamp: String(TIMESTAMP + i) })
    return m
  })
  await producer.send({ topic: 'vec', acks: -1, compression: CompressionTypes[codec], messages })
  await producer.disconnect()
}
async function consume () {
  // kafkajs's consumer needs a consumer group (FindCoordinator, JoinGroup, ...), which this
  // capture broker does not serve: ListOffsets comes from the admin client, Fetch from the
  // cluster's own broker object with the consumer's default settings.
  const admin = kafka.admin()
  await admin.connect()
  await admin.fetchTopicOffsets('vec')
  await admin.disconnect()
  const createCluster = Object.getOwnPropertySymbols(kafka).find(s => String(s).includes('createCluster'))
  const cluster = kafka[createCluster]({ isolationLevel: 1 })
  await cluster.connect()
  await cluster.refreshMetadata(['vec'])
  const leader = await cluster.findBroker({ nodeId: String(cluster.findTopicPartitionMetadata('vec')[0].leader) })
  await leader.fetch({ replicaId: -1, isolationLevel: 1, maxWaitTime: 5000, minBytes: 1, maxBytes: 10485760,
    topics: [{ topic: 'vec', partitions: [{ partition: 0, fetchOffset: '0', maxBytes: 1048576 }] }] })
  await cluster.disconnect()
}
({ produce, consume })[mode]().then(() => process.exit(0), (e) => { console.error(e); process.exit(1) })
""".replace("TIMESTAMP", str(TIMESTAMP))


def kafkajs(address, mode, codec="None", headers=""):
    subprocess.run(["node", "-e", KAFKAJS, mode, address, codec, headers], cwd=NODE_DIR, check=True, timeout=60)


# -- scenarios ------------------------------------------------------------------

# client -> (codecs, produce(address, codec, headers), consume(address), client and version)
def clients(codecPath):
    import aiokafka
    import confluent_kafka

    return {
        "librdkafka": (["none", "gzip", "snappy", "lz4", "zstd"], librdkafkaProduce, librdkafkaConsume,
                       "confluent-kafka %s / librdkafka %s" % (confluent_kafka.__version__,
                                                               confluent_kafka.libversion()[0])),
        "kafka-python": (["none", "gzip", "snappy", "lz4", "zstd"],
                         lambda a, c, h, v: kafkaPythonProduce(a, c, h, v, codecPath),
                         lambda a: kafkaPythonConsume(a, codecPath),
                         "kafka-python %s" % (_kafkaPython(codecPath).__version__,)),
        "aiokafka": (["none", "gzip", "snappy", "lz4", "zstd"], aiokafkaProduce, aiokafkaConsume,
                     "aiokafka %s" % (aiokafka.__version__,)),
        "kafkajs": (["none", "gzip"],
                    lambda a, c, h, v: kafkajs(a, "produce", {"none": "None", "gzip": "GZIP"}[c], "headers" if h else ""),
                    lambda a: kafkajs(a, "consume"),
                    "kafkajs %s" % (json.load(open(os.path.join(NODE_DIR, "node_modules", "kafkajs",
                                                                "package.json")))["version"],)),
    }


def describe(header, body):
    key, v = header["apiKey"], header["version"]
    if key == PRODUCE:
        (topic, [(partition, recs)]), = body["topics"]
        parts = ["acks %d" % body["acks"], "%s/%d" % (topic, partition)]
        for b in decodeBatches(recs):
            if b["magic"] != 2:
                parts.append("magic %d" % b["magic"])
                continue
            parts.append("%d records, %s%s" % (len(b["records"]), b["codec"],
                                                " (%s)" % b["snappyFraming"] if "snappyFraming" in b else ""))
            parts.append("producer id %d epoch %d base seq %d" % (b["producerId"], b["producerEpoch"],
                                                                 b["baseSequence"]))
            keys = [r["key"] for r in b["records"]]
            values = [r["value"] for r in b["records"]]
            if values == PADDED:
                parts.append("values padded (`value-i` + `-kafkaw` * 30)")
            elif keys != KEYS or values != VALUES:
                parts.append("keys %r values %r" % (keys, values))
            if any(r["headers"] for r in b["records"]):
                parts.append("headers %s" % ", ".join("%s=%s" % (k.decode(), val.decode())
                                                      for r in b["records"] for k, val in r["headers"]))
                parts.append("%s timestamps %d..%d" % (b["timestampType"], b["baseTimestamp"], b["maxTimestamp"]))
        return ", ".join(parts)
    if key == FETCH:
        (topic, [p]), = body["topics"]
        bits = ["max_wait %d" % body["maxWait"], "min_bytes %d" % body["minBytes"]]
        for f in ("maxBytes", "isolationLevel", "sessionId", "sessionEpoch", "rackId"):
            if f in body:
                bits.append("%s %r" % (f, body[f]))
        bits.append("%s/%d %s" % (topic, p.pop("partition"), " ".join("%s %s" % kv for kv in p.items())))
        return ", ".join(bits)
    if key == LIST_OFFSETS:
        (topic, [p]), = body["topics"]
        return "replica %d%s, %s/%d %s" % (body["replicaId"],
                                          ", isolation %d" % body["isolationLevel"] if "isolationLevel" in body else "",
                                          topic, p.pop("partition"), " ".join("%s %s" % kv for kv in p.items()))
    if key == METADATA:
        return ", ".join("%s %s" % kv for kv in body.items())
    if key == API_VERSIONS:
        return ", ".join("%s %s" % kv for kv in body.items()) or "(empty body)"
    if key == INIT_PRODUCER_ID:
        return "transactional id %r, timeout %d" % (body["transactionalId"], body["transactionTimeoutMs"])
    return ""


def save(out, name, header, body, frame, client, settings, rows):
    path = os.path.join(out, name)
    with open(path, "wb") as f:
        f.write(frame)
    rows.append((name, client, header, settings, describe(header, body)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.path.join(HERE, "modern"))
    parser.add_argument("--clients", default="librdkafka,kafka-python,aiokafka,kafkajs")
    parser.add_argument("--codec-path", default=None)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    broker = Broker()
    address = "127.0.0.1:%d" % broker.port
    table = clients(args.codec_path)
    rows = []
    failed = False
    for client in args.clients.split(","):
        codecs, produce, consume, version = table[client]
        seen = []  # every frame of this client, for the other APIs
        for variant in codecs + ["headers"]:
            codec, headers = ("none", True) if variant == "headers" else (variant, False)
            # the short records first; if the client sent them uncompressed, the padded ones,
            # then both again with FindCoordinator listed (librdkafka's LZ4 feature needs it)
            for values, extra in ((VALUES, {}), (PADDED, {}), (VALUES, FIND_COORDINATOR), (PADDED, FIND_COORDINATOR)):
                broker.extra = extra
                print("%s produce %s%s%s" % (client, variant, " (padded values)" if values is PADDED else "",
                                             " (FindCoordinator listed)" if extra else ""))
                try:
                    produce(address, codec, headers, values)
                except Exception as e:
                    print("  FAILED: %r" % (e,))
                    failed = True
                frames = broker.take()
                seen.extend(frames)
                produces = [f for f in frames if f[0]["apiKey"] == PRODUCE]
                if not produces:
                    break
                header, body, frame, _ = produces[0]
                (_, [(_, recs)]), = body["topics"]
                batch = decodeBatches(recs)
                if batch[0].get("codec") == codec:
                    break
                print("  sent %s, not %s" % (batch[0].get("codec"), codec))
            broker.extra = {}
            if not produces:
                print("  no Produce request")
                failed = True
                continue
            if len(produces) != 1 or len(batch) != 1 or len(batch[0].get("records", [])) != 5:
                print("  expected one Produce of one batch of 5 records; got %d requests" % len(produces))
                failed = True
            if batch[0].get("codec") != codec:
                print("  sent %s, not %s" % (batch[0].get("codec"), codec))
                failed = True
            settings = "idempotent, " if batch[0].get("producerId", -1) >= 0 else ""
            settings += "compression %s" % codec + (", headers and create time" if headers else "")
            if extra:
                settings += " (ApiVersions also listing FindCoordinator 0-2)"
            save(args.out, "%s-produce-v%d-%s.bin" % (client, header["version"], variant),
                 header, body, frame, version, settings, rows)
        print("%s consume" % client)
        try:
            consume(address)
        except Exception as e:
            print("  FAILED: %r" % (e,))
            failed = True
        consumed = broker.take()
        seen.extend(consumed)
        for h, _, _, _ in seen:
            if h["apiKey"] == -1:
                failed = True
        print("  requests: %s" % ", ".join(sorted({"%s v%d" % (NAMES.get(h["apiKey"], h["apiKey"]), h["version"])
                                                   for h, _, _, _ in seen})))
        # first frame of each ApiVersions version; the first InitProducerId; the first
        # Metadata naming the topic; the consumer's first ListOffsets and Fetch
        chosen = []
        for v in sorted({h["version"] for h, _, _, _ in seen if h["apiKey"] == API_VERSIONS}, reverse=True):
            chosen.append(("apiversions-v%d" % v,
                           next(f for f in seen if f[0]["apiKey"] == API_VERSIONS and f[0]["version"] == v),
                           "first request on a connection"))
        for key, pool, note in ((METADATA, seen, "producer"), (INIT_PRODUCER_ID, seen, "idempotent producer"),
                                (LIST_OFFSETS, consumed, "consumer"), (FETCH, consumed, "consumer")):
            frames = [f for f in pool if f[0]["apiKey"] == key]
            if key == METADATA:
                frames = [f for f in frames if f[1]["topics"]] or frames
            if not frames:
                print("  no %s request" % NAMES[key])
                continue
            chosen.append(("%s-v%d" % (NAMES[key], frames[0][0]["version"]), frames[0], note))
        for name, (header, body, frame, _), note in chosen:
            save(args.out, "%s-%s.bin" % (client, name), header, body, frame, version, note, rows)
    print()
    print("| file | client | settings | request |")
    print("|---|---|---|---|")
    for name, client, header, settings, what in rows:
        print("| `%s` | %s, client id `%s` | %s | %s v%d: %s |" % (
            name, client, header["clientId"], settings, DISPLAY[header["apiKey"]],
            header["version"], what))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
