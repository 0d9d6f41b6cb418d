# -*- test-case-name: tests.unit.test_monitor_history -*-
"""
What the status page draws: for each target address, a ring of one-minute
buckets over the last hours, each summing the rounds that ended in it (their
median round-trip time, the lowest and highest, messages sent and answered).

The ring is allocated whole when the address is first seen, in flat arrays
of machine numbers: its size never changes, whatever the rate of rounds, so
10,000 targets cost a known amount of memory (README: "The monitor").
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass

__all__ = ["BUCKET_SECONDS", "HISTORY_BUCKETS", "Bucket", "History"]

BUCKET_SECONDS = 60
# Three hours of one-minute buckets.
HISTORY_BUCKETS = 180


@dataclass(frozen=True)
class Bucket:
    """
    The rounds of one minute: C{start} (seconds since the epoch), how many
    rounds there were and how many succeeded, messages sent and answered,
    and of the round-trip times the mean of the rounds' medians, the lowest
    and the highest (seconds; L{None} when nothing was answered).
    """

    start: float
    rounds: int
    succeeded: int
    sent: int
    received: int
    median: float | None
    low: float | None
    high: float | None

    @property
    def loss(self) -> float:
        return 1 - self.received / self.sent if self.sent else 0.0


class History:
    """
    The last L{HISTORY_BUCKETS} minutes of rounds of one address.
    """

    __slots__ = (
        "_answered",
        "_high",
        "_low",
        "_medians",
        "_minute",
        "_received",
        "_rounds",
        "_sent",
        "_succeeded",
    )

    def __init__(self) -> None:
        n = HISTORY_BUCKETS
        # The minute (since the epoch) each slot holds; 0: none yet.
        self._minute = array("I", bytes(4 * n))
        self._rounds = array("H", bytes(2 * n))
        self._succeeded = array("H", bytes(2 * n))
        self._answered = array("H", bytes(2 * n))
        self._sent = array("I", bytes(4 * n))
        self._received = array("I", bytes(4 * n))
        self._medians = array("f", bytes(4 * n))
        self._low = array("f", bytes(4 * n))
        self._high = array("f", bytes(4 * n))

    def add(
        self,
        at: float,
        sent: int,
        received: int,
        rtts: tuple[float, float, float] | None,
        succeeded: bool,
    ) -> None:
        """
        A round ended at C{at}: C{rtts} is its (median, lowest, highest)
        round-trip time, L{None} when nothing was answered.
        """
        minute = int(at // BUCKET_SECONDS)
        slot = minute % HISTORY_BUCKETS
        if self._minute[slot] != minute:
            self._minute[slot] = minute
            self._rounds[slot] = self._succeeded[slot] = self._answered[slot] = 0
            self._sent[slot] = self._received[slot] = 0
            self._medians[slot] = 0.0
            self._low[slot] = math.inf
            self._high[slot] = 0.0
        # Saturating counts: a 0.1 s interval is 600 rounds a minute.
        self._rounds[slot] = min(self._rounds[slot] + 1, 0xFFFF)
        self._succeeded[slot] = min(self._succeeded[slot] + int(succeeded), 0xFFFF)
        self._sent[slot] = min(self._sent[slot] + sent, 0xFFFFFFFF)
        self._received[slot] = min(self._received[slot] + received, 0xFFFFFFFF)
        if rtts is not None and self._answered[slot] < 0xFFFF:
            median, low, high = rtts
            self._answered[slot] += 1
            self._medians[slot] += median
            self._low[slot] = min(self._low[slot], low)
            self._high[slot] = max(self._high[slot], high)

    def buckets(self, now: float) -> list[Bucket | None]:
        """
        The last L{HISTORY_BUCKETS} minutes up to C{now}, oldest first;
        L{None} for a minute without rounds.
        """
        current = int(now // BUCKET_SECONDS)
        result: list[Bucket | None] = []
        for minute in range(current - HISTORY_BUCKETS + 1, current + 1):
            slot = minute % HISTORY_BUCKETS
            if minute <= 0 or self._minute[slot] != minute:
                result.append(None)
                continue
            answered = self._answered[slot]
            result.append(
                Bucket(
                    start=float(minute * BUCKET_SECONDS),
                    rounds=self._rounds[slot],
                    succeeded=self._succeeded[slot],
                    sent=self._sent[slot],
                    received=self._received[slot],
                    median=self._medians[slot] / answered if answered else None,
                    low=self._low[slot] if answered else None,
                    high=self._high[slot] if answered else None,
                )
            )
        return result
