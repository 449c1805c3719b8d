"""What is left of the hand-written Kafka 0.8 codec: the request header, API
keys, the CreateTopics error codes, ListOffsets' special times and the shape
of a topic to create.

Every request and response body is read and written by the generic codec of
L{kafkaw.protocol.schema} (described in L{kafkaw.protocol.definitions}).
"""

import enum
import struct
from typing import NamedTuple

from kafkaw.protocol.primitives import Reader


class ApiKey(enum.IntEnum):
    PRODUCE = 0
    FETCH = 1
    LIST_OFFSETS = 2
    METADATA = 3
    CREATE_TOPICS = 19


_FIXED_HEADER = struct.Struct(">hhi")  # api key, api version, correlation id


class RequestHeader(NamedTuple):
    apiKey: int
    apiVersion: int
    correlationId: int
    clientId: str | None


# ListOffsets times that are not timestamps.
LATEST = -1  # the log end: the offset the next message will get
EARLIEST = -2  # the log start: the first offset still stored


class NewTopic(NamedTuple):
    """One topic to create, with the fields of a CreateTopics request's topic."""

    name: str
    numPartitions: int
    replicationFactor: int
    assignments: list  # [(partition, [replica broker id])]
    configs: list  # [(name, value or None)]


def decodeHeader(frame):
    """Request header v1 -> (L{RequestHeader}, L{Reader} positioned at the body).

    Raises L{kafkaw.protocol.errors.CodecError} when the header is cut short
    or its client id is malformed.
    """
    if len(frame) < _FIXED_HEADER.size:
        reader = Reader(frame)  # cut short: its reads raise the CodecError that says where
        return RequestHeader(reader.int16(), reader.int16(), reader.int32(), reader.string()), reader
    apiKey, apiVersion, correlationId = _FIXED_HEADER.unpack_from(frame)  # one unpack: every request pays for it
    reader = Reader(frame, _FIXED_HEADER.size)
    return RequestHeader(apiKey, apiVersion, correlationId, reader.string()), reader
