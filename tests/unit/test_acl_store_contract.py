"""The IAclStore contract, run against every backend that keeps ACLs
(memory, LevelDB, PostgreSQL): what is stored, when it shows, what is
refused, and (for the stores that persist) that ACLs survive reopening."""

import pytest
from zope.interface.verify import verifyObject

from kafkaw.storage.interfaces import AclBinding, IAclStore, StorageError
from tests.unit.test_storage_contract import backendFixtures

READ = AclBinding(2, "logs", 3, "User:alice", "*", 3, 3)
WRITE = AclBinding(2, "logs", 3, "User:alice", "*", 4, 3)
PREFIX = AclBinding(2, "lo", 4, "User:*", "10.0.0.1", 2, 2)
UNICODE = AclBinding(3, "grüppe ✓", 3, "User:bö b", "::1", 6, 3)
EMPTY = AclBinding(2, "", 3, "", "", 0, 0)  # storage keeps what it is given; the broker checks


backend, store = backendFixtures("memory", "leveldb", "postgresql")


def test_providesTheInterface(store):
    assert verifyObject(IAclStore, store)


def test_startsEmpty(store):
    assert store.acls() == frozenset()


def test_addAndRemove(backend, store):
    assert backend.wait(store.addAcls([READ, WRITE, PREFIX, UNICODE, EMPTY])) is None
    assert store.acls() == {READ, WRITE, PREFIX, UNICODE, EMPTY}
    assert isinstance(store.acls(), frozenset)
    backend.wait(store.addAcls([READ, tuple(READ)]))  # stored already: kept once; plain tuples too
    assert store.acls() == {READ, WRITE, PREFIX, UNICODE, EMPTY}
    assert backend.wait(store.removeAcls([WRITE, AclBinding(2, "never", 3, "User:x", "*", 3, 3)])) is None
    assert store.acls() == {READ, PREFIX, UNICODE, EMPTY}
    backend.wait(store.removeAcls([]))
    backend.wait(store.addAcls([]))
    assert store.acls() == {READ, PREFIX, UNICODE, EMPTY}


def test_aclsChangeOnlyOnceStored(backend, store):
    before = store.acls()
    d = store.addAcls([READ])
    if not d.called:  # a store writing in a thread: not shown before it fires
        assert store.acls() == before
    backend.wait(d)
    assert READ in store.acls()
    d = store.removeAcls([READ])
    if not d.called:
        assert READ in store.acls()
    backend.wait(d)
    assert READ not in store.acls()


def test_theReturnedSetIsNotTheStore(backend, store):
    backend.wait(store.addAcls([READ]))
    seen = store.acls()
    backend.wait(store.addAcls([WRITE]))
    assert seen == {READ}


@pytest.mark.parametrize("bad", [
    ("too", "short"),
    AclBinding(2, "logs", 3, "User:a", "*", 300, 3),  # not an int8
    AclBinding("2", "logs", 3, "User:a", "*", 3, 3),
    AclBinding(2, None, 3, "User:a", "*", 3, 3),
    AclBinding(2, "logs", 3, b"User:a", "*", 3, 3),
    AclBinding(2, "x" * 40000, 3, "User:a", "*", 3, 3),
    AclBinding(True, "logs", 3, "User:a", "*", 3, 3),
    "not a tuple",
])
def test_badValuesStoreNothing(backend, store, bad):
    for change in (store.addAcls, store.removeAcls):
        with pytest.raises(ValueError):
            backend.wait(change([READ, bad]))
    assert store.acls() == frozenset()


def test_aclsSurviveReopening(backend):
    if not backend.persistent:
        pytest.skip("a memory store keeps nothing")
    store = backend.open()
    backend.wait(store.addAcls([READ, WRITE, PREFIX, UNICODE]))
    backend.wait(store.removeAcls([WRITE]))
    backend.close(store)
    reopened = backend.open()
    assert reopened.acls() == {READ, PREFIX, UNICODE}
    backend.wait(reopened.removeAcls([PREFIX]))
    backend.close(reopened)
    assert backend.open().acls() == {READ, UNICODE}


def test_changesAreRefusedWhileClosing(backend):
    if not backend.persistent:
        pytest.skip("a memory store has nothing to close")
    store = backend.open()
    closing = store.close()
    with pytest.raises(StorageError):
        backend.wait(store.addAcls([READ]))
    backend.wait(closing)
    assert store.acls() == frozenset()


def test_theSetIsANewObjectOnlyWhenTheAclsChange(backend, store):
    """Indexes over acls() tell a change by identity (IAclStore.acls)."""
    backend.wait(store.addAcls([READ]))
    first = store.acls()
    backend.wait(store.addAcls([READ]))
    backend.wait(store.removeAcls([WRITE]))
    backend.wait(store.addAcls([]))
    assert store.acls() is first
    backend.wait(store.addAcls([WRITE]))
    assert store.acls() is not first
