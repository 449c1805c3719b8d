"""The WebSocket transport and the shim against real sockets, a real broker and real clients.

Each test starts `twistd kafkaw` (TCP and WebSocket on free ports) and, where a
stock client is used, `twistd kafkaw-shim` in front of its WebSocket endpoint.
"""

import contextlib
import socket
import ssl
import struct
import time

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect as wsConnect

from kafkaw.protocol.messages import decodeMessageSet, encodeMessageSet
from tests.integration.conftest import (
    KCAT_08,
    RawClient,
    decodeFetchResponse,
    decodeMetadataResponse,
    decodeProduceResponse,
    fetchBody,
    freePort,
    kcat,
    metadataBody,
    produceBody,
    rdConsume,
    rdProduce,
    requestHeader,
    selfSignedCertificate,
    waitForPort,
)

SIZE = struct.Struct(">i")


@pytest.fixture
def wsBroker(brokerFactory):
    """A memory-store broker, 2 partitions per topic, TCP and WebSocket."""
    return brokerFactory("--storage", "memory", "--num-partitions", "2")


class RawWebSocketClient:
    """The `websockets` library speaking hand-built Kafka frames, one binary message each."""

    def __init__(self, url, **kwargs):
        self._stack = contextlib.ExitStack()
        self.ws = self._stack.enter_context(wsConnect(url, proxy=None, max_size=None, compression=None, open_timeout=5, **kwargs))
        self._correlationId = 0

    def close(self):
        self._stack.close()

    def send(self, apiKey, body):
        self._correlationId += 1
        payload = requestHeader(apiKey, self._correlationId) + body
        self.ws.send(SIZE.pack(len(payload)) + payload)
        return self._correlationId

    def receive(self, correlationId, timeout=5):
        """One message: exactly one response with its size prefix; return the body after the correlation id."""
        message = self.ws.recv(timeout)
        assert isinstance(message, bytes), "response came as a text message"
        (size,) = SIZE.unpack_from(message)
        assert size == len(message) - 4, f"message of {len(message)} bytes with size prefix {size}"
        (got,) = SIZE.unpack_from(message, 4)
        assert got == correlationId, f"correlation id {got}, expected {correlationId}"
        return message[8:]

    def call(self, apiKey, body):
        return self.receive(self.send(apiKey, body))

    def closeCode(self, timeout=5):
        """The close code the server sent (waits for it)."""
        try:
            while True:
                self.ws.recv(timeout)
        except ConnectionClosed as e:
            return e.rcvd.code if e.rcvd is not None else None


# --- raw frames over WebSocket ---------------------------------------------------


def test_rawMetadataProduceFetch(wsBroker):
    client = RawWebSocketClient(f"ws://127.0.0.1:{wsBroker.websocketPort}/")
    try:
        brokers, topics = decodeMetadataResponse(client.call(3, metadataBody(["raw"])))
        assert brokers == [(0, "127.0.0.1", wsBroker.websocketPort)]
        assert topics == {"raw": (0, {0: (0, 0, [0], [0]), 1: (0, 0, [0], [0])})}
        messageSet = encodeMessageSet([(b"k0", b"v0"), (b"k1", b"v1" * 3000)])
        produced = decodeProduceResponse(client.call(0, produceBody(1, {"raw": {1: messageSet}})))
        assert produced == {"raw": {1: (0, 0)}}
        fetched = decodeFetchResponse(client.call(1, fetchBody({"raw": {1: (0, 1 << 20)}})))
        error, highWatermark, data = fetched["raw"][1]
        assert (error, highWatermark) == (0, 2)
        assert [(m.offset, m.key, m.value) for m in decodeMessageSet(data)] == [(0, b"k0", b"v0"), (1, b"k1", b"v1" * 3000)]
    finally:
        client.close()
    # The same data over TCP.
    with RawClient(wsBroker) as tcp:
        error, _, data = tcp.fetch({"raw": {1: (0, 1 << 20)}})["raw"][1]
        assert [m.value for m in decodeMessageSet(data)] == [b"v0", b"v1" * 3000]


def test_pipelinedRequestsAnsweredInOrder(wsBroker):
    """A parked Fetch sent first is answered before the Metadata sent after it, each in its own message."""
    client = RawWebSocketClient(f"ws://127.0.0.1:{wsBroker.websocketPort}/")
    try:
        client.call(3, metadataBody(["order"]))
        ids = [client.send(1, fetchBody({"order": {0: (0, 1024)}}, maxWait=400, minBytes=1))]
        ids += [client.send(3, metadataBody(["order"])) for _ in range(5)]
        started = time.monotonic()
        first = client.receive(ids[0])
        assert time.monotonic() - started >= 0.3, "the parked Fetch was not waited for"
        assert decodeFetchResponse(first)["order"][0] == (0, 0, b"")
        for cid in ids[1:]:
            client.receive(cid)
    finally:
        client.close()


def test_splitAndMergedMessagesOverARealSocket(wsBroker):
    client = RawWebSocketClient(f"ws://127.0.0.1:{wsBroker.websocketPort}/")
    try:
        frames = []
        for cid in (1, 2, 3):
            payload = requestHeader(3, cid) + metadataBody([])
            frames.append(SIZE.pack(len(payload)) + payload)
        client.ws.send(frames[0][:3])
        client.ws.send(frames[0][3:] + frames[1] + frames[2][:7])
        client.ws.send(frames[2][7:])
        for cid in (1, 2, 3):
            client.receive(cid)
    finally:
        client.close()


def test_textMessageAndOversizedMessageAreClosed(brokerFactory):
    broker = brokerFactory("--storage", "memory", "--max-request-bytes", "1000")
    url = f"ws://127.0.0.1:{broker.websocketPort}/"
    bystander = RawWebSocketClient(url)
    try:
        text = RawWebSocketClient(url)
        text.ws.send("hello")
        assert text.closeCode() == 1003
        big = RawWebSocketClient(url)
        big.ws.send(b"\0\0\x07\xd0" + b"\0" * 2000)
        assert big.closeCode() == 1009
        bystander.call(3, metadataBody([]))  # still served
    finally:
        bystander.close()
    log = broker.logText()
    assert "text WebSocket message" in log and "1003" in log
    assert "too large" in log and "1009" in log


def test_onlyPathSlashIsServedAndNotToBrowsers(wsBroker):
    with pytest.raises(InvalidStatus) as refused:
        RawWebSocketClient(f"ws://127.0.0.1:{wsBroker.websocketPort}/elsewhere")
    assert refused.value.response.status_code == 404
    with pytest.raises(InvalidStatus) as refused:
        RawWebSocketClient(f"ws://127.0.0.1:{wsBroker.websocketPort}/", origin="http://evil.example")
    assert refused.value.response.status_code == 403
    RawWebSocketClient(f"ws://127.0.0.1:{wsBroker.websocketPort}/").close()


def test_noWebsocketFlag(brokerFactory):
    broker = brokerFactory("--storage", "memory", "--no-websocket")
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", broker.websocketPort), timeout=2).close()
    with RawClient(broker) as tcp:
        tcp.metadata()


# --- stock clients through the shim -------------------------------------------------


def test_confluentKafkaThroughTheShim(wsBroker, shimFactory):
    shim = shimFactory(wsBroker.websocketURL)
    messages = [(i % 2, f"key-{i}".encode(), f"value-{i}".encode() * (1 + i % 50)) for i in range(2000)]
    reports = rdProduce(shim.bootstrap, "rd", messages, **{"compression.codec": "gzip"})
    assert all(err is None for err, *_ in reports)
    throughShim = rdConsume(shim.bootstrap, "rd", {0: 1000, 1: 1000})
    direct = rdConsume(wsBroker.bootstrap, "rd", {0: 1000, 1: 1000})
    assert throughShim == direct
    for partition in (0, 1):
        expected = [(key, value) for p, key, value in messages if p == partition]
        assert [(key, value) for _, key, value in throughShim[partition]] == expected
        assert [offset for offset, _, _ in throughShim[partition]] == list(range(1000))


def test_kcatThroughTheShim(wsBroker, shimFactory):
    shim = shimFactory(wsBroker.websocketURL)
    lines = b"".join(f"line {i}\n".encode() for i in range(500))
    kcat("-b", shim.bootstrap, *KCAT_08, "-P", "-t", "kc", "-p", "1", input=lines)
    consume = ["-C", "-t", "kc", "-p", "1", "-o", "beginning", "-e", "-f", "%o %s\n"]
    throughShim = kcat("-b", shim.bootstrap, *KCAT_08, *consume)
    direct = kcat("-b", wsBroker.bootstrap, *KCAT_08, *consume)
    assert throughShim == direct
    assert throughShim == b"".join(f"{i} line {i}\n".encode() for i in range(500))
    # Metadata through the shim names the shim, so clients come back to it.
    listing = kcat("-b", shim.bootstrap, *KCAT_08, "-L", "-t", "kc").decode()
    assert f"broker 0 at 127.0.0.1:{shim.port}" in listing


def _kilobytes(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def test_shimSlowClientIsHeldBackWithoutTheShimHoldingTheAnswer(wsBroker, shimFactory):
    """A client that does not read a 32 MB Fetch answer stops the shim
    reading from the broker (backpressure); the shim streams, so its memory
    holds a buffer's worth, not the answer; once the client reads, the
    answer comes whole."""
    shim = shimFactory(wsBroker.websocketURL)
    values = [bytes([i]) * (1 << 19) for i in range(64)]  # 512 KB each (message.max.bytes is ~1 MB)
    with RawClient(wsBroker) as direct:
        direct.metadata(["slow"])
        for value in values:
            [(error, _)] = direct.produce({"slow": {0: encodeMessageSet([(None, value)])}})["slow"].values()
            assert error == 0
    with RawClient(shim) as client:
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
        client.metadata(["slow"])
        before = _kilobytes(shim.process.pid, "VmRSS")
        correlationId = client.send(1, fetchBody({"slow": {0: (0, 64 << 20)}}))
        time.sleep(2)  # the client reads nothing meanwhile
        grown = _kilobytes(shim.process.pid, "VmHWM") - before
        assert grown < 8 * 1024, f"the shim grew by {grown} kB while its client did not read"
        client.sock.settimeout(30)
        error, highWatermark, data = decodeFetchResponse(client.receive(correlationId))["slow"][0]
    assert (error, highWatermark) == (0, 64)
    assert [m.value for m in decodeMessageSet(data)] == values


def test_shimClosesTheClientWhenTheBrokerGoes(wsBroker, shimFactory):
    shim = shimFactory(wsBroker.websocketURL)
    with socket.create_connection(("127.0.0.1", shim.port), timeout=10) as client:
        payload = requestHeader(3, 1) + metadataBody([])
        client.sendall(SIZE.pack(len(payload)) + payload)
        assert len(client.recv(4)) == 4  # piped: an answer comes
        wsBroker.stop()
        client.settimeout(10)
        data = b""
        while True:
            chunk = client.recv(65536)
            if not chunk:
                break
            data += chunk
    assert "broker closed the WebSocket" in shim.logText()


def test_shimRetriesUntilTheBrokerIsUp(brokerFactory, shimFactory):
    broker = brokerFactory("--storage", "memory", start=False)
    shim = shimFactory(broker.websocketURL)
    with socket.create_connection(("127.0.0.1", shim.port), timeout=15) as client:
        payload = requestHeader(3, 1) + metadataBody([])
        client.sendall(SIZE.pack(len(payload)) + payload)
        time.sleep(0.5)
        broker.start()
        client.settimeout(15)
        (size,) = SIZE.unpack(client.recv(4, socket.MSG_WAITALL))
        assert size > 4
    log = shim.logText()
    assert "attempt 1/5" in log and "retrying" in log


def test_shimGivesUpAndClosesTheClient(shimFactory):
    shim = shimFactory(f"ws://127.0.0.1:{freePort()}/", "--connect-attempts", "2")
    with socket.create_connection(("127.0.0.1", shim.port), timeout=10) as client:
        client.settimeout(10)
        assert client.recv(1) == b""
    assert "after 2 attempts" in shim.logText()


# --- TLS: wss:// ---------------------------------------------------------------------


@pytest.fixture
def tlsBroker(tmp_path, brokerFactory):
    keyPath, certPath = selfSignedCertificate(tmp_path, "broker")
    port = freePort()
    broker = brokerFactory(
        "--storage", "memory",
        "--websocket", f"ssl:{port}:privateKey={keyPath}:certKey={certPath}:interface=127.0.0.1",
    )
    broker.wssPort = port
    broker.certPath = certPath
    waitForPort(port, process=broker.process)
    return broker


def test_wssWithTheRightCertificate(tlsBroker, shimFactory):
    # Raw frames over wss:// straight to the broker.
    context = ssl.create_default_context(cafile=str(tlsBroker.certPath))
    client = RawWebSocketClient(f"wss://localhost:{tlsBroker.wssPort}/", ssl=context)
    try:
        brokers, _ = decodeMetadataResponse(client.call(3, metadataBody(["tls"])))
        assert brokers == [(0, "127.0.0.1", tlsBroker.wssPort)]
    finally:
        client.close()
    # kcat through a shim that verifies the broker against the test CA.
    shim = shimFactory(f"wss://localhost:{tlsBroker.wssPort}/", "--ca-cert", str(tlsBroker.certPath))
    kcat("-b", shim.bootstrap, *KCAT_08, "-P", "-t", "tls", "-p", "0", input=b"secret one\nsecret two\n")
    consume = ["-C", "-t", "tls", "-p", "0", "-o", "beginning", "-e"]
    assert kcat("-b", shim.bootstrap, *KCAT_08, *consume) == b"secret one\nsecret two\n"
    assert kcat("-b", tlsBroker.bootstrap, *KCAT_08, *consume) == b"secret one\nsecret two\n"


@pytest.mark.parametrize("trust", ["other CA", "system trust store"])
def test_wssWithAWrongCertificateFails(tlsBroker, shimFactory, tmp_path, trust):
    args = ["--connect-attempts", "1"]
    if trust == "other CA":
        _, otherCert = selfSignedCertificate(tmp_path, "other")
        args += ["--ca-cert", str(otherCert)]
    shim = shimFactory(f"wss://localhost:{tlsBroker.wssPort}/", *args)
    with socket.create_connection(("127.0.0.1", shim.port), timeout=10) as client:
        payload = requestHeader(3, 1) + metadataBody([])
        client.sendall(SIZE.pack(len(payload)) + payload)
        client.settimeout(10)
        assert client.recv(1) == b"", "a response came through an unverified connection"
    log = shim.logText()
    assert "could not open" in log and "after 1 attempts" in log
    assert "certificate verify failed" in log
