"""The services the gateway talks to, after kafka-worker's design: one cluster
service (which topics and partitions exist), one service per partition, and
the group coordinator (consumer groups and their committed offsets).
"""

from zope.interface import Attribute, Interface


class TopicError(Exception):
    """A topic cannot be created or used; C{errorCode} is the Kafka answer."""

    def __init__(self, message, errorCode):
        super().__init__(message)
        self.errorCode = errorCode


class IClusterService(Interface):
    """Topics and partitions of this broker (the leader of all of them)."""

    brokerId = Attribute("This broker's node id, leader and only replica of every partition.")
    clusterId = Attribute("The cluster id Metadata v2+ reports: stable for a data dir.")
    autoCreateTopics = Attribute("Whether Metadata may create unknown topics (the broker's setting).")

    def topics():
        """Existing topics: C{dict} of name to partition count."""

    def describeTopics(names, autoCreate=True):
        """Look up topics for a Metadata request, creating unknown ones if allowed.

        @param names: topic names, or C{None} for every existing topic.
        @param autoCreate: the request allows creating topics (Metadata v4+
            may say no); the broker's own setting must allow it too.
        @return: Deferred firing with a list of C{(name, errorCode, partitions)}
            in the order asked (partitions is 0 when errorCode is not 0; an
            illegal name gets 17, INVALID_TOPIC).
        """

    def createTopic(name, partitions, configs=None, validateOnly=False):
        """Create a topic, with topic configs (C{retention.ms}, C{retention.bytes},
        C{max.message.bytes}, C{message.timestamp.type}, C{cleanup.policy}).

        @param configs: C{dict} of config name to value (C{str}).
        @param validateOnly: check only; create nothing.
        @return: Deferred firing with C{None} once the topic is stored.
        @raise TopicError: (in the Deferred) with the CreateTopics error code
            (L{kafkaw.protocol.errors.ErrorCode}): bad name, count or
            config, or it exists.
        """

    def createTopics(topics, validateOnly=False):
        """Answer a CreateTopics request: create each topic, or say why not.

        @param topics: objects with C{name}, C{numPartitions},
            C{replicationFactor}, C{assignments} and C{configs} (a list of
            C{(name, value)}), as L{kafkaw.protocol.api.NewTopic}.
        @return: Deferred firing with C{[(name, errorCode, message or None)]}, one per topic asked.
        """

    def createPartitions(name, count, validateOnly=False):
        """Grow a topic to C{count} partitions (new ones start empty).

        @return: Deferred firing with C{None} once stored.
        @raise TopicError: (in the Deferred) unknown topic, or a count not above today's.
        """

    def deleteTopic(name):
        """Delete a topic and its data; requests for it fail at once, parked fetches are answered.

        @return: Deferred firing with C{None} once the deletion is stored.
        @raise TopicError: (in the Deferred) unknown topic.
        """

    def topicConfigs(name):
        """The configs an existing topic was created with: C{dict} of C{str} to C{str}."""

    def describeConfigs(name):
        """Every config of an existing topic: C{[(name, value as str, set by the topic)]}.

        @raise TopicError: unknown topic.
        """

    def retention(topic):
        """C{(retentionMs, retentionBytes)} of an existing topic (its configs, else the broker's); -1 is unlimited."""

    def allocateProducerId():
        """A producer id never handed out before, for InitProducerId.

        @return: Deferred firing with an C{int}.
        """

    def partition(topic, partition):
        """The L{IPartitionService} of a topic's partition, or C{None} if unknown."""


class IPartitionService(Interface):
    """One partition's log, as the gateway sees it."""

    logStartOffset = Attribute("First offset that can be fetched.")
    logEndOffset = Attribute("Offset of the next message (also the high watermark).")

    def append(messageSet):
        """Check a produced record set (message set v0/v1 or record batches
        v2), give it offsets, store it.

        Concurrent appends are stored in call order with contiguous offsets. A
        batch of an idempotent producer is checked against its sequence: a
        retry of a stored batch is answered with that batch's offset and
        stored nothing.

        @return: Deferred firing with an L{kafkaw.broker.services.Appended}.
        @raise kafkaw.protocol.errors.MessageSetError: (in the Deferred) the
            set was rejected; nothing of it was stored.
        @raise kafkaw.broker.producers.ProducerError: (in the Deferred) a
            sequence or epoch the producer may not use.
        """

    def read(offset, maxBytes):
        """Stored bytes from C{offset}, at most C{maxBytes} (the last entry may be partial).

        @return: Deferred firing with C{bytes}; empty at the log end.
        @raise OffsetOutOfRange: (in the Deferred) C{offset} is outside
            C{logStartOffset .. logEndOffset}.
        """

    def offsetsBefore(time, maxNumber):
        """Answer a ListOffsets v0 query: -1 latest, -2 earliest, else a time in ms.

        @return: Deferred firing with a list of offsets, newest first.
        """

    def offsetForTime(time):
        """Answer a ListOffsets v1+ query: -1 latest, -2 earliest, else the
        first record whose timestamp is at or after C{time} (ms).

        @return: Deferred firing with C{(offset, timestamp)}; C{(-1, -1)} when
            no record is that recent; timestamp -1 for -1, -2 and records
            without one.
        """

    def onAppend(callback):
        """Call C{callback()} after every stored append until it is removed
        (and once when the partition is deleted).

        @return: a function that removes the callback.
        """

    def enforceRetention(retentionMs, retentionBytes):
        """Delete the oldest stored batches that retention no longer keeps.

        A batch goes when its newest timestamp (the append time for records
        without one) is more than C{retentionMs} old, and oldest batches go
        while what stays after them is still at least C{retentionBytes}, as
        Kafka deletes segments; -1 turns either off. Only whole batches from
        the start go; the log end never moves.

        @return: Deferred firing with the new C{logStartOffset}.
        """


class IGroupCoordinator(Interface):
    """Consumer groups and their committed offsets (the classic group
    protocol of Kafka 2.3.0). Every method answers with Kafka's error codes
    (L{kafkaw.protocol.errors.ErrorCode}); none raises for a request it cannot serve."""

    def joinGroup(
        groupId, memberId, groupInstanceId, protocolType, protocols, sessionTimeoutMs, rebalanceTimeoutMs,
        clientId, clientHost, requireKnownMemberId,
    ):
        """Answer a JoinGroup request.

        @param memberId: C{""} for a member without an id yet.
        @param groupInstanceId: the static member's C{group.instance.id}
            (JoinGroup v5), or C{None}.
        @param protocols: C{[(name, metadata bytes)]} in the member's order of preference.
        @param rebalanceTimeoutMs: -1 (JoinGroup v0): the session timeout.
        @param clientHost: as the handler wants DescribeGroups to show it
            (Kafka shows C{"/127.0.0.1"}).
        @param requireKnownMemberId: JoinGroup v4+ without a group instance
            id: a member without an id gets MEMBER_ID_REQUIRED (79) and its new id.
        @return: Deferred firing with a L{kafkaw.broker.coordinator.JoinResult}, at once on an error,
            else when the rebalance completes (all members joined, the
            rebalance timeout, or the initial delay of an Empty group).
        """

    def syncGroup(groupId, generationId, memberId, groupInstanceId, assignments):
        """Answer a SyncGroup request.

        @param assignments: C{{memberId: bytes}}, the leader's (others send C{{}}).
        @return: Deferred firing with a L{kafkaw.broker.coordinator.SyncResult}; a member's SyncGroup
            in CompletingRebalance waits for the leader's.
        """

    def heartbeat(groupId, generationId, memberId, groupInstanceId):
        """Answer a Heartbeat request: an error code (C{int})."""

    def leaveGroup(groupId, memberId):
        """Answer a LeaveGroup request (v0-2: one member): an error code (C{int})."""

    def commitOffsets(groupId, generationId, memberId, groupInstanceId, offsets):
        """Answer an OffsetCommit request.

        @param generationId: -1 (with member C{""}) for a simple consumer.
        @param offsets: C{{(topic, partition): (offset, leaderEpoch, metadata,
            commitTimestamp)}}; metadata C{None} is C{""}, leaderEpoch -1 is
            none, commitTimestamp -1 (or a 3-tuple without it) is now.
        @return: Deferred firing with C{{(topic, partition): errorCode}} once
            the accepted offsets are stored, in one write.
        """

    def fetchOffsets(groupId, partitions):
        """Answer an OffsetFetch request.

        @param partitions: C{[(topic, partition)]}, or C{None} for every committed one.
        @return: Deferred firing with C{(errorCode, {(topic, partition):
            FetchedOffset})}.
        """

    def listGroups():
        """Every group (Dead ones excepted): C{[GroupOverview]}, by group id."""

    def describeGroup(groupId):
        """A L{kafkaw.broker.coordinator.GroupDescription}; an unknown group is C{Dead} with no members, error 0."""

    def deleteGroups(groupIds):
        """Answer a DeleteGroups request.

        @return: Deferred firing with C{{groupId: errorCode}} once the
            deleted groups' offsets are deleted from the store.
        """

    def expireOffsets():
        """Delete the offsets retention no longer keeps, and forget empty
        groups without offsets (the periodic job).

        @return: Deferred firing with the number of offsets deleted.
        """

    def topicDeleted(topic):
        """Forget every group's committed offsets of a deleted topic (the store
        deletes its own with the topic), as Kafka forgets them: a topic made
        again under the name starts with none."""

    def stats():
        """C{[GroupStats]} of every group, by group id."""

    def stop():
        """Stop every timer; parked JoinGroup/SyncGroup requests get
        NOT_COORDINATOR, later requests COORDINATOR_NOT_AVAILABLE."""
