"""LevelDB only: how committed offsets of consumer groups are kept (the C{O}
keys, byte for byte), that a commit of many partitions is one write and many
load quickly, that commits are synced with --sync, that a topic's offsets go
with its deletion's first write, that acknowledged commits survive a killed
process (a child python, kill -9), and that data dirs written before
committed offsets open without any.

The contract over both stores is in test_storage_contract.py; failed writes
in test_leveldb_recovery.py.
"""

import os
import signal
import struct
import subprocess
import sys
import tarfile
import textwrap
import time

import pytest

from kafkaw.protocol.messages import encodeMessageSet
from kafkaw.storage import leveldb as leveldbStorage
from kafkaw.storage.interfaces import StorageError
from tests.unit.storage_helpers import storesFixture

ROOT = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir)
OLD_DATA = os.path.join(os.path.dirname(__file__), os.pardir, "data", "leveldb-7a50f63.tar.gz")


stores = storesFixture()


class RecordedBatches:
    """A plyvel database that records the options and size of each batch written."""

    def __init__(self, db):
        self._db = db
        self.batches = []  # (options, operations)

    def write_batch(self, **options):
        return _RecordedBatch(self, self._db.write_batch(**options), options)

    def __getattr__(self, name):
        return getattr(self._db, name)


class _RecordedBatch:
    def __init__(self, owner, batch, options):
        self._owner = owner
        self._batch = batch
        self._options = options
        self._operations = 0

    def put(self, key, value):
        self._operations += 1
        self._batch.put(key, value)

    def delete(self, key):
        self._operations += 1
        self._batch.delete(key)

    def write(self):
        self._batch.write()
        self._owner.batches.append((self._options, self._operations))


def test_keysAndValues(stores):
    store = stores.open()
    stores.wait(store.commitOffsets("gr\u00fcppe", {("t", 7): (1234, 5, "m\u00e9ta", 1700000000000)}))
    offsets = {("topic", 0): (-1, -1, None, -5), ("topic", 2**31 - 1): (2**63 - 1, 0, "", 0)}
    stores.wait(store.commitOffsets("g", offsets))
    stores.close(store)
    group = "gr\u00fcppe".encode("utf-8")
    assert stores.items(b"O") == [
        (
            b"O"
            + struct.pack(">h", 1)  # group length
            + b"g"  # group
            + struct.pack(">h", 5)  # topic length
            + b"topic"  # topic
            + struct.pack(">i", 0),  # partition
            struct.pack(">q", -1)  # offset
            + struct.pack(">i", -1)  # leader epoch
            + struct.pack(">q", -5)  # commit timestamp
            + struct.pack(">h", -1),  # metadata: null
        ),
        (
            b"O" + struct.pack(">h", 1) + b"g" + struct.pack(">h", 5) + b"topic" + struct.pack(">i", 2**31 - 1),
            struct.pack(">q", 2**63 - 1)  # offset
            + struct.pack(">i", 0)  # leader epoch
            + struct.pack(">q", 0)  # commit timestamp
            + struct.pack(">h", 0),  # metadata: empty
        ),
        (
            b"O"
            + struct.pack(">h", len(group))  # group length (UTF-8 bytes)
            + group  # group
            + struct.pack(">h", 1)  # topic length
            + b"t"  # topic
            + struct.pack(">i", 7),  # partition
            struct.pack(">q", 1234)  # offset
            + struct.pack(">i", 5)  # leader epoch
            + struct.pack(">q", 1700000000000)  # commit timestamp
            + struct.pack(">h", len("m\u00e9ta".encode("utf-8")))  # metadata length
            + "m\u00e9ta".encode("utf-8"),  # metadata
        ),
    ]


def test_aGroupsKeysAreOneRange(stores):
    store = stores.open()
    for group in ("a", "ab", "b", "a\x00"):
        stores.wait(store.commitOffsets(group, {("t", p): (p, -1, None, 0) for p in range(3)}))
    stores.close(store)
    keys = [key for key, _ in stores.items(b"O")]
    prefix = leveldbStorage._groupPrefix("a")
    mine = [n for n, key in enumerate(keys) if key.startswith(prefix)]
    assert len(mine) == 3 and mine == list(range(mine[0], mine[0] + 3))


def test_aCommitOf1000PartitionsIsOneWrite(stores):
    store = stores.open()
    stores.wait(store.createTopic("t", 1000))
    recorded = store.db = RecordedBatches(store.db)
    stores.wait(store.commitOffsets("g", {("t", p): (p, 0, "meta", 1000) for p in range(1000)}))
    assert recorded.batches == [({"sync": False}, 1000)]
    stores.wait(store.commitOffsets("h", {("t", p): (p, 0, None, 1000) for p in range(500)}))
    stores.wait(store.deleteGroupOffsets("g", [("t", p) for p in range(0, 1000, 2)] + [("u", 0)]))
    assert recorded.batches[1:] == [({"sync": False}, 500), ({"sync": False}, 500)]
    stores.wait(store.deleteGroupOffsets("g"))
    assert recorded.batches[3:] == [({"sync": False}, 500)]
    stores.wait(store.deleteGroupOffsets("g"))  # nothing left: no write
    # the topic's definition out, its X key in, the offsets of both groups out: one write
    stores.wait(store.deleteTopic("t"))
    assert recorded.batches[4] == ({"sync": False}, 2 + 500)
    stores.close(store)
    assert stores.items(b"O") == []


def test_syncStoreSyncsCommitsAndDeletions(stores):
    store = stores.open(sync=True)
    recorded = store.db = RecordedBatches(store.db)
    stores.wait(store.commitOffsets("g", {("t", 0): (1, 0, None, 1000), ("t", 1): (1, 0, None, 1000)}))
    stores.wait(store.deleteGroupOffsets("g", [("t", 0)]))
    stores.wait(store.deleteGroupOffsets("g"))
    assert recorded.batches == [({"sync": True}, 2), ({"sync": True}, 1), ({"sync": True}, 1)]


def test_tenThousandCommittedPartitionsLoadQuickly(stores):
    store = stores.open()
    expected = {}
    for group in range(10):
        offsets = {
            (f"topic-{topic}", p): (10**9 + p, 3, f"consumer-{p}", 1700000000000)
            for topic in range(10)
            for p in range(100)
        }
        stores.wait(store.commitOffsets(f"group-{group}", offsets))
        expected[f"group-{group}"] = offsets
    stores.close(store)
    started = time.perf_counter()
    store = stores.open()
    opened = time.perf_counter() - started
    assert store.committedOffsets() == expected
    assert opened < 0.5, f"opening with 10,000 committed offsets took {opened:.3f} s"
    started = time.perf_counter()
    store.committedOffsets()
    assert time.perf_counter() - started < 0.1


def test_topicOffsetsGoWithTheDeletionsFirstWrite(stores, monkeypatch):
    monkeypatch.setattr(leveldbStorage, "_DELETE_BATCHES", 1)
    store = stores.open()
    stores.wait(store.createTopic("doomed", 2))
    stores.wait(store.createTopic("kept", 1))
    for p in range(2):
        log = store.partitionLog("doomed", p)
        for n in range(5):
            stores.wait(log.append(encodeMessageSet([(None, b"x")], n), 1, 1000))
    first = {("doomed", 0): (1, 0, None, 0), ("doomed", 1): (2, 0, None, 0), ("kept", 0): (3, 0, None, 0)}
    stores.wait(store.commitOffsets("g", first))
    stores.wait(store.commitOffsets("h", {("doomed", 1): (4, 0, None, 0)}))
    doomed = store._topics["doomed"].id
    stores.wait(store.deleteTopic("doomed"))
    stores.close(store)  # stops the deletion's steps at once
    keys = [key for key, _ in stores.items()]
    assert b"X" + struct.pack(">i", doomed) in keys and any(key[:1] == b"D" for key in keys)  # the steps are not done
    kept = leveldbStorage._groupPrefix("g") + leveldbStorage._offsetKeySuffix("kept", 0)
    assert [key for key in keys if key[:1] == b"O"] == [kept]
    store = stores.open()
    assert store.committedOffsets() == {"g": {("kept", 0): (3, 0, None, 0)}}
    stores.wait(store.whenTopicDeletionsDone())


def test_commitsAreRefusedOnceClosing(stores):
    store = stores.open()
    stores.wait(store.commitOffsets("g", {("t", 0): (1, 0, None, 0)}))
    stores.close(store)
    with pytest.raises(StorageError):
        stores.wait(store.commitOffsets("g", {("t", 0): (2, 0, None, 0)}))
    with pytest.raises(StorageError):
        stores.wait(store.deleteGroupOffsets("g"))
    assert store.committedOffsets() == {"g": {("t", 0): (1, 0, None, 0)}}
    assert stores.open().committedOffsets() == {"g": {("t", 0): (1, 0, None, 0)}}


def test_aDataDirOf7a50f63OpensWithoutCommittedOffsets(stores, tmp_path):
    with tarfile.open(OLD_DATA) as tar:
        tar.extractall(tmp_path, filter="data")
    store = stores.open()
    assert store.committedOffsets() == {}
    topics = store.topics()
    stores.wait(store.commitOffsets("g", {("events", 1): (3, -1, None, 1000)}))
    stores.close(store)
    store = stores.open()
    assert store.topics() == topics
    assert store.committedOffsets() == {"g": {("events", 1): (3, -1, None, 1000)}}


def test_aDataDirWithoutOKeysOpensWithoutCommittedOffsets(stores):
    """As main wrote them before committed offsets: topics, producer states, a deletion stopped half-way."""
    store = stores.open()
    stores.wait(store.createTopic("t", 2, {"retention.ms": "1000"}))
    stores.wait(store.createTopic("doomed", 1))
    log = store.partitionLog("t", 1)
    stores.wait(log.append(encodeMessageSet([(None, b"a")]), 1, 1000, {1: b"state"}))
    stores.wait(store.allocateProducerId())
    stores.wait(store.deleteTopic("doomed"))
    stores.close(store)
    assert stores.items(b"O") == []
    store = stores.open()
    assert store.committedOffsets() == {}
    assert store.topics() == {"t": 2}
    stores.wait(store.whenTopicDeletionsDone())


CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from kafkaw.protocol.messages import encodeMessageSet
    from kafkaw.storage import leveldb as leveldbStorage
    from kafkaw.storage.leveldb import LevelDBStore
    from tests.unit.helpers import ThreadResults

    path, sync, rounds = sys.argv[1], sys.argv[2] == "sync", int(sys.argv[3])
    leveldbStorage._DELETE_BATCHES = 1
    threads = ThreadResults()
    store = LevelDBStore(path, sync, reactor=threads)
    for name in ("doomed", "kept"):
        threads.wait(store.createTopic(name, 4))
        for p in range(4):
            log = store.partitionLog(name, p)
            for n in range(10):
                threads.wait(log.append(encodeMessageSet([(None, b"x")], n), 1, 1000 + n))
    everything = [(topic, p) for topic in ("doomed", "kept") for p in range(4)] + [("nope", p) for p in range(200)]
    threads.wait(store.commitOffsets("old", {key: (1, 0, "old", 1000) for key in everything}))
    threads.wait(store.deleteTopic("doomed"))
    print("deleted", flush=True)
    for n in range(rounds):
        group = "g%d" % (n % 3)
        threads.wait(store.commitOffsets(group, {key: (n, n % 7, "m%d" % n, n) for key in everything}))
        print("acked", group, n, flush=True)
    # one commit on its way, then killed (the deletion's steps are under way too)
    store.commitOffsets("g0", {key: (rounds, 0, None, rounds) for key in everything})
    threads.settle(0.001)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


@pytest.mark.parametrize("sync", ["nosync", "sync"])
def test_acknowledgedCommitsSurviveKill9(stores, sync):
    rounds = 30
    child = subprocess.run(
        [sys.executable, "-c", CHILD, stores.path, sync, str(rounds)],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=os.path.abspath(ROOT)),
        capture_output=True,
        timeout=60,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()
    lines = child.stdout.decode().splitlines()
    assert lines[0] == "deleted" and len(lines) == 1 + rounds
    lastAcked = {}
    for line in lines[1:]:
        _, group, n = line.split()
        lastAcked[group] = int(n)

    store = stores.open()
    offsets = store.committedOffsets()
    kept = [("kept", p) for p in range(4)] + [("nope", p) for p in range(200)]
    # the deleted topic's offsets never come back; the others are all there
    assert offsets["old"] == {key: (1, 0, "old", 1000) for key in kept}
    assert set(offsets) == {"old", "g0", "g1", "g2"}
    everything = [("doomed", p) for p in range(4)] + kept  # commits made after the deletion keep all
    for group in ("g1", "g2"):
        n = lastAcked[group]
        assert offsets[group] == {key: (n, n % 7, "m%d" % n, n) for key in everything}
    # the commit on its way when killed: all or nothing
    n = lastAcked["g0"]
    assert offsets["g0"] in (
        {key: (n, n % 7, "m%d" % n, n) for key in everything},
        {key: (rounds, 0, None, rounds) for key in everything},
    )
    stores.wait(store.whenTopicDeletionsDone())
    assert store.topics() == {"kept": 4}
