"""A broker whose disk fills up: produce gets an error (no hang, no crash),
reads go on, and produce works again once there is room, with no hole in the
offsets and every acknowledged message stored exactly once.

"Full" is a file size limit (RLIMIT_FSIZE, with SIGXFSZ ignored) set on the
broker process: LevelDB's writes fail with EFBIG once its log file reaches it,
as they fail with ENOSPC on a full disk. Raising the limit of the running
process (prlimit) is the room coming back.
"""

import resource
import signal
import time

from confluent_kafka import Producer

from tests.integration.conftest import RDKAFKA_08, BrokerProcess, RawClient, rdConsume, waitUntil

# LevelDB's log file reaches this after about 100 of the messages below.
LIMIT = 1 << 20
PADDING = b"x" * 10000
TOPIC = "full"


def limitFileSize():
    # In the child, before exec: an ignored signal stays ignored across exec.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, resource.RLIM_INFINITY))


class Producing:
    """A producer that sends numbered messages and sorts the delivery reports."""

    def __init__(self, bootstrap):
        self.producer = Producer(
            {**RDKAFKA_08, "bootstrap.servers": bootstrap, "acks": 1, "linger.ms": 5, "message.timeout.ms": 5000}
        )
        self.acked = {}  # value -> (partition, offset)
        self.errors = {}  # value -> error
        self.sent = 0

    def send(self, count):
        """Send C{count} messages over partitions 0 and 1; wait for their reports; return the errors among them."""
        before = len(self.errors)

        def delivered(err, msg):
            if err is None:
                self.acked[msg.value()] = (msg.partition(), msg.offset())
            else:
                self.errors[msg.value()] = err

        for _ in range(count):
            value = b"%06d" % self.sent + PADDING
            self.producer.produce(TOPIC, value, partition=self.sent % 2, on_delivery=delivered)
            self.sent += 1
        assert self.producer.flush(15) == 0, "delivery reports did not come"
        return list(self.errors.values())[before:]


def storedMessages(broker):
    """{partition: [(offset, value)]} of everything stored, read up to the log end."""
    with RawClient(broker) as client:
        ends = {p: client.latest(TOPIC, p) for p in (0, 1)}
    got = rdConsume(broker.bootstrap, TOPIC, ends)
    return {p: [(offset, value) for offset, _, value in messages] for p, messages in got.items()}


def checkStored(broker, producing):
    """No hole, each acknowledged message once at its offset, nothing stored twice."""
    stored = storedMessages(broker)
    for partition, messages in stored.items():
        assert [offset for offset, _ in messages] == list(range(len(messages)))
        values = [value for _, value in messages]
        assert len(set(values)) == len(values)
    where = {value: (p, offset) for p, messages in stored.items() for offset, value in messages}
    for value, place in producing.acked.items():
        assert where.get(value) == place, f"acknowledged {value[:6]} at {place}, stored at {where.get(value)}"
    return stored


def test_produceFailsWhileFullAndWorksOnceThereIsRoom(tmp_path):
    broker = BrokerProcess(tmp_path / "data", ["--num-partitions", "2"], preexec=limitFileSize)
    broker.dataDir.mkdir()
    broker.start()
    try:
        producing = Producing(broker.bootstrap)
        producing.send(2)
        assert not producing.errors

        # Fill up: every message gets a report, a failed one in bounded time
        # (the broker's answer, not the client's message.timeout.ms).
        started = time.monotonic()
        while True:
            sending = time.monotonic()
            if producing.send(10):
                break
            assert time.monotonic() - started < 15, "produce never failed"
        errorAfter = time.monotonic() - sending
        errors = producing.send(10)  # still full: both partitions answer with an error
        assert len(errors) == 10
        assert {err.code() for err in errors} == {-1}  # UNKNOWN: Kafka 0.8 has no storage error code
        assert errorAfter < 2
        time.sleep(1.5)  # a reopen is tried every second: not while still full
        assert len(producing.send(4)) == 4
        assert "writable again" not in broker.logText()
        assert broker.process.poll() is None
        stored = checkStored(broker, producing)  # reads go on
        assert sum(len(m) for m in stored.values()) == len(producing.acked)

        # Room again: the broker reopens LevelDB within about a second.
        resource.prlimit(broker.process.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        roomAt = time.monotonic()
        waitUntil(lambda: "LevelDB is writable again" in broker.logText(), timeout=5, what="the store to reopen")
        reopened = time.monotonic() - roomAt
        acked = len(producing.acked)
        assert not producing.send(20)
        assert len(producing.acked) == acked + 20
        checkStored(broker, producing)

        # Everything acknowledged survives a restart.
        broker.stop()
        assert "store closed" in broker.logText()
        broker.preexec = None
        broker.start()
        checkStored(broker, producing)
        assert not producing.send(2)

        log = broker.logText()
        assert log.count("LevelDB write failed") == 1
        assert log.count("LevelDB is writable again") == 1
        assert "Traceback" not in log
        print(f"failed produce answered in {errorAfter:.3f} s; reopened {reopened:.2f} s after room came back")
    finally:
        broker.stop()


def test_unusableDataDirectoryStopsTheStartWithOneLine(brokerFactory, tmp_path):
    regular = tmp_path / "regular-file"
    regular.write_bytes(b"")
    broker = brokerFactory("--data-dir", str(regular / "data"), start=False)
    assert broker.expectExit() == 1
    log = broker.logText()
    assert f"kafkaw: cannot create the data directory {regular / 'data' / 'leveldb'}: Not a directory" in log
    assert "Traceback" not in log
