"""Property tests: the codec never fails with anything but its own errors,
and what a client encodes decodes back to the same values (the Kafka 0.8
requests through the schema codec at version 0, and message sets)."""

import gzip
import struct
import zlib

import cramjam
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kafkaw.protocol import api, schema
from kafkaw.protocol.definitions import FETCH, LIST_OFFSETS, METADATA, PRODUCE
from kafkaw.protocol.errors import CodecError, MessageSetError
from kafkaw.protocol.messages import (
    assignOffsets,
    decodeMessageSet,
    encodeMessageSet,
    expandMessageSet,
)

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LIMIT = 1 << 20  # maxMessageBytes / maxExpandedBytes small enough to keep bombs cheap

int16s = st.integers(-(2**15), 2**15 - 1)
int32s = st.integers(-(2**31), 2**31 - 1)
int64s = st.integers(-(2**63), 2**63 - 1)
names = st.text(max_size=20)
optionalBytes = st.none() | st.binary(max_size=40)


# --- a small client-side encoder, independent of kafkaw's ------------------


def string(value):
    if value is None:
        return struct.pack(">h", -1)
    data = value.encode("utf-8")
    return struct.pack(">h", len(data)) + data


def array(items, encodeItem):
    return struct.pack(">i", len(items)) + b"".join(encodeItem(i) for i in items)


def header(apiKey, correlationId, clientId):
    return struct.pack(">hhi", apiKey, 0, correlationId) + string(clientId)


def topics(items, encodePartition):
    return array(items, lambda t: string(t[0]) + array(t[1], encodePartition))


def produceBody(r):
    def partition(p):
        return struct.pack(">ii", p.partitionIndex, len(p.records)) + p.records

    return struct.pack(">hi", r.acks, r.timeoutMs) + topics(r.topics, partition)


def fetchBody(r):
    return struct.pack(">iii", r.replicaId, r.maxWait, r.minBytes) + topics(
        r.topics, lambda p: struct.pack(">iqi", p.partitionIndex, p.fetchOffset, p.maxBytes)
    )


def listOffsetsBody(r):
    return struct.pack(">i", r.replicaId) + topics(
        r.topics, lambda p: struct.pack(">iqi", p.partitionIndex, p.timestamp, p.maxNumOffsets)
    )


def metadataBody(r):
    return array(r.topics, lambda t: string(t.name))


# --- the schema codec's values at version 0 ------------------------------------


def topicLists(topic, partitions):
    """Lists of topics of namedtuple type C{topic}: (name, [partition])."""
    return st.lists(st.builds(topic, names, st.lists(partitions, max_size=3)), max_size=3)


produceRequests = st.builds(
    PRODUCE.request.type,
    acks=int16s,
    timeoutMs=int32s,
    topics=topicLists(
        PRODUCE.request["topics"].type,
        st.builds(PRODUCE.request["topics"]["partitions"].type, partitionIndex=int32s, records=st.binary(max_size=60)),
    ),
)
fetchRequests = st.builds(
    FETCH.request.type,
    replicaId=int32s,
    maxWait=int32s,
    minBytes=int32s,
    topics=topicLists(
        FETCH.request["topics"].type,
        st.builds(
            FETCH.request["topics"]["fetchPartitions"].type, partitionIndex=int32s, fetchOffset=int64s, maxBytes=int32s
        ),
    ),
)
listOffsetsRequests = st.builds(
    LIST_OFFSETS.request.type,
    replicaId=int32s,
    topics=topicLists(
        LIST_OFFSETS.request["topics"].type,
        st.builds(
            LIST_OFFSETS.request["topics"]["partitions"].type,
            partitionIndex=int32s,
            timestamp=int64s,
            maxNumOffsets=int32s,
        ),
    ),
)
metadataRequests = st.builds(
    METADATA.request.type, topics=st.lists(st.builds(METADATA.request["topics"].type, names), max_size=5)
)

REQUESTS = [
    (PRODUCE.key, produceRequests, produceBody),
    (FETCH.key, fetchRequests, fetchBody),
    (LIST_OFFSETS.key, listOffsetsRequests, listOffsetsBody),
    (METADATA.key, metadataRequests, metadataBody),
]

anyRequest = st.one_of(
    *[
        st.tuples(st.just(key), requests, st.just(encodeBody))
        for key, requests, encodeBody in REQUESTS
    ]
)


def decode(frame):
    """(RequestHeader, value) by the schema codec at the header's api key and version."""
    header, reader = api.decodeHeader(frame)
    return header, schema.decodeRequestBody(header.apiKey, header.apiVersion, reader)


@st.composite
def mutated(draw, frames):
    """A valid frame, then cut, overwritten, or extended at random places."""
    data = bytearray(draw(frames))
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["cut", "overwrite", "insert"]))
        where = draw(st.integers(0, len(data)))
        if kind == "cut":
            del data[where:]
        elif kind == "overwrite" and where < len(data):
            data[where : where + 4] = draw(st.binary(min_size=1, max_size=4))
        else:
            data[where:where] = draw(st.binary(min_size=1, max_size=4))
    return bytes(data)


@st.composite
def validFrames(draw):
    key, request, encodeBody = draw(anyRequest)
    return header(key, draw(int32s), draw(st.none() | names)) + encodeBody(request)


# --- decoders: only CodecError ---------------------------------------------


@SETTINGS
@given(st.binary(max_size=200))
def test_anyBytesDecodeOrCodecError(frame):
    try:
        decode(frame)
    except CodecError:
        pass


@SETTINGS
@given(st.sampled_from([key for key, _, _ in REQUESTS]), st.binary(max_size=200))
def test_anyBodyDecodesOrCodecError(apiKey, body):
    try:
        decode(header(apiKey, 1, "c") + body)
    except CodecError:
        pass


@SETTINGS
@given(mutated(validFrames()))
def test_mutatedRequestsDecodeOrCodecError(frame):
    try:
        decode(frame)
    except CodecError:
        pass


# --- decoders: round trips ---------------------------------------------------


@SETTINGS
@given(st.data())
def test_requestsRoundTrip(data):
    key, requests, encodeBody = data.draw(st.sampled_from(REQUESTS))
    request = data.draw(requests)
    correlationId = data.draw(int32s)
    clientId = data.draw(st.none() | names)
    frame = header(key, correlationId, clientId) + encodeBody(request)
    header_, decoded = decode(frame)
    assert header_ == api.RequestHeader(key, 0, correlationId, clientId)
    assert decoded == request
    assert schema.encodeRequest(key, 0, correlationId, clientId, request) == frame


# --- message sets --------------------------------------------------------------


def gzipCompress(data):
    deflater = zlib.compressobj(6, zlib.DEFLATED, 31)
    return deflater.compress(data) + deflater.flush()


def xerialCompress(data):
    block = bytes(cramjam.snappy.compress_raw(data))
    return b"\x82SNAPPY\x00" + struct.pack(">ii", 1, 1) + struct.pack(">i", len(block)) + block


def rawSnappyCompress(data):
    return bytes(cramjam.snappy.compress_raw(data))


COMPRESSORS = [(1, gzipCompress), (2, rawSnappyCompress), (2, xerialCompress)]


def wrapperEntry(codec, compressed):
    body = bytes((0, codec)) + struct.pack(">i", -1) + struct.pack(">i", len(compressed)) + compressed
    return struct.pack(">qiI", 0, 4 + len(body), zlib.crc32(body)) + body


pairs = st.lists(st.tuples(optionalBytes, optionalBytes), min_size=1, max_size=6)


@st.composite
def messageSets(draw):
    """Plain runs and compressed wrappers, as producers send them."""
    parts, expected = [], []
    for _ in range(draw(st.integers(1, 3))):
        run = draw(pairs)
        expected.extend(run)
        plain = encodeMessageSet(run, baseOffset=draw(st.integers(0, 2**40)))
        compressor = draw(st.none() | st.sampled_from(COMPRESSORS))
        if compressor is None:
            parts.append(plain)
        else:
            codec, compress = compressor
            parts.append(wrapperEntry(codec, compress(plain)))
    return b"".join(parts), expected


def magic1Entry(offset, key, value, attributes, timestamp):
    body = struct.pack(">bbq", 1, attributes, timestamp)  # magic 1, attributes, timestamp
    body += struct.pack(">i", -1) if key is None else struct.pack(">i", len(key)) + key
    body += struct.pack(">i", -1) if value is None else struct.pack(">i", len(value)) + value
    return struct.pack(">qiI", offset, 4 + len(body), zlib.crc32(body)) + body


@st.composite
def bothMagics(draw):
    """The same plain runs and wrappers, as magic 0 and as magic 1 (any timestamps)."""
    magic0, magic1 = [], []
    for _ in range(draw(st.integers(1, 3))):
        run = draw(pairs)
        timestamps = draw(st.lists(int64s, min_size=len(run), max_size=len(run)))
        timestampType = draw(st.sampled_from([0, 0x08]))
        plain0 = encodeMessageSet(run, baseOffset=draw(st.integers(0, 2**40)))
        # Inner offsets relative, as 0.10 producers write them.
        plain1 = b"".join(
            magic1Entry(i, k, v, timestampType, t) for i, ((k, v), t) in enumerate(zip(run, timestamps))
        )
        compressor = draw(st.none() | st.sampled_from(COMPRESSORS))
        if compressor is None:
            magic0.append(plain0)
            magic1.append(plain1)
        else:
            codec, compress = compressor
            magic0.append(wrapperEntry(codec, compress(plain0)))
            magic1.append(magic1Entry(len(run) - 1, None, compress(plain1), codec | timestampType, max(timestamps)))
    return b"".join(magic0), b"".join(magic1)


@SETTINGS
@given(bothMagics(), st.integers(0, 2**62))
def test_magicOneIsStoredAsMagicZeroWouldBe(sets, base):
    magic0, magic1 = sets
    assert assignOffsets(magic1, base, LIMIT, LIMIT) == assignOffsets(magic0, base, LIMIT, LIMIT)


@SETTINGS
@given(mutated(bothMagics().map(lambda sets: sets[1])), st.integers(0, 2**50))
def test_mutatedMagicOneSetsAssignOrMessageSetError(data, base):
    checkAssigned(data, base)


@SETTINGS
@given(st.binary(max_size=300))
def test_anyBytesAssignOrMessageSetError(data):
    try:
        assignOffsets(data, 0, LIMIT, LIMIT)
    except MessageSetError:
        pass


def checkAssigned(data, base):
    """assignOffsets either rejects cleanly, or returns a set whose messages
    carry base .. base + count - 1 and that a second pass leaves unchanged."""
    try:
        assigned = assignOffsets(data, base, LIMIT, LIMIT)
    except MessageSetError:
        return None
    messages = expandMessageSet(assigned.data)
    assert [m.offset for m in messages] == list(range(base, base + assigned.count))
    assert assignOffsets(assigned.data, base, LIMIT, LIMIT) == assigned
    return messages


@SETTINGS
@given(mutated(messageSets().map(lambda pair: pair[0])), st.integers(0, 2**50))
def test_mutatedMessageSetsAssignOrMessageSetError(data, base):
    checkAssigned(data, base)


@SETTINGS
@given(st.sampled_from(COMPRESSORS), st.binary(max_size=200))
def test_anyCompressedValueAssignsOrMessageSetError(compressor, value):
    codec, _ = compressor
    checkAssigned(wrapperEntry(codec, value), 0)


@SETTINGS
@given(st.sampled_from(COMPRESSORS), mutated(messageSets().map(lambda pair: pair[0])))
def test_compressedMutatedInnerSetsAssignOrMessageSetError(compressor, inner):
    codec, compress = compressor
    checkAssigned(wrapperEntry(codec, compress(inner)), 0)


@SETTINGS
@given(pairs, st.integers(0, 2**62))
def test_plainMessageSetRoundTrip(messages, base):
    data = encodeMessageSet(messages, baseOffset=12345)
    assigned = assignOffsets(data, base, LIMIT, LIMIT)
    assert assigned.count == len(messages)
    assert [(m.offset, m.key, m.value) for m in expandMessageSet(assigned.data)] == [
        (base + i, k, v) for i, (k, v) in enumerate(messages)
    ]


@SETTINGS
@given(messageSets(), st.integers(0, 2**62))
def test_mixedMessageSetRoundTrip(generated, base):
    data, expected = generated
    assigned = assignOffsets(data, base, LIMIT, LIMIT)
    assert assigned.count == len(expected)
    messages = checkAssigned(assigned.data, base)
    assert [(m.offset, m.key, m.value) for m in messages] == [
        (base + i, k, v) for i, (k, v) in enumerate(expected)
    ]
    # Wrappers stay wrappers of the same codec, each at its last inner offset.
    wrappers = [m for m in decodeMessageSet(assigned.data) if m.attributes]
    for wrapper in wrappers:
        if wrapper.attributes == 1:
            inner = gzip.decompress(wrapper.value)
        elif wrapper.value.startswith(b"\x82SNAPPY\x00"):
            inner = bytes(cramjam.snappy.decompress_raw(wrapper.value[20:]))
        else:
            inner = bytes(cramjam.snappy.decompress_raw(wrapper.value))
        assert wrapper.offset == decodeMessageSet(inner)[-1].offset
