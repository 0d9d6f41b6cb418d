# -*- test-case-name: tests.unit.test_interfaces -*-
"""
The seams between echod's root service and its children, declared: what a
child service can do for the root (reload, report readiness, be cut short at
a second SIGTERM) and what it can report to the metrics.

The root and the metrics find these abilities with C{providedBy}, never by
looking for attribute names.  This module imports nothing of echod's: any
part may declare that it provides one of them without pulling in another
part (the sniffer does not import the echo server to be counted).

It also names what each part asks of the reactor handed to it: the
intersections of Twisted's reactor interfaces below, and L{reactorProviding}
to check a reactor against one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

from twisted.application.service import IService
from twisted.internet.interfaces import (
    IReactorCore,
    IReactorFDSet,
    IReactorFromThreads,
    IReactorPluggableNameResolver,
    IReactorProcess,
    IReactorSocket,
    IReactorTCP,
    IReactorTime,
    IReactorUDP,
    IReactorUNIX,
)
from zope.interface import Interface, providedBy

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

    from echod.config import Config

__all__ = [
    "CaptureCounts",
    "ICaptureStatistics",
    "IClientCommandReactor",
    "IClientReactor",
    "IDatagramServerReactor",
    "IDatagramStatistics",
    "IDrainable",
    "IEchodReactor",
    "IListening",
    "IMonitorReactor",
    "IReconfigurable",
    "IRootReactor",
    "ISniffCommandReactor",
    "ISniffReactor",
    "IStopsLast",
    "IStreamServerReactor",
    "IStreamStatistics",
    "ISupervisorReactor",
    "IWorkerDatagramStatistics",
    "IWorkerReactor",
    "IWorkerStatistics",
    "IWorkersReactor",
    "reactorProviding",
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


class IWorkerDatagramStatistics(Interface):
    """
    A service whose worker processes serve UDP listeners, reporting each
    one's UDP totals.
    """

    def workerDatagramStats() -> dict[str, Any]:
        """
        Each running worker's last report (L{echod.server.stats.DatagramStats}),
        by worker name.
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


# --- what each part asks of the reactor ----------------------------------------
#
# Intersections of Twisted's reactor interfaces, for type checkers and for
# reactorProviding: no reactor class declares them, so the real reactor and
# the tests' fakes reach them through reactorProviding or an @implementer of
# their own.  Each names what its users call (or hand to Twisted); where a
# part uses one interface only, it names that one instead.


class IRootReactor(IReactorCore, IReactorTime, IReactorFromThreads):
    """
    The root service's (L{echod.app.EchodService}): it starts with the reactor
    and stops it, brings the signal handlers' work back into the reactor
    thread, and keeps the health timers.
    """


class IStreamServerReactor(IReactorCore, IReactorTime, IReactorTCP, IReactorUNIX, IReactorSocket):
    """
    A stream server's (the echo service, the metrics listener): listeners made
    from endpoint strings by C{strports} (L{IReactorCore}) for C{tcp:} and
    C{tcp6:} (L{IReactorTCP}), C{unix:} (L{IReactorUNIX}) and C{systemd:}
    (L{IReactorSocket}), and the connections' timers.  C{ssl:} also needs
    C{IReactorSSL}, there only with TLS installed: Twisted checks that one
    when the listener is made.
    """


class IDatagramServerReactor(IReactorTime, IReactorFDSet):
    """
    The UDP echo service's: its ports (sockets of its own, read as file
    descriptors in batches) and the timers of its rate limits and drop log.
    """


class ISupervisorReactor(IReactorTime, IReactorProcess):
    """
    The worker supervisor's: it spawns the workers and times their restarts
    and kills.
    """


class IWorkersReactor(IStreamServerReactor, ISupervisorReactor):
    """
    The main process's with worker processes: it opens the listeners the
    workers accept on, and supervises them.
    """


class IWorkerReactor(
    IReactorCore, IReactorTime, IReactorFromThreads, IReactorFDSet, IReactorSocket
):
    """
    A worker process's own: it adopts the listeners it was passed, reads the
    main process's lines from a pipe, and runs until it is told to stop (a
    signal, brought into the reactor thread).
    """


class ISniffReactor(IReactorCore, IReactorTime, IReactorFDSet):
    """
    The sniffer's: it reads the capture as a file descriptor, reports on a
    timer, and stops the reactor when a standalone capture ends.
    """


class ISniffCommandReactor(IRootReactor, ISniffReactor):
    """
    C{twistd echod-sniff}'s: the root and the sniffer, nothing of the server
    (the reactor on Windows lacks L{IReactorUNIX}, for one).
    """


class IClientReactor(IReactorTime, IReactorTCP, IReactorUDP, IReactorPluggableNameResolver):
    """
    A client run's: it resolves the host with the reactor's resolver and
    connects over TCP (C{HostnameEndpoint}, C{tcp6:}, C{tcp:}) or sends over
    UDP (a port of its own per address tried), on timers.  C{unix:} and
    C{tls:} endpoint strings ask Twisted for more when they are parsed.
    """


class IClientCommandReactor(IClientReactor, IReactorCore):
    """
    C{echod-client}'s, under C{react} or C{twistd}: a run that starts with
    the reactor and stops it when it is over.
    """


class IMonitorReactor(IRootReactor, IClientReactor, IStreamServerReactor):
    """
    C{twistd echod-monitor}'s: the root, the probes (a client's) and the
    listener of the status page and metrics.
    """


class IEchodReactor(IRootReactor, IWorkersReactor, IDatagramServerReactor, ISniffReactor):
    """
    C{twistd echod}'s: the root and whichever parts the configuration names.
    """


_R = TypeVar("_R")


def _joined(interface: type) -> Iterator[type]:
    """
    Twisted's interfaces that C{interface} stands for: itself, or the ones an
    intersection above joins.
    """
    if interface.__module__ != __name__:
        yield interface
        return
    for base in interface.__bases__:
        yield from _joined(base)


def reactorProviding(reactor: object, interface: type[_R]) -> _R:
    """
    C{reactor}, typed as C{interface}, once checked to provide every
    interface that C{interface} joins.

    No reactor declares echod's intersections, so C{interface(reactor)} would
    refuse every one; and Twisted types its global reactor as a make-believe
    mix of the common interfaces.  Checked here, the cast is true: a reactor
    chosen with C{twistd --reactor} that lacks something is refused at once,
    by name, not by an C{AttributeError} later.

    @raise TypeError: C{reactor} lacks one of them.
    """
    provided = providedBy(reactor)
    missing = sorted({i.__name__ for i in _joined(interface) if not provided.isOrExtends(i)})
    if missing:
        raise TypeError(f"the {type(reactor).__name__} reactor lacks {', '.join(missing)}")
    return cast(_R, reactor)
