"""Produce v7 frames captured from librdkafka, kafka-python, aiokafka and
kafkajs (tests/vectors/modern, described in tests/vectors/README.md): bytes no
one here wrote, checked, numbered and stored as sent, read back by every
Fetch version."""

import re
from pathlib import Path

import pytest

from kafkaw.protocol import records, schema
from kafkaw.protocol.api import decodeHeader
from tests.unit.test_gateway import Harness
from tests.unit.test_modern_gateway import Client, fetch

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "modern"
PRODUCES = sorted(VECTORS.glob("*-produce-v7-*.bin"))
KEYS = [None, b"key-1", None, b"key-3", None]
PADDING = b"-kafkaw" * 30
CODECS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4, "headers": 0}


def produced(path):
    """(request header, the records of vec/0) of a captured Produce frame."""
    header, reader = decodeHeader(path.read_bytes())
    request = schema.decodeRequestBody(header.apiKey, header.apiVersion, reader)
    [topic] = request.topics
    [partition] = topic.partitions
    assert (topic.name, partition.partitionIndex, request.acks) == ("vec", 0, -1)
    return header, partition.records


def expectedValues(path):
    padded = path.name.startswith("kafka-python") and ("snappy" in path.name or "lz4" in path.name)
    return [b"value-%d" % i + (PADDING if padded else b"") for i in range(5)]


def test_everyClientAndCodecIsCaptured():
    assert len(PRODUCES) == 21


@pytest.mark.parametrize("path", PRODUCES, ids=[p.stem for p in PRODUCES])
def test_capturedBatchesAreCheckedAndNumbered(path):
    header, data = produced(path)
    codec = CODECS[re.search(r"-v7-(\w+)$", path.stem).group(1)]
    [batch] = records.producedBatches(data)
    assert (batch.producerEpoch, batch.baseSequence, batch.count, batch.codec) == (0, 0, 5, codec)
    assert batch.producerId >= 0 and not batch.isTransactional
    assigned = records.assignOffsets(data, 42, 1_000_000, 1 << 24, now=5)
    assert assigned.count == 5
    assert assigned.data[:8] == (42).to_bytes(8, "big") and assigned.data[16:] == data[16:]  # only the numbering changed
    decoded = records.decodeRecords(assigned.data)
    assert [(r.offset, r.key, r.value) for r in decoded] == list(zip(range(42, 47), KEYS, expectedValues(path)))
    if path.stem.endswith("headers"):
        assert [r.headers for r in decoded] == [[("trace", b"t-%d" % i)] for i in range(5)]
        assert [r.timestamp for r in decoded] == [1_700_000_000_000 + i for i in range(5)]


@pytest.mark.parametrize("path", PRODUCES, ids=[p.stem for p in PRODUCES])
def test_capturedProducesThroughTheBroker(path):
    """The captured frame as the broker gets it: stored as sent, a retry of it
    answered with its first offset, every Fetch version reads the records."""
    harness = Harness()
    harness.createTopic("vec", 1)
    client = Client(harness)
    frame = path.read_bytes()
    for expected in (0, 0):  # the second is the producer's retry: same offset, stored once
        client.connection.send(len(frame).to_bytes(4, "big") + frame)
        [response] = client.connection.responses()
        _, answer = schema.decodeResponse(0, 7, response)
        partition = answer.responses[0].partitions[0]
        assert (partition.errorCode, partition.baseOffset) == (0, expected)
    assert harness.store.partitionLog("vec", 0).endOffset == 5
    for version in (0, 2, 4, 11):
        fetched = fetch(client, version, topic="vec", partition=0)
        got = records.decodeRecords(fetched.records)
        assert [(r.offset, r.key, r.value) for r in got] == list(zip(range(5), KEYS, expectedValues(path))), version
