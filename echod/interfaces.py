# -*- test-case-name: tests.unit.test_interfaces -*-
"""
The seams between echod's root service and its children, declared: what a
child service can do for the root (reload, report readiness, be cut short at
a second SIGTERM) and what it can report to the metrics.

The root and the metrics find these abilities with C{providedBy}, never by
looking for attribute names.  This module imports nothing of echod's: any
part may declare that it provides one of them without pulling in another
part (the sniffer does not import the echo server to be counted).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from twisted.application.service import IService
from zope.interface import Interface

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

    from echod.config import Config

__all__ = [
    "CaptureCounts",
    "ICaptureStatistics",
    "IDatagramStatistics",
    "IDrainable",
    "IListening",
    "IReconfigurable",
    "IStopsLast",
    "IStreamStatistics",
    "IWorkerStatistics",
]


class IReconfigurable(Interface):
    """
    A service that applies a new configuration while running (SIGHUP).
    """

    def reconfigure(config: Config) -> None:
        """
        Apply what can change without a restart; open connections stay.
        """


class IListening(Interface):
    """
    A service with listeners: the root waits for them before it says it is
    ready (sd_notify C{READY=1}, C{/healthz} 200).
    """

    def whenListening() -> Deferred[Any]:
        """
        Fires with the listening port, or a list of them, once all listen;
        fails if one cannot.
        """


class IStopsLast(IService):
    """
    A service the root stops only once every other child has stopped: the
    metrics listener, so that C{/healthz} answers 503 and C{/metrics} keeps
    answering while connections drain.
    """


class IDrainable(Interface):
    """
    A service whose open connections drain when it stops, and can be cut
    short (a second SIGTERM).
    """

    def abortAll() -> None:
        """
        Abort every open connection now.
        """


class IStreamStatistics(Interface):
    """
    A service that reports TCP totals (an echo service, or the workers').
    """

    def tcpTotals() -> Any:
        """
        The totals to report (an L{echod.server.stats.TCPTotals}), or L{None} when
        another service reports for the same connections.
        """


class IWorkerStatistics(Interface):
    """
    A service that runs worker processes and reports each one's totals.
    """

    def workerTotals() -> dict[str, tuple[Any, int]]:
        """
        Each worker's last report (L{echod.server.stats.TCPTotals}) and how many
        times it was restarted, by worker name.
        """


class IDatagramStatistics(Interface):
    """
    A service that reports UDP totals.
    """

    def datagramStats() -> Any:
        """
        Its L{echod.server.stats.DatagramStats}, shared by all its ports.
        """


class CaptureCounts(Protocol):
    """
    Counters of one packet capture since it opened (the sniffer's
    C{ReaderStatistics} has this shape).
    """

    @property
    def seen(self) -> int:
        """Packets the capture filter accepted, including those then dropped."""

    @property
    def passed(self) -> int:
        """Packets written to the output."""

    @property
    def notWritten(self) -> int:
        """Packets lost because a write of the output failed (not in C{passed})."""

    @property
    def dropped(self) -> int | None:
        """Packets the kernel dropped (buffer full); L{None}: not counted here."""


class ICaptureStatistics(Interface):
    """
    A service running a packet capture whose counters the metrics report.
    """

    def statistics() -> CaptureCounts:
        """
        Cumulative counters: cheap, and safe to call at any time from the
        reactor thread.
        """
