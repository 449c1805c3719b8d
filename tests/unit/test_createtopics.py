"""CreateTopics v0 (key 19): golden bytes through the schema codec,
kafka-python's own encoder and decoder, and the gateway over a memory store
(no sockets)."""

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kafka.protocol.admin import CreateTopicsRequest as KpCreateTopicsRequest
from kafka.protocol.admin import CreateTopicsResponse as KpCreateTopicsResponse
from twisted.internet import task

from kafkaw.broker.gateway import Broker, Gateway
from kafkaw.broker.services import ClusterService
from kafkaw.protocol import schema
from kafkaw.protocol.definitions import API_VERSIONS, CREATE_TOPICS
from kafkaw.protocol.errors import CodecError
from kafkaw.protocol.primitives import Reader
from kafkaw.storage.memory import MemoryStore
from tests.unit.helpers import FakeConnection, metadataRequest, parseMetadataResponse

# CreateTopics v0 with two topics, field by field (after the request header).
BODY = b"".join(
    [
        struct.pack(">i", 2),  # topics: 2
        struct.pack(">h", 4) + b"logs",  # name
        struct.pack(">i", 3),  # num_partitions
        struct.pack(">h", 1),  # replication_factor
        struct.pack(">i", 1),  # replica_assignment: 1
        struct.pack(">i", 0),  # . partition
        struct.pack(">i", 2) + struct.pack(">ii", 0, 1),  # . replicas [0, 1]
        struct.pack(">i", 2),  # config_entries: 2
        struct.pack(">h", 12) + b"retention.ms",  # . name
        struct.pack(">h", 5) + b"60000",  # . value
        struct.pack(">h", 15) + b"retention.bytes",  # . name
        struct.pack(">h", -1),  # . value: null
        struct.pack(">h", 1) + b"x",  # name
        struct.pack(">i", 1),  # num_partitions
        struct.pack(">h", -1),  # replication_factor
        struct.pack(">i", 0),  # replica_assignment: none
        struct.pack(">i", 0),  # config_entries: none
        struct.pack(">i", 5000),  # timeout
    ]
)
# The schema codec's values (namedtuples) of a CreateTopics request.
Request = CREATE_TOPICS.request.type
Topic = CREATE_TOPICS.request["topics"].type
Assignment = CREATE_TOPICS.request["topics"]["assignments"].type
Config = CREATE_TOPICS.request["topics"]["configs"].type

REQUEST = Request(
    topics=[
        Topic(
            "logs", 3, 1, [Assignment(0, [0, 1])], [Config("retention.ms", "60000"), Config("retention.bytes", None)]
        ),
        Topic("x", 1, -1, [], []),
    ],
    timeoutMs=5000,
)
HEADER = struct.pack(">hhih", 19, 0, 7, 3) + b"cli"  # api key 19, version 0, correlation id 7, client id "cli"


def decodeBody(body):
    return schema.decodeRequestBody(CREATE_TOPICS.key, 0, Reader(body))


def encodeRequest(correlationId, clientId, request):
    return schema.encodeRequest(CREATE_TOPICS.key, 0, correlationId, clientId, request)


def encodeResponse(correlationId, results):
    """A CreateTopics v0 answer; results: [(topic, error)]."""
    topics = [{"name": name, "errorCode": error} for name, error in results]
    return schema.encodeResponse(CREATE_TOPICS.key, 0, correlationId, {"topics": topics})


def decodeResponse(frame):
    """(correlationId, [(topic, error)]) of a CreateTopics v0 answer."""
    correlationId, answer = schema.decodeResponse(CREATE_TOPICS.key, 0, frame)
    return correlationId, [(t.name, t.errorCode) for t in answer.topics]


def test_decodeGoldenBytes():
    assert decodeBody(BODY) == REQUEST


def test_encodeRequestGoldenBytes():
    assert encodeRequest(7, "cli", REQUEST) == HEADER + BODY


def test_encodeResponseGoldenBytes():
    chunks = encodeResponse(9, [("logs", 0), ("x", 36)])
    assert b"".join(chunks) == b"".join(
        [
            struct.pack(">i", 9),  # correlation id
            struct.pack(">i", 2),  # topics: 2
            struct.pack(">h", 4) + b"logs" + struct.pack(">h", 0),  # name, error_code
            struct.pack(">h", 1) + b"x" + struct.pack(">h", 36),
        ]
    )
    assert decodeResponse(b"".join(chunks)) == (9, [("logs", 0), ("x", 36)])


def kafkaPythonRequest():
    T = KpCreateTopicsRequest.CreatableTopic
    return KpCreateTopicsRequest(
        topics=[
            T(
                name="logs", num_partitions=3, replication_factor=1,
                assignments=[T.CreatableReplicaAssignment(partition_index=0, broker_ids=[0, 1])],
                configs=[T.CreatableTopicConfig(name="retention.ms", value="60000"), T.CreatableTopicConfig(name="retention.bytes", value=None)],
            ),
            T(name="x", num_partitions=1, replication_factor=-1, assignments=[], configs=[]),
        ],
        timeout_ms=5000,
        version=0,
    )


def test_kafkaPythonEncodesTheSameRequest():
    assert kafkaPythonRequest().encode(version=0) == BODY


def test_kafkaPythonDecodesTheResponse():
    body = b"".join(encodeResponse(9, [("logs", 0), ("x", 37)]))[4:]
    decoded = KpCreateTopicsResponse.decode(body, version=0)
    assert [(t.name, t.error_code) for t in decoded.topics] == [("logs", 0), ("x", 37)]


@pytest.mark.parametrize(
    "body",
    [
        BODY[:-1],  # no complete timeout
        BODY + b"\x00",  # a byte too many
        struct.pack(">ih", 1, -1) + BODY[6:],  # null topic name
        struct.pack(">i", 1000) + BODY[4:],  # more topics than bytes
        struct.pack(">i", 1) + struct.pack(">h", 1) + b"t" + struct.pack(">ihii", 1, 1, 0, 1) + struct.pack(">hh", -1, -1) + struct.pack(">i", 0),  # null config name
    ],
)
def test_malformedRequestsAreCodecErrors(body):
    with pytest.raises(CodecError):
        decodeBody(body)


@given(st.binary(max_size=120))
def test_anyBytesDecodeOrRaiseCodecError(body):
    try:
        decodeBody(body)
    except CodecError:
        pass


names = st.text(min_size=0, max_size=8)
topics = st.builds(
    Topic,
    names,
    st.integers(-(2**31), 2**31 - 1),
    st.integers(-(2**15), 2**15 - 1),
    st.lists(st.builds(Assignment, st.integers(0, 9), st.lists(st.integers(-1, 9), max_size=3)), max_size=3),
    st.lists(st.builds(Config, names, st.none() | names), max_size=3),
)


@given(st.builds(Request, topics=st.lists(topics, max_size=3), timeoutMs=st.integers(-(2**31), 2**31 - 1)))
def test_encodeDecodeRoundTrip(request):
    frame = encodeRequest(1, None, request)
    assert struct.unpack_from(">hh", frame) == (19, 0)
    assert decodeBody(frame[struct.calcsize(">hhih"):]) == request


# -- through the gateway ------------------------------------------------------


def connect(**brokerOptions):
    """(cluster, gateway, connection) over a memory store."""
    cluster = ClusterService(MemoryStore(), task.Clock())
    connection = FakeConnection()
    return cluster, Gateway(Broker(cluster, task.Clock(), **brokerOptions), connection), connection


def ask(gateway, connection, frame):
    gateway.requestReceived(frame)
    return connection.responses.pop()


def test_gatewayCreatesTopics():
    cluster, gateway, connection = connect()
    response = ask(gateway, connection, HEADER + struct.pack(">i", 2) + BODY[4:])
    # "logs" has a replica assignment and a null config: both are refused (42)
    assert decodeResponse(response) == (7, [("logs", 42), ("x", 0)])
    logs = Topic("logs", 3, 1, [], [Config("retention.ms", "60000")])
    created = encodeRequest(8, "cli", Request(topics=[logs], timeoutMs=100))
    assert decodeResponse(ask(gateway, connection, created)) == (8, [("logs", 0)])
    assert cluster.topics() == {"logs": 3, "x": 1}
    assert cluster.retention("logs")[0] == 60000
    _, _, topics = parseMetadataResponse(ask(gateway, connection, metadataRequest(9)[4:]))
    assert {name: len(partitions) for name, (_, partitions) in topics.items()} == {"logs": 3, "x": 1}
    again = encodeRequest(10, "cli", Request(topics=[Topic("x", 1, 1, [], [])], timeoutMs=100))
    assert decodeResponse(ask(gateway, connection, again)) == (10, [("x", 36)])
    assert not connection.closed


def test_gatewayAnswersKafkaPython():
    cluster, gateway, connection = connect()
    request = kafkaPythonRequest()
    request.topics[0].assignments = []
    request.topics[0].configs = request.topics[0].configs[:1]
    response = ask(gateway, connection, HEADER + request.encode(version=0))
    decoded = KpCreateTopicsResponse.decode(response[4:], version=0)
    assert [(t.name, t.error_code) for t in decoded.topics] == [("logs", 0), ("x", 0)]
    assert cluster.topicConfigs("logs") == {"retention.ms": "60000"}


def test_apiVersionsListsCreateTopicsV0To3():
    _, gateway, connection = connect()
    _, answer = schema.decodeResponse(API_VERSIONS.key, 0, ask(gateway, connection, struct.pack(">hhih", 18, 0, 1, -1)))
    assert answer.errorCode == 0
    assert (19, 0, 3) in [(v.index, v.minVersion, v.maxVersion) for v in answer.apiKeys]


def test_strictModeDoesNotServeCreateTopics():
    cluster, gateway, connection = connect(strict08=True)
    assert (19, 0) not in gateway.broker.handlers
    gateway.requestReceived(HEADER + BODY)
    assert connection.responses == [] and connection.closed  # as Kafka 0.8.0 does with any unknown key
    assert cluster.topics() == {}
