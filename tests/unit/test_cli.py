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
    def refuse(address, timeout):
        raise cli.CommandError(f"cannot connect to {address}: refused")

    monkeypatch.setattr(cli, "connect", refuse)
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(["-b", "h:1", "topics", "list"], out, err) == 1
    assert (out.getvalue(), err.getvalue()) == ("", "kafkaw: cannot connect to h:1: refused\n")


def test_mainReportsEachRefusedTopic(monkeypatch):
    broker = CannedBroker(deleteTopics(1, ("a", 0), ("b", 3), ("c", 3)))
    monkeypatch.setattr(cli, "connect", lambda address, timeout: broker.client)
    out, err = io.StringIO(), io.StringIO()
    try:
        assert cli.main(["topics", "delete", "a", "b", "c"], out, err) == 1
    finally:
        broker.theirs.close()
    assert out.getvalue() == "deleted topic a\n"
    assert err.getvalue().splitlines() == [
        "kafkaw: cannot delete topic b: unknown topic", "kafkaw: cannot delete topic c: unknown topic"
    ]
