"""Logs for journald: C{twistd --logger=kafkaw.journald.observer} (see docs/systemd/).

twistd's own stdout lines start with a timestamp, which journald already
records: C{journalctl} would show two. These lines have none; instead each
starts with its syslog priority (C{<3>} error ... C{<7>} debug, sd-daemon(3)),
which journald strips and keeps as the entry's priority, so C{journalctl -p
warning} finds warnings and errors. Every line of a traceback gets the prefix,
as journald makes an entry of each line.
"""

import sys

from twisted.logger import FileLogObserver, LogLevel, eventAsText

PRIORITIES = {
    LogLevel.debug: 7,
    LogLevel.info: 6,
    LogLevel.warn: 4,
    LogLevel.error: 3,
    LogLevel.critical: 2,
}


def formatForJournal(event):
    priority = PRIORITIES.get(event.get("log_level"), 6)
    text = eventAsText(event, includeTimestamp=False)
    return "".join(f"<{priority}>{line}\n" for line in text.splitlines())


def observer(outFile=None):
    """The observer twistd's C{--logger} makes: journald lines on stdout (or C{outFile})."""
    return FileLogObserver(sys.stdout if outFile is None else outFile, formatForJournal)
