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
        self._lastOffsets = []  # last offset of each stored message set, ascending
        self._messageSets = []
        self._appendTimes = []  # (timestamp, base offset), ascending

    def append(self, messageSet, count, timestamp):
        base = self.endOffset
        self._lastOffsets.append(base + count - 1)
        self._messageSets.append(messageSet)
        self._appendTimes.append((timestamp, base))
        self.endOffset = base + count
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


@implementer(IStore)
class MemoryStore:
    def __init__(self):
        self._topics = {}
        self._logs = {}

    def topics(self):
        return {name: len(logs) for name, logs in self._topics.items()}

    def createTopic(self, name, partitions):
        if name in self._topics:
            return fail(StorageError(f"topic {name!r} exists"))
        self._topics[name] = [MemoryPartitionLog() for _ in range(partitions)]
        return succeed(None)

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
