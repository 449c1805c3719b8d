"""The consumer-group APIs through the gateway: requests encoded with the
schema, a group coordinator on task.Clock over a memory store."""

import struct

import pytest

from kafkaw.broker.gateway import servedHandlers
from tests.unit.test_gateway import Harness
from tests.unit.test_modern_gateway import Client

OFFSET_COMMIT, OFFSET_FETCH, FIND_COORDINATOR, JOIN_GROUP, HEARTBEAT = 8, 9, 10, 11, 12
LEAVE_GROUP, SYNC_GROUP, DESCRIBE_GROUPS, LIST_GROUPS, DELETE_GROUPS = 13, 14, 15, 16, 42

# A consumer protocol subscription ("range"): version, [topic], user data.
SUBSCRIPTION = struct.pack(">hh", 0, 1) + struct.pack(">h", 1) + b"t" + struct.pack(">i", -1)


@pytest.fixture
def harness():
    h = Harness(groups=True)
    h.createTopic("t", 2)
    return h


class GroupClient(Client):
    """A client whose calls let the coordinator's timers that are due now run
    (a join completes on the clock, even with no initial delay)."""

    def __init__(self, harness):
        super().__init__(harness)
        self.clock = harness.clock

    def responses(self):
        self.clock.advance(0)
        return super().responses()


@pytest.fixture
def client(harness):
    return GroupClient(harness)


def join(client, memberId="", version=5, groupId="g", instanceId=None):
    return client.call(JOIN_GROUP, version, {
        "groupId": groupId, "sessionTimeoutMs": 10000, "rebalanceTimeoutMs": 10000, "memberId": memberId,
        "groupInstanceId": instanceId, "protocolType": "consumer", "protocols": [{"name": "range", "metadata": SUBSCRIPTION}],
    })


def joined(client, groupId="g"):
    """A member of a group of one, through MEMBER_ID_REQUIRED, JoinGroup and SyncGroup: (member id, generation)."""
    first = join(client, groupId=groupId)
    assert first.errorCode == 79  # MEMBER_ID_REQUIRED (JoinGroup v4+)
    answer = join(client, first.memberId, groupId=groupId)
    assert (answer.errorCode, answer.leader, [m.memberId for m in answer.members]) == (0, first.memberId, [first.memberId])
    synced = client.call(SYNC_GROUP, 3, {"groupId": groupId, "generationId": answer.generationId, "memberId": first.memberId,
                                         "assignments": [{"memberId": first.memberId, "assignment": b"mine"}]})
    assert (synced.errorCode, synced.assignment) == (0, b"mine")
    return first.memberId, answer.generationId


def test_findCoordinatorNamesThisBroker(harness, client):
    answer = client.call(FIND_COORDINATOR, 2, {"key": "g", "keyType": 0})
    assert (answer.errorCode, answer.nodeId, answer.host, answer.port) == (0, 7, "10.0.0.1", 12345)  # the address reached
    assert client.call(FIND_COORDINATOR, 0, {"key": "g"}).nodeId == 7
    assert client.call(FIND_COORDINATOR, 1, {"key": "tx", "keyType": 1}).errorCode == 15  # no transaction coordinator


def test_aGroupOfOneJoinsSyncsHeartbeatsAndLeaves(harness, client):
    memberId, generation = joined(client)
    beat = {"groupId": "g", "generationId": generation, "memberId": memberId, "groupInstanceId": None}
    assert client.call(HEARTBEAT, 3, beat).errorCode == 0
    assert client.call(HEARTBEAT, 0, dict(beat, generationId=generation + 1)).errorCode == 22  # ILLEGAL_GENERATION
    assert client.call(HEARTBEAT, 1, dict(beat, memberId="nobody")).errorCode == 25  # UNKNOWN_MEMBER_ID
    (group,) = client.call(DESCRIBE_GROUPS, 3, {"groups": ["g"], "includeAuthorizedOperations": False}).groups
    assert (group.groupState, group.protocolType, group.protocolData) == ("Stable", "consumer", "range")
    assert [(m.memberId, m.clientId, m.memberAssignment) for m in group.members] == [(memberId, "test", b"mine")]
    assert client.call(LIST_GROUPS, 2, {}).groups[0].groupId == "g"
    assert client.call(LEAVE_GROUP, 2, {"groupId": "g", "memberId": memberId}).errorCode == 0
    (group,) = client.call(DESCRIBE_GROUPS, 0, {"groups": ["g"]}).groups
    assert group.groupState == "Empty"


def test_commitAndFetchOffsets(harness, client):
    memberId, generation = joined(client)

    def commit(version, generationId, member, partitions):
        request = {"groupId": "g", "generationId": generationId, "memberId": member, "groupInstanceId": None, "retentionTimeMs": -1,
                   "topics": [{"name": topic, "partitions": [{"partitionIndex": p, "committedOffset": o, "committedLeaderEpoch": -1,
                                                              "commitTimestamp": -1, "committedMetadata": "meta"} for p, o in parts]}
                              for topic, parts in partitions.items()]}
        answer = client.call(OFFSET_COMMIT, version, request)
        return {(t.name, p.partitionIndex): p.errorCode for t in answer.topics for p in t.partitions}

    assert commit(7, generation, memberId, {"t": [(0, 5), (1, 7)], "nope": [(0, 1)]}) == {("t", 0): 0, ("t", 1): 0, ("nope", 0): 3}
    assert commit(2, generation + 1, memberId, {"t": [(0, 9)]}) == {("t", 0): 22}  # a stale generation
    fetched = client.call(OFFSET_FETCH, 5, {"groupId": "g", "topics": None})
    assert fetched.errorCode == 0
    assert {(t.name, p.partitionIndex): (p.committedOffset, p.metadata, p.errorCode) for t in fetched.topics for p in t.partitions} == {
        ("t", 0): (5, "meta", 0), ("t", 1): (7, "meta", 0),
    }
    some = client.call(OFFSET_FETCH, 1, {"groupId": "g", "topics": [{"name": "t", "partitionIndexes": [1]}]})
    assert [(p.partitionIndex, p.committedOffset) for p in some.topics[0].partitions] == [(1, 7)]
    client.call(LEAVE_GROUP, 0, {"groupId": "g", "memberId": memberId})
    assert commit(1, -1, "", {"t": [(0, 2)]}) == {("t", 0): 0}  # a simple commit to an empty group
    assert harness.store.committedOffsets()["g"][("t", 0)][0] == 2


def test_deleteGroups(harness, client):
    memberId, _ = joined(client)
    answer = client.call(DELETE_GROUPS, 1, {"groupsNames": ["g", "unknown"]})
    assert [(r.groupId, r.errorCode) for r in answer.results] == [("g", 68), ("unknown", 69)]  # NON_EMPTY_GROUP, GROUP_ID_NOT_FOUND
    client.call(LEAVE_GROUP, 1, {"groupId": "g", "memberId": memberId})
    assert client.call(DELETE_GROUPS, 0, {"groupsNames": ["g"]}).results[0].errorCode == 0
    assert client.call(LIST_GROUPS, 0, {}).groups == []


def test_aSecondMemberRebalancesTheGroup(harness, client):
    memberId, generation = joined(client)
    other = GroupClient(harness)
    first = join(other)
    other.send(JOIN_GROUP, 5, {"groupId": "g", "sessionTimeoutMs": 10000, "rebalanceTimeoutMs": 10000, "memberId": first.memberId,
                               "groupInstanceId": None, "protocolType": "consumer", "protocols": [{"name": "range", "metadata": SUBSCRIPTION}]})
    assert other.responses() == []  # parked until the first member rejoins
    beat = client.call(HEARTBEAT, 3, {"groupId": "g", "generationId": generation, "memberId": memberId, "groupInstanceId": None})
    assert beat.errorCode == 27  # REBALANCE_IN_PROGRESS: rejoin
    rejoined = join(client, memberId)
    (theirs,) = other.responses()
    assert rejoined.generationId == theirs.generationId == generation + 1
    assert rejoined.leader == memberId and len(rejoined.members) == 2 and theirs.members == []


def test_groupApisAreNotServedWithoutACoordinatorOrUnderStrict08():
    assert not {key for key, _ in servedHandlers(False, groupsServed=False)} & {8, 9, 10, 11, 12, 13, 14, 15, 16, 42}
    assert {key for key, _ in servedHandlers(True, groupsServed=True)} == {0, 1, 2, 3}


def test_deletingATopicForgetsItsCommittedOffsets(harness, client):
    harness.createTopic("u", 1)
    commit = {"groupId": "g", "generationId": -1, "memberId": "", "retentionTimeMs": -1,
              "topics": [{"name": name, "partitions": [{"partitionIndex": 0, "committedOffset": 42, "committedMetadata": None}]} for name in ("t", "u")]}
    assert {p.errorCode for t in client.call(OFFSET_COMMIT, 2, commit).topics for p in t.partitions} == {0}
    assert client.call(20, 3, {"topicNames": ["u"], "timeoutMs": 1000}).responses[0].errorCode == 0  # DeleteTopics
    harness.createTopic("u", 1)  # made again under the name: no offsets of the old one
    fetched = client.call(OFFSET_FETCH, 5, {"groupId": "g", "topics": None})
    assert [(t.name, p.committedOffset) for t in fetched.topics for p in t.partitions] == [("t", 42)]
    assert list(harness.store.committedOffsets()["g"]) == [("t", 0)]  # the store deleted its own with the topic
