"""C{kafkaw}: the admin command line of a kafkaw broker.

    kafkaw [--bootstrap HOST:PORT] topics list
    kafkaw [--bootstrap HOST:PORT] topics create NAME [--partitions N] [--config NAME=VALUE]...
    kafkaw [--bootstrap HOST:PORT] topics describe NAME
    kafkaw [--bootstrap HOST:PORT] offsets TOPIC

A small blocking client: one plain socket, the project's own codec
(Metadata, ListOffsets and CreateTopics v0). A command that fails prints one
line on stderr and exits with status 1; bad usage exits with 2.

Topics are looked up in the list of all topics (a Metadata request naming no
topic), never by name: naming an unknown topic would create it on a broker
that auto-creates topics.
"""

import argparse
import socket
import sys

from kafkaw.protocol import api, responses
from kafkaw.protocol.api import EARLIEST, LATEST, AdminErrorCode, CreateTopicsRequest, NewTopic, OffsetsPartition
from kafkaw.protocol.errors import CodecError
from kafkaw.protocol.framing import Framer, FrameTooLarge, frame

CLIENT_ID = "kafkaw-cli"


class CommandError(Exception):
    """The command cannot be done; the message says why."""


def parseHostPort(address):
    """("host", port) from "HOST:PORT" or "[IPv6]:PORT"."""
    host, _, port = address.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host or not port.isdigit():
        raise ValueError(f"HOST:PORT, not {address!r}")
    return host, int(port)


def connect(address, timeout):
    """A L{Client} connected to C{address} ("HOST:PORT")."""
    try:
        connection = socket.create_connection(parseHostPort(address), timeout=timeout)
    except OSError as e:
        raise CommandError(f"cannot connect to {address}: {e}") from None
    return Client(connection, address, timeout)


class Client:
    """One blocking connection to a broker; requests are answered in order."""

    def __init__(self, connection, address, timeout):
        connection.settimeout(timeout)
        self._socket = connection
        self._address = address
        self._timeout = timeout
        self._framer = Framer(1 << 28)
        self._frames = []
        self._correlationId = 0

    def close(self):
        self._socket.close()

    def call(self, encode, decode, what, closedHint=""):
        """Send C{encode(correlationId)}; return the fields of C{decode(response)} after the correlation id."""
        self._correlationId += 1
        try:
            self._socket.sendall(frame(encode(self._correlationId)))
            response = self._receive()
        except TimeoutError:
            raise CommandError(f"no answer from {self._address} to {what} within {self._timeout:g} s") from None
        except OSError as e:
            raise CommandError(f"{what} to {self._address} failed: {e}") from None
        except FrameTooLarge as e:
            raise CommandError(f"cannot read the answer of {self._address} to {what}: {e}") from None
        if response is None:
            raise CommandError(f"{self._address} closed the connection on {what}{closedHint}")
        try:
            correlationId, *answer = decode(response)
        except CodecError as e:
            raise CommandError(f"cannot decode the answer of {self._address} to {what}: {e}") from None
        if correlationId != self._correlationId:
            raise CommandError(f"{self._address} answered {what} with correlation id {correlationId}")
        return answer

    def _receive(self):
        while not self._frames:
            data = self._socket.recv(1 << 16)
            if not data:
                return None
            self._frames.extend(self._framer.feed(data))
        return self._frames.pop(0)

    def topics(self):
        """{name: TopicMetadata} of every topic, from Metadata with no topic named."""
        _, topics = self.call(
            lambda cid: api.encodeMetadataRequest(cid, CLIENT_ID, []), responses.decodeMetadataResponse, "Metadata"
        )
        return {topic.name: topic for topic in topics}

    def topic(self, name):
        topic = self.topics().get(name)
        if topic is None:
            raise CommandError(f"unknown topic {name}")
        if topic.error:
            raise CommandError(f"topic {name}: Metadata error {topic.error}")
        return topic

    def offsets(self, topic, partitions, time):
        """{partition: offset or "error N"} of ListOffsets at C{time} (-2 earliest, -1 latest)."""
        asked = [(topic, [OffsetsPartition(p, time, 1) for p in partitions])]
        (answered,) = self.call(
            lambda cid: api.encodeListOffsetsRequest(cid, CLIENT_ID, asked), responses.decodeListOffsetsResponse, "ListOffsets"
        )
        found = {}
        for _, results in answered:
            for result in results:
                found[result.partition] = result.offsets[0] if not result.error and result.offsets else f"error {result.error}"
        return found

    def bounds(self, topic):
        """{partition: (log start, log end)} of a L{TopicMetadata}'s partitions, as L{offsets} gives them."""
        numbers = sorted(p.partition for p in topic.partitions)
        starts, ends = self.offsets(topic.name, numbers, EARLIEST), self.offsets(topic.name, numbers, LATEST)
        return {p: (starts.get(p), ends.get(p)) for p in numbers}

    def createTopic(self, name, partitions, configs):
        request = CreateTopicsRequest([NewTopic(name, partitions, 1, [], configs)], int(self._timeout * 1000))
        (results,) = self.call(
            lambda cid: api.encodeCreateTopicsRequest(cid, CLIENT_ID, request),
            responses.decodeCreateTopicsResponse,
            "CreateTopics",
            " (it does not serve CreateTopics: a --strict-0.8 kafkaw, or Kafka before 0.10.1)",
        )
        return dict(results).get(name)


def table(rows):
    """Rows of cells as left-aligned columns."""
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


_CREATE_ERRORS = {
    AdminErrorCode.TOPIC_ALREADY_EXISTS: "topic {name} already exists",
    AdminErrorCode.INVALID_TOPIC: "invalid topic name {name!r}: use 1 to 249 of a-z A-Z 0-9 . _ - (not . or ..)",
    AdminErrorCode.INVALID_PARTITIONS: "invalid partition count {partitions}",
    AdminErrorCode.INVALID_REPLICATION_FACTOR: "the broker refused replication factor 1",
    AdminErrorCode.INVALID_CONFIG: "invalid config {configs}: known are retention.ms and retention.bytes, integers >= -1",
    AdminErrorCode.INVALID_REQUEST: "the broker refused the request as invalid",
}


def topicsList(client, arguments, out):
    for name in sorted(client.topics()):
        print(name, file=out)


def topicsCreate(client, arguments, out):
    name, partitions, configs = arguments.name, arguments.partitions, arguments.config
    error = client.createTopic(name, partitions, configs)
    if error is None:
        raise CommandError(f"the broker did not answer for topic {name}")
    if error:
        shown = ", ".join(f"{k}={v}" for k, v in configs)
        message = _CREATE_ERRORS.get(error, "error {error} creating topic {name}")
        raise CommandError(message.format(name=name, partitions=partitions, configs=shown, error=error))
    settings = "".join(f", {k}={v}" for k, v in configs)
    print(f"created topic {name} ({_count(partitions, 'partition')}{settings})", file=out)


def topicsDescribe(client, arguments, out):
    topic = client.topic(arguments.name)
    bounds = client.bounds(topic)
    print(f"topic {topic.name}: {_count(len(topic.partitions), 'partition')}", file=out)
    rows = [("partition", "leader", "replicas", "isr", "start", "end")]
    for p in sorted(topic.partitions, key=lambda p: p.partition):
        replicas, isr = ",".join(map(str, p.replicas)), ",".join(map(str, p.isr))
        rows.append((p.partition, p.leader, replicas, isr, *bounds[p.partition]))
    print(table(rows), file=out)


def offsets(client, arguments, out):
    bounds = client.bounds(client.topic(arguments.topic))
    print(table([("partition", "start", "end")] + [(p, *bounds[p]) for p in sorted(bounds)]), file=out)


def _count(number, noun):
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _config(setting):
    name, equals, value = setting.partition("=")
    if not equals or not name:
        raise argparse.ArgumentTypeError(f"takes NAME=VALUE, not {setting!r}")
    return name, value


def _bootstrap(address):
    try:
        parseHostPort(address)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return address


def parser():
    top = argparse.ArgumentParser(prog="kafkaw", description="Admin commands for a kafkaw broker.")
    top.add_argument("--bootstrap", "-b", default="127.0.0.1:9092", type=_bootstrap, metavar="HOST:PORT", help="the broker (default: %(default)s)")
    top.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS", help="how long to wait for the broker (default: %(default)s)")
    commands = top.add_subparsers(title="commands", required=True, metavar="COMMAND")

    topics = commands.add_parser("topics", help="list, create or describe topics").add_subparsers(
        title="topics commands", required=True, metavar="ACTION"
    )
    topics.add_parser("list", help="every topic, one name a line").set_defaults(run=topicsList)
    create = topics.add_parser("create", help="create a topic (CreateTopics v0)")
    create.add_argument("name")
    create.add_argument("--partitions", "-p", type=int, default=1, metavar="N", help="number of partitions (default: 1)")
    create.add_argument(
        "--config", type=_config, action="append", default=[], metavar="NAME=VALUE",
        help="a topic config: retention.ms or retention.bytes (-1: unlimited); repeatable",
    )
    create.set_defaults(run=topicsCreate)
    describe = topics.add_parser("describe", help="a topic's partitions: leader, replicas, isr, log start and end")
    describe.add_argument("name")
    describe.set_defaults(run=topicsDescribe)

    listOffsets = commands.add_parser("offsets", help="log start and end offset of each partition of a topic")
    listOffsets.add_argument("topic")
    listOffsets.set_defaults(run=offsets)
    return top


def main(argv=None, out=None, err=None):
    """Run one command; return the exit status (bad usage exits with 2)."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    arguments = parser().parse_args(argv)
    try:
        client = connect(arguments.bootstrap, arguments.timeout)
        try:
            arguments.run(client, arguments, out)
        finally:
            client.close()
    except CommandError as e:
        print(f"kafkaw: {e}", file=err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
