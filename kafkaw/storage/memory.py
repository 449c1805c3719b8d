"""In-memory storage: for tests and throwaway brokers. Nothing survives a restart."""

import bisect

from twisted.internet.defer import fail, succeed
from twisted.plugin import IPlugin
from zope.interface import implementer

from kafkaw.storage.interfaces import (
    AclsHeld,
    CredentialsHeld,
    IAclStore,
    ICredentialStore,
    IPartitionLog,
    IStorageFactory,
    IStore,
    StorageError,
    checkOffsetCommit,
    checkPartitions,
    forgetGroupOffsets,
    forgetTopicOffsets,
    newClusterId,
    readPieces,
    refuseArguments,
    updateProducerStates,
)


@implementer(IPartitionLog)
class MemoryPartitionLog:
    def __init__(self):
        self.startOffset = 0
        self.endOffset = 0
        self.sizeBytes = 0
        # One entry per stored batch, in log order (stored timestamps never go
        # back, so _appendTimes is sorted too).
        self._lastOffsets = []
        self._messageSets = []
        self._appendTimes = []  # (timestamp, base offset)
        self._producerStates = {}
        self._deleted = None  # the topic's name, once deleted

    def _refused(self):
        return fail(StorageError(f"topic {self._deleted!r} was deleted"))

    def append(self, messageSet, count, timestamp, producerStates=None):
        if self._deleted is not None:
            return self._refused()
        base = self.endOffset
        if self._appendTimes:
            timestamp = max(timestamp, self._appendTimes[-1][0])
        self._lastOffsets.append(base + count - 1)
        self._messageSets.append(messageSet)
        self._appendTimes.append((timestamp, base))
        self.endOffset = base + count
        self.sizeBytes += len(messageSet)
        updateProducerStates(self._producerStates, producerStates or {})
        return succeed(None)

    def producerStates(self):
        return dict(self._producerStates)

    def read(self, offset, maxBytes, endOffset):
        if self._deleted is not None:
            return self._refused()
        index = bisect.bisect_left(self._lastOffsets, offset)
        end = bisect.bisect_left(self._lastOffsets, endOffset)
        batches = (self._messageSets[position] for position in range(index, end))
        pieces, _ = readPieces(batches, offset, maxBytes)
        return succeed(b"".join(pieces)[: max(maxBytes, 0)])

    def batchesBefore(self, timestamp, maxNumber):
        if self._deleted is not None:
            return self._refused()
        stop = bisect.bisect_right(self._appendTimes, (timestamp, float("inf")))
        newest = [base for _, base in reversed(self._appendTimes[:stop])]
        return succeed(newest[: max(maxNumber, 0)])

    def firstBatchSince(self, timestamp):
        if self._deleted is not None:
            return self._refused()
        index = bisect.bisect_left(self._appendTimes, (timestamp, float("-inf")))
        return succeed(self._appendTimes[index][1] if index < len(self._appendTimes) else None)

    def oldestBatches(self, maxNumber):
        if self._deleted is not None:
            return self._refused()
        first = bisect.bisect_left(self._lastOffsets, self.startOffset)
        batches = []
        base = self.startOffset
        for position in range(first, min(first + max(maxNumber, 0), len(self._lastOffsets))):
            nextOffset = self._lastOffsets[position] + 1
            batches.append((base, nextOffset, len(self._messageSets[position])))
            base = nextOffset
        return succeed(batches)

    def deleteBefore(self, offset):
        if self._deleted is not None:
            return self._refused()
        if offset > self.endOffset:
            return fail(ValueError(f"cannot delete below {offset}: the log ends at {self.endOffset}"))
        if offset <= self.startOffset:
            return succeed(None)
        self.startOffset = offset
        gone = bisect.bisect_right(self._lastOffsets, offset - 1)
        self.sizeBytes -= sum(len(data) for data in self._messageSets[:gone])
        del self._lastOffsets[:gone], self._messageSets[:gone], self._appendTimes[:gone]
        return succeed(None)

    def _delete(self, name):
        """The topic was deleted: drop everything, refuse everything."""
        self._deleted = name
        self._lastOffsets, self._messageSets, self._appendTimes = [], [], []
        self._producerStates = {}
        self.sizeBytes = 0


# --- credentials (SASL/SCRAM): issue 15 ------------------------------------


class MemoryCredentials(CredentialsHeld):
    """L{ICredentialStore} in memory (mixed into L{MemoryStore})."""

    def _storeCredential(self, user, mechanism, credential):
        return succeed(None)

    def _deleteCredentials(self, user, mechanisms):
        return succeed(None)


# --- end of credentials ----------------------------------------------------


@implementer(IStore, IAclStore, ICredentialStore)
class MemoryStore(MemoryCredentials, AclsHeld):
    def __init__(self):
        self._scramCredentials = {}  # user -> {mechanism: ScramCredential}
        self._topics = {}
        self._configs = {}
        self._clusterId = newClusterId()
        self._nextProducerId = 0
        self._offsets = {}  # group -> {(topic, partition): (offset, leaderEpoch, metadata, commitTimestamp)}
        self._acls = frozenset()  # of AclBinding

    def clusterId(self):
        return self._clusterId

    def topics(self):
        return {name: len(logs) for name, logs in self._topics.items()}

    def createTopic(self, name, partitions, configs=None):
        if name in self._topics:
            return fail(StorageError(f"topic {name!r} exists"))
        self._topics[name] = [MemoryPartitionLog() for _ in range(partitions)]
        self._configs[name] = dict(configs or {})
        return succeed(None)

    def deleteTopic(self, name):
        if name not in self._topics:
            return fail(StorageError(f"no topic {name!r}"))
        for log in self._topics.pop(name):
            log._delete(name)
        del self._configs[name]
        forgetTopicOffsets(self._offsets, name)
        return succeed(None)

    def addPartitions(self, name, count):
        if name not in self._topics:
            return fail(StorageError(f"no topic {name!r}"))
        logs = self._topics[name]
        if count <= len(logs):
            return fail(ValueError(f"topic {name!r} has {len(logs)} partitions: cannot grow to {count}"))
        logs.extend(MemoryPartitionLog() for _ in range(count - len(logs)))
        return succeed(None)

    def allocateProducerId(self):
        producerId = self._nextProducerId
        self._nextProducerId += 1
        return succeed(producerId)

    def commitOffsets(self, group, offsets):
        try:
            offsets = checkOffsetCommit(group, offsets)
        except ValueError as e:
            return fail(e)
        if offsets:
            self._offsets.setdefault(group, {}).update(offsets)
        return succeed(None)

    def committedOffsets(self):
        return {group: dict(offsets) for group, offsets in self._offsets.items()}

    def deleteGroupOffsets(self, group, partitions=None):
        try:
            partitions = checkPartitions(partitions)
        except ValueError as e:
            return fail(e)
        forgetGroupOffsets(self._offsets, group, partitions)
        return succeed(None)

    def topicConfigs(self, name):
        return dict(self._configs[name])

    def partitionLog(self, topic, partition):
        return self._topics[topic][partition]

    def close(self):
        return succeed(None)

    # --- ACLs (IAclStore) ---

    def _storeAcls(self, bindings, adding):
        return succeed(None)  # held in memory only (AclsHeld)


@implementer(IStorageFactory, IPlugin)
class MemoryStorageFactory:
    name = "memory"
    description = "keep everything in memory (lost at exit; for tests)"

    def openStore(self, dataDir, sync, arguments=None):
        refuseArguments(self.name, arguments)
        return MemoryStore()
