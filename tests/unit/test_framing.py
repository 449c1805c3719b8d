"""The size-prefixed Framer: any chunking, bad sizes caught early, bounded memory;
and how the TCP and WebSocket transports serve what precedes a bad size prefix."""

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import task
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, capturedLogs

from kafkaw.broker.gateway import Broker
from kafkaw.broker.services import ClusterService
from kafkaw.protocol.framing import Framer, FrameTooLarge, frame
from kafkaw.protocol.messages import decodeMessageSet, encodeMessageSet
from kafkaw.storage.memory import MemoryStore
from kafkaw.transport.tcp import KafkaProtocol
from tests.unit.helpers import Gate, correlationId, metadataRequest, parseProduceResponse, produceRequest, responseFrames
from tests.unit.test_websocket import WebSocketPair, oneResponse


def prefixed(payload):
    return struct.pack(">i", len(payload)) + payload  # size, payload


def test_frameHelper():
    assert frame(b"abc") == b"\x00\x00\x00\x03abc"
    assert frame(b"") == b"\x00\x00\x00\x00"


def test_oneFrameInOneChunk():
    framer = Framer(100)
    assert framer.feed(prefixed(b"hello")) == [b"hello"]
    assert framer.buffered == 0


def test_byteByByte():
    stream = prefixed(b"first") + prefixed(b"") + prefixed(b"third!")
    framer = Framer(100)
    seen = []
    for i in range(len(stream)):
        frames = framer.feed(stream[i : i + 1])
        if frames:
            seen.append((i, frames))
    # Each frame is returned exactly when its last byte arrives.
    assert seen == [(8, [b"first"]), (12, [b""]), (22, [b"third!"])]
    assert framer.buffered == 0


def test_bufferedCountsHeldBytes():
    framer = Framer(100)
    assert framer.feed(b"\x00\x00") == []
    assert framer.buffered == 2
    assert framer.feed(b"\x00\x05ab") == []
    assert framer.buffered == 6
    assert framer.feed(b"cde\x00") == [b"abcde"]
    assert framer.buffered == 1


def test_severalFramesInOneChunk():
    framer = Framer(100)
    chunk = prefixed(b"a") + prefixed(b"bb") + prefixed(b"ccc") + prefixed(b"dddd")[:6]
    assert framer.feed(chunk) == [b"a", b"bb", b"ccc"]
    assert framer.buffered == 6
    assert framer.feed(b"dd") == [b"dddd"]
    assert framer.buffered == 0


def test_zeroLengthFrames():
    framer = Framer(0)
    assert framer.feed(b"\x00" * 12) == [b"", b"", b""]
    assert framer.buffered == 0


def test_frameOfExactlyTheMaximum():
    framer = Framer(10)
    assert framer.feed(prefixed(b"0123456789")) == [b"0123456789"]


@pytest.mark.parametrize("size", [-1, -(2**31), 11, 2**31 - 1])
def test_badSizeRaisesBeforeTheBody(size):
    framer = Framer(10)
    prefix = struct.pack(">i", size)
    assert framer.feed(prefix[:3]) == []  # three bytes say nothing yet
    with pytest.raises(FrameTooLarge) as e:
        framer.feed(prefix[3:])  # the fourth byte completes the prefix: no body sent
    assert (e.value.size, e.value.maximum, e.value.frames) == (size, 10, [])


def test_badSizeAfterGoodFrames():
    framer = Framer(10)
    assert framer.feed(prefixed(b"ok")) == [b"ok"]
    with pytest.raises(FrameTooLarge):
        framer.feed(struct.pack(">i", 11))


@pytest.mark.parametrize("size", [-1, 11])
def test_framesBeforeABadSizeComeWithTheError(size):
    framer = Framer(10)
    assert framer.feed(prefixed(b"first")[:6]) == []  # a frame begun in an earlier chunk
    with pytest.raises(FrameTooLarge) as e:
        framer.feed(b"rst" + prefixed(b"") + prefixed(b"third") + struct.pack(">i", size) + b"junk")
    assert e.value.frames == [b"first", b"", b"third"]
    assert e.value.size == size
    assert framer.buffered == 0


def test_nothingIsFramedPastABadSize():
    """The stream cannot be re-synchronised: later bytes are refused, and not kept."""
    framer = Framer(10)
    with pytest.raises(FrameTooLarge):
        framer.feed(struct.pack(">i", 11))
    for chunk in [prefixed(b"ok"), b"\x00" * 100]:
        with pytest.raises(FrameTooLarge) as e:
            framer.feed(chunk)
        assert (e.value.size, e.value.frames) == (11, [])
        assert framer.buffered == 0


def test_bufferedStaysBounded():
    """Feeding large frames in small chunks never holds more than one frame."""
    maximum = 10_000
    framer = Framer(maximum)
    stream = b"".join(prefixed(bytes([i]) * maximum) for i in range(5))
    frames, peak = [], 0
    for start in range(0, len(stream), 777):
        frames.extend(framer.feed(stream[start : start + 777]))
        peak = max(peak, framer.buffered)
    assert frames == [bytes([i]) * maximum for i in range(5)]
    assert peak < 4 + maximum
    assert framer.buffered == 0


@settings(max_examples=300, deadline=None)
@given(
    payloads=st.lists(st.binary(max_size=50), max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=500), max_size=20),
)
def test_anyChunkingGivesTheSameFrames(payloads, cuts):
    stream = b"".join(prefixed(p) for p in payloads)
    points = sorted({min(c, len(stream)) for c in cuts} | {0, len(stream)})
    framer = Framer(50)
    frames = []
    for start, end in zip(points, points[1:]):
        frames.extend(framer.feed(stream[start:end]))
        assert framer.buffered < 4 + 50  # at most one partial frame is held
    assert frames == payloads
    assert framer.buffered == 0


# --- the transports: good requests first, then one close and one log line --


def brokerAndStore():
    clock, store = task.Clock(), MemoryStore()
    return Broker(ClusterService(store, clock), clock), store


def stored(store, topic):
    log = store.partitionLog(topic, 0)
    return [m.value for m in decodeMessageSet(log.read(0, 1 << 20, log.endOffset).result)]


def warnings(events):
    return [e for e in events if e["log_level"] == LogLevel.warn]


def test_tcpServesTheRequestsBeforeABadSizeThenClosesOnce():
    kafka, store = brokerAndStore()
    protocol = KafkaProtocol(kafka, 1000)
    transport = StringTransport()
    protocol.makeConnection(transport)
    good = metadataRequest(1, ["t"]) + produceRequest(2, {"t": {0: encodeMessageSet([(None, b"kept")])}})
    with capturedLogs() as events:
        protocol.dataReceived(good + struct.pack(">i", 1001) + b"junk")
        assert transport.disconnecting
        responses = responseFrames(transport.value())
        assert [correlationId(r) for r in responses] == [1, 2]
        assert parseProduceResponse(responses[1])[1] == {"t": {0: (0, 0)}}
        assert stored(store, "t") == [b"kept"]
        # The client goes on sending before the close takes effect: none of it is read.
        transport.clear()
        protocol.dataReceived(produceRequest(3, {"t": {0: encodeMessageSet([(None, b"late")])}}))
        protocol.dataReceived(struct.pack(">i", -1))
    assert transport.value() == b""
    assert stored(store, "t") == [b"kept"]
    (warning,) = warnings(events)
    assert "rejected" in warning["log_format"] and "1,001" in warning["why"]


def test_webSocketServesTheRequestsBeforeABadSizeThenCloses():
    pair = WebSocketPair(maxRequestBytes=1000)
    with capturedLogs() as events:
        good = metadataRequest(1, ["t"]) + metadataRequest(2, ["u"])
        payloads = pair.exchange(good + struct.pack(">i", 1001) + b"junk")
        pair.closeAfter()
    assert [correlationId(oneResponse(p)) for p in payloads] == [1, 2]
    assert pair.client.closed[1] == 1009
    assert len([e for e in warnings(events) if "rejected" in e["log_format"]]) == 1


def test_tcpAnswersAProduceStillBeingStoredBeforeClosing():
    """The close waits for the answers owed to the requests before the bad size."""
    kafka, store = brokerAndStore()
    protocol = KafkaProtocol(kafka, 1000)
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(metadataRequest(1, ["t"]))
    gate = Gate(store.partitionLog("t", 0), "append")
    transport.clear()
    with capturedLogs():
        protocol.dataReceived(produceRequest(2, {"t": {0: encodeMessageSet([(None, b"slow")])}}) + struct.pack(">i", -5))
        assert transport.value() == b"" and not transport.disconnecting
        gate.open()
    (response,) = responseFrames(transport.value())
    assert correlationId(response) == 2 and parseProduceResponse(response)[1] == {"t": {0: (0, 0)}}
    assert transport.disconnecting


def test_framesAreBytesWhateverTheBufferType():
    """Transports may hand memoryviews or bytearrays; frames are bytes, for the codec."""
    framer = Framer(100)
    chunk = prefixed(b"abc") + prefixed(b"defg")[:5]
    assert framer.feed(memoryview(chunk)) == [b"abc"]
    frames = framer.feed(bytearray(b"efg"))
    assert frames == [b"defg"] and all(type(f) is bytes for f in frames)
