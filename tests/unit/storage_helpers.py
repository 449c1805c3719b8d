"""What the storage tests need of tests.unit.helpers, without importing the
broker (helpers imports the gateway): storage tests run on storage alone."""

import queue
import time

from twisted.python.failure import Failure


class ThreadResults:
    """Just enough reactor for C{deferToThreadPool} (as L{tests.unit.helpers.ThreadResults}).

    Threads hand their results to L{callFromThread}, which queues them; the
    test thread delivers them in L{wait}.
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
