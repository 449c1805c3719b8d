"""The `kafkaw` admin CLI without a broker: its arguments, and its commands
against canned answers on the other end of a socketpair (no network). The
same commands against a real broker are in tests/integration/test_admin.py."""

import configparser
import io
import socket
from pathlib import Path

import pytest

from kafkaw import cli
from kafkaw.protocol import api
from kafkaw.protocol.api import Broker, OffsetsResult, PartitionMetadata, TopicMetadata
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
        """The request frames the client sent: (header, body reader). Ends the client's sending."""
        self.ours.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := self.theirs.recv(65536):
            data += chunk
        return [api.decodeHeader(f) for f in Framer(1 << 20).feed(data)]

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


def metadata(correlationId, *topics):
    return api.encodeMetadataResponse(correlationId, [Broker(0, "127.0.0.1", 9092)], list(topics))


def topic(name, partitions, error=0):
    return TopicMetadata(error, name, [PartitionMetadata(0, p, 0, [0], [0]) for p in range(partitions)])


def listOffsets(correlationId, name, results):
    return api.encodeListOffsetsResponse(correlationId, [(name, results)])


@pytest.mark.parametrize("broker", [[metadata(1, topic("b", 1), topic("a", 2))]], indirect=True)
def test_topicsList(broker):
    assert broker.run("topics", "list") == "a\nb\n"
    [(header, reader)] = broker.requests()
    assert (header.apiKey, header.apiVersion, header.clientId) == (3, 0, "kafkaw-cli")
    assert api.decodeMetadata(reader).topics == []


ANSWERS = [
    metadata(1, topic("logs", 3), topic("other", 1)),
    listOffsets(2, "logs", [OffsetsResult(0, 0, [5]), OffsetsResult(1, 0, [0]), OffsetsResult(2, 3, [])]),
    listOffsets(3, "logs", [OffsetsResult(0, 0, [12]), OffsetsResult(1, 0, [0]), OffsetsResult(2, 3, [])]),
]


@pytest.mark.parametrize("broker", [ANSWERS], indirect=True)
def test_topicsDescribe(broker):
    assert broker.run("topics", "describe", "logs") == (
        "topic logs: 3 partitions\n"
        "partition  leader  replicas  isr  start    end\n"
        "0          0       0         0    5        12\n"
        "1          0       0         0    0        0\n"
        "2          0       0         0    error 3  error 3\n"
    )
    [metadataRequest, earliest, latest] = broker.requests()
    assert api.decodeMetadata(metadataRequest[1]).topics == []  # never names the topic: that could create it
    asked = api.decodeListOffsets(earliest[1]).topics
    assert asked == [("logs", [api.OffsetsPartition(p, -2, 1) for p in range(3)])]
    assert api.decodeListOffsets(latest[1]).topics == [("logs", [api.OffsetsPartition(p, -1, 1) for p in range(3)])]


@pytest.mark.parametrize("broker", [ANSWERS], indirect=True)
def test_offsets(broker):
    assert broker.run("offsets", "logs") == (
        "partition  start    end\n"
        "0          5        12\n"
        "1          0        0\n"
        "2          error 3  error 3\n"
    )


@pytest.mark.parametrize("broker", [[metadata(1, topic("other", 1))]], indirect=True)
@pytest.mark.parametrize("command", [["offsets", "nope"], ["topics", "describe", "nope"]])
def test_unknownTopic(broker, command):
    with pytest.raises(cli.CommandError, match="^unknown topic nope$"):
        broker.run(*command)
    assert len(broker.requests()) == 1


@pytest.mark.parametrize("broker", [[api.encodeCreateTopicsResponse(1, [("logs", 0)])]], indirect=True)
def test_topicsCreate(broker):
    out = broker.run("topics", "create", "logs", "-p", "3", "--config", "retention.ms=60000")
    assert out == "created topic logs (3 partitions, retention.ms=60000)\n"
    [(header, reader)] = broker.requests()
    assert (header.apiKey, header.apiVersion) == (19, 0)
    assert api.decodeCreateTopics(reader) == api.CreateTopicsRequest([api.NewTopic("logs", 3, 1, [], [("retention.ms", "60000")])], 200)


@pytest.mark.parametrize(
    "code, message",
    [
        (36, "topic logs already exists"),
        (17, "invalid topic name 'logs': use 1 to 249 of a-z A-Z 0-9 . _ - (not . or ..)"),
        (37, "invalid partition count 1"),
        (40, "invalid config retention.ms=x: known are retention.ms and retention.bytes, integers >= -1"),
        (42, "the broker refused the request as invalid"),
        (-1, "error -1 creating topic logs"),
    ],
)
def test_topicsCreateRefused(code, message):
    broker = CannedBroker(api.encodeCreateTopicsResponse(1, [("logs", code)]))
    try:
        with pytest.raises(cli.CommandError) as refused:
            broker.run("topics", "create", "logs", "--config", "retention.ms=x")
        assert str(refused.value) == message
    finally:
        broker.close()


def test_closedConnection():
    broker = CannedBroker()
    broker.theirs.shutdown(socket.SHUT_WR)
    try:
        with pytest.raises(cli.CommandError, match="broker:9092 closed the connection on CreateTopics .*--strict-0.8"):
            broker.run("topics", "create", "x")
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
    ],
)
def test_badAnswers(answer, why):
    broker = CannedBroker(answer)
    try:
        with pytest.raises(cli.CommandError, match=why):
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
