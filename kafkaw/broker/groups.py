"""Handlers of the consumer-group APIs (the classic group protocol of Kafka
2.3.0): FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
OffsetCommit, OffsetFetch, ListGroups, DescribeGroups and DeleteGroups.

This broker coordinates every group; the state machine and the committed
offsets live in the group coordinator (L{kafkaw.broker.coordinator}), these
handlers only translate requests and answers.
"""

import re

from twisted.internet import defer

from kafkaw.broker.authorizer import CLUSTER_NAME, NO_OPERATIONS, OPERATIONS_NOT_ASKED, Operation, ResourceType
from kafkaw.protocol import schema
from kafkaw.protocol.errors import ErrorCode

OFFSET_COMMIT = 8
OFFSET_FETCH = 9
FIND_COORDINATOR = 10
JOIN_GROUP = 11
HEARTBEAT = 12
LEAVE_GROUP = 13
SYNC_GROUP = 14
DESCRIBE_GROUPS = 15
LIST_GROUPS = 16
DELETE_GROUPS = 42

_KEY_TYPE_GROUP = 0
_KEY_TYPE_TRANSACTION = 1
_HOST = re.compile(r"host='([^']*)'|^tcp6?:(.*):\d+$")


def peerHost(peer):
    """The client's IP address in a transport's C{peer} string (Twisted's
    address repr, Autobahn's "tcp:HOST:PORT"), or None (a unix socket)."""
    match = _HOST.search(str(peer))
    return (match.group(1) or match.group(2)) if match else None


def _clientHost(peer):
    """The client's host as Kafka's DescribeGroups shows it ("/127.0.0.1")."""
    host = peerHost(peer)
    return str(peer) if host is None else "/" + host


def _encode(apiKey, header, value):
    return schema.encodeResponse(apiKey, header.apiVersion, header.correlationId, value)


def findCoordinator(header, request, gateway):
    """Groups: this broker, at the address the client reached (or the
    advertised one). Transactions have no coordinator here."""
    broker = gateway.broker
    refused = None
    if request.keyType == _KEY_TYPE_GROUP and not gateway.allowed(Operation.DESCRIBE, ResourceType.GROUP, request.key):
        refused = ErrorCode.GROUP_AUTHORIZATION_FAILED
    elif request.keyType == _KEY_TYPE_TRANSACTION and not gateway.allowed(
        Operation.DESCRIBE, ResourceType.TRANSACTIONAL_ID, request.key
    ):
        refused = ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    if refused is not None:
        return _encode(FIND_COORDINATOR, header, {
            "errorCode": refused, "errorMessage": None, "nodeId": -1, "host": "", "port": -1,
        })
    if request.keyType != _KEY_TYPE_GROUP:
        return _encode(FIND_COORDINATOR, header, {
            "errorCode": ErrorCode.COORDINATOR_NOT_AVAILABLE, "errorMessage": "transactions are not served",
            "nodeId": -1, "host": "", "port": -1,
        })
    host, port = gateway.connection.localAddress()
    nodeId = broker.membership.coordinator(request.key)
    for liveId, liveHost, livePort in broker.membership.brokers():
        if liveId == nodeId:
            return _encode(FIND_COORDINATOR, header, {
                "errorCode": 0, "errorMessage": None, "nodeId": nodeId,
                "host": liveHost if liveHost is not None else (broker.advertisedHost if broker.advertisedHost is not None else host),
                "port": livePort if livePort is not None else (broker.advertisedPort if broker.advertisedPort is not None else port),
            })
    return _encode(FIND_COORDINATOR, header, {
        "errorCode": ErrorCode.COORDINATOR_NOT_AVAILABLE, "errorMessage": "no live broker", "nodeId": -1, "host": "", "port": -1,
    })


def _mayRead(gateway, groupId):
    """May the principal use group C{groupId} (Read on it, --acls)?"""
    return gateway.allowed(Operation.READ, ResourceType.GROUP, groupId)


def _notCoordinator(gateway, groupId):
    """True when another broker of the cluster coordinates C{groupId}: the client asks FindCoordinator again."""
    membership = gateway.broker.membership
    return membership.coordinator(groupId) != membership.brokerId


_NOT_COORDINATOR = {"errorCode": ErrorCode.NOT_COORDINATOR}


def joinGroup(header, request, gateway):
    version = header.apiVersion
    if not _mayRead(gateway, request.groupId):
        return _encode(JOIN_GROUP, header, {
            "errorCode": ErrorCode.GROUP_AUTHORIZATION_FAILED, "generationId": -1, "protocolName": "", "leader": "",
            "memberId": "", "members": [],
        })
    if _notCoordinator(gateway, request.groupId):
        return _encode(JOIN_GROUP, header, dict(
            _NOT_COORDINATOR, generationId=-1, protocolName="", leader="", memberId=request.memberId or "", members=[],
        ))
    instanceId = request.groupInstanceId if version >= 5 else None
    d = gateway.broker.coordinator.joinGroup(
        request.groupId, request.memberId, instanceId, request.protocolType,
        [(p.name, p.metadata) for p in request.protocols], request.sessionTimeoutMs,
        request.rebalanceTimeoutMs if version >= 1 else -1, header.clientId or "",
        _clientHost(gateway.connection.peer), version >= 4 and instanceId is None,
    )

    def answer(joined):
        return _encode(JOIN_GROUP, header, {
            "errorCode": joined.errorCode, "generationId": joined.generationId,
            "protocolName": joined.protocolName or "", "leader": joined.leaderId or "", "memberId": joined.memberId or "",
            "members": [{"memberId": m.memberId, "groupInstanceId": m.groupInstanceId, "metadata": m.metadata} for m in joined.members],
        })

    return d.addCallback(answer)


def syncGroup(header, request, gateway):
    if not _mayRead(gateway, request.groupId):
        return _encode(SYNC_GROUP, header, {"errorCode": ErrorCode.GROUP_AUTHORIZATION_FAILED, "assignment": b""})
    if _notCoordinator(gateway, request.groupId):
        return _encode(SYNC_GROUP, header, dict(_NOT_COORDINATOR, assignment=b""))
    instanceId = request.groupInstanceId if header.apiVersion >= 3 else None
    d = gateway.broker.coordinator.syncGroup(
        request.groupId, request.generationId, request.memberId, instanceId,
        {a.memberId: a.assignment for a in request.assignments},
    )
    return d.addCallback(lambda synced: _encode(SYNC_GROUP, header, {"errorCode": synced.errorCode, "assignment": synced.assignment or b""}))


def heartbeat(header, request, gateway):
    if not _mayRead(gateway, request.groupId):
        return _encode(HEARTBEAT, header, {"errorCode": ErrorCode.GROUP_AUTHORIZATION_FAILED})
    if _notCoordinator(gateway, request.groupId):
        return _encode(HEARTBEAT, header, _NOT_COORDINATOR)
    instanceId = request.groupInstanceId if header.apiVersion >= 3 else None
    error = gateway.broker.coordinator.heartbeat(request.groupId, request.generationId, request.memberId, instanceId)
    return _encode(HEARTBEAT, header, {"errorCode": error})


def leaveGroup(header, request, gateway):
    if not _mayRead(gateway, request.groupId):
        return _encode(LEAVE_GROUP, header, {"errorCode": ErrorCode.GROUP_AUTHORIZATION_FAILED})
    if _notCoordinator(gateway, request.groupId):
        return _encode(LEAVE_GROUP, header, _NOT_COORDINATOR)
    error = gateway.broker.coordinator.leaveGroup(request.groupId, request.memberId)
    return _encode(LEAVE_GROUP, header, {"errorCode": error})


def offsetCommit(header, request, gateway):
    """Offsets of partitions that exist go to the coordinator in one commit;
    those of unknown topics or partitions get error 3, as Kafka answers.
    With --acls: Read on the group (else 30 for all) and on each topic (else 29)."""
    version = header.apiVersion
    if _notCoordinator(gateway, request.groupId):
        return _encode(OFFSET_COMMIT, header, {"topics": [
            {"name": topic.name, "partitions": [
                {"partitionIndex": p.partitionIndex, "errorCode": ErrorCode.NOT_COORDINATOR} for p in topic.partitions
            ]}
            for topic in request.topics
        ]})
    cluster = gateway.broker.cluster
    if not _mayRead(gateway, request.groupId):
        refused = {(t.name, p.partitionIndex): ErrorCode.GROUP_AUTHORIZATION_FAILED for t in request.topics for p in t.partitions}
    else:
        denied = gateway.denied(Operation.READ, ResourceType.TOPIC, [t.name for t in request.topics])
        refused = {(t.name, p.partitionIndex): ErrorCode.TOPIC_AUTHORIZATION_FAILED
                   for t in request.topics if t.name in denied for p in t.partitions}
    offsets, unknown = {}, set()
    for topic in request.topics:
        for p in topic.partitions:
            key = (topic.name, p.partitionIndex)
            if key in refused:
                continue
            if cluster.partition(*key) is None:
                unknown.add(key)
            else:
                offsets[key] = (
                    p.committedOffset, p.committedLeaderEpoch if version >= 6 else -1, p.committedMetadata,
                    p.commitTimestamp if version == 1 else -1,
                )
    committed = (
        gateway.broker.coordinator.commitOffsets(
            request.groupId, request.generationId, request.memberId,
            request.groupInstanceId if version >= 7 else None, offsets,
        )
        if offsets else defer.succeed({})
    )

    def answer(errors):
        return _encode(OFFSET_COMMIT, header, {"topics": [
            {"name": topic.name, "partitions": [
                {"partitionIndex": p.partitionIndex,
                 "errorCode": refused.get((topic.name, p.partitionIndex))
                 or (ErrorCode.UNKNOWN_TOPIC_OR_PARTITION if (topic.name, p.partitionIndex) in unknown
                     else errors[topic.name, p.partitionIndex])}
                for p in topic.partitions
            ]}
            for topic in request.topics
        ]})

    return committed.addCallback(answer)


def offsetFetch(header, request, gateway):
    """With --acls: Describe on the group (else 30) and on each topic (else
    29 for its partitions; asked for all, the others are left out), as Kafka."""
    version = header.apiVersion
    if not gateway.allowed(Operation.DESCRIBE, ResourceType.GROUP, request.groupId):
        error = ErrorCode.GROUP_AUTHORIZATION_FAILED
        topics = []
        if version < 2:  # no top-level error code: each partition asked says it
            topics = [{"name": t.name, "partitions": [
                {"partitionIndex": index, "committedOffset": -1, "committedLeaderEpoch": -1, "metadata": "", "errorCode": error}
                for index in t.partitionIndexes
            ]} for t in request.topics or []]
        return _encode(OFFSET_FETCH, header, {"errorCode": error, "topics": topics})
    if _notCoordinator(gateway, request.groupId):
        return _encode(OFFSET_FETCH, header, {"errorCode": ErrorCode.NOT_COORDINATOR, "topics": [
            {"name": topic.name, "partitions": [
                {"partitionIndex": index, "committedOffset": -1, "committedLeaderEpoch": -1, "metadata": "",
                 "errorCode": ErrorCode.NOT_COORDINATOR}
                for index in topic.partitionIndexes
            ]}
            for topic in request.topics or []
        ]})
    partitions = denied = None
    if request.topics is not None:
        denied = gateway.denied(Operation.DESCRIBE, ResourceType.TOPIC, [t.name for t in request.topics])
        partitions = [(t.name, index) for t in request.topics if t.name not in denied for index in t.partitionIndexes]
    d = gateway.broker.coordinator.fetchOffsets(request.groupId, partitions)

    def answer(fetched):
        error, offsets = fetched
        byTopic = {}
        for (topic, partition), found in sorted(offsets.items()):
            if denied is None and not gateway.sees(Operation.DESCRIBE, ResourceType.TOPIC, topic):
                continue
            byTopic.setdefault(topic, []).append({
                "partitionIndex": partition, "committedOffset": found.offset, "committedLeaderEpoch": found.leaderEpoch,
                "metadata": found.metadata, "errorCode": found.errorCode,
            })
        for t in request.topics or []:
            if t.name in denied:
                byTopic.setdefault(t.name, []).extend(
                    {"partitionIndex": index, "committedOffset": -1, "committedLeaderEpoch": -1, "metadata": "",
                     "errorCode": ErrorCode.TOPIC_AUTHORIZATION_FAILED}
                    for index in t.partitionIndexes
                )
        return _encode(OFFSET_FETCH, header, {
            "errorCode": error, "topics": [{"name": topic, "partitions": parts} for topic, parts in byTopic.items()],
        })

    return d.addCallback(answer)


def listGroups(header, request, gateway):
    """Every group, or with --acls and no Describe on the cluster, those the principal may Describe."""
    groups = gateway.broker.coordinator.listGroups()
    if not gateway.sees(Operation.DESCRIBE, ResourceType.CLUSTER, CLUSTER_NAME):
        groups = [g for g in groups if gateway.sees(Operation.DESCRIBE, ResourceType.GROUP, g.groupId)]
    return _encode(LIST_GROUPS, header, {
        "errorCode": 0, "groups": [{"groupId": g.groupId, "protocolType": g.protocolType} for g in groups],
    })


def describeGroups(header, request, gateway):
    coordinator = gateway.broker.coordinator
    described = []
    for groupId in request.groups:
        if not gateway.allowed(Operation.DESCRIBE, ResourceType.GROUP, groupId):
            described.append({
                "errorCode": ErrorCode.GROUP_AUTHORIZATION_FAILED, "groupId": groupId, "groupState": "", "protocolType": "",
                "protocolData": "", "members": [], "authorizedOperations": NO_OPERATIONS,
            })
            continue
        group = coordinator.describeGroup(groupId)
        operations = OPERATIONS_NOT_ASKED
        if header.apiVersion >= 3 and request.includeAuthorizedOperations:
            operations = gateway.authorizedOperations(ResourceType.GROUP, groupId) if group.errorCode == 0 else NO_OPERATIONS
        described.append({
            "errorCode": group.errorCode, "groupId": group.groupId, "groupState": group.state,
            "protocolType": group.protocolType or "", "protocolData": group.protocol or "",
            "members": [
                {"memberId": m.memberId, "clientId": m.clientId, "clientHost": m.clientHost,
                 "memberMetadata": m.metadata or b"", "memberAssignment": m.assignment or b""}
                for m in group.members
            ],
            "authorizedOperations": operations,
        })
    return _encode(DESCRIBE_GROUPS, header, {"groups": described})


def deleteGroups(header, request, gateway):
    """Each group is deleted, or gets its error code (with --acls, 30 without Delete on it)."""
    denied = gateway.denied(Operation.DELETE, ResourceType.GROUP, request.groupsNames)
    d = gateway.broker.coordinator.deleteGroups([g for g in request.groupsNames if g not in denied])

    def answer(errors):
        errors.update(dict.fromkeys(denied, ErrorCode.GROUP_AUTHORIZATION_FAILED))
        return _encode(DELETE_GROUPS, header, {
            "results": [{"groupId": groupId, "errorCode": error} for groupId, error in errors.items()],
        })

    return d.addCallback(answer)
