"""LevelDB only: writes go to the writer thread in rounds, the partitions'
appends of a round as one write batch (see LevelDBStore.appendWrite)."""

import threading

from kafkaw.protocol.messages import decodeMessageSet, encodeMessageSet
from tests.unit.storage_helpers import storesFixture

BIG = 1 << 20

stores = storesFixture()


class CountingBatches:
    """A plyvel database that counts the write batches made on it."""

    def __init__(self, db):
        self._db = db
        self.batches = 0

    def write_batch(self, **options):
        self.batches += 1
        return self._db.write_batch(**options)

    def __getattr__(self, name):
        return getattr(self._db, name)


def stored(stores, log):
    data = stores.wait(log.read(log.startOffset, BIG, log.endOffset))
    return [(m.offset, m.value) for m in decodeMessageSet(data)]


def test_appendsOfOneTurnAreOneWriteBatch(stores):
    store = stores.open()
    stores.wait(store.createTopic("t", 3))
    logs = [store.partitionLog("t", number) for number in range(3)]
    counting = store.db = CountingBatches(store.db)
    appends = [
        log.append(encodeMessageSet([(None, b"p%d-%d" % (number, i)) for i in range(number + 1)], 0), number + 1, 1000)
        for number, log in enumerate(logs)
    ]
    for d in appends:
        stores.wait(d)
    assert counting.batches == 1
    assert [log.endOffset for log in logs] == [1, 2, 3]
    store.db = counting._db
    stores.close(store)
    store = stores.open()
    for number in range(3):
        log = store.partitionLog("t", number)
        assert log.endOffset == number + 1
        assert stored(stores, log) == [(i, b"p%d-%d" % (number, i)) for i in range(number + 1)]


def test_writesQueuedDuringARoundGoTogetherInTheNext(stores):
    store = stores.open()
    stores.wait(store.createTopic("t", 3))
    logs = [store.partitionLog("t", number) for number in range(3)]
    counting = store.db = CountingBatches(store.db)
    release = threading.Event()
    makeBatch = counting.write_batch

    def heldFirst(**options):  # the writer thread waits in the first round's batch
        if counting.batches == 0:
            release.wait(10)
        return makeBatch(**options)

    counting.write_batch = heldFirst
    first = logs[0].append(encodeMessageSet([(None, b"a")], 0), 1, 1000)
    stores.threads.settle(quiet=0.2)  # the round starts; the writer holds it
    assert not first.called
    later = [log.append(encodeMessageSet([(None, b"b")], 0), 1, 1000) for log in logs[1:]]
    release.set()
    for d in [first] + later:
        stores.wait(d)
    assert counting.batches == 2  # the first round, then both later appends in one
    assert [stored(stores, log) for log in logs] == [[(0, b"a")], [(0, b"b")], [(0, b"b")]]
    store.db = counting._db
