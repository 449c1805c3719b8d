"""Shared test set-up: fail any test during which Twisted logged an error."""

import pytest
from twisted.logger import LogLevel, globalLogPublisher


@pytest.fixture(autouse=True)
def failOnLoggedErrors(request):
    """Like trial: an error logged (e.g. an unhandled Deferred failure) fails the test.

    Tests that expect errors to be logged mark themselves with
    C{@pytest.mark.logs_errors}.
    """
    errors = []

    def observe(event):
        if event.get("log_level") in (LogLevel.error, LogLevel.critical) or event.get("isError"):
            errors.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        yield errors
    finally:
        globalLogPublisher.removeObserver(observe)
    if errors and request.node.get_closest_marker("logs_errors") is None:
        from twisted.logger import formatEvent

        pytest.fail("errors were logged:\n" + "\n".join(formatEvent(e) for e in errors))


def pytest_configure(config):
    config.addinivalue_line("markers", "logs_errors: the test expects Twisted to log errors")
