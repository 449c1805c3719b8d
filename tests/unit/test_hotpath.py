"""The hand-tuned hot paths of the codec: kafkaw.protocol.hotpath writes
exactly the bytes of the generic codec (kafkaw.protocol.schema), for every
version it covers, and a hand-built golden frame; the request header's
one-unpack read answers as field-by-field reads do."""

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kafkaw.protocol import api, hotpath, schema
from kafkaw.protocol.api import ApiKey
from kafkaw.protocol.errors import CodecError
from kafkaw.protocol.primitives import Reader

INT16, INT32, INT64 = (-(2**15), 2**15 - 1), (-(2**31), 2**31 - 1), (-(2**63), 2**63 - 1)

partitions = st.lists(
    st.tuples(st.integers(*INT32), st.integers(*INT16), st.integers(*INT64), st.integers(*INT64), st.integers(*INT64)),
    max_size=4,
)
topics = st.lists(st.tuples(st.text(max_size=20), partitions), max_size=4)


def generic(version, correlationId, answers):
    names = ("partitionIndex", "errorCode", "baseOffset", "logAppendTimeMs", "logStartOffset")
    value = {"responses": [
        {"name": name, "partitions": [dict(zip(names, partition)) for partition in results]} for name, results in answers
    ]}
    return b"".join(schema.encodeResponse(ApiKey.PRODUCE, version, correlationId, value))


@given(st.sampled_from(hotpath.PRODUCE_RESPONSE_VERSIONS), st.integers(*INT32), topics)
def test_produceResponseAsGeneric(version, correlationId, answers):
    answers = [(name, [list(p) for p in results]) for name, results in answers]
    assert b"".join(hotpath.encodeProduceResponse(version, correlationId, answers)) == generic(version, correlationId, answers)


def test_produceResponseGolden():
    """Produce response v5, from the protocol guide's field list."""
    expected = b"".join([
        struct.pack(">i", 7),  # correlation id
        struct.pack(">i", 1),  # responses: 1 topic
        struct.pack(">h", 5) + b"small",  # name
        struct.pack(">i", 1),  # partitions: 1
        struct.pack(">i", 3),  # partition index
        struct.pack(">h", 0),  # error code
        struct.pack(">q", 1000),  # base offset
        struct.pack(">q", -1),  # log append time (v2+)
        struct.pack(">q", 10),  # log start offset (v5+)
        struct.pack(">i", 0),  # throttle time (v1+)
    ])
    assert hotpath.encodeProduceResponse(5, 7, [("small", [[3, 0, 1000, -1, 10]])]) == [expected]


def test_produceResponseV0LeavesLaterFieldsOut():
    expected = struct.pack(">iih5siihq", 1, 1, 5, b"small", 1, 0, 0, 42)
    assert hotpath.encodeProduceResponse(0, 1, [("small", [[0, 0, 42, -1, 0]])]) == [expected]


def readHeaderSlowly(frame):
    """The request header read field by field, as the reader does for a short or malformed one."""
    reader = Reader(frame)
    return (reader.int16(), reader.int16(), reader.int32(), reader.string()), reader.position


@given(st.binary(max_size=16) | st.builds(
    lambda length, client, rest: struct.pack(">hhih", 0, 3, 9, length) + client + rest,
    st.integers(-3, 12), st.binary(max_size=12), st.binary(max_size=4),
))
def test_requestHeaderAsReader(frame):
    """decodeHeader's one-unpack path answers as the field-by-field reads do,
    errors included (cut short, negative length, bad UTF-8)."""
    try:
        expected = readHeaderSlowly(frame)
    except CodecError:
        with pytest.raises(CodecError):
            api.decodeHeader(frame)
        return
    header, reader = api.decodeHeader(frame)
    assert (tuple(header), reader.position) == expected
