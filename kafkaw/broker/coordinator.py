"""The group coordinator: consumer group membership and committed offsets,
as Kafka 2.3.0 runs the classic group protocol (C{GroupCoordinator.scala},
C{GroupMetadata.scala}, C{MemberMetadata.scala}, C{DelayedJoin.scala},
C{DelayedHeartbeat.scala}, the offset parts of C{GroupMetadataManager.scala}).

Pure broker logic: no sockets, no protocol encoding. The request handlers
call an L{IGroupCoordinator}; committed offsets are stored through an offset
store (C{commitOffsets}, C{committedOffsets}, C{deleteGroupOffsets}); every
timer runs on the clock given (an C{IReactorTime}, a C{task.Clock} in tests).

This broker coordinates every group: FindCoordinator always names it, and
COORDINATOR_NOT_AVAILABLE (15) is only answered

 - once the coordinator is stopped (Kafka's answer when it is not active);
 - for a group that is Dead while its deletion (DeleteGroups, or offset
   expiry emptying it) is being stored: JoinGroup, SyncGroup, Heartbeat,
   LeaveGroup and OffsetCommit get 15, as Kafka answers for a Dead group, and
   the client retries;
 - for the partitions of an OffsetCommit whose store write failed (Kafka maps
   its storage errors to NOT_COORDINATOR or COORDINATOR_NOT_AVAILABLE; both
   make clients find the coordinator again and retry), and for a DeleteGroups
   whose store write failed (the group is Empty again).

NOT_COORDINATOR (16) is only answered to the JoinGroup and SyncGroup requests
parked when the coordinator stops (Kafka's answer when it unloads a group).
COORDINATOR_LOAD_IN_PROGRESS (14) never: the store's offsets are in memory
when the coordinator is made.

Group metadata (members, generation, assignments) is kept in memory only;
only committed offsets are stored. After a restart every group with offsets
is Empty at generation 0 with no protocol type, so its members' heartbeats
and commits get UNKNOWN_MEMBER_ID and they rejoin, as Kafka clients do when
a coordinator moves; its offsets then expire by their commit timestamps
(Kafka's rule for a group whose metadata has no state timestamp) until the
group has members again.

A group's store writes (commits, deletions, expiries) reach the store one at
a time, in the order they were decided; an offset is visible to OffsetFetch
once its write is stored. Deliberate differences from Kafka 2.3:

 - OffsetCommit v2-4's RetentionTimeMs is not kept (the store has no expiry
   time per offset): every offset expires by the broker's retention;
 - a second JoinGroup or SyncGroup of a member while its first is parked is
   parked too, and both are answered (Kafka forgets the first one);
 - a static member's id is C{instanceId-<uuid>} (Kafka 2.3:
   C{instanceId-<timestamp>}, which two restarts in one millisecond share).
"""

import collections
import uuid
from typing import NamedTuple, Optional

from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from kafkaw.broker.interfaces import IGroupCoordinator
from kafkaw.protocol.errors import ErrorCode
from kafkaw.storage.interfaces import StorageError


# Group states, named as Kafka prints them (DescribeGroups, kafka-consumer-groups.sh).
EMPTY = "Empty"
PREPARING_REBALANCE = "PreparingRebalance"
COMPLETING_REBALANCE = "CompletingRebalance"
STABLE = "Stable"
DEAD = "Dead"

# The states each state may be entered from (GroupMetadata.validPreviousStates).
_PREVIOUS_STATES = {
    DEAD: {STABLE, PREPARING_REBALANCE, COMPLETING_REBALANCE, EMPTY, DEAD},
    COMPLETING_REBALANCE: {PREPARING_REBALANCE},
    STABLE: {COMPLETING_REBALANCE},
    PREPARING_REBALANCE: {STABLE, COMPLETING_REBALANCE, EMPTY},
    EMPTY: {PREPARING_REBALANCE},
}

#: Kafka 2.3.0's defaults (KafkaConfig, OffsetConfig, GroupCoordinator).
DEFAULT_MIN_SESSION_TIMEOUT_MS = 6000  # group.min.session.timeout.ms
DEFAULT_MAX_SESSION_TIMEOUT_MS = 1800000  # group.max.session.timeout.ms
DEFAULT_INITIAL_REBALANCE_DELAY_MS = 3000  # group.initial.rebalance.delay.ms
DEFAULT_OFFSETS_RETENTION_MS = 7 * 24 * 3600 * 1000  # offsets.retention.minutes, 7 days
DEFAULT_OFFSETS_RETENTION_CHECK_INTERVAL_MS = 600000  # offsets.retention.check.interval.ms
DEFAULT_OFFSET_METADATA_MAX_BYTES = 4096  # offset.metadata.max.bytes
DEFAULT_GROUP_MAX_SIZE = 2**31 - 1  # group.max.size
NEW_MEMBER_JOIN_TIMEOUT_MS = 5 * 60 * 1000  # GroupCoordinator.NewMemberJoinTimeoutMs


class JoinMember(NamedTuple):
    """A member as the leader's JoinGroup answer lists it."""

    memberId: str
    groupInstanceId: Optional[str]
    metadata: bytes


class JoinResult(NamedTuple):
    """A JoinGroup answer. On an error: generation -1, protocol and leader
    C{""}, no members, and C{memberId} the one asked with (C{""} for an
    unknown member; the new id with MEMBER_ID_REQUIRED)."""

    errorCode: int
    generationId: int
    protocolName: str
    leaderId: str
    memberId: str
    members: list  # of JoinMember: the leader's answer only; [] for followers


class SyncResult(NamedTuple):
    """A SyncGroup answer: the member's assignment (C{b""} on an error)."""

    errorCode: int
    assignment: bytes


class FetchedOffset(NamedTuple):
    """One partition of an OffsetFetch answer; C{(-1, -1, "", 0)} when none is committed."""

    offset: int
    leaderEpoch: int
    metadata: str
    errorCode: int


class MemberDescription(NamedTuple):
    """A member as DescribeGroups shows it: metadata and assignment only when the group is Stable."""

    memberId: str
    groupInstanceId: Optional[str]
    clientId: str
    clientHost: str
    metadata: bytes
    assignment: bytes


class GroupDescription(NamedTuple):
    """A DescribeGroups answer for one group (protocol C{""} unless Stable)."""

    errorCode: int
    groupId: str
    state: str
    protocolType: str
    protocol: str
    members: list  # of MemberDescription


class GroupOverview(NamedTuple):
    """A ListGroups entry (C{state} is extra: ListGroups up to v2 does not send it)."""

    groupId: str
    protocolType: str
    state: str


class GroupStats(NamedTuple):
    """What an operator watches of a group."""

    groupId: str
    state: str
    generation: int
    members: int
    rebalances: int  # rebalances completed (the group reached Stable) since the coordinator started
    offsets: int  # committed partitions


_NO_OFFSET = FetchedOffset(-1, -1, "", ErrorCode.NONE)


def _javaLength(text):
    """The length Kafka measures a string with (Java's C{String.length}: UTF-16 units)."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _joinError(memberId, errorCode):
    return JoinResult(errorCode, -1, "", "", memberId, [])


class _Member:
    """A member of a group (Kafka's MemberMetadata)."""

    def __init__(self, memberId, groupInstanceId, clientId, clientHost, rebalanceTimeoutMs, sessionTimeoutMs,
                 protocolType, protocols):
        self.memberId = memberId
        self.groupInstanceId = groupInstanceId
        self.clientId = clientId
        self.clientHost = clientHost
        self.rebalanceTimeoutMs = rebalanceTimeoutMs
        self.sessionTimeoutMs = sessionTimeoutMs
        self.protocolType = protocolType
        self.protocols = protocols  # [(name, metadata)]
        self.assignment = b""
        # Parked requests. Kafka keeps one callback each (a second request
        # replaces the first, which is never answered); here all are answered.
        self.joinWaiters = []
        self.syncWaiters = []
        self.latestHeartbeat = -1
        self.isNew = False
        self.expiry = None  # the DelayedCall that removes the member when its session ends

    def metadata(self, protocol):
        for name, metadata in self.protocols:
            if name == protocol:
                return metadata
        raise ValueError(f"member {self.memberId} does not support protocol {protocol!r}")

    def matches(self, protocols):
        return self.protocols == protocols

    def vote(self, candidates):
        for name, _ in self.protocols:
            if name in candidates:
                return name
        raise ValueError(f"member {self.memberId} supports none of {sorted(candidates)}")

    def shouldKeepAlive(self, deadlineMs):
        if self.joinWaiters:
            return not self.isNew or self.latestHeartbeat + NEW_MEMBER_JOIN_TIMEOUT_MS > deadlineMs
        return bool(self.syncWaiters) or self.latestHeartbeat + self.sessionTimeoutMs > deadlineMs

    def cancelExpiry(self):
        if self.expiry is not None and self.expiry.active():
            self.expiry.cancel()
        self.expiry = None


class _DelayedJoin:
    """The wait of a PreparingRebalance group for its members' JoinGroups:
    C{initial} is Kafka's InitialDelayedJoin (an Empty group's first
    rebalance waits C{delayMs} and again while members keep arriving)."""

    def __init__(self, initial, delayMs, remainingMs=0):
        self.initial = initial
        self.delayMs = delayMs
        self.remainingMs = remainingMs
        self.call = None

    def cancel(self):
        if self.call is not None and self.call.active():
            self.call.cancel()


class _Group:
    """A group (Kafka's GroupMetadata) with its committed offsets."""

    def __init__(self, groupId, stateTimestamp):
        self.groupId = groupId
        self.state = EMPTY
        self.stateTimestamp = stateTimestamp  # ms; None for a group loaded from the store
        self.protocolType = None
        self.generationId = 0
        self.leaderId = None
        self.protocol = None
        self.members = {}  # memberId -> _Member, in the order they were added
        self.staticMembers = {}  # group instance id -> memberId
        self.pending = {}  # memberId handed out with MEMBER_ID_REQUIRED -> its expiry DelayedCall
        self.supported = collections.Counter()  # protocol name -> members supporting it
        self.newMemberAdded = False
        self.join = None  # the _DelayedJoin of a PreparingRebalance group
        self.offsets = {}  # (topic, partition) -> (offset, leaderEpoch, metadata, commitTimestamp)
        self.pendingCommits = collections.Counter()  # (topic, partition) -> commits being stored
        self.rebalances = 0

    def transitionTo(self, state, now):
        if self.state not in _PREVIOUS_STATES[state]:
            raise RuntimeError(f"group {self.groupId}: {self.state} cannot become {state}")
        self.state = state
        self.stateTimestamp = now

    def add(self, member):
        if not self.members:
            self.protocolType = member.protocolType
        if self.leaderId is None:
            self.leaderId = member.memberId
        self.members[member.memberId] = member
        self.supported.update(name for name, _ in member.protocols)

    def remove(self, memberId):
        member = self.members.pop(memberId, None)
        if member is not None:
            self.supported.subtract(name for name, _ in member.protocols)
            member.cancelExpiry()
        if self.leaderId == memberId:
            self.leaderId = next(iter(self.members), None)
        return member

    def updateProtocols(self, member, protocols):
        self.supported.subtract(name for name, _ in member.protocols)
        self.supported.update(name for name, _ in protocols)
        member.protocols = protocols

    def supportsProtocols(self, protocolType, names):
        if self.state == EMPTY:
            return bool(protocolType) and bool(names)
        return protocolType == self.protocolType and any(self.supported[n] == len(self.members) for n in names)

    def isPending(self, memberId):
        return memberId in self.pending and memberId not in self.members

    def isStaticMemberFenced(self, memberId, groupInstanceId):
        return groupInstanceId is not None and self.staticMembers.get(groupInstanceId, memberId) != memberId

    def hasAllMembersJoined(self):
        return not self.pending and all(m.joinWaiters for m in self.members.values())

    def rebalanceTimeoutMs(self):
        return max((m.rebalanceTimeoutMs for m in self.members.values()), default=0)

    def canRebalance(self):
        return self.state in _PREVIOUS_STATES[PREPARING_REBALANCE]

    def maybeElectNewJoinedLeader(self):
        """False if there is no leader or no member rejoined; else a leader that rejoined."""
        if self.leaderId is None:
            return False
        if self.members[self.leaderId].joinWaiters:
            return True
        for memberId, member in self.members.items():
            if member.joinWaiters:
                self.leaderId = memberId
                return True
        return False

    def selectProtocol(self):
        """The protocol all members support that most members prefer (ties: the earliest member's)."""
        candidates = {name for name, count in self.supported.items() if count == len(self.members)}
        votes = collections.Counter(member.vote(candidates) for member in self.members.values())
        return max(votes.items(), key=lambda item: item[1])[0]

    def currentMemberMetadata(self):
        return [JoinMember(m.memberId, m.groupInstanceId, m.metadata(self.protocol)) for m in self.members.values()]

    def hasOffsets(self):
        return bool(self.offsets) or bool(+self.pendingCommits)

    def expiredOffsets(self, now, retentionMs):
        """The partitions whose offsets retention no longer keeps (GroupMetadata.removeExpiredOffsets)."""
        if self.protocolType is not None and self.state == EMPTY:
            # A consumer group without members: retention counts from when it
            # became empty (for a group loaded from the store: from each commit).
            def base(value):
                return self.stateTimestamp if self.stateTimestamp is not None else value[3]
        elif self.protocolType is None:
            # A simple consumer's group (only offsets): from each commit.
            def base(value):
                return value[3]
        else:
            return []
        pending = +self.pendingCommits
        return [tp for tp, value in self.offsets.items() if tp not in pending and now - base(value) >= retentionMs]


def _answering(method):
    """Fire the answers a public method or timer decided only once its state changes are done.

    A Deferred's callbacks run at once and may call the coordinator again (a
    client's next request); Kafka only queues responses under its group lock.
    """

    def wrapper(self, *args, **kwargs):
        self._depth += 1
        try:
            return method(self, *args, **kwargs)
        finally:
            self._depth -= 1
            if not self._depth:
                self._flush()

    wrapper.__name__ = method.__name__
    wrapper.__doc__ = method.__doc__
    return wrapper


@implementer(IGroupCoordinator)
class GroupCoordinator:
    """Every group of this broker: the group state machine on a clock, and
    committed offsets stored through an offset store."""

    _log = Logger()

    def __init__(
        self,
        clock,
        store,
        minSessionTimeoutMs=DEFAULT_MIN_SESSION_TIMEOUT_MS,
        maxSessionTimeoutMs=DEFAULT_MAX_SESSION_TIMEOUT_MS,
        initialRebalanceDelayMs=DEFAULT_INITIAL_REBALANCE_DELAY_MS,
        offsetsRetentionMs=DEFAULT_OFFSETS_RETENTION_MS,
        offsetMetadataMaxBytes=DEFAULT_OFFSET_METADATA_MAX_BYTES,
        groupMaxSize=DEFAULT_GROUP_MAX_SIZE,
    ):
        self._clock = clock
        self._store = store
        self._minSessionTimeoutMs = minSessionTimeoutMs
        self._maxSessionTimeoutMs = maxSessionTimeoutMs
        self._initialRebalanceDelayMs = initialRebalanceDelayMs
        self._offsetsRetentionMs = offsetsRetentionMs
        self._offsetMetadataMaxBytes = offsetMetadataMaxBytes
        self._groupMaxSize = groupMaxSize
        self._groups = {}
        self._writes = {}  # groupId -> Deferred fired when the group's last store write is over
        self._outbox = collections.deque()  # (Deferred, result) to fire once the state is settled
        self._depth = 0
        self._stopped = False
        for groupId, offsets in store.committedOffsets().items():
            group = self._groups[groupId] = _Group(groupId, None)
            group.offsets = {tp: tuple(value) for tp, value in offsets.items()}

    def takeStoredOffsets(self, committed, coordinates):
        """Take the committed offsets as stored now (C{{group: {(topic, partition): value}}})
        for the groups C{coordinates(groupId)} says this broker coordinates and
        that have no member here: another broker of a cluster sharing the store
        coordinated them until now."""
        for groupId, offsets in committed.items():
            if not coordinates(groupId):
                continue
            group = self._groups.get(groupId)
            if group is None:
                group = self._groups[groupId] = _Group(groupId, None)
            elif group.members or group.pendingCommits:
                continue
            group.offsets = {tp: tuple(value) for tp, value in offsets.items()}

    # -- plumbing

    def _now(self):
        return round(self._clock.seconds() * 1000)

    def _answer(self, d, result):
        self._outbox.append((d, result))

    def _flush(self):
        while self._outbox:
            d, result = self._outbox.popleft()
            d.callback(result)

    def _later(self, delayMs, function, *args):
        return self._clock.callLater(delayMs / 1000.0, self._timer, function, *args)

    @_answering
    def _timer(self, function, *args):
        function(*args)

    def _invalidGroupId(self, groupId, emptyAllowed):
        """The error for a group id or the coordinator's state, if any (validateGroupStatus)."""
        if groupId is None or (not groupId and not emptyAllowed):
            return ErrorCode.INVALID_GROUP_ID
        if self._stopped:
            return ErrorCode.COORDINATOR_NOT_AVAILABLE
        return None

    def _memberGroup(self, groupId):
        """(group, None) for the group a member's request names, or (None, the error):
        L{_invalidGroupId}'s, UNKNOWN_MEMBER_ID when there is no such group,
        COORDINATOR_NOT_AVAILABLE when it is dead."""
        error = self._invalidGroupId(groupId, emptyAllowed=False)
        if error is not None:
            return None, error
        group = self._groups.get(groupId)
        if group is None:
            return None, ErrorCode.UNKNOWN_MEMBER_ID
        if group.state == DEAD:
            return None, ErrorCode.COORDINATOR_NOT_AVAILABLE
        return group, None

    @staticmethod
    def _memberError(group, memberId, groupInstanceId, generationId):
        """The error for a member's request at C{generationId}, if any: FENCED_INSTANCE_ID,
        UNKNOWN_MEMBER_ID (not a member, or the group is empty), ILLEGAL_GENERATION."""
        if group.isStaticMemberFenced(memberId, groupInstanceId):
            return ErrorCode.FENCED_INSTANCE_ID
        if memberId not in group.members:
            return ErrorCode.UNKNOWN_MEMBER_ID
        if generationId != group.generationId:
            return ErrorCode.ILLEGAL_GENERATION
        if group.state == EMPTY:
            return ErrorCode.UNKNOWN_MEMBER_ID
        return None

    def _write(self, groupId, operation):
        """Run a store write once the group's previous write is over, so a
        group's writes reach the store in the order they were decided.

        @return: Deferred firing with the write's result."""
        previous = self._writes.get(groupId)
        result = defer.Deferred()
        over = self._writes[groupId] = defer.Deferred()

        def settled(outcome):
            if isinstance(outcome, Failure):
                result.errback(outcome)
            else:
                result.callback(outcome)
            if self._writes.get(groupId) is over:
                del self._writes[groupId]
            over.callback(None)

        def run(_):
            defer.maybeDeferred(operation).addBoth(settled)

        if previous is None:
            run(None)
        else:
            previous.addCallback(run)
        return result

    def _storeFailed(self, failure, what, groupId):
        if failure.check(StorageError):
            self._log.warn("{what} of group {group} failed: {why}", what=what, group=groupId, why=str(failure.value))
        else:
            self._log.failure("{what} of group {group} failed", failure, what=what, group=groupId)

    # -- membership

    @_answering
    def joinGroup(self, groupId, memberId, groupInstanceId, protocolType, protocols, sessionTimeoutMs,
                  rebalanceTimeoutMs, clientId, clientHost, requireKnownMemberId):
        d = defer.Deferred()
        protocols = [(name, bytes(metadata or b"")) for name, metadata in protocols]
        if rebalanceTimeoutMs < 0:  # JoinGroup v0 has none: the session timeout is used
            rebalanceTimeoutMs = sessionTimeoutMs
        error = self._invalidGroupId(groupId, emptyAllowed=False)
        if error is None and not self._minSessionTimeoutMs <= sessionTimeoutMs <= self._maxSessionTimeoutMs:
            error = ErrorCode.INVALID_SESSION_TIMEOUT
        if error is not None:
            self._answer(d, _joinError(memberId, error))
            return d
        request = (groupInstanceId, clientId, clientHost, rebalanceTimeoutMs, sessionTimeoutMs, protocolType, protocols)
        isUnknown = memberId == ""
        group = self._groups.get(groupId)
        if group is None:
            if not isUnknown:
                self._answer(d, _joinError(memberId, ErrorCode.UNKNOWN_MEMBER_ID))
                return d
            group = self._groups[groupId] = _Group(groupId, self._now())
            self._joinUnknown(group, requireKnownMemberId, request, d)
            if group.state == EMPTY and not (group.members or group.pending or group.hasOffsets()):
                del self._groups[groupId]  # refused: no trace of it
            return d
        overCapacity = len(group.members) > self._groupMaxSize
        if (overCapacity and memberId in group.members and not group.members[memberId].joinWaiters) or (
            isUnknown and len(group.members) >= self._groupMaxSize
        ):
            self._removeMember(group, group.members.get(memberId), ErrorCode.UNKNOWN_MEMBER_ID)
            if groupInstanceId is not None and group.staticMembers.get(groupInstanceId) == memberId:
                del group.staticMembers[groupInstanceId]
            self._answer(d, _joinError("", ErrorCode.GROUP_MAX_SIZE_REACHED))
        elif isUnknown:
            self._joinUnknown(group, requireKnownMemberId, request, d)
        else:
            self._joinKnown(group, memberId, request, d)
        if group.state == PREPARING_REBALANCE:
            self._tryCompleteJoin(group)
        return d

    def _joinUnknown(self, group, requireKnownMemberId, request, d):
        """A JoinGroup without a member id (doUnknownJoinGroup)."""
        groupInstanceId, clientId, clientHost, rebalanceTimeoutMs, sessionTimeoutMs, protocolType, protocols = request
        if group.state == DEAD:
            self._answer(d, _joinError("", ErrorCode.COORDINATOR_NOT_AVAILABLE))
            return
        if not group.supportsProtocols(protocolType, [name for name, _ in protocols]):
            self._answer(d, _joinError("", ErrorCode.INCONSISTENT_GROUP_PROTOCOL))
            return
        # Kafka 2.3 names a static member instanceId-<state timestamp>; a uuid
        # (as Kafka 2.4+) keeps two rejoins in one millisecond apart.
        newMemberId = f"{groupInstanceId if groupInstanceId is not None else clientId}-{uuid.uuid4()}"
        if groupInstanceId is not None and groupInstanceId in group.staticMembers:
            # A static member restarted: it takes the old member's place (and
            # assignment) under a new id; the old id is fenced.
            oldMemberId = group.staticMembers[groupInstanceId]
            currentLeader = group.leaderId
            member = self._replaceGroupInstance(group, oldMemberId, newMemberId, groupInstanceId)
            self._scheduleExpiry(group, member, member.sessionTimeoutMs)
            group.updateProtocols(member, protocols)
            self._log.info(
                "static member {instance} of group {group} rejoined as {member}, replacing {old}",
                instance=groupInstanceId, group=group.groupId, member=newMemberId, old=oldMemberId,
            )
            if group.state in (STABLE, COMPLETING_REBALANCE):
                # No rebalance; the old leader id is answered so that a
                # rejoining leader does not compute an assignment nobody asks for.
                self._answer(d, JoinResult(
                    ErrorCode.NONE, group.generationId, group.protocol or "", currentLeader or "", newMemberId, []
                ))
            else:  # PreparingRebalance: answered when the rebalance completes
                member.joinWaiters.append(d)
        elif requireKnownMemberId:
            group.pending[newMemberId] = self._later(sessionTimeoutMs, self._expirePending, group, newMemberId)
            self._answer(d, _joinError(newMemberId, ErrorCode.MEMBER_ID_REQUIRED))
        else:
            self._addMemberAndRebalance(group, newMemberId, request, d)

    def _joinKnown(self, group, memberId, request, d):
        """A JoinGroup with a member id (doJoinGroup)."""
        groupInstanceId, _, _, _, _, protocolType, protocols = request
        if group.state == DEAD:
            self._answer(d, _joinError(memberId, ErrorCode.COORDINATOR_NOT_AVAILABLE))
        elif not group.supportsProtocols(protocolType, [name for name, _ in protocols]):
            self._answer(d, _joinError(memberId, ErrorCode.INCONSISTENT_GROUP_PROTOCOL))
        elif group.isPending(memberId):
            self._addMemberAndRebalance(group, memberId, request, d)
        elif group.isStaticMemberFenced(memberId, groupInstanceId):
            self._answer(d, _joinError(memberId, ErrorCode.FENCED_INSTANCE_ID))
        elif memberId not in group.members or (
            groupInstanceId is not None and groupInstanceId not in group.staticMembers
        ):
            self._answer(d, _joinError(memberId, ErrorCode.UNKNOWN_MEMBER_ID))
        else:
            member = group.members[memberId]
            if group.state == PREPARING_REBALANCE:
                self._updateMemberAndRebalance(group, member, protocols, d)
            elif group.state == COMPLETING_REBALANCE:
                if member.matches(protocols):
                    # The member missed its JoinGroup answer: the same again.
                    members = group.currentMemberMetadata() if memberId == group.leaderId else []
                    self._answer(d, JoinResult(
                        ErrorCode.NONE, group.generationId, group.protocol, group.leaderId, memberId, members
                    ))
                else:
                    self._updateMemberAndRebalance(group, member, protocols, d)
            elif group.state == STABLE:
                if memberId == group.leaderId or not member.matches(protocols):
                    # The leader's JoinGroup always rebalances (e.g. topics changed).
                    self._updateMemberAndRebalance(group, member, protocols, d)
                else:
                    self._answer(d, JoinResult(
                        ErrorCode.NONE, group.generationId, group.protocol, group.leaderId, memberId, []
                    ))
            else:  # Empty: a member of an older generation
                self._log.warn(
                    "member {member} rejoins group {group}, which is {state}",
                    member=memberId, group=group.groupId, state=group.state,
                )
                self._answer(d, _joinError(memberId, ErrorCode.UNKNOWN_MEMBER_ID))

    def _replaceGroupInstance(self, group, oldMemberId, newMemberId, groupInstanceId):
        member = group.members.pop(oldMemberId)
        fenced = ErrorCode.FENCED_INSTANCE_ID
        for waiter in member.joinWaiters:
            self._answer(waiter, _joinError(oldMemberId, fenced))
        for waiter in member.syncWaiters:
            self._answer(waiter, SyncResult(fenced, b""))
        member.joinWaiters, member.syncWaiters = [], []
        member.memberId = newMemberId
        group.members[newMemberId] = member
        if group.leaderId == oldMemberId:
            group.leaderId = newMemberId
        group.staticMembers[groupInstanceId] = newMemberId
        return member

    def _addMemberAndRebalance(self, group, memberId, request, d):
        groupInstanceId, clientId, clientHost, rebalanceTimeoutMs, sessionTimeoutMs, protocolType, protocols = request
        member = _Member(
            memberId, groupInstanceId, clientId, clientHost, rebalanceTimeoutMs, sessionTimeoutMs,
            protocolType, protocols,
        )
        member.isNew = True
        if group.state == PREPARING_REBALANCE and group.generationId == 0:
            group.newMemberAdded = True  # the initial delay may wait longer
        group.add(member)
        member.joinWaiters.append(d)
        # A new member has no heartbeats yet: its JoinGroup may wait five minutes, no more.
        self._scheduleExpiry(group, member, NEW_MEMBER_JOIN_TIMEOUT_MS)
        if groupInstanceId is not None:
            group.staticMembers[groupInstanceId] = memberId
        else:
            expiry = group.pending.pop(memberId, None)
            if expiry is not None and expiry.active():
                expiry.cancel()
        self._maybePrepareRebalance(group, f"member {memberId} joined")

    def _updateMemberAndRebalance(self, group, member, protocols, d):
        group.updateProtocols(member, protocols)
        member.joinWaiters.append(d)
        self._maybePrepareRebalance(group, f"member {member.memberId} rejoined")

    def _maybePrepareRebalance(self, group, reason):
        if group.canRebalance():
            self._prepareRebalance(group, reason)

    def _prepareRebalance(self, group, reason):
        if group.state == COMPLETING_REBALANCE:
            self._resetAndPropagateAssignmentError(group, ErrorCode.REBALANCE_IN_PROGRESS)
        if group.state == EMPTY:
            delay = self._initialRebalanceDelayMs
            join = _DelayedJoin(True, delay, max(group.rebalanceTimeoutMs() - delay, 0))
        else:
            join = _DelayedJoin(False, group.rebalanceTimeoutMs())
        group.transitionTo(PREPARING_REBALANCE, self._now())
        self._log.info(
            "group {group} is rebalancing after generation {generation}: {reason}",
            group=group.groupId, generation=group.generationId, reason=reason,
        )
        self._watchJoin(group, join)

    def _watchJoin(self, group, join):
        """Complete the join now if it can (tryCompleteElseWatch), else when its time is up."""
        group.join = join
        if not join.initial and group.hasAllMembersJoined():
            group.join = None
            self._completeJoin(group)
            return
        join.call = self._later(join.delayMs, self._expireJoin, group, join)

    def _tryCompleteJoin(self, group):
        join = group.join
        if join is not None and not join.initial and group.hasAllMembersJoined():
            join.cancel()
            group.join = None
            self._completeJoin(group)

    def _expireJoin(self, group, join):
        if group.join is not join:
            return
        group.join = None
        if join.initial and group.newMemberAdded and join.remainingMs != 0:
            # Members are still arriving: wait again, within the rebalance timeout.
            group.newMemberAdded = False
            delay = min(self._initialRebalanceDelayMs, join.remainingMs)
            self._watchJoin(group, _DelayedJoin(True, delay, max(join.remainingMs - join.delayMs, 0)))
            return
        self._completeJoin(group)

    def _completeJoin(self, group):
        """The rebalance's join phase is over (onCompleteJoin)."""
        for member in [m for m in group.members.values() if not m.joinWaiters and m.groupInstanceId is None]:
            self._log.info(
                "member {member} of group {group} did not rejoin in time: removed",
                member=member.memberId, group=group.groupId,
            )
            group.remove(member.memberId)
        if group.state == DEAD:
            return
        if not group.maybeElectNewJoinedLeader() and group.members:
            # Only static members, none of which rejoined: wait for them (or
            # for their sessions to end) another rebalance timeout.
            self._log.warn(
                "group {group} could not complete its rebalance: no member rejoined", group=group.groupId
            )
            self._watchJoin(group, _DelayedJoin(False, group.rebalanceTimeoutMs()))
            return
        group.generationId += 1
        now = self._now()
        if not group.members:
            group.protocol = None
            group.transitionTo(EMPTY, now)
            self._log.info(
                "group {group} is empty at generation {generation}", group=group.groupId, generation=group.generationId
            )
            return
        group.protocol = group.selectProtocol()
        group.transitionTo(COMPLETING_REBALANCE, now)
        self._log.info(
            "group {group} generation {generation}: {count} members joined, leader {leader}, protocol {protocol}",
            group=group.groupId, generation=group.generationId, count=len(group.members),
            leader=group.leaderId, protocol=group.protocol,
        )
        leaderMembers = group.currentMemberMetadata()
        for member in list(group.members.values()):
            result = JoinResult(
                ErrorCode.NONE, group.generationId, group.protocol, group.leaderId, member.memberId,
                leaderMembers if member.memberId == group.leaderId else [],
            )
            waiters, member.joinWaiters = member.joinWaiters, []
            for waiter in waiters:
                self._answer(waiter, result)
            self._scheduleExpiry(group, member, member.sessionTimeoutMs)
            member.isNew = False

    def _scheduleExpiry(self, group, member, timeoutMs):
        """A sign of life: the member's session starts again (completeAndScheduleNextExpiration)."""
        member.latestHeartbeat = self._now()
        member.cancelExpiry()
        deadline = member.latestHeartbeat + timeoutMs
        member.expiry = self._later(timeoutMs, self._expireMember, group, member, deadline)

    def _expireMember(self, group, member, deadline):
        member.expiry = None
        if group.members.get(member.memberId) is not member or member.shouldKeepAlive(deadline):
            return
        self._log.info(
            "member {member} of group {group} missed its session timeout: removed",
            member=member.memberId, group=group.groupId,
        )
        self._removeMemberAndUpdateGroup(group, member, f"member {member.memberId}'s session timed out")

    def _expirePending(self, group, memberId):
        if group.pending.pop(memberId, None) is not None:
            if group.state == PREPARING_REBALANCE:
                self._tryCompleteJoin(group)

    def _removeMember(self, group, member, errorCode):
        """Take C{member} out of the group, answering its parked requests."""
        if member is None:
            return
        for waiter in member.joinWaiters:
            self._answer(waiter, _joinError("", errorCode))
        for waiter in member.syncWaiters:
            self._answer(waiter, SyncResult(errorCode, b""))
        member.joinWaiters, member.syncWaiters = [], []
        group.remove(member.memberId)

    def _removeMemberAndUpdateGroup(self, group, member, reason):
        self._removeMember(group, member, ErrorCode.UNKNOWN_MEMBER_ID)
        if member.groupInstanceId is not None and group.staticMembers.get(member.groupInstanceId) == member.memberId:
            del group.staticMembers[member.groupInstanceId]
        if group.state in (STABLE, COMPLETING_REBALANCE):
            self._maybePrepareRebalance(group, reason)
        elif group.state == PREPARING_REBALANCE:
            self._tryCompleteJoin(group)

    def _resetAndPropagateAssignmentError(self, group, errorCode):
        for member in group.members.values():
            member.assignment = b""
        self._propagateAssignment(group, errorCode)

    def _propagateAssignment(self, group, errorCode):
        for member in list(group.members.values()):
            if member.syncWaiters:
                waiters, member.syncWaiters = member.syncWaiters, []
                for waiter in waiters:
                    self._answer(waiter, SyncResult(errorCode, member.assignment))
                # Sessions that ended while waiting for the leader start again.
                self._scheduleExpiry(group, member, member.sessionTimeoutMs)

    @_answering
    def syncGroup(self, groupId, generationId, memberId, groupInstanceId, assignments):
        d = defer.Deferred()
        group, error = self._memberGroup(groupId)
        if error is None:
            error = self._memberError(group, memberId, groupInstanceId, generationId)
        if error is None and group.state == PREPARING_REBALANCE:
            error = ErrorCode.REBALANCE_IN_PROGRESS
        if error is not None:
            self._answer(d, SyncResult(error, b""))
            return d
        member = group.members[memberId]
        if group.state == STABLE:
            self._answer(d, SyncResult(ErrorCode.NONE, member.assignment))
            self._scheduleExpiry(group, member, member.sessionTimeoutMs)
            return d
        # CompletingRebalance: wait for the leader's assignment.
        member.syncWaiters.append(d)
        if memberId == group.leaderId:
            for each in group.members.values():
                value = assignments.get(each.memberId)
                each.assignment = bytes(value) if value is not None else b""  # missing: empty
            self._propagateAssignment(group, ErrorCode.NONE)
            group.transitionTo(STABLE, self._now())
            group.rebalances += 1
            self._log.info(
                "group {group} rebalanced: generation {generation}, {count} members: {members}",
                group=group.groupId, generation=group.generationId, count=len(group.members),
                members=", ".join(group.members),
            )
        return d

    @_answering
    def heartbeat(self, groupId, generationId, memberId, groupInstanceId):
        group, error = self._memberGroup(groupId)
        if error is None:
            error = self._memberError(group, memberId, groupInstanceId, generationId)
        if error is not None:
            return error
        if group.state == COMPLETING_REBALANCE:
            return ErrorCode.REBALANCE_IN_PROGRESS
        member = group.members[memberId]
        self._scheduleExpiry(group, member, member.sessionTimeoutMs)
        if group.state == PREPARING_REBALANCE:
            return ErrorCode.REBALANCE_IN_PROGRESS
        return ErrorCode.NONE

    @_answering
    def leaveGroup(self, groupId, memberId):
        group, error = self._memberGroup(groupId)
        if error is not None:
            return error
        if group.isPending(memberId):
            expiry = group.pending.pop(memberId)
            if expiry.active():
                expiry.cancel()
            if group.state == PREPARING_REBALANCE:
                self._tryCompleteJoin(group)
            return ErrorCode.NONE
        member = group.members.get(memberId)
        if member is None:
            return ErrorCode.UNKNOWN_MEMBER_ID
        self._log.info("member {member} left group {group}", member=memberId, group=groupId)
        self._removeMemberAndUpdateGroup(group, member, f"member {memberId} left")
        return ErrorCode.NONE

    # -- offsets

    @_answering
    def commitOffsets(self, groupId, generationId, memberId, groupInstanceId, offsets):
        error = self._invalidGroupId(groupId, emptyAllowed=True)
        if error is not None:
            return defer.succeed({tp: error for tp in offsets})
        now = self._now()
        normalized = {}
        for tp, value in offsets.items():
            offset, leaderEpoch, metadata = value[:3]
            timestamp = value[3] if len(value) > 3 else -1
            normalized[tp] = (offset, leaderEpoch, metadata or "", now if timestamp == -1 else timestamp)
        group = self._groups.get(groupId)
        if group is None:
            if generationId >= 0:  # an older generation of a group gone since
                return defer.succeed({tp: ErrorCode.ILLEGAL_GENERATION for tp in offsets})
            # A simple consumer: the group only holds its offsets.
            group = self._groups[groupId] = _Group(groupId, now)
            return self._storeOffsets(group, normalized)
        if group.state == DEAD:
            error = ErrorCode.COORDINATOR_NOT_AVAILABLE
        elif group.isStaticMemberFenced(memberId, groupInstanceId):
            error = ErrorCode.FENCED_INSTANCE_ID
        elif generationId < 0 and group.state == EMPTY:
            return self._storeOffsets(group, normalized)
        elif group.state == COMPLETING_REBALANCE:
            error = ErrorCode.REBALANCE_IN_PROGRESS
        elif memberId not in group.members:
            error = ErrorCode.UNKNOWN_MEMBER_ID
        elif generationId != group.generationId:
            error = ErrorCode.ILLEGAL_GENERATION
        if error is not None:
            return defer.succeed({tp: error for tp in offsets})
        member = group.members[memberId]
        self._scheduleExpiry(group, member, member.sessionTimeoutMs)
        return self._storeOffsets(group, normalized)

    def _storeOffsets(self, group, offsets):
        """Store the offsets whose metadata is small enough, in one write (GroupMetadataManager.storeOffsets)."""
        accepted = {tp: value for tp, value in offsets.items() if _javaLength(value[2]) <= self._offsetMetadataMaxBytes}
        tooLarge = ErrorCode.OFFSET_METADATA_TOO_LARGE
        if not accepted:
            return defer.succeed({tp: tooLarge for tp in offsets})
        group.pendingCommits.update(list(accepted))
        groupId = group.groupId

        def stored(outcome):
            group.pendingCommits.subtract(list(accepted))
            group.pendingCommits = +group.pendingCommits
            if isinstance(outcome, Failure):
                self._storeFailed(outcome, "storing committed offsets", groupId)
                code = ErrorCode.COORDINATOR_NOT_AVAILABLE
            else:
                if group.state != DEAD:
                    group.offsets.update(accepted)
                code = ErrorCode.NONE
            return {tp: code if tp in accepted else tooLarge for tp in offsets}

        return self._write(groupId, lambda: self._store.commitOffsets(groupId, accepted)).addBoth(stored)

    def fetchOffsets(self, groupId, partitions):
        error = self._invalidGroupId(groupId, emptyAllowed=True)
        if error is not None:
            return defer.succeed((error, {}))
        group = self._groups.get(groupId)
        if group is None or group.state == DEAD:
            return defer.succeed((ErrorCode.NONE, {tp: _NO_OFFSET for tp in partitions or ()}))
        if partitions is None:
            partitions = sorted(group.offsets)
        found = {}
        for tp in partitions:
            value = group.offsets.get(tp)
            found[tp] = _NO_OFFSET if value is None else FetchedOffset(*value[:3], ErrorCode.NONE)
        return defer.succeed((ErrorCode.NONE, found))

    @_answering
    def deleteGroups(self, groupIds):
        results = {}
        deleting = []
        for groupId in dict.fromkeys(groupIds):
            error = self._invalidGroupId(groupId, emptyAllowed=True)
            group = self._groups.get(groupId)
            if error is not None:
                results[groupId] = error
            elif group is None or group.state == DEAD:
                results[groupId] = ErrorCode.GROUP_ID_NOT_FOUND
            elif group.state == EMPTY:
                previous = group.stateTimestamp
                group.transitionTo(DEAD, self._now())
                d = self._deleteGroup(group, previous)
                deleting.append(d.addCallback(lambda code, g=groupId: results.__setitem__(g, code)))
            else:
                results[groupId] = ErrorCode.NON_EMPTY_GROUP
        order = list(dict.fromkeys(groupIds))
        return defer.gatherResults(deleting).addCallback(lambda _: {g: results[g] for g in order})

    def _deleteGroup(self, group, previousTimestamp):
        groupId = group.groupId
        count = len(group.offsets)

        def deleted(outcome):
            if isinstance(outcome, Failure):
                self._storeFailed(outcome, "deleting the offsets", groupId)
                group.state, group.stateTimestamp = EMPTY, previousTimestamp
                return ErrorCode.COORDINATOR_NOT_AVAILABLE
            if self._groups.get(groupId) is group:
                del self._groups[groupId]
            self._log.info("deleted group {group} and its {count} offsets", group=groupId, count=count)
            return ErrorCode.NONE

        if not group.hasOffsets() and groupId not in self._writes:
            return defer.maybeDeferred(deleted, None)
        return self._write(groupId, lambda: self._store.deleteGroupOffsets(groupId)).addBoth(deleted)

    @_answering
    def expireOffsets(self):
        now = self._now()
        passes = []
        for group in list(self._groups.values()):
            if group.state == DEAD:
                continue
            expired = group.expiredOffsets(now, self._offsetsRetentionMs)
            removed = {tp: group.offsets.pop(tp) for tp in expired}
            emptied = group.state == EMPTY and not group.hasOffsets() and not group.pending
            previousTimestamp = group.stateTimestamp
            if emptied:
                group.transitionTo(DEAD, now)
            if removed:
                write = self._write(
                    group.groupId, lambda g=group.groupId, p=sorted(removed): self._store.deleteGroupOffsets(g, p)
                )
                passes.append(write.addBoth(self._expired, group, removed, emptied, previousTimestamp))
            elif emptied:
                del self._groups[group.groupId]
                self._log.info("forgot group {group}: empty, without offsets", group=group.groupId)
        return defer.gatherResults(passes).addCallback(sum)

    def _expired(self, outcome, group, removed, emptied, previousTimestamp):
        if isinstance(outcome, Failure):
            self._storeFailed(outcome, "expiring offsets", group.groupId)
            for tp, value in removed.items():
                group.offsets.setdefault(tp, value)  # unless committed again meanwhile
            if emptied and group.state == DEAD:
                group.state, group.stateTimestamp = EMPTY, previousTimestamp
            return 0
        self._log.info(
            "expired {count} offsets of group {group}{gone}",
            count=len(removed), group=group.groupId, gone=" (group forgotten)" if emptied else "",
        )
        if emptied and self._groups.get(group.groupId) is group:
            del self._groups[group.groupId]
        return len(removed)

    # -- describing

    def listGroups(self):
        return [
            GroupOverview(groupId, group.protocolType or "", group.state)
            for groupId, group in sorted(self._groups.items())
            if group.state != DEAD
        ]

    def describeGroup(self, groupId):
        error = self._invalidGroupId(groupId, emptyAllowed=True)
        if error is not None:
            return GroupDescription(error, groupId, "", "", "", [])
        group = self._groups.get(groupId)
        if group is None:
            return GroupDescription(ErrorCode.NONE, groupId, DEAD, "", "", [])
        if group.state == STABLE:
            members = [
                MemberDescription(
                    m.memberId, m.groupInstanceId, m.clientId, m.clientHost, m.metadata(group.protocol), m.assignment
                )
                for m in group.members.values()
            ]
            protocol = group.protocol
        else:
            members = [
                MemberDescription(m.memberId, m.groupInstanceId, m.clientId, m.clientHost, b"", b"")
                for m in group.members.values()
            ]
            protocol = ""
        return GroupDescription(ErrorCode.NONE, groupId, group.state, group.protocolType or "", protocol, members)

    def topicDeleted(self, topic):
        for group in self._groups.values():
            for tp in [tp for tp in group.offsets if tp[0] == topic]:
                del group.offsets[tp]

    def stats(self):
        return [
            GroupStats(groupId, g.state, g.generationId, len(g.members), g.rebalances, len(g.offsets))
            for groupId, g in sorted(self._groups.items())
        ]

    @_answering
    def stop(self):
        self._stopped = True
        notCoordinator = ErrorCode.NOT_COORDINATOR
        for group in self._groups.values():
            if group.join is not None:
                group.join.cancel()
                group.join = None
            for expiry in group.pending.values():
                if expiry.active():
                    expiry.cancel()
            for member in group.members.values():
                member.cancelExpiry()
                for waiter in member.joinWaiters:
                    self._answer(waiter, _joinError(member.memberId, notCoordinator))
                for waiter in member.syncWaiters:
                    self._answer(waiter, SyncResult(notCoordinator, b""))
                member.joinWaiters, member.syncWaiters = [], []


class OffsetExpiryService(service.Service):
    """Runs L{IGroupCoordinator.expireOffsets} every C{intervalMs}
    (offsets.retention.check.interval.ms, 10 minutes); stopping it waits for
    the pass under way, then stops the coordinator."""

    _log = Logger()

    def __init__(self, coordinator, clock, intervalMs=DEFAULT_OFFSETS_RETENTION_CHECK_INTERVAL_MS):
        self._coordinator = coordinator
        self._clock = clock
        self._intervalMs = intervalMs
        self._loop = None
        self._pass = None

    def startService(self):
        super().startService()
        self._loop = task.LoopingCall(self._expire)
        self._loop.clock = self._clock
        self._loop.start(self._intervalMs / 1000.0, now=False)

    def _expire(self):
        self._pass = self._coordinator.expireOffsets()
        self._pass.addErrback(lambda failure: self._log.failure("offset expiry failed", failure))
        return None  # a failed pass must not stop the loop

    def stopService(self):
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        d = self._pass if self._pass is not None and not self._pass.called else defer.succeed(None)
        stopped = defer.Deferred()

        def passDone(result):
            self._coordinator.stop()
            stopped.callback(None)
            return result

        d.addBoth(passDone)
        return stopped
