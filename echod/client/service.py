# -*- test-case-name: tests.unit.test_client -*-
"""
C{twistd echod-client}: the client run as a service, which ends the process
with the run's exit status.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
from typing import IO, Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IHostnameResolver
from twisted.logger import ILogObserver, Logger

from echod.client.errors import ExitStatus
from echod.client.plan import Plan
from echod.client.run import Run, runClient
from echod.interfaces import IClientCommandReactor
from echod.logs import offerToTwistd

__all__ = ["EchoClientService"]


class EchoClientService(Service):
    """
    C{twistd echod-client}: one run, started when the reactor runs; then the
    reactor is stopped and the process exits with the run's status.

    Not L{twisted.application.internet.ClientService}: that one reconnects
    until stopped, and a check must fail at the first refusal.  twistd itself
    exits 0 whenever the reactor stops by itself, so the status is kept and an
    C{atexit} hook ends the process with it, after twistd has cleaned up
    (pidfile, logs) and the output is flushed.
    """

    log = Logger()

    def __init__(
        self,
        plan: Plan,
        reactor: IClientCommandReactor,
        out: IO[str],
        err: IO[str],
        logObserver: ILogObserver | None = None,
        exitProcess: bool = False,
        resolver: IHostnameResolver | None = None,
    ) -> None:
        self.plan = plan
        self.reactor = reactor
        self.out = out
        self.err = err
        self.logObserver = logObserver
        self.exitProcess = exitProcess
        self.resolver = resolver
        self.status: ExitStatus | None = None
        self.client: Run | None = None
        self.result: Deferred[ExitStatus] = Deferred()

    def setServiceParent(self, parent: Any) -> None:
        offerToTwistd(parent, self.logObserver)
        super().setServiceParent(parent)

    def startService(self) -> None:
        super().startService()
        if self.exitProcess:
            atexit.register(self._exitWithStatus)
        self.reactor.callWhenRunning(self._start)

    def _start(self) -> None:
        if not self.running:
            return
        self.client, status = runClient(self.reactor, self.plan, self.out, self.err, self.resolver)
        status.addCallback(self._finished)

    def _finished(self, status: ExitStatus) -> None:
        self.status = status
        summary = self.client.summary if self.client is not None else None
        self.log.info(
            "echo run against {target} finished: {outcome} (exit status {status})",
            event="client.finished",
            target=self.plan.target,
            outcome=str(summary.error) if summary and summary.error else status.name.lower(),
            status=int(status),
            summary=summary.asJSON() if summary is not None else None,
        )
        self.result.callback(status)
        if self.exitProcess and self.running:
            self.reactor.stop()

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        if self.client is not None and self.status is None:
            self.client.interrupt()
            return self.result
        return succeed(None)

    def _exitWithStatus(self) -> None:
        if not self.status:
            return
        for stream in (self.out, self.err, sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(int(self.status))
