"""C{kafkaw}: the admin command line of a kafkaw broker.

    kafkaw [--bootstrap HOST:PORT] topics list
    kafkaw [--bootstrap HOST:PORT] topics create NAME [--partitions N] [--config NAME=VALUE]...
    kafkaw [--bootstrap HOST:PORT] topics describe NAME
    kafkaw [--bootstrap HOST:PORT] topics alter NAME --partitions N
    kafkaw [--bootstrap HOST:PORT] topics delete NAME [NAME...]
    kafkaw [--bootstrap HOST:PORT] offsets TOPIC
    kafkaw [--bootstrap HOST:PORT] groups list
    kafkaw [--bootstrap HOST:PORT] groups describe GROUP
    kafkaw [--bootstrap HOST:PORT] groups delete GROUP [GROUP...]
    kafkaw [--bootstrap HOST:PORT] groups reset-offsets GROUP --topic TOPIC
        (--to-earliest | --to-latest | --to-offset N) [--dry-run]
    kafkaw [--bootstrap HOST:PORT] acls add (--allow-principal P | --deny-principal P)... [--operation OP]...
        [--allow-host H]... [--deny-host H]... RESOURCE... [--resource-pattern-type literal|prefixed]
    kafkaw [--bootstrap HOST:PORT] acls list [RESOURCE...] [--principal P] [--resource-pattern-type TYPE]
    kafkaw [--bootstrap HOST:PORT] acls remove RESOURCE... [(--allow-principal P | --deny-principal P)...]
        [--operation OP]... [--allow-host H]... [--deny-host H]... [--resource-pattern-type TYPE]
        (RESOURCE: --topic NAME, --group NAME, --transactional-id NAME, --cluster; each repeatable)
    kafkaw [--bootstrap HOST:PORT] users add NAME [--data-dir DIR] [--iterations N]   (password: prompt or stdin)
    kafkaw [--bootstrap HOST:PORT] users remove NAME [--data-dir DIR]
    kafkaw [--bootstrap HOST:PORT] users list [--data-dir DIR]
    (each also with [--tls] [--ca-cert PEM] [--sasl-mechanism MECHANISM --sasl-username NAME] before the command)

A small blocking client: one socket (TLS with C{--tls}), the generic codec
of L{kafkaw.protocol.schema} at the versions in L{CALLS} (Kafka 2.1's admin
and group APIs); with C{--sasl-mechanism} it authenticates first
(SaslHandshake v1, SaslAuthenticate v1; L{kafkaw.saslclient}). A command
that fails prints one line on stderr (one per topic, group or partition the
broker refused) and exits with status 1; bad usage exits with 2.

The C{users} commands (L{kafkaw.users}) work on a running broker, or with
C{--data-dir} on a stopped broker's store, without a connection.

Topics are looked up with Metadata v4 naming them and
C{allowAutoTopicCreation} false, so asking about an unknown topic never
creates it, even on a broker that auto-creates topics.
"""

import argparse
import getpass
import os
import socket
import ssl
import sys
from typing import NamedTuple

from kafkaw.broker.authorizer import CLUSTER_NAME, Operation, PatternType, Permission, ResourceType
from kafkaw.broker.sasl import MECHANISMS as SASL_MECHANISMS
from kafkaw.protocol import schema
from kafkaw.protocol.api import EARLIEST, LATEST
from kafkaw.protocol.errors import CodecError, ErrorCode
from kafkaw.protocol.framing import Framer, FrameTooLarge, frame
from kafkaw.protocol.primitives import Reader
from kafkaw.storage.interfaces import AclBinding
from kafkaw import saslclient, users

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
OFFSET_COMMIT = Call(8, 6, "OffsetCommit", "2.1")
OFFSET_FETCH = Call(9, 5, "OffsetFetch", "2.1")
DESCRIBE_GROUPS = Call(15, 2, "DescribeGroups", "2.0")
LIST_GROUPS = Call(16, 2, "ListGroups", "2.0")
DELETE_GROUPS = Call(42, 1, "DeleteGroups", "2.0")
DESCRIBE_ACLS = Call(29, 1, "DescribeAcls", "2.0")
CREATE_ACLS = Call(30, 1, "CreateAcls", "2.0")
DELETE_ACLS = Call(31, 1, "DeleteAcls", "2.0")
SASL_HANDSHAKE = Call(17, 1, "SaslHandshake", "1.0")
SASL_AUTHENTICATE = Call(36, 1, "SaslAuthenticate", "2.0")
CALLS = (
    METADATA, LIST_OFFSETS, CREATE_TOPICS, DELETE_TOPICS, DESCRIBE_CONFIGS, CREATE_PARTITIONS,
    OFFSET_COMMIT, OFFSET_FETCH, DESCRIBE_GROUPS, LIST_GROUPS, DELETE_GROUPS,
    DESCRIBE_ACLS, CREATE_ACLS, DELETE_ACLS, SASL_HANDSHAKE, SASL_AUTHENTICATE,
)
PASSWORD_VARIABLE = "KAFKAW_SASL_PASSWORD"

_RESOURCE_TOPIC = 2  # DescribeConfigs resource type
_SOURCE_TOPIC = 1  # DescribeConfigs config source DYNAMIC_TOPIC_CONFIG: set on the topic itself

_EMPTY, _DEAD = "Empty", "Dead"  # group states as DescribeGroups names them
_CONSUMER = "consumer"  # the protocol type of Kafka's consumers, whose assignments the CLI decodes


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


def connect(address, timeout, tls=None):
    """A L{Client} connected to C{address} ("HOST:PORT"); C{tls}: an
    C{ssl.SSLContext} to wrap the connection in (the host name is checked)."""
    host, port = parseHostPort(address)
    try:
        connection = socket.create_connection((host, port), timeout=timeout)
    except OSError as e:
        raise CommandError(f"cannot connect to {address}: {e}") from None
    if tls is not None:
        try:
            connection = tls.wrap_socket(connection, server_hostname=host)
        except (OSError, ssl.SSLError) as e:
            connection.close()
            raise CommandError(f"TLS with {address} failed: {e}") from None
    return Client(connection, address, timeout)


def tlsContext(caCert):
    """Certificates checked against C{caCert} (a PEM file), else the system's CAs."""
    try:
        return ssl.create_default_context(cafile=caCert)
    except (OSError, ssl.SSLError) as e:
        raise CommandError(f"cannot load --ca-cert {caCert}: {e}") from None


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

    def authenticate(self, mechanism, user, password):
        """SASL before any other request, as the broker's --sasl endpoints require."""
        handshake = self.call(SASL_HANDSHAKE, {"mechanism": mechanism})
        if handshake.errorCode == ErrorCode.ILLEGAL_SASL_STATE:
            raise CommandError(f"{self._address} takes no SASL (an endpoint without --sasl, or --sasl-exempt): leave out --sasl-mechanism")
        if handshake.errorCode:
            offered = ", ".join(handshake.mechanisms) or "none"
            raise CommandError(f"{self._address} does not take {mechanism} ({describeError(handshake.errorCode)}; it offers: {offered})")
        try:
            if mechanism == "PLAIN":
                self._saslStep(saslclient.plainToken(user, password))
            else:
                scram = saslclient.ScramClient(mechanism, user, password)
                scram.verify(self._saslStep(scram.final(self._saslStep(scram.first()))))
        except saslclient.SaslError as e:
            raise CommandError(f"authentication with {self._address} failed: {e}") from None

    def _saslStep(self, token):
        answer = self.call(SASL_AUTHENTICATE, {"authBytes": token})
        if answer.errorCode:
            raise CommandError(f"authentication with {self._address} failed: {describeError(answer.errorCode, answer.errorMessage)}")
        return answer.authBytes

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
        found = self.listOffsets({topic: partitions}, time)
        return {p: offset for (t, p), offset in found.items() if t == topic}

    def listOffsets(self, partitions, time):
        """{(topic, partition): offset or "error N"} of one ListOffsets at C{time} for C{partitions}, {topic: [partition]}."""
        request = {
            "replicaId": -1,
            "topics": [
                {"name": topic, "partitions": [{"partitionIndex": p, "timestamp": time} for p in numbers]}
                for topic, numbers in partitions.items()
            ],
        }
        found = {}
        for answered in self.call(LIST_OFFSETS, request).topics:
            for result in answered.partitions:
                offset = f"error {result.errorCode}" if result.errorCode else result.offset
                found[answered.name, result.partitionIndex] = offset
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

    def listGroups(self):
        """[(group id, protocol type)] of every group the broker coordinates."""
        answer = self.call(LIST_GROUPS, {})
        if answer.errorCode:
            raise CommandError(f"cannot list groups: {describeError(answer.errorCode)}")
        return [(g.groupId, g.protocolType) for g in answer.groups]

    def describeGroups(self, groupIds):
        """{group id: DescribeGroups group}; L{CommandError} if a group is not answered or refused."""
        groupIds = list(dict.fromkeys(groupIds))
        if not groupIds:
            return {}
        found = {g.groupId: g for g in self.call(DESCRIBE_GROUPS, {"groups": groupIds}).groups}
        refused = []
        for groupId in groupIds:
            group = found.get(groupId)
            if group is None:
                refused.append(f"the broker did not answer for group {groupId}")
            elif group.errorCode:
                refused.append(f"cannot describe group {groupId}: {describeError(group.errorCode)}")
        if refused:
            raise CommandError("\n".join(refused))
        return {groupId: found[groupId] for groupId in groupIds}

    def committed(self, groupId, partitions=None):
        """{(topic, partition): committed offset, -1 for none} of a group (C{partitions}
        C{None}: every partition it has offsets for); L{CommandError} on an error."""
        topics = None
        if partitions is not None:
            byTopic = {}
            for topic, partition in partitions:
                byTopic.setdefault(topic, []).append(partition)
            topics = [{"name": topic, "partitionIndexes": numbers} for topic, numbers in byTopic.items()]
        answer = self.call(OFFSET_FETCH, {"groupId": groupId, "topics": topics})
        if answer.errorCode:
            raise CommandError(f"cannot fetch the offsets of group {groupId}: {describeError(answer.errorCode)}")
        found, refused = {}, []
        for topic in answer.topics:
            for p in topic.partitions:
                if p.errorCode:
                    refused.append(f"cannot fetch the offset of group {groupId} for {topic.name}/{p.partitionIndex}: "
                                   f"{describeError(p.errorCode)}")
                else:
                    found[topic.name, p.partitionIndex] = p.committedOffset
        if refused:
            raise CommandError("\n".join(refused))
        return found

    def commit(self, groupId, offsets):
        """{(topic, partition): error code} of committing C{offsets}, {(topic, partition): offset}, from
        outside the group (generation -1, no member id), as Kafka's C{kafka-consumer-groups.sh} does."""
        byTopic = {}
        for (topic, partition), offset in offsets.items():
            byTopic.setdefault(topic, []).append(
                {"partitionIndex": partition, "committedOffset": offset, "committedLeaderEpoch": -1, "committedMetadata": ""}
            )
        request = {
            "groupId": groupId, "generationId": -1, "memberId": "",
            "topics": [{"name": topic, "partitions": partitions} for topic, partitions in byTopic.items()],
        }
        return {
            (topic.name, p.partitionIndex): p.errorCode
            for topic in self.call(OFFSET_COMMIT, request).topics
            for p in topic.partitions
        }

    def deleteGroups(self, groupIds):
        """{group id: error code} of DeleteGroups."""
        return {r.groupId: r.errorCode for r in self.call(DELETE_GROUPS, {"groupsNames": list(groupIds)}).results}

    # --- ACLs ---

    def createAcls(self, bindings):
        """[(error code, message)] of CreateAcls, one per L{AclBinding} of C{bindings}."""
        creations = [
            {"resourceType": b.resourceType, "resourceName": b.resourceName, "resourcePatternType": b.patternType,
             "principal": b.principal, "host": b.host, "operation": b.operation, "permissionType": b.permission}
            for b in bindings
        ]
        return [(r.errorCode, r.errorMessage) for r in self.call(CREATE_ACLS, {"creations": creations}).results]

    def describeAcls(self, aclFilter):
        """The L{AclBinding}s matching C{aclFilter} (an AclBinding of filter values); L{CommandError} on an error."""
        answer = self.call(DESCRIBE_ACLS, {
            "resourceType": aclFilter.resourceType, "resourceNameFilter": aclFilter.resourceName,
            "resourcePatternType": aclFilter.patternType, "principalFilter": aclFilter.principal,
            "hostFilter": aclFilter.host, "operation": aclFilter.operation, "permissionType": aclFilter.permission,
        })
        if answer.errorCode:
            raise CommandError(f"cannot list ACLs: {describeError(answer.errorCode, answer.errorMessage)}")
        return [
            AclBinding(r.type, r.name, r.patternType, a.principal, a.host, a.operation, a.permissionType)
            for r in answer.resources for a in r.acls
        ]

    def deleteAcls(self, filters):
        """[(error code, message, [(AclBinding, error code, message)])] of DeleteAcls, one per filter."""
        answer = self.call(DELETE_ACLS, {"filters": [
            {"resourceTypeFilter": f.resourceType, "resourceNameFilter": f.resourceName, "patternTypeFilter": f.patternType,
             "principalFilter": f.principal, "hostFilter": f.host, "operation": f.operation, "permissionType": f.permission}
            for f in filters
        ]})
        return [
            (r.errorCode, r.errorMessage, [
                (AclBinding(m.resourceType, m.resourceName, m.patternType, m.principal, m.host, m.operation, m.permissionType),
                 m.errorCode, m.errorMessage)
                for m in r.matchingAcls
            ])
            for r in answer.filterResults
        ]


def decodeAssignment(data):
    """[(topic, [partition])] of a consumer's assignment as the consumer protocol
    encodes it (version int16, [topic string, [partition int32]], user data
    bytes); C{None} if C{data} is not one."""
    reader = Reader(data)
    try:
        reader.int16()
        assigned = reader.array(lambda: (reader.string(), reader.array(reader.int32, 4)), 6)
        reader.bytes()  # user data (nullable); later versions may add fields after it
    except CodecError:
        return None
    if any(topic is None for topic, _ in assigned):
        return None
    return assigned


def describeAssignment(assigned):
    """"logs 0,1; audit 2" of [(topic, [partition])]; "-" for nothing."""
    parts = [f"{topic} {','.join(map(str, sorted(numbers)))}" for topic, numbers in sorted(assigned) if numbers]
    return "; ".join(parts) or "-"


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
    _deleteEach("topic", arguments.names, client.deleteTopics(arguments.names), {
        ErrorCode.UNKNOWN_TOPIC_OR_PARTITION: "unknown topic",
    }, out)


def _deleteEach(kind, names, answers, reasons, out):
    """Print "deleted KIND NAME" for each name answered 0; raise L{CommandError}
    naming the others, with C{reasons} {error code: why} or the code's name."""
    refused = []
    for name in dict.fromkeys(names):
        code = answers.get(name)
        if code is None:
            refused.append(f"the broker did not answer for {kind} {name}")
        elif code:
            refused.append(f"cannot delete {kind} {name}: {reasons.get(code) or describeError(code)}")
        else:
            print(f"deleted {kind} {name}", file=out)
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


def groupsList(client, arguments, out):
    """A table of every group: its protocol type, state and members (ListGroups, then one DescribeGroups)."""
    groups = sorted(client.listGroups())
    if not groups:
        return
    described = client.describeGroups([groupId for groupId, _ in groups])
    rows = [("group", "type", "state", "members")]
    for groupId, protocolType in groups:
        group = described[groupId]
        rows.append((groupId, protocolType or "-", group.groupState, len(group.members)))
    print(table(rows), file=out)


def groupsDescribe(client, arguments, out):
    groupId = arguments.group
    group = client.describeGroups([groupId])[groupId]
    committed = {tp: offset for tp, offset in client.committed(groupId).items() if offset >= 0}
    if group.groupState == _DEAD and not group.members and not committed:
        raise CommandError(f"unknown group {groupId}")
    owners = {}  # (topic, partition) -> member id
    members = [("member", "client", "host", "partitions")]
    for m in group.members:
        assignment = m.memberAssignment or b""
        decoded = decodeAssignment(assignment) if group.protocolType == _CONSUMER else None
        if not assignment:
            assigned = "-"  # none yet: the group is not Stable
        elif decoded is not None:
            assigned = describeAssignment(decoded)
            owners.update(((topic, p), m.memberId) for topic, numbers in decoded for p in numbers)
        elif group.protocolType == _CONSUMER:
            assigned = f"undecodable ({_count(len(assignment), 'byte')})"
        else:
            assigned = _count(len(assignment), "byte")
        members.append((m.memberId, m.clientId, m.clientHost, assigned))
    protocol = "/".join(filter(None, (group.protocolType, group.protocolData)))
    print(
        f"group {groupId}: {group.groupState}, {_count(len(group.members), 'member')}"
        + (f" ({protocol})" if protocol else ""),
        file=out,
    )
    if group.members:
        print(file=out)
        print(table(members), file=out)
    print(file=out)
    partitions = sorted(set(committed) | set(owners))
    if not partitions:
        print("no committed offsets", file=out)
        return
    ends = logEnds(client, partitions)
    rows = [("topic", "partition", "committed", "end", "lag", "member")]
    for tp in partitions:
        offset, end = committed.get(tp), ends[tp]
        lag = end - offset if offset is not None and isinstance(end, int) else "-"
        rows.append((*tp, "-" if offset is None else offset, end, lag, owners.get(tp, "-")))
    print(table(rows), file=out)


def logEnds(client, partitions):
    """{(topic, partition): log end offset, "error N", or "-" for a partition that does not exist}."""
    topics = {topic.name: topic for topic in client.metadata(sorted({topic for topic, _ in partitions}))}
    existing = {}
    for topic, p in partitions:
        known = topics.get(topic)
        if known is not None and not known.errorCode and any(q.partitionIndex == p for q in known.partitions):
            existing.setdefault(topic, []).append(p)
    ends = client.listOffsets(existing, LATEST) if existing else {}
    return {tp: ends.get(tp, "-") for tp in partitions}


def _hasMembers(groupId, state, members):
    return (
        f"cannot reset the offsets of group {groupId}: it is {state} with {_count(members, 'member')};"
        " a group takes offsets from outside its generation only while it has none: stop its consumers first"
    )


def groupsResetOffsets(client, arguments, out):
    """Commit new offsets for every partition of a topic, as C{kafka-consumer-groups.sh --reset-offsets
    --execute}: only while the group has no members (an OffsetCommit of generation -1)."""
    groupId, name = arguments.group, arguments.topic
    group = client.describeGroups([groupId])[groupId]
    if group.members or group.groupState not in (_EMPTY, _DEAD):
        raise CommandError(_hasMembers(groupId, group.groupState, len(group.members)))
    topic = client.topic(name)
    targets, refused = {}, []
    for p, (start, end) in sorted(client.bounds(topic).items()):
        if not isinstance(start, int) or not isinstance(end, int):
            refused.append(f"cannot reset the offset of group {groupId} for {name}/{p}: log start {start}, end {end}")
        elif arguments.to_earliest:
            targets[name, p] = start
        elif arguments.to_latest:
            targets[name, p] = end
        else:
            targets[name, p] = min(max(arguments.to_offset, start), end)  # as Kafka's tool: into the log's bounds
    previous = client.committed(groupId, list(targets)) if targets else {}
    if targets and not arguments.dry_run:
        errors = client.commit(groupId, targets)
        if any(code in (ErrorCode.UNKNOWN_MEMBER_ID, ErrorCode.ILLEGAL_GENERATION, ErrorCode.REBALANCE_IN_PROGRESS) for code in errors.values()):
            refreshed = client.describeGroups([groupId])[groupId]
            raise CommandError(_hasMembers(groupId, refreshed.groupState, len(refreshed.members)))
        for tp in list(targets):
            code = errors.get(tp)
            if code is None or code:
                why = "the broker did not answer" if code is None else describeError(code)
                refused.append(f"cannot reset the offset of group {groupId} for {tp[0]}/{tp[1]}: {why}")
                del targets[tp]
    if targets:
        rows = [("topic", "partition", "previous", "new")]
        for tp, offset in sorted(targets.items()):
            before = previous.get(tp, -1)
            rows.append((*tp, "-" if before < 0 else before, offset))
        print(table(rows), file=out)
        if arguments.dry_run:
            print("dry run: nothing committed", file=out)
    if refused:
        raise CommandError("\n".join(refused))


def groupsDelete(client, arguments, out):
    """One line per group: deleted on stdout, refused on stderr (then exit status 1)."""
    _deleteEach("group", arguments.groups, client.deleteGroups(arguments.groups), {
        ErrorCode.GROUP_ID_NOT_FOUND: "unknown group",
        ErrorCode.NON_EMPTY_GROUP: "it has members: stop its consumers first",
    }, out)


# --- ACLs ---

# Names as Kafka's tools print them (kafka-acls.sh).
_OPERATION_NAMES = {
    Operation.ALL: "All", Operation.READ: "Read", Operation.WRITE: "Write", Operation.CREATE: "Create",
    Operation.DELETE: "Delete", Operation.ALTER: "Alter", Operation.DESCRIBE: "Describe",
    Operation.CLUSTER_ACTION: "ClusterAction", Operation.DESCRIBE_CONFIGS: "DescribeConfigs",
    Operation.ALTER_CONFIGS: "AlterConfigs", Operation.IDEMPOTENT_WRITE: "IdempotentWrite",
}
_RESOURCE_NAMES = {
    ResourceType.TOPIC: "Topic", ResourceType.GROUP: "Group", ResourceType.CLUSTER: "Cluster",
    ResourceType.TRANSACTIONAL_ID: "TransactionalId", ResourceType.DELEGATION_TOKEN: "DelegationToken",
}


def _nameOf(names, code):
    return names.get(code) or str(code)


def _operation(value):
    """An L{Operation} from its name: Read, describe-configs, IdempotentWrite..."""
    wanted = value.lower().replace("-", "").replace("_", "")
    for operation, name in _OPERATION_NAMES.items():
        if name.lower() == wanted:
            return operation
    raise argparse.ArgumentTypeError(f"unknown operation {value!r}; one of {', '.join(_OPERATION_NAMES.values())}")


def _principal(value):
    if ":" not in value:
        raise argparse.ArgumentTypeError(f"a principal is TYPE:NAME, such as User:alice or User:*, not {value!r}")
    return value


def _patternType(allowed):
    def convert(value):
        try:
            patternType = PatternType[value.upper()]
        except KeyError:
            patternType = None
        if patternType not in allowed:
            raise argparse.ArgumentTypeError(f"takes {' or '.join(p.name.lower() for p in allowed)}, not {value!r}")
        return patternType

    return convert


def _resources(arguments):
    """[(resource type, name)] named by --topic, --group, --transactional-id and --cluster."""
    resources = [(ResourceType.TOPIC, name) for name in arguments.topic]
    resources += [(ResourceType.GROUP, name) for name in arguments.group]
    resources += [(ResourceType.TRANSACTIONAL_ID, name) for name in arguments.transactional_id]
    if arguments.cluster:
        resources.append((ResourceType.CLUSTER, CLUSTER_NAME))
    return resources


def _entries(arguments):
    """[(principal, host, operation, permission)] of the --allow-/--deny- options (hosts default to *)."""
    operations = list(dict.fromkeys(arguments.operation)) or [Operation.ALL]
    entries = []
    for principals, hosts, permission in (
        (arguments.allow_principal, arguments.allow_host, Permission.ALLOW),
        (arguments.deny_principal, arguments.deny_host, Permission.DENY),
    ):
        for principal in dict.fromkeys(principals):
            for host in dict.fromkeys(hosts or ["*"]):
                entries.extend((principal, host, operation, permission) for operation in operations)
    return entries


def describeAcl(binding):
    """One ACL as a table row: principal, permission, operation, host, resource, pattern."""
    return (
        binding.principal, _nameOf({Permission.ALLOW: "Allow", Permission.DENY: "Deny"}, binding.permission),
        _nameOf(_OPERATION_NAMES, binding.operation), binding.host,
        f"{_nameOf(_RESOURCE_NAMES, binding.resourceType)}:{binding.resourceName}",
        _nameOf({PatternType.LITERAL: "literal", PatternType.PREFIXED: "prefixed"}, binding.patternType),
    )


_ACL_HEADER = ("principal", "permission", "operation", "host", "resource", "pattern")


def aclsAdd(client, arguments, out):
    """Create every combination of the resources, principals, hosts and operations named."""
    entries = _entries(arguments)
    if not entries:
        raise CommandError("acls add needs --allow-principal or --deny-principal")
    bindings = [
        AclBinding(resourceType, name, arguments.resource_pattern_type, principal, host, operation, permission)
        for resourceType, name in _resources(arguments)
        for principal, host, operation, permission in entries
    ]
    refused, added = [], []
    for binding, (code, message) in zip(bindings, client.createAcls(bindings)):
        if code:
            refused.append(f"cannot add ACL {' '.join(describeAcl(binding))}: {describeError(code, message)}")
        else:
            added.append(describeAcl(binding))
    if added:
        print(f"added {_count(len(added), 'ACL')}:", file=out)
        print(table([_ACL_HEADER] + added), file=out)
    if refused:
        raise CommandError("\n".join(refused))


def aclsList(client, arguments, out):
    """A table of the ACLs matching the resources named (every ACL without one), by principal."""
    resources = _resources(arguments) or [(ResourceType.ANY, None)]
    found = set()
    for resourceType, name in resources:
        found.update(client.describeAcls(AclBinding(
            resourceType, name, arguments.resource_pattern_type, arguments.principal, None, Operation.ANY, Permission.ANY
        )))
    if found:
        rows = sorted((describeAcl(binding) for binding in found), key=lambda row: (row[4], row[5], *row[:4]))
        print(table([_ACL_HEADER] + rows), file=out)


def aclsRemove(client, arguments, out):
    """Delete the ACLs of the resources named: those of the principals, hosts and
    operations named, or every one of them when no principal is named."""
    entries = _entries(arguments)
    if not entries and (arguments.operation or arguments.allow_host or arguments.deny_host):
        raise CommandError("acls remove: --operation and --*-host need --allow-principal or --deny-principal")
    filters = [
        AclBinding(resourceType, name, arguments.resource_pattern_type, principal, host, operation, permission)
        for resourceType, name in _resources(arguments)
        for principal, host, operation, permission in entries or [(None, None, Operation.ANY, Permission.ANY)]
    ]
    removed, refused = [], []
    for aclFilter, (code, message, matched) in zip(filters, client.deleteAcls(filters)):
        if code:
            refused.append(f"cannot remove ACLs of {_nameOf(_RESOURCE_NAMES, aclFilter.resourceType)}:{aclFilter.resourceName}: "
                           f"{describeError(code, message)}")
        for binding, code, message in matched:
            if code:
                refused.append(f"cannot remove ACL {' '.join(describeAcl(binding))}: {describeError(code, message)}")
            else:
                removed.append(describeAcl(binding))
    if removed:
        print(f"removed {_count(len(removed), 'ACL')}:", file=out)
        print(table([_ACL_HEADER] + sorted(removed)), file=out)
    elif not refused:
        print("no ACL matched: nothing removed", file=out)
    if refused:
        raise CommandError("\n".join(refused))


def _aclOptions(command, resourcesRequired, principals, patternTypes, defaultPattern):
    for option, what in (("--topic", "a topic"), ("--group", "a consumer group"), ("--transactional-id", "a transactional id")):
        command.add_argument(option, action="append", default=[], metavar="NAME", help=f"{what} (a name, or * for all); repeatable")
    command.add_argument("--cluster", action="store_true", help="the cluster itself")
    command.add_argument(
        "--resource-pattern-type", type=_patternType(patternTypes), default=defaultPattern, metavar="TYPE",
        help=f"how resource names match: {', '.join(p.name.lower() for p in patternTypes)} (default: {defaultPattern.name.lower()})",
    )
    if principals:
        command.add_argument("--allow-principal", type=_principal, action="append", default=[], metavar="TYPE:NAME",
                             help="a principal allowed, such as User:alice or User:*; repeatable")
        command.add_argument("--deny-principal", type=_principal, action="append", default=[], metavar="TYPE:NAME",
                             help="a principal denied; repeatable")
        command.add_argument("--allow-host", action="append", default=[], metavar="HOST",
                             help="an IP address the allowed principals may come from (default: *, any); repeatable")
        command.add_argument("--deny-host", action="append", default=[], metavar="HOST",
                             help="an IP address the denied principals are denied from (default: *, any); repeatable")
        command.add_argument("--operation", type=_operation, action="append", default=[], metavar="OP",
                             help="Read, Write, Create, Delete, Alter, Describe, ClusterAction, DescribeConfigs, "
                                  "AlterConfigs, IdempotentWrite or All (default: All); repeatable")
    command.set_defaults(resourcesRequired=resourcesRequired)


def _count(number, noun):
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _config(setting):
    name, equals, value = setting.partition("=")
    if not equals or not name:
        raise argparse.ArgumentTypeError(f"takes NAME=VALUE, not {setting!r}")
    return name, value


def _offset(value):
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"an offset is an integer, not {value!r}") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"an offset is at least 0, not {value!r}")
    return number


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
    top.add_argument("--tls", action="store_true", help="connect with TLS (an ssl: endpoint), checking its certificate")
    top.add_argument(
        "--ca-cert", metavar="PEM", help="the CA certificate (or the broker's self-signed one) to check it with; implies --tls"
    )
    top.add_argument(
        "--sasl-mechanism", choices=SASL_MECHANISMS, help="authenticate first (an endpoint served with --sasl)",
    )
    top.add_argument(
        "--sasl-username", metavar="NAME", help=f"the user to authenticate as; the password is ${PASSWORD_VARIABLE}, else asked for",
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

    groups = commands.add_parser(
        "groups", help="list, describe or delete consumer groups, or reset their offsets"
    ).add_subparsers(title="groups commands", required=True, metavar="ACTION")
    groups.add_parser("list", help="every group: its protocol type, state and members").set_defaults(run=groupsList)
    describeGroup = groups.add_parser(
        "describe", help="a group's state, members and their partitions, committed offsets and lag"
    )
    describeGroup.add_argument("group")
    describeGroup.set_defaults(run=groupsDescribe)
    deleteGroups = groups.add_parser("delete", help="delete groups without members and their offsets (DeleteGroups v1)")
    deleteGroups.add_argument("groups", nargs="+", metavar="GROUP")
    deleteGroups.set_defaults(run=groupsDelete)
    reset = groups.add_parser(
        "reset-offsets", help="commit new offsets for a topic's partitions, while the group has no members"
    )
    reset.add_argument("group")
    reset.add_argument("--topic", "-t", required=True, help="the topic whose partitions are reset (all of them)")
    to = reset.add_mutually_exclusive_group(required=True)
    to.add_argument("--to-earliest", action="store_true", help="to the log start of each partition")
    to.add_argument("--to-latest", action="store_true", help="to the log end of each partition")
    to.add_argument(
        "--to-offset", type=_offset, metavar="N", help="to offset N (the log start or end where N is outside the log)"
    )
    reset.add_argument("--dry-run", action="store_true", help="print the new offsets, commit nothing")
    reset.set_defaults(run=groupsResetOffsets)

    acls = commands.add_parser(
        "acls", help="add, list or remove ACLs (a broker started with --acls)"
    ).add_subparsers(title="acls commands", required=True, metavar="ACTION")
    add = acls.add_parser("add", help="allow or deny principals operations on resources (CreateAcls v1)")
    _aclOptions(add, True, True, (PatternType.LITERAL, PatternType.PREFIXED), PatternType.LITERAL)
    add.set_defaults(run=aclsAdd)
    listAcls = acls.add_parser("list", help="the ACLs of the resources named, or every ACL (DescribeAcls v1)")
    _aclOptions(listAcls, False, False, tuple(PatternType)[1:], PatternType.ANY)
    listAcls.add_argument("--principal", type=_principal, metavar="TYPE:NAME", help="only the ACLs of this principal")
    listAcls.set_defaults(run=aclsList)
    remove = acls.add_parser(
        "remove", help="remove the ACLs of resources: all of them, or those of the principals named (DeleteAcls v1)"
    )
    _aclOptions(remove, True, True, tuple(PatternType)[1:], PatternType.LITERAL)
    remove.set_defaults(run=aclsRemove)
    users.addParsers(commands)  # SASL users (issue 15)
    return top


def saslPassword(user, prompt=getpass.getpass):
    """$KAFKAW_SASL_PASSWORD, else asked for on the terminal (stdin may carry a new user's password)."""
    password = os.environ.get(PASSWORD_VARIABLE)
    return password if password is not None else prompt(f"Password of {user}: ")


def main(argv=None, out=None, err=None, stdin=None):
    """Run one command; return the exit status (bad usage exits with 2)."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    stdin = sys.stdin if stdin is None else stdin
    commandLine = parser()
    arguments = commandLine.parse_args(argv)
    if getattr(arguments, "resourcesRequired", False) and not _resources(arguments):
        commandLine.error("name a resource: --topic, --group, --transactional-id or --cluster")
    if (arguments.sasl_mechanism is None) != (arguments.sasl_username is None):
        commandLine.error("--sasl-mechanism and --sasl-username go together")
    try:
        if getattr(arguments, "data_dir", None) is not None:  # users --data-dir: no broker to connect to
            arguments.offline(arguments, out, stdin)
            return 0
        tls = tlsContext(arguments.ca_cert) if arguments.tls or arguments.ca_cert else None
        client = connect(arguments.bootstrap, arguments.timeout, tls)
        try:
            if arguments.sasl_mechanism is not None:
                client.authenticate(arguments.sasl_mechanism, arguments.sasl_username, saslPassword(arguments.sasl_username))
            if getattr(arguments, "online", None) is not None:
                arguments.online(client, arguments, out, stdin)
            else:
                arguments.run(client, arguments, out)
        finally:
            client.close()
    except (CommandError, users.UsersError) as e:
        for line in str(e).splitlines():
            print(f"kafkaw: {line}", file=err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
