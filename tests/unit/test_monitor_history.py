"""
The history of an address: a ring of one-minute buckets over the last 3
hours and one of ten-minute buckets over the last 24, each of a size fixed
when the address is first seen, whatever the rate of rounds.
"""

from __future__ import annotations

import sys

import pytest

from echod.monitor.history import VIEWS, History, Ring

START = 1_800_000_000.0


def size(history: History) -> int:
    rings = history.rings
    return sys.getsizeof(rings) + sum(
        sys.getsizeof(getattr(ring, name)) for ring in rings for name in Ring.__slots__
    )


def test_roundsOfABucketAggregated() -> None:
    """
    The rounds that end in one bucket make one: their count, their
    successes, messages sent and answered, the mean of their medians, the
    lowest and the highest round-trip time.
    """
    history = History()
    base = START - START % 600
    history.add(base + 1, 5, 5, (0.002, 0.001, 0.004), True)
    history.add(base + 11, 5, 3, (0.004, 0.003, 0.009), True)
    history.add(base + 21, 5, 0, None, False)
    for view in VIEWS:
        bucket = history.buckets(base + 30, view)[-1]
        assert bucket is not None
        assert (bucket.rounds, bucket.succeeded, bucket.sent, bucket.received) == (3, 2, 15, 8)
        assert bucket.median == pytest.approx(0.003)
        assert bucket.low == pytest.approx(0.001)
        assert bucket.high == pytest.approx(0.009)
        assert bucket.loss == pytest.approx(7 / 15)
        assert bucket.start == base
    history.add(base + 61, 5, 5, (0.001, 0.001, 0.001), True)
    minute = history.buckets(base + 61, "3h")
    assert [b.rounds if b else 0 for b in minute[-2:]] == [3, 1]
    tenMinutes = history.buckets(base + 61, "24h")[-1]
    assert tenMinutes is not None and tenMinutes.rounds == 4


def test_viewsCoverTheirHours() -> None:
    """
    3 hours of minutes, 24 hours of ten minutes, oldest first.
    """
    history = History()
    assert len(history.buckets(START, "3h")) == 180
    assert len(history.buckets(START, "24h")) == 144


def test_onlyTheLastHoursKept() -> None:
    """
    A bucket older than its ring is gone; buckets without rounds are
    L{None}.
    """
    history = History()
    history.add(START, 1, 1, (0.001, 0.001, 0.001), True)
    later = START + 5 * 60
    history.add(later, 1, 1, (0.002, 0.002, 0.002), True)
    buckets = history.buckets(later)
    assert [b is not None for b in buckets[-6:]] == [True, False, False, False, False, True]
    end = START + 180 * 60
    history.add(end, 1, 0, None, False)
    buckets = history.buckets(end)
    assert sum(b is not None for b in buckets) == 2
    assert buckets[-1] is not None and buckets[-1].received == 0
    day = history.buckets(end, "24h")
    assert sum(b is not None for b in day) >= 2
    assert history.buckets(START + 86400 * 2, "24h") == [None] * 144


def test_memoryFixed() -> None:
    """
    A day of rounds every 0.1 s costs no more memory than one round, and
    counts saturate instead of wrapping.
    """
    history = History()
    history.add(START, 5, 5, (0.001, 0.001, 0.001), True)
    before = size(history)
    for i in range(0, 86400 * 10, 7):
        history.add(START + i / 10, 1000, 1000, (0.001, 0.001, 0.002), True)
    assert size(history) == before
    assert before < 13_000
    newest = history.buckets(START + 86399)[-1]
    assert newest is not None and newest.rounds > 0
    for _ in range(70_000):
        history.add(START + 86399, 70_000, 0, None, False)
    saturated = history.buckets(START + 86399)[-1]
    assert saturated is not None
    assert (saturated.rounds, saturated.sent) == (0xFFFF, 0xFFFFFFFF)
