# -*- test-case-name: tests.unit.test_health -*-
"""
Whether echod is serving, for the two parties that ask: systemd (sd_notify
C{READY=1} once every listener is up, C{STOPPING=1} as soon as shutdown
begins, C{WATCHDOG=1} while the reactor keeps turning) and load balancers
(C{/healthz} on the metrics listener, see L{echod.metrics}).

One L{Health} per service tree, owned by its root; nothing here is global.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from echod import systemd

__all__ = ["Health", "watchdogInterval"]


def watchdogInterval(environ: Mapping[str, str], pid: int) -> float | None:
    """
    How often to send C{WATCHDOG=1}: half of C{WATCHDOG_USEC}, as
    sd_watchdog_enabled(3) advises; L{None} when systemd watches nothing, or
    watches another process (C{WATCHDOG_PID}).
    """
    usec = environ.get("WATCHDOG_USEC", "")
    watched = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if watched and watched != str(pid):
        return None
    return int(usec) / 2_000_000


class Health:
    """
    The serving state of one echod process: C{starting} until every listener
    is up, C{serving}, then C{stopping} from the moment shutdown begins
    (connections may still be draining).

    @param notify: sends one sd_notify message (L{echod.systemd.notify}).
    @param environ: where C{NOTIFY_SOCKET} and C{WATCHDOG_*} are read;
        L{None}: the process environment.
    """

    STARTING = "starting"
    SERVING = "serving"
    STOPPING = "stopping"

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        environ: Mapping[str, str] | None = None,
        notify: Callable[[str, Mapping[str, str] | None], bool] = systemd.notify,
        pid: int | None = None,
    ) -> None:
        self.clock = clock
        self.state = self.STARTING
        self._environ = environ
        self._notify = notify
        self._pid = pid
        self._watchdog: LoopingCall | None = None
        self._requirements: list[tuple[str, Callable[[], bool]]] = []

    def require(self, missing: str, check: Callable[[], bool]) -> None:
        """
        While serving, also require C{check()}: when it is false, echod is not
        serving, and C{missing} says why (the worker processes of C{workers =
        N}, say, all down at once).
        """
        self._requirements.append((missing, check))

    def missing(self) -> list[str]:
        return [missing for missing, check in self._requirements if not check()]

    @property
    def serving(self) -> bool:
        return self.state == self.SERVING and not self.missing()

    @property
    def status(self) -> str:
        """
        C{serving}, C{starting}, C{stopping}, or what is missing while the
        listeners are up.
        """
        if self.state == self.SERVING:
            missing = self.missing()
            if missing:
                return "degraded: " + ", ".join(missing)
        return self.state

    def started(self, listening: Deferred[list[str]]) -> None:
        """
        The service tree has started; C{listening} fires with the address of
        every listener once all are up.  Only then is systemd told C{READY=1}.
        """
        self._startWatchdog()
        listening.addCallbacks(self._listening, self._notListening)

    def _listening(self, addresses: list[str]) -> None:
        if self.state != self.STARTING:
            return
        self.state = self.SERVING
        self._send("READY=1", f"STATUS=serving on {', '.join(addresses) or 'nothing'}")

    def _notListening(self, reason: Failure) -> None:
        self.log.failure(
            "a listener failed to start: not telling systemd READY=1",
            reason,
            event="health.not_ready",
        )
        self._send(f"STATUS=a listener failed to start: {reason.getErrorMessage()}")

    def stopping(self) -> None:
        """
        Shutdown has begun: unhealthy from now on, while connections drain.
        """
        if self.state == self.STOPPING:
            return
        self.state = self.STOPPING
        self._send("STOPPING=1", "STATUS=shutting down: draining connections")

    def stopped(self) -> None:
        """
        Every service has stopped: no more watchdog pings.
        """
        if self._watchdog is not None and self._watchdog.running:
            self._watchdog.stop()
        self._watchdog = None

    def _startWatchdog(self) -> None:
        environ = os.environ if self._environ is None else self._environ
        interval = watchdogInterval(environ, os.getpid() if self._pid is None else self._pid)
        if interval is None or self._watchdog is not None:
            return
        self.log.info(
            "systemd watchdog: WATCHDOG=1 every {interval:g}s",
            event="health.watchdog",
            interval=interval,
        )
        loop = self._watchdog = LoopingCall(self._send, "WATCHDOG=1")
        loop.clock = self.clock
        loop.start(interval, now=True)

    def _send(self, *assignments: str) -> None:
        self._notify("\n".join(assignments), self._environ)
