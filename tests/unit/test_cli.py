"""The `kafkaw` admin CLI without a broker: its arguments, and its commands
against canned answers on the other end of a socketpair (no network). The
same commands against a real broker are in tests/integration/test_admin.py."""

import configparser
import io
import socket
from pathlib import Path

import pytest

from kafkaw import cli
from kafkaw.protocol import api, schema
from kafkaw.protocol.framing import Framer, frame
from kafkaw.protocol.primitives import INT16, INT32, encodeBytes, encodeString

ROOT = Path(__file__).resolve().parents[2]


def parse(*argv):
    return cli.parser().parse_args(argv)


def test_consoleScriptIsDeclared():
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    assert setup["options.entry_points"]["console_scripts"].split() == ["kafkaw", "=", "kafkaw.cli:main"]


def test_createArguments():
    args = parse("--bootstrap", "[::1]:19092", "topics", "create", "logs", "--partitions", "3", "--config", "retention.ms=60000", "--config", "retention.bytes=")
    assert (args.bootstrap, args.name, args.partitions) == ("[::1]:19092", "logs", 3)
    assert args.config == [("retention.ms", "60000"), ("retention.bytes", "")]
    assert parse("topics", "create", "-p", "2", "x").partitions == 2  # options before the name too
    assert parse("topics", "create", "x").partitions == 1
    assert parse("topics", "create", "x").bootstrap == "127.0.0.1:9092"


def test_deleteAndAlterArguments():
    assert parse("topics", "delete", "a", "b").names == ["a", "b"]
    assert parse("topics", "alter", "logs", "--partitions", "5").name == "logs"
    assert parse("topics", "alter", "-p", "5", "logs").partitions == 5


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["topics"],
        ["topics", "create"],
        ["topics", "create", "x", "--config", "retention.ms"],
        ["topics", "create", "x", "--config", "=1"],
        ["topics", "create", "x", "--partitions", "many"],
        ["--bootstrap", "localhost", "topics", "list"],
        ["--bootstrap", "localhost:port", "topics", "list"],
        ["offsets"],
        ["groups"],
        ["topics", "delete"],
        ["topics", "alter", "x"],
        ["topics", "alter", "x", "--partitions", "more"],
        ["groups", "list", "x"],
        ["groups", "describe"],
        ["groups", "delete"],
        ["groups", "reset-offsets", "g", "--to-earliest"],  # no --topic
        ["groups", "reset-offsets", "g", "--topic", "t"],  # no target
        ["groups", "reset-offsets", "g", "--topic", "t", "--to-earliest", "--to-latest"],
        ["groups", "reset-offsets", "g", "--topic", "t", "--to-offset", "-1"],
        ["groups", "reset-offsets", "g", "--topic", "t", "--to-offset", "next"],
    ],
)
def test_badUsageExitsWith2(argv, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2
    assert "usage: kafkaw" in capsys.readouterr().err


class CannedBroker:
    """The far end of a socketpair: answers queued up front, requests read back."""

    def __init__(self, *answers):
        self.ours, self.theirs = socket.socketpair()
        for answer in answers:
            self.theirs.sendall(frame(b"".join(answer)))
        self.client = cli.Client(self.ours, "broker:9092", 0.2)

    def requests(self):
        """The requests the client sent: [(header, body as decoded by the schema codec)]. Ends the client's sending."""
        self.ours.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := self.theirs.recv(65536):
            data += chunk
        decoded = []
        for f in Framer(1 << 20).feed(data):
            header, reader = api.decodeHeader(f)
            decoded.append((header, schema.decodeRequestBody(header.apiKey, header.apiVersion, reader)))
        return decoded

    def run(self, *argv):
        out = io.StringIO()
        args = parse(*argv)
        args.run(self.client, args, out)
        return out.getvalue()

    def close(self):
        self.ours.close()
        self.theirs.close()


@pytest.fixture
def broker(request):
    """A L{CannedBroker} with the answers given as the test's parameter."""
    b = CannedBroker(*request.param)
    yield b
    b.close()


def answer(call, correlationId, value):
    """The frame (without size prefix) of a broker's answer to C{call} (a L{cli.Call})."""
    return schema.encodeResponse(call.apiKey, call.version, correlationId, value)


def metadata(correlationId, *topics):
    return answer(cli.METADATA, correlationId, {
        "brokers": [{"nodeId": 0, "host": "127.0.0.1", "port": 9092}], "controllerId": 0, "topics": list(topics),
    })


def topic(name, partitions, error=0):
    return {
        "errorCode": error, "name": name,
        "partitions": [
            {"partitionIndex": p, "leaderId": 0, "replicaNodes": [0, 1], "isrNodes": [0]} for p in range(partitions)
        ],
    }


def listOffsets(correlationId, name, results):
    """results: [(partition, error, offset)]."""
    partitions = [{"partitionIndex": p, "errorCode": e, "offset": o} for p, e, o in results]
    return answer(cli.LIST_OFFSETS, correlationId, {"topics": [{"name": name, "partitions": partitions}]})


def describeConfigs(correlationId, name, configs, error=0, message=None):
    """configs: [(name, value, config source)]."""
    return answer(cli.DESCRIBE_CONFIGS, correlationId, {"results": [{
        "errorCode": error, "errorMessage": message, "resourceType": 2, "resourceName": name,
        "configs": [{"name": n, "value": v, "configSource": s} for n, v, s in configs],
    }]})


def createTopics(correlationId, *results):
    """results: (name, error, message)."""
    return answer(cli.CREATE_TOPICS, correlationId, {
        "topics": [{"name": n, "errorCode": e, "errorMessage": m} for n, e, m in results]
    })


def deleteTopics(correlationId, *results):
    """results: (name, error)."""
    return answer(cli.DELETE_TOPICS, correlationId, {"responses": [{"name": n, "errorCode": e} for n, e in results]})


def createPartitions(correlationId, *results):
    """results: (name, error, message)."""
    return answer(cli.CREATE_PARTITIONS, correlationId, {
        "results": [{"name": n, "errorCode": e, "errorMessage": m} for n, e, m in results]
    })


def test_callsAreServed():
    """Every version the CLI speaks is one kafkaw serves (and the codec knows)."""
    from kafkaw.broker.gateway import servedHandlers

    served = servedHandlers(strict08=False)
    assert all((call.apiKey, call.version) in served for call in cli.CALLS)


@pytest.mark.parametrize("broker", [[metadata(1, topic("b", 1), topic("a", 2))]], indirect=True)
def test_topicsList(broker):
    assert broker.run("topics", "list") == "a\nb\n"
    [(header, request)] = broker.requests()
    assert (header.apiKey, header.apiVersion, header.clientId) == (3, 4, "kafkaw-cli")
    assert request.topics is None  # every topic
    assert request.allowAutoTopicCreation is False


ANSWERS = [
    metadata(1, topic("logs", 3)),
    listOffsets(2, "logs", [(0, 0, 5), (1, 0, 0), (2, 3, -1)]),
    listOffsets(3, "logs", [(0, 0, 12), (1, 0, 0), (2, 3, -1)]),
]
CONFIGS = describeConfigs(4, "logs", [
    ("retention.ms", "86400000", 1), ("cleanup.policy", "delete", 5), ("retention.bytes", "-1", 4), ("secret", None, 5),
])


@pytest.mark.parametrize("broker", [ANSWERS + [CONFIGS]], indirect=True)
def test_topicsDescribe(broker):
    assert broker.run("topics", "describe", "logs") == (
        "topic logs: 3 partitions\n"
        "partition  leader  replicas  isr  start    end\n"
        "0          0       0,1       0    5        12\n"
        "1          0       0,1       0    0        0\n"
        "2          0       0,1       0    error 3  error 3\n"
        "\n"
        "config           value     source\n"
        "cleanup.policy   delete    default\n"
        "retention.bytes  -1        default\n"
        "retention.ms     86400000  set\n"
        "secret           -         default\n"
    )
    [(m, metadataRequest), (l1, earliest), (l2, latest), (d, configs)] = broker.requests()
    assert [(h.apiKey, h.apiVersion) for h in (m, l1, l2, d)] == [(3, 4), (2, 1), (2, 1), (32, 2)]
    # names the topic, but a Metadata v4 request that creates nothing
    assert [t.name for t in metadataRequest.topics] == ["logs"]
    assert metadataRequest.allowAutoTopicCreation is False
    for request, time in [(earliest, -2), (latest, -1)]:
        assert request.replicaId == -1
        [asked] = request.topics
        assert asked.name == "logs"
        assert [(p.partitionIndex, p.timestamp) for p in asked.partitions] == [(0, time), (1, time), (2, time)]
    [resource] = configs.resources
    assert (resource.resourceType, resource.resourceName, resource.configurationKeys) == (2, "logs", None)


@pytest.mark.parametrize("broker", [ANSWERS + [describeConfigs(4, "logs", [])]], indirect=True)
def test_topicsDescribeWithoutConfigs(broker):
    assert broker.run("topics", "describe", "logs").endswith("2          0       0,1       0    error 3  error 3\n")


@pytest.mark.parametrize(
    "broker", [ANSWERS + [describeConfigs(4, "logs", [], 3, "unknown topic 'logs'")]], indirect=True
)
def test_topicsDescribeConfigsRefused(broker):
    with pytest.raises(cli.CommandError) as refused:
        broker.run("topics", "describe", "logs")
    assert str(refused.value) == "cannot describe the configs of topic logs: unknown topic 'logs'"


@pytest.mark.parametrize("broker", [ANSWERS], indirect=True)
def test_offsets(broker):
    assert broker.run("offsets", "logs") == (
        "partition  start    end\n"
        "0          5        12\n"
        "1          0        0\n"
        "2          error 3  error 3\n"
    )
    assert len(broker.requests()) == 3


@pytest.mark.parametrize("broker", [[metadata(1, topic("nope", 0, error=3))]], indirect=True)
@pytest.mark.parametrize("command", [["offsets", "nope"], ["topics", "describe", "nope"]])
def test_unknownTopic(broker, command):
    with pytest.raises(cli.CommandError, match="^unknown topic nope$"):
        broker.run(*command)
    [(_, request)] = broker.requests()
    assert request.allowAutoTopicCreation is False


@pytest.mark.parametrize(
    "answered, message",
    [
        ([topic("bad name", 0, error=17)], "topic bad name: invalid topic (error 17)"),
        ([topic("bad name", 0, error=99)], "topic bad name: error 99"),
        ([], "broker:9092 did not answer for topic bad name"),
    ],
)
def test_topicMetadataErrors(answered, message):
    broker = CannedBroker(metadata(1, *answered))
    try:
        with pytest.raises(cli.CommandError) as refused:
            broker.run("offsets", "bad name")
        assert str(refused.value) == message
    finally:
        broker.close()


@pytest.mark.parametrize("broker", [[createTopics(1, ("logs", 0, None))]], indirect=True)
def test_topicsCreate(broker):
    out = broker.run("topics", "create", "logs", "-p", "3", "--config", "retention.ms=60000")
    assert out == "created topic logs (3 partitions, retention.ms=60000)\n"
    [(header, request)] = broker.requests()
    assert (header.apiKey, header.apiVersion) == (19, 3)
    [asked] = request.topics
    assert (asked.name, asked.numPartitions, asked.replicationFactor, asked.assignments) == ("logs", 3, 1, [])
    assert [(c.name, c.value) for c in asked.configs] == [("retention.ms", "60000")]
    assert (request.timeoutMs, request.validateOnly) == (200, False)


@pytest.mark.parametrize(
    "code, brokerMessage, message",
    [
        (36, "topic 'logs' exists", "cannot create topic logs: topic 'logs' exists"),
        (40, "retention.ms must be an integer", "cannot create topic logs: retention.ms must be an integer"),
        (37, None, "cannot create topic logs: invalid partitions (error 37)"),  # a null message: the code says it
        (-1, "", "cannot create topic logs: unknown (error -1)"),
        (1234, None, "cannot create topic logs: error 1234"),
    ],
)
def test_topicsCreateRefused(code, brokerMessage, message):
    broker = CannedBroker(createTopics(1, ("logs", code, brokerMessage)))
    try:
        with pytest.raises(cli.CommandError) as refused:
            broker.run("topics", "create", "logs", "--config", "retention.ms=x")
        assert str(refused.value) == message
    finally:
        broker.close()


@pytest.mark.parametrize("broker", [[createTopics(1, ("other", 0, None))]], indirect=True)
def test_topicsCreateNotAnswered(broker):
    with pytest.raises(cli.CommandError, match="^the broker did not answer for topic logs$"):
        broker.run("topics", "create", "logs")


@pytest.mark.parametrize("broker", [[deleteTopics(1, ("b", 0), ("a", 0))]], indirect=True)
def test_topicsDelete(broker):
    assert broker.run("topics", "delete", "a", "b") == "deleted topic a\ndeleted topic b\n"
    [(header, request)] = broker.requests()
    assert (header.apiKey, header.apiVersion) == (20, 3)
    assert (request.topicNames, request.timeoutMs) == (["a", "b"], 200)


@pytest.mark.parametrize("broker", [[deleteTopics(1, ("a", 0), ("nosuch", 3), ("busy", 42))]], indirect=True)
def test_topicsDeleteRefused(broker):
    """Each topic gets its line: the deleted ones on stdout, the refused ones in the error, one line each."""
    out = io.StringIO()
    args = parse("topics", "delete", "a", "nosuch", "busy", "gone")
    with pytest.raises(cli.CommandError) as refused:
        args.run(broker.client, args, out)
    assert out.getvalue() == "deleted topic a\n"
    assert str(refused.value).splitlines() == [
        "cannot delete topic nosuch: unknown topic",
        "cannot delete topic busy: invalid request (error 42)",
        "the broker did not answer for topic gone",
    ]


@pytest.mark.parametrize("broker", [[createPartitions(1, ("logs", 0, None))]], indirect=True)
def test_topicsAlter(broker):
    assert broker.run("topics", "alter", "logs", "--partitions", "5") == "topic logs now has 5 partitions\n"
    [(header, request)] = broker.requests()
    assert (header.apiKey, header.apiVersion) == (37, 1)
    [asked] = request.topics
    assert (asked.name, asked.count, asked.assignments) == ("logs", 5, None)  # the broker places them
    assert (request.timeoutMs, request.validateOnly) == (200, False)


@pytest.mark.parametrize(
    "answered, message",
    [
        (("logs", 37, "topic 'logs' has 5 partitions, which is not fewer than the 2 asked for"),
         "cannot alter topic logs: topic 'logs' has 5 partitions, which is not fewer than the 2 asked for"),
        (("logs", 3, None), "cannot alter topic logs: unknown topic or partition (error 3)"),
        (("other", 0, None), "the broker did not answer for topic logs"),
    ],
)
def test_topicsAlterRefused(answered, message):
    broker = CannedBroker(createPartitions(1, answered))
    try:
        with pytest.raises(cli.CommandError) as refused:
            broker.run("topics", "alter", "logs", "-p", "2")
        assert str(refused.value) == message
    finally:
        broker.close()


@pytest.mark.parametrize(
    "argv, hint",
    [
        (["topics", "create", "x"], "CreateTopics (it does not serve CreateTopics v3: {}, or Kafka before 2.0)"),
        (["topics", "delete", "x"], "DeleteTopics (it does not serve DeleteTopics v3: {}, or Kafka before 2.1)"),
        (["topics", "list"], "Metadata (it does not serve Metadata v4: {}, or Kafka before 1.0)"),
    ],
)
def test_closedConnection(argv, hint):
    broker = CannedBroker()
    broker.theirs.shutdown(socket.SHUT_WR)
    try:
        with pytest.raises(cli.CommandError) as closed:
            broker.run(*argv)
        assert str(closed.value) == "broker:9092 closed the connection on " + hint.format("a --strict-0.8 kafkaw")
    finally:
        broker.close()


def test_noAnswer():
    broker = CannedBroker()
    try:
        with pytest.raises(cli.CommandError, match="no answer from broker:9092 to Metadata within 0.2 s"):
            broker.run("topics", "list")
    finally:
        broker.close()


@pytest.mark.parametrize(
    "answer, why",
    [
        (metadata(7, topic("a", 1)), "answered Metadata with correlation id 7"),
        ([b"\x00\x00\x00\x01\x00"], "cannot decode the answer of broker:9092 to Metadata"),
        ([b"\x00\x00\x00\x01"], "cannot decode the answer of broker:9092 to Metadata"),
    ],
)
def test_badAnswers(answer, why):
    broker = CannedBroker(answer)
    try:
        with pytest.raises(cli.CommandError, match=why):
            broker.run("topics", "list")
    finally:
        broker.close()


def test_oversizedAnswer():
    broker = CannedBroker()
    broker.theirs.sendall(b"\x7f\xff\xff\xff")
    try:
        with pytest.raises(cli.CommandError, match="cannot read the answer of broker:9092 to Metadata: frame size"):
            broker.run("topics", "list")
    finally:
        broker.close()


def test_mainReportsCommandErrors(monkeypatch):
    def refuse(address, timeout, tls):
        raise cli.CommandError(f"cannot connect to {address}: refused")

    monkeypatch.setattr(cli, "connect", refuse)
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(["-b", "h:1", "topics", "list"], out, err) == 1
    assert (out.getvalue(), err.getvalue()) == ("", "kafkaw: cannot connect to h:1: refused\n")


def test_mainReportsEachRefusedTopic(monkeypatch):
    broker = CannedBroker(deleteTopics(1, ("a", 0), ("b", 3), ("c", 3)))
    monkeypatch.setattr(cli, "connect", lambda address, timeout, tls: broker.client)
    out, err = io.StringIO(), io.StringIO()
    try:
        assert cli.main(["topics", "delete", "a", "b", "c"], out, err) == 1
    finally:
        broker.theirs.close()
    assert out.getvalue() == "deleted topic a\n"
    assert err.getvalue().splitlines() == [
        "kafkaw: cannot delete topic b: unknown topic", "kafkaw: cannot delete topic c: unknown topic"
    ]


# --- groups -------------------------------------------------------------------


def test_groupsArguments():
    args = parse("groups", "reset-offsets", "app", "-t", "logs", "--to-offset", "7", "--dry-run")
    assert (args.group, args.topic, args.to_offset, args.to_earliest, args.to_latest, args.dry_run) == (
        "app", "logs", 7, False, False, True
    )
    args = parse("groups", "reset-offsets", "--to-latest", "--topic", "logs", "app")
    assert (args.to_latest, args.to_offset, args.dry_run) == (True, None, False)
    assert parse("groups", "delete", "a", "b").groups == ["a", "b"]
    assert parse("groups", "describe", "app").group == "app"


def assignment(topics, userData=b"", version=0):
    """The consumer protocol's assignment bytes: {topic: [partition]}."""
    data = INT16.pack(version) + INT32.pack(len(topics))
    for name, partitions in topics.items():
        data += encodeString(name) + INT32.pack(len(partitions)) + b"".join(INT32.pack(p) for p in partitions)
    return data + encodeBytes(userData)


def test_decodeAssignment():
    assert cli.decodeAssignment(assignment({"logs": [0, 2], "audit": [1]})) == [("logs", [0, 2]), ("audit", [1])]
    assert cli.decodeAssignment(assignment({}, userData=None)) == []
    assert cli.decodeAssignment(assignment({"logs": [0]}, version=1) + b"later fields") == [("logs", [0])]
    assert cli.decodeAssignment(assignment({"logs": [0, 2]})[:-6]) is None  # cut short
    assert cli.decodeAssignment(b"") is None
    assert cli.decodeAssignment(INT16.pack(0) + INT32.pack(1) + encodeString(None) + INT32.pack(0) + encodeBytes(b"")) is None
    assert cli.describeAssignment([("logs", [2, 0]), ("audit", [1]), ("empty", [])]) == "audit 1; logs 0,2"
    assert cli.describeAssignment([]) == "-"


def listGroups(correlationId, *groups, error=0):
    """groups: (group id, protocol type)."""
    return answer(cli.LIST_GROUPS, correlationId, {
        "errorCode": error, "groups": [{"groupId": g, "protocolType": t} for g, t in groups],
    })


def group(groupId, state, members=(), protocolType="consumer", protocol="", error=0):
    """members: (member id, client id, host, assignment bytes)."""
    return {
        "errorCode": error, "groupId": groupId, "groupState": state, "protocolType": protocolType,
        "protocolData": protocol,
        "members": [
            {"memberId": m, "clientId": c, "clientHost": h, "memberMetadata": b"", "memberAssignment": a}
            for m, c, h, a in members
        ],
    }


def describeGroups(correlationId, *groups):
    return answer(cli.DESCRIBE_GROUPS, correlationId, {"groups": list(groups)})


def offsetFetch(correlationId, offsets, error=0):
    """offsets: {(topic, partition): offset or (offset, error)}."""
    topics = {}
    for (name, partition), value in offsets.items():
        offset, code = value if isinstance(value, tuple) else (value, 0)
        topics.setdefault(name, []).append({
            "partitionIndex": partition, "committedOffset": offset, "committedLeaderEpoch": -1, "metadata": "",
            "errorCode": code,
        })
    return answer(cli.OFFSET_FETCH, correlationId, {
        "errorCode": error, "topics": [{"name": n, "partitions": p} for n, p in topics.items()],
    })


def offsetCommit(correlationId, errors):
    """errors: {(topic, partition): error code}."""
    topics = {}
    for (name, partition), code in errors.items():
        topics.setdefault(name, []).append({"partitionIndex": partition, "errorCode": code})
    return answer(cli.OFFSET_COMMIT, correlationId, {"topics": [{"name": n, "partitions": p} for n, p in topics.items()]})


def deleteGroups(correlationId, *results):
    """results: (group id, error)."""
    return answer(cli.DELETE_GROUPS, correlationId, {"results": [{"groupId": g, "errorCode": e} for g, e in results]})


def apis(requests):
    return [(header.apiKey, header.apiVersion) for header, _ in requests]


@pytest.mark.parametrize("broker", [[
    listGroups(1, ("billing", "consumer"), ("audit", "")),
    describeGroups(2, group("audit", "Empty", protocolType=""), group("billing", "Stable", [
        ("m-1", "c-1", "/10.0.0.1", b""), ("m-2", "c-2", "/10.0.0.2", b""),
    ])),
]], indirect=True)
def test_groupsList(broker):
    assert broker.run("groups", "list") == (
        "group    type      state   members\n"
        "audit    -         Empty   0\n"
        "billing  consumer  Stable  2\n"
    )
    (_, listing), (_, describing) = requests = broker.requests()
    assert apis(requests) == [(16, 2), (15, 2)]
    assert describing.groups == ["audit", "billing"]  # one request for all


@pytest.mark.parametrize("broker", [[listGroups(1)]], indirect=True)
def test_groupsListWithoutGroups(broker):
    assert broker.run("groups", "list") == ""
    assert apis(broker.requests()) == [(16, 2)]


@pytest.mark.parametrize("broker", [[listGroups(1, error=15)]], indirect=True)
def test_groupsListRefused(broker):
    with pytest.raises(cli.CommandError, match=r"^cannot list groups: coordinator not available \(error 15\)$"):
        broker.run("groups", "list")


def listOffsetsOf(correlationId, results):
    """results: {(topic, partition): offset or error string}."""
    topics = {}
    for (name, partition), offset in results.items():
        error, value = (int(offset.split()[1]), -1) if isinstance(offset, str) else (0, offset)
        topics.setdefault(name, []).append({"partitionIndex": partition, "errorCode": error, "offset": value})
    return answer(cli.LIST_OFFSETS, correlationId, {"topics": [{"name": n, "partitions": p} for n, p in topics.items()]})


STABLE = group("billing", "Stable", [
    ("rdkafka-1", "billing-0", "/127.0.0.1", assignment({"logs": [1, 0]})),
    ("rdkafka-2", "billing-1", "/127.0.0.1", assignment({"logs": [2], "audit": [0]}, userData=b"sticky")),
], protocol="range")
DESCRIBE_ANSWERS = [
    describeGroups(1, STABLE),
    offsetFetch(2, {("gone", 0): 5, ("logs", 0): 4, ("logs", 1): -1, ("logs", 2): 10, ("logs", 7): 1}),
    metadata(3, topic("audit", 1), topic("gone", 0, error=3), topic("logs", 3)),
    listOffsetsOf(4, {("audit", 0): 2, ("logs", 0): 7, ("logs", 1): 3, ("logs", 2): 10}),
]


@pytest.mark.parametrize("broker", [DESCRIBE_ANSWERS], indirect=True)
def test_groupsDescribe(broker):
    """Members with their decoded assignments; each assigned or committed
    partition with its lag (none for a partition that does not exist or
    without a committed offset)."""
    assert broker.run("groups", "describe", "billing") == (
        "group billing: Stable, 2 members (consumer/range)\n"
        "\n"
        "member     client     host        partitions\n"
        "rdkafka-1  billing-0  /127.0.0.1  logs 0,1\n"
        "rdkafka-2  billing-1  /127.0.0.1  audit 0; logs 2\n"
        "\n"
        "topic  partition  committed  end  lag  member\n"
        "audit  0          -          2    -    rdkafka-2\n"
        "gone   0          5          -    -    -\n"
        "logs   0          4          7    3    rdkafka-1\n"
        "logs   1          -          3    -    rdkafka-1\n"
        "logs   2          10         10   0    rdkafka-2\n"
        "logs   7          1          -    -    -\n"
    )
    requests = broker.requests()
    assert apis(requests) == [(15, 2), (9, 5), (3, 4), (2, 1)]
    (_, describing), (_, fetching), (_, looking), (_, listing) = requests
    assert describing.groups == ["billing"]
    assert (fetching.groupId, fetching.topics) == ("billing", None)  # every committed partition
    assert ([t.name for t in looking.topics], looking.allowAutoTopicCreation) == (["audit", "gone", "logs"], False)
    assert listing.replicaId == -1
    asked = {(t.name, p.partitionIndex): p.timestamp for t in listing.topics for p in t.partitions}
    assert asked == {("audit", 0): -1, ("logs", 0): -1, ("logs", 1): -1, ("logs", 2): -1}  # existing ones only


@pytest.mark.parametrize("broker", [[
    describeGroups(1, group("billing", "Empty")),
    offsetFetch(2, {("logs", 0): 4, ("logs", 1): 9}),
    metadata(3, topic("logs", 2)),
    listOffsetsOf(4, {("logs", 0): 6, ("logs", 1): "error 3"}),
]], indirect=True)
def test_groupsDescribeEmpty(broker):
    assert broker.run("groups", "describe", "billing") == (
        "group billing: Empty, 0 members (consumer)\n"
        "\n"
        "topic  partition  committed  end      lag  member\n"
        "logs   0          4          6        2    -\n"
        "logs   1          9          error 3  -    -\n"
    )


@pytest.mark.parametrize("broker", [[
    describeGroups(1, group("sync", "Stable", [("w-1", "worker", "/10.1.1.1", b"\x00\x01leader")], protocolType="connect", protocol="v1")),
    offsetFetch(2, {}),
]], indirect=True)
def test_groupsDescribeOtherProtocols(broker):
    """Assignments of other protocols than Kafka's consumers' are not decoded."""
    assert broker.run("groups", "describe", "sync") == (
        "group sync: Stable, 1 member (connect/v1)\n"
        "\n"
        "member  client  host       partitions\n"
        "w-1     worker  /10.1.1.1  8 bytes\n"
        "\n"
        "no committed offsets\n"
    )


@pytest.mark.parametrize("broker", [[
    describeGroups(1, group("app", "PreparingRebalance", [("m", "c", "/h", b""), ("n", "c", "/h", b"\x00\x00\x00")])),
    offsetFetch(2, {}),
]], indirect=True)
def test_groupsDescribeRebalancing(broker):
    out = broker.run("groups", "describe", "app")
    assert out.splitlines()[2:5] == [
        "member  client  host  partitions",
        "m       c       /h    -",
        "n       c       /h    undecodable (3 bytes)",
    ]


@pytest.mark.parametrize("broker", [[describeGroups(1, group("nope", "Dead", protocolType="")), offsetFetch(2, {})]], indirect=True)
def test_groupsDescribeUnknownGroup(broker):
    with pytest.raises(cli.CommandError, match="^unknown group nope$"):
        broker.run("groups", "describe", "nope")


@pytest.mark.parametrize(
    "answers, message",
    [
        ([describeGroups(1, group("app", "", error=16))], "cannot describe group app: not coordinator (error 16)"),
        ([describeGroups(1)], "the broker did not answer for group app"),
        ([describeGroups(1, group("app", "Empty")), offsetFetch(2, {}, error=15)],
         "cannot fetch the offsets of group app: coordinator not available (error 15)"),
        ([describeGroups(1, group("app", "Empty")), offsetFetch(2, {("logs", 0): (-1, 3)})],
         "cannot fetch the offset of group app for logs/0: unknown topic or partition (error 3)"),
    ],
)
def test_groupsDescribeRefused(answers, message):
    broker = CannedBroker(*answers)
    try:
        with pytest.raises(cli.CommandError) as refused:
            broker.run("groups", "describe", "app")
        assert str(refused.value) == message
    finally:
        broker.close()


RESET = [
    describeGroups(1, group("billing", "Empty")),
    metadata(2, topic("logs", 3)),
    listOffsets(3, "logs", [(0, 0, 0), (1, 0, 5), (2, 0, 0)]),
    listOffsets(4, "logs", [(0, 0, 10), (1, 0, 8), (2, 0, 0)]),
    offsetFetch(5, {("logs", 0): 10, ("logs", 1): -1, ("logs", 2): 0}),
]


@pytest.mark.parametrize(
    "broker, target, new",
    [
        (RESET + [offsetCommit(6, {("logs", p): 0 for p in range(3)})], ["--to-earliest"], [0, 5, 0]),
        (RESET + [offsetCommit(6, {("logs", p): 0 for p in range(3)})], ["--to-latest"], [10, 8, 0]),
        # into each log's bounds, as Kafka's tool does
        (RESET + [offsetCommit(6, {("logs", p): 0 for p in range(3)})], ["--to-offset", "3"], [3, 5, 0]),
    ],
    indirect=["broker"],
)
def test_groupsResetOffsets(broker, target, new):
    out = broker.run("groups", "reset-offsets", "billing", "--topic", "logs", *target)
    assert out == (
        "topic  partition  previous  new\n"
        f"logs   0          10        {new[0]}\n"
        f"logs   1          -         {new[1]}\n"
        f"logs   2          0         {new[2]}\n"
    )
    requests = broker.requests()
    assert apis(requests) == [(15, 2), (3, 4), (2, 1), (2, 1), (9, 5), (8, 6)]
    (_, looking), (_, fetching), (_, committing) = requests[1], requests[4], requests[5]
    assert looking.allowAutoTopicCreation is False
    assert [(t.name, t.partitionIndexes) for t in fetching.topics] == [("logs", [0, 1, 2])]
    # from outside the group, as kafka-consumer-groups.sh commits
    assert (committing.groupId, committing.generationId, committing.memberId) == ("billing", -1, "")
    [asked] = committing.topics
    assert asked.name == "logs"
    assert [(p.partitionIndex, p.committedOffset, p.committedLeaderEpoch, p.committedMetadata) for p in asked.partitions] == [
        (p, offset, -1, "") for p, offset in enumerate(new)
    ]


@pytest.mark.parametrize("broker", [RESET], indirect=True)
def test_groupsResetOffsetsDryRun(broker):
    out = broker.run("groups", "reset-offsets", "billing", "--topic", "logs", "--to-earliest", "--dry-run")
    assert out.splitlines()[-1] == "dry run: nothing committed"
    assert apis(broker.requests())[-1] == (9, 5)  # nothing committed


@pytest.mark.parametrize(
    "broker",
    [[describeGroups(1, group("billing", "Dead", protocolType=""))] + RESET[1:] + [offsetCommit(6, {("logs", p): 0 for p in range(3)})]],
    indirect=True,
)
def test_groupsResetOffsetsOfANewGroup(broker):
    """A group that does not exist yet gets offsets (it then exists, Empty, without protocol type)."""
    assert broker.run("groups", "reset-offsets", "billing", "-t", "logs", "--to-latest").count("\n") == 4


@pytest.mark.parametrize(
    "state, members",
    [("Stable", [("m", "c", "/h", b"")]), ("PreparingRebalance", [("m", "c", "/h", b""), ("n", "c", "/h", b"")]),
     ("CompletingRebalance", [])],
)
def test_groupsResetOffsetsOfAGroupWithMembers(state, members):
    """Refused at once, saying why: the broker refuses commits from outside a non-empty group's generation."""
    broker = CannedBroker(describeGroups(1, group("billing", state, members)))
    try:
        with pytest.raises(cli.CommandError) as refused:
            broker.run("groups", "reset-offsets", "billing", "--topic", "logs", "--to-earliest")
        count = f"{len(members)} member{'' if len(members) == 1 else 's'}"
        assert str(refused.value) == (
            f"cannot reset the offsets of group billing: it is {state} with {count};"
            " a group takes offsets from outside its generation only while it has none: stop its consumers first"
        )
        assert apis(broker.requests()) == [(15, 2)]
    finally:
        broker.close()


@pytest.mark.parametrize("code", [25, 22, 27])
def test_groupsResetOffsetsRacingAConsumer(code):
    """A consumer joined between the check and the commit: the broker refused the commit."""
    broker = CannedBroker(*RESET, offsetCommit(6, {("logs", p): code for p in range(3)}),
                          describeGroups(7, group("billing", "Stable", [("m", "c", "/h", b"")])))
    try:
        with pytest.raises(cli.CommandError) as refused:
            broker.run("groups", "reset-offsets", "billing", "--topic", "logs", "--to-earliest")
        assert str(refused.value).startswith("cannot reset the offsets of group billing: it is Stable with 1 member;")
    finally:
        broker.close()


@pytest.mark.parametrize("broker", [[
    describeGroups(1, group("billing", "Empty")),
    metadata(2, topic("logs", 3)),
    listOffsets(3, "logs", [(0, 0, 0), (1, 0, 0), (2, 6, -1)]),
    listOffsets(4, "logs", [(0, 0, 4), (1, 0, 4), (2, 6, -1)]),
    offsetFetch(5, {}),
    offsetCommit(6, {("logs", 0): 0, ("logs", 1): 12}),
]], indirect=True)
def test_groupsResetOffsetsPartlyRefused(broker):
    out = io.StringIO()
    args = parse("groups", "reset-offsets", "billing", "--topic", "logs", "--to-latest")
    with pytest.raises(cli.CommandError) as refused:
        args.run(broker.client, args, out)
    assert out.getvalue() == "topic  partition  previous  new\nlogs   0          -         4\n"
    assert str(refused.value).splitlines() == [
        "cannot reset the offset of group billing for logs/2: log start error 6, end error 6",
        "cannot reset the offset of group billing for logs/1: offset metadata too large (error 12)",
    ]


@pytest.mark.parametrize("broker", [[describeGroups(1, group("billing", "Empty")), metadata(2, topic("nope", 0, error=3))]], indirect=True)
def test_groupsResetOffsetsOfAnUnknownTopic(broker):
    with pytest.raises(cli.CommandError, match="^unknown topic nope$"):
        broker.run("groups", "reset-offsets", "billing", "--topic", "nope", "--to-earliest")


@pytest.mark.parametrize("broker", [[deleteGroups(1, ("a", 0), ("busy", 68), ("nope", 69), ("odd", 24))]], indirect=True)
def test_groupsDelete(broker):
    out = io.StringIO()
    args = parse("groups", "delete", "a", "busy", "nope", "odd", "silent", "a")
    with pytest.raises(cli.CommandError) as refused:
        args.run(broker.client, args, out)
    assert out.getvalue() == "deleted group a\n"
    assert str(refused.value).splitlines() == [
        "cannot delete group busy: it has members: stop its consumers first",
        "cannot delete group nope: unknown group",
        "cannot delete group odd: invalid group id (error 24)",
        "the broker did not answer for group silent",
    ]
    [(header, request)] = broker.requests()
    assert (header.apiKey, header.apiVersion) == (42, 1)
    assert request.groupsNames == ["a", "busy", "nope", "odd", "silent", "a"]


# --- acls ---------------------------------------------------------------------


def test_aclsArguments():
    args = parse("acls", "add", "--allow-principal", "User:a", "--operation", "describe-configs", "--operation", "IdempotentWrite",
                 "--topic", "t", "--cluster", "--resource-pattern-type", "PREFIXED")
    assert (args.allow_principal, args.operation, args.topic, args.cluster) == (["User:a"], [10, 12], ["t"], True)
    assert args.resource_pattern_type == 4
    assert parse("acls", "list").resource_pattern_type == 1  # any
    assert parse("acls", "remove", "--group", "g").resource_pattern_type == 3  # literal


@pytest.mark.parametrize("argv", [
    ["acls", "add", "--allow-principal", "User:a"],  # no resource
    ["acls", "add", "--allow-principal", "alice", "--topic", "t"],  # no TYPE:NAME
    ["acls", "add", "--allow-principal", "User:a", "--topic", "t", "--operation", "Fly"],
    ["acls", "add", "--allow-principal", "User:a", "--topic", "t", "--resource-pattern-type", "match"],  # filters only
    ["acls", "remove"],
    ["acls", "list", "--resource-pattern-type", "unknown"],
])
def test_aclsBadUsageExitsWith2(argv, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2


def createAcls(correlationId, *results):
    return answer(cli.CREATE_ACLS, correlationId, {"results": [{"errorCode": e, "errorMessage": m} for e, m in results]})


@pytest.mark.parametrize("broker", [[createAcls(1, (0, None), (42, "invalid empty resource name"), (0, None), (0, None))]], indirect=True)
def test_aclsAddMakesEveryCombination(broker):
    with pytest.raises(cli.CommandError) as refused:
        broker.run("acls", "add", "--allow-principal", "User:a", "--deny-principal", "User:*", "--deny-host", "10.0.0.9",
                   "--operation", "Read", "--operation", "Write", "--topic", "t")
    assert str(refused.value) == "cannot add ACL User:a Allow Write * Topic:t literal: invalid empty resource name"
    [(header, request)] = broker.requests()
    assert (header.apiKey, header.apiVersion) == (30, 1)
    assert [(c.resourceType, c.resourceName, c.resourcePatternType, c.principal, c.host, c.operation, c.permissionType)
            for c in request.creations] == [
        (2, "t", 3, "User:a", "*", 3, 3), (2, "t", 3, "User:a", "*", 4, 3),
        (2, "t", 3, "User:*", "10.0.0.9", 3, 2), (2, "t", 3, "User:*", "10.0.0.9", 4, 2),
    ]


@pytest.mark.parametrize("broker", [[createAcls(1, (0, None))]], indirect=True)
def test_aclsAddPrintsWhatWasAdded(broker):
    assert broker.run("acls", "add", "--allow-principal", "User:a", "--cluster") == (
        "added 1 ACL:\n"
        "principal  permission  operation  host  resource               pattern\n"
        "User:a     Allow       All        *     Cluster:kafka-cluster  literal\n"
    )


def describeAcls(correlationId, resources, error=0, message=None):
    """resources: {(type, name, pattern type): [(principal, host, operation, permission)]}."""
    return answer(cli.DESCRIBE_ACLS, correlationId, {"errorCode": error, "errorMessage": message, "resources": [
        {"type": t, "name": n, "patternType": p, "acls": [
            {"principal": who, "host": h, "operation": o, "permissionType": perm} for who, h, o, perm in acls
        ]} for (t, n, p), acls in resources.items()
    ]})


@pytest.mark.parametrize("broker", [[describeAcls(1, {
    (2, "logs", 3): [("User:b", "*", 3, 3), ("User:a", "*", 2, 2)],
    (3, "app-", 4): [("User:*", "10.0.0.1", 8, 3)],
})]], indirect=True)
def test_aclsList(broker):
    assert broker.run("acls", "list", "--principal", "User:a") == (
        "principal  permission  operation  host      resource    pattern\n"
        "User:*     Allow       Describe   10.0.0.1  Group:app-  prefixed\n"
        "User:a     Deny        All        *         Topic:logs  literal\n"
        "User:b     Allow       Read       *         Topic:logs  literal\n"
    )
    [(header, request)] = broker.requests()
    assert (header.apiKey, header.apiVersion) == (29, 1)
    assert (request.resourceType, request.resourceNameFilter, request.resourcePatternType, request.principalFilter,
            request.hostFilter, request.operation, request.permissionType) == (1, None, 1, "User:a", None, 1, 1)


@pytest.mark.parametrize("broker", [[describeAcls(1, {}, 54, "No Authorizer is configured on the broker (start it with --acls)")]], indirect=True)
def test_aclsListRefused(broker):
    with pytest.raises(cli.CommandError) as refused:
        broker.run("acls", "list")
    assert str(refused.value) == "cannot list ACLs: No Authorizer is configured on the broker (start it with --acls)"


def deleteAcls(correlationId, *results):
    """results: (error, message, [(type, name, pattern, principal, host, operation, permission, error)])."""
    return answer(cli.DELETE_ACLS, correlationId, {"filterResults": [
        {"errorCode": e, "errorMessage": m, "matchingAcls": [
            {"errorCode": me, "errorMessage": None, "resourceType": t, "resourceName": n, "patternType": p, "principal": who,
             "host": h, "operation": o, "permissionType": perm}
            for t, n, p, who, h, o, perm, me in matched
        ]} for e, m, matched in results
    ]})


@pytest.mark.parametrize("broker", [[deleteAcls(1, (0, None, [(2, "t", 3, "User:a", "*", 3, 3, 0)]), (0, None, []))]], indirect=True)
def test_aclsRemove(broker):
    assert broker.run("acls", "remove", "--topic", "t", "--group", "g") == (
        "removed 1 ACL:\n"
        "principal  permission  operation  host  resource  pattern\n"
        "User:a     Allow       Read       *     Topic:t   literal\n"
    )
    [(header, request)] = broker.requests()
    assert [(f.resourceTypeFilter, f.resourceNameFilter, f.patternTypeFilter, f.principalFilter, f.hostFilter, f.operation,
             f.permissionType) for f in request.filters] == [(2, "t", 3, None, None, 1, 1), (3, "g", 3, None, None, 1, 1)]


@pytest.mark.parametrize("broker", [[deleteAcls(1, (31, "Cluster authorization failed.", []))]], indirect=True)
def test_aclsRemoveRefused(broker):
    with pytest.raises(cli.CommandError) as refused:
        broker.run("acls", "remove", "--cluster", "--allow-principal", "User:a", "--operation", "Alter")
    assert str(refused.value) == "cannot remove ACLs of Cluster:kafka-cluster: Cluster authorization failed."
    [(_, request)] = broker.requests()
    (f,) = request.filters
    assert (f.principalFilter, f.hostFilter, f.operation, f.permissionType) == ("User:a", "*", 7, 3)


def test_saslOptionsGoTogether(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["--sasl-mechanism", "PLAIN", "topics", "list"])
    assert exited.value.code == 2 and "--sasl-mechanism and --sasl-username go together" in capsys.readouterr().err


def test_saslPasswordFromTheEnvironmentElseAsked(monkeypatch):
    monkeypatch.setenv(cli.PASSWORD_VARIABLE, "from-env")
    assert cli.saslPassword("alice", prompt=lambda text: "asked") == "from-env"
    monkeypatch.delenv(cli.PASSWORD_VARIABLE)
    prompts = []
    assert cli.saslPassword("alice", prompt=lambda text: prompts.append(text) or "asked") == "asked"
    assert prompts == ["Password of alice: "]
