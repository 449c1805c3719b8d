"""The cluster service and the partition services, over any L{IStore}, and
the retention service that trims their logs on a timer."""

import collections
import re
from typing import NamedTuple

from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from kafkaw.broker.interfaces import IClusterService, IPartitionService, TopicError
from kafkaw.broker.producers import ProducerError, ProducerStates
from kafkaw.protocol.api import EARLIEST, LATEST
from kafkaw.protocol.errors import ErrorCode, MessageSetError
from kafkaw.protocol.records import assignOffsets, entrySize, firstOffsetAtOrAfter, producedBatches
from kafkaw.storage.interfaces import NotLeaderError, StorageError

# Kafka's rule for topic names; it also keeps names safe in storage keys and paths.
_LEGAL_TOPIC = re.compile(r"[a-zA-Z0-9._-]{1,249}")

# Topic configs a topic can be created with, as Kafka names them.
RETENTION_MS = "retention.ms"
RETENTION_BYTES = "retention.bytes"
MAX_MESSAGE_BYTES = "max.message.bytes"
TIMESTAMP_TYPE = "message.timestamp.type"
CLEANUP_POLICY = "cleanup.policy"
TOPIC_CONFIGS = (CLEANUP_POLICY, MAX_MESSAGE_BYTES, TIMESTAMP_TYPE, RETENTION_BYTES, RETENTION_MS)
CREATE_TIME = "CreateTime"
LOG_APPEND_TIME = "LogAppendTime"
_INTEGER = re.compile(r"-?[0-9]{1,18}")
# The values a config may take besides integers; the first is the default.
_CHOICES = {TIMESTAMP_TYPE: (CREATE_TIME, LOG_APPEND_TIME), CLEANUP_POLICY: ("delete",)}
# The smallest integer each integer config takes (-1: unlimited).
_MINIMUM = {RETENTION_MS: -1, RETENTION_BYTES: -1, MAX_MESSAGE_BYTES: 0}

DEFAULT_RETENTION_MS = 168 * 3600 * 1000  # a week, as Kafka's log.retention.hours

# Retention by size looks at this many of the oldest batches at a time.
_RETENTION_STEP = 1000

# Appends queued while one is being stored are merged into one stored message
# set, up to this size, so a busy partition writes few large values.
_MERGE_BYTES = 1 << 20

_MAX_PARTITIONS = 10000

_MAGIC_AT = 16  # in a stored entry: offset int64, size int32, CRC or leader epoch int32, magic


class OffsetOutOfRange(Exception):
    """A fetch asked for an offset outside the log."""


def checkTopicName(name):
    """Raise L{TopicError} unless C{name} is a legal Kafka topic name."""
    if name in (".", "..") or not _LEGAL_TOPIC.fullmatch(name or ""):
        raise TopicError(f"illegal topic name {name!r}: use 1..249 of [a-zA-Z0-9._-]", ErrorCode.INVALID_TOPIC)


def parseTopicConfigs(configs):
    """Check topic configs (C{dict} of C{str}); return them parsed (integers as C{int}).

    @raise TopicError: an unknown name or a value the config does not take.
    """
    parsed = {}
    for name, value in configs.items():
        if name not in TOPIC_CONFIGS:
            raise TopicError(
                f"unknown topic config {name!r} (known: {', '.join(TOPIC_CONFIGS)})", ErrorCode.INVALID_CONFIG
            )
        if name in _CHOICES:
            if value not in _CHOICES[name]:
                raise TopicError(f"{name} must be one of {', '.join(_CHOICES[name])}, not {value!r}", ErrorCode.INVALID_CONFIG)
            parsed[name] = value
            continue
        minimum = _MINIMUM[name]
        if not isinstance(value, str) or not _INTEGER.fullmatch(value) or int(value) < minimum:
            unlimited = " (-1: unlimited)" if minimum == -1 else ""
            raise TopicError(f"{name} must be an integer >= {minimum}{unlimited}, not {value!r}", ErrorCode.INVALID_CONFIG)
        parsed[name] = int(value)
    return parsed


class Appended(NamedTuple):
    """What an append fires with: where it went, and the time Kafka calls
    LogAppendTime (-1 unless the topic's message.timestamp.type is LogAppendTime)."""

    baseOffset: int
    logAppendTime: int


class PartitionGone(Exception):
    """The partition's topic was deleted while the request waited."""


class TransactionsNotServed(MessageSetError):
    """A transactional batch: kafkaw has no transaction coordinator."""

    errorCode = ErrorCode.INVALID_TXN_STATE


@implementer(IPartitionService)
class PartitionService:
    """A partition's log with offset assignment, group commit, idempotent
    producers' sequence checks and append listeners.

    One append is stored at a time; appends arriving meanwhile wait and are
    then stored together. Offsets are assigned when a batch is formed, from the
    stored log end, so a failed write leaves no hole; the producer states the
    batch moves are written with it, so they never disagree with the log.
    """

    _log = Logger()

    def __init__(self, topic, partition, partitionLog, clock, maxMessageBytes, maxExpandedBytes, logAppendTime=False):
        self.topic = topic
        self.partition = partition
        self._partitionLog = partitionLog
        self._clock = clock
        self._maxMessageBytes = maxMessageBytes
        self._maxExpandedBytes = maxExpandedBytes
        self._logAppendTime = logAppendTime
        self._producers = ProducerStates(partitionLog.producerStates())
        self._waiting = []  # [(messageSet, Deferred)]
        self._storing = False
        self._listeners = []
        self._gone = False
        # Set by each retention pass: the next write also drops the producers
        # that are idle too long or whose batches retention deleted.
        self._producerCleanupDue = False

    @property
    def logStartOffset(self):
        return self._partitionLog.startOffset

    @property
    def logEndOffset(self):
        return self._partitionLog.endOffset

    def append(self, messageSet):
        if self._gone:
            return defer.fail(PartitionGone(f"{self.topic}/{self.partition} was deleted"))
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
        while self._waiting and not self._gone:
            taken, size = 0, 0
            while taken < len(self._waiting) and (not taken or size < _MERGE_BYTES):
                size += len(self._waiting[taken][0])
                taken += 1
            batch, self._waiting = self._waiting[:taken], self._waiting[taken:]
            now = int(self._clock.seconds() * 1000)
            nextOffset = self._partitionLog.endOffset
            producers = self._producers.begin()
            cleanup, self._producerCleanupDue = self._producerCleanupDue, False
            if cleanup:
                producers.expire(now)
                producers.truncateHead(self._partitionLog.startOffset)
            pieces, answers, timestamp = [], [], -1
            for messageSet, d in batch:
                try:
                    produced = producedBatches(messageSet)
                    duplicate = self._checkProducers(producers, produced)
                    if duplicate is not None:
                        answers.append((duplicate, d))  # answered once what is before it is stored
                        continue
                    assigned = assignOffsets(
                        messageSet, nextOffset, self._maxMessageBytes, self._maxExpandedBytes, now, self._logAppendTime
                    )
                except (MessageSetError, ProducerError) as e:
                    d.errback(e)
                    continue
                except Exception:  # a bug must fail this append, not stall the partition
                    self._log.failure("checking a message set for {topic}/{partition} failed", topic=self.topic, partition=self.partition)
                    d.errback()
                    continue
                batchOffset = nextOffset
                for item in produced:
                    if item.producerId >= 0:
                        producers.record(item.producerId, item.producerEpoch, item.baseSequence, item.count, batchOffset, now)
                    batchOffset += item.count
                pieces.append(assigned.data)
                answers.append((nextOffset, d))
                nextOffset += assigned.count
                timestamp = max(timestamp, assigned.maxTimestamp if assigned.maxTimestamp >= 0 else now)
            if not answers:
                self._producerCleanupDue |= cleanup  # not written: the next write does it
                continue
            if not pieces:  # only duplicates of what is stored already
                self._settle(None, answers, producers, now, cleanup)
                continue
            count = nextOffset - self._partitionLog.endOffset
            try:
                stored = self._partitionLog.append(
                    pieces[0] if len(pieces) == 1 else b"".join(pieces), count, timestamp, producers.changes()
                )
            except Exception:
                stored = defer.fail()
            if not stored.called:
                stored.addBoth(self._stored, answers, producers, now, cleanup)
                return
            stored.addBoth(self._settle, answers, producers, now, cleanup)  # a store that answers at once: no recursion
        self._storing = False

    def _checkProducers(self, producers, produced):
        """The original base offset if C{produced} is a retry of a stored batch, else None.

        @raise ProducerError: a sequence or epoch an idempotent producer may not use.
        @raise TransactionsNotServed: a transactional batch.
        """
        for item in produced:
            if item.isTransactional:
                raise TransactionsNotServed("transactional batch: transactions are not served")
            if item.producerId >= 0:
                duplicate = producers.check(item.producerId, item.producerEpoch, item.baseSequence, item.count)
                if duplicate is not None:
                    return duplicate
        return None

    def _stored(self, result, answers, producers, now, cleanup):
        self._settle(result, answers, producers, now, cleanup)
        self._storeWaiting()

    def _settle(self, result, answers, producers, now, cleanup):
        """Answer the appends of one stored (or failed) batch, then wake listeners.

        C{cleanup}: the batch's producer changes include the clean-up due
        after retention; if they were not stored, the next write does it."""
        listeners = list(self._listeners)  # not fetches that the answers start: they read after this batch
        if isinstance(result, Failure):
            self._producerCleanupDue |= cleanup
            if not result.check(StorageError):  # the store logs its own failures, once per episode
                self._log.failure(
                    "storing to {topic}/{partition} failed", result, topic=self.topic, partition=self.partition
                )
            for _, d in answers:
                d.errback(result)
            return
        producers.commit()
        appendTime = now if self._logAppendTime else -1
        for baseOffset, d in answers:
            d.callback(Appended(baseOffset, appendTime))
        self._wake(listeners)

    def _wake(self, listeners):
        for listener in listeners:
            try:
                listener()
            except Exception:
                # A broken listener must not keep the queued appends waiting.
                self._log.failure(
                    "append listener of {topic}/{partition} failed", topic=self.topic, partition=self.partition
                )

    def read(self, offset, maxBytes, wholeFirst=False):
        if self._gone:
            return defer.fail(PartitionGone(f"{self.topic}/{self.partition} was deleted"))
        start, end = self._partitionLog.startOffset, self._partitionLog.endOffset
        if offset < start or offset > end:
            return defer.fail(OffsetOutOfRange(f"offset {offset} outside {start}..{end}"))
        if offset == end or maxBytes <= 0:
            return defer.succeed(b"")
        # Enough for the first entry's size and magic, whatever maxBytes is.
        d = self._partitionLog.read(offset, max(maxBytes, _MAGIC_AT + 1), end)
        return d.addCallback(self._wholeFirstEntry, offset, maxBytes, end, wholeFirst)

    def _wholeFirstEntry(self, data, offset, maxBytes, end, wholeFirst):
        """Read the first entry whole when C{maxBytes} cut it and it must not
        be: C{wholeFirst} (Fetch v3+, KIP-74) or a record batch v2 (a v2
        batch is only ever read, or converted for old fetchers, whole)."""
        size = entrySize(data)
        if size is None or size <= maxBytes:
            return data[:maxBytes]
        if not (wholeFirst or (len(data) > _MAGIC_AT and data[_MAGIC_AT] == 2)):
            return data[:maxBytes]
        if size <= len(data):
            return data[:size]
        return self._partitionLog.read(offset, size, end)

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

    @defer.inlineCallbacks
    def offsetForTime(self, time):
        log = self._partitionLog
        if time == LATEST:
            return (log.endOffset, -1)
        if time == EARLIEST:
            return (log.startOffset, -1)
        # The time index holds, per stored write, the largest timestamp up to
        # it: the first entry at or after `time` is the write whose own
        # records reach it; the record is found inside that write.
        base = yield log.firstBatchSince(time)
        end = log.endOffset
        if base is None or base >= end:
            return (-1, -1)
        base = max(base, log.startOffset)
        data = yield log.read(base, _MERGE_BYTES + self._maxMessageBytes, end)
        found = firstOffsetAtOrAfter(data, time)
        if found is None:  # messages without timestamps: the write's append time is all there is
            return (base, -1)
        return found

    def onAppend(self, callback):
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback)

    def close(self):
        """The topic is deleted: fail what waits, answer parked fetches (they
        find the partition gone), take no more appends."""
        self._gone = True
        waiting, self._waiting = self._waiting, []
        for _, d in waiting:
            d.errback(PartitionGone(f"{self.topic}/{self.partition} was deleted"))
        self._wake(list(self._listeners))

    @defer.inlineCallbacks
    def enforceRetention(self, retentionMs, retentionBytes):
        log = self._partitionLog
        if retentionMs >= 0:
            end = log.endOffset
            # Index times never go back, so the batches before the first one
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
        self._producerCleanupDue = True
        return log.startOffset


@implementer(IClusterService)
class ClusterService:
    """Which topics exist and how they are configured; creates, grows and
    deletes them; hands out producer ids."""

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
        self.autoCreateTopics = self._autoCreate = autoCreateTopics
        self._maxExpandedBytes = maxExpandedBytes
        # What a topic config left unset means: the broker's own settings.
        self._defaults = {
            CLEANUP_POLICY: "delete",
            MAX_MESSAGE_BYTES: maxMessageBytes,
            TIMESTAMP_TYPE: CREATE_TIME,
            RETENTION_BYTES: retentionBytes,
            RETENTION_MS: retentionMs,
        }
        self._partitions = {}  # (topic, partition) -> PartitionService
        self._counts = {}  # topic -> partition count, of the topics with partition services
        self._configs = {}  # topic -> {config name: parsed value}, what its configs set
        self._creating = {}  # topic -> [Deferred fired when its creation is over]
        self._changing = set()  # topics whose partitions are being added or that are being deleted
        for name, count in store.topics().items():
            self._configs[name] = parseTopicConfigs(store.topicConfigs(name))
            self._addPartitions(name, 0, count)

    @property
    def clusterId(self):
        return self._store.clusterId()

    def _setting(self, topic, name):
        return self._configs[topic].get(name, self._defaults[name])

    def _addPartitions(self, name, first, count):
        for number in range(first, count):
            self._partitions[name, number] = self._partitionService(name, number)
        self._counts[name] = count

    def _partitionService(self, name, number):
        return PartitionService(
            name,
            number,
            self._store.partitionLog(name, number),
            self._clock,
            self._setting(name, MAX_MESSAGE_BYTES),
            self._maxExpandedBytes,
            self._setting(name, TIMESTAMP_TYPE) == LOG_APPEND_TIME,
        )

    # A cluster of brokers sharing one store (kafkaw/broker/leases.py).

    def syncTopics(self):
        """Take the topics other brokers created, grew or deleted, as the store now lists them."""
        stored = self._store.topics()
        for name in [name for name in self._counts if name not in stored and name not in self._changing]:
            count = self._counts.pop(name)
            del self._configs[name]
            for number in range(count):
                self._partitions.pop((name, number)).close()
            self._log.info("topic {topic} was deleted by another broker", topic=name)
        for name, count in stored.items():
            if name in self._creating or name in self._changing:
                continue
            current = self._counts.get(name)
            if current is None:
                self._configs[name] = parseTopicConfigs(self._store.topicConfigs(name))
                self._addPartitions(name, 0, count)
            elif count > current:
                self._addPartitions(name, current, count)

    def reloadPartition(self, name, number):
        """Serve partition C{number} of C{name} afresh from its log (which the
        store reloaded: this broker became its leader), producer states included."""
        old = self._partitions.get((name, number))
        if old is not None:
            old.close()
            self._partitions[name, number] = self._partitionService(name, number)

    def topics(self):
        return dict(self._counts)

    def partition(self, topic, partition):
        return self._partitions.get((topic, partition))

    def topicConfigs(self, name):
        return self._store.topicConfigs(name)

    def describeConfigs(self, name):
        """Every topic config of topic C{name}: C{[(config, value as str, set by the topic)]}.

        @raise TopicError: no such topic (error 3).
        """
        if name not in self._counts:
            raise TopicError(f"unknown topic {name!r}", ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
        configs = self._configs[name]
        return [(config, str(self._setting(name, config)), config in configs) for config in TOPIC_CONFIGS]

    def retention(self, topic):
        return self._setting(topic, RETENTION_MS), self._setting(topic, RETENTION_BYTES)

    def timestampType(self, topic):
        """C{CreateTime} or C{LogAppendTime}: which time a topic's records carry."""
        return self._setting(topic, TIMESTAMP_TYPE)

    def _checkNewTopic(self, name, partitions, configs):
        checkTopicName(name)
        if name in self._creating or name in self._counts:
            raise TopicError(f"topic {name!r} exists", ErrorCode.TOPIC_ALREADY_EXISTS)
        if not 1 <= partitions <= _MAX_PARTITIONS:
            raise TopicError(
                f"partition count {partitions} outside 1..{_MAX_PARTITIONS}", ErrorCode.INVALID_PARTITIONS
            )
        return parseTopicConfigs(configs)

    def createTopic(self, name, partitions, configs=None, validateOnly=False):
        configs = dict(configs or {})
        try:
            parsed = self._checkNewTopic(name, partitions, configs)
        except TopicError as e:
            return defer.fail(e)
        if validateOnly:
            return defer.succeed(None)
        waiters = self._creating[name] = []

        def finished(result):
            del self._creating[name]
            if not isinstance(result, Failure):
                self._configs[name] = parsed
                self._addPartitions(name, 0, partitions)
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
    def createTopics(self, topics, validateOnly=False):
        asked = collections.Counter(topic.name for topic in topics)
        results = []
        for topic in topics:
            try:
                if asked[topic.name] > 1:
                    raise TopicError(f"topic {topic.name!r} is asked for more than once", ErrorCode.INVALID_REQUEST)
                if topic.assignments:
                    raise TopicError("replica assignments are not served: every partition is on this broker", ErrorCode.INVALID_REQUEST)
                if topic.replicationFactor not in (1, -1):
                    raise TopicError(
                        f"replication factor {topic.replicationFactor}: this broker has no replicas (use 1)",
                        ErrorCode.INVALID_REPLICATION_FACTOR,
                    )
                if any(value is None for _, value in topic.configs):
                    raise TopicError("null config values are not allowed", ErrorCode.INVALID_REQUEST)
                yield self.createTopic(topic.name, topic.numPartitions, dict(topic.configs), validateOnly)
            except TopicError as e:
                self._log.info("not creating topic {topic}: {why}", topic=topic.name, why=str(e))
                results.append((topic.name, e.errorCode, str(e)))
            except StorageError as e:
                # The store logs the failure episode itself; no traceback here.
                self._log.warn("creating topic {topic} failed: {why}", topic=topic.name, why=str(e))
                results.append((topic.name, ErrorCode.UNKNOWN, str(e)))
            else:
                results.append((topic.name, ErrorCode.NONE, None))
        return results

    @defer.inlineCallbacks
    def createPartitions(self, name, count, validateOnly=False):
        """Grow topic C{name} to C{count} partitions.

        @raise TopicError: unknown topic (3), a count not above the current one
            or above the limit (37), or the topic is being changed (42).
        """
        current = self._counts.get(name)
        if current is None:
            raise TopicError(f"unknown topic {name!r}", ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
        if name in self._changing:
            raise TopicError(f"topic {name!r} is being changed", ErrorCode.INVALID_REQUEST)
        if count <= current:
            raise TopicError(
                f"topic {name!r} has {current} partitions, which is not fewer than the {count} asked for",
                ErrorCode.INVALID_PARTITIONS,
            )
        if count > _MAX_PARTITIONS:
            raise TopicError(f"partition count {count} above {_MAX_PARTITIONS}", ErrorCode.INVALID_PARTITIONS)
        if validateOnly:
            return
        self._changing.add(name)
        try:
            yield self._store.addPartitions(name, count)
        finally:
            self._changing.discard(name)
        if name in self._counts:
            self._addPartitions(name, current, count)
            self._log.info("topic {topic} grew from {before} to {after} partitions", topic=name, before=current, after=count)

    def deleteTopic(self, name):
        """Delete topic C{name}: gone for requests at once, its data in the background.

        @return: Deferred firing once the deletion is stored.
        @raise TopicError: (in the Deferred) unknown topic (3), or one being created or grown (42).
        """
        if name not in self._counts:
            return defer.fail(TopicError(f"unknown topic {name!r}", ErrorCode.UNKNOWN_TOPIC_OR_PARTITION))
        if name in self._changing or name in self._creating:
            return defer.fail(TopicError(f"topic {name!r} is being changed", ErrorCode.INVALID_REQUEST))
        count = self._counts.pop(name)
        del self._configs[name]
        services = [self._partitions.pop((name, number)) for number in range(count)]
        d = self._store.deleteTopic(name)
        for partitionService in services:
            partitionService.close()
        self._log.info("deleted topic {topic} ({partitions} partitions)", topic=name, partitions=count)
        return d

    def allocateProducerId(self):
        """A producer id never handed out before (Deferred)."""
        return self._store.allocateProducerId()

    @defer.inlineCallbacks
    def describeTopics(self, names, autoCreate=True):
        if names is None:
            return [(name, ErrorCode.NONE, count) for name, count in sorted(self._counts.items())]
        answers = []
        for name in names:
            if name in self._creating:
                waiter = defer.Deferred()
                self._creating[name].append(waiter)
                yield waiter
            count = self._counts.get(name)
            if count is None and self._autoCreate and autoCreate:
                try:
                    yield self.createTopic(name, self._numPartitions)
                except TopicError as e:
                    answers.append((name, e.errorCode, 0))
                    continue
                except StorageError as e:
                    self._log.warn("creating topic {topic} failed: {why}", topic=name, why=str(e))
                    answers.append((name, ErrorCode.UNKNOWN, 0))
                    continue
                count = self._counts.get(name)
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
                if partition is None:
                    break  # the topic was deleted during the pass
                before = partition.logStartOffset
                try:
                    after = yield partition.enforceRetention(retentionMs, retentionBytes)
                except NotLeaderError:
                    continue  # its leader applies retention
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
