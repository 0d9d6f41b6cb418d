# -*- test-case-name: tests.unit.test_client -*-
"""
The echo client: resolve a host to all of its addresses, connect to the first
that answers (Happy Eyeballs over IPv6 and IPv4), send, and check that every
byte comes back.

Three modes share one connection logic and one report:

  - I{one-shot}: send the message once and print C{Received b'...'}, like the
    socket example echod grew from;
  - I{ping}: send C{count} messages C{interval} seconds apart, check each reply
    byte for byte, print its round-trip time, then a summary (loss, mismatches,
    min/avg/max/p50/p99);
  - I{bulk}: stream C{bulk} bytes of a deterministic pattern with backpressure,
    verify them as they come back, and report MB/s.

Echo is a byte stream: a reply may arrive split over several reads or joined
with the next one, so replies are matched to messages by byte counts, never by
read boundaries.  Every failure becomes a L{ClientError} whose C{status} is the
process exit status, the same for C{echod-client} and C{twistd echod-client}.

Output for the user (the replies, the summary) goes to a text stream handed in
(standard output), not through the logger: it is the program's result.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import math
import os
import random
import sys
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import IO, Any

from twisted.application.service import Service
from twisted.internet import error as _error
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHostnameResolver,
    IHostResolution,
    IPushProducer,
    IReactorPluggableNameResolver,
    IReactorTime,
    IResolutionReceiver,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import ILogObserver, Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from echod.addresses import describePeer
from echod.config import (
    ClientConfig,
    ConfigError,
    FileProblem,
    endpointParameters,
    readRegularFile,
    tcp6ClientParameters,
)
from echod.errors import UserError
from echod.logs import offerToTwistd

__all__ = [
    "BULK_WINDOW",
    "BulkEchoProtocol",
    "BulkPattern",
    "ClientError",
    "ClosedEarly",
    "ConnectFailed",
    "EchoClient",
    "EchoClientFactory",
    "EchoClientProtocol",
    "EchoClientService",
    "ExitStatus",
    "InternalError",
    "Interrupted",
    "Mismatched",
    "NameNotResolved",
    "Plan",
    "RTTStats",
    "Reporter",
    "Summary",
    "TimedOut",
    "connectFailure",
    "makePlan",
    "runClient",
]

PROG = "echod-client"

# Bulk mode: bytes written per call, and at most this many bytes sent but not
# yet verified (the memory the client holds is about twice this).
BULK_CHUNK = 64 * 1024
BULK_WINDOW = 4 * 1024 * 1024
_BULK_SEED = 862


class ExitStatus(IntEnum):
    """
    The exit status of C{echod-client} and C{twistd -n echod-client}.
    """

    OK = 0
    INTERNAL = 1
    USAGE = 2
    UNRESOLVED = 3
    UNREACHABLE = 4
    TIMEOUT = 5
    CLOSED = 6
    MISMATCH = 7
    INTERRUPTED = 130


class ClientError(UserError):
    """
    Why a run failed, in one line; C{status} is the exit status it gives.
    """

    status: ExitStatus = ExitStatus.UNREACHABLE


class NameNotResolved(ClientError):
    status = ExitStatus.UNRESOLVED


class ConnectFailed(ClientError):
    status = ExitStatus.UNREACHABLE


class TimedOut(ClientError):
    status = ExitStatus.TIMEOUT


class ClosedEarly(ClientError):
    status = ExitStatus.CLOSED


class Mismatched(ClientError):
    status = ExitStatus.MISMATCH


class Interrupted(ClientError):
    status = ExitStatus.INTERRUPTED


class InternalError(ClientError):
    status = ExitStatus.INTERNAL


# --- what to do ---------------------------------------------------------------


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


# --- statistics ---------------------------------------------------------------


def _percentile(ordered: Sequence[float], percent: float) -> float:
    """
    Nearest-rank percentile: the smallest value with at least C{percent} % of
    the values at or below it.
    """
    rank = max(1, math.ceil(percent / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class RTTStats:
    """
    Messages sent, replies received and mismatched, and round-trip times in
    seconds.  Loss counts messages whose reply never came (whole or in part).
    """

    sent: int = 0
    received: int = 0
    mismatched: int = 0
    rtts: list[float] = field(default_factory=list)

    def add(self, rtt: float, matched: bool) -> None:
        self.received += 1
        self.rtts.append(rtt)
        if not matched:
            self.mismatched += 1

    @property
    def lossPercent(self) -> float:
        if not self.sent:
            return 0.0
        return 100.0 * (self.sent - self.received) / self.sent

    def summary(self) -> dict[str, float] | None:
        """
        min, avg, max, p50 and p99 of the round-trip times, in seconds;
        L{None} when no reply came.
        """
        if not self.rtts:
            return None
        ordered = sorted(self.rtts)
        return {
            "min": ordered[0],
            "avg": math.fsum(ordered) / len(ordered),
            "max": ordered[-1],
            "p50": _percentile(ordered, 50),
            "p99": _percentile(ordered, 99),
        }


@dataclass
class Summary:
    """
    The result of a run, for the report and for C{--json}.
    """

    mode: str
    target: str
    peer: str | None = None
    payloadSize: int = 0
    stats: RTTStats = field(default_factory=RTTStats)
    bulkBytes: int = 0
    bytesSent: int = 0
    bytesVerified: int = 0
    started: float | None = None
    ended: float | None = None
    firstProblem: str | None = None
    error: ClientError | None = None

    @property
    def status(self) -> ExitStatus:
        """
        Echoed data that differed is what matters most, whatever ended the
        run (a server that corrupts data may well close or stall next); then
        the error that ended the run; else success.
        """
        if self.stats.mismatched and not isinstance(self.error, Mismatched):
            return ExitStatus.MISMATCH
        if self.error is not None:
            return self.error.status
        return ExitStatus.OK

    @property
    def seconds(self) -> float:
        if self.started is None or self.ended is None:
            return 0.0
        return max(0.0, self.ended - self.started)

    @property
    def megabytesPerSecond(self) -> float:
        """
        Verified bytes per second, in MB (10**6 bytes).
        """
        seconds = self.seconds
        return self.bytesVerified / seconds / 1e6 if seconds > 0 else 0.0

    def asJSON(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "mode": self.mode,
            "target": self.target,
            "peer": self.peer,
            "status": int(self.status),
            "error": str(self.error) if self.error is not None else None,
            "seconds": round(self.seconds, 6),
        }
        if self.mode == "bulk":
            result.update(
                bytes=self.bulkBytes,
                bytes_sent=self.bytesSent,
                bytes_verified=self.bytesVerified,
                mb_per_s=round(self.megabytesPerSecond, 3),
            )
            return result
        rtt = self.stats.summary()
        result.update(
            bytes_per_message=self.payloadSize,
            sent=self.stats.sent,
            received=self.stats.received,
            mismatched=self.stats.mismatched,
            loss_percent=round(self.stats.lossPercent, 3),
            rtt_ms=None if rtt is None else {k: round(v * 1000, 3) for k, v in rtt.items()},
        )
        return result


# --- output -------------------------------------------------------------------


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _difference(expected: bytes, received: bytes, offset: int) -> str:
    return f"sent 0x{expected[0]:02x}, received 0x{received[0]:02x} at byte {offset}"


class Reporter:
    """
    Writes the run's lines to C{out} (standard output): the one-shot
    C{Received b'...'} line, ping's per-reply lines and summary, bulk's result,
    or only the JSON summary.  Errors go to C{err} as one line each.
    """

    def __init__(self, plan: Plan, out: IO[str], err: IO[str]) -> None:
        self.plan = plan
        self.out = out
        self.err = err
        self.quiet = plan.settings.json

    def _line(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def connected(self, summary: Summary) -> None:
        if self.quiet or self.plan.mode == "once":
            return
        if self.plan.mode == "bulk":
            self._line(f"BULK {summary.target} ({summary.peer}): {summary.bulkBytes} bytes")
        else:
            self._line(
                f"ECHO {summary.target} ({summary.peer}): {summary.payloadSize} bytes, "
                f"{_plural(self.plan.settings.count, 'message')}"
            )

    def replied(
        self, summary: Summary, seq: int, rtt: float, reply: bytes | None, problem: str | None
    ) -> None:
        """
        One whole reply came back; C{problem} says how it differs, if it does.
        C{reply} is kept in one-shot mode only.
        """
        if self.quiet:
            return
        if self.plan.mode == "once":
            self._line(f"Received {reply!r}")
            return
        line = (
            f"{summary.payloadSize} bytes from {summary.peer}: seq={seq} time={rtt * 1000:.3f} ms"
        )
        if problem is not None:
            line += f" MISMATCH ({problem})"
        self._line(line)

    def finished(self, summary: Summary) -> None:
        if self.quiet:
            self._line(json.dumps(summary.asJSON(), sort_keys=True))
        elif self.plan.mode == "bulk":
            if summary.bytesVerified or summary.error is None:
                self._line(
                    f"{summary.bytesSent} bytes sent, {summary.bytesVerified} bytes verified "
                    f"in {summary.seconds:.3f} s: {summary.megabytesPerSecond:.1f} MB/s"
                )
        elif self.plan.mode == "ping" and summary.peer is not None:
            stats = summary.stats
            self._line("")
            self._line(f"--- {summary.target} echo statistics ---")
            self._line(
                f"{stats.sent} sent, {stats.received} received, {stats.mismatched} mismatched, "
                f"{stats.lossPercent:.1f}% loss, time {summary.seconds * 1000:.0f} ms"
            )
            rtt = stats.summary()
            if rtt is not None:
                values = "/".join(
                    f"{rtt[k] * 1000:.3f}" for k in ("min", "avg", "max", "p50", "p99")
                )
                self._line(f"rtt min/avg/max/p50/p99 = {values} ms")
        self.failed(summary)

    def failed(self, summary: Summary) -> None:
        """
        One line on C{err} for each thing that went wrong: replies that
        differed, and the error that ended the run.
        """
        lines = []
        if summary.stats.mismatched:
            if self.plan.mode == "once":
                lines.append(f"the echo differs from what was sent ({summary.firstProblem})")
            else:
                lines.append(
                    f"{summary.stats.mismatched} of {summary.stats.received} replies differed "
                    f"from what was sent (first: {summary.firstProblem})"
                )
        if summary.error is not None:
            lines.append(str(summary.error))
        for line in lines:
            self.err.write(f"{PROG}: {line}\n")
        self.err.flush()


# --- the protocols -------------------------------------------------------------


class _Deadline:
    """
    One timer on the run's clock (never the global reactor), re-armed cheaply.

    Not L{TimeoutMixin}: a reply's deadline runs from when its message was
    sent, so re-arming needs the time left, not the whole period again.
    """

    def __init__(self, clock: IReactorTime, expired: Callable[[], None]) -> None:
        self._clock = clock
        self._expired = expired
        self._call: IDelayedCall | None = None

    def arm(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        if self._call is not None and self._call.active():
            self._call.reset(seconds)
        else:
            self._call = self._clock.callLater(seconds, self._fire)

    def _fire(self) -> None:
        self._call = None
        self._expired()

    def cancel(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None


def _tlsProblem(reason: Failure) -> str | None:
    """
    What went wrong in TLS (a failed handshake, a bad certificate), if that
    is what ended the connection: C{tls:} endpoints report it only as the
    reason the connection was lost.
    """
    value = reason.value
    if value is None or not type(value).__module__.startswith("OpenSSL"):
        return None
    details = value.args[0] if value.args else None
    if isinstance(details, list):
        texts = [str(item[-1]) for item in details if isinstance(item, tuple) and item]
        if texts:
            return "; ".join(texts)
    return str(value) or type(value).__name__


class _ClientProtocol(Protocol):
    """
    What every mode shares: the summary, the reply deadline, and closing.
    L{finished} fires once the connection is closed; L{error} then says why
    the run failed, or is L{None}.
    """

    factory: EchoClientFactory
    transport: Any
    log = Logger()

    def __init__(self) -> None:
        self.finished: Deferred[None] = Deferred()
        self.error: ClientError | None = None
        self._closing = False
        self._deadline: _Deadline | None = None

    @property
    def clock(self) -> IReactorTime:
        return self.factory.clock

    @property
    def summary(self) -> Summary:
        return self.factory.summary

    def connectionMade(self) -> None:
        self._deadline = _Deadline(self.clock, self.replyTimedOut)
        self.summary.peer = describePeer(self.transport.getPeer())
        self.factory.reporter.connected(self.summary)
        self.summary.started = self.clock.seconds()
        self.log.debug("connected to {peer}", peer=self.summary.peer)
        self.start()

    def start(self) -> None:
        raise NotImplementedError()

    def replyTimedOut(self) -> None:
        raise NotImplementedError()

    def done(self, error: ClientError | None = None, abort: bool = False) -> None:
        """
        Stop the run: close (or, on a fault, abort) the connection; L{finished}
        fires when it is closed.
        """
        if self._closing:
            return
        self._closing = True
        self.error = error
        self.summary.ended = self.clock.seconds()
        if self._deadline is not None:
            self._deadline.cancel()
        self.stopSending()
        if abort:
            self.transport.abortConnection()
        else:
            self.transport.loseConnection()

    def stopSending(self) -> None:
        """
        Cancel whatever would send more.
        """

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self._closing:
            self._closing = True
            self.summary.ended = self.clock.seconds()
            if self._deadline is not None:
                self._deadline.cancel()
            self.stopSending()
            tls = _tlsProblem(reason)
            if tls is not None:
                self.error = ConnectFailed(f"TLS with {self.factory.plan.target} failed: {tls}")
            else:
                self.error = ClosedEarly(self.closedEarly(reason))
        self.finished.callback(None)

    def closedEarly(self, reason: Failure) -> str:
        raise NotImplementedError()

    @staticmethod
    def _how(reason: Failure) -> str:
        if reason.check(_error.ConnectionDone):
            return "closed the connection"
        if reason.check(_error.ConnectionLost):
            return "reset the connection"
        return f"lost the connection ({reason.getErrorMessage()})"


class EchoClientProtocol(_ClientProtocol):
    """
    One-shot and ping modes: send the same payload C{count} times,
    C{interval} seconds apart (or each as soon as the previous reply is back,
    for an interval of 0), and match what comes back to the oldest
    unanswered message, byte for byte.

    Each reply must be complete within C{timeout} seconds of its message being
    sent; the first that is not ends the run with L{TimedOut}.
    """

    def __init__(self) -> None:
        super().__init__()
        self._outstanding: deque[tuple[int, float]] = deque()
        self._offset = 0
        self._problem: str | None = None
        self._reply: list[bytes] | None = None
        self._nextSend: IDelayedCall | None = None

    def start(self) -> None:
        plan = self.factory.plan
        self._payload = plan.payload
        self._count = plan.settings.count
        self._interval = plan.settings.interval
        self._timeout = plan.settings.timeout
        if plan.mode == "once":
            self._reply = []
        self.summary.payloadSize = len(self._payload)
        self._send()

    def _send(self) -> None:
        self._nextSend = None
        if self._closing:
            return
        stats = self.summary.stats
        stats.sent += 1
        now = self.clock.seconds()
        self._outstanding.append((stats.sent, now))
        self.transport.write(self._payload)
        if len(self._outstanding) == 1:
            self._armDeadline()
        if stats.sent < self._count and self._interval > 0:
            self._nextSend = self.clock.callLater(self._interval, self._send)

    def _armDeadline(self) -> None:
        assert self._deadline is not None
        if self._outstanding:
            _, sentAt = self._outstanding[0]
            self._deadline.arm(sentAt + self._timeout - self.clock.seconds())
        else:
            self._deadline.cancel()

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        payload = self._payload
        size = len(payload)
        position = 0
        while position < len(data):
            if not self._outstanding:
                extra = len(data) - position
                self.done(
                    Mismatched(
                        f"the server sent {extra} bytes more than it was sent "
                        f"(after reply {self.summary.stats.received})"
                    ),
                    abort=True,
                )
                return
            take = min(size - self._offset, len(data) - position)
            piece = data[position : position + take]
            if self._problem is None and not payload.startswith(piece, self._offset):
                self._problem = self._describe(piece)
            if self._reply is not None:
                self._reply.append(piece)
            self._offset += take
            position += take
            if self._offset == size:
                self._replied()
        if self.summary.stats.received == self._count:
            self.done()

    def _describe(self, piece: bytes) -> str:
        expected = self._payload[self._offset : self._offset + len(piece)]
        index = next(i for i, (a, b) in enumerate(zip(expected, piece, strict=True)) if a != b)
        return _difference(
            expected[index : index + 1], piece[index : index + 1], self._offset + index
        )

    def _replied(self) -> None:
        seq, sentAt = self._outstanding.popleft()
        rtt = self.clock.seconds() - sentAt
        problem, self._problem = self._problem, None
        self._offset = 0
        self.summary.stats.add(rtt, problem is None)
        reply = None
        if self._reply is not None:
            reply = b"".join(self._reply)
            self._reply = []
        if problem is not None and self.summary.firstProblem is None:
            self.summary.firstProblem = problem
        self.factory.reporter.replied(self.summary, seq, rtt, reply, problem)
        self._armDeadline()
        stats = self.summary.stats
        if self._interval == 0 and stats.received == stats.sent < self._count:
            self._send()

    def replyTimedOut(self) -> None:
        seq, _ = self._outstanding[0]
        got = f" ({self._offset} of {len(self._payload)} bytes came back)" if self._offset else ""
        self.done(
            TimedOut(f"no reply to message {seq} within {self._timeout:g} s{got}"), abort=True
        )

    def stopSending(self) -> None:
        if self._nextSend is not None and self._nextSend.active():
            self._nextSend.cancel()
        self._nextSend = None

    def closedEarly(self, reason: Failure) -> str:
        stats = self.summary.stats
        partial = f", {self._offset} bytes of reply {stats.received + 1}" if self._offset else ""
        return (
            f"the server {self._how(reason)} after {stats.received} of {self._count} "
            f"replies{partial}"
        )


class BulkPattern:
    """
    The bytes bulk mode streams: chunk C{k} is C{k} as 8 bytes, big-endian,
    then a fixed block from a seeded PRNG.  Deterministic, cheap to make and
    to check piece by piece, and no two chunks alike, so a lost, repeated or
    reordered chunk is caught too.
    """

    def __init__(self, total: int, chunkSize: int = BULK_CHUNK, seed: int = _BULK_SEED) -> None:
        if chunkSize <= 8:
            raise ValueError("chunkSize must be larger than 8")
        self.total = total
        self.chunkSize = chunkSize
        self._body = random.Random(seed).randbytes(chunkSize - 8)
        self._cache: tuple[int, bytes] = (-1, b"")

    def chunk(self, index: int) -> bytes:
        cachedIndex, cached = self._cache
        if cachedIndex == index:
            return cached
        data = index.to_bytes(8, "big") + self._body
        end = self.total - index * self.chunkSize
        if end < self.chunkSize:
            data = data[: max(0, end)]
        self._cache = (index, data)
        return data

    def slice(self, offset: int, length: int) -> bytes:
        """
        The C{length} bytes (at most to the end of the chunk) at C{offset}.
        """
        index, start = divmod(offset, self.chunkSize)
        return self.chunk(index)[start : start + length]

    def mismatch(self, offset: int, data: bytes) -> str | None:
        """
        L{None} if C{data} is what the stream holds at C{offset}, else where
        and how it first differs.
        """
        position = 0
        while position < len(data):
            index, start = divmod(offset + position, self.chunkSize)
            chunk = self.chunk(index)
            take = min(len(chunk) - start, len(data) - position)
            if take <= 0:
                return f"{len(data) - position} bytes more than were sent"
            if not data.startswith(chunk[start : start + take], position):
                piece = data[position : position + take]
                expected = chunk[start : start + take]
                i = next(i for i in range(take) if piece[i] != expected[i])
                return _difference(expected[i : i + 1], piece[i : i + 1], offset + position + i)
            position += take
        return None


@implementer(IPushProducer)
class BulkEchoProtocol(_ClientProtocol):
    """
    Bulk mode: a streaming producer for its own transport.  It writes the
    pattern while the transport wants more (the transport pauses it when its
    buffer is full) and while fewer than L{BULK_WINDOW} bytes are unverified;
    replies are checked as they arrive, so neither side of the payload is
    ever held whole.  Data must keep coming back: C{timeout} seconds without
    progress end the run with L{TimedOut}.
    """

    def __init__(self, window: int = BULK_WINDOW) -> None:
        super().__init__()
        self._window = window
        self._paused = False
        self._producing = False
        self.sent = 0
        self.verified = 0

    def start(self) -> None:
        settings = self.factory.plan.settings
        self._total = settings.bulk
        self._timeout = settings.timeout
        self._sendPattern = BulkPattern(self._total)
        self._checkPattern = BulkPattern(self._total)
        self.summary.bulkBytes = self._total
        self.transport.registerProducer(self, True)
        self._produce()

    def _produce(self) -> None:
        if self._producing:
            return
        self._producing = True
        try:
            while (
                not self._paused
                and not self._closing
                and self.sent < self._total
                and self.sent - self.verified < self._window
            ):
                room = self._window - (self.sent - self.verified)
                data = self._sendPattern.slice(self.sent, min(room, self._total - self.sent))
                wasIdle = self.sent == self.verified
                self.sent += len(data)
                self.summary.bytesSent = self.sent
                if wasIdle:
                    assert self._deadline is not None
                    self._deadline.arm(self._timeout)
                self.transport.write(data)
        finally:
            self._producing = False

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._produce()

    def stopProducing(self) -> None:
        self._paused = True

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        problem = self._checkPattern.mismatch(self.verified, data)
        if problem is not None or self.verified + len(data) > self.sent:
            self.done(Mismatched(f"the echoed stream differs: {problem}"), abort=True)
            return
        self.verified += len(data)
        self.summary.bytesVerified = self.verified
        assert self._deadline is not None
        if self.verified == self._total:
            self.done()
            return
        if self.verified == self.sent:
            self._deadline.cancel()
        else:
            self._deadline.arm(self._timeout)
        self._produce()

    def stopSending(self) -> None:
        self._paused = True
        self.transport.unregisterProducer()

    def replyTimedOut(self) -> None:
        self.done(
            TimedOut(
                f"no echo for {self._timeout:g} s with {self.sent - self.verified} bytes "
                f"outstanding ({self.verified} of {self._total} verified)"
            ),
            abort=True,
        )

    def closedEarly(self, reason: Failure) -> str:
        return (
            f"the server {self._how(reason)} after {self.verified} of {self._total} "
            "bytes were echoed"
        )


class EchoClientFactory(Factory[_ClientProtocol]):
    """
    Builds the protocol of the plan's mode and hands it the plan, the clock,
    the summary and the reporter: the only way they reach it.
    """

    noisy = False

    def __init__(self, plan: Plan, clock: IReactorTime, reporter: Reporter) -> None:
        self.plan = plan
        self.clock = clock
        self.reporter = reporter
        self.summary = Summary(plan.mode, plan.target)
        if plan.mode == "bulk":
            self.summary.bulkBytes = plan.settings.bulk
        else:
            self.summary.payloadSize = len(plan.payload)

    def buildProtocol(self, addr: IAddress | None) -> _ClientProtocol | None:
        protocol: _ClientProtocol
        protocol = BulkEchoProtocol() if self.plan.mode == "bulk" else EchoClientProtocol()
        protocol.factory = self
        return protocol


# --- connecting ------------------------------------------------------------------

_FAMILIES: dict[str, Sequence[type[IAddress]] | None] = {
    "any": None,
    "ipv4": [IPv4Address],
    "ipv6": [IPv6Address],
}


@implementer(IHostnameResolver)
class _Resolver:
    """
    The reactor's resolver (or one handed in), restricted to one address
    family for C{-4}/C{-6}, and recording the addresses it found for error
    messages.
    """

    def __init__(
        self, resolver: IHostnameResolver, addressTypes: Sequence[type[IAddress]] | None
    ) -> None:
        self._resolver = resolver
        self._addressTypes = addressTypes
        self.addresses: list[IAddress] = []

    def resolveHostName(
        self,
        resolutionReceiver: IResolutionReceiver,
        hostName: str,
        portNumber: int = 0,
        addressTypes: Sequence[type[IAddress]] | None = None,
        transportSemantics: str = "TCP",
    ) -> IHostResolution:
        found = self.addresses

        @implementer(IResolutionReceiver)
        class Recording:
            def resolutionBegan(self, resolutionInProgress: IHostResolution) -> None:
                resolutionReceiver.resolutionBegan(resolutionInProgress)

            def addressResolved(self, address: IAddress) -> None:
                found.append(address)
                resolutionReceiver.addressResolved(address)

            def resolutionComplete(self) -> None:
                resolutionReceiver.resolutionComplete()

        return self._resolver.resolveHostName(
            Recording(),
            hostName,
            portNumber,
            self._addressTypes if self._addressTypes is not None else addressTypes,
            transportSemantics,
        )


@implementer(IReactorPluggableNameResolver)
class _ResolvingReactor:
    """
    The reactor as L{HostnameEndpoint} sees it: the same in every way but its
    C{nameResolver}.  Nothing global is changed.
    """

    def __init__(self, reactor: Any, resolver: IHostnameResolver) -> None:
        self._reactor = reactor
        self._resolver = resolver

    @property
    def nameResolver(self) -> IHostnameResolver:
        return self._resolver

    def installNameResolver(self, resolver: IHostnameResolver) -> IHostnameResolver:
        previous, self._resolver = self._resolver, resolver
        return previous

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)


def _describeAddress(address: IAddress) -> str:
    if isinstance(address, IPv4Address | IPv6Address):
        return address.host
    return str(address)


def connectFailure(reason: Failure, plan: Plan, addresses: Sequence[IAddress] = ()) -> ClientError:
    """
    The one line, and the exit status, for a connection that could not be
    made.
    """
    target = plan.target
    settings = plan.settings
    tried = ""
    if addresses:
        hosts = dict.fromkeys(_describeAddress(a) for a in addresses)
        tried = " (tried " + ", ".join(hosts) + ")"
    if reason.check(_error.DNSLookupError) or (
        reason.check(ValueError) and "invalid hostname" in str(reason.value)
    ):
        if settings.family != "any" and not settings.endpoint:
            version = "IPv4" if settings.family == "ipv4" else "IPv6"
            return NameNotResolved(f"{settings.host}: no {version} address found")
        name = settings.endpoint or settings.host
        return NameNotResolved(f"{name}: name does not resolve")
    if reason.check(_error.TimeoutError, CancelledError):
        return TimedOut(f"could not connect to {target} within {settings.timeout:g} s{tried}")
    if reason.check(_error.ConnectionRefusedError):
        return ConnectFailed(f"connection refused by {target}{tried}")
    value = reason.value
    if isinstance(value, _error.ConnectError):
        if isinstance(value.osError, int):
            detail = os.strerror(value.osError)
        else:
            detail = str(value.args[0] if value.args else "") or (value.__doc__ or "")
        detail = detail.strip().rstrip(".").lower() or "connection failed"
        return ConnectFailed(f"cannot connect to {target}: {detail}{tried}")
    return ConnectFailed(f"cannot connect to {target}: {reason.getErrorMessage()}{tried}")


def _endpoint(
    reactor: Any, plan: Plan, resolver: IHostnameResolver | None
) -> tuple[IStreamClientEndpoint, _Resolver | None]:
    from twisted.internet.endpoints import (
        HostnameEndpoint,
        TCP6ClientEndpoint,
        clientFromString,
    )

    settings = plan.settings
    if settings.endpoint:
        if endpointParameters(settings.endpoint)[0].lower() == "tcp6":
            # echod's own type: Twisted's client strings have no tcp6:.
            host, port, timeout, bindAddress = tcp6ClientParameters(settings.endpoint)
            bind = (bindAddress, 0) if bindAddress is not None else None
            tcp6 = TCP6ClientEndpoint(
                reactor, host, port, timeout=timeout or settings.timeout, bindAddress=bind
            )
            return tcp6, None
        return clientFromString(reactor, settings.endpoint), None
    recording = _Resolver(resolver or reactor.nameResolver, _FAMILIES[settings.family])
    endpoint = HostnameEndpoint(
        _ResolvingReactor(reactor, recording),
        settings.host,
        settings.port,
        timeout=settings.timeout,
    )
    return endpoint, recording


# --- a whole run ------------------------------------------------------------------


class EchoClient:
    """
    One run: connect (within C{timeout}, resolution included), do what the
    plan says, report.  L{run} fires with the L{Summary}, never fails.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        plan: Plan,
        out: IO[str],
        err: IO[str],
        resolver: IHostnameResolver | None = None,
    ) -> None:
        self._reactor = reactor
        self.plan = plan
        self.reporter = Reporter(plan, out, err)
        self.factory = EchoClientFactory(plan, reactor, self.reporter)
        self._resolver = resolver
        self._connecting: Deferred[Any] | None = None
        self._protocol: _ClientProtocol | None = None
        self._timedOut = False
        self._interrupted = False
        self._result: Deferred[Summary] | None = None

    @property
    def summary(self) -> Summary:
        return self.factory.summary

    def run(self) -> Deferred[Summary]:
        result: Deferred[Summary] = Deferred()
        self._result = result
        try:
            endpoint, recording = _endpoint(self._reactor, self.plan, self._resolver)
        except Exception as e:
            self._end(connectFailure(Failure(e), self.plan))
            return result
        self.log.debug("connecting to {target}", target=self.plan.target)
        connecting: Deferred[Any] = endpoint.connect(self.factory)
        self._connecting = connecting
        # Not Deferred.addTimeout: cancelled while resolving, HostnameEndpoint
        # turns the CancelledError into a DNSLookupError, and a slow resolver
        # would be reported as a name that does not resolve.
        deadline = self._reactor.callLater(self.plan.settings.timeout, self._connectTimedOut)

        def connected(protocol: _ClientProtocol) -> Deferred[None]:
            self._connecting = None
            if deadline.active():
                deadline.cancel()
            self._protocol = protocol
            return protocol.finished

        def notConnected(reason: Failure) -> None:
            self._connecting = None
            if deadline.active():
                deadline.cancel()
            addresses = recording.addresses if recording is not None else ()
            if self._interrupted:
                self.summary.error = Interrupted("interrupted while connecting")
            elif self._timedOut:
                self.summary.error = connectFailure(
                    Failure(_error.TimeoutError()), self.plan, addresses
                )
            else:
                self.summary.error = connectFailure(reason, self.plan, addresses)

        def ran(_: None) -> None:
            if self._protocol is not None and self.summary.error is None:
                self.summary.error = self._protocol.error
            self._end(self.summary.error)

        def crashed(reason: Failure) -> None:
            self.log.failure("echod-client failed", reason)
            self._end(InternalError(f"internal error: {reason.getErrorMessage()}"))

        connecting.addCallbacks(connected, notConnected)
        connecting.addCallback(ran)
        connecting.addErrback(crashed)
        return result

    def _connectTimedOut(self) -> None:
        self._timedOut = True
        if self._connecting is not None:
            self._connecting.cancel()

    def _end(self, error: ClientError | None) -> None:
        self.summary.error = error
        self.reporter.finished(self.summary)
        result, self._result = self._result, None
        if result is not None:
            result.callback(self.summary)

    def interrupt(self) -> Deferred[Summary] | None:
        """
        Stop now (Ctrl-C, SIGTERM, the service stopping): print what there is.
        Returns the run's result if it is still to come.
        """
        result = self._result
        if result is None:
            return None
        self._interrupted = True
        if self._connecting is not None:
            self._connecting.cancel()
        elif self._protocol is not None:
            stats = self.summary.stats
            self._protocol.done(
                Interrupted(f"interrupted after {stats.received} of {stats.sent} replies")
                if self.plan.mode != "bulk"
                else Interrupted(f"interrupted after {self.summary.bytesVerified} bytes"),
                abort=True,
            )
        return result


def runClient(
    reactor: Any,
    plan: Plan,
    out: IO[str],
    err: IO[str],
    resolver: IHostnameResolver | None = None,
) -> tuple[EchoClient, Deferred[ExitStatus]]:
    """
    Start a run; the L{Deferred} fires with its exit status once everything
    is printed and the connection is closed.
    """
    client = EchoClient(reactor, plan, out, err, resolver)
    status = client.run().addCallback(lambda summary: summary.status)
    return client, status


# --- twistd -----------------------------------------------------------------------


class EchoClientService(Service):
    """
    C{twistd echod-client}: one run, started when the reactor runs; then the
    reactor is stopped and the process exits with the run's status.

    Not L{twisted.application.internet.ClientService}: that one reconnects
    until stopped, and a check must fail at the first refusal.  twistd itself
    exits 0 whenever the reactor stops by itself, so the status is kept and an
    C{atexit} hook ends the process with it, after twistd has cleaned up
    (pidfile, logs) and the output is flushed.
    """

    log = Logger()

    def __init__(
        self,
        plan: Plan,
        reactor: Any,
        out: IO[str],
        err: IO[str],
        logObserver: ILogObserver | None = None,
        exitProcess: bool = False,
        resolver: IHostnameResolver | None = None,
    ) -> None:
        self.plan = plan
        self.reactor = reactor
        self.out = out
        self.err = err
        self.logObserver = logObserver
        self.exitProcess = exitProcess
        self.resolver = resolver
        self.status: ExitStatus | None = None
        self.client: EchoClient | None = None
        self.result: Deferred[ExitStatus] = Deferred()

    def setServiceParent(self, parent: Any) -> None:
        offerToTwistd(parent, self.logObserver)
        super().setServiceParent(parent)

    def startService(self) -> None:
        super().startService()
        if self.exitProcess:
            atexit.register(self._exitWithStatus)
        self.reactor.callWhenRunning(self._start)

    def _start(self) -> None:
        if not self.running:
            return
        self.client, status = runClient(self.reactor, self.plan, self.out, self.err, self.resolver)
        status.addCallback(self._finished)

    def _finished(self, status: ExitStatus) -> None:
        self.status = status
        summary = self.client.summary if self.client is not None else None
        self.log.info(
            "echo run against {target} finished: {outcome} (exit status {status})",
            event="client.finished",
            target=self.plan.target,
            outcome=str(summary.error) if summary and summary.error else status.name.lower(),
            status=int(status),
            summary=summary.asJSON() if summary is not None else None,
        )
        self.result.callback(status)
        if self.exitProcess and self.running:
            self.reactor.stop()

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        if self.client is not None and self.status is None:
            self.client.interrupt()
            return self.result
        return succeed(None)

    def _exitWithStatus(self) -> None:
        if not self.status:
            return
        for stream in (self.out, self.err, sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(int(self.status))
