"""One contract suite over every storage backend (memory, LevelDB), first at
the store level (IStore / IPartitionLog), then at the service level
(ClusterService / PartitionService over each store).

LevelDB answers from threads: its store gets a L{ThreadResults} as reactor and
the tests wait for its Deferreds with C{backend.wait}, which works the same
for the memory store (whose Deferreds have fired already).
"""

import base64
import os
import threading

import plyvel
import pytest
from twisted.internet import task
from twisted.plugin import IPlugin
from zope.interface.verify import verifyObject

from kafkaw.broker.interfaces import IClusterService, IPartitionService, TopicError
from kafkaw.broker import services
from kafkaw.broker.services import EARLIEST as EARLIEST_TIME, LATEST as LATEST_TIME, ClusterService, OffsetOutOfRange
from kafkaw.protocol.api import NewTopic
from kafkaw.protocol.errors import ErrorCode, InvalidMessage, MessageTooLarge
from kafkaw.protocol.messages import decodeMessageSet, encodeMessageSet
from kafkaw.storage.interfaces import IPartitionLog, IStorageFactory, IStore, StorageError
from kafkaw.storage import leveldb as leveldbStorage
from kafkaw.storage.leveldb import LevelDBStore
from kafkaw.storage.memory import MemoryStore
from kafkaw.tap import storageBackends
from kafkaw.storage.postgresql import PostgreSQLStore
from tests.postgresql import Schema
from tests.unit.helpers import Gate
from tests.unit.storage_helpers import LevelDBStores

BIG = 1 << 20


class Backend(LevelDBStores):
    """Opens stores of one kind and waits for their Deferreds; closes them after the test.

    "leveldb-segments" is LevelDB with every batch in segment files of 4 KB
    (kafkaw/storage/segments.py), so each test also runs over the segment
    path, with segments rolled and deleted, which the default 4 KB threshold
    leaves to big batches. PostgreSQL stores of one backend share a schema of
    their own (dropped by L{closeAll}).
    """

    def __init__(self, name, path):
        super().__init__(path, directory="store")
        self.name = name
        self.persistent = name != "memory"
        self.schema = Schema() if name == "postgresql" else None
        self.arguments = self.schema.dsn if self.schema else None

    def open(self, sync=False):
        if self.name == "memory":
            return self._created(MemoryStore())
        if self.name == "postgresql":
            return self._created(PostgreSQLStore(self.schema.dsn, sync, reactor=self.threads))
        if self.name == "leveldb-segments":
            return self._created(LevelDBStore(self.path, sync, reactor=self.threads, inlineBytes=0, segmentBytes=4096))
        return super().open(sync)

    def closeAll(self):
        try:
            super().closeAll()
        finally:
            if self.schema is not None:
                self.schema.drop()


def backendFixtures(*names):
    """The C{backend} and C{store} fixtures over the backends C{names}, for a
    module of contract tests (this one, or those of one storage interface)."""

    @pytest.fixture(params=names)
    def backend(request, tmp_path):
        b = Backend(request.param, tmp_path)
        try:
            yield b
        finally:
            b.closeAll()  # the stores' threads would keep the test run alive

    @pytest.fixture
    def store(backend):
        return backend.open()

    return backend, store


backend, store = backendFixtures("memory", "leveldb", "leveldb-segments", "postgresql")


def values(data):
    """(offset, value) of every complete message in C{data}."""
    return [(m.offset, m.value) for m in decodeMessageSet(data)]


def appendValues(backend, log, vals, timestamp=1000):
    """Append one message set of C{vals} at the log end; return its base offset."""
    base = log.endOffset
    backend.wait(log.append(encodeMessageSet([(None, v) for v in vals], base), len(vals), timestamp))
    return base


def createTopic(backend, store, name, partitions=1):
    backend.wait(store.createTopic(name, partitions))


# -- store level --------------------------------------------------------------


def test_pluginDiscoveryFindsBothBackends():
    backends = storageBackends()
    assert {"leveldb", "memory", "postgresql"} <= set(backends)
    for name, factory in backends.items():
        assert factory.name == name


def test_factoryProvidesTheInterfaces(backend, tmp_path):
    factory = storageBackends()[backend.name.split("-")[0]]
    assert verifyObject(IStorageFactory, factory)
    assert verifyObject(IPlugin, factory)
    assert factory.description
    opened = factory.openStore(str(tmp_path / "data"), False, backend.arguments)
    try:
        assert verifyObject(IStore, opened)
        assert opened.topics() == {}
    finally:
        d = opened.close()
        assert d.called  # nothing outstanding: closes at once, no reactor needed


def test_storeAndLogsProvideTheInterfaces(backend, store):
    assert verifyObject(IStore, store)
    createTopic(backend, store, "t", 3)
    for partition in range(3):
        log = store.partitionLog("t", partition)
        assert verifyObject(IPartitionLog, log)
        assert (log.startOffset, log.endOffset) == (0, 0)


def test_createTopicAndTopics(backend, store):
    assert store.topics() == {}
    createTopic(backend, store, "a", 1)
    createTopic(backend, store, "b", 3)
    assert store.topics() == {"a": 1, "b": 3}
    logs = {id(store.partitionLog(t, p)) for t, p in [("a", 0), ("b", 0), ("b", 1), ("b", 2)]}
    assert len(logs) == 4


def test_duplicateTopicIsAStorageError(backend, store):
    createTopic(backend, store, "a", 2)
    appendValues(backend, store.partitionLog("a", 0), [b"kept"])
    with pytest.raises(StorageError):
        backend.wait(store.createTopic("a", 5))
    assert store.topics() == {"a": 2}
    log = store.partitionLog("a", 0)
    assert values(backend.wait(log.read(0, BIG, log.endOffset))) == [(0, b"kept")]


@pytest.fixture
def threeSets(backend, store):
    """t/0 holding offsets 0-2, 3-4 and 5, in three appends."""
    createTopic(backend, store, "t")
    log = store.partitionLog("t", 0)
    appendValues(backend, log, [b"a0", b"a1", b"a2"])
    appendValues(backend, log, [b"b3", b"b4"])
    appendValues(backend, log, [b"c5"])
    assert log.endOffset == 6
    return log


EXPECTED = [(0, b"a0"), (1, b"a1"), (2, b"a2"), (3, b"b3"), (4, b"b4"), (5, b"c5")]


def test_readFromEveryOffset(backend, threeSets):
    for offset in range(6):
        data = backend.wait(threeSets.read(offset, BIG, 6))
        assert values(data) == EXPECTED[offset:], offset
    assert backend.wait(threeSets.read(6, BIG, 6)) == b""


def test_readCutAtMaxBytesEndsWithAPartialMessage(backend, threeSets):
    full = backend.wait(threeSets.read(0, BIG, 6))
    entry = len(encodeMessageSet([(None, b"a0")]))
    for cut in [1, 11, 12, entry, entry + 3, 3 * entry + 5, len(full) - 1, len(full)]:
        data = backend.wait(threeSets.read(0, cut, 6))
        assert data == full[:cut], cut
        assert values(data) == EXPECTED[: cut // entry]
    # a cut inside a later set, read from inside the first one
    data = backend.wait(threeSets.read(1, 3 * entry + 1, 6))
    assert values(data) == EXPECTED[1:4]
    assert len(data) == 3 * entry + 1


def test_readNothingForZeroOrNegativeMaxBytes(backend, threeSets):
    for maxBytes in (0, -1):
        assert backend.wait(threeSets.read(0, maxBytes, 6)) == b""
        assert backend.wait(threeSets.read(6, maxBytes, 6)) == b""


def test_readStopsBeforeEndOffset(backend, threeSets):
    assert values(backend.wait(threeSets.read(0, BIG, 3))) == EXPECTED[:3]
    assert values(backend.wait(threeSets.read(1, BIG, 5))) == EXPECTED[1:5]
    assert backend.wait(threeSets.read(3, BIG, 3)) == b""
    assert backend.wait(threeSets.read(0, BIG, 0)) == b""


def test_endOffsetMovesOnlyWhenTheAppendIsStored(backend, store):
    createTopic(backend, store, "t")
    log = store.partitionLog("t", 0)
    appendValues(backend, log, [b"x"])
    seen = []
    d = log.append(encodeMessageSet([(None, b"y"), (None, b"z")], 1), 2, 2000)
    if not d.called:
        assert log.endOffset == 1
    d.addCallback(lambda _: seen.append(log.endOffset))
    backend.wait(d)
    assert seen == [3]
    assert values(backend.wait(log.read(0, BIG, log.endOffset))) == [(0, b"x"), (1, b"y"), (2, b"z")]


def test_logsAreIndependent(backend, store):
    createTopic(backend, store, "a", 2)
    createTopic(backend, store, "ab", 1)
    appendValues(backend, store.partitionLog("a", 0), [b"a/0"])
    appendValues(backend, store.partitionLog("a", 1), [b"a/1-0", b"a/1-1"])
    appendValues(backend, store.partitionLog("ab", 0), [b"ab/0"])
    for (topic, partition), expected in {
        ("a", 0): [(0, b"a/0")],
        ("a", 1): [(0, b"a/1-0"), (1, b"a/1-1")],
        ("ab", 0): [(0, b"ab/0")],
    }.items():
        log = store.partitionLog(topic, partition)
        assert log.endOffset == len(expected)
        assert values(backend.wait(log.read(0, BIG, log.endOffset))) == expected
        assert backend.wait(log.batchesBefore(10**12, 10)) == [0]


def test_batchesBeforeNewestFirst(backend, store):
    createTopic(backend, store, "t")
    log = store.partitionLog("t", 0)
    assert backend.wait(log.batchesBefore(10**12, 10)) == []
    appendValues(backend, log, [b"0", b"1", b"2"], timestamp=1000)  # base 0
    appendValues(backend, log, [b"3", b"4"], timestamp=2000)  # base 3
    appendValues(backend, log, [b"5"], timestamp=2000)  # base 5
    appendValues(backend, log, [b"6"], timestamp=3000)  # base 6

    def before(timestamp, maxNumber=10):
        return backend.wait(log.batchesBefore(timestamp, maxNumber))

    assert before(10**12) == [6, 5, 3, 0]
    assert before(3000) == [6, 5, 3, 0]
    assert before(2999) == [5, 3, 0]
    assert before(2000) == [5, 3, 0]
    assert before(1999) == [0]
    assert before(1000) == [0]
    assert before(999) == []
    assert before(0) == []
    assert before(-3) == []  # no append is older than a negative time
    assert before(3000, 2) == [6, 5]
    assert before(2000, 1) == [5]
    assert before(3000, 0) == []


def test_createTopicKeepsItsConfigs(backend, store):
    createTopic(backend, store, "plain")
    backend.wait(store.createTopic("tuned", 2, {"retention.ms": "60000", "retention.bytes": "-1"}))
    assert store.topics() == {"plain": 1, "tuned": 2}
    assert store.topicConfigs("plain") == {}
    assert store.topicConfigs("tuned") == {"retention.ms": "60000", "retention.bytes": "-1"}
    store.topicConfigs("tuned").clear()  # a copy
    assert store.topicConfigs("tuned") == {"retention.ms": "60000", "retention.bytes": "-1"}


def test_sizeBytesCountsStoredMessageSets(backend, store):
    createTopic(backend, store, "t")
    log = store.partitionLog("t", 0)
    assert log.sizeBytes == 0
    appendValues(backend, log, [b"a", b"b"])
    appendValues(backend, log, [b"c" * 100])
    assert log.sizeBytes == len(backend.wait(log.read(0, BIG, log.endOffset)))


def test_appendTimesNeverGoBack(backend, store):
    createTopic(backend, store, "t")
    log = store.partitionLog("t", 0)
    appendValues(backend, log, [b"0"], timestamp=2000)
    appendValues(backend, log, [b"1"], timestamp=1000)  # the clock stepped back
    appendValues(backend, log, [b"2"], timestamp=3000)
    assert backend.wait(log.batchesBefore(1999, 10)) == []
    assert backend.wait(log.batchesBefore(2000, 10)) == [1, 0]
    assert backend.wait(log.firstBatchSince(1500)) == 0
    assert backend.wait(log.firstBatchSince(2001)) == 2


def test_firstBatchSince(backend, store):
    createTopic(backend, store, "t")
    log = store.partitionLog("t", 0)
    assert backend.wait(log.firstBatchSince(0)) is None
    appendValues(backend, log, [b"0", b"1", b"2"], timestamp=1000)  # base 0
    appendValues(backend, log, [b"3", b"4"], timestamp=2000)  # base 3
    appendValues(backend, log, [b"5"], timestamp=2000)  # base 5

    def since(timestamp):
        return backend.wait(log.firstBatchSince(timestamp))

    assert since(-5) == 0
    assert since(0) == 0
    assert since(1000) == 0
    assert since(1001) == 3
    assert since(2000) == 3
    assert since(2001) is None


def test_oldestBatches(backend, threeSets):
    sizes = [len(encodeMessageSet([(None, v) for v in vals])) for vals in ([b"a0", b"a1", b"a2"], [b"b3", b"b4"], [b"c5"])]
    assert backend.wait(threeSets.oldestBatches(10)) == [(0, 3, sizes[0]), (3, 5, sizes[1]), (5, 6, sizes[2])]
    assert backend.wait(threeSets.oldestBatches(2)) == [(0, 3, sizes[0]), (3, 5, sizes[1])]
    assert backend.wait(threeSets.oldestBatches(0)) == []


def test_deleteBeforeDeletesWholeBatches(backend, threeSets):
    log = threeSets
    full = log.sizeBytes
    [first, second, third] = backend.wait(log.oldestBatches(10))
    backend.wait(log.deleteBefore(3))
    assert (log.startOffset, log.endOffset) == (3, 6)
    assert log.sizeBytes == full - first[2]
    assert values(backend.wait(log.read(3, BIG, 6))) == EXPECTED[3:]
    assert backend.wait(log.oldestBatches(10)) == [second, third]
    assert backend.wait(log.batchesBefore(10**12, 10)) == [5, 3]
    assert backend.wait(log.firstBatchSince(0)) == 3


def test_deleteBeforeInsideABatchKeepsIt(backend, threeSets):
    log = threeSets
    [first, second, third] = backend.wait(log.oldestBatches(10))
    d = log.deleteBefore(4)
    assert log.startOffset == 4  # at once: nothing below is served from now on
    backend.wait(d)
    assert log.sizeBytes == second[2] + third[2]
    assert values(backend.wait(log.read(4, BIG, 6))) == EXPECTED[4:]
    assert backend.wait(log.oldestBatches(10)) == [(4, 5, second[2]), third]


def test_deleteBeforeTheLogEndDeletesEverything(backend, threeSets):
    log = threeSets
    backend.wait(log.deleteBefore(6))
    assert (log.startOffset, log.endOffset, log.sizeBytes) == (6, 6, 0)
    assert backend.wait(log.read(6, BIG, 6)) == b""
    assert backend.wait(log.oldestBatches(10)) == []
    assert backend.wait(log.firstBatchSince(0)) is None
    assert backend.wait(log.batchesBefore(10**12, 10)) == []
    # the log goes on from its end
    appendValues(backend, log, [b"d6"], timestamp=5000)
    assert values(backend.wait(log.read(6, BIG, 7))) == [(6, b"d6")]
    assert backend.wait(log.oldestBatches(10)) == [(6, 7, log.sizeBytes)]
    assert backend.wait(log.batchesBefore(10**12, 10)) == [6]


def test_deleteBeforeLimits(backend, threeSets):
    log = threeSets
    with pytest.raises(ValueError):
        backend.wait(log.deleteBefore(7))
    backend.wait(log.deleteBefore(0))
    assert log.startOffset == 0
    backend.wait(log.deleteBefore(3))
    backend.wait(log.deleteBefore(2))  # never back
    assert log.startOffset == 3
    assert values(backend.wait(log.read(3, BIG, 6))) == EXPECTED[3:]


# -- cluster id, topic deletion, added partitions, producer ids and states ----


def reopened(backend, store):
    """The store opened again over the same data (the same store if it keeps nothing)."""
    if not backend.persistent:
        return store
    backend.close(store)
    return backend.open()


def test_clusterIdIsKafkaShapedAndStable(backend, store, tmp_path):
    clusterId = store.clusterId()
    assert isinstance(clusterId, str) and len(clusterId) == 22
    assert set(clusterId) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert len(base64.urlsafe_b64decode(clusterId + "==")) == 16  # a UUID
    assert store.clusterId() == clusterId
    createTopic(backend, store, "t")
    assert reopened(backend, store).clusterId() == clusterId
    other = Backend(backend.name, tmp_path / "other")
    os.makedirs(tmp_path / "other")
    try:
        assert other.open().clusterId() != clusterId  # another data dir, another cluster
    finally:
        other.closeAll()


def test_deleteTopic(backend, store):
    backend.wait(store.createTopic("gone", 2, {"retention.ms": "1000"}))
    createTopic(backend, store, "kept", 1)
    logs = [store.partitionLog("gone", p) for p in range(2)]
    appendValues(backend, logs[0], [b"a", b"b"])
    backend.wait(logs[1].append(encodeMessageSet([(None, b"x")]), 1, 1000, {7: b"state"}))
    appendValues(backend, store.partitionLog("kept", 0), [b"k"])
    d = store.deleteTopic("gone")
    assert store.topics() == {"kept": 1}  # at once
    with pytest.raises(KeyError):
        store.partitionLog("gone", 0)
    backend.wait(d)
    for log in logs:
        for refused in (
            log.append(encodeMessageSet([(None, b"late")], 2), 1, 2000),
            log.append(encodeMessageSet([(None, b"late")], 2), 1, 2000, {7: b"later"}),
            log.read(0, BIG, 2),
            log.batchesBefore(10**12, 10),
            log.firstBatchSince(0),
            log.oldestBatches(10),
            log.deleteBefore(1),
        ):
            with pytest.raises(StorageError):
                backend.wait(refused)
    kept = store.partitionLog("kept", 0)
    assert values(backend.wait(kept.read(0, BIG, kept.endOffset))) == [(0, b"k")]
    assert store.topics() == {"kept": 1}
    assert reopened(backend, store).topics() == {"kept": 1}


def test_deleteTopicRefusesCallsFromTheCallOn(backend, store):
    createTopic(backend, store, "t")
    log = store.partitionLog("t", 0)
    appendValues(backend, log, [b"a"])
    d = store.deleteTopic("t")
    with pytest.raises(StorageError):
        backend.wait(log.read(0, BIG, 1))  # before the deletion is stored too
    with pytest.raises(StorageError):
        backend.wait(log.append(encodeMessageSet([(None, b"b")], 1), 1, 1000))
    backend.wait(d)


def test_topicMadeAgainAfterDeletionStartsEmpty(backend, store):
    backend.wait(store.createTopic("t", 2, {"retention.ms": "1000"}))
    old = store.partitionLog("t", 1)
    appendValues(backend, old, [b"a", b"b"], timestamp=1000)
    appendValues(backend, old, [b"c"], timestamp=5000)
    backend.wait(old.append(encodeMessageSet([(None, b"d")], 3), 1, 6000, {1: b"one"}))
    backend.wait(old.deleteBefore(2))
    backend.wait(store.deleteTopic("t"))
    backend.wait(store.createTopic("t", 3))
    assert store.topics() == {"t": 3} and store.topicConfigs("t") == {}

    def empty(store):
        for p in range(3):
            log = store.partitionLog("t", p)
            assert log is not old
            assert (log.startOffset, log.endOffset, log.sizeBytes) == (0, 0, 0)
            assert log.producerStates() == {}
            assert backend.wait(log.read(0, BIG, 10)) == b""
            assert backend.wait(log.oldestBatches(10)) == []
            assert backend.wait(log.batchesBefore(10**12, 10)) == []
            assert backend.wait(log.firstBatchSince(0)) is None

    empty(store)
    store = reopened(backend, store)
    empty(store)
    log = store.partitionLog("t", 1)
    assert appendValues(backend, log, [b"new"], timestamp=500) == 0  # the old log's times are gone too
    assert backend.wait(log.batchesBefore(500, 10)) == [0]
    assert values(backend.wait(log.read(0, BIG, 1))) == [(0, b"new")]


def test_deleteTopicOfAnUnknownTopicIsAStorageError(backend, store):
    with pytest.raises(StorageError):
        backend.wait(store.deleteTopic("nope"))
    createTopic(backend, store, "t")
    backend.wait(store.deleteTopic("t"))
    with pytest.raises(StorageError):
        backend.wait(store.deleteTopic("t"))
    assert store.topics() == {}


def test_addPartitions(backend, store):
    backend.wait(store.createTopic("t", 2, {"retention.bytes": "100"}))
    first = store.partitionLog("t", 1)
    appendValues(backend, first, [b"a"])
    backend.wait(store.addPartitions("t", 5))
    assert store.topics() == {"t": 5}
    assert store.partitionLog("t", 1) is first
    for p in (2, 3, 4):
        log = store.partitionLog("t", p)
        assert verifyObject(IPartitionLog, log)
        assert (log.startOffset, log.endOffset, log.sizeBytes) == (0, 0, 0)
        assert backend.wait(log.read(0, BIG, 1)) == b""
    assert appendValues(backend, store.partitionLog("t", 4), [b"p4"]) == 0
    store = reopened(backend, store)
    assert store.topics() == {"t": 5}
    assert store.topicConfigs("t") == {"retention.bytes": "100"}
    log = store.partitionLog("t", 4)
    assert values(backend.wait(log.read(0, BIG, log.endOffset))) == [(0, b"p4")]
    log = store.partitionLog("t", 1)
    assert values(backend.wait(log.read(0, BIG, log.endOffset))) == [(0, b"a")]


def test_addPartitionsLimits(backend, store):
    createTopic(backend, store, "t", 3)
    for count in (3, 2, 0, -1):
        with pytest.raises(ValueError):
            backend.wait(store.addPartitions("t", count))
    with pytest.raises(StorageError):
        backend.wait(store.addPartitions("nope", 4))
    assert store.topics() == {"t": 3}


def test_addPartitionsTwice(backend, store):
    createTopic(backend, store, "t", 1)
    first = store.addPartitions("t", 2)
    second = store.addPartitions("t", 4)  # counted from the first, stored or not
    with pytest.raises(ValueError):
        backend.wait(store.addPartitions("t", 4))
    backend.wait(first)
    backend.wait(second)
    assert store.topics() == {"t": 4}
    assert len({id(store.partitionLog("t", p)) for p in range(4)}) == 4
    assert reopened(backend, store).topics() == {"t": 4}


def test_allocateProducerIdNeverRepeats(backend, store, monkeypatch):
    monkeypatch.setattr(leveldbStorage, "_PRODUCER_ID_BLOCK", 7)  # cross block boundaries
    ids = [backend.wait(store.allocateProducerId()) for _ in range(10)]
    many = [store.allocateProducerId() for _ in range(20)]  # asked for at once
    ids += [backend.wait(d) for d in many]
    assert all(isinstance(i, int) and 0 <= i < 2**63 for i in ids)
    assert min(ids) <= 1
    assert len(set(ids)) == len(ids) == 30
    store = reopened(backend, store)
    later = [backend.wait(store.allocateProducerId()) for _ in range(10)]
    assert len(set(ids + later)) == 40
    if backend.persistent:
        assert min(later) > max(ids)


def test_producerStatesAreStoredWithAppends(backend, store):
    createTopic(backend, store, "t", 2)
    log = store.partitionLog("t", 0)
    assert log.producerStates() == {}
    backend.wait(log.append(encodeMessageSet([(None, b"a")]), 1, 1000, {1: b"one", 2**62: b"big", 3: b""}))
    assert log.producerStates() == {1: b"one", 2**62: b"big", 3: b""}
    appendValues(backend, log, [b"b"])  # no producer states: they stay
    backend.wait(log.append(encodeMessageSet([(None, b"c")], 2), 1, 1000, {1: None, 4: b"four", 5: None}))
    expected = {2**62: b"big", 3: b"", 4: b"four"}
    assert log.producerStates() == expected
    log.producerStates().clear()  # a copy
    assert log.producerStates() == expected
    assert store.partitionLog("t", 1).producerStates() == {}
    backend.wait(log.deleteBefore(2))  # retention leaves them
    assert log.producerStates() == expected
    store = reopened(backend, store)
    log = store.partitionLog("t", 0)
    assert log.producerStates() == expected
    assert store.partitionLog("t", 1).producerStates() == {}
    assert values(backend.wait(log.read(2, BIG, 3))) == [(2, b"c")]


def test_producerStatesMoveOnlyWhenStored(backend, store):
    createTopic(backend, store, "t")
    log = store.partitionLog("t", 0)
    seen = []
    d = log.append(encodeMessageSet([(None, b"a")]), 1, 1000, {9: b"nine"})
    if not d.called:
        assert log.producerStates() == {}
    d.addCallback(lambda _: seen.append(log.producerStates()))
    backend.wait(d)
    assert seen == [{9: b"nine"}]


def test_timestampsAreClampedToTheLastOne(backend, store):
    """Batch max timestamps come from producers: one below the last is stored as the last."""
    createTopic(backend, store, "t")
    log = store.partitionLog("t", 0)
    appendValues(backend, log, [b"0"], timestamp=5000)
    appendValues(backend, log, [b"1", b"2"], timestamp=100)  # an old batch from a slow producer
    appendValues(backend, log, [b"3"], timestamp=7000)
    assert backend.wait(log.batchesBefore(4999, 10)) == []
    assert backend.wait(log.batchesBefore(5000, 10)) == [1, 0]
    assert backend.wait(log.firstBatchSince(100)) == 0
    assert backend.wait(log.firstBatchSince(5001)) == 3
    store = reopened(backend, store)
    log = store.partitionLog("t", 0)
    appendValues(backend, log, [b"4"], timestamp=6000)  # below the last, after a restart too
    assert backend.wait(log.batchesBefore(6999, 10)) == [1, 0]
    assert backend.wait(log.batchesBefore(7000, 10)) == [4, 3, 1, 0]
    assert backend.wait(log.firstBatchSince(7000)) == 3


# -- committed offsets of consumer groups -------------------------------------


def committed(offset, leaderEpoch=-1, metadata=None, commitTimestamp=1000):
    return (offset, leaderEpoch, metadata, commitTimestamp)


def test_commitOffsetsAndCommittedOffsets(backend, store):
    assert store.committedOffsets() == {}
    first = {("t", 0): committed(5), ("t", 1): committed(7, 3, "m", 2000)}
    assert backend.wait(store.commitOffsets("g", first)) is None
    backend.wait(store.commitOffsets("h", {("t", 0): committed(1, metadata="")}))
    expected = {
        "g": {("t", 0): committed(5), ("t", 1): committed(7, 3, "m", 2000)},
        "h": {("t", 0): committed(1, metadata="")},  # empty metadata is not null
    }
    assert store.committedOffsets() == expected
    # a later commit replaces a partition's offset and leaves the others
    backend.wait(store.commitOffsets("g", {("t", 1): committed(9, 4, None, 3000), ("u", 0): committed(0)}))
    expected["g"].update({("t", 1): committed(9, 4, None, 3000), ("u", 0): committed(0)})
    assert store.committedOffsets() == expected
    store.committedOffsets()["g"].clear()  # a copy
    store.committedOffsets().clear()
    assert store.committedOffsets() == expected
    assert reopened(backend, store).committedOffsets() == expected


def test_committedOffsetsAreIndependentOfTopics(backend, store):
    """Storage stores commits of partitions no topic has: checking is the coordinator's."""
    createTopic(backend, store, "t", 1)
    backend.wait(store.commitOffsets("g", {("t", 5): committed(1), ("nope", 0): committed(2)}))
    assert store.committedOffsets() == {"g": {("t", 5): committed(1), ("nope", 0): committed(2)}}
    assert reopened(backend, store).committedOffsets() == {"g": {("t", 5): committed(1), ("nope", 0): committed(2)}}


EXTREMES = {
    ("t", 0): (2**63 - 1, 2**31 - 1, "x" * 32767, 2**63 - 1),
    ("t", 2**31 - 1): (-(2**63), -(2**31), None, -(2**63)),
    ("\u00e9t\u00e9 \u2603", 3): (-1, -1, "m\u00e9ta \U0001f600", 0),
    ("y" * 32767, 0): (0, 0, "", 0),
}


def test_committedOffsetsKeepEveryValue(backend, store):
    for group in ("", "g", "gr\u00fcppe \u2603", "z" * 32767):
        backend.wait(store.commitOffsets(group, EXTREMES))
    expected = {group: EXTREMES for group in ("", "g", "gr\u00fcppe \u2603", "z" * 32767)}
    assert store.committedOffsets() == expected
    assert reopened(backend, store).committedOffsets() == expected


def test_groupsAndTopicsThatArePrefixesOfOthers(backend, store):
    names = ["g", "g2", "g\x00", "gg", "G"]
    for n, group in enumerate(names):
        offsets = {("t", 0): committed(n), ("t2", 0): committed(10 + n), ("t", 1): committed(20 + n)}
        backend.wait(store.commitOffsets(group, offsets))
    backend.wait(store.deleteGroupOffsets("g"))
    backend.wait(store.deleteGroupOffsets("gg", [("t", 0)]))
    expected = {
        group: {("t", 0): committed(n), ("t2", 0): committed(10 + n), ("t", 1): committed(20 + n)}
        for n, group in enumerate(names)
        if group != "g"
    }
    del expected["gg"][("t", 0)]
    assert store.committedOffsets() == expected
    assert reopened(backend, store).committedOffsets() == expected


@pytest.mark.parametrize(
    "group, offsets",
    [
        (None, {("t", 0): committed(1)}),
        (b"g", {("t", 0): committed(1)}),
        ("x" * 32768, {("t", 0): committed(1)}),
        ("\ud800", {("t", 0): committed(1)}),
        ("g", {("t", -1): committed(1)}),
        ("g", {("t", 2**31): committed(1)}),
        ("g", {("t", "0"): committed(1)}),
        ("g", {(b"t", 0): committed(1)}),
        ("g", {("t" * 32768, 0): committed(1)}),
        ("g", {"t": committed(1)}),
        ("g", {("t", 0, 1): committed(1)}),
        ("g", {("t", 0): (1, -1, None)}),
        ("g", {("t", 0): [1, -1, None, 1000]}),
        ("g", {("t", 0): committed(2**63)}),
        ("g", {("t", 0): committed(1.0)}),
        ("g", {("t", 0): committed(True)}),
        ("g", {("t", 0): committed(1, leaderEpoch=2**31)}),
        ("g", {("t", 0): committed(1, metadata=b"m")}),
        ("g", {("t", 0): committed(1, metadata="m" * 32768)}),
        ("g", {("t", 0): committed(1, commitTimestamp=-(2**63) - 1)}),
        ("g", {("t", 0): committed(1, commitTimestamp=None)}),
    ],
)
def test_commitOffsetsRefusesBadValuesAndStoresNothing(backend, store, group, offsets):
    backend.wait(store.commitOffsets("kept", {("t", 0): committed(3)}))
    offsets = dict(offsets)
    offsets[("t", 9)] = committed(4)  # a good one besides: not stored either
    with pytest.raises(ValueError):
        backend.wait(store.commitOffsets(group, offsets))
    assert store.committedOffsets() == {"kept": {("t", 0): committed(3)}}
    assert reopened(backend, store).committedOffsets() == {"kept": {("t", 0): committed(3)}}


def test_commitOfNothingStoresNothing(backend, store):
    assert backend.wait(store.commitOffsets("g", {})) is None
    assert store.committedOffsets() == {}


def test_committedOffsetsMoveOnlyWhenStored(backend, store):
    backend.wait(store.commitOffsets("g", {("t", 0): committed(1)}))
    seen = []
    d = store.commitOffsets("g", {("t", 0): committed(2), ("t", 1): committed(3)})
    if not d.called:
        assert store.committedOffsets() == {"g": {("t", 0): committed(1)}}
    d.addCallback(lambda _: seen.append(store.committedOffsets()))
    backend.wait(d)
    assert seen == [{"g": {("t", 0): committed(2), ("t", 1): committed(3)}}]
    d = store.deleteGroupOffsets("g", [("t", 1)])
    if not d.called:
        assert store.committedOffsets() == {"g": {("t", 0): committed(2), ("t", 1): committed(3)}}
    backend.wait(d)
    assert store.committedOffsets() == {"g": {("t", 0): committed(2)}}


def test_commitsAndDeletionsApplyInCallOrder(backend, store):
    calls = [
        store.commitOffsets("g", {("t", 0): committed(1), ("t", 1): committed(1)}),
        store.commitOffsets("g", {("t", 0): committed(2)}),
        store.deleteGroupOffsets("g", [("t", 1)]),
        store.commitOffsets("h", {("t", 0): committed(1)}),
        store.deleteGroupOffsets("h"),
        store.commitOffsets("h", {("t", 0): committed(5)}),
        store.commitOffsets("i", {("t", 0): committed(1)}),
        store.deleteGroupOffsets("i"),
    ]
    for d in calls:
        assert backend.wait(d) is None
    expected = {"g": {("t", 0): committed(2)}, "h": {("t", 0): committed(5)}}
    assert store.committedOffsets() == expected
    assert reopened(backend, store).committedOffsets() == expected


def test_deleteGroupOffsets(backend, store):
    backend.wait(store.commitOffsets("g", {("t", 0): committed(1), ("t", 1): committed(2), ("u", 0): committed(3)}))
    backend.wait(store.commitOffsets("h", {("t", 0): committed(4)}))
    # only the partitions named; ones never committed are skipped
    assert backend.wait(store.deleteGroupOffsets("g", [("t", 1), ("t", 7), ("v", 0)])) is None
    assert store.committedOffsets() == {
        "g": {("t", 0): committed(1), ("u", 0): committed(3)},
        "h": {("t", 0): committed(4)},
    }
    backend.wait(store.deleteGroupOffsets("g", iter([("t", 0)])))
    backend.wait(store.deleteGroupOffsets("g", []))  # none: nothing
    assert store.committedOffsets() == {"g": {("u", 0): committed(3)}, "h": {("t", 0): committed(4)}}
    store = reopened(backend, store)
    assert store.committedOffsets() == {"g": {("u", 0): committed(3)}, "h": {("t", 0): committed(4)}}
    backend.wait(store.deleteGroupOffsets("g"))
    assert store.committedOffsets() == {"h": {("t", 0): committed(4)}}
    backend.wait(store.deleteGroupOffsets("h", [("t", 0)]))  # its last partition: the group goes
    assert store.committedOffsets() == {}
    assert reopened(backend, store).committedOffsets() == {}


def test_deleteGroupOffsetsOfAnUnknownGroup(backend, store):
    backend.wait(store.commitOffsets("g", {("t", 0): committed(1)}))
    for partitions in (None, [("t", 0)]):
        d = store.deleteGroupOffsets("unknown", partitions)
        assert d.called  # nothing to do
        assert backend.wait(d) is None
    assert store.committedOffsets() == {"g": {("t", 0): committed(1)}}


@pytest.mark.parametrize("partitions", [[("t",)], ["t0"], [("t", "0")], [(None, 0)], [("t", 2**31)], [["t", 0]]])
def test_deleteGroupOffsetsRefusesBadPartitions(backend, store, partitions):
    backend.wait(store.commitOffsets("g", {("t", 0): committed(1)}))
    with pytest.raises(ValueError):
        backend.wait(store.deleteGroupOffsets("g", [("t", 0)] + partitions))
    assert store.committedOffsets() == {"g": {("t", 0): committed(1)}}


def test_deleteTopicDeletesItsCommittedOffsetsInEveryGroup(backend, store):
    createTopic(backend, store, "gone", 2)
    createTopic(backend, store, "kept", 1)
    offsets = {("gone", 0): committed(1), ("gone", 1): committed(2), ("kept", 0): committed(3)}
    backend.wait(store.commitOffsets("g", offsets))
    backend.wait(store.commitOffsets("h", {("gone", 1): committed(4)}))
    # no such topics: names that begin alike
    backend.wait(store.commitOffsets("i", {("gone2", 0): committed(5), ("gon", 0): committed(6)}))
    backend.wait(store.deleteTopic("gone"))
    expected = {"g": {("kept", 0): committed(3)}, "i": {("gone2", 0): committed(5), ("gon", 0): committed(6)}}
    assert store.committedOffsets() == expected
    # a topic made again under the name starts without committed offsets, and keeps those committed since
    createTopic(backend, store, "gone", 1)
    assert store.committedOffsets() == expected
    backend.wait(store.commitOffsets("h", {("gone", 0): committed(7)}))
    expected["h"] = {("gone", 0): committed(7)}
    store = reopened(backend, store)
    assert store.committedOffsets() == expected
    if backend.persistent:
        if backend.name.startswith("leveldb"):  # PostgreSQL deletes every row in the deletion's transaction
            backend.wait(store.whenTopicDeletionsDone())
        store = reopened(backend, store)
        assert store.committedOffsets() == expected


def test_commitsCalledAfterDeleteTopicAreKept(backend, store):
    createTopic(backend, store, "t", 1)
    backend.wait(store.commitOffsets("g", {("t", 0): committed(1)}))
    before = store.commitOffsets("h", {("t", 0): committed(2)})  # called before: deleted with the topic
    deleted = store.deleteTopic("t")
    made = store.createTopic("t", 1)
    after = store.commitOffsets("g", {("t", 0): committed(3)})
    for d in (before, deleted, made, after):
        backend.wait(d)
    assert store.committedOffsets() == {"g": {("t", 0): committed(3)}}
    assert reopened(backend, store).committedOffsets() == {"g": {("t", 0): committed(3)}}


# -- LevelDB only -------------------------------------------------------------


@pytest.fixture
def leveldb(tmp_path):
    b = Backend("leveldb", tmp_path)
    try:
        yield b
    finally:
        b.closeAll()


def test_leveldbDataAndTopicsSurviveReopening(leveldb):
    store = leveldb.open()
    createTopic(leveldb, store, "t", 2)
    createTopic(leveldb, store, "u", 1)
    log = store.partitionLog("t", 1)
    appendValues(leveldb, log, [b"one", b"two"], timestamp=1000)
    appendValues(leveldb, log, [b"three"], timestamp=2000)
    leveldb.close(store)

    store = leveldb.open()
    assert store.topics() == {"t": 2, "u": 1}
    log = store.partitionLog("t", 1)
    assert (log.startOffset, log.endOffset) == (0, 3)
    assert store.partitionLog("t", 0).endOffset == 0
    assert values(leveldb.wait(log.read(1, BIG, 3))) == [(1, b"two"), (2, b"three")]
    assert leveldb.wait(log.batchesBefore(10**12, 10)) == [2, 0]
    # appends continue where they stopped; a new topic gets its own id
    appendValues(leveldb, log, [b"four"])
    createTopic(leveldb, store, "v", 1)
    appendValues(leveldb, store.partitionLog("v", 0), [b"v0"])
    leveldb.close(store)

    store = leveldb.open()
    assert store.topics() == {"t": 2, "u": 1, "v": 1}
    log = store.partitionLog("t", 1)
    assert values(leveldb.wait(log.read(0, BIG, log.endOffset)))[-1] == (3, b"four")
    v = store.partitionLog("v", 0)
    assert values(leveldb.wait(v.read(0, BIG, v.endOffset))) == [(0, b"v0")]
    assert store.partitionLog("u", 0).endOffset == 0


def test_leveldbSecondOpenWhileOpenIsRefusedClearly(leveldb):
    store = leveldb.open()
    createTopic(leveldb, store, "t")
    with pytest.raises(StorageError) as raised:
        leveldb.open()
    message = str(raised.value)
    assert leveldb.path in message
    assert "lock" in message.lower()
    assert "another" in message  # says what is probably going on
    assert "b'" not in message  # no bytes repr from plyvel
    # the first store is unaffected and the directory opens once it is closed
    appendValues(leveldb, store.partitionLog("t", 0), [b"x"])
    leveldb.close(store)
    assert leveldb.open().topics() == {"t": 1}


def test_leveldbCloseWaitsForOutstandingWrites(leveldb):
    store = leveldb.open()
    createTopic(leveldb, store, "t")
    log = store.partitionLog("t", 0)
    release = threading.Event()
    # Should close() join the blocked writer at once, this unblocks it, so the
    # test fails instead of hanging.
    unblock = threading.Timer(5.0, release.set)
    unblock.start()
    try:
        blocked = store.write(release.wait)  # occupies the single writer thread
        appended = log.append(encodeMessageSet([(None, b"late")]), 1, 1000)
        closed = store.close()
        leveldb.threads.settle()
        assert not appended.called and not closed.called
        assert log.endOffset == 0
    finally:
        release.set()
        unblock.cancel()
    assert store.close() is closed
    leveldb.close(store)
    assert blocked.called and appended.called
    assert log.endOffset == 1
    store = leveldb.open()
    log = store.partitionLog("t", 0)
    assert values(leveldb.wait(log.read(0, BIG, 1))) == [(0, b"late")]


def test_leveldbRefusesWorkOnceClosing(leveldb):
    store = leveldb.open()
    createTopic(leveldb, store, "t")
    log = store.partitionLog("t", 0)
    leveldb.close(store)
    with pytest.raises(StorageError):
        leveldb.wait(log.append(encodeMessageSet([(None, b"x")]), 1, 1000))
    with pytest.raises(StorageError):
        leveldb.wait(log.read(0, BIG, 0))
    assert log.endOffset == 0


def test_leveldbEndOffsetWaitsForTheWriterThread(leveldb):
    store = leveldb.open()
    createTopic(leveldb, store, "t")
    log = store.partitionLog("t", 0)
    release = threading.Event()
    try:
        store.write(release.wait)
        appended = log.append(encodeMessageSet([(None, b"x")]), 1, 1000)
        leveldb.threads.settle()
        assert not appended.called
        assert log.endOffset == 0
    finally:
        release.set()
    leveldb.wait(appended)
    assert log.endOffset == 1


def test_leveldbSyncStore(leveldb):
    store = leveldb.open(sync=True)
    createTopic(leveldb, store, "t")
    log = store.partitionLog("t", 0)
    appendValues(leveldb, log, [b"durable"])
    assert values(leveldb.wait(log.read(0, BIG, 1))) == [(0, b"durable")]


def test_leveldbConfigsAndDeletionsSurviveReopening(leveldb):
    store = leveldb.open()
    leveldb.wait(store.createTopic("t", 1, {"retention.bytes": "100"}))
    log = store.partitionLog("t", 0)
    appendValues(leveldb, log, [b"a0", b"a1"], timestamp=1000)
    appendValues(leveldb, log, [b"b2"], timestamp=3000)
    appendValues(leveldb, log, [b"c3"], timestamp=4000)
    leveldb.wait(log.deleteBefore(2))
    size = log.sizeBytes
    leveldb.close(store)

    store = leveldb.open()
    assert store.topicConfigs("t") == {"retention.bytes": "100"}
    log = store.partitionLog("t", 0)
    assert (log.startOffset, log.endOffset, log.sizeBytes) == (2, 4, size)
    assert values(leveldb.wait(log.read(2, BIG, 4))) == [(2, b"b2"), (3, b"c3")]
    assert leveldb.wait(log.batchesBefore(10**12, 10)) == [3, 2]
    appendValues(leveldb, log, [b"d4"], timestamp=2000)  # the last append time is remembered
    assert leveldb.wait(log.firstBatchSince(4000)) == 3


def test_leveldbDeletesInSteps(leveldb, monkeypatch):
    monkeypatch.setattr(leveldbStorage, "_DELETE_BATCHES", 2)
    store = leveldb.open()
    createTopic(leveldb, store, "t")
    log = store.partitionLog("t", 0)
    for n in range(7):
        appendValues(leveldb, log, [b"%d" % n], timestamp=1000 + n)
    writes = []
    write = store.write
    monkeypatch.setattr(store, "write", lambda f: writes.append(f) or write(f))
    leveldb.wait(log.deleteBefore(6))
    assert len(writes) == 3  # 2 + 2 + 2 batches
    assert (log.startOffset, log.sizeBytes) == (6, len(messageSet(b"6")))
    assert list(store.db.iterator(prefix=b"D", include_value=False)) == [b"D" + bytes(8) + (6).to_bytes(8, "big")]
    assert len(list(store.db.iterator(prefix=b"I"))) == 1
    leveldb.close(store)
    assert leveldb.open().partitionLog("t", 0).startOffset == 6


def test_leveldbAppendDuringDeletionKeepsBothBounds(leveldb, monkeypatch):
    monkeypatch.setattr(leveldbStorage, "_DELETE_BATCHES", 1)
    store = leveldb.open()
    createTopic(leveldb, store, "t")
    log = store.partitionLog("t", 0)
    for n in range(4):
        appendValues(leveldb, log, [b"%d" % n])
    deleted = log.deleteBefore(3)
    appended = log.append(encodeMessageSet([(None, b"4")], 4), 1, 2000)
    leveldb.wait(appended)
    leveldb.wait(deleted)
    assert (log.startOffset, log.endOffset) == (3, 5)
    size = log.sizeBytes
    leveldb.close(store)
    log = leveldb.open().partitionLog("t", 0)
    assert (log.startOffset, log.endOffset, log.sizeBytes) == (3, 5, size)
    assert values(leveldb.wait(log.read(3, BIG, 5))) == [(3, b"3"), (4, b"4")]


def test_leveldbDeletionStopsWhenTheStoreCloses(leveldb, monkeypatch):
    monkeypatch.setattr(leveldbStorage, "_DELETE_BATCHES", 1)
    store = leveldb.open()
    createTopic(leveldb, store, "t")
    log = store.partitionLog("t", 0)
    for n in range(5):
        appendValues(leveldb, log, [b"%d" % n])
    deleted = log.deleteBefore(5)
    closed = store.close()
    assert leveldb.wait(deleted) is None  # stopped, not failed
    leveldb.wait(closed)
    log = leveldb.open().partitionLog("t", 0)
    assert log.startOffset < 5 and log.endOffset == 5
    assert values(leveldb.wait(log.read(log.startOffset, BIG, 5)))[-1] == (4, b"4")


def test_leveldbOpensStoresWithoutConfigsOrByteCounts(leveldb):
    """Stores written before topic configs and byte counts were kept."""
    store = leveldb.open()
    createTopic(leveldb, store, "t", 2)
    appendValues(leveldb, store.partitionLog("t", 1), [b"a", b"b"])
    appendValues(leveldb, store.partitionLog("t", 1), [b"c"])
    size = store.partitionLog("t", 1).sizeBytes
    leveldb.close(store)
    db = plyvel.DB(leveldb.path)
    for key, value in list(db.iterator(prefix=b"T")):
        db.put(key, value[:8])
    for key, value in list(db.iterator(prefix=b"M")):
        db.put(key, value[:16])
    db.close()

    store = leveldb.open()
    assert store.topics() == {"t": 2} and store.topicConfigs("t") == {}
    assert [store.partitionLog("t", p).sizeBytes for p in range(2)] == [0, size]
    log = store.partitionLog("t", 1)
    leveldb.wait(log.deleteBefore(2))
    assert log.sizeBytes == len(messageSet(b"c"))


# -- service level ------------------------------------------------------------


@pytest.fixture
def clock():
    c = task.Clock()
    c.advance(1000)  # appends are made at 1,000,000 ms
    return c


def makeCluster(store, clock, **kwargs):
    return ClusterService(store, clock, **kwargs)


@pytest.fixture
def cluster(backend, store, clock):
    c = makeCluster(store, clock, brokerId=3, numPartitions=2)
    backend.wait(c.createTopic("t", 2))
    return c


def messageSet(*vals):
    """A produced message set: offsets are the broker's to assign."""
    return encodeMessageSet([(None, v) for v in vals])


def badCrc(data):
    """C{data} with its last byte changed, so its (last) message's CRC fails."""
    return data[:-1] + bytes([data[-1] ^ 0xFF])


def readAll(backend, service):
    return values(backend.wait(service.read(service.logStartOffset, BIG)))


def test_servicesProvideTheInterfaces(cluster):
    assert verifyObject(IClusterService, cluster)
    assert cluster.brokerId == 3
    for partition in range(2):
        service = cluster.partition("t", partition)
        assert verifyObject(IPartitionService, service)
        assert (service.logStartOffset, service.logEndOffset) == (0, 0)
    assert cluster.partition("t", 2) is None
    assert cluster.partition("nope", 0) is None


def test_appendsOneAtATime(backend, cluster):
    service = cluster.partition("t", 0)
    assert backend.wait(service.append(messageSet(b"a", b"b"))).baseOffset == 0
    assert backend.wait(service.append(messageSet(b"c"))).baseOffset == 2
    assert service.logEndOffset == 3
    assert readAll(backend, service) == [(0, b"a"), (1, b"b"), (2, b"c")]
    assert cluster.partition("t", 1).logEndOffset == 0


def test_concurrentAppendsGetContiguousOffsetsInCallOrder(backend, cluster, store):
    service = cluster.partition("t", 0)
    gate = Gate(store.partitionLog("t", 0), "append")
    first = service.append(messageSet(b"a", b"b"))
    second = service.append(messageSet(b"c"))
    third = service.append(messageSet(b"d", b"e", b"f"))
    assert len(gate.calls) == 1  # the others wait for the first to be stored
    gate.open()
    assert [backend.wait(d).baseOffset for d in (first, second, third)] == [0, 2, 3]
    assert len(gate.calls) == 2  # the waiting two were stored together
    assert service.logEndOffset == 6
    assert readAll(backend, service) == list(enumerate([b"a", b"b", b"c", b"d", b"e", b"f"]))


def test_rejectedSetStoresNothingWhileItsBatchMateIsStored(backend, cluster, store):
    service = cluster.partition("t", 0)
    gate = Gate(store.partitionLog("t", 0), "append")
    first = service.append(messageSet(b"a"))
    bad = service.append(badCrc(messageSet(b"b", b"c")))
    good = service.append(messageSet(b"d"))
    gate.open()
    assert backend.wait(first).baseOffset == 0
    with pytest.raises(InvalidMessage):
        backend.wait(bad)
    assert backend.wait(good).baseOffset == 1
    assert service.logEndOffset == 2
    assert readAll(backend, service) == [(0, b"a"), (1, b"d")]


def test_rejectedSetsAlone(backend, cluster):
    service = cluster.partition("t", 0)
    with pytest.raises(InvalidMessage):
        backend.wait(service.append(badCrc(messageSet(b"x"))))
    with pytest.raises(InvalidMessage):
        backend.wait(service.append(b""))
    assert service.logEndOffset == 0
    assert backend.wait(service.append(messageSet(b"y"))).baseOffset == 0
    assert readAll(backend, service) == [(0, b"y")]


def test_tooLargeMessage(backend, store, clock):
    cluster = makeCluster(store, clock, maxMessageBytes=100)
    backend.wait(cluster.createTopic("t", 1))
    service = cluster.partition("t", 0)
    with pytest.raises(MessageTooLarge):
        backend.wait(service.append(messageSet(b"x" * 100)))
    assert backend.wait(service.append(messageSet(b"x" * 10))).baseOffset == 0
    assert service.logEndOffset == 1


@pytest.mark.logs_errors
def test_failedStoreLeavesNoHole(backend, cluster, store):
    service = cluster.partition("t", 0)
    gate = Gate(store.partitionLog("t", 0), "append")
    lost = service.append(messageSet(b"lost", b"too"))
    waiting = service.append(messageSet(b"kept"))
    gate.failHeld(StorageError("disk on fire"))
    with pytest.raises(StorageError):
        backend.wait(lost)
    gate.open()
    assert backend.wait(waiting).baseOffset == 0
    assert readAll(backend, service) == [(0, b"kept")]


def test_appendsMadeByCallbacksQueueBehindTheWriteInProgress(backend, cluster, store):
    """An append's callback may append again at once (the gateway then reads
    the client's next Produce): that append must wait for the write in
    progress, not be numbered from the same log end and overwrite it."""
    service = cluster.partition("t", 0)
    gate = Gate(store.partitionLog("t", 0), "append")
    bases, pending = [], []

    def again(appended, round):
        bases.append(appended.baseOffset)
        if round < 6:  # two appends at once, as when a backlog of requests is read
            pending.append(service.append(messageSet(b"r%d" % round, b"s%d" % round)).addCallback(again, round + 1))
            service.append(badCrc(messageSet(b"bad"))).addErrback(lambda f: bases.append("rejected"))
            pending.append(service.append(messageSet(b"t%d" % round)))

    first = service.append(messageSet(b"a", b"b")).addCallback(again, 1)
    gate.open()
    backend.wait(first)
    while pending:
        backend.wait(pending.pop(0))
    assert [b for b in bases if b != "rejected"] == [0, 2, 5, 8, 11, 14]
    assert bases.count("rejected") == 5
    stored = readAll(backend, service)
    assert [offset for offset, _ in stored] == list(range(17))
    assert stored[:5] == [(0, b"a"), (1, b"b"), (2, b"r1"), (3, b"s1"), (4, b"t1")] and stored[-1] == (16, b"t5")


def test_readOutOfRange(backend, cluster):
    service = cluster.partition("t", 0)
    backend.wait(service.append(messageSet(b"a", b"b")))
    for offset in (-1, 3, 100):
        with pytest.raises(OffsetOutOfRange):
            backend.wait(service.read(offset, BIG))
    assert backend.wait(service.read(2, BIG)) == b""
    assert backend.wait(service.read(0, 0)) == b""
    data = backend.wait(service.read(1, BIG))
    assert values(data) == [(1, b"b")]
    assert backend.wait(service.read(0, 20)) == backend.wait(service.read(0, BIG))[:20]


def test_offsetsBefore(backend, cluster, clock):
    service = cluster.partition("t", 0)

    def offsets(time, maxNumber=10):
        return backend.wait(service.offsetsBefore(time, maxNumber))

    # Empty log -> [0], whatever the time
    for time in (-1, -2, 0, 10**12):
        assert offsets(time) == [0]
    backend.wait(service.append(messageSet(b"0", b"1")))  # at 1,000,000 ms
    clock.advance(1)
    backend.wait(service.append(messageSet(b"2", b"3", b"4")))  # at 1,001,000 ms
    clock.advance(1)
    now = 1002000
    assert offsets(-1) == [5]
    assert offsets(-2) == [0]
    assert offsets(-1, 0) == []
    assert offsets(-2, 0) == []
    assert offsets(999999) == []
    assert offsets(-3) == []
    assert offsets(1000000) == [0]
    assert offsets(1000999) == [0]
    assert offsets(1001000) == [2, 0]
    assert offsets(now - 1) == [2, 0]
    assert offsets(now) == [5, 2, 0]
    assert offsets(now + 10**6) == [5, 2, 0]
    assert offsets(now, 2) == [5, 2]
    assert offsets(now, 1) == [5]
    assert offsets(now, 0) == []
    assert offsets(1001000, 1) == [2]


def test_onAppendListenersFireAfterStoreAndCanBeRemoved(backend, cluster, store):
    service = cluster.partition("t", 0)
    seen = []
    remove = service.onAppend(lambda: seen.append(service.logEndOffset))
    other = []
    service.onAppend(lambda: other.append(service.logEndOffset))
    gate = Gate(store.partitionLog("t", 0), "append")
    d = service.append(messageSet(b"a"))
    assert seen == []  # not before it is stored
    gate.open()
    backend.wait(d)
    assert seen == [1] and other == [1]
    remove()
    backend.wait(service.append(messageSet(b"b")))
    assert seen == [1] and other == [1, 2]
    # rejected sets move nothing and wake nobody
    with pytest.raises(InvalidMessage):
        backend.wait(service.append(badCrc(messageSet(b"c"))))
    assert other == [1, 2]


@pytest.mark.logs_errors
def test_failingListenerDoesNotStallThePartition(backend, cluster, store, failOnLoggedErrors):
    service = cluster.partition("t", 0)

    def broken():
        raise RuntimeError("listener bug")

    service.onAppend(broken)
    woken = []
    service.onAppend(lambda: woken.append(service.logEndOffset))
    gate = Gate(store.partitionLog("t", 0), "append")
    first = service.append(messageSet(b"a"))
    queued = service.append(messageSet(b"b"))
    gate.open()
    assert backend.wait(first).baseOffset == 0
    assert backend.wait(queued).baseOffset == 1  # stored although a listener raised
    assert woken == [1, 2]
    assert any("listener bug" in str(e.get("log_failure")) for e in failOnLoggedErrors)


@pytest.mark.parametrize("name", ["a", "A-b_c.9", "x" * 249, "..a", "a.."])
def test_legalTopicNames(backend, store, clock, name):
    cluster = makeCluster(store, clock)
    backend.wait(cluster.createTopic(name, 1))
    assert name in cluster.topics()
    assert cluster.partition(name, 0) is not None


@pytest.mark.parametrize("name", ["", ".", "..", "x" * 250, "a/b", "a b", "t\u00e9", "a\x00", None])
def test_illegalTopicNames(backend, store, clock, name):
    cluster = makeCluster(store, clock)
    with pytest.raises(TopicError) as raised:
        backend.wait(cluster.createTopic(name, 1))
    assert raised.value.errorCode == ErrorCode.INVALID_TOPIC
    if name is not None:  # Metadata v1+ answers 17 (the v0 handler says 3, as Kafka 0.8)
        assert backend.wait(cluster.describeTopics([name])) == [(name, ErrorCode.INVALID_TOPIC, 0)]
    assert cluster.topics() == {} and store.topics() == {}


def test_createTopicRefusesBadCountsAndDuplicates(backend, cluster):
    for count in (0, -1, 10001):
        with pytest.raises(TopicError):
            backend.wait(cluster.createTopic("new", count))
    with pytest.raises(TopicError):
        backend.wait(cluster.createTopic("t", 1))
    assert cluster.topics() == {"t": 2}


def test_describeTopicsAutoCreates(backend, store, clock):
    cluster = makeCluster(store, clock, numPartitions=3)
    assert backend.wait(cluster.describeTopics(None)) == []
    answer = backend.wait(cluster.describeTopics(["b", "a"]))
    assert answer == [("b", 0, 3), ("a", 0, 3)]
    assert store.topics() == {"a": 3, "b": 3}
    assert cluster.partition("a", 2) is not None
    backend.wait(cluster.createTopic("c", 1))
    assert backend.wait(cluster.describeTopics(None)) == [("a", 0, 3), ("b", 0, 3), ("c", 0, 1)]
    assert backend.wait(cluster.describeTopics(["c", "c"])) == [("c", 0, 1), ("c", 0, 1)]


def test_describeTopicsWithoutAutoCreate(backend, store, clock):
    cluster = makeCluster(store, clock, autoCreateTopics=False)
    backend.wait(cluster.createTopic("known", 2))
    answer = backend.wait(cluster.describeTopics(["unknown", "known"]))
    assert answer == [("unknown", ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, 0), ("known", 0, 2)]
    assert store.topics() == {"known": 2}
    assert cluster.partition("unknown", 0) is None


def test_concurrentDescribesCreateATopicOnce(backend, store, clock):
    cluster = makeCluster(store, clock, numPartitions=2)
    gate = Gate(store, "createTopic")
    first = cluster.describeTopics(["new"])
    second = cluster.describeTopics(["other", "new"])
    third = cluster.describeTopics(["new"])
    gate.open()
    assert backend.wait(first) == [("new", 0, 2)]
    assert backend.wait(second) == [("other", 0, 2), ("new", 0, 2)]
    assert backend.wait(third) == [("new", 0, 2)]
    assert sorted(call[0] for call in gate.calls) == ["new", "other"]


def test_topicIsListedOnlyOnceItCanBeUsed(backend, store, clock):
    cluster = makeCluster(store, clock)
    d = cluster.createTopic("t", 2)

    def consistent():
        listed = "t" in cluster.topics()
        assert listed == (cluster.partition("t", 1) is not None)
        described = backend.wait(cluster.describeTopics(None))
        assert listed == (described == [("t", 0, 2)])
        return listed

    if not d.called:
        assert not consistent()
    backend.wait(d)
    assert consistent()


def test_clusterLoadsAnExistingStore(backend, store, clock):
    cluster = makeCluster(store, clock)
    backend.wait(cluster.createTopic("t", 2))
    backend.wait(cluster.partition("t", 1).append(messageSet(b"a", b"b")))
    if backend.persistent:
        backend.close(store)
        store = backend.open()
    again = makeCluster(store, clock)
    assert again.topics() == {"t": 2}
    service = again.partition("t", 1)
    assert service.logEndOffset == 2
    assert backend.wait(service.append(messageSet(b"c"))).baseOffset == 2
    assert readAll(backend, service) == [(0, b"a"), (1, b"b"), (2, b"c")]


# -- topic configs and retention, at the service level ----------------------------


def test_createTopicsAnswersEachTopic(backend, store, clock):
    cluster = makeCluster(store, clock)
    backend.wait(cluster.createTopic("old", 1))

    def new(name, partitions=1, replicationFactor=1, assignments=(), configs=()):
        return NewTopic(name, partitions, replicationFactor, list(assignments), list(configs))

    answer = backend.wait(
        cluster.createTopics(
            [
                new("a", 3, configs=[("retention.ms", "60000")]),
                new("b", 1, replicationFactor=-1),
                new("old"),
                new("bad/name"),
                new("zero", 0),
                new("many", 10001),
                new("rf2", replicationFactor=2),
                new("rf0", replicationFactor=0),
                new("assigned", -1, -1, assignments=[(0, [0])]),
                new("unknownConfig", configs=[("cleanup.policy", "compact")]),
                new("badValue", configs=[("retention.bytes", "lots")]),
                new("tooLow", configs=[("retention.ms", "-2")]),
                new("nullValue", configs=[("retention.ms", None)]),
                new("twice"),
                new("twice"),
            ]
        )
    )
    assert [(name, code) for name, code, _ in answer] == [
        ("a", 0),
        ("b", 0),
        ("old", 36),  # TOPIC_ALREADY_EXISTS
        ("bad/name", 17),  # INVALID_TOPIC_EXCEPTION
        ("zero", 37),  # INVALID_PARTITIONS
        ("many", 37),
        ("rf2", 38),  # INVALID_REPLICATION_FACTOR
        ("rf0", 38),
        ("assigned", 42),  # INVALID_REQUEST
        ("unknownConfig", 40),  # INVALID_CONFIG
        ("badValue", 40),
        ("tooLow", 40),
        ("nullValue", 42),
        ("twice", 42),
        ("twice", 42),
    ]
    assert cluster.topics() == {"old": 1, "a": 3, "b": 1}
    assert cluster.partition("a", 2) is not None
    assert cluster.topicConfigs("a") == {"retention.ms": "60000"}
    assert cluster.topicConfigs("b") == {}


def test_retentionOfATopicIsItsConfigElseTheBrokers(backend, store, clock):
    cluster = makeCluster(store, clock, retentionMs=5000, retentionBytes=-1)
    backend.wait(cluster.createTopic("plain", 1))
    backend.wait(cluster.createTopic("short", 1, {"retention.ms": "100"}))
    backend.wait(cluster.createTopic("small", 1, {"retention.bytes": "1000"}))
    backend.wait(cluster.createTopic("forever", 1, {"retention.ms": "-1", "retention.bytes": "-1"}))
    expected = {"plain": (5000, -1), "short": (100, -1), "small": (5000, 1000), "forever": (-1, -1)}
    assert {topic: cluster.retention(topic) for topic in expected} == expected
    if backend.persistent:
        backend.close(store)
        store = backend.open()
    again = makeCluster(store, clock, retentionMs=7000)
    assert again.retention("plain") == (7000, -1)
    assert again.retention("short") == (100, -1)
    assert again.topicConfigs("small") == {"retention.bytes": "1000"}


@pytest.fixture
def aged(backend, cluster, clock):
    """t/0 holding batches of offsets 0-1 (at 1,000,000 ms), 2-4 (1,001,000) and 5 (1,002,000); now is 1,003,000."""
    service = cluster.partition("t", 0)
    for vals in ([b"a0", b"a1"], [b"b2", b"b3", b"b4"], [b"c5"]):
        backend.wait(service.append(messageSet(*vals)))
        clock.advance(1)
    return service


def test_retentionByTime(backend, aged, clock):
    service = aged
    assert backend.wait(service.enforceRetention(-1, -1)) == 0
    assert backend.wait(service.enforceRetention(3000, -1)) == 0  # nothing is more than 3 s old
    assert backend.wait(service.enforceRetention(2000, -1)) == 2  # the first batch is
    assert service.logStartOffset == 2 and service.logEndOffset == 6
    assert readAll(backend, service) == [(2, b"b2"), (3, b"b3"), (4, b"b4"), (5, b"c5")]
    with pytest.raises(OffsetOutOfRange):
        backend.wait(service.read(1, BIG))
    assert backend.wait(service.offsetsBefore(EARLIEST_TIME, 1)) == [2]
    assert backend.wait(service.offsetsBefore(1000999, 10)) == []  # only the deleted batch was older
    assert backend.wait(service.offsetsBefore(1001000, 10)) == [2]
    clock.advance(10)
    assert backend.wait(service.enforceRetention(2000, -1)) == 6  # everything is old: log start = log end
    assert (service.logStartOffset, service.logEndOffset) == (6, 6)
    assert backend.wait(service.offsetsBefore(EARLIEST_TIME, 1)) == [6]
    assert backend.wait(service.offsetsBefore(LATEST_TIME, 1)) == [6]
    assert backend.wait(service.read(6, BIG)) == b""
    assert backend.wait(service.append(messageSet(b"d6"))).baseOffset == 6
    assert readAll(backend, service) == [(6, b"d6")]


def test_retentionByBytesKeepsAtLeastRetentionBytes(backend, aged, monkeypatch):
    """As Kafka 0.8: an oldest batch goes only if what stays is still at least retention.bytes."""
    monkeypatch.setattr(services, "_RETENTION_STEP", 1)  # one batch a step
    service = aged
    a, b, c = (len(messageSet(*vals)) for vals in ([b"a0", b"a1"], [b"b2", b"b3", b"b4"], [b"c5"]))
    assert backend.wait(service.enforceRetention(-1, a + b + c)) == 0
    assert backend.wait(service.enforceRetention(-1, b + c + 1)) == 0
    assert backend.wait(service.enforceRetention(-1, b + c)) == 2
    assert backend.wait(service.enforceRetention(-1, 1)) == 5  # the last batch stays
    assert readAll(backend, service) == [(5, b"c5")]
    assert backend.wait(service.enforceRetention(-1, 0)) == 6


def test_retentionByBytesOverManySteps(backend, cluster, monkeypatch):
    monkeypatch.setattr(services, "_RETENTION_STEP", 2)
    service = cluster.partition("t", 0)
    for n in range(9):
        backend.wait(service.append(messageSet(b"%d" % n)))
    one = len(messageSet(b"0"))
    assert backend.wait(service.enforceRetention(-1, 2 * one)) == 7
    assert readAll(backend, service) == [(7, b"7"), (8, b"8")]


def test_retentionByTimeThenBytes(backend, aged):
    service = aged
    c = len(messageSet(b"c5"))
    assert backend.wait(service.enforceRetention(2000, c)) == 5  # a by time, b by size
    assert readAll(backend, service) == [(5, b"c5")]
