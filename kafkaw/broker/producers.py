"""Idempotent producer state of one partition, as Kafka 2.3 keeps it.

Pure logic: no I/O, no Twisted. The partition service owns one
L{ProducerStates} per partition, built from what the store returns
(C{{producerId: bytes}}), and for every write it stores:

    update = states.begin()
    for each batch of the write, in offset order:
        try:
            original = update.check(pid, epoch, baseSequence, count)
        except ProducerError as e:
            answer e.errorCode; the batch is not written
        else:
            if original is not None:
                answer original (a duplicate: nothing is written)
            else:
                assign baseOffset; update.record(pid, epoch, baseSequence,
                                                 count, baseOffset, timestamp)
    store the batches together with update.changes()
    on success: update.commit(); on failure: drop update (the table is unchanged)

One update per partition at a time: begin the next one after the previous
write was committed or dropped (an update sees only the committed table and
its own records).

The rules follow Kafka 2.3.0 (C{ProducerStateManager.scala},
C{ProducerAppendInfo.checkSequence}, C{Log.analyzeAndValidateProducerState}):

 - producer ids below 0 (-1: not idempotent) are never checked nor recorded;
 - a batch whose epoch, first and last sequence equal one of the producer's
   last five batches is a duplicate, answered with that batch's base offset
   (this is checked first, before the epoch and sequence rules);
 - an epoch lower than the producer's current one: INVALID_PRODUCER_EPOCH (47);
 - another epoch (higher, or the first one seen for an unknown producer) must
   start at sequence 0; else OUT_OF_ORDER_SEQUENCE_NUMBER (45) for a known
   producer, UNKNOWN_PRODUCER_ID (59) for an unknown one; a new epoch forgets
   the cached batches of the old one;
 - the same epoch must continue at last sequence + 1, where
   2147483647 is followed by 0; else 45;
 - a producer is forgotten when its last batch is older than the log start
   (L{ProducerUpdate.truncateHead}, Kafka's C{truncateHead}) or when it has
   been idle for C{maxAgeMs} (L{ProducerUpdate.expire}, Kafka's
   C{removeExpiredProducers}, C{transactional.id.expiration.ms}, 7 days): its
   next batch then gets 59 unless it starts at sequence 0.

Transactions (coordinator epochs, markers, the transactional bit) are not
modelled: the caller rejects transactional and control batches before this.
"""

import struct

INVALID_PRODUCER_EPOCH = 47
OUT_OF_ORDER_SEQUENCE_NUMBER = 45
UNKNOWN_PRODUCER_ID = 59

#: How many of a producer's most recent batches are kept for duplicate detection.
BATCHES_TO_RETAIN = 5

#: Kafka 2.3's default producer id expiry (transactional.id.expiration.ms).
DEFAULT_MAX_AGE_MS = 7 * 24 * 3600 * 1000

INT32_MAX = 2**31 - 1
NO_EPOCH = -1

_VERSION = 1
_HEAD = struct.Struct(">BhB")  # version, epoch, number of batches
_BATCH = struct.Struct(">iiqiq")  # firstSeq, lastSeq, baseOffset, offsetDelta, timestamp


class ProducerError(Exception):
    """A batch is rejected; C{errorCode} is the per-partition answer."""

    def __init__(self, errorCode, message):
        super().__init__(message)
        self.errorCode = errorCode


def incrementSequence(sequence, increment):
    """C{sequence + increment} on Kafka's sequence circle (Int.MaxValue + 1 is 0)."""
    if sequence > INT32_MAX - increment:
        return increment - (INT32_MAX - sequence) - 1
    return sequence + increment


def inSequence(lastSeq, nextSeq):
    """Whether C{nextSeq} directly follows C{lastSeq}."""
    return nextSeq == lastSeq + 1 or (nextSeq == 0 and lastSeq == INT32_MAX)


class Batch:
    """What is kept of one appended batch."""

    __slots__ = ("firstSeq", "lastSeq", "baseOffset", "offsetDelta", "timestamp")

    def __init__(self, firstSeq, lastSeq, baseOffset, offsetDelta, timestamp):
        self.firstSeq = firstSeq
        self.lastSeq = lastSeq
        self.baseOffset = baseOffset
        self.offsetDelta = offsetDelta
        self.timestamp = timestamp

    @property
    def lastOffset(self):
        return self.baseOffset + self.offsetDelta

    def _key(self):
        return (self.firstSeq, self.lastSeq, self.baseOffset, self.offsetDelta, self.timestamp)

    def __eq__(self, other):
        return isinstance(other, Batch) and self._key() == other._key()

    def __repr__(self):
        return "Batch(firstSeq=%d, lastSeq=%d, baseOffset=%d, offsetDelta=%d, timestamp=%d)" % self._key()


class ProducerEntry:
    """One producer's state: its epoch and its last (at most five) batches, oldest first.

    Entries are never changed in place once they are in a table: an update
    works on copies, so a dropped update leaves the table as it was.
    """

    __slots__ = ("epoch", "batches")

    def __init__(self, epoch=NO_EPOCH, batches=()):
        self.epoch = epoch
        self.batches = tuple(batches)

    @property
    def lastSeq(self):
        return self.batches[-1].lastSeq if self.batches else None

    @property
    def lastOffset(self):
        return self.batches[-1].lastOffset if self.batches else -1

    @property
    def lastTimestamp(self):
        return self.batches[-1].timestamp if self.batches else -1

    def duplicateOf(self, epoch, firstSeq, lastSeq):
        """The cached batch with exactly this epoch and sequence range, or None."""
        if epoch != self.epoch:
            return None
        for batch in self.batches:
            if batch.firstSeq == firstSeq and batch.lastSeq == lastSeq:
                return batch
        return None

    def withBatch(self, epoch, batch):
        """A new entry with C{batch} appended (a new epoch starts an empty cache)."""
        kept = self.batches if epoch == self.epoch else ()
        return ProducerEntry(epoch, (kept + (batch,))[-BATCHES_TO_RETAIN:])

    def encode(self):
        """Compact versioned bytes for the store."""
        parts = [_HEAD.pack(_VERSION, self.epoch, len(self.batches))]
        parts.extend(_BATCH.pack(*b._key()) for b in self.batches)
        return b"".join(parts)

    @classmethod
    def decode(cls, data):
        version, epoch, count = _HEAD.unpack_from(data, 0)
        if version != _VERSION:
            raise ValueError("unknown producer state version %d" % (version,))
        if len(data) != _HEAD.size + count * _BATCH.size:
            raise ValueError("producer state of %d bytes for %d batches" % (len(data), count))
        batches = [Batch(*_BATCH.unpack_from(data, _HEAD.size + i * _BATCH.size)) for i in range(count)]
        return cls(epoch, batches)

    def __eq__(self, other):
        return isinstance(other, ProducerEntry) and (self.epoch, self.batches) == (other.epoch, other.batches)

    def __repr__(self):
        return "ProducerEntry(epoch=%d, batches=%r)" % (self.epoch, list(self.batches))


class ProducerStates:
    """The idempotent producers of one partition (the committed table)."""

    def __init__(self, stored=None):
        """
        @param stored: C{{producerId: bytes}} as the store returns it
            (C{bytes} written from L{ProducerUpdate.changes}).
        """
        self._entries = {pid: ProducerEntry.decode(data) for pid, data in (stored or {}).items()}

    def entry(self, producerId):
        """The committed L{ProducerEntry} of C{producerId}, or None."""
        return self._entries.get(producerId)

    def producerIds(self):
        return sorted(self._entries)

    def __len__(self):
        return len(self._entries)

    def begin(self):
        """An overlay collecting the producer changes of one write."""
        return ProducerUpdate(self)


class ProducerUpdate:
    """The producer changes of one write, applied to the table by L{commit}."""

    def __init__(self, states):
        self._states = states
        self._changed = {}  # producerId -> ProducerEntry, or None when removed
        self._committed = False

    def _entry(self, producerId):
        if producerId in self._changed:
            return self._changed[producerId]
        return self._states._entries.get(producerId)

    def check(self, producerId, producerEpoch, baseSequence, count):
        """Check a batch against the table and the earlier L{record} calls of this update.

        @param count: the batch's lastOffsetDelta + 1 (its number of records,
            for a client batch); Kafka takes the last sequence from it.
        @return: None when the batch is to be appended; the original base
            offset when it is a duplicate of a cached batch.
        @raise ProducerError: with errorCode 47, 45 or 59.
        """
        if producerId < 0:
            return None
        lastSeq = incrementSequence(baseSequence, count - 1)
        current = self._entry(producerId) or ProducerEntry()
        duplicate = current.duplicateOf(producerEpoch, baseSequence, lastSeq)
        if duplicate is not None:
            return duplicate.baseOffset
        if producerEpoch < current.epoch:
            raise ProducerError(
                INVALID_PRODUCER_EPOCH,
                "producer %d: epoch %d is older than the current epoch %d"
                % (producerId, producerEpoch, current.epoch))
        if producerEpoch != current.epoch:
            if baseSequence != 0:
                if current.epoch != NO_EPOCH:
                    raise ProducerError(
                        OUT_OF_ORDER_SEQUENCE_NUMBER,
                        "producer %d: new epoch %d starts at sequence %d, not 0"
                        % (producerId, producerEpoch, baseSequence))
                raise ProducerError(
                    UNKNOWN_PRODUCER_ID,
                    "producer %d is not known here (its batches may have been removed by retention)"
                    " and its batch starts at sequence %d" % (producerId, baseSequence))
            return None
        if current.lastSeq is None:
            # Kafka: a known epoch with no batch (only a transaction marker
            # left); it cannot happen here, but is answered as Kafka does.
            if baseSequence != 0:
                raise ProducerError(
                    UNKNOWN_PRODUCER_ID,
                    "producer %d: next sequence is not known" % (producerId,))
            return None
        if not inSequence(current.lastSeq, baseSequence):
            raise ProducerError(
                OUT_OF_ORDER_SEQUENCE_NUMBER,
                "producer %d: sequence %d does not follow %d"
                % (producerId, baseSequence, current.lastSeq))
        return None

    def record(self, producerId, producerEpoch, baseSequence, count, baseOffset, timestamp):
        """Note an appended batch (after L{check} returned None for it).

        @param baseOffset: the offset the broker gave its first record.
        @param timestamp: its max timestamp, in ms (Kafka 2.3 takes the
            batch's maxTimestamp, or the append time for LogAppendTime topics);
            producer expiry measures idleness from it.
        """
        if producerId < 0:
            return
        batch = Batch(baseSequence, incrementSequence(baseSequence, count - 1),
                      baseOffset, count - 1, timestamp)
        current = self._entry(producerId) or ProducerEntry()
        self._changed[producerId] = current.withBatch(producerEpoch, batch)

    def expire(self, now, maxAgeMs=DEFAULT_MAX_AGE_MS):
        """Remove the producers idle for C{maxAgeMs} or longer (Kafka: C{now - lastTimestamp >= max}).

        @return: the sorted list of removed producer ids.
        """
        return self._removeWhere(lambda e: now - e.lastTimestamp >= maxAgeMs)

    def truncateHead(self, logStartOffset):
        """Remove the producers whose last batch lies wholly before the new log start.

        Kafka 2.3 keeps a producer while its last batch's last offset is
        >= the log start (its C{removeBatchesOlderThan} is a no-op in 2.3, so
        the cached batches of a retained producer are kept too).

        @return: the sorted list of removed producer ids.
        """
        return self._removeWhere(lambda e: e.lastOffset < logStartOffset)

    def _removeWhere(self, predicate):
        ids = set(self._states._entries) | set(self._changed)
        removed = []
        for pid in sorted(ids):
            entry = self._entry(pid)
            if entry is not None and predicate(entry):
                self._changed[pid] = None
                removed.append(pid)
        return removed

    def changes(self):
        """C{{producerId: bytes or None}} to store with the write (None: delete)."""
        return {pid: (None if e is None else e.encode()) for pid, e in self._changed.items()}

    def commit(self):
        """The write is stored: apply this update to the table (once)."""
        if self._committed:
            raise RuntimeError("update already committed")
        self._committed = True
        entries = self._states._entries
        for pid, entry in self._changed.items():
            if entry is None:
                entries.pop(pid, None)
            else:
                entries[pid] = entry
