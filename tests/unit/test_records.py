"""Record batches v2 (KIP-98): golden bytes, client-made batches, validation,
numbering, down-conversion and the reading helpers of kafkaw.protocol.records."""

import gzip
import struct
import zlib

import pytest
from crc32c import crc32c
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kafkaw.protocol import messages, records
from kafkaw.protocol.errors import ErrorCode, InvalidMessage, MessageTooLarge
from kafkaw.protocol.records import (
    AssignedRecords,
    ProducedBatch,
    Record,
    assignOffsets,
    decodeRecords,
    downConvert,
    encodeBatch,
    entrySize,
    firstOffsetAtOrAfter,
    producedBatches,
    skipBelow,
)

BIG = 10**9
NOW = 1_700_000_000_000
CODECS = [0, 1, 2, 3, 4]
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def varint(value):
    """Zigzag varint, written out independently of records._varint."""
    value = (value << 1) ^ (value >> 63)
    out = b""
    while True:
        if value < 0x80:
            return out + bytes([value])
        out += bytes([(value & 0x7F) | 0x80])
        value >>= 7


def assign(data, base=0, now=NOW, **kwargs):
    return assignOffsets(data, base, kwargs.pop("maxMessageBytes", BIG), kwargs.pop("maxExpanded", BIG), now, **kwargs)


# --- golden bytes --------------------------------------------------------------


def goldenRecords():
    record0 = b"".join(
        [
            b"\x00",  # attributes
            varint(0),  # timestampDelta
            varint(0),  # offsetDelta
            varint(3),  # key length
            b"key",  # key
            varint(5),  # value length
            b"hello",  # value
            varint(1),  # headers count
            varint(2),  # header key length
            b"h1",  # header key
            varint(2),  # header value length
            b"v1",  # header value
        ]
    )
    record1 = b"".join(
        [
            b"\x00",  # attributes
            varint(200),  # timestampDelta (two bytes)
            varint(1),  # offsetDelta
            varint(-1),  # key length: null
            varint(-1),  # value length: null (a tombstone)
            varint(1),  # headers count
            varint(1),  # header key length
            b"n",  # header key
            varint(-1),  # header value length: null
        ]
    )
    return varint(len(record0)) + record0 + varint(len(record1)) + record1


def goldenBatch(baseOffset=0, leaderEpoch=-1, attributes=0, maxTimestamp=NOW + 200):
    recordBytes = goldenRecords()
    afterCrc = b"".join(
        [
            struct.pack(">h", attributes),  # attributes
            struct.pack(">i", 1),  # lastOffsetDelta
            struct.pack(">q", NOW),  # baseTimestamp
            struct.pack(">q", maxTimestamp),  # maxTimestamp
            struct.pack(">q", 7),  # producerId
            struct.pack(">h", 3),  # producerEpoch
            struct.pack(">i", 42),  # baseSequence
            struct.pack(">i", 2),  # records count
            recordBytes,
        ]
    )
    return b"".join(
        [
            struct.pack(">q", baseOffset),  # baseOffset
            struct.pack(">i", 4 + 1 + 4 + len(afterCrc)),  # batchLength: leader epoch .. end
            struct.pack(">i", leaderEpoch),  # partitionLeaderEpoch
            struct.pack(">b", 2),  # magic
            struct.pack(">I", crc32c(afterCrc)),  # crc: CRC-32C over attributes .. end
            afterCrc,
        ]
    )


GOLDEN_RECORDS = [
    Record(0, NOW, b"key", b"hello", [("h1", b"v1")]),
    Record(1, NOW + 200, None, None, [("n", None)]),
]


def test_golden_encode():
    assert encodeBatch(GOLDEN_RECORDS, producerId=7, producerEpoch=3, baseSequence=42) == goldenBatch()


def test_golden_decode():
    assert decodeRecords(goldenBatch()) == GOLDEN_RECORDS
    assert decodeRecords(goldenBatch(baseOffset=100)) == [r._replace(offset=r.offset + 100) for r in GOLDEN_RECORDS]


def test_golden_assign_rewrites_base_offset_and_epoch_only():
    produced = goldenBatch()
    assigned = assign(produced, base=1000)
    assert assigned == AssignedRecords(goldenBatch(baseOffset=1000, leaderEpoch=0), 2, NOW + 200)
    assert assigned.data[16:] == produced[16:]


def test_golden_log_append_time():
    assigned = assign(goldenBatch(), base=5, now=NOW + 999, logAppendTime=True)
    assert assigned == AssignedRecords(
        goldenBatch(baseOffset=5, leaderEpoch=0, attributes=0x08, maxTimestamp=NOW + 999), 2, NOW + 999
    )
    assert [r.timestamp for r in decodeRecords(assigned.data)] == [NOW + 999, NOW + 999]


def test_golden_produced_batches():
    assert producedBatches(goldenBatch()) == [ProducedBatch(7, 3, 42, 2, False, False, 0)]


def test_encode_tuples_and_flags():
    batch = encodeBatch([(b"k", b"v"), (None, b"w", [("a", b"b")])], codec=1, transactional=True, baseTimestamp=5)
    header = records.readBatchHeader(batch)
    assert header.attributes == 0x11 and header.baseTimestamp == header.maxTimestamp == 5
    assert decodeRecords(batch) == [Record(0, 5, b"k", b"v", []), Record(1, 5, None, b"w", [("a", b"b")])]
    assert producedBatches(batch)[0].isTransactional


# --- batches made by client libraries (bytes nobody here wrote) ----------------------


def libraryRecords(n=30):
    return [
        (
            NOW + i,
            None if i % 7 == 0 else b"key-%d" % i,  # some null keys
            None if i == 5 else b"value %d " % i * 20,  # a tombstone; compressible, so the libraries compress
            [("h", b"%d" % i)] if i % 3 else [],
        )
        for i in range(n)
    ]


def expectedRecords(base, items):
    return [Record(base + i, ts, key, value, headers) for i, (ts, key, value, headers) in enumerate(items)]


def kafkaPythonBatch(codec, items, producerId=-1, epoch=-1, sequence=-1):
    from kafka.record.default_records import DefaultRecordBatchBuilder

    builder = DefaultRecordBatchBuilder(2, codec, False, producerId, epoch, sequence, 1 << 20)
    for i, (ts, key, value, headers) in enumerate(items):
        builder.append(i, timestamp=ts, key=key, value=value, headers=headers)
    return bytes(builder.build())


def aiokafkaBatch(codec, items):
    from aiokafka.record.default_records import DefaultRecordBatchBuilder

    builder = DefaultRecordBatchBuilder(2, codec, 0, -1, -1, -1, 1 << 20)
    for i, (ts, key, value, headers) in enumerate(items):
        builder.append(i, timestamp=ts, key=key, value=value, headers=headers)
    return bytes(builder.build())


@pytest.mark.parametrize("codec", [0, 1])  # kafka-python 3 here: gzip only (no snappy/lz4/zstd module)
def test_kafka_python_batches(codec):
    items = libraryRecords()
    batch = kafkaPythonBatch(codec, items, 99, 0, 10)
    assert records.readBatchHeader(batch).attributes & 7 == codec
    assert producedBatches(batch) == [ProducedBatch(99, 0, 10, 30, False, False, codec)]
    assigned = assign(batch, base=50, checkRecords=True)
    assert assigned.count == 30 and assigned.maxTimestamp == NOW + 29
    assert decodeRecords(assigned.data) == expectedRecords(50, items)


@pytest.mark.parametrize("codec", CODECS)
def test_aiokafka_batches(codec):
    items = libraryRecords()
    batch = aiokafkaBatch(codec, items)
    assert records.readBatchHeader(batch).attributes & 7 == codec
    for check in (False, True):
        assigned = assign(batch, base=7, checkRecords=check)
        assert assigned.count == 30
        assert decodeRecords(assigned.data) == expectedRecords(7, items)


def readWithLibrary(data):
    """Decode a fetched slice with kafka-python's reader (CRC checked)."""
    from kafka.record.memory_records import MemoryRecords

    out = []
    reader = MemoryRecords(bytes(data))
    while reader.has_next():
        batch = reader.next_batch()
        assert batch.validate_crc()
        for r in batch:
            headers = list(getattr(r, "headers", []) or [])
            out.append((r.offset, r.timestamp, r.key, r.value, headers))
    return out


@pytest.mark.parametrize("codec", CODECS)
def test_libraries_read_our_batches(codec):
    items = libraryRecords()
    stored = assign(encodeBatch([Record(0, ts, k, v, h) for ts, k, v, h in items], codec=codec), base=3).data
    expected = [tuple(r) for r in expectedRecords(3, items)]
    from aiokafka.record.memory_records import MemoryRecords as AioMemoryRecords

    reader = AioMemoryRecords(stored)
    batch = reader.next_batch()
    assert batch.validate_crc()
    assert [(r.offset, r.timestamp, r.key, r.value, list(r.headers)) for r in batch] == expected
    if codec in (0, 1):
        assert readWithLibrary(stored) == expected


# --- hypothesis round trips ---------------------------------------------------------

optionalBytes = st.none() | st.binary(max_size=60)
headerLists = st.lists(st.tuples(st.text(max_size=8), optionalBytes), max_size=3)
recordLists = st.lists(
    st.tuples(st.integers(-(2**40), 2**40), optionalBytes, optionalBytes, headerLists), min_size=1, max_size=20
)


@SETTINGS
@given(recordLists, st.sampled_from(CODECS), st.integers(0, 2**40), st.booleans())
def test_round_trip(items, codec, base, logAppendTime):
    batch = encodeBatch([Record(0, NOW + ts, k, v, h) for ts, k, v, h in items], codec=codec)
    assigned = assign(batch, base=base, logAppendTime=logAppendTime, checkRecords=True)
    assert assigned.count == len(items)
    decoded = decodeRecords(assigned.data)
    assert [(r.key, r.value, r.headers) for r in decoded] == [(k, v, h) for _, k, v, h in items]
    assert [r.offset for r in decoded] == list(range(base, base + len(items)))
    if logAppendTime:
        assert assigned.maxTimestamp == NOW and {r.timestamp for r in decoded} == {NOW}
    else:
        assert [r.timestamp for r in decoded] == [NOW + ts for ts, *_ in items]
        assert assigned.maxTimestamp == NOW + max(ts for ts, *_ in items)
    for magic in (0, 1):
        converted = downConvert(assigned.data, magic, base, BIG)
        assert [(r.offset, r.key, r.value) for r in decodeRecords(converted)] == [
            (r.offset, r.key, r.value) for r in decoded
        ]


@SETTINGS
@given(st.binary(max_size=300), st.integers(0, 2**40))
def test_garbage_never_escapes_the_codec_errors(data, base):
    for candidate in (data, data[:16] + b"\x02" + data[17:]):
        try:
            assign(candidate, base=base, maxExpanded=1 << 16)
        except (InvalidMessage, MessageTooLarge):
            pass
        try:
            producedBatches(candidate)
        except InvalidMessage:
            pass
        downConvert(candidate, 0, 0, 1 << 16)
        downConvert(candidate, 1, 0, 1 << 16)
        firstOffsetAtOrAfter(candidate, 0)


@SETTINGS
@given(recordLists, st.sampled_from(CODECS), st.data())
def test_any_flipped_byte_is_rejected_or_harmless(items, codec, data):
    batch = encodeBatch([Record(0, NOW + ts, k, v, h) for ts, k, v, h in items], codec=codec)
    index = data.draw(st.integers(0, len(batch) - 1))
    flipped = bytearray(batch)
    flipped[index] ^= data.draw(st.integers(1, 255))
    try:
        assigned = assign(bytes(flipped), base=0)
    except (InvalidMessage, MessageTooLarge):
        return
    assert 12 <= index < 16  # only the leader epoch, which assignOffsets overwrites, may differ
    assert assigned.data == assign(batch).data


# --- validation: every error path ----------------------------------------------


def plainBatch(n=3, **kwargs):
    return encodeBatch([(b"k%d" % i, b"value-%d" % i) for i in range(n)], baseTimestamp=NOW, **kwargs)


def patch(batch, position, fmt, value, fixCrc=True):
    out = bytearray(batch)
    struct.pack_into(fmt, out, position, value)
    if fixCrc:
        struct.pack_into(">I", out, 17, crc32c(bytes(out[21:])))
    return bytes(out)


def rejects(data, match, error=InvalidMessage, **kwargs):
    with pytest.raises(error, match=match):
        assign(data, **kwargs)


def test_batch_length_below_header():
    rejects(patch(plainBatch(), 8, ">i", 48, fixCrc=False), "below the 49-byte header")


def test_batch_length_beyond_bytes_is_partial():
    batch = plainBatch()
    rejects(patch(batch, 8, ">i", len(batch), fixCrc=False), "partial record batch")


def test_batch_length_short_leaves_a_partial_second_batch():
    batch = plainBatch()
    rejects(patch(batch, 8, ">i", len(batch) - 13, fixCrc=False), "CRC-32C|partial|magic")


@pytest.mark.parametrize("cut", [1, 11, 12, 16, 17, 30, 60, 61, 62, -1])
def test_truncated(cut):
    batch = plainBatch()
    with pytest.raises(InvalidMessage):
        assign(batch[:cut])
    with pytest.raises(InvalidMessage, match="partial record batch"):
        assign(batch + batch[:cut] if cut >= 17 else batch + batch[:cut])


def test_no_batch_at_all():
    rejects(b"", "no complete message")


def test_crc_flipped_in_every_region():
    batch = plainBatch(codec=0)
    # attributes, lastOffsetDelta, timestamps, producer fields, count, records: every byte under the CRC
    for position in range(21, len(batch)):
        flipped = bytearray(batch)
        flipped[position] ^= 0x40
        rejects(bytes(flipped), "CRC-32C mismatch")
    flipped = bytearray(batch)
    flipped[18] ^= 1  # the stored crc itself
    rejects(bytes(flipped), "CRC-32C mismatch")


@pytest.mark.parametrize("codec", [1, 2, 3, 4])
def test_crc_flipped_in_compressed_records(codec):
    batch = plainBatch(codec=codec)
    flipped = bytearray(batch)
    flipped[-3] ^= 0xFF
    rejects(bytes(flipped), "CRC-32C mismatch")


def test_wrong_magic_in_later_batch_and_unknown_magic():
    batch = plainBatch()
    rejects(patch(batch, 16, ">b", 3, fixCrc=False), "^unknown magic 3$")
    rejects(patch(batch, 16, ">b", -1, fixCrc=False), "^unknown magic 255$")
    rejects(batch + patch(batch, 16, ">b", 7, fixCrc=False), "^unknown magic 7$")
    with pytest.raises(InvalidMessage, match="^unknown magic 3$"):
        producedBatches(patch(batch, 16, ">b", 3, fixCrc=False))


def test_mixed_magics():
    v0 = messages.encodeMessageSet([(b"k", b"v")])
    batch = plainBatch()
    rejects(batch + v0, "mixed magics")
    rejects(v0 + batch, "mixed magics")
    with pytest.raises(InvalidMessage, match="mixed magics"):
        producedBatches(batch + v0)
    unknownAfterV0 = v0 + patch(batch, 16, ">b", 9, fixCrc=False)
    rejects(unknownAfterV0, "unknown magic 9")


@pytest.mark.parametrize("codec", [5, 6, 7])
def test_unknown_codec(codec):
    rejects(patch(plainBatch(), 21, ">h", codec), f"unknown compression codec {codec}")


def test_control_batch_from_client():
    rejects(plainBatch(control=True), "control")


def test_log_append_time_bit_from_client():
    with pytest.raises(records.InvalidTimestamp) as caught:
        assign(plainBatch(timestampType=records.LOG_APPEND_TIME))
    assert caught.value.errorCode == 32  # Kafka 2.3: INVALID_TIMESTAMP
    assert isinstance(caught.value, InvalidMessage)


@pytest.mark.parametrize(
    "lastOffsetDelta, count, match",
    [
        (2, 2, "disagrees"),
        (1, 3, "disagrees"),
        (-1, 0, "record count 0"),
        (-2, -1, "record count -1"),
        (3, 3, "disagrees"),
    ],
)
def test_count_and_last_offset_delta(lastOffsetDelta, count, match):
    batch = patch(patch(plainBatch(), 23, ">i", lastOffsetDelta), 57, ">i", count)
    rejects(batch, match)


@pytest.mark.parametrize("codec", CODECS)
def test_count_consistent_but_wrong(codec):
    """lastOffsetDelta and count agree with each other, not with the records."""
    four = patch(patch(plainBatch(codec=codec), 23, ">i", 3), 57, ">i", 4)
    two = patch(patch(plainBatch(codec=codec), 23, ">i", 1), 57, ">i", 2)
    if codec:
        rejects(four, "overrun|disagree")
        rejects(two, "disagree|after")
    else:  # uncompressed: only checkRecords walks them; the bound count * 7 <= bytes still holds
        assert assign(four).count == 4
        rejects(four, "overrun|disagree", checkRecords=True)
        rejects(two, "after", checkRecords=True)
        rejects(patch(patch(plainBatch(codec=codec), 23, ">i", 99), 57, ">i", 100), "cannot fit")


def test_base_offset_must_be_zero():
    rejects(plainBatch(baseOffset=5), "baseOffset 0")


def test_producer_id_without_sequence():
    rejects(plainBatch(producerId=4, producerEpoch=0, baseSequence=-1), "sequence -1")
    assert assign(plainBatch(producerId=4, producerEpoch=0, baseSequence=0)).count == 3


def test_message_too_large():
    batch = plainBatch()
    assert assign(batch, maxMessageBytes=len(batch)).count == 3
    with pytest.raises(MessageTooLarge) as caught:
        assign(batch, maxMessageBytes=len(batch) - 1)
    assert caught.value.errorCode == ErrorCode.MESSAGE_SIZE_TOO_LARGE


def test_message_too_large_is_the_compressed_size():
    batch = encodeBatch([(None, b"a" * 10000)] * 10, codec=1)
    assert len(batch) < 1000
    assert assign(batch, maxMessageBytes=1000).count == 10


@pytest.mark.parametrize("codec", [1, 2, 3, 4])
def test_decompression_bomb_bounded(codec):
    batch = encodeBatch([(None, b"\x00" * (4 << 20))], codec=codec)
    assert len(batch) < 300_000
    assert assign(batch, maxExpanded=5 << 20).count == 1
    rejects(batch, "beyond", maxExpanded=1 << 20)


def test_bomb_budget_is_summed_over_the_set():
    batch = encodeBatch([(None, b"\x00" * 600_000)], codec=4)
    assert assign(batch, maxExpanded=1 << 20).count == 1
    rejects(batch + batch, "beyond", maxExpanded=1 << 20)


def rawBatch(codec, payload, count=1):
    """A v2 batch around arbitrary (compressed) record bytes, CRC right."""
    afterCrc = struct.pack(">hiqqqhii", codec, count - 1, NOW, NOW, -1, -1, -1, count) + payload
    return struct.pack(">qiib", 0, len(afterCrc) + 9, -1, 2) + struct.pack(">I", crc32c(afterCrc)) + afterCrc


@pytest.mark.parametrize(
    "codec, payload",
    [
        (1, b"\x1f\x8b not gzip at all"),
        (1, gzip.compress(b"x" * 100)[:-10]),
        (2, b"\xff\xff\xff\xff\x0f garbage"),
        (2, b"\x82SNAPPY\x00" + b"\x00\x00\x00\x01\x00\x00\x00\x01" + b"\x00\x00\x00\x50junk"),
        (3, b"\x04\x22\x4d\x18 nonsense"),
        (3, b"not an lz4 frame"),
        (4, b"\x28\xb5\x2f\xfd broken"),
        (4, b""),
    ],
)
def test_garbage_inside_compressed_batch(codec, payload):
    rejects(rawBatch(codec, payload), "cannot decompress|truncated|overrun|xerial|records|beyond")


@pytest.mark.parametrize("codec", [1, 2, 3, 4])
def test_compressed_records_that_do_not_parse(codec):
    good = records.encodeRecord(0, 0, b"k", b"v")
    for body, count, lengthWalkSees in [
        (b"\x00" * 7, 1, True),  # a record of length 0
        (good + b"\x00\x00", 1, True),  # bytes after the records
        (good, 2, True),  # fewer records than counted
        (good[:-1], 1, True),  # a truncated record
        (good + records.encodeRecord(5, 0, b"k", b"v"), 2, False),  # offsetDelta 5: seen by checkRecords only
    ]:
        batch = rawBatch(codec, records.compress(codec, body), count)
        with pytest.raises(InvalidMessage):
            assign(batch, checkRecords=True)
        if lengthWalkSees:
            with pytest.raises(InvalidMessage):
                assign(batch)
        else:
            assert assign(batch).count == count


@pytest.mark.parametrize(
    "record",
    [
        b"\x00\x00\x00" + varint(-2) + varint(-1) + varint(0),  # key length -2
        b"\x00\x00\x00" + varint(-1) + varint(-3) + varint(0),  # value length -3
        b"\x00\x00\x00" + varint(-1) + varint(-1) + varint(-1),  # header count -1
        b"\x00\x00\x00" + varint(-1) + varint(-1) + varint(1) + varint(-1) + varint(-1),  # header key null
        b"\x00\x00\x00" + varint(-1) + varint(-1) + varint(1) + varint(0) + varint(-2),  # header value -2
        b"\x00" + b"\xff" * 11 + b"\x00" + varint(-1) + varint(-1) + varint(0),  # timestamp varlong too long
        b"\x00\x00\x00" + varint(4) + b"ab" + varint(-1) + varint(0),  # key overruns the record
    ],
)
def test_record_fields_checked_with_check_records(record):
    body = varint(len(record)) + record
    rejects(rawBatch(0, body), "record|varint|overrun", checkRecords=True)
    rejects(rawBatch(1, records.compress(1, body)), "record|varint|overrun", checkRecords=True)


# --- v0/v1 sets go to messages, unchanged ------------------------------------


def test_magic0_and_magic1_sets_go_to_messages():
    v0 = messages.encodeMessageSet([(b"a", b"1"), (None, b"2")])
    assert assign(v0, base=10) == AssignedRecords(messages.assignOffsets(v0, 10, BIG, BIG).data, 2, -1)
    assert producedBatches(v0) == []
    body = b"\x01\x00" + struct.pack(">q", NOW) + struct.pack(">i", -1) + struct.pack(">i", 1) + b"x"
    v1 = struct.pack(">qiI", 0, len(body) + 4, zlib.crc32(body)) + body
    assigned = assign(v1, base=3)
    assert assigned.count == 1 and assigned.maxTimestamp == -1
    assert decodeRecords(assigned.data) == [Record(3, -1, None, b"x", [])]
    assert producedBatches(v1) == []


# --- several batches in one produced set ----------------------------------------


def test_several_batches_numbered_consecutively():
    one, two = plainBatch(3), encodeBatch([(None, b"x")] * 4, codec=2, baseTimestamp=NOW + 50)
    assigned = assign(one + two, base=100)
    assert assigned.count == 7 and assigned.maxTimestamp == NOW + 50
    assert [r.offset for r in decodeRecords(assigned.data)] == list(range(100, 107))
    assert records.readBatchHeader(assigned.data, len(one)).baseOffset == 103
    assert [b.count for b in producedBatches(one + two)] == [3, 4]


# --- reading side ----------------------------------------------------------------


def storedLog():
    """A stored slice as the broker builds it: v0 messages, a v2 batch, a gzip v0 wrapper, v2 zstd."""
    v0 = messages.assignOffsets(messages.encodeMessageSet([(b"a", b"0"), (b"b", b"1")]), 0, BIG, BIG).data
    v2 = assign(plainBatch(3), base=2).data  # offsets 2..4
    inner = messages.encodeMessageSet([(None, b"w5"), (None, b"w6")])
    wrapper = messages.assignOffsets(messages.encodeMessage(0, None, gzip.compress(inner), 1), 5, BIG, BIG).data
    zstd = assign(encodeBatch([(b"z", b"%d" % i) for i in range(4)], codec=4, baseTimestamp=NOW + 100), base=7).data
    return v0 + v2 + wrapper + zstd  # offsets 0..10


def test_decode_mixed_log():
    decoded = decodeRecords(storedLog())
    assert [r.offset for r in decoded] == list(range(11))
    assert [r.value for r in decoded] == [b"0", b"1", b"value-0", b"value-1", b"value-2", b"w5", b"w6"] + [
        b"%d" % i for i in range(4)
    ]
    assert decoded[0].timestamp == -1 and decoded[2].timestamp == NOW and decoded[7].timestamp == NOW + 100


def test_decode_ignores_partial_tail():
    log = storedLog()
    assert decodeRecords(log[:-5]) == decodeRecords(log)[:7]


def test_entry_size():
    log = storedLog()
    sizes = []
    position = 0
    while (size := entrySize(log, position)) is not None:
        sizes.append(size)
        position += size
    assert position == len(log) and len(sizes) == 5
    assert entrySize(log, len(log) - 11) is None
    assert entrySize(plainBatch()) == len(plainBatch())


def test_skip_below_mixed_log():
    log = storedLog()
    v0Size = entrySize(log, 0) + entrySize(log, entrySize(log, 0))
    v2Size = entrySize(log, v0Size)
    assert skipBelow(log, 0) == 0
    assert skipBelow(log, 1) == entrySize(log, 0)
    for offset in (2, 3, 4):
        assert skipBelow(log, offset) == v0Size  # inside the v2 batch: the batch itself
    assert skipBelow(log, 5) == v0Size + v2Size  # the wrapper (last inner offset 6)
    assert skipBelow(log, 6) == v0Size + v2Size
    assert skipBelow(log, 10) < len(log) and skipBelow(log, 11) == len(log)
    assert messages.skipBelow(log, 3) == skipBelow(log, 3)
    # a v2 batch cut before its lastOffsetDelta: the walk stops on it (the partial tail)
    assert skipBelow(log[: v0Size + 20], 4) == v0Size


def test_first_offset_at_or_after():
    log = storedLog()
    assert firstOffsetAtOrAfter(log, 0) == (2, NOW)  # v0 messages have no timestamp
    assert firstOffsetAtOrAfter(log, NOW + 1) == (7, NOW + 100)
    assert firstOffsetAtOrAfter(log, NOW + 101) is None
    lat = assign(plainBatch(2), base=20, now=NOW + 500, logAppendTime=True).data
    assert firstOffsetAtOrAfter(log + lat, NOW + 101) == (20, NOW + 500)
    batch = encodeBatch([Record(0, NOW + t, None, b"x", []) for t in (30, 10, 50, 20)])
    assert firstOffsetAtOrAfter(assign(batch, base=40).data, NOW + 40) == (42, NOW + 50)


def test_first_offset_skips_batches_unopened_by_max_timestamp():
    stored = bytearray(assign(plainBatch(2)).data)
    stored[-1] ^= 0xFF  # corrupt records: opening it would fail
    assert firstOffsetAtOrAfter(bytes(stored), NOW + 1) is None
    assert firstOffsetAtOrAfter(bytes(stored), NOW) is None  # opened, malformed, skipped


# --- down-conversion -------------------------------------------------------------


def legacyEntries(data):
    """(offset, magic, attributes, timestamp, key, value) for each entry, checking each message's CRC-32."""
    out = []
    position = 0
    while len(data) - position >= 12:
        offset, size = struct.unpack_from(">qi", data, position)
        body = data[position + 12 : position + 12 + size]
        crc, magic, attributes = struct.unpack_from(">Ibb", body)
        assert crc == zlib.crc32(body[4:])
        at = 6
        timestamp = None
        if magic == 1:
            (timestamp,) = struct.unpack_from(">q", body, at)
            at += 8
        (keySize,) = struct.unpack_from(">i", body, at)
        key = None if keySize < 0 else body[at + 4 : at + 4 + keySize]
        at += 4 + max(keySize, 0)
        (valueSize,) = struct.unpack_from(">i", body, at)
        value = None if valueSize < 0 else body[at + 4 : at + 4 + valueSize]
        assert at + 4 + max(valueSize, 0) == size
        out.append((offset, magic, attributes, timestamp, key, value))
        position += 12 + size
    assert position == len(data)
    return out


@pytest.mark.parametrize("codec", CODECS)
def test_down_convert_magic0(codec):
    items = [(None if i == 2 else b"k%d" % i, None if i == 3 else b"v%d" % i, [("h", b"x")]) for i in range(6)]
    stored = assign(encodeBatch(items, codec=codec, baseTimestamp=NOW), base=10).data
    converted = downConvert(stored, 0, 0, BIG)
    assert legacyEntries(converted) == [(10 + i, 0, 0, None, k, v) for i, (k, v, _) in enumerate(items)]
    # accepted by the 0.8 produce-side checks (CRC-32, sizes) and numbered again
    assert messages.assignOffsets(converted, 0, BIG, BIG).count == 6
    assert [(r.offset, r.key, r.value) for r in decodeRecords(converted)] == [
        (10 + i, k, v) for i, (k, v, _) in enumerate(items)
    ]


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("logAppendTime", [False, True])
def test_down_convert_magic1(codec, logAppendTime):
    items = [Record(0, NOW + 10 * i, b"k%d" % i, b"v%d" % i, []) for i in range(5)]
    stored = assign(encodeBatch(items, codec=codec), base=0, now=NOW + 777, logAppendTime=logAppendTime).data
    converted = downConvert(stored, 1, 0, BIG)
    expected = [
        (i, 1, 0x08 if logAppendTime else 0, NOW + 777 if logAppendTime else NOW + 10 * i, b"k%d" % i, b"v%d" % i)
        for i in range(5)
    ]
    assert legacyEntries(converted) == expected
    assert readWithLibrary(converted) == [(o, ts, k, v, []) for o, _, _, ts, k, v in expected]


def test_down_convert_mixed_log_and_from_offset():
    log = storedLog()
    for magic in (0, 1):
        everything = legacyEntries(downConvert(log, magic, 0, BIG))
        # v0 entries pass through unchanged (magic 0 even for a magic-1 fetch), the wrapper too
        assert [(e[0], e[1]) for e in everything] == [(0, 0), (1, 0), (2, magic), (3, magic), (4, magic), (6, 0)] + [
            (o, magic) for o in range(7, 11)
        ]
        assert downConvert(log, magic, 0, BIG).startswith(log[: entrySize(log) * 2])
        fromInside = legacyEntries(downConvert(log, magic, 3, BIG))
        assert [e[0] for e in fromInside] == [3, 4, 6, 7, 8, 9, 10]
        fromInsideZstd = legacyEntries(downConvert(log, magic, 9, BIG))
        assert [e[0] for e in fromInsideZstd] == [9, 10]
        assert downConvert(log, magic, 11, BIG) == b""


def test_down_convert_drops_partial_tail_and_skips_malformed():
    log = storedLog()
    full = legacyEntries(downConvert(log, 0, 0, BIG))
    assert legacyEntries(downConvert(log[:-3], 0, 0, BIG)) == full[:-4]
    v0Size = entrySize(log, 0) * 2
    broken = bytearray(log)
    broken[v0Size + 70] ^= 0xFF  # inside the v2 batch's records: its CRC no longer matches
    assert [e[0] for e in legacyEntries(downConvert(bytes(broken), 0, 0, BIG))] == [0, 1, 6, 7, 8, 9, 10]
    # a stored batch that inflates beyond the bound is skipped too, never raised
    bomb = assign(encodeBatch([(None, b"\x00" * 100_000)], codec=3), base=11).data
    assert [e[0] for e in legacyEntries(downConvert(log + bomb, 0, 0, 50_000))] == [e[0] for e in full]
    # garbage entry sizes end the walk
    assert downConvert(b"\x00" * 12, 0, 0, BIG) == b""


def test_down_convert_skips_control_batches():
    control = assign(plainBatch(2), base=0).data
    control = patch(control, 21, ">h", 0x20)
    assert downConvert(control, 1, 0, BIG) == b""


# --- performance (reported, not asserted tightly) ---------------------------------


def test_uncompressed_assign_does_no_per_record_work():
    """1,000 x 100 B: per-batch work only; a generous bound that a per-record Python walk (~0.3 us each) exceeds."""
    import time

    batch = encodeBatch([(None, bytes(100))] * 1000, baseTimestamp=NOW)
    best = min(_timed(time, lambda: assign(batch)) for _ in range(5))
    assert best / 1000 < 0.2e-6


def _timed(time, f):
    start = time.perf_counter()
    f()
    return time.perf_counter() - start


def test_hasProducerId():
    """Idempotent producers' batches carry a producer id; magic 0/1 sets and short data none."""
    from kafkaw.protocol.records import hasProducerId

    plain = encodeBatch([(None, b"v")])
    idempotent = encodeBatch([(None, b"v")], producerId=7, producerEpoch=0, baseSequence=0)
    assert not hasProducerId(plain)
    assert hasProducerId(idempotent)
    assert hasProducerId(plain + idempotent)  # any batch of the set
    assert not hasProducerId(messages.encodeMessageSet([(None, b"x" * 100)]))
    assert not hasProducerId(b"") and not hasProducerId(idempotent[:50])
    assert not hasProducerId(plain[:12] + b"\xff" * 60)  # a lying size stops the walk
