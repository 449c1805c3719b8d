"""PostgreSQL storage (psycopg 3): brokers that share one database.

C{--storage postgresql:DSN} (a libpq connection string or URI; empty: the
C{KAFKAW_POSTGRESQL_DSN} environment variable, else libpq's own C{PG*}
variables and C{~/.pgpass}, so no password need show in a process list).

Tables (created on first open, version kept in C{kafkaw_schema_version}):

    kafkaw_settings          name -> value: the cluster id, security.version (changes of ACLs and users)
    kafkaw_producer_ids      a sequence: producer ids, never handed out twice
    kafkaw_topics            id (never reused), name, partition count, configs (jsonb)
    kafkaw_partitions        (topic id, partition) -> log start, log end, bytes stored,
                             last stored timestamp; leader broker and leader epoch
    kafkaw_batches           (topic id, partition, last offset) -> base offset, timestamp, bytes
    kafkaw_producer_states   (topic id, partition, producer id) -> state (opaque bytes)
    kafkaw_committed_offsets (group, topic name, partition) -> offset, epoch, metadata, time
                             (group, topic and metadata in UTF-8 bytes: Kafka strings may hold NUL)
    kafkaw_brokers           broker id -> advertised host and port, lease end (cluster.py)
    kafkaw_acls              one row per ACL (AclBinding; its strings in UTF-8 bytes)
    kafkaw_scram_credentials (user in UTF-8 bytes, mechanism) -> salt, stored key, server
                             key, iterations (SASL/SCRAM users)

Schema version 2 added the last two tables (a version 1 database gets them at
its first open by this kafkaw). Every change of ACLs or credentials adds one to
the C{security.version} setting in the same transaction and notifies
C{CHANGED_CHANNEL}: each broker's lease round (kafkaw/broker/leases.py) reads
that one number and, when it moved, reads the ACLs and credentials again, so a
user or ACL added through one broker reaches the others within a round (at
once, when the notification arrives), and no request waits for the database.

An append is one statement (a data-modifying CTE): it moves the partition's
log end only if the stored end is the one the append was numbered from (and,
when fenced, only if this broker still holds the partition's leader epoch),
and inserts the batch and producer states only if it did. Appends and offset
commits queued while the writer is busy are sent together in one pipeline and
one transaction (group commit). The partition row is locked by the append
until it commits, so a leadership change (an UPDATE of that row) waits for
it and the new leader reads the log end it left.

Batches are keyed by their last offset, so a Fetch is one index range read
from the batch holding the wanted offset. Retention deletes rows. Deleting a
topic deletes its rows and committed offsets in one transaction; topic ids are
never reused, so a topic made again under a name never sees the old rows.

Without C{--sync}, sessions run with C{synchronous_commit = off}: a killed
broker loses nothing acknowledged (the database has it), a crash of the
database server may lose the last few hundred milliseconds of commits.

All database calls run in threads (one writer, a few readers), each on a
connection from a psycopg_pool pool; the reactor never waits for the database.
"""

import json
import os

from psycopg import Error as DatabaseError
from psycopg import conninfo
from psycopg_pool import ConnectionPool, PoolTimeout
from twisted.internet import defer, threads
from twisted.logger import Logger
from twisted.plugin import IPlugin
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from kafkaw.storage.interfaces import (
    AclsHeld,
    AclBinding,
    CredentialsHeld,
    IAclStore,
    ICredentialStore,
    IPartitionLog,
    IStorageFactory,
    IStore,
    NotLeaderError,
    ScramCredential,
    StorageError,
    TopicsHeld,
    checkOffsetCommit,
    checkPartitions,
    countPending,
    forgetGroupOffsets,
    forgetTopicOffsets,
    newClusterId,
    readPieces,
    updateProducerStates,
)

DSN_ENVIRONMENT = "KAFKAW_POSTGRESQL_DSN"
SCHEMA_VERSION = 2
# Serializes schema creation (and, in cluster.py, leadership changes) between brokers.
SCHEMA_LOCK = 0x6B61666B6177  # "kafkaw"
# At most this many batches are read by one Fetch (it is cut at maxBytes anyway).
_READ_ROWS = 2000
# Connections: one writer, up to this many readers (plus the cluster's own).
_READERS = 4
_CONNECT_TIMEOUT = 10.0
# NOTIFY channel of the changes brokers sharing the database act on at once
# (topics made, grown or deleted; leaders moved): kafkaw/broker/leases.py.
CHANGED_CHANNEL = "kafkaw_changed"
# A transaction left idle this long (its broker paused) is ended by the server.
_IDLE_TRANSACTION_MS = 5000

_SCHEMA = """
CREATE TABLE kafkaw_settings (name text PRIMARY KEY, value text NOT NULL);
CREATE SEQUENCE kafkaw_producer_ids MINVALUE 0 START 0;
CREATE TABLE kafkaw_topics (
    id bigserial PRIMARY KEY,
    name text NOT NULL UNIQUE,
    partitions integer NOT NULL,
    configs json NOT NULL
);
CREATE TABLE kafkaw_partitions (
    topic_id bigint NOT NULL,
    partition integer NOT NULL,
    start_offset bigint NOT NULL DEFAULT 0,
    end_offset bigint NOT NULL DEFAULT 0,
    size_bytes bigint NOT NULL DEFAULT 0,
    last_timestamp bigint NOT NULL DEFAULT 0,
    leader integer,
    leader_epoch integer NOT NULL DEFAULT 0,
    PRIMARY KEY (topic_id, partition)
);
CREATE TABLE kafkaw_batches (
    topic_id bigint NOT NULL,
    partition integer NOT NULL,
    last_offset bigint NOT NULL,
    base_offset bigint NOT NULL,
    append_time bigint NOT NULL,
    data bytea NOT NULL,
    PRIMARY KEY (topic_id, partition, last_offset)
);
-- Clients compress their own batches: no second compression.
ALTER TABLE kafkaw_batches ALTER COLUMN data SET STORAGE EXTERNAL;
CREATE INDEX kafkaw_batches_by_time ON kafkaw_batches (topic_id, partition, append_time, base_offset);
CREATE TABLE kafkaw_producer_states (
    topic_id bigint NOT NULL,
    partition integer NOT NULL,
    producer_id bigint NOT NULL,
    state bytea NOT NULL,
    PRIMARY KEY (topic_id, partition, producer_id)
);
CREATE TABLE kafkaw_committed_offsets (
    group_id bytea NOT NULL,
    topic bytea NOT NULL,
    partition integer NOT NULL,
    committed_offset bigint NOT NULL,
    leader_epoch integer NOT NULL,
    metadata bytea,
    commit_timestamp bigint NOT NULL,
    PRIMARY KEY (group_id, topic, partition)
);
CREATE TABLE kafkaw_brokers (
    broker_id integer PRIMARY KEY,
    host text NOT NULL,
    port integer NOT NULL,
    lease_until timestamptz NOT NULL
);
"""

# Version 2: ACLs and SASL users (a version 1 database gets only these).
# Kafka strings may hold NUL, which text may not: they are kept as UTF-8 bytes.
_SECURITY_SCHEMA = """
CREATE TABLE kafkaw_acls (
    resource_type smallint NOT NULL,
    resource_name bytea NOT NULL,
    pattern_type smallint NOT NULL,
    principal bytea NOT NULL,
    host bytea NOT NULL,
    operation smallint NOT NULL,
    permission smallint NOT NULL,
    PRIMARY KEY (resource_type, resource_name, pattern_type, principal, host, operation, permission)
);
CREATE TABLE kafkaw_scram_credentials (
    user_name bytea NOT NULL,
    mechanism text NOT NULL,
    salt bytea NOT NULL,
    stored_key bytea NOT NULL,
    server_key bytea NOT NULL,
    iterations integer NOT NULL,
    PRIMARY KEY (user_name, mechanism)
);
INSERT INTO kafkaw_settings (name, value) VALUES ('security.version', '0');
"""

# Counts the changes of ACLs and credentials (in the transaction of each), so
# brokers sharing the database tell theirs are old from one number.
_BUMP_SECURITY_VERSION = (
    "UPDATE kafkaw_settings SET value = (value::bigint + 1)::text WHERE name = 'security.version' RETURNING value::bigint"
)
SECURITY_VERSION = "SELECT value::bigint FROM kafkaw_settings WHERE name = 'security.version'"

# One append: move the log end (fenced), then the batch and producer states,
# only if the end moved. Returns one row if stored.
_APPEND = """
WITH moved AS (
    UPDATE kafkaw_partitions
    SET end_offset = %(end)s, size_bytes = size_bytes + %(size)s, last_timestamp = %(time)s
    WHERE topic_id = %(topic)s AND partition = %(partition)s AND end_offset = %(base)s
      AND (%(fenced)s = false OR (leader = %(broker)s AND leader_epoch = %(epoch)s AND EXISTS (
          SELECT 1 FROM kafkaw_brokers WHERE broker_id = %(broker)s AND lease_until > clock_timestamp())))
    RETURNING 1
), batch AS (
    INSERT INTO kafkaw_batches (topic_id, partition, last_offset, base_offset, append_time, data)
    SELECT %(topic)s, %(partition)s, %(end)s - 1, %(base)s, %(time)s, %(data)s FROM moved
), states AS (
    INSERT INTO kafkaw_producer_states (topic_id, partition, producer_id, state)
    SELECT %(topic)s, %(partition)s, id, state FROM moved, unnest(%(ids)s::bigint[], %(states)s::bytea[]) AS u(id, state)
    ON CONFLICT (topic_id, partition, producer_id) DO UPDATE SET state = excluded.state
), forgotten AS (
    DELETE FROM kafkaw_producer_states
    WHERE topic_id = %(topic)s AND partition = %(partition)s AND producer_id = ANY(%(forget)s::bigint[])
      AND EXISTS (SELECT 1 FROM moved)
)
SELECT count(*) FROM moved
"""

_COMMIT_OFFSET = """
INSERT INTO kafkaw_committed_offsets
    (group_id, topic, partition, committed_offset, leader_epoch, metadata, commit_timestamp)
VALUES (%s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (group_id, topic, partition) DO UPDATE SET
    committed_offset = excluded.committed_offset, leader_epoch = excluded.leader_epoch,
    metadata = excluded.metadata, commit_timestamp = excluded.commit_timestamp
"""


class _MadeElsewhere(StorageError):
    """Another broker sharing the database made the topic first."""


def resolveDSN(arguments):
    """The connection string of C{--storage postgresql:ARGS}: ARGS, else the environment's."""
    if arguments:
        return arguments
    return os.environ.get(DSN_ENVIRONMENT, "")


def _utf8(text):
    return None if text is None else text.encode("utf-8")


def _describe(error):
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _text(data):
    return bytes(data).decode("utf-8")


def _loadSecurity(connection):
    """C{(security.version, ACLs, SCRAM credentials)} as stored: the version is
    read first, so the rows are at least as new as it says."""
    (version,) = connection.execute(SECURITY_VERSION).fetchone()
    acls = frozenset(
        AclBinding(resourceType, _text(name), patternType, _text(principal), _text(host), operation, permission)
        for resourceType, name, patternType, principal, host, operation, permission in connection.execute(
            "SELECT resource_type, resource_name, pattern_type, principal, host, operation, permission FROM kafkaw_acls"
        )
    )
    credentials = {}
    for user, mechanism, salt, storedKey, serverKey, iterations in connection.execute(
        "SELECT user_name, mechanism, salt, stored_key, server_key, iterations FROM kafkaw_scram_credentials"
    ):
        credentials.setdefault(_text(user), {})[mechanism] = ScramCredential(
            bytes(salt), bytes(storedKey), bytes(serverKey), iterations
        )
    return version, acls, credentials


class _Topic:
    def __init__(self, name, topicId, logs, configs):
        self.name = name
        self.id = topicId
        self.logs = logs
        self.configs = configs
        self.partitions = len(logs)  # once the additions asked for are stored
        self.deleted = False


@implementer(IPartitionLog)
class PostgreSQLPartitionLog:
    """One partition's rows. What is in memory is what this broker last stored or loaded.

    C{fence}: C{None} (a single broker: the stored log end alone guards
    appends), else C{(brokerId, leaderEpoch)} this broker holds, or
    L{NOT_LEADING}: appends fail with L{NotLeaderError} before any write.
    """

    def __init__(self, store, topicId, partition, startOffset=0, endOffset=0, sizeBytes=0, lastTimestamp=0):
        self._store = store
        self.topicId = topicId
        self.partition = partition
        self.startOffset = startOffset
        self.endOffset = endOffset
        self.sizeBytes = sizeBytes
        self._lastTimestamp = lastTimestamp
        self._producerStates = {}
        self._deleted = None
        self.fence = None

    def _refused(self):
        return defer.fail(StorageError(f"topic {self._deleted!r} was deleted"))

    def _delete(self, name):
        self._deleted = name
        self._producerStates = {}

    def _load(self, row, producerStates):
        """Take the stored bounds and producer states (at open, or when this broker becomes the leader)."""
        self.startOffset, self.endOffset, self.sizeBytes, self._lastTimestamp = row
        self._producerStates = dict(producerStates)

    def _fenceArguments(self):
        if self.fence is None:
            return {"fenced": False, "broker": None, "epoch": None}
        if self.fence is NOT_LEADING:
            raise NotLeaderError(f"this broker does not lead partition {self.partition} of topic id {self.topicId}")
        broker, epoch = self.fence
        return {"fenced": True, "broker": broker, "epoch": epoch}

    def append(self, messageSet, count, timestamp, producerStates=None):
        if self._deleted is not None:
            return self._refused()
        try:
            fence = self._fenceArguments()
        except NotLeaderError as e:
            return defer.fail(e)
        base = self.endOffset
        timestamp = max(timestamp, self._lastTimestamp)
        producerStates = dict(producerStates or {})
        kept = {producerId: bytes(state) for producerId, state in producerStates.items() if state is not None}
        arguments = dict(
            fence,
            topic=self.topicId,
            partition=self.partition,
            base=base,
            end=base + count,
            size=len(messageSet),
            time=timestamp,
            data=bytes(messageSet),
            ids=list(kept),
            states=list(kept.values()),
            forget=[producerId for producerId, state in producerStates.items() if state is None],
        )

        def write(cursor):
            if self._deleted is not None:
                raise StorageError(f"topic {self._deleted!r} was deleted")
            cursor.execute(_APPEND, arguments)
            return cursor

        def stored(row):
            (moved,) = row
            if not moved:
                raise NotLeaderError(
                    f"append to partition {self.partition} of topic id {self.topicId} refused: "
                    "this broker lost its leadership (or its lease), or another wrote the log"
                )
            if self._deleted is not None:
                return
            self.endOffset = base + count
            self.sizeBytes += len(messageSet)
            self._lastTimestamp = max(self._lastTimestamp, timestamp)
            updateProducerStates(self._producerStates, producerStates)

        return self._store.groupWrite(write, stored)

    def producerStates(self):
        return dict(self._producerStates)

    def _key(self):
        return {"topic": self.topicId, "partition": self.partition}

    def read(self, offset, maxBytes, endOffset):
        if self._deleted is not None:
            return self._refused()
        arguments = dict(self._key(), offset=max(offset, 0), stop=endOffset, rows=_READ_ROWS, maxBytes=max(maxBytes, 0))

        def read(connection):
            if maxBytes <= 0:
                return b""
            rows = connection.execute(
                """
                SELECT data FROM (
                    SELECT data, sum(octet_length(data)) OVER (ORDER BY last_offset) - octet_length(data) AS before
                    FROM (SELECT last_offset, data FROM kafkaw_batches
                          WHERE topic_id = %(topic)s AND partition = %(partition)s
                            AND last_offset >= %(offset)s AND last_offset < %(stop)s
                          ORDER BY last_offset LIMIT %(rows)s) AS range
                ) AS sized WHERE before < %(maxBytes)s
                """,
                arguments,
                prepare=True,
            ).fetchall()
            pieces, total = readPieces((row[0] for row in rows), offset, maxBytes)
            if pieces and total > maxBytes:
                pieces[-1] = pieces[-1][: len(pieces[-1]) - (total - maxBytes)]
            return pieces[0] if len(pieces) == 1 else b"".join(pieces)

        return self._store.read(read)

    def batchesBefore(self, timestamp, maxNumber):
        if self._deleted is not None:
            return self._refused()
        arguments = dict(self._key(), time=timestamp, limit=max(maxNumber, 0))

        def scan(connection):
            rows = connection.execute(
                """
                SELECT base_offset FROM kafkaw_batches
                WHERE topic_id = %(topic)s AND partition = %(partition)s AND append_time <= %(time)s
                ORDER BY append_time DESC, base_offset DESC LIMIT %(limit)s
                """,
                arguments,
            ).fetchall()
            return [row[0] for row in rows]

        return self._store.read(scan)

    def firstBatchSince(self, timestamp):
        if self._deleted is not None:
            return self._refused()
        arguments = dict(self._key(), time=timestamp)

        def seek(connection):
            row = connection.execute(
                """
                SELECT base_offset FROM kafkaw_batches
                WHERE topic_id = %(topic)s AND partition = %(partition)s AND append_time >= %(time)s
                ORDER BY append_time, base_offset LIMIT 1
                """,
                arguments,
            ).fetchone()
            return None if row is None else row[0]

        return self._store.read(seek)

    def oldestBatches(self, maxNumber):
        if self._deleted is not None:
            return self._refused()
        start = self.startOffset
        arguments = dict(self._key(), start=start, end=self.endOffset, limit=max(maxNumber, 0))

        def scan(connection):
            rows = connection.execute(
                """
                SELECT last_offset, octet_length(data) FROM kafkaw_batches
                WHERE topic_id = %(topic)s AND partition = %(partition)s
                  AND last_offset >= %(start)s AND last_offset < %(end)s
                ORDER BY last_offset LIMIT %(limit)s
                """,
                arguments,
            ).fetchall()
            batches, base = [], start
            for lastOffset, size in rows:
                batches.append((base, lastOffset + 1, size))
                base = lastOffset + 1
            return batches

        return self._store.read(scan)

    def deleteBefore(self, offset):
        if self._deleted is not None:
            return self._refused()
        if offset > self.endOffset:
            return defer.fail(ValueError(f"cannot delete below {offset}: the log ends at {self.endOffset}"))
        if offset <= self.startOffset:
            return defer.succeed(None)
        try:
            fence = self._fenceArguments()
        except NotLeaderError as e:
            return defer.fail(e)
        self.startOffset = offset
        arguments = dict(fence, **self._key(), offset=offset)

        def write(connection):
            if self._deleted is not None:
                return None
            row = connection.execute(
                """
                WITH gone AS (
                    DELETE FROM kafkaw_batches
                    WHERE topic_id = %(topic)s AND partition = %(partition)s AND last_offset < %(offset)s
                    RETURNING octet_length(data) AS size
                )
                UPDATE kafkaw_partitions
                SET start_offset = greatest(start_offset, %(offset)s),
                    size_bytes = size_bytes - (SELECT coalesce(sum(size), 0) FROM gone)
                WHERE topic_id = %(topic)s AND partition = %(partition)s
                  AND (%(fenced)s = false OR (leader = %(broker)s AND leader_epoch = %(epoch)s))
                RETURNING size_bytes
                """,
                arguments,
            ).fetchone()
            if row is None:
                # Not the leader any more: the transaction rolls back, nothing is deleted.
                raise NotLeaderError(f"retention of partition {self.partition} of topic id {self.topicId} refused: not the leader")
            return row[0]

        def stored(size):
            if size is not None and self._deleted is None:
                self.sizeBytes = size

        return self._store.write(write).addCallback(stored)


NOT_LEADING = object()


@implementer(IStore, IAclStore, ICredentialStore)
class PostgreSQLStore(CredentialsHeld, AclsHeld, TopicsHeld):
    """Every topic of a cluster, as one broker sees it, in one PostgreSQL database."""

    _log = Logger()

    def __init__(self, dsn, sync, reactor=None, readers=_READERS, idleTransactionMs=_IDLE_TRANSACTION_MS,
                 connectTimeout=_CONNECT_TIMEOUT):
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        self.sync = bool(sync)
        self.idleTransactionMs = idleTransactionMs
        try:
            self.dsn = conninfo.make_conninfo(dsn, application_name="kafkaw")
        except DatabaseError as e:
            raise StorageError(f"bad PostgreSQL connection string: {_describe(e)}") from None
        self.pool = ConnectionPool(
            self.dsn,
            min_size=1,
            max_size=readers + 3,  # the writer, the readers, the cluster's leases, one spare
            open=False,
            configure=self._configure,
            name="kafkaw",
        )
        try:
            self.pool.open(wait=True, timeout=connectTimeout)
            with self.pool.connection() as connection:
                self._createSchema(connection)
                self._clusterId = self._loadClusterId(connection)
                self._topics = self._loadTopics(connection)
                self._offsets = self._loadCommittedOffsets(connection)
                self._securityVersion, self._acls, self._scramCredentials = _loadSecurity(connection)
        except (PoolTimeout, DatabaseError) as e:
            self.pool.close()
            raise StorageError(f"cannot open PostgreSQL storage ({conninfo.conninfo_to_dict(self.dsn).get('host', 'local socket')}): {_describe(e)}") from None
        self._pendingCommits = {}
        self._creating = set()  # names of topics whose creation is not stored yet
        self._writer = ThreadPool(1, 1, "kafkaw-postgresql-writer")
        self._readers = ThreadPool(1, readers, "kafkaw-postgresql-reader")
        self._writer.start()
        self._readers.start()
        self._outstanding = set()
        self._closing = None
        self._queued = []  # [(write, stored, solo, Deferred)] of the next group write
        self._writing = False
        # Set by a cluster sharing the database (kafkaw/broker/leases.py): the
        # fence of the logs of topics this store makes or grows, and what to
        # call when a topic it tried to make was made by another broker.
        self.fenceNewLogs = None
        self.topicMadeElsewhere = None

    def _configure(self, connection):
        connection.autocommit = True
        if not self.sync:
            connection.execute("SET synchronous_commit = off")
        # A broker stopped (SIGSTOP, a long pause) inside a transaction must
        # not hold the partition rows it locked: the server ends it.
        connection.execute(f"SET idle_in_transaction_session_timeout = {int(self.idleTransactionMs)}")

    # -- opening ------------------------------------------------------------

    def _createSchema(self, connection):
        """Create the tables at the first open; refuse a database of a newer kafkaw."""
        with connection.transaction():
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            connection.execute("CREATE TABLE IF NOT EXISTS kafkaw_schema_version (version integer NOT NULL)")
            row = connection.execute("SELECT max(version) FROM kafkaw_schema_version").fetchone()
            version = row[0] or 0
            if version > SCHEMA_VERSION:
                raise StorageError(f"the database holds kafkaw schema version {version}; this kafkaw knows up to {SCHEMA_VERSION}")
            if version < 1:
                connection.execute(_SCHEMA)
                connection.execute(
                    "INSERT INTO kafkaw_settings (name, value) VALUES ('cluster.id', %s)", (newClusterId(),)
                )
            if version < 2:
                connection.execute(_SECURITY_SCHEMA)
            if version < SCHEMA_VERSION:
                connection.execute("INSERT INTO kafkaw_schema_version (version) VALUES (%s)", (SCHEMA_VERSION,))

    def _loadClusterId(self, connection):
        return connection.execute("SELECT value FROM kafkaw_settings WHERE name = 'cluster.id'").fetchone()[0]

    def _loadTopics(self, connection):
        topics = {}
        for topicId, name, partitions, configs in connection.execute(
            "SELECT id, name, partitions, configs FROM kafkaw_topics ORDER BY id"
        ):
            logs = [PostgreSQLPartitionLog(self, topicId, p) for p in range(partitions)]
            topics[name] = _Topic(name, topicId, logs, dict(configs))
        byId = {topic.id: topic for topic in topics.values()}
        for topicId, partition, *bounds in connection.execute(
            "SELECT topic_id, partition, start_offset, end_offset, size_bytes, last_timestamp FROM kafkaw_partitions"
        ):
            topic = byId.get(topicId)
            if topic is not None and partition < len(topic.logs):
                topic.logs[partition]._load(bounds, {})
        for topicId, partition, producerId, state in connection.execute(
            "SELECT topic_id, partition, producer_id, state FROM kafkaw_producer_states"
        ):
            topic = byId.get(topicId)
            if topic is not None and partition < len(topic.logs):
                topic.logs[partition]._producerStates[producerId] = bytes(state)
        return topics

    def _loadCommittedOffsets(self, connection):
        offsets = {}
        for group, topic, partition, offset, epoch, metadata, timestamp in connection.execute(
            "SELECT group_id, topic, partition, committed_offset, leader_epoch, metadata, commit_timestamp"
            " FROM kafkaw_committed_offsets"
        ):
            metadata = None if metadata is None else bytes(metadata).decode("utf-8")
            offsets.setdefault(bytes(group).decode("utf-8"), {})[(bytes(topic).decode("utf-8"), partition)] = (
                offset, epoch, metadata, timestamp
            )
        return offsets

    # -- threads ------------------------------------------------------------

    def _run(self, pool, function):
        if self._closing is not None:
            return defer.fail(StorageError("the store is closing"))
        d = threads.deferToThreadPool(self._reactor, pool, function)
        self._outstanding.add(d)

        def done(result):
            self._outstanding.discard(d)
            if isinstance(result, Failure) and result.check(DatabaseError, PoolTimeout):
                return Failure(StorageError(f"PostgreSQL: {_describe(result.value)}"))
            return result

        return d.addBoth(done)

    def _withConnection(self, function, transaction):
        def call():
            with self.pool.connection(timeout=_CONNECT_TIMEOUT) as connection:
                if not transaction:
                    return function(connection)
                with connection.transaction():
                    return function(connection)

        return call

    def read(self, function):
        """Run C{function(connection)} in a reader thread (autocommit)."""
        return self._run(self._readers, self._withConnection(function, False))

    def write(self, function):
        """Run C{function(connection)} in the writer thread, in a transaction of its own, in call order."""
        return self.groupWrite(None, None, solo=function)

    def groupWrite(self, write, stored, solo=None):
        """Queue a write for the writer thread; return a Deferred of C{stored}'s result.

        C{write(cursor)} runs in the writer thread with every write queued
        meanwhile, in one pipeline and one transaction: if that transaction
        fails, every write in it fails. C{stored(row)} then runs on the
        reactor for each, in call order, with the first row its statement
        returned (C{None} if none). A C{solo} write (C{solo(connection)})
        runs in a transaction of its own, after the ones queued before it.
        """
        if self._closing is not None:
            return defer.fail(StorageError("the store is closing"))
        d = defer.Deferred()
        self._queued.append((write, stored, solo, d))
        if not self._writing:
            self._writeQueued()
        return d

    def _writeQueued(self):
        if not self._queued:
            self._writing = False
            return
        self._writing = True
        # Grouped writes up to the next solo one, or the solo one alone.
        if self._queued[0][2] is not None:
            items, self._queued = self._queued[:1], self._queued[1:]
            solo = items[0][2]
            work = self._withConnection(solo, True)
        else:
            end = next((i for i, item in enumerate(self._queued) if item[2] is not None), len(self._queued))
            items, self._queued = self._queued[:end], self._queued[end:]
            writes = [item[0] for item in items]

            def work():
                with self.pool.connection(timeout=_CONNECT_TIMEOUT) as connection:
                    with connection.transaction(), connection.pipeline():
                        cursors = [write(connection.cursor()) for write in writes]
                    # Each write's first row (if it returns any), read while the connection is this thread's.
                    return [cursor.fetchone() if cursor.description else None for cursor in cursors]

        d = threads.deferToThreadPool(self._reactor, self._writer, work)
        self._outstanding.add(d)

        def done(result):
            self._outstanding.discard(d)
            if isinstance(result, Failure) and result.check(DatabaseError, PoolTimeout):
                result = Failure(StorageError(f"PostgreSQL write failed: {_describe(result.value)}"))
            if items[0][2] is not None:
                items[0][3].callback(result) if not isinstance(result, Failure) else items[0][3].errback(result)
            else:
                for index, (_, stored, _, waiter) in enumerate(items):
                    if isinstance(result, Failure):
                        waiter.errback(result)
                        continue
                    try:
                        value = stored(result[index])
                    except Exception:
                        waiter.errback(Failure())
                    else:
                        waiter.callback(value)
            self._writeQueued()

        d.addBoth(done)

    @property
    def closing(self):
        return self._closing is not None

    # -- IStore -------------------------------------------------------------

    def createTopic(self, name, partitions, configs=None):
        if name in self._topics or name in self._creating:
            return defer.fail(StorageError(f"topic {name!r} exists"))
        configs = dict(configs or {})
        self._creating.add(name)  # the name is taken at once; the topic is shown once stored

        def write(connection):
            row = connection.execute(
                "INSERT INTO kafkaw_topics (name, partitions, configs) VALUES (%s, %s, %s)"
                " ON CONFLICT (name) DO NOTHING RETURNING id",
                (name, partitions, json.dumps(configs)),
            ).fetchone()
            if row is None:
                raise _MadeElsewhere(f"topic {name!r} exists (made by another broker)")
            connection.execute(
                "INSERT INTO kafkaw_partitions (topic_id, partition) SELECT %s, generate_series(0, %s - 1)",
                (row[0], partitions),
            )
            connection.execute(f"NOTIFY {CHANGED_CHANNEL}")
            return row[0]

        def stored(topicId):
            logs = [PostgreSQLPartitionLog(self, topicId, p) for p in range(partitions)]
            self._newLogs(logs)
            self._topics[name] = _Topic(name, topicId, logs, configs)

        def finished(result):
            self._creating.discard(name)
            if isinstance(result, Failure) and result.check(_MadeElsewhere) and self.topicMadeElsewhere is not None:
                self.topicMadeElsewhere()  # take it now, not at the next round
            return result

        return self.write(write).addCallback(stored).addBoth(finished)

    def _newLogs(self, logs):
        """Logs this store just made: fenced as the cluster says (see cluster.py)."""
        fence = self.fenceNewLogs
        for log in logs:
            log.fence = None if fence is None else fence(log)

    # -- a cluster sharing the database (kafkaw/broker/leases.py) -------------

    def refreshTopics(self, rows):
        """Take the topics table as just read: C{[(id, name, partitions, configs)]}.

        Called on the reactor with rows read in the writer thread, so a topic
        this store created is either in C{rows} or not stored yet. Topics
        other brokers made come with logs that refuse appends until
        L{reloadLog} (this broker becomes their leader). Returns the names of
        topics gone, made or grown.
        """
        changed = []
        listed = set()
        for topicId, name, partitions, configs in rows:
            listed.add(name)
            if name in self._creating:
                continue
            topic = self._topics.get(name)
            if topic is not None and topic.id != topicId:  # deleted and made again by another broker
                self._forget(topic)
                topic = None
            if topic is None:
                logs = [PostgreSQLPartitionLog(self, topicId, p) for p in range(partitions)]
                for log in logs:
                    log.fence = NOT_LEADING
                self._topics[name] = _Topic(name, topicId, logs, dict(configs))
                changed.append(name)
            elif partitions > len(topic.logs) and topic.partitions <= partitions:
                new = [PostgreSQLPartitionLog(self, topicId, p) for p in range(len(topic.logs), partitions)]
                for log in new:
                    log.fence = NOT_LEADING
                topic.logs.extend(new)
                topic.partitions = partitions
                changed.append(name)
        for name in [name for name in self._topics if name not in listed]:
            self._forget(self._topics[name])
            changed.append(name)
        return changed

    def _forget(self, topic):
        """Another broker deleted C{topic}: drop it here (its rows are gone already)."""
        del self._topics[topic.name]
        topic.deleted = True
        for log in topic.logs:
            log._delete(topic.name)
        forgetTopicOffsets(self._offsets, topic.name)

    def reloadLog(self, log, fence):
        """Read C{log}'s bounds and producer states as stored, then fence its appends with C{fence}.

        Run in the writer thread: after every append this store queued, so
        what it reads is what the previous leader (or this broker) left.
        """
        key = (log.topicId, log.partition)

        def read(connection):
            bounds = connection.execute(
                "SELECT start_offset, end_offset, size_bytes, last_timestamp FROM kafkaw_partitions"
                " WHERE topic_id = %s AND partition = %s",
                key,
            ).fetchone()
            states = connection.execute(
                "SELECT producer_id, state FROM kafkaw_producer_states WHERE topic_id = %s AND partition = %s", key
            ).fetchall()
            return bounds, {producerId: bytes(state) for producerId, state in states}

        def loaded(result):
            bounds, states = result
            if bounds is None or log._deleted is not None:
                return False
            log._load(bounds, states)
            log.fence = fence
            return True

        return self.write(read).addCallback(loaded)

    def addPartitions(self, name, count):
        topic = self._topics.get(name)
        if topic is None:
            return defer.fail(StorageError(f"no topic {name!r}"))
        if count <= topic.partitions:
            return defer.fail(ValueError(f"topic {name!r} has {topic.partitions} partitions: cannot grow to {count}"))
        old, topic.partitions = topic.partitions, count

        def write(connection):
            if topic.deleted:
                raise StorageError(f"topic {name!r} was deleted")
            connection.execute("UPDATE kafkaw_topics SET partitions = %s WHERE id = %s", (count, topic.id))
            connection.execute(
                "INSERT INTO kafkaw_partitions (topic_id, partition) SELECT %s, generate_series(%s, %s - 1)"
                " ON CONFLICT DO NOTHING",
                (topic.id, old, count),
            )
            connection.execute(f"NOTIFY {CHANGED_CHANNEL}")

        def stored(_):
            if not topic.deleted:
                new = [PostgreSQLPartitionLog(self, topic.id, p) for p in range(len(topic.logs), count)]
                self._newLogs(new)
                topic.logs.extend(new)

        def failed(reason):
            topic.partitions = len(topic.logs)
            return reason

        return self.write(write).addCallbacks(stored, failed)

    def deleteTopic(self, name):
        topic = self._topics.get(name)
        if topic is None:
            return defer.fail(StorageError(f"no topic {name!r}"))
        del self._topics[name]
        topic.deleted = True
        for log in topic.logs:
            log._delete(name)
        topicId = topic.id

        def write(connection):
            for table in ("kafkaw_batches", "kafkaw_producer_states", "kafkaw_partitions"):
                connection.execute(f"DELETE FROM {table} WHERE topic_id = %s", (topicId,))
            deleted = connection.execute("DELETE FROM kafkaw_topics WHERE id = %s", (topicId,)).rowcount
            if deleted:
                connection.execute("DELETE FROM kafkaw_committed_offsets WHERE topic = %s", (_utf8(name),))
                connection.execute(f"NOTIFY {CHANGED_CHANNEL}")
            return deleted

        def stored(deleted):
            if deleted:
                forgetTopicOffsets(self._offsets, name)

        return self.write(write).addCallback(stored)

    def allocateProducerId(self):
        return self.read(lambda connection: connection.execute("SELECT nextval('kafkaw_producer_ids')").fetchone()[0])

    def commitOffsets(self, group, offsets):
        try:
            offsets = checkOffsetCommit(group, offsets)
        except ValueError as e:
            return defer.fail(e)
        if not offsets:
            return defer.succeed(None)
        rows = [
            (_utf8(group), _utf8(topic), partition, offset, epoch, _utf8(metadata), timestamp)
            for (topic, partition), (offset, epoch, metadata, timestamp) in offsets.items()
        ]

        def write(cursor):
            cursor.executemany(_COMMIT_OFFSET, rows)
            return cursor

        def stored(_):
            self._offsets.setdefault(group, {}).update(offsets)

        return countPending(self._pendingCommits, group, self.groupWrite(write, stored))

    def committedOffsets(self):
        return {group: dict(offsets) for group, offsets in self._offsets.items()}

    def reloadCommittedOffsets(self):
        """Read every group's committed offsets again (a coordinator that took groups over)."""
        def load(connection):
            return self._loadCommittedOffsets(connection)

        def loaded(offsets):
            self._offsets = offsets
            return self.committedOffsets()

        return self.read(load).addCallback(loaded)

    def deleteGroupOffsets(self, group, partitions=None):
        try:
            partitions = checkPartitions(partitions)
        except ValueError as e:
            return defer.fail(e)
        if group not in self._offsets and group not in self._pendingCommits:
            return defer.succeed(None)

        def write(connection):
            if partitions is None:
                connection.execute("DELETE FROM kafkaw_committed_offsets WHERE group_id = %s", (_utf8(group),))
            elif partitions:
                connection.execute(
                    "DELETE FROM kafkaw_committed_offsets WHERE group_id = %s"
                    " AND (topic, partition) IN (SELECT * FROM unnest(%s::bytea[], %s::integer[]))",
                    (_utf8(group), [_utf8(t) for t, _ in partitions], [p for _, p in partitions]),
                )

        return self.write(write).addCallback(lambda _: forgetGroupOffsets(self._offsets, group, partitions))

    # -- ACLs (IAclStore) and SASL users (ICredentialStore) -------------------

    def _storeAcls(self, bindings, adding):
        rows = [
            (b.resourceType, _utf8(b.resourceName), b.patternType, _utf8(b.principal), _utf8(b.host), b.operation, b.permission)
            for b in bindings
        ]
        if adding:
            statement = (
                "INSERT INTO kafkaw_acls (resource_type, resource_name, pattern_type, principal, host, operation, permission)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
            )
        else:
            statement = (
                "DELETE FROM kafkaw_acls WHERE resource_type = %s AND resource_name = %s AND pattern_type = %s"
                " AND principal = %s AND host = %s AND operation = %s AND permission = %s"
            )

        return self._writeSecurity(lambda cursor: cursor.executemany(statement, rows))

    def _storeCredential(self, user, mechanism, credential):
        row = (_utf8(user), mechanism, credential.salt, credential.storedKey, credential.serverKey, credential.iterations)
        return self._writeSecurity(lambda cursor: cursor.execute(
            "INSERT INTO kafkaw_scram_credentials (user_name, mechanism, salt, stored_key, server_key, iterations)"
            " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (user_name, mechanism) DO UPDATE SET"
            " salt = excluded.salt, stored_key = excluded.stored_key, server_key = excluded.server_key,"
            " iterations = excluded.iterations",
            row,
        ))

    def _deleteCredentials(self, user, mechanisms):
        return self._writeSecurity(lambda cursor: cursor.execute(
            "DELETE FROM kafkaw_scram_credentials WHERE user_name = %s AND mechanism = ANY(%s)", (_utf8(user), mechanisms)
        ))

    def _writeSecurity(self, write):
        """Run C{write(cursor)} with the bump of C{security.version} and a
        notification to the other brokers, in one transaction of its own: a
        Deferred firing with C{None} once committed."""

        def transaction(connection):
            write(connection.cursor())
            (version,) = connection.execute(_BUMP_SECURITY_VERSION).fetchone()
            connection.execute(f"NOTIFY {CHANGED_CHANNEL}")
            return version

        def written(version):
            if version == self._securityVersion + 1:
                self._securityVersion = version  # else another broker changed them too: the next refresh reads all

        return self.write(transaction).addCallback(written)

    def refreshSecurity(self, version):
        """Another broker may have changed ACLs or users: read them again if
        C{version} (the C{security.version} a lease round just read) is not the
        one this store holds. Returns a Deferred (C{True}: they were read)."""
        if version == self._securityVersion:
            return defer.succeed(False)
        # In the writer thread: after this store's own changes queued before.
        return self.write(_loadSecurity).addCallback(self._tookSecurity)

    def _tookSecurity(self, loaded):
        version, acls, credentials = loaded
        self._securityVersion = version
        if acls != self._acls:
            self._acls = acls
        self._scramCredentials = credentials
        return True

    def close(self):
        if self._closing is None:
            self._queued, queued = [], self._queued
            for *_, waiter in queued:
                waiter.errback(StorageError("the store is closing"))
            self._closing = defer.DeferredList(list(self._outstanding), consumeErrors=True)
            self._closing.addCallback(lambda _: self._release())
        return self._closing

    def _release(self):
        self._writer.stop()
        self._readers.stop()
        self.pool.close()


@implementer(IStorageFactory, IPlugin)
class PostgreSQLStorageFactory:
    name = "postgresql"
    description = f"PostgreSQL (psycopg 3), shared by a cluster of brokers: postgresql:DSN (DSN empty: ${DSN_ENVIRONMENT}, else libpq's PG* variables)"

    def openStore(self, dataDir, sync, arguments=None):
        return PostgreSQLStore(resolveDSN(arguments), sync)
