"""LevelDB storage (plyvel): the default backend.

Key layout (all integers big-endian, so key order is log order):

    T <topic name>                          -> topic id int32, partitions int32
    M <topic id><partition>                 -> log start int64, log end int64
    D <topic id><partition><last offset>    -> one stored message set
    I <topic id><partition><time ms><base>  -> (empty) append-time index

Each append writes its message set, its time-index entry and the new log
start/end in one C{WriteBatch}. Data is keyed by the *last* offset of its
message set, so one iterator seek to the wanted offset lands on the set that
holds it; reads return stored bytes sliced, never decoded.

All LevelDB calls run in threads: writes in a single thread (so they are
applied in call order), reads in a small pool. Closing waits for every
outstanding call before the database is closed, as plyvel has no locking.
"""

import os
import struct

import plyvel
from twisted.internet import defer, threads
from twisted.plugin import IPlugin
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from kafkaw.protocol.messages import skipBelow
from kafkaw.storage.interfaces import IPartitionLog, IStorageFactory, IStore, StorageError

_TOPIC_VALUE = struct.Struct(">ii")
_PARTITION_KEY = struct.Struct(">ii")
_BOUNDS = struct.Struct(">qq")
_OFFSET = struct.Struct(">q")
_TIME_ENTRY = struct.Struct(">qq")
_MAX_KEY_SUFFIX = b"\xff" * 16


@implementer(IPartitionLog)
class LevelDBPartitionLog:
    def __init__(self, store, topicId, partition, startOffset, endOffset):
        self._store = store
        partitionKey = _PARTITION_KEY.pack(topicId, partition)
        self._boundsKey = b"M" + partitionKey
        self._dataPrefix = b"D" + partitionKey
        self._timePrefix = b"I" + partitionKey
        self.startOffset = startOffset
        self.endOffset = endOffset

    def append(self, messageSet, count, timestamp):
        base = self.endOffset
        newEnd = base + count
        sync = self._store.sync
        db = self._store.db

        def write():
            with db.write_batch(sync=sync) as batch:
                batch.put(self._dataPrefix + _OFFSET.pack(newEnd - 1), messageSet)
                batch.put(self._timePrefix + _TIME_ENTRY.pack(timestamp, base), b"")
                batch.put(self._boundsKey, _BOUNDS.pack(self.startOffset, newEnd))

        def stored(_):
            self.endOffset = newEnd

        return self._store.write(write).addCallback(stored)

    def read(self, offset, maxBytes, endOffset):
        db = self._store.db
        prefix = self._dataPrefix

        def read():
            pieces = []
            total = 0
            iterator = db.iterator(
                start=prefix + _OFFSET.pack(max(offset, 0)),
                stop=prefix + _OFFSET.pack(endOffset),
                include_key=False,
            )
            with iterator:
                for data in iterator:
                    if not pieces:
                        data = data[skipBelow(data, offset) :]
                    pieces.append(data)
                    total += len(data)
                    if total >= maxBytes:
                        break
            if pieces and total > maxBytes:
                pieces[-1] = pieces[-1][: len(pieces[-1]) - (total - max(maxBytes, 0))]
            return pieces[0] if len(pieces) == 1 else b"".join(pieces)

        return self._store.read(read)

    def batchesBefore(self, timestamp, maxNumber):
        db = self._store.db
        prefix = self._timePrefix

        def scan():
            found = []
            # Keys hold signed times, so a negative one would sort above them all;
            # no append is that old anyway.
            if maxNumber <= 0 or timestamp < 0:
                return found
            stop = prefix + _OFFSET.pack(timestamp) + _MAX_KEY_SUFFIX[:8]
            iterator = db.iterator(start=prefix, stop=stop, include_stop=True, reverse=True, include_value=False)
            with iterator:
                for key in iterator:
                    found.append(_TIME_ENTRY.unpack_from(key, len(prefix))[1])
                    if len(found) >= maxNumber:
                        break
            return found

        return self._store.read(scan)


@implementer(IStore)
class LevelDBStore:
    """A LevelDB database holding every topic of one broker."""

    def __init__(self, path, sync, reactor=None):
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        self.sync = bool(sync)
        os.makedirs(path, exist_ok=True)
        try:
            self.db = plyvel.DB(path, create_if_missing=True)
        except plyvel.IOError as e:
            why = e.args[0].decode(errors="replace") if e.args and isinstance(e.args[0], bytes) else str(e)
            if "lock" in why.lower():
                why += " (is another broker using this data directory?)"
            raise StorageError(f"cannot open LevelDB at {path}: {why}") from None
        self._topics = {}  # name -> (topic id, [LevelDBPartitionLog])
        self._loadTopics()
        self._writer = ThreadPool(1, 1, "kafkaw-leveldb-writer")
        self._readers = ThreadPool(1, 4, "kafkaw-leveldb-reader")
        self._writer.start()
        self._readers.start()
        self._outstanding = set()
        self._closing = None

    def _loadTopics(self):
        for key, value in self.db.iterator(prefix=b"T"):
            topicId, partitions = _TOPIC_VALUE.unpack(value)
            logs = []
            for partition in range(partitions):
                bounds = self.db.get(b"M" + _PARTITION_KEY.pack(topicId, partition))
                start, end = _BOUNDS.unpack(bounds) if bounds else (0, 0)
                logs.append(LevelDBPartitionLog(self, topicId, partition, start, end))
            self._topics[key[1:].decode("utf-8")] = (topicId, logs)

    def _run(self, pool, function):
        if self._closing is not None:
            return defer.fail(StorageError("the store is closing"))
        d = threads.deferToThreadPool(self._reactor, pool, function)
        self._outstanding.add(d)

        def done(result):
            self._outstanding.discard(d)
            return result

        return d.addBoth(done)

    def write(self, function):
        """Run C{function} in the writer thread (calls run in order)."""
        return self._run(self._writer, function)

    def read(self, function):
        """Run C{function} in a reader thread."""
        return self._run(self._readers, function)

    def topics(self):
        return {name: len(logs) for name, (_, logs) in self._topics.items()}

    def createTopic(self, name, partitions):
        if name in self._topics:
            return defer.fail(StorageError(f"topic {name!r} exists"))
        topicId = max((tid for tid, _ in self._topics.values()), default=-1) + 1
        logs = [LevelDBPartitionLog(self, topicId, p, 0, 0) for p in range(partitions)]
        self._topics[name] = (topicId, logs)  # reserve the name and id at once
        sync = self.sync

        def write():
            with self.db.write_batch(sync=sync) as batch:
                batch.put(b"T" + name.encode("utf-8"), _TOPIC_VALUE.pack(topicId, partitions))
                for p in range(partitions):
                    batch.put(b"M" + _PARTITION_KEY.pack(topicId, p), _BOUNDS.pack(0, 0))

        def failed(reason):
            self._topics.pop(name, None)
            return reason

        return self.write(write).addCallbacks(lambda _: None, failed)

    def partitionLog(self, topic, partition):
        return self._topics[topic][1][partition]

    def close(self):
        if self._closing is None:
            self._closing = defer.DeferredList(list(self._outstanding), consumeErrors=True)
            self._closing.addCallback(lambda _: self._release())
        return self._closing

    def _release(self):
        self._writer.stop()
        self._readers.stop()
        self.db.close()


@implementer(IStorageFactory, IPlugin)
class LevelDBStorageFactory:
    name = "leveldb"
    description = "LevelDB (plyvel) under --data-dir (default)"

    def openStore(self, dataDir, sync):
        return LevelDBStore(os.path.join(dataDir, "leveldb"), sync)
