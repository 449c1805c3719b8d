"""The cluster service and the partition services, over any L{IStore}, and
the retention service that trims their logs on a timer."""

import collections
import re

from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from kafkaw.broker.interfaces import IClusterService, IPartitionService, TopicError
from kafkaw.protocol.api import EARLIEST, LATEST, AdminErrorCode
from kafkaw.protocol.errors import ErrorCode, MessageSetError
from kafkaw.protocol.messages import assignOffsets
from kafkaw.storage.interfaces import StorageError

# Kafka's rule for topic names; it also keeps names safe in storage keys and paths.
_LEGAL_TOPIC = re.compile(r"[a-zA-Z0-9._-]{1,249}")

# Topic configs a topic can be created with, as Kafka names them.
RETENTION_MS = "retention.ms"
RETENTION_BYTES = "retention.bytes"
TOPIC_CONFIGS = (RETENTION_MS, RETENTION_BYTES)
_INTEGER = re.compile(r"-?[0-9]{1,18}")

DEFAULT_RETENTION_MS = 168 * 3600 * 1000  # a week, as Kafka's log.retention.hours

# Retention by size looks at this many of the oldest batches at a time.
_RETENTION_STEP = 1000

# Appends queued while one is being stored are merged into one stored message
# set, up to this size, so a busy partition writes few large values.
_MERGE_BYTES = 1 << 20

_MAX_PARTITIONS = 10000


class OffsetOutOfRange(Exception):
    """A fetch asked for an offset outside the log."""


def checkTopicName(name):
    """Raise L{TopicError} unless C{name} is a legal Kafka topic name."""
    if name in (".", "..") or not _LEGAL_TOPIC.fullmatch(name or ""):
        raise TopicError(f"illegal topic name {name!r}: use 1..249 of [a-zA-Z0-9._-]", AdminErrorCode.INVALID_TOPIC)


def parseTopicConfigs(configs):
    """Check topic configs (C{dict} of C{str}); return them as C{dict} of C{int}.

    @raise TopicError: an unknown name or a value that is not an integer >= -1.
    """
    parsed = {}
    for name, value in configs.items():
        if name not in TOPIC_CONFIGS:
            raise TopicError(
                f"unknown topic config {name!r} (known: {', '.join(TOPIC_CONFIGS)})", AdminErrorCode.INVALID_CONFIG
            )
        if not isinstance(value, str) or not _INTEGER.fullmatch(value) or int(value) < -1:
            raise TopicError(f"{name} must be an integer >= -1 (-1: unlimited), not {value!r}", AdminErrorCode.INVALID_CONFIG)
        parsed[name] = int(value)
    return parsed


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
        """Check, number and store the waiting appends, one merged batch at a time.

        C{_storing} stays true until nothing is waiting, so an append made by
        a callback fired here (a client's next request) only queues: one
        write per partition at a time, each numbered from the stored log end.
        """
        self._storing = True
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
                except Exception:  # a bug must fail this append, not stall the partition
                    self._log.failure("checking a message set for {topic}/{partition} failed", topic=self.topic, partition=self.partition)
                    d.errback()
                    continue
                pieces.append(assigned.data)
                accepted.append((nextOffset, d))
                nextOffset += assigned.count
            if not accepted:
                continue
            count = nextOffset - self._partitionLog.endOffset
            stored = defer.maybeDeferred(
                self._partitionLog.append, b"".join(pieces), count, int(self._clock.seconds() * 1000)
            )
            if not stored.called:
                stored.addBoth(self._stored, accepted)
                return
            stored.addBoth(self._settle, accepted)  # a store that answers at once: no recursion
        self._storing = False

    def _stored(self, result, accepted):
        self._settle(result, accepted)
        self._storeWaiting()

    def _settle(self, result, accepted):
        """Answer the appends of one stored (or failed) batch, then wake listeners."""
        listeners = list(self._listeners)  # not fetches that the answers start: they read after this batch
        if isinstance(result, Failure):
            if not result.check(StorageError):  # the store logs its own failures, once per episode
                self._log.failure(
                    "storing to {topic}/{partition} failed", result, topic=self.topic, partition=self.partition
                )
            for _, d in accepted:
                d.errback(result)
            return
        for baseOffset, d in accepted:
            d.callback(baseOffset)
        for listener in listeners:
            try:
                listener()
            except Exception:
                # A broken listener must not keep the queued appends waiting.
                self._log.failure(
                    "append listener of {topic}/{partition} failed", topic=self.topic, partition=self.partition
                )

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

    @defer.inlineCallbacks
    def enforceRetention(self, retentionMs, retentionBytes):
        log = self._partitionLog
        if retentionMs >= 0:
            end = log.endOffset
            # Append times never go back, so the batches before the first one
            # young enough to keep are all older: whole batches from the start.
            kept = yield log.firstBatchSince(int(self._clock.seconds() * 1000) - retentionMs)
            yield log.deleteBefore(max(log.startOffset, end if kept is None else min(kept, end)))
        while retentionBytes >= 0 and log.sizeBytes > retentionBytes:
            excess = log.sizeBytes - retentionBytes
            start = newStart = log.startOffset
            batches = yield log.oldestBatches(_RETENTION_STEP)
            for _, nextOffset, size in batches:
                if size > excess:
                    break
                excess -= size
                newStart = nextOffset
            if newStart == start:
                break
            yield log.deleteBefore(newStart)
        return log.startOffset


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
        retentionMs=DEFAULT_RETENTION_MS,
        retentionBytes=-1,
    ):
        self._store = store
        self._clock = clock
        self.brokerId = brokerId
        self._numPartitions = numPartitions
        self._autoCreate = autoCreateTopics
        self._maxMessageBytes = maxMessageBytes
        self._maxExpandedBytes = maxExpandedBytes
        self._retentionMs = retentionMs
        self._retentionBytes = retentionBytes
        self._partitions = {}  # (topic, partition) -> PartitionService
        self._creating = {}  # topic -> Deferred of its creation
        self._topicRetention = {}  # topic -> {config name: int}, what its configs set
        for name, count in store.topics().items():
            self._addTopic(name, count, store.topicConfigs(name))

    def _addTopic(self, name, count, configs):
        self._topicRetention[name] = parseTopicConfigs(configs)
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

    def topicConfigs(self, name):
        return self._store.topicConfigs(name)

    def retention(self, topic):
        configs = self._topicRetention[topic]
        return configs.get(RETENTION_MS, self._retentionMs), configs.get(RETENTION_BYTES, self._retentionBytes)

    def createTopic(self, name, partitions, configs=None):
        configs = dict(configs or {})
        try:
            checkTopicName(name)
            if name in self._creating or name in self._store.topics():
                raise TopicError(f"topic {name!r} exists", AdminErrorCode.TOPIC_ALREADY_EXISTS)
            if not 1 <= partitions <= _MAX_PARTITIONS:
                raise TopicError(
                    f"partition count {partitions} outside 1..{_MAX_PARTITIONS}", AdminErrorCode.INVALID_PARTITIONS
                )
            parseTopicConfigs(configs)
        except TopicError as e:
            return defer.fail(e)
        waiters = self._creating[name] = []

        def finished(result):
            del self._creating[name]
            if not isinstance(result, Failure):
                self._addTopic(name, partitions, configs)
                self._log.info(
                    "created topic {topic} with {partitions} partitions{withConfigs}",
                    topic=name, partitions=partitions,
                    withConfigs="".join(f", {k}={v}" for k, v in sorted(configs.items())),
                )
            for waiter in waiters:
                waiter.callback(None)
            return result

        return self._store.createTopic(name, partitions, configs).addBoth(finished)

    @defer.inlineCallbacks
    def createTopics(self, topics):
        asked = collections.Counter(topic.name for topic in topics)
        results = []
        for topic in topics:
            try:
                if asked[topic.name] > 1:
                    raise TopicError(f"topic {topic.name!r} is asked for more than once", AdminErrorCode.INVALID_REQUEST)
                if topic.assignments:
                    raise TopicError("replica assignments are not served: every partition is on this broker", AdminErrorCode.INVALID_REQUEST)
                if topic.replicationFactor not in (1, -1):
                    raise TopicError(
                        f"replication factor {topic.replicationFactor}: this broker has no replicas (use 1)",
                        AdminErrorCode.INVALID_REPLICATION_FACTOR,
                    )
                if any(value is None for _, value in topic.configs):
                    raise TopicError("null config values are not allowed", AdminErrorCode.INVALID_REQUEST)
                yield self.createTopic(topic.name, topic.numPartitions, dict(topic.configs))
            except TopicError as e:
                self._log.info("not creating topic {topic}: {why}", topic=topic.name, why=str(e))
                results.append((topic.name, e.errorCode))
            except StorageError as e:
                # The store logs the failure episode itself; no traceback here.
                self._log.warn("creating topic {topic} failed: {why}", topic=topic.name, why=str(e))
                results.append((topic.name, ErrorCode.UNKNOWN))
            else:
                results.append((topic.name, ErrorCode.NONE))
        return results

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
                    # Metadata v0 has no code for a bad name; Kafka 0.8 answers 3.
                    illegal = e.errorCode == AdminErrorCode.INVALID_TOPIC
                    answers.append((name, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION if illegal else ErrorCode.UNKNOWN, 0))
                    continue
                except StorageError as e:
                    self._log.warn("creating topic {topic} failed: {why}", topic=name, why=str(e))
                    answers.append((name, ErrorCode.UNKNOWN, 0))
                    continue
                count = self.topics()[name]
            if count is None:
                answers.append((name, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, 0))
            else:
                answers.append((name, ErrorCode.NONE, count))
        return answers


class RetentionService(service.Service):
    """Applies retention to every partition every C{interval} seconds.

    One partition at a time, so retention never competes with itself for the
    store. Stopping waits for the partition being trimmed, then ends the pass.
    """

    _log = Logger()

    def __init__(self, cluster, interval, clock):
        self._cluster = cluster
        self._interval = interval
        self._clock = clock
        self._loop = None
        self._pass = None

    def startService(self):
        super().startService()
        self._loop = task.LoopingCall(self.enforce)
        self._loop.clock = self._clock
        self._loop.start(self._interval, now=False)

    def stopService(self):
        """Stop the timer; fire once the pass under way (if any) has stopped."""
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self._pass is None or self._pass.called:
            return None
        stopped = defer.Deferred()

        def passDone(result):
            stopped.callback(None)
            return result

        self._pass.addBoth(passDone)
        return stopped

    def enforce(self):
        """One pass over every partition; fires when it is done."""
        self._pass = self._enforce()
        return self._pass

    @defer.inlineCallbacks
    def _enforce(self):
        for topic, count in sorted(self._cluster.topics().items()):
            retentionMs, retentionBytes = self._cluster.retention(topic)
            if retentionMs < 0 and retentionBytes < 0:
                continue
            for number in range(count):
                if not self.running:
                    return
                partition = self._cluster.partition(topic, number)
                before = partition.logStartOffset
                try:
                    after = yield partition.enforceRetention(retentionMs, retentionBytes)
                except StorageError as e:
                    self._log.warn("retention of {topic}/{partition} postponed: {why}", topic=topic, partition=number, why=str(e))
                    continue
                except Exception:
                    self._log.failure("retention of {topic}/{partition} failed", topic=topic, partition=number)
                    continue
                if after != before:
                    self._log.info(
                        "retention moved the log start of {topic}/{partition} from {before} to {after}",
                        topic=topic, partition=number, before=before, after=after,
                    )
