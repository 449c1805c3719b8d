"""The authorizer against Kafka 2.3's SimpleAclAuthorizer rules, table-driven:
super users, deny over allow, implied Describe / DescribeConfigs, wildcard
principal, host and resource, prefixes, no ACL → deny unless
allow-everyone; and the filters of DescribeAcls / DeleteAcls."""

import pytest
from zope.interface.verify import verifyObject

from kafkaw.broker.authorizer import (
    AclAuthorizer,
    IAuthorizer,
    Operation as Op,
    PatternType,
    Permission,
    ResourceType as RT,
    bindingError,
    creationError,
    isDefinite,
    matchesFilter,
)
from kafkaw.storage.interfaces import AclBinding
from kafkaw.storage.memory import MemoryStore

LITERAL, PREFIXED, ANY_PATTERN, MATCH = PatternType.LITERAL, PatternType.PREFIXED, PatternType.ANY, PatternType.MATCH
ALLOW, DENY = Permission.ALLOW, Permission.DENY
ALICE, BOB = "User:alice", "User:bob"
HOST = "10.0.0.1"


def acl(principal, operation, permission=ALLOW, name="logs", resourceType=RT.TOPIC, pattern=LITERAL, host="*"):
    return AclBinding(resourceType, name, pattern, principal, host, operation, permission)


def authorizer(acls=(), **options):
    store = MemoryStore()
    store.addAcls(acls)
    return AclAuthorizer(store, **options)


def test_providesTheInterface():
    assert verifyObject(IAuthorizer, authorizer())


# (ACLs, principal, operation, resource type, name, host, allowed)
RULES = [
    # no ACL on the resource: denied (allow-everyone off)
    ([], ALICE, Op.READ, RT.TOPIC, "logs", HOST, False),
    # an ACL on another resource does not count
    ([acl(ALICE, Op.READ, name="other")], ALICE, Op.READ, RT.TOPIC, "logs", HOST, False),
    # exact allow
    ([acl(ALICE, Op.READ)], ALICE, Op.READ, RT.TOPIC, "logs", HOST, True),
    # allow for another principal: ACLs exist, none applies
    ([acl(BOB, Op.READ)], ALICE, Op.READ, RT.TOPIC, "logs", HOST, False),
    # allow of another operation
    ([acl(ALICE, Op.WRITE)], ALICE, Op.READ, RT.TOPIC, "logs", HOST, False),
    # same name, other resource type
    ([acl(ALICE, Op.READ, resourceType=RT.GROUP)], ALICE, Op.READ, RT.TOPIC, "logs", HOST, False),
    # deny wins over allow
    ([acl(ALICE, Op.READ), acl(ALICE, Op.READ, DENY)], ALICE, Op.READ, RT.TOPIC, "logs", HOST, False),
    # deny All wins over allow Read
    ([acl(ALICE, Op.READ), acl(ALICE, Op.ALL, DENY)], ALICE, Op.READ, RT.TOPIC, "logs", HOST, False),
    # deny of another operation leaves the allow
    ([acl(ALICE, Op.READ), acl(ALICE, Op.WRITE, DENY)], ALICE, Op.READ, RT.TOPIC, "logs", HOST, True),
    # allow All allows anything
    ([acl(ALICE, Op.ALL)], ALICE, Op.ALTER_CONFIGS, RT.TOPIC, "logs", HOST, True),
    # Read, Write, Delete, Alter imply Describe
    ([acl(ALICE, Op.READ)], ALICE, Op.DESCRIBE, RT.TOPIC, "logs", HOST, True),
    ([acl(ALICE, Op.WRITE)], ALICE, Op.DESCRIBE, RT.TOPIC, "logs", HOST, True),
    ([acl(ALICE, Op.DELETE)], ALICE, Op.DESCRIBE, RT.TOPIC, "logs", HOST, True),
    ([acl(ALICE, Op.ALTER)], ALICE, Op.DESCRIBE, RT.TOPIC, "logs", HOST, True),
    # ... but Create and DescribeConfigs do not, and Describe implies nothing
    ([acl(ALICE, Op.CREATE)], ALICE, Op.DESCRIBE, RT.TOPIC, "logs", HOST, False),
    ([acl(ALICE, Op.DESCRIBE_CONFIGS)], ALICE, Op.DESCRIBE, RT.TOPIC, "logs", HOST, False),
    ([acl(ALICE, Op.DESCRIBE)], ALICE, Op.READ, RT.TOPIC, "logs", HOST, False),
    # a deny of Read does not deny the Describe it would imply
    ([acl(ALICE, Op.WRITE), acl(ALICE, Op.READ, DENY)], ALICE, Op.DESCRIBE, RT.TOPIC, "logs", HOST, True),
    # ... a deny of Describe does, even with Write allowed; Write itself stays
    ([acl(ALICE, Op.WRITE), acl(ALICE, Op.DESCRIBE, DENY)], ALICE, Op.DESCRIBE, RT.TOPIC, "logs", HOST, False),
    ([acl(ALICE, Op.WRITE), acl(ALICE, Op.DESCRIBE, DENY)], ALICE, Op.WRITE, RT.TOPIC, "logs", HOST, True),
    # AlterConfigs implies DescribeConfigs, not the other way round
    ([acl(ALICE, Op.ALTER_CONFIGS)], ALICE, Op.DESCRIBE_CONFIGS, RT.TOPIC, "logs", HOST, True),
    ([acl(ALICE, Op.DESCRIBE_CONFIGS)], ALICE, Op.ALTER_CONFIGS, RT.TOPIC, "logs", HOST, False),
    # Write does not imply IdempotentWrite (Kafka 2.3)
    ([acl(ALICE, Op.WRITE, name="kafka-cluster", resourceType=RT.CLUSTER)], ALICE, Op.IDEMPOTENT_WRITE, RT.CLUSTER, "kafka-cluster", HOST, False),
    # User:* matches everyone, in allow and in deny
    ([acl("User:*", Op.READ)], ALICE, Op.READ, RT.TOPIC, "logs", HOST, True),
    ([acl(ALICE, Op.READ), acl("User:*", Op.READ, DENY)], ALICE, Op.READ, RT.TOPIC, "logs", HOST, False),
    # hosts: exact or *
    ([acl(ALICE, Op.READ, host=HOST)], ALICE, Op.READ, RT.TOPIC, "logs", HOST, True),
    ([acl(ALICE, Op.READ, host="10.0.0.2")], ALICE, Op.READ, RT.TOPIC, "logs", HOST, False),
    ([acl(ALICE, Op.READ), acl(ALICE, Op.READ, DENY, host=HOST)], ALICE, Op.READ, RT.TOPIC, "logs", HOST, False),
    ([acl(ALICE, Op.READ), acl(ALICE, Op.READ, DENY, host="10.0.0.2")], ALICE, Op.READ, RT.TOPIC, "logs", HOST, True),
    # the literal name * is every resource of its type
    ([acl(ALICE, Op.READ, name="*")], ALICE, Op.READ, RT.TOPIC, "anything", HOST, True),
    ([acl(ALICE, Op.READ), acl(ALICE, Op.READ, DENY, name="*")], ALICE, Op.READ, RT.TOPIC, "logs", HOST, False),
    ([acl(ALICE, Op.READ, name="*")], ALICE, Op.READ, RT.GROUP, "anything", HOST, False),
    # prefixes: any prefix of the name, the whole name included; not the other way round
    ([acl(ALICE, Op.READ, name="lo", pattern=PREFIXED)], ALICE, Op.READ, RT.TOPIC, "logs", HOST, True),
    ([acl(ALICE, Op.READ, name="logs", pattern=PREFIXED)], ALICE, Op.READ, RT.TOPIC, "logs", HOST, True),
    ([acl(ALICE, Op.READ, name="logs-", pattern=PREFIXED)], ALICE, Op.READ, RT.TOPIC, "logs", HOST, False),
    ([acl(ALICE, Op.READ, name="x", pattern=PREFIXED)], ALICE, Op.READ, RT.TOPIC, "logs", HOST, False),
    # a prefixed * is the character *, not a wildcard
    ([acl(ALICE, Op.READ, name="*", pattern=PREFIXED)], ALICE, Op.READ, RT.TOPIC, "logs", HOST, False),
    # a prefixed deny beats a literal allow
    ([acl(ALICE, Op.READ), acl(ALICE, Op.READ, DENY, name="l", pattern=PREFIXED)], ALICE, Op.READ, RT.TOPIC, "logs", HOST, False),
    # several prefixes of different lengths
    ([acl(BOB, Op.READ, name="l", pattern=PREFIXED), acl(ALICE, Op.READ, name="log", pattern=PREFIXED)],
     ALICE, Op.READ, RT.TOPIC, "logs", HOST, True),
    # a literal ACL is not a prefix
    ([acl(ALICE, Op.READ, name="lo")], ALICE, Op.READ, RT.TOPIC, "logs", HOST, False),
    # groups and the cluster
    ([acl(ALICE, Op.READ, name="g", resourceType=RT.GROUP)], ALICE, Op.READ, RT.GROUP, "g", HOST, True),
    ([acl(ALICE, Op.ALTER, name="kafka-cluster", resourceType=RT.CLUSTER)], ALICE, Op.DESCRIBE, RT.CLUSTER, "kafka-cluster", HOST, True),
]


@pytest.mark.parametrize("acls, principal, operation, resourceType, name, host, allowed", RULES)
def test_rules(acls, principal, operation, resourceType, name, host, allowed):
    assert authorizer(acls).authorize(principal, host, operation, resourceType, name) is allowed


def test_superUsersMayDoAnythingWhateverTheAcls():
    denyAll = [acl("User:*", Op.ALL, DENY, name="*"), acl("User:*", Op.ALL, DENY, name="*", resourceType=RT.CLUSTER)]
    decide = authorizer(denyAll, superUsers=["User:admin"]).authorize
    assert decide("User:admin", HOST, Op.WRITE, RT.TOPIC, "logs")
    assert decide("User:admin", HOST, Op.ALTER, RT.CLUSTER, "kafka-cluster")
    assert decide("User:admin", HOST, Op.READ, RT.GROUP, "g")  # no ACL at all on groups
    assert not decide(ALICE, HOST, Op.WRITE, RT.TOPIC, "logs")


def test_allowEveryoneIfNoAclOnlyWhereTheResourceHasNone():
    decide = authorizer([acl(BOB, Op.READ)], allowEveryoneIfNoAcl=True).authorize
    assert decide(ALICE, HOST, Op.WRITE, RT.TOPIC, "other")  # no ACL on it
    assert not decide(ALICE, HOST, Op.READ, RT.TOPIC, "logs")  # bob's ACL is there: alice has none
    assert decide(BOB, HOST, Op.READ, RT.TOPIC, "logs")
    wildcard = authorizer([acl(BOB, Op.READ, name="*")], allowEveryoneIfNoAcl=True).authorize
    assert not wildcard(ALICE, HOST, Op.READ, RT.TOPIC, "other")  # the wildcard ACL matches every topic


def test_changesDecideTheNextCall():
    """Decisions are remembered, and forgotten once the ACLs change."""
    store = MemoryStore()
    auth = AclAuthorizer(store)
    assert not auth.authorize(ALICE, HOST, Op.WRITE, RT.TOPIC, "logs")
    d = auth.addAcls([acl(ALICE, Op.WRITE)])
    assert d.called and store.acls() == {acl(ALICE, Op.WRITE)}
    assert auth.authorize(ALICE, HOST, Op.WRITE, RT.TOPIC, "logs")
    auth.addAcls([acl(ALICE, Op.WRITE, DENY, name="l", pattern=PREFIXED)])
    assert not auth.authorize(ALICE, HOST, Op.WRITE, RT.TOPIC, "logs")
    auth.removeAcls([acl(ALICE, Op.WRITE, DENY, name="l", pattern=PREFIXED)])
    assert auth.authorize(ALICE, HOST, Op.WRITE, RT.TOPIC, "logs")
    assert auth.acls() == {acl(ALICE, Op.WRITE)}


def test_rememberedDecisionsAreBounded(monkeypatch):
    from kafkaw.broker import authorizer as module

    monkeypatch.setattr(module, "_MAX_DECISIONS", 10)
    auth = authorizer([acl(ALICE, Op.READ, name="t", pattern=PREFIXED)])
    for n in range(25):
        assert auth.authorize(ALICE, HOST, Op.READ, RT.TOPIC, f"t{n}")
        assert len(auth._decisions) <= 10


def test_aFailedStoreChangesNothing():
    from twisted.internet import defer

    from kafkaw.storage.interfaces import StorageError

    store = MemoryStore()
    auth = AclAuthorizer(store)
    store.addAcls = lambda bindings: defer.fail(StorageError("disk full"))
    failures = []
    auth.addAcls([acl(ALICE, Op.READ)]).addErrback(failures.append)
    assert failures and failures[0].check(StorageError)
    assert not auth.authorize(ALICE, HOST, Op.READ, RT.TOPIC, "logs")


# --- filters ---------------------------------------------------------------------


def filt(resourceType=RT.ANY, name=None, pattern=ANY_PATTERN, principal=None, host=None, operation=Op.ANY, permission=Permission.ANY):
    return AclBinding(resourceType, name, pattern, principal, host, operation, permission)


LOGS = acl(ALICE, Op.READ)  # literal topic "logs"
WILD = acl(ALICE, Op.READ, name="*")
PREFIX = acl(ALICE, Op.READ, name="lo", pattern=PREFIXED)
GROUP = acl(BOB, Op.WRITE, DENY, name="logs", resourceType=RT.GROUP, host=HOST)

FILTERS = [
    (filt(), {LOGS, WILD, PREFIX, GROUP}),
    (filt(RT.TOPIC), {LOGS, WILD, PREFIX}),
    (filt(RT.GROUP), {GROUP}),
    (filt(name="logs"), {LOGS, GROUP}),  # ANY pattern: the name as stored
    (filt(name="logs", pattern=LITERAL), {LOGS, GROUP}),
    (filt(pattern=PREFIXED), {PREFIX}),
    (filt(name="lo", pattern=PREFIXED), {PREFIX}),
    (filt(RT.TOPIC, name="logs", pattern=MATCH), {LOGS, WILD, PREFIX}),  # every ACL that applies to topic logs
    (filt(RT.TOPIC, name="lx", pattern=MATCH), {WILD}),
    (filt(principal=BOB), {GROUP}),
    (filt(host=HOST), {GROUP}),
    (filt(host="*"), {LOGS, WILD, PREFIX}),
    (filt(operation=Op.WRITE), {GROUP}),
    (filt(permission=DENY), {GROUP}),
    (filt(resourceType=RT.UNKNOWN), set()),
    (filt(operation=Op.UNKNOWN), set()),
]


@pytest.mark.parametrize("aclFilter, matched", FILTERS)
def test_filters(aclFilter, matched):
    assert {a for a in (LOGS, WILD, PREFIX, GROUP) if matchesFilter(a, aclFilter)} == matched


def test_definiteFilters():
    assert isDefinite(LOGS)
    assert isDefinite(LOGS._replace(patternType=ANY_PATTERN))  # as Kafka: then refused as an ACL
    for indefinite in (
        LOGS._replace(resourceType=RT.ANY), LOGS._replace(resourceName=None), LOGS._replace(patternType=MATCH),
        LOGS._replace(principal=None), LOGS._replace(host=None), LOGS._replace(operation=Op.ANY),
        LOGS._replace(permission=Permission.ANY),
    ):
        assert not isDefinite(indefinite)


@pytest.mark.parametrize("binding, why", [
    (LOGS, None),
    (LOGS._replace(resourceType=0), "unknown resource type 0"),
    (LOGS._replace(resourceType=99), "unknown resource type 99"),
    (LOGS._replace(patternType=ANY_PATTERN), "unknown pattern type 1"),
    (LOGS._replace(operation=0), "unknown operation 0"),
    (LOGS._replace(permission=-3), "unknown permission type -3"),
    (LOGS._replace(principal="alice"), "expected a principal in the form TYPE:NAME, such as User:alice, not 'alice'"),
])
def test_bindingErrors(binding, why):
    assert bindingError(binding) == why


def test_creationErrors():
    assert creationError(LOGS) is None
    assert creationError(LOGS._replace(resourceName="")) == "invalid empty resource name"
    cluster = acl(ALICE, Op.ALTER, resourceType=RT.CLUSTER, name="kafka-cluster")
    assert creationError(cluster) is None
    assert creationError(cluster._replace(resourceName="mine")) == "the only valid name for the CLUSTER resource is kafka-cluster"
    assert bindingError(cluster._replace(resourceName="mine")) is None  # a DeleteAcls filter may name it


def test_aChangeMadeInTheStoreItselfDecidesTheNextCall():
    """A store shared by brokers, or reopened, changes its ACLs without this authorizer."""
    store = MemoryStore()
    auth = AclAuthorizer(store)
    assert not auth.authorize(ALICE, HOST, Op.READ, RT.TOPIC, "logs")
    store.addAcls([acl(ALICE, Op.READ)])
    assert auth.authorize(ALICE, HOST, Op.READ, RT.TOPIC, "logs")
    store.removeAcls([acl(ALICE, Op.READ)])
    assert not auth.authorize(ALICE, HOST, Op.READ, RT.TOPIC, "logs")
