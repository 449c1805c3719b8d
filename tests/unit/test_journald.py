"""The journald log observer: no timestamp, the level as a syslog priority prefix on every line."""

import io

from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from kafkaw import journald


def logged(emit):
    """The text the observer writes for what C{emit(log)} logs."""
    out = io.StringIO()
    log = Logger(namespace="kafkaw.test", observer=journald.observer(out))
    emit(log)
    return out.getvalue()


def test_levelsBecomePriorities():
    text = logged(lambda log: [log.emit(level, "{what} happened", what=level.name) for level in LogLevel.iterconstants()])
    assert text.splitlines() == [
        "<7>[kafkaw.test#debug] debug happened",
        "<6>[kafkaw.test#info] info happened",
        "<4>[kafkaw.test#warn] warn happened",
        "<3>[kafkaw.test#error] error happened",
        "<2>[kafkaw.test#critical] critical happened",
    ]


def test_everyTracebackLineKeepsThePriority():
    try:
        1 / 0
    except ZeroDivisionError:
        failure = Failure()
    lines = logged(lambda log: log.failure("store write failed", failure)).splitlines()
    assert lines[0] == "<2>[kafkaw.test#critical] store write failed"
    assert len(lines) > 2
    assert all(line.startswith("<2>") for line in lines)
    assert lines[-1] == "<2>builtins.ZeroDivisionError: division by zero"


def test_writesToStdoutByDefault(capsys):
    journald.observer()({"log_level": LogLevel.info, "log_format": "store closed", "log_namespace": "kafkaw.tap"})
    assert capsys.readouterr().out == "<6>[kafkaw.tap#info] store closed\n"
