"""C{kafkaw users add|remove|list}: the SASL users of a broker.

With C{--data-dir DIR}, on the LevelDB store directly, so the first user can
exist before the broker first starts (LevelDB is locked by a running broker:
stop it first). Without it, on the running broker at C{--bootstrap}, through
AlterUserScramCredentials / DescribeUserScramCredentials v0 (Kafka 2.7):
the password is salted and hashed here (PBKDF2) and only that is sent.
Passwords come from a prompt (asked twice) or, when stdin is not a terminal,
from its first line; never from the command line, where any user of the
machine could read them (ps, shell history). What is stored is SCRAM salted
keys for SCRAM-SHA-256 and SCRAM-SHA-512, from which PLAIN is checked too.
"""

import getpass
import os
import queue
import time

from twisted.python.failure import Failure

from kafkaw.broker.sasl import DEFAULT_ITERATIONS, SALT_BYTES, makeCredential, saltedPassword
from kafkaw.broker.scramusers import CODE_OF, MAX_ITERATIONS, MECHANISM_CODES
from kafkaw.storage.interfaces import SCRAM_MECHANISMS, StorageError, checkUser


class UsersError(Exception):
    """The command cannot be done; the message says why."""


class _BlockingReactor:
    """Just enough reactor for the store's threads in a command that runs no
    reactor: their results are delivered in L{wait}."""

    def __init__(self):
        self._calls = queue.Queue()

    def callFromThread(self, f, *args, **kwargs):
        self._calls.put((f, args, kwargs))

    def wait(self, d, timeout=60.0):
        results = []
        d.addBoth(results.append)
        deadline = time.monotonic() + timeout
        while not results:
            try:
                f, args, kwargs = self._calls.get(timeout=max(deadline - time.monotonic(), 0.001))
            except queue.Empty:
                raise UsersError(f"the store did not answer within {timeout:.0f} s") from None
            f(*args, **kwargs)
        if isinstance(results[0], Failure):
            results[0].raiseException()
        return results[0]


def _withStore(dataDir, work):
    """Run C{work(store, wait)} on the LevelDB store under C{dataDir}, then close it."""
    from kafkaw.storage.leveldb import LevelDBStore

    path = os.path.join(dataDir, "leveldb")
    if not os.path.isdir(dataDir):
        raise UsersError(f"no data directory {dataDir}")
    reactor = _BlockingReactor()
    try:
        store = LevelDBStore(path, sync=True, reactor=reactor)
    except StorageError as e:
        raise UsersError(str(e)) from None
    try:
        return work(store, reactor.wait)
    finally:
        reactor.wait(store.close())


def readPassword(stdin, prompt=getpass.getpass):
    """The new password: prompted for twice on a terminal, else the first line of C{stdin}."""
    if stdin.isatty():
        password = prompt("Password: ")
        if prompt("Password again: ") != password:
            raise UsersError("the passwords differ")
    else:
        password = stdin.readline().rstrip("\r\n")
    if not password:
        raise UsersError("empty password")
    return password


def usersAdd(arguments, out, stdin):
    try:
        checkUser(arguments.name)
    except ValueError as e:
        raise UsersError(str(e)) from None
    password = readPassword(stdin)
    credentials = {mechanism: makeCredential(password, mechanism, arguments.iterations) for mechanism in SCRAM_MECHANISMS}

    def add(store, wait):
        existed = store.scramCredential(arguments.name, SCRAM_MECHANISMS[0]) is not None
        for mechanism, credential in credentials.items():
            wait(store.setScramCredential(arguments.name, mechanism, credential))
        return existed

    existed = _withStore(arguments.data_dir, add)
    print(f"{'changed the password of' if existed else 'added'} user {arguments.name} ({', '.join(SCRAM_MECHANISMS)})", file=out)


def usersRemove(arguments, out, stdin):
    deleted = _withStore(arguments.data_dir, lambda store, wait: wait(store.deleteScramCredentials(arguments.name)))
    if not deleted:
        raise UsersError(f"no user {arguments.name}")
    print(f"removed user {arguments.name}", file=out)


def usersList(arguments, out, stdin):
    users = _withStore(arguments.data_dir, lambda store, wait: store.scramCredentials())
    for name in sorted(users):
        mechanisms = ", ".join(f"{mechanism} ({users[name][mechanism].iterations} iterations)" for mechanism in sorted(users[name]))
        print(f"{name}\t{mechanisms}", file=out)


# --- on a running broker (--bootstrap) ---------------------------------------

DESCRIBE_USERS = (50, 0, "DescribeUserScramCredentials", "2.7")
ALTER_USERS = (51, 0, "AlterUserScramCredentials", "2.7")


def _call(client, call, request):
    from kafkaw.cli import Call

    return client.call(Call(*call), request)


def _failures(results):
    failed = [f"{r.user}: {r.errorMessage or 'error ' + str(r.errorCode)} (error {r.errorCode})" for r in results if r.errorCode]
    if failed:
        raise UsersError("\n".join(failed))


def usersAddOnline(client, arguments, out, stdin):
    try:
        checkUser(arguments.name)
    except ValueError as e:
        raise UsersError(str(e)) from None
    password = readPassword(stdin)
    upsertions = []
    for mechanism in SCRAM_MECHANISMS:
        salt = os.urandom(SALT_BYTES)
        salted = saltedPassword(password, mechanism, salt, arguments.iterations)
        upsertions.append({"name": arguments.name, "mechanism": CODE_OF[mechanism], "iterations": arguments.iterations, "salt": salt, "saltedPassword": salted})
    _failures(_call(client, ALTER_USERS, {"deletions": [], "upsertions": upsertions}).results)
    print(f"set the password of user {arguments.name} ({', '.join(SCRAM_MECHANISMS)})", file=out)


def _described(client, users):
    answer = _call(client, DESCRIBE_USERS, {"users": users})
    if answer.errorCode:
        raise UsersError(f"{answer.errorMessage or 'refused'} (error {answer.errorCode})")
    return answer.results


def usersRemoveOnline(client, arguments, out, stdin):
    (found,) = _described(client, [{"name": arguments.name}])
    if found.errorCode == 91:
        raise UsersError(f"no user {arguments.name}")
    _failures([found])
    deletions = [{"name": arguments.name, "mechanism": info.mechanism} for info in found.credentialInfos]
    _failures(_call(client, ALTER_USERS, {"deletions": deletions, "upsertions": []}).results)
    print(f"removed user {arguments.name}", file=out)


def usersListOnline(client, arguments, out, stdin):
    for result in sorted(_described(client, None), key=lambda r: r.user):
        _failures([result])
        mechanisms = ", ".join(
            f"{MECHANISM_CODES.get(info.mechanism, info.mechanism)} ({info.iterations} iterations)"
            for info in sorted(result.credentialInfos, key=lambda info: info.mechanism)
        )
        print(f"{result.user}\t{mechanisms}", file=out)


def _iterations(value):
    import argparse

    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {value!r}") from None
    if not DEFAULT_ITERATIONS <= number <= MAX_ITERATIONS:
        raise argparse.ArgumentTypeError(f"iterations are {DEFAULT_ITERATIONS} to {MAX_ITERATIONS} (Kafka's bounds)")
    return number


def addParsers(commands):
    """The C{users} commands, under the CLI's subparsers C{commands}."""
    users = commands.add_parser(
        "users", help="add, remove or list SASL users (of the broker at --bootstrap, or of a stopped one: --data-dir)"
    ).add_subparsers(title="users commands", required=True, metavar="ACTION")

    def dataDir(command):
        command.add_argument(
            "--data-dir", "-d", metavar="DIR",
            help="work on this stopped broker's --data-dir (LevelDB: a running broker holds its lock) instead of --bootstrap",
        )

    add = users.add_parser("add", help="add a user, or change its password (read from a prompt or stdin)")
    add.add_argument("name")
    add.add_argument(
        "--iterations", type=_iterations, default=DEFAULT_ITERATIONS, metavar="N",
        help="SCRAM (PBKDF2) iterations (default: %(default)s, Kafka's minimum)",
    )
    dataDir(add)
    add.set_defaults(offline=usersAdd, online=usersAddOnline)
    remove = users.add_parser("remove", help="remove a user's credentials")
    remove.add_argument("name")
    dataDir(remove)
    remove.set_defaults(offline=usersRemove, online=usersRemoveOnline)
    listing = users.add_parser("list", help="every user and its mechanisms, one a line")
    dataDir(listing)
    listing.set_defaults(offline=usersList, online=usersListOnline)
