"""Size-prefixed framing of a Kafka byte stream.

Twisted's C{Int32StringReceiver} re-joins its whole buffer on every chunk, which
is quadratic for large requests; this framer keeps a list of chunks and joins
each frame once.
"""

import struct

_SIZE = struct.Struct(">i")


class FrameTooLarge(ValueError):
    """A frame's size prefix is negative or above the configured maximum."""

    def __init__(self, size, maximum):
        super().__init__(f"frame size {size:,d} outside 0..{maximum:,d}")
        self.size = size
        self.maximum = maximum


class Framer:
    """Split a byte stream into frames, each preceded by a 4-byte big-endian size.

    Feed it bytes with L{feed}; it returns the complete frames (without their
    size prefix). A bad size raises L{FrameTooLarge} as soon as the prefix is
    seen, so memory stays bounded by C{maxFrameSize}.
    """

    def __init__(self, maxFrameSize):
        self.maxFrameSize = maxFrameSize
        self._buffer = bytearray()

    @property
    def buffered(self):
        """Bytes held that are not yet part of a returned frame."""
        return len(self._buffer)

    def feed(self, data):
        """Add C{data}; return the list of frames it completed."""
        buffer = self._buffer
        buffer += data
        frames = []
        position = 0
        available = len(buffer)
        with memoryview(buffer) as view:
            while available - position >= 4:
                (size,) = _SIZE.unpack_from(view, position)
                if size < 0 or size > self.maxFrameSize:
                    raise FrameTooLarge(size, self.maxFrameSize)
                end = position + 4 + size
                if end > available:
                    break
                frames.append(view[position + 4 : end].tobytes())
                position = end
        # bytearray drops a prefix in O(1) amortised time.
        del buffer[:position]
        return frames


def frame(payload):
    """Return C{payload} preceded by its 4-byte size."""
    return _SIZE.pack(len(payload)) + payload
