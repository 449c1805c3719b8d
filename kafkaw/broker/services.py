"""The cluster service and the partition services, over any L{IStore}."""

import re

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from kafkaw.broker.interfaces import IClusterService, IPartitionService, TopicError
from kafkaw.protocol.errors import ErrorCode, MessageSetError
from kafkaw.protocol.messages import assignOffsets
from kafkaw.storage.interfaces import StorageError

LATEST = -1
EARLIEST = -2

# Kafka's rule for topic names; it also keeps names safe in storage keys and paths.
_LEGAL_TOPIC = re.compile(r"[a-zA-Z0-9._-]{1,249}")

# Appends queued while one is being stored are merged into one stored message
# set, up to this size, so a busy partition writes few large values.
_MERGE_BYTES = 1 << 20

_MAX_PARTITIONS = 10000


class OffsetOutOfRange(Exception):
    """A fetch asked for an offset outside the log."""


def checkTopicName(name):
    """Raise L{TopicError} unless C{name} is a legal Kafka topic name."""
    if name in (".", "..") or not _LEGAL_TOPIC.fullmatch(name or ""):
        raise TopicError(
            f"illegal topic name {name!r}: use 1..249 of [a-zA-Z0-9._-]",
            ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
        )


@implementer(IPartitionService)
class PartitionService:
    """A partition's log with offset assignment, group commit and append listeners.

    One append is stored at a time; appends arriving meanwhile wait and are
    then stored together. Offsets are assigned when a batch is formed, from the
    stored log end, so a failed write leaves no hole.
    """

    _log = Logger()

    def __init__(self, topic, partition, partitionLog, clock, maxMessageBytes, maxExpandedBytes):
        self.topic = topic
        self.partition = partition
        self._partitionLog = partitionLog
        self._clock = clock
        self._maxMessageBytes = maxMessageBytes
        self._maxExpandedBytes = maxExpandedBytes
        self._waiting = []  # [(messageSet, Deferred)]
        self._storing = False
        self._listeners = []

    @property
    def logStartOffset(self):
        return self._partitionLog.startOffset

    @property
    def logEndOffset(self):
        return self._partitionLog.endOffset

    def append(self, messageSet):
        d = defer.Deferred()
        self._waiting.append((messageSet, d))
        if not self._storing:
            self._storeWaiting()
        return d

    def _storeWaiting(self):
        """Check, number and store the waiting appends as one message set."""
        while self._waiting:
            taken, size = 0, 0
            while taken < len(self._waiting) and (not taken or size < _MERGE_BYTES):
                size += len(self._waiting[taken][0])
                taken += 1
            batch, self._waiting = self._waiting[:taken], self._waiting[taken:]
            nextOffset = self._partitionLog.endOffset
            pieces, accepted = [], []
            for messageSet, d in batch:
                try:
                    assigned = assignOffsets(
                        messageSet, nextOffset, self._maxMessageBytes, self._maxExpandedBytes
                    )
                except MessageSetError as e:
                    d.errback(e)
                    continue
                pieces.append(assigned.data)
                accepted.append((nextOffset, d))
                nextOffset += assigned.count
            if not accepted:
                continue
            self._storing = True
            count = nextOffset - self._partitionLog.endOffset
            stored = self._partitionLog.append(
                b"".join(pieces), count, int(self._clock.seconds() * 1000)
            )
            stored.addCallbacks(self._stored, self._storeFailed, (accepted,), None, (accepted,))
            return

    def _stored(self, _, accepted):
        self._storing = False
        for baseOffset, d in accepted:
            d.callback(baseOffset)
        for listener in list(self._listeners):
            try:
                listener()
            except Exception:
                # A broken listener must not keep the queued appends waiting.
                self._log.failure(
                    "append listener of {topic}/{partition} failed", topic=self.topic, partition=self.partition
                )
        self._storeWaiting()

    def _storeFailed(self, reason, accepted):
        self._storing = False
        self._log.failure(
            "storing to {topic}/{partition} failed", reason, topic=self.topic, partition=self.partition
        )
        for _, d in accepted:
            d.errback(reason)
        self._storeWaiting()

    def read(self, offset, maxBytes):
        start, end = self._partitionLog.startOffset, self._partitionLog.endOffset
        if offset < start or offset > end:
            return defer.fail(OffsetOutOfRange(f"offset {offset} outside {start}..{end}"))
        if offset == end or maxBytes <= 0:
            return defer.succeed(b"")
        return self._partitionLog.read(offset, maxBytes, end)

    def offsetsBefore(self, time, maxNumber):
        start, end = self._partitionLog.startOffset, self._partitionLog.endOffset
        if maxNumber <= 0:
            return defer.succeed([])
        if time == LATEST:
            return defer.succeed([end][:maxNumber])
        if time == EARLIEST:
            return defer.succeed([start][:maxNumber])
        # Kafka 0.8 answers with the start offsets of log segments last written
        # at or before `time`, plus the log end when `time` is now or later; each
        # stored append is a segment here.
        now = int(self._clock.seconds() * 1000)
        if start == end:
            return defer.succeed([end][:maxNumber])
        if time >= now:
            d = self._partitionLog.batchesBefore(time, maxNumber - 1)
            return d.addCallback(lambda found: [end] + [o for o in found if o >= start])
        d = self._partitionLog.batchesBefore(time, maxNumber)
        return d.addCallback(lambda found: [o for o in found if o >= start])

    def onAppend(self, callback):
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback)


@implementer(IClusterService)
class ClusterService:
    """Which topics exist; creates them on demand when allowed."""

    _log = Logger()

    def __init__(
        self,
        store,
        clock,
        brokerId=0,
        numPartitions=1,
        autoCreateTopics=True,
        maxMessageBytes=1000000,
        maxExpandedBytes=100 * 1024 * 1024,
    ):
        self._store = store
        self._clock = clock
        self.brokerId = brokerId
        self._numPartitions = numPartitions
        self._autoCreate = autoCreateTopics
        self._maxMessageBytes = maxMessageBytes
        self._maxExpandedBytes = maxExpandedBytes
        self._partitions = {}  # (topic, partition) -> PartitionService
        self._creating = {}  # topic -> Deferred of its creation
        for name, count in store.topics().items():
            self._addPartitions(name, count)

    def _addPartitions(self, name, count):
        for number in range(count):
            self._partitions[name, number] = PartitionService(
                name,
                number,
                self._store.partitionLog(name, number),
                self._clock,
                self._maxMessageBytes,
                self._maxExpandedBytes,
            )

    def topics(self):
        # A store may list a topic while its definition is being stored; it
        # has no partition services until then.
        return {name: count for name, count in self._store.topics().items() if name not in self._creating}

    def partition(self, topic, partition):
        return self._partitions.get((topic, partition))

    def createTopic(self, name, partitions):
        try:
            checkTopicName(name)
        except TopicError as e:
            return defer.fail(e)
        if not 1 <= partitions <= _MAX_PARTITIONS:
            return defer.fail(
                TopicError(f"partition count {partitions} outside 1..{_MAX_PARTITIONS}", ErrorCode.UNKNOWN)
            )
        if name in self._creating or name in self._store.topics():
            return defer.fail(TopicError(f"topic {name!r} exists", ErrorCode.UNKNOWN))
        waiters = self._creating[name] = []

        def finished(result):
            del self._creating[name]
            if not isinstance(result, Failure):
                self._addPartitions(name, partitions)
                self._log.info(
                    "created topic {topic} with {partitions} partitions", topic=name, partitions=partitions
                )
            for waiter in waiters:
                waiter.callback(None)
            return result

        return self._store.createTopic(name, partitions).addBoth(finished)

    @defer.inlineCallbacks
    def describeTopics(self, names):
        if not names:
            return [(name, ErrorCode.NONE, count) for name, count in sorted(self.topics().items())]
        answers = []
        for name in names:
            if name in self._creating:
                waiter = defer.Deferred()
                self._creating[name].append(waiter)
                yield waiter
            count = self.topics().get(name)
            if count is None and self._autoCreate:
                try:
                    yield self.createTopic(name, self._numPartitions)
                except TopicError as e:
                    answers.append((name, e.errorCode, 0))
                    continue
                except StorageError:
                    self._log.failure("creating topic {topic} failed", topic=name)
                    answers.append((name, ErrorCode.UNKNOWN, 0))
                    continue
                count = self.topics()[name]
            if count is None:
                answers.append((name, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, 0))
            else:
                answers.append((name, ErrorCode.NONE, count))
        return answers
