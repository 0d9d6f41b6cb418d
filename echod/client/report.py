# -*- test-case-name: tests.unit.test_client -*-
"""
The result of a run (L{Summary}, also as JSON) and how it is told
(L{Reporter}): the one-shot line, ping-like lines per reply and a summary,
bulk's throughput, or one JSON object; over UDP, lost, duplicated, late and
reordered datagrams, mdev and jitter too.

Output for the user (the replies, the summary) goes to a text stream handed in
(standard output), not through the logger: it is the program's result.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import IO, Any

from echod.client.errors import ClientError, ExitStatus, Mismatched
from echod.client.plan import Plan
from echod.client.statistics import DatagramStats, Reply, ReplyKind, RTTStats

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
    protocol: str = "tcp"
    # Over UDP: how replies are matched to datagrams ("sequence" or
    # "content"), the datagrams kept in flight, and the addresses tried.
    matchedBy: str | None = None
    window: int = 1
    tried: list[str] = field(default_factory=list)

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
            "protocol": self.protocol,
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
        if isinstance(self.stats, DatagramStats):
            stats = self.stats
            jitter = stats.jitterOrNone
            result.update(
                lost=stats.lost,
                duplicates=stats.duplicates,
                reordered=stats.reordered,
                late=stats.late,
                jitter_ms=None if jitter is None else round(jitter * 1000, 3),
                matched_by=self.matchedBy,
                window=self.window,
                tried=self.tried,
            )
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
        if self.plan.udp:
            window = f", {summary.window} in flight" if summary.window > 1 else ""
            self._line(
                f"ECHO {summary.target} over UDP ({summary.peer}): {summary.payloadSize} bytes, "
                f"{_plural(self.plan.settings.count, 'datagram')}{window}"
            )
        elif self.plan.mode == "bulk":
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
        if self.plan.settings.quiet:
            return
        line = (
            f"{summary.payloadSize} bytes from {summary.peer}: seq={seq} time={rtt * 1000:.3f} ms"
        )
        if problem is not None:
            line += f" MISMATCH ({problem})"
        self._line(line)

    def datagramReplied(
        self, summary: Summary, seq: int, reply: bytes, counted: Reply, problem: str | None
    ) -> None:
        """
        A reply to datagram C{seq} came back, counted as C{counted};
        C{problem} says how it differs, if it does.
        """
        if self.plan.mode == "once" and counted.kind is ReplyKind.ANSWER:
            self.replied(summary, seq, counted.rtt, reply, problem)
            return
        if self.quiet or self.plan.settings.quiet or self.plan.mode == "once":
            return
        line = f"{len(reply)} bytes from {summary.peer}: seq={seq} time={counted.rtt * 1000:.3f} ms"
        if counted.kind is ReplyKind.DUPLICATE:
            line += " (DUP!)"
        elif counted.kind is ReplyKind.LATE:
            line += f" (late: lost after {self.plan.settings.timeout:g} s)"
        elif counted.reordered:
            line += " (reordered)"
        if problem is not None:
            line += f" MISMATCH ({problem})"
        self._line(line)

    def datagramStray(self, summary: Summary, reply: bytes) -> None:
        """
        A datagram came back that answers none of those sent.
        """
        if self.quiet or self.plan.settings.quiet or self.plan.mode == "once":
            return
        self._line(
            f"{len(reply)} bytes from {summary.peer}: MISMATCH (a reply to no datagram sent)"
        )

    def datagramLost(self, summary: Summary, seq: int) -> None:
        if self.quiet or self.plan.settings.quiet or self.plan.mode == "once":
            return
        self._line(f"no reply to seq={seq} within {self.plan.settings.timeout:g} s")

    def fallingBack(self, summary: Summary, why: str, nextPeer: str) -> None:
        """
        The address tried did not answer (C{why}); the next, C{nextPeer},
        is tried: said in ping mode's output, else on C{err}.
        """
        text = f"{summary.peer} {why}; trying {nextPeer}"
        if self.quiet or self.plan.mode == "once":
            self.err.write(f"{PROG}: {text}\n")
            self.err.flush()
        else:
            self._line(text)

    def _datagramSummary(self, summary: Summary, stats: DatagramStats) -> None:
        self._line("")
        self._line(f"--- {summary.target} echo statistics (UDP) ---")
        counts = [f"{stats.sent} sent", f"{stats.received} received", f"{stats.lost} lost"]
        if stats.late:
            counts.append(f"{stats.late} late")
        counts.append(f"{stats.duplicates} duplicated")
        if stats.reordered is not None:
            counts.append(f"{stats.reordered} reordered")
        counts.append(f"{stats.mismatched} mismatched")
        self._line(
            ", ".join(counts)
            + f", {stats.lossPercent:.1f}% loss, time {summary.seconds * 1000:.0f} ms"
        )
        rtt = stats.summary()
        if rtt is not None:
            values = "/".join(
                f"{rtt[k] * 1000:.3f}" for k in ("min", "avg", "max", "p50", "p99", "mdev")
            )
            self._line(
                f"rtt min/avg/max/p50/p99/mdev = {values} ms, jitter {stats.jitter * 1000:.3f} ms"
            )

    def finished(self, summary: Summary) -> None:
        if self.quiet:
            self._line(json.dumps(summary.asJSON(), sort_keys=True))
        elif (
            self.plan.mode == "ping"
            and summary.peer is not None
            and isinstance(summary.stats, DatagramStats)
        ):
            self._datagramSummary(summary, summary.stats)
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
            elif isinstance(summary.stats, DatagramStats):
                count = summary.stats.mismatched
                lines.append(
                    f"{count} {'reply' if count == 1 else 'replies'} differed from what was "
                    f"sent (first: {summary.firstProblem})"
                )
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
