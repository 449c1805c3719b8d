"""Size-prefixed framing of a Kafka byte stream.

Twisted's C{Int32StringReceiver} re-joins its whole buffer on every chunk, which
is quadratic for large requests; this framer keeps a list of chunks and joins
each frame once.
"""

import struct

_SIZE = struct.Struct(">i")


class FrameTooLarge(ValueError):
    """A frame's size prefix is negative or above the configured maximum.

    C{frames} are the complete frames that came before the bad prefix in the
    same L{Framer.feed} call: they are good requests, and the caller should
    handle them before it closes the connection.
    """

    def __init__(self, size, maximum, frames=()):
        super().__init__(f"frame size {size:,d} outside 0..{maximum:,d}")
        self.size = size
        self.maximum = maximum
        self.frames = list(frames)


class Framer:
    """Split a byte stream into frames, each preceded by a 4-byte big-endian size.

    Feed it bytes with L{feed}; it returns the complete frames (without their
    size prefix). A bad size raises L{FrameTooLarge} as soon as the prefix is
    seen, so memory stays bounded by C{maxFrameSize}. The stream cannot be
    framed past a bad prefix: the framer then keeps nothing, and every later
    L{feed} raises again, with no frames.
    """

    def __init__(self, maxFrameSize):
        self.maxFrameSize = maxFrameSize
        self._buffer = bytearray()
        self._badSize = None

    @property
    def buffered(self):
        """Bytes held that are not yet part of a returned frame."""
        return len(self._buffer)

    def feed(self, data):
        """Add C{data}; return the list of frames it completed."""
        if self._badSize is not None:
            raise FrameTooLarge(self._badSize, self.maxFrameSize)
        buffer = self._buffer
        buffer += data
        frames = []
        position = 0
        available = len(buffer)
        with memoryview(buffer) as view:
            while available - position >= 4:
                (size,) = _SIZE.unpack_from(view, position)
                if size < 0 or size > self.maxFrameSize:
                    self._badSize = size
                    break
                end = position + 4 + size
                if end > available:
                    break
                frames.append(view[position + 4 : end].tobytes())
                position = end
        if self._badSize is not None:
            del buffer[:]
            raise FrameTooLarge(self._badSize, self.maxFrameSize, frames)
        # bytearray drops a prefix in O(1) amortised time.
        del buffer[:position]
        return frames


def frame(payload):
    """Return C{payload} preceded by its 4-byte size."""
    return _SIZE.pack(len(payload)) + payload
