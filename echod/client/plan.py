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

Over UDP (C{protocol = "udp"}) one-shot and ping send one datagram per
message; in ping mode without a payload of the user's own (no message given,
no file) the client builds its datagrams: a header with a sequence number and
the send time, then the message repeated to C{size} (64 bytes by default).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

from echod.config import ClientConfig, ConfigError, FileProblem, readRegularFile

__all__ = [
    "BUILT_HEADER",
    "BUILT_SIZE",
    "MAX_DATAGRAM_IPV4",
    "MAX_DATAGRAM_IPV6",
    "Plan",
    "makePlan",
]

# Datagrams the client builds: a header of this many bytes (its layout is
# echod.client.datagram's), and this size when --size does not say.
BUILT_HEADER = 24
BUILT_SIZE = 64
# The largest UDP payloads: 65,535 less the IP (20) and UDP (8) headers; IPv6's
# 40-byte header is not counted in its payload length.
MAX_DATAGRAM_IPV4 = 65507
MAX_DATAGRAM_IPV6 = 65527


@dataclass(frozen=True)
class Plan:
    """
    A validated run: the settings of the C{[client]} table (after the command
    line), the payload read, and the mode they select.

    @ivar mode: C{"once"}, C{"ping"} or C{"bulk"}.
    @ivar payload: the bytes of every message (not used in bulk mode); of
        datagrams the client builds, what follows the header.
    @ivar built: over UDP, whether the client builds its datagrams (sequence
        number and send time, replies matched by them) rather than sending
        the user's payload as it is (replies matched by content).
    """

    settings: ClientConfig
    mode: str
    payload: bytes
    built: bool = False

    @property
    def udp(self) -> bool:
        return self.settings.protocol == "udp"

    @property
    def messageSize(self) -> int:
        """
        The bytes of one message: over UDP, of one datagram.
        """
        return len(self.payload) + (BUILT_HEADER if self.built else 0)

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
    messageGiven: bool | None = None,
) -> Plan:
    """
    Check the rules that involve more than one key of C{[client]}, read the
    payload, and choose the mode: bulk if C{bulk} is set; one-shot for a single
    message as it is (no C{count}, C{size}, C{file} or C{json}); else ping.

    @param error: makes the error about a key of C{[client]}, its value and
        the problem: by default named C{client.KEY}; the command line names it
        by the option the user typed, a config file by its file and line.
    @param messageGiven: whether the user gave the message (on the command
        line or in the file), which makes it their payload; L{None}: whether it
        differs from the default.
    @raise ConfigError: for anything the user must fix; nothing has been
        connected yet.
    """
    _checkProtocol(settings, error)
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
    mode = "once" if once else "ping"
    if settings.protocol != "udp":
        return Plan(settings, mode, payload)
    if messageGiven is None:
        messageGiven = settings.message != ClientConfig.message
    if mode == "ping" and not (settings.file or messageGiven):
        return _builtPlan(settings, error)
    _checkDatagramSize(settings, len(payload), "file" if settings.file else "message", error)
    return Plan(settings, mode, payload)


def _checkProtocol(
    settings: ClientConfig, error: Callable[[str, object, str], ConfigError]
) -> None:
    """
    The keys that belong to one protocol only.
    """
    if settings.protocol == "udp":
        if settings.bulk:
            raise error(
                "bulk",
                settings.bulk,
                "bulk mode streams over TCP; over UDP, flood with --interval 0 --window N",
            )
        if settings.endpoint:
            raise error(
                "endpoint",
                settings.endpoint,
                "endpoint strings are for TCP; over UDP give HOST and PORT",
            )
        if settings.window > 1 and settings.interval > 0:
            raise error(
                "window",
                settings.window,
                "a window is for --interval 0 (a flood); with an interval, a datagram "
                "is sent every interval",
            )
        return
    if settings.window > 1:
        raise error(
            "window",
            settings.window,
            "a window is for UDP (-u); over TCP, --interval 0 sends each message once "
            "the previous reply is back",
        )
    if settings.max_loss:
        raise error(
            "max_loss", settings.max_loss, "a loss allowance is for UDP (-u): TCP loses nothing"
        )


def _builtPlan(settings: ClientConfig, error: Callable[[str, object, str], ConfigError]) -> Plan:
    """
    Datagrams the client builds: the header, then the message repeated to
    fill C{size} bytes.
    """
    size = settings.size or BUILT_SIZE
    if size < BUILT_HEADER:
        raise error(
            "size",
            settings.size,
            f"datagrams the client builds are at least {BUILT_HEADER} bytes (a sequence "
            "number and the send time); give a MESSAGE to send it as it is",
        )
    _checkDatagramSize(settings, size, "size", error)
    message = settings.message.encode("utf-8") or b"\0"
    fill = size - BUILT_HEADER
    payload = (message * (-(-fill // len(message))))[:fill]
    return Plan(settings, "ping", payload, built=True)


def _checkDatagramSize(
    settings: ClientConfig,
    size: int,
    key: str,
    error: Callable[[str, object, str], ConfigError],
) -> None:
    largest = MAX_DATAGRAM_IPV4 if settings.family == "ipv4" else MAX_DATAGRAM_IPV6
    if size > largest:
        over = "IPv4" if settings.family == "ipv4" else "UDP"
        if key == "size" or settings.size:
            key = "size"
        raise error(
            key,
            getattr(settings, key),
            f"a datagram of {size} bytes is too large for {over} (at most {largest})",
        )


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
