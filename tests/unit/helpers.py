"""Unit test helpers: wait for thread-backed Deferreds without a running
reactor, hold calls so they overlap, and build/parse Kafka 0.8 frames."""

import queue
import struct
import time

from twisted.internet import defer
from twisted.python.failure import Failure

from kafkaw.protocol.framing import Framer, frame
from kafkaw.protocol.primitives import Reader, encodeBytes, encodeString


class ThreadResults:
    """Just enough reactor for C{deferToThreadPool}.

    Threads hand their results to L{callFromThread}, which queues them; the
    test thread delivers them in L{wait}. No global reactor is started, so
    every test stays deterministic and nothing leaks between tests.
    """

    def __init__(self):
        self._calls = queue.Queue()

    def callFromThread(self, f, *args, **kwargs):
        self._calls.put((f, args, kwargs))

    def _runOne(self, timeout):
        try:
            f, args, kwargs = self._calls.get(timeout=timeout)
        except queue.Empty:
            return False
        f(*args, **kwargs)
        return True

    def settle(self, quiet=0.1):
        """Deliver results until none arrives for C{quiet} seconds."""
        while self._runOne(quiet):
            pass

    def wait(self, d, timeout=10.0):
        """Deliver results until C{d} fires; return its result or raise its failure."""
        results = []
        d.addBoth(results.append)  # also consumes a failure: nothing is logged
        deadline = time.monotonic() + timeout
        while not results:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._runOne(remaining):
                raise AssertionError(f"Deferred did not fire within {timeout}s")
        result = results[0]
        if isinstance(result, Failure):
            result.raiseException()
        return result


class Gate:
    """Holds the calls of one Deferred-returning method until L{open}.

    Used to make calls overlap on any store (a memory store answers at once),
    e.g. to have several appends queue behind one being stored.
    """

    def __init__(self, obj, methodName):
        self.calls = []
        self.isOpen = False
        self._held = []
        self._original = getattr(obj, methodName)
        setattr(obj, methodName, self._call)  # the instance attribute shadows the method

    def _call(self, *args):
        self.calls.append(args)
        if self.isOpen:
            return self._original(*args)
        d = defer.Deferred()
        self._held.append((args, d))
        return d

    def open(self):
        """Make the held calls (in order) and let later ones through."""
        self.isOpen = True
        held, self._held = self._held, []
        for args, d in held:
            self._original(*args).chainDeferred(d)

    def failHeld(self, exception):
        """Fail the held calls without making them."""
        held, self._held = self._held, []
        for _, d in held:
            d.errback(exception)


# Requests (version 0 unless told), built field by field.

_i16 = struct.Struct(">h").pack
_i32 = struct.Struct(">i").pack
_i64 = struct.Struct(">q").pack


def requestFrame(apiKey, correlationId, body, apiVersion=0, clientId="test"):
    """A size-prefixed request: header + body."""
    return frame(_i16(apiKey) + _i16(apiVersion) + _i32(correlationId) + encodeString(clientId) + body)


def _array(items):
    return _i32(len(items)) + b"".join(items)


def produceRequest(correlationId, topics, acks=1, timeout=1000):
    """topics: {topic: {partition: messageSet bytes}}."""
    body = _i16(acks) + _i32(timeout) + _array(
        [
            encodeString(topic) + _array([_i32(p) + encodeBytes(data) for p, data in partitions.items()])
            for topic, partitions in topics.items()
        ]
    )
    return requestFrame(0, correlationId, body)


def fetchRequest(correlationId, topics, maxWait=0, minBytes=0):
    """topics: {topic: {partition: (offset, maxBytes)}}."""
    body = _i32(-1) + _i32(maxWait) + _i32(minBytes) + _array(
        [
            encodeString(topic)
            + _array([_i32(p) + _i64(offset) + _i32(maxBytes) for p, (offset, maxBytes) in partitions.items()])
            for topic, partitions in topics.items()
        ]
    )
    return requestFrame(1, correlationId, body)


def listOffsetsRequest(correlationId, topics):
    """topics: {topic: {partition: (time, maxNumber)}}."""
    body = _i32(-1) + _array(
        [
            encodeString(topic)
            + _array([_i32(p) + _i64(t) + _i32(n) for p, (t, n) in partitions.items()])
            for topic, partitions in topics.items()
        ]
    )
    return requestFrame(2, correlationId, body)


def metadataRequest(correlationId, topics=(), apiVersion=0):
    return requestFrame(3, correlationId, _array([encodeString(t) for t in topics]), apiVersion)


# Responses, parsed into plain dicts.


def responseFrames(data):
    """Split a stream of size-prefixed responses; a partial tail is an error."""
    framer = Framer(1 << 30)
    frames = framer.feed(data)
    assert framer.buffered == 0, "partial response frame"
    return frames


def correlationId(response):
    return Reader(response).int32()


def _topics(reader, partition):
    return {reader.string(): dict(reader.array(partition, 0)) for _ in range(reader.int32())}


def parseProduceResponse(response):
    """(correlation id, {topic: {partition: (error, offset)}})."""
    reader = Reader(response)
    cid = reader.int32()
    topics = _topics(reader, lambda: (reader.int32(), (reader.int16(), reader.int64())))
    reader.expectEnd()
    return cid, topics


def parseFetchResponse(response):
    """(correlation id, {topic: {partition: (error, high watermark, message set)}})."""
    reader = Reader(response)
    cid = reader.int32()
    topics = _topics(reader, lambda: (reader.int32(), (reader.int16(), reader.int64(), reader.bytes())))
    reader.expectEnd()
    return cid, topics


def parseListOffsetsResponse(response):
    """(correlation id, {topic: {partition: (error, [offsets])}})."""
    reader = Reader(response)
    cid = reader.int32()
    topics = _topics(reader, lambda: (reader.int32(), (reader.int16(), reader.array(reader.int64, 8))))
    reader.expectEnd()
    return cid, topics


def parseMetadataResponse(response):
    """(correlation id, [(node, host, port)], {topic: (error, {partition: (error, leader, replicas, isr)})})."""
    reader = Reader(response)
    cid = reader.int32()
    brokers = reader.array(lambda: (reader.int32(), reader.string(), reader.int32()), 10)

    def partition():
        error, number, leader = reader.int16(), reader.int32(), reader.int32()
        return number, (error, leader, reader.array(reader.int32, 4), reader.array(reader.int32, 4))

    topics = {}
    for _ in range(reader.int32()):
        error, name = reader.int16(), reader.string()
        topics[name] = (error, dict(reader.array(partition, 18)))
    reader.expectEnd()
    return cid, brokers, topics
