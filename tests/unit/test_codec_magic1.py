"""Magic-1 (Kafka 0.10) messages in produced sets: checked, then stored as magic 0.

Stock kafka-python sends magic 1 even in Produce v0; 0.8 fetchers read only
magic 0. Frames are built by hand, one field per line, and the stored bytes are
compared whole with the magic-0 frame a 0.8 producer would have sent.
"""

import gzip
import struct
import zlib

import cramjam
import pytest
from kafka.record.legacy_records import LegacyRecordBatchBuilder

from kafkaw.protocol.errors import ErrorCode, InvalidMessage, MessageTooLarge
from kafkaw.protocol.messages import Message, assignOffsets, decodeMessageSet, expandMessageSet

BIG = 10**9
TIMESTAMP = 1_700_000_000_123
XERIAL_MAGIC = b"\x82SNAPPY\x00"


def lengthAndBytes(data):
    return struct.pack(">i", -1) if data is None else struct.pack(">i", len(data)) + data


def magic1Body(key, value, attributes=0, timestamp=TIMESTAMP):
    """From magic to the end of the value: what the CRC covers."""
    return b"".join(
        [
            struct.pack(">b", 1),  # magic
            struct.pack(">b", attributes),  # attributes
            struct.pack(">q", timestamp),  # timestamp
            lengthAndBytes(key),  # key length, key
            lengthAndBytes(value),  # value length, value
        ]
    )


def magic0Body(key, value, attributes=0):
    return b"".join(
        [
            struct.pack(">b", 0),  # magic
            struct.pack(">b", attributes),  # attributes
            lengthAndBytes(key),  # key length, key
            lengthAndBytes(value),  # value length, value
        ]
    )


def entry(offset, body, crc=None):
    return b"".join(
        [
            struct.pack(">q", offset),  # offset
            struct.pack(">i", 4 + len(body)),  # message size
            struct.pack(">I", zlib.crc32(body) if crc is None else crc),  # CRC
            body,
        ]
    )


def magic1Set(pairs):
    """Inner messages as a 0.10 producer writes them: relative offsets 0, 1, ..."""
    return b"".join(entry(i, magic1Body(k, v, timestamp=TIMESTAMP + i)) for i, (k, v) in enumerate(pairs))


def magic0Set(offset, pairs):
    return b"".join(entry(offset + i, magic0Body(k, v)) for i, (k, v) in enumerate(pairs))


def gzipCompress(data):
    deflater = zlib.compressobj(9, zlib.DEFLATED, 31)
    return deflater.compress(data) + deflater.flush()


def rawSnappy(data):
    return bytes(cramjam.snappy.compress_raw(data))


def xerialSnappy(data):
    block = rawSnappy(data)
    return XERIAL_MAGIC + struct.pack(">ii", 1, 1) + struct.pack(">i", len(block)) + block


def unsnappy(data):
    if data.startswith(XERIAL_MAGIC):
        data = data[20:]  # header 16, one block size 4
    return bytes(cramjam.snappy.decompress_raw(data))


# --- plain messages --------------------------------------------------------


def test_keyedMessageFieldByField():
    produced = b"".join(
        [
            struct.pack(">q", 0),  # offset (any)
            struct.pack(">i", 4 + 1 + 1 + 8 + 4 + 3 + 4 + 5),  # message size
            struct.pack(">I", zlib.crc32(magic1Body(b"key", b"value"))),  # CRC
            struct.pack(">b", 1),  # magic
            struct.pack(">b", 0),  # attributes
            struct.pack(">q", TIMESTAMP),  # timestamp
            struct.pack(">i", 3),  # key length
            b"key",  # key
            struct.pack(">i", 5),  # value length
            b"value",  # value
        ]
    )
    body = b"".join(
        [
            struct.pack(">b", 0),  # magic
            struct.pack(">b", 0),  # attributes
            struct.pack(">i", 3),  # key length
            b"key",  # key
            struct.pack(">i", 5),  # value length
            b"value",  # value
        ]
    )
    stored = b"".join(
        [
            struct.pack(">q", 42),  # offset
            struct.pack(">i", 4 + 1 + 1 + 4 + 3 + 4 + 5),  # message size: 8 bytes less
            struct.pack(">I", zlib.crc32(body)),  # CRC, recomputed
            body,
        ]
    )
    assigned = assignOffsets(produced, 42, BIG, BIG)
    assert assigned.count == 1
    assert assigned.data == stored


@pytest.mark.parametrize(
    "key, value",
    [(None, b"value"), (b"k", None), (None, None), (b"", b""), (b"key", b"v" * 1000)],
    ids=["null-key", "null-value", "both-null", "both-empty", "keyed-long"],
)
def test_plainMessageStoredAsMagicZero(key, value):
    assigned = assignOffsets(entry(0, magic1Body(key, value)), 7, BIG, BIG)
    assert assigned.data == entry(7, magic0Body(key, value))


def test_timestampTypeBitCleared():
    """Bit 3 (log-append time) means nothing in magic 0, where it is undefined."""
    assigned = assignOffsets(entry(0, magic1Body(b"k", b"v", attributes=0x08)), 0, BIG, BIG)
    assert assigned.data == entry(0, magic0Body(b"k", b"v"))


def test_magicOneAndMagicZeroMixed():
    pairs = [(b"a", b"zero"), (None, b"one"), (b"c", b"two"), (None, b"three")]
    produced = b"".join(
        entry(99, (magic1Body if i % 2 else magic0Body)(k, v)) for i, (k, v) in enumerate(pairs)
    )
    assigned = assignOffsets(produced, 10, BIG, BIG)
    assert assigned.count == 4
    assert assigned.data == magic0Set(10, pairs)
    # What is stored is plain magic 0: a second pass keeps it as it is.
    assert assignOffsets(assigned.data, 10, BIG, BIG) == assigned


def test_partialTrailingMagicOneMessageDropped():
    produced = entry(0, magic1Body(b"k", b"v")) + entry(0, magic1Body(b"k", b"cut"))[:-1]
    assert assignOffsets(produced, 3, BIG, BIG).data == entry(3, magic0Body(b"k", b"v"))


def test_kafkaPythonMagicOneBatch():
    """The bytes kafka-python's own builder writes for magic 1, plain and gzip."""
    pairs = [(b"k0", b"v0"), (None, b"v1"), (b"k2", None)]
    for codec in (0, 1):
        builder = LegacyRecordBatchBuilder(magic=1, compression_type=codec, batch_size=1 << 20)
        for i, (key, value) in enumerate(pairs):
            builder.append(i, timestamp=TIMESTAMP + i, key=key, value=value)
        assigned = assignOffsets(bytes(builder.build()), 500, BIG, BIG)
        assert assigned.count == 3
        assert expandMessageSet(assigned.data) == [Message(500 + i, k, v) for i, (k, v) in enumerate(pairs)]
        assert {m.attributes for m in decodeMessageSet(assigned.data)} == {codec}


# --- checks ------------------------------------------------------------------


@pytest.mark.parametrize("magic", [2, 3, 127, -1, -128])
def test_otherMagicsRejected(magic):
    body = struct.pack(">b", magic) + magic1Body(b"k", b"v")[1:]
    with pytest.raises(InvalidMessage, match="magic") as e:
        assignOffsets(entry(0, body), 0, BIG, BIG)
    assert e.value.errorCode == ErrorCode.INVALID_MESSAGE == 2


def test_badCrc():
    body = magic1Body(b"k", b"v")
    with pytest.raises(InvalidMessage, match="CRC"):
        assignOffsets(entry(0, body, zlib.crc32(body) ^ 1), 0, BIG, BIG)


@pytest.mark.parametrize("attributes", [0x04, 0x10, 0x20, 0x40, -0x80, 0x0C])
def test_attributeBitsMagicOneDoesNotDefine(attributes):
    with pytest.raises(InvalidMessage, match="attributes"):
        assignOffsets(entry(0, magic1Body(b"k", b"v", attributes=attributes)), 0, BIG, BIG)


@pytest.mark.parametrize(
    "body",
    [
        # a magic-0 layout under magic 1: no room for the timestamp
        struct.pack(">bb", 1, 0) + lengthAndBytes(b"k") + lengthAndBytes(b"v"),
        # timestamp, then only part of the key length
        struct.pack(">bbq", 1, 0, TIMESTAMP) + b"\xff\xff",
        # key longer than the message
        struct.pack(">bbq", 1, 0, TIMESTAMP) + struct.pack(">i", 50) + b"k" + lengthAndBytes(b"v"),
        # key length -2
        struct.pack(">bbq", 1, 0, TIMESTAMP) + struct.pack(">i", -2) + lengthAndBytes(b"v"),
        # value length shorter than what follows
        struct.pack(">bbq", 1, 0, TIMESTAMP) + lengthAndBytes(None) + struct.pack(">i", 1) + b"vv",
        # null value followed by extra bytes
        struct.pack(">bbq", 1, 0, TIMESTAMP) + lengthAndBytes(None) + lengthAndBytes(None) + b"x",
    ],
)
def test_keyAndValueMustFillTheMessage(body):
    with pytest.raises(InvalidMessage):
        assignOffsets(entry(0, body), 0, BIG, BIG)


def test_limitIsOnTheStoredForm():
    produced = entry(0, magic1Body(None, b"x" * 100))
    stored = len(entry(0, magic0Body(None, b"x" * 100)))
    assert (len(produced), stored) == (12 + 22 + 100, 12 + 14 + 100)
    assert assignOffsets(produced, 0, stored, BIG).count == 1  # exactly the limit, once converted
    with pytest.raises(MessageTooLarge) as e:
        assignOffsets(produced, 0, stored - 1, BIG)
    assert e.value.errorCode == ErrorCode.MESSAGE_SIZE_TOO_LARGE == 10


# --- compressed wrappers -----------------------------------------------------

INNER = [(b"k0", b"v0"), (None, b"v1"), (b"k2", None), (None, None)]


def magic1Wrapper(codec, compressed, key=None, attributes=None):
    """As 0.10 producers send it: offset of the last relative inner offset."""
    return entry(len(INNER) - 1, magic1Body(key, compressed, codec if attributes is None else attributes))


@pytest.mark.parametrize(
    "codec, compress, decompress, prefix",
    [
        (1, gzipCompress, gzip.decompress, b"\x1f\x8b"),
        (2, rawSnappy, unsnappy, None),
        (2, xerialSnappy, unsnappy, XERIAL_MAGIC),
    ],
    ids=["gzip", "snappy-raw", "snappy-xerial"],
)
def test_wrapperConvertedWithItsInnerMessages(codec, compress, decompress, prefix):
    produced = magic1Wrapper(codec, compress(magic1Set(INNER)))
    assigned = assignOffsets(produced, 100, BIG, BIG)
    assert assigned.count == 4
    (stored,) = decodeMessageSet(assigned.data)
    assert (stored.offset, stored.attributes, stored.key) == (103, codec, None)
    assert assigned.data[12 + 4 : 12 + 6] == b"\x00" + bytes([codec])  # magic 0, attributes
    if prefix is None:
        assert not stored.value.startswith(XERIAL_MAGIC)  # raw snappy stays raw
    else:
        assert stored.value.startswith(prefix)
    # Inner messages: magic 0, no timestamp, absolute offsets.
    assert decompress(stored.value) == magic0Set(100, INNER)
    assert assignOffsets(assigned.data, 100, BIG, BIG) == assigned


def test_wrapperKeyKeptAndTimestampTypeCleared():
    produced = magic1Wrapper(1, gzipCompress(magic1Set(INNER)), key=b"wk", attributes=0x09)
    (stored,) = decodeMessageSet(assignOffsets(produced, 0, BIG, BIG).data)
    assert (stored.attributes, stored.key) == (1, b"wk")


def test_wrapperLimitIsOnTheStoredForm():
    produced = magic1Wrapper(1, gzipCompress(magic1Set(INNER)))
    assert assignOffsets(produced, 0, len(produced) - 8, BIG).count == 4
    with pytest.raises(MessageTooLarge):
        assignOffsets(produced, 0, len(produced) - 9, BIG)


def test_wrapperAndPlainMagicOneMixed():
    produced = b"".join(
        [
            entry(0, magic1Body(b"p", b"first")),
            magic1Wrapper(2, rawSnappy(magic1Set(INNER))),
            entry(0, magic0Body(None, b"last")),
        ]
    )
    assigned = assignOffsets(produced, 20, BIG, BIG)
    assert assigned.count == 6
    assert [(m.offset, m.attributes) for m in decodeMessageSet(assigned.data)] == [(20, 0), (24, 2), (25, 0)]
    assert expandMessageSet(assigned.data) == [
        Message(20, b"p", b"first"),
        *(Message(21 + i, k, v) for i, (k, v) in enumerate(INNER)),
        Message(25, None, b"last"),
    ]


@pytest.mark.parametrize(
    "wrapperMagic, inner",
    [(1, magic0Set(0, INNER)), (0, magic1Set(INNER)), (1, magic1Set(INNER[:2]) + magic0Set(2, INNER[2:]))],
    ids=["magic0-in-magic1", "magic1-in-magic0", "mixed-in-magic1"],
)
def test_innerMagicMustBeTheWrappers(wrapperMagic, inner):
    body = (magic1Body if wrapperMagic else magic0Body)(None, gzipCompress(inner), 1)
    with pytest.raises(InvalidMessage, match="wrapper"):
        assignOffsets(entry(0, body), 0, BIG, BIG)


def test_nestedWrapperRejected():
    innermost = magic1Wrapper(1, gzipCompress(magic1Set(INNER)))
    with pytest.raises(InvalidMessage, match="inside a compressed"):
        assignOffsets(magic1Wrapper(1, gzipCompress(innermost)), 0, BIG, BIG)


def test_lz4Rejected():
    with pytest.raises(InvalidMessage, match="codec 3"):
        assignOffsets(magic1Wrapper(3, b"\x04\x22\x4d\x18"), 0, BIG, BIG)


def test_badInnerCrc():
    body = magic1Body(b"k", b"v")
    inner = entry(0, body, zlib.crc32(body) ^ 0xFFFFFFFF)
    with pytest.raises(InvalidMessage, match="CRC"):
        assignOffsets(magic1Wrapper(1, gzipCompress(inner)), 0, BIG, BIG)
