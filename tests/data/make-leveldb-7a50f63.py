"""Writes tests/data/leveldb-7a50f63.tar.gz: a LevelDB data directory made by
kafkaw's storage as of commit 7a50f63, which tests/unit/test_leveldb_7a50f63.py
opens with today's code. Kept to show how it was made; it must be run with
that commit's code, not today's:

    git archive 7a50f63 | tar -x -C /tmp/k7a50f63
    PYTHONPATH=/tmp/k7a50f63 python tests/data/make-leveldb-7a50f63.py OUT.tar.gz

It prints, per partition, the bounds and the SHA-256 of the stored bytes the
test compares with.
"""

import gzip
import hashlib
import io
import os
import sys
import tarfile
import tempfile
import time

from kafkaw.protocol.messages import CODEC_GZIP, assignOffsets, encodeMessage, encodeMessageSet
from kafkaw.storage.leveldb import LevelDBStore


class Now:
    """Just enough reactor: deferToThreadPool results, delivered while waiting."""

    def __init__(self):
        import queue

        self.calls = queue.Queue()

    def callFromThread(self, f, *args, **kwargs):
        self.calls.put((f, args, kwargs))

    def wait(self, d):
        results = []
        d.addBoth(results.append)
        deadline = time.monotonic() + 10
        while not results and time.monotonic() < deadline:
            f, args, kwargs = self.calls.get(timeout=10)
            f(*args, **kwargs)
        result = results[0]
        if hasattr(result, "raiseException"):
            result.raiseException()
        return result


def produced(*pairs):
    """A produced message set of (key, value) pairs (offsets are the broker's to assign)."""
    return encodeMessageSet(list(pairs))


def gzipped(*values):
    inner = encodeMessageSet([(None, v) for v in values])
    return encodeMessage(0, None, gzip.compress(inner, mtime=0), attributes=CODEC_GZIP)


def main(out):
    reactor = Now()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "leveldb")
        store = LevelDBStore(path, False, reactor=reactor)
        reactor.wait(store.createTopic("events", 2, {"retention.ms": "86400000", "retention.bytes": "-1"}))
        reactor.wait(store.createTopic("audit", 1, {}))
        reactor.wait(store.createTopic("metrics", 1, {"retention.bytes": "1000"}))

        def append(topic, partition, messageSet, timestamp):
            log = store.partitionLog(topic, partition)
            assigned = assignOffsets(messageSet, log.endOffset, 1 << 20, 1 << 24)
            reactor.wait(log.append(assigned.data, assigned.count, timestamp))

        append("events", 0, produced((None, b"a0"), (None, b"a1"), (None, b"a2")), 1000)
        append("events", 0, produced((b"k", b"b3"), (None, b"b4")), 2000)
        append("events", 0, produced((None, b"c5")), 1500)  # stored as 2000: times never go back
        append("events", 0, gzipped(b"g6", b"g7", b"g8"), 3000)
        append("events", 0, produced((None, b"d9")), 4000)
        append("events", 1, produced((b"key", b"x0"), (None, None)), 5000)
        for n in range(5):
            append("metrics", 0, produced((None, b"m%d" % n)), 6000 + n)
        reactor.wait(store.partitionLog("events", 0).deleteBefore(4))  # keeps the batch of 3-4
        reactor.wait(store.partitionLog("metrics", 0).deleteBefore(5))  # everything
        append("events", 1, produced((None, b"x2")), 7000)  # left in LevelDB's log file, not a table

        for topic, count in sorted(store.topics().items()):
            for partition in range(count):
                log = store.partitionLog(topic, partition)
                data = reactor.wait(log.read(log.startOffset, 1 << 20, log.endOffset))
                bounds = (log.startOffset, log.endOffset, log.sizeBytes)
                print(topic, partition, bounds, hashlib.sha256(data).hexdigest())
        reactor.wait(store.close())

        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            for name in sorted(os.listdir(path)):
                if name == "LOCK":
                    continue
                info = tar.gettarinfo(os.path.join(path, name), arcname="leveldb/" + name)
                info.mtime = 0
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                with open(os.path.join(path, name), "rb") as f:
                    tar.addfile(info, f)
        with open(out, "wb") as f:
            f.write(buffer.getvalue())


if __name__ == "__main__":
    main(sys.argv[1])
