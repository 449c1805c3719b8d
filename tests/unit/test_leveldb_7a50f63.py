"""A data directory written by main's storage as of commit 7a50f63 (before
cluster ids, producer ids and states, topic deletion and added partitions)
keeps working: every topic, config, bound, time-index entry and stored byte
reads back as written, and the new operations work on it.

tests/data/leveldb-7a50f63.tar.gz was made by tests/data/make-leveldb-7a50f63.py
running that commit's code; the SHA-256 sums below are what it printed.
"""

import hashlib
import os
import tarfile

import plyvel
import pytest

from kafkaw.protocol.messages import encodeMessageSet, expandMessageSet
from kafkaw.storage.leveldb import LevelDBStore
from tests.unit.helpers import ThreadResults

DATA = os.path.join(os.path.dirname(__file__), os.pardir, "data", "leveldb-7a50f63.tar.gz")
BIG = 1 << 20

TOPICS = {"audit": 1, "events": 2, "metrics": 1}
CONFIGS = {
    "audit": {},
    "events": {"retention.ms": "86400000", "retention.bytes": "-1"},
    "metrics": {"retention.bytes": "1000"},
}
# (topic, partition) -> (startOffset, endOffset, sizeBytes, SHA-256 of the bytes read from the start)
BOUNDS = {
    ("audit", 0): (0, 0, 0, hashlib.sha256(b"").hexdigest()),
    ("events", 0): (4, 10, 204, "e9157f79f035f09d9549d884dd22048c9741e51abd73bbd2264ee4a9f910ea15"),
    ("events", 1): (0, 3, 85, "ca869ecdabcafa7cfade9a42223c24aee5f696dcc52cc34e6fa15eca7568d511"),
    ("metrics", 0): (5, 5, 0, hashlib.sha256(b"").hexdigest()),
}
# (topic, partition) -> every message from the log start, wrappers expanded: (offset, key, value)
MESSAGES = {
    ("audit", 0): [],
    ("events", 0): [
        (4, None, b"b4"),  # the batch of 3-4 stays: retention passes batch boundaries
        (5, None, b"c5"),
        (6, None, b"g6"),  # g6-g8: one gzip wrapper
        (7, None, b"g7"),
        (8, None, b"g8"),
        (9, None, b"d9"),
    ],
    ("events", 1): [(0, b"key", b"x0"), (1, None, None), (2, None, b"x2")],
    ("metrics", 0): [],
}


@pytest.fixture
def reactor():
    return ThreadResults()


@pytest.fixture
def path(tmp_path):
    with tarfile.open(DATA) as tar:
        # filter= (safe extraction) exists from Python 3.11.4; the tarball is ours either way.
        tar.extractall(tmp_path, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    return str(tmp_path / "leveldb")


@pytest.fixture
def store(path, reactor):
    s = LevelDBStore(path, False, reactor=reactor)
    yield s
    reactor.wait(s.close())


def expanded(data):
    return [(m.offset, m.key, m.value) for m in expandMessageSet(data)]


def test_everyTopicConfigBoundAndByte(store, reactor):
    assert store.topics() == TOPICS
    for topic in TOPICS:
        assert store.topicConfigs(topic) == CONFIGS[topic]
    for (topic, partition), (start, end, size, digest) in BOUNDS.items():
        log = store.partitionLog(topic, partition)
        assert (log.startOffset, log.endOffset, log.sizeBytes) == (start, end, size), (topic, partition)
        data = reactor.wait(log.read(start, BIG, end))
        assert hashlib.sha256(data).hexdigest() == digest, (topic, partition)
        assert expanded(data) == MESSAGES[topic, partition]
        assert log.producerStates() == {}


def test_batchesAndTimeIndex(store, reactor):
    events0 = store.partitionLog("events", 0)
    batches = reactor.wait(events0.oldestBatches(10))
    assert [(base, nextOffset) for base, nextOffset, _ in batches] == [(4, 5), (5, 6), (6, 9), (9, 10)]
    assert sum(size for _, _, size in batches) == 204
    # The batch of 3-4 stayed (retention passes batch boundaries); c5 was stored at 2000, not 1500.
    assert reactor.wait(events0.batchesBefore(10**12, 10)) == [9, 6, 5, 3]
    assert reactor.wait(events0.batchesBefore(2000, 10)) == [5, 3]
    assert reactor.wait(events0.firstBatchSince(2001)) == 6
    assert reactor.wait(events0.firstBatchSince(4001)) is None
    events1 = store.partitionLog("events", 1)
    assert reactor.wait(events1.batchesBefore(10**12, 10)) == [2, 0]
    assert reactor.wait(events1.oldestBatches(10)) == [(0, 2, 57), (2, 3, 28)]
    metrics = store.partitionLog("metrics", 0)
    assert reactor.wait(metrics.oldestBatches(10)) == []
    assert reactor.wait(metrics.firstBatchSince(0)) is None


def test_storeGoesOnAfterReopening(path, reactor):
    store = LevelDBStore(path, False, reactor=reactor)
    log = store.partitionLog("events", 0)
    reactor.wait(log.append(encodeMessageSet([(None, b"e10")], 10), 1, 3500))  # stored as 4000
    reactor.wait(store.partitionLog("metrics", 0).append(encodeMessageSet([(None, b"m5")], 5), 1, 8000))
    reactor.wait(store.createTopic("new", 1))
    reactor.wait(store.close())

    store = LevelDBStore(path, False, reactor=reactor)
    try:
        assert store.topics() == dict(TOPICS, new=1)
        log = store.partitionLog("events", 0)
        assert (log.startOffset, log.endOffset) == (4, 11)
        assert expanded(reactor.wait(log.read(10, BIG, 11))) == [(10, None, b"e10")]
        assert reactor.wait(log.batchesBefore(4000, 2)) == [10, 9]
        metrics = store.partitionLog("metrics", 0)
        assert (metrics.startOffset, metrics.endOffset) == (5, 6)
        assert expanded(reactor.wait(metrics.read(5, BIG, 6))) == [(5, None, b"m5")]
        # the new topic got an id of its own: it reads none of the old topics' keys
        assert store.partitionLog("new", 0).endOffset == 0
        assert reactor.wait(store.partitionLog("new", 0).read(0, BIG, 1)) == b""
    finally:
        reactor.wait(store.close())


def test_newOperationsOnTheOldStore(path, reactor):
    store = LevelDBStore(path, False, reactor=reactor)
    clusterId = store.clusterId()
    first = reactor.wait(store.allocateProducerId())
    reactor.wait(store.addPartitions("audit", 3))
    reactor.wait(store.deleteTopic("events"))
    reactor.wait(store.whenTopicDeletionsDone())
    reactor.wait(store.close())

    store = LevelDBStore(path, False, reactor=reactor)
    try:
        assert store.clusterId() == clusterId
        assert reactor.wait(store.allocateProducerId()) > first
        assert store.topics() == {"audit": 3, "metrics": 1}
        assert store.topicConfigs("audit") == {}
        assert store.topicConfigs("metrics") == CONFIGS["metrics"]
    finally:
        reactor.wait(store.close())
    db = plyvel.DB(path)
    try:
        # topic ids are the order of creation: events was 0
        for prefix in (b"M", b"D", b"I", b"P"):
            assert list(db.iterator(prefix=prefix + bytes(4), include_value=False)) == []
        assert db.get(b"Tevents") is None
    finally:
        db.close()
