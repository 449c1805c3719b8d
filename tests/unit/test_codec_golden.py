"""Byte-exact codec tests against frames built by hand with C{struct.pack}.

In the style of afkak's C{test_kafkacodec.py}: every expected frame is written
out one field per line, so a wrong field order, width or sign shows up as a
byte difference rather than being hidden behind a shared encoder.

The Kafka 0.8 requests and answers (version 0) go through the generic codec
of L{kafkaw.protocol.schema} both ways; the message sets through
L{kafkaw.protocol.messages}.
"""

import gzip
import struct
import zlib

import cramjam
import pytest

from kafkaw.protocol import api, schema
from kafkaw.protocol.definitions import FETCH, LIST_OFFSETS, METADATA, PRODUCE
from kafkaw.protocol.errors import CodecError, ErrorCode, InvalidMessage, MessageTooLarge
from kafkaw.protocol.messages import (
    Message,
    assignOffsets,
    decodeMessageSet,
    encodeMessage,
    encodeMessageSet,
    expandMessageSet,
    skipBelow,
)

BIG = 10**9  # a maxMessageBytes / maxExpandedBytes that never gets in the way
XERIAL_MAGIC = b"\x82SNAPPY\x00"


# --- hand-built pieces (independent of kafkaw's encoders) -----------------


def shortString(value):
    if value is None:
        return struct.pack(">h", -1)  # null string
    data = value.encode("utf-8")
    return struct.pack(">h", len(data)) + data


def handBody(key, value, attributes=0, magic=0):
    """A message from magic to the end of the value: what the CRC covers."""
    return b"".join(
        [
            struct.pack(">b", magic),  # magic
            struct.pack(">b", attributes),  # attributes
            struct.pack(">i", -1 if key is None else len(key)),  # key length
            key or b"",  # key
            struct.pack(">i", -1 if value is None else len(value)),  # value length
            value or b"",  # value
        ]
    )


def handEntryFromBody(offset, body, crc=None):
    if crc is None:
        crc = zlib.crc32(body)
    return b"".join(
        [
            struct.pack(">q", offset),  # offset
            struct.pack(">i", 4 + len(body)),  # message size
            struct.pack(">I", crc),  # CRC
            body,
        ]
    )


def handEntry(offset, key, value, attributes=0):
    return handEntryFromBody(offset, handBody(key, value, attributes))


def handSet(offset, pairs):
    return b"".join(handEntry(offset + i, k, v) for i, (k, v) in enumerate(pairs))


def gzipCompress(data):
    deflater = zlib.compressobj(9, zlib.DEFLATED, 31)
    return deflater.compress(data) + deflater.flush()


def xerialCompress(data, blockSize=32 * 1024):
    """snappy-java stream framing as kafka-python writes it."""
    out = [XERIAL_MAGIC, struct.pack(">i", 1), struct.pack(">i", 1)]  # magic, version, compat
    for start in range(0, len(data), blockSize):
        block = bytes(cramjam.snappy.compress_raw(data[start : start + blockSize]))
        out.append(struct.pack(">i", len(block)))  # block size
        out.append(block)
    return b"".join(out)


def xerialDecompress(data):
    assert data[:8] == XERIAL_MAGIC
    position, out = 16, []
    while position < len(data):
        (size,) = struct.unpack_from(">i", data, position)
        position += 4
        out.append(bytes(cramjam.snappy.decompress_raw(data[position : position + size])))
        position += size
    return b"".join(out)


def rawSnappyCompress(data):
    return bytes(cramjam.snappy.compress_raw(data))


def rawSnappyDecompress(data):
    return bytes(cramjam.snappy.decompress_raw(data))


def decodeOne(frame):
    """(RequestHeader, request value) of a request frame, by the schema codec at the header's version."""
    header, reader = api.decodeHeader(frame)
    return header, schema.decodeRequestBody(header.apiKey, header.apiVersion, reader)


def encodeRequest(header, request):
    """The request frame again, written by the schema codec."""
    return schema.encodeRequest(header.apiKey, header.apiVersion, header.correlationId, header.clientId, request)


def encodeResponse(definition, correlationId, topics):
    """A v0 answer of Produce, Fetch or ListOffsets: topics [(name, [partition answer dict])]."""
    key = "responses" if definition is PRODUCE else "topics"
    value = {key: [{"name": name, "partitions": partitions} for name, partitions in topics]}
    return schema.encodeResponse(definition.key, 0, correlationId, value)


# The request values of the schema codec (namedtuples; a field the version lacks holds its default).
ProduceRequest = PRODUCE.request.type
ProduceTopic = PRODUCE.request["topics"].type
ProducePartition = PRODUCE.request["topics"]["partitions"].type
FetchRequest = FETCH.request.type
FetchTopic = FETCH.request["topics"].type
FetchPartition = FETCH.request["topics"]["fetchPartitions"].type
ListOffsetsRequest = LIST_OFFSETS.request.type
OffsetsTopic = LIST_OFFSETS.request["topics"].type
OffsetsPartition = LIST_OFFSETS.request["topics"]["partitions"].type
MetadataRequest = METADATA.request.type
MetadataTopic = METADATA.request["topics"].type


FIVE = [(None, b"value-0"), (b"key-1", b"value-1"), (None, b"value-2"), (b"key-3", b"value-3"), (None, b"value-4")]


# --- request header --------------------------------------------------------


def test_headerWithClientId():
    frame = b"".join(
        [
            struct.pack(">h", 3),  # api key
            struct.pack(">h", 0),  # api version
            struct.pack(">i", 0x01020304),  # correlation id
            struct.pack(">h", 7),  # client id length
            b"rdkafka",  # client id
            b"body",
        ]
    )
    header, reader = api.decodeHeader(frame)
    assert header == api.RequestHeader(3, 0, 0x01020304, "rdkafka")
    assert reader.position == 2 + 2 + 4 + 2 + 7
    assert reader.raw(4) == b"body"


def test_headerNullClientId():
    frame = b"".join(
        [
            struct.pack(">h", 1),  # api key
            struct.pack(">h", 0),  # api version
            struct.pack(">i", -5),  # correlation id
            struct.pack(">h", -1),  # client id: null
        ]
    )
    header, reader = api.decodeHeader(frame)
    assert header == api.RequestHeader(1, 0, -5, None)
    assert reader.remaining == 0


def test_headerEmptyClientIdIsNotNull():
    frame = b"".join(
        [
            struct.pack(">h", 0),  # api key
            struct.pack(">h", 0),  # api version
            struct.pack(">i", 1),  # correlation id
            struct.pack(">h", 0),  # client id length: empty
        ]
    )
    header, _ = api.decodeHeader(frame)
    assert header.clientId == ""


def test_headerUnknownApiKeyAndVersionAreReported():
    """The header decoder does not judge keys/versions; the gateway does."""
    frame = b"".join(
        [
            struct.pack(">h", 18),  # api key: ApiVersions (not served by 0.8)
            struct.pack(">h", 3),  # api version
            struct.pack(">i", 9),  # correlation id
            shortString("x"),  # client id
        ]
    )
    header, _ = api.decodeHeader(frame)
    assert (header.apiKey, header.apiVersion, header.correlationId) == (18, 3, 9)


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\x00\x00\x00",  # api key, half an api version
        b"\x00\x00\x00\x00\x00\x00\x00",  # correlation id cut
        b"\x00\x00\x00\x00\x00\x00\x00\x01\x00",  # client id length cut
        b"\x00\x00\x00\x00\x00\x00\x00\x01\x00\x05abc",  # client id shorter than its length
        b"\x00\x00\x00\x00\x00\x00\x00\x01\xff\xfe",  # client id length -2
        b"\x00\x00\x00\x00\x00\x00\x00\x01\x00\x02\xff\xfe",  # client id not UTF-8
    ],
)
def test_headerMalformed(frame):
    with pytest.raises(CodecError):
        api.decodeHeader(frame)


# --- requests --------------------------------------------------------------


def test_decodeProduce():
    messageSet = handSet(0, [(None, b"v0"), (b"k1", b"v1")])
    frame = b"".join(
        [
            struct.pack(">h", 0),  # api key: Produce
            struct.pack(">h", 0),  # api version
            struct.pack(">i", 11),  # correlation id
            shortString("producer"),  # client id
            struct.pack(">h", -1),  # acks
            struct.pack(">i", 1500),  # timeout
            struct.pack(">i", 2),  # topic count
            shortString("t1"),  # topic
            struct.pack(">i", 2),  # partition count
            struct.pack(">i", 0),  # partition
            struct.pack(">i", len(messageSet)),  # message set size
            messageSet,  # message set
            struct.pack(">i", 7),  # partition
            struct.pack(">i", -1),  # message set size: null
            shortString("t2"),  # topic
            struct.pack(">i", 0),  # partition count: empty
        ]
    )
    header, request = decodeOne(frame)
    assert header == api.RequestHeader(0, 0, 11, "producer")
    assert request == ProduceRequest(
        acks=-1,
        timeoutMs=1500,
        topics=[
            ProduceTopic("t1", [ProducePartition(0, messageSet), ProducePartition(7, None)]),
            ProduceTopic("t2", []),
        ],
    )
    assert request.transactionalId is None  # v3+ only
    assert encodeRequest(header, request) == frame


def test_decodeProduceAcksZeroNoTopics():
    frame = b"".join(
        [
            struct.pack(">h", 0),  # api key: Produce
            struct.pack(">h", 0),  # api version
            struct.pack(">i", 1),  # correlation id
            struct.pack(">h", -1),  # client id: null
            struct.pack(">h", 0),  # acks
            struct.pack(">i", 0),  # timeout
            struct.pack(">i", 0),  # topic count
        ]
    )
    header, request = decodeOne(frame)
    assert request == ProduceRequest(acks=0, timeoutMs=0, topics=[])
    assert encodeRequest(header, request) == frame


def test_decodeFetch():
    frame = b"".join(
        [
            struct.pack(">h", 1),  # api key: Fetch
            struct.pack(">h", 0),  # api version
            struct.pack(">i", 2),  # correlation id
            shortString("c"),  # client id
            struct.pack(">i", -1),  # replica id
            struct.pack(">i", 100),  # max wait
            struct.pack(">i", 1),  # min bytes
            struct.pack(">i", 1),  # topic count
            shortString("vec"),  # topic
            struct.pack(">i", 2),  # partition count
            struct.pack(">i", 0),  # partition
            struct.pack(">q", 0x0102030405),  # fetch offset
            struct.pack(">i", 1048576),  # max bytes
            struct.pack(">i", 3),  # partition
            struct.pack(">q", -1),  # fetch offset
            struct.pack(">i", 0),  # max bytes
        ]
    )
    header, request = decodeOne(frame)
    assert header == api.RequestHeader(1, 0, 2, "c")
    assert request == FetchRequest(
        replicaId=-1,
        maxWait=100,
        minBytes=1,
        topics=[
            FetchTopic(
                "vec",
                [
                    FetchPartition(partitionIndex=0, fetchOffset=0x0102030405, maxBytes=1048576),
                    FetchPartition(partitionIndex=3, fetchOffset=-1, maxBytes=0),
                ],
            )
        ],
    )
    assert request.maxBytes == 0x7FFFFFFF  # v3+ only: the default, no limit
    assert encodeRequest(header, request) == frame


def test_decodeListOffsets():
    frame = b"".join(
        [
            struct.pack(">h", 2),  # api key: ListOffsets
            struct.pack(">h", 0),  # api version
            struct.pack(">i", 3),  # correlation id
            shortString("c"),  # client id
            struct.pack(">i", -1),  # replica id
            struct.pack(">i", 2),  # topic count
            shortString("a"),  # topic
            struct.pack(">i", 1),  # partition count
            struct.pack(">i", 0),  # partition
            struct.pack(">q", -2),  # time: earliest
            struct.pack(">i", 1),  # max number of offsets
            shortString("b"),  # topic
            struct.pack(">i", 1),  # partition count
            struct.pack(">i", 4),  # partition
            struct.pack(">q", 1700000000000),  # time: a timestamp in ms
            struct.pack(">i", 10),  # max number of offsets
        ]
    )
    header, request = decodeOne(frame)
    assert request == ListOffsetsRequest(
        replicaId=-1,
        topics=[
            OffsetsTopic("a", [OffsetsPartition(partitionIndex=0, timestamp=-2, maxNumOffsets=1)]),
            OffsetsTopic("b", [OffsetsPartition(partitionIndex=4, timestamp=1700000000000, maxNumOffsets=10)]),
        ],
    )
    assert encodeRequest(header, request) == frame


def test_decodeMetadata():
    frame = b"".join(
        [
            struct.pack(">h", 3),  # api key: Metadata
            struct.pack(">h", 0),  # api version
            struct.pack(">i", 4),  # correlation id
            shortString("c"),  # client id
            struct.pack(">i", 2),  # topic count
            shortString("vec"),  # topic
            shortString("t\u00e9"),  # topic (UTF-8, 3 bytes)
        ]
    )
    header, request = decodeOne(frame)
    assert request == MetadataRequest(topics=[MetadataTopic("vec"), MetadataTopic("t\u00e9")])
    assert encodeRequest(header, request) == frame


def test_decodeMetadataAllTopics():
    frame = b"".join(
        [
            struct.pack(">h", 3),  # api key: Metadata
            struct.pack(">h", 0),  # api version
            struct.pack(">i", 4),  # correlation id
            shortString("c"),  # client id
            struct.pack(">i", 0),  # topic count: empty = all topics
        ]
    )
    header, request = decodeOne(frame)
    assert request == MetadataRequest(topics=[])
    assert encodeRequest(header, request) == frame


HEADER = struct.pack(">hhih", 3, 0, 1, -1)  # api key, api version, correlation id, null client id


@pytest.mark.parametrize(
    "apiKey, body",
    [
        # trailing bytes after a complete body
        (METADATA.key, struct.pack(">i", 0) + b"\x00"),
        # null topic name
        (METADATA.key, struct.pack(">i", 1) + struct.pack(">h", -1)),
        # array count larger than the bytes left could hold
        (METADATA.key, struct.pack(">i", 0x7FFFFFFF)),
        # negative array count other than -1
        (METADATA.key, struct.pack(">i", -2)),
        # v0 has no null topic list (-1): v1+ has, for all topics
        (METADATA.key, struct.pack(">i", -1)),
        # body missing
        (FETCH.key, b""),
        # fetch partition cut in its offset
        (FETCH.key, struct.pack(">iiii", -1, 0, 0, 1) + shortString("t") + struct.pack(">ii", 1, 0) + b"\x00" * 4),
        # produce message set longer than the frame
        (PRODUCE.key, struct.pack(">hii", 1, 0, 1) + shortString("t") + struct.pack(">iii", 1, 0, 100) + b"x"),
        # produce message set size -2
        (PRODUCE.key, struct.pack(">hii", 1, 0, 1) + shortString("t") + struct.pack(">iii", 1, 0, -2)),
        # list offsets with a null topic
        (LIST_OFFSETS.key, struct.pack(">ii", -1, 1) + struct.pack(">h", -1) + struct.pack(">i", 0)),
    ],
)
def test_malformedRequestBodies(apiKey, body):
    _, reader = api.decodeHeader(HEADER + body)
    with pytest.raises(CodecError):
        schema.decodeRequestBody(apiKey, 0, reader)


# --- responses -------------------------------------------------------------


def test_encodeProduceResponse():
    chunks = encodeResponse(
        PRODUCE,
        0x7FFFFFFF,
        [
            ("t1", [{"partitionIndex": 0, "errorCode": 0, "baseOffset": 1234567890123},
                    {"partitionIndex": 1, "errorCode": 3, "baseOffset": -1}]),
            ("t2", [{"partitionIndex": 9, "errorCode": 10, "baseOffset": -1}]),
        ],
    )
    assert b"".join(chunks) == b"".join(
        [
            struct.pack(">i", 0x7FFFFFFF),  # correlation id
            struct.pack(">i", 2),  # topic count
            struct.pack(">h", 2),  # topic length
            b"t1",  # topic
            struct.pack(">i", 2),  # partition count
            struct.pack(">i", 0),  # partition
            struct.pack(">h", 0),  # error: none
            struct.pack(">q", 1234567890123),  # offset
            struct.pack(">i", 1),  # partition
            struct.pack(">h", 3),  # error: unknown topic or partition
            struct.pack(">q", -1),  # offset
            struct.pack(">h", 2),  # topic length
            b"t2",  # topic
            struct.pack(">i", 1),  # partition count
            struct.pack(">i", 9),  # partition
            struct.pack(">h", 10),  # error: message size too large
            struct.pack(">q", -1),  # offset
        ]
    )


def test_encodeProduceResponseEmpty():
    assert b"".join(encodeResponse(PRODUCE, -1, [])) == b"".join(
        [
            struct.pack(">i", -1),  # correlation id
            struct.pack(">i", 0),  # topic count
        ]
    )


def test_encodeProduceResponseUnknownError():
    answer = {"partitionIndex": 0, "errorCode": ErrorCode.UNKNOWN, "baseOffset": -1}
    chunks = encodeResponse(PRODUCE, 1, [("t", [answer])])
    assert b"".join(chunks)[-14:] == b"".join(
        [
            struct.pack(">i", 0),  # partition
            struct.pack(">h", -1),  # error: unknown
            struct.pack(">q", -1),  # offset
        ]
    )


def fetchResult(partition, error, highWatermark, messageSet):
    return {"partitionIndex": partition, "errorCode": error, "highWatermark": highWatermark, "records": messageSet}


def test_encodeFetchResponse():
    whole = handEntry(5, b"k", b"v")
    partial = handEntry(6, None, b"a longer value that is cut")[:20]
    messageSet = whole + partial
    chunks = encodeResponse(
        FETCH,
        42,
        [
            (
                "vec",
                [
                    fetchResult(0, 0, 7, messageSet),
                    fetchResult(1, 1, -1, b""),
                    fetchResult(2, 0, 6, b""),
                ],
            ),
            ("gone", [fetchResult(0, 3, -1, b"")]),
        ],
    )
    assert b"".join(chunks) == b"".join(
        [
            struct.pack(">i", 42),  # correlation id
            struct.pack(">i", 2),  # topic count
            struct.pack(">h", 3),  # topic length
            b"vec",  # topic
            struct.pack(">i", 3),  # partition count
            struct.pack(">i", 0),  # partition
            struct.pack(">h", 0),  # error: none
            struct.pack(">q", 7),  # high watermark
            struct.pack(">i", len(whole) + 20),  # message set size
            struct.pack(">q", 5),  # offset
            struct.pack(">i", 16),  # message size
            struct.pack(">I", 0x1FECD70A),  # CRC
            struct.pack(">b", 0),  # magic
            struct.pack(">b", 0),  # attributes
            struct.pack(">i", 1),  # key length
            b"k",  # key
            struct.pack(">i", 1),  # value length
            b"v",  # value
            struct.pack(">q", 6),  # offset (partial message)
            struct.pack(">i", 4 + 1 + 1 + 4 + 4 + 26),  # message size (partial message)
            partial[12:20],  # CRC, magic, attributes, first bytes of the key length
            struct.pack(">i", 1),  # partition
            struct.pack(">h", 1),  # error: offset out of range
            struct.pack(">q", -1),  # high watermark
            struct.pack(">i", 0),  # message set size
            struct.pack(">i", 2),  # partition
            struct.pack(">h", 0),  # error: none
            struct.pack(">q", 6),  # high watermark
            struct.pack(">i", 0),  # message set size: empty
            struct.pack(">h", 4),  # topic length
            b"gone",  # topic
            struct.pack(">i", 1),  # partition count
            struct.pack(">i", 0),  # partition
            struct.pack(">h", 3),  # error: unknown topic or partition
            struct.pack(">q", -1),  # high watermark
            struct.pack(">i", 0),  # message set size
        ]
    )


def test_encodeFetchResponsePassesMessageSetThroughUncopied():
    messageSet = handSet(0, [(None, b"x" * 100)]) + b"\x00" * 5  # with a partial tail
    chunks = encodeResponse(FETCH, 1, [("t", [fetchResult(0, 0, 1, messageSet)])])
    assert any(chunk is messageSet for chunk in chunks)
    assert b"".join(chunks).endswith(struct.pack(">i", len(messageSet)) + messageSet)


def test_encodeFetchResponseEmpty():
    assert b"".join(encodeResponse(FETCH, 3, [])) == b"".join(
        [
            struct.pack(">i", 3),  # correlation id
            struct.pack(">i", 0),  # topic count
        ]
    )


def test_encodeListOffsetsResponse():
    chunks = encodeResponse(
        LIST_OFFSETS,
        8,
        [
            ("a", [{"partitionIndex": 0, "errorCode": 0, "oldStyleOffsets": [100, 50, 0]},
                   {"partitionIndex": 1, "errorCode": 0, "oldStyleOffsets": []}]),
            ("b", [{"partitionIndex": 0, "errorCode": 3, "oldStyleOffsets": []}]),
        ],
    )
    assert b"".join(chunks) == b"".join(
        [
            struct.pack(">i", 8),  # correlation id
            struct.pack(">i", 2),  # topic count
            struct.pack(">h", 1),  # topic length
            b"a",  # topic
            struct.pack(">i", 2),  # partition count
            struct.pack(">i", 0),  # partition
            struct.pack(">h", 0),  # error: none
            struct.pack(">i", 3),  # offset count
            struct.pack(">q", 100),  # offset
            struct.pack(">q", 50),  # offset
            struct.pack(">q", 0),  # offset
            struct.pack(">i", 1),  # partition
            struct.pack(">h", 0),  # error: none
            struct.pack(">i", 0),  # offset count: empty (time before all data)
            struct.pack(">h", 1),  # topic length
            b"b",  # topic
            struct.pack(">i", 1),  # partition count
            struct.pack(">i", 0),  # partition
            struct.pack(">h", 3),  # error: unknown topic or partition
            struct.pack(">i", 0),  # offset count
        ]
    )


def metadataResponse(brokers, topics):
    """A Metadata v0 answer: brokers [(node id, host, port)],
    topics [(error, name, [(error, partition, leader, replicas, isr)])]."""
    return {
        "brokers": [{"nodeId": n, "host": h, "port": p} for n, h, p in brokers],
        "topics": [
            {
                "errorCode": error,
                "name": name,
                "partitions": [
                    {"errorCode": e, "partitionIndex": i, "leaderId": leader, "replicaNodes": replicas, "isrNodes": isr}
                    for e, i, leader, replicas, isr in partitions
                ],
            }
            for error, name, partitions in topics
        ],
    }


def test_encodeMetadataResponse():
    chunks = schema.encodeResponse(
        METADATA.key,
        0,
        5,
        metadataResponse(
            [(0, "localhost", 9092)],
            [(0, "vec", [(0, 0, 0, [0], [0]), (0, 1, 0, [0], [0])]), (3, "nope", [])],
        ),
    )
    assert b"".join(chunks) == b"".join(
        [
            struct.pack(">i", 5),  # correlation id
            struct.pack(">i", 1),  # broker count
            struct.pack(">i", 0),  # node id
            struct.pack(">h", 9),  # host length
            b"localhost",  # host
            struct.pack(">i", 9092),  # port
            struct.pack(">i", 2),  # topic count
            struct.pack(">h", 0),  # topic error: none
            struct.pack(">h", 3),  # topic length
            b"vec",  # topic
            struct.pack(">i", 2),  # partition count
            struct.pack(">h", 0),  # partition error: none
            struct.pack(">i", 0),  # partition id
            struct.pack(">i", 0),  # leader
            struct.pack(">i", 1),  # replica count
            struct.pack(">i", 0),  # replica
            struct.pack(">i", 1),  # isr count
            struct.pack(">i", 0),  # isr
            struct.pack(">h", 0),  # partition error: none
            struct.pack(">i", 1),  # partition id
            struct.pack(">i", 0),  # leader
            struct.pack(">i", 1),  # replica count
            struct.pack(">i", 0),  # replica
            struct.pack(">i", 1),  # isr count
            struct.pack(">i", 0),  # isr
            struct.pack(">h", 3),  # topic error: unknown topic or partition
            struct.pack(">h", 4),  # topic length
            b"nope",  # topic
            struct.pack(">i", 0),  # partition count: empty
        ]
    )


def test_encodeMetadataResponseEmpty():
    chunks = schema.encodeResponse(METADATA.key, 0, 6, metadataResponse([], [(5, "", [(5, 0, -1, [], [])])]))
    assert b"".join(chunks) == b"".join(
        [
            struct.pack(">i", 6),  # correlation id
            struct.pack(">i", 0),  # broker count: empty
            struct.pack(">i", 1),  # topic count
            struct.pack(">h", 5),  # topic error: leader not available
            struct.pack(">h", 0),  # topic: empty string
            struct.pack(">i", 1),  # partition count
            struct.pack(">h", 5),  # partition error: leader not available
            struct.pack(">i", 0),  # partition id
            struct.pack(">i", -1),  # leader: none
            struct.pack(">i", 0),  # replica count: empty
            struct.pack(">i", 0),  # isr count: empty
        ]
    )


def test_encodeMetadataResponseNullTopicNameRefused():
    """Kafka's schema has no null topic name in a Metadata answer (the v0 codec wrote one as -1)."""
    with pytest.raises(ValueError, match="name is None, which version 0 does not allow"):
        schema.encodeResponse(METADATA.key, 0, 6, metadataResponse([], [(5, None, [])]))


# --- single messages -------------------------------------------------------


def test_encodeMessage():
    assert encodeMessage(5, b"k", b"v") == b"".join(
        [
            struct.pack(">q", 5),  # offset
            struct.pack(">i", 16),  # message size
            struct.pack(">I", 0x1FECD70A),  # CRC
            struct.pack(">b", 0),  # magic
            struct.pack(">b", 0),  # attributes
            struct.pack(">i", 1),  # key length
            b"k",  # key
            struct.pack(">i", 1),  # value length
            b"v",  # value
        ]
    )


def test_encodeMessageNullKeyAndValueUnsignedCrc():
    assert encodeMessage(-1, None, None, 2) == b"".join(
        [
            struct.pack(">q", -1),  # offset
            struct.pack(">i", 14),  # message size
            struct.pack(">I", zlib.crc32(b"\x00\x02" + b"\xff" * 8)),  # CRC
            struct.pack(">b", 0),  # magic
            struct.pack(">b", 2),  # attributes
            struct.pack(">i", -1),  # key length: null
            struct.pack(">i", -1),  # value length: null
        ]
    )
    assert encodeMessage(0, None, b"value-0")[12:16] == struct.pack(">I", 0xEFDA9438)  # CRC


def test_encodeMessageSetAndDecode():
    data = encodeMessageSet(FIVE, baseOffset=3)
    assert data == handSet(3, FIVE)
    assert decodeMessageSet(data) == [Message(3 + i, k, v) for i, (k, v) in enumerate(FIVE)]


# --- assignOffsets: plain sets ---------------------------------------------


def test_assignOffsetsRewritesOffsets():
    produced = b"".join(
        [
            struct.pack(">q", 0),  # offset (as the client sent it)
            struct.pack(">i", 16),  # message size
            struct.pack(">I", 0x1FECD70A),  # CRC
            struct.pack(">b", 0),  # magic
            struct.pack(">b", 0),  # attributes
            struct.pack(">i", 1),  # key length
            b"k",  # key
            struct.pack(">i", 1),  # value length
            b"v",  # value
            struct.pack(">q", 0),  # offset (as the client sent it)
            struct.pack(">i", 21),  # message size
            struct.pack(">I", 0xEFDA9438),  # CRC (unsigned, above 2**31)
            struct.pack(">b", 0),  # magic
            struct.pack(">b", 0),  # attributes
            struct.pack(">i", -1),  # key length: null
            struct.pack(">i", 7),  # value length
            b"value-0",  # value
        ]
    )
    assigned = assignOffsets(produced, 1000, BIG, BIG)
    assert assigned.count == 2
    assert assigned.data == struct.pack(">q", 1000) + produced[8:28] + struct.pack(">q", 1001) + produced[36:]


def test_assignOffsetsWrittenOverAnyClientOffsets():
    produced = handEntry(77, None, b"a") + handEntry(-3, b"k", None) + handEntry(77, b"", b"")
    assigned = assignOffsets(produced, 0, BIG, BIG)
    assert assigned.data == handEntry(0, None, b"a") + handEntry(1, b"k", None) + handEntry(2, b"", b"")
    assert assigned.count == 3


def test_unsignedCrcAboveTwoToTheThirtyOneAccepted():
    body = handBody(None, b"value-0")
    crc = zlib.crc32(body)
    assert crc >= 2**31  # the point of this test
    assigned = assignOffsets(handEntryFromBody(0, body, crc), 9, BIG, BIG)
    assert assigned.data == handEntryFromBody(9, body, crc)


def test_badCrc():
    body = handBody(b"k", b"v")
    bad = handEntryFromBody(0, body, zlib.crc32(body) ^ 1)
    with pytest.raises(InvalidMessage) as e:
        assignOffsets(bad, 0, BIG, BIG)
    assert e.value.errorCode == ErrorCode.INVALID_MESSAGE == 2


def test_badCrcInALaterMessageRejectsTheSet():
    body = handBody(b"k", b"v")
    produced = handEntry(0, b"a", b"b") + handEntryFromBody(0, body, 0)
    with pytest.raises(InvalidMessage):
        assignOffsets(produced, 0, BIG, BIG)


@pytest.mark.parametrize("size", [13, 0, -1, -(2**31)])
def test_messageSizeBelowMinimum(size):
    produced = b"".join(
        [
            struct.pack(">q", 0),  # offset
            struct.pack(">i", size),  # message size: below 14
            b"\x00" * 40,  # enough bytes that the message is not partial
        ]
    )
    with pytest.raises(InvalidMessage):
        assignOffsets(produced, 0, BIG, BIG)


def test_magicTwo():
    """Magic 1 is converted (test_codec_magic1.py); later formats are not messages 0.8 knows."""
    body = handBody(b"k", b"v", magic=2)
    with pytest.raises(InvalidMessage, match="magic"):
        assignOffsets(handEntryFromBody(0, body), 0, BIG, BIG)


@pytest.mark.parametrize("attributes", [0x04, 0x08, 0x10, 0x20, 0x40, -0x80, 0x05])
def test_attributeBitsBeyondTheCodec(attributes):
    body = handBody(b"k", b"v", attributes=attributes)
    with pytest.raises(InvalidMessage, match="attributes"):
        assignOffsets(handEntryFromBody(0, body), 0, BIG, BIG)


def test_codecThree():
    body = handBody(None, b"anything", attributes=3)
    with pytest.raises(InvalidMessage):
        assignOffsets(handEntryFromBody(0, body), 0, BIG, BIG)


@pytest.mark.parametrize(
    "body",
    [
        # key length longer than the message
        b"\x00\x00" + struct.pack(">i", 100) + b"k" + struct.pack(">i", 1) + b"v",
        # key length -2
        b"\x00\x00" + struct.pack(">i", -2) + struct.pack(">i", 1) + b"v",
        # value length shorter than what follows
        b"\x00\x00" + struct.pack(">i", 1) + b"k" + struct.pack(">i", 1) + b"vv",
        # value length longer than what follows
        b"\x00\x00" + struct.pack(">i", 1) + b"k" + struct.pack(">i", 3) + b"vv",
        # value length -2
        b"\x00\x00" + struct.pack(">i", -1) + struct.pack(">i", -2) + b"xxxx",
        # null value followed by extra bytes
        b"\x00\x00" + struct.pack(">i", -1) + struct.pack(">i", -1) + b"x",
        # key eats the value length
        b"\x00\x00" + struct.pack(">i", 6) + b"k" + struct.pack(">i", 1) + b"v",
    ],
)
def test_keyAndValueMustFillTheMessage(body):
    with pytest.raises(InvalidMessage):
        assignOffsets(handEntryFromBody(0, body), 0, BIG, BIG)


def test_messageTooLarge():
    entry = handEntry(0, None, b"x" * 100)
    assert len(entry) == 12 + 14 + 100
    assert assignOffsets(entry, 0, len(entry), BIG).count == 1  # exactly the limit is fine
    with pytest.raises(MessageTooLarge) as e:
        assignOffsets(entry, 0, len(entry) - 1, BIG)
    assert e.value.errorCode == ErrorCode.MESSAGE_SIZE_TOO_LARGE == 10


@pytest.mark.parametrize("cut", [1, 11, 12, 13, 20, 30])
def test_partialTrailingMessageDropped(cut):
    whole = handSet(0, [(b"a", b"1"), (None, b"2")])
    tail = handEntry(0, b"k", b"a value long enough")[:cut]
    assigned = assignOffsets(whole + tail, 50, BIG, BIG)
    assert assigned.count == 2
    assert assigned.data == handSet(50, [(b"a", b"1"), (None, b"2")])


def test_partialTrailingMessageAboveTheLimitIsStillJustDropped():
    whole = handEntry(0, None, b"v")
    tail = struct.pack(">qi", 0, 10**8)  # offset, message size far above the limit
    assert assignOffsets(whole + tail, 0, 100, BIG).data == whole


@pytest.mark.parametrize(
    "produced",
    [
        b"",
        b"\x00" * 11,
        handEntry(0, b"k", b"v")[:-1],
        struct.pack(">qi", 0, 1000) + b"\x00" * 100,
    ],
)
def test_noCompleteMessage(produced):
    with pytest.raises(InvalidMessage, match="no complete message"):
        assignOffsets(produced, 0, BIG, BIG)


# --- assignOffsets: compressed wrappers ------------------------------------

INNER = [(b"k0", b"v0"), (None, b"v1"), (b"k2", None)]


def wrapper(codec, compressed, key=None, offset=0):
    return handEntry(offset, key, compressed, attributes=codec)


@pytest.mark.parametrize(
    "codec, compress, decompress, prefix",
    [
        (1, gzipCompress, gzip.decompress, b"\x1f\x8b"),
        (2, rawSnappyCompress, rawSnappyDecompress, None),
        (2, xerialCompress, xerialDecompress, XERIAL_MAGIC),
    ],
    ids=["gzip", "snappy-raw", "snappy-xerial"],
)
def test_wrapperExpandedAndRecompressed(codec, compress, decompress, prefix):
    produced = wrapper(codec, compress(handSet(0, INNER)))
    assigned = assignOffsets(produced, 100, BIG, BIG)
    assert assigned.count == 3
    (outer,) = decodeMessageSet(assigned.data)
    assert outer.offset == 102  # the last inner offset
    assert outer.attributes == codec
    assert outer.key is None
    if prefix is not None:
        assert outer.value.startswith(prefix)
    else:
        assert not outer.value.startswith(XERIAL_MAGIC)
    assert decompress(outer.value) == handSet(100, INNER)
    assert expandMessageSet(assigned.data) == [Message(100 + i, k, v) for i, (k, v) in enumerate(INNER)]
    # The rebuilt wrapper is itself a valid entry: a second pass keeps it.
    assert assignOffsets(assigned.data, 100, BIG, BIG) == assigned


def test_wrapperNullKeyStaysNull():
    produced = wrapper(1, gzipCompress(handSet(0, INNER)))
    assigned = assignOffsets(produced, 0, BIG, BIG)
    assert assigned.data[12 + 6 : 12 + 10] == struct.pack(">i", -1)  # key length: null


def test_wrapperKeyKept():
    produced = wrapper(1, gzipCompress(handSet(0, INNER)), key=b"wrapper-key")
    (outer,) = decodeMessageSet(assignOffsets(produced, 0, BIG, BIG).data)
    assert outer.key == b"wrapper-key"


def test_xerialWithSeveralBlocks():
    inner = handSet(0, [(None, bytes([i]) * 3000) for i in range(40)])
    produced = wrapper(2, xerialCompress(inner, blockSize=4096))
    assigned = assignOffsets(produced, 7, BIG, BIG)
    assert assigned.count == 40
    (outer,) = decodeMessageSet(assigned.data)
    assert outer.offset == 46
    assert xerialDecompress(outer.value) == handSet(7, [(None, bytes([i]) * 3000) for i in range(40)])


def test_zlibFramedGzipValueAccepted():
    """Accepted leniently, recompressed as real gzip."""
    produced = wrapper(1, zlib.compress(handSet(0, INNER)))
    (outer,) = decodeMessageSet(assignOffsets(produced, 0, BIG, BIG).data)
    assert gzip.decompress(outer.value) == handSet(0, INNER)


def test_gzipWithSeveralMembers():
    """RFC 1952 allows concatenated members; Java's GZIPInputStream reads them all."""
    first = gzipCompress(handSet(0, INNER[:2]))
    second = gzipCompress(handSet(0, INNER[2:]))
    assigned = assignOffsets(wrapper(1, first + second), 0, BIG, BIG)
    assert assigned.count == 3
    assert [(m.offset, m.key, m.value) for m in expandMessageSet(assigned.data)] == [
        (i, k, v) for i, (k, v) in enumerate(INNER)
    ]


def test_gzipTrailingGarbageIgnored():
    """Like GZIPInputStream: bytes after a member that are no gzip header end the stream."""
    produced = wrapper(1, gzipCompress(handSet(0, INNER)) + b"\x00\x00garbage")
    assert assignOffsets(produced, 0, BIG, BIG).count == 3


def test_gzipMembersShareTheExpansionLimit():
    inner = handSet(0, [(None, b"\x00" * 1000)])
    produced = wrapper(1, gzipCompress(inner) + gzipCompress(inner))
    assert assignOffsets(produced, 0, BIG, 2 * len(inner)).count == 2
    with pytest.raises(InvalidMessage, match="beyond"):
        assignOffsets(produced, 0, BIG, 2 * len(inner) - 1)


def test_wrappersAndPlainMessagesMixed():
    produced = b"".join(
        [
            handEntry(0, b"p", b"first"),
            wrapper(1, gzipCompress(handSet(0, INNER))),
            handEntry(0, None, b"middle"),
            wrapper(2, rawSnappyCompress(handSet(0, [(None, b"s0"), (None, b"s1")]))),
            handEntry(0, None, b"last"),
        ]
    )
    assigned = assignOffsets(produced, 10, BIG, BIG)
    assert assigned.count == 1 + 3 + 1 + 2 + 1
    assert [(m.offset, m.attributes) for m in decodeMessageSet(assigned.data)] == [
        (10, 0),
        (13, 1),
        (14, 0),
        (16, 2),
        (17, 0),
    ]
    assert [(m.offset, m.key, m.value) for m in expandMessageSet(assigned.data)] == [
        (10, b"p", b"first"),
        (11, b"k0", b"v0"),
        (12, None, b"v1"),
        (13, b"k2", None),
        (14, None, b"middle"),
        (15, None, b"s0"),
        (16, None, b"s1"),
        (17, None, b"last"),
    ]


def test_wrapperWithPartialTrailingInnerMessage():
    inner = handSet(0, INNER) + handEntry(0, b"x", b"cut")[:15]
    assigned = assignOffsets(wrapper(1, gzipCompress(inner)), 0, BIG, BIG)
    assert assigned.count == 3
    (outer,) = decodeMessageSet(assigned.data)
    assert gzip.decompress(outer.value) == handSet(0, INNER)


@pytest.mark.parametrize(
    "codec, compress",
    [(1, gzipCompress), (2, rawSnappyCompress), (2, xerialCompress)],
    ids=["gzip", "snappy-raw", "snappy-xerial"],
)
def test_decompressionBomb(codec, compress):
    inner = handSet(0, [(None, b"\x00" * 200_000)])
    produced = wrapper(codec, compress(inner))
    assert len(produced) < 20_000
    assert assignOffsets(produced, 0, BIG, len(inner)).count == 1  # exactly the limit is fine
    with pytest.raises(InvalidMessage, match="beyond"):
        assignOffsets(produced, 0, BIG, len(inner) - 1)


def test_gzipBombOfGarbage():
    produced = wrapper(1, gzipCompress(b"\x00" * 10_000_000))
    with pytest.raises(InvalidMessage):
        assignOffsets(produced, 0, BIG, 1_000_000)


def test_expansionLimitIsForTheWholeSet():
    """Many wrappers each under the limit must not add up beyond it."""
    inner = handSet(0, [(None, b"\x00" * 60_000)])
    one = wrapper(1, gzipCompress(inner))
    assert assignOffsets(one, 0, BIG, 100_000).count == 1
    with pytest.raises(InvalidMessage):
        assignOffsets(one + one, 0, BIG, 100_000)


@pytest.mark.parametrize(
    "outerCodec, outerCompress, innerCodec, innerCompress",
    [
        (1, gzipCompress, 1, gzipCompress),
        (1, gzipCompress, 2, rawSnappyCompress),
        (2, xerialCompress, 1, gzipCompress),
        (2, rawSnappyCompress, 2, xerialCompress),
    ],
)
def test_nestedCompression(outerCodec, outerCompress, innerCodec, innerCompress):
    innermost = wrapper(innerCodec, innerCompress(handSet(0, INNER)))
    produced = wrapper(outerCodec, outerCompress(innermost))
    with pytest.raises(InvalidMessage, match="inside a compressed"):
        assignOffsets(produced, 0, BIG, BIG)


@pytest.mark.parametrize(
    "codec, value",
    [
        (1, b"not gzip at all"),
        (1, gzipCompress(handSet(0, INNER))[:-10]),  # truncated gzip
        (2, b"\xff\xff\xff\xff\xff"),  # raw snappy with a bad length varint
        (2, rawSnappyCompress(handSet(0, INNER))[:-3]),  # truncated raw snappy
        (2, XERIAL_MAGIC + b"\x00\x00\x00\x01"),  # truncated xerial header
        (2, xerialCompress(handSet(0, INNER))[:-3]),  # xerial block overruns the value
        (2, xerialCompress(handSet(0, INNER)) + b"\x00\x00"),  # truncated xerial block size
        (1, gzipCompress(b"")),  # no inner message at all
        (2, rawSnappyCompress(b"\x00" * 5)),  # inner bytes too short for a message
        (1, None),  # null wrapper value
    ],
)
def test_badWrapperValues(codec, value):
    with pytest.raises(InvalidMessage):
        assignOffsets(wrapper(codec, value), 0, BIG, BIG)


def test_badInnerMessage():
    body = handBody(b"k", b"v")
    inner = handEntryFromBody(0, body, zlib.crc32(body) ^ 0xFFFFFFFF)
    with pytest.raises(InvalidMessage, match="CRC"):
        assignOffsets(wrapper(1, gzipCompress(inner)), 0, BIG, BIG)


def test_wrapperLargerThanMaxMessageBytes():
    produced = wrapper(1, gzipCompress(handSet(0, INNER)))
    with pytest.raises(MessageTooLarge):
        assignOffsets(produced, 0, len(produced) - 1, BIG)


# --- skipBelow -------------------------------------------------------------


def test_skipBelowPlain():
    entries = [handEntry(10 + i, None, b"v" * i) for i in range(5)]
    data = b"".join(entries)
    assert skipBelow(data, 0) == 0
    assert skipBelow(data, 10) == 0
    assert skipBelow(data, 11) == len(entries[0])
    assert skipBelow(data, 13) == sum(map(len, entries[:3]))
    assert skipBelow(data, 14) == sum(map(len, entries[:4]))
    assert skipBelow(data, 15) == len(data)
    assert skipBelow(b"", 3) == 0


def test_skipBelowPartialTail():
    data = handEntry(10, None, b"v") + handEntry(11, None, b"long value")[:20]
    assert skipBelow(data, 11) == len(handEntry(10, None, b"v"))  # the partial entry's header says 11
    assert skipBelow(data, 12) == len(data)
    assert skipBelow(data + b"\x00" * 3, 100) == len(data) + 3


def test_skipBelowCompressed():
    produced = wrapper(1, gzipCompress(handSet(0, INNER))) + handEntry(0, None, b"plain")
    data = assignOffsets(produced, 20, BIG, BIG).data  # wrapper 20..22, plain 23
    wrapperLength = len(data) - len(handEntry(0, None, b"plain"))
    assert skipBelow(data, 20) == 0
    assert skipBelow(data, 21) == 0  # inside the wrapper: the wrapper is returned
    assert skipBelow(data, 22) == 0
    assert skipBelow(data, 23) == wrapperLength
    assert skipBelow(data, 24) == len(data)
    assert [m.offset for m in expandMessageSet(data[skipBelow(data, 21) :])] == [20, 21, 22, 23]
