"""The group coordinator on a task.Clock over a fake offset store: every
state of the classic group protocol (Kafka 2.3.0's GroupCoordinator), its
error answers, committed offsets and their expiry."""

import pytest
from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import capturedLogs, formatEvent
from zope.interface.verify import verifyObject

from kafkaw.broker.interfaces import IGroupCoordinator
from kafkaw.protocol.errors import ErrorCode as E
from kafkaw.broker.coordinator import (
    COMPLETING_REBALANCE,
    DEAD,
    EMPTY,
    PREPARING_REBALANCE,
    STABLE,
    FetchedOffset,
    GroupCoordinator,
    GroupDescription,
    GroupOverview,
    GroupStats,
    JoinMember,
    JoinResult,
    MemberDescription,
    OffsetExpiryService,
    SyncResult,
)
from kafkaw.storage.interfaces import StorageError

SESSION_MS = 10000
REBALANCE_MS = 30000
DAY_MS = 24 * 3600 * 1000
WEEK_MS = 7 * DAY_MS
START_S = 1000  # the clock's time when a test starts


class FakeOffsetStore:
    """The offset store interface in memory; writes can be held (C{hold})
    and made to fail (C{failNext})."""

    def __init__(self, initial=None):
        self.groups = {g: dict(o) for g, o in (initial or {}).items()}
        self.writes = []  # ("commit", group, offsets) / ("delete", group, partitions)
        self.held = None  # [Deferred] when writes are held
        self.failNext = None

    def committedOffsets(self):
        return {g: dict(o) for g, o in self.groups.items()}

    def _done(self, apply):
        if self.failNext is not None:
            failure, self.failNext = self.failNext, None
            return defer.fail(failure)
        if self.held is None:
            apply()
            return defer.succeed(None)
        d = defer.Deferred()
        d.addCallback(lambda _: apply())
        self.held.append(d)
        return d

    def hold(self):
        self.held = []

    def release(self):
        """Let the writes held so far through (later ones are held still)."""
        held, self.held = self.held, []
        for d in held:
            d.callback(None)

    def commitOffsets(self, group, offsets):
        self.writes.append(("commit", group, dict(offsets)))
        return self._done(lambda: self.groups.setdefault(group, {}).update(offsets))

    def deleteGroupOffsets(self, group, partitions=None):
        self.writes.append(("delete", group, None if partitions is None else list(partitions)))

        def apply():
            if partitions is None:
                self.groups.pop(group, None)
            else:
                for tp in partitions:
                    self.groups.get(group, {}).pop(tp, None)
                if not self.groups.get(group, True):
                    del self.groups[group]

        return self._done(apply)


def fired(d):
    """The result of a Deferred that has fired."""
    assert d.called, "the Deferred has not fired"
    results = []
    d.addBoth(lambda result: results.append(result) or result)
    return results[0]


PROTOCOLS = [("range", b"range-meta"), ("roundrobin", b"rr-meta")]


class Coordinated:
    """A coordinator, its clock and its fake store."""

    def __init__(self, initial=None, **options):
        self.clock = task.Clock()
        self.clock.advance(START_S)
        self.store = FakeOffsetStore(initial)
        self.coordinator = GroupCoordinator(self.clock, self.store, **options)

    def nowMs(self):
        return round(self.clock.seconds() * 1000)

    def advanceMs(self, ms):
        """Move the clock on, stopping at each timer due (so timers set by timers run in time too)."""
        target = self.clock.seconds() + ms / 1000.0
        while True:
            due = [call.getTime() for call in self.clock.getDelayedCalls() if call.getTime() <= target]
            if not due:
                break
            self.clock.advance(max(0.0, min(due) - self.clock.seconds()))
        self.clock.advance(max(0.0, target - self.clock.seconds()))

    def join(self, memberId="", group="g", protocols=PROTOCOLS, instance=None, requireKnown=False,
             session=SESSION_MS, rebalance=REBALANCE_MS, client="client", protocolType="consumer"):
        return self.coordinator.joinGroup(
            group, memberId, instance, protocolType, protocols, session, rebalance, client, "/127.0.0.1", requireKnown
        )

    def sync(self, memberId, generation, assignments=None, group="g", instance=None):
        return self.coordinator.syncGroup(group, generation, memberId, instance, assignments or {})

    def heartbeat(self, memberId, generation, group="g", instance=None):
        return self.coordinator.heartbeat(group, generation, memberId, instance)

    def commit(self, memberId, generation, offsets, group="g", instance=None):
        return self.coordinator.commitOffsets(group, generation, memberId, instance, offsets)

    def fetch(self, partitions=None, group="g"):
        return fired(self.coordinator.fetchOffsets(group, partitions))

    def state(self, group="g"):
        return self.coordinator.describeGroup(group).state

    def stable(self, count=1, group="g"):
        """A Stable group of C{count} members joined with v4 (MEMBER_ID_REQUIRED first).

        @return: the member ids (the leader first) and the generation.
        """
        joins = []
        for n in range(count):
            first = fired(self.join(group=group, requireKnown=True, client=f"c{n}"))
            assert first.errorCode == E.MEMBER_ID_REQUIRED
            joins.append(self.join(first.memberId, group=group, client=f"c{n}"))
        if not joins[-1].called:
            self.advanceMs(3000 * count)  # the initial delay (grown while members arrive)
        results = [fired(d) for d in joins]
        leader = results[0].leaderId
        generation = results[0].generationId
        ids = [leader] + [r.memberId for r in results if r.memberId != leader]
        assignments = {m: m.encode() for m in ids}
        syncs = [self.sync(m, generation, assignments if m == leader else None, group=group) for m in ids]
        assert [fired(s) for s in syncs] == [SyncResult(E.NONE, m.encode()) for m in ids]
        assert self.state(group) == STABLE
        return ids, generation


@pytest.fixture
def c():
    return Coordinated()


def test_verifyObject(c):
    assert verifyObject(IGroupCoordinator, c.coordinator)


# -- joining


def test_firstJoinWithoutMemberIdGetsMemberIdRequired(c):
    result = fired(c.join(requireKnown=True, client="rdkafka"))
    assert result.errorCode == E.MEMBER_ID_REQUIRED == 79
    assert result.memberId.startswith("rdkafka-") and len(result.memberId) == len("rdkafka-") + 36
    assert result == JoinResult(79, -1, "", "", result.memberId, [])
    # The group exists (Empty), but has no member yet.
    assert c.coordinator.listGroups() == [GroupOverview("g", "", EMPTY)]
    assert c.coordinator.describeGroup("g").members == []
    # Rejoining with the id: a new Empty group waits the initial delay.
    d = c.join(result.memberId, client="rdkafka")
    assert c.state() == PREPARING_REBALANCE
    c.advanceMs(2999)
    assert not d.called
    c.advanceMs(1)
    joined = fired(d)
    assert joined == JoinResult(E.NONE, 1, "range", result.memberId, result.memberId, [
        JoinMember(result.memberId, None, b"range-meta")
    ])
    assert c.state() == COMPLETING_REBALANCE


def test_pendingMemberIdExpiresAfterSessionTimeout(c):
    pending = fired(c.join(requireKnown=True)).memberId
    c.advanceMs(SESSION_MS)
    result = fired(c.join(pending))
    assert result == JoinResult(E.UNKNOWN_MEMBER_ID, -1, "", "", pending, [])


def test_joinWithUnknownMemberIdOfUnknownGroup(c):
    assert fired(c.join("client-nobody")).errorCode == E.UNKNOWN_MEMBER_ID
    assert c.coordinator.listGroups() == []


def test_groupOfOne(c):
    with capturedLogs() as events:
        [member], generation = c.stable(1)
    assert generation == 1
    assert c.heartbeat(member, 1) == E.NONE
    assert c.coordinator.describeGroup("g") == GroupDescription(
        E.NONE, "g", STABLE, "consumer", "range",
        [MemberDescription(member, None, "c0", "/127.0.0.1", b"range-meta", member.encode())],
    )
    lines = [formatEvent(e) for e in events]
    assert f"group g rebalanced: generation 1, 1 members: {member}" in lines
    assert c.coordinator.stats() == [GroupStats("g", STABLE, 1, 1, 1, 0)]
    # A SyncGroup in Stable answers the assignment again.
    assert fired(c.sync(member, 1)) == SyncResult(E.NONE, member.encode())


def test_twoMembersJoiningWithinTheInitialDelay(c):
    a = c.join(client="a")
    c.advanceMs(2000)
    b = c.join(client="b")
    c.advanceMs(1000)  # the first delay is over, but a member arrived during it: wait again
    assert not a.called and not b.called
    c.advanceMs(2999)
    assert not a.called
    c.advanceMs(1)
    ra, rb = fired(a), fired(b)
    assert ra.generationId == rb.generationId == 1
    assert ra.leaderId == rb.leaderId == ra.memberId
    assert [m.memberId for m in ra.members] == [ra.memberId, rb.memberId]
    assert rb.members == []
    assert ra.protocolName == rb.protocolName == "range"


def test_initialDelayNeverExceedsTheRebalanceTimeout(c):
    a = c.join(client="a", rebalance=5000)
    answeredAt = []
    a.addCallback(lambda result: answeredAt.append(c.nowMs() - START_S * 1000) or result)
    for _ in range(7):
        c.advanceMs(1000)
        if not a.called:
            c.join(client="late", rebalance=5000)
    # 3000 ms, then min(3000, 2000 remaining) = 2000 more, then none remaining: done at 5000.
    assert answeredAt == [5000]
    assert fired(a).generationId == 1 and len(fired(a).members) == 5


def test_noInitialDelayWithZeroConfigured():
    c = Coordinated(initialRebalanceDelayMs=0)
    result = c.join()
    c.advanceMs(0)
    assert fired(result).generationId == 1


def test_memberJoiningDuringRebalance(c):
    [a], generation = c.stable(1)
    b = c.join(client="b")
    assert c.state() == PREPARING_REBALANCE
    assert c.heartbeat(a, generation) == E.REBALANCE_IN_PROGRESS
    assert fired(c.sync(a, generation)) == SyncResult(E.REBALANCE_IN_PROGRESS, b"")
    # A member of the current generation may commit while the group prepares.
    assert fired(c.commit(a, generation, {("t", 0): (5, -1, "", -1)})) == {("t", 0): E.NONE}
    # A third member joins while waiting.
    third = c.join(client="c")
    assert not b.called
    ra = fired(c.join(a))  # the last member known rejoins: the rebalance completes at once
    rb, rc = fired(b), fired(third)
    assert ra.generationId == rb.generationId == rc.generationId == generation + 1
    assert ra.leaderId == a and len(ra.members) == 3
    assert c.state() == COMPLETING_REBALANCE


def test_rejoinInCompletingRebalanceWithSameMetadataAnswersAgain(c):
    a, b = c.join(client="a"), c.join(client="b")
    c.advanceMs(6000)
    ra, rb = fired(a), fired(b)
    assert fired(c.join(ra.memberId)) == ra
    assert fired(c.join(rb.memberId)) == rb
    # New metadata: a rebalance.
    changed = c.join(rb.memberId, protocols=[("range", b"new")])
    assert c.state() == PREPARING_REBALANCE and not changed.called


def test_stableFollowerRejoinWithoutChangeDoesNotRebalance(c):
    (leader, follower), generation = c.stable(2)
    result = fired(c.join(follower, client="c1"))
    assert result == JoinResult(E.NONE, generation, "range", leader, follower, [])
    assert c.state() == STABLE
    # The leader's JoinGroup always rebalances.
    d = c.join(leader)
    assert c.state() == PREPARING_REBALANCE and not d.called
    assert fired(c.sync(follower, generation)).errorCode == E.REBALANCE_IN_PROGRESS
    fired(c.join(follower))
    assert fired(d).generationId == generation + 1


def test_followerSyncBeforeLeaderSync(c):
    a, b, third = c.join(client="a"), c.join(client="b"), c.join(client="c")
    c.advanceMs(6000)
    ra, rb, rc = fired(a), fired(b), fired(third)
    follower = c.sync(rb.memberId, 1)
    assert not follower.called
    assert c.heartbeat(rb.memberId, 1) == E.REBALANCE_IN_PROGRESS
    assert fired(c.commit(rb.memberId, 1, {("t", 0): (1, -1, "", -1)})) == {("t", 0): E.REBALANCE_IN_PROGRESS}
    # The leader leaves the third member out: it gets an empty assignment.
    leader = c.sync(ra.memberId, 1, {ra.memberId: b"A", rb.memberId: b"B", "stranger": b"X"})
    assert fired(leader) == SyncResult(E.NONE, b"A")
    assert fired(follower) == SyncResult(E.NONE, b"B")
    assert fired(c.sync(rc.memberId, 1)) == SyncResult(E.NONE, b"")
    assert c.state() == STABLE


def test_repeatedParkedRequestsAreAllAnswered(c):
    """Kafka forgets a member's first parked JoinGroup/SyncGroup when a second comes; both are answered here."""
    (a, b), generation = c.stable(2)
    firstJoin = c.join(a)
    secondJoin = c.join(a)
    fired(c.join(b))
    assert fired(firstJoin) == fired(secondJoin)
    firstSync, secondSync = c.sync(b, generation + 1), c.sync(b, generation + 1)
    assert not firstSync.called
    fired(c.sync(a, generation + 1, {b: b"B"}))
    assert fired(firstSync) == fired(secondSync) == SyncResult(E.NONE, b"B")


def test_leaderLeavesBeforeSyncGroup(c):
    a, b = c.join(client="a"), c.join(client="b")
    c.advanceMs(6000)
    ra, rb = fired(a), fired(b)
    follower = c.sync(rb.memberId, 1)
    assert c.coordinator.leaveGroup("g", ra.memberId) == E.NONE
    assert fired(follower) == SyncResult(E.REBALANCE_IN_PROGRESS, b"")
    assert c.state() == PREPARING_REBALANCE
    # Not an Empty group any more: no initial delay, and the one member left is all of it.
    result = fired(c.join(rb.memberId))
    assert result.generationId == 2 and result.leaderId == rb.memberId
    assert result.members == [JoinMember(rb.memberId, None, b"range-meta")]


def test_joinAnswersCanCallTheCoordinatorAtOnce(c):
    """A client's next request, made from the answer's callback, sees the settled group."""
    answers = []

    def syncNow(result):
        answers.append(fired(c.sync(result.memberId, result.generationId, {result.memberId: b"x"})))

    c.join().addCallback(syncNow)
    c.advanceMs(3000)
    assert answers == [SyncResult(E.NONE, b"x")]
    assert c.state() == STABLE


# -- sessions and timeouts


def test_sessionTimeoutRemovesMemberAndRebalances(c):
    (a, b), generation = c.stable(2)
    with capturedLogs() as events:
        for _ in range(3):
            c.advanceMs(3000)
            assert c.heartbeat(a, generation) == E.NONE
        c.advanceMs(999)
        assert c.state() == STABLE
        c.advanceMs(1)  # b's last sign of life (its SyncGroup) was 10 s ago
    assert c.state() == PREPARING_REBALANCE
    assert any(f"member {b} of group g missed its session timeout" in formatEvent(e) for e in events)
    assert c.heartbeat(a, generation) == E.REBALANCE_IN_PROGRESS
    assert c.heartbeat(b, generation) == E.UNKNOWN_MEMBER_ID
    result = fired(c.join(a))
    assert result.generationId == generation + 1 and [m.memberId for m in result.members] == [a]


def test_lastMemberTimingOutEmptiesGroup(c):
    [a], generation = c.stable(1)
    c.advanceMs(SESSION_MS)
    # The one member gone: the rebalance completes at once with nobody.
    assert c.state() == EMPTY
    assert c.coordinator.describeGroup("g").members == []
    assert c.heartbeat(a, generation) == E.UNKNOWN_MEMBER_ID
    assert c.coordinator.stats() == [GroupStats("g", EMPTY, 2, 0, 1, 0)]


def test_rebalanceTimeoutRemovesMembersThatDoNotRejoin(c):
    (a, b), generation = c.stable(2)
    d = c.join(a)
    # b keeps heartbeating (told to rejoin) but never rejoins.
    for _ in range(REBALANCE_MS // 3000 - 1):
        c.advanceMs(3000)
        assert c.heartbeat(b, generation) == E.REBALANCE_IN_PROGRESS
    assert not d.called
    c.advanceMs(3000)
    result = fired(d)
    assert result.generationId == generation + 1 and [m.memberId for m in result.members] == [a]
    assert c.heartbeat(b, generation) == E.UNKNOWN_MEMBER_ID


def test_rejoinOfAnEmptyGroupsFormerMember(c):
    [a], generation = c.stable(1)
    c.coordinator.leaveGroup("g", a)
    assert c.state() == EMPTY
    late = fired(c.join(a))
    assert late.errorCode == E.UNKNOWN_MEMBER_ID


def test_pendingMemberHoldsRebalanceUntilItsIdExpires(c):
    [a], generation = c.stable(1)
    pending = fired(c.join(requireKnown=True, client="b")).memberId
    d = c.join(a)  # the leader rejoins; a member id is handed out but not used yet
    assert not d.called
    c.advanceMs(SESSION_MS - 1)
    assert not d.called
    assert c.heartbeat(a, generation) == E.REBALANCE_IN_PROGRESS
    c.advanceMs(1)
    assert fired(d).generationId == generation + 1
    assert fired(c.join(pending)).errorCode == E.UNKNOWN_MEMBER_ID


def test_pendingMemberLeavingLetsTheRebalanceComplete(c):
    [a], generation = c.stable(1)
    pending = fired(c.join(requireKnown=True, client="b")).memberId
    d = c.join(a)
    assert not d.called
    assert c.coordinator.leaveGroup("g", pending) == E.NONE
    assert fired(d).generationId == generation + 1


def test_newMemberJoinTimesOutAfterFiveMinutes(c):
    """A member's JoinGroup parked while static members hold the rebalance ends after five minutes."""
    static = c.join(instance="i1", session=SESSION_MS, rebalance=600000)
    c.advanceMs(3000)
    static = fired(static)
    ids = [static.memberId]
    assert fired(c.sync(ids[0], 1, {ids[0]: b"s"})).errorCode == E.NONE
    newcomer = c.join(client="new", rebalance=600000)
    assert c.state() == PREPARING_REBALANCE
    for _ in range(5 * 60 // 5):
        c.advanceMs(5000)
        c.heartbeat(ids[0], 1, instance="i1")
    assert fired(newcomer) == JoinResult(E.UNKNOWN_MEMBER_ID, -1, "", "", "", [])


def test_staticMemberThatDoesNotRejoinStays(c):
    first = c.join(instance="i1", client="s1", session=60000)
    c.advanceMs(3000)
    s1 = fired(first)
    fired(c.sync(s1.memberId, 1, {s1.memberId: b"a"}))
    second = c.join(instance="i2", client="s2", session=60000)  # a second static member joins: rebalance
    with capturedLogs() as events:
        c.advanceMs(REBALANCE_MS)
    # s1 did not rejoin but is static: kept, and not the leader any more.
    result = fired(second)
    assert result.leaderId == result.memberId
    assert {m.memberId for m in result.members} == {s1.memberId, result.memberId}
    assert not any("could not complete" in formatEvent(e) for e in events)


def test_staticGroupWhereNoMemberRejoinedWaitsAnotherTimeout(c):
    first = c.join(instance="i1", client="s1", session=60000)
    c.advanceMs(3000)
    s1 = fired(first)
    fired(c.sync(s1.memberId, 1, {s1.memberId: b"a"}))
    c.join(instance="i2", client="s2", session=60000)
    s2 = c.coordinator.describeGroup("g").members[1].memberId
    assert c.coordinator.leaveGroup("g", s2) == E.NONE  # the one member that joined leaves again
    with capturedLogs() as events:
        c.advanceMs(REBALANCE_MS)
    assert any("group g could not complete its rebalance: no member rejoined" in formatEvent(e) for e in events)
    assert c.state() == PREPARING_REBALANCE
    assert c.heartbeat(s1.memberId, 1, instance="i1") == E.REBALANCE_IN_PROGRESS
    c.advanceMs(REBALANCE_MS - 1)
    result = fired(c.join(s1.memberId, instance="i1", session=60000))
    assert result.generationId == 2 and result.leaderId == s1.memberId


# -- static members


def test_staticMemberRejoinReplacesOldMemberIdWithoutRebalance(c):
    a, b = c.join(instance="i1", client="a"), c.join(client="b")
    c.advanceMs(6000)
    ra, rb = fired(a), fired(b)
    old = ra.memberId
    assert old.startswith("i1-")
    assert ra.leaderId == old
    follower = c.sync(rb.memberId, 1)
    fired(c.sync(old, 1, {old: b"A", rb.memberId: b"B"}, instance="i1"))
    assert fired(follower) == SyncResult(E.NONE, b"B")
    # The static leader restarts: same instance id, no member id.
    again = fired(c.join(instance="i1", client="a"))
    assert again.errorCode == E.NONE and again.memberId != old and again.memberId.startswith("i1-")
    assert again.generationId == 1 and again.members == []
    assert again.leaderId == old  # the old id: the new one must not compute an assignment
    assert c.state() == STABLE
    # Its assignment is kept for the new id.
    assert fired(c.sync(again.memberId, 1, instance="i1")) == SyncResult(E.NONE, b"A")
    # The old id is fenced wherever it shows up with the instance id.
    assert c.heartbeat(old, 1, instance="i1") == E.FENCED_INSTANCE_ID
    assert fired(c.sync(old, 1, instance="i1")).errorCode == E.FENCED_INSTANCE_ID
    assert fired(c.join(old, instance="i1", client="a")).errorCode == E.FENCED_INSTANCE_ID
    assert fired(c.commit(old, 1, {("t", 0): (1, -1, "", -1)}, instance="i1")) == {("t", 0): E.FENCED_INSTANCE_ID}
    assert c.heartbeat(again.memberId, 1, instance="i1") == E.NONE
    # A known member id with an unknown instance id.
    assert fired(c.join(rb.memberId, instance="other", client="b")).errorCode == E.UNKNOWN_MEMBER_ID


def test_staticMemberRestartDuringRebalanceFencesItsParkedJoin(c):
    a, b, third = c.join(instance="i1", client="a"), c.join(client="b"), c.join(client="c")
    c.advanceMs(6000)
    ra, rb, rc = fired(a), fired(b), fired(third)
    old = ra.memberId
    fired(c.sync(old, 1, {}, instance="i1"))
    c.join(rb.memberId, protocols=[("range", b"changed")])  # a rebalance starts
    parked = c.join(old, instance="i1", client="a")
    restarted = c.join(instance="i1", client="a")
    assert fired(parked) == JoinResult(E.FENCED_INSTANCE_ID, -1, "", "", old, [])
    assert not restarted.called
    fired(c.join(rc.memberId))  # the last one rejoins
    # The restarted member took the old one's place, as leader.
    result = fired(restarted)
    assert result.generationId == 2 and result.leaderId == result.memberId != old
    assert {m.memberId: m.groupInstanceId for m in result.members} == {
        result.memberId: "i1", rb.memberId: None, rc.memberId: None
    }


def test_staticMemberRestartFencesItsParkedSync(c):
    a, b = c.join(instance="i1", client="a"), c.join(instance="i2", client="b")
    c.advanceMs(6000)
    ra, rb = fired(a), fired(b)
    follower = ra if ra.memberId != ra.leaderId else rb
    instance = "i1" if follower is ra else "i2"
    parked = c.sync(follower.memberId, 1, instance=instance)
    again = fired(c.join(instance=instance))
    assert fired(parked) == SyncResult(E.FENCED_INSTANCE_ID, b"")
    assert again.errorCode == E.NONE and again.generationId == 1


# -- protocols


def test_inconsistentProtocols(c):
    assert fired(c.join(protocols=[])).errorCode == E.INCONSISTENT_GROUP_PROTOCOL
    assert fired(c.join(protocolType="")).errorCode == E.INCONSISTENT_GROUP_PROTOCOL
    assert c.coordinator.listGroups() == []  # a refused first join leaves no group
    [a], _ = c.stable(1)
    assert fired(c.join(protocols=[("sticky", b"")])) == JoinResult(E.INCONSISTENT_GROUP_PROTOCOL, -1, "", "", "", [])
    assert fired(c.join(protocolType="connect")).errorCode == E.INCONSISTENT_GROUP_PROTOCOL
    assert fired(c.join(a, protocols=[("sticky", b"")])).errorCode == E.INCONSISTENT_GROUP_PROTOCOL
    assert c.state() == STABLE


def test_protocolPickedByMostVotesAmongThoseAllSupport(c):
    a = c.join(protocols=[("range", b"ra"), ("roundrobin", b"rra"), ("sticky", b"sa")])
    b = c.join(protocols=[("sticky", b"sb"), ("roundrobin", b"rrb")])
    third = c.join(protocols=[("roundrobin", b"rrc"), ("sticky", b"sc")])
    c.advanceMs(9000)
    ra = fired(a)
    # Candidates: roundrobin and sticky; votes: a roundrobin, b sticky, c roundrobin.
    assert ra.protocolName == "roundrobin" == fired(b).protocolName == fired(third).protocolName
    assert [m.metadata for m in ra.members] == [b"rra", b"rrb", b"rrc"]


# -- heartbeats and validation


def test_heartbeatInEachState(c):
    assert c.heartbeat("m", 0, group="") == E.INVALID_GROUP_ID
    assert c.heartbeat("m", 0, group="nothing") == E.UNKNOWN_MEMBER_ID
    a, b = c.join(client="a"), c.join(client="b")
    assert c.state() == PREPARING_REBALANCE
    c.advanceMs(6000)
    ra, rb = fired(a), fired(b)
    assert c.heartbeat(ra.memberId, 1) == E.REBALANCE_IN_PROGRESS  # CompletingRebalance
    assert c.heartbeat(ra.memberId, 0) == E.ILLEGAL_GENERATION
    assert c.heartbeat("client-stranger", 1) == E.UNKNOWN_MEMBER_ID
    fired(c.sync(ra.memberId, 1, {}))
    assert c.heartbeat(ra.memberId, 1) == E.NONE  # Stable
    assert c.heartbeat(rb.memberId, 2) == E.ILLEGAL_GENERATION
    c.join(rb.memberId, protocols=[("range", b"changed")])
    assert c.heartbeat(ra.memberId, 1) == E.REBALANCE_IN_PROGRESS  # PreparingRebalance
    c.coordinator.leaveGroup("g", ra.memberId)
    c.coordinator.leaveGroup("g", rb.memberId)
    assert c.state() == EMPTY
    assert c.heartbeat(ra.memberId, 2) == E.UNKNOWN_MEMBER_ID  # Empty


def test_sessionTimeoutOutsideBounds(c):
    assert fired(c.join(session=5999)).errorCode == E.INVALID_SESSION_TIMEOUT
    assert fired(c.join(session=1800001)).errorCode == E.INVALID_SESSION_TIMEOUT
    assert fired(c.join(session=6000, requireKnown=True)).errorCode == E.MEMBER_ID_REQUIRED
    custom = Coordinated(minSessionTimeoutMs=100, maxSessionTimeoutMs=200)
    assert fired(custom.join(session=300)).errorCode == E.INVALID_SESSION_TIMEOUT


def test_joinV0UsesSessionTimeoutAsRebalanceTimeout(c):
    first = c.join(rebalance=-1)  # JoinGroup v0 has no rebalance timeout
    c.advanceMs(3000)
    a = fired(first).memberId
    fired(c.sync(a, 1, {}))
    second = c.join(client="b", rebalance=-1)
    # a is told to rejoin but does not; its session is kept alive.
    for _ in range(3):
        c.advanceMs(3000)
        assert c.heartbeat(a, 1) == E.REBALANCE_IN_PROGRESS
    assert not second.called
    c.advanceMs(SESSION_MS - 9000)  # the rebalance timeout: the session timeout, 10 s
    assert fired(second).generationId == 2
    assert c.heartbeat(a, 1) == E.UNKNOWN_MEMBER_ID


def test_invalidGroupIds(c):
    assert fired(c.join(group="")).errorCode == E.INVALID_GROUP_ID
    assert fired(c.sync("m", 1, group="")).errorCode == E.INVALID_GROUP_ID
    assert c.coordinator.leaveGroup("", "m") == E.INVALID_GROUP_ID
    # The offset APIs and DescribeGroups/DeleteGroups allow the empty group id.
    assert fired(c.commit("", -1, {("t", 0): (1, -1, None, -1)}, group="")) == {("t", 0): E.NONE}
    assert c.fetch(group="")[1][("t", 0)].offset == 1
    assert c.coordinator.describeGroup("").errorCode == E.NONE
    assert fired(c.commit("", -1, {("t", 0): (1, -1, None, -1)}, group=None)) == {("t", 0): E.INVALID_GROUP_ID}


def test_syncGroupErrors(c):
    assert fired(c.sync("m", 1, group="nothing")).errorCode == E.UNKNOWN_MEMBER_ID
    [a], generation = c.stable(1)
    assert fired(c.sync("client-x", generation)).errorCode == E.UNKNOWN_MEMBER_ID
    assert fired(c.sync(a, generation + 1)).errorCode == E.ILLEGAL_GENERATION


def test_leaveGroup(c):
    assert c.coordinator.leaveGroup("nothing", "m") == E.UNKNOWN_MEMBER_ID
    (a, b), generation = c.stable(2)
    assert c.coordinator.leaveGroup("g", "client-x") == E.UNKNOWN_MEMBER_ID
    assert c.coordinator.leaveGroup("g", b) == E.NONE
    assert c.state() == PREPARING_REBALANCE
    assert c.heartbeat(b, generation) == E.UNKNOWN_MEMBER_ID
    result = fired(c.join(a))
    assert result.generationId == generation + 1 and len(result.members) == 1
    # A pending member (MEMBER_ID_REQUIRED) may leave too.
    pending = fired(c.join(requireKnown=True)).memberId
    assert c.coordinator.leaveGroup("g", pending) == E.NONE
    assert fired(c.join(pending)).errorCode == E.UNKNOWN_MEMBER_ID


def test_leaveDuringRebalanceAnswersTheParkedJoin(c):
    (a, b, third), generation = c.stable(3)
    joinA = c.join(a)
    d = c.join(b)
    assert not d.called
    assert c.coordinator.leaveGroup("g", b) == E.NONE
    assert fired(d) == JoinResult(E.UNKNOWN_MEMBER_ID, -1, "", "", "", [])
    assert c.state() == PREPARING_REBALANCE
    fired(c.join(third))
    assert [m.memberId for m in fired(joinA).members] == [a, third]


def test_groupMaxSize():
    c = Coordinated(groupMaxSize=1)
    [a], _ = c.stable(1)
    assert fired(c.join(client="x")) == JoinResult(E.GROUP_MAX_SIZE_REACHED, -1, "", "", "", [])
    assert c.state() == STABLE


# -- committed offsets


def test_commitFromCurrentGenerationIsOneStoreWrite(c):
    (a, b), generation = c.stable(2)
    offsets = {("t", 0): (10, 3, "meta", -1), ("t", 1): (20, -1, None, -1), ("u", 0): (30, -1, "", 12345)}
    assert fired(c.commit(a, generation, offsets)) == {tp: E.NONE for tp in offsets}
    now = c.nowMs()
    stored = {("t", 0): (10, 3, "meta", now), ("t", 1): (20, -1, "", now), ("u", 0): (30, -1, "", 12345)}
    assert c.store.writes == [("commit", "g", stored)]
    assert c.store.groups == {"g": stored}
    errorCode, found = c.fetch()
    assert errorCode == E.NONE
    assert found == {("t", 0): FetchedOffset(10, 3, "meta", 0), ("t", 1): FetchedOffset(20, -1, "", 0),
                     ("u", 0): FetchedOffset(30, -1, "", 0)}
    assert c.fetch([("t", 1), ("t", 9)]) == (E.NONE, {("t", 1): FetchedOffset(20, -1, "", 0),
                                                     ("t", 9): FetchedOffset(-1, -1, "", 0)})
    assert c.coordinator.stats()[0].offsets == 3


def test_commitKeepsTheSessionAlive(c):
    (a, b), generation = c.stable(2)
    for _ in range(5):
        c.advanceMs(4000)
        assert c.heartbeat(a, generation) == E.NONE
        assert fired(c.commit(b, generation, {("t", 0): (1, -1, "", -1)})) == {("t", 0): E.NONE}
    assert c.state() == STABLE


def test_commitErrors(c):
    tp = ("t", 0)
    one = {tp: (1, -1, "", -1)}
    assert fired(c.commit("client-x", 3, one, group="gone")) == {tp: E.ILLEGAL_GENERATION}
    (a, b), generation = c.stable(2)
    assert fired(c.commit(a, generation - 1, one)) == {tp: E.ILLEGAL_GENERATION}
    assert fired(c.commit("client-x", generation, one)) == {tp: E.UNKNOWN_MEMBER_ID}
    assert fired(c.commit("", -1, one)) == {tp: E.UNKNOWN_MEMBER_ID}  # simple commit to a group with members
    assert c.store.writes == []


def test_simpleCommits(c):
    tp = ("t", 0)
    # A group that does not exist: made, as only a holder of offsets.
    assert fired(c.commit("", -1, {tp: (7, -1, "x", -1)}, group="simple")) == {tp: E.NONE}
    assert c.coordinator.listGroups() == [GroupOverview("simple", "", EMPTY)]
    assert c.fetch([tp], group="simple") == (E.NONE, {tp: FetchedOffset(7, -1, "x", 0)})
    # An Empty consumer group takes them too, with any member id.
    [a], generation = c.stable(1)
    c.coordinator.leaveGroup("g", a)
    assert c.state() == EMPTY
    assert fired(c.commit(a, -1, {tp: (8, -1, "", -1)})) == {tp: E.NONE}
    assert fired(c.commit(a, generation, {tp: (9, -1, "", -1)})) == {tp: E.UNKNOWN_MEMBER_ID}


def test_fetchOfUnknownGroup(c):
    assert c.fetch([("t", 0)], group="nobody") == (E.NONE, {("t", 0): FetchedOffset(-1, -1, "", 0)})
    assert c.fetch(None, group="nobody") == (E.NONE, {})


def test_metadataTooLarge(c):
    tp, big, ok = ("t", 0), ("t", 1), ("t", 2)
    answer = fired(c.commit("", -1, {big: (1, -1, "m" * 4097, -1), ok: (2, -1, "m" * 4096, -1)}))
    assert answer == {big: E.OFFSET_METADATA_TOO_LARGE, ok: E.NONE}
    assert list(c.store.groups["g"]) == [ok]
    # Nothing small enough: no write at all.
    assert fired(c.commit("", -1, {tp: (1, -1, "m" * 5000, -1)})) == {tp: E.OFFSET_METADATA_TOO_LARGE}
    assert len(c.store.writes) == 1
    # Kafka counts UTF-16 units: a clef is two.
    assert fired(c.commit("", -1, {tp: (1, -1, "\U0001D11E" * 2048, -1)})) == {tp: E.NONE}
    assert fired(c.commit("", -1, {tp: (1, -1, "\U0001D11E" * 2049, -1)})) == {tp: E.OFFSET_METADATA_TOO_LARGE}
    custom = Coordinated(offsetMetadataMaxBytes=3)
    assert fired(custom.commit("", -1, {tp: (1, -1, "abcd", -1)})) == {tp: E.OFFSET_METADATA_TOO_LARGE}


def test_commitsOfAGroupReachTheStoreInOrder(c):
    tp = ("t", 0)
    c.store.hold()
    first = c.commit("", -1, {tp: (1, -1, "", -1)})
    second = c.commit("", -1, {tp: (2, -1, "", -1)})
    assert len(c.store.writes) == 1  # the second waits for the first
    assert c.fetch([tp])[1][tp].offset == -1  # not stored: not visible
    c.store.release()
    assert fired(first) == {tp: E.NONE}
    assert not second.called and len(c.store.writes) == 2
    c.store.release()
    assert fired(second) == {tp: E.NONE}
    assert c.fetch([tp])[1][tp].offset == 2


def test_failedCommitAnswersCoordinatorNotAvailable(c):
    tp = ("t", 0)
    c.store.failNext = StorageError("disk full")
    with capturedLogs() as events:
        answer = fired(c.commit("", -1, {tp: (1, -1, "", -1)}))
    assert answer == {tp: E.COORDINATOR_NOT_AVAILABLE}
    assert any("storing committed offsets of group g failed: disk full" in formatEvent(e) for e in events)
    assert c.fetch([tp])[1][tp].offset == -1
    assert fired(c.commit("", -1, {tp: (2, -1, "", -1)})) == {tp: E.NONE}


def test_offsetsLoadedFromTheStore():
    c = Coordinated({"old": {("t", 0): (5, 2, "m", START_S * 1000 - DAY_MS)}})
    assert c.fetch(group="old") == (E.NONE, {("t", 0): FetchedOffset(5, 2, "m", 0)})
    assert c.coordinator.listGroups() == [GroupOverview("old", "", EMPTY)]
    # Members of before the restart are unknown: they rejoin.
    assert c.heartbeat("client-before", 4, group="old") == E.UNKNOWN_MEMBER_ID
    assert fired(c.commit("client-before", 4, {("t", 0): (6, -1, "", -1)}, group="old")) == {
        ("t", 0): E.UNKNOWN_MEMBER_ID
    }
    # Its offsets expire 7 days after their commit.
    c.advanceMs(WEEK_MS - DAY_MS - 1)
    assert fired(c.coordinator.expireOffsets()) == 0
    c.advanceMs(1)
    assert fired(c.coordinator.expireOffsets()) == 1
    assert c.store.groups == {} and c.coordinator.listGroups() == []


# -- expiry


def test_offsetsOfAGroupWhoseMembersVanishedExpire(c):
    [a], generation = c.stable(1)
    fired(c.commit(a, generation, {("t", 0): (1, -1, "", -1)}))
    c.advanceMs(SESSION_MS)  # no heartbeat: the member is gone, the group Empty
    assert c.state() == EMPTY
    c.advanceMs(WEEK_MS - 1)
    assert fired(c.coordinator.expireOffsets()) == 0
    c.advanceMs(1)
    assert fired(c.coordinator.expireOffsets()) == 1
    assert c.store.writes[-1] == ("delete", "g", [("t", 0)])
    assert c.store.groups == {}
    assert c.coordinator.listGroups() == [] and c.coordinator.describeGroup("g").state == DEAD


def test_expiryOfAStableGroupNever(c):
    [a], generation = c.stable(1)
    fired(c.commit(a, generation, {("t", 0): (1, -1, "", -1)}))
    for _ in range(8):
        for _ in range(DAY_MS // 5000):
            c.advanceMs(5000)
            c.heartbeat(a, generation)
        fired(c.coordinator.expireOffsets())
    assert c.fetch([("t", 0)])[1][("t", 0)].offset == 1
    c.coordinator.leaveGroup("g", a)
    emptyAt = c.nowMs()
    c.advanceMs(WEEK_MS - 1)
    assert fired(c.coordinator.expireOffsets()) == 0
    c.advanceMs(1)
    assert c.nowMs() - emptyAt == WEEK_MS
    assert fired(c.coordinator.expireOffsets()) == 1
    assert c.coordinator.listGroups() == []
    # A new group of the same name starts afresh.
    assert fired(c.join(requireKnown=True)).errorCode == E.MEMBER_ID_REQUIRED


def test_simpleConsumerOffsetsExpireByCommitTime(c):
    fired(c.commit("", -1, {("t", 0): (1, -1, "", -1)}, group="s"))
    c.advanceMs(DAY_MS)
    fired(c.commit("", -1, {("t", 1): (1, -1, "", -1)}, group="s"))
    c.advanceMs(WEEK_MS - DAY_MS)
    assert fired(c.coordinator.expireOffsets()) == 1
    assert c.fetch(group="s")[1] == {("t", 1): FetchedOffset(1, -1, "", 0)}
    assert c.store.groups == {"s": {("t", 1): (1, -1, "", START_S * 1000 + DAY_MS)}}
    c.advanceMs(DAY_MS)
    assert fired(c.coordinator.expireOffsets()) == 1
    assert c.coordinator.listGroups() == []


def test_emptyGroupWithoutOffsetsIsForgotten(c):
    [a], _ = c.stable(1)
    c.coordinator.leaveGroup("g", a)
    writes = len(c.store.writes)
    assert fired(c.coordinator.expireOffsets()) == 0
    assert c.coordinator.listGroups() == [] and len(c.store.writes) == writes


def test_failedExpiryKeepsTheOffsets(c):
    fired(c.commit("", -1, {("t", 0): (1, -1, "", -1)}))
    c.advanceMs(WEEK_MS)
    c.store.failNext = StorageError("disk gone")
    with capturedLogs():
        assert fired(c.coordinator.expireOffsets()) == 0
    assert c.fetch([("t", 0)])[1][("t", 0)].offset == 1
    assert c.state() == EMPTY
    assert fired(c.coordinator.expireOffsets()) == 1


def test_expiryService(c):
    fired(c.commit("", -1, {("t", 0): (1, -1, "", -1)}))
    expiry = OffsetExpiryService(c.coordinator, c.clock)
    parent = service.MultiService()
    expiry.setServiceParent(parent)
    parent.startService()
    c.advanceMs(WEEK_MS - 1)  # passes every 10 minutes, none old enough yet
    assert c.fetch([("t", 0)])[1][("t", 0)].offset == 1
    c.advanceMs(600000)
    assert c.fetch([("t", 0)])[1][("t", 0)].offset == -1
    fired(parent.stopService())
    assert c.heartbeat("m", 1) == E.COORDINATOR_NOT_AVAILABLE
    assert c.clock.getDelayedCalls() == []


# -- deleting, describing, listing


def test_deleteGroups(c):
    (a, b), generation = c.stable(2, group="busy")
    fired(c.commit("", -1, {("t", 0): (1, -1, "", -1)}, group="idle"))
    answer = fired(c.coordinator.deleteGroups(["busy", "nobody", "idle", "idle"]))
    assert answer == {"busy": E.NON_EMPTY_GROUP, "nobody": E.GROUP_ID_NOT_FOUND, "idle": E.NONE}
    assert list(answer) == ["busy", "nobody", "idle"]
    assert c.store.writes[-1] == ("delete", "idle", None)
    assert "idle" not in c.store.groups
    assert [o.groupId for o in c.coordinator.listGroups()] == ["busy"]
    assert c.fetch([("t", 0)], group="idle")[1][("t", 0)].offset == -1
    assert fired(c.coordinator.deleteGroups(["idle"])) == {"idle": E.GROUP_ID_NOT_FOUND}


def test_deleteGroupWithoutOffsets(c):
    [a], _ = c.stable(1)
    c.coordinator.leaveGroup("g", a)
    assert fired(c.coordinator.deleteGroups(["g", None])) == {"g": E.NONE, None: E.INVALID_GROUP_ID}
    assert c.store.writes == [] and c.coordinator.listGroups() == []


def test_deletedGroupIsDeadUntilTheDeletionIsStored(c):
    fired(c.commit("", -1, {("t", 0): (1, -1, "", -1)}))
    c.store.hold()
    d = c.coordinator.deleteGroups(["g"])
    assert not d.called
    assert c.state() == DEAD
    assert fired(c.join()).errorCode == E.COORDINATOR_NOT_AVAILABLE
    assert fired(c.commit("", -1, {("t", 0): (2, -1, "", -1)})) == {("t", 0): E.COORDINATOR_NOT_AVAILABLE}
    assert c.heartbeat("m", 0) == E.COORDINATOR_NOT_AVAILABLE
    assert fired(c.sync("m", 0)).errorCode == E.COORDINATOR_NOT_AVAILABLE
    assert fired(c.join("client-m")).errorCode == E.COORDINATOR_NOT_AVAILABLE
    assert c.coordinator.leaveGroup("g", "m") == E.COORDINATOR_NOT_AVAILABLE
    assert c.fetch([("t", 0)])[1][("t", 0)].offset == -1
    assert fired(c.coordinator.deleteGroups(["g"])) == {"g": E.GROUP_ID_NOT_FOUND}
    c.store.release()
    assert fired(d) == {"g": E.NONE}
    assert fired(c.join(requireKnown=True)).errorCode == E.MEMBER_ID_REQUIRED


def test_failedDeletionLeavesTheGroupEmpty(c):
    fired(c.commit("", -1, {("t", 0): (1, -1, "", -1)}))
    c.store.failNext = StorageError("read-only")
    with capturedLogs():
        assert fired(c.coordinator.deleteGroups(["g"])) == {"g": E.COORDINATOR_NOT_AVAILABLE}
    assert c.state() == EMPTY and c.fetch([("t", 0)])[1][("t", 0)].offset == 1


def test_describeAndList(c):
    assert c.coordinator.describeGroup("nobody") == GroupDescription(E.NONE, "nobody", DEAD, "", "", [])
    assert c.coordinator.describeGroup(None).errorCode == E.INVALID_GROUP_ID
    a = c.join(client="a")
    described = c.coordinator.describeGroup("g")
    assert described.state == PREPARING_REBALANCE and described.protocol == ""
    assert described.members == [MemberDescription(described.members[0].memberId, None, "a", "/127.0.0.1", b"", b"")]
    c.advanceMs(3000)
    ra = fired(a)
    assert c.coordinator.describeGroup("g").state == COMPLETING_REBALANCE
    assert c.coordinator.describeGroup("g").members[0].metadata == b""
    fired(c.sync(ra.memberId, 1, {ra.memberId: b"assigned"}))
    assert c.coordinator.describeGroup("g").members == [
        MemberDescription(ra.memberId, None, "a", "/127.0.0.1", b"range-meta", b"assigned")
    ]
    fired(c.commit("", -1, {("t", 0): (1, -1, "", -1)}, group="simple"))
    assert c.coordinator.listGroups() == [GroupOverview("g", "consumer", STABLE), GroupOverview("simple", "", EMPTY)]
    assert c.coordinator.stats() == [GroupStats("g", STABLE, 1, 1, 1, 0), GroupStats("simple", EMPTY, 0, 0, 0, 1)]


def test_stopAnswersParkedRequests(c):
    a, b = c.join(client="a"), c.join(client="b")
    c.advanceMs(6000)
    ra, rb = fired(a), fired(b)
    follower = rb if rb.memberId != rb.leaderId else ra
    parkedSync = c.sync(follower.memberId, 1)
    parkedJoin = c.join(client="late", group="other")
    fired(c.join(requireKnown=True, group="pending"))
    c.coordinator.stop()
    assert fired(parkedSync) == SyncResult(E.NOT_COORDINATOR, b"")
    assert fired(parkedJoin).errorCode == E.NOT_COORDINATOR
    assert c.clock.getDelayedCalls() == []
    assert fired(c.join()).errorCode == E.COORDINATOR_NOT_AVAILABLE
    assert fired(c.commit("", -1, {("t", 0): (1, -1, "", -1)})) == {("t", 0): E.COORDINATOR_NOT_AVAILABLE}
    assert c.fetch([("t", 0)]) == (E.COORDINATOR_NOT_AVAILABLE, {})
