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

    def createTopic(name, partitions):
        """Create a topic.

        @return: Deferred firing with C{None}.
        @raise TopicError: (in the Deferred) bad name or count, or it exists.
        """

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
