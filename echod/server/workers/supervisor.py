# -*- test-case-name: tests.e2e.test_workers,tests.e2e.test_workers_udp -*-
"""
C{[server] workers = N}: the TCP echo service in N processes, supervised by
the twistd process.

The main process opens every stream listener itself (as root if it must,
before twistd drops privileges), never accepts on them, and starts N workers
that inherit them (descriptors 3, 4...) and adopt them with
C{adoptStreamPort}.  Each worker is an ordinary echod echo service (same
factory, limits, fast paths, drain); limits such as C{max_connections} apply
per worker.

How connections reach the workers:
  - C{tcp:}/C{tcp6:} listeners (behind C{haproxy:} too) are bound with
    C{SO_REUSEPORT} (Twisted's C{makeBinding}; the sockets are made in
    L{echod.server.workers.sockets}), and N more sockets on the
    same address, one per worker: the kernel spreads new connections evenly
    over the sockets by a hash of the peer's address and port.  The main
    process's own socket only holds the address, out of the group.  One
    socket shared by all would go to whichever worker wakes first: 100
    connections at once went 20/80 between two workers that way.  While a worker is down (dead,
    waiting to be restarted), the main process takes its sockets out of the
    group (C{shutdown(SHUT_RD)} on a listening socket; connections queued
    there and not yet accepted are reset, or moved to another socket where
    the C{net.ipv4.tcp_migrate_req} sysctl is 1), so that new connections
    go to the live workers instead of waiting; before restarting it, C{listen}
    puts them back (the address stays bound: no privilege is needed).
    C{SO_REUSEPORT} would let another process of the same user bind the port
    beside echod and take part of its connections: echod first checks that
    nothing listens there, and fails as a single process would.
  - Other listeners (C{unix:}, C{systemd:}) are one socket, shared: each
    connection goes to one of the workers waiting in C{accept}.

L{WorkerSupervisor} supervises, as Twisted's C{ProcessMonitor} would but on
the reactor's public C{spawnProcess}: a worker that dies is restarted (at
once if it had run a while, with a growing delay if it keeps dying).  It
passes the inherited sockets, waits for workers to finish draining on stop,
and keeps two channels.  Down, on a worker's standard input: the
configuration the main process runs, at start and at each reload (a worker
never reads the file, which its unprivileged user may not be allowed to).
Up, on its standard output: its log events as JSON lines (Twisted's
C{eventAsJSON}) and its totals every second, which the main process puts
into its own log (so one place has the log format, level and file) and its
totals.  Workers run as the user twistd switched to: echod refuses to start
if that user cannot run the Python and read the echod they need.

UDP listeners are served by the workers too, a socket per worker steered by
source address (see L{echod.server.workers.datagrams}).  C{ssl:} listeners
need their TLS context built in each worker and are refused with workers > 1.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import socket
import sys
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import (
    IDelayedCall,
    IListeningPort,
    IProcessTransport,
    IProtocolFactory,
)
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger, eventFromJSON
from twisted.python.failure import Failure
from zope.interface import implementer

from echod.config import Config
from echod.errors import ListenError, UserError
from echod.interfaces import (
    IDrainable,
    IListening,
    IReconfigurable,
    IStreamServerReactor,
    IStreamStatistics,
    ISupervisorReactor,
    IWorkersReactor,
    IWorkerStatistics,
)
from echod.server import fastpath
from echod.server.stats import DatagramStats, TCPTotals
from echod.server.workers.datagrams import DatagramReports, WorkerDatagramService
from echod.server.workers.sockets import (
    REUSE_PORT,
    ReusePortReactor,
    WorkerSockets,
    siblingSockets,
)
from echod.server.workers.wire import ABORT, EVENT, STATS, STOP, UDP_STATS, configLine

if TYPE_CHECKING:
    from echod.server.listeners import ListenerService

__all__ = ["WorkerSupervisor", "WorkersService"]


class WorkerProtocol(ProcessProtocol):
    """
    A worker's pipes: its standard output carries event and stats lines,
    decoded by the supervisor; anything else, there or on its standard error
    (a traceback before logging began), is logged as text.
    """

    def __init__(self, supervisor: WorkerSupervisor, name: str) -> None:
        self.supervisor = supervisor
        self.name = name
        self._buffers = {1: b"", 2: b""}

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        *lines, self._buffers[childFD] = (self._buffers.get(childFD, b"") + data).split(b"\n")
        for line in lines:
            self.supervisor.lineFromWorker(self.name, line)

    def processEnded(self, reason: Failure) -> None:
        self.supervisor.workerEnded(self.name, reason)


def howItEnded(reason: Failure) -> str:
    """
    How a worker process ended, for the log: C{exited with status 3},
    C{killed by signal 9 (SIGKILL)}.
    """
    value = reason.value
    signum = getattr(value, "signal", None)
    if signum is not None:
        try:
            name = signal.Signals(signum).name
        except ValueError:
            return f"killed by signal {signum}"
        return f"killed by signal {signum} ({name})"
    status = getattr(value, "exitCode", None)
    return f"exited with status {status}" if status is not None else f"ended: {value}"


class Pausable(Protocol):
    """
    A worker's listening sockets as its supervisor sees them: out of their
    groups while it is down, back before it restarts.
    """

    def pause(self) -> None: ...

    def resume(self) -> None: ...


@dataclass
class AllSockets:
    """
    A worker's stream sockets and its datagram ones, paused and resumed
    together.
    """

    parts: list[Pausable]

    def pause(self) -> None:
        for part in self.parts:
            part.pause()

    def resume(self) -> None:
        for part in self.parts:
            part.resume()


@dataclass(eq=False)
class _Worker:
    """
    One supervised worker: how to start it, and its state now.
    """

    name: str
    args: list[str]
    childFDs: dict[int, Any]
    sockets: Pausable
    delay: float
    process: IProcessTransport | None = None
    # Kept apart: a transport forgets its pid once the process is reaped.
    pid: int | None = None
    started: float = 0.0
    restarts: int = 0
    restartCall: IDelayedCall | None = None
    killCall: IDelayedCall | None = None
    exited: list[Deferred[None]] = field(default_factory=list)


class WorkerSupervisor(Service):
    """
    Runs the worker processes on their inherited listening sockets and
    restarts those that die, as Twisted's C{ProcessMonitor} would (at once if
    a worker ran for C{threshold} seconds, else after a delay that doubles
    each time, from C{minRestartDelay} to C{maxRestartDelay}), on the
    reactor's public C{spawnProcess}: C{ProcessMonitor} has no way to pass
    descriptors to a child.  While a worker is down its sockets are out of
    their groups.  Stopping asks each worker, on its standard input, to
    drain; one still running C{killTime} later is killed; the stop fires
    once every worker has exited.
    """

    log = Logger(namespace="echod.workers")
    threshold = 2.0
    minRestartDelay = 1.0
    maxRestartDelay = 3600.0

    def __init__(
        self,
        reactor: ISupervisorReactor,
        config: Config,
        datagrams: DatagramReports | None = None,
    ) -> None:
        self.reactor = reactor
        self.workers: dict[str, _Worker] = {}
        self.stats: dict[str, TCPTotals] = {}
        # What workers that have exited had counted: the totals stay monotonic.
        self.retired = TCPTotals()
        # Their UDP totals, where they serve UDP listeners.
        self.datagrams = datagrams if datagrams is not None else DatagramReports()
        self.configure(config)

    def addWorker(
        self,
        name: str,
        args: list[str],
        childFDs: dict[int, Any],
        sockets: Pausable,
    ) -> None:
        self.workers[name] = _Worker(name, args, childFDs, sockets, self.minRestartDelay)
        if self.running:
            self._start(self.workers[name])

    @property
    def restarts(self) -> dict[str, int]:
        """
        How many times each worker exited while echod was serving.
        """
        return {name: worker.restarts for name, worker in self.workers.items()}

    def startService(self) -> None:
        super().startService()
        for worker in self.workers.values():
            self._start(worker)

    def _start(self, worker: _Worker) -> None:
        worker.restartCall = None
        if worker.process is not None:
            return
        name = worker.name
        worker.started = self.reactor.seconds()
        self.log.info("starting {worker}", worker=name, event="worker.starting")
        worker.sockets.resume()
        try:
            worker.process = self.reactor.spawnProcess(
                WorkerProtocol(self, name),
                worker.args[0],
                worker.args,
                env=dict(os.environ),
                childFDs=worker.childFDs,
            )
        except OSError as e:
            worker.sockets.pause()
            hint = ""
            if e.errno in (errno.EACCES, errno.EPERM) and os.geteuid() != 0:
                hint = (
                    f" (workers run as uid {os.geteuid()}, the user echod switched to: install "
                    "echod and its Python where that user can read and run them)"
                )
            self.log.error(
                "cannot start {worker}: {program}: {reason}{hint}",
                worker=name,
                program=worker.args[0],
                reason=(e.strerror or str(e)).lower(),
                hint=hint,
                event="worker.failed",
            )
            self._scheduleRestart(worker)
            return
        worker.pid = worker.process.pid
        # Its configuration: the one running here, as it is now.
        worker.process.write(configLine(self.config))

    def _scheduleRestart(self, worker: _Worker) -> None:
        if not self.running:
            return
        if self.reactor.seconds() - worker.started < self.threshold:
            delay = worker.delay
            worker.delay = min(worker.delay * 2, self.maxRestartDelay)
        else:
            delay, worker.delay = 0.0, self.minRestartDelay
        worker.restartCall = self.reactor.callLater(delay, self._start, worker)

    def lineFromWorker(self, name: str, line: bytes) -> None:
        text = line.decode("utf-8", "replace")
        if text.startswith(EVENT):
            try:
                event = eventFromJSON(text[len(EVENT) :])
            except ValueError:
                pass
            else:
                event["worker"] = name
                # Text lines name the worker where they name the logger:
                # [worker-1 echod.server.stream.EchoProtocol#info].
                level = getattr(event.get("log_level"), "name", "info")
                event["log_system"] = f"{name} {event.get('log_namespace', '-')}#{level}"
                self.log.observer(event)
                return
        elif text.startswith(STATS):
            try:
                self.stats[name] = TCPTotals.fromJSON(json.loads(text[len(STATS) :]))
                return
            except (ValueError, KeyError, TypeError):
                pass
        elif text.startswith(UDP_STATS):
            try:
                stats = DatagramStats.fromJSON(json.loads(text[len(UDP_STATS) :]))
            except (ValueError, KeyError, TypeError):
                pass
            else:
                self.datagrams.report(name, stats)
                return
        if text.strip():
            self.log.warn("[{worker}] {line}", worker=name, line=text, event="worker.output")

    def workerEnded(self, name: str, reason: Failure) -> None:
        worker = self.workers[name]
        pid, worker.pid, worker.process = worker.pid, None, None
        if worker.killCall is not None and worker.killCall.active():
            worker.killCall.cancel()
        worker.killCall = None
        # Its connections died with it; new ones go to the other workers.
        worker.sockets.pause()
        last = self.stats.pop(name, None)
        if last is not None:
            self.retired.add(replace(last, open=0, limit=0))
        self.datagrams.retire(name)
        value = reason.value
        fields = {
            "worker": name,
            "pid": pid,
            "how": howItEnded(reason),
            "status": getattr(value, "exitCode", None),
            "signal": getattr(value, "signal", None),
            "event": "worker.exited",
        }
        if self.running:
            worker.restarts += 1
            self.log.warn("{worker} (pid {pid}) {how}; it will be restarted", **fields)
        elif fields["status"] == 0:
            self.log.info("{worker} (pid {pid}) {how}", **fields)
        else:
            self.log.warn("{worker} (pid {pid}) {how}", **fields)
        if last is not None and last.open:
            # Their close lines died with it: say at least how many.
            self.log.warn(
                "{worker} (pid {pid}) died with {count} connections open (as it last "
                "reported): the kernel closed them",
                worker=name,
                pid=pid,
                count=last.open,
                event="worker.connections_lost",
            )
        self._scheduleRestart(worker)
        waiters, worker.exited = worker.exited, []
        for waiter in waiters:
            waiter.callback(None)

    def configure(self, config: Config) -> None:
        """
        Send C{config} to every running worker (and to those started later);
        a worker not done draining after C{shutdown_timeout} + 5 s is killed.
        """
        self.config = config
        self.killTime = config.server.shutdown_timeout + 5
        self.sendAll(configLine(config))

    def sendAll(self, line: bytes) -> None:
        for worker in self.workers.values():
            if worker.process is not None:
                with contextlib.suppress(Exception):
                    worker.process.write(line)

    def stopService(self) -> Deferred[Any]:
        """
        Ask every worker to drain and exit, on its standard input rather than
        by SIGTERM: under systemd (KillMode=control-group) every worker has
        had one already, and a second would mean "stop at once".  Fires when
        all have exited; those still running after C{killTime} are killed.
        """
        super().stopService()
        waiting: list[Deferred[None]] = []
        for worker in self.workers.values():
            if worker.restartCall is not None and worker.restartCall.active():
                worker.restartCall.cancel()
            worker.restartCall = None
            if worker.process is None:
                continue
            d: Deferred[None] = Deferred()
            worker.exited.append(d)
            waiting.append(d)
            with contextlib.suppress(Exception):
                worker.process.write(STOP + b"\n")
            worker.killCall = self.reactor.callLater(self.killTime, _kill, worker.process)
        return DeferredList(waiting) if waiting else succeed(None)

    def totals(self) -> TCPTotals:
        """
        The workers' totals, as last reported (at most a second old), and
        those of the workers that have exited.
        """
        total = TCPTotals()
        total.add(self.retired)
        for stats in self.stats.values():
            total.add(stats)
        return total


def _kill(process: IProcessTransport) -> None:
    with contextlib.suppress(ProcessExitedAlready):
        process.signalProcess("KILL")


def _checkWorkersCanRun() -> None:
    """
    Raise L{UserError} unless this process's user can run the Python and
    read the echod that the workers need: otherwise every worker would fail
    to start, again and again, with echod apparently up.
    """
    import echod

    package = os.path.dirname(os.path.abspath(echod.__file__))
    for path, mode, what in (
        (sys.executable, os.X_OK, "run"),
        (os.path.join(package, "server", "workers", "child.py"), os.R_OK, "read"),
    ):
        if not os.access(path, mode):
            raise UserError(
                f"workers = N: the workers cannot start: uid {os.getuid()} (the user echod runs "
                f"as) cannot {what} {path}; install echod and its Python where that user can "
                "read them (such as /opt), or use workers = 1"
            )


@implementer(IReconfigurable, IListening, IDrainable, IStreamStatistics, IWorkerStatistics)
class WorkersService(MultiService):
    """
    The echo service of the main process when C{workers > 1}: its stream
    listeners (a child L{EchoService} whose ports never accept here), its
    UDP ones (a child L{WorkerDatagramService} that never reads them), and
    the L{WorkerSupervisor} running the workers on them.
    """

    log = Logger()

    def __init__(self, config: Config, reactor: IWorkersReactor) -> None:
        from echod.server.listeners import EchoService

        super().__init__()
        self.setName("tcp-echo-workers")
        self.config = config
        self.reactor = reactor
        # tcp: and tcp6: listeners (not systemd: ones) bind through this one.
        self._reusing = ReusePortReactor(reactor) if REUSE_PORT is not None else None
        self.listening = EchoService(config, reactor, listener=self._listener)
        self._siblings: list[socket.socket] = []
        self.listening.accepting = False
        self.listening.setServiceParent(self)
        self.datagramReports = DatagramReports()
        self.datagrams: WorkerDatagramService | None = None
        if config.udp.listen:
            self.datagrams = WorkerDatagramService(
                config.udp.listen, config.server.workers, self.datagramReports
            )
            self.datagrams.setServiceParent(self)
        self.monitor: WorkerSupervisor | None = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        failed: list[Failure] = []
        self.listening.whenListening().addCallback(self._listening).addErrback(failed.append)
        if failed:
            # Stream listeners listen synchronously: start-up stops here.
            failed[0].raiseException()

    def _listener(
        self,
        description: str,
        factory: IProtocolFactory,
        reactor: IStreamServerReactor,
        listen: str | None,
    ) -> ListenerService:
        from echod.server.listeners import ListenerService

        # ReusePortReactor passes on whatever the endpoint asks of the reactor.
        listening: IStreamServerReactor = self._reusing or reactor
        return ListenerService(description, factory, listening, listen)

    def _listening(self, ports: list[IListeningPort]) -> None:
        # Still privileged: TCP listeners are up as soon as
        # privilegedStartService returns, and their siblings are bound now.
        workers = self.config.server.workers
        childFDs: list[dict[int, Any]] = [{0: "w", 1: "r", 2: "r"} for _ in range(workers)]
        own: list[list[tuple[socket.socket, int]]] = [[] for _ in range(workers)]
        inherited: list[str] = []
        for index, (listener, port) in enumerate(
            zip(self.listening.listeners, ports, strict=True), start=3
        ):
            # The main process only holds the sockets; the workers accept.
            stream: Any = port  # Twisted's tcp.Port or unix.Port: a FileDescriptor
            stream.stopReading()
            inherited.append(f"{index}:{int(stream.addressFamily)}:{listener.description}")
            if stream.addressFamily == socket.AF_UNIX and (why := fastpath.unsupportedReason()):
                # Workers adopt a shared unix socket through Twisted's private
                # parts (echod.server.fastpath.adoptStreamPort); its stock
                # adoption would chmod the path to 0666 and unlink it.
                raise ListenError(
                    f"workers = N cannot share {listener.description} here ({why}): "
                    "use workers = 1 for unix: listeners"
                )
            if self._reusing is not None and port in self._reusing.ports:
                try:
                    siblings = siblingSockets(stream.socket, workers, stream.backlog)
                except OSError as e:
                    raise ListenError(
                        f"cannot open the workers' sockets for {listener.description}: "
                        f"{(e.strerror or str(e)).lower()}",
                        errno=e.errno,
                    ) from None
                # The port's own socket only keeps the address bound, out of
                # the group: Twisted shuts a socket down when it stops
                # listening on it, which must not reach a worker's.
                stream.socket.shutdown(socket.SHUT_RD)
                self._siblings += siblings
                for worker, sock in enumerate(siblings):
                    childFDs[worker][index] = sock.fileno()
                    own[worker].append((sock, stream.backlog))
            else:
                for fds in childFDs:
                    fds[index] = stream.fileno()
        monitor = WorkerSupervisor(self.reactor, self.config, self.datagramReports)
        args = [sys.executable, "-m", "echod.server.workers.child"]
        for description in inherited:
            args += ["--listener", description]
        if self.datagrams is not None:
            # Each worker's socket of each UDP listener, at the same numbers.
            first = 3 + len(inherited)
            for worker in range(workers):
                for index, (fd, _) in enumerate(self.datagrams.childFDs(worker), start=first):
                    childFDs[worker][index] = fd
            for index, (_, description) in enumerate(self.datagrams.childFDs(0), start=first):
                args += ["--datagram", f"{index}:{description}"]
            args += ["--workers", str(workers)]
        for worker in range(workers):
            name = f"worker-{worker + 1}"
            sockets: list[Pausable] = [WorkerSockets(own[worker])]
            if self.datagrams is not None:
                sockets.append(self.datagrams.share(worker))
            monitor.addWorker(name, [*args, "--name", name], childFDs[worker], AllSockets(sockets))
        monitor.setServiceParent(self)
        self.monitor = monitor

    def stopService(self) -> Deferred[Any]:
        d: Deferred[Any] = super().stopService() or succeed(None)
        # The main process's listeners are closed now, and its copies of the
        # workers' sockets go too (each worker closes its own as it stops).
        for sibling in self._siblings:
            sibling.close()
        self._siblings = []
        return d

    def startService(self) -> None:
        # After twistd has switched to --uid: the workers will run as this user.
        # A UserError stops twistd; echod's report of it prints and logs it.
        _checkWorkersCanRun()
        super().startService()

    def whenListening(self) -> Deferred[list[Any]]:
        """
        Fires with the stream ports, then the UDP groups (each has the
        C{getHost} of a port), once all listen.
        """
        d: Deferred[list[Any]] = self.listening.whenListening()
        datagrams = self.datagrams
        if datagrams is not None:
            d.addCallback(lambda ports: [*ports, *datagrams.groups])
        return d

    def tcpTotals(self) -> TCPTotals | None:
        if not self.listening.listeners:
            return None  # UDP listeners only: no TCP families in the metrics
        return self.monitor.totals() if self.monitor is not None else TCPTotals()

    def workerRunning(self) -> bool:
        """
        Whether at least one worker runs and has reported (each reports at
        once, then every second; a worker that exits is forgotten).
        """
        return self.monitor is not None and bool(self.monitor.stats)

    def workerTotals(self) -> dict[str, tuple[TCPTotals, int]]:
        """
        Each worker's last report and how many times it was restarted: how
        evenly the connections are spread, and which worker keeps dying.
        """
        if self.monitor is None:
            return {}
        monitor = self.monitor
        return {
            name: (monitor.stats.get(name, TCPTotals()), restarts)
            for name, restarts in sorted(monitor.restarts.items())
        }

    def reconfigure(self, config: Config) -> None:
        self.config = config
        self.listening.reconfigure(config)
        if self.monitor is not None:
            self.monitor.configure(config)

    def abortAll(self) -> None:
        if self.monitor is not None:
            self.monitor.sendAll(ABORT + b"\n")
