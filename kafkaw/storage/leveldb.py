"""LevelDB storage (plyvel): the default backend.

Key layout (all integers big-endian, so key order is log order):

    T <topic name>                          -> topic id int32, partitions int32,
                                               configs (int32 count, [name string, value string])
    M <topic id><partition>                 -> log start int64, log end int64, bytes stored int64
    D <topic id><partition><last offset>    -> one stored message set (a batch)
    I <topic id><partition><time ms><base>  -> (empty) append-time index

Each append writes its message set, its time-index entry and the new log
bounds in one C{WriteBatch}. Data is keyed by the *last* offset of its
message set, so one iterator seek to the wanted offset lands on the set that
holds it; reads return stored bytes sliced, never decoded. Append times never
go back, so the time index is in log order too: retention finds the first
batch to keep with one seek.

All LevelDB calls run in threads: writes in a single thread (so they are
applied in call order), reads in a small pool. Closing waits for every
outstanding call before the database is closed, as plyvel has no locking.
Retention deletes in steps (found by a reader, deleted by the writer), so
appends never wait long behind it.

Stores written before configs and byte counts were kept (8-byte C{T}
values, 16-byte C{M} values) open as topics without configs; their byte
counts are summed once at start-up.
"""

import os
import struct

import plyvel
from twisted.internet import defer, threads
from twisted.plugin import IPlugin
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from kafkaw.protocol.messages import skipBelow
from kafkaw.protocol.primitives import INT32, Reader, encodeString
from kafkaw.storage.interfaces import IPartitionLog, IStorageFactory, IStore, StorageError

_TOPIC_VALUE = struct.Struct(">ii")
_PARTITION_KEY = struct.Struct(">ii")
_BOUNDS = struct.Struct(">qqq")
_OLD_BOUNDS = struct.Struct(">qq")
_OFFSET = struct.Struct(">q")
_TIME_ENTRY = struct.Struct(">qq")
_MAX_KEY_SUFFIX = b"\xff" * 16

# One deletion step: at most this many batches or bytes read, then deleted in
# one write, so the writer thread (and the appends behind it) waits briefly.
_DELETE_BATCHES = 1000
_DELETE_BYTES = 16 * 1024 * 1024


def _encodeTopic(topicId, partitions, configs):
    items = sorted(configs.items())
    return b"".join(
        [_TOPIC_VALUE.pack(topicId, partitions), INT32.pack(len(items))]
        + [encodeString(name) + encodeString(value) for name, value in items]
    )


def _decodeTopic(value):
    """(topic id, partitions, configs) of a C{T} value."""
    reader = Reader(value)
    topicId, partitions = reader.int32(), reader.int32()
    configs = {}
    if reader.remaining:
        for _ in range(reader.int32()):
            name = reader.string()
            configs[name] = reader.string()
    return topicId, partitions, configs


@implementer(IPartitionLog)
class LevelDBPartitionLog:
    def __init__(self, store, topicId, partition, startOffset, endOffset, sizeBytes, oldestTimestamp, lastTimestamp):
        self._store = store
        partitionKey = _PARTITION_KEY.pack(topicId, partition)
        self._boundsKey = b"M" + partitionKey
        self._dataPrefix = b"D" + partitionKey
        self._timePrefix = b"I" + partitionKey
        self.startOffset = startOffset
        self.endOffset = endOffset
        self.sizeBytes = sizeBytes
        self._lastTimestamp = lastTimestamp
        # Where the last deletion stored ended: no data key below _deletedBefore,
        # no time-index key below _oldestTime.
        self._deletedBefore = startOffset
        self._oldestTime = oldestTimestamp
        # What the M key holds: (start, end, bytes). Read and written only in
        # the writer thread, so appends and deletions never store stale bounds.
        self._written = (startOffset, endOffset, sizeBytes)

    def _putBounds(self, batch, start, end, size):
        batch.put(self._boundsKey, _BOUNDS.pack(start, end, size))
        self._written = (start, end, size)

    def append(self, messageSet, count, timestamp):
        base = self.endOffset
        newEnd = base + count
        size = len(messageSet)
        timestamp = self._lastTimestamp = max(timestamp, self._lastTimestamp)
        sync = self._store.sync
        db = self._store.db

        def write():
            start, _, stored = self._written
            with db.write_batch(sync=sync) as batch:
                batch.put(self._dataPrefix + _OFFSET.pack(newEnd - 1), messageSet)
                batch.put(self._timePrefix + _TIME_ENTRY.pack(timestamp, base), b"")
                self._putBounds(batch, start, newEnd, stored + size)

        def stored(_):
            self.endOffset = newEnd
            self.sizeBytes += size

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

    def firstBatchSince(self, timestamp):
        db = self._store.db
        prefix = self._timePrefix

        def seek():
            start = prefix + _OFFSET.pack(timestamp) if timestamp >= 0 else prefix
            iterator = db.iterator(start=start, stop=prefix + _MAX_KEY_SUFFIX, include_stop=True, include_value=False)
            with iterator:
                for key in iterator:
                    return _TIME_ENTRY.unpack_from(key, len(prefix))[1]
            return None

        return self._store.read(seek)

    def oldestBatches(self, maxNumber):
        db = self._store.db
        prefix = self._dataPrefix
        start, end = self.startOffset, self.endOffset

        def scan():
            batches = []
            if maxNumber <= 0:
                return batches
            base = start
            iterator = db.iterator(start=prefix + _OFFSET.pack(start), stop=prefix + _OFFSET.pack(end))
            with iterator:
                for key, value in iterator:
                    nextOffset = _OFFSET.unpack_from(key, len(prefix))[0] + 1
                    batches.append((base, nextOffset, len(value)))
                    base = nextOffset
                    if len(batches) >= maxNumber:
                        break
            return batches

        return self._store.read(scan)

    def deleteBefore(self, offset):
        if offset > self.endOffset:
            return defer.fail(ValueError(f"cannot delete below {offset}: the log ends at {self.endOffset}"))
        if offset <= self.startOffset:
            return defer.succeed(None)
        self.startOffset = offset
        return self._deleteStep(offset)

    def _deleteStep(self, target):
        """Delete the next batches below C{target}; repeat until none is left, then compact.

        Each step reads on from where the last stored one ended: deleted keys
        stay in LevelDB as tombstones until compacted, and reading past them
        again and again would make a long deletion quadratic.
        """
        db = self._store.db
        dataPrefix, timePrefix = self._dataPrefix, self._timePrefix
        sync = self._store.sync
        fromOffset, fromTime = self._deletedBefore, self._oldestTime

        def find():
            dataKeys, size, complete = [], 0, True
            iterator = db.iterator(start=dataPrefix + _OFFSET.pack(fromOffset), stop=dataPrefix + _OFFSET.pack(target))
            with iterator:
                for key, value in iterator:
                    if len(dataKeys) >= _DELETE_BATCHES or size >= _DELETE_BYTES:
                        complete = False  # more to delete in the next step
                        break
                    dataKeys.append(key)
                    size += len(value)
            timeKeys, lastTime = [], fromTime
            if dataKeys:
                lastDeleted = _OFFSET.unpack_from(dataKeys[-1], len(dataPrefix))[0]
                # Append times never go back: the deleted batches' entries come first.
                iterator = db.iterator(
                    start=timePrefix + _OFFSET.pack(fromTime), stop=timePrefix + _MAX_KEY_SUFFIX, include_stop=True, include_value=False
                )
                with iterator:
                    for key in iterator:
                        time, base = _TIME_ENTRY.unpack_from(key, len(timePrefix))
                        if base > lastDeleted:
                            break
                        timeKeys.append(key)
                        lastTime = time
            newStart = target if complete else lastDeleted + 1
            return dataKeys, timeKeys, size, newStart, lastTime, complete

        def delete(found):
            if self._store.closing:
                return None
            dataKeys, timeKeys, size, newStart, lastTime, complete = found

            def write():
                start, end, stored = self._written
                with db.write_batch(sync=sync) as batch:
                    for key in dataKeys:
                        batch.delete(key)
                    for key in timeKeys:
                        batch.delete(key)
                    self._putBounds(batch, max(start, newStart), end, stored - size)

            return self._store.write(write).addCallback(lambda _: deleted(size, newStart, lastTime, complete))

        def deleted(size, newStart, lastTime, complete):
            self.sizeBytes -= size
            self._deletedBefore = max(self._deletedBefore, newStart)
            self._oldestTime = lastTime
            if self._store.closing:
                return None
            if not complete:
                return self._deleteStep(target)
            return self._store.read(lambda: compact(lastTime)).addCallback(lambda _: None)

        def compact(lastTime):
            # Deleted keys only free disk space once compacted away.
            db.compact_range(start=dataPrefix, stop=dataPrefix + _OFFSET.pack(target))
            db.compact_range(start=timePrefix, stop=timePrefix + _OFFSET.pack(lastTime + 1))

        return self._store.read(find).addCallback(delete)


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
            # No block compression: clients compress their own message sets,
            # and snappy on every flush and compaction costs the writer thread
            # more than the disk it saves (measured: bench/results.md).
            self.db = plyvel.DB(path, create_if_missing=True, compression=None)
        except plyvel.IOError as e:
            why = e.args[0].decode(errors="replace") if e.args and isinstance(e.args[0], bytes) else str(e)
            if "lock" in why.lower():
                why += " (is another broker using this data directory?)"
            raise StorageError(f"cannot open LevelDB at {path}: {why}") from None
        self._topics = {}  # name -> (topic id, [LevelDBPartitionLog], configs)
        self._loadTopics()
        self._writer = ThreadPool(1, 1, "kafkaw-leveldb-writer")
        self._readers = ThreadPool(1, 4, "kafkaw-leveldb-reader")
        self._writer.start()
        self._readers.start()
        self._outstanding = set()
        self._closing = None

    def _loadTopics(self):
        for key, value in self.db.iterator(prefix=b"T"):
            topicId, partitions, configs = _decodeTopic(value)
            logs = [self._loadPartition(topicId, partition) for partition in range(partitions)]
            self._topics[key[1:].decode("utf-8")] = (topicId, logs, configs)

    def _loadPartition(self, topicId, partition):
        partitionKey = _PARTITION_KEY.pack(topicId, partition)
        bounds = self.db.get(b"M" + partitionKey)
        if bounds is None:
            start, end, size = 0, 0, 0
        elif len(bounds) == _OLD_BOUNDS.size:
            start, end = _OLD_BOUNDS.unpack(bounds)
            size = sum(len(data) for data in self.db.iterator(prefix=b"D" + partitionKey, include_key=False))
        else:
            start, end, size = _BOUNDS.unpack(bounds)
        timePrefix = b"I" + partitionKey
        oldest, last = (self._firstTime(timePrefix, reverse) for reverse in (False, True))
        return LevelDBPartitionLog(self, topicId, partition, start, end, size, oldest, last)

    def _firstTime(self, timePrefix, reverse):
        """The append time of the first (or last) entry of a time index; 0 if it is empty."""
        with self.db.iterator(prefix=timePrefix, reverse=reverse, include_value=False) as iterator:
            for key in iterator:
                return _TIME_ENTRY.unpack_from(key, len(timePrefix))[0]
        return 0

    def _run(self, pool, function):
        if self._closing is not None:
            return defer.fail(StorageError("the store is closing"))
        d = threads.deferToThreadPool(self._reactor, pool, function)
        self._outstanding.add(d)

        def done(result):
            self._outstanding.discard(d)
            return result

        return d.addBoth(done)

    @property
    def closing(self):
        """True once L{close} was called: background work should stop."""
        return self._closing is not None

    def write(self, function):
        """Run C{function} in the writer thread (calls run in order)."""
        return self._run(self._writer, function)

    def read(self, function):
        """Run C{function} in a reader thread."""
        return self._run(self._readers, function)

    def topics(self):
        return {name: len(logs) for name, (_, logs, _) in self._topics.items()}

    def topicConfigs(self, name):
        return dict(self._topics[name][2])

    def createTopic(self, name, partitions, configs=None):
        if name in self._topics:
            return defer.fail(StorageError(f"topic {name!r} exists"))
        configs = dict(configs or {})
        topicId = max((tid for tid, _, _ in self._topics.values()), default=-1) + 1
        logs = [LevelDBPartitionLog(self, topicId, p, 0, 0, 0, 0, 0) for p in range(partitions)]
        self._topics[name] = (topicId, logs, configs)  # reserve the name and id at once
        sync = self.sync

        def write():
            with self.db.write_batch(sync=sync) as batch:
                batch.put(b"T" + name.encode("utf-8"), _encodeTopic(topicId, partitions, configs))
                for p in range(partitions):
                    batch.put(b"M" + _PARTITION_KEY.pack(topicId, p), _BOUNDS.pack(0, 0, 0))

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
