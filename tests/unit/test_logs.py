"""
Tests for L{echod.logs}.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from twisted.logger import LogLevel, globalLogPublisher

from echod.logs import EchodLogObserver, LogDestination, formatJSONLine, observerForTwistd


def event(**fields: object) -> dict[str, object]:
    base: dict[str, object] = {
        "log_format": "{peer} said {bytes} bytes",
        "log_level": LogLevel.info,
        "log_namespace": "echod.server.stream.EchoProtocol",
        "log_time": 0.5,
        "peer": "192.0.2.1:7",
        "bytes": 12,
    }
    base.update(fields)
    return base


class JSONLineTests:
    def test_flatRecord(self) -> None:
        """
        One JSON object per line with time, level, namespace, message and the
        event's own fields; no Twisted internals.
        """
        line = formatJSONLine(event())
        assert line.endswith("\n") and line.count("\n") == 1
        record = json.loads(line)
        assert record == {
            "time": "1970-01-01T00:00:00.500000+00:00",
            "level": "info",
            "namespace": "echod.server.stream.EchoProtocol",
            "message": "192.0.2.1:7 said 12 bytes",
            "peer": "192.0.2.1:7",
            "bytes": 12,
        }

    def test_unserialisableFieldsBecomeText(self) -> None:
        record = json.loads(formatJSONLine(event(thing=object(), pair=(1, b"x"))))
        assert record["thing"].startswith("<object object")
        assert record["pair"] == [1, "b'x'"]


class ObserverTests:
    def test_levelFilter(self) -> None:
        out = io.StringIO()
        observer = EchodLogObserver("text", "warn", lambda: out)
        observer(event())
        observer(event(log_level=LogLevel.warn, log_format="careful"))
        assert "careful" in out.getvalue()
        assert "said" not in out.getvalue()

    def test_reconfigureSwitchesFormat(self) -> None:
        """
        A reload can switch text lines to JSON lines and change the level.
        """
        out = io.StringIO()
        observer = EchodLogObserver("text", "info", lambda: out)
        observer(event())
        observer.reconfigure("json", "debug")
        observer(event(log_level=LogLevel.debug))
        first, second = out.getvalue().splitlines()
        assert "[echod.server.stream.EchoProtocol#info] 192.0.2.1:7 said 12 bytes" in first
        assert json.loads(second)["level"] == "debug"


class DestinationTests:
    def test_nodaemonWithoutLogfileIsStdout(self) -> None:
        """
        Like twistd: -n without --logfile logs to the standard output taken
        when the destination was made.
        """
        destination = LogDestination(None, nodaemon=True)
        import sys

        assert destination.stream() is sys.stdout

    def test_logfile(self, tmp_path: Path) -> None:
        path = tmp_path / "echod.log"
        destination = LogDestination(str(path), nodaemon=False)
        stream = destination.stream()
        stream.write("line\n")
        stream.flush()
        assert path.read_text() == "line\n"
        stream.close()

    def test_twistdChoicesWin(self) -> None:
        """
        --logger and --syslog on twistd's command line leave logging to twistd.
        """
        assert observerForTwistd(None, "json", "info") is None
        assert observerForTwistd({"logger": print}, "json", "info") is None
        assert observerForTwistd({"syslog": True}, "json", "info") is None
        made = observerForTwistd({"nodaemon": True, "logfile": None}, "json", "warn")
        assert made is not None and made.formatName == "json" and made.level == "warn"
        assert globalLogPublisher is not None
