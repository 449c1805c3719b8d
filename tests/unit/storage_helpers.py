"""What the LevelDB storage tests share: stores in one temp directory, opened
on a L{ThreadResults} reactor and closed (their threads stopped) after the test."""

import plyvel
import pytest

from kafkaw.storage.leveldb import LevelDBStore
from tests.unit.helpers import ThreadResults


class LevelDBStores:
    """LevelDB stores in one temp directory; closed after the test.

    C{reactor} (a L{ThreadResults}, by default a new one) is the stores'
    reactor and L{wait}s for their Deferreds.
    """

    def __init__(self, path, reactor=None, directory="leveldb"):
        self.path = str(path / directory)
        self.threads = ThreadResults() if reactor is None else reactor
        self._open = []

    def _created(self, store):
        self._open.append(store)
        return store

    def open(self, sync=False):
        return self._created(LevelDBStore(self.path, sync, reactor=self.threads))

    def wait(self, d, timeout=10.0):
        return self.threads.wait(d, timeout)

    def close(self, store):
        self._open.remove(store)
        return self.wait(store.close())

    def closeAll(self):
        while self._open:
            store = self._open.pop()
            try:
                self.wait(store.close())
            finally:
                stopThreads(store)

    def keys(self):
        """Every key of the (closed) database."""
        db = plyvel.DB(self.path)
        try:
            return list(db.iterator(include_value=False))
        finally:
            db.close()

    def items(self, prefix=b""):
        """Every key and value (under C{prefix}) of the (closed) database."""
        db = plyvel.DB(self.path)
        try:
            return list(db.iterator(prefix=prefix))
        finally:
            db.close()


def stopThreads(store):
    """Safety net: a failed test must not leave LevelDB threads that keep pytest from exiting."""
    for pool in (getattr(store, "_writer", None), getattr(store, "_readers", None)):
        if pool is not None and not pool.joined:
            pool.stop()


def storesFixture(factory=LevelDBStores):
    """A C{stores} fixture: C{factory(tmp_path)}, all its stores closed after the test."""

    @pytest.fixture
    def stores(tmp_path):
        s = factory(tmp_path)
        try:
            yield s
        finally:
            s.closeAll()

    return stores
