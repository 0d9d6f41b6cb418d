# -*- test-case-name: tests.unit.test_client -*-
"""
The result of a run (L{Summary}, also as JSON) and how it is told
(L{Reporter}): the one-shot line, ping-like lines per reply and a summary,
bulk's throughput, or one JSON object.

Output for the user (the replies, the summary) goes to a text stream handed in
(standard output), not through the logger: it is the program's result.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import IO, Any

from echod.client.errors import ClientError, ExitStatus, Mismatched
from echod.client.plan import Plan
from echod.client.statistics import RTTStats

__all__ = ["PROG", "Reporter", "Summary", "describeDifference"]

PROG = "echod-client"


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


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def describeDifference(expected: bytes, received: bytes, offset: int) -> str:
    """
    Where echoed bytes first differ from those sent, as messages say it.
    """
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
