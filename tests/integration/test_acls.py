"""ACLs end to end with real clients: confluent-kafka's and kafka-python's
admin clients manage them (CreateAcls, DescribeAcls, DeleteAcls); producers,
consumers and Metadata get Kafka's answers (29, 30, 31); super users pass;
ACLs survive a restart (LevelDB). Without SASL every connection is
User:ANONYMOUS, so the ACLs here name it (or someone else)."""

import json
import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicCollection
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)

from tests.integration.conftest import Connection, kcat

ANON = "User:ANONYMOUS"
# confluent-kafka names the cluster resource type (4) BROKER
LIST_OFFSETS, DESCRIBE_ACLS = 2, 29
EVERY_ACL = AclBindingFilter(
    ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY, AclPermissionType.ANY
)


def admin(broker):
    return AdminClient({"bootstrap.servers": broker.bootstrap, "socket.timeout.ms": 5000})


def create(client, *bindings):
    for future in client.create_acls(list(bindings), request_timeout=10).values():
        future.result()


def described(client, aclFilter=EVERY_ACL):
    return {
        (b.restype, b.name, b.resource_pattern_type, b.principal, b.host, b.operation, b.permission_type)
        for b in client.describe_acls(aclFilter, request_timeout=10).result()
    }


def topicAcl(name, operation, permission=AclPermissionType.ALLOW, principal=ANON, pattern=ResourcePatternType.LITERAL):
    return AclBinding(ResourceType.TOPIC, name, pattern, principal, "*", operation, permission)


def produce(broker, topic, **conf):
    """Produce one message with librdkafka; the delivery error (a KafkaError) or None."""
    producer = Producer({"bootstrap.servers": broker.bootstrap, "message.timeout.ms": 5000, "retries": 0, **conf})
    reports = []
    producer.produce(topic, b"value", partition=0, on_delivery=lambda err, msg: reports.append(err))
    producer.flush(10)
    assert len(reports) == 1
    return reports[0]


def logEnd(broker, topic):
    with Connection(broker.bootstrap) as connection:
        answer = connection.call(LIST_OFFSETS, 1, {"replicaId": -1, "topics": [
            {"name": topic, "partitions": [{"partitionIndex": 0, "timestamp": -1}]}
        ]})
    partition = answer.topics[0].partitions[0]
    return partition.errorCode, partition.offset


def test_confluentKafkaManagesAclsAndTheyDecide(brokerFactory):
    broker = brokerFactory("--acls", "--allow-everyone-if-no-acl", "--no-auto-create-topics")
    client = admin(broker)
    for future in client.create_topics([NewTopic(name, 1, 1) for name in ("open", "secret")], request_timeout=10).values():
        future.result()
    create(
        client,
        AclBinding(ResourceType.BROKER, "kafka-cluster", ResourcePatternType.LITERAL, ANON, "*", AclOperation.ALTER,
                   AclPermissionType.ALLOW),
        topicAcl("secret", AclOperation.WRITE, principal="User:bob"),
        topicAcl("se", AclOperation.READ, principal="User:bob", pattern=ResourcePatternType.PREFIXED),
    )
    assert described(client) == {
        (ResourceType.BROKER, "kafka-cluster", ResourcePatternType.LITERAL, ANON, "*", AclOperation.ALTER, AclPermissionType.ALLOW),
        (ResourceType.TOPIC, "secret", ResourcePatternType.LITERAL, "User:bob", "*", AclOperation.WRITE, AclPermissionType.ALLOW),
        (ResourceType.TOPIC, "se", ResourcePatternType.PREFIXED, "User:bob", "*", AclOperation.READ, AclPermissionType.ALLOW),
    }

    # secret has ACLs, none for User:ANONYMOUS: no Write (29, nothing stored), no Describe (not in Metadata)
    error = produce(broker, "secret")
    assert error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert set(client.list_topics(timeout=10).topics) == {"open"}
    listed = json.loads(kcat("-b", broker.bootstrap, "-L", "-J"))
    assert [t["topic"] for t in listed["topics"]] == ["open"]
    assert produce(broker, "open") is None

    # an ACL created through the admin client decides the next request
    create(client, topicAcl("open", AclOperation.WRITE, AclPermissionType.DENY))
    error = produce(broker, "open")
    assert error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED

    # deny Describe on the cluster: DescribeAcls answers 31 (librdkafka 2.16 does not
    # surface DescribeAcls' top-level error: read the answer itself)
    create(client, AclBinding(ResourceType.BROKER, "kafka-cluster", ResourcePatternType.LITERAL, ANON, "*",
                              AclOperation.DESCRIBE, AclPermissionType.DENY))
    with Connection(broker.bootstrap) as connection:
        answer = connection.call(DESCRIBE_ACLS, 1, {
            "resourceType": 1, "resourceNameFilter": None, "resourcePatternType": 1, "principalFilter": None,
            "hostFilter": None, "operation": 1, "permissionType": 1,
        })
    assert (answer.errorCode, answer.resources) == (31, [])

    # deleting with filters (Alter on the cluster is still there)
    deleted = client.delete_acls([
        AclBindingFilter(ResourceType.BROKER, None, ResourcePatternType.ANY, None, None, AclOperation.DESCRIBE, AclPermissionType.DENY),
        AclBindingFilter(ResourceType.TOPIC, "secret", ResourcePatternType.MATCH, None, None, AclOperation.ANY, AclPermissionType.ANY),
    ], request_timeout=10)
    results = [sorted((b.name, b.operation) for b in future.result()) for future in deleted.values()]
    assert sorted(results) == sorted([[("kafka-cluster", AclOperation.DESCRIBE)], [("se", AclOperation.READ), ("secret", AclOperation.WRITE)]])
    assert logEnd(broker, "secret") == (0, 0)  # the denied produce stored nothing
    assert logEnd(broker, "open") == (29, -1)  # its one ACL denies Write: none allows Describe now

    # ACLs are kept with the data: after a restart they are there and decide
    broker.restart()
    client = admin(broker)
    assert {(name, operation, permission) for _, name, _, _, _, operation, permission in described(client)} == {
        ("kafka-cluster", AclOperation.ALTER, AclPermissionType.ALLOW), ("open", AclOperation.WRITE, AclPermissionType.DENY),
    }
    error = produce(broker, "open")
    assert error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert produce(broker, "secret") is None


def test_groupAndClusterDenials(brokerFactory):
    """A consumer group without Read gets 30; an idempotent producer without IdempotentWrite gets 31."""
    from confluent_kafka import Consumer

    broker = brokerFactory("--acls", "--allow-everyone-if-no-acl")
    client = admin(broker)
    create(
        client,
        AclBinding(ResourceType.GROUP, "theirs", ResourcePatternType.LITERAL, "User:bob", "*", AclOperation.READ, AclPermissionType.ALLOW),
        AclBinding(ResourceType.BROKER, "kafka-cluster", ResourcePatternType.LITERAL, ANON, "*", AclOperation.IDEMPOTENT_WRITE,
                   AclPermissionType.DENY),
    )
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "theirs", "session.timeout.ms": 6000})
    try:
        consumer.subscribe(["logs"])
        deadline = time.monotonic() + 15
        error = None
        while error is None and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is not None:
                error = message.error()
        assert error is not None and error.code() == KafkaError.GROUP_AUTHORIZATION_FAILED
    finally:
        consumer.close()

    # librdkafka raises the error of InitProducerId as fatal, from poll
    producer = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True, "message.timeout.ms": 5000})
    producer.produce("logs", b"v")
    with pytest.raises(KafkaException) as fatal:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            producer.poll(0.2)
    assert fatal.value.args[0].code() == KafkaError.CLUSTER_AUTHORIZATION_FAILED
    assert fatal.value.args[0].fatal()


def test_superUserMayDoEverything(brokerFactory):
    broker = brokerFactory("--acls", "--super-user", "User:ANONYMOUS")
    client = admin(broker)
    create(
        client,
        topicAcl("*", AclOperation.ALL, AclPermissionType.DENY, principal="User:*"),
        AclBinding(ResourceType.BROKER, "kafka-cluster", ResourcePatternType.LITERAL, "User:*", "*", AclOperation.ALL,
                   AclPermissionType.DENY),
    )
    assert produce(broker, "anything", **{"enable.idempotence": True, "retries": 3}) is None  # auto-created; IdempotentWrite too
    assert "anything" in client.list_topics(timeout=10).topics
    assert len(described(client)) == 2


def test_kafkaPythonAdminClient(brokerFactory):
    from kafka.admin import (
        ACL,
        ACLFilter,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        KafkaAdminClient,
        ResourcePattern,
        ResourcePatternFilter,
        ResourceType as KafkaPythonResourceType,
    )
    from kafka.errors import ClusterAuthorizationFailedError, InvalidRequestError

    broker = brokerFactory("--acls", "--allow-everyone-if-no-acl")
    client = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=10000)
    try:
        read = ACL(ANON, "*", ACLOperation.READ, ACLPermissionType.ALLOW,
                   ResourcePattern(KafkaPythonResourceType.TOPIC, "logs", ACLResourcePatternType.LITERAL))
        prefixed = ACL("User:bob", "10.0.0.1", ACLOperation.WRITE, ACLPermissionType.DENY,
                       ResourcePattern(KafkaPythonResourceType.GROUP, "app-", ACLResourcePatternType.PREFIXED))
        bad = ACL("bob", "*", ACLOperation.READ, ACLPermissionType.ALLOW,
                  ResourcePattern(KafkaPythonResourceType.TOPIC, "logs", ACLResourcePatternType.LITERAL))
        created = client.create_acls([read, prefixed, bad])
        assert len(created["succeeded"]) == 2
        assert created["failed"] == [InvalidRequestError]  # the principal "bob" has no TYPE:NAME

        every = ACLFilter(None, None, ACLOperation.ANY, ACLPermissionType.ANY,
                          ResourcePatternFilter(KafkaPythonResourceType.ANY, None, ACLResourcePatternType.ANY))
        acls, error = client.describe_acls(every)
        assert error.errno == 0
        assert {(a.principal, a.host, a.operation, a.permission_type, a.resource_pattern.resource_type,
                 a.resource_pattern.resource_name, a.resource_pattern.pattern_type) for a in acls} == {
            (ANON, "*", ACLOperation.READ, ACLPermissionType.ALLOW, KafkaPythonResourceType.TOPIC, "logs", ACLResourcePatternType.LITERAL),
            ("User:bob", "10.0.0.1", ACLOperation.WRITE, ACLPermissionType.DENY, KafkaPythonResourceType.GROUP, "app-",
             ACLResourcePatternType.PREFIXED),
        }

        groups = ACLFilter(None, None, ACLOperation.ANY, ACLPermissionType.ANY,
                           ResourcePatternFilter(KafkaPythonResourceType.GROUP, "app-1", ACLResourcePatternType.MATCH))
        ((_, deleted, error),) = client.delete_acls([groups])
        assert error.errno == 0 and [(a.principal, a.resource_pattern.resource_name) for a in deleted] == [("User:bob", "app-")]
        acls, _ = client.describe_acls(every)
        assert [a.resource_pattern.resource_name for a in acls] == ["logs"]

        denyDescribe = ACL(ANON, "*", ACLOperation.DESCRIBE, ACLPermissionType.DENY,
                           ResourcePattern(KafkaPythonResourceType.CLUSTER, "kafka-cluster", ACLResourcePatternType.LITERAL))
        assert len(client.create_acls([denyDescribe])["succeeded"]) == 1
        with pytest.raises(ClusterAuthorizationFailedError):
            client.describe_acls(every)
    finally:
        client.close()


def test_aclApisWithoutAcls(broker):
    """A broker without --acls answers the ACL APIs as Kafka without an authorizer: SECURITY_DISABLED."""
    client = admin(broker)
    with pytest.raises(KafkaException) as refused:
        create(client, topicAcl("logs", AclOperation.READ))
    assert refused.value.args[0].code() == KafkaError.SECURITY_DISABLED


def test_docsExamples(brokerFactory):
    """Every example of docs/acls.md, in order, against a fresh broker."""
    import os
    import subprocess
    import sys

    from tests.integration.conftest import ROOT
    from tests.integration.test_admin import consoleExamples

    broker = brokerFactory("--acls", "--allow-everyone-if-no-acl", "--num-partitions", "1")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    examples = consoleExamples(ROOT / "docs" / "acls.md")
    assert len(examples) >= 10
    for command, expected in examples:
        assert command.startswith("kafkaw ")
        shell = f"{sys.executable} -m kafkaw.cli --bootstrap {broker.bootstrap} " + command[len("kafkaw "):]
        result = subprocess.run(["bash", "-c", shell], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, timeout=30)
        assert result.stdout == expected, command
        assert (result.returncode == 0) == (not expected.startswith("kafkaw: ")), command


def test_authorizedOperationsAsConfluentKafkaAsksForThem(brokerFactory):
    """KIP-430 (Metadata v8, DescribeGroups v3): what the principal may do
    with a topic, a group and the cluster, as bits its ACLs allow."""
    # The resources without an ACL are open until one is set: ANONYMOUS
    # creates the topic and sets the ACLs below, which then decide.
    broker = brokerFactory("--acls", "--allow-everyone-if-no-acl", "--no-auto-create-topics")
    client = admin(broker)
    client.create_topics([NewTopic("ops", 1, 1)], request_timeout=10)["ops"].result()
    create(
        client,
        topicAcl("ops", AclOperation.READ), topicAcl("ops", AclOperation.ALTER_CONFIGS),
        AclBinding(ResourceType.GROUP, "ops-group", ResourcePatternType.LITERAL, ANON, "*", AclOperation.READ,
                   AclPermissionType.ALLOW),
        AclBinding(ResourceType.BROKER, "kafka-cluster", ResourcePatternType.LITERAL, ANON, "*", AclOperation.DESCRIBE,
                   AclPermissionType.ALLOW),
    )
    (topic,) = client.describe_topics(TopicCollection(["ops"]), include_authorized_operations=True).values()
    # Read implies Describe, AlterConfigs implies DescribeConfigs (Kafka's rules).
    assert set(topic.result().authorized_operations) == {
        AclOperation.READ, AclOperation.DESCRIBE, AclOperation.ALTER_CONFIGS, AclOperation.DESCRIBE_CONFIGS,
    }
    cluster = client.describe_cluster(include_authorized_operations=True).result()
    assert set(cluster.authorized_operations) == {AclOperation.DESCRIBE}
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "ops-group", "auto.offset.reset": "earliest"})
    try:
        consumer.subscribe(["ops"])
        consumer.poll(3)
        (group,) = client.describe_consumer_groups(["ops-group"], include_authorized_operations=True).values()
        assert set(group.result().authorized_operations) == {AclOperation.READ, AclOperation.DESCRIBE}
    finally:
        consumer.close()
