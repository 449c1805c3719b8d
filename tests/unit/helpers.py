"""Unit test helpers: wait for thread-backed Deferreds without a running
reactor, hold calls so they overlap, drive a gateway without a transport; and
the Kafka 0.8 frame builders and parsers of L{tests.frames}."""

import queue
import struct
import time

from twisted.internet import defer
from twisted.python.failure import Failure
from zope.interface import implementer

from kafkaw.broker.gateway import IKafkaConnection
from kafkaw.protocol import schema
from kafkaw.protocol.framing import frame
from tests.frames import (  # noqa: F401 (for the unit tests)
    correlationId,
    fetchRequest,
    listOffsetsRequest,
    metadataRequest,
    parseFetchResponse,
    parseListOffsetsResponse,
    parseMetadataResponse,
    parseProduceResponse,
    produceRequest,
    requestFrame,
    responseFrames,
)


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


@implementer(IKafkaConnection)
class FakeConnection:
    """The L{IKafkaConnection} of a L{Gateway} driven directly: keeps the responses, notes a close."""

    peer = "fake-peer"

    def __init__(self):
        self.responses = []  # each one response, without a size prefix
        self.closed = False

    def localAddress(self):
        return ("127.0.0.1", 9092)

    def sendResponse(self, chunks):
        self.responses.append(b"".join(chunks))

    def pauseReading(self):
        pass

    def resumeReading(self):
        pass

    def close(self):
        self.closed = True

    def abort(self):
        self.closed = True


class SchemaClient:
    """A test client speaking any API version through the schema codec; its
    answers decoded by correlation id. Subclasses say how a request frame is
    written (C{write}) and where the response frames come from (C{rawResponses})."""

    def __init__(self):
        self.correlationId = 0
        self.sent = {}  # correlation id -> (api key, version)

    def send(self, apiKey, version, value):
        self.correlationId += 1
        self.sent[self.correlationId] = (apiKey, version)
        self.write(frame(schema.encodeRequest(apiKey, version, self.correlationId, "test", value)))
        return self.correlationId

    def responses(self):
        decoded = []
        for response in self.rawResponses():
            (number,) = struct.unpack_from(">i", response)
            apiKey, version = self.sent.pop(number)
            decoded.append(schema.decodeResponse(apiKey, version, response)[1])
        return decoded

    def call(self, apiKey, version, value):
        self.send(apiKey, version, value)
        (response,) = self.responses()
        return response
