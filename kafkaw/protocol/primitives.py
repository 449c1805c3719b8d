"""Kafka primitive types: a bounds-checked reader and encoders.

Every read checks the remaining length first, so a short or lying frame raises
L{CodecError}, never C{struct.error} or C{IndexError}; array counts are checked
against the bytes left before anything is allocated for them.
"""

import struct

from kafkaw.protocol.errors import CodecError

INT8 = struct.Struct(">b")
INT16 = struct.Struct(">h")
INT32 = struct.Struct(">i")
INT64 = struct.Struct(">q")
UINT32 = struct.Struct(">I")


class Reader:
    """Read Kafka primitives from a bytes-like object, front to back."""

    __slots__ = ("_data", "_view", "position")

    def __init__(self, data, position=0):
        self._data = data
        self._view = memoryview(data)
        self.position = position

    @property
    def remaining(self):
        return len(self._data) - self.position

    def _fixed(self, codec):
        position = self.position
        if position + codec.size > len(self._data):
            raise CodecError(f"truncated: need {codec.size} bytes at {position}")
        self.position = position + codec.size
        return codec.unpack_from(self._data, position)[0]

    def int8(self):
        return self._fixed(INT8)

    def int16(self):
        return self._fixed(INT16)

    def int32(self):
        return self._fixed(INT32)

    def int64(self):
        return self._fixed(INT64)

    def raw(self, size):
        """The next C{size} bytes, copied."""
        if size < 0 or self.position + size > len(self._data):
            raise CodecError(f"truncated: need {size} bytes at {self.position}")
        start = self.position
        self.position = start + size
        return self._view[start : start + size].tobytes()

    def string(self):
        """int16 length + UTF-8 bytes; -1 is null. Returns C{str} or C{None}."""
        size = self.int16()
        if size == -1:
            return None
        if size < -1:
            raise CodecError(f"negative string length {size}")
        try:
            return self.raw(size).decode("utf-8")
        except UnicodeDecodeError as e:
            raise CodecError(f"string is not UTF-8: {e}") from None

    def bytes(self):
        """int32 length + bytes; -1 is null."""
        size = self.int32()
        if size == -1:
            return None
        if size < -1:
            raise CodecError(f"negative bytes length {size}")
        return self.raw(size)

    def array(self, readItem, minItemSize):
        """int32 count + items; a count the remaining bytes cannot hold is an error."""
        count = self.int32()
        if count < 0:
            if count == -1:
                return []
            raise CodecError(f"negative array count {count}")
        if count * minItemSize > self.remaining:
            raise CodecError(f"array of {count:,d} items cannot fit in {self.remaining:,d} bytes")
        return [readItem() for _ in range(count)]

    def expectEnd(self):
        if self.remaining:
            raise CodecError(f"{self.remaining} unexpected bytes after the request body")


def encodeString(value):
    """int16-length string; C{None} is null."""
    if value is None:
        return INT16.pack(-1)
    data = value.encode("utf-8") if isinstance(value, str) else value
    return INT16.pack(len(data)) + data


def encodeBytes(value):
    """int32-length bytes; C{None} is null."""
    if value is None:
        return INT32.pack(-1)
    return INT32.pack(len(value)) + value
