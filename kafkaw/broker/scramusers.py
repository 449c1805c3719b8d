"""DescribeUserScramCredentials and AlterUserScramCredentials (Kafka 2.7.0's
v0, flexible): SASL/SCRAM users managed on a running broker, as Kafka's
admin clients and C{kafkaw users --bootstrap} do it.

The client sends the salted password (PBKDF2 of the password, done by the
client), never the password; the broker keeps only the stored and server
keys derived from it (RFC 5802). Answers follow Kafka 2.7: one result per
user; a user whose changes include a bad one gets that error and none of its
changes is made; the rest of the request is.

Who may manage users: as in Kafka, a principal with Describe (to list) or
Alter (to change) on the Cluster resource, or a super user, once ACLs are
enforced (--acls, on with --sasl); others get CLUSTER_AUTHORIZATION_FAILED,
so no user can change another's password. A connection to a --sasl-exempt
endpoint is User:ANONYMOUS, which needs an ACL or --super-user as well.
"""

import hashlib
import hmac

from twisted.internet import defer

from kafkaw.broker.authorizer import CLUSTER_NAME, Operation, ResourceType
from kafkaw.broker.sasl import SCRAM_HASHES
from kafkaw.protocol import schema
from kafkaw.protocol.definitions import ALTER_USER_SCRAM_CREDENTIALS, DESCRIBE_USER_SCRAM_CREDENTIALS
from kafkaw.protocol.errors import ErrorCode
from kafkaw.storage.interfaces import MAX_USER_NAME_BYTES, ScramCredential

# Kafka's ScramMechanism type codes.
MECHANISM_CODES = {1: "SCRAM-SHA-256", 2: "SCRAM-SHA-512"}
CODE_OF = {name: code for code, name in MECHANISM_CODES.items()}
MIN_ITERATIONS, MAX_ITERATIONS = 4096, 16384  # Kafka's bounds for an upsertion


def mayManageUsers(gateway, operation):
    """Whether this connection may do C{operation} (Describe or Alter) on the
    SASL users: that operation on the Cluster (see the module docstring)."""
    return gateway.allowed(operation, ResourceType.CLUSTER, CLUSTER_NAME)


def credentialFromSaltedPassword(mechanism, salt, saltedPassword, iterations):
    name = SCRAM_HASHES[mechanism]
    storedKey = hashlib.new(name, hmac.digest(saltedPassword, b"Client Key", name)).digest()
    return ScramCredential(bytes(salt), storedKey, hmac.digest(saltedPassword, b"Server Key", name), iterations)


def _store(gateway):
    return gateway.broker.credentials


def describeUserScramCredentials(header, request, gateway):
    def answer(error=ErrorCode.NONE, message=None, results=()):
        return schema.encodeResponse(
            DESCRIBE_USER_SCRAM_CREDENTIALS.key, header.apiVersion, header.correlationId,
            {"throttleTimeMs": 0, "errorCode": error, "errorMessage": message, "results": list(results)},
        )

    store = _store(gateway)
    if store is None or not mayManageUsers(gateway, Operation.DESCRIBE):
        why = "the store keeps no SCRAM credentials" if store is None else f"{gateway.principal} may not describe users"
        return answer(ErrorCode.CLUSTER_AUTHORIZATION_FAILED if store is not None else ErrorCode.UNKNOWN, why)
    everyone = store.scramCredentials()
    names = [user.name for user in request.users or []]
    results = []
    for name in names or sorted(everyone):
        if names.count(name) > 1:
            results.append({"user": name, "errorCode": ErrorCode.DUPLICATE_RESOURCE,
                            "errorMessage": f"Cannot describe SCRAM credentials for the same user twice in a single request: {name}"})
        elif name not in everyone:
            results.append({"user": name, "errorCode": ErrorCode.RESOURCE_NOT_FOUND,
                            "errorMessage": f"Attempt to describe a user credential that does not exist: {name}"})
        else:
            infos = [{"mechanism": CODE_OF[m], "iterations": c.iterations} for m, c in sorted(everyone[name].items()) if m in CODE_OF]
            results.append({"user": name, "credentialInfos": infos})
    return answer(results=results)


def _refusal(change, seen, store, deleting):
    """Why one deletion or upsertion is refused: (error code, message), or None."""
    name, mechanism = change.name, MECHANISM_CODES.get(change.mechanism)
    if not name or len(name.encode("utf-8")) > MAX_USER_NAME_BYTES:
        return ErrorCode.UNACCEPTABLE_CREDENTIAL, f"Username must be 1 to {MAX_USER_NAME_BYTES} UTF-8 bytes"
    if mechanism is None:
        return ErrorCode.UNSUPPORTED_SASL_MECHANISM, f"Unknown SCRAM mechanism code {change.mechanism}"
    if (name, mechanism) in seen:
        return ErrorCode.DUPLICATE_RESOURCE, f"A user credential cannot be altered twice in the same request: {name}"
    seen.add((name, mechanism))
    if deleting:
        if store.scramCredential(name, mechanism) is None:
            return ErrorCode.RESOURCE_NOT_FOUND, f"Attempt to delete a user credential that does not exist: {name}"
        return None
    if change.iterations < MIN_ITERATIONS:
        return ErrorCode.UNACCEPTABLE_CREDENTIAL, f"Too few iterations ({change.iterations} < {MIN_ITERATIONS})"
    if change.iterations > MAX_ITERATIONS:
        return ErrorCode.UNACCEPTABLE_CREDENTIAL, f"Too many iterations ({change.iterations} > {MAX_ITERATIONS})"
    if not 0 < len(change.salt) <= 255 or len(change.saltedPassword) != hashlib.new(SCRAM_HASHES[mechanism]).digest_size:
        return ErrorCode.UNACCEPTABLE_CREDENTIAL, "Salt of 1 to 255 bytes and a salted password of the hash's size needed"
    return None


def alterUserScramCredentials(header, request, gateway):
    def answer(results):
        return schema.encodeResponse(
            ALTER_USER_SCRAM_CREDENTIALS.key, header.apiVersion, header.correlationId,
            {"throttleTimeMs": 0, "results": results},
        )

    store = _store(gateway)
    users = list(dict.fromkeys(change.name for change in [*request.deletions, *request.upsertions]))
    if store is None or not mayManageUsers(gateway, Operation.ALTER):
        error = ErrorCode.CLUSTER_AUTHORIZATION_FAILED if store is not None else ErrorCode.UNKNOWN
        why = "the store keeps no SCRAM credentials" if store is None else f"{gateway.principal} may not alter users"
        return answer([{"user": user, "errorCode": error, "errorMessage": why} for user in users])
    seen, refused = set(), {}
    for changes, deleting in ((request.deletions, True), (request.upsertions, False)):
        for change in changes:
            why = _refusal(change, seen, store, deleting)
            if why is not None:
                refused.setdefault(change.name, why)
    writes = []
    for change in request.deletions:
        if change.name not in refused:
            writes.append(store.deleteScramCredentials(change.name, [MECHANISM_CODES[change.mechanism]]))
    for change in request.upsertions:
        if change.name not in refused:
            mechanism = MECHANISM_CODES[change.mechanism]
            credential = credentialFromSaltedPassword(mechanism, change.salt, change.saltedPassword, change.iterations)
            writes.append(store.setScramCredential(change.name, mechanism, credential))

    def stored(outcomes):
        failed = next((reason for ok, reason in outcomes if not ok), None)
        results = []
        for user in users:
            if user in refused:
                error, message = refused[user]
            elif failed is not None:
                error, message = ErrorCode.UNKNOWN, f"storing failed: {failed.getErrorMessage()}"
            else:
                error, message = ErrorCode.NONE, None
            results.append({"user": user, "errorCode": error, "errorMessage": message})
        gateway.log.info(
            "AlterUserScramCredentials from {peer}: {results}", peer=gateway.connection.peer,
            results=", ".join(f"{r['user']}: error {int(r['errorCode'])}" for r in results),
        )
        return answer(results)

    return defer.DeferredList(writes, consumeErrors=True).addCallback(stored)
