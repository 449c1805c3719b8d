"""Requests and responses of the four Kafka 0.8 APIs, and of CreateTopics (all version 0).

Decoders take a frame without its size prefix and return plain tuples;
encoders take plain tuples and return a list of byte chunks (without the size
prefix) so that stored message sets go out without being copied.

The request encoders at the end are for clients (the C{kafkaw} CLI); they
return a whole request frame without its size prefix.
"""

import enum
from typing import NamedTuple

from kafkaw.protocol.errors import CodecError
from kafkaw.protocol.primitives import INT16, INT32, INT64, Reader, encodeString


class ApiKey(enum.IntEnum):
    PRODUCE = 0
    FETCH = 1
    LIST_OFFSETS = 2
    METADATA = 3
    CREATE_TOPICS = 19


class AdminErrorCode(enum.IntEnum):
    """Error codes of a CreateTopics answer, which Kafka added after 0.8."""

    INVALID_TOPIC = 17
    TOPIC_ALREADY_EXISTS = 36
    INVALID_PARTITIONS = 37
    INVALID_REPLICATION_FACTOR = 38
    INVALID_CONFIG = 40
    INVALID_REQUEST = 42


class RequestHeader(NamedTuple):
    apiKey: int
    apiVersion: int
    correlationId: int
    clientId: str | None


class ProducePartition(NamedTuple):
    partition: int
    messageSet: bytes


class ProduceRequest(NamedTuple):
    acks: int
    timeout: int
    topics: list  # [(topic, [ProducePartition])]


class FetchPartition(NamedTuple):
    partition: int
    offset: int
    maxBytes: int


class FetchRequest(NamedTuple):
    replicaId: int
    maxWait: int
    minBytes: int
    topics: list  # [(topic, [FetchPartition])]


# ListOffsets times that are not timestamps.
LATEST = -1  # the log end: the offset the next message will get
EARLIEST = -2  # the log start: the first offset still stored


class OffsetsPartition(NamedTuple):
    partition: int
    time: int  # milliseconds since the epoch, or LATEST or EARLIEST
    maxOffsets: int


class ListOffsetsRequest(NamedTuple):
    replicaId: int
    topics: list  # [(topic, [OffsetsPartition])]


class MetadataRequest(NamedTuple):
    topics: list  # [topic]; empty means all topics


class NewTopic(NamedTuple):
    """One topic of a CreateTopics request."""

    name: str
    numPartitions: int
    replicationFactor: int
    assignments: list  # [(partition, [replica broker id])]
    configs: list  # [(name, value or None)]


class CreateTopicsRequest(NamedTuple):
    topics: list  # [NewTopic]
    timeout: int


class ProduceResult(NamedTuple):
    partition: int
    error: int
    offset: int


class FetchResult(NamedTuple):
    partition: int
    error: int
    highWatermark: int
    messageSet: bytes


class OffsetsResult(NamedTuple):
    partition: int
    error: int
    offsets: list


class Broker(NamedTuple):
    nodeId: int
    host: str
    port: int


class PartitionMetadata(NamedTuple):
    error: int
    partition: int
    leader: int
    replicas: list
    isr: list


class TopicMetadata(NamedTuple):
    error: int
    name: str
    partitions: list  # [PartitionMetadata]


def decodeHeader(frame):
    """Return (RequestHeader, Reader positioned at the body)."""
    reader = Reader(frame)
    header = RequestHeader(reader.int16(), reader.int16(), reader.int32(), reader.string())
    return header, reader


def _topicName(reader):
    name = reader.string()
    if name is None:
        raise CodecError("null topic name")
    return name


def _topics(reader, readPartition, minPartitionSize):
    def topic():
        return (_topicName(reader), reader.array(readPartition, minPartitionSize))

    return reader.array(topic, 2 + 4)


def decodeProduce(reader):
    acks = reader.int16()
    timeout = reader.int32()

    def partition():
        number = reader.int32()
        messageSet = reader.bytes()
        return ProducePartition(number, messageSet or b"")

    request = ProduceRequest(acks, timeout, _topics(reader, partition, 4 + 4))
    reader.expectEnd()
    return request


def decodeFetch(reader):
    replicaId, maxWait, minBytes = reader.int32(), reader.int32(), reader.int32()

    def partition():
        return FetchPartition(reader.int32(), reader.int64(), reader.int32())

    request = FetchRequest(replicaId, maxWait, minBytes, _topics(reader, partition, 16))
    reader.expectEnd()
    return request


def decodeListOffsets(reader):
    replicaId = reader.int32()

    def partition():
        return OffsetsPartition(reader.int32(), reader.int64(), reader.int32())

    request = ListOffsetsRequest(replicaId, _topics(reader, partition, 16))
    reader.expectEnd()
    return request


def decodeMetadata(reader):
    request = MetadataRequest(reader.array(lambda: _topicName(reader), 2))
    reader.expectEnd()
    return request


def decodeCreateTopics(reader):
    """CreateTopics v0: [topic, num_partitions, replication_factor, [partition, [replica]], [name, value]], timeout."""

    def assignment():
        return (reader.int32(), reader.array(reader.int32, 4))

    def config():
        name = reader.string()
        if name is None:
            raise CodecError("null config name")
        return (name, reader.string())

    def topic():
        return NewTopic(
            _topicName(reader), reader.int32(), reader.int16(), reader.array(assignment, 4 + 4), reader.array(config, 2 + 2)
        )

    request = CreateTopicsRequest(reader.array(topic, 2 + 4 + 2 + 4 + 4), reader.int32())
    reader.expectEnd()
    return request


# The four Kafka 0.8 APIs.
DECODERS = {
    ApiKey.PRODUCE: decodeProduce,
    ApiKey.FETCH: decodeFetch,
    ApiKey.LIST_OFFSETS: decodeListOffsets,
    ApiKey.METADATA: decodeMetadata,
}


def _array(items):
    return INT32.pack(len(items))


def encodeProduceResponse(correlationId, topics):
    """topics: [(topic, [ProduceResult])]."""
    out = [INT32.pack(correlationId), _array(topics)]
    for topic, results in topics:
        out.append(encodeString(topic))
        out.append(_array(results))
        out.extend(
            INT32.pack(r.partition) + INT16.pack(r.error) + INT64.pack(r.offset) for r in results
        )
    return out


def encodeFetchResponse(correlationId, topics):
    """topics: [(topic, [FetchResult])]; message sets are passed through uncopied."""
    out = [INT32.pack(correlationId), _array(topics)]
    for topic, results in topics:
        out.append(encodeString(topic))
        out.append(_array(results))
        for r in results:
            out.append(
                INT32.pack(r.partition)
                + INT16.pack(r.error)
                + INT64.pack(r.highWatermark)
                + INT32.pack(len(r.messageSet))
            )
            if r.messageSet:
                out.append(r.messageSet)
    return out


def encodeListOffsetsResponse(correlationId, topics):
    """topics: [(topic, [OffsetsResult])]."""
    out = [INT32.pack(correlationId), _array(topics)]
    for topic, results in topics:
        out.append(encodeString(topic))
        out.append(_array(results))
        for r in results:
            out.append(INT32.pack(r.partition) + INT16.pack(r.error) + _array(r.offsets))
            out.extend(INT64.pack(offset) for offset in r.offsets)
    return out


def encodeMetadataResponse(correlationId, brokers, topics):
    """brokers: [Broker]; topics: [TopicMetadata]."""
    out = [INT32.pack(correlationId), _array(brokers)]
    for broker in brokers:
        out.append(INT32.pack(broker.nodeId) + encodeString(broker.host) + INT32.pack(broker.port))
    out.append(_array(topics))
    for topic in topics:
        out.append(INT16.pack(topic.error) + encodeString(topic.name) + _array(topic.partitions))
        for p in topic.partitions:
            out.append(INT16.pack(p.error) + INT32.pack(p.partition) + INT32.pack(p.leader))
            out.append(_array(p.replicas) + b"".join(INT32.pack(r) for r in p.replicas))
            out.append(_array(p.isr) + b"".join(INT32.pack(r) for r in p.isr))
    return out


def encodeCreateTopicsResponse(correlationId, results):
    """results: [(topic, error)]."""
    out = [INT32.pack(correlationId), _array(results)]
    out.extend(encodeString(topic) + INT16.pack(error) for topic, error in results)
    return out


# -- requests, for clients ------------------------------------------------------


def encodeRequestHeader(apiKey, correlationId, clientId, apiVersion=0):
    return INT16.pack(apiKey) + INT16.pack(apiVersion) + INT32.pack(correlationId) + encodeString(clientId)


def encodeMetadataRequest(correlationId, clientId, topics):
    """topics: [name]; empty asks for every topic."""
    body = _array(topics) + b"".join(encodeString(t) for t in topics)
    return encodeRequestHeader(ApiKey.METADATA, correlationId, clientId) + body


def encodeListOffsetsRequest(correlationId, clientId, topics):
    """topics: [(topic, [OffsetsPartition])]; asked as a consumer (replica id -1)."""
    out = [encodeRequestHeader(ApiKey.LIST_OFFSETS, correlationId, clientId), INT32.pack(-1), _array(topics)]
    for topic, partitions in topics:
        out.append(encodeString(topic) + _array(partitions))
        out.extend(INT32.pack(p.partition) + INT64.pack(p.time) + INT32.pack(p.maxOffsets) for p in partitions)
    return b"".join(out)


def encodeCreateTopicsRequest(correlationId, clientId, request):
    """request: L{CreateTopicsRequest}."""
    out = [encodeRequestHeader(ApiKey.CREATE_TOPICS, correlationId, clientId), _array(request.topics)]
    for topic in request.topics:
        out.append(encodeString(topic.name) + INT32.pack(topic.numPartitions) + INT16.pack(topic.replicationFactor))
        out.append(_array(topic.assignments))
        for partition, replicas in topic.assignments:
            out.append(INT32.pack(partition) + _array(replicas) + b"".join(INT32.pack(r) for r in replicas))
        out.append(_array(topic.configs))
        out.extend(encodeString(name) + encodeString(value) for name, value in topic.configs)
    out.append(INT32.pack(request.timeout))
    return b"".join(out)
