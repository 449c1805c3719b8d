"""C{kafkaw}: the admin command line of a kafkaw broker.

    kafkaw [--bootstrap HOST:PORT] topics list
    kafkaw [--bootstrap HOST:PORT] topics create NAME [--partitions N] [--config NAME=VALUE]...
    kafkaw [--bootstrap HOST:PORT] topics describe NAME
    kafkaw [--bootstrap HOST:PORT] topics alter NAME --partitions N
    kafkaw [--bootstrap HOST:PORT] topics delete NAME [NAME...]
    kafkaw [--bootstrap HOST:PORT] offsets TOPIC

A small blocking client: one plain socket, the generic codec of
L{kafkaw.protocol.schema} at the versions in L{CALLS} (Kafka 2.1's admin
APIs). A command that fails prints one line on stderr (one per topic the
broker refused) and exits with status 1; bad usage exits with 2.

Topics are looked up with Metadata v4 naming them and
C{allowAutoTopicCreation} false, so asking about an unknown topic never
creates it, even on a broker that auto-creates topics.
"""

import argparse
import socket
import sys
from typing import NamedTuple

from kafkaw.protocol import schema
from kafkaw.protocol.api import EARLIEST, LATEST
from kafkaw.protocol.errors import CodecError, ErrorCode
from kafkaw.protocol.framing import Framer, FrameTooLarge, frame

CLIENT_ID = "kafkaw-cli"


class Call(NamedTuple):
    """One API at the version the CLI speaks, and the first Kafka release serving that version."""

    apiKey: int
    version: int
    name: str
    since: str


METADATA = Call(3, 4, "Metadata", "1.0")
LIST_OFFSETS = Call(2, 1, "ListOffsets", "0.10.1")
CREATE_TOPICS = Call(19, 3, "CreateTopics", "2.0")
DELETE_TOPICS = Call(20, 3, "DeleteTopics", "2.1")
DESCRIBE_CONFIGS = Call(32, 2, "DescribeConfigs", "2.0")
CREATE_PARTITIONS = Call(37, 1, "CreatePartitions", "2.0")
CALLS = (METADATA, LIST_OFFSETS, CREATE_TOPICS, DELETE_TOPICS, DESCRIBE_CONFIGS, CREATE_PARTITIONS)

_RESOURCE_TOPIC = 2  # DescribeConfigs resource type
_SOURCE_TOPIC = 1  # DescribeConfigs config source DYNAMIC_TOPIC_CONFIG: set on the topic itself


class CommandError(Exception):
    """The command cannot be done; the message says why (one line per failure)."""


def describeError(code, message=None):
    """What an error code (and the broker's message, where the answer has one) says, for a person."""
    if message:
        return message
    try:
        name = ErrorCode(code).name.lower().replace("_", " ")
    except ValueError:
        return f"error {code}"
    return f"{name} (error {code})"


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

    def call(self, call, request):
        """Send C{request} (a dict, see L{kafkaw.protocol.schema}) as C{call}; return the decoded answer."""
        self._correlationId += 1
        what = call.name
        encoded = schema.encodeRequest(call.apiKey, call.version, self._correlationId, CLIENT_ID, request)
        try:
            self._socket.sendall(frame(encoded))
            response = self._receive()
        except TimeoutError:
            raise CommandError(f"no answer from {self._address} to {what} within {self._timeout:g} s") from None
        except OSError as e:
            raise CommandError(f"{what} to {self._address} failed: {e}") from None
        except FrameTooLarge as e:
            raise CommandError(f"cannot read the answer of {self._address} to {what}: {e}") from None
        if response is None:
            raise CommandError(
                f"{self._address} closed the connection on {what} (it does not serve {what} v{call.version}:"
                f" a --strict-0.8 kafkaw, or Kafka before {call.since})"
            )
        try:
            correlationId, answer = schema.decodeResponse(call.apiKey, call.version, response)
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

    def _timeoutMs(self):
        return int(self._timeout * 1000)

    def metadata(self, names):
        """The Metadata topics of C{names} (C{None}: every topic); none is created."""
        topics = None if names is None else [{"name": name} for name in names]
        return self.call(METADATA, {"topics": topics, "allowAutoTopicCreation": False}).topics

    def topics(self):
        """{name: topic} of every topic."""
        return {topic.name: topic for topic in self.metadata(None)}

    def topic(self, name):
        """The Metadata topic C{name}; L{CommandError} if it does not exist."""
        found = [topic for topic in self.metadata([name]) if topic.name == name]
        if not found:
            raise CommandError(f"{self._address} did not answer for topic {name}")
        topic = found[0]
        if topic.errorCode == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION:
            raise CommandError(f"unknown topic {name}")
        if topic.errorCode:
            raise CommandError(f"topic {name}: {describeError(topic.errorCode)}")
        return topic

    def offsets(self, topic, partitions, time):
        """{partition: offset or "error N"} of ListOffsets at C{time} (-2 earliest, -1 latest)."""
        request = {
            "replicaId": -1,
            "topics": [{"name": topic, "partitions": [{"partitionIndex": p, "timestamp": time} for p in partitions]}],
        }
        found = {}
        for answered in self.call(LIST_OFFSETS, request).topics:
            for result in answered.partitions:
                found[result.partitionIndex] = f"error {result.errorCode}" if result.errorCode else result.offset
        return found

    def bounds(self, topic):
        """{partition: (log start, log end)} of a Metadata topic's partitions, as L{offsets} gives them."""
        numbers = sorted(p.partitionIndex for p in topic.partitions)
        starts, ends = self.offsets(topic.name, numbers, EARLIEST), self.offsets(topic.name, numbers, LATEST)
        return {p: (starts.get(p), ends.get(p)) for p in numbers}

    def createTopic(self, name, partitions, configs):
        """The broker's (error code, message) for creating topic C{name}, or C{None} if it did not say."""
        request = {
            "topics": [{
                "name": name, "numPartitions": partitions, "replicationFactor": 1, "assignments": [],
                "configs": [{"name": k, "value": v} for k, v in configs],
            }],
            "timeoutMs": self._timeoutMs(),
        }
        results = {r.name: (r.errorCode, r.errorMessage) for r in self.call(CREATE_TOPICS, request).topics}
        return results.get(name)

    def deleteTopics(self, names):
        """{name: error code} of DeleteTopics (which has no error messages)."""
        request = {"topicNames": list(names), "timeoutMs": self._timeoutMs()}
        return {r.name: r.errorCode for r in self.call(DELETE_TOPICS, request).responses}

    def createPartitions(self, name, count):
        """The broker's (error code, message) for growing topic C{name} to C{count} partitions, or C{None}."""
        request = {"topics": [{"name": name, "count": count, "assignments": None}], "timeoutMs": self._timeoutMs()}
        results = {r.name: (r.errorCode, r.errorMessage) for r in self.call(CREATE_PARTITIONS, request).results}
        return results.get(name)

    def configs(self, name):
        """[(config, value, set on the topic)] of topic C{name}, sorted by config name."""
        request = {"resources": [{"resourceType": _RESOURCE_TOPIC, "resourceName": name, "configurationKeys": None}]}
        results = [r for r in self.call(DESCRIBE_CONFIGS, request).results if r.resourceName == name]
        if not results:
            raise CommandError(f"{self._address} did not answer DescribeConfigs for topic {name}")
        result = results[0]
        if result.errorCode:
            why = describeError(result.errorCode, result.errorMessage)
            raise CommandError(f"cannot describe the configs of topic {name}: {why}")
        return sorted((c.name, c.value, c.configSource == _SOURCE_TOPIC) for c in result.configs)


def table(rows):
    """Rows of cells as left-aligned columns."""
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


def topicsList(client, arguments, out):
    for name in sorted(client.topics()):
        print(name, file=out)


def topicsCreate(client, arguments, out):
    name, partitions, configs = arguments.name, arguments.partitions, arguments.config
    answer = client.createTopic(name, partitions, configs)
    if answer is None:
        raise CommandError(f"the broker did not answer for topic {name}")
    code, message = answer
    if code:
        raise CommandError(f"cannot create topic {name}: {describeError(code, message)}")
    settings = "".join(f", {k}={v}" for k, v in configs)
    print(f"created topic {name} ({_count(partitions, 'partition')}{settings})", file=out)


def topicsDelete(client, arguments, out):
    """One line per topic: deleted on stdout, refused on stderr (then exit status 1)."""
    answers = client.deleteTopics(arguments.names)
    refused = []
    for name in dict.fromkeys(arguments.names):
        code = answers.get(name)
        if code is None:
            refused.append(f"the broker did not answer for topic {name}")
        elif code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION:
            refused.append(f"cannot delete topic {name}: unknown topic")
        elif code:
            refused.append(f"cannot delete topic {name}: {describeError(code)}")
        else:
            print(f"deleted topic {name}", file=out)
    if refused:
        raise CommandError("\n".join(refused))


def topicsAlter(client, arguments, out):
    name, partitions = arguments.name, arguments.partitions
    answer = client.createPartitions(name, partitions)
    if answer is None:
        raise CommandError(f"the broker did not answer for topic {name}")
    code, message = answer
    if code:
        raise CommandError(f"cannot alter topic {name}: {describeError(code, message)}")
    print(f"topic {name} now has {_count(partitions, 'partition')}", file=out)


def topicsDescribe(client, arguments, out):
    topic = client.topic(arguments.name)
    bounds = client.bounds(topic)
    configs = client.configs(topic.name)
    print(f"topic {topic.name}: {_count(len(topic.partitions), 'partition')}", file=out)
    rows = [("partition", "leader", "replicas", "isr", "start", "end")]
    for p in sorted(topic.partitions, key=lambda p: p.partitionIndex):
        replicas, isr = ",".join(map(str, p.replicaNodes)), ",".join(map(str, p.isrNodes))
        rows.append((p.partitionIndex, p.leaderId, replicas, isr, *bounds[p.partitionIndex]))
    print(table(rows), file=out)
    if configs:
        print(file=out)
        rows = [("config", "value", "source")]
        for config, value, own in configs:
            rows.append((config, "-" if value is None else value, "set" if own else "default"))
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
    top.add_argument(
        "--bootstrap", "-b", default="127.0.0.1:9092", type=_bootstrap, metavar="HOST:PORT",
        help="the broker (default: %(default)s)",
    )
    top.add_argument(
        "--timeout", type=float, default=10.0, metavar="SECONDS",
        help="how long to wait for the broker (default: %(default)s)",
    )
    commands = top.add_subparsers(title="commands", required=True, metavar="COMMAND")

    topics = commands.add_parser("topics", help="list, create, describe, alter or delete topics").add_subparsers(
        title="topics commands", required=True, metavar="ACTION"
    )
    topics.add_parser("list", help="every topic, one name a line").set_defaults(run=topicsList)
    create = topics.add_parser("create", help="create a topic (CreateTopics v3)")
    create.add_argument("name")
    create.add_argument(
        "--partitions", "-p", type=int, default=1, metavar="N", help="number of partitions (default: 1)"
    )
    create.add_argument(
        "--config", type=_config, action="append", default=[], metavar="NAME=VALUE",
        help="a topic config, such as retention.ms or retention.bytes (-1: unlimited); repeatable",
    )
    create.set_defaults(run=topicsCreate)
    describe = topics.add_parser(
        "describe", help="a topic's partitions (leader, replicas, isr, log start and end) and configs"
    )
    describe.add_argument("name")
    describe.set_defaults(run=topicsDescribe)
    alter = topics.add_parser("alter", help="grow a topic to more partitions (CreatePartitions v1)")
    alter.add_argument("name")
    alter.add_argument("--partitions", "-p", type=int, required=True, metavar="N", help="the new number of partitions")
    alter.set_defaults(run=topicsAlter)
    delete = topics.add_parser("delete", help="delete topics and their data (DeleteTopics v3)")
    delete.add_argument("names", nargs="+", metavar="NAME")
    delete.set_defaults(run=topicsDelete)

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
        for line in str(e).splitlines():
            print(f"kafkaw: {line}", file=err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
