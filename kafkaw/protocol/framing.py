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
        self._head = b""  # the start of the next frame, its size prefix not yet whole (or nothing)
        self._body = None  # the pieces read of a frame whose size is known, until it is whole
        self._missing = 0  # bytes that frame still lacks
        self._held = 0  # bytes of it read so far, its size prefix included
        self._badSize = None

    @property
    def buffered(self):
        """Bytes held that are not yet part of a returned frame."""
        return len(self._head) + self._held

    def feed(self, data):
        """Add C{data}; return the list of frames it completed.

        Each frame is copied once: sliced out of C{data} when it is whole in
        it, else joined once from the pieces of the reads it spans.
        """
        if self._badSize is not None:
            raise FrameTooLarge(self._badSize, self.maxFrameSize)
        if type(data) is not bytes:
            data = bytes(data)
        frames = []
        if self._body is not None:
            missing = self._missing
            if len(data) < missing:
                self._body.append(data)
                self._missing -= len(data)
                self._held += len(data)
                return frames
            self._body.append(data[:missing] if len(data) > missing else data)
            frames.append(b"".join(self._body))
            self._body, self._held = None, 0
            data = data[missing:]
        elif self._head:
            data = self._head + data
            self._head = b""
        position, available = 0, len(data)
        while available - position >= 4:
            (size,) = _SIZE.unpack_from(data, position)
            if size < 0 or size > self.maxFrameSize:
                self._badSize = size
                raise FrameTooLarge(size, self.maxFrameSize, frames)
            end = position + 4 + size
            if end > available:
                self._body = [data[position + 4 :]]
                self._missing = end - available
                self._held = available - position
                return frames
            frames.append(data[position + 4 : end])
            position = end
        self._head = data[position:]
        return frames


def frame(payload):
    """Return C{payload} preceded by its 4-byte size."""
    return _SIZE.pack(len(payload)) + payload
