"""The storage contract. Storage only stores: offsets are assigned and message
sets are checked by the broker before they get here.

Every method that may touch a disk returns a Deferred, so a slow store never
blocks the reactor. Backends are found through Twisted's plugin system: drop an
object providing L{IStorageFactory} and C{IPlugin} into a C{twisted/plugins/}
module and C{twistd kafkaw --storage NAME} picks it up.
"""

import base64
import uuid

from twisted.internet import defer
from typing import NamedTuple

from zope.interface import Attribute, Interface

from kafkaw.protocol.messages import skipBelow


class StorageError(Exception):
    """The store cannot be opened or cannot do what was asked."""


class NotLeaderError(StorageError):
    """A store shared by brokers refused a write: this broker does not (or no
    longer) lead the partition. Nothing was stored."""


def newClusterId():
    """A new cluster id as Kafka makes them: the URL-safe base64 of a random UUID, unpadded (22 characters)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode("ascii")


_INT16_MAX = (1 << 15) - 1
_INT32 = range(-(1 << 31), 1 << 31)
_INT64 = range(-(1 << 63), 1 << 63)


def _isInt(value, bounds):
    return isinstance(value, int) and not isinstance(value, bool) and value in bounds


def _checkString(what, value):
    try:
        size = len(value.encode("utf-8")) if isinstance(value, str) else None
    except UnicodeEncodeError:
        size = None  # lone surrogates
    if size is None or size > _INT16_MAX:
        raise ValueError(f"{what} must be a str of at most {_INT16_MAX} UTF-8 bytes: {value!r:.80}")


def refuseArguments(name, arguments):
    """Raise L{StorageError} if a backend that takes no C{TYPE:ARGS} arguments got some."""
    if arguments:
        raise StorageError(f"storage {name!r} takes no arguments (got {name}:{arguments})")


def checkOffsetCommit(group, offsets):
    """Check the arguments of L{IStore.commitOffsets}; return C{offsets} as a new C{dict}.

    Both backends refuse the same values (with C{ValueError}), so what one
    stores the other stores too.
    """
    _checkString("group", group)
    checked = {}
    for key, value in dict(offsets).items():
        if not (isinstance(key, tuple) and len(key) == 2):
            raise ValueError(f"offsets are keyed by (topic, partition): {key!r:.80}")
        topic, partition = key
        _checkString("topic", topic)
        if not _isInt(partition, range(0, 1 << 31)):
            raise ValueError(f"partition must be an int32 >= 0: {partition!r}")
        if not (isinstance(value, tuple) and len(value) == 4):
            raise ValueError(f"a committed offset is (offset, leaderEpoch, metadata, commitTimestamp): {value!r:.80}")
        offset, leaderEpoch, metadata, commitTimestamp = value
        if not _isInt(offset, _INT64):
            raise ValueError(f"offset must be an int64: {offset!r}")
        if not _isInt(leaderEpoch, _INT32):
            raise ValueError(f"leader epoch must be an int32: {leaderEpoch!r}")
        if metadata is not None:
            _checkString("metadata", metadata)
        if not _isInt(commitTimestamp, _INT64):
            raise ValueError(f"commit timestamp must be an int64: {commitTimestamp!r}")
        checked[key] = value
    return checked


def checkPartitions(partitions):
    """The C{partitions} argument of L{IStore.deleteGroupOffsets} as a C{set} of C{(topic, partition)}."""
    if partitions is None:
        return None
    checked = set()
    for key in partitions:
        if not (isinstance(key, tuple) and len(key) == 2 and isinstance(key[0], str) and _isInt(key[1], _INT32)):
            raise ValueError(f"partitions are (topic, partition): {key!r:.80}")
        checked.add(key)
    return checked


# What both backends do alike with what they hold.


def readPieces(batches, offset, maxBytes):
    """The stored message sets an L{IPartitionLog.read} returns, and their total size.

    C{batches} are the stored message sets from the one holding C{offset}
    on, in log order; the first loses its messages below C{offset}; they stop
    once C{maxBytes} are reached (the last may go past it: the caller cuts).
    """
    pieces = []
    total = 0
    for data in batches:
        if not pieces:
            data = data[skipBelow(data, offset) :]
        pieces.append(data)
        total += len(data)
        if total >= maxBytes:
            break
    return pieces, total


def updateProducerStates(producerStates, updates):
    """Apply C{updates} (producer id: state, C{None} to forget it) to the dict C{producerStates}."""
    for producerId, state in updates.items():
        if state is None:
            producerStates.pop(producerId, None)
        else:
            producerStates[producerId] = bytes(state)


def forgetTopicOffsets(committed, name):
    """Drop the committed offsets of topic C{name} from C{committed} (group: {(topic, partition): ...})."""
    for group, offsets in list(committed.items()):
        for key in [key for key in offsets if key[0] == name]:
            del offsets[key]
        if not offsets:
            del committed[group]


def countPending(pending, key, d):
    """Count Deferred C{d} in C{pending[key]} until it fires (C{key} goes once none is left)."""
    pending[key] = pending.get(key, 0) + 1

    def done(result):
        left = pending[key] - 1
        if left:
            pending[key] = left
        else:
            del pending[key]
        return result

    return d.addBoth(done)


def forgetGroupOffsets(committed, group, partitions):
    """Drop from C{committed} (group: {(topic, partition): ...}) the offsets of
    C{group} for C{partitions} (C{None}: all of them)."""
    offsets = committed.get(group)
    if offsets is None:
        return
    for key in list(offsets) if partitions is None else partitions:
        offsets.pop(key, None)
    if not offsets:
        del committed[group]


class TopicsHeld:
    """L{IStore}'s in-memory answers over C{self._clusterId} and
    C{self._topics} (name: a topic with C{logs} and C{configs}), as the
    LevelDB and PostgreSQL stores hold them."""

    def clusterId(self):
        return self._clusterId

    def topics(self):
        return {name: len(topic.logs) for name, topic in self._topics.items()}

    def topicConfigs(self, name):
        return dict(self._topics[name].configs)

    def partitionLog(self, topic, partition):
        return self._topics[topic].logs[partition]


class IStorageFactory(Interface):
    """A storage backend, registered as a plugin."""

    name = Attribute("The C{--storage} value that selects this backend, e.g. C{'leveldb'}.")
    description = Attribute("One line for C{--help}.")

    def openStore(dataDir, sync, arguments=None):
        """Open (creating if needed) the store kept under C{dataDir}.

        @param arguments: what follows the colon of C{--storage TYPE:ARGS}
            (e.g. a database's connection string), or C{None}; a backend
            that takes none raises L{StorageError} when given some.

        @param sync: when true, each append is flushed to stable storage
            (fsync) before its Deferred fires.
        @return: an L{IStore}, opened synchronously at start-up.
        @raise StorageError: the store cannot be opened (e.g. locked by
            another process).
        """


class IStore(Interface):
    """All topics and partition logs of one broker."""

    def clusterId():
        """The id of this store's cluster (in memory).

        A 22-character URL-safe base64 text of a random UUID, as Kafka's
        cluster ids look: made once, when a store without one is first
        opened, and kept with the data, so it stays the same across restarts
        for as long as the data directory lives (a memory store makes one
        per store object).
        """

    def topics():
        """Topics that exist now: C{dict} of name to partition count (in memory)."""

    def createTopic(name, partitions, configs):
        """Persist a new topic with partitions C{0 .. partitions-1} and its configs.

        A topic made again under the name of a deleted one is a new topic:
        its logs start empty at offset 0.

        @param configs: C{dict} of config name to value (both C{str}), kept
            as given; the broker checks them before.
        @return: Deferred firing with C{None} once the definition is stored.
        @raise StorageError: (in the Deferred) the topic exists already.
        """

    def deleteTopic(name):
        """Delete a topic: its definition, configs and every partition's log,
        time index and producer states, and the offsets every consumer group
        committed for its partitions (as Kafka 2.3's
        C{GroupMetadataManager.handleDeletedPartitions}).

        At once (before the Deferred fires) the topic is gone from
        L{topics}, C{partitionLog} no longer finds it, and its partition
        logs refuse every further call (their Deferreds fail with
        L{StorageError}), appends already waiting to be written included.
        The name is free at once for L{createTopic}.

        Deleting is crash-safe: once the Deferred has fired, the topic never
        comes back, and a store that stopped half-way through deleting the
        data goes on with it when opened again; no key of a deleted topic is
        ever read by another. The data may be deleted in the background
        after the Deferred fires, in steps that let other writes through.

        The committed offsets of the topic go with the write that stores the
        deletion: L{committedOffsets} no longer shows them once the Deferred
        has fired (a backend may drop them sooner), and a crash never brings
        them back. Commits made after this call (to a topic made again under
        the name, say) are kept.

        @return: Deferred firing with C{None} once the deletion is stored.
        @raise StorageError: (in the Deferred) no such topic, or the
            deletion could not be stored (the topic stays deleted for
            this store object, which tries again once it can write; a
            store opened before that may still hold the topic).
        """

    def addPartitions(name, count):
        """Grow an existing topic to C{count} partitions; the new ones start empty at offset 0.

        The new count is stored in one atomic write; L{topics} and
        C{partitionLog} show the new partitions once it is stored (when the
        Deferred fires), not before.

        @return: Deferred firing with C{None} once stored.
        @raise StorageError: (in the Deferred) no such topic (or it was
            deleted before the new count was stored), or the write failed.
        @raise ValueError: (in the Deferred) C{count} is not above the
            topic's partition count (counting additions not yet stored).
        """

    def allocateProducerId():
        """A producer id (C{int}, 0 <= id < 2**63) this store never handed out before.

        Never handed out twice, even across restarts and a killed process:
        an id is stored as used before the Deferred fires (ids may be
        reserved in blocks, so ids of a block unused at a restart are
        skipped).

        @return: Deferred firing with the id.
        @raise StorageError: (in the Deferred) the reservation could not be
            stored.
        """

    def commitOffsets(group, offsets):
        """Store offsets committed by consumer group C{group}, in one atomic write.

        All of C{offsets} is stored, or (if the write fails) none of it. Each
        replaces what was committed before for its partition; the group's
        other partitions keep theirs. Committed offsets are independent of
        topics: storage does not check that the topic or partition exists
        (only L{deleteTopic} deletes them). Commits are stored in call order,
        so of two commits of a partition the later call wins.

        @param group: the group id, a C{str} (at most 32767 UTF-8 bytes).
        @param offsets: C{dict} of C{(topic, partition)} (C{str} of at most
            32767 UTF-8 bytes, C{int} 0 <= partition < 2**31) to C{(offset,
            leaderEpoch, metadata, commitTimestamp)}: offset an int64, the
            leader epoch an int32 (-1: none), metadata a C{str} of at most
            32767 UTF-8 bytes or C{None}, the commit timestamp an int64 in
            milliseconds. Empty: nothing is stored.
        @return: Deferred firing with C{None} once stored (and synced, if the
            store was opened with C{sync}): from then on the commit survives
            a killed process (with C{sync}, a power loss too), and
            L{committedOffsets} shows it (not before).
        @raise ValueError: (in the Deferred) a value out of range or of the
            wrong type; nothing is stored.
        @raise StorageError: (in the Deferred) the write failed (disk full),
            or the store is closing; nothing changes in memory.
        """

    def committedOffsets():
        """Every group's committed offsets, as stored (in memory).

        Loaded when the store is opened, changed by L{commitOffsets},
        L{deleteGroupOffsets} and L{deleteTopic} once they are stored. A
        copy: changing it changes nothing stored.

        @return: C{dict} of group to C{dict} of C{(topic, partition)} to
            C{(offset, leaderEpoch, metadata, commitTimestamp)}; a group
            without any committed offset is not in it.
        """

    def deleteGroupOffsets(group, partitions=None):
        """Delete committed offsets of C{group}, in one atomic write.

        @param partitions: C{None} to delete all of the group's offsets, else
            an iterable of C{(topic, partition)}: only those are deleted
            (ones the group never committed are skipped).
        @return: Deferred firing with C{None} once the deletion is stored
            (synced, with C{sync}); L{committedOffsets} changes then, not
            before. A group without committed offsets (nor commits being
            stored): nothing to do, fires with C{None} at once.
        @raise ValueError: (in the Deferred) C{partitions} holds something
            other than pairs.
        @raise StorageError: (in the Deferred) the write failed, or the
            store is closing; nothing changes in memory.
        """

    def topicConfigs(name):
        """The configs an existing topic was created with: C{dict} of C{str} to C{str} (in memory)."""

    def partitionLog(topic, partition):
        """The L{IPartitionLog} of an existing topic's partition.

        @raise KeyError: no such topic.
        @raise IndexError: no such partition.
        """

    def close():
        """Finish outstanding work, then release the store.

        Background work (retention and topic deletions) stops at its next
        step; a deletion stopped this way goes on when the store is opened
        again.

        @return: Deferred firing when the store is closed.
        """


class IPartitionLog(Interface):
    """One partition's log: message sets whose offsets are already assigned.

    Each append is stored as one batch; retention deletes whole batches from
    the start of the log, so batches are what C{batchesBefore},
    C{firstBatchSince} and C{oldestBatches} talk about.

    What is appended may be v0/v1 message sets or v2 record batches (Kafka
    0.11): both begin with an int64 offset and an int32 size, and storage
    never parses them (L{read} finds its first entry with
    L{kafkaw.protocol.messages.skipBelow}).

    Once the log's topic is deleted (L{IStore.deleteTopic}), every method
    returning a Deferred fails with L{StorageError}.
    """

    startOffset = Attribute("First offset still stored (0 until L{deleteBefore} moves it).")
    endOffset = Attribute("Offset the next appended message will get (log end).")
    sizeBytes = Attribute("Bytes of message sets stored, as appends and deletions are stored (what retention.bytes limits).")

    def append(messageSet, count, timestamp, producerStates=None):
        """Store C{messageSet} holding offsets C{endOffset .. endOffset + count - 1}.

        The message set, the new log end and the C{producerStates} are written
        atomically; C{endOffset} (and L{producerStates}) move only once they
        are stored. Callers wait for one append's Deferred before making the
        next, so a failed append leaves no hole.

        The set is kept under its last offset, C{endOffset + count - 1}: for
        a v2 batch, C{count} must be its C{lastOffsetDelta + 1}.

        @param timestamp: the batch's timestamp in milliseconds: its max
            timestamp (Kafka's time index), or the append time for message
            sets without one; kept for L{batchesBefore} and
            L{firstBatchSince}. Stored timestamps never go back: a timestamp
            below the previous append's is stored as that one, so the time
            index is in log order even if producers' clocks or the broker's
            clock step back.
        @param producerStates: C{None}, or a C{dict} of producer id (C{int})
            to C{bytes} (stored as that producer's state, opaque to storage)
            or C{None} (that producer's state is deleted), written in the
            same atomic write as the batch.
        @return: Deferred firing with C{None} once stored (and synced, if the
            store was opened with C{sync}).
        @raise StorageError: (in the Deferred) the write failed, the store is
            closing, or the topic was deleted.
        """

    def producerStates():
        """The producer states stored with appends: C{dict} of producer id to C{bytes} (in memory).

        Loaded when the store is opened; changed by an append once it is
        stored. A copy: changing it changes nothing stored.
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
        """Base offsets of batches whose stored timestamp is at or before C{timestamp} (ms), newest first.

        @return: Deferred firing with a list of at most C{maxNumber} offsets.
        """

    def firstBatchSince(timestamp):
        """Base offset of the oldest stored batch whose stored timestamp is at or after C{timestamp} (ms).

        @return: Deferred firing with the offset, or C{None} if every stored
            batch is older (or the log is empty).
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


# --- ACLs: IAclStore -----------------------------------------------------------


class AclBinding(NamedTuple):
    """One access control entry on one resource pattern, with Kafka's codes
    (L{kafkaw.broker.authorizer} names them): storage keeps them as given."""

    resourceType: int  # 2 topic, 3 group, 4 cluster, 5 transactional id, 6 delegation token
    resourceName: str
    patternType: int  # 3 literal, 4 prefixed
    principal: str  # "User:alice", "User:*"
    host: str  # "*" or an IP address
    operation: int  # 2 All, 3 Read, 4 Write, ... 12 IdempotentWrite
    permission: int  # 2 Deny, 3 Allow


_INT8 = range(-(1 << 7), 1 << 7)


def checkAclBindings(bindings):
    """The C{bindings} of L{IAclStore.addAcls} or C{removeAcls} as a C{set}
    of L{AclBinding}; C{ValueError} for anything else, so both backends
    refuse the same values."""
    checked = set()
    for binding in bindings:
        if not isinstance(binding, tuple) or len(binding) != len(AclBinding._fields):
            raise ValueError(f"an ACL is an AclBinding: {binding!r:.80}")
        binding = AclBinding(*binding)
        for name in ("resourceType", "patternType", "operation", "permission"):
            if not _isInt(getattr(binding, name), _INT8):
                raise ValueError(f"{name} must be an int8: {getattr(binding, name)!r}")
        for name in ("resourceName", "principal", "host"):
            _checkString(name, getattr(binding, name))
        checked.add(binding)
    return checked


class IAclStore(Interface):
    """The access control lists of one broker, kept with its data.

    Storage only keeps them: what they allow is the authorizer's business
    (L{kafkaw.broker.authorizer}).
    """

    def acls():
        """Every stored ACL (in memory): a C{frozenset} of L{AclBinding}.

        Loaded when the store is opened; changed by L{addAcls} and
        L{removeAcls} once they are stored, not before. The same object
        until the ACLs change, a new one after: callers that index them
        tell a change by identity.
        """

    def addAcls(bindings):
        """Store ACLs, in one atomic write; ones already stored stay, once.

        @param bindings: an iterable of L{AclBinding} (or 7-tuples).
        @return: Deferred firing with C{None} once stored (and synced, if
            the store was opened with C{sync}): from then on they survive a
            restart and L{acls} shows them.
        @raise ValueError: (in the Deferred) a value out of range or of the
            wrong type; nothing is stored.
        @raise StorageError: (in the Deferred) the write failed, or the
            store is closing; nothing changes in memory.
        """

    def removeAcls(bindings):
        """Delete ACLs, in one atomic write; ones not stored are skipped.

        @return: Deferred firing with C{None} once the deletion is stored;
            L{acls} changes then, not before.
        @raise ValueError: (in the Deferred) as L{addAcls}.
        @raise StorageError: (in the Deferred) as L{addAcls}.
        """


class AclsHeld:
    """L{IAclStore} over C{self._acls} (the frozenset stored), as every store
    keeps them: a store provides C{_storeAcls(bindings, adding)}, a Deferred
    firing once the checked, non-empty C{bindings} are stored (or deleted);
    memory changes only then."""

    def acls(self):
        return self._acls

    def addAcls(self, bindings):
        return self._changeAcls(bindings, adding=True)

    def removeAcls(self, bindings):
        return self._changeAcls(bindings, adding=False)

    def _changeAcls(self, bindings, adding):
        try:
            bindings = checkAclBindings(bindings)
        except ValueError as e:
            return defer.fail(e)
        if not bindings:
            return defer.succeed(None)

        def stored(_):
            changed = self._acls | bindings if adding else self._acls - bindings
            if changed != self._acls:
                self._acls = changed  # a new object only for a change (IAclStore.acls)

        return self._storeAcls(bindings, adding).addCallback(stored)


# --- end of ACLs ---------------------------------------------------------------


# --- credentials (SASL/SCRAM): issue 15 ------------------------------------

# The SCRAM mechanisms credentials are stored for (RFC 5802 / RFC 7677).
SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
MAX_USER_NAME_BYTES = 1024
MAX_SCRAM_ITERATIONS = 1 << 20  # far above Kafka's 4096: a bound on the work a stored credential costs


class ScramCredential(NamedTuple):
    """One user's salted SCRAM keys for one mechanism (never the password)."""

    salt: bytes
    storedKey: bytes  # H(HMAC(SaltedPassword, "Client Key"))
    serverKey: bytes  # HMAC(SaltedPassword, "Server Key")
    iterations: int


def checkScramCredential(user, mechanism, credential):
    """The credential as a L{ScramCredential} of bytes, or ValueError when a part is out of range."""
    checkUser(user)
    if mechanism not in SCRAM_MECHANISMS:
        raise ValueError(f"unknown SCRAM mechanism {mechanism!r}; known: {', '.join(SCRAM_MECHANISMS)}")
    salt, storedKey, serverKey, iterations = credential
    if not isinstance(iterations, int) or not 1 <= iterations <= MAX_SCRAM_ITERATIONS:
        raise ValueError(f"iterations must be 1 to {MAX_SCRAM_ITERATIONS}")
    parts = [bytes(salt), bytes(storedKey), bytes(serverKey)]
    if not all(0 < len(part) <= 255 for part in parts):
        raise ValueError("salt and keys are 1 to 255 bytes")
    return ScramCredential(*parts, iterations)


def checkUser(user):
    """C{user}, or ValueError unless it is a name of 1 to 1024 UTF-8 bytes."""
    if not isinstance(user, str) or not user or len(user.encode("utf-8")) > MAX_USER_NAME_BYTES:
        raise ValueError(f"a user name is 1 to {MAX_USER_NAME_BYTES} UTF-8 bytes")
    return user


class ICredentialStore(Interface):
    """The SASL users of a broker: salted SCRAM keys per user and mechanism.

    Every credential is loaded when the store is opened and read from memory
    (an authentication never waits for a disk); changes return Deferreds.
    """

    def scramCredential(user, mechanism):
        """The stored L{ScramCredential} of C{user} for C{mechanism} (e.g.
        C{"SCRAM-SHA-256"}), or C{None} when there is none (in memory)."""

    def scramCredentials():
        """A copy of every credential: C{dict} of user to C{dict} of mechanism
        to L{ScramCredential}; a user without credentials is not in it."""

    def setScramCredential(user, mechanism, credential):
        """Store (or replace) C{user}'s credential for C{mechanism}.

        @param credential: a L{ScramCredential} (or a 4-tuple of salt, stored
            key, server key: 1 to 255 bytes each, and iterations 1 to 2**20).
        @return: Deferred firing with C{None} once stored (synced, with
            C{sync}); L{scramCredential} shows it from then on, not before.
        @raise ValueError: (in the Deferred) a user name of 0 or more than
            1024 UTF-8 bytes, an unknown mechanism, a part out of range;
            nothing is stored.
        @raise StorageError: (in the Deferred) the write failed or the store
            is closing; nothing changes.
        """

    def deleteScramCredentials(user, mechanisms=None):
        """Delete C{user}'s credentials for C{mechanisms} (C{None}: all of them).

        @return: Deferred firing with the sorted list of mechanisms deleted
            (empty: the user had none of them) once the deletion is stored.
        @raise StorageError: (in the Deferred) the write failed or the store
            is closing; nothing changes.
        """


class CredentialsHeld:
    """L{ICredentialStore} over C{self._scramCredentials} (user: {mechanism:
    L{ScramCredential}}), as every store holds them: a store provides
    C{_storeCredential(user, mechanism, credential)} and
    C{_deleteCredentials(user, mechanisms)}, each a Deferred firing once
    stored; memory changes only then."""

    def scramCredential(self, user, mechanism):
        return self._scramCredentials.get(user, {}).get(mechanism)

    def scramCredentials(self):
        return {user: dict(credentials) for user, credentials in self._scramCredentials.items()}

    def setScramCredential(self, user, mechanism, credential):
        try:
            credential = checkScramCredential(user, mechanism, credential)
        except (TypeError, ValueError) as e:
            return defer.fail(ValueError(str(e)))

        def stored(_):
            self._scramCredentials.setdefault(user, {})[mechanism] = credential

        return self._storeCredential(user, mechanism, credential).addCallback(stored)

    def deleteScramCredentials(self, user, mechanisms=None):
        deleted = sorted(m for m in self._scramCredentials.get(user, {}) if mechanisms is None or m in mechanisms)
        if not deleted:
            return defer.succeed([])

        def stored(_):
            credentials = self._scramCredentials.get(user, {})
            for mechanism in deleted:
                credentials.pop(mechanism, None)
            if not credentials:
                self._scramCredentials.pop(user, None)
            return deleted

        return self._deleteCredentials(user, deleted).addCallback(stored)


# --- end of credentials ----------------------------------------------------
