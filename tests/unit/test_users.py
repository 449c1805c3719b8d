"""C{kafkaw users add|remove|list --data-dir}: offline, on a stopped broker's LevelDB store."""

import io

import pytest
from scramp import ScramMechanism

from kafkaw import cli, users
from kafkaw.broker.sasl import passwordMatches
from kafkaw.storage.leveldb import LevelDBStore
from tests.unit.helpers import ThreadResults


class Terminal(io.StringIO):
    def isatty(self):
        return True


def run(*argv, stdin=""):
    out, err = io.StringIO(), io.StringIO()
    status = cli.main(list(argv), out=out, err=err, stdin=stdin if isinstance(stdin, io.StringIO) else io.StringIO(stdin))
    return status, out.getvalue(), err.getvalue()


def storedUsers(dataDir):
    threads = ThreadResults()
    store = LevelDBStore(str(dataDir / "leveldb"), False, reactor=threads)
    try:
        return store.scramCredentials()
    finally:
        threads.wait(store.close())


def test_addStoresSaltedKeysForBothScramMechanisms(tmp_path):
    status, out, err = run("users", "add", "alice", "--data-dir", str(tmp_path), stdin="s3cret\n")
    assert (status, out, err) == (0, "added user alice (SCRAM-SHA-256, SCRAM-SHA-512)\n", "")
    stored = storedUsers(tmp_path)["alice"]
    assert sorted(stored) == ["SCRAM-SHA-256", "SCRAM-SHA-512"]
    for mechanism, credential in stored.items():
        assert passwordMatches("s3cret", mechanism, credential)
        assert credential.iterations == 4096
        # the same keys scramp derives: stock clients will match them
        assert ScramMechanism(mechanism).make_auth_info("s3cret", 4096, credential.salt)[1:3] == (credential.storedKey, credential.serverKey)
    assert b"s3cret" not in b"".join(p.read_bytes() for p in (tmp_path / "leveldb").iterdir() if p.is_file())


def test_addAgainChangesThePassword(tmp_path):
    run("users", "add", "alice", "-d", str(tmp_path), stdin="old\n")
    status, out, _ = run("users", "add", "alice", "-d", str(tmp_path), "--iterations", "8192", stdin="new\n")
    assert (status, out) == (0, "changed the password of user alice (SCRAM-SHA-256, SCRAM-SHA-512)\n")
    credential = storedUsers(tmp_path)["alice"]["SCRAM-SHA-512"]
    assert passwordMatches("new", "SCRAM-SHA-512", credential) and credential.iterations == 8192


def test_listAndRemove(tmp_path):
    run("users", "add", "bob", "-d", str(tmp_path), stdin="pw\n")
    run("users", "add", "alice", "-d", str(tmp_path), stdin="pw\n")
    status, out, _ = run("users", "list", "-d", str(tmp_path))
    assert status == 0 and out.splitlines() == [
        "alice\tSCRAM-SHA-256 (4096 iterations), SCRAM-SHA-512 (4096 iterations)",
        "bob\tSCRAM-SHA-256 (4096 iterations), SCRAM-SHA-512 (4096 iterations)",
    ]
    assert run("users", "remove", "bob", "-d", str(tmp_path))[:2] == (0, "removed user bob\n")
    assert run("users", "list", "-d", str(tmp_path))[1].splitlines() == [out.splitlines()[0]]
    assert run("users", "remove", "bob", "-d", str(tmp_path)) == (1, "", "kafkaw: no user bob\n")


def test_aTerminalIsAskedTwice():
    answers = iter(["s3cret", "s3cret", "one", "two"])
    assert users.readPassword(Terminal(), prompt=lambda p: next(answers)) == "s3cret"
    with pytest.raises(users.UsersError, match="the passwords differ"):
        users.readPassword(Terminal(), prompt=lambda p: next(answers))


@pytest.mark.parametrize("stdin, why", [("\n", "empty password"), ("", "empty password")])
def test_anEmptyPasswordIsRefused(tmp_path, stdin, why):
    assert run("users", "add", "alice", "-d", str(tmp_path), stdin=stdin) == (1, "", f"kafkaw: {why}\n")


def test_thePasswordIsNeverAnArgument(tmp_path):
    with pytest.raises(SystemExit) as exited:
        run("users", "add", "alice", "s3cret", "-d", str(tmp_path))
    assert exited.value.code == 2


def test_aMissingDataDirIsAnError(tmp_path):
    assert run("users", "list", "-d", str(tmp_path / "nope")) == (1, "", f"kafkaw: no data directory {tmp_path / 'nope'}\n")


def test_aRunningBrokersLockIsReported(tmp_path):
    run("users", "add", "alice", "-d", str(tmp_path), stdin="pw\n")
    threads = ThreadResults()
    held = LevelDBStore(str(tmp_path / "leveldb"), False, reactor=threads)
    try:
        status, _, err = run("users", "list", "-d", str(tmp_path))
        assert status == 1 and "is another broker using this data directory?" in err
    finally:
        threads.wait(held.close())
