"""Kafka 0.8 error codes and the codec's own exceptions."""

import enum


class ErrorCode(enum.IntEnum):
    """Error codes as Kafka 0.8.0 defines them (ErrorMapping)."""

    UNKNOWN = -1
    NONE = 0
    OFFSET_OUT_OF_RANGE = 1
    INVALID_MESSAGE = 2
    UNKNOWN_TOPIC_OR_PARTITION = 3
    INVALID_FETCH_SIZE = 4
    LEADER_NOT_AVAILABLE = 5
    NOT_LEADER_FOR_PARTITION = 6
    REQUEST_TIMED_OUT = 7
    BROKER_NOT_AVAILABLE = 8
    REPLICA_NOT_AVAILABLE = 9
    MESSAGE_SIZE_TOO_LARGE = 10
    STALE_CONTROLLER_EPOCH = 11
    OFFSET_METADATA_TOO_LARGE = 12


class CodecError(ValueError):
    """A request frame cannot be decoded: the connection should be closed."""


class MessageSetError(ValueError):
    """A produced message set is rejected; C{errorCode} is the per-partition answer."""

    errorCode = ErrorCode.UNKNOWN


class InvalidMessage(MessageSetError):
    """Bad CRC, bad size, bad magic or attributes, undecodable compression."""

    errorCode = ErrorCode.INVALID_MESSAGE


class MessageTooLarge(MessageSetError):
    """A message is larger than the broker's message.max.bytes."""

    errorCode = ErrorCode.MESSAGE_SIZE_TOO_LARGE
