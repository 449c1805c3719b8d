"""In-memory storage: for tests and throwaway brokers. Nothing survives a restart."""

import bisect

from twisted.internet.defer import fail, succeed
from twisted.plugin import IPlugin
from zope.interface import implementer

from kafkaw.protocol.messages import skipBelow
from kafkaw.storage.interfaces import IPartitionLog, IStorageFactory, IStore, StorageError


@implementer(IPartitionLog)
class MemoryPartitionLog:
    def __init__(self):
        self.startOffset = 0
        self.endOffset = 0
        self.sizeBytes = 0
        # One entry per stored batch, in log order (append times never go back,
        # so _appendTimes is sorted too).
        self._lastOffsets = []
        self._messageSets = []
        self._appendTimes = []  # (timestamp, base offset)

    def append(self, messageSet, count, timestamp):
        base = self.endOffset
        if self._appendTimes:
            timestamp = max(timestamp, self._appendTimes[-1][0])
        self._lastOffsets.append(base + count - 1)
        self._messageSets.append(messageSet)
        self._appendTimes.append((timestamp, base))
        self.endOffset = base + count
        self.sizeBytes += len(messageSet)
        return succeed(None)

    def read(self, offset, maxBytes, endOffset):
        index = bisect.bisect_left(self._lastOffsets, offset)
        end = bisect.bisect_left(self._lastOffsets, endOffset)
        pieces = []
        total = 0
        for position in range(index, end):
            data = self._messageSets[position]
            if not pieces:
                data = data[skipBelow(data, offset) :]
            pieces.append(data)
            total += len(data)
            if total >= maxBytes:
                break
        return succeed(b"".join(pieces)[: max(maxBytes, 0)])

    def batchesBefore(self, timestamp, maxNumber):
        stop = bisect.bisect_right(self._appendTimes, (timestamp, float("inf")))
        newest = [base for _, base in reversed(self._appendTimes[:stop])]
        return succeed(newest[: max(maxNumber, 0)])

    def firstBatchSince(self, timestamp):
        index = bisect.bisect_left(self._appendTimes, (timestamp, float("-inf")))
        return succeed(self._appendTimes[index][1] if index < len(self._appendTimes) else None)

    def oldestBatches(self, maxNumber):
        first = bisect.bisect_left(self._lastOffsets, self.startOffset)
        batches = []
        base = self.startOffset
        for position in range(first, min(first + max(maxNumber, 0), len(self._lastOffsets))):
            nextOffset = self._lastOffsets[position] + 1
            batches.append((base, nextOffset, len(self._messageSets[position])))
            base = nextOffset
        return succeed(batches)

    def deleteBefore(self, offset):
        if offset > self.endOffset:
            return fail(ValueError(f"cannot delete below {offset}: the log ends at {self.endOffset}"))
        if offset <= self.startOffset:
            return succeed(None)
        self.startOffset = offset
        gone = bisect.bisect_right(self._lastOffsets, offset - 1)
        self.sizeBytes -= sum(len(data) for data in self._messageSets[:gone])
        del self._lastOffsets[:gone], self._messageSets[:gone], self._appendTimes[:gone]
        return succeed(None)


@implementer(IStore)
class MemoryStore:
    def __init__(self):
        self._topics = {}
        self._configs = {}

    def topics(self):
        return {name: len(logs) for name, logs in self._topics.items()}

    def createTopic(self, name, partitions, configs=None):
        if name in self._topics:
            return fail(StorageError(f"topic {name!r} exists"))
        self._topics[name] = [MemoryPartitionLog() for _ in range(partitions)]
        self._configs[name] = dict(configs or {})
        return succeed(None)

    def topicConfigs(self, name):
        return dict(self._configs[name])

    def partitionLog(self, topic, partition):
        return self._topics[topic][partition]

    def close(self):
        return succeed(None)


@implementer(IStorageFactory, IPlugin)
class MemoryStorageFactory:
    name = "memory"
    description = "keep everything in memory (lost at exit; for tests)"

    def openStore(self, dataDir, sync):
        return MemoryStore()
