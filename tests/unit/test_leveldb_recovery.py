"""A LevelDB store whose writes fail (disk full, file too large, I/O error):
appends fail at once with StorageError, reads go on, and the store reopens
itself once it can, on a task.Clock timer; then the gateway's answer.

Failing writes come from a wrapper around the real plyvel database, so
everything else (the reopen included) is real LevelDB in a temp directory.
"""

import os
import threading

import plyvel
import pytest
from twisted.internet import defer, task
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.python.failure import Failure

from kafkaw.broker.gateway import Broker
from kafkaw.broker.services import ClusterService
from kafkaw.protocol.errors import ErrorCode
from kafkaw.protocol.messages import decodeMessageSet, encodeMessageSet
from kafkaw.storage import leveldb as leveldbStorage
from kafkaw.storage.interfaces import StorageError
from kafkaw.storage.leveldb import LevelDBStore
from kafkaw.storage.memory import MemoryStore
from kafkaw.transport.tcp import KafkaProtocol
from tests.unit.helpers import (
    ThreadResults,
    fetchRequest,
    parseFetchResponse,
    parseProduceResponse,
    produceRequest,
    responseFrames,
)
from tests.unit.storage_helpers import LevelDBStores, storesFixture

BIG = 1 << 20
FULL = b"IO error: kafkaw-data/leveldb/000003.log: No space left on device"


class ThreadClock(ThreadResults, task.Clock):
    """Thread results delivered by the test thread, and a clock for the retry timer."""

    def __init__(self):
        ThreadResults.__init__(self)
        task.Clock.__init__(self)


class FailingWrites:
    """A plyvel database whose batch writes fail, as on a full disk.

    With C{durable}, each failing batch is written all the same, as when the
    log record reached the disk before the error.
    """

    def __init__(self, db, durable=False):
        self._db = db
        self.durable = durable
        self.writes = 0

    def write_batch(self, **options):
        return _FailingBatch(self, self._db.write_batch(**options))

    def __getattr__(self, name):
        return getattr(self._db, name)


class _FailingBatch:
    def __init__(self, owner, batch):
        self._owner = owner
        self._batch = batch

    def put(self, key, value):
        self._batch.put(key, value)

    def delete(self, key):
        self._batch.delete(key)

    def write(self):
        self._owner.writes += 1
        if self._owner.durable:
            self._batch.write()
        raise plyvel.IOError(FULL)


class Stores(LevelDBStores):
    """LevelDB stores in a temp directory on a L{ThreadClock}; closed after the test."""

    def __init__(self, path):
        super().__init__(path, ThreadClock())
        self.clock = self.threads

    def reopenAfterRetry(self, store):
        """Let the retry timer fire and wait for the reopen it starts."""
        self.clock.advance(leveldbStorage._RETRY_SECONDS)
        assert store._recovering is not None, "no reopen was started"
        self.wait(store._recovering)


stores = storesFixture(Stores)


@pytest.fixture
def logged():
    with capturedLogs() as events:
        yield events


def storeLines(events, level):
    return [formatEvent(e) for e in events if e["log_level"] == level and "leveldb" in e.get("log_namespace", "")]


def append(log, *vals):
    base = log.endOffset
    return log.append(encodeMessageSet([(None, v) for v in vals], base), len(vals), 1000)


def stored(stores, log):
    data = stores.wait(log.read(log.startOffset, BIG, log.endOffset))
    return [(m.offset, m.value) for m in decodeMessageSet(data)]


def failed(stores, d):
    with pytest.raises(StorageError) as raised:
        stores.wait(d)
    return str(raised.value)


@pytest.fixture
def twoPartitions(stores):
    store = stores.open()
    stores.wait(store.createTopic("t", 2))
    log0, log1 = store.partitionLog("t", 0), store.partitionLog("t", 1)
    stores.wait(append(log0, b"a"))
    stores.wait(append(log0, b"b"))
    return store, log0, log1


def test_failedWriteFailsAppendsUntilReopened(stores, twoPartitions, logged):
    store, log0, log1 = twoPartitions
    store.db = FailingWrites(store.db)
    assert "No space left on device" in failed(stores, append(log0, b"c"))
    assert log0.endOffset == 2
    # Every partition shares the store: refused at once, nothing reaches LevelDB.
    refused = append(log1, b"x")
    assert refused.called
    assert "not writable" in failed(stores, refused)
    assert store.db.writes == 1
    # Reads go on.
    assert stored(stores, log0) == [(0, b"a"), (1, b"b")]
    [warning] = storeLines(logged, LogLevel.warn)
    assert "No space left on device" in warning and "-1" in warning

    stores.reopenAfterRetry(store)
    assert isinstance(store.db, plyvel.DB)  # reopened, not the failing wrapper
    assert stores.wait(append(log0, b"c")) is None
    assert stores.wait(append(log1, b"x")) is None
    assert stored(stores, log0) == [(0, b"a"), (1, b"b"), (2, b"c")]
    assert stored(stores, log1) == [(0, b"x")]
    [recovered] = storeLines(logged, LogLevel.info)
    assert "writable again" in recovered
    assert len(storeLines(logged, LogLevel.warn)) == 1  # one warning per episode
    assert not stores.clock.getDelayedCalls()

    stores.close(store)
    store = stores.open()
    assert stored(stores, store.partitionLog("t", 0)) == [(0, b"a"), (1, b"b"), (2, b"c")]


def test_failedAppendThatBecameDurableMovesTheLogEndOnReopen(stores, twoPartitions):
    store, log0, _ = twoPartitions
    store.db = FailingWrites(store.db, durable=True)
    sizeBefore = log0.sizeBytes
    failed(stores, append(log0, b"maybe"))
    assert (log0.endOffset, log0.sizeBytes) == (2, sizeBefore)
    stores.reopenAfterRetry(store)
    # The stored log end counts it: the next append goes after it, no hole, no overwrite.
    assert log0.endOffset == 3 and log0.sizeBytes > sizeBefore
    stores.wait(append(log0, b"d"))
    assert stored(stores, log0) == [(0, b"a"), (1, b"b"), (2, b"maybe"), (3, b"d")]


def test_writesQueuedBehindAFailedOneDoNotTouchTheDatabase(stores, twoPartitions):
    store, log0, log1 = twoPartitions
    store.db = FailingWrites(store.db)
    release = threading.Event()
    try:
        store.write(release.wait)  # holds the writer thread
        first = append(log0, b"c")
        second = append(log1, b"x")
        created = store.createTopic("u", 1)
        stores.clock.settle()
        assert not first.called and not second.called
    finally:
        release.set()
    failed(stores, first)
    failed(stores, second)
    failed(stores, created)
    assert store.db.writes == 1  # LevelDB's log is not written past a failed record
    assert store.topics() == {"t": 2}
    stores.reopenAfterRetry(store)
    stores.wait(store.createTopic("u", 1))
    stores.wait(append(store.partitionLog("u", 0), b"u0"))
    assert stored(stores, store.partitionLog("u", 0)) == [(0, b"u0")]


def test_noRoomToReopenLeavesTheDatabaseOpen(stores, twoPartitions, monkeypatch, logged):
    store, log0, _ = twoPartitions
    failing = store.db = FailingWrites(store.db)
    failed(stores, append(log0, b"c"))
    monkeypatch.setattr(leveldbStorage, "_ROOM_MARGIN", 1 << 62)  # no disk has room for that
    stores.reopenAfterRetry(store)
    assert store.db is failing  # not closed: reads go on
    assert stored(stores, log0) == [(0, b"a"), (1, b"b")]
    failed(stores, append(log0, b"c"))
    assert not os.path.exists(os.path.join(stores.path, leveldbStorage._PROBE_NAME))
    monkeypatch.setattr(leveldbStorage, "_ROOM_MARGIN", 1 << 20)
    stores.reopenAfterRetry(store)  # tried again a second later
    stores.wait(append(log0, b"c"))
    assert len(storeLines(logged, LogLevel.warn)) == 1


def test_readsWaitForTheReopen(stores, twoPartitions):
    store, log0, log1 = twoPartitions
    store.db = FailingWrites(store.db)
    failed(stores, append(log0, b"c"))
    release = threading.Event()
    try:
        busy = store.read(release.wait)  # a read under way: the reopen waits for it
        stores.clock.advance(leveldbStorage._RETRY_SECONDS)
        waiting = log0.read(0, BIG, 2)
        refused = append(log1, b"x")
        stores.clock.settle()
        assert not waiting.called
        assert isinstance(store.db, FailingWrites)
        assert refused.called  # writes are refused, not held
        failed(stores, refused)
    finally:
        release.set()
    stores.wait(busy)
    data = stores.wait(waiting)  # read on the reopened database
    assert isinstance(store.db, plyvel.DB)
    assert [(m.offset, m.value) for m in decodeMessageSet(data)] == [(0, b"a"), (1, b"b")]


def test_failedReopenFailsReadsUntilAReopenWorks(stores, twoPartitions, logged):
    store, log0, _ = twoPartitions
    store.db = FailingWrites(store.db)
    failed(stores, append(log0, b"c"))
    opens = []

    def brokenOpen():
        opens.append(1)
        raise StorageError("cannot open LevelDB: IO error: No space left on device")

    store._open = brokenOpen
    stores.reopenAfterRetry(store)
    stores.reopenAfterRetry(store)
    assert len(opens) == 2
    assert "cannot reopen" in failed(stores, log0.read(0, BIG, 2))
    assert "cannot reopen" in failed(stores, append(log0, b"c"))
    warnings = storeLines(logged, LogLevel.warn)
    assert len(warnings) == 2 and "reads fail too" in warnings[1]
    del store._open
    stores.reopenAfterRetry(store)
    assert stored(stores, log0) == [(0, b"a"), (1, b"b")]
    stores.wait(append(log0, b"c"))


def test_closeWhileFailedStopsRetrying(stores, twoPartitions):
    store, log0, _ = twoPartitions
    store.db = FailingWrites(store.db)
    failed(stores, append(log0, b"c"))
    assert stores.clock.getDelayedCalls()
    stores.close(store)
    assert not stores.clock.getDelayedCalls()
    store = stores.open()
    assert stored(stores, store.partitionLog("t", 0)) == [(0, b"a"), (1, b"b")]


def test_unusableDataDirectoryIsAStorageError(tmp_path):
    regular = tmp_path / "file"
    regular.write_bytes(b"")
    with pytest.raises(StorageError) as raised:
        LevelDBStore(str(regular / "leveldb"), False, reactor=ThreadClock())
    assert str(regular) in str(raised.value)
    assert "Not a directory" in str(raised.value)


def test_queuedAppendsOfAPartitionAllFailAndOffsetsStayContiguous(stores):
    store = stores.open()
    cluster = ClusterService(store, stores.clock)
    stores.wait(cluster.createTopic("t", 1))
    partition = cluster.partition("t", 0)
    stores.wait(partition.append(encodeMessageSet([(None, b"a")])))
    store.db = FailingWrites(store.db)
    appends = [partition.append(encodeMessageSet([(None, v)])) for v in (b"b", b"c", b"d")]
    for d in appends:
        failed(stores, d)  # none hangs; none is logged as an error
    stores.reopenAfterRetry(store)
    assert stores.wait(partition.append(encodeMessageSet([(None, b"e")]))).baseOffset == 1
    assert stored(stores, store.partitionLog("t", 0)) == [(0, b"a"), (1, b"e")]


def test_gatewayAnswersAStorageErrorWithUnknownAndServesFetches():
    clock = task.Clock()
    store = MemoryStore()
    cluster = ClusterService(store, clock)
    cluster.createTopic("t", 1)
    cluster.partition("t", 0).append(encodeMessageSet([(None, b"kept")]))
    store.partitionLog("t", 0).append = lambda *args: defer.fail(StorageError("LevelDB is not writable: disk full"))
    transport = StringTransport()
    protocol = KafkaProtocol(Broker(cluster, clock), 1 << 20)
    protocol.makeConnection(transport)
    with capturedLogs() as events:
        protocol.dataReceived(produceRequest(1, {"t": {0: encodeMessageSet([(None, b"lost")])}}))
        protocol.dataReceived(fetchRequest(2, {"t": {0: (0, BIG)}}))
    produced, fetched = responseFrames(transport.value())
    assert parseProduceResponse(produced)[1] == {"t": {0: (ErrorCode.UNKNOWN, -1)}}
    error, highWatermark, data = parseFetchResponse(fetched)[1]["t"][0]
    assert (error, highWatermark) == (0, 1)
    assert [m.value for m in decodeMessageSet(data)] == [b"kept"]
    assert not [e for e in events if e["log_level"] >= LogLevel.warn]  # the store logs, once per episode
    protocol.connectionLost(Failure(ConnectionDone()))


def test_aDeletionWhoseWriteFailedIsRetried(stores, twoPartitions):
    """The next deleteBefore to the same offset does the deletion that failed,
    rather than trusting the start offset it had already moved."""
    store, log0, _ = twoPartitions
    size = log0.sizeBytes
    store.db = FailingWrites(store.db)
    failed(stores, log0.deleteBefore(1))
    assert log0.startOffset == 1  # reads below it are refused at once
    stores.reopenAfterRetry(store)
    assert log0.sizeBytes == size  # nothing was deleted
    stores.wait(log0.deleteBefore(1))
    assert log0.sizeBytes < size and log0.startOffset == 1
    assert stored(stores, log0) == [(1, b"b")]
    stores.close(store)
    reopened = stores.open().partitionLog("t", 0)
    assert (reopened.startOffset, reopened.sizeBytes) == (1, log0.sizeBytes)


def test_producerStatesOfAFailedAppendThatBecameDurableAreReloaded(stores, twoPartitions):
    store, log0, _ = twoPartitions
    stores.wait(log0.append(encodeMessageSet([(None, b"c")], 2), 1, 1000, {1: b"before", 2: b"two"}))
    store.db = FailingWrites(store.db, durable=True)
    failed(stores, log0.append(encodeMessageSet([(None, b"maybe")], 3), 1, 1000, {1: b"after", 2: None}))
    assert log0.producerStates() == {1: b"before", 2: b"two"}
    stores.reopenAfterRetry(store)
    assert log0.endOffset == 4
    assert log0.producerStates() == {1: b"after"}  # as stored with the batch


def test_aTopicDeletionWhoseWriteFailedIsMadeOnceWritable(stores, twoPartitions):
    store, log0, _ = twoPartitions
    stores.wait(store.createTopic("kept", 1))
    store.db = FailingWrites(store.db)
    failed(stores, store.deleteTopic("t"))
    assert store.topics() == {"kept": 1}  # stays deleted
    failed(stores, log0.read(0, BIG, 2))
    stores.reopenAfterRetry(store)
    stores.wait(store.whenTopicDeletionsDone())
    stores.close(store)
    db = plyvel.DB(stores.path)
    try:
        left = [key for key in db.iterator(include_value=False) if key[:1] in b"TMDIPX"]
    finally:
        db.close()
    assert left == [b"M" + (1).to_bytes(4, "big") + bytes(4), b"Tkept"]  # kept is topic 1
    assert stores.open().topics() == {"kept": 1}


def test_aRetriedTopicDeletionLeavesATopicMadeAgainAlone(stores, twoPartitions):
    """A deletion's first write made again (as after a reopen) deletes the old
    topic's T key only, not one of the same name made since."""
    store, _, _ = twoPartitions
    stores.wait(store.deleteTopic("t"))
    stores.wait(store.createTopic("t", 1))
    stores.wait(store._storeDeletion(0, "t"))  # as retried after a failed write
    stores.wait(store.whenTopicDeletionsDone())
    assert store.topics() == {"t": 1}
    stores.wait(append(store.partitionLog("t", 0), b"new"))
    stores.close(store)
    store = stores.open()
    assert store.topics() == {"t": 1}
    assert stored(stores, store.partitionLog("t", 0)) == [(0, b"new")]


def test_failedProducerIdReservationHandsOutNothing(stores, twoPartitions):
    store, _, _ = twoPartitions
    store.db = FailingWrites(store.db)
    failed(stores, store.allocateProducerId())
    failed(stores, store.allocateProducerId())
    stores.reopenAfterRetry(store)
    ids = [stores.wait(store.allocateProducerId()) for _ in range(3)]
    assert len(set(ids)) == 3
    stores.close(store)
    assert stores.wait(stores.open().allocateProducerId()) > max(ids)


def test_failedAddPartitionsCanBeAskedAgain(stores, twoPartitions):
    store, _, _ = twoPartitions
    store.db = FailingWrites(store.db)
    with pytest.raises(StorageError):
        stores.wait(store.addPartitions("t", 4))
    assert store.topics() == {"t": 2}
    stores.reopenAfterRetry(store)
    stores.wait(store.addPartitions("t", 4))
    assert store.topics() == {"t": 4}
    stores.close(store)
    assert stores.open().topics() == {"t": 4}


def test_failedCommitChangesNothingAndCanBeMadeAgain(stores, twoPartitions):
    store, _, _ = twoPartitions
    stores.wait(store.commitOffsets("g", {("t", 0): (1, -1, None, 1000)}))
    store.db = FailingWrites(store.db)
    failed(stores, store.commitOffsets("g", {("t", 0): (2, -1, None, 2000), ("t", 1): (3, -1, "m", 2000)}))
    refused = store.commitOffsets("h", {("t", 0): (4, -1, None, 2000)})
    assert refused.called and "not writable" in failed(stores, refused)
    failed(stores, store.deleteGroupOffsets("g"))
    assert store.committedOffsets() == {"g": {("t", 0): (1, -1, None, 1000)}}
    assert store.db.writes == 1
    stores.reopenAfterRetry(store)
    assert store.committedOffsets() == {"g": {("t", 0): (1, -1, None, 1000)}}  # the failed one is not stored
    stores.wait(store.commitOffsets("g", {("t", 0): (2, -1, None, 2000), ("t", 1): (3, -1, "m", 2000)}))
    expected = {"g": {("t", 0): (2, -1, None, 2000), ("t", 1): (3, -1, "m", 2000)}}
    assert store.committedOffsets() == expected
    stores.close(store)
    assert stores.open().committedOffsets() == expected


def test_commitsQueuedBehindAFailedWriteAllFail(stores, twoPartitions):
    store, log0, _ = twoPartitions
    store.db = FailingWrites(store.db)
    release = threading.Event()
    try:
        store.write(release.wait)  # holds the writer thread
        first = append(log0, b"c")
        commits = [store.commitOffsets("g", {("t", p): (p, -1, None, 1000)}) for p in range(3)]
        deleted = store.deleteGroupOffsets("g")  # the group has commits on their way: queued too
        stores.clock.settle()
        assert not deleted.called
    finally:
        release.set()
    for d in [first] + commits + [deleted]:
        failed(stores, d)
    assert store.db.writes == 1
    assert store.committedOffsets() == {} and store._pendingCommits == {}
    assert store.deleteGroupOffsets("g").called  # nothing on its way any more


def test_failedCommitThatBecameDurableIsReloaded(stores, twoPartitions):
    store, _, _ = twoPartitions
    stores.wait(store.commitOffsets("g", {("t", 0): (1, -1, None, 1000), ("t", 1): (1, -1, None, 1000)}))
    store.db = FailingWrites(store.db, durable=True)
    failed(stores, store.commitOffsets("g", {("t", 0): (2, 5, "m", 2000)}))
    assert store.committedOffsets() == {"g": {("t", 0): (1, -1, None, 1000), ("t", 1): (1, -1, None, 1000)}}
    stores.reopenAfterRetry(store)
    # what is stored counts, as for the log end
    assert store.committedOffsets() == {"g": {("t", 0): (2, 5, "m", 2000), ("t", 1): (1, -1, None, 1000)}}
    store.db = FailingWrites(store.db, durable=True)
    failed(stores, store.deleteGroupOffsets("g", [("t", 1)]))
    stores.reopenAfterRetry(store)
    assert store.committedOffsets() == {"g": {("t", 0): (2, 5, "m", 2000)}}
    stores.wait(store.deleteGroupOffsets("g"))  # the writer thread knows what is stored too
    assert store.committedOffsets() == {}
    stores.close(store)
    assert stores.open().committedOffsets() == {}


def test_committedOffsetsOfATopicWhoseDeletionFailedGoOnceItIsMade(stores, twoPartitions):
    store, _, _ = twoPartitions
    stores.wait(store.createTopic("kept", 1))
    stores.wait(store.commitOffsets("g", {("t", 0): (1, -1, None, 1000), ("kept", 0): (2, -1, None, 1000)}))
    store.db = FailingWrites(store.db)
    failed(stores, store.deleteTopic("t"))
    assert store.topics() == {"kept": 1}
    assert store.committedOffsets() == {"g": {("t", 0): (1, -1, None, 1000), ("kept", 0): (2, -1, None, 1000)}}
    stores.reopenAfterRetry(store)
    stores.wait(store.whenTopicDeletionsDone())
    assert store.committedOffsets() == {"g": {("kept", 0): (2, -1, None, 1000)}}
    stores.close(store)
    assert stores.open().committedOffsets() == {"g": {("kept", 0): (2, -1, None, 1000)}}


def test_aRetriedTopicDeletionLeavesOffsetsOfATopicMadeAgainAlone(stores, twoPartitions):
    store, _, _ = twoPartitions
    stores.wait(store.commitOffsets("g", {("t", 0): (1, -1, None, 1000)}))
    stores.wait(store.deleteTopic("t"))
    stores.wait(store.createTopic("t", 1))
    stores.wait(store.commitOffsets("g", {("t", 0): (2, -1, None, 2000)}))
    stores.wait(store._storeDeletion(0, "t"))  # as retried after a failed write
    stores.wait(store.whenTopicDeletionsDone())
    assert store.committedOffsets() == {"g": {("t", 0): (2, -1, None, 2000)}}
    stores.close(store)
    assert stores.open().committedOffsets() == {"g": {("t", 0): (2, -1, None, 2000)}}


# --- ACLs ---


def test_aFailedAclChangeChangesNothingAndOneThatBecameDurableIsReloaded(stores, twoPartitions):
    """ACLs as committed offsets: a failed change is not shown; one whose write
    reached the disk all the same is, once the store is reopened; an authorizer
    over the store follows."""
    from kafkaw.broker.authorizer import AclAuthorizer
    from kafkaw.storage.interfaces import AclBinding

    store, _, _ = twoPartitions
    read = AclBinding(2, "t", 3, "User:a", "*", 3, 3)
    write = AclBinding(2, "t", 3, "User:a", "*", 4, 3)
    stores.wait(store.addAcls([read]))
    authorizer = AclAuthorizer(store)
    store.db = FailingWrites(store.db)
    failed(stores, store.addAcls([write]))
    assert store.acls() == {read} and not authorizer.authorize("User:a", "h", 4, 2, "t")
    stores.reopenAfterRetry(store)
    assert store.acls() == {read}
    store.db = FailingWrites(store.db, durable=True)
    failed(stores, authorizer.addAcls([write]))
    assert not authorizer.authorize("User:a", "h", 4, 2, "t")
    stores.reopenAfterRetry(store)
    assert store.acls() == {read, write}  # what is stored counts
    assert authorizer.authorize("User:a", "h", 4, 2, "t")
    stores.close(store)
    assert stores.open().acls() == {read, write}
