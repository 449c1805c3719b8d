"""LevelDB only: what deleting a topic, adding partitions, producer ids and
producer states leave in the database, and that each survives a reopen, a
store closed half-way and a killed process (a child python, kill -9).

The contract over both stores is in test_storage_contract.py.
"""

import os
import signal
import subprocess
import sys
import textwrap
import threading

import plyvel
import pytest

from kafkaw.protocol.messages import decodeMessageSet, encodeMessageSet
from kafkaw.protocol.primitives import INT32
from kafkaw.storage import leveldb as leveldbStorage
from kafkaw.storage.interfaces import StorageError
from tests.unit.storage_helpers import storesFixture

BIG = 1 << 20
ROOT = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir)


stores = storesFixture()


def append(stores, log, *vals, timestamp=1000, producerStates=None):
    base = log.endOffset
    stores.wait(log.append(encodeMessageSet([(None, v) for v in vals], base), len(vals), timestamp, producerStates))
    return base


def stored(stores, log):
    data = stores.wait(log.read(log.startOffset, BIG, log.endOffset))
    return [(m.offset, m.value) for m in decodeMessageSet(data)]


def topicId(store, name):
    return store._topics[name].id


def keysOf(keys, tid):
    """The keys of topic id C{tid} among C{keys}: M, D, I, P and X keys carry it after their first byte."""
    return [key for key in keys if key[:1] in b"MDIPX" and key[1:5] == INT32.pack(tid)]


def fill(stores, store, name, partitions=2, batches=5):
    """A topic with data, time-index entries and producer states in every partition."""
    stores.wait(store.createTopic(name, partitions, {"retention.ms": "1000"}))
    for p in range(partitions):
        log = store.partitionLog(name, p)
        for n in range(batches):
            value = b"%s-%d-%d" % (name.encode(), p, n)
            append(stores, log, value, timestamp=1000 + n, producerStates={n: b"state %d" % n})
    return topicId(store, name)


def test_deletedTopicLeavesNoKey(stores):
    store = stores.open()
    doomed = fill(stores, store, "doomed")
    kept = fill(stores, store, "kept")
    before = stores.wait(store.read(lambda: list(store.db.iterator(include_value=False))))
    assert len(keysOf(before, doomed)) == 2 + 2 * (5 + 5 + 5)  # M, and D, I, P per batch
    stores.wait(store.deleteTopic("doomed"))
    stores.wait(store.whenTopicDeletionsDone())
    stores.close(store)
    keys = stores.keys()
    assert keysOf(keys, doomed) == []
    assert b"Tdoomed" not in keys
    assert keysOf(keys, kept) == keysOf(before, kept)
    assert keys == [key for key in before if key not in keysOf(before, doomed) and key != b"Tdoomed"]


def test_deletionGoesInStepsAndLetsOtherWritesThrough(stores, monkeypatch):
    monkeypatch.setattr(leveldbStorage, "_DELETE_BATCHES", 3)
    store = stores.open()
    fill(stores, store, "doomed", partitions=2, batches=5)  # 2 M + 10 D + 10 I + 10 P keys
    other = fill(stores, store, "other", partitions=1, batches=1)
    writes = []
    write = store.write
    monkeypatch.setattr(store, "write", lambda f: writes.append(f) or write(f))
    appendWrite = store.appendWrite
    monkeypatch.setattr(store, "appendWrite", lambda log, f: writes.append(f) or appendWrite(log, f))
    stores.wait(store.deleteTopic("doomed"))
    log = store.partitionLog("other", 0)
    appended = log.append(encodeMessageSet([(None, b"during")], 1), 1, 5000)  # between the steps
    stores.wait(store.whenTopicDeletionsDone())
    stores.wait(appended)
    # 1 (T out, X in) + M:1 + D:4 + I:4 + P:4 + 1 (X out) + the append
    assert len(writes) == 1 + 1 + 4 + 4 + 4 + 1 + 1
    names = [f.__qualname__ for f in writes]
    assert names.index("LevelDBPartitionLog.append.<locals>.fill") < len(writes) - 2  # not behind the whole deletion
    assert stored(stores, log) == [(0, b"other-0-0"), (1, b"during")]
    stores.close(store)
    assert len(keysOf(stores.keys(), other)) == 1 + 2 + 2 + 1  # M, D and I of both batches, P of producer 0


def test_deletionStoppedByCloseGoesOnAtTheNextOpen(stores, monkeypatch):
    monkeypatch.setattr(leveldbStorage, "_DELETE_BATCHES", 1)
    store = stores.open()
    doomed = fill(stores, store, "doomed")
    fill(stores, store, "kept", partitions=1, batches=2)
    stores.wait(store.deleteTopic("doomed"))
    stores.close(store)  # stops the deletion after at most a step
    left = keysOf(stores.keys(), doomed)
    assert b"X" + INT32.pack(doomed) in left and len(left) > 2
    assert b"Tdoomed" not in stores.keys()

    store = stores.open()
    assert store.topics() == {"kept": 1}  # never comes back
    stores.wait(store.whenTopicDeletionsDone())
    assert stored(stores, store.partitionLog("kept", 0)) == [(0, b"kept-0-0"), (1, b"kept-0-1")]
    stores.close(store)
    assert keysOf(stores.keys(), doomed) == []


def test_storeStoppedRightAfterTheFirstWriteOfADeletion(stores):
    """What a crash leaves after the first write (T out, X in): opened, the deletion goes on."""
    store = stores.open()
    doomed = fill(stores, store, "doomed")
    stores.close(store)
    db = plyvel.DB(stores.path)
    db.delete(b"Tdoomed")
    db.put(b"X" + INT32.pack(doomed), b"doomed")
    db.close()
    store = stores.open()
    assert store.topics() == {}
    stores.wait(store.whenTopicDeletionsDone())
    stores.close(store)
    assert keysOf(stores.keys(), doomed) == []


def test_topicMadeAgainDuringTheDeletionKeepsItsKeys(stores, monkeypatch):
    monkeypatch.setattr(leveldbStorage, "_DELETE_BATCHES", 1)
    store = stores.open()
    old = fill(stores, store, "t")
    stores.wait(store.deleteTopic("t"))
    stores.wait(store.createTopic("t", 1))  # while the old keys are being deleted
    new = topicId(store, "t")
    assert new != old
    log = store.partitionLog("t", 0)
    append(stores, log, b"new", producerStates={1: b"mine"})
    stores.wait(store.whenTopicDeletionsDone())
    assert stored(stores, log) == [(0, b"new")]
    stores.close(store)
    keys = stores.keys()
    assert keysOf(keys, old) == []
    assert len(keysOf(keys, new)) == 4
    store = stores.open()
    assert store.topics() == {"t": 1}
    assert store.partitionLog("t", 0).producerStates() == {1: b"mine"}


def test_topicIdsAreNeverReused(stores):
    store = stores.open()
    fill(stores, store, "a", partitions=1, batches=1)
    last = fill(stores, store, "b", partitions=1, batches=1)
    stores.wait(store.deleteTopic("b"))
    stores.wait(store.whenTopicDeletionsDone())
    stores.close(store)
    store = stores.open()  # no T or X key of b is left
    stores.wait(store.createTopic("c", 1))
    assert topicId(store, "c") > last


def test_queuedAppendIsRefusedOnceTheTopicIsDeleted(stores):
    store = stores.open()
    stores.wait(store.createTopic("t", 1))
    log = store.partitionLog("t", 0)
    release = threading.Event()
    try:
        store.write(release.wait)  # holds the writer thread
        appended = log.append(encodeMessageSet([(None, b"late")]), 1, 1000, {1: b"s"})
        deleted = store.deleteTopic("t")
    finally:
        release.set()
    with pytest.raises(StorageError):
        stores.wait(appended)
    stores.wait(deleted)
    stores.wait(store.whenTopicDeletionsDone())
    stores.close(store)
    assert [key for key in stores.keys() if key[:1] != b"S"] == []


def test_retentionUnderWayWhenTheTopicIsDeleted(stores, monkeypatch):
    monkeypatch.setattr(leveldbStorage, "_DELETE_BATCHES", 1)
    store = stores.open()
    doomed = fill(stores, store, "t", partitions=1, batches=6)
    log = store.partitionLog("t", 0)
    retention = log.deleteBefore(5)
    stores.wait(store.deleteTopic("t"))
    assert stores.wait(retention) is None  # stops quietly
    stores.wait(store.whenTopicDeletionsDone())
    stores.close(store)
    assert keysOf(stores.keys(), doomed) == []  # its M key did not come back


def test_addPartitionsIsOneWriteAndSurvivesReopening(stores, monkeypatch):
    store = stores.open()
    tid = fill(stores, store, "t", partitions=2, batches=1)
    writes = []
    write = store.write
    monkeypatch.setattr(store, "write", lambda f: writes.append(f) or write(f))
    d = store.addPartitions("t", 4)
    if not d.called:
        assert store.topics() == {"t": 2}  # shown once stored
    stores.wait(d)
    assert len(writes) == 1
    assert store.topics() == {"t": 4}
    append(stores, store.partitionLog("t", 3), b"p3")
    stores.close(store)
    keys = stores.keys()
    bounds = [key for key in keysOf(keys, tid) if key[:1] == b"M"]
    assert bounds == [b"M" + INT32.pack(tid) + INT32.pack(p) for p in range(4)]
    store = stores.open()
    assert store.topics() == {"t": 4} and store.topicConfigs("t") == {"retention.ms": "1000"}
    assert stored(stores, store.partitionLog("t", 3)) == [(0, b"p3")]
    assert stored(stores, store.partitionLog("t", 0)) == [(0, b"t-0-0")]


def test_deleteTopicBeforeAddedPartitionsAreStored(stores):
    store = stores.open()
    tid = fill(stores, store, "t", partitions=1, batches=1)
    release = threading.Event()
    try:
        store.write(release.wait)
        added = store.addPartitions("t", 3)
        deleted = store.deleteTopic("t")
    finally:
        release.set()
    with pytest.raises(StorageError):
        stores.wait(added)  # the topic was deleted before the new count was stored
    stores.wait(deleted)
    assert store.topics() == {}
    stores.wait(store.whenTopicDeletionsDone())
    stores.close(store)
    assert keysOf(stores.keys(), tid) == [] and b"Tt" not in stores.keys()


def test_addPartitionsRefusedOnceDeleted(stores):
    store = stores.open()
    fill(stores, store, "t", partitions=1, batches=1)
    release = threading.Event()
    try:
        store.write(release.wait)
        deleted = store.deleteTopic("t")
    finally:
        release.set()
    with pytest.raises(StorageError):
        stores.wait(store.addPartitions("t", 3))
    stores.wait(deleted)


def test_producerIdsAreReservedInSyncedBlocks(stores, monkeypatch):
    monkeypatch.setattr(leveldbStorage, "_PRODUCER_ID_BLOCK", 10)
    store = stores.open()
    writes = []
    write = store.write
    monkeypatch.setattr(store, "write", lambda f: writes.append(f) or write(f))
    ids = [stores.wait(store.allocateProducerId()) for _ in range(25)]
    assert ids == list(range(25))
    assert len(writes) == 3
    stores.close(store)
    store = stores.open()
    assert stores.wait(store.allocateProducerId()) == 30  # the rest of the block is skipped


def test_clusterIdIsStoredAtFirstOpen(stores):
    store = stores.open()
    clusterId = store.clusterId()
    stores.close(store)
    db = plyvel.DB(stores.path)
    try:
        assert db.get(b"Scluster.id") == clusterId.encode("ascii")
    finally:
        db.close()


CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from kafkaw.protocol.messages import encodeMessageSet
    from kafkaw.storage import leveldb as leveldbStorage
    from kafkaw.storage.leveldb import LevelDBStore
    from tests.unit.helpers import ThreadResults

    path = sys.argv[1]
    leveldbStorage._DELETE_BATCHES = 1
    threads = ThreadResults()
    store = LevelDBStore(path, False, reactor=threads)
    for name in ("doomed", "kept"):
        threads.wait(store.createTopic(name, 2))
        for p in range(2):
            log = store.partitionLog(name, p)
            for n in range(20):
                data = encodeMessageSet([(None, b"%s-%d-%d" % (name.encode(), p, n))], n)
                threads.wait(log.append(data, 1, 1000 + n, {n: b"state"}))
    ids = [threads.wait(store.allocateProducerId()) for _ in range(5)]
    threads.wait(store.addPartitions("kept", 3))
    print("ids", *ids, flush=True)
    print("doomed", store._topics["doomed"].id, flush=True)
    steps = []
    deleteKeys = store._deleteKeys

    def killedMidWay(keys, sync):
        deleteKeys(keys, sync)
        steps.append(keys)
        if len(steps) == 6:
            os.kill(os.getpid(), signal.SIGKILL)

    store._deleteKeys = killedMidWay
    threads.wait(store.deleteTopic("doomed"))
    print("deleted", flush=True)
    threads.wait(store.whenTopicDeletionsDone())
    print("not killed", flush=True)
    """
)


def test_killedWhileDeletingATopic(stores):
    child = subprocess.run(
        [sys.executable, "-c", CHILD, stores.path],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=os.path.abspath(ROOT)),
        capture_output=True,
        timeout=60,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()
    lines = child.stdout.decode().splitlines()
    assert lines[2:] == ["deleted"]  # killed after the deletion was stored, half-way through its keys
    ids = [int(i) for i in lines[0].split()[1:]]
    doomed = int(lines[1].split()[1])
    left = keysOf(stores.keys(), doomed)
    assert b"X" + INT32.pack(doomed) in left and any(key[:1] == b"D" for key in left)  # killed half-way

    store = stores.open()
    assert store.topics() == {"kept": 3}
    assert stores.wait(store.allocateProducerId()) > max(ids)
    for p in range(2):
        log = store.partitionLog("kept", p)
        assert stored(stores, log) == [(n, b"kept-%d-%d" % (p, n)) for n in range(20)]
        assert log.producerStates() == {n: b"state" for n in range(20)}
    stores.wait(store.whenTopicDeletionsDone())
    stores.wait(store.createTopic("doomed", 1))
    log = store.partitionLog("doomed", 0)
    assert (log.endOffset, log.producerStates()) == (0, {})
    stores.close(store)
    assert keysOf(stores.keys(), doomed) == []
