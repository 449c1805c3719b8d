"""Kafka 0.8 frames built and read field by field, for the unit and the
integration tests alike: written apart from kafkaw.protocol.api, so the tests
do not check the broker's codec with itself."""

import struct

from kafkaw.protocol.framing import Framer, frame
from kafkaw.protocol.primitives import Reader, encodeBytes, encodeString

_i16 = struct.Struct(">h").pack
_i32 = struct.Struct(">i").pack
_i64 = struct.Struct(">q").pack


def _array(items):
    return _i32(len(items)) + b"".join(items)


# Requests (version 0 unless told): a header, the bodies, whole frames.


def requestHeader(apiKey, correlationId, apiVersion=0, clientId="test"):
    return _i16(apiKey) + _i16(apiVersion) + _i32(correlationId) + encodeString(clientId)


def produceBody(acks, topics, timeout=5000):
    """topics: {topic: {partition: messageSet bytes}}."""
    return _i16(acks) + _i32(timeout) + _array(
        [
            encodeString(topic) + _array([_i32(p) + encodeBytes(data) for p, data in partitions.items()])
            for topic, partitions in topics.items()
        ]
    )


def fetchBody(topics, maxWait=0, minBytes=0, replicaId=-1):
    """topics: {topic: {partition: (offset, maxBytes)}}."""
    return _i32(replicaId) + _i32(maxWait) + _i32(minBytes) + _array(
        [
            encodeString(topic)
            + _array([_i32(p) + _i64(offset) + _i32(maxBytes) for p, (offset, maxBytes) in partitions.items()])
            for topic, partitions in topics.items()
        ]
    )


def listOffsetsBody(topics, replicaId=-1):
    """topics: {topic: {partition: (time, maxOffsets)}}."""
    return _i32(replicaId) + _array(
        [
            encodeString(topic) + _array([_i32(p) + _i64(t) + _i32(n) for p, (t, n) in partitions.items()])
            for topic, partitions in topics.items()
        ]
    )


def metadataBody(topics):
    return _array([encodeString(t) for t in topics])


def requestFrame(apiKey, correlationId, body, apiVersion=0, clientId="test"):
    """A size-prefixed request: header + body."""
    return frame(requestHeader(apiKey, correlationId, apiVersion, clientId) + body)


def produceRequest(correlationId, topics, acks=1, timeout=1000):
    """topics: {topic: {partition: messageSet bytes}}."""
    return requestFrame(0, correlationId, produceBody(acks, topics, timeout))


def fetchRequest(correlationId, topics, maxWait=0, minBytes=0):
    """topics: {topic: {partition: (offset, maxBytes)}}."""
    return requestFrame(1, correlationId, fetchBody(topics, maxWait, minBytes))


def listOffsetsRequest(correlationId, topics):
    """topics: {topic: {partition: (time, maxNumber)}}."""
    return requestFrame(2, correlationId, listOffsetsBody(topics))


def metadataRequest(correlationId, topics=(), apiVersion=0):
    return requestFrame(3, correlationId, metadataBody(topics), apiVersion)


# Responses, read into plain dicts: decode* take the body after the
# correlation id, parse* the whole response (without its size prefix).


def responseFrames(data):
    """Split a stream of size-prefixed responses; a partial tail is an error."""
    framer = Framer(1 << 30)
    frames = framer.feed(data)
    assert framer.buffered == 0, "partial response frame"
    return frames


def correlationId(response):
    return Reader(response).int32()


def _topics(reader, partition):
    return {reader.string(): dict(reader.array(partition, 0)) for _ in range(reader.int32())}


def decodeProduceResponse(body):
    """{topic: {partition: (error, offset)}}."""
    reader = Reader(body)
    topics = _topics(reader, lambda: (reader.int32(), (reader.int16(), reader.int64())))
    reader.expectEnd()
    return topics


def decodeFetchResponse(body):
    """{topic: {partition: (error, high watermark, message set bytes)}}."""
    reader = Reader(body)
    topics = _topics(reader, lambda: (reader.int32(), (reader.int16(), reader.int64(), reader.raw(reader.int32()))))
    reader.expectEnd()
    return topics


def decodeListOffsetsResponse(body):
    """{topic: {partition: (error, [offsets])}}."""
    reader = Reader(body)
    topics = _topics(reader, lambda: (reader.int32(), (reader.int16(), reader.array(reader.int64, 8))))
    reader.expectEnd()
    return topics


def decodeMetadataResponse(body):
    """([(node, host, port)], {topic: (error, {partition: (error, leader, replicas, isr)})})."""
    reader = Reader(body)
    brokers = reader.array(lambda: (reader.int32(), reader.string(), reader.int32()), 10)

    def partition():
        error, number, leader = reader.int16(), reader.int32(), reader.int32()
        return number, (error, leader, reader.array(reader.int32, 4), reader.array(reader.int32, 4))

    topics = {}
    for _ in range(reader.int32()):
        error, name = reader.int16(), reader.string()
        topics[name] = (error, dict(reader.array(partition, 18)))
    reader.expectEnd()
    return brokers, topics


def parseProduceResponse(response):
    """(correlation id, {topic: {partition: (error, offset)}})."""
    return correlationId(response), decodeProduceResponse(response[4:])


def parseFetchResponse(response):
    """(correlation id, {topic: {partition: (error, high watermark, message set)}})."""
    return correlationId(response), decodeFetchResponse(response[4:])


def parseListOffsetsResponse(response):
    """(correlation id, {topic: {partition: (error, [offsets])}})."""
    return correlationId(response), decodeListOffsetsResponse(response[4:])


def parseMetadataResponse(response):
    """(correlation id, [(node, host, port)], {topic: (error, {partition: (error, leader, replicas, isr)})})."""
    return (correlationId(response), *decodeMetadataResponse(response[4:]))
