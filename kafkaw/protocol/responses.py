"""Decoders for responses, for the client side (the TCP-to-WebSocket shim, the CLI, tests).

They take a response frame without its size prefix and return the same plain
tuples that L{kafkaw.protocol.api}'s encoders take, so a decoded response can
be changed and encoded again with them.
"""

from kafkaw.protocol.api import Broker, OffsetsResult, PartitionMetadata, TopicMetadata
from kafkaw.protocol.apiversions import ApiVersion
from kafkaw.protocol.primitives import Reader


def decodeMetadataResponse(frame):
    """Metadata v0 response -> (correlationId, [Broker], [TopicMetadata]).

    Raises L{kafkaw.protocol.errors.CodecError} if the frame is short, has
    trailing bytes or lies about an array count.
    """
    reader = Reader(frame)
    correlationId = reader.int32()

    def broker():
        return Broker(reader.int32(), reader.string(), reader.int32())

    def partition():
        error, number, leader = reader.int16(), reader.int32(), reader.int32()
        return PartitionMetadata(error, number, leader, reader.array(reader.int32, 4), reader.array(reader.int32, 4))

    def topic():
        return TopicMetadata(reader.int16(), reader.string(), reader.array(partition, 2 + 4 + 4 + 4 + 4))

    brokers = reader.array(broker, 4 + 2 + 4)
    topics = reader.array(topic, 2 + 2 + 4)
    reader.expectEnd()
    return correlationId, brokers, topics


def decodeListOffsetsResponse(frame):
    """ListOffsets v0 response -> (correlationId, [(topic, [OffsetsResult])])."""
    reader = Reader(frame)
    correlationId = reader.int32()

    def partition():
        number, error = reader.int32(), reader.int16()
        return OffsetsResult(number, error, reader.array(reader.int64, 8))

    def topic():
        return (reader.string(), reader.array(partition, 4 + 2 + 4))

    topics = reader.array(topic, 2 + 4)
    reader.expectEnd()
    return correlationId, topics


def decodeCreateTopicsResponse(frame):
    """CreateTopics v0 response -> (correlationId, [(topic, error)])."""
    reader = Reader(frame)
    correlationId = reader.int32()
    results = reader.array(lambda: (reader.string(), reader.int16()), 2 + 2)
    reader.expectEnd()
    return correlationId, results


def decodeApiVersionsResponse(frame):
    """ApiVersions response in the v0 format -> (correlationId, error, [ApiVersion])."""
    reader = Reader(frame)
    correlationId, error = reader.int32(), reader.int16()
    served = reader.array(lambda: ApiVersion(reader.int16(), reader.int16(), reader.int16()), 6)
    reader.expectEnd()
    return correlationId, error, served
