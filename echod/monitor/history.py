# -*- test-case-name: tests.unit.test_monitor_history -*-
"""
What the status page draws: for each target address, two rings of buckets
summing the rounds that ended in them (their median round-trip time, the
lowest and the highest, messages sent and answered): the last 3 hours a
minute a bucket, and the last 24 hours ten minutes a bucket (L{VIEWS}).

Each ring is allocated whole when the address is first seen, in flat arrays
of machine numbers: its size never changes, whatever the rate of rounds, so
10,000 targets cost a known amount of memory (README: "The monitor").
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass

__all__ = ["VIEWS", "Bucket", "History", "Ring"]

# The views of the page: name -> (seconds a bucket, buckets).
VIEWS = {"3h": (60, 180), "24h": (600, 144)}
_VIEW_NAMES = list(VIEWS)


@dataclass(frozen=True)
class Bucket:
    """
    The rounds of one bucket: C{start} (seconds since the epoch), how many
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


class Ring:
    """
    The last C{count} buckets of C{seconds} each.
    """

    __slots__ = (
        "_answered",
        "_high",
        "_index",
        "_low",
        "_medians",
        "_received",
        "_rounds",
        "_sent",
        "_succeeded",
        "count",
        "seconds",
    )

    def __init__(self, seconds: int, count: int) -> None:
        self.seconds, self.count = seconds, count
        # The bucket (since the epoch) each slot holds; 0: none yet.
        self._index = array("I", bytes(4 * count))
        self._rounds = array("H", bytes(2 * count))
        self._succeeded = array("H", bytes(2 * count))
        self._answered = array("H", bytes(2 * count))
        self._sent = array("I", bytes(4 * count))
        self._received = array("I", bytes(4 * count))
        self._medians = array("f", bytes(4 * count))
        self._low = array("f", bytes(4 * count))
        self._high = array("f", bytes(4 * count))

    def add(
        self,
        at: float,
        sent: int,
        received: int,
        rtts: tuple[float, float, float] | None,
        succeeded: bool,
    ) -> None:
        index = int(at // self.seconds)
        slot = index % self.count
        if self._index[slot] != index:
            self._index[slot] = index
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
        The last C{count} buckets up to C{now}, oldest first; L{None} for
        a bucket without rounds.
        """
        current = int(now // self.seconds)
        result: list[Bucket | None] = []
        for index in range(current - self.count + 1, current + 1):
            slot = index % self.count
            if index <= 0 or self._index[slot] != index:
                result.append(None)
                continue
            answered = self._answered[slot]
            result.append(
                Bucket(
                    start=float(index * self.seconds),
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


class History:
    """
    The rounds of one address, in a ring per view of L{VIEWS}.
    """

    __slots__ = ("rings",)

    def __init__(self) -> None:
        # In the order of VIEWS (a tuple: a dict per address would cost more).
        self.rings = tuple(Ring(seconds, count) for seconds, count in VIEWS.values())

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
        for ring in self.rings:
            ring.add(at, sent, received, rtts, succeeded)

    def buckets(self, now: float, view: str = "3h") -> list[Bucket | None]:
        """
        The buckets of C{view} up to C{now}, oldest first.
        """
        return self.rings[_VIEW_NAMES.index(view)].buckets(now)
