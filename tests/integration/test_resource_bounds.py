"""Resource bounds of a real broker: connection limit, idle timeout, a client
that never reads its responses, a Fetch asking to wait for an hour."""

import socket
import struct
import time

from tests.integration.conftest import KCAT_08, RawClient, fetchBody, kcat, requestHeader, waitUntil
from kafkaw.protocol.messages import encodeMessageSet


def rss(pid):
    """(current, peak) resident set size of a process, in KiB."""
    fields = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status"))
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def test_connections_over_the_limit_are_closed_and_the_slot_comes_back(brokerFactory):
    broker = brokerFactory("--max-connections", "2", "--no-websocket")
    waitUntil(lambda: broker.logText().count(" closed") == 1, what="the start-up probe's connection to close")
    with RawClient(broker) as first, RawClient(broker) as second:
        assert first.metadata([]) == second.metadata([])  # both admitted
        with RawClient(broker) as third:
            assert third.closedByBroker() is True
        first.close()
        waitUntil(lambda: broker.logText().count(" closed") == 2, what="the first connection's close")
        out = kcat("-b", broker.bootstrap, *KCAT_08, "-L")
        assert b"1 brokers" in out
    assert "refusing connection from" in broker.logText() and "(--max-connections)" in broker.logText()


def test_idle_connections_are_closed(brokerFactory):
    broker = brokerFactory("--idle-timeout-ms", "1500")
    with RawClient(broker) as idle, RawClient(broker) as busy:
        started = time.monotonic()
        for _ in range(6):
            busy.metadata([])
            time.sleep(0.5)
        assert idle.closedByBroker(timeout=3) is True
        assert 1.4 < time.monotonic() - started < 4.5
        assert busy.metadata([]) is not None  # kept: it kept asking
    assert "closing idle connection" in broker.logText()


def test_a_client_that_never_reads_is_paused_then_dropped_with_bounded_memory(brokerFactory):
    broker = brokerFactory("--slow-reader-timeout-ms", "2000", "--no-websocket")
    value = b"x" * 100_000
    with RawClient(broker) as writer:
        writer.metadata(["unread"])
        assert writer.produce({"unread": {0: encodeMessageSet([(None, value)] * 9)}}) == {"unread": {0: (0, 0)}}
    pid = broker.process.pid
    baseline, _ = rss(pid)
    # Each Fetch is answered with 900 KB; the client sends up to 100,000 of
    # them (90 GB of answers) and reads none.
    fetch = RawClient(broker)
    fetch.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    payload = requestHeader(1, 7) + fetchBody({"unread": {0: (0, 1_000_000)}})
    frames = (struct.pack(">i", len(payload)) + payload) * 1000
    fetch.sock.setblocking(False)
    sent = 0
    blockedSince = None
    while sent < len(frames) * 100:
        try:
            sent += fetch.sock.send(frames)
            blockedSince = None
        except BlockingIOError:
            blockedSince = blockedSince or time.monotonic()
            if time.monotonic() - blockedSince > 1.0:
                break  # the broker stopped reading: backpressure works
            time.sleep(0.01)
        except (ConnectionResetError, BrokenPipeError):
            break
    assert sent < len(frames) * 100, "the broker kept reading requests from a client that reads nothing"
    waitUntil(lambda: "has not read its responses for 2 s" in broker.logText(), timeout=10, what="the slow reader to be dropped")
    fetch.close()
    current, peak = rss(pid)
    assert peak - baseline < 200_000, f"RSS grew from {baseline} KiB to a peak of {peak} KiB"
    with RawClient(broker) as after:  # the broker serves others, data intact
        error, hw, data = after.fetch({"unread": {0: (0, 2_000_000)}})["unread"][0]
        assert (error, hw) == (0, 9) and data.count(value) == 9


def test_a_parked_fetch_is_answered_at_the_broker_cap(brokerFactory):
    broker = brokerFactory("--max-fetch-wait-ms", "500")
    with RawClient(broker) as client:
        client.metadata(["capped"])
        started = time.monotonic()
        answer = client.fetch({"capped": {0: (0, 1024)}}, maxWait=3_600_000, minBytes=1)
        waited = time.monotonic() - started
    assert answer == {"capped": {0: (0, 0, b"")}}
    assert 0.4 < waited < 2.0


def test_answers_owed_before_a_bad_request_are_sent_then_the_connection_closes(brokerFactory):
    """A big answer fills the send buffer (the connection's producer is
    paused) before the close: the close must still happen once it drains."""
    broker = brokerFactory("--no-websocket")
    value = b"y" * 100_000
    with RawClient(broker) as writer:
        writer.metadata(["owed"])
        assert writer.produce({"owed": {0: encodeMessageSet([(None, value)] * 9)}}) == {"owed": {0: (0, 0)}}
    with RawClient(broker) as client:
        fetch = requestHeader(1, 41) + fetchBody({"owed": {0: (0, 1_000_000)}})
        bad = requestHeader(99, 42)
        client.sendRaw(struct.pack(">i", len(fetch)) + fetch + struct.pack(">i", len(bad)) + bad)
        time.sleep(0.5)  # not reading: the broker's output backs up
        body = client.receive(41)
        assert body.count(value) == 9
        assert client.closedByBroker(timeout=10) is True
    assert "unsupported request: api key 99" in broker.logText()
