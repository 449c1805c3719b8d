"""Handlers of the cluster and admin APIs: Metadata, CreateTopics,
DeleteTopics, CreatePartitions, DescribeConfigs and InitProducerId, every
version Kafka 2.3.0 serves.

Each partition has one replica, its leader, as the broker's membership
(L{kafkaw.broker.membership}) says: a single broker leads every partition at
leader epoch 0; brokers sharing PostgreSQL hold leases.
"""

from twisted.internet import defer
from twisted.python.failure import Failure

from kafkaw.broker.authorizer import CLUSTER_NAME, NO_OPERATIONS, OPERATIONS_NOT_ASKED, Operation, ResourceType
from kafkaw.broker.interfaces import TopicError
from kafkaw.protocol import schema
from kafkaw.protocol.errors import ErrorCode
from kafkaw.storage.interfaces import StorageError

METADATA = 3
CREATE_TOPICS = 19
DELETE_TOPICS = 20
INIT_PRODUCER_ID = 22
DESCRIBE_CONFIGS = 32
CREATE_PARTITIONS = 37

_RESOURCE_TOPIC = 2
_RESOURCE_BROKER = 4
_SOURCE_TOPIC = 1  # DYNAMIC_TOPIC_CONFIG: set on the topic
_SOURCE_DEFAULT = 5  # DEFAULT_CONFIG: what the broker applies when the topic sets nothing


def metadata(header, request, gateway):
    broker = gateway.broker
    cluster = broker.cluster
    version = header.apiVersion
    host, port = gateway.connection.localAddress()
    ownHost = broker.advertisedHost if broker.advertisedHost is not None else host
    ownPort = broker.advertisedPort if broker.advertisedPort is not None else port
    brokerId = cluster.brokerId
    membership = broker.membership
    topics = request.topics
    if topics is not None:
        topics = [topic.name for topic in topics]
        if version == 0 and not topics:
            topics = None  # v0: an empty list asks for every topic; v1+ has null for that
    autoCreate = request.allowAutoTopicCreation if version >= 4 else True
    refused = {}  # name -> error code, for topics the ACLs hide or may not create (--acls)
    if broker.authorizer is not None and topics is not None:
        refused = _refusedTopics(gateway, topics, autoCreate)

    def answer(described):
        if refused:  # back in the order asked, with the refused topics
            found = iter(described)
            described = [(name, refused[name], 0) if name in refused else next(found) for name in topics]
        elif topics is None and broker.authorizer is not None:
            # Every topic: only those the principal may Describe, silently, as Kafka.
            described = [d for d in described if gateway.sees(Operation.DESCRIBE, ResourceType.TOPIC, d[0])]
        topicOperations = version >= 8 and request.includeTopicAuthorizedOperations
        answers = []
        for name, error, count in described:
            if version == 0 and error == ErrorCode.INVALID_TOPIC:
                error = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION  # Kafka 0.8's answer to an illegal name
            partitions = []
            for p in range(count):
                leaderId, epoch = membership.leader(name, p)
                replicas = [leaderId] if leaderId >= 0 else []
                partitions.append({
                    "errorCode": ErrorCode.NONE if leaderId >= 0 else ErrorCode.LEADER_NOT_AVAILABLE,
                    "partitionIndex": p, "leaderId": leaderId, "leaderEpoch": epoch,
                    "replicaNodes": replicas, "isrNodes": replicas, "offlineReplicas": [],
                })
            operations = OPERATIONS_NOT_ASKED
            if topicOperations and error != ErrorCode.TOPIC_AUTHORIZATION_FAILED:
                operations = gateway.authorizedOperations(ResourceType.TOPIC, name)
            answers.append({"errorCode": error, "name": name, "isInternal": False, "partitions": partitions,
                            "topicAuthorizedOperations": operations})
        clusterOperations = OPERATIONS_NOT_ASKED
        if version >= 8 and request.includeClusterAuthorizedOperations:
            clusterOperations = (
                gateway.authorizedOperations(ResourceType.CLUSTER, CLUSTER_NAME)
                if gateway.sees(Operation.DESCRIBE, ResourceType.CLUSTER, CLUSTER_NAME) else NO_OPERATIONS
            )
        return schema.encodeResponse(
            METADATA, version, header.correlationId,
            {
                "throttleTimeMs": 0,
                "brokers": [
                    {"nodeId": nodeId, "host": nodeHost if nodeHost is not None else ownHost,
                     "port": nodePort if nodePort is not None else ownPort, "rack": None}
                    for nodeId, nodeHost, nodePort in membership.brokers()
                ],
                "clusterId": cluster.clusterId,
                "controllerId": brokerId,
                "topics": answers,
                "clusterAuthorizedOperations": clusterOperations,
            },
        )

    asked = [name for name in topics if name not in refused] if refused else topics
    return cluster.describeTopics(asked, autoCreate).addCallback(answer)


def _refusedTopics(gateway, names, autoCreate):
    """{name: error code} of the topics of a Metadata naming C{names} that
    the ACLs refuse, as Kafka 2.3: 29 without Describe on the topic (whether
    it exists or not), and 29 for an unknown one the principal may not
    create (Create on the cluster or on the topic)."""
    cluster = gateway.broker.cluster
    refused = dict.fromkeys(gateway.denied(Operation.DESCRIBE, ResourceType.TOPIC, names), ErrorCode.TOPIC_AUTHORIZATION_FAILED)
    if autoCreate and cluster.autoCreateTopics:
        existing = cluster.topics()
        unknown = [name for name in names if name not in existing and name not in refused]
        if unknown and not gateway.allowed(Operation.CREATE, ResourceType.CLUSTER, CLUSTER_NAME):
            refused.update(dict.fromkeys(gateway.denied(Operation.CREATE, ResourceType.TOPIC, unknown), ErrorCode.TOPIC_AUTHORIZATION_FAILED))
    return refused


def createTopics(header, request, gateway):
    """Each topic is created (or, with validate_only, checked), or refused with its own error code.

    With --acls, a topic needs Create on the cluster or on itself (else 29)."""
    version = header.apiVersion
    topics = request.topics
    denied = ()
    if gateway.broker.authorizer is not None and not gateway.allowed(Operation.CREATE, ResourceType.CLUSTER, CLUSTER_NAME):
        denied = gateway.denied(Operation.CREATE, ResourceType.TOPIC, [topic.name for topic in topics])
    d = gateway.broker.cluster.createTopics([topic for topic in topics if topic.name not in denied], request.validateOnly)

    def answer(results):
        if denied:  # back in the order asked, with the refused topics
            created = iter(results)
            results = [
                (t.name, ErrorCode.TOPIC_AUTHORIZATION_FAILED, "Authorization failed.") if t.name in denied else next(created)
                for t in topics
            ]
        return schema.encodeResponse(
            CREATE_TOPICS, version, header.correlationId,
            {"topics": [{"name": name, "errorCode": code, "errorMessage": message} for name, code, message in results]},
        )

    return d.addCallback(answer)


def _topicErrors(reason, name, gateway):
    """(error code, message) of a failed topic change."""
    if reason.check(TopicError):
        return reason.value.errorCode, str(reason.value)
    if reason.check(StorageError):
        gateway.log.warn("changing topic {topic} failed: {why}", topic=name, why=reason.getErrorMessage())
        return ErrorCode.UNKNOWN, reason.getErrorMessage()
    gateway.log.failure("changing topic {topic} failed", reason, topic=name)
    return ErrorCode.UNKNOWN, "internal error"


@defer.inlineCallbacks
def deleteTopics(header, request, gateway):
    """Each topic is deleted: data removed, parked fetches answered, or its
    own error code (with --acls, 29 without Delete on it)."""
    cluster, coordinator = gateway.broker.cluster, gateway.broker.coordinator
    denied = gateway.denied(Operation.DELETE, ResourceType.TOPIC, request.topicNames)
    results = []
    for name in request.topicNames:
        if name in denied:
            results.append({"name": name, "errorCode": ErrorCode.TOPIC_AUTHORIZATION_FAILED})
            continue
        try:
            yield cluster.deleteTopic(name)
            if coordinator is not None:
                coordinator.topicDeleted(name)
        except Exception:
            code, _ = _topicErrors(Failure(), name, gateway)
            results.append({"name": name, "errorCode": code})
        else:
            results.append({"name": name, "errorCode": 0})
    return schema.encodeResponse(DELETE_TOPICS, header.apiVersion, header.correlationId, {"responses": results})


@defer.inlineCallbacks
def createPartitions(header, request, gateway):
    """Each topic grows, or gets its error code (with --acls, 29 without Alter on it)."""
    cluster = gateway.broker.cluster
    denied = gateway.denied(Operation.ALTER, ResourceType.TOPIC, [topic.name for topic in request.topics])
    results = []
    for topic in request.topics:
        if topic.name in denied:
            results.append({"name": topic.name, "errorCode": ErrorCode.TOPIC_AUTHORIZATION_FAILED,
                            "errorMessage": "The topic authorization is failed."})
            continue
        try:
            if topic.assignments is not None and any(
                set(assignment.brokerIds) != {cluster.brokerId} for assignment in topic.assignments
            ):
                raise TopicError(
                    f"replica assignments must name only this broker ({cluster.brokerId})", ErrorCode.INVALID_REPLICA_ASSIGNMENT
                )
            yield cluster.createPartitions(topic.name, topic.count, request.validateOnly)
        except Exception:
            code, message = _topicErrors(Failure(), topic.name, gateway)
            results.append({"name": topic.name, "errorCode": code, "errorMessage": message})
        else:
            results.append({"name": topic.name, "errorCode": 0, "errorMessage": None})
    return schema.encodeResponse(CREATE_PARTITIONS, header.apiVersion, header.correlationId, {"results": results})


def describeConfigs(header, request, gateway):
    """Topic configs: those the topic sets and the broker's defaults for the rest."""
    cluster = gateway.broker.cluster
    version = header.apiVersion
    results = []
    for resource in request.resources:
        result = {"resourceType": resource.resourceType, "resourceName": resource.resourceName, "errorCode": 0,
                  "errorMessage": None, "configs": []}
        results.append(result)
        if resource.resourceType == _RESOURCE_TOPIC:
            if not gateway.allowed(Operation.DESCRIBE_CONFIGS, ResourceType.TOPIC, resource.resourceName):
                result.update(errorCode=ErrorCode.TOPIC_AUTHORIZATION_FAILED, errorMessage="Topic authorization failed.")
                continue
        elif resource.resourceType == _RESOURCE_BROKER:
            if not gateway.allowed(Operation.DESCRIBE_CONFIGS, ResourceType.CLUSTER, CLUSTER_NAME):
                result.update(errorCode=ErrorCode.CLUSTER_AUTHORIZATION_FAILED, errorMessage="Cluster authorization failed.")
                continue
        if resource.resourceType != _RESOURCE_TOPIC:
            result.update(errorCode=ErrorCode.INVALID_REQUEST, errorMessage="only topic configs are served")
            continue
        try:
            described = cluster.describeConfigs(resource.resourceName)
        except TopicError as e:
            result.update(errorCode=e.errorCode, errorMessage=str(e))
            continue
        wanted = None if resource.configurationKeys is None else set(resource.configurationKeys)
        for name, value, setByTopic in described:
            if wanted is not None and name not in wanted:
                continue
            source = _SOURCE_TOPIC if setByTopic else _SOURCE_DEFAULT
            result["configs"].append({
                "name": name, "value": value, "readOnly": False, "isDefault": not setByTopic,
                "configSource": source, "isSensitive": False,
                "synonyms": [{"name": name, "value": value, "source": source}] if request.includeSynoyms else [],
            })
    return schema.encodeResponse(DESCRIBE_CONFIGS, version, header.correlationId, {"results": results})


def initProducerId(header, request, gateway):
    """A new producer id at epoch 0 for an idempotent producer (with --acls,
    one allowed IdempotentWrite on the cluster, else 31, as Kafka 2.3);
    transactional ids are refused (kafkaw has no transaction coordinator)."""
    version = header.apiVersion

    def answer(error, producerId=-1, producerEpoch=-1):
        return schema.encodeResponse(
            INIT_PRODUCER_ID, version, header.correlationId,
            {"errorCode": error, "producerId": producerId, "producerEpoch": producerEpoch},
        )

    if request.transactionalId is not None:
        gateway.log.info(
            "refusing transactional id {transactionalId} from {peer}: transactions are not served",
            transactionalId=request.transactionalId, peer=gateway.connection.peer,
        )
        return answer(ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
    if not gateway.allowed(Operation.IDEMPOTENT_WRITE, ResourceType.CLUSTER, CLUSTER_NAME):
        return answer(ErrorCode.CLUSTER_AUTHORIZATION_FAILED)

    def failed(reason):
        gateway.log.warn("allocating a producer id failed: {why}", why=reason.getErrorMessage())
        return answer(ErrorCode.UNKNOWN)

    return gateway.broker.cluster.allocateProducerId().addCallbacks(lambda producerId: answer(0, producerId, 0), failed)
