# -*- test-case-name: tests.unit.test_logs -*-
"""
Where echod's log events go and how they look: the form (C{[log] format},
C{level}) comes from the config file, the place (stdout, C{--logfile}) from
twistd's own options.

twistd takes a log observer from the application's L{ILogObserver} component
when the command line names none (C{--logger}, C{--syslog}); echod's service
sets that component to an L{EchodLogObserver}, which writes where twistd would
have written, in the chosen form, and can change form on reload.
"""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from types import FrameType
from typing import IO, Any

from twisted.logger import (
    FileLogObserver,
    FilteringLogObserver,
    ILogObserver,
    LogEvent,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    formatEventAsClassicLogText,
)
from twisted.python.components import Componentized
from twisted.python.logfile import LogFile
from zope.interface import implementer

__all__ = [
    "EchodLogObserver",
    "LogDestination",
    "formatJSONLine",
    "logLevel",
    "observerForTwistd",
    "offerToTwistd",
]

_LEVELS: dict[str, LogLevel] = {
    "debug": LogLevel.debug,
    "info": LogLevel.info,
    "warn": LogLevel.warn,
    "error": LogLevel.error,
    "critical": LogLevel.critical,
}


def logLevel(name: str) -> LogLevel:
    """
    The L{LogLevel} a C{[log] level} value names.
    """
    return _LEVELS[name]


def _jsonable(value: object) -> object:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


def formatJSONLine(event: LogEvent) -> str:
    """
    One event as one JSON object on one line: time (ISO 8601, UTC), level,
    namespace, the formatted message, the failure's traceback if any, and
    the event's own fields (C{peer}, C{bytes}, C{duration}...).

    Twisted's C{jsonFileLogObserver} is made for loading events back into
    Twisted (it keeps every C{log_*} internal and uses RFC 7464 record
    separators); log pipelines want flat JSON lines.
    """
    record: dict[str, Any] = {
        "time": datetime.fromtimestamp(event.get("log_time", 0.0), UTC).isoformat(
            timespec="microseconds"
        ),
        "level": getattr(event.get("log_level"), "name", "info"),
        "namespace": event.get("log_namespace", ""),
        "message": formatEvent(event),
    }
    failure = event.get("log_failure")
    if failure is not None:
        record["failure"] = failure.getTraceback()
    for key, value in event.items():
        if not key.startswith("log_") and key not in record and key != "format":
            record[key] = _jsonable(value)
    return json.dumps(record, ensure_ascii=False, default=str) + "\n"


class LogDestination:
    """
    The stream twistd itself would log to, given its options: stdout when
    C{--nodaemon} without C{--logfile} (or C{--logfile=-}), else a rotating
    L{LogFile} (C{twistd.log} by default) that SIGUSR1 rotates, as twistd does.

    The file is opened on the first event, which twistd emits when it starts
    logging, not when the service is assembled.  Standard output is taken
    now: once logging begins, twistd replaces C{sys.stdout} with a file that
    feeds the log itself.
    """

    def __init__(self, logfile: str | None, nodaemon: bool) -> None:
        self.logfile = logfile or ""
        self.nodaemon = nodaemon
        self._stdout = sys.stdout
        self._stream: IO[str] | None = None

    def stream(self) -> IO[str]:
        if self._stream is None:
            if self.logfile == "-" or (self.nodaemon and not self.logfile):
                self._stream = self._stdout
            else:
                logFile = LogFile.fromFullPath(self.logfile or "twistd.log")
                self._stream = logFile
                self._installRotation(logFile)
        return self._stream

    @staticmethod
    def _installRotation(logFile: LogFile) -> None:
        if signal.getsignal(signal.SIGUSR1) not in (None, signal.SIG_DFL):
            return

        def rotate(signum: int, frame: FrameType | None) -> None:
            from twisted.internet import reactor
            from twisted.internet.interfaces import IReactorFromThreads

            IReactorFromThreads(reactor).callFromThread(logFile.rotate)

        signal.signal(signal.SIGUSR1, rotate)


@implementer(ILogObserver)
class EchodLogObserver:
    """
    Writes events at or above C{level} as classic text lines or JSON lines;
    L{reconfigure} switches both at run time.
    """

    def __init__(
        self,
        formatName: str,
        level: str,
        stream: Callable[[], IO[str]],
    ) -> None:
        self._stream = stream
        self._observer: ILogObserver | None = None
        self._openWith: tuple[str, str] | None = (formatName, level)
        self.formatName = formatName
        self.level = level

    def reconfigure(self, formatName: str, level: str) -> None:
        if (formatName, level) != (self.formatName, self.level):
            self._openWith = (formatName, level)

    def _build(self, formatName: str, level: str) -> ILogObserver:
        formatter = formatJSONLine if formatName == "json" else formatEventAsClassicLogText
        sink = FileLogObserver(self._stream(), formatter)
        predicate = LogLevelFilterPredicate(defaultLogLevel=_LEVELS[level])
        self.formatName, self.level = formatName, level
        return FilteringLogObserver(sink, [predicate])

    def __call__(self, event: LogEvent) -> None:
        if self._openWith is not None:
            self._observer = self._build(*self._openWith)
            self._openWith = None
        assert self._observer is not None
        self._observer(event)


def observerForTwistd(
    twistdOptions: Mapping[str, Any] | None, formatName: str, level: str
) -> EchodLogObserver | None:
    """
    The observer for a service run by twistd, writing where twistd's options
    say; L{None} outside twistd, or where the command line chose the logging
    itself (C{--logger}, C{--syslog}).
    """
    if twistdOptions is None:
        return None
    if twistdOptions.get("logger") or twistdOptions.get("syslog"):
        return None
    nodaemon = bool(twistdOptions.get("nodaemon") or twistdOptions.get("debug"))
    destination = LogDestination(twistdOptions.get("logfile"), nodaemon)
    return EchodLogObserver(formatName, level, destination.stream)


def offerToTwistd(application: Any, observer: ILogObserver | None) -> None:
    """
    Called by a root service as twistd makes it a child of the application:
    hand twistd the observer (the application's L{ILogObserver} component,
    which twistd uses when its command line chose no logger).
    """
    if observer is not None and isinstance(application, Componentized):
        application.setComponent(ILogObserver, observer)
