# -*- test-case-name: tests.unit.test_client -*-
"""
Round-trip-time statistics of the ping and one-shot modes: messages sent,
replies received and mismatched, loss, and min/avg/max/p50/p99.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["RTTStats"]


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
