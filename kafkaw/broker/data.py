"""Handlers of the data APIs: Produce, Fetch and ListOffsets, every version
Kafka 2.3.0 serves.

Each handler takes (request header, decoded request, gateway) and returns the
response chunks, or a Deferred of them (None: no response, an acks=0
Produce). The record sets go to and come from the partition services as
bytes; only fetchers of versions older than the stored format get them
converted (Kafka's down-conversion), so the cost falls on old clients only.
"""

import struct

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from kafkaw.broker.authorizer import CLUSTER_NAME, Operation, ResourceType
from kafkaw.broker.producers import ProducerError
from kafkaw.broker.services import OffsetOutOfRange, PartitionGone
from kafkaw.protocol import hotpath, schema
from kafkaw.protocol.api import ApiKey
from kafkaw.protocol.errors import ErrorCode, InvalidMessage, MessageSetError
from kafkaw.protocol.records import CODEC_ZSTD, downConvert, entrySize, hasProducerId, producedBatches
from kafkaw.storage.interfaces import NotLeaderError, StorageError

_MAGIC_AT = 16  # offset int64, size int32, partition leader epoch (or CRC) int32
_ENTRY_HEAD = struct.Struct(">qi")
_FIRST_ZSTD_PRODUCE = 7
_FIRST_BATCH_PRODUCE = 3  # Produce v3+ carries exactly one record batch v2
_FIRST_WHOLE_BATCH_FETCH = 3  # KIP-74: the first batch is returned whole, however large
_FIRST_ANY_MAGIC_FETCH = 4  # Fetch v4+ reads every magic; older versions get converted sets
_ACKS = (-1, 0, 1)

log = Logger()


def errorCode(reason, gateway, topic, partition):
    """The Kafka error code a failed partition sub-request is answered with."""
    if reason.check(MessageSetError, ProducerError):
        gateway.log.info(
            "rejected records for {topic}/{partition} from {peer}: {why}",
            topic=topic, partition=partition, peer=gateway.connection.peer, why=reason.getErrorMessage(),
        )
        return reason.value.errorCode
    if reason.check(OffsetOutOfRange):
        return ErrorCode.OFFSET_OUT_OF_RANGE
    if reason.check(PartitionGone):
        return ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    if reason.check(NotLeaderError):
        return ErrorCode.NOT_LEADER_FOR_PARTITION
    if reason.check(StorageError):
        # No storage error code exists. Not logged here: the store logs each
        # failure episode once, not once per request.
        return ErrorCode.UNKNOWN
    gateway.log.failure("request for {topic}/{partition} failed", reason, topic=topic, partition=partition)
    return ErrorCode.UNKNOWN


def _notLeader(gateway, topic, partition):
    """NOT_LEADER_FOR_PARTITION if another broker leads the partition (the client refreshes Metadata), else None."""
    if gateway.broker.membership.leads(topic, partition):
        return None
    return ErrorCode.NOT_LEADER_FOR_PARTITION


def countErrors(metrics, apiKey, topics):
    """Report the error code of each partition result, once per answer."""
    for _, results in topics:
        for result in results:
            if result["errorCode"]:
                metrics.partitionError(apiKey, result["errorCode"])


def _gather(topics, subRequest, gateway):
    """Run C{subRequest(topic, item, result)} for each partition of C{topics}
    ([(name, [item])]): each fills its C{result} dict, now or when its
    Deferred fires. Returns ([(name, [result])], Deferred of them all)."""
    answers, waits = [], []
    for name, items in topics:
        results = []
        answers.append((name, results))
        for item in items:
            result = {}
            results.append(result)
            d = subRequest(name, item, result)
            if d is not None:
                waits.append(d)
    if not waits:
        return answers, defer.succeed(None)
    if len(waits) == 1:  # most requests name one partition: no DeferredList (~10 µs)
        return answers, waits[0]
    return answers, _all(waits)


def _all(waits):
    """A Deferred firing (with None) once every one of C{waits} has fired.

    What DeferredList does for these sub-requests, at a fraction of its cost:
    they fill their result dicts themselves, and their errbacks turn every
    failure into an error code, so a failure reaching here is a bug: logged.
    """
    done = defer.Deferred()
    left = [len(waits)]

    def one(result):
        if isinstance(result, Failure):
            log.failure("a partition sub-request failed", result)
        left[0] -= 1
        if not left[0]:
            done.callback(None)

    for d in waits:
        d.addBoth(one)
    return done


def _byTopic(answers, partitionsKey):
    return [{"name": name, partitionsKey: results} for name, results in answers]


def _checkProduced(records, version):
    """The error code Kafka gives a record set of this Produce version before
    any storing, or None. v3+ must carry one record batch v2, and zstd needs v7."""
    if version < _FIRST_BATCH_PRODUCE:
        return None
    try:
        batches = producedBatches(records)  # [] for magic 0/1
    except InvalidMessage:
        return ErrorCode.INVALID_MESSAGE
    if len(batches) != 1:
        return ErrorCode.INVALID_MESSAGE
    if batches[0].codec == CODEC_ZSTD and version < _FIRST_ZSTD_PRODUCE:
        return ErrorCode.UNSUPPORTED_COMPRESSION_TYPE
    return None


def _idempotent(topics):
    """Does a Produce carry a batch of an idempotent producer (a producer id)?"""
    return any(hasProducerId(item.records or b"") for topic in topics for item in topic.partitions)


def produce(header, request, gateway):
    """Append each partition's records; fires with the response, or None for acks=0.

    With --acls: Write on each topic (else 29 for its partitions, nothing
    stored), and IdempotentWrite on the cluster for an idempotent
    producer's batches (else 31 for every partition), as Kafka 2.3.
    """
    cluster = gateway.broker.cluster
    version = header.apiVersion
    refused = None
    denied = ()
    if request.acks not in _ACKS:
        refused = ErrorCode.INVALID_REQUIRED_ACKS
    elif request.transactionalId is not None:
        refused = ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED  # no transaction coordinator here
    elif gateway.broker.authorizer is not None:
        # The batches are looked at only when IdempotentWrite is not allowed (the check is cheaper).
        if (
            not gateway.sees(Operation.IDEMPOTENT_WRITE, ResourceType.CLUSTER, CLUSTER_NAME)
            and _idempotent(request.topics)
            and not gateway.allowed(Operation.IDEMPOTENT_WRITE, ResourceType.CLUSTER, CLUSTER_NAME)
        ):
            refused = ErrorCode.CLUSTER_AUTHORIZATION_FAILED
        else:
            denied = gateway.denied(Operation.WRITE, ResourceType.TOPIC, [t.name for t in request.topics])

    metrics = gateway.broker.metrics
    answers, waits = [], []
    for topic in request.topics:
        name = topic.name
        results = []
        answers.append((name, results))
        for item in topic.partitions:
            # [partition index, error code, base offset, log append time, log start offset]
            result = [item.partitionIndex, 0, -1, -1, -1]
            results.append(result)
            service = cluster.partition(name, item.partitionIndex)
            records = item.records or b""
            code = refused
            if code is None and name in denied:
                code = ErrorCode.TOPIC_AUTHORIZATION_FAILED
            if code is None:
                code = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION if service is None else _notLeader(gateway, name, item.partitionIndex)
            if code is None:
                code = _checkProduced(records, version)
            if code is None:
                waits.append(service.append(records).addCallbacks(
                    _produceStored, _produceFailed, (result, service), None, (result, gateway, name, item.partitionIndex)
                ))
            else:
                result[1] = code
                metrics.partitionError(ApiKey.PRODUCE, code)
    # Module-level callbacks and lists rather than closures and dicts: every
    # small producer's request comes this way.
    if not waits:
        return _produceAnswer(None, answers, version, header.correlationId, request.acks)
    done = waits[0] if len(waits) == 1 else _all(waits)
    return done.addCallback(_produceAnswer, answers, version, header.correlationId, request.acks)


def _produceStored(appended, result, service):
    result[2] = appended.baseOffset
    result[3] = appended.logAppendTime
    result[4] = service.logStartOffset


def _produceFailed(reason, result, gateway, topic, partition):
    result[1] = code = errorCode(reason, gateway, topic, partition)
    gateway.broker.metrics.partitionError(ApiKey.PRODUCE, code)


def _produceAnswer(_, answers, version, correlationId, acks):
    if acks != 0:
        return hotpath.encodeProduceResponse(version, correlationId, answers)
    return None


def listOffsets(header, request, gateway):
    """v0: offsets before a time, as Kafka 0.8; v1+: the offset (and
    timestamp) of the first record at or after a time, or the log start or end."""
    cluster = gateway.broker.cluster
    version = header.apiVersion
    denied = gateway.denied(Operation.DESCRIBE, ResourceType.TOPIC, [t.name for t in request.topics])

    def look(topic, item, result):
        result.update(partitionIndex=item.partitionIndex, errorCode=0, oldStyleOffsets=[], timestamp=-1, offset=-1, leaderEpoch=0)
        if topic in denied:
            result["errorCode"] = ErrorCode.TOPIC_AUTHORIZATION_FAILED
            return None
        service = cluster.partition(topic, item.partitionIndex)
        if service is None:
            result["errorCode"] = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
            return None
        notLeader = _notLeader(gateway, topic, item.partitionIndex)
        if notLeader is not None:
            result["errorCode"] = notLeader
            return None

        def failed(reason):
            result["errorCode"] = errorCode(reason, gateway, topic, item.partitionIndex)

        if version == 0:
            d = service.offsetsBefore(item.timestamp, item.maxNumOffsets)
            return d.addCallbacks(lambda offsets: result.update(oldStyleOffsets=offsets), failed)
        d = service.offsetForTime(item.timestamp)
        return d.addCallbacks(lambda found: result.update(offset=found[0], timestamp=found[1]), failed)

    answers, done = _gather([(t.name, t.partitions) for t in request.topics], look, gateway)

    def answer(_):
        countErrors(gateway.broker.metrics, ApiKey.LIST_OFFSETS, answers)
        return schema.encodeResponse(ApiKey.LIST_OFFSETS, version, header.correlationId, {"topics": _byTopic(answers, "partitions")})

    return done.addCallback(answer)


def fetch(header, request, gateway):
    version = header.apiVersion
    if version >= 7 and (request.sessionId != 0 or request.epoch > 0):
        # No fetch sessions here: a broker without them answers a session it
        # never created this way, and the client falls back to full fetches.
        return schema.encodeResponse(
            ApiKey.FETCH, version, header.correlationId,
            {"errorCode": ErrorCode.FETCH_SESSION_ID_NOT_FOUND, "sessionId": 0, "topics": []},
        )
    topics = _onePerPartition(request.topics)
    names = [name for name, _ in topics]
    if request.replicaId >= 0 and gateway.broker.authorizer is not None:
        # A follower's fetch needs ClusterAction on the cluster, as in Kafka.
        allowed = gateway.allowed(Operation.CLUSTER_ACTION, ResourceType.CLUSTER, CLUSTER_NAME)
        denied = frozenset() if allowed else frozenset(names)
    else:
        denied = gateway.denied(Operation.READ, ResourceType.TOPIC, names)
    return _Fetch(gateway.broker, header, request, topics, gateway, denied).start()


def _onePerPartition(topics):
    """[(topic, [partition])] with each (topic, partition) once, the last asked winning.

    Kafka reads a Fetch into a map, so a partition repeated in a request is
    answered once; answering every copy would let a small request ask for
    an answer of any size.
    """
    merged = {}
    for topic in topics:
        merged.setdefault(topic.name, {}).update((item.partitionIndex, item) for item in topic.fetchPartitions)
    return [(name, list(byPartition.values())) for name, byPartition in merged.items()]


def _hasNewerMagic(data, magic):
    """True when an entry of stored C{data} has a magic above C{magic}:
    then a fetcher that reads only C{magic} needs it converted."""
    position, end = 0, len(data) - _MAGIC_AT
    unpack = _ENTRY_HEAD.unpack_from
    while position < end:
        if data[position + _MAGIC_AT] > magic:
            return True
        position += 12 + max(unpack(data, position)[1], 0)
    return False


def _setRecords(records, result):
    result["records"] = records


class _Fetch:
    """One Fetch request: answered at once when it can be, else parked.

    Parked, it re-reads whenever one of its partitions is appended to, and
    answers once C{min_bytes} (summed over its partitions) are there or
    C{max_wait} has passed.
    """

    def __init__(self, broker, header, request, topics, gateway, denied=frozenset()):
        self._broker = broker
        self._denied = denied  # topics the principal may not read (--acls): error 29
        self._header = header
        self._request = request
        self._topics = topics
        # What was asked of each (topic, partition), for shaping the answer.
        self._asked = {(topic, item.partitionIndex): item for topic, items in topics for item in items}
        self._gateway = gateway
        self._version = header.apiVersion
        self._result = defer.Deferred()
        self._reading = False
        self._readAgain = False
        self._removers = []
        self._timer = None
        self._finished = False

    def start(self):
        # Tracked and listening from the start: an append during the first
        # read is not missed, and a lost connection cancels it even mid-read.
        self._gateway.parked.add(self)
        if self._gateway.closing:
            self._timer = False  # answered with what is there: the connection closes after it
        elif self._request.maxWait > 0 and self._request.minBytes > 0:
            for topic, partitions in self._topics:
                if topic in self._denied:
                    continue
                for item in partitions:
                    service = self._broker.cluster.partition(topic, item.partitionIndex)
                    if service is not None:
                        self._removers.append(service.onAppend(self._appended))
        self._read()
        return self._result

    def _read(self):
        self._reading = True
        self._readAgain = False
        cluster = self._broker.cluster
        wholeFirst = self._version >= _FIRST_WHOLE_BATCH_FETCH

        def read(topic, item, result):
            result.update(
                partitionIndex=item.partitionIndex, errorCode=0, highWatermark=-1, lastStableOffset=-1,
                logStartOffset=-1, aborted=[], preferredReadReplica=-1, records=b"",
            )
            if topic in self._denied:
                result["errorCode"] = ErrorCode.TOPIC_AUTHORIZATION_FAILED
                return None
            service = cluster.partition(topic, item.partitionIndex)
            if service is None:
                result["errorCode"] = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                return None
            notLeader = _notLeader(self._gateway, topic, item.partitionIndex)
            if notLeader is not None:
                result["errorCode"] = notLeader
                return None
            highWatermark = service.logEndOffset
            result.update(highWatermark=highWatermark, lastStableOffset=highWatermark, logStartOffset=service.logStartOffset)

            def failed(reason):
                result.update(
                    errorCode=errorCode(reason, self._gateway, topic, item.partitionIndex),
                    highWatermark=-1, lastStableOffset=-1, logStartOffset=-1,
                )

            d = service.read(item.fetchOffset, item.maxBytes, wholeFirst)
            return d.addCallbacks(lambda data: result.update(records=data), failed)

        answers, done = _gather(self._topics, read, self._gateway)
        done.addCallback(lambda _: self._readDone(answers))

    def _readDone(self, answers):
        self._reading = False
        if self._finished:
            return
        available = sum(len(r["records"]) for _, results in answers for r in results)
        if (
            not any(results for _, results in answers)
            or any(r["errorCode"] for _, results in answers for r in results)
            or self._timer is False
            or self._request.maxWait <= 0
            or available >= self._request.minBytes
        ):
            self._finish(answers)
        elif self._readAgain:
            self._read()
        elif self._timer is None:
            self._park()

    def _park(self):
        wait = min(self._request.maxWait, self._broker.maxFetchWaitMs) / 1000.0
        self._timer = self._broker.clock.callLater(wait, self._expire)

    def _appended(self):
        if self._finished:
            return  # answered while the appends' listeners were being called
        if self._reading:
            self._readAgain = True
        else:
            self._read()

    def answerNow(self):
        """Answer with what is there now, as if C{max_wait} had passed."""
        if self._timer:
            self._timer.cancel()
        self._expire()

    def _expire(self):
        self._timer = False  # the next read answers whatever it finds
        if not self._reading:
            self._read()

    def _convert(self, answers):
        """Down-convert, off the reactor, what this version cannot read.

        v0-v3 read magic 0 (v0-1) or magic 1 (v2-3) only: their partitions
        holding newer batches get them converted. Converting costs a few µs
        a message, so it runs through the broker's C{offReactor}: a 1 MB
        answer must not hold every other connection. Fires when all are done.
        """
        if self._version >= _FIRST_ANY_MAGIC_FETCH:
            return defer.succeed(None)
        magic = 0 if self._version < 2 else 1
        maxExpanded = self._broker.maxExpandedBytes
        conversions = []
        for topic, results in answers:
            for result in results:
                data = result["records"]
                if data and _hasNewerMagic(data, magic):
                    d = self._broker.offReactor(downConvert, data, magic, self._asked[topic, result["partitionIndex"]].fetchOffset, maxExpanded)
                    d.addCallbacks(_setRecords, self._conversionFailed, (result,), None, (result, topic))
                    conversions.append(d)
        return defer.DeferredList(conversions)

    def _conversionFailed(self, reason, result, topic):
        self._gateway.log.failure(
            "converting {topic}/{partition} for Fetch v{version} failed", reason,
            topic=topic, partition=result["partitionIndex"], version=self._version,
        )
        result.update(errorCode=ErrorCode.UNKNOWN, records=b"")

    def _shape(self, answers):
        """Fit each partition's bytes to the request's limits.

        Converted answers (v0-v3) are bigger than the stored batches they came
        from (and uncompressed): cut again at the partition's max bytes, as
        0.8 cuts a message set, the first message whole from v3. v3+ share
        the response's max bytes in request order, the first batch of the
        first partition with data whole (KIP-74).
        """
        version = self._version
        wholeFirst = version >= _FIRST_WHOLE_BATCH_FETCH
        budget = self._request.maxBytes if wholeFirst else None
        first = True
        for topic, results in answers:
            for result in results:
                data = result["records"]
                if not data:
                    continue
                if version < _FIRST_ANY_MAGIC_FETCH:
                    maxBytes = self._asked[topic, result["partitionIndex"]].maxBytes
                    data = data[: max(maxBytes, (entrySize(data) or 0) if wholeFirst else 0)]
                if budget is not None:
                    if len(data) > budget:
                        keep = max(budget, entrySize(data) or 0) if first else max(budget, 0)
                        data = data[:keep]
                    budget -= len(data)
                    first = first and not data
                result["records"] = data

    def _finish(self, answers):
        self.cancel()
        self._convert(answers).addCallback(lambda _: self._answer(answers))

    def _answer(self, answers):
        self._shape(answers)
        countErrors(self._broker.metrics, ApiKey.FETCH, answers)
        self._result.callback(
            schema.encodeResponse(
                ApiKey.FETCH, self._version, self._header.correlationId,
                {"errorCode": 0, "sessionId": 0, "topics": _byTopic(answers, "partitions")},
            )
        )

    def cancel(self):
        """Stop waiting: the connection is gone or the answer is being sent."""
        self._finished = True
        if self._timer:
            self._timer.cancel()
        self._timer = False
        for remove in self._removers:
            remove()
        self._removers = []
        self._gateway.parked.discard(self)
