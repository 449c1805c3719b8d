"""ACLs through the gateway (StringTransport, task.Clock, memory store): the
ACL APIs, with and without an authorizer, byte for byte and through the
schema; and each API's check at handler entry, as Kafka 2.3's KafkaApis."""

import struct

import pytest

from kafkaw.broker.authorizer import AclAuthorizer, Operation as Op, PatternType, Permission, ResourceType as RT
from kafkaw.metrics import PrometheusMetrics
from kafkaw.protocol.framing import frame
from kafkaw.protocol.records import encodeBatch
from kafkaw.storage.interfaces import AclBinding
from tests.unit.test_gateway import Harness
from tests.unit.test_groups_gateway import GroupClient, SUBSCRIPTION
from tests.unit.test_modern_gateway import Client

PRODUCE, FETCH, LIST_OFFSETS, METADATA = 0, 1, 2, 3
OFFSET_COMMIT, OFFSET_FETCH, FIND_COORDINATOR, JOIN_GROUP, HEARTBEAT = 8, 9, 10, 11, 12
LEAVE_GROUP, SYNC_GROUP, DESCRIBE_GROUPS, LIST_GROUPS = 13, 14, 15, 16
CREATE_TOPICS, DELETE_TOPICS, INIT_PRODUCER_ID, DESCRIBE_CONFIGS, CREATE_PARTITIONS, DELETE_GROUPS = 19, 20, 22, 32, 37, 42
DESCRIBE_ACLS, CREATE_ACLS, DELETE_ACLS = 29, 30, 31

ANON = "User:ANONYMOUS"
PEER = "192.168.1.1"  # StringTransport's peer
LITERAL, PREFIXED = PatternType.LITERAL, PatternType.PREFIXED
ALLOW, DENY = Permission.ALLOW, Permission.DENY
CLUSTER = "kafka-cluster"
BATCH = encodeBatch([(b"k", b"v")], baseTimestamp=1_000)


def acl(operation, name="t", resourceType=RT.TOPIC, permission=ALLOW, principal=ANON, pattern=LITERAL, host="*"):
    return AclBinding(resourceType, name, pattern, principal, host, operation, permission)


def clusterAcl(operation, permission=ALLOW, principal=ANON):
    return acl(operation, CLUSTER, RT.CLUSTER, permission, principal)


def secured(acls=(), groups=True, **options):
    """A harness whose broker enforces C{acls} (through its memory store)."""
    h = Harness(groups=groups)
    h.createTopic("t", 2)
    h.createTopic("other", 1)
    h.store.addAcls(acls)
    h.broker.authorizer = AclAuthorizer(h.store, **options)
    h.broker.metrics = h.metrics = PrometheusMetrics(h.cluster)
    return h


def denials(harness, operation):
    return harness.metrics.registry.get_sample_value("kafkaw_authorization_denials_total", {"operation": operation}) or 0


def produceTo(client, topics, records=BATCH, version=7):
    answer = client.call(PRODUCE, version, {
        "transactionalId": None, "acks": 1, "timeoutMs": 5000,
        "topics": [{"name": name, "partitions": [{"partitionIndex": 0, "records": records}]} for name in topics],
    })
    return {t.name: t.partitions[0].errorCode for t in answer.responses}


# --- the ACL APIs on the wire --------------------------------------------------------


def string(text):
    data = text.encode()
    return struct.pack(">h", len(data)) + data


def test_createAclsV1ByteForByteWithoutAnAuthorizer():
    """No authorizer (no --acls): SECURITY_DISABLED for each creation, as Kafka."""
    h = Harness()
    body = (
        struct.pack(">i", 1)  # creations: 1
        + struct.pack(">b", 2)  # resource type TOPIC
        + string("t")  # resource name
        + struct.pack(">b", 3)  # pattern type LITERAL (v1+)
        + string("User:alice")  # principal
        + string("*")  # host
        + struct.pack(">b", 3)  # operation READ
        + struct.pack(">b", 3)  # permission ALLOW
    )
    request = struct.pack(">hhi", CREATE_ACLS, 1, 42) + string("test") + body
    response = h.connect().request(frame(request))
    message = b"No Authorizer is configured on the broker (start it with --acls)"
    assert response == (
        struct.pack(">i", 42)  # correlation id
        + struct.pack(">i", 0)  # throttle time
        + struct.pack(">i", 1)  # results: 1
        + struct.pack(">h", 54)  # SECURITY_DISABLED
        + struct.pack(">h", len(message)) + message
    )


def test_describeAclsV0ByteForByte():
    h = secured([acl(Op.READ), acl(Op.WRITE, "t-", pattern=PREFIXED)], allowEveryoneIfNoAcl=True)
    body = (
        struct.pack(">b", 2)  # resource type TOPIC
        + struct.pack(">h", -1)  # name: any
        + struct.pack(">h", -1)  # principal: any
        + struct.pack(">h", -1)  # host: any
        + struct.pack(">b", 1)  # operation ANY
        + struct.pack(">b", 1)  # permission ANY
    )
    response = h.connect().request(frame(struct.pack(">hhi", DESCRIBE_ACLS, 0, 7) + string("test") + body))
    assert response == (
        struct.pack(">i", 7)  # correlation id
        + struct.pack(">i", 0)  # throttle time
        + struct.pack(">h", 0)  # error code
        + struct.pack(">h", -1)  # error message: null
        + struct.pack(">i", 1)  # resources: 1 (v0 is literal only: the prefixed ACL is left out)
        + struct.pack(">b", 2) + string("t")  # TOPIC t
        + struct.pack(">i", 1)  # acls: 1
        + string(ANON) + string("*") + struct.pack(">bb", 3, 3)  # READ ALLOW
    )


def test_withoutAnAuthorizerEveryAclApiSaysSecurityDisabled():
    client = Client(Harness())
    described = client.call(DESCRIBE_ACLS, 1, {
        "resourceType": 1, "resourceNameFilter": None, "resourcePatternType": 1, "principalFilter": None,
        "hostFilter": None, "operation": 1, "permissionType": 1,
    })
    assert (described.errorCode, described.resources) == (54, [])
    deleted = client.call(DELETE_ACLS, 1, {"filters": [filterOf(), filterOf()]})
    assert [(r.errorCode, r.matchingAcls) for r in deleted.filterResults] == [(54, []), (54, [])]


def creation(binding):
    return {"resourceType": binding.resourceType, "resourceName": binding.resourceName,
            "resourcePatternType": binding.patternType, "principal": binding.principal, "host": binding.host,
            "operation": binding.operation, "permissionType": binding.permission}


def filterOf(resourceType=1, name=None, pattern=1, principal=None, host=None, operation=1, permission=1):
    return {"resourceTypeFilter": resourceType, "resourceNameFilter": name, "patternTypeFilter": pattern,
            "principalFilter": principal, "hostFilter": host, "operation": operation, "permissionType": permission}


def describe(client, version=1, **filters):
    request = {"resourceType": 1, "resourceNameFilter": None, "resourcePatternType": 1, "principalFilter": None,
               "hostFilter": None, "operation": 1, "permissionType": 1}
    request.update(filters)
    answer = client.call(DESCRIBE_ACLS, version, request)
    assert answer.errorCode == 0, answer
    return {AclBinding(r.type, r.name, r.patternType, a.principal, a.host, a.operation, a.permissionType)
            for r in answer.resources for a in r.acls}


def test_createDescribeDelete():
    h = secured(allowEveryoneIfNoAcl=True)
    client = Client(h)
    wanted = [acl(Op.READ), acl(Op.WRITE, "lo", pattern=PREFIXED, principal="User:bob", host="10.0.0.1"),
              clusterAcl(Op.ALTER), acl(Op.READ, "g", RT.GROUP, DENY)]
    answer = client.call(CREATE_ACLS, 1, {"creations": [creation(b) for b in wanted]})
    assert [(r.errorCode, r.errorMessage) for r in answer.results] == [(0, None)] * 4
    assert h.store.acls() == set(wanted)
    assert describe(client) == set(wanted)
    assert describe(client, version=0, resourceType=1) == {wanted[0], wanted[2], wanted[3]}  # v0: literal only
    assert describe(client, resourceType=RT.TOPIC, resourceNameFilter="logs", resourcePatternType=PatternType.MATCH) == {wanted[1]}
    assert describe(client, principalFilter="User:bob") == {wanted[1]}
    # v0 creations are literal
    client.call(CREATE_ACLS, 0, {"creations": [creation(acl(Op.DESCRIBE, "v0"))]})
    assert acl(Op.DESCRIBE, "v0") in h.store.acls()

    deleted = client.call(DELETE_ACLS, 1, {"filters": [
        filterOf(RT.TOPIC, pattern=PatternType.ANY),  # both topic ACLs... (and v0's)
        filterOf(RT.TOPIC, name="t", pattern=LITERAL),  # ...so this one matches nothing left
        filterOf(RT.GROUP, operation=Op.WRITE),  # nothing
    ]})
    results = deleted.filterResults
    assert [r.errorCode for r in results] == [0, 0, 0]
    assert {(m.resourceName, m.patternType, m.principal, m.operation, m.errorCode) for m in results[0].matchingAcls} == {
        ("t", LITERAL, ANON, Op.READ, 0), ("lo", PREFIXED, "User:bob", Op.WRITE, 0), ("v0", LITERAL, ANON, Op.DESCRIBE, 0),
    }
    assert results[1].matchingAcls == [] and results[2].matchingAcls == []
    assert h.store.acls() == {wanted[2], wanted[3]}


def test_definiteDeleteFiltersAreCheckedAsAcls():
    h = secured([clusterAcl(Op.ALTER), acl(Op.READ)])
    client = Client(h)
    deleted = client.call(DELETE_ACLS, 1, {"filters": [
        filterOf(RT.TOPIC, "t", LITERAL, ANON, "*", Op.READ, ALLOW),
        filterOf(RT.TOPIC, "t", LITERAL, "anonymous", "*", Op.READ, ALLOW),  # no TYPE:NAME
    ]})
    first, second = deleted.filterResults
    assert [(m.resourceName, m.operation) for m in first.matchingAcls] == [("t", Op.READ)]
    assert (second.errorCode, second.matchingAcls) == (42, [])
    assert "TYPE:NAME" in second.errorMessage
    assert h.store.acls() == {clusterAcl(Op.ALTER)}


@pytest.mark.parametrize("binding, why", [
    (acl(Op.READ, resourceType=0), "unknown resource type 0"),
    (acl(Op.READ, resourceType=77), "unknown resource type 77"),
    (acl(Op.READ, pattern=0), "unknown pattern type 0"),
    (acl(0), "unknown operation 0"),
    (acl(Op.READ, permission=9), "unknown permission type 9"),
    (acl(Op.READ, principal="alice"), "expected a principal in the form TYPE:NAME, such as User:alice, not 'alice'"),
    (acl(Op.READ, name=""), "invalid empty resource name"),
    (acl(Op.ALTER, "mine", RT.CLUSTER), "the only valid name for the CLUSTER resource is kafka-cluster"),
])
def test_invalidCreationsGetInvalidRequestAndTheOthersAreStored(binding, why):
    h = secured(allowEveryoneIfNoAcl=True)
    answer = Client(h).call(CREATE_ACLS, 1, {"creations": [creation(binding), creation(acl(Op.READ))]})
    assert [(r.errorCode, r.errorMessage) for r in answer.results] == [(42, why), (0, None)]
    assert h.store.acls() == {acl(Op.READ)}


@pytest.mark.parametrize("field, value", [
    ("resourceType", RT.ANY), ("resourcePatternType", PatternType.ANY), ("resourcePatternType", PatternType.MATCH),
    ("operation", Op.ANY), ("permissionType", Permission.ANY),
])
def test_creationsKafkaCannotParseCloseTheConnection(field, value):
    h = secured(allowEveryoneIfNoAcl=True)
    client = Client(h)
    client.send(CREATE_ACLS, 1, {"creations": [dict(creation(acl(Op.READ)), **{field: value})]})
    assert client.connection.responses() == []
    assert client.connection.transport.disconnecting
    assert h.store.acls() == frozenset()


def test_aclApisNeedDescribeOrAlterOnTheCluster():
    h = secured([clusterAcl(Op.DESCRIBE)])
    client = Client(h)
    assert describe(client) == {clusterAcl(Op.DESCRIBE)}
    created = client.call(CREATE_ACLS, 1, {"creations": [creation(acl(Op.READ))]})
    assert [r.errorCode for r in created.results] == [31]
    deleted = client.call(DELETE_ACLS, 0, {"filters": [filterOf()]})
    assert [(r.errorCode, r.matchingAcls) for r in deleted.filterResults] == [(31, [])]
    assert h.store.acls() == {clusterAcl(Op.DESCRIBE)}
    nobody = secured([clusterAcl(Op.DESCRIBE, principal="User:admin")])
    answer = Client(nobody).call(DESCRIBE_ACLS, 1, {
        "resourceType": 1, "resourceNameFilter": None, "resourcePatternType": 1, "principalFilter": None,
        "hostFilter": None, "operation": 1, "permissionType": 1,
    })
    assert (answer.errorCode, answer.resources) == (31, [])
    assert denials(nobody, "DESCRIBE") == 1


def test_anAclTakesEffectOnTheNextRequest():
    h = secured([clusterAcl(Op.ALTER)])
    client = Client(h)
    assert produceTo(client, ["t"]) == {"t": 29}
    client.call(CREATE_ACLS, 1, {"creations": [creation(acl(Op.WRITE))]})
    assert produceTo(client, ["t"]) == {"t": 0}
    client.call(DELETE_ACLS, 1, {"filters": [filterOf(RT.TOPIC)]})
    assert produceTo(client, ["t"]) == {"t": 29}
    assert h.store.partitionLog("t", 0).endOffset == 1


# --- each API's check ------------------------------------------------------------


def test_produceWithoutWriteStoresNothing():
    h = secured([acl(Op.WRITE, "other"), acl(Op.READ)])
    client = Client(h)
    assert produceTo(client, ["t", "other"]) == {"t": 29, "other": 0}
    assert h.store.partitionLog("t", 0).endOffset == 0
    assert h.store.partitionLog("other", 0).endOffset == 1
    assert produceTo(client, ["t"], version=2, records=None) == {"t": 29}  # before any check of the records
    assert denials(h, "WRITE") == 2
    # a denied unknown topic says 29, not 3: its existence is not disclosed
    assert produceTo(client, ["nosuch"]) == {"nosuch": 29}


def test_idempotentProduceAndInitProducerIdNeedIdempotentWrite():
    h = secured([acl(Op.WRITE)])
    client = Client(h)
    assert client.call(INIT_PRODUCER_ID, 1, {"transactionalId": None, "transactionTimeoutMs": 1000}).errorCode == 31
    idempotent = encodeBatch([(b"k", b"v")], producerId=1, producerEpoch=0, baseSequence=0, baseTimestamp=1_000)
    assert produceTo(client, ["t"], records=idempotent) == {"t": 31}
    assert produceTo(client, ["t"]) == {"t": 0}  # not idempotent: Write is enough
    h.broker.authorizer.addAcls([clusterAcl(Op.IDEMPOTENT_WRITE)])
    answer = client.call(INIT_PRODUCER_ID, 1, {"transactionalId": None, "transactionTimeoutMs": 1000})
    assert (answer.errorCode, answer.producerId) == (0, 0)
    assert produceTo(client, ["t"], records=encodeBatch([(b"k", b"v")], producerId=0, producerEpoch=0, baseSequence=0)) == {"t": 0}


def test_fetchAndListOffsetsNeedReadAndDescribe():
    h = secured([acl(Op.WRITE), acl(Op.DESCRIBE, "other")])
    client = Client(h)
    produceTo(client, ["t"])
    fetched = client.call(FETCH, 11, {
        "replicaId": -1, "maxWait": 500, "minBytes": 1, "maxBytes": 1 << 20, "isolationLevel": 0, "sessionId": 0, "epoch": -1,
        "topics": [{"name": name, "fetchPartitions": [{"partitionIndex": 0, "currentLeaderEpoch": -1, "fetchOffset": 0,
                                                       "logStartOffset": -1, "maxBytes": 1 << 20}]} for name in ("t", "other")],
        "forgotten": [], "rackId": "",
    })
    assert {(t.name, p.errorCode, p.records, p.highWatermark) for t in fetched.topics for p in t.partitions} == {
        ("t", 29, b"", -1), ("other", 29, b"", -1),
    }
    # Write implies Describe: t's offsets may be listed; other's too (Describe)
    listed = client.call(LIST_OFFSETS, 5, {"replicaId": -1, "isolationLevel": 0, "topics": [
        {"name": name, "partitions": [{"partitionIndex": 0, "currentLeaderEpoch": -1, "timestamp": -1}]} for name in ("t", "other", "x")
    ]})
    assert {(t.name, t.partitions[0].errorCode, t.partitions[0].offset) for t in listed.topics} == {
        ("t", 0, 1), ("other", 0, 0), ("x", 29, -1),
    }


def test_followerFetchesNeedClusterAction():
    h = secured([acl(Op.READ)])
    fetched = Client(h).call(FETCH, 4, {"replicaId": 1, "maxWait": 0, "minBytes": 0, "maxBytes": 1 << 20, "isolationLevel": 0,
                                        "topics": [{"name": "t", "fetchPartitions": [{"partitionIndex": 0, "fetchOffset": 0, "maxBytes": 100}]}]})
    assert fetched.topics[0].partitions[0].errorCode == 29
    assert denials(h, "CLUSTER_ACTION") == 1


def metadataTopics(client, names, version=8, autoCreate=True):
    answer = client.call(METADATA, version, {
        "topics": None if names is None else [{"name": n} for n in names], "allowAutoTopicCreation": autoCreate,
        "includeClusterAuthorizedOperations": False, "includeTopicAuthorizedOperations": False,
    })
    return [(t.name, t.errorCode, len(t.partitions)) for t in answer.topics]


def test_metadataListsOnlyWhatThePrincipalMayDescribe():
    h = secured([acl(Op.READ, "o", pattern=PREFIXED)])
    client = Client(h)
    assert metadataTopics(client, None) == [("other", 0, 1)]
    assert metadataTopics(client, [], version=0) == [("other", 0, 1)]  # v0: empty is every topic
    # named: the others get 29 without partitions, whether they exist or not, in the order asked
    assert metadataTopics(client, ["t", "other", "nosuch"]) == [("t", 29, 0), ("other", 0, 1), ("nosuch", 29, 0)]
    assert "nosuch" not in h.store.topics()


def test_metadataCreatesTopicsOnlyWithCreate():
    h = secured([acl(Op.DESCRIBE, "*"), acl(Op.CREATE, "new1")])
    client = Client(h)
    assert metadataTopics(client, ["new1", "new2"]) == [("new1", 0, 1), ("new2", 29, 0)]
    assert metadataTopics(client, ["new3"], autoCreate=False) == [("new3", 3, 0)]  # not asked to create: unknown
    assert set(h.store.topics()) == {"t", "other", "new1"}
    h.broker.authorizer.addAcls([clusterAcl(Op.CREATE)])
    assert metadataTopics(client, ["new2"]) == [("new2", 0, 1)]


def test_topicAdminNeedsCreateDeleteAlterDescribeConfigs():
    h = secured([acl(Op.CREATE, "mine-", pattern=PREFIXED), acl(Op.DELETE, "other"), acl(Op.ALTER, "other"),
                 acl(Op.DESCRIBE_CONFIGS, "other")])
    client = Client(h)
    created = client.call(CREATE_TOPICS, 3, {"topics": [
        {"name": name, "numPartitions": 1, "replicationFactor": 1, "assignments": [], "configs": []} for name in ("mine-1", "yours", "mine-2")
    ], "timeoutMs": 1000, "validateOnly": False})
    assert [(r.name, r.errorCode) for r in created.topics] == [("mine-1", 0), ("yours", 29), ("mine-2", 0)]
    assert "yours" not in h.store.topics()
    grown = client.call(CREATE_PARTITIONS, 1, {"topics": [
        {"name": name, "count": 3, "assignments": None} for name in ("t", "other")
    ], "timeoutMs": 1000, "validateOnly": False})
    assert [(r.name, r.errorCode) for r in grown.results] == [("t", 29), ("other", 0)]
    configs = client.call(DESCRIBE_CONFIGS, 2, {"resources": [
        {"resourceType": 2, "resourceName": name, "configurationKeys": None} for name in ("t", "other")
    ] + [{"resourceType": 4, "resourceName": "0", "configurationKeys": None}], "includeSynoyms": False})
    assert [(r.resourceName, r.errorCode) for r in configs.results] == [("t", 29), ("other", 0), ("0", 31)]
    deleted = client.call(DELETE_TOPICS, 3, {"topicNames": ["t", "other"], "timeoutMs": 1000})
    assert [(r.name, r.errorCode) for r in deleted.responses] == [("t", 29), ("other", 0)]
    assert set(h.store.topics()) == {"t", "mine-1", "mine-2"}


def test_clusterCreateAllowsEveryTopic():
    h = secured([clusterAcl(Op.CREATE)])
    created = Client(h).call(CREATE_TOPICS, 0, {"topics": [
        {"name": "any", "numPartitions": 1, "replicationFactor": 1, "assignments": [], "configs": []}
    ], "timeoutMs": 1000})
    assert created.topics[0].errorCode == 0


def joinGroup(client, groupId):
    return client.call(JOIN_GROUP, 5, {
        "groupId": groupId, "sessionTimeoutMs": 10000, "rebalanceTimeoutMs": 10000, "memberId": "",
        "groupInstanceId": None, "protocolType": "consumer", "protocols": [{"name": "range", "metadata": SUBSCRIPTION}],
    })


def commit(client, groupId, topics, version=7):
    answer = client.call(OFFSET_COMMIT, version, {
        "groupId": groupId, "generationId": -1, "memberId": "", "groupInstanceId": None, "retentionTimeMs": -1,
        "topics": [{"name": name, "partitions": [{"partitionIndex": 0, "committedOffset": 1, "committedLeaderEpoch": -1,
                                                  "commitTimestamp": -1, "committedMetadata": ""}]} for name in topics],
    })
    return {t.name: t.partitions[0].errorCode for t in answer.topics}


def test_groupApisNeedReadOrDescribeOnTheGroup():
    h = secured([acl(Op.READ, "mine", RT.GROUP), acl(Op.READ, "t")])
    client = GroupClient(h)
    for api, version, request in [
        (FIND_COORDINATOR, 2, {"key": "theirs", "keyType": 0}),
        (HEARTBEAT, 3, {"groupId": "theirs", "generationId": 1, "memberId": "m", "groupInstanceId": None}),
        (LEAVE_GROUP, 2, {"groupId": "theirs", "memberId": "m"}),
        (SYNC_GROUP, 3, {"groupId": "theirs", "generationId": 1, "memberId": "m", "groupInstanceId": None, "assignments": []}),
    ]:
        assert client.call(api, version, request).errorCode == 30, api
    refused = joinGroup(client, "theirs")
    assert (refused.errorCode, refused.generationId, refused.memberId) == (30, -1, "")
    assert joinGroup(client, "mine").errorCode == 79  # MEMBER_ID_REQUIRED: let in
    assert client.call(FIND_COORDINATOR, 2, {"key": "mine", "keyType": 0}).errorCode == 0  # Read implies Describe
    assert commit(client, "theirs", ["t"]) == {"t": 30}
    assert commit(client, "mine", ["t", "other"]) == {"t": 0, "other": 29}
    assert h.store.committedOffsets() == {"mine": {("t", 0): (1, -1, "", h.store.committedOffsets()["mine"][("t", 0)][3])}}
    assert (denials(h, "READ"), denials(h, "DESCRIBE")) == (6, 1)  # FindCoordinator checks Describe


def test_offsetFetchShowsOnlyDescribableTopics():
    h = secured([acl(Op.READ, "g", RT.GROUP), acl(Op.READ, "t"), acl(Op.READ, "other")])
    client = GroupClient(h)
    assert commit(client, "g", ["t", "other"]) == {"t": 0, "other": 0}
    h.broker.authorizer.removeAcls([acl(Op.READ, "other")])
    every = client.call(OFFSET_FETCH, 5, {"groupId": "g", "topics": None})
    assert [(t.name, [p.committedOffset for p in t.partitions]) for t in every.topics] == [("t", [1])]
    named = client.call(OFFSET_FETCH, 1, {"groupId": "g", "topics": [{"name": n, "partitionIndexes": [0]} for n in ("t", "other")]})
    assert {(t.name, t.partitions[0].committedOffset, t.partitions[0].errorCode) for t in named.topics} == {
        ("t", 1, 0), ("other", -1, 29),
    }
    refusedV5 = client.call(OFFSET_FETCH, 5, {"groupId": "x", "topics": None})
    assert (refusedV5.errorCode, refusedV5.topics) == (30, [])
    refusedV1 = client.call(OFFSET_FETCH, 1, {"groupId": "x", "topics": [{"name": "t", "partitionIndexes": [0, 1]}]})
    assert [(p.partitionIndex, p.errorCode) for p in refusedV1.topics[0].partitions] == [(0, 30), (1, 30)]


def test_listDescribeAndDeleteGroups():
    h = secured([acl(Op.READ, "a", RT.GROUP), acl(Op.READ, "b", RT.GROUP), acl(Op.READ, "t"), acl(Op.DELETE, "b", RT.GROUP)])
    client = GroupClient(h)
    commit(client, "a", ["t"])
    commit(client, "b", ["t"])
    h.broker.authorizer.removeAcls([acl(Op.READ, "a", RT.GROUP)])
    assert [g.groupId for g in client.call(LIST_GROUPS, 2, {}).groups] == ["b"]
    described = client.call(DESCRIBE_GROUPS, 3, {"groups": ["a", "b"], "includeAuthorizedOperations": False}).groups
    assert [(g.groupId, g.errorCode, g.groupState) for g in described] == [("a", 30, ""), ("b", 0, "Empty")]
    deleted = client.call(DELETE_GROUPS, 1, {"groupsNames": ["a", "b"]})
    assert sorted((r.groupId, r.errorCode) for r in deleted.results) == [("a", 30), ("b", 0)]
    h.broker.authorizer.addAcls([clusterAcl(Op.DESCRIBE)])
    assert [g.groupId for g in client.call(LIST_GROUPS, 2, {}).groups] == ["a"]  # Describe on the cluster: every group


def test_superUserMayDoEverything():
    h = secured([acl(Op.ALL, "*", permission=DENY, principal="User:*"), clusterAcl(Op.ALL, DENY, "User:*")], superUsers=[ANON])
    client = GroupClient(h)
    assert produceTo(client, ["t"]) == {"t": 0}
    assert metadataTopics(client, None) == [("other", 0, 1), ("t", 0, 2)]
    assert joinGroup(client, "g").errorCode == 79
    assert describe(client) == h.store.acls()
    assert denials(h, "WRITE") == 0


def test_hostsAreTheClientsAddress():
    h = secured([acl(Op.WRITE, host=PEER), acl(Op.WRITE, "other", host="10.9.9.9")])
    assert produceTo(Client(h), ["t", "other"]) == {"t": 0, "other": 29}


def test_aDenialIsLoggedOncePerConnectionAndResource():
    from twisted.logger import globalLogPublisher

    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        h = secured([acl(Op.READ)])
        client = Client(h)
        for _ in range(3):
            produceTo(client, ["t"])
    finally:
        globalLogPublisher.removeObserver(events.append)
    logged = [e for e in events if e.get("log_format", "").startswith("denied {principal}")]
    assert len(logged) == 1
    assert (logged[0]["principal"], logged[0]["operation"], logged[0]["name"]) == (ANON, "WRITE", "t")
    assert denials(h, "WRITE") == 3


# --- the twistd options ---------------------------------------------------------


def test_options(tmp_path):
    from twisted.python import usage

    from tests.unit.test_apiversions import brokerOf

    assert brokerOf([], tmp_path).authorizer is None
    broker = brokerOf(["--acls", "--super-user", "User:admin", "--super-user", "User:ops", "--allow-everyone-if-no-acl"], tmp_path)
    assert broker.authorizer.superUsers == {"User:admin", "User:ops"}
    assert broker.authorizer.allowEveryoneIfNoAcl
    assert not brokerOf(["--acls"], tmp_path).authorizer.allowEveryoneIfNoAcl
    from kafkaw.tap import Options

    for argv in (["--super-user", "User:admin"], ["--allow-everyone-if-no-acl"], ["--acls", "--super-user", "admin"],
                 ["--acls", "--super-user", "User:"]):
        with pytest.raises(usage.UsageError):
            Options().parseOptions(argv)


def test_aStoreWithoutAclsCannotServeAcls(tmp_path, monkeypatch):
    from zope.interface import implementer_only

    from kafkaw import tap
    from kafkaw.storage.interfaces import IStore
    from kafkaw.storage.memory import MemoryStorageFactory, MemoryStore

    @implementer_only(IStore)
    class Bare(MemoryStore):
        """A store that keeps no ACLs."""

    monkeypatch.setattr(MemoryStorageFactory, "openStore", lambda self, dataDir, sync, arguments=None: Bare())
    options = tap.Options()
    options.parseOptions(["--storage", "memory", "--data-dir", str(tmp_path), "--acls"])
    with pytest.raises(SystemExit) as exited:
        tap.makeService(options)
    assert str(exited.value) == "kafkaw: --acls needs a storage backend that keeps ACLs; 'memory' does not"


# --- mutated frames -----------------------------------------------------------------


def test_mutatedAclFramesAreAnsweredOrCloseCleanly():
    """Random mutations of valid ACL API requests: each is answered, or closes the
    connection as undecodable; no handler fails, nothing but valid ACLs is stored."""
    import random

    from twisted.logger import globalLogPublisher

    from kafkaw.protocol import schema

    rng = random.Random(15)
    valid = [
        (CREATE_ACLS, 1, {"creations": [creation(acl(Op.READ)), creation(acl(Op.WRITE, "p", pattern=PREFIXED))]}),
        (CREATE_ACLS, 0, {"creations": [creation(clusterAcl(Op.ALTER))]}),
        (DESCRIBE_ACLS, 1, {"resourceType": 1, "resourceNameFilter": None, "resourcePatternType": 1, "principalFilter": None,
                            "hostFilter": "*", "operation": 1, "permissionType": 1}),
        (DELETE_ACLS, 1, {"filters": [filterOf(), filterOf(RT.TOPIC, "t", LITERAL, ANON, "*", Op.READ, ALLOW)]}),
        (DELETE_ACLS, 0, {"filters": [filterOf(RT.GROUP)]}),
    ]
    failures = []

    def observe(event):
        if event.get("log_failure") is not None:
            failures.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        h = secured(allowEveryoneIfNoAcl=True)
        answered = closed = 0
        for n in range(400):
            apiKey, version, value = rng.choice(valid)
            data = bytearray(schema.encodeRequest(apiKey, version, n, "fuzz", value))
            for _ in range(rng.randrange(1, 4)):
                at = rng.randrange(10, len(data))  # past the api key and version
                if rng.random() < 0.5:
                    data[at] = rng.randrange(256)
                else:
                    del data[at:at + rng.randrange(1, 8)]
            client = h.connect()
            client.send(frame(bytes(data)))
            if client.responses():
                answered += 1
            else:
                assert client.transport.disconnecting
                closed += 1
    finally:
        globalLogPublisher.removeObserver(observe)
    assert not failures, failures[0]
    assert answered > 20 and closed > 20  # both kinds were exercised
    for stored in h.store.acls():
        assert stored.resourceName is not None and ":" in stored.principal


def test_aclChangesAreLoggedBriefly():
    from kafkaw.broker.acls import describe

    assert describe([acl(Op.READ)]) == "User:ANONYMOUS ALLOW READ on TOPIC LITERAL 't' from *"
    many = describe([acl(Op.READ, f"t{n}") for n in range(12)])
    assert many.count(" on TOPIC ") == 10 and many.endswith("; and 2 more")


def bits(*operations):
    return sum(1 << operation for operation in operations)


def test_authorizedOperationsKip430():
    """Metadata v8 and DescribeGroups v3: bits of what the principal may do,
    when asked (-2**31 when not); the cluster's only with Describe on it."""
    h = secured([acl(Op.WRITE), acl(Op.DESCRIBE_CONFIGS, "other"), acl(Op.READ, "g", RT.GROUP), acl(Op.READ)])
    client = GroupClient(h)
    commit(client, "g", ["t"])

    def metadata(topicsToo, clusterToo):
        return client.call(METADATA, 8, {
            "topics": [{"name": "t"}, {"name": "other"}], "allowAutoTopicCreation": False,
            "includeClusterAuthorizedOperations": clusterToo, "includeTopicAuthorizedOperations": topicsToo,
        })

    answer = metadata(True, True)
    # Write and Read imply Describe; other: DescribeConfigs alone, so no Describe: 29, and no bits.
    assert [(t.name, t.errorCode, t.topicAuthorizedOperations) for t in answer.topics] == [
        ("t", 0, bits(Op.READ, Op.WRITE, Op.DESCRIBE)), ("other", 29, -(2**31)),
    ]
    assert answer.clusterAuthorizedOperations == 0  # asked, without Describe on the cluster (Kafka 2.3)
    notAsked = metadata(False, False)
    assert [t.topicAuthorizedOperations for t in notAsked.topics] + [notAsked.clusterAuthorizedOperations] == [-(2**31)] * 3
    h.broker.authorizer.addAcls([clusterAcl(Op.ALTER)])  # Alter implies Describe
    assert metadata(False, True).clusterAuthorizedOperations == bits(Op.ALTER, Op.DESCRIBE)

    def groupOperations(asked):
        described = client.call(DESCRIBE_GROUPS, 3, {"groups": ["g"], "includeAuthorizedOperations": asked}).groups
        return described[0].authorizedOperations

    assert groupOperations(True) == bits(Op.READ, Op.DESCRIBE)
    assert groupOperations(False) == -(2**31)


def test_authorizedOperationsWithoutAnAuthorizerAreEverythingOffered():
    h = Harness(groups=True)
    h.createTopic("t", 1)
    answer = Client(h).call(METADATA, 8, {
        "topics": [{"name": "t"}], "allowAutoTopicCreation": False,
        "includeClusterAuthorizedOperations": True, "includeTopicAuthorizedOperations": True,
    })
    assert answer.topics[0].topicAuthorizedOperations == bits(
        Op.READ, Op.WRITE, Op.CREATE, Op.DELETE, Op.ALTER, Op.DESCRIBE, Op.DESCRIBE_CONFIGS, Op.ALTER_CONFIGS,
    )
    assert answer.clusterAuthorizedOperations == bits(
        Op.CREATE, Op.ALTER, Op.DESCRIBE, Op.CLUSTER_ACTION, Op.DESCRIBE_CONFIGS, Op.ALTER_CONFIGS, Op.IDEMPOTENT_WRITE,
    )
