"""PostgreSQL storage and its cluster: two stores on one schema stand for two
brokers; an append commits only while its broker holds the partition's leader
epoch and an unexpired lease (kafkaw/broker/leases.py moves them)."""

import pytest
from zope.interface.verify import verifyObject

from kafkaw.broker.membership import IMembership, LocalMembership, groupCoordinator
from kafkaw.protocol.messages import decodeMessageSet, encodeMessageSet
from kafkaw.storage.interfaces import AclBinding, NotLeaderError, ScramCredential, StorageError
from kafkaw.storage.postgresql import NOT_LEADING, SCHEMA_VERSION, PostgreSQLStore, resolveDSN
from tests.postgresql import Schema
from tests.unit.helpers import ThreadResults


@pytest.fixture
def two(tmp_path):
    schema = Schema()
    threads = ThreadResults()
    stores = [PostgreSQLStore(schema.dsn, False, reactor=threads) for _ in range(2)]
    try:
        yield schema, threads, stores
    finally:
        for store in stores:
            threads.wait(store.close())
        schema.drop()


def lease(schema, broker, leaderOf=None, seconds=10):
    schema.execute(
        "INSERT INTO kafkaw_brokers VALUES (%s, 'h', 1, clock_timestamp() + %s * interval '1 second')"
        " ON CONFLICT (broker_id) DO UPDATE SET lease_until = excluded.lease_until",
        (broker, seconds),
    )
    if leaderOf is not None:
        return schema.execute(
            "UPDATE kafkaw_partitions SET leader = %s, leader_epoch = leader_epoch + 1 WHERE partition = %s RETURNING leader_epoch",
            (broker, leaderOf),
        )[0][0]


def append(threads, log, value):
    return threads.wait(log.append(encodeMessageSet([(None, value)], log.endOffset), 1, 1000))


def test_onlyTheHolderOfTheEpochAppends(two):
    schema, threads, (first, second) = two
    threads.wait(first.createTopic("t", 1))
    second.refreshTopics(schema.execute("SELECT id, name, partitions, configs FROM kafkaw_topics"))
    epoch = lease(schema, 1, leaderOf=0)
    old = first.partitionLog("t", 0)
    old.fence = (1, epoch)
    append(threads, old, b"by-1")
    # broker 2 takes the partition over: epoch + 1, and reads the log end broker 1 left
    newEpoch = lease(schema, 2, leaderOf=0)
    new = second.partitionLog("t", 0)
    assert threads.wait(second.reloadLog(new, (2, newEpoch))) is True
    assert new.endOffset == 1
    with pytest.raises(NotLeaderError):
        append(threads, old, b"stale")  # broker 1 still thinks it leads: refused in the database
    assert old.endOffset == 1
    append(threads, new, b"by-2")
    assert [m.value for m in decodeMessageSet(threads.wait(new.read(0, 1 << 20, 2)))] == [b"by-1", b"by-2"]
    with pytest.raises(NotLeaderError):
        threads.wait(old.deleteBefore(1))
    old.fence = NOT_LEADING
    with pytest.raises(NotLeaderError):
        append(threads, old, b"refused-before-writing")


def test_anExpiredLeaseAppendsNothing(two):
    schema, threads, (store, _) = two
    threads.wait(store.createTopic("t", 1))
    epoch = lease(schema, 1, leaderOf=0, seconds=-1)  # the lease is over: nobody took the partition yet
    log = store.partitionLog("t", 0)
    log.fence = (1, epoch)
    with pytest.raises(NotLeaderError):
        append(threads, log, b"late")
    lease(schema, 1, seconds=10)  # renewed, and still at the same epoch: it may append again
    append(threads, log, b"renewed")
    assert schema.execute("SELECT count(*) FROM kafkaw_batches")[0][0] == 1


def test_unfencedStoresStillRefuseAStaleLogEnd(two):
    """Without leases, the stored log end alone keeps two writers from both appending at one offset."""
    schema, threads, (first, second) = two
    threads.wait(first.createTopic("t", 1))
    second.refreshTopics(schema.execute("SELECT id, name, partitions, configs FROM kafkaw_topics"))
    append(threads, first.partitionLog("t", 0), b"a")
    with pytest.raises(StorageError):
        append(threads, second.partitionLog("t", 0), b"b")  # its view ends at 0


def test_topicsMadeOrDeletedByAnotherStoreAreTaken(two):
    schema, threads, (first, second) = two
    threads.wait(first.createTopic("t", 2, {"retention.ms": "5"}))
    rows = lambda: schema.execute("SELECT id, name, partitions, configs FROM kafkaw_topics")  # noqa: E731
    assert second.refreshTopics(rows()) == ["t"]
    assert second.topics() == {"t": 2} and second.topicConfigs("t") == {"retention.ms": "5"}
    assert second.partitionLog("t", 1).fence is NOT_LEADING  # until a lease round gives it a leader
    threads.wait(first.addPartitions("t", 3))
    assert second.refreshTopics(rows()) == ["t"]
    assert second.topics() == {"t": 3}
    assert second.refreshTopics(rows()) == []
    threads.wait(first.deleteTopic("t"))
    assert second.refreshTopics(rows()) == ["t"]
    assert second.topics() == {}


def test_schemaIsVersionedAndANewerOneIsRefused(two):
    schema, _, _ = two
    assert schema.execute("SELECT version FROM kafkaw_schema_version") == [(SCHEMA_VERSION,)]
    schema.execute("INSERT INTO kafkaw_schema_version VALUES (99)")
    with pytest.raises(StorageError, match="version 99"):
        PostgreSQLStore(schema.dsn, False, reactor=ThreadResults())


def test_aVersion1DatabaseGetsTheSecurityTablesAndKeepsItsData(two):
    """Version 2 only adds the ACL and credential tables (and their change count)."""
    schema, threads, (first, second) = two
    threads.wait(first.createTopic("kept", 1))
    threads.wait(first.close())
    threads.wait(second.close())
    schema.execute("DROP TABLE kafkaw_acls, kafkaw_scram_credentials")
    schema.execute("DELETE FROM kafkaw_settings WHERE name = 'security.version'")
    schema.execute("DELETE FROM kafkaw_schema_version")
    schema.execute("INSERT INTO kafkaw_schema_version VALUES (1)")  # as version 1 left it
    store = PostgreSQLStore(schema.dsn, False, reactor=threads)
    try:
        assert store.topics() == {"kept": 1} and store.acls() == frozenset() and store.scramCredentials() == {}
        assert max(row[0] for row in schema.execute("SELECT version FROM kafkaw_schema_version")) == SCHEMA_VERSION
        threads.wait(store.addAcls([READ]))
        threads.wait(store.setScramCredential("alice", "SCRAM-SHA-256", ALICE))
    finally:
        threads.wait(store.close())
    again = PostgreSQLStore(schema.dsn, False, reactor=threads)
    try:
        assert again.acls() == {READ} and again.scramCredentials() == {"alice": {"SCRAM-SHA-256": ALICE}}
    finally:
        threads.wait(again.close())


READ = AclBinding(2, "logs\x00", 3, "User:alice", "*", 3, 3)  # Kafka strings may hold NUL
ALICE = ScramCredential(b"salt", b"k" * 32, b"s" * 32, 4096)


def test_aclsAndUsersChangedByAnotherStoreAreReadWhenTheVersionMoved(two):
    schema, threads, (first, second) = two
    threads.wait(first.addAcls([READ]))
    threads.wait(first.setScramCredential("alice", "SCRAM-SHA-256", ALICE))
    assert second.acls() == frozenset() and second.scramCredentials() == {}
    (version,) = schema.execute("SELECT value::bigint FROM kafkaw_settings WHERE name = 'security.version'")[0]
    assert version == 2  # one per change
    assert threads.wait(first.refreshSecurity(version)) is False  # its own changes: nothing to read
    seen = second.acls()
    assert threads.wait(second.refreshSecurity(version)) is True
    assert second.acls() == {READ} and second.acls() is not seen
    assert second.scramCredential("alice", "SCRAM-SHA-256") == ALICE
    held = second.acls()
    threads.wait(first.removeAcls([READ]))
    threads.wait(first.deleteScramCredentials("alice"))
    threads.wait(second.refreshSecurity(version + 2))
    assert second.acls() == frozenset() and second.scramCredentials() == {}
    assert held == {READ}  # the set handed out earlier is not changed in place


def test_aChangeThroughOneBrokerReachesTheOtherAtOnce(two):
    """A lease round runs on the change's notification (not the next tick):
    the other broker's store shows the ACL and the user within seconds."""
    import time

    from twisted.internet import task

    from kafkaw.broker.leases import PostgreSQLMembership
    from kafkaw.broker.services import ClusterService

    schema, threads, (first, second) = two
    clock = task.Clock()  # never advanced: only notifications run rounds after the first
    clock.callFromThread = threads.callFromThread
    membership = PostgreSQLMembership(second, ClusterService(second, clock), 2, "h", 9092, 10000, clock)
    membership.startService()
    try:
        threads.settle(0.5)  # the first round, and the listener's
        threads.wait(first.addAcls([READ]))
        threads.wait(first.setScramCredential("alice", "SCRAM-SHA-256", ALICE))
        deadline = time.monotonic() + 5
        while (second.acls() != {READ} or second.scramCredential("alice", "SCRAM-SHA-256") != ALICE) and time.monotonic() < deadline:
            threads.settle(0.05)
        assert second.acls() == {READ}
        assert second.scramCredential("alice", "SCRAM-SHA-256") == ALICE
    finally:
        threads.wait(membership.stopService())


def test_unreachableDatabaseIsAStorageError():
    with pytest.raises(StorageError):
        PostgreSQLStore("host=127.0.0.1 port=1 connect_timeout=1", False, reactor=ThreadResults(), connectTimeout=1.0)


def test_dsnFromTheEnvironment(monkeypatch):
    monkeypatch.setenv("KAFKAW_POSTGRESQL_DSN", "host=db")
    assert resolveDSN(None) == "host=db"
    assert resolveDSN("host=other") == "host=other"


def test_localMembershipLeadsEverything():
    membership = LocalMembership(7)
    assert verifyObject(IMembership, membership)
    assert membership.leads("t", 3) and membership.leader("t", 3) == (7, 0)
    assert membership.brokers() == [(7, None, None)] and membership.coordinator("g") == 7


def test_groupCoordinatorsAreSpreadAndStable():
    ids = [1, 2, 3]
    chosen = {groupCoordinator(f"group-{n}", ids) for n in range(50)}
    assert chosen == {1, 2, 3}
    assert groupCoordinator("g", ids) == groupCoordinator("g", list(ids))
    assert groupCoordinator("g", []) == -1


def apply(partitions, moves):
    return [(t, p, moves.get((t, p), leader)) for t, p, leader in partitions]


def test_wantedLeadersSpreadEvenlyAndMoveOnlyWhatMust():
    from collections import Counter

    from kafkaw.broker.leases import wantedLeaders

    topic = [(7, p, None) for p in range(6)]
    placed = apply(topic, wantedLeaders(topic, [1, 2, 3]))
    assert sorted(Counter(leader for *_, leader in placed).values()) == [2, 2, 2]
    assert wantedLeaders(placed, [1, 2, 3]) == {}  # stable
    # broker 2 dies: only its two partitions move, one to each survivor
    moves = wantedLeaders(placed, [1, 3])
    assert {key for key, _ in moves.items()} == {(t, p) for t, p, leader in placed if leader == 2}
    after = apply(placed, moves)
    assert sorted(Counter(leader for *_, leader in after).values()) == [3, 3]
    # it comes back: it takes one from each
    moves = wantedLeaders(after, [1, 2, 3])
    assert sorted(moves.values()) == [2, 2]
    assert sorted(Counter(leader for *_, leader in apply(after, moves)).values()) == [2, 2, 2]
    assert wantedLeaders(after, []) == {}


def test_wantedLeadersSpreadSmallTopicsOverTheCluster():
    from collections import Counter

    from kafkaw.broker.leases import wantedLeaders

    topics = [(t, 0, None) for t in range(9)]
    placed = apply(topics, wantedLeaders(topics, [1, 2, 3]))
    assert Counter(leader for *_, leader in placed) == {1: 3, 2: 3, 3: 3}


def test_storageOptionTakesTypeAndArguments(tmp_path):
    from twisted.python import usage

    from kafkaw.tap import Options, makeService

    options = Options()
    options.parseOptions(["--storage", "postgresql:host=db dbname=kafka"])
    assert (options["storage-type"], options["storage-arguments"]) == ("postgresql", "host=db dbname=kafka")
    options = Options()
    options.parseOptions(["--storage", "leveldb"])
    assert (options["storage-type"], options["storage-arguments"]) == ("leveldb", None)
    with pytest.raises(usage.UsageError, match="unknown storage 'nosuch'"):
        Options().parseOptions(["--storage", "nosuch:x"])
    options = Options()
    options.parseOptions(["--storage", "leveldb:x", "--data-dir", str(tmp_path)])
    with pytest.raises(SystemExit, match="takes no arguments"):
        makeService(options)


def test_postgresqlMembershipProvidesTheInterface(two):
    from twisted.internet import task

    from kafkaw.broker.leases import PostgreSQLMembership
    from kafkaw.broker.services import ClusterService

    schema, threads, (store, _) = two
    threads.wait(store.createTopic("t", 2))
    clock = task.Clock()
    membership = PostgreSQLMembership(store, ClusterService(store, clock), 1, "h", 9092, 10000, clock)
    assert verifyObject(IMembership, membership)
    # nothing is led (nor appended) before a lease round says so
    assert not membership.leads("t", 0) and membership.leader("t", 0) == (-1, -1)
    assert store.partitionLog("t", 0).fence is NOT_LEADING
    with pytest.raises(NotLeaderError):
        append(threads, store.partitionLog("t", 0), b"early")
