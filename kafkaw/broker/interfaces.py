"""The services the gateway talks to, after kafka-worker's design: one cluster
service (which topics and partitions exist) and one service per partition.
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

    def topics():
        """Existing topics: C{dict} of name to partition count."""

    def describeTopics(names):
        """Look up topics for a Metadata request, creating unknown ones if allowed.

        @param names: topic names; empty means every existing topic.
        @return: Deferred firing with a list of C{(name, errorCode, partitions)}
            in the order asked (partitions is 0 when errorCode is not 0).
        """

    def createTopic(name, partitions, configs=None):
        """Create a topic, with topic configs (C{retention.ms}, C{retention.bytes}).

        @param configs: C{dict} of config name to value (C{str}).
        @return: Deferred firing with C{None} once the topic is stored.
        @raise TopicError: (in the Deferred) with the CreateTopics error code
            (L{kafkaw.protocol.api.AdminErrorCode}): bad name, count or
            config, or it exists.
        """

    def createTopics(topics):
        """Answer a CreateTopics request: create each topic, or say why not.

        @param topics: [L{kafkaw.protocol.api.NewTopic}].
        @return: Deferred firing with C{[(name, errorCode)]}, one per topic asked.
        """

    def topicConfigs(name):
        """The configs an existing topic was created with: C{dict} of C{str} to C{str}."""

    def retention(topic):
        """C{(retentionMs, retentionBytes)} of an existing topic (its configs, else the broker's); -1 is unlimited."""

    def partition(topic, partition):
        """The L{IPartitionService} of a topic's partition, or C{None} if unknown."""


class IPartitionService(Interface):
    """One partition's log, as the gateway sees it."""

    logStartOffset = Attribute("First offset that can be fetched.")
    logEndOffset = Attribute("Offset of the next message (also the high watermark).")

    def append(messageSet):
        """Check a produced message set, give it offsets, store it.

        Concurrent appends are stored in call order with contiguous offsets.

        @return: Deferred firing with the first offset given to the set.
        @raise kafkaw.protocol.errors.MessageSetError: (in the Deferred) the
            set was rejected; nothing of it was stored.
        """

    def read(offset, maxBytes):
        """Stored bytes from C{offset}, at most C{maxBytes} (the last message may be partial).

        @return: Deferred firing with C{bytes}; empty at the log end.
        @raise OffsetOutOfRange: (in the Deferred) C{offset} is outside
            C{logStartOffset .. logEndOffset}.
        """

    def offsetsBefore(time, maxNumber):
        """Answer a ListOffsets query: -1 latest, -2 earliest, else a time in ms.

        @return: Deferred firing with a list of offsets, newest first.
        """

    def onAppend(callback):
        """Call C{callback()} after every stored append until it is removed.

        @return: a function that removes the callback.
        """

    def enforceRetention(retentionMs, retentionBytes):
        """Delete the oldest stored batches that retention no longer keeps.

        A batch goes when it was appended more than C{retentionMs} ago, and
        oldest batches go while what stays after them is still at least
        C{retentionBytes}, as Kafka 0.8 deletes segments; -1 turns either
        off. Only whole batches from the start go; the log end never moves.

        @return: Deferred firing with the new C{logStartOffset}.
        """
