"""Golden inputs: request frames captured from librdkafka and kafka-python.

The frames in C{tests/vectors/} (see its README.md) are bytes no one on this
project wrote; every field their README lists is checked here, as the
generic codec of L{kafkaw.protocol.schema} decodes them (version 0), and
each encodes back to the same bytes.
"""

import gzip
import os

import cramjam
import pytest

from kafkaw.protocol import api, schema
from kafkaw.protocol.definitions import FETCH, LIST_OFFSETS, METADATA
from kafkaw.protocol.errors import CodecError
from kafkaw.protocol.messages import Message, assignOffsets, decodeMessageSet, expandMessageSet

VECTORS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "vectors")
BIG = 10**9

FIVE = [
    (None, b"value-0"),
    (b"key-1", b"value-1"),
    (None, b"value-2"),
    (b"key-3", b"value-3"),
    (None, b"value-4"),
]
GZ = [(None, b"gz-0"), (None, b"gz-1"), (None, b"gz-2")]


def load(name):
    with open(os.path.join(VECTORS, name), "rb") as f:
        return f.read()


def decodeFrame(frame):
    header, reader = api.decodeHeader(frame)
    return header, schema.decodeRequestBody(header.apiKey, header.apiVersion, reader)


def decode(name):
    """(RequestHeader, request value) of a captured frame; checks that it encodes back byte for byte."""
    frame = load(name)
    header, request = decodeFrame(frame)
    encoded = schema.encodeRequest(header.apiKey, header.apiVersion, header.correlationId, header.clientId, request)
    assert encoded == frame
    return header, request


def test_allVectorsPresent():
    names = sorted(n for n in os.listdir(VECTORS) if n.endswith(".bin"))
    assert names == sorted(
        [
            "kafka-python-fetch.bin",
            "kafka-python-listoffsets.bin",
            "kafka-python-produce-gzip.bin",
            "kafka-python-produce-plain.bin",
            "librdkafka-fetch.bin",
            "librdkafka-listoffsets-earliest.bin",
            "librdkafka-metadata.bin",
            "librdkafka-produce-gzip.bin",
            "librdkafka-produce-plain.bin",
            "librdkafka-produce-snappy-raw.bin",
        ]
    )


def produceMessageSet(name, clientId):
    header, request = decode(name)
    assert header == api.RequestHeader(apiKey=0, apiVersion=0, correlationId=1, clientId=clientId)
    assert request.acks == 1
    assert request.timeoutMs == 30000
    assert [topic.name for topic in request.topics] == ["vec"]
    (topic,) = request.topics
    assert [p.partitionIndex for p in topic.partitions] == [0]
    return topic.partitions[0].records


@pytest.mark.parametrize(
    "name, clientId",
    [
        ("librdkafka-produce-plain.bin", "rdkafka"),
        ("kafka-python-produce-plain.bin", "kafka-python-producer-1"),
    ],
)
def test_producePlain(name, clientId):
    messageSet = produceMessageSet(name, clientId)
    assert decodeMessageSet(messageSet) == [Message(i, k, v, 0) for i, (k, v) in enumerate(FIVE)]
    assigned = assignOffsets(messageSet, 1000, 1000000, BIG)
    assert assigned.count == 5
    assert len(assigned.data) == len(messageSet)  # only offsets change in a plain set
    assert decodeMessageSet(assigned.data) == [
        Message(1000 + i, k, v, 0) for i, (k, v) in enumerate(FIVE)
    ]


def test_librdkafkaProduceGzip():
    messageSet = produceMessageSet("librdkafka-produce-gzip.bin", "rdkafka")
    (wrapper,) = decodeMessageSet(messageSet)
    assert (wrapper.offset, wrapper.attributes, wrapper.key) == (0, 1, None)
    assert wrapper.value.startswith(b"\x1f\x8b")
    assert expandMessageSet(messageSet) == [Message(i, k, v) for i, (k, v) in enumerate(FIVE)]

    assigned = assignOffsets(messageSet, 1000, 1000000, BIG)
    assert assigned.count == 5
    (wrapper,) = decodeMessageSet(assigned.data)
    assert (wrapper.offset, wrapper.attributes, wrapper.key) == (1004, 1, None)
    inner = decodeMessageSet(gzip.decompress(wrapper.value))
    assert inner == [Message(1000 + i, k, v) for i, (k, v) in enumerate(FIVE)]
    assert expandMessageSet(assigned.data) == inner


def test_librdkafkaProduceSnappyRaw():
    messageSet = produceMessageSet("librdkafka-produce-snappy-raw.bin", "rdkafka")
    (wrapper,) = decodeMessageSet(messageSet)
    assert (wrapper.offset, wrapper.attributes, wrapper.key) == (0, 2, None)
    assert wrapper.value.startswith(b"\xaf\x01")  # raw snappy: varint length 175
    assert expandMessageSet(messageSet) == [Message(i, k, v) for i, (k, v) in enumerate(FIVE)]

    assigned = assignOffsets(messageSet, 1000, 1000000, BIG)
    assert assigned.count == 5
    (wrapper,) = decodeMessageSet(assigned.data)
    assert (wrapper.offset, wrapper.attributes, wrapper.key) == (1004, 2, None)
    assert wrapper.value.startswith(b"\xaf\x01")  # still raw snappy, same inner length
    inner = decodeMessageSet(bytes(cramjam.snappy.decompress_raw(wrapper.value)))
    assert inner == [Message(1000 + i, k, v) for i, (k, v) in enumerate(FIVE)]


def test_kafkaPythonProduceGzip():
    messageSet = produceMessageSet("kafka-python-produce-gzip.bin", "kafka-python-producer-2")
    (wrapper,) = decodeMessageSet(messageSet)
    assert (wrapper.offset, wrapper.attributes, wrapper.key) == (0, 1, None)
    assert expandMessageSet(messageSet) == [Message(i, k, v) for i, (k, v) in enumerate(GZ)]

    assigned = assignOffsets(messageSet, 7, 1000000, BIG)
    assert assigned.count == 3
    (wrapper,) = decodeMessageSet(assigned.data)
    assert (wrapper.offset, wrapper.attributes, wrapper.key) == (9, 1, None)
    assert expandMessageSet(assigned.data) == [Message(7 + i, k, v) for i, (k, v) in enumerate(GZ)]


def test_librdkafkaMetadata():
    header, request = decode("librdkafka-metadata.bin")
    assert header == api.RequestHeader(3, 0, 1, "rdkafka")
    assert request == METADATA.request.type(topics=[METADATA.request["topics"].type("vec")])


@pytest.mark.parametrize(
    "name, clientId",
    [
        ("librdkafka-listoffsets-earliest.bin", "rdkafka"),
        ("kafka-python-listoffsets.bin", "kafka-python-3.0.12"),
    ],
)
def test_listOffsetsEarliest(name, clientId):
    header, request = decode(name)
    assert header == api.RequestHeader(2, 0, 1, clientId)
    topic, partition = LIST_OFFSETS.request["topics"], LIST_OFFSETS.request["topics"]["partitions"]
    assert request == LIST_OFFSETS.request.type(
        replicaId=-1, topics=[topic.type("vec", [partition.type(partitionIndex=0, timestamp=-2, maxNumOffsets=1)])]
    )


@pytest.mark.parametrize(
    "name, clientId, maxWait",
    [
        ("librdkafka-fetch.bin", "rdkafka", 100),
        ("kafka-python-fetch.bin", "kafka-python-3.0.12", 500),
    ],
)
def test_fetch(name, clientId, maxWait):
    header, request = decode(name)
    assert header == api.RequestHeader(1, 0, 2, clientId)
    topic, partition = FETCH.request["topics"], FETCH.request["topics"]["fetchPartitions"]
    assert request == FETCH.request.type(
        replicaId=-1,
        maxWait=maxWait,
        minBytes=1,
        topics=[topic.type("vec", [partition.type(partitionIndex=0, fetchOffset=0, maxBytes=1048576)])],
    )


@pytest.mark.parametrize("name", sorted(n for n in os.listdir(VECTORS) if n.endswith(".bin")))
def test_everyTruncationIsACodecError(name):
    """Each captured frame cut anywhere short fails cleanly, never with struct.error."""
    frame = load(name)
    for cut in range(len(frame)):
        with pytest.raises(CodecError):
            decodeFrame(frame[:cut])
