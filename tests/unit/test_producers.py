"""Idempotent producer state (kafkaw.broker.producers): Kafka 2.3's sequence and
epoch rules, the per-write overlay, persistence, retention and expiry."""

import pytest

from kafkaw.broker.producers import (
    BATCHES_TO_RETAIN,
    DEFAULT_MAX_AGE_MS,
    INT32_MAX,
    INVALID_PRODUCER_EPOCH,
    OUT_OF_ORDER_SEQUENCE_NUMBER,
    UNKNOWN_PRODUCER_ID,
    Batch,
    ProducerEntry,
    ProducerError,
    ProducerStates,
    incrementSequence,
)

PID = 1000
OTHER = 2000


class Log:
    """A partition's log end and producer table; write() stores one group of batches."""

    def __init__(self, stored=None):
        self.states = ProducerStates(stored)
        self.end = 0
        self.stored = dict(stored or {})

    def write(self, *batches, fail=False, now=0):
        """Check and record each (pid, epoch, seq, count); returns each answer
        (base offset, or an error code); stores unless fail."""
        update = self.states.begin()
        answers = []
        end = self.end
        for pid, epoch, seq, count in batches:
            try:
                original = update.check(pid, epoch, seq, count)
            except ProducerError as e:
                answers.append(("error", e.errorCode))
                continue
            if original is not None:
                answers.append(("duplicate", original))
                continue
            update.record(pid, epoch, seq, count, end, now)
            answers.append(("appended", end))
            end += count
        if not fail:
            for pid, data in update.changes().items():
                if data is None:
                    self.stored.pop(pid, None)
                else:
                    self.stored[pid] = data
            update.commit()
            self.end = end
        return answers


def errorOf(states, pid, epoch, seq, count):
    with pytest.raises(ProducerError) as info:
        states.begin().check(pid, epoch, seq, count)
    return info.value.errorCode


# sequences


def test_incrementSequenceWraps():
    assert incrementSequence(0, 4) == 4
    assert incrementSequence(INT32_MAX, 1) == 0
    assert incrementSequence(INT32_MAX - 1, 3) == 1
    assert incrementSequence(INT32_MAX - 4, 4) == INT32_MAX


def test_newProducerStartsAtZero():
    log = Log()
    assert log.write((PID, 0, 0, 5)) == [("appended", 0)]
    assert log.states.entry(PID) == ProducerEntry(0, [Batch(0, 4, 0, 4, 0)])


def test_consecutiveBatchesAppend():
    log = Log()
    log.write((PID, 0, 0, 5))
    assert log.write((PID, 0, 5, 3)) == [("appended", 5)]
    assert log.write((PID, 0, 8, 1)) == [("appended", 8)]
    assert log.states.entry(PID).lastSeq == 8


def test_unknownProducerNotAtZero():
    """2.3: no entry (epoch NO_PRODUCER_EPOCH) and firstSeq != 0 -> UnknownProducerIdException."""
    assert errorOf(ProducerStates(), PID, 0, 7, 1) == UNKNOWN_PRODUCER_ID
    assert errorOf(ProducerStates(), PID, 3, 1, 1) == UNKNOWN_PRODUCER_ID


def test_unknownProducerAnyEpochAtZero():
    log = Log()
    assert log.write((PID, 7, 0, 2)) == [("appended", 0)]
    assert log.states.entry(PID).epoch == 7


def test_gapIsOutOfOrder():
    log = Log()
    log.write((PID, 0, 0, 5))
    assert errorOf(log.states, PID, 0, 6, 1) == OUT_OF_ORDER_SEQUENCE_NUMBER


def test_restartAtZeroSameEpochIsOutOfOrder():
    log = Log()
    log.write((PID, 0, 0, 5))
    log.write((PID, 0, 5, 5))
    assert errorOf(log.states, PID, 0, 0, 3) == OUT_OF_ORDER_SEQUENCE_NUMBER


def test_overlappingRangeIsOutOfOrder():
    """Not an exact cached range: neither a duplicate nor the next sequence."""
    log = Log()
    log.write((PID, 0, 0, 5))
    assert errorOf(log.states, PID, 0, 2, 3) == OUT_OF_ORDER_SEQUENCE_NUMBER
    assert errorOf(log.states, PID, 0, 0, 4) == OUT_OF_ORDER_SEQUENCE_NUMBER


def test_wrapAround():
    """Int.MaxValue is followed by 0 in the same epoch; a batch may straddle it."""
    log = Log({PID: ProducerEntry(0, [Batch(INT32_MAX - 2, INT32_MAX - 1, 0, 1, 0)]).encode()})
    log.end = 2
    assert log.write((PID, 0, INT32_MAX, 3)) == [("appended", 2)]
    entry = log.states.entry(PID)
    assert (entry.batches[-1].firstSeq, entry.lastSeq) == (INT32_MAX, 1)
    assert log.write((PID, 0, 2, 1)) == [("appended", 5)]


def test_wrapAroundAfterMaxValue():
    states = ProducerStates({PID: ProducerEntry(0, [Batch(INT32_MAX - 4, INT32_MAX, 10, 4, 0)]).encode()})
    update = states.begin()
    assert update.check(PID, 0, 0, 5) is None
    assert errorOf(states, PID, 0, 1, 1) == OUT_OF_ORDER_SEQUENCE_NUMBER
    assert errorOf(states, PID, 0, -(2**31), 1) == OUT_OF_ORDER_SEQUENCE_NUMBER


def test_duplicateOfWrappedBatch():
    log = Log({PID: ProducerEntry(0, [Batch(INT32_MAX - 1, 2, 10, 4, 0)]).encode()})
    assert log.states.begin().check(PID, 0, INT32_MAX - 1, 5) == 10


# epochs


def test_lowerEpochIsFenced():
    log = Log()
    log.write((PID, 3, 0, 5))
    assert errorOf(log.states, PID, 2, 5, 1) == INVALID_PRODUCER_EPOCH
    assert errorOf(log.states, PID, 2, 0, 1) == INVALID_PRODUCER_EPOCH


def test_higherEpochAtZero():
    log = Log()
    log.write((PID, 0, 0, 5))
    assert log.write((PID, 1, 0, 2)) == [("appended", 5)]
    entry = log.states.entry(PID)
    assert entry.epoch == 1
    assert entry.batches == (Batch(0, 1, 5, 1, 0),)  # the old epoch's batches are forgotten


def test_higherEpochNotAtZeroIsOutOfOrder():
    """2.3 answers OutOfOrderSequence (not UnknownProducerId) for a known producer."""
    log = Log()
    log.write((PID, 0, 0, 5))
    assert errorOf(log.states, PID, 1, 5, 1) == OUT_OF_ORDER_SEQUENCE_NUMBER


def test_fencedAfterBump():
    log = Log()
    log.write((PID, 0, 0, 5))
    log.write((PID, 1, 0, 1))
    # the old epoch's batch is no longer a duplicate: it is fenced
    assert errorOf(log.states, PID, 0, 0, 5) == INVALID_PRODUCER_EPOCH


def test_nonIdempotentNeverChecked():
    log = Log()
    assert log.write((-1, -1, -1, 5), (-1, -1, -1, 5)) == [("appended", 0), ("appended", 5)]
    assert len(log.states) == 0
    assert log.stored == {}


# duplicates


def test_duplicateAnsweredWithOriginalOffset():
    log = Log()
    log.write((OTHER, 0, 0, 3))
    log.write((PID, 0, 0, 5))
    log.write((PID, 0, 5, 5))
    before = dict(log.stored)
    assert log.write((PID, 0, 0, 5)) == [("duplicate", 3)]
    assert log.write((PID, 0, 5, 5)) == [("duplicate", 8)]
    assert log.stored == before
    assert log.end == 13


def test_onlyLastFiveBatchesAreDuplicates():
    log = Log()
    for i in range(BATCHES_TO_RETAIN + 1):
        log.write((PID, 0, i, 1))
    assert len(log.states.entry(PID).batches) == BATCHES_TO_RETAIN
    assert errorOf(log.states, PID, 0, 0, 1) == OUT_OF_ORDER_SEQUENCE_NUMBER
    for i in range(1, BATCHES_TO_RETAIN + 1):
        assert log.states.begin().check(PID, 0, i, 1) == i


def test_duplicateNeedsSameEpoch():
    log = Log()
    log.write((PID, 0, 0, 5))
    # same range, higher epoch, at 0: a new batch of the new epoch
    assert log.write((PID, 1, 0, 5)) == [("appended", 5)]


def test_duplicateCheckedBeforeSequence():
    log = Log()
    log.write((PID, 0, 0, 2))
    log.write((PID, 0, 2, 2))
    assert log.states.begin().check(PID, 0, 0, 2) == 0


# one write: the overlay


def test_twoBatchesOfOneProducerInOneWrite():
    log = Log()
    assert log.write((PID, 0, 0, 5), (PID, 0, 5, 5)) == [("appended", 0), ("appended", 5)]
    assert log.states.entry(PID).lastSeq == 9
    assert [b.baseOffset for b in log.states.entry(PID).batches] == [0, 5]


def test_outOfOrderWithinOneWrite():
    log = Log()
    assert log.write((PID, 0, 0, 5), (PID, 0, 6, 1), (PID, 0, 5, 1)) == [
        ("appended", 0), ("error", OUT_OF_ORDER_SEQUENCE_NUMBER), ("appended", 5)]


def test_duplicateWithinOneWrite():
    """A retry checked in the same group as its original is a duplicate of it."""
    log = Log()
    assert log.write((PID, 0, 0, 5), (PID, 0, 0, 5)) == [("appended", 0), ("duplicate", 0)]
    assert log.end == 5


def test_bumpWithinOneWrite():
    log = Log()
    assert log.write((PID, 0, 0, 5), (PID, 1, 0, 1), (PID, 0, 5, 1)) == [
        ("appended", 0), ("appended", 5), ("error", INVALID_PRODUCER_EPOCH)]


def test_checkDoesNotChangeAnything():
    states = ProducerStates()
    update = states.begin()
    assert update.check(PID, 0, 0, 5) is None
    assert update.changes() == {}
    assert update.check(PID, 0, 0, 5) is None
    with pytest.raises(ProducerError):
        update.check(PID, 0, 5, 5)


def test_failedWriteLeavesTableAsBefore():
    log = Log()
    log.write((PID, 0, 0, 5))
    before = (log.states.entry(PID), dict(log.stored))
    assert log.write((PID, 0, 5, 5), (OTHER, 0, 0, 1), fail=True) == [("appended", 5), ("appended", 10)]
    assert (log.states.entry(PID), dict(log.stored)) == before
    assert log.states.entry(OTHER) is None
    # the client retries: not a duplicate (never stored), appended now
    assert log.write((PID, 0, 5, 5)) == [("appended", 5)]


def test_failedWriteOfEpochBumpKeepsOldEpoch():
    log = Log()
    log.write((PID, 0, 0, 5))
    log.write((PID, 1, 0, 5), fail=True)
    assert log.states.entry(PID).epoch == 0
    assert log.write((PID, 0, 5, 1)) == [("appended", 5)]


def test_updateIsolatedFromLaterCommits():
    """The table's entries are not changed in place: an update's view of them stays."""
    states = ProducerStates()
    first = states.begin()
    first.record(PID, 0, 0, 5, 0, 0)
    entry = first._entry(PID)
    first.commit()
    second = states.begin()
    second.record(PID, 0, 5, 5, 5, 0)
    assert entry.batches == (Batch(0, 4, 0, 4, 0),)
    assert states.entry(PID).batches == (Batch(0, 4, 0, 4, 0),)


def test_commitTwice():
    update = ProducerStates().begin()
    update.commit()
    with pytest.raises(RuntimeError):
        update.commit()


# persistence


def test_roundTrip():
    log = Log()
    log.write((PID, 0, 0, 5), now=100)
    for i in range(6):
        log.write((PID, 0, 5 + i, 1), (OTHER, 3, i, 1), now=200 + i)
    reloaded = ProducerStates(log.stored)
    assert reloaded.producerIds() == [PID, OTHER]
    for pid in (PID, OTHER):
        assert reloaded.entry(pid) == log.states.entry(pid)
    # and it behaves the same: duplicates and next sequences survive a restart
    assert reloaded.begin().check(PID, 0, 10, 1) == 15
    assert reloaded.begin().check(PID, 0, 11, 1) is None
    assert reloaded.begin().check(OTHER, 3, 6, 1) is None


def test_encodingIsCompactAndVersioned():
    entry = ProducerEntry(2, [Batch(0, 4, 0, 4, 1), Batch(5, 9, 5, 4, 2)])
    data = entry.encode()
    assert data[0] == 1
    assert len(data) == 4 + 2 * 28
    assert ProducerEntry.decode(data) == entry
    with pytest.raises(ValueError):
        ProducerEntry.decode(b"\x02" + data[1:])
    with pytest.raises(ValueError):
        ProducerEntry.decode(data[:-1])


def test_changesOnlyTouchedProducers():
    log = Log()
    log.write((PID, 0, 0, 1), (OTHER, 0, 0, 1))
    update = log.states.begin()
    update.record(PID, 0, 1, 1, 2, 0)
    assert list(update.changes()) == [PID]


# expiry and retention


def test_expireIdleProducers():
    log = Log()
    log.write((PID, 0, 0, 1), now=1000)
    log.write((OTHER, 0, 0, 1), now=5000)
    update = log.states.begin()
    assert update.expire(1000 + DEFAULT_MAX_AGE_MS - 1) == []
    assert update.expire(1000 + DEFAULT_MAX_AGE_MS) == [PID]  # Kafka: >= max age
    assert update.changes() == {PID: None}
    with pytest.raises(ProducerError) as info:
        update.check(PID, 0, 1, 1)
    assert info.value.errorCode == UNKNOWN_PRODUCER_ID
    assert log.states.entry(PID) is not None  # not yet committed
    update.commit()
    assert log.states.producerIds() == [OTHER]


def test_expireUsesLastBatchTimestamp():
    log = Log()
    log.write((PID, 0, 0, 1), now=0)
    log.write((PID, 0, 1, 1), now=50)
    assert log.states.begin().expire(99, maxAgeMs=50) == []
    assert log.states.begin().expire(100, maxAgeMs=50) == [PID]


def test_expiryWrittenWithNextWrite():
    log = Log()
    log.write((PID, 0, 0, 1), now=0)
    log.write((OTHER, 0, 0, 1), now=10)
    update = log.states.begin()
    update.expire(10, maxAgeMs=10)
    update.record(OTHER, 0, 1, 1, 2, 10)
    assert set(update.changes()) == {PID, OTHER}
    assert update.changes()[PID] is None
    update.commit()
    assert log.states.producerIds() == [OTHER]


def test_expiredProducerMayStartOverAtZero():
    log = Log()
    log.write((PID, 0, 0, 5), now=0)
    update = log.states.begin()
    update.expire(100, maxAgeMs=10)
    assert update.check(PID, 0, 0, 1) is None


def test_truncateHeadForgetsProducersBeforeLogStart():
    """2.3 truncateHead: a producer whose last batch ends before the log start is
    forgotten, so its next batch gets UNKNOWN_PRODUCER_ID (the Java client then
    compares the log start offset in the answer and resets its sequence)."""
    log = Log()
    log.write((PID, 0, 0, 5))  # offsets 0-4
    log.write((OTHER, 0, 0, 5))  # offsets 5-9
    update = log.states.begin()
    assert update.truncateHead(5) == [PID]
    update.commit()
    assert errorOf(log.states, PID, 0, 5, 1) == UNKNOWN_PRODUCER_ID
    assert log.write((PID, 0, 0, 1)) == [("appended", 10)]


def test_truncateHeadKeepsPartlyRetainedProducer():
    """Kept while its last batch's last offset >= log start; its cached batches too
    (2.3's removeBatchesOlderThan drops nothing)."""
    log = Log()
    log.write((PID, 0, 0, 5), (PID, 0, 5, 5))  # offsets 0-9
    update = log.states.begin()
    assert update.truncateHead(9) == []
    assert update.truncateHead(10) == [PID]
    assert log.states.begin().check(PID, 0, 0, 5) == 0
