"""The gateway at Kafka 2.3.0's versions: StringTransport, task.Clock and a
memory store; requests encoded with the schema, responses decoded with it."""

import pytest

from kafkaw.protocol.messages import encodeMessageSet
from kafkaw.protocol.records import CODEC_GZIP, CODEC_ZSTD, decodeRecords, encodeBatch, readBatchHeader
from tests.unit.helpers import SchemaClient
from tests.unit.test_gateway import Harness

PRODUCE, FETCH, LIST_OFFSETS, METADATA, API_VERSIONS = 0, 1, 2, 3, 18
CREATE_TOPICS, DELETE_TOPICS, INIT_PRODUCER_ID, DESCRIBE_CONFIGS, CREATE_PARTITIONS = 19, 20, 22, 32, 37
DESCRIBE_ACLS, CREATE_ACLS, DELETE_ACLS = 29, 30, 31
SASL_HANDSHAKE, SASL_AUTHENTICATE = 17, 36

KAFKA_230 = {
    PRODUCE: 7, FETCH: 11, LIST_OFFSETS: 5, METADATA: 8, API_VERSIONS: 2,
    CREATE_TOPICS: 3, DELETE_TOPICS: 3, INIT_PRODUCER_ID: 1, DESCRIBE_CONFIGS: 2, CREATE_PARTITIONS: 1,
    DESCRIBE_ACLS: 1, CREATE_ACLS: 1, DELETE_ACLS: 1,
    SASL_HANDSHAKE: 1, SASL_AUTHENTICATE: 1, 50: 0, 51: 0,  # the last two: Kafka 2.7's (flexible)
}


class Client(SchemaClient):
    """One connection of the gateway harness speaking any version through the schema."""

    def __init__(self, harness):
        super().__init__()
        self.connection = harness.connect()

    def write(self, data):
        self.connection.send(data)

    def rawResponses(self):
        return self.connection.responses()


@pytest.fixture
def harness():
    h = Harness()
    h.createTopic("t", 2)
    return h


@pytest.fixture
def client(harness):
    return Client(harness)


def produceRequest(records, version=3, topic="t", partition=0, acks=1, transactionalId=None):
    return {
        "transactionalId": transactionalId, "acks": acks, "timeoutMs": 5000,
        "topics": [{"name": topic, "partitions": [{"partitionIndex": partition, "records": records}]}],
    }


def produce(client, records, version=3, **kwargs):
    response = client.call(PRODUCE, version, produceRequest(records, version, **kwargs))
    (topic,) = response.responses
    (partition,) = topic.partitions
    return partition


def fetchRequest(offset=0, topic="t", partition=0, maxBytes=1 << 20, maxWait=0, minBytes=0, responseMaxBytes=1 << 30, **extra):
    return {
        "replicaId": -1, "maxWait": maxWait, "minBytes": minBytes, "maxBytes": responseMaxBytes, **extra,
        "topics": [{"name": topic, "fetchPartitions": [{"partitionIndex": partition, "fetchOffset": offset, "maxBytes": maxBytes}]}],
    }


def fetch(client, version, offset=0, **kwargs):
    response = client.call(FETCH, version, fetchRequest(offset, **kwargs))
    (topic,) = response.topics
    (partition,) = topic.partitions
    return partition


BATCH = encodeBatch([(b"k1", b"v1", [("h", b"x")]), (None, b"v2")], baseTimestamp=1_000)


def test_apiVersionsListsKafka230sTable(client):
    response = client.call(API_VERSIONS, 2, {})
    assert response.errorCode == 0
    assert {v.index: (v.minVersion, v.maxVersion) for v in response.apiKeys} == {k: (0, v) for k, v in KAFKA_230.items()}


def test_aBatchIsStoredAsSentAndFetchedUntouched(harness, client):
    assert produce(client, BATCH, version=7).baseOffset == 0
    second = produce(client, BATCH, version=7)
    assert (second.errorCode, second.baseOffset, second.logAppendTimeMs, second.logStartOffset) == (0, 2, -1, 0)
    fetched = fetch(client, 11)
    assert (fetched.errorCode, fetched.highWatermark, fetched.lastStableOffset, fetched.logStartOffset) == (0, 4, 4, 0)
    assert fetched.aborted == [] and fetched.preferredReadReplica == -1
    # Only the base offsets and partition leader epochs (bytes 0-11, 12-15, outside the CRC) differ.
    assert fetched.records[16 : len(BATCH)] == BATCH[16:] and fetched.records[len(BATCH) + 16 :] == BATCH[16:]
    assert [readBatchHeader(fetched.records, at).baseOffset for at in (0, len(BATCH))] == [0, 2]
    assert [(r.offset, r.key, r.value, r.headers) for r in decodeRecords(fetched.records)] == [
        (0, b"k1", b"v1", [("h", b"x")]), (1, None, b"v2", []), (2, b"k1", b"v1", [("h", b"x")]), (3, None, b"v2", []),
    ]


@pytest.mark.parametrize("version, magic", [(0, 0), (1, 0), (2, 1), (3, 1)])
def test_oldFetchVersionsGetBatchesDownConverted(client, version, magic):
    produce(client, BATCH)
    produce(client, encodeMessageSet([(b"old", b"v0")]), version=2)  # a magic-0 set, stored as it came
    fetched = fetch(client, version)
    records = decodeRecords(fetched.records)
    assert [(r.offset, r.key, r.value) for r in records] == [(0, b"k1", b"v1"), (1, None, b"v2"), (2, b"old", b"v0")]
    assert fetched.records[16] == magic  # the first message's
    assert [r.timestamp for r in records] == ([1_000, 1_000, -1] if magic == 1 else [-1, -1, -1])


def test_aFirstBatchLargerThanMaxBytesIsReturnedWholeFromV3(client):
    produce(client, BATCH)
    assert fetch(client, 4, maxBytes=10).records[16:] == BATCH[16:]
    # v0 reads it converted, cut at max bytes as 0.8 cuts a message set.
    assert len(fetch(client, 0, maxBytes=10).records) == 10


def test_theResponseMaxBytesIsSharedInRequestOrder(harness, client):
    produce(client, BATCH, partition=0)
    produce(client, BATCH, partition=1)
    request = fetchRequest(responseMaxBytes=1)
    request["topics"][0]["fetchPartitions"].append({"partitionIndex": 1, "fetchOffset": 0, "maxBytes": 1 << 20})
    (topic,) = client.call(FETCH, 11, request).topics
    assert [len(p.records) for p in topic.partitions] == [len(BATCH), 0]


@pytest.mark.parametrize(
    "records, version, error",
    [
        (BATCH + BATCH, 3, 2),  # v3+: exactly one batch
        (encodeMessageSet([(None, b"v0")]), 3, 2),  # v3+: magic 2 only
        (BATCH[:-1], 3, 2),
        (encodeBatch([(None, b"z")], codec=CODEC_ZSTD), 6, 76),  # zstd needs v7
    ],
)
def test_produceVersionRules(client, records, version, error):
    assert produce(client, records, version=version).errorCode == error


def test_zstdAndGzipBatchesStayCompressed(harness, client):
    for codec in (CODEC_ZSTD, CODEC_GZIP):
        batch = encodeBatch([(None, b"a" * 100)] * 10, codec=codec)
        offset = produce(client, batch, version=7).baseOffset
        assert fetch(client, 11, offset).records[16:] == batch[16:]


def test_produceRefusals(client):
    assert produce(client, BATCH, acks=2).errorCode == 21  # INVALID_REQUIRED_ACKS
    assert produce(client, BATCH, transactionalId="tx").errorCode == 53
    assert produce(client, BATCH, topic="nope").errorCode == 3  # Produce creates no topic


def test_logAppendTimeTopics(harness):
    harness.clock.advance(5_000)
    client = Client(harness)  # connected after the clock moved: not idle
    harness.cluster.createTopic("lat", 1, {"message.timestamp.type": "LogAppendTime"})
    answered = produce(client, BATCH, topic="lat", version=2)
    assert answered.logAppendTimeMs == 5_000_000
    records = fetch(client, 11, topic="lat").records
    header = readBatchHeader(records)
    assert header.attributes & 0x08 and header.maxTimestamp == 5_000_000
    assert [r.timestamp for r in decodeRecords(records)] == [5_000_000, 5_000_000]


def test_idempotentProducers(harness, client):
    answer = client.call(INIT_PRODUCER_ID, 1, {"transactionalId": None, "transactionTimeoutMs": 60000})
    assert (answer.errorCode, answer.producerEpoch) == (0, 0)
    producerId = answer.producerId
    assert client.call(INIT_PRODUCER_ID, 0, {"transactionalId": None}).producerId != producerId

    def batch(sequence, epoch=0, count=2):
        return encodeBatch([(None, b"x")] * count, producerId=producerId, producerEpoch=epoch, baseSequence=sequence)

    assert produce(client, batch(0)).baseOffset == 0
    assert produce(client, batch(2)).baseOffset == 2
    retried = produce(client, batch(0))
    assert (retried.errorCode, retried.baseOffset) == (0, 0)  # the original offset; not stored again
    assert harness.store.partitionLog("t", 0).endOffset == 4
    assert produce(client, batch(7)).errorCode == 45  # OUT_OF_ORDER_SEQUENCE_NUMBER
    assert produce(client, batch(0, epoch=1)).baseOffset == 4  # a new epoch starts at 0
    assert produce(client, batch(2, epoch=0)).errorCode == 47  # fenced
    assert client.call(INIT_PRODUCER_ID, 1, {"transactionalId": "tx"}).errorCode == 53


def test_listOffsetsByTimestamp(client):
    produce(client, encodeBatch([(None, b"a"), (None, b"b")], baseTimestamp=1_000))
    produce(client, encodeBatch([(None, b"c"), (None, b"d")], baseTimestamp=2_000))

    def offsetFor(timestamp, version=5):
        request = {"replicaId": -1, "isolationLevel": 0, "topics": [{"name": "t", "partitions": [{"partitionIndex": 0, "timestamp": timestamp, "currentLeaderEpoch": -1}]}]}
        (partition,) = client.call(LIST_OFFSETS, version, request).topics[0].partitions
        return partition.errorCode, partition.offset, partition.timestamp

    assert offsetFor(-2) == (0, 0, -1)
    assert offsetFor(-1) == (0, 4, -1)
    assert offsetFor(1_000) == (0, 0, 1_000)
    assert offsetFor(1_500) == (0, 2, 2_000)
    assert offsetFor(2_000, version=1) == (0, 2, 2_000)
    assert offsetFor(9_000) == (0, -1, -1)


def test_metadataVersions(harness, client):
    assert [t.name for t in client.call(METADATA, 1, {"topics": None}).topics] == ["t"]
    assert client.call(METADATA, 1, {"topics": []}).topics == []
    assert [t.name for t in client.call(METADATA, 0, {"topics": []}).topics] == ["t"]  # v0: empty is all
    refused = client.call(METADATA, 4, {"topics": [{"name": "new"}], "allowAutoTopicCreation": False})
    assert refused.topics[0].errorCode == 3 and "new" not in harness.cluster.topics()
    illegal = client.call(METADATA, 8, {"topics": [{"name": "bad name"}]})
    assert illegal.topics[0].errorCode == 17
    assert client.call(METADATA, 0, {"topics": [{"name": "bad name"}]}).topics[0].errorCode == 3
    answer = client.call(METADATA, 8, {"topics": [{"name": "t"}]})
    assert answer.controllerId == 7 and answer.clusterId == harness.store.clusterId()
    (partition, _) = answer.topics[0].partitions
    assert (partition.leaderId, partition.leaderEpoch, partition.replicaNodes, partition.isrNodes) == (7, 0, [7], [7])


def test_createTopicsValidateOnlyAndMessages(harness, client):
    request = {"topics": [{"name": "v", "numPartitions": 2, "replicationFactor": 1, "configs": [{"name": "retention.ms", "value": "5"}]}],
               "timeoutMs": 1000, "validateOnly": True}
    answered = client.call(CREATE_TOPICS, 3, request)
    assert answered.topics[0].errorCode == 0 and "v" not in harness.cluster.topics()
    request["validateOnly"] = False
    client.call(CREATE_TOPICS, 3, request)
    assert harness.cluster.topics()["v"] == 2
    again = client.call(CREATE_TOPICS, 3, request).topics[0]
    assert again.errorCode == 36 and "exists" in again.errorMessage
    request["topics"][0].update(name="w", configs=[{"name": "segment.bytes", "value": "1"}])
    assert client.call(CREATE_TOPICS, 1, request).topics[0].errorCode == 40


def test_createPartitions(harness, client):
    def grow(count, name="t", validateOnly=False):
        request = {"topics": [{"name": name, "count": count, "assignments": None}], "timeoutMs": 1000, "validateOnly": validateOnly}
        return client.call(CREATE_PARTITIONS, 1, request).results[0]

    assert grow(5, validateOnly=True).errorCode == 0 and harness.cluster.topics()["t"] == 2
    assert grow(5).errorCode == 0 and harness.cluster.topics()["t"] == 5
    assert produce(client, BATCH, partition=4).errorCode == 0
    assert grow(3).errorCode == 37
    assert grow(3, name="nope").errorCode == 3


def test_deleteTopicsAnswersParkedFetchesAndRemovesData(harness, client):
    produce(client, BATCH)
    waiting = Client(harness)
    waiting.send(FETCH, 11, fetchRequest(offset=2, maxWait=10_000, minBytes=1))
    assert waiting.responses() == []
    answer = client.call(DELETE_TOPICS, 3, {"topicNames": ["t", "nope"], "timeoutMs": 1000})
    assert [(r.name, r.errorCode) for r in answer.responses] == [("t", 0), ("nope", 3)]
    (parked,) = waiting.responses()
    assert parked.topics[0].partitions[0].errorCode == 3
    assert "t" not in harness.cluster.topics()
    harness.createTopic("t", 1)
    assert produce(client, BATCH).baseOffset == 0  # a new topic, from offset 0


def test_describeConfigs(harness, client):
    harness.cluster.createTopic("c", 1, {"retention.ms": "60000"})
    request = {"resources": [{"resourceType": 2, "resourceName": "c", "configurationKeys": None}], "includeSynoyms": True}
    (result,) = client.call(DESCRIBE_CONFIGS, 2, request).results
    configs = {c.name: c for c in result.configs}
    assert configs["retention.ms"].value == "60000" and configs["retention.ms"].configSource == 1
    assert configs["retention.bytes"].value == "-1" and configs["retention.bytes"].configSource == 5
    assert configs["message.timestamp.type"].value == "CreateTime"
    assert [s.source for s in configs["retention.ms"].synonyms] == [1]
    (v0,) = client.call(DESCRIBE_CONFIGS, 0, {"resources": [{"resourceType": 2, "resourceName": "c", "configurationKeys": ["retention.ms"]}]}).results
    assert [(c.name, c.isDefault) for c in v0.configs] == [("retention.ms", False)]
    (broker, missing) = client.call(DESCRIBE_CONFIGS, 1, {"resources": [
        {"resourceType": 4, "resourceName": "7", "configurationKeys": None},
        {"resourceType": 2, "resourceName": "nope", "configurationKeys": None},
    ]}).results
    assert broker.errorCode == 42 and missing.errorCode == 3


def test_fetchSessionsAreNotServed(client):
    answer = client.call(FETCH, 7, fetchRequest(sessionId=5, epoch=3))
    assert (answer.errorCode, answer.sessionId, answer.topics) == (70, 0, [])
    full = client.call(FETCH, 7, fetchRequest(sessionId=0, epoch=-1))
    assert (full.errorCode, full.sessionId) == (0, 0)


def test_strict08ServesOnlyKafka08():
    harness = Harness(strict08=True)
    client = Client(harness)
    client.send(PRODUCE, 3, produceRequest(BATCH))
    assert client.responses() == []
    assert harness.broker.handlers.keys() == {(0, 0), (1, 0), (2, 0), (3, 0)}


def test_retentionForgetsProducersWhoseBatchesItDeleted(harness, client):
    producerId = client.call(INIT_PRODUCER_ID, 1, {"transactionalId": None}).producerId

    def batch(sequence):
        return encodeBatch([(None, b"x")], producerId=producerId, producerEpoch=0, baseSequence=sequence, baseTimestamp=1_000)

    assert produce(client, batch(0)).baseOffset == 0
    service = harness.cluster.partition("t", 0)
    harness.clock.advance(10)
    assert service.enforceRetention(0, -1).result == 1  # every batch is older than now - 0
    # The next write drops the producer's state with its batches, as Kafka
    # does: its next batch is from an unknown producer.
    assert produce(client, batch(1)).errorCode == 59  # UNKNOWN_PRODUCER_ID
    assert produce(client, batch(0)).baseOffset == 1  # a producer starting over is welcome


def test_convertedAnswersAreCutAtMaxBytes(client):
    produce(client, encodeBatch([(None, b"x" * 100)] * 10))
    v3 = fetch(client, 3, maxBytes=50)
    assert [r.offset for r in decodeRecords(v3.records)] == [0] and len(v3.records) == 12 + 22 + 100  # v3: the first whole
    v0 = fetch(client, 0, maxBytes=300)
    assert len(v0.records) == 300 and [r.offset for r in decodeRecords(v0.records)] == [0, 1]  # v0: cut as 0.8 cuts
