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


_HEADER_AND_CLIENT_LENGTH = struct.Struct(">hhih")  # api key, api version, correlation id, client id length


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
    if len(frame) >= _HEADER_AND_CLIENT_LENGTH.size:
        # One unpack and a slice: every request pays for this.
        apiKey, apiVersion, correlationId, clientLength = _HEADER_AND_CLIENT_LENGTH.unpack_from(frame)
        body = _HEADER_AND_CLIENT_LENGTH.size + max(clientLength, 0)
        if clientLength == -1 or (clientLength >= 0 and body <= len(frame)):
            try:
                clientId = None if clientLength < 0 else str(frame[_HEADER_AND_CLIENT_LENGTH.size : body], "utf-8")
            except UnicodeDecodeError:
                pass  # the reader below says what is wrong
            else:
                return RequestHeader(apiKey, apiVersion, correlationId, clientId), Reader(frame, body)
    reader = Reader(frame)  # cut short or malformed: its reads raise the CodecError that says where
    return RequestHeader(reader.int16(), reader.int16(), reader.int32(), reader.string()), reader
