"""The retention timer (RetentionService) on a task.Clock over a memory store,
and the twistd options that set it up. What a retention pass deletes is
tested over every backend in test_storage_contract.py."""

import pytest
from twisted.internet import defer, task
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs, formatEvent
from twisted.python import usage

from kafkaw.broker.services import DEFAULT_RETENTION_MS, ClusterService, RetentionService
from kafkaw.protocol.messages import encodeMessageSet
from kafkaw.storage.memory import MemoryStore
from kafkaw.tap import Options, makeService
from tests.unit.helpers import Gate

HOUR_MS = 3600 * 1000


def messageSet(*vals):
    return encodeMessageSet([(None, v) for v in vals])


class Retained:
    """A cluster over a memory store with topics of various retentions, and its retention timer."""

    def __init__(self, interval=300, **clusterOptions):
        self.clock = task.Clock()
        self.clock.advance(1000)
        self.cluster = ClusterService(MemoryStore(), self.clock, **clusterOptions)
        self.service = RetentionService(self.cluster, interval, self.clock)

    def create(self, name, partitions=1, configs=None):
        d = self.cluster.createTopic(name, partitions, configs)
        assert d.called
        return d

    def append(self, topic, partition, *vals):
        d = self.cluster.partition(topic, partition).append(messageSet(*vals))
        assert d.called
        return d.result

    def start(self, topic, partition=0):
        return self.cluster.partition(topic, partition).logStartOffset


@pytest.fixture
def retained():
    r = Retained(retentionMs=10000)
    r.create("default", 2)  # the broker's 10 s
    r.create("short", 1, {"retention.ms": "2000"})
    r.create("forever", 1, {"retention.ms": "-1"})
    r.create("small", 1, {"retention.ms": "-1", "retention.bytes": "0"})
    for topic, partition in [("default", 0), ("default", 1), ("short", 0), ("forever", 0), ("small", 0)]:
        r.append(topic, partition, b"old")
    return r


def test_runsEveryIntervalNotAtStart(retained):
    r = retained
    r.service.startService()
    assert r.start("small") == 0  # nothing yet
    r.clock.advance(299)
    assert r.start("small") == 0
    r.clock.advance(1)  # first pass: the appends are 300 s old
    assert {t: r.start(t) for t in ("short", "forever", "small")} == {"short": 1, "forever": 0, "small": 1}
    assert r.start("default", 0) == r.start("default", 1) == 1
    r.append("short", 0, b"new")
    r.clock.advance(1)
    r.append("small", 0, b"new")
    r.clock.advance(298)  # not a second pass yet
    assert (r.start("short"), r.start("small")) == (1, 1)
    r.clock.advance(1)
    assert (r.start("short"), r.start("small")) == (2, 2)
    r.service.stopService()
    r.append("small", 0, b"after")
    r.clock.advance(600)
    assert r.start("small") == 2  # stopped


def test_logsWhatItDeleted(retained):
    retained.service.startService()
    with capturedLogs() as events:
        retained.clock.advance(300)
    lines = [formatEvent(e) for e in events]
    assert "retention moved the log start of short/0 from 0 to 1" in lines
    assert not any("forever" in line for line in lines)
    retained.service.stopService()


def test_stopWaitsForThePartitionBeingTrimmed(retained):
    r = retained
    gate = Gate(r.cluster.partition("default", 0)._partitionLog, "deleteBefore")
    r.service.startService()
    r.clock.advance(300)
    assert len(gate.calls) == 1 and r.start("short") == 0  # the pass waits on default/0
    stopped = r.service.stopService()
    assert not stopped.called
    gate.open()
    assert stopped.called
    assert r.start("default", 0) == 1
    assert r.start("default", 1) == 0 and r.start("short") == 0  # the pass ended there


@pytest.mark.logs_errors
def test_aFailingPartitionDoesNotStopThePass(retained, failOnLoggedErrors):
    r = retained
    log = r.cluster.partition("default", 1)._partitionLog
    log.deleteBefore = lambda offset: defer.fail(OSError("disk gone"))
    r.service.startService()
    r.clock.advance(300)
    assert r.start("default", 0) == 1 and r.start("short") == 1
    assert any("retention of default/1 failed" in formatEvent(e) for e in failOnLoggedErrors)
    r.service.stopService()


# -- the twistd options ---------------------------------------------------------


def parse(*args):
    options = Options()
    options.parseOptions(["--storage", "memory", "--no-websocket", "--listen", "tcp:0:interface=127.0.0.1", *args])
    return options


def test_optionDefaultsAreKafkas():
    options = parse()
    assert (options["retention-hours"], options["retention-bytes"], options["retention-check-interval-ms"]) == (168, -1, 300000)
    assert DEFAULT_RETENTION_MS == 168 * HOUR_MS


@pytest.mark.parametrize(
    "args",
    [("--retention-hours", "0"), ("--retention-hours", "-2"), ("--retention-bytes", "-5"), ("--retention-check-interval-ms", "0")],
)
def test_badOptions(args):
    with pytest.raises(usage.UsageError):
        parse(*args)


def brokerService(tmp_path, *args):
    reactor = MemoryReactorClock()
    top = makeService(parse("--data-dir", str(tmp_path), *args), reactor=reactor)
    [retention] = [s for s in top if isinstance(s, RetentionService)]
    [cluster] = {listener.factory.broker.cluster for listener in top if hasattr(listener, "factory")}
    return reactor, top, cluster


def test_makeServiceRunsRetentionOnTheReactorClock(tmp_path):
    reactor, top, cluster = brokerService(
        tmp_path, "--retention-hours", "2", "--retention-bytes", "1000", "--retention-check-interval-ms", "60000"
    )
    d = cluster.createTopic("t", 1)
    assert d.called
    assert cluster.retention("t") == (2 * HOUR_MS, 1000)
    cluster.partition("t", 0).append(messageSet(b"x"))
    top.startService()
    try:
        reactor.advance(2 * 3600)
        assert cluster.partition("t", 0).logStartOffset == 0  # exactly 2 h old: kept
        reactor.advance(60)
        assert cluster.partition("t", 0).logStartOffset == 1
    finally:
        top.stopService()


def test_unlimitedRetention(tmp_path):
    _, _, cluster = brokerService(tmp_path, "--retention-hours", "-1")
    assert cluster.createTopic("t", 1).called
    assert cluster.retention("t") == (-1, -1)
