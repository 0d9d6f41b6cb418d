# -*- test-case-name: tests.unit.test_echo -*-
"""
What the echo services count: totals kept per connection event or per
datagram, never per byte written, and read by the metrics, the workers'
reports and the shutdown summary.  Plain data, importable without the
services themselves.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DatagramStats", "EchoStats", "TCPTotals"]


@dataclass
class TCPTotals:
    """
    TCP totals of one echo factory, or of several added up (the worker
    processes of C{workers = N}): what the metrics report.
    """

    opened: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    evicted: int = 0
    sent: int = 0
    discarded: int = 0
    open: int = 0
    limit: int = 0

    def add(self, other: TCPTotals) -> None:
        self.opened += other.opened
        self.refused.update(other.refused)
        self.evicted += other.evicted
        self.sent += other.sent
        self.discarded += other.discarded
        self.open += other.open
        self.limit += other.limit

    def asJSON(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "refused": dict(self.refused)}

    @classmethod
    def fromJSON(cls, values: dict[str, Any]) -> TCPTotals:
        return cls(**{**values, "refused": Counter(values["refused"])})


@dataclass
class EchoStats:
    """
    Totals kept per connection event, never per message: what the metrics
    and the shutdown summary report.  Bytes of open connections are added at
    read time from the protocols themselves.
    """

    opened: int = 0
    closed: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    # Idle connections aborted to make room for a newcomer.
    evicted: int = 0
    bytesClosed: int = 0
    # Read and not echoed (discarded while closing at shutdown), by closed
    # connections: with bytesClosed, all that closed connections received.
    bytesDiscarded: int = 0


@dataclass
class DatagramStats:
    """
    UDP totals, shared by every UDP listener: what the metrics report (of
    one process, or added up: the worker processes of C{workers = N}).
    """

    received: int = 0
    echoed: int = 0
    bytesEchoed: int = 0
    dropped: Counter[str] = field(default_factory=Counter)

    def add(self, other: DatagramStats) -> None:
        self.received += other.received
        self.echoed += other.echoed
        self.bytesEchoed += other.bytesEchoed
        self.dropped.update(other.dropped)

    def asJSON(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "dropped": dict(self.dropped)}

    @classmethod
    def fromJSON(cls, values: dict[str, Any]) -> DatagramStats:
        return cls(**{**values, "dropped": Counter(values["dropped"])})
