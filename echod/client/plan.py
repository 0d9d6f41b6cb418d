# -*- test-case-name: tests.unit.test_client -*-
"""
What a run will do: the settings of the C{[client]} table, the payload, and
the mode they select.

Three modes share one connection logic and one report:

  - I{one-shot}: send the message once and print C{Received b'...'}, like the
    socket example echod grew from;
  - I{ping}: send C{count} messages C{interval} seconds apart, check each reply
    byte for byte, print its round-trip time, then a summary (loss, mismatches,
    min/avg/max/p50/p99);
  - I{bulk}: stream C{bulk} bytes of a deterministic pattern with backpressure,
    verify them as they come back, and report MB/s.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

from echod.config import ClientConfig, ConfigError, FileProblem, readRegularFile

__all__ = ["Plan", "makePlan"]


@dataclass(frozen=True)
class Plan:
    """
    A validated run: the settings of the C{[client]} table (after the command
    line), the payload read, and the mode they select.

    @ivar mode: C{"once"}, C{"ping"} or C{"bulk"}.
    @ivar payload: the bytes of every message (not used in bulk mode).
    """

    settings: ClientConfig
    mode: str
    payload: bytes

    @property
    def target(self) -> str:
        """
        What the user asked to reach, as said in messages.
        """
        if self.settings.endpoint:
            return self.settings.endpoint
        return f"{self.settings.host} port {self.settings.port}"


def _keyError(key: str, value: object, problem: str) -> ConfigError:
    return ConfigError(problem, key=f"client.{key}", value=value)


def makePlan(
    settings: ClientConfig,
    stdin: IO[bytes] | None = None,
    error: Callable[[str, object, str], ConfigError] = _keyError,
) -> Plan:
    """
    Check the rules that involve more than one key of C{[client]}, read the
    payload, and choose the mode: bulk if C{bulk} is set; one-shot for a single
    message as it is (no C{count}, C{size}, C{file} or C{json}); else ping.

    @param error: makes the error about a key of C{[client]}, its value and
        the problem: by default named C{client.KEY}; the command line names it
        by the option the user typed, a config file by its file and line.
    @raise ConfigError: for anything the user must fix; nothing has been
        connected yet.
    """
    if settings.bulk:
        return Plan(settings, "bulk", b"")
    if settings.file:
        payload = _readPayload(settings.file, stdin, error)
    else:
        payload = settings.message.encode("utf-8")
    if settings.size:
        if not payload:
            raise error("size", settings.size, "cannot fill a message from an empty payload")
        repeats = -(-settings.size // len(payload))
        payload = (payload * repeats)[: settings.size]
    if not payload:
        key = "file" if settings.file else "message"
        raise error(key, getattr(settings, key), "the payload is empty: there is nothing to echo")
    once = settings.count == 1 and not (settings.size or settings.file or settings.json)
    return Plan(settings, "once" if once else "ping", payload)


_MAX_PAYLOAD = 64 * 1024 * 1024


def _readPayload(
    path: str, stdin: IO[bytes] | None, error: Callable[[str, object, str], ConfigError]
) -> bytes:
    try:
        if path == "-":
            source = stdin if stdin is not None else sys.stdin.buffer
            data = source.read(_MAX_PAYLOAD + 1)
        else:
            # A regular file only: a FIFO would block, a device never end.
            data = readRegularFile(path, _MAX_PAYLOAD)
    except (OSError, FileProblem) as e:
        reason = (e.strerror if isinstance(e, OSError) else None) or str(e)
        raise error("file", path, f"cannot read the payload: {reason.lower()}") from None
    if len(data) > _MAX_PAYLOAD:
        raise error(
            "file", path, f"the payload is larger than {_MAX_PAYLOAD} bytes (use --bulk for more)"
        )
    return data
