"""ApiVersions (key 18): byte-level requests and answers, through the gateway and the pure codec."""

import struct

import pytest
from twisted.internet import task
from twisted.logger import capturedLogs, formatEvent

from kafkaw.broker.gateway import Broker, Gateway
from kafkaw.protocol import api, apiversions, schema
from kafkaw.protocol.apiversions import ApiVersion
from kafkaw.protocol.errors import CodecError
from kafkaw.protocol.primitives import Reader
from kafkaw.tap import Options, makeService
from tests.unit.helpers import FakeConnection


def connect(strict08=False):
    """A gateway on a broker with no cluster: ApiVersions and refusals need none."""
    broker = Broker(cluster=None, clock=task.Clock(), strict08=strict08)
    connection = FakeConnection()
    return broker, Gateway(broker, connection), connection


def answer(frame, strict08=False):
    """Send one request frame; return (response bytes or None, connection)."""
    _, gateway, connection = connect(strict08)
    gateway.requestReceived(frame)
    assert len(connection.responses) <= 1
    return (connection.responses[0] if connection.responses else None), connection


# --- hand-built request frames (without the 4-byte size prefix) -------------

# ApiVersions v0, as librdkafka with broker.version.fallback or kafkajs (after
# falling back) send it: the classic request header v1 and an empty body.
V0_FRAME = bytes.fromhex(
    "0012"  # api_key 18 (ApiVersions)
    "0000"  # api_version 0
    "00000007"  # correlation_id 7
    "0003" + b"abc".hex()  # client_id: int16 length 3, "abc"
)

# ApiVersions v3 as librdkafka sends it first: request header v2 = the classic
# header (client_id still an int16 string) + tagged fields; then the body:
# client_software_name and client_software_version as compact strings
# (unsigned varint length+1, then bytes), then the body's tagged fields.
V3_FRAME = bytes.fromhex(
    "0012"  # api_key 18
    "0003"  # api_version 3
    "0000002a"  # correlation_id 42
    "0007" + b"rdkafka".hex()  # client_id "rdkafka" (int16 length, not compact)
    + "00"  # header tagged fields: count 0
    + "0b" + b"librdkafka".hex()  # client_software_name: length 10 + 1 = 0x0b
    + "06" + b"2.0.2".hex()  # client_software_version: length 5 + 1 = 6
    + "00"  # body tagged fields: count 0
)

# The same v3 request, but the header carries one tagged field (tag 5, 3 bytes)
# and the body ends in a tagged field of a future version: both must be skipped.
V3_TAGGED_FRAME = bytes.fromhex(
    "0012" "0003" "0000002b"
    "0007" + b"rdkafka".hex()
    + "01"  # header tagged fields: count 1
    + "05" "03" "aabbcc"  # tag 5, size 3, data
    + "0b" + b"librdkafka".hex()
    + "06" + b"2.0.2".hex()
    + "01" "00" "02" "ffff"  # body tagged fields: count 1; tag 0, size 2, data
)

# The response body as it must be for the core dispatch table: after the
# correlation id, error int16, then [api_key, min_version, max_version] int16s.
CORE_LIST = bytes.fromhex(
    "00000005"  # 5 entries, sorted by key
    "0000" "0000" "0000"  # Produce 0..0
    "0001" "0000" "0000"  # Fetch 0..0
    "0002" "0000" "0000"  # ListOffsets 0..0
    "0003" "0000" "0000"  # Metadata 0..0
    "0012" "0000" "0000"  # ApiVersions 0..0
)
CORE_TABLE = {(0, 0): None, (1, 0): None, (2, 0): None, (3, 0): None, (18, 0): None}


def decodeFrame(frame):
    """(RequestHeader, ApiVersionsRequest) of a whole ApiVersions request frame, any version.

    Read as the gateway reads it: the classic header, then L{apiversions.decodeRequest}.
    Raises L{CodecError} only when the classic header itself is unreadable, or is not ApiVersions'.
    """
    header, reader = api.decodeHeader(frame)
    if header.apiKey != apiversions.API_VERSIONS:
        raise CodecError(f"api key {header.apiKey} is not ApiVersions")
    return header, apiversions.decodeRequest(reader)


def decodeAnswer(frame):
    """(correlationId, error, [ApiVersion]) of an ApiVersions answer in the v0 format, by the schema codec."""
    correlationId, answer = schema.decodeResponse(apiversions.API_VERSIONS, 0, frame)
    return correlationId, answer.errorCode, [ApiVersion(k.index, k.minVersion, k.maxVersion) for k in answer.apiKeys]


def encodeUnsignedVarint(value):
    """Kafka's unsigned varint, written the way L{apiversions.readUnsignedVarint} reads it."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def listBytes(handlers):
    served = apiversions.servedVersions(handlers)
    return struct.pack(">i", len(served)) + b"".join(struct.pack(">hhh", *v) for v in served)


# --- the pure codec ----------------------------------------------------------


def test_encodeV0ResponseBytes():
    response = b"".join(apiversions.encodeResponse(7, 0, CORE_TABLE))
    assert response == bytes.fromhex("00000007" "0000") + CORE_LIST


def test_encodeUnsupportedVersionBytes():
    """Error 35 (0x0023) plus the same list, still in the v0 format: no tagged fields, no throttle time."""
    response = b"".join(apiversions.encodeResponse(42, 3, CORE_TABLE))
    assert response == bytes.fromhex("0000002a" "0023") + CORE_LIST


def test_decodeV3Frame():
    header, request = decodeFrame(V3_FRAME)
    assert (header.apiKey, header.apiVersion, header.correlationId, header.clientId) == (18, 3, 42, "rdkafka")
    assert request == ("librdkafka", "2.0.2")


def test_decodeV3FrameSkipsTaggedFields():
    header, request = decodeFrame(V3_TAGGED_FRAME)
    assert header.correlationId == 43
    assert request == ("librdkafka", "2.0.2")


def test_decodeV0Frame():
    header, request = decodeFrame(V0_FRAME)
    assert (header.apiVersion, header.correlationId, header.clientId) == (0, 7, "abc")
    assert request == (None, None)


@pytest.mark.parametrize(
    "body",
    [
        b"\x00",  # header tagged fields only (no body at all)
        b"\x00\x7f",  # name claims 126 bytes that are not there
        b"\x05",  # 5 tagged fields announced, none there
        b"\xff\xff\xff\xff\xff\xff",  # a varint that never ends
        b"\x00\x03\xff\xfe\x01",  # a name that is not UTF-8
    ],
)
def test_decodeBadBodyIsTolerated(body):
    header = V3_FRAME[: 2 + 2 + 4 + 2 + 7]
    _, request = decodeFrame(header + body)
    assert request == (None, None)


def test_decodeFrameNeedsTheClassicHeader():
    with pytest.raises(CodecError):
        decodeFrame(V0_FRAME[:7])  # correlation id cut short
    with pytest.raises(CodecError):
        decodeFrame(b"\x00\x03" + V0_FRAME[2:])  # a Metadata request


@pytest.mark.parametrize("value, encoded", [(0, "00"), (1, "01"), (127, "7f"), (128, "8001"), (300, "ac02"), (2**31, "8080808008")])
def test_unsignedVarint(value, encoded):
    assert encodeUnsignedVarint(value).hex() == encoded
    assert apiversions.readUnsignedVarint(Reader(bytes.fromhex(encoded))) == value


def test_servedVersionsRanges():
    table = {(3, 0): 1, (3, 1): 1, (3, 2): 1, (0, 0): 1, (18, 0): 1}
    assert apiversions.servedVersions(table) == [ApiVersion(0, 0, 0), ApiVersion(3, 0, 2), ApiVersion(18, 0, 0)]
    with pytest.raises(ValueError):
        apiversions.servedVersions({(1, 0): 1, (1, 2): 1})  # a hole cannot be said as min..max


def test_decodeResponseRoundTrip():
    response = b"".join(apiversions.encodeResponse(1, 9, CORE_TABLE))
    assert decodeAnswer(response) == (1, 35, apiversions.servedVersions(CORE_TABLE))


# --- through the gateway -----------------------------------------------------


def test_listEqualsTheDispatchTable():
    """What ApiVersions announces is exactly the (key, version) pairs the gateway dispatches on."""
    broker, gateway, connection = connect()
    gateway.requestReceived(V0_FRAME)
    _, error, served = decodeAnswer(connection.responses[0])
    assert error == 0
    announced = {(v.apiKey, version) for v in served for version in range(v.minVersion, v.maxVersion + 1)}
    assert announced == set(broker.handlers)
    # Kafka 2.3.0's versions of every API served (clients infer the release from them):
    assert {v.apiKey: (v.minVersion, v.maxVersion) for v in served} == {
        0: (0, 7), 1: (0, 11), 2: (0, 5), 3: (0, 8), 17: (0, 1), 18: (0, 2), 19: (0, 3), 20: (0, 3), 22: (0, 1), 32: (0, 2),
        29: (0, 1), 30: (0, 1), 31: (0, 1), 36: (0, 1), 37: (0, 1), 50: (0, 0), 51: (0, 0),
    }


def test_gatewayV0Bytes():
    broker, gateway, connection = connect()
    gateway.requestReceived(V0_FRAME)
    assert connection.responses == [bytes.fromhex("00000007" "0000") + listBytes(broker.handlers)]
    assert not connection.closed


@pytest.mark.parametrize("frame, correlationId", [(V3_FRAME, 42), (V3_TAGGED_FRAME, 43)])
def test_gatewayV3FlexibleRequestGetsError35(frame, correlationId):
    broker, gateway, connection = connect()
    gateway.requestReceived(frame)
    assert connection.responses == [struct.pack(">ih", correlationId, 35) + listBytes(broker.handlers)]
    assert not connection.closed


@pytest.mark.parametrize("version", [1, 2])
def test_gatewayV1AndV2AddTheThrottleTime(version):
    broker, gateway, connection = connect()
    gateway.requestReceived(struct.pack(">hhi", 18, version, 99) + b"\x00\x01x")
    assert connection.responses == [struct.pack(">ih", 99, 0) + listBytes(broker.handlers) + struct.pack(">i", 0)]


@pytest.mark.parametrize("version", [4, 127])
def test_gatewayOtherVersionsGetError35(version):
    # v4 is what kafka-python 3 sends first (a v3-style body).
    body = bytes.fromhex("00" "0d") + b"kafka-python" + bytes.fromhex("07") + b"3.0.12" + b"\x00"
    frame = struct.pack(">hhi", 18, version, 99) + b"\x00\x01x" + body
    response, connection = answer(frame)
    assert response[:6] == struct.pack(">ih", 99, 35)
    assert not connection.closed


def test_gatewayAnswersInRequestOrder():
    """A client that fell back sends v0 after v3 on the same connection: answers come in order."""
    broker, gateway, connection = connect()
    gateway.requestReceived(V3_FRAME)
    gateway.requestReceived(V0_FRAME)
    assert [r[:6] for r in connection.responses] == [struct.pack(">ih", 42, 35), struct.pack(">ih", 7, 0)]


def test_gatewayUndecodableHeaderCloses():
    response, connection = answer(V0_FRAME[:9])  # client id cut short
    assert response is None and connection.closed


@pytest.mark.parametrize("frame", [V0_FRAME, V3_FRAME])
def test_strictModeClosesOnApiVersions(frame):
    """--strict-0.8: exactly 0.8.0, which closes the connection on key 18, any version."""
    with capturedLogs() as events:
        response, connection = answer(frame, strict08=True)
    assert response is None
    assert connection.closed
    assert any("api key 18 (ApiVersions)" in formatEvent(e) for e in events)


def test_strictModeServesNoApiVersions():
    broker, _, _ = connect(strict08=True)
    assert {key for key, _ in broker.handlers} == {0, 1, 2, 3}
    assert broker.anyVersionHandlers == {}


@pytest.mark.parametrize(
    "apiKey, version, name",
    [(10, 0, "FindCoordinator"), (10, 3, "FindCoordinator"), (11, 0, "JoinGroup"), (8, 2, "OffsetCommit"), (9, 1, "OffsetFetch"), (3, 9, "Metadata"), (0, 8, "Produce"), (250, 0, "unknown")],
)
def test_unservedRequestsClose(apiKey, version, name):
    """Unserved keys and versions close the connection, logging the key: here, on a broker
    without a group coordinator, the group APIs too; and versions past Kafka 2.3.0's."""
    frame = struct.pack(">hhi", apiKey, version, 5) + b"\x00\x01x" + b"\x00" * 16
    with capturedLogs() as events:
        response, connection = answer(frame)
    assert response is None
    assert connection.closed
    lines = [formatEvent(e) for e in events]
    assert any(f"api key {apiKey} ({name}) version {version}" in line for line in lines), lines


# --- the twistd option ---------------------------------------------------------


def brokerOf(args, tmp_path):
    options = Options()
    options.parseOptions(["--storage", "memory", "--data-dir", str(tmp_path), "--listen", "tcp:0:interface=127.0.0.1", *args])
    service = makeService(options)
    # every listener shares one (the retention timer is no listener)
    [broker] = {listener.factory.broker for listener in service if hasattr(listener, "factory")}
    return broker


def test_optionDefaultAnswersApiVersions(tmp_path):
    broker = brokerOf([], tmp_path)
    assert (18, 0) in broker.handlers and 18 in broker.anyVersionHandlers
    # twistd kafkaw has a group coordinator: the group APIs are served, at Kafka 2.3.0's versions.
    served = {(v.apiKey, v.minVersion, v.maxVersion) for v in apiversions.servedVersions(broker.handlers)}
    assert {(10, 0, 2), (11, 0, 5), (14, 0, 3), (12, 0, 3), (13, 0, 2), (8, 0, 7), (9, 0, 5), (15, 0, 3), (16, 0, 2), (42, 0, 1)} <= served


def test_optionStrict08(tmp_path):
    broker = brokerOf(["--strict-0.8"], tmp_path)
    assert (18, 0) not in broker.handlers and 18 not in broker.anyVersionHandlers


def test_everyFlexibleVersionListedIsEncodedAndDecoded():
    """ApiVersions never lists a flexible version the codec cannot read and write:
    each one's default request and response go through a round trip."""
    from kafkaw.protocol import definitions, schema
    from kafkaw.protocol.primitives import Reader

    broker, _, _ = connect()
    flexible = [(key, version) for key, version in broker.handlers if key in definitions.APIS and definitions.APIS[key].isFlexible(version)]
    assert sorted(flexible) == [(50, 0), (51, 0)]
    for key, version in flexible:
        api = definitions.APIS[key]
        frame = schema.encodeRequest(key, version, 5, "c", api.request.type())
        header = schema.encodeRequestHeader(key, version, 5, "c")
        assert schema.decodeRequestBody(key, version, Reader(frame, len(header))) == api.request.type()
        response = b"".join(schema.encodeResponse(key, version, 5, api.response.type()))
        assert schema.decodeResponse(key, version, response) == (5, api.response.type())
