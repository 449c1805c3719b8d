"""The ICredentialStore contract (SASL/SCRAM users), run against every backend
(memory, LevelDB, PostgreSQL), as tests/unit/test_storage_contract.py does for IStore."""

import pytest
from zope.interface.verify import verifyObject

from kafkaw.storage.interfaces import ICredentialStore, ScramCredential, StorageError
from tests.unit.test_storage_contract import Backend, backendFixtures, reopened

ALICE = ScramCredential(b"salt-1", b"k" * 32, b"s" * 32, 4096)
ALICE_512 = ScramCredential(b"salt-2", b"K" * 64, b"S" * 64, 8192)


backend, store = backendFixtures("memory", "leveldb", "postgresql")


def test_providesICredentialStore(store):
    assert verifyObject(ICredentialStore, store)


def test_aNewStoreHasNoUsers(store):
    assert store.scramCredentials() == {}
    assert store.scramCredential("alice", "SCRAM-SHA-256") is None


def test_setThenRead(backend, store):
    assert backend.wait(store.setScramCredential("alice", "SCRAM-SHA-256", ALICE)) is None
    backend.wait(store.setScramCredential("alice", "SCRAM-SHA-512", tuple(ALICE_512)))  # any 4-tuple
    assert store.scramCredential("alice", "SCRAM-SHA-256") == ALICE
    assert store.scramCredential("alice", "SCRAM-SHA-512") == ALICE_512
    assert store.scramCredential("bob", "SCRAM-SHA-256") is None
    assert store.scramCredentials() == {"alice": {"SCRAM-SHA-256": ALICE, "SCRAM-SHA-512": ALICE_512}}


def test_credentialsSurviveAReopen(backend, store):
    backend.wait(store.setScramCredential("alice", "SCRAM-SHA-256", ALICE))
    backend.wait(store.setScramCredential("Zoë, the =admin", "SCRAM-SHA-512", ALICE_512))
    store = reopened(backend, store)
    assert store.scramCredentials() == {"alice": {"SCRAM-SHA-256": ALICE}, "Zoë, the =admin": {"SCRAM-SHA-512": ALICE_512}}


def test_aSecondSetReplaces(backend, store):
    backend.wait(store.setScramCredential("alice", "SCRAM-SHA-256", ALICE))
    newer = ALICE._replace(salt=b"salt-3")
    backend.wait(store.setScramCredential("alice", "SCRAM-SHA-256", newer))
    assert reopened(backend, store).scramCredential("alice", "SCRAM-SHA-256") == newer


def test_theCopyIsACopy(backend, store):
    backend.wait(store.setScramCredential("alice", "SCRAM-SHA-256", ALICE))
    store.scramCredentials()["alice"].clear()
    assert store.scramCredential("alice", "SCRAM-SHA-256") == ALICE


def test_deleteSomeOrAllMechanisms(backend, store):
    backend.wait(store.setScramCredential("alice", "SCRAM-SHA-256", ALICE))
    backend.wait(store.setScramCredential("alice", "SCRAM-SHA-512", ALICE_512))
    backend.wait(store.setScramCredential("bob", "SCRAM-SHA-256", ALICE))
    assert backend.wait(store.deleteScramCredentials("alice", ["SCRAM-SHA-512", "PLAIN"])) == ["SCRAM-SHA-512"]
    assert store.scramCredentials()["alice"] == {"SCRAM-SHA-256": ALICE}
    assert backend.wait(store.deleteScramCredentials("alice")) == ["SCRAM-SHA-256"]
    assert backend.wait(store.deleteScramCredentials("alice")) == []
    assert backend.wait(store.deleteScramCredentials("nobody")) == []
    assert reopened(backend, store).scramCredentials() == {"bob": {"SCRAM-SHA-256": ALICE}}


@pytest.mark.parametrize(
    "user, mechanism, credential",
    [
        ("", "SCRAM-SHA-256", ALICE),
        ("x" * 1025, "SCRAM-SHA-256", ALICE),
        (None, "SCRAM-SHA-256", ALICE),
        ("alice", "PLAIN", ALICE),
        ("alice", "SCRAM-SHA-256", ALICE._replace(iterations=0)),
        ("alice", "SCRAM-SHA-256", ALICE._replace(iterations=(1 << 20) + 1)),
        ("alice", "SCRAM-SHA-256", ALICE._replace(salt=b"")),
        ("alice", "SCRAM-SHA-256", ALICE._replace(storedKey=b"x" * 256)),
        ("alice", "SCRAM-SHA-256", (b"salt", b"key")),
    ],
)
def test_badCredentialsAreRefusedAndNothingIsStored(backend, store, user, mechanism, credential):
    with pytest.raises(ValueError):
        backend.wait(store.setScramCredential(user, mechanism, credential))
    assert reopened(backend, store).scramCredentials() == {}


def failWrites(backend, store):
    """Make the store's next writes fail: LevelDB as a failed (disk-full) write
    leaves it (tests/unit/test_leveldb_recovery.py), PostgreSQL by a table gone."""
    if backend.name == "leveldb":
        store._failure = "disk full"
    else:
        backend.schema.execute("DROP TABLE kafkaw_scram_credentials")


@pytest.mark.parametrize("name", ["leveldb", "postgresql"])
def test_aFailedWriteChangesNothing(tmp_path, name):
    """While writes fail, a change fails and memory stays as stored."""
    backend = Backend(name, tmp_path)
    try:
        store = backend.open()
        backend.wait(store.setScramCredential("alice", "SCRAM-SHA-256", ALICE))
        failWrites(backend, store)
        with pytest.raises(StorageError):
            backend.wait(store.setScramCredential("alice", "SCRAM-SHA-256", ALICE_512))
        with pytest.raises(StorageError):
            backend.wait(store.deleteScramCredentials("alice"))
        assert store.scramCredentials() == {"alice": {"SCRAM-SHA-256": ALICE}}
        if name == "leveldb":
            store._failure = None  # so it closes as usual
    finally:
        backend.closeAll()
