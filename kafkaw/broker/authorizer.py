"""Who may do what: Kafka 2.3's ACL model (its C{SimpleAclAuthorizer}).

An ACL allows or denies a principal (C{User:NAME}, or C{User:*} for
everyone) an operation on a resource pattern (topic, group, cluster,
transactional id or delegation token; its name literal, C{*} for every
resource of its type, or a prefix), from a host (an IP address, or C{*}).
A request is allowed when the principal is a super user, or when no ACL
matching it denies the operation and one allows it; allowing Read, Write,
Delete or Alter allows Describe too, and AlterConfigs allows
DescribeConfigs. A resource without any ACL is denied to all but super
users, unless C{allowEveryoneIfNoAcl}.

The ACLs live in an L{IAclStore}; the authorizer indexes them (literal
names in a dict, prefixes by their lengths) and remembers each decision
until they change — through it, or in the store: a store hands out a new
C{acls()} set whenever they change — so a request's check is one dict
lookup.
"""

import enum

from zope.interface import Interface, implementer

ANONYMOUS = "User:ANONYMOUS"  # the principal of a connection that did not authenticate
WILDCARD_PRINCIPAL = "User:*"
WILDCARD_HOST = "*"
WILDCARD_RESOURCE = "*"  # a literal name matching every resource of its type
CLUSTER_NAME = "kafka-cluster"  # the only name of the cluster resource

# Decisions remembered between ACL changes; past this many, forgotten all at
# once (a client naming ever new topics must not grow memory without bound).
_MAX_DECISIONS = 100_000


class ResourceType(enum.IntEnum):
    UNKNOWN = 0
    ANY = 1
    TOPIC = 2
    GROUP = 3
    CLUSTER = 4
    TRANSACTIONAL_ID = 5
    DELEGATION_TOKEN = 6


class Operation(enum.IntEnum):
    UNKNOWN = 0
    ANY = 1
    ALL = 2
    READ = 3
    WRITE = 4
    CREATE = 5
    DELETE = 6
    ALTER = 7
    DESCRIBE = 8
    CLUSTER_ACTION = 9
    DESCRIBE_CONFIGS = 10
    ALTER_CONFIGS = 11
    IDEMPOTENT_WRITE = 12


class Permission(enum.IntEnum):
    UNKNOWN = 0
    ANY = 1
    DENY = 2
    ALLOW = 3


class PatternType(enum.IntEnum):
    UNKNOWN = 0
    ANY = 1
    MATCH = 2
    LITERAL = 3
    PREFIXED = 4


# Allowing any of these allows the key too (Kafka's AclOperation rules).
_ALLOWED_BY = {
    Operation.DESCRIBE: frozenset({Operation.DESCRIBE, Operation.READ, Operation.WRITE, Operation.DELETE, Operation.ALTER, Operation.ALL}),
    Operation.DESCRIBE_CONFIGS: frozenset({Operation.DESCRIBE_CONFIGS, Operation.ALTER_CONFIGS, Operation.ALL}),
}


OPERATIONS_NOT_ASKED = -(2**31)  # KIP-430's value for authorized operations a request did not ask for
NO_OPERATIONS = 0  # Kafka 2.3's answer when asked but not answered: a group in error, a cluster without Describe

# What each resource type offers (Kafka 2.3's ResourceType.supportedOperations):
# the operations that KIP-430's authorized-operations bitfields range over.
SUPPORTED_OPERATIONS = {
    ResourceType.TOPIC: (
        Operation.READ, Operation.WRITE, Operation.CREATE, Operation.DESCRIBE, Operation.DELETE,
        Operation.ALTER, Operation.DESCRIBE_CONFIGS, Operation.ALTER_CONFIGS,
    ),
    ResourceType.GROUP: (Operation.READ, Operation.DESCRIBE, Operation.DELETE),
    ResourceType.CLUSTER: (
        Operation.CREATE, Operation.CLUSTER_ACTION, Operation.DESCRIBE_CONFIGS, Operation.ALTER_CONFIGS,
        Operation.IDEMPOTENT_WRITE, Operation.ALTER, Operation.DESCRIBE,
    ),
}


def _allowedBy(operation):
    return _ALLOWED_BY.get(operation) or frozenset({operation, Operation.ALL})


class IAuthorizer(Interface):
    """Decides requests and keeps the ACLs that decide them."""

    def authorize(principal, host, operation, resourceType, name):
        """May C{principal} (C{"User:NAME"}) connected from C{host} do
        C{operation} (an L{Operation}) on the resource C{name} of
        C{resourceType} (a L{ResourceType})? C{True} or C{False}, at once."""

    def acls():
        """Every ACL: a C{frozenset} of L{AclBinding}."""

    def addAcls(bindings):
        """Store ACLs (L{AclBinding}s); a Deferred firing with C{None} once
        they are stored and decide every later L{authorize} call."""

    def removeAcls(bindings):
        """Delete ACLs; a Deferred firing with C{None} once the deletion is
        stored and decides every later L{authorize} call."""


@implementer(IAuthorizer)
class AclAuthorizer:
    """Kafka's C{SimpleAclAuthorizer} over an L{IAclStore}."""

    def __init__(self, store, superUsers=(), allowEveryoneIfNoAcl=False):
        self._store = store
        self._storedAcls = store.acls  # called on every authorize(): looked up once
        self.superUsers = frozenset(superUsers)
        self.allowEveryoneIfNoAcl = allowEveryoneIfNoAcl
        self._reindex()

    def _reindex(self, _=None):
        """Index the store's ACLs and forget every decision made with the old ones."""
        literal = {}  # (resource type, name) -> [(principal, host, operation, permission)]
        prefixed = {}  # resource type -> {prefix: [(principal, host, operation, permission)]}
        self._indexed = acls = self._store.acls()
        for acl in acls:
            entry = (acl.principal, acl.host, acl.operation, acl.permission)
            if acl.patternType == PatternType.PREFIXED:
                prefixed.setdefault(acl.resourceType, {}).setdefault(acl.resourceName, []).append(entry)
            else:
                literal.setdefault((acl.resourceType, acl.resourceName), []).append(entry)
        self._literal = literal
        self._prefixed = {
            resourceType: (sorted({len(prefix) for prefix in prefixes}), prefixes)
            for resourceType, prefixes in prefixed.items()
        }
        self._decisions = {}

    def acls(self):
        return self._store.acls()

    def addAcls(self, bindings):
        return self._store.addAcls(bindings).addCallback(self._reindex)

    def removeAcls(self, bindings):
        return self._store.removeAcls(bindings).addCallback(self._reindex)

    def authorize(self, principal, host, operation, resourceType, name):
        if self._storedAcls() is not self._indexed:
            self._reindex()  # changed in the store itself (reopened; a store shared by brokers)
        key = (principal, host, operation, resourceType, name)
        decided = self._decisions.get(key)
        if decided is None:
            decided = self._decide(principal, host, operation, resourceType, name)
            if len(self._decisions) >= _MAX_DECISIONS:
                self._decisions = {}
            self._decisions[key] = decided
        return decided

    def _matching(self, resourceType, name):
        """The entries of every ACL whose pattern matches the resource: the
        wildcard, the literal name, and every prefix of it."""
        entries = []
        for literalName in (WILDCARD_RESOURCE, name):
            entries.extend(self._literal.get((resourceType, literalName), ()))
        lengths, prefixes = self._prefixed.get(resourceType, ((), None))
        for length in lengths:
            if length > len(name):
                break
            entries.extend(prefixes.get(name[:length], ()))
        return entries

    def _decide(self, principal, host, operation, resourceType, name):
        if principal in self.superUsers:
            return True
        entries = self._matching(resourceType, name)
        if not entries:
            return self.allowEveryoneIfNoAcl
        principals, hosts = (principal, WILDCARD_PRINCIPAL), (host, WILDCARD_HOST)
        applying = [(op, permission) for who, where, op, permission in entries if who in principals and where in hosts]
        if any(permission == Permission.DENY and op in (operation, Operation.ALL) for op, permission in applying):
            return False
        allowedBy = _allowedBy(operation)
        return any(permission == Permission.ALLOW and op in allowedBy for op, permission in applying)


# --- filters (DescribeAcls, DeleteAcls) -----------------------------------------


def matchesFilter(acl, aclFilter):
    """Does the L{AclBinding} C{acl} match C{aclFilter}, an L{AclBinding}
    whose codes may be ANY (and pattern type MATCH) and whose name,
    principal and host may be C{None} (any), as Kafka's C{AclBindingFilter}?"""
    if aclFilter.resourceType != ResourceType.ANY and aclFilter.resourceType != acl.resourceType:
        return False
    patternType = aclFilter.patternType
    if patternType not in (PatternType.ANY, PatternType.MATCH) and patternType != acl.patternType:
        return False
    name = aclFilter.resourceName
    if name is not None:
        if patternType in (PatternType.ANY, acl.patternType):
            if name != acl.resourceName:
                return False
        elif acl.patternType == PatternType.LITERAL:  # MATCH: the ACLs that apply to the resource C{name}
            if name != acl.resourceName and acl.resourceName != WILDCARD_RESOURCE:
                return False
        elif not name.startswith(acl.resourceName):
            return False
    return (
        (aclFilter.principal is None or aclFilter.principal == acl.principal)
        and (aclFilter.host is None or aclFilter.host == acl.host)
        and (aclFilter.operation == Operation.ANY or aclFilter.operation == acl.operation)
        and (aclFilter.permission == Permission.ANY or aclFilter.permission == acl.permission)
    )


def isDefinite(aclFilter):
    """Can C{aclFilter} match one ACL at most (Kafka's C{matchesAtMostOne})?"""
    return not (
        aclFilter.resourceType in (ResourceType.ANY, ResourceType.UNKNOWN)
        or aclFilter.resourceName is None
        or aclFilter.patternType in (PatternType.MATCH, PatternType.UNKNOWN)
        or aclFilter.principal is None
        or aclFilter.host is None
        or aclFilter.operation in (Operation.ANY, Operation.UNKNOWN)
        or aclFilter.permission in (Permission.ANY, Permission.UNKNOWN)
    )


def bindingError(binding):
    """Why Kafka cannot take C{binding} as an ACL (its CreateAcls and
    DeleteAcls answer INVALID_REQUEST with this), or C{None}: codes it does
    not know (or ANY), or a principal without the C{:} of TYPE:NAME."""
    for enumeration, value, what in (
        (ResourceType, binding.resourceType, "resource type"),
        (PatternType, binding.patternType, "pattern type"),
        (Operation, binding.operation, "operation"),
        (Permission, binding.permission, "permission type"),
    ):
        if value not in enumeration._value2member_map_ or value <= 1:  # UNKNOWN (0), ANY (1)
            return f"unknown {what} {value}"
    if binding.patternType == PatternType.MATCH:
        return "pattern type MATCH is for filters only"
    if ":" not in binding.principal:
        return f"expected a principal in the form TYPE:NAME, such as User:alice, not {binding.principal!r}"
    return None


def creationError(binding):
    """Why Kafka refuses to store C{binding} (CreateAcls: INVALID_REQUEST),
    or C{None}: as L{bindingError}, and an empty name, or a cluster
    resource not named C{kafka-cluster}."""
    why = bindingError(binding)
    if why is None and binding.resourceType == ResourceType.CLUSTER and binding.resourceName != CLUSTER_NAME:
        why = f"the only valid name for the CLUSTER resource is {CLUSTER_NAME}"
    if why is None and not binding.resourceName:
        why = "invalid empty resource name"
    return why
