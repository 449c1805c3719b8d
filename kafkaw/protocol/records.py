"""Record batches v2 (Kafka 0.11, KIP-98) beside the magic 0/1 message sets.

The broker stores what producers send. A produced v2 batch is checked once
(size, magic, CRC-32C, count, attributes; a compressed batch is inflated
within a bound and its records walked) and numbered by rewriting its 8-byte
baseOffset and its partitionLeaderEpoch, both outside the CRC: per-batch work.
An uncompressed batch's records are not walked on the produce path (measured:
walking even only their length varints costs ~0.28 us a record, most of the
broker's per-message budget); the CRC-32C already covers them, and every
reader here skips a batch it cannot parse. A compressed batch is inflated
anyway; its records are walked by their length varints only (count and size
must agree), not field by field (~1.6 us a record). C{checkRecords=True}
walks every field of every batch, as Kafka 2.3's DefaultRecord.readFrom does.

Magic 0/1 message sets go to L{messages.assignOffsets} unchanged (stored as
magic 0). A stored log may therefore mix magic-0 entries and v2 batches; the
first 12 bytes of every entry (offset, size) and the magic at byte 16 are the
same for all of them, which is all the reading helpers here rely on.

Batch layout (big-endian; L{_BATCH_HEAD}): baseOffset int64, batchLength
int32, partitionLeaderEpoch int32, magic int8, crc uint32 (CRC-32C over
attributes .. end), attributes int16, lastOffsetDelta int32, baseTimestamp
int64, maxTimestamp int64, producerId int64, producerEpoch int16,
baseSequence int32, records count int32, then the records (or their
compressed bytes): length varint, attributes int8, timestampDelta varlong,
offsetDelta varint, key, value (varint length, -1 null), headers count
varint, each header key (varint length) and value (varint length, -1 null).
Varints are zigzag.
"""

import struct
import time
import zlib
from typing import NamedTuple

import cramjam
from crc32c import crc32c

from kafkaw.protocol import messages
from kafkaw.protocol.errors import ErrorCode, InvalidMessage, MessageSetError, MessageTooLarge

MAGIC_V2 = 2
LOG_OVERHEAD = messages.LOG_OVERHEAD  # baseOffset int64 + batchLength int32
BATCH_OVERHEAD = 61  # the v2 header, up to and including the records count
MIN_BATCH_LENGTH = BATCH_OVERHEAD - LOG_OVERHEAD  # 49: batchLength of a batch without records
MIN_RECORD_SIZE = 7  # length, attributes, timestampDelta, offsetDelta, key, value, headers: 1 byte each

CODEC_NONE = 0
CODEC_GZIP = 1
CODEC_SNAPPY = 2
CODEC_LZ4 = 3
CODEC_ZSTD = 4
CODEC_MASK = 0x07
TIMESTAMP_TYPE = 0x08  # LogAppendTime
TRANSACTIONAL = 0x10
CONTROL = 0x20

CREATE_TIME = 0
LOG_APPEND_TIME = 1

# Byte positions inside a batch.
_LEADER_EPOCH_AT = 12
_MAGIC_AT = 16
_CRC_AT = 17
_ATTRIBUTES_AT = 21  # the CRC covers from here to the end
_LAST_OFFSET_DELTA_AT = 23
_MAX_TIMESTAMP_AT = 35

_BATCH_HEAD = struct.Struct(">qiibIhiqqqhii")
assert _BATCH_HEAD.size == BATCH_OVERHEAD
_ENTRY_HEAD = struct.Struct(">qi")
_NUMBERING = struct.Struct(">qii")  # baseOffset, batchLength, partitionLeaderEpoch
_INT32 = struct.Struct(">i")
_INT64 = struct.Struct(">q")
_UINT32 = struct.Struct(">I")
_ATTRIBUTES_TIMESTAMP = struct.Struct(">hiqq")  # attributes .. maxTimestamp
_LEGACY_HEAD = struct.Struct(">Ibb")  # crc, magic, attributes


class InvalidTimestamp(InvalidMessage):
    """A client set the LogAppendTime bit (Kafka 2.3: INVALID_TIMESTAMP, 32).

    A subclass of L{InvalidMessage}, so callers that know only that still
    reject the batch; the answer is Kafka's own code.
    """

    errorCode = ErrorCode.INVALID_TIMESTAMP


class ProducedBatch(NamedTuple):
    """Header fields of a produced v2 batch, read without validation."""

    producerId: int
    producerEpoch: int
    baseSequence: int
    count: int  # records, = lastOffsetDelta + 1
    isTransactional: bool
    isControl: bool
    codec: int = CODEC_NONE  # 4 (zstd) needs Produce v7+ (UNSUPPORTED_COMPRESSION_TYPE below)


class AssignedRecords(NamedTuple):
    """A checked record set with offsets written in."""

    data: bytes  # ready to store as is
    count: int  # offsets used: baseOffset .. baseOffset + count - 1
    maxTimestamp: int  # largest record timestamp as stored; -1 for magic 0/1 sets


class Record(NamedTuple):
    """One decoded record, for clients and tests (timestamp -1: magic 0)."""

    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: list  # [(str, bytes | None)]


class BatchHeader(NamedTuple):
    """Every field of a v2 batch header (for clients, tests and the CLI)."""

    baseOffset: int
    batchLength: int
    partitionLeaderEpoch: int
    magic: int
    crc: int
    attributes: int
    lastOffsetDelta: int
    baseTimestamp: int
    maxTimestamp: int
    producerId: int
    producerEpoch: int
    baseSequence: int
    count: int


def readBatchHeader(data, position=0):
    """The L{BatchHeader} of the v2 batch at C{position} (no check at all)."""
    return BatchHeader(*_BATCH_HEAD.unpack_from(data, position))


# --- the produce path ------------------------------------------------------


def producedBatches(data):
    """The header fields of each v2 batch of a produced set; [] for magic 0/1.

    Header-only and cheap: no CRC. Raises L{InvalidMessage} when a header
    cannot be read: a short or overrunning entry, a batch shorter than its
    header, an unknown magic, magics mixed in one set.
    """
    end = len(data)
    if end < LOG_OVERHEAD + 5:
        return []  # assignOffsets rejects it: no complete message
    first = data[_MAGIC_AT]
    if first in (0, 1):
        return []
    if first != MAGIC_V2:
        raise InvalidMessage(f"unknown magic {first}")
    batches = []
    unpack = _BATCH_HEAD.unpack_from
    position = 0
    while position < end:
        batchEnd = _batchEnd(data, position, end)
        (_, _, _, _, _, attributes, lastOffsetDelta, _, _, producerId, producerEpoch, baseSequence, _) = unpack(
            data, position
        )
        batches.append(
            ProducedBatch(
                producerId,
                producerEpoch,
                baseSequence,
                lastOffsetDelta + 1,
                bool(attributes & TRANSACTIONAL),
                bool(attributes & CONTROL),
                attributes & CODEC_MASK,
            )
        )
        position = batchEnd
    return batches


def _batchEnd(data, position, end):
    """Where the v2 batch at C{position} ends; InvalidMessage unless it is whole and magic 2."""
    if end - position < LOG_OVERHEAD:
        raise InvalidMessage(f"partial record batch at byte {position}: {end - position} bytes")
    _, size = _ENTRY_HEAD.unpack_from(data, position)
    if end - position > _MAGIC_AT:
        magic = data[position + _MAGIC_AT]
        if magic != MAGIC_V2:
            raise InvalidMessage(
                f"magic {magic} after magic-2 batches: mixed magics in one record set"
                if magic in (0, 1)
                else f"unknown magic {magic}"
            )
    if size < MIN_BATCH_LENGTH:
        raise InvalidMessage(f"batch length {size} at byte {position} is below the {MIN_BATCH_LENGTH}-byte header")
    if position + LOG_OVERHEAD + size > end:
        raise InvalidMessage(
            f"partial record batch at byte {position}: "
            f"batch length {size:,d}, {end - position - LOG_OVERHEAD:,d} bytes there"
        )
    return position + LOG_OVERHEAD + size


def assignOffsets(data, baseOffset, maxMessageBytes, maxExpandedBytes, now, logAppendTime=False, checkRecords=False):
    """Check a produced record set of any magic and number it from C{baseOffset}.

    Magic 0/1 sets go to L{messages.assignOffsets} (maxTimestamp -1). A set of
    v2 batches is checked batch by batch, as Kafka 2.3's Log and LogValidator
    check client batches, and numbered consecutively; each batch keeps its
    bytes but for baseOffset and partitionLeaderEpoch (0), and, with
    C{logAppendTime}, the timestamp-type bit and maxTimestamp (= C{now}) with
    the CRC recomputed. C{maxExpandedBytes} bounds what decompression may
    produce, summed over the set. The records of a compressed batch are
    walked by their lengths (count and size must agree); C{checkRecords}
    walks every field of every batch's records, as Kafka's readFrom does.

    @raise MessageTooLarge: a batch above C{maxMessageBytes} (as sent, compressed).
    @raise InvalidTimestamp: a client set the LogAppendTime bit.
    @raise InvalidMessage: anything else wrong.
    @return: L{AssignedRecords}.
    """
    end = len(data)
    if end <= _MAGIC_AT or data[_MAGIC_AT] in (0, 1):
        try:
            assigned = messages.assignOffsets(data, baseOffset, maxMessageBytes, maxExpandedBytes)
        except MessageSetError:
            _explainLegacy(data)
            raise
        return AssignedRecords(assigned.data, assigned.count, -1)
    magic = data[_MAGIC_AT]
    if magic != MAGIC_V2:
        raise InvalidMessage(f"unknown magic {magic}")

    out = bytearray(data)
    offset = baseOffset
    maxTimestamp = -1
    expandBudget = maxExpandedBytes
    unpack = _BATCH_HEAD.unpack_from
    packNumbering = _NUMBERING.pack_into
    position = 0
    with memoryview(out) as view:
        while position < end:
            batchEnd = _batchEnd(out, position, end)
            size = batchEnd - position
            if size > maxMessageBytes:
                raise MessageTooLarge(f"record batch of {size:,d} bytes exceeds {maxMessageBytes:,d}")
            (
                producedBase,
                batchLength,
                _,
                _,
                crc,
                attributes,
                lastOffsetDelta,
                _,
                batchMaxTimestamp,
                producerId,
                _,
                baseSequence,
                count,
            ) = unpack(view, position)
            if crc != crc32c(view[position + _ATTRIBUTES_AT : batchEnd]):
                raise InvalidMessage(f"CRC-32C mismatch in the record batch at byte {position}")
            codec = attributes & CODEC_MASK
            if codec > CODEC_ZSTD:
                raise InvalidMessage(f"unknown compression codec {codec}")
            if attributes & CONTROL:
                raise InvalidMessage("clients may not write control batches")
            if attributes & TIMESTAMP_TYPE:
                raise InvalidTimestamp("a producer may not set the timestamp type to LogAppendTime")
            if count <= 0:
                raise InvalidMessage(f"record count {count} in the batch at byte {position}")
            if lastOffsetDelta + 1 != count:
                raise InvalidMessage(f"lastOffsetDelta {lastOffsetDelta} disagrees with record count {count}")
            if producedBase != 0:
                raise InvalidMessage(f"a produced batch must have baseOffset 0, not {producedBase}")
            if producerId >= 0 and baseSequence < 0:
                raise InvalidMessage(f"sequence {baseSequence} with producer id {producerId}")
            recordsAt = position + BATCH_OVERHEAD
            if codec == CODEC_NONE:
                if count * MIN_RECORD_SIZE > batchEnd - recordsAt:
                    raise InvalidMessage(f"{count} records cannot fit in {batchEnd - recordsAt:,d} bytes")
                if checkRecords:
                    _checkRecords(view, recordsAt, batchEnd, count)
            else:
                inflated = decompress(codec, view[recordsAt:batchEnd], expandBudget)
                expandBudget -= len(inflated)
                (_checkRecords if checkRecords else _walkLengths)(inflated, 0, len(inflated), count)
            packNumbering(view, position, offset, batchLength, 0)
            if logAppendTime:
                view[position + _ATTRIBUTES_AT : position + _ATTRIBUTES_AT + 2] = _attributesBytes(
                    attributes | TIMESTAMP_TYPE
                )
                _INT64.pack_into(view, position + _MAX_TIMESTAMP_AT, now)
                _UINT32.pack_into(view, position + _CRC_AT, crc32c(view[position + _ATTRIBUTES_AT : batchEnd]))
                batchMaxTimestamp = now
            if batchMaxTimestamp > maxTimestamp:
                maxTimestamp = batchMaxTimestamp
            offset += count
            position = batchEnd
    return AssignedRecords(bytes(out), offset - baseOffset, maxTimestamp)


def _attributesBytes(attributes):
    return struct.pack(">h", attributes)


def _explainLegacy(data):
    """After a magic 0/1 set failed: raise a clearer error if it mixes in other magics."""
    position = 0
    end = len(data)
    while end - position > _MAGIC_AT:
        _, size = _ENTRY_HEAD.unpack_from(data, position)
        magic = data[position + _MAGIC_AT]
        if magic == MAGIC_V2:
            raise InvalidMessage(f"magic-2 batch at byte {position} among magic 0/1 messages: mixed magics")
        if magic > MAGIC_V2:
            raise InvalidMessage(f"unknown magic {magic}")
        if size < 0:
            return
        position += LOG_OVERHEAD + size


# --- records ----------------------------------------------------------------


def _checkRecords(buf, position, end, count):
    """Walk C{count} records from C{position}; they must fill C{buf} up to C{end}.

    Kafka's DefaultRecord.readFrom checks, without building anything: each
    record's fields fill exactly its length, header counts and header key
    lengths are not negative, key/value lengths are -1 or more; and, as
    kafkaw stores batches as they are, each offsetDelta is its index (Kafka
    rewrites a compressed batch whose deltas are not; no client sends one).
    Varints of one or two bytes (all but huge values) are read inline.
    """
    readUvarint = _readUvarint
    try:
        for index in range(count):
            length = buf[position]
            if length < 0x80:
                position += 1
            elif buf[position + 1] < 0x80:
                length = (length & 0x7F) | (buf[position + 1] << 7)
                position += 2
            else:
                length, position = readUvarint(buf, position, 5)
            length = (length >> 1) ^ -(length & 1)
            bodyEnd = position + length
            if length < MIN_RECORD_SIZE - 1 or bodyEnd > end:
                raise InvalidMessage(f"record {index}: length {length} overruns its batch")
            # attributes (unused and unchecked, as Kafka), then timestampDelta: a varlong, skipped
            position += 1
            if buf[position] < 0x80:
                position += 1
            else:
                _, position = readUvarint(buf, position, 10)
            delta = buf[position]
            if delta < 0x80:
                position += 1
            else:
                delta, position = readUvarint(buf, position, 5)
            if delta != index << 1:  # zigzag of a non-negative index
                raise InvalidMessage(f"record {index} has offsetDelta {(delta >> 1) ^ -(delta & 1)}, not {index}")
            size = buf[position]  # key length
            if size < 0x80:
                position += 1
            elif buf[position + 1] < 0x80:
                size = (size & 0x7F) | (buf[position + 1] << 7)
                position += 2
            else:
                size, position = readUvarint(buf, position, 5)
            if size & 1:
                if size != 1:
                    raise InvalidMessage(f"record {index}: key length below -1")
            else:
                position += size >> 1
            size = buf[position]  # value length
            if size < 0x80:
                position += 1
            elif buf[position + 1] < 0x80:
                size = (size & 0x7F) | (buf[position + 1] << 7)
                position += 2
            else:
                size, position = readUvarint(buf, position, 5)
            if size & 1:
                if size != 1:
                    raise InvalidMessage(f"record {index}: value length below -1")
            else:
                position += size >> 1
            headers = buf[position]
            if headers < 0x80:
                position += 1
            else:
                headers, position = readUvarint(buf, position, 5)
            if headers:
                if headers & 1:
                    raise InvalidMessage(f"record {index}: negative header count")
                for _ in range(headers >> 1):
                    size, position = readUvarint(buf, position, 5)
                    if size & 1:
                        raise InvalidMessage(f"record {index}: negative header key length")
                    position += size >> 1
                    size, position = readUvarint(buf, position, 5)
                    if size & 1:
                        if size != 1:
                            raise InvalidMessage(f"record {index}: header value length below -1")
                    else:
                        position += size >> 1
            if position != bodyEnd:
                raise InvalidMessage(f"record {index}: fields fill {position - bodyEnd + length} of {length} bytes")
    except IndexError:
        raise InvalidMessage("records overrun their batch") from None
    if position != end:
        raise InvalidMessage(f"{end - position:,d} bytes after the batch's {count} records")


def _walkLengths(buf, position, end, count):
    """The cheap check of a batch's records: C{count} length-prefixed records fill C{buf} to C{end}.

    Reads each record's length varint only (each record at least 6 bytes
    after it), not its fields: ~0.27 us a record here, against ~1.6 us for
    L{_checkRecords}.
    """
    readUvarint = _readUvarint
    try:
        for index in range(count):
            length = buf[position]
            if length < 0x80:
                position += 1
            elif buf[position + 1] < 0x80:
                length = (length & 0x7F) | (buf[position + 1] << 7)
                position += 2
            else:
                length, position = readUvarint(buf, position, 5)
            if length & 1 or length < 2 * (MIN_RECORD_SIZE - 1):
                raise InvalidMessage(f"record {index}: length {(length >> 1) ^ -(length & 1)}")
            position += length >> 1
    except IndexError:
        raise InvalidMessage("records overrun their batch") from None
    if position != end:
        raise InvalidMessage(
            f"{count} records end at byte {position:,d} of {end:,d}: count or lengths disagree with the batch"
        )


def _readUvarint(buf, position, maxBytes):
    """An unsigned varint (zigzag left to the caller) and the position after it."""
    result = 0
    shift = 0
    limit = position + maxBytes
    while True:
        byte = buf[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, position
        shift += 7
        if position == limit:
            raise InvalidMessage("varint too long")


def _parseRecords(buf, position, end, count, baseOffset, baseTimestamp, logAppendTime, withHeaders=True):
    """Decode C{count} records (a stored batch's): [(offset, timestamp, key, value, headers)].

    Raises L{InvalidMessage} when they do not parse. Without C{withHeaders}
    the headers are skipped and given as [].
    """
    records = []
    append = records.append
    readUvarint = _readUvarint
    try:
        for index in range(count):
            length = buf[position]
            if length < 0x80:
                position += 1
            elif buf[position + 1] < 0x80:
                length = (length & 0x7F) | (buf[position + 1] << 7)
                position += 2
            else:
                length, position = readUvarint(buf, position, 5)
            length = (length >> 1) ^ -(length & 1)
            bodyEnd = position + length
            if length < MIN_RECORD_SIZE - 1 or bodyEnd > end:
                raise InvalidMessage(f"record {index}: length {length} overruns its batch")
            timestampDelta = buf[position + 1]
            if timestampDelta < 0x80:
                position += 2
            else:
                timestampDelta, position = readUvarint(buf, position + 1, 10)
            offsetDelta = buf[position]
            if offsetDelta < 0x80:
                position += 1
            else:
                offsetDelta, position = readUvarint(buf, position, 5)
            size = buf[position]
            if size < 0x80:
                position += 1
            elif buf[position + 1] < 0x80:
                size = (size & 0x7F) | (buf[position + 1] << 7)
                position += 2
            else:
                size, position = readUvarint(buf, position, 5)
            if size & 1:
                if size != 1:
                    raise InvalidMessage(f"record {index}: key length below -1")
                key = None
            else:
                key = bytes(buf[position : position + (size >> 1)])
                position += size >> 1
            size = buf[position]
            if size < 0x80:
                position += 1
            elif buf[position + 1] < 0x80:
                size = (size & 0x7F) | (buf[position + 1] << 7)
                position += 2
            else:
                size, position = readUvarint(buf, position, 5)
            if size & 1:
                if size != 1:
                    raise InvalidMessage(f"record {index}: value length below -1")
                value = None
            else:
                value = bytes(buf[position : position + (size >> 1)])
                position += size >> 1
            headers = []
            headerCount = buf[position]
            if headerCount < 0x80:
                position += 1
            else:
                headerCount, position = readUvarint(buf, position, 5)
            if headerCount:
                if headerCount & 1:
                    raise InvalidMessage(f"record {index}: negative header count")
                for _ in range(headerCount >> 1):
                    size, position = readUvarint(buf, position, 5)
                    if size & 1:
                        raise InvalidMessage(f"record {index}: negative header key length")
                    name = bytes(buf[position : position + (size >> 1)])
                    position += size >> 1
                    size, position = readUvarint(buf, position, 5)
                    headerValue = None
                    if not size & 1:
                        headerValue = bytes(buf[position : position + (size >> 1)])
                        position += size >> 1
                    elif size != 1:
                        raise InvalidMessage(f"record {index}: header value length below -1")
                    if withHeaders:
                        headers.append((name.decode("utf-8"), headerValue))
            if position != bodyEnd:
                raise InvalidMessage(f"record {index}: fields do not fill its length")
            append(
                (
                    baseOffset + ((offsetDelta >> 1) ^ -(offsetDelta & 1)),
                    logAppendTime
                    if logAppendTime is not None
                    else baseTimestamp + ((timestampDelta >> 1) ^ -(timestampDelta & 1)),
                    key,
                    value,
                    headers,
                )
            )
    except (IndexError, UnicodeDecodeError):
        raise InvalidMessage("records overrun their batch or do not parse") from None
    if position != end:
        raise InvalidMessage(f"{end - position:,d} bytes after the batch's {count} records")
    return records


def _storedBatchRecords(view, position, batchEnd, maxExpandedBytes, withHeaders=True):
    """The records of the stored v2 batch at C{position}: (header, [record tuple]).

    Record tuples are (offset, timestamp, key, value, headers), as L{Record}.

    Checks the CRC and the structure; InvalidMessage when anything is wrong.
    """
    header = _BATCH_HEAD.unpack_from(view, position)
    (baseOffset, _, _, _, crc, attributes, lastOffsetDelta, baseTimestamp, maxTimestamp, _, _, _, count) = header
    if crc != crc32c(view[position + _ATTRIBUTES_AT : batchEnd]):
        raise InvalidMessage("CRC-32C mismatch")
    codec = attributes & CODEC_MASK
    if codec > CODEC_ZSTD or count < 0:
        raise InvalidMessage("bad codec or count")
    logAppendTime = maxTimestamp if attributes & TIMESTAMP_TYPE else None
    recordsAt = position + BATCH_OVERHEAD
    if codec == CODEC_NONE:
        buf, start, stop = view, recordsAt, batchEnd
    else:
        buf = decompress(codec, view[recordsAt:batchEnd], maxExpandedBytes)
        start, stop = 0, len(buf)
    records = _parseRecords(buf, start, stop, count, baseOffset, baseTimestamp, logAppendTime, withHeaders)
    return header, records


# --- compression ------------------------------------------------------------


def decompress(codec, data, limit):
    """Inflate a v2 batch's records, refusing to produce more than C{limit} bytes.

    gzip: stdlib zlib (every member); snappy: raw or xerial-framed (as
    L{messages} reads them); lz4: the standard LZ4 frame; zstd: a zstd frame.
    """
    if codec in (CODEC_GZIP, CODEC_SNAPPY):
        return messages._decompress(codec, data, limit)
    if codec == CODEC_LZ4:
        return _decompressInto(cramjam.lz4.decompress_into, "lz4", data, limit)
    if codec == CODEC_ZSTD:
        return _decompressInto(cramjam.zstd.decompress_into, "zstd", data, limit)
    raise InvalidMessage(f"unknown compression codec {codec}")


def _decompressInto(decompressInto, name, data, limit):
    """Inflate into a bounded buffer, doubling it up to C{limit} + 1 bytes.

    cramjam stops with 'failed to write whole buffer' when the output does not
    fit, so a bomb costs at most ~2 x C{limit} of work and C{limit} of memory.
    """
    data = bytes(data)
    size = min(limit + 1, max(4 * len(data), 64 * 1024))
    while True:
        out = bytearray(size)
        try:
            written = decompressInto(data, out)
        except (cramjam.DecompressionError, ValueError, OSError) as e:
            if "whole buffer" not in str(e):
                raise InvalidMessage(f"cannot decompress {name}: {e}") from None
            if size > limit:
                raise InvalidMessage(f"{name} records expand beyond {limit:,d} bytes") from None
            size = min(limit + 1, 2 * size)
            continue
        if written > limit:
            raise InvalidMessage(f"{name} records expand beyond {limit:,d} bytes")
        del out[written:]
        return out


def compress(codec, data):
    """Compress a batch's records as C{codec}, as Java clients write them.

    snappy: xerial framing (snappy-java's SnappyOutputStream); lz4: an LZ4
    frame of independent blocks (Kafka's KafkaLZ4BlockInputStream refuses
    linked blocks, cramjam's one-shot default).
    """
    if codec == CODEC_NONE:
        return bytes(data)
    if codec in (CODEC_GZIP, CODEC_SNAPPY):
        return messages._compress(codec, bytes(data), messages._XERIAL_MAGIC)
    if codec == CODEC_LZ4:
        compressor = cramjam.lz4.Compressor(block_linked=False)
        compressor.compress(bytes(data))
        return bytes(compressor.finish())
    if codec == CODEC_ZSTD:
        return bytes(cramjam.zstd.compress(bytes(data)))
    raise ValueError(f"unknown compression codec {codec}")


# --- encoding (clients, tests) -------------------------------------------


def _varint(value):
    """A zigzag varint (also used for varlongs)."""
    value = (value << 1) ^ (value >> 63)
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _varBytes(value):
    return _varint(-1) if value is None else _varint(len(value)) + value


def encodeRecord(offsetDelta, timestampDelta, key, value, headers=()):
    """One v2 record: length varint, then attributes 0 and its fields."""
    body = b"".join(
        [
            b"\x00",  # attributes
            _varint(timestampDelta),
            _varint(offsetDelta),
            _varBytes(key),
            _varBytes(value),
            _varint(len(headers)),
            *(_varBytes(name.encode("utf-8")) + _varBytes(headerValue) for name, headerValue in headers),
        ]
    )
    return _varint(len(body)) + body


def encodeBatch(
    records,
    baseOffset=0,
    codec=CODEC_NONE,
    producerId=-1,
    producerEpoch=-1,
    baseSequence=-1,
    timestampType=CREATE_TIME,
    transactional=False,
    baseTimestamp=None,
    partitionLeaderEpoch=-1,
    control=False,
):
    """One v2 batch of C{records}, offsets baseOffset + 0, 1, ...

    C{records}: (key, value) or (key, value, headers) tuples, whose timestamp
    is C{baseTimestamp} (now when None), or L{Record}-like objects (with
    C{timestamp}, C{key}, C{value}, C{headers}). C{timestampType}
    L{LOG_APPEND_TIME} sets the attribute bit (as a broker stores it).
    """
    if baseTimestamp is None:
        baseTimestamp = int(time.time() * 1000)
    items = []
    for record in records:
        if hasattr(record, "timestamp"):
            items.append((record.key, record.value, list(record.headers or ()), record.timestamp))
        elif len(record) == 3:
            items.append((record[0], record[1], list(record[2]), None))
        else:
            items.append((record[0], record[1], [], None))
    if items and items[0][3] is not None and all(item[3] is not None for item in items):
        baseTimestamp = min(item[3] for item in items)
    timestamps = [baseTimestamp if item[3] is None else item[3] for item in items]
    body = b"".join(
        encodeRecord(i, timestamp - baseTimestamp, key, value, headers)
        for i, ((key, value, headers, _), timestamp) in enumerate(zip(items, timestamps))
    )
    attributes = (
        codec
        | (TIMESTAMP_TYPE if timestampType == LOG_APPEND_TIME else 0)
        | (TRANSACTIONAL if transactional else 0)
        | (CONTROL if control else 0)
    )
    afterCrc = struct.pack(
        ">hiqqqhii",
        attributes,
        len(items) - 1,
        baseTimestamp,
        max(timestamps, default=baseTimestamp),
        producerId,
        producerEpoch,
        baseSequence,
        len(items),
    ) + compress(codec, body)
    return (
        struct.pack(">qiib", baseOffset, len(afterCrc) + 9, partitionLeaderEpoch, MAGIC_V2)
        + _UINT32.pack(crc32c(afterCrc))
        + afterCrc
    )


# --- the reading side: stored slices that may mix magics -----------------------


def entrySize(data, position=0):
    """Bytes of the whole entry at C{position} (12 + size); None without its 12-byte head."""
    if len(data) - position < LOG_OVERHEAD:
        return None
    return LOG_OVERHEAD + _ENTRY_HEAD.unpack_from(data, position)[1]


def storedEntriesIntact(data):
    """True if C{data} is whole stored entries, each with a valid CRC.

    For storage recovery after a power loss (data written but not synced may
    be missing or zeros): v2 batches are checked with their CRC-32C, v0/v1
    messages (compressed wrappers included) with their CRC-32.
    """
    view = memoryview(data)
    position, end = 0, len(data)
    while position < end:
        size = entrySize(data, position)
        if size is None or size < LOG_OVERHEAD + 5 or position + size > end:
            return False
        entryEnd = position + size
        if data[position + _MAGIC_AT] == 2:
            if size < _ATTRIBUTES_AT or _UINT32.unpack_from(data, position + _CRC_AT)[0] != crc32c(view[position + _ATTRIBUTES_AT : entryEnd]):
                return False
        elif _UINT32.unpack_from(data, position + LOG_OVERHEAD)[0] != zlib.crc32(view[position + LOG_OVERHEAD + 4 : entryEnd]):
            return False
        position = entryEnd
    return end > 0


def skipBelow(data, offset):
    """Byte position of the first entry holding an offset >= C{offset} (see L{messages.skipBelow})."""
    return messages.skipBelow(data, offset)


def decodeRecords(data, maxExpandedBytes=1 << 31):
    """Every whole record of a stored or fetched slice of any magic.

    Magic 0/1 wrappers are expanded; v2 batches are opened (CRC checked). A
    partial tail is ignored; a batch that does not parse raises
    L{InvalidMessage} (this is for clients and tests).
    """
    out = []
    position = 0
    end = len(data)
    with memoryview(bytes(data)) as view:
        while end - position >= LOG_OVERHEAD:
            _, size = _ENTRY_HEAD.unpack_from(view, position)
            entryEnd = position + LOG_OVERHEAD + size
            if size < messages.MIN_MESSAGE_SIZE or entryEnd > end:
                break
            magic = view[position + _MAGIC_AT]
            if magic == MAGIC_V2:
                if size < MIN_BATCH_LENGTH:
                    raise InvalidMessage(f"batch length {size} at byte {position}")
                _, records = _storedBatchRecords(view, position, entryEnd, maxExpandedBytes)
                out.extend(Record._make(record) for record in records)
            elif magic in (0, 1):
                out.extend(_legacyRecords(view, position, entryEnd, maxExpandedBytes))
            else:
                raise InvalidMessage(f"unknown magic {magic}")
            position = entryEnd
    return out


def _legacyRecords(view, position, entryEnd, maxExpandedBytes, wrapper=None):
    """The records of one magic 0/1 entry; a wrapper's inner messages expanded.

    C{wrapper}: (offset of the wrapper, its timestamp or None under
    CreateTime) when reading inside a magic-1 wrapper, whose inner offsets are
    relative (Kafka 0.10) unless they already reach the wrapper's offset.
    """
    (offset,) = _INT64.unpack_from(view, position)
    body = position + LOG_OVERHEAD
    crc, magic, attributes = _LEGACY_HEAD.unpack_from(view, body)
    if crc != zlib.crc32(view[body + 4 : entryEnd]):
        raise InvalidMessage(f"CRC mismatch at byte {position}")
    timestamp = -1
    keyAt = body + 6
    if magic == 1:
        (timestamp,) = _INT64.unpack_from(view, keyAt)
        keyAt += 8
    (keySize,) = _INT32.unpack_from(view, keyAt)
    valueAt = keyAt + 4 + max(keySize, 0)
    key = None if keySize < 0 else bytes(view[keyAt + 4 : valueAt])
    (valueSize,) = _INT32.unpack_from(view, valueAt)
    value = None if valueSize < 0 else bytes(view[valueAt + 4 : valueAt + 4 + valueSize])
    codec = attributes & CODEC_MASK
    if codec == CODEC_NONE:
        if wrapper is not None and wrapper[1] is not None:
            timestamp = wrapper[1]
        return [Record(offset, timestamp, key, value, [])]
    if value is None:
        raise InvalidMessage("compressed wrapper without a value")
    inner = bytes(decompress(codec, value, maxExpandedBytes))
    innerEntries = []
    at = 0
    while len(inner) - at >= LOG_OVERHEAD:
        _, size = _ENTRY_HEAD.unpack_from(inner, at)
        if size < messages.MIN_MESSAGE_SIZE or at + LOG_OVERHEAD + size > len(inner):
            break
        innerEntries.append((at, at + LOG_OVERHEAD + size))
        at += LOG_OVERHEAD + size
    logAppend = timestamp if magic == 1 and attributes & messages.TIMESTAMP_TYPE else None
    records = []
    with memoryview(inner) as innerView:
        for start, stop in innerEntries:
            records.extend(_legacyRecords(innerView, start, stop, maxExpandedBytes, (offset, logAppend)))
    if magic == 1 and records and records[-1].offset != offset:  # relative inner offsets
        shift = offset - records[-1].offset
        records = [r._replace(offset=r.offset + shift) for r in records]
    return records


_NULL = _INT32.pack(-1)


def _legacyMessage(magic, offset, key, value, timestamp=-1, attributes=0):
    """A magic 0 or 1 message set entry with its CRC-32."""
    body = b"".join(
        [
            bytes((magic, attributes)),
            _INT64.pack(timestamp) if magic == 1 else b"",
            _NULL if key is None else _INT32.pack(len(key)) + key,
            _NULL if value is None else _INT32.pack(len(value)) + value,
        ]
    )
    return _ENTRY_HEAD.pack(offset, len(body) + 4) + _UINT32.pack(zlib.crc32(body)) + body


def _legacyMessages(records, magic, fromOffset, typeBit):
    """Magic 0 or 1 entries for record tuples at or above C{fromOffset}, one offset each."""
    crc32 = zlib.crc32
    packInt32 = _INT32.pack
    pieces = []
    append = pieces.append
    if magic == 0:
        prefix = b"\x00\x00"
        for offset, _, key, value, _ in records:
            if offset < fromOffset:
                continue
            body = b"".join(
                (
                    prefix,
                    _NULL if key is None else packInt32(len(key)) + key,
                    _NULL if value is None else packInt32(len(value)) + value,
                )
            )
            append(_ENTRY_HEAD.pack(offset, len(body) + 4) + _UINT32.pack(crc32(body)) + body)
    else:
        prefix = bytes((1, typeBit))
        packTimestamp = _INT64.pack
        for offset, timestamp, key, value, _ in records:
            if offset < fromOffset:
                continue
            body = b"".join(
                (
                    prefix,
                    packTimestamp(timestamp),
                    _NULL if key is None else packInt32(len(key)) + key,
                    _NULL if value is None else packInt32(len(value)) + value,
                )
            )
            append(_ENTRY_HEAD.pack(offset, len(body) + 4) + _UINT32.pack(crc32(body)) + body)
    return pieces


def downConvert(data, magic, fromOffset, maxExpandedBytes):
    """A magic C{magic} (0 or 1) message set of every whole record at or above C{fromOffset}.

    Stored magic 0/1 entries at or below C{magic} pass through unchanged
    (skipped when their offset, a wrapper's last, is below C{fromOffset});
    v2 batches become uncompressed magic-C{magic} messages, one offset each
    (magic 0: key and value; magic 1: also the timestamp, the batch's
    maxTimestamp and the timestamp-type bit under LogAppendTime); headers are
    dropped, control batches skipped. A partial tail is dropped; a batch that
    cannot be read (CRC, structure, decompression beyond C{maxExpandedBytes})
    is skipped: this never raises to a fetcher.
    """
    pieces = []
    position = 0
    end = len(data)
    unpackEntry = _ENTRY_HEAD.unpack_from
    with memoryview(data) as view:
        while end - position >= LOG_OVERHEAD:
            entryOffset, size = unpackEntry(view, position)
            entryEnd = position + LOG_OVERHEAD + size
            if size < messages.MIN_MESSAGE_SIZE or entryEnd > end:
                break  # partial tail, or a size no entry can have: nothing after it can be found
            stored = view[position + _MAGIC_AT]
            if stored <= magic:
                if entryOffset >= fromOffset:
                    pieces.append(view[position:entryEnd])
            elif stored == MAGIC_V2 and size >= MIN_BATCH_LENGTH:
                pieces.extend(_convertBatch(view, position, entryEnd, magic, fromOffset, maxExpandedBytes))
            elif stored == 1:  # for a magic-0 fetch (never stored today: messages stores magic 0)
                try:
                    records = _legacyRecords(view, position, entryEnd, maxExpandedBytes)
                except (InvalidMessage, struct.error):
                    records = []
                pieces.extend(_legacyMessages(records, 0, fromOffset, 0))
            # else: an unknown magic, skipped
            position = entryEnd
        return b"".join(pieces)


def _convertBatch(view, position, batchEnd, magic, fromOffset, maxExpandedBytes):
    (baseOffset, _, _, _, _, attributes, lastOffsetDelta, _, maxTimestamp, *_) = _BATCH_HEAD.unpack_from(
        view, position
    )
    if attributes & CONTROL or baseOffset + lastOffsetDelta < fromOffset:
        return []
    try:
        _, records = _storedBatchRecords(view, position, batchEnd, maxExpandedBytes, withHeaders=False)
    except InvalidMessage:
        return []  # malformed: skipped, never raised to a fetcher
    return _legacyMessages(records, magic, fromOffset, messages.TIMESTAMP_TYPE if attributes & TIMESTAMP_TYPE else 0)


def firstOffsetAtOrAfter(data, timestamp, maxExpandedBytes=1 << 31):
    """(offset, timestamp) of the first record in a stored slice whose timestamp >= C{timestamp}.

    For ListOffsets v1+. A v2 batch whose maxTimestamp is below C{timestamp}
    is skipped unopened; magic 0 messages have no timestamp and are skipped,
    as are batches that do not parse. None when no record qualifies.
    """
    position = 0
    end = len(data)
    with memoryview(data) as view:
        while end - position >= LOG_OVERHEAD:
            _, size = _ENTRY_HEAD.unpack_from(view, position)
            entryEnd = position + LOG_OVERHEAD + size
            if size < messages.MIN_MESSAGE_SIZE or entryEnd > end:
                break
            if view[position + _MAGIC_AT] == MAGIC_V2 and size >= MIN_BATCH_LENGTH:
                (batchMax,) = _INT64.unpack_from(view, position + _MAX_TIMESTAMP_AT)
                if batchMax >= timestamp:
                    try:
                        _, records = _storedBatchRecords(view, position, entryEnd, maxExpandedBytes, False)
                    except InvalidMessage:
                        records = []
                    for recordOffset, recordTimestamp, *_ in records:
                        if recordTimestamp >= timestamp:
                            return (recordOffset, recordTimestamp)
            position = entryEnd
    return None
