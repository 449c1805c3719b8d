"""The generic codec of kafkaw.protocol.schema over the Kafka 2.3.0 definitions.

Golden frames are built by hand with C{struct.pack}, one field per line with a
comment (STYLE.md item 8), and checked both ways: decoding them gives the
expected namedtuple, encoding that value gives them back. Hypothesis then
round-trips generated values through every (api, version, request/response),
and the error paths are walked: truncation at every byte, negative lengths,
huge counts, nulls where not allowed, trailing bytes, bad UTF-8.
"""

import struct
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kafkaw.protocol import definitions as d
from kafkaw.protocol.errors import CodecError
from kafkaw.protocol.primitives import Reader
from kafkaw.protocol.schema import (
    Field,
    Struct,
    decodeRequestBody,
    decodeResponse,
    encodeRequest,
    encodeResponse,
)

CORRELATION = 7
CLIENT = "cli"
RECORDS = b"\x00" * 8 + b"record-batch-bytes"  # passed through as is


# --- hand-built pieces ---------------------------------------------------------


def i8(value):
    return struct.pack(">b", value)


def i16(value):
    return struct.pack(">h", value)


def i32(value):
    return struct.pack(">i", value)


def i64(value):
    return struct.pack(">q", value)


def boolean(value):
    return struct.pack(">b", 1 if value else 0)


def string(value):
    if value is None:
        return i16(-1)  # null string
    data = value.encode("utf-8")
    return i16(len(data)) + data


def blob(value):
    if value is None:
        return i32(-1)  # null bytes
    return i32(len(value)) + value


def header(apiKey, version):
    return b"".join(
        [
            i16(apiKey),  # api key
            i16(version),  # api version
            i32(CORRELATION),  # correlation id
            string(CLIENT),  # client id
        ]
    )


def checkRequest(api, version, body, expected):
    """decode(frame) == expected and encode(expected) == frame."""
    frame = header(api.key, version) + body
    reader = Reader(frame, len(header(api.key, version)))
    assert decodeRequestBody(api.key, version, reader) == expected
    assert encodeRequest(api.key, version, CORRELATION, CLIENT, expected) == frame


def checkResponse(api, version, body, expected):
    frame = i32(CORRELATION) + body
    assert decodeResponse(api.key, version, frame) == (CORRELATION, expected)
    chunks = encodeResponse(api.key, version, CORRELATION, expected)
    assert b"".join(chunks) == frame
    return chunks


def T(api, side, *path):
    """The namedtuple class of a struct: T(d.PRODUCE, "request", "topics", "partitions")."""
    struct_ = getattr(api, side)
    for name in path:
        struct_ = struct_[name]
    return struct_.type


# --- Produce -------------------------------------------------------------------

ProduceRequest = T(d.PRODUCE, "request")
ProduceTopic = T(d.PRODUCE, "request", "topics")
ProducePartition = T(d.PRODUCE, "request", "topics", "partitions")
ProduceResponse = T(d.PRODUCE, "response")
ProduceTopicResult = T(d.PRODUCE, "response", "responses")
ProducePartitionResult = T(d.PRODUCE, "response", "responses", "partitions")


def produceBody(version, transactionalId=None):
    return b"".join(
        ([string(transactionalId)] if version >= 3 else [])  # transactional id (v3+)
        + [
            i16(-1),  # acks
            i32(1500),  # timeout ms
            i32(1),  # topics count
            string("t"),  # topic name
            i32(2),  # partitions count
            i32(0),  # partition index
            blob(RECORDS),  # records
            i32(1),  # partition index
            blob(None),  # null records
        ]
    )


def produceRequest(transactionalId=None):
    partitions = [ProducePartition(0, RECORDS), ProducePartition(1, None)]
    return ProduceRequest(transactionalId, -1, 1500, [ProduceTopic("t", partitions)])


@pytest.mark.parametrize("version", [0, 3, 7])
def test_produceRequest(version):
    transactionalId = "txn-é" if version == 7 else None
    checkRequest(d.PRODUCE, version, produceBody(version, transactionalId), produceRequest(transactionalId))


def test_produceRequestV0IgnoresTransactionalId():
    """A field the version lacks is not written, whatever the value holds."""
    frame = encodeRequest(0, 0, CORRELATION, CLIENT, produceRequest("ignored"))
    assert frame == header(0, 0) + produceBody(0)


@pytest.mark.parametrize("version", [0, 2, 5, 7])
def test_produceResponse(version):
    body = b"".join(
        [
            i32(1),  # topics count
            string("t"),  # topic name
            i32(1),  # partitions count
            i32(0),  # partition index
            i16(0),  # error code
            i64(42),  # base offset
        ]
        + ([i64(-1)] if version >= 2 else [])  # log append time (v2+)
        + ([i64(3)] if version >= 5 else [])  # log start offset (v5+)
        + ([i32(0)] if version >= 1 else [])  # throttle time (v1+)
    )
    partition = ProducePartitionResult(0, 0, 42, -1, 3 if version >= 5 else -1)
    checkResponse(d.PRODUCE, version, body, ProduceResponse([ProduceTopicResult("t", [partition])], 0))


# --- Fetch ---------------------------------------------------------------------

FetchRequest = T(d.FETCH, "request")
FetchTopic = T(d.FETCH, "request", "topics")
FetchPartition = T(d.FETCH, "request", "topics", "fetchPartitions")
ForgottenTopic = T(d.FETCH, "request", "forgotten")
FetchResponse = T(d.FETCH, "response")
FetchTopicResult = T(d.FETCH, "response", "topics")
FetchPartitionResult = T(d.FETCH, "response", "topics", "partitions")
Aborted = T(d.FETCH, "response", "topics", "partitions", "aborted")


def test_fetchRequestV0():
    body = b"".join(
        [
            i32(-1),  # replica id
            i32(500),  # max wait
            i32(1),  # min bytes
            i32(1),  # topics count
            string("t"),  # topic name
            i32(1),  # partitions count
            i32(3),  # partition index
            i64(100),  # fetch offset
            i32(65536),  # partition max bytes
        ]
    )
    partition = FetchPartition(3, -1, 100, -1, 65536)
    expected = FetchRequest(-1, 500, 1, 0x7FFFFFFF, 0, 0, -1, [FetchTopic("t", [partition])], [], "")
    checkRequest(d.FETCH, 0, body, expected)


def test_fetchRequestV4():
    body = b"".join(
        [
            i32(-1),  # replica id
            i32(500),  # max wait
            i32(1),  # min bytes
            i32(52428800),  # max bytes (v3+)
            i8(1),  # isolation level (v4+)
            i32(1),  # topics count
            string("t"),  # topic name
            i32(1),  # partitions count
            i32(0),  # partition index
            i64(7),  # fetch offset
            i32(1048576),  # partition max bytes
        ]
    )
    partition = FetchPartition(0, -1, 7, -1, 1048576)
    expected = FetchRequest(-1, 500, 1, 52428800, 1, 0, -1, [FetchTopic("t", [partition])], [], "")
    checkRequest(d.FETCH, 4, body, expected)


def test_fetchRequestV11():
    body = b"".join(
        [
            i32(-1),  # replica id
            i32(500),  # max wait
            i32(1),  # min bytes
            i32(52428800),  # max bytes
            i8(0),  # isolation level
            i32(12),  # session id (v7+)
            i32(3),  # session epoch (v7+)
            i32(1),  # topics count
            string("t"),  # topic name
            i32(1),  # partitions count
            i32(0),  # partition index
            i32(5),  # current leader epoch (v9+)
            i64(7),  # fetch offset
            i64(0),  # log start offset (v5+)
            i32(1048576),  # partition max bytes
            i32(1),  # forgotten topics count (v7+)
            string("old"),  # forgotten topic name
            i32(2),  # forgotten partitions count
            i32(1),  # partition index
            i32(2),  # partition index
            string("rack-a"),  # rack id (v11+)
        ]
    )
    partition = FetchPartition(0, 5, 7, 0, 1048576)
    expected = FetchRequest(
        -1, 500, 1, 52428800, 0, 12, 3, [FetchTopic("t", [partition])], [ForgottenTopic("old", [1, 2])], "rack-a"
    )
    checkRequest(d.FETCH, 11, body, expected)


def fetchResponseBody(version, records):
    return b"".join(
        ([i32(0)] if version >= 1 else [])  # throttle time (v1+)
        + ([i16(0), i32(0)] if version >= 7 else [])  # error code, session id (v7+)
        + [
            i32(1),  # topics count
            string("t"),  # topic name
            i32(2),  # partitions count
            i32(0),  # partition index
            i16(0),  # error code
            i64(10),  # high watermark
        ]
        + ([i64(10)] if version >= 4 else [])  # last stable offset (v4+)
        + ([i64(0)] if version >= 5 else [])  # log start offset (v5+)
        + ([i32(1), i64(99), i64(4)] if version >= 4 else [])  # aborted: count, producer id, first offset
        + ([i32(-1)] if version >= 11 else [])  # preferred read replica (v11+)
        + [blob(records)]  # records
        + [
            i32(1),  # partition index
            i16(1),  # error code: offset out of range
            i64(-1),  # high watermark
        ]
        + ([i64(-1)] if version >= 4 else [])  # last stable offset
        + ([i64(-1)] if version >= 5 else [])  # log start offset
        + ([i32(-1)] if version >= 4 else [])  # aborted: null
        + ([i32(-1)] if version >= 11 else [])  # preferred read replica
        + [blob(b"")]  # empty records
    )


@pytest.mark.parametrize("version", [0, 4, 11])
def test_fetchResponse(version):
    records = RECORDS * 100
    aborted = [Aborted(99, 4)] if version >= 4 else []
    partitions = [
        FetchPartitionResult(0, 0, 10, 10 if version >= 4 else -1, 0 if version >= 5 else -1, aborted, -1 if version >= 11 else 0, records),
        FetchPartitionResult(1, 1, -1, -1, -1, None if version >= 4 else [], -1 if version >= 11 else 0, b""),
    ]
    expected = FetchResponse(0, 0, 0, [FetchTopicResult("t", partitions)])
    chunks = checkResponse(d.FETCH, version, fetchResponseBody(version, records), expected)
    assert any(chunk is records for chunk in chunks)  # passed through, not copied


def test_fetchResponseRecordsBytesLike():
    """bytearray and memoryview records are chunks of their own, uncopied."""
    for records in (bytearray(RECORDS), memoryview(RECORDS)):
        value = {"topics": [{"name": "t", "partitions": [{"partitionIndex": 0, "records": records}]}]}
        chunks = encodeResponse(1, 0, CORRELATION, value)
        assert any(chunk is records for chunk in chunks)
        assert b"".join(chunks) == b"".join(
            [
                i32(CORRELATION),  # correlation id
                i32(1),  # topics count
                string("t"),  # topic name
                i32(1),  # partitions count
                i32(0),  # partition index
                i16(0),  # error code (default)
                i64(0),  # high watermark (default)
                blob(RECORDS),  # records
            ]
        )


def test_fetchResponseRecordsNotText():
    value = {"topics": [{"name": "t", "partitions": [{"partitionIndex": 0, "records": "text"}]}]}
    with pytest.raises(TypeError):
        encodeResponse(1, 0, CORRELATION, value)


# --- Metadata ------------------------------------------------------------------

MetadataRequest = T(d.METADATA, "request")
MetadataRequestTopic = T(d.METADATA, "request", "topics")
MetadataResponse = T(d.METADATA, "response")
Broker = T(d.METADATA, "response", "brokers")
TopicMetadata = T(d.METADATA, "response", "topics")
PartitionMetadata = T(d.METADATA, "response", "topics", "partitions")


def test_metadataRequestV0():
    body = b"".join(
        [
            i32(2),  # topics count
            string("a"),  # topic name
            string("b"),  # topic name
        ]
    )
    expected = MetadataRequest([MetadataRequestTopic("a"), MetadataRequestTopic("b")], True, False, False)
    checkRequest(d.METADATA, 0, body, expected)
    checkRequest(d.METADATA, 0, i32(0), MetadataRequest([]))  # empty: all topics in v0


def test_metadataRequestV0NullTopicsIsAnError():
    with pytest.raises(CodecError, match="null"):
        decodeRequestBody(3, 0, Reader(i32(-1)))
    with pytest.raises(ValueError, match="does not allow"):
        encodeRequest(3, 0, CORRELATION, CLIENT, {"topics": None})


def test_metadataRequestV1NullTopics():
    """v1+: null asks for every topic, empty for none."""
    checkRequest(d.METADATA, 1, i32(-1), MetadataRequest(None))  # null topics: all
    checkRequest(d.METADATA, 1, i32(0), MetadataRequest([]))  # no topics


def test_metadataRequestV8():
    body = b"".join(
        [
            i32(-1),  # topics: null, all
            boolean(False),  # allow auto topic creation (v4+)
            boolean(True),  # include cluster authorized operations (v8+)
            boolean(False),  # include topic authorized operations (v8+)
        ]
    )
    checkRequest(d.METADATA, 8, body, MetadataRequest(None, False, True, False))


def test_metadataResponseV0():
    body = b"".join(
        [
            i32(1),  # brokers count
            i32(1),  # node id
            string("localhost"),  # host
            i32(9092),  # port
            i32(1),  # topics count
            i16(0),  # error code
            string("t"),  # name
            i32(1),  # partitions count
            i16(0),  # error code
            i32(0),  # partition index
            i32(1),  # leader id
            i32(1),  # replicas count
            i32(1),  # replica
            i32(1),  # isr count
            i32(1),  # isr
        ]
    )
    expected = MetadataResponse(
        0,
        [Broker(1, "localhost", 9092, None)],
        None,
        -1,
        [TopicMetadata(0, "t", False, [PartitionMetadata(0, 0, 1, -1, [1], [1], [])], -2147483648)],
        -2147483648,
    )
    checkResponse(d.METADATA, 0, body, expected)


def test_metadataResponseV1():
    body = b"".join(
        [
            i32(1),  # brokers count
            i32(1),  # node id
            string("localhost"),  # host
            i32(9092),  # port
            string(None),  # rack (v1+): null
            i32(1),  # controller id (v1+)
            i32(1),  # topics count
            i16(0),  # error code
            string("__consumer_offsets"),  # name
            boolean(True),  # is internal (v1+)
            i32(0),  # partitions count
        ]
    )
    expected = MetadataResponse(
        0, [Broker(1, "localhost", 9092, None)], None, 1, [TopicMetadata(0, "__consumer_offsets", True, [])]
    )
    checkResponse(d.METADATA, 1, body, expected)


def test_metadataResponseV8():
    body = b"".join(
        [
            i32(0),  # throttle time (v3+)
            i32(1),  # brokers count
            i32(1),  # node id
            string("localhost"),  # host
            i32(9092),  # port
            string("rack-a"),  # rack
            string("cluster-1"),  # cluster id (v2+)
            i32(1),  # controller id
            i32(1),  # topics count
            i16(0),  # error code
            string("t"),  # name
            boolean(False),  # is internal
            i32(1),  # partitions count
            i16(0),  # error code
            i32(0),  # partition index
            i32(1),  # leader id
            i32(4),  # leader epoch (v7+)
            i32(2),  # replicas count
            i32(1),  # replica
            i32(2),  # replica
            i32(1),  # isr count
            i32(1),  # isr
            i32(1),  # offline replicas count (v5+)
            i32(2),  # offline replica
            i32(0x18),  # topic authorized operations (v8+)
            i32(-2147483648),  # cluster authorized operations (v8+)
        ]
    )
    expected = MetadataResponse(
        0,
        [Broker(1, "localhost", 9092, "rack-a")],
        "cluster-1",
        1,
        [TopicMetadata(0, "t", False, [PartitionMetadata(0, 0, 1, 4, [1, 2], [1], [2])], 0x18)],
        -2147483648,
    )
    checkResponse(d.METADATA, 8, body, expected)


def test_metadataResponseFromDicts():
    """Handlers may write nested dicts; what they leave out takes its default."""
    value = {
        "brokers": [{"nodeId": 1, "host": "h", "port": 9}],
        "controllerId": 1,
        "topics": [{"name": "t", "partitions": [{"partitionIndex": 0, "leaderId": 1, "replicaNodes": [1], "isrNodes": [1]}]}],
    }
    assert b"".join(encodeResponse(3, 1, CORRELATION, value)) == b"".join(
        [
            i32(CORRELATION),  # correlation id
            i32(1),  # brokers count
            i32(1),  # node id
            string("h"),  # host
            i32(9),  # port
            string(None),  # rack: default null
            i32(1),  # controller id
            i32(1),  # topics count
            i16(0),  # error code: default
            string("t"),  # name
            boolean(False),  # is internal: default
            i32(1),  # partitions count
            i16(0),  # error code: default
            i32(0),  # partition index
            i32(1),  # leader id
            i32(1),  # replicas count
            i32(1),  # replica
            i32(1),  # isr count
            i32(1),  # isr
        ]
    )


def test_encodeAcceptsObjects():
    """Any object with the attributes will do, at every level."""
    value = SimpleNamespace(
        brokers=[SimpleNamespace(nodeId=1, host="h", port=9)],
        topics=[{"name": "t", "partitions": []}],
    )
    viaDict = {"brokers": [{"nodeId": 1, "host": "h", "port": 9}], "topics": [{"name": "t", "partitions": []}]}
    assert encodeResponse(3, 0, 1, value) == encodeResponse(3, 0, 1, viaDict)


# --- ListOffsets ---------------------------------------------------------------

ListOffsetsRequest = T(d.LIST_OFFSETS, "request")
ListOffsetsTopic = T(d.LIST_OFFSETS, "request", "topics")
ListOffsetsPartition = T(d.LIST_OFFSETS, "request", "topics", "partitions")
ListOffsetsResponse = T(d.LIST_OFFSETS, "response")
ListOffsetsTopicResult = T(d.LIST_OFFSETS, "response", "topics")
ListOffsetsPartitionResult = T(d.LIST_OFFSETS, "response", "topics", "partitions")


def test_listOffsetsV0():
    request = b"".join(
        [
            i32(-1),  # replica id
            i32(1),  # topics count
            string("t"),  # name
            i32(1),  # partitions count
            i32(0),  # partition index
            i64(-2),  # timestamp: earliest
            i32(10),  # max number of offsets (v0 only)
        ]
    )
    partition = ListOffsetsPartition(0, 0, -2, 10)
    checkRequest(d.LIST_OFFSETS, 0, request, ListOffsetsRequest(-1, 0, [ListOffsetsTopic("t", [partition])]))
    response = b"".join(
        [
            i32(1),  # topics count
            string("t"),  # name
            i32(1),  # partitions count
            i32(0),  # partition index
            i16(0),  # error code
            i32(2),  # old style offsets count (v0 only)
            i64(9),  # offset
            i64(0),  # offset
        ]
    )
    result = ListOffsetsPartitionResult(0, 0, [9, 0], -1, -1, 0)
    checkResponse(d.LIST_OFFSETS, 0, response, ListOffsetsResponse(0, [ListOffsetsTopicResult("t", [result])]))


def test_listOffsetsV1():
    request = b"".join(
        [
            i32(-1),  # replica id
            i32(1),  # topics count
            string("t"),  # name
            i32(1),  # partitions count
            i32(0),  # partition index
            i64(-1),  # timestamp: latest
        ]
    )
    partition = ListOffsetsPartition(0, 0, -1, 0)
    checkRequest(d.LIST_OFFSETS, 1, request, ListOffsetsRequest(-1, 0, [ListOffsetsTopic("t", [partition])]))
    response = b"".join(
        [
            i32(1),  # topics count
            string("t"),  # name
            i32(1),  # partitions count
            i32(0),  # partition index
            i16(0),  # error code
            i64(-1),  # timestamp (v1+)
            i64(9),  # offset (v1+)
        ]
    )
    result = ListOffsetsPartitionResult(0, 0, [], -1, 9, 0)
    checkResponse(d.LIST_OFFSETS, 1, response, ListOffsetsResponse(0, [ListOffsetsTopicResult("t", [result])]))


def test_listOffsetsV5():
    request = b"".join(
        [
            i32(-1),  # replica id
            i8(1),  # isolation level (v2+)
            i32(1),  # topics count
            string("t"),  # name
            i32(1),  # partitions count
            i32(0),  # partition index
            i32(3),  # current leader epoch (v4+)
            i64(1560000000000),  # timestamp
        ]
    )
    partition = ListOffsetsPartition(0, 3, 1560000000000, 0)
    checkRequest(d.LIST_OFFSETS, 5, request, ListOffsetsRequest(-1, 1, [ListOffsetsTopic("t", [partition])]))
    response = b"".join(
        [
            i32(0),  # throttle time (v2+)
            i32(1),  # topics count
            string("t"),  # name
            i32(1),  # partitions count
            i32(0),  # partition index
            i16(0),  # error code
            i64(1560000000001),  # timestamp
            i64(9),  # offset
            i32(3),  # leader epoch (v4+)
        ]
    )
    result = ListOffsetsPartitionResult(0, 0, [], 1560000000001, 9, 3)
    checkResponse(d.LIST_OFFSETS, 5, response, ListOffsetsResponse(0, [ListOffsetsTopicResult("t", [result])]))


# --- CreateTopics --------------------------------------------------------------

CreateTopicsRequest = T(d.CREATE_TOPICS, "request")
CreatableTopic = T(d.CREATE_TOPICS, "request", "topics")
Assignment = T(d.CREATE_TOPICS, "request", "topics", "assignments")
TopicConfig = T(d.CREATE_TOPICS, "request", "topics", "configs")
CreateTopicsResponse = T(d.CREATE_TOPICS, "response")
CreatableTopicResult = T(d.CREATE_TOPICS, "response", "topics")


@pytest.mark.parametrize("version", [0, 3])
def test_createTopics(version):
    request = b"".join(
        [
            i32(1),  # topics count
            string("t"),  # name
            i32(-1),  # num partitions: from the assignments
            i16(-1),  # replication factor
            i32(1),  # assignments count
            i32(0),  # partition index
            i32(1),  # broker ids count
            i32(1),  # broker id
            i32(2),  # configs count
            string("retention.ms"),  # config name
            string("1000"),  # config value
            string("cleanup.policy"),  # config name
            string(None),  # config value: null
            i32(30000),  # timeout ms
        ]
        + ([boolean(True)] if version >= 1 else [])  # validate only (v1+)
    )
    topic = CreatableTopic(
        "t", -1, -1, [Assignment(0, [1])], [TopicConfig("retention.ms", "1000"), TopicConfig("cleanup.policy", None)]
    )
    checkRequest(d.CREATE_TOPICS, version, request, CreateTopicsRequest([topic], 30000, version >= 1))
    response = b"".join(
        ([i32(0)] if version >= 2 else [])  # throttle time (v2+)
        + [
            i32(1),  # topics count
            string("t"),  # name
            i16(36),  # error code: topic already exists
        ]
        + ([string("exists")] if version >= 1 else [])  # error message (v1+)
    )
    result = CreatableTopicResult("t", 36, "exists" if version >= 1 else None)
    checkResponse(d.CREATE_TOPICS, version, response, CreateTopicsResponse(0, [result]))


# --- DescribeConfigs -----------------------------------------------------------

DescribeConfigsRequest = T(d.DESCRIBE_CONFIGS, "request")
ConfigResource = T(d.DESCRIBE_CONFIGS, "request", "resources")
DescribeConfigsResponse = T(d.DESCRIBE_CONFIGS, "response")
ConfigsResult = T(d.DESCRIBE_CONFIGS, "response", "results")
ConfigEntry = T(d.DESCRIBE_CONFIGS, "response", "results", "configs")
Synonym = T(d.DESCRIBE_CONFIGS, "response", "results", "configs", "synonyms")


def test_describeConfigsV0():
    request = b"".join(
        [
            i32(1),  # resources count
            i8(2),  # resource type: topic
            string("t"),  # resource name
            i32(-1),  # configuration keys: null, all
        ]
    )
    checkRequest(d.DESCRIBE_CONFIGS, 0, request, DescribeConfigsRequest([ConfigResource(2, "t", None)], False))
    response = b"".join(
        [
            i32(0),  # throttle time
            i32(1),  # results count
            i16(0),  # error code
            string(None),  # error message
            i8(2),  # resource type
            string("t"),  # resource name
            i32(1),  # configs count
            string("retention.ms"),  # name
            string("604800000"),  # value
            boolean(False),  # read only
            boolean(True),  # is default (v0 only)
            boolean(False),  # is sensitive
        ]
    )
    entry = ConfigEntry("retention.ms", "604800000", False, True, -1, False, [])
    checkResponse(d.DESCRIBE_CONFIGS, 0, response, DescribeConfigsResponse(0, [ConfigsResult(0, None, 2, "t", [entry])]))


def test_describeConfigsV2Synonyms():
    request = b"".join(
        [
            i32(1),  # resources count
            i8(2),  # resource type: topic
            string("t"),  # resource name
            i32(1),  # configuration keys count
            string("retention.ms"),  # key
            boolean(True),  # include synonyms (v1+)
        ]
    )
    expected = DescribeConfigsRequest([ConfigResource(2, "t", ["retention.ms"])], True)
    checkRequest(d.DESCRIBE_CONFIGS, 2, request, expected)
    response = b"".join(
        [
            i32(0),  # throttle time
            i32(1),  # results count
            i16(0),  # error code
            string(None),  # error message
            i8(2),  # resource type
            string("t"),  # resource name
            i32(1),  # configs count
            string("retention.ms"),  # name
            string("1000"),  # value
            boolean(False),  # read only
            i8(1),  # config source (v1+): dynamic topic config
            boolean(False),  # is sensitive
            i32(2),  # synonyms count (v1+)
            string("retention.ms"),  # synonym name
            string("1000"),  # synonym value
            i8(1),  # synonym source
            string("log.retention.ms"),  # synonym name
            string(None),  # synonym value: null
            i8(5),  # synonym source: default
        ]
    )
    synonyms = [Synonym("retention.ms", "1000", 1), Synonym("log.retention.ms", None, 5)]
    entry = ConfigEntry("retention.ms", "1000", False, False, 1, False, synonyms)
    checkResponse(d.DESCRIBE_CONFIGS, 2, response, DescribeConfigsResponse(0, [ConfigsResult(0, None, 2, "t", [entry])]))


# --- InitProducerId, ApiVersions ----------------------------------------------


def test_initProducerIdV0():
    request = b"".join(
        [
            string(None),  # transactional id: null
            i32(60000),  # transaction timeout ms
        ]
    )
    checkRequest(d.INIT_PRODUCER_ID, 0, request, d.INIT_PRODUCER_ID.request.type(None, 60000))
    response = b"".join(
        [
            i32(0),  # throttle time
            i16(0),  # error code
            i64(1000),  # producer id
            i16(0),  # producer epoch
        ]
    )
    checkResponse(d.INIT_PRODUCER_ID, 0, response, d.INIT_PRODUCER_ID.response.type(0, 0, 1000, 0))


def test_apiVersionsV2Response():
    Key = T(d.API_VERSIONS, "response", "apiKeys")
    body = b"".join(
        [
            i16(0),  # error code
            i32(2),  # api keys count
            i16(0),  # api key: Produce
            i16(0),  # min version
            i16(7),  # max version
            i16(1),  # api key: Fetch
            i16(0),  # min version
            i16(11),  # max version
            i32(0),  # throttle time (v1+)
        ]
    )
    expected = d.API_VERSIONS.response.type(0, [Key(0, 0, 7), Key(1, 0, 11)], 0)
    checkResponse(d.API_VERSIONS, 2, body, expected)
    checkRequest(d.API_VERSIONS, 2, b"", d.API_VERSIONS.request.type())  # empty body


# --- the table itself ----------------------------------------------------------


def test_table():
    versions = {key: (api.minVersion, api.maxVersion) for key, api in d.APIS.items()}
    assert versions == {
        0: (0, 7), 1: (0, 11), 2: (0, 5), 3: (0, 8), 8: (0, 7), 9: (0, 5), 10: (0, 2), 11: (0, 5),
        12: (0, 3), 13: (0, 2), 14: (0, 3), 15: (0, 3), 16: (0, 2), 17: (0, 1), 18: (0, 2), 19: (0, 3),
        20: (0, 3), 22: (0, 1), 29: (0, 1), 30: (0, 1), 31: (0, 1), 32: (0, 2), 36: (0, 1), 37: (0, 1), 42: (0, 1), 50: (0, 0), 51: (0, 0),
    }  # fmt: skip
    # Only Kafka 2.7's SCRAM user APIs are flexible: every other version is classic.
    assert {(key, v) for key, api in d.APIS.items() for v in range(api.minVersion, api.maxVersion + 1) if api.isFlexible(v)} == {(50, 0), (51, 0)}
    assert d.PRODUCE.response["responses"]["partitions"].type._fields == (
        "partitionIndex", "errorCode", "baseOffset", "logAppendTimeMs", "logStartOffset",
    )  # fmt: skip


def test_unknownApiOrVersion():
    with pytest.raises(CodecError):
        decodeRequestBody(4, 0, Reader(b""))
    with pytest.raises(CodecError):
        decodeRequestBody(0, 8, Reader(b""))
    with pytest.raises(ValueError):
        encodeResponse(1, 12, 1, {})
    with pytest.raises(ValueError):
        encodeRequest(99, 0, 1, None, {})


def test_definitionErrors():
    with pytest.raises(ValueError):
        Field("X", "float32")
    with pytest.raises(ValueError):
        Field("X", "[]Thing")  # no fields
    with pytest.raises(ValueError):
        Struct("S", [Field("A", "int8"), Field("a", "int8")])
    with pytest.raises(KeyError):
        d.PRODUCE.request["acks"]


# --- error paths ---------------------------------------------------------------

GOLDEN_REQUESTS = [
    (0, 0, produceBody(0)),
    (0, 7, produceBody(7, "txn")),
    (1, 0, b"".join([i32(-1), i32(1), i32(1), i32(1), string("t"), i32(1), i32(0), i64(0), i32(9)])),
    (3, 8, b"".join([i32(1), string("t"), boolean(True), boolean(False), boolean(False)])),
    (32, 2, b"".join([i32(1), i8(2), string("t"), i32(1), string("k"), boolean(True)])),
]


@pytest.mark.parametrize("apiKey, version, body", GOLDEN_REQUESTS)
def test_truncatedAtEveryByte(apiKey, version, body):
    decodeRequestBody(apiKey, version, Reader(body))
    for cut in range(len(body)):
        with pytest.raises(CodecError):
            decodeRequestBody(apiKey, version, Reader(body[:cut]))


@pytest.mark.parametrize("version", [0, 4, 11])
def test_truncatedResponseAtEveryByte(version):
    frame = i32(CORRELATION) + fetchResponseBody(version, RECORDS)
    decodeResponse(1, version, frame)
    for cut in range(len(frame)):
        with pytest.raises(CodecError):
            decodeResponse(1, version, frame[:cut])


@pytest.mark.parametrize("apiKey, version, body", GOLDEN_REQUESTS)
def test_trailingBytes(apiKey, version, body):
    with pytest.raises(CodecError, match="unexpected bytes"):
        decodeRequestBody(apiKey, version, Reader(body + b"\x00"))
    with pytest.raises(CodecError, match="unexpected bytes"):
        decodeResponse(18, 0, i32(1) + i16(0) + i32(0) + b"\x00")


def produceWith(topicName=string("t"), topicCount=i32(1), partitionCount=i32(1), records=blob(b"x")):
    return b"".join(
        [
            i16(1),  # acks
            i32(0),  # timeout
            topicCount,  # topics count
            topicName,  # topic name
            partitionCount,  # partitions count
            i32(0),  # partition index
            records,  # records
        ]
    )


@pytest.mark.parametrize(
    "body, message",
    [
        (produceWith(topicName=i16(-2)), "negative length -2"),
        (produceWith(topicName=i16(-1)), r"null \(-1\), which is not allowed"),  # null topic name
        (produceWith(topicCount=i32(-1)), r"null \(-1\), which is not allowed"),  # null topics array
        (produceWith(topicCount=i32(-2)), "negative count -2"),
        (produceWith(topicCount=i32(2**31 - 1)), "cannot fit"),
        (produceWith(partitionCount=i32(10**6)), "cannot fit"),
        (produceWith(records=i32(-2)), "negative length -2"),
        (produceWith(records=i32(2**31 - 1)), "truncated"),
        (produceWith(topicName=i16(2) + b"\xff\xfe"), "UTF-8"),
        (produceWith(topicName=i16(100) + b"t"), "truncated"),
    ],
)
def test_malformedProduce(body, message):
    with pytest.raises(CodecError, match=message):
        decodeRequestBody(0, 0, Reader(body))


def test_nullWhereNullable():
    request = decodeRequestBody(0, 0, Reader(produceWith(records=i32(-1))))
    assert request.topics[0].partitions[0].records is None


def test_nullBytesWhereNotNullable():
    body = b"".join(
        [
            string("g"),  # group id
            i32(10000),  # session timeout
            string(""),  # member id
            string("consumer"),  # protocol type
            i32(1),  # protocols count
            string("range"),  # name
            i32(-1),  # metadata: null, not allowed
        ]
    )
    with pytest.raises(CodecError, match=r"null \(-1\), which is not allowed"):
        decodeRequestBody(11, 0, Reader(body))


def test_nullInStringArray():
    with pytest.raises(CodecError, match=r"null \(-1\), which is not allowed"):
        decodeRequestBody(20, 0, Reader(i32(1) + i16(-1) + i32(0)))
    with pytest.raises(ValueError, match="not allowed"):
        encodeRequest(20, 0, 1, None, {"topicNames": [None]})


def test_hugeIntArrayCount():
    with pytest.raises(CodecError, match="cannot fit"):
        decodeRequestBody(42, 0, Reader(i32(2**31 - 1) + string("g")))  # a string array
    with pytest.raises(CodecError, match="cannot fit"):
        decodeResponse(3, 0, i32(1) + i32(0) + i32(1) + i16(0) + string("t") + i32(1) + i16(0) + i32(0) + i32(0) + i32(2**30))


@pytest.mark.parametrize(
    "value, message",
    [
        ({"responses": None}, "does not allow"),
        ({"responses": [{"name": None, "partitions": []}]}, "does not allow"),
        ({"responses": [{"name": "t", "partitions": [{"errorCode": 2**15}]}]}, "does not fit"),
        ({"responses": [{"name": "t", "partitions": [{"baseOffset": None}]}]}, "does not fit"),
        ({"responses": [{"name": "x" * 40000, "partitions": []}]}, "does not fit"),
    ],
)
def test_encodeErrors(value, message):
    with pytest.raises(ValueError, match=message):
        encodeResponse(0, 1, 1, value)


def test_encodeStringAsBytesAndBadTypes():
    assert encodeResponse(16, 0, 1, {"groups": [{"groupId": b"g", "protocolType": "c"}]}) == encodeResponse(
        16, 0, 1, {"groups": [{"groupId": "g", "protocolType": "c"}]}
    )
    with pytest.raises(TypeError):
        encodeResponse(16, 0, 1, {"groups": [{"groupId": 5, "protocolType": "c"}]})


# --- properties ----------------------------------------------------------------

SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CASES = [
    (api, version, side)
    for api in d.APIS.values()
    for version in range(api.minVersion, api.maxVersion + 1)
    for side in ("request", "response")
]
CASE_IDS = [f"{api.name}-v{version}-{side}" for api, version, side in CASES]

_INTS = {
    "int8": st.integers(-(2**7), 2**7 - 1),
    "int16": st.integers(-(2**15), 2**15 - 1),
    "int32": st.integers(-(2**31), 2**31 - 1),
    "int64": st.integers(-(2**63), 2**63 - 1),
    "bool": st.booleans(),
    "string": st.text(max_size=8),
    "bytes": st.binary(max_size=16),
}


def values(struct_, version):
    """Strategy for a struct's namedtuple: what decoding what it encodes must give back."""
    parts = []
    for field in struct_.fields:
        if version not in field.versions:
            parts.append(st.just(field.default))
            continue
        if field.struct is not None:
            item = values(field.struct, version)
        else:
            item = _INTS[field.element]
        strategy = st.lists(item, max_size=3) if field.isArray else item
        if field.nullableIn(version):
            strategy = st.none() | strategy
        parts.append(strategy)
    return st.tuples(*parts).map(lambda fields: struct_.type(*fields))


@pytest.mark.parametrize("api, version, side", CASES, ids=CASE_IDS)
@SETTINGS
@given(data=st.data())
def test_roundTrip(api, version, side, data):
    value = data.draw(values(getattr(api, side), version))
    if side == "request":
        frame = encodeRequest(api.key, version, 5, "c", value)
        reader = Reader(frame, len(header(api.key, version)) - len(string(CLIENT)) + len(string("c")))
        assert decodeRequestBody(api.key, version, reader) == value
    else:
        chunks = encodeResponse(api.key, version, 5, value)
        assert decodeResponse(api.key, version, b"".join(chunks)) == (5, value)
    # The same value as plain dicts encodes to the same bytes.
    asDicts = toDicts(value)
    if side == "request":
        assert encodeRequest(api.key, version, 5, "c", asDicts) == frame
    else:
        assert b"".join(encodeResponse(api.key, version, 5, asDicts)) == b"".join(chunks)


def toDicts(value):
    if isinstance(value, tuple) and hasattr(value, "_asdict"):
        return {name: toDicts(item) for name, item in value._asdict().items()}
    if isinstance(value, list):
        return [toDicts(item) for item in value]
    return value


@pytest.mark.parametrize("api, version, side", CASES, ids=CASE_IDS)
@SETTINGS
@given(garbage=st.binary(max_size=64))
def test_garbageOnlyCodecErrors(api, version, side, garbage):
    """Arbitrary bytes decode or raise CodecError, nothing else."""
    try:
        if side == "request":
            decodeRequestBody(api.key, version, Reader(garbage))
        else:
            decodeResponse(api.key, version, garbage)
    except CodecError:
        pass


def test_bytesLikeFrames():
    """Frames held as bytearray or memoryview decode like bytes."""
    frame = header(0, 3) + produceBody(3)
    for data in (bytearray(frame), memoryview(frame)):
        assert decodeRequestBody(0, 3, Reader(data, len(header(0, 3)))) == produceRequest()
        assert decodeResponse(18, 0, type(data)(i32(1) + i16(0) + i32(0))) == (1, d.API_VERSIONS.response.type(0, []))


def test_compiledOnce():
    assert d.FETCH.response.encoder(11) is d.FETCH.response.encoder(11)
    assert d.FETCH.request.decoder(4) is d.FETCH.request.decoder(4)


# --- frames real clients sent (tests/vectors/modern) --------------------------

MODERN = sorted((Path(__file__).parent.parent / "vectors" / "modern").glob("*.bin"))


@pytest.mark.parametrize("path", MODERN, ids=[path.stem for path in MODERN])
def test_clientFrames(path):
    """librdkafka, kafka-python, aiokafka and kafkajs requests decode, and encode back to the same bytes."""
    data = path.read_bytes()
    frame = data[4:] if struct.unpack_from(">i", data)[0] == len(data) - 4 else data
    reader = Reader(frame)
    apiKey, version, correlationId, clientId = reader.int16(), reader.int16(), reader.int32(), reader.string()
    if apiKey == 18 and version > 2:
        pytest.skip("flexible ApiVersions: kafkaw.protocol.apiversions reads it")
    value = decodeRequestBody(apiKey, version, reader)
    assert encodeRequest(apiKey, version, correlationId, clientId, value) == frame


# --- flexible versions (KIP-482): compact encodings and tagged fields ---------------


def uvarint(value):
    """Kafka's unsigned varint, written out by hand for the golden frames."""
    out = b""
    while value >= 0x80:
        out += bytes([value & 0x7F | 0x80])
        value >>= 7
    return out + bytes([value])


def compact(value):
    """A compact string (or bytes): uvarint(length + 1), then the bytes; None: 0."""
    if value is None:
        return b"\x00"
    data = value.encode() if isinstance(value, str) else value
    return uvarint(len(data) + 1) + data


NO_TAGS = b"\x00"  # a tagged-fields section with no field


def flexibleHeader(apiKey, version):
    return header(apiKey, version) + NO_TAGS  # request header v2: header v1 + tagged fields


def test_uvarintGolden():
    from kafkaw.protocol.schema import readUvarint, uvarint as encodeUvarint

    for value, wire in [(0, b"\x00"), (1, b"\x01"), (127, b"\x7f"), (128, b"\x80\x01"), (300, b"\xac\x02"), (2**32 - 1, b"\xff\xff\xff\xff\x0f")]:
        assert encodeUvarint(value) == wire == uvarint(value)
        assert readUvarint(wire + b"tail", 0) == (value, len(wire))
    for bad in [b"\x80", b"\xff\xff\xff\xff\xff\x01", b"\xff\xff\xff\xff\x1f"]:
        with pytest.raises(CodecError):
            readUvarint(bad, 0)


def test_alterUserScramCredentialsRequestV0():
    body = (
        uvarint(1 + 1)  # deletions: compact array of 1
        + compact("bob")  # name
        + i8(1)  # mechanism SCRAM-SHA-256
        + NO_TAGS  # deletion's tagged fields
        + uvarint(1 + 1)  # upsertions: compact array of 1
        + compact("alice")  # name
        + i8(2)  # mechanism SCRAM-SHA-512
        + i32(8192)  # iterations
        + compact(b"salt")  # salt: compact bytes
        + compact(b"p" * 64)  # salted password
        + NO_TAGS  # upsertion's tagged fields
        + NO_TAGS  # request's tagged fields
    )
    frame = flexibleHeader(51, 0) + body
    Deletion = T(d.ALTER_USER_SCRAM_CREDENTIALS, "request", "deletions")
    Upsertion = T(d.ALTER_USER_SCRAM_CREDENTIALS, "request", "upsertions")
    expected = d.ALTER_USER_SCRAM_CREDENTIALS.request.type([Deletion("bob", 1)], [Upsertion("alice", 2, 8192, b"salt", b"p" * 64)])
    assert decodeRequestBody(51, 0, Reader(frame, len(header(51, 0)))) == expected
    assert encodeRequest(51, 0, CORRELATION, CLIENT, expected) == frame


def test_describeUserScramCredentialsRequestV0NullAndEmpty():
    for users, wire in [(None, b"\x00"), ([], b"\x01")]:  # compact null array: 0; empty: 1
        frame = flexibleHeader(50, 0) + wire + NO_TAGS
        expected = d.DESCRIBE_USER_SCRAM_CREDENTIALS.request.type(users)
        assert decodeRequestBody(50, 0, Reader(frame, len(header(50, 0)))) == expected
        assert encodeRequest(50, 0, CORRELATION, CLIENT, expected) == frame


def test_describeUserScramCredentialsResponseV0():
    body = (
        NO_TAGS  # response header v1: tagged fields after the correlation id
        + i32(0)  # throttle time
        + i16(0)  # error code
        + compact(None)  # error message: null
        + uvarint(2 + 1)  # results: 2
        + compact("alice") + i16(0) + compact(None)
        + uvarint(1 + 1) + i8(1) + i32(4096) + NO_TAGS  # one credential info
        + NO_TAGS
        + compact("nobody") + i16(91) + compact("no such user")
        + uvarint(0 + 1)  # no credential infos
        + NO_TAGS
        + NO_TAGS  # response's tagged fields
    )
    Result = T(d.DESCRIBE_USER_SCRAM_CREDENTIALS, "response", "results")
    Info = T(d.DESCRIBE_USER_SCRAM_CREDENTIALS, "response", "results", "credentialInfos")
    expected = d.DESCRIBE_USER_SCRAM_CREDENTIALS.response.type(
        0, 0, None, [Result("alice", 0, None, [Info(1, 4096)]), Result("nobody", 91, "no such user", [])]
    )
    checkResponse(d.DESCRIBE_USER_SCRAM_CREDENTIALS, 0, body, expected)


def test_unknownTaggedFieldsAreSkipped():
    """A newer client may send tagged fields this broker does not know: in the
    header, in a nested struct and at the end; they are skipped."""
    tags = uvarint(2) + uvarint(0) + uvarint(3) + b"abc" + uvarint(7) + uvarint(0)  # two fields: tag 0 (3 bytes), tag 7 (empty)
    frame = (
        header(51, 0) + tags  # header tagged fields
        + uvarint(1 + 1) + compact("bob") + i8(1) + tags  # a deletion with tagged fields
        + uvarint(0 + 1)  # no upsertions
        + tags
    )
    decoded = decodeRequestBody(51, 0, Reader(frame, len(header(51, 0))))
    assert [(x.name, x.mechanism) for x in decoded.deletions] == [("bob", 1)] and decoded.upsertions == []


@pytest.mark.parametrize(
    "wire",
    [
        uvarint(1) + uvarint(0) + uvarint(50) + b"short",  # a tagged field longer than the frame
        uvarint(1000),  # more tagged fields than bytes left
        b"\x80",  # a truncated varint
    ],
)
def test_badTaggedFieldsAreCodecErrors(wire):
    frame = header(50, 0) + NO_TAGS + b"\x01" + wire
    with pytest.raises(CodecError):
        decodeRequestBody(50, 0, Reader(frame, len(header(50, 0))))


def test_compactLengthsAreChecked():
    frame = header(50, 0) + NO_TAGS + uvarint(1 + 1) + uvarint(100 + 1) + b"short" + NO_TAGS + NO_TAGS
    with pytest.raises(CodecError):
        decodeRequestBody(50, 0, Reader(frame, len(header(50, 0))))
    frame = header(50, 0) + NO_TAGS + uvarint(1_000_000 + 1) + NO_TAGS  # a million users in 1 byte
    with pytest.raises(CodecError):
        decodeRequestBody(50, 0, Reader(frame, len(header(50, 0))))
    frame = header(50, 0) + NO_TAGS + uvarint(1 + 1) + b"\x00" + NO_TAGS + NO_TAGS  # a null name where not nullable
    with pytest.raises(CodecError):
        decodeRequestBody(50, 0, Reader(frame, len(header(50, 0))))


def test_emptyTaggedFieldSectionsAfterAFlexibleRequestAreIgnored():
    """librdkafka 2.16 ends AlterUserScramCredentials with an extra empty
    tagged-fields section (Kafka does not check for trailing bytes); anything
    else left over is still an error."""
    frame = flexibleHeader(50, 0) + b"\x00" + NO_TAGS + NO_TAGS  # users null, tags, an extra empty section
    assert decodeRequestBody(50, 0, Reader(frame, len(header(50, 0)))).users is None
    with pytest.raises(CodecError):
        decodeRequestBody(50, 0, Reader(frame + b"\x01", len(header(50, 0))))
