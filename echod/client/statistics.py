# -*- test-case-name: tests.unit.test_client -*-
"""
Round-trip-time statistics of the ping and one-shot modes: messages sent,
replies received and mismatched, loss, and min/avg/max/p50/p99; over UDP
(L{DatagramStats}) also lost, duplicated, reordered and late datagrams, mdev
and jitter.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import MutableSequence, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import NamedTuple

__all__ = ["DatagramStats", "RTTStats", "Reply", "ReplyKind"]


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
    rtts: MutableSequence[float] = field(default_factory=list)

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


class ReplyKind(Enum):
    """
    What a reply to a datagram is: the first to a message still waiting
    (an answer), one more to a message already answered (a duplicate), or
    one to a message already given up as lost (late).
    """

    ANSWER = "answer"
    DUPLICATE = "duplicate"
    LATE = "late"


class Reply(NamedTuple):
    """
    A reply as counted: its kind, its round-trip time in seconds, and
    whether it came after the answer to a later message (reordered).
    """

    kind: ReplyKind
    rtt: float
    reordered: bool


_PENDING, _ANSWERED, _EXPIRED = 0, 1, 2


@dataclass
class DatagramStats(RTTStats):
    """
    The statistics of a UDP run, message by message: each datagram sent has
    a sequence number (from 1) and a send time, and is pending until its
    first reply (an answer, counted in C{received}) or its deadline (then it
    is lost; a reply after that is C{late}, and the message stays lost).

    Every reply that differs from what was sent is C{mismatched}, whatever
    else it is (an answer, a duplicate, a late reply, or a stray that names
    no message of ours).  C{lost} is C{sent - received}: at the end of a run
    that is every message not answered in time.

    C{reordered} counts answers that came after the answer to a later
    message (RFC 4737's reordered packets: a sequence number below the
    highest seen); L{None} when messages cannot be told apart (a payload of
    the user's own, the same in every datagram).  C{jitter} is RFC 3550's
    interarrival jitter (section 6.4.1) computed on round-trip times: each
    answer in order of arrival moves it by 1/16 of (|D| - jitter), where D is
    the difference between its round-trip time and the previous answer's.
    """

    # 8 bytes an answer, not a float object's 32: a long flood stays small.
    rtts: MutableSequence[float] = field(default_factory=lambda: array("d"))
    duplicates: int = 0
    late: int = 0
    expired: int = 0
    reordered: int | None = 0
    jitter: float = 0.0
    # One byte of state and one send time per message sent.
    _states: bytearray = field(default_factory=bytearray, init=False, repr=False)
    _sentAt: array[float] = field(default_factory=lambda: array("d"), init=False, repr=False)
    _highest: int = field(default=0, init=False, repr=False)
    _lastRtt: float | None = field(default=None, init=False, repr=False)

    @classmethod
    def unordered(cls) -> DatagramStats:
        """
        Statistics for messages told apart only by the order they were sent
        in: reordering cannot be seen.
        """
        return cls(reordered=None)

    def recordSent(self, at: float) -> int:
        """
        A datagram was sent at C{at}: its sequence number.
        """
        self._states.append(_PENDING)
        self._sentAt.append(at)
        self.sent += 1
        return self.sent

    def sentAt(self, seq: int) -> float:
        return self._sentAt[seq - 1]

    def isPending(self, seq: int) -> bool:
        return self._states[seq - 1] == _PENDING

    def isExpired(self, seq: int) -> bool:
        return self._states[seq - 1] == _EXPIRED

    @property
    def inFlight(self) -> int:
        """
        Messages still waiting for an answer, their deadline not passed.
        """
        return self.sent - self.received - self.expired

    @property
    def lost(self) -> int:
        return self.sent - self.received

    def recordReply(self, seq: int, at: float, matched: bool) -> Reply:
        """
        A reply to message C{seq} (1 to C{sent}) came at C{at};
        C{matched} says whether it is byte for byte what was sent.
        """
        if not matched:
            self.mismatched += 1
        rtt = at - self._sentAt[seq - 1]
        state = self._states[seq - 1]
        if state == _ANSWERED:
            self.duplicates += 1
            return Reply(ReplyKind.DUPLICATE, rtt, False)
        if state == _EXPIRED:
            self.late += 1
            return Reply(ReplyKind.LATE, rtt, False)
        self._states[seq - 1] = _ANSWERED
        self.received += 1
        self.rtts.append(rtt)
        if self._lastRtt is not None:
            self.jitter += (abs(rtt - self._lastRtt) - self.jitter) / 16
        self._lastRtt = rtt
        reordered = False
        if self.reordered is not None:
            if seq < self._highest:
                self.reordered += 1
                reordered = True
            else:
                self._highest = seq
        return Reply(ReplyKind.ANSWER, rtt, reordered)

    def recordStray(self) -> None:
        """
        A reply that names no message of ours.
        """
        self.mismatched += 1

    def expire(self, seq: int) -> bool:
        """
        Message C{seq} reached its deadline: lost, if still pending.
        """
        if self._states[seq - 1] != _PENDING:
            return False
        self._states[seq - 1] = _EXPIRED
        self.expired += 1
        return True

    def summary(self) -> dict[str, float] | None:
        """
        min, avg, max, p50, p99 and mdev (the population standard deviation,
        as ping's) of the round-trip times, in seconds; L{None} when no
        answer came.
        """
        result = super().summary()
        if result is None:
            return None
        mean = result["avg"]
        result["mdev"] = math.sqrt(math.fsum((r - mean) ** 2 for r in self.rtts) / len(self.rtts))
        return result

    @property
    def jitterOrNone(self) -> float | None:
        """
        The jitter, or L{None} before the first answer.
        """
        return self.jitter if self.rtts else None
