"""Handlers of the cluster and admin APIs: Metadata, CreateTopics,
DeleteTopics, CreatePartitions, DescribeConfigs and InitProducerId, every
version Kafka 2.3.0 serves.

Each partition has one replica, its leader, as the broker's membership
(L{kafkaw.broker.membership}) says: a single broker leads every partition at
leader epoch 0; brokers sharing PostgreSQL hold leases.
"""

from twisted.internet import defer
from twisted.python.failure import Failure

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
_SOURCE_TOPIC = 1  # DYNAMIC_TOPIC_CONFIG: set on the topic
_SOURCE_DEFAULT = 5  # DEFAULT_CONFIG: what the broker applies when the topic sets nothing
_NO_OPERATIONS = -(2**31)  # "authorized operations not asked for"


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

    def answer(described):
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
            answers.append({"errorCode": error, "name": name, "isInternal": False, "partitions": partitions,
                            "topicAuthorizedOperations": _NO_OPERATIONS})
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
                "clusterAuthorizedOperations": _NO_OPERATIONS,
            },
        )

    return cluster.describeTopics(topics, autoCreate).addCallback(answer)


def createTopics(header, request, gateway):
    """Each topic is created (or, with validate_only, checked), or refused with its own error code."""
    version = header.apiVersion
    d = gateway.broker.cluster.createTopics(request.topics, request.validateOnly)

    def answer(results):
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
    """Each topic is deleted: data removed, parked fetches answered, or its own error code."""
    cluster, coordinator = gateway.broker.cluster, gateway.broker.coordinator
    results = []
    for name in request.topicNames:
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
    cluster = gateway.broker.cluster
    results = []
    for topic in request.topics:
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
    """A new producer id at epoch 0 for an idempotent producer; transactional
    ids are refused (kafkaw has no transaction coordinator)."""
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

    def failed(reason):
        gateway.log.warn("allocating a producer id failed: {why}", why=reason.getErrorMessage())
        return answer(ErrorCode.UNKNOWN)

    return gateway.broker.cluster.allocateProducerId().addCallbacks(lambda producerId: answer(0, producerId, 0), failed)
