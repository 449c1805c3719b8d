"""The storage contract. Storage only stores: offsets are assigned and message
sets are checked by the broker before they get here.

Every method that may touch a disk returns a Deferred, so a slow store never
blocks the reactor. Backends are found through Twisted's plugin system: drop an
object providing L{IStorageFactory} and C{IPlugin} into a C{twisted/plugins/}
module and C{twistd kafkaw --storage NAME} picks it up.
"""

from zope.interface import Attribute, Interface


class StorageError(Exception):
    """The store cannot be opened or cannot do what was asked."""


class IStorageFactory(Interface):
    """A storage backend, registered as a plugin."""

    name = Attribute("The C{--storage} value that selects this backend, e.g. C{'leveldb'}.")
    description = Attribute("One line for C{--help}.")

    def openStore(dataDir, sync):
        """Open (creating if needed) the store kept under C{dataDir}.

        @param sync: when true, each append is flushed to stable storage
            (fsync) before its Deferred fires.
        @return: an L{IStore}, opened synchronously at start-up.
        @raise StorageError: the store cannot be opened (e.g. locked by
            another process).
        """


class IStore(Interface):
    """All topics and partition logs of one broker."""

    def topics():
        """Topics that exist now: C{dict} of name to partition count (in memory)."""

    def createTopic(name, partitions, configs):
        """Persist a new topic with partitions C{0 .. partitions-1} and its configs.

        @param configs: C{dict} of config name to value (both C{str}), kept
            as given; the broker checks them before.
        @return: Deferred firing with C{None} once the definition is stored.
        @raise StorageError: (in the Deferred) the topic exists already.
        """

    def topicConfigs(name):
        """The configs an existing topic was created with: C{dict} of C{str} to C{str} (in memory)."""

    def partitionLog(topic, partition):
        """The L{IPartitionLog} of an existing topic's partition."""

    def close():
        """Finish outstanding work, then release the store.

        @return: Deferred firing when the store is closed.
        """


class IPartitionLog(Interface):
    """One partition's log: message sets whose offsets are already assigned.

    Each append is stored as one batch; retention deletes whole batches from
    the start of the log, so batches are what C{batchesBefore},
    C{firstBatchSince} and C{oldestBatches} talk about.
    """

    startOffset = Attribute("First offset still stored (0 until L{deleteBefore} moves it).")
    endOffset = Attribute("Offset the next appended message will get (log end).")
    sizeBytes = Attribute("Bytes of message sets stored, as appends and deletions are stored (what retention.bytes limits).")

    def append(messageSet, count, timestamp):
        """Store C{messageSet} holding offsets C{endOffset .. endOffset + count - 1}.

        The message set and the new log end are written atomically; C{endOffset}
        moves only once they are stored. Callers wait for one append's Deferred
        before making the next, so a failed append leaves no hole.

        @param timestamp: append time in milliseconds, kept for
            L{batchesBefore} and L{firstBatchSince}. Append times never go
            back: a timestamp below the previous append's is stored as that
            one, so time order is log order even if the clock steps back.
        @return: Deferred firing with C{None} once stored (and synced, if the
            store was opened with C{sync}).
        """

    def read(offset, maxBytes, endOffset):
        """Stored bytes from the entry holding C{offset}, at most C{maxBytes}.

        The result is a slice of stored message sets, starting at the first
        entry whose offset is >= C{offset} (for a compressed wrapper: the
        wrapper holding it) and cut at C{maxBytes}, so the last message may be
        partial, as in Kafka 0.8. Only entries below C{endOffset} are read.

        @return: Deferred firing with C{bytes}.
        """

    def batchesBefore(timestamp, maxNumber):
        """Base offsets of appends made at or before C{timestamp} (ms), newest first.

        @return: Deferred firing with a list of at most C{maxNumber} offsets.
        """

    def firstBatchSince(timestamp):
        """Base offset of the oldest stored append made at or after C{timestamp} (ms).

        @return: Deferred firing with the offset, or C{None} if every stored
            append is older (or the log is empty).
        """

    def oldestBatches(maxNumber):
        """The oldest stored batches, in log order, from the one holding C{startOffset}.

        @return: Deferred firing with a list of at most C{maxNumber}
            C{(baseOffset, nextOffset, size)}: offsets C{baseOffset ..
            nextOffset - 1} stored in C{size} bytes. The first one's
            C{baseOffset} is C{startOffset}.
        """

    def deleteBefore(offset):
        """Move the log start to C{offset} and delete the batches wholly below it.

        C{startOffset} moves at once, so nothing below it is served from now
        on; the batches go in the background, in steps that are each stored
        atomically with the log start they leave, so a crash never loses
        more than was asked nor brings deleted data back. A batch holding
        C{offset} stays (retention passes batch boundaries). Callers wait for
        one call's Deferred before making the next.

        @param offset: at most C{endOffset}; at or below C{startOffset} does
            nothing.
        @return: Deferred firing with C{None} once the deletion is stored (or
            stopped because the store is closing).
        @raise ValueError: (in the Deferred) C{offset} is above C{endOffset}.
        """
