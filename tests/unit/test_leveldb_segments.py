"""LevelDB only: big batches in segment files (kafkaw/storage/segments.py).

What lands where, segments rolled and deleted by retention and with their
topic, and what an unclean stop leaves: bytes written but never stored are
dropped, and batches whose segment bytes did not reach the disk (a power loss
without --sync) cut the log there. A crash is simulated by stopping the
store's threads and closing LevelDB without L{LevelDBStore.close}, which is
what a killed process leaves on disk; the contract suite runs every store
test over segments too (test_storage_contract.py, "leveldb-segments").
"""

import os

import pytest

from kafkaw.protocol.messages import decodeMessageSet, encodeMessageSet
from kafkaw.protocol.records import encodeBatch, storedEntriesIntact
from kafkaw.storage import leveldb as leveldbStorage, segments
from kafkaw.storage.leveldb import LevelDBStore
from tests.unit.storage_helpers import LevelDBStores, stopThreads

BIG = 1 << 22
VALUE = b"v" * 2100  # two of these make a batch that goes to a segment (>= 4096 bytes)


class SegmentStores(LevelDBStores):
    def open(self, sync=False, **options):
        return self._created(LevelDBStore(self.path, sync, reactor=self.threads, **options))

    def crash(self, store):
        """Leave the store as a killed process would: no final sync, no clean close."""
        self._open.remove(store)
        stopThreads(store)
        store.db.close()
        store._files.closeAll()


@pytest.fixture
def stores(tmp_path):
    s = SegmentStores(tmp_path)
    try:
        yield s
    finally:
        s.closeAll()


def append(stores, log, *vals, producerStates=None):
    base = log.endOffset
    stores.wait(log.append(encodeMessageSet([(None, v) for v in vals], base), len(vals), 1000, producerStates))
    return base


def stored(stores, log):
    data = stores.wait(log.read(log.startOffset, BIG, log.endOffset))
    return [(m.offset, m.value) for m in decodeMessageSet(data)]


def dataValues(store, log):
    return list(store.db.iterator(prefix=log._dataPrefix, include_key=False))


def segmentFiles(log):
    directory = log._segmentDir
    return sorted(os.listdir(directory)) if os.path.isdir(directory) else []


def test_bigBatchesGoToSegmentsSmallOnesStayInLevelDB(stores):
    store = stores.open()
    stores.wait(store.createTopic("t", 1))
    log = store.partitionLog("t", 0)
    append(stores, log, b"small")
    append(stores, log, VALUE, VALUE)
    append(stores, log, b"small again")
    values = dataValues(store, log)
    assert [segments.isPointer(v) for v in values] == [False, True, False]
    assert segments.decodePointer(values[1])[:2] == (1, 0)  # segment named by its first offset, at byte 0
    assert segmentFiles(log) == ["%020d.log" % 1]
    expected = [(0, b"small"), (1, VALUE), (2, VALUE), (3, b"small again")]
    assert stored(stores, log) == expected
    assert log.sizeBytes == sum(map(segments.storedSize, values))
    stores.close(store)
    store = stores.open()
    assert stored(stores, store.partitionLog("t", 0)) == expected


def test_segmentsRollAndRetentionDeletesWholeOnes(stores):
    store = stores.open(inlineBytes=0, segmentBytes=10000)
    stores.wait(store.createTopic("t", 1))
    log = store.partitionLog("t", 0)
    for n in range(6):
        append(stores, log, VALUE, VALUE)  # about 4,300 bytes: two per segment
    assert segmentFiles(log) == ["%020d.log" % base for base in (0, 4, 8)]
    stores.wait(log.deleteBefore(5))  # offsets 0-3 (the first segment) all gone, 4 still there
    assert segmentFiles(log) == ["%020d.log" % base for base in (4, 8)]
    stores.wait(log.deleteBefore(12))  # everything: the current segment stays, for the next append
    assert segmentFiles(log) == ["%020d.log" % 8]
    append(stores, log, VALUE, VALUE)
    assert stored(stores, log) == [(12, VALUE), (13, VALUE)]
    assert segmentFiles(log) == ["%020d.log" % base for base in (8, 12)]


def test_deletedTopicsSegmentsGo(stores):
    store = stores.open(inlineBytes=0)
    stores.wait(store.createTopic("doomed", 2))
    stores.wait(store.createTopic("kept", 1))
    for name, partition in (("doomed", 0), ("doomed", 1), ("kept", 0)):
        append(stores, store.partitionLog(name, partition), b"x")
    doomed = [store.partitionLog("doomed", p)._segmentDir for p in (0, 1)]
    kept = store.partitionLog("kept", 0)
    stores.wait(store.deleteTopic("doomed"))
    stores.wait(store.whenTopicDeletionsDone())
    assert not any(map(os.path.exists, doomed))
    assert stored(stores, kept) == [(0, b"x")]


def test_filesOfATopicDeletedBeforeItsFilesWereAreDeletedAtOpen(stores):
    store = stores.open(inlineBytes=0)
    stores.wait(store.createTopic("t", 1))
    append(stores, store.partitionLog("t", 0), b"x")
    stores.close(store)
    orphan = segments.partitionDir(store._segmentsPath, 999, 0)
    os.makedirs(orphan)
    open(segments.segmentPath(orphan, 0), "wb").close()
    store = stores.open()
    assert not os.path.exists(orphan)
    assert stored(stores, store.partitionLog("t", 0)) == [(0, b"x")]


def test_bytesWrittenButNeverStoredAreDroppedAtOpen(stores):
    store = stores.open(inlineBytes=0, segmentBytes=10000)
    stores.wait(store.createTopic("t", 1))
    log = store.partitionLog("t", 0)
    append(stores, log, VALUE, VALUE)
    current = log._segmentPath(0)
    size = os.path.getsize(current)
    stores.crash(store)
    # A write that never got its pointer stored: a tail, and a next segment.
    with open(current, "ab") as f:
        f.write(b"torn batch")
    open(log._segmentPath(2), "wb").close()
    store = stores.open(inlineBytes=0, segmentBytes=10000)
    log = store.partitionLog("t", 0)
    assert os.path.getsize(current) == size
    assert segmentFiles(log) == ["%020d.log" % 0]
    append(stores, log, VALUE)
    assert stored(stores, log) == [(0, VALUE), (1, VALUE), (2, VALUE)]


@pytest.mark.parametrize("damage", ["truncated", "zeroed"])
def test_batchesWhoseSegmentBytesAreLostCutTheLogThere(stores, damage, monkeypatch):
    monkeypatch.setattr(leveldbStorage, "_CHECKPOINT_SECONDS", 3600)  # nothing synced after the first
    store = stores.open(inlineBytes=0)
    stores.wait(store.createTopic("t", 1))
    log = store.partitionLog("t", 0)
    append(stores, log, b"synced")
    stores.wait(store.write(store._checkpoint))
    positions = []
    for n in range(1, 5):
        positions.append(os.path.getsize(log._segmentPath(0)))
        append(stores, log, b"unsynced %d" % n, producerStates={7: b"state %d" % n})
    assert log._written.synced == 1
    stores.crash(store)
    path = log._segmentPath(0)
    if damage == "truncated":  # the file's last pages never reached the disk
        os.truncate(path, positions[2] + 5)
    else:  # its size did, its data did not
        with open(path, "r+b") as f:
            f.seek(positions[2])
            f.write(b"\0" * (os.path.getsize(path) - positions[2]))
    store = stores.open(inlineBytes=0)
    log = store.partitionLog("t", 0)
    assert (log.endOffset, log.producerStates()) == (3, {})
    assert stored(stores, log) == [(0, b"synced"), (1, b"unsynced 1"), (2, b"unsynced 2")]
    assert log._written.synced == 3
    append(stores, log, b"after")
    assert stored(stores, log)[-1] == (3, b"after")
    stores.close(store)
    store = stores.open(inlineBytes=0)
    assert [offset for offset, _ in stored(stores, store.partitionLog("t", 0))] == [0, 1, 2, 3]


def test_anIntactLogIsCheckedOnceAndKeptWhole(stores, monkeypatch):
    monkeypatch.setattr(leveldbStorage, "_CHECKPOINT_SECONDS", 3600)
    store = stores.open(inlineBytes=0)
    stores.wait(store.createTopic("t", 1))
    log = store.partitionLog("t", 0)
    for n in range(3):
        append(stores, log, b"m%d" % n, producerStates={1: b"s%d" % n})
    assert log._written.synced == 0
    stores.crash(store)  # a kill -9: the page cache kept every byte
    store = stores.open(inlineBytes=0)
    log = store.partitionLog("t", 0)
    assert (log.endOffset, log.producerStates(), log._written.synced) == (3, {1: b"s2"}, 3)


def test_withSyncEveryBatchIsSyncedAtOnce(stores):
    store = stores.open(sync=True, inlineBytes=0)
    stores.wait(store.createTopic("t", 1))
    log = store.partitionLog("t", 0)
    append(stores, log, b"x")
    assert (log._written.synced, store._unsynced) == (1, {})


def test_aCleanCloseSyncsSegments(stores, monkeypatch):
    monkeypatch.setattr(leveldbStorage, "_CHECKPOINT_SECONDS", 3600)
    store = stores.open(inlineBytes=0)
    stores.wait(store.createTopic("t", 1))
    append(stores, store.partitionLog("t", 0), b"x")
    stores.close(store)
    store = stores.open(inlineBytes=0)
    assert store.partitionLog("t", 0)._written.synced == 1


@pytest.mark.parametrize("magic", [0, 2])
def test_storedEntriesIntact(magic):
    if magic == 0:
        data = encodeMessageSet([(None, b"a"), (None, b"b")], 5)
    else:
        data = encodeBatch([(None, b"a")], 5) + encodeBatch([(None, b"b")], 6)
    assert storedEntriesIntact(data)
    assert not storedEntriesIntact(data[:-1])
    assert not storedEntriesIntact(data[:-3] + b"\0\0\0")
    assert not storedEntriesIntact(b"\0" * len(data))
    assert not storedEntriesIntact(b"")
