"""Brokers sharing one PostgreSQL database: leases, leaders and fencing.

Every C{leaseMs / 5} each broker runs one transaction (in the store's writer
thread, serialized between brokers by an advisory lock) that:

  - renews its lease (C{kafkaw_brokers.lease_until}, the database's clock);
  - lists the live brokers (lease not over);
  - spreads each topic's partitions evenly over the live brokers, moving as
    few as it can (L{wantedLeaders}): a dead broker's partitions go to the
    least loaded live ones, and a broker that joins takes its share from
    those above theirs. A moved partition's row gets the new leader and
    leader epoch + 1 (its old leader, if live, is fenced at once and learns it
    at its own next round);
  - reads the topics table, so topics made on any broker are seen by all;
  - reads the C{security.version} setting: when another broker changed ACLs
    or SASL users, the store reads them again (L{PostgreSQLStore.refreshSecurity}).

A broker serves a partition only once it has read the partition's log end
and producer states as its previous leader left them (after the epoch moved,
so nothing more can be appended by it). Each append's statement checks, in
the same transaction, that the partition row still names this broker at this
epoch and that this broker's lease is not over, and locks the row: a broker
that lost its lease (paused, cut off from the database) can never append,
and answers NOT_LEADER_FOR_PARTITION (6). A broker also stops serving once
its own clock says its last renewal is older than the lease.

A clean stop deletes the broker's row and hands its partitions over in one
transaction; a killed broker's partitions move once its lease is over (at
most C{leaseMs} after its last renewal, plus one round of the others).

Groups are coordinated by the live broker the group id hashes to
(L{kafkaw.broker.membership.groupCoordinator}); committed offsets are in the
database, so a group's new coordinator reads them there.
"""

import collections
import threading

import psycopg
from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger
from zope.interface import implementer

from kafkaw.broker.membership import NO_LEADER, IMembership, groupCoordinator
from kafkaw.storage.interfaces import StorageError
from kafkaw.storage.postgresql import CHANGED_CHANNEL, NOT_LEADING, SECURITY_VERSION

DEFAULT_LEASE_MS = 10000
# Serializes the leadership rounds of all brokers.
_ROUND_LOCK = 0x6B61666B6177 + 1
# Rounds per lease.
_ROUNDS_PER_LEASE = 5


def wantedLeaders(partitions, live):
    """The leader changes that spread C{partitions} evenly over the C{live} broker ids, moving as few as can be.

    @param partitions: C{[(topic id, partition, current leader or None)]}.
    @return: C{{(topic id, partition): new leader}}, for the partitions that move.

    Each topic's partitions are spread evenly: every live broker gets
    C{P // n} of them, and C{P % n} brokers one more (those holding the most
    already, then those leading the fewest partitions of all topics, so small
    topics spread over the cluster too). A partition stays with its leader
    while that is live and within its share; the others (a dead or missing
    leader, or one over its share when a broker joins) go to the brokers
    below their share, the least loaded first.
    """
    if not live:
        return {}
    live = sorted(live)
    alive = set(live)
    byTopic = collections.defaultdict(list)
    for topicId, partition, leader in partitions:
        byTopic[topicId].append((partition, leader))
    load = collections.Counter()  # partitions led, over the topics placed so far
    moves = {}
    for topicId in sorted(byTopic):
        rows = sorted(byTopic[topicId])
        held = collections.Counter(leader for _, leader in rows if leader in alive)
        base, extra = divmod(len(rows), len(live))
        ranked = sorted(live, key=lambda broker: (-held[broker], load[broker], broker))
        share = {broker: base + (1 if rank < extra else 0) for rank, broker in enumerate(ranked)}
        kept = collections.Counter()
        orphans = []
        for partition, leader in rows:
            if leader in alive and kept[leader] < share[leader]:
                kept[leader] += 1
            else:
                orphans.append(partition)
        for partition in orphans:
            target = min((b for b in live if kept[b] < share[b]), key=lambda broker: (load[broker] + kept[broker], broker))
            kept[target] += 1
            moves[topicId, partition] = target
        load.update(kept)
    return moves


@implementer(IMembership)
class PostgreSQLMembership(service.Service):
    """This broker's view of the cluster, renewed every C{leaseMs / 5}."""

    _log = Logger()

    def __init__(self, store, cluster, brokerId, host, port, leaseMs, reactor, coordinator=None):
        self._store = store
        self._cluster = cluster
        self.brokerId = brokerId
        self._host = host
        self._port = port
        self.leaseMs = leaseMs
        self._reactor = reactor
        self._coordinator = coordinator
        self._live = []  # [(id, host, port)], as the last round read them
        self._liveIds = []
        self._leaders = {}  # (topic, partition) -> (leader id, epoch)
        self._leading = {}  # (topic, partition) -> epoch, of the partitions this broker serves
        self._loading = set()
        self._leaseUntil = 0.0  # reactor time when this broker's lease ends, as far as it knows
        self._loop = None
        self._round = None
        self._again = False  # another round was asked for while one was under way
        self._listening = None  # threading.Event set to stop the listener thread
        # Nothing is appended until a round says this broker leads it.
        store.fenceNewLogs = lambda log: NOT_LEADING
        store.topicMadeElsewhere = self._runRound
        for name, count in store.topics().items():
            for partition in range(count):
                store.partitionLog(name, partition).fence = NOT_LEADING

    # -- IMembership

    def brokers(self):
        # Before the first round (or after losing the database): at least this broker, so clients can ask again.
        return list(self._live) or [(self.brokerId, self._host, self._port)]

    def leader(self, topic, partition):
        return self._leaders.get((topic, partition), NO_LEADER)

    def leads(self, topic, partition):
        return (topic, partition) in self._leading and self._reactor.seconds() < self._leaseUntil

    def coordinator(self, groupId):
        return groupCoordinator(groupId, self._liveIds)

    # -- the rounds

    def startService(self):
        super().startService()
        self._loop = task.LoopingCall(self._runRound)
        self._loop.clock = self._reactor
        self._loop.start(self.leaseMs / 1000.0 / _ROUNDS_PER_LEASE, now=True)
        self._listening = threading.Event()
        threading.Thread(target=self._listen, args=(self._listening,), name="kafkaw-cluster-listener", daemon=True).start()

    def _listen(self, stop):
        """In a thread of its own: LISTEN for changes other brokers made (moved
        leaders, topics) and run a round at once, rather than at the next tick."""
        while not stop.is_set():
            try:
                with psycopg.connect(self._store.dsn, autocommit=True, connect_timeout=10) as connection:
                    connection.execute(f"LISTEN {CHANGED_CHANNEL}")
                    self._reactor.callFromThread(self._runRound)  # whatever changed while not listening
                    while not stop.is_set():
                        for _ in connection.notifies(timeout=1.0, stop_after=1):
                            self._reactor.callFromThread(self._runRound)
            except psycopg.Error as e:
                self._reactor.callFromThread(self._log.warn, "listening for cluster changes failed: {why}", why=str(e).strip())
                stop.wait(1.0)

    def stopService(self):
        super().stopService()
        if self._listening is not None:
            self._listening.set()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        waitFor = self._round if self._round is not None else defer.succeed(None)
        # Hand everything over at once: the others take it at their next round.
        d = waitFor.addBoth(lambda _: self._roundTrip(leaving=True))
        return d.addErrback(lambda reason: self._log.warn("handing partitions over failed: {why}", why=reason.getErrorMessage()))

    def _runRound(self):
        if not self.running:
            return
        if self._round is not None:
            self._again = True  # once the one under way is over
            return
        self._round = self._roundTrip(leaving=False)

        def done(_):
            self._round = None
            if self._again:
                self._again = False
                self._runRound()

        self._round.addErrback(self._roundFailed).addBoth(done)

    def _roundFailed(self, reason):
        if reason.check(StorageError):
            self._log.warn("leadership round failed: {why}", why=reason.getErrorMessage())
        else:
            self._log.failure("leadership round failed", reason)

    def _roundTrip(self, leaving):
        started = self._reactor.seconds()
        brokerId, host, port, leaseMs = self.brokerId, self._host, self._port, self.leaseMs

        def work(connection):
            connection.execute(f"SET LOCAL lock_timeout = {max(int(leaseMs / _ROUNDS_PER_LEASE), 100)}")
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (_ROUND_LOCK,))
            if leaving:
                connection.execute("DELETE FROM kafkaw_brokers WHERE broker_id = %s", (brokerId,))
            else:
                connection.execute(
                    "INSERT INTO kafkaw_brokers (broker_id, host, port, lease_until)"
                    " VALUES (%s, %s, %s, clock_timestamp() + %s * interval '1 millisecond')"
                    " ON CONFLICT (broker_id) DO UPDATE SET host = excluded.host, port = excluded.port,"
                    " lease_until = excluded.lease_until",
                    (brokerId, host, port, leaseMs),
                )
            live = connection.execute(
                "SELECT broker_id, host, port FROM kafkaw_brokers WHERE lease_until > clock_timestamp() ORDER BY broker_id"
            ).fetchall()
            ids = [row[0] for row in live]
            assignment = {}
            for topicId, partition, leader, epoch in connection.execute(
                "SELECT p.topic_id, p.partition, p.leader, p.leader_epoch FROM kafkaw_partitions p"
                " JOIN kafkaw_topics t ON t.id = p.topic_id AND p.partition < t.partitions"
            ):
                assignment[topicId, partition] = (leader, epoch)
            moves = [
                (topicId, partition, wanted)
                for (topicId, partition), wanted in sorted(
                    wantedLeaders([(t, p, leader) for (t, p), (leader, _) in assignment.items()], ids).items()
                )
            ]
            if moves:
                for topicId, partition, leader, epoch in connection.execute(
                    "UPDATE kafkaw_partitions p SET leader = m.leader, leader_epoch = p.leader_epoch + 1"
                    " FROM unnest(%s::bigint[], %s::integer[], %s::integer[]) AS m(topic_id, partition, leader)"
                    " WHERE p.topic_id = m.topic_id AND p.partition = m.partition"
                    " RETURNING p.topic_id, p.partition, p.leader, p.leader_epoch",
                    ([m[0] for m in moves], [m[1] for m in moves], [m[2] for m in moves]),
                ):
                    assignment[topicId, partition] = (leader, epoch)
            if moves or leaving:
                connection.execute(f"NOTIFY {CHANGED_CHANNEL}")  # the others take their partitions now
            topics = connection.execute("SELECT id, name, partitions, configs FROM kafkaw_topics ORDER BY id").fetchall()
            (security,) = connection.execute(SECURITY_VERSION).fetchone()
            return live, assignment, topics, len(moves), security

        d = self._store.write(work)
        if leaving:
            return d.addCallback(lambda result: self._stepDown())
        return d.addCallback(self._apply, started)

    def _stepDown(self):
        self._leaseUntil = 0.0
        for key in list(self._leading):
            self._stopLeading(key)

    def _apply(self, result, started):
        live, assignment, topics, moved, security = result
        self._leaseUntil = started + self.leaseMs / 1000.0
        self._store.refreshSecurity(security).addErrback(
            lambda reason: self._log.warn("reading ACLs and users failed: {why}", why=reason.getErrorMessage())
        )
        if [row[0] for row in live] != self._liveIds:
            self._log.info("live brokers: {brokers}", brokers=", ".join(f"{i} ({h}:{p})" for i, h, p in live))
        self._live = list(live)
        if [row[0] for row in live] != self._liveIds:
            self._liveIds = [row[0] for row in live]
            self._takeGroups()
        if moved:
            self._log.info("moved the leadership of {count} partitions", count=moved)
        if self._store.refreshTopics(topics):
            self._cluster.syncTopics()
        names = {topicId: name for topicId, name, _, _ in topics}
        leaders = {}
        for (topicId, partition), (leader, epoch) in assignment.items():
            name = names.get(topicId)
            if name is None:
                continue
            key = (name, partition)
            leaders[key] = (leader if leader in self._liveIds else -1, epoch)
            if leader == self.brokerId:
                if self._leading.get(key) != epoch and key not in self._loading:
                    self._startLeading(key, epoch)
            elif key in self._leading:
                self._stopLeading(key)
        for key in [key for key in self._leading if key not in leaders]:
            self._stopLeading(key)
        self._leaders = leaders

    def _takeGroups(self):
        """The live brokers changed, so some groups' coordinator did: read their committed offsets afresh."""
        if self._coordinator is None:
            return
        me = self.brokerId

        def loaded(committed):
            self._coordinator.takeStoredOffsets(committed, lambda groupId: self.coordinator(groupId) == me)

        def failed(reason):
            self._log.warn("reading committed offsets failed: {why}", why=reason.getErrorMessage())

        self._store.reloadCommittedOffsets().addCallbacks(loaded, failed)

    def _startLeading(self, key, epoch):
        name, partition = key
        self._leading.pop(key, None)
        try:
            log = self._store.partitionLog(name, partition)
        except (KeyError, IndexError):
            return
        self._loading.add(key)

        def loaded(ok):
            if ok and (not self.running or self._leaders.get(key) != (self.brokerId, epoch)):
                log.fence = NOT_LEADING  # moved again (or stopping) while it was read
                return
            if ok:
                self._cluster.reloadPartition(name, partition)
                self._leading[key] = epoch
                self._log.info(
                    "leading {topic}/{partition} at epoch {epoch} from offset {end}",
                    topic=name, partition=partition, epoch=epoch, end=log.endOffset,
                )

        def failed(reason):
            self._log.warn("taking over {topic}/{partition} failed: {why}", topic=name, partition=partition, why=reason.getErrorMessage())

        def done(result):
            self._loading.discard(key)
            return result

        self._store.reloadLog(log, (self.brokerId, epoch)).addCallbacks(loaded, failed).addBoth(done)

    def _stopLeading(self, key):
        name, partition = key
        self._leading.pop(key, None)
        try:
            self._store.partitionLog(name, partition).fence = NOT_LEADING
        except (KeyError, IndexError):
            pass
