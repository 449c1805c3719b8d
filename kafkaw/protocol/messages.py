"""Message sets (Kafka 0.8, magic 0): checking, offset assignment, compression.

A produced message set is walked once: each message's size, CRC-32 (IEEE),
magic and attributes are checked and its offset is written in place. Compressed
wrappers (gzip, snappy) are expanded so that every inner message gets its own
offset, then recompressed, as Kafka 0.8.0 does; the wrapper carries the offset
of its last inner message.

Magic-1 messages (Kafka 0.10: an int64 timestamp after the attributes) are
accepted too and stored as magic 0, since 0.8 fetchers read nothing else:
stock kafka-python sends them whatever Produce version the broker serves. The
timestamp and the timestamp-type attribute bit are dropped and the CRC is
recomputed; a magic-1 wrapper's inner messages (magic 1, relative offsets) are
converted the same way and numbered like any others.
"""

import struct
import zlib
from dataclasses import dataclass
from typing import NamedTuple

import cramjam

from kafkaw.protocol.errors import InvalidMessage, MessageTooLarge

LOG_OVERHEAD = 12  # offset int64 + message_size int32
MIN_MESSAGE_SIZE = 14  # crc 4 + magic 1 + attributes 1 + key length 4 + value length 4

CODEC_NONE = 0
CODEC_GZIP = 1
CODEC_SNAPPY = 2
CODEC_MASK = 0x03
TIMESTAMP_TYPE = 0x08  # magic 1 only: log-append time rather than create time
TIMESTAMP_SIZE = 8  # magic 1 only: the int64 between the attributes and the key

_ENTRY_HEAD = struct.Struct(">qi")
_MESSAGE_HEAD = struct.Struct(">Ibb")  # crc, magic, attributes
# One unpack per plain message: offset, size, crc, magic and attributes as one
# int16, key length, and the int32 after it: the value length when the key is
# null or empty.
_PLAIN_HEAD = struct.Struct(">qiIhii")
_INT32 = struct.Struct(">i")
_UINT32 = struct.Struct(">I")
_INT64 = struct.Struct(">q")
_XERIAL_MAGIC = b"\x82SNAPPY\x00"
_XERIAL_HEADER = struct.Struct(">8sii")
_XERIAL_BLOCK = 32 * 1024


@dataclass(frozen=True)
class Message:
    """One decoded message, for clients and tests; the broker never builds these."""

    offset: int
    key: bytes | None
    value: bytes | None
    attributes: int = 0


class AssignedMessageSet(NamedTuple):
    """A checked message set with offsets written in: ready to store as is.
    (A named tuple: one is made per produced set, and a frozen dataclass
    costs several times more to build.)"""

    data: bytes
    count: int  # offsets used: baseOffset .. baseOffset + count - 1


def assignOffsets(messageSet, baseOffset, maxMessageBytes, maxExpandedBytes):
    """Check C{messageSet} and give its messages offsets from C{baseOffset}.

    A partial message at the end is dropped, as Kafka 0.8 does; magic-1
    messages come out as magic 0. Raises L{InvalidMessage} (bad size, CRC,
    magic, attributes or compression, or no complete message) or
    L{MessageTooLarge} (an entry above C{maxMessageBytes}, as stored).
    C{maxExpandedBytes} bounds what decompression may produce, summed over the
    set's wrappers, so many small bombs cannot add up.
    """
    out, count = _assign(messageSet, baseOffset, maxMessageBytes, maxExpandedBytes, None)
    if not count:
        raise InvalidMessage("no complete message in the message set")
    return AssignedMessageSet(bytes(out), count)


def _assign(data, baseOffset, maxMessageBytes, maxExpandedBytes, wrapperMagic):
    """Return (bytearray with offsets assigned, number of offsets used).

    C{wrapperMagic} is None for a produced set, else the magic of the wrapper
    that C{data} was inflated from: inner messages must have the same.
    """
    out = bytearray(data)
    end = len(out)
    position = 0
    offset = baseOffset
    replaced = []  # (start, end, new entry) for each wrapper and magic-1 message
    expandBudget = maxExpandedBytes
    maxPlainSize = maxMessageBytes - LOG_OVERHEAD
    # Magic and attributes both 0: a plain magic-0 message, for the fast path
    # (None inside a magic-1 wrapper, where a magic-0 message is an error).
    plainHead = None if wrapperMagic == 1 else 0
    crc32 = zlib.crc32
    unpackEntry = _ENTRY_HEAD.unpack_from
    unpackHead = _MESSAGE_HEAD.unpack_from
    unpackInt32 = _INT32.unpack_from
    packOffset = _INT64.pack_into
    unpackPlain = _PLAIN_HEAD.unpack_from
    plainHeadSize = _PLAIN_HEAD.size
    with memoryview(out) as view:
        while end - position >= LOG_OVERHEAD:
            # Fast path: whole, plain, well-formed magic-0 messages. Anything
            # else falls through to the checks below, which name the problem.
            while end - position >= plainHeadSize:
                _, size, crc, magicAndAttributes, keySize, valueSize = unpackPlain(view, position)
                messageEnd = position + LOG_OVERHEAD + size
                rest = size - MIN_MESSAGE_SIZE  # bytes left for the key and the value
                if keySize > 0:  # the value length follows the key (22: entry head, crc to key length)
                    rest -= keySize
                    valueSize = (
                        unpackInt32(view, position + 22 + keySize)[0] if rest >= 0 and messageEnd <= end else -2
                    )
                if not (
                    magicAndAttributes == plainHead
                    and keySize >= -1
                    and messageEnd <= end
                    and size <= maxPlainSize
                    and (valueSize == rest >= 0 or (valueSize == -1 and not rest))
                    and crc == crc32(view[position + 16 : messageEnd])
                ):
                    break
                packOffset(view, position, offset)
                offset += 1
                position = messageEnd
            if end - position < LOG_OVERHEAD:
                break
            _, size = unpackEntry(view, position)
            body = position + LOG_OVERHEAD
            if size < MIN_MESSAGE_SIZE:
                raise InvalidMessage(f"message size {size} at byte {position}")
            if body + size > end:
                break  # partial trailing message: dropped, as 0.8 does
            messageEnd = body + size
            crc, magic, attributes = unpackHead(view, body)
            # The limit is on the message as stored: magic 1 loses its timestamp.
            storedSize = LOG_OVERHEAD + size - (TIMESTAMP_SIZE if magic == 1 else 0)
            if storedSize > maxMessageBytes:
                raise MessageTooLarge(f"message of {storedSize:,d} bytes exceeds {maxMessageBytes:,d}")
            if crc != crc32(view[body + 4 : messageEnd]):
                raise InvalidMessage(f"CRC mismatch at byte {position}")
            if magic == 0:
                keyAt = body + 6
                undefined = attributes & ~CODEC_MASK
            elif magic == 1:
                keyAt = body + 6 + TIMESTAMP_SIZE
                undefined = attributes & ~(CODEC_MASK | TIMESTAMP_TYPE)
            else:
                raise InvalidMessage(f"magic {magic} is neither 0 nor 1")
            if wrapperMagic is not None and magic != wrapperMagic:
                raise InvalidMessage(f"magic-{magic} message inside a magic-{wrapperMagic} wrapper")
            if undefined:
                raise InvalidMessage(f"attributes {attributes:#x} use bits magic {magic} does not define")
            if keyAt + 4 > messageEnd:
                raise InvalidMessage(f"message too short for its magic-{magic} header at byte {position}")
            (keySize,) = _UINT32.unpack_from(view, keyAt)  # -1 (null) reads as 0xFFFFFFFF
            valueAt = keyAt + 4 + (0 if keySize == 0xFFFFFFFF else keySize)
            if valueAt + 4 > messageEnd:
                raise InvalidMessage(f"key overruns its message at byte {position}")
            (valueSize,) = unpackInt32(view, valueAt)
            if valueSize < -1 or valueAt + 4 + max(valueSize, 0) != messageEnd:
                raise InvalidMessage(f"key and value do not fill the message at byte {position}")
            codec = attributes & CODEC_MASK
            if codec == CODEC_NONE:
                if magic == 0:
                    packOffset(view, position, offset)
                else:  # stored as magic 0, attributes 0: timestamp dropped, key and value as they are
                    replaced.append((position, messageEnd, _entry(offset, b"\x00\x00" + view[keyAt:messageEnd])))
                offset += 1
            else:
                if wrapperMagic is not None:
                    raise InvalidMessage("compressed message inside a compressed message")
                if valueSize < 0:
                    raise InvalidMessage("compressed wrapper without a value")
                # A null wrapper key stays null (not b"").
                key = None if keySize == 0xFFFFFFFF else view[keyAt + 4 : valueAt].tobytes()
                inner = _decompress(codec, view[valueAt + 4 : messageEnd], expandBudget)
                expandBudget -= len(inner)
                assigned, used = _assign(inner, offset, maxExpandedBytes, maxExpandedBytes, magic)
                if not used:
                    raise InvalidMessage("compressed wrapper holds no complete message")
                offset += used
                compressed = _compress(codec, bytes(assigned), view[valueAt + 4 : messageEnd])
                replaced.append((position, messageEnd, encodeMessage(offset - 1, key, compressed, codec)))
            position = messageEnd
    if not replaced:
        del out[position:]
        return out, offset - baseOffset
    pieces = []
    copied = 0
    for start, stop, entry in replaced:
        pieces.append(out[copied:start])
        pieces.append(entry)
        copied = stop
    pieces.append(out[copied:position])
    return bytearray(b"".join(pieces)), offset - baseOffset


def _entry(offset, body):
    """A message set entry around a magic-0 C{body} (magic to the end of the value)."""
    return _ENTRY_HEAD.pack(offset, len(body) + 4) + _UINT32.pack(zlib.crc32(body)) + body


def encodeMessage(offset, key, value, attributes=0):
    """One message set entry: offset, size, and a magic-0 message with its CRC."""
    return _entry(
        offset,
        bytes((0, attributes))
        + (_INT32.pack(-1) if key is None else _INT32.pack(len(key)) + key)
        + (_INT32.pack(-1) if value is None else _INT32.pack(len(value)) + value),
    )


def encodeMessageSet(messages, baseOffset=0):
    """A message set of uncompressed (key, value) pairs with consecutive offsets."""
    return b"".join(
        encodeMessage(baseOffset + i, key, value) for i, (key, value) in enumerate(messages)
    )


def decodeMessageSet(data):
    """Decode every complete message (one level: wrappers are returned as they are).

    For clients and tests; the broker's paths never decode messages.
    """
    messages = []
    position = 0
    while len(data) - position >= LOG_OVERHEAD:
        offset, size = _ENTRY_HEAD.unpack_from(data, position)
        body = position + LOG_OVERHEAD
        if size < MIN_MESSAGE_SIZE or body + size > len(data):
            break
        _, _, attributes = _MESSAGE_HEAD.unpack_from(data, body)
        (keySize,) = _INT32.unpack_from(data, body + 6)
        key = None if keySize < 0 else bytes(data[body + 10 : body + 10 + keySize])
        valueAt = body + 10 + max(keySize, 0)
        (valueSize,) = _INT32.unpack_from(data, valueAt)
        value = None if valueSize < 0 else bytes(data[valueAt + 4 : valueAt + 4 + valueSize])
        messages.append(Message(offset, key, value, attributes))
        position = body + size
    return messages


def expandMessageSet(data):
    """Decode a message set, replacing compressed wrappers by their inner messages."""
    out = []
    for message in decodeMessageSet(data):
        codec = message.attributes & CODEC_MASK
        if codec == CODEC_NONE:
            out.append(message)
        else:
            out.extend(decodeMessageSet(_decompress(codec, message.value, 1 << 31)))
    return out


def skipBelow(data, offset):
    """Byte position of the first entry in C{data} whose offset is >= C{offset}.

    Walks entry headers only. A compressed wrapper carries its last inner
    offset, so a wanted offset inside it lands on the wrapper itself. The log
    may also hold record batches v2 (magic at byte 16, see L{records}): their
    first field is the base offset, so a batch is wanted when its base offset
    plus lastOffsetDelta (bytes 23..26) reaches C{offset}; a v2 batch cut
    before its lastOffsetDelta is the partial tail, where the walk stops.
    """
    position = 0
    end = len(data)
    unpackEntry = _ENTRY_HEAD.unpack_from
    unpackInt32 = _INT32.unpack_from
    while end - position >= LOG_OVERHEAD:
        entryOffset, size = unpackEntry(data, position)
        if entryOffset >= offset:
            break
        if end - position > _V2_MAGIC_AT and data[position + _V2_MAGIC_AT] == 2:
            if end - position < _V2_LAST_OFFSET_DELTA_AT + 4:
                break
            if entryOffset + unpackInt32(data, position + _V2_LAST_OFFSET_DELTA_AT)[0] >= offset:
                break
        position += LOG_OVERHEAD + size
    return min(position, end)


_V2_MAGIC_AT = 16  # where every entry's magic sits (records.py: v2 batch layout)
_V2_LAST_OFFSET_DELTA_AT = 23


def _decompress(codec, data, limit):
    """Inflate a wrapper's value, refusing to produce more than C{limit} bytes."""
    try:
        if codec == CODEC_GZIP:
            return _gunzip(data, limit)
        if codec == CODEC_SNAPPY:
            if bytes(data[:8]) == _XERIAL_MAGIC:
                return _xerialDecompress(data, limit)
            return _rawSnappyDecompress(data, limit)
    except (zlib.error, cramjam.DecompressionError, ValueError) as e:
        if isinstance(e, InvalidMessage):
            raise
        raise InvalidMessage(f"cannot decompress: {e}") from None
    raise InvalidMessage(f"compression codec {codec} is not supported by Kafka 0.8")


def _gunzip(data, limit):
    """Inflate every member of a gzip stream, as Java's GZIPInputStream does.

    RFC 1952 allows concatenated members; stopping after the first would drop
    messages silently. Bytes after the last member that do not start another
    gzip member are ignored, as Java ignores them.
    """
    blocks = []
    total = 0
    while True:
        inflater = zlib.decompressobj(wbits=47)  # gzip or zlib header
        block = inflater.decompress(data, limit - total + 1)
        total += len(block)
        if total > limit or inflater.unconsumed_tail:
            raise InvalidMessage(f"gzip value expands beyond {limit:,d} bytes")
        if not inflater.eof:
            raise InvalidMessage("truncated gzip value")
        blocks.append(block)
        data = inflater.unused_data
        if data[:2] != b"\x1f\x8b":
            return b"".join(blocks)


def _rawSnappyDecompress(data, limit):
    if cramjam.snappy.decompress_raw_len(bytes(data)) > limit:
        raise InvalidMessage(f"snappy value expands beyond {limit:,d} bytes")
    return bytes(cramjam.snappy.decompress_raw(bytes(data)))


def _xerialDecompress(data, limit):
    """snappy-java's stream framing: a 16-byte header, then (int32 size, raw block)*."""
    data = bytes(data)
    if len(data) < _XERIAL_HEADER.size:
        raise InvalidMessage("truncated xerial snappy header")
    blocks = []
    total = 0
    position = _XERIAL_HEADER.size
    while position < len(data):
        if position + 4 > len(data):
            raise InvalidMessage("truncated xerial snappy block size")
        (size,) = _INT32.unpack_from(data, position)
        position += 4
        if size < 0 or position + size > len(data):
            raise InvalidMessage("xerial snappy block overruns the value")
        block = _rawSnappyDecompress(data[position : position + size], limit - total)
        total += len(block)
        blocks.append(block)
        position += size
    return b"".join(blocks)


def _compress(codec, data, original):
    """Compress C{data} as C{codec}; snappy keeps the framing the client used."""
    if codec == CODEC_GZIP:
        deflater = zlib.compressobj(6, zlib.DEFLATED, 31)
        return deflater.compress(data) + deflater.flush()
    if bytes(original[:8]) == _XERIAL_MAGIC:
        blocks = [_XERIAL_HEADER.pack(_XERIAL_MAGIC, 1, 1)]
        for start in range(0, len(data), _XERIAL_BLOCK):
            block = bytes(cramjam.snappy.compress_raw(data[start : start + _XERIAL_BLOCK]))
            blocks.append(_INT32.pack(len(block)) + block)
        return b"".join(blocks)
    return bytes(cramjam.snappy.compress_raw(data))
