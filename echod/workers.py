# -*- test-case-name: tests.e2e.test_workers -*-
"""
C{[server] workers = N}: the TCP echo service in N processes sharing the same
listening sockets, supervised by the twistd process.

The main process opens every stream listener itself (as root if it must,
before twistd drops privileges), never accepts on them, and starts N workers
that inherit the sockets (descriptors 3, 4...) and adopt them with
C{adoptStreamPort}: the kernel hands each new connection to one of the
processes waiting in C{accept}.  Each worker is an ordinary echod echo
service (same factory, limits, fast paths, drain); limits such as
C{max_connections} apply per worker.

Twisted's L{ProcessMonitor} supervises: a worker that dies is restarted
(at once if it had run a while, with a growing delay if it keeps dying).
echod adds to it the inherited sockets, waiting for workers to finish
draining on stop, and a channel back: a worker writes its log events as
JSON lines (Twisted's C{eventAsJSON}) and its totals every second, and the
main process puts them into its own log (so one place has the log format,
level and file) and its totals.

UDP listeners stay in the main process.  C{ssl:} listeners need their TLS
context built in each worker and are refused with workers > 1.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger, eventFromJSON
from twisted.python.failure import Failure
from twisted.runner.procmon import LoggingProtocol, ProcessMonitor

from echod.config import Config
from echod.echo import TCPTotals
from echod.worker import EVENT, STATS

__all__ = ["WorkerMonitor", "WorkersService"]


class WorkerProtocol(LoggingProtocol):
    """
    A worker's pipes: event and stats lines are decoded, anything else
    (a traceback before logging began) is logged as text.
    """

    service: WorkerMonitor

    def outReceived(self, data: bytes) -> None:
        self._buffer = getattr(self, "_buffer", b"") + data
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            self.service.lineFromWorker(self.name, line)

    def processEnded(self, reason: Failure) -> None:
        super().processEnded(reason)
        self.service.workerEnded(self.name)


class WorkerMonitor(ProcessMonitor):
    """
    L{ProcessMonitor} with inherited listening sockets and a stop that waits
    for the workers to have drained and exited.
    """

    log = Logger(namespace="echod.workers")

    def __init__(self, reactor: Any, childFDs: dict[int, Any], killTime: float) -> None:
        super().__init__(reactor)
        self.childFDs = childFDs
        self.killTime = killTime  # type: ignore[assignment]
        self.stats: dict[str, TCPTotals] = {}
        self._exited: dict[str, list[Deferred[None]]] = {}

    def startProcess(self, name: str) -> None:
        # ProcessMonitor.startProcess, plus childFDs and WorkerProtocol.
        if name in self.protocols:
            return
        process = self._processes[name]
        proto = WorkerProtocol()
        proto.service = self
        proto.name = name
        self.protocols[name] = proto
        self.timeStarted[name] = self._clock.seconds()
        self.log.info("starting {worker}", worker=name, event="worker.starting")
        try:
            self._reactor.spawnProcess(
                proto,
                process.args[0],
                process.args,
                env=process.env,
                path=process.cwd,
                childFDs=self.childFDs,
            )
        except OSError:
            self._monitoredProcessExited(name, Failure())

    def lineFromWorker(self, name: str, line: bytes) -> None:
        text = line.decode("utf-8", "replace")
        if text.startswith(EVENT):
            try:
                event = eventFromJSON(text[len(EVENT) :])
            except ValueError:
                pass
            else:
                event["worker"] = name
                self.log.observer(event)
                return
        elif text.startswith(STATS):
            try:
                self.stats[name] = TCPTotals.fromJSON(json.loads(text[len(STATS) :]))
                return
            except (ValueError, KeyError, TypeError):
                pass
        if text.strip():
            self.log.warn("[{worker}] {line}", worker=name, line=text, event="worker.output")

    def workerEnded(self, name: str) -> None:
        if self.running:
            self.log.warn(
                "{worker} exited; it will be restarted", worker=name, event="worker.exited"
            )
        for waiter in self._exited.pop(name, []):
            waiter.callback(None)

    def signalAll(self, signame: str) -> None:
        for proto in list(self.protocols.values()):
            if proto.transport is not None:
                with contextlib.suppress(Exception):
                    proto.transport.signalProcess(signame)

    def stopService(self) -> Deferred[Any]:  # type: ignore[override]
        waiting = []
        for name in self.protocols:
            d: Deferred[None] = Deferred()
            self._exited.setdefault(name, []).append(d)
            waiting.append(d)
        super().stopService()
        return DeferredList(waiting) if waiting else succeed(None)

    def totals(self) -> TCPTotals:
        """
        The workers' totals, as last reported (at most a second old).  A
        restarted worker starts again from zero.
        """
        total = TCPTotals()
        for stats in self.stats.values():
            total.add(stats)
        return total


class WorkersService(MultiService):
    """
    The stream echo service of the main process when C{workers > 1}: its
    listeners (a child L{EchoService} whose ports never accept here) and the
    L{WorkerMonitor} running the workers on them.
    """

    log = Logger()

    def __init__(self, config: Config, reactor: Any) -> None:
        from echod.service import EchoService

        super().__init__()
        self.setName("tcp-echo-workers")
        self.config = config
        self.reactor = reactor
        self.listening = EchoService(config, reactor)
        self.listening.accepting = False
        self.listening.setServiceParent(self)
        self.monitor: WorkerMonitor | None = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self.listening.whenListening().addCallback(self._listening)

    def _listening(self, ports: list[IListeningPort]) -> None:
        childFDs: dict[int, Any] = {0: "w", 1: "r", 2: "r"}
        inherited: list[str] = []
        for index, (listener, port) in enumerate(
            zip(self.listening.listeners, ports, strict=True), start=3
        ):
            # The main process only holds the socket; the workers accept.
            stream: Any = port  # Twisted's tcp.Port or unix.Port: a FileDescriptor
            stream.stopReading()
            childFDs[index] = stream.fileno()
            inherited.append(f"{index}:{int(stream.addressFamily)}:{listener.description}")
        server = self.config.server
        monitor = WorkerMonitor(self.reactor, childFDs, server.shutdown_timeout + 5)
        monitor.threshold = 2
        args = [sys.executable, "-m", "echod.worker", "--config", self.config.source or ""]
        for description in inherited:
            args += ["--listener", description]
        for index in range(1, server.workers + 1):
            monitor.addProcess(
                f"worker-{index}", [*args, "--name", f"worker-{index}"], env=dict(os.environ)
            )
        monitor.setServiceParent(self)
        self.monitor = monitor

    def whenListening(self) -> Deferred[list[IListeningPort]]:
        return self.listening.whenListening()

    def tcpTotals(self) -> TCPTotals | None:
        return self.monitor.totals() if self.monitor is not None else TCPTotals()

    def reconfigure(self, config: Config) -> None:
        self.listening.reconfigure(config)
        if self.monitor is not None:
            self.monitor.signalAll("HUP")

    def abortAll(self) -> None:
        if self.monitor is not None:
            self.monitor.signalAll("TERM")
