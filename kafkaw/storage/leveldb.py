"""LevelDB storage (plyvel): the default backend.

Key layout (all integers big-endian, so key order is log order):

    S cluster.id                            -> the cluster id (ASCII), made at first open
    S next.topic.id                         -> int32: every topic id below it was handed out
    S next.producer.id                      -> int64: every producer id below it was handed out
    T <topic name>                          -> topic id int32, partitions int32,
                                               configs (int32 count, [name string, value string])
    X <topic id>                            -> topic name: a deleted topic whose keys are being deleted
    M <topic id><partition>                 -> log start int64, log end int64, bytes stored int64,
                                               current segment int64 (-1: none), bytes written to it
                                               int64, synced end int64
    D <topic id><partition><last offset>    -> one stored message set or record batch, or (4 KB
                                               and more) a pointer to it in a segment file
    I <topic id><partition><time ms><base>  -> (empty) time index
    P <topic id><partition><producer id>    -> producer state (opaque bytes), int64 producer id
    O <group length int16><group UTF-8><topic length int16><topic UTF-8><partition int32>
                                            -> a committed offset: offset int64, leader epoch int32,
                                               commit timestamp int64, metadata (int16 length, -1: null, UTF-8)
    A <resource type int8><pattern type int8><resource name string><principal string><host string>
      <operation int8><permission int8>     -> (empty) one ACL; strings as int16 length and UTF-8
    U <user length int16><user UTF-8><mechanism ASCII>
                                            -> a SCRAM credential: iterations int32, then salt,
                                               stored key and server key (each int16 length + bytes)

Each append writes its message set (or, for a big one, first to a segment
file, then its pointer: see L{kafkaw.storage.segments}), its time-index
entry, its producer states and the new log bounds in one C{WriteBatch}. Data is keyed by the
*last* offset of its message set, so one iterator seek to the wanted offset
lands on the set that holds it; reads return stored bytes sliced, never
decoded. Stored timestamps never go back, so the time index is in log order
too: retention finds the first batch to keep with one seek.

Topic ids are never reused (C{S next.topic.id}), so a topic made again under
a deleted one's name never reads the deleted one's keys. Deleting a topic
first replaces its C{T} key by an C{X} key in one write (from then on it
never comes back); its C{M}, C{D}, C{I} and C{P} keys then go in steps, and
the C{X} key last. A store opened with C{X} keys goes on deleting them.
Producer ids are reserved in blocks: C{S next.producer.id} moves a block
ahead, synced, before an id of the block is handed out.

Committed offsets of consumer groups (C{O} keys) are keyed by group, then
topic name (not id: they are independent of topics), so each group's keys
are one contiguous range, found by its length-prefixed name. A commit is one
C{WriteBatch}, however many partitions it holds; so is a group's deletion.
They are all read at open (10,000 in about 50 ms). Deleting a topic deletes
its committed offsets in every group in the deletion's first write (the one
replacing C{T} by C{X}), not in the background steps: keyed by name, the old
topic's offsets could not be told from those committed since to a topic made
again under the name, and in that write a crash never brings them back. The
writer thread keeps which C{O} keys are stored, so it deletes them without
reading the database.

All LevelDB calls run in threads: writes in a single thread (so they are
applied in call order), reads in a small pool. Closing waits for every
outstanding call before the database is closed, as plyvel has no locking.
Retention deletes in steps (found by a reader, deleted by the writer), so
appends never wait long behind it.

A write that fails (disk full, I/O error) stops every write until the
database has been closed and opened again, which is tried every second once
the disk has room; reads go on meanwhile (docs/durability.md, "Disk full").

Stores written before configs and byte counts were kept (8-byte C{T}
values, 16-byte C{M} values) open as topics without configs; their byte
counts are summed once at start-up. Stores written before cluster ids,
producer ids and topic deletion (no C{S}, C{X} or C{P} keys) get a cluster
id when first opened and work as they are
(tests/unit/test_leveldb_7a50f63.py); stores written before committed
offsets (no C{O} keys) open without any, and those written before ACLs (no
C{A} keys) without ACLs.

ACLs (C{A} keys) are the whole binding in the key, so a set of them is a
set of keys: adding one already stored rewrites the same key. They are all
read at open; each L{LevelDBStore.addAcls} or C{removeAcls} is one
C{WriteBatch}.
"""

import contextlib
import os
import queue
import shutil
import struct
import threading
import time

import plyvel
from twisted.internet import defer, threads
from twisted.logger import Logger
from twisted.plugin import IPlugin
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from kafkaw.protocol.primitives import INT8, INT16, INT32, Reader, encodeString
from kafkaw.protocol.records import storedEntriesIntact
from kafkaw.storage import segments
from kafkaw.storage.interfaces import (
    AclBinding,
    AclsHeld,
    CredentialsHeld,
    IAclStore,
    ICredentialStore,
    IPartitionLog,
    IStorageFactory,
    IStore,
    ScramCredential,
    StorageError,
    TopicsHeld,
    checkOffsetCommit,
    checkPartitions,
    countPending,
    forgetGroupOffsets,
    forgetTopicOffsets,
    newClusterId,
    readPieces,
    refuseArguments,
    updateProducerStates,
)

_TOPIC_VALUE = struct.Struct(">ii")
_PARTITION_KEY = struct.Struct(">ii")
# log start, log end, bytes stored, current segment (-1: none), bytes written
# to it, and the offset below which every batch in a segment is synced.
_BOUNDS = struct.Struct(">qqqqqq")
_BOUNDS_WITHOUT_SEGMENTS = struct.Struct(">qqq")
_OLD_BOUNDS = struct.Struct(">qq")
_OFFSET = struct.Struct(">q")
_TIME_ENTRY = struct.Struct(">qq")
_COMMITTED = struct.Struct(">qiq")  # offset, leader epoch, commit timestamp; then the metadata
_MAX_KEY_SUFFIX = b"\xff" * 16

_CLUSTER_ID_KEY = b"Scluster.id"
_NEXT_TOPIC_ID_KEY = b"Snext.topic.id"
_NEXT_PRODUCER_ID_KEY = b"Snext.producer.id"
# Producer ids reserved by one (synced) write.
_PRODUCER_ID_BLOCK = 1000
# The prefixes of a topic's keys after its topic id, deleted with it.
_TOPIC_KEY_KINDS = (b"M", b"D", b"I", b"P")

# LevelDB's memtable and table file size (see _open).
_BUFFER_BYTES = 64 << 20
# Message sets of this size or more go to segment files (kafkaw/storage/segments.py).
_INLINE_BYTES = 4096
# A segment file takes no more batches once this big.
_SEGMENT_BYTES = 128 << 20
# Without --sync, segment files are synced (and the M keys say so) at most
# this long after a batch is written to them: after a power loss, only the
# batches written since are checked when the store is opened.
_CHECKPOINT_SECONDS = 1.0

# After a failed write, reopening is tried this often.
_RETRY_SECONDS = 1.0
# Room a reopen wants besides the size of LevelDB's log files (see _checkRoom).
_ROOM_MARGIN = 1 << 20
_PROBE_NAME = "kafkaw-room-probe"
_CANNOT_REOPEN = "cannot reopen: "

# One deletion step: at most this many batches or bytes read, then deleted in
# one write, so the writer thread (and the appends behind it) waits briefly.
_DELETE_BATCHES = 1000
_DELETE_BYTES = 16 * 1024 * 1024


class _WriteFailed(StorageError):
    """A LevelDB write failed (disk full, file too large, I/O error...)."""

    def __init__(self, why):
        super().__init__(f"LevelDB write failed: {why}")
        self.why = why


def _describe(error):
    """The text of a plyvel error (its message is bytes)."""
    if error.args and isinstance(error.args[0], bytes):
        return error.args[0].decode(errors="replace")
    return str(error)


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


def _groupPrefix(group):
    """The start of every C{O} key of C{group}: C{O}, the group's length and its UTF-8."""
    data = group.encode("utf-8")
    return b"O" + INT16.pack(len(data)) + data


def _offsetKeySuffix(topic, partition):
    """What follows the group prefix in an C{O} key."""
    data = topic.encode("utf-8")
    return INT16.pack(len(data)) + data + INT32.pack(partition)


def _encodeCommitted(offset, leaderEpoch, metadata, commitTimestamp):
    return _COMMITTED.pack(offset, leaderEpoch, commitTimestamp) + encodeString(metadata)


def _readCommittedOffsets(db):
    """Every stored committed offset (in a thread, or at start-up).

    @return: C{(offsets, keys)}: C{offsets} is group -> {(topic, partition):
        (offset, leaderEpoch, metadata, commitTimestamp)}, C{keys} is group ->
        {topic -> set of partitions} (the writer thread's record of C{O} keys).
    """
    offsets, keys = {}, {}
    prefix = group = groupOffsets = groupKeys = None
    unpackCommitted, unpackInt16, unpackInt32 = _COMMITTED.unpack_from, INT16.unpack_from, INT32.unpack_from
    for key, value in db.iterator(prefix=b"O"):
        if prefix is None or not key.startswith(prefix):
            size = unpackInt16(key, 1)[0]
            prefix = key[: 3 + size]
            group = prefix[3:].decode("utf-8")
            groupOffsets = offsets[group] = {}
            groupKeys = keys[group] = {}
        position = len(prefix)
        size = unpackInt16(key, position)[0]
        topic = key[position + 2 : position + 2 + size].decode("utf-8")
        partition = unpackInt32(key, position + 2 + size)[0]
        offset, leaderEpoch, commitTimestamp = unpackCommitted(value)
        size = unpackInt16(value, _COMMITTED.size)[0]
        metadata = None if size < 0 else value[_COMMITTED.size + 2 : _COMMITTED.size + 2 + size].decode("utf-8")
        groupOffsets[(topic, partition)] = (offset, leaderEpoch, metadata, commitTimestamp)
        groupKeys.setdefault(topic, set()).add(partition)
    return offsets, keys


# --- ACLs (A keys) ---


def _aclKey(binding):
    """The C{A} key holding one L{AclBinding}."""
    return b"".join((
        b"A", INT8.pack(binding.resourceType), INT8.pack(binding.patternType), encodeString(binding.resourceName),
        encodeString(binding.principal), encodeString(binding.host), INT8.pack(binding.operation), INT8.pack(binding.permission),
    ))


def _readAcls(db):
    """Every stored ACL: a C{frozenset} of L{AclBinding} (at start-up)."""
    acls = set()
    for key in db.iterator(prefix=b"A", include_value=False):
        reader = Reader(key, 1)
        resourceType, patternType = reader.int8(), reader.int8()
        name, principal, host = reader.string(), reader.string(), reader.string()
        acls.add(AclBinding(resourceType, name, patternType, principal, host, reader.int8(), reader.int8()))
    return frozenset(acls)


# --- end of ACLs ---


class _Topic:
    """One topic: its id, partition logs and configs."""

    def __init__(self, name, topicId, logs, configs):
        self.name = name
        self.id = topicId
        self.logs = logs
        self.configs = configs
        # The partition count once the additions asked for are stored.
        self.partitions = len(logs)
        self.deleted = False


class _Written:
    """What a partition's M key holds, as the writer thread last stored it."""

    __slots__ = ("start", "end", "size", "segment", "segmentEnd", "synced")

    def __init__(self, start, end, size, segment=-1, segmentEnd=0, synced=None):
        self.start, self.end, self.size = start, end, size
        self.segment, self.segmentEnd = segment, segmentEnd
        self.synced = end if synced is None else synced

    def pack(self):
        return _BOUNDS.pack(self.start, self.end, self.size, self.segment, self.segmentEnd, self.synced)

    @classmethod
    def unpack(cls, value):
        if len(value) == _BOUNDS.size:
            return cls(*_BOUNDS.unpack(value))
        return cls(*_BOUNDS_WITHOUT_SEGMENTS.unpack(value))


_EMPTY_BOUNDS = _Written(0, 0, 0).pack()


@implementer(IPartitionLog)
class LevelDBPartitionLog:
    def __init__(self, store, topicId, partition, startOffset, endOffset, sizeBytes, oldestTimestamp, lastTimestamp, written=None):
        self._store = store
        partitionKey = _PARTITION_KEY.pack(topicId, partition)
        self.topicId, self.partition = topicId, partition
        self._segmentDir = segments.partitionDir(store._segmentsPath, topicId, partition)
        self._boundsKey = b"M" + partitionKey
        self._dataPrefix = b"D" + partitionKey
        self._timePrefix = b"I" + partitionKey
        self._producerPrefix = b"P" + partitionKey
        self.startOffset = startOffset
        self.endOffset = endOffset
        self.sizeBytes = sizeBytes
        self._lastTimestamp = lastTimestamp
        self._producerStates = {}  # producer id -> state, as stored
        # The topic's name once it is deleted: every call is refused from then on.
        self._deleted = None
        # Where the last deletion stored ended: no data key below _deletedBefore,
        # no time-index key below _oldestTime.
        self._deletedBefore = startOffset
        self._oldestTime = oldestTimestamp
        # What the M key holds. Read and written only in the writer thread,
        # so appends and deletions never store stale bounds.
        self._written = written or _Written(startOffset, endOffset, sizeBytes)
        # The first offsets of this partition's segment files (writer thread).
        self._segments = []

    def _writeBounds(self, batch, written):
        """Put C{written} in C{batch} as the new bounds, write it, then remember them."""
        batch.put(self._boundsKey, written.pack())
        batch.write()
        self._written = written

    def _segmentPath(self, segment):
        return segments.segmentPath(self._segmentDir, segment)

    def _writeSegment(self, messageSet, firstOffset, written):
        """In the writer thread: write C{messageSet} to the current segment,
        or to a new one named C{firstOffset}; return its pointer, the new bounds
        and whether a segment was started. Nothing is remembered until the
        LevelDB write that stores the pointer succeeds."""
        store = self._store
        size = len(messageSet)
        segment, position = written.segment, written.segmentEnd
        started = segment < 0 or (position > 0 and position + size > store._segmentBytes)
        if started:
            segment, position = firstOffset, 0
            os.makedirs(self._segmentDir, exist_ok=True)
        with store._files.open(self._segmentPath(segment), create=started) as fd:
            segments.writeAll(fd, messageSet, position)
            if store.sync:
                os.fdatasync(fd)
        if started and store.sync:
            segments.syncDirectory(self._segmentDir)
        new = _Written(written.start, written.end, written.size, segment, position + size, written.synced)
        return segments.encodePointer(segment, position, size), new, started

    def _readStored(self, value):
        """The message set a stored value holds or points to (in a reader thread)."""
        if not segments.isPointer(value):
            return value
        segment, position, length = segments.decodePointer(value)
        with self._store._files.open(self._segmentPath(segment)) as fd:
            return segments.readExactly(fd, length, position)

    def _reload(self, stored, producerStates):
        """Take the bounds C{stored} in the M key, and the stored producer states, once the store is reopened.

        An append that failed may have become durable all the same (LevelDB
        replays whatever of its log reached the disk): then the stored log end
        includes it, and the next append goes after it, leaving no hole; its
        producer states are taken too. Called while nothing is written.
        """
        if stored is None or len(stored) not in (_BOUNDS.size, _BOUNDS_WITHOUT_SEGMENTS.size):
            return  # a topic whose creation failed, or a partition not written since an old store was opened
        written = self._written = _Written.unpack(stored)
        if written.segment >= 0 and written.segment not in self._segments:
            self._segments.append(written.segment)  # a failed append that started it was stored all the same
        self.startOffset = max(self.startOffset, written.start)  # a deletion under way may have moved it on
        self.endOffset = written.end
        self.sizeBytes = written.size
        self._producerStates = producerStates

    def _readProducerStates(self, db):
        """The producer states stored for this partition (in a thread, or at start-up)."""
        prefix = self._producerPrefix
        return {
            _OFFSET.unpack_from(key, len(prefix))[0]: value for key, value in db.iterator(prefix=prefix)
        }

    def _refused(self):
        return defer.fail(StorageError(f"topic {self._deleted!r} was deleted"))

    def _delete(self, name):
        """The topic is deleted: refuse every call from now on (writes already queued too)."""
        self._deleted = name
        self._producerStates = {}

    def append(self, messageSet, count, timestamp, producerStates=None):
        if self._deleted is not None:
            return self._refused()
        base = self.endOffset
        newEnd = base + count
        size = len(messageSet)
        timestamp = self._lastTimestamp = max(timestamp, self._lastTimestamp)
        producerStates = dict(producerStates or {})
        producerPrefix = self._producerPrefix

        def fill(batch):
            # In the writer thread, into a batch shared with the other
            # partitions' appends of the round; remembered as written once
            # that batch is (see LevelDBStore.appendWrite).
            if self._deleted is not None:
                raise StorageError(f"topic {self._deleted!r} was deleted")
            store = self._store
            written = self._written
            inSegment = size >= store._inlineBytes
            if inSegment:
                value, written, started = self._writeSegment(messageSet, base, written)
            else:
                value, started = messageSet, False
            # Everything below `synced` is on disk once LevelDB's log is: a
            # batch in a segment is, once its file is synced (at once with
            # --sync, else by the next checkpoint: see LevelDBStore._checkpoint).
            unsynced = not store.sync and (inSegment or self in store._unsynced)
            batch.put(self._dataPrefix + _OFFSET.pack(newEnd - 1), value)
            batch.put(self._timePrefix + _TIME_ENTRY.pack(timestamp, base), b"")
            for producerId, state in producerStates.items():
                if state is None:
                    batch.delete(producerPrefix + _OFFSET.pack(producerId))
                else:
                    batch.put(producerPrefix + _OFFSET.pack(producerId), bytes(state))
            new = _Written(
                written.start, newEnd, written.size + size, written.segment, written.segmentEnd,
                written.synced if unsynced else newEnd,
            )
            batch.put(self._boundsKey, new.pack())

            def remember():
                self._written = new
                if started:
                    self._segments.append(new.segment)
                if unsynced and inSegment:
                    store._unsynced.setdefault(self, set()).add(new.segment)

            return remember

        def stored(_):
            if self._deleted is not None:
                return  # deleted while the write was under way: nothing is kept
            self.endOffset = newEnd
            self.sizeBytes += size
            updateProducerStates(self._producerStates, producerStates)

        return self._store.appendWrite(self, fill).addCallback(stored)

    def producerStates(self):
        return dict(self._producerStates)

    def read(self, offset, maxBytes, endOffset):
        if self._deleted is not None:
            return self._refused()
        prefix = self._dataPrefix

        def read():
            iterator = self._store.db.iterator(
                start=prefix + _OFFSET.pack(max(offset, 0)),
                stop=prefix + _OFFSET.pack(endOffset),
                include_key=False,
            )
            with iterator:
                pieces, total = readPieces(map(self._readStored, iterator), offset, maxBytes)
            if pieces and total > maxBytes:
                pieces[-1] = pieces[-1][: len(pieces[-1]) - (total - max(maxBytes, 0))]
            return pieces[0] if len(pieces) == 1 else b"".join(pieces)

        return self._store.read(read)

    def batchesBefore(self, timestamp, maxNumber):
        if self._deleted is not None:
            return self._refused()
        prefix = self._timePrefix

        def scan():
            found = []
            # Keys hold signed times, so a negative one would sort above them all;
            # no append is that old anyway.
            if maxNumber <= 0 or timestamp < 0:
                return found
            stop = prefix + _OFFSET.pack(timestamp) + _MAX_KEY_SUFFIX[:8]
            iterator = self._store.db.iterator(
                start=prefix, stop=stop, include_stop=True, reverse=True, include_value=False
            )
            with iterator:
                for key in iterator:
                    found.append(_TIME_ENTRY.unpack_from(key, len(prefix))[1])
                    if len(found) >= maxNumber:
                        break
            return found

        return self._store.read(scan)

    def firstBatchSince(self, timestamp):
        if self._deleted is not None:
            return self._refused()
        prefix = self._timePrefix

        def seek():
            start = prefix + _OFFSET.pack(timestamp) if timestamp >= 0 else prefix
            iterator = self._store.db.iterator(
                start=start, stop=prefix + _MAX_KEY_SUFFIX, include_stop=True, include_value=False
            )
            with iterator:
                for key in iterator:
                    return _TIME_ENTRY.unpack_from(key, len(prefix))[1]
            return None

        return self._store.read(seek)

    def oldestBatches(self, maxNumber):
        if self._deleted is not None:
            return self._refused()
        prefix = self._dataPrefix
        start, end = self.startOffset, self.endOffset

        def scan():
            batches = []
            if maxNumber <= 0:
                return batches
            base = start
            iterator = self._store.db.iterator(start=prefix + _OFFSET.pack(start), stop=prefix + _OFFSET.pack(end))
            with iterator:
                for key, value in iterator:
                    nextOffset = _OFFSET.unpack_from(key, len(prefix))[0] + 1
                    batches.append((base, nextOffset, segments.storedSize(value)))
                    base = nextOffset
                    if len(batches) >= maxNumber:
                        break
            return batches

        return self._store.read(scan)

    def _deleteSegmentsBelow(self, start):
        """In the writer thread: delete the segment files whose batches are all below C{start}.

        A segment's batches are below the next segment's first offset; the
        current segment is kept, whatever it holds.
        """
        while len(self._segments) > 1 and self._segments[1] <= start:
            path = self._segmentPath(self._segments.pop(0))
            self._store._files.forget(path)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def deleteBefore(self, offset):
        if self._deleted is not None:
            return self._refused()
        if offset > self.endOffset:
            return defer.fail(ValueError(f"cannot delete below {offset}: the log ends at {self.endOffset}"))
        # What is stored decides whether there is work: a deletion whose write
        # failed moved startOffset (reads below it are refused at once) but
        # left its batches, so asking again must retry it.
        if offset <= self._deletedBefore:
            return defer.succeed(None)
        self.startOffset = max(self.startOffset, offset)
        return self._deleteStep(offset)

    def _deleteStep(self, target):
        """Delete the next batches below C{target}; repeat until none is left, then compact.

        Each step reads on from where the last stored one ended: deleted keys
        stay in LevelDB as tombstones until compacted, and reading past them
        again and again would make a long deletion quadratic.
        """
        store = self._store
        dataPrefix, timePrefix = self._dataPrefix, self._timePrefix
        sync = self._store.sync
        fromOffset, fromTime = self._deletedBefore, self._oldestTime

        def find():
            dataKeys, size, complete = [], 0, True
            iterator = store.db.iterator(start=dataPrefix + _OFFSET.pack(fromOffset), stop=dataPrefix + _OFFSET.pack(target))
            with iterator:
                for key, value in iterator:
                    if len(dataKeys) >= _DELETE_BATCHES or size >= _DELETE_BYTES:
                        complete = False  # more to delete in the next step
                        break
                    dataKeys.append(key)
                    size += segments.storedSize(value)
            timeKeys, lastTime = [], fromTime
            if dataKeys:
                lastDeleted = _OFFSET.unpack_from(dataKeys[-1], len(dataPrefix))[0]
                # Append times never go back: the deleted batches' entries come first.
                iterator = store.db.iterator(
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
            if self._store.closing or self._deleted is not None:
                return None  # the topic's deletion deletes the rest
            dataKeys, timeKeys, size, newStart, lastTime, complete = found

            def write():
                if self._deleted is not None:
                    return False  # the M key must not come back
                written = self._written
                batch = store.db.write_batch(sync=sync)
                for key in dataKeys:
                    batch.delete(key)
                for key in timeKeys:
                    batch.delete(key)
                start = max(written.start, newStart)
                self._writeBounds(batch, _Written(
                    start, written.end, written.size - size, written.segment, written.segmentEnd, written.synced
                ))
                self._deleteSegmentsBelow(start)
                return True

            def stored(written):
                if written:
                    return deleted(size, newStart, lastTime, complete)
                return None

            return self._store.write(write).addCallback(stored)

        def deleted(size, newStart, lastTime, complete):
            self.sizeBytes -= size
            self._deletedBefore = max(self._deletedBefore, newStart)
            self._oldestTime = lastTime
            if self._store.closing or self._deleted is not None:
                return None
            if not complete:
                return self._deleteStep(target)
            return self._store.read(lambda: compact(lastTime)).addCallback(lambda _: None)

        def compact(lastTime):
            # Deleted keys only free disk space once compacted away.
            store.db.compact_range(start=dataPrefix, stop=dataPrefix + _OFFSET.pack(target))
            store.db.compact_range(start=timePrefix, stop=timePrefix + _OFFSET.pack(lastTime + 1))

        return self._store.read(find).addCallback(delete)


_log = Logger()


class _WriterThread:
    """The one thread that writes: what C{ThreadPool(1, 1)} offered the
    store (callInThread, callInThreadWithCallback for deferToThreadPool,
    start, stop, joined), at a fraction of its cost per call, which the
    reactor pays for every round of writes (a C queue's put, where the
    thread pool takes its team and lock workers' several locks)."""

    def __init__(self, name):
        self._queue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self.joined = False

    def start(self):
        self._thread.start()

    def callInThread(self, function, *args):
        self._queue.put((function, args))

    def callInThreadWithCallback(self, onResult, function, *args):
        def call():
            try:
                result = function(*args)
            except BaseException:
                onResult(False, Failure())
            else:
                onResult(True, result)

        self._queue.put((call, ()))

    def _work(self):
        while True:
            item = self._queue.get()
            if item is None:
                return
            function, args = item
            try:
                function(*args)
            except BaseException:
                _log.failure("LevelDB writer call failed")

    def stop(self):
        """Run what is queued, then end the thread (and wait for it)."""
        if not self.joined:
            self.joined = True
            self._queue.put(None)
            if self._thread.is_alive():
                self._thread.join()


# --- credentials (SASL/SCRAM): issue 15 ------------------------------------


def _credentialKey(user, mechanism):
    return b"U" + encodeString(user) + mechanism.encode("ascii")


def _encodeCredential(credential):
    return INT32.pack(credential.iterations) + b"".join(encodeString(part) for part in credential[:3])


def _readScramCredentials(db):
    """Every stored SCRAM credential: user -> {mechanism: ScramCredential} (at start-up)."""
    credentials = {}
    for key, value in db.iterator(prefix=b"U"):
        reader = Reader(key, 1)
        user = reader.string()
        mechanism = key[reader.position :].decode("ascii")
        reader = Reader(value)
        iterations = reader.int32()
        salt, storedKey, serverKey = (bytes(reader.raw(reader.int16())) for _ in range(3))
        credentials.setdefault(user, {})[mechanism] = ScramCredential(salt, storedKey, serverKey, iterations)
    return credentials


class LevelDBCredentials(CredentialsHeld):
    """L{ICredentialStore} on LevelDB C{U} keys (mixed into L{LevelDBStore});
    read once at open, kept in memory, changed through the writer thread."""

    def _storeCredential(self, user, mechanism, credential):
        key, value, sync = _credentialKey(user, mechanism), _encodeCredential(credential), self.sync
        return self.write(lambda: self.db.put(key, value, sync=sync))

    def _deleteCredentials(self, user, mechanisms):
        keys, sync = [_credentialKey(user, mechanism) for mechanism in mechanisms], self.sync

        def write():
            batch = self.db.write_batch(sync=sync)
            for key in keys:
                batch.delete(key)
            batch.write()

        return self.write(write)


# --- end of credentials ----------------------------------------------------


@implementer(IStore, IAclStore, ICredentialStore)
class LevelDBStore(LevelDBCredentials, AclsHeld, TopicsHeld):
    """A LevelDB database holding every topic of one broker."""

    _log = Logger()

    def __init__(self, path, sync, reactor=None, inlineBytes=_INLINE_BYTES, segmentBytes=_SEGMENT_BYTES):
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        self.sync = bool(sync)
        self._path = path
        self._segmentsPath = path + "-segments"
        self._inlineBytes = inlineBytes
        self._segmentBytes = segmentBytes
        self._files = segments.SegmentFiles()
        # Writer thread: partition log -> segments written since their last sync.
        self._unsynced = {}
        self._lastCheckpoint = time.monotonic()
        try:
            os.makedirs(path, exist_ok=True)
            os.makedirs(self._segmentsPath, exist_ok=True)
        except OSError as e:
            raise StorageError(f"cannot create the data directory {path}: {e.strerror}") from None
        self.db = self._open()
        self._topics = {}  # name -> _Topic
        # Topic id -> name, of deleted topics whose keys are not all deleted yet.
        self._deletedTopics = {}
        # Topic id -> name, of deletions whose first write (T key out, X key in) is not stored yet.
        self._unstoredDeletions = {}
        self._deletions = {}  # topic id -> Deferred of the background deletion under way
        self._storingDeletions = {}  # topic id -> Deferred fired once its first write is done
        # Committed offsets as stored: group -> {(topic, partition): (offset, epoch, metadata, timestamp)}.
        self._offsets = {}
        # The same as the writer thread knows it, which alone reads and writes
        # it (it is ahead of _offsets while callbacks are on their way):
        # group -> {topic -> set of partitions} whose O keys are stored.
        self._offsetKeys = {}
        self._pendingCommits = {}  # group -> commits called but not yet stored or failed
        try:
            self._clusterId = self._loadClusterId()
            self._segmentFiles = segments.listSegments(self._segmentsPath)
            self._loadTopics()
            self._removeOrphanSegments()
            self._offsets, self._offsetKeys = _readCommittedOffsets(self.db)
            self._acls = _readAcls(self.db)
            self._scramCredentials = _readScramCredentials(self.db)  # user -> {mechanism: ScramCredential}
            storedTopicId = self.db.get(_NEXT_TOPIC_ID_KEY)
            storedProducerId = self.db.get(_NEXT_PRODUCER_ID_KEY)
        except plyvel.Error as e:
            self.db.close()
            raise StorageError(f"cannot read LevelDB at {self._path}: {_describe(e)}") from None
        # Ids are never reused, not even an id whose topic failed to be stored
        # (its definition may be on disk all the same), nor a deleted topic's.
        self._nextTopicId = max(
            [INT32.unpack(storedTopicId)[0] if storedTopicId else 0]
            + [topic.id + 1 for topic in self._topics.values()]
            + [topicId + 1 for topicId in self._deletedTopics]
        )
        # Producer ids below _producerIdLimit are stored as handed out.
        self._nextProducerId = self._producerIdLimit = _OFFSET.unpack(storedProducerId)[0] if storedProducerId else 0
        self._producerIdWaiters = []  # Deferreds of allocateProducerId waiting for a block
        self._reservingProducerIds = False
        self._writer = _WriterThread("kafkaw-leveldb-writer")
        # Writes not yet handed to the writer thread: [(function, log or
        # None, Deferred)]; and whether a round of them is being written.
        self._writeQueue = []
        self._writing = False
        self._readers = ThreadPool(1, 4, "kafkaw-leveldb-reader")
        self._writer.start()
        self._readers.start()
        self._outstanding = set()
        self._idle = []  # Deferreds fired once nothing is outstanding
        self._closing = None
        # After a failed write: why (writes are refused until a reopen succeeds).
        self._failure = None
        self._failedAt = None
        self._retry = None  # the next reopen attempt (IDelayedCall)
        self._recovering = None  # Deferred of the reopen under way
        self._waitingReads = []  # [(function, Deferred)] held during a reopen
        # Set in the writer thread by a failed write, cleared by a reopen: no
        # write queued behind a failed one touches the database.
        self._writesStopped = None
        for topicId in sorted(self._deletedTopics):
            self._deleteTopicKeys(topicId)  # stopped half-way last time

    def _open(self):
        try:
            # No block compression: clients compress their own message sets,
            # and snappy on every flush and compaction costs the writer thread
            # more than the disk it saves (measured: bench/results.md).
            # Memtables and table files of 64 MB rather than LevelDB's 4 MB
            # and 2 MB: batches are large values written in key order, and
            # small ones made compaction rewrite them again and again
            # (librdkafka 10 KB produce 0.24 -> 0.56 x the floor, 100 B
            # broker CPU 0.77 -> 0.64 us/message); costs up to 2 x 64 MB of
            # memory under a steady write load.
            return plyvel.DB(
                self._path, create_if_missing=True, compression=None, write_buffer_size=_BUFFER_BYTES, max_file_size=_BUFFER_BYTES
            )
        except plyvel.Error as e:
            why = _describe(e)
            if "lock" in why.lower():
                why += " (is another broker using this data directory?)"
            raise StorageError(f"cannot open LevelDB at {self._path}: {why}") from None

    def _loadClusterId(self):
        clusterId = self.db.get(_CLUSTER_ID_KEY)
        if clusterId is None:
            clusterId = newClusterId().encode("ascii")
            self.db.put(_CLUSTER_ID_KEY, clusterId, sync=True)
        return clusterId.decode("ascii")

    def _loadTopics(self):
        for key, value in self.db.iterator(prefix=b"T"):
            topicId, partitions, configs = _decodeTopic(value)
            logs = [self._loadPartition(topicId, partition) for partition in range(partitions)]
            name = key[1:].decode("utf-8")
            self._topics[name] = _Topic(name, topicId, logs, configs)
        for key, value in self.db.iterator(prefix=b"X"):
            self._deletedTopics[INT32.unpack_from(key, 1)[0]] = value.decode("utf-8")

    def _loadPartition(self, topicId, partition):
        partitionKey = _PARTITION_KEY.pack(topicId, partition)
        bounds = self.db.get(b"M" + partitionKey)
        if bounds is None:
            written = _Written(0, 0, 0)
        elif len(bounds) == _OLD_BOUNDS.size:
            start, end = _OLD_BOUNDS.unpack(bounds)
            size = sum(len(data) for data in self.db.iterator(prefix=b"D" + partitionKey, include_key=False))
            written = _Written(start, end, size)
        else:
            written = _Written.unpack(bounds)
        timePrefix = b"I" + partitionKey
        oldest, last = (self._firstTime(timePrefix, reverse) for reverse in (False, True))
        log = LevelDBPartitionLog(self, topicId, partition, written.start, written.end, written.size, oldest, last, written)
        self._openSegments(log, self._segmentFiles.pop((topicId, partition), []))
        log._producerStates = log._readProducerStates(self.db)
        return log

    def _openSegments(self, log, found):
        """At start-up: take the partition's segment files C{found} as the M key describes them.

        Files after the current segment, and the current one's bytes past what
        is stored, are what writes that never got stored left: deleted. The
        batches written since the last sync (none after a clean stop) are
        checked, and the log is cut before the first one found missing or
        damaged (a power loss without --sync).
        """
        written = log._written
        for segment in found:
            if segment > written.segment:
                os.unlink(log._segmentPath(segment))
        log._segments = [segment for segment in found if segment <= written.segment]
        if written.segment in log._segments:
            path = log._segmentPath(written.segment)
            if os.path.getsize(path) > written.segmentEnd:
                os.truncate(path, written.segmentEnd)
        log._deleteSegmentsBelow(written.start)
        if written.synced < written.end:
            self._checkUnsynced(log)

    def _checkUnsynced(self, log):
        """At start-up: check the batches of C{log} stored since its segments were last synced."""
        written = log._written
        prefix = log._dataPrefix
        damaged = None
        with self.db.iterator(start=prefix + _OFFSET.pack(written.synced), stop=prefix + _OFFSET.pack(written.end)) as iterator:
            for key, value in iterator:
                if segments.isPointer(value):
                    try:
                        data = log._readStored(value)
                    except FileNotFoundError:
                        data = b""
                    if len(data) != segments.storedSize(value) or not storedEntriesIntact(data):
                        damaged = key, value
                        break
        if damaged is None:
            batch = self.db.write_batch(sync=True)
            log._writeBounds(batch, _Written(written.start, written.end, written.size, written.segment, written.segmentEnd))
            return
        self._cutLog(log, *damaged)

    def _cutLog(self, log, damagedKey, damagedValue):
        """At start-up: end C{log} before the batch stored under C{damagedKey}, whose segment
        bytes are missing or damaged, in one synced write. Its producers' states go too:
        they may count batches cut off (their next batch gets UNKNOWN_PRODUCER_ID, as
        when Kafka loses producer state)."""
        written = log._written
        prefix = log._dataPrefix
        with self.db.iterator(start=prefix, stop=damagedKey, reverse=True, include_value=False) as iterator:
            previous = next(iter(iterator), None)
        cut = _OFFSET.unpack_from(previous, len(prefix))[0] + 1 if previous is not None else written.start
        batch = self.db.write_batch(sync=True)
        removed = 0
        with self.db.iterator(start=damagedKey, stop=prefix + _OFFSET.pack(written.end)) as iterator:
            for key, value in iterator:
                batch.delete(key)
                removed += segments.storedSize(value)
        with self.db.iterator(prefix=log._timePrefix, reverse=True, include_value=False) as iterator:
            for key in iterator:
                if _TIME_ENTRY.unpack_from(key, len(log._timePrefix))[1] < cut:
                    break
                batch.delete(key)
        with self.db.iterator(prefix=log._producerPrefix, include_value=False) as iterator:
            for key in iterator:
                batch.delete(key)
        segment, position, _ = segments.decodePointer(damagedValue)
        if position == 0 or segment not in log._segments:
            segment = -1  # the next batch starts a segment of its own
        later = [s for s in log._segments if s > segment]
        log._writeBounds(batch, _Written(min(written.start, cut), cut, written.size - removed, segment, position, cut))
        for gone in later:
            log._segments.remove(gone)
            os.unlink(log._segmentPath(gone))
        if segment >= 0:
            os.truncate(log._segmentPath(segment), position)
        log.endOffset, log.sizeBytes = cut, written.size - removed
        self._log.warn(
            "partition {partition} of topic id {topicId}: the batches from offset {cut} to {end} were acknowledged "
            "but their segment data was not on disk (power loss without --sync?): the log now ends at {cut}, "
            "and its producers' states are reset",
            partition=log.partition, topicId=log.topicId, cut=cut, end=written.end - 1,
        )

    def _removeOrphanSegments(self):
        """At start-up: delete the segment files of topics no longer stored (a deletion that stopped after its last key)."""
        for topicId, partition in self._segmentFiles:
            if topicId not in self._deletedTopics:
                shutil.rmtree(segments.partitionDir(self._segmentsPath, topicId, partition), ignore_errors=True)
        self._segmentFiles = {}

    def _checkpointIfDue(self):
        """In the writer thread, after a round of writes: sync the segments
        written without --sync, at most once per C{_CHECKPOINT_SECONDS}."""
        if self._unsynced and time.monotonic() - self._lastCheckpoint >= _CHECKPOINT_SECONDS:
            try:
                self._guardedWrite(self._checkpoint)
            except _WriteFailed:
                pass  # writes are stopped: the next one fails and starts the reopen

    def _checkpoint(self):
        """In the writer thread (or at close): sync the segment files written since the
        last checkpoint, then store, synced, that their partitions' batches are on disk."""
        unsynced, self._unsynced = self._unsynced, {}
        self._lastCheckpoint = time.monotonic()
        try:
            batch = self.db.write_batch(sync=True)
            synced = []
            for log, written in unsynced.items():
                if log._deleted is not None:
                    continue
                for segment in written:
                    with self._files.open(log._segmentPath(segment)) as fd:
                        os.fdatasync(fd)
                segments.syncDirectory(log._segmentDir)
                w = log._written
                new = _Written(w.start, w.end, w.size, w.segment, w.segmentEnd)
                batch.put(log._boundsKey, new.pack())
                synced.append((log, new))
            if synced:
                batch.write()
        except BaseException:
            for log, written in unsynced.items():
                self._unsynced.setdefault(log, set()).update(written)
            raise
        for log, new in synced:
            log._written = new

    def _firstTime(self, timePrefix, reverse):
        """The append time of the first (or last) entry of a time index; 0 if it is empty."""
        with self.db.iterator(prefix=timePrefix, reverse=reverse, include_value=False) as iterator:
            for key in iterator:
                return _TIME_ENTRY.unpack_from(key, len(timePrefix))[0]
        return 0

    def _run(self, pool, function):
        if self._closing is not None:
            return defer.fail(StorageError("the store is closing"))
        return self._track(threads.deferToThreadPool(self._reactor, pool, function))

    def _track(self, d):
        """Count C{d} as outstanding until it fires (close and reopen wait for it)."""
        self._outstanding.add(d)

        def done(result):
            self._outstanding.discard(d)
            if not self._outstanding:
                idle, self._idle = self._idle, []
                for waiter in idle:
                    waiter.callback(None)
            return result

        return d.addBoth(done)

    @property
    def closing(self):
        """True once L{close} was called: background work should stop."""
        return self._closing is not None

    def write(self, function):
        """Run C{function} in the writer thread (calls run in order).

        Once a write has failed, writes fail at once with L{StorageError}
        until the database is reopened (see L{_recover}).
        """
        if self._failure is not None and self._closing is None:
            return defer.fail(StorageError(f"LevelDB is not writable: {self._failure}"))
        return self._queueWrite(function, None)

    def appendWrite(self, log, fill):
        """Like L{write}, for a partition log's append: C{fill(batch)} puts its
        keys in a write batch it shares with the other logs' appends queued
        next to it, and returns what to run once that batch is written.

        The partitions' group commits thus become one LevelDB write (one
        fsync with --sync) per round. C{fill} may raise only before it puts
        anything; a batch that fails to be written fails every append in it.
        """
        if self._failure is not None and self._closing is None:
            return defer.fail(StorageError(f"LevelDB is not writable: {self._failure}"))
        return self._queueWrite(fill, log)

    def _queueWrite(self, function, log):
        if self._closing is not None:
            return defer.fail(StorageError("the store is closing"))
        d = defer.Deferred()
        self._writeQueue.append((function, log, d))
        if not self._writing:
            # Started once the reactor has handled every event of this turn
            # (callFromThread from the reactor thread runs then), so that the
            # writes of all the requests it read go as one round.
            self._writing = True
            self._reactor.callFromThread(self._startWriteRound)
        return self._track(d).addErrback(self._writeFailed)

    def _startWriteRound(self):
        """Hand every queued write to the writer thread; those queued while
        it writes them wait for the next round (see L{_written})."""
        queued, self._writeQueue = self._writeQueue, []
        self._writer.callInThread(self._writeAll, queued)

    def _writeAll(self, queued):
        """In the writer thread: run a round of queued writes in order, the
        appends next to one another as one batch; hand every result to the
        reactor at once (one thread hand-off and one wake-up per round,
        rather than per write)."""
        results = []
        batch, appends, logs = None, [], set()

        def writeAppends():
            try:
                self._guardedWrite(batch.write)
            except BaseException:
                failure = Failure()
                results.extend((d, failure) for d, _ in appends)
                return
            for d, written in appends:
                written()
                results.append((d, None))

        for function, log, d in queued:
            if log is not None:
                if batch is not None and log in logs:  # one append per log and batch
                    writeAppends()
                    batch = None
                if batch is None:
                    batch, appends, logs = self.db.write_batch(sync=self.sync), [], set()
                try:
                    # Guarded: a segment file's write fails as a LevelDB write does (disk full).
                    appends.append((d, self._guardedWrite(lambda: function(batch))))
                    logs.add(log)
                except BaseException:
                    results.append((d, Failure()))
                continue
            if batch is not None:
                writeAppends()
                batch = None
            try:
                results.append((d, self._guardedWrite(function)))
            except BaseException:
                results.append((d, Failure()))
        if batch is not None:
            writeAppends()
        self._reactor.callFromThread(self._written, results)
        self._checkpointIfDue()  # after the answers: a sync of the segments delays the next round only

    def _written(self, results):
        self._writing = False
        for d, result in results:
            if isinstance(result, Failure):
                d.errback(result)
            else:
                d.callback(result)
        if self._writeQueue and not self._writing:
            self._writing = True
            self._startWriteRound()

    def _guardedWrite(self, function):
        # In the writer thread. A write that fails may leave LevelDB's log
        # with a torn record, or LevelDB with a sticky background error: only
        # a reopen (which replays the log, dropping a torn tail) makes it
        # safe to write again, so nothing is written until then.
        if self._writesStopped is not None:
            raise _WriteFailed(self._writesStopped)
        try:
            return function()
        except (plyvel.Error, OSError) as e:  # OSError: a segment file's write or sync
            self._writesStopped = _describe(e)
            raise _WriteFailed(self._writesStopped) from None

    def _writeFailed(self, reason):
        if reason.check(_WriteFailed) and self._failure is None and self._closing is None:
            self._failure = reason.value.why
            self._failedAt = self._reactor.seconds()
            self._log.warn(
                "LevelDB write failed ({why}): produce is answered with error -1 until it can write again"
                " (retried every {interval:g} s); reads go on",
                why=self._failure, interval=_RETRY_SECONDS,
            )
            self._retry = self._reactor.callLater(_RETRY_SECONDS, self._recover)
        return reason

    def _recover(self):
        """Try to reopen the database; reads wait meanwhile, writes are refused."""
        self._retry = None
        d = self._recovering = self._reopenWhenIdle()
        d.addErrback(self._reopenFailed)
        d.addBoth(self._releaseReads)

    @defer.inlineCallbacks
    def _reopenWhenIdle(self):
        # plyvel has no locking: the database is closed only while no call runs.
        yield self._whenIdle()
        if self._closing is not None:
            return
        logs = [log for topic in self._topics.values() for log in topic.logs]
        stored, offsets, acls = yield threads.deferToThreadPool(self._reactor, self._writer, self._reopen, logs)
        # Here, not in the writer thread: callbacks of the last write before
        # the reopen may have moved these after the reopen started.
        for log, (bounds, producerStates) in zip(logs, stored):
            log._reload(bounds, producerStates)
        # A commit whose write failed may be durable all the same: what is stored counts.
        self._offsets = offsets
        if acls != self._acls:  # so may an ACL change
            self._acls = acls
        self._failure = None
        self._log.info(
            "LevelDB is writable again after {seconds:.1f} s (reopened {path})",
            seconds=self._reactor.seconds() - self._failedAt, path=self._path,
        )
        # Topic deletions stopped by the failure go on.
        for topicId, name in sorted(self._unstoredDeletions.items()):
            self._storeDeletion(topicId, name).addErrback(lambda _: None)  # logged by the store if it fails
        for topicId in sorted(self._deletedTopics):
            self._deleteTopicKeys(topicId)

    def _whenIdle(self):
        if not self._outstanding:
            return defer.succeed(None)
        waiter = defer.Deferred()
        self._idle.append(waiter)
        return waiter

    def _reopen(self, logs):
        """In the writer thread: check for room, reopen, read back the bounds and
        producer states of C{logs} and the committed offsets."""
        self._checkRoom()
        if self.db is not None:
            self.db.close()
            self.db = None
        self.db = self._open()
        try:
            stored = [(self.db.get(log._boundsKey), log._readProducerStates(self.db)) for log in logs]
            offsets, self._offsetKeys = _readCommittedOffsets(self.db)
            acls = _readAcls(self.db)
        except plyvel.Error as e:
            raise StorageError(f"cannot read LevelDB at {self._path}: {_describe(e)}") from None
        self._writesStopped = None
        return stored, offsets, acls

    def _checkRoom(self):
        """Raise L{StorageError} unless the data directory has room for a reopen.

        Reopening turns LevelDB's log files into a table and starts a new log,
        so it needs about their size, plus a margin: checked by allocating a
        file that big, so a disk still full leaves the open database (and the
        reads it serves) alone.
        """
        logs = sum(entry.stat().st_size for entry in os.scandir(self._path) if entry.name.endswith(".log"))
        probe = os.path.join(self._path, _PROBE_NAME)
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.posix_fallocate(fd, 0, logs + _ROOM_MARGIN)
            finally:
                os.close(fd)
                os.unlink(probe)
        except OSError as e:
            raise StorageError(f"no room to reopen LevelDB in {self._path}: {e.strerror}") from None

    def _reopenFailed(self, reason):
        """Stay failed; try again later."""
        if not reason.check(StorageError):
            self._log.failure("reopening LevelDB failed", reason)
        if self.db is None:
            # Closed but not reopened: from now on reads fail too.
            if not self._failure.startswith(_CANNOT_REOPEN):
                self._log.warn("LevelDB cannot be reopened ({why}): reads fail too until it can", why=reason.getErrorMessage())
            self._failure = _CANNOT_REOPEN + reason.getErrorMessage()
        if self._closing is None:
            self._retry = self._reactor.callLater(_RETRY_SECONDS, self._recover)

    def _releaseReads(self, _):
        self._recovering = None
        waiting, self._waitingReads = self._waitingReads, []
        for function, d in waiting:
            self.read(function).chainDeferred(d)

    def read(self, function):
        """Run C{function} in a reader thread (held while the database is reopened)."""
        if self._recovering is not None and self._closing is None:
            d = defer.Deferred()
            self._waitingReads.append((function, d))
            return d
        if self.db is None and self._closing is None:
            return defer.fail(StorageError(f"LevelDB is not open: {self._failure}"))
        return self._run(self._readers, function)

    def createTopic(self, name, partitions, configs=None):
        if name in self._topics:
            return defer.fail(StorageError(f"topic {name!r} exists"))
        configs = dict(configs or {})
        topicId = self._nextTopicId
        self._nextTopicId += 1
        logs = [LevelDBPartitionLog(self, topicId, p, 0, 0, 0, 0, 0) for p in range(partitions)]
        topic = self._topics[name] = _Topic(name, topicId, logs, configs)  # reserve the name and id at once
        sync = self.sync

        def write():
            batch = self.db.write_batch(sync=sync)
            batch.put(b"T" + name.encode("utf-8"), _encodeTopic(topicId, partitions, configs))
            for p in range(partitions):
                batch.put(b"M" + _PARTITION_KEY.pack(topicId, p), _EMPTY_BOUNDS)
            batch.put(_NEXT_TOPIC_ID_KEY, INT32.pack(topicId + 1))
            batch.write()

        def failed(reason):
            if self._topics.get(name) is topic:
                del self._topics[name]
            return reason

        return self.write(write).addCallbacks(lambda _: None, failed)

    def addPartitions(self, name, count):
        topic = self._topics.get(name)
        if topic is None:
            return defer.fail(StorageError(f"no topic {name!r}"))
        if count <= topic.partitions:
            return defer.fail(ValueError(f"topic {name!r} has {topic.partitions} partitions: cannot grow to {count}"))
        old, topic.partitions = topic.partitions, count
        sync = self.sync

        def write():
            if topic.deleted:
                raise StorageError(f"topic {name!r} was deleted")
            batch = self.db.write_batch(sync=sync)
            batch.put(b"T" + name.encode("utf-8"), _encodeTopic(topic.id, count, topic.configs))
            for p in range(old, count):
                batch.put(b"M" + _PARTITION_KEY.pack(topic.id, p), _EMPTY_BOUNDS)
            batch.write()

        def stored(_):
            if not topic.deleted:
                new = range(len(topic.logs), count)
                topic.logs.extend(LevelDBPartitionLog(self, topic.id, p, 0, 0, 0, 0, 0) for p in new)

        def failed(reason):
            # Writes queued behind a failed one fail too: none of the additions asked for is stored.
            topic.partitions = len(topic.logs)
            return reason

        return self.write(write).addCallbacks(stored, failed)

    def deleteTopic(self, name):
        topic = self._topics.pop(name, None)
        if topic is None:
            return defer.fail(StorageError(f"no topic {name!r}"))
        topic.deleted = True
        for log in topic.logs:
            log._delete(name)
        return self._storeDeletion(topic.id, name)

    def _storeDeletion(self, topicId, name):
        """Replace the topic's T key by its X key, then delete its other keys in the background.

        Until the write is stored, the deletion is remembered in
        C{_unstoredDeletions}: if it fails, it is made again once the store
        can write again.
        """
        self._unstoredDeletions[topicId] = name
        key = b"T" + name.encode("utf-8")
        sync = self.sync

        def write():
            batch = self.db.write_batch(sync=sync)
            stored = self.db.get(key)
            # Not the T key (nor the committed offsets) of a topic made again under the name since.
            mine = stored is None or _decodeTopic(stored)[0] == topicId
            if stored is not None and mine:
                batch.delete(key)
            groups = self._topicOffsetKeys(name, batch) if mine else []
            batch.put(b"X" + INT32.pack(topicId), name.encode("utf-8"))
            batch.write()
            for group in groups:
                del self._offsetKeys[group][name]
                if not self._offsetKeys[group]:
                    del self._offsetKeys[group]
            return mine

        def stored(mine):
            if mine:
                forgetTopicOffsets(self._offsets, name)
            self._unstoredDeletions.pop(topicId, None)
            self._deletedTopics[topicId] = name
            self._deleteTopicKeys(topicId)

        finished = self._storingDeletions[topicId] = defer.Deferred()

        def done(result):
            if self._storingDeletions.get(topicId) is finished:
                del self._storingDeletions[topicId]
            finished.callback(None)
            return result

        return self.write(write).addCallback(stored).addBoth(done)

    def _topicOffsetKeys(self, name, batch):
        """In the writer thread: delete in C{batch} the O keys of topic C{name}; return the groups that had any."""
        groups = []
        for group, topics in self._offsetKeys.items():
            partitions = topics.get(name)
            if partitions:
                groups.append(group)
                prefix = _groupPrefix(group)
                for partition in partitions:
                    batch.delete(prefix + _offsetKeySuffix(name, partition))
        return groups

    def _deleteTopicKeys(self, topicId):
        """Delete the keys of a deleted topic in the background, unless that is under way already."""
        if topicId in self._deletions or self.closing:
            return
        d = self._deletions[topicId] = self._deleteKeysInSteps(topicId)

        def done(result):
            del self._deletions[topicId]
            return result

        d.addBoth(done).addErrback(self._deletionStopped, topicId)

    def _deletionStopped(self, reason, topicId):
        # A failed write is logged by the store, and the deletion goes on after the reopen.
        if not reason.check(StorageError):
            name = self._deletedTopics.get(topicId)
            self._log.failure("deleting the keys of topic {name!r} failed", reason, name=name)

    @defer.inlineCallbacks
    def _deleteKeysInSteps(self, topicId):
        """Delete a deleted topic's M, D, I and P keys in steps, then its X key; then compact.

        Each step deletes at most C{_DELETE_BATCHES} keys or C{_DELETE_BYTES}
        bytes in one write, so writes of other topics wait briefly. Each
        step reads on after the last key deleted, not over its tombstones.
        Stops (quietly) when the store closes; the next open goes on.
        """
        topicKey = INT32.pack(topicId)
        sync = self.sync
        for kind in _TOPIC_KEY_KINDS:
            start, stop = kind + topicKey, kind + INT32.pack(topicId + 1)
            after = None
            while True:
                if self.closing:
                    return
                keys = yield self.read(lambda: self._topicKeysAfter(start, stop, after))
                if not keys:
                    break
                if self.closing:
                    return
                yield self.write(lambda: self._deleteKeys(keys, sync))
                after = keys[-1]
        if self.closing:
            return
        yield self.write(lambda: self._deleteTopicSegments(topicId, [b"X" + topicKey], sync))
        self._deletedTopics.pop(topicId, None)
        if self.closing:
            return
        yield self.read(lambda: self._compactTopic(topicId))

    def _topicKeysAfter(self, start, stop, after):
        """In a reader thread: the next keys (one step) in C{[start, stop)}, after C{after} if given."""
        keys, size = [], 0
        if after is None:
            iterator = self.db.iterator(start=start, stop=stop)
        else:
            iterator = self.db.iterator(start=after, include_start=False, stop=stop)
        with iterator:
            for key, value in iterator:
                keys.append(key)
                size += len(value)
                if len(keys) >= _DELETE_BATCHES or size >= _DELETE_BYTES:
                    break
        return keys

    def _deleteTopicSegments(self, topicId, lastKeys, sync):
        """In the writer thread: delete the segment files of a deleted topic, then its C{lastKeys}."""
        prefix = f"{topicId}-"
        for entry in os.scandir(self._segmentsPath):
            if entry.name.startswith(prefix):
                for name in os.listdir(entry.path):
                    self._files.forget(os.path.join(entry.path, name))
                shutil.rmtree(entry.path)
        self._deleteKeys(lastKeys, sync)

    def _deleteKeys(self, keys, sync):
        batch = self.db.write_batch(sync=sync)
        for key in keys:
            batch.delete(key)
        batch.write()

    def _compactTopic(self, topicId):
        # Deleted keys only free disk space once compacted away.
        for kind in _TOPIC_KEY_KINDS:
            self.db.compact_range(start=kind + INT32.pack(topicId), stop=kind + INT32.pack(topicId + 1))

    def whenTopicDeletionsDone(self):
        """A Deferred firing once no topic deletion is under way (for tests).

        A deletion stopped by a failed write or by closing is not under way:
        it goes on after the reopen (or at the next open).
        """
        running = list(self._storingDeletions.values()) + list(self._deletions.values())
        if not running:
            return defer.succeed(None)
        return defer.DeferredList(running, consumeErrors=True).addCallback(lambda _: self.whenTopicDeletionsDone())

    def allocateProducerId(self):
        if self._nextProducerId < self._producerIdLimit:
            producerId = self._nextProducerId
            self._nextProducerId += 1
            return defer.succeed(producerId)
        d = defer.Deferred()
        self._producerIdWaiters.append(d)
        if not self._reservingProducerIds:
            self._reserveProducerIds()
        return d

    def _reserveProducerIds(self):
        """Store the next block of producer ids as handed out (synced), then hand them to the waiters."""
        self._reservingProducerIds = True
        limit = self._producerIdLimit + _PRODUCER_ID_BLOCK

        def write():
            batch = self.db.write_batch(sync=True)  # rare, and a reused id is worse than a slow one
            batch.put(_NEXT_PRODUCER_ID_KEY, _OFFSET.pack(limit))
            batch.write()

        def reserved(_):
            self._reservingProducerIds = False
            self._producerIdLimit = max(self._producerIdLimit, limit)
            while self._producerIdWaiters and self._nextProducerId < self._producerIdLimit:
                self._producerIdWaiters.pop(0).callback(self._nextProducerId)
                self._nextProducerId += 1
            if self._producerIdWaiters:
                self._reserveProducerIds()

        def failed(reason):
            self._reservingProducerIds = False
            waiters, self._producerIdWaiters = self._producerIdWaiters, []
            for waiter in waiters:
                waiter.errback(reason)

        self.write(write).addCallbacks(reserved, failed)

    def commitOffsets(self, group, offsets):
        try:
            offsets = checkOffsetCommit(group, offsets)
        except ValueError as e:
            return defer.fail(e)
        if not offsets:
            return defer.succeed(None)
        prefix = _groupPrefix(group)
        entries = [
            (prefix + _offsetKeySuffix(topic, partition), _encodeCommitted(*value))
            for (topic, partition), value in offsets.items()
        ]
        sync = self.sync

        def write():
            batch = self.db.write_batch(sync=sync)
            for key, value in entries:
                batch.put(key, value)
            batch.write()
            topics = self._offsetKeys.setdefault(group, {})
            for topic, partition in offsets:
                topics.setdefault(topic, set()).add(partition)

        def stored(_):
            self._offsets.setdefault(group, {}).update(offsets)

        return countPending(self._pendingCommits, group, self.write(write).addCallback(stored))

    def committedOffsets(self):
        return {group: dict(offsets) for group, offsets in self._offsets.items()}

    def deleteGroupOffsets(self, group, partitions=None):
        try:
            partitions = checkPartitions(partitions)
        except ValueError as e:
            return defer.fail(e)
        if group not in self._offsets and group not in self._pendingCommits:
            return defer.succeed(None)  # nothing stored, nothing on its way
        sync = self.sync

        def write():
            topics = self._offsetKeys.get(group)
            if not topics:
                return
            if partitions is None:
                gone = [(topic, partition) for topic, stored in topics.items() for partition in stored]
            else:
                gone = [(topic, partition) for topic, partition in partitions if partition in topics.get(topic, ())]
            if not gone:
                return
            prefix = _groupPrefix(group)
            batch = self.db.write_batch(sync=sync)
            for topic, partition in gone:
                batch.delete(prefix + _offsetKeySuffix(topic, partition))
            batch.write()
            for topic, partition in gone:
                stored = topics[topic]
                stored.discard(partition)
                if not stored:
                    del topics[topic]
            if not topics:
                del self._offsetKeys[group]

        return self.write(write).addCallback(lambda _: forgetGroupOffsets(self._offsets, group, partitions))

    # --- ACLs (IAclStore) ---

    def _storeAcls(self, bindings, adding):
        keys = [_aclKey(binding) for binding in bindings]
        sync = self.sync

        def write():
            batch = self.db.write_batch(sync=sync)
            for key in keys:
                if adding:
                    batch.put(key, b"")
                else:
                    batch.delete(key)
            batch.write()

        return self.write(write)

    # --- end of ACLs ---

    def close(self):
        if self._closing is None:
            if self._retry is not None:
                self._retry.cancel()
                self._retry = None
            waits = list(self._outstanding) + ([self._recovering] if self._recovering is not None else [])
            self._closing = defer.DeferredList(waits, consumeErrors=True)
            self._closing.addCallback(lambda _: self._release())
        return self._closing

    def _release(self):
        self._writer.stop()
        self._readers.stop()
        if self.db is not None:
            if self._failure is None and self._unsynced:
                try:
                    self._checkpoint()  # so the next open checks nothing
                except (plyvel.Error, OSError) as e:
                    self._log.warn("syncing segment files at close failed: {why}", why=_describe(e))
            self.db.close()
        self._files.closeAll()


@implementer(IStorageFactory, IPlugin)
class LevelDBStorageFactory:
    name = "leveldb"
    description = "LevelDB (plyvel) under --data-dir (default)"

    def openStore(self, dataDir, sync, arguments=None):
        refuseArguments(self.name, arguments)
        return LevelDBStore(os.path.join(dataDir, "leveldb"), sync)
