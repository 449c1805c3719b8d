"""Finding the PostgreSQL the tests may use, and a fresh schema per test.

The DSN comes from C{KAFKAW_TEST_POSTGRESQL_DSN} (set by C{.ci/run} from
C{.ci/postgresql}); without it, the role and database C{.ci/postgresql}
makes are tried on 127.0.0.1. Tests needing PostgreSQL skip only when
neither answers; they fail when C{KAFKAW_TEST_POSTGRESQL_DSN} names a server
that does not answer (as in CI, where one must). Each test gets a schema of its own (dropped after it),
selected through the DSN's C{search_path}, so tests never see each other's
tables and brokers of one test share theirs.
"""

import functools
import os
import uuid

import pytest

ENVIRONMENT = "KAFKAW_TEST_POSTGRESQL_DSN"
CI_DSN = "host=127.0.0.1 port=5432 dbname=kafkaw_test user=kafkaw_test password=kafkaw_test"


@functools.cache
def _probe():
    """C{(DSN, None)} of a reachable PostgreSQL, else C{(None, why)}."""
    import psycopg

    dsn = os.environ.get(ENVIRONMENT) or CI_DSN
    try:
        with psycopg.connect(dsn, connect_timeout=3, autocommit=True) as connection:
            connection.execute("SELECT 1")
    except psycopg.Error as e:
        return None, str(e).strip()
    return dsn, None


def serverDSN():
    """The DSN of a reachable PostgreSQL, or C{None}."""
    return _probe()[0]


def requireServer():
    dsn, why = _probe()
    if dsn is None:
        if os.environ.get(ENVIRONMENT):
            pytest.fail(f"{ENVIRONMENT} names a PostgreSQL that does not answer: {why}")
        pytest.skip(f"no PostgreSQL: set {ENVIRONMENT} (see .ci/postgresql)")
    return dsn


class Schema:
    """A schema of its own on the test PostgreSQL; C{dsn} selects it."""

    def __init__(self):
        import psycopg
        from psycopg import conninfo

        self._server = requireServer()
        self.name = "kafkaw_test_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self._server, autocommit=True) as connection:
            connection.execute(f"CREATE SCHEMA {self.name}")
        self.dsn = conninfo.make_conninfo(self._server, options=f"-c search_path={self.name}")

    def execute(self, sql, params=None):
        """Run C{sql} in the schema; return every row (if any)."""
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as connection:
            cursor = connection.execute(sql, params)
            return cursor.fetchall() if cursor.description else None

    def drop(self):
        import psycopg

        with psycopg.connect(self._server, autocommit=True) as connection:
            connection.execute(f"DROP SCHEMA IF EXISTS {self.name} CASCADE")
