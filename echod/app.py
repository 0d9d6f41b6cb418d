# -*- test-case-name: tests.unit.test_service -*-
"""
The root of every echod service tree, and how a validated L{Config} becomes
one: the root owns the signals (SIGTERM drains, SIGHUP reloads), readiness
and health, and talks to its children only through L{echod.interfaces}.

C{makeService} only assembles objects; sockets are opened when twistd starts
the services (C{privilegedStartService}, before it drops privileges), and
closed in order when it stops them: listeners first, then open connections
drain.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, gatherResults, maybeDeferred
from twisted.logger import Logger

from echod.addresses import describePeer
from echod.config import (
    Config,
)
from echod.errors import UserError
from echod.health import Health
from echod.interfaces import (
    IDrainable,
    IEchodReactor,
    IListening,
    IReconfigurable,
    IRootReactor,
    IStopsLast,
    reactorProviding,
)
from echod.logs import EchodLogObserver, offerToTwistd

__all__ = ["EchodService", "makeService"]


class EchodService(MultiService):
    """
    The root of every echod service tree.

    Under twistd it also hands twistd its log observer (as the application's
    L{ILogObserver} component) and, when asked, owns the signals: SIGTERM
    drains and exits 0, a second SIGTERM cuts the drain short, SIGHUP
    reloads the configuration (twistd itself would die of it).

    @param reload: reads the configuration again (the file, then the command
        line over it); L{None} when there is nothing to reload from.
    """

    log = Logger()

    def __init__(
        self,
        config: Config,
        reactor: IRootReactor,
        logObserver: EchodLogObserver | None = None,
        handleSignals: bool = False,
        reload: Callable[[], Config] | None = None,
        servesConnections: bool = True,
    ) -> None:
        super().__init__()
        self.config = config
        self.servesConnections = servesConnections
        self.reactor = reactor
        self.logObserver = logObserver
        self.handleSignals = handleSignals
        self._reload = reload
        # What runs: keys that take a restart are compared with these, not
        # with the last configuration reloaded.
        self._started = config
        self._restartPending: list[str] = []
        self._stopping = False
        self.health = Health(reactor)

    def setServiceParent(self, parent: Any) -> None:
        offerToTwistd(parent, self.logObserver)
        super().setServiceParent(parent)

    def privilegedStartService(self) -> None:
        # Only a root that serves clients needs a descriptor for each: the
        # sniffer's (twistd echod-sniff) does not, whatever [server] says.
        wanted = self.config.server.max_connections if self.servesConnections else 0
        _raiseFileLimit(wanted, self.log)
        super().privilegedStartService()

    def startService(self) -> None:
        super().startService()
        self.health.started(self._whenListening())
        if self.handleSignals:
            self.reactor.callWhenRunning(self._installSignalHandlers)

    def stopService(self) -> Deferred[Any]:
        self._stopping = True
        self.health.stopping()
        stopped = self._stopChildren()

        def done(result: object) -> object:
            self.health.stopped()
            return result

        return stopped.addBoth(done)

    # --- readiness and stopping order (ops) -------------------------------------

    def _whenListening(self) -> Deferred[list[str]]:
        """
        Fires with the address of every listener of every child (those that
        listen have C{whenListening}) once all are up.
        """
        waiting = [child.whenListening() for child in self if IListening.providedBy(child)]

        def addresses(results: list[Any]) -> list[str]:
            ports = [p for r in results for p in (r if isinstance(r, list) else [r])]
            return [describePeer(port.getHost()) for port in ports]

        return gatherResults(waiting, consumeErrors=True).addCallback(addresses)

    def _stopChildren(self) -> Deferred[Any]:
        """
        Stop every child in reverse order, as L{MultiService} does, but the
        metrics listener only once the others have stopped (drained).
        """
        Service.stopService(self)
        children = list(self)[::-1]
        last = [child for child in children if IStopsLast.providedBy(child)]
        first = DeferredList(
            [maybeDeferred(child.stopService) for child in children if child not in last]
        )

        def stopLast(_: object) -> Deferred[Any]:
            return DeferredList([maybeDeferred(child.stopService) for child in last])

        return first.addCallback(stopLast)

    # --- end of readiness and stopping order ------------------------------------

    def _installSignalHandlers(self) -> None:
        signal.signal(signal.SIGTERM, self._sigterm)
        signal.signal(signal.SIGHUP, self._sighup)

    def _sighup(self, signum: int, frame: FrameType | None) -> None:
        self.reactor.callFromThread(self.reload)

    def reload(self) -> bool:
        """
        Read the configuration again and apply what can change while running:
        limits, ACLs, timeouts, UDP guards, log format and level.  Open
        connections stay open.  A configuration that does not load is logged
        and the running one stays in force.

        @return: whether the new configuration was applied.
        """
        if self._reload is None or self._stopping:
            return False
        try:
            config = self._reload()
        except UserError as e:
            # One event per problem of the file, each one line.
            for line in e.lines():
                self.log.error(
                    "reload failed, keeping the running configuration: {error}",
                    event="config.reload_failed",
                    error=line,
                )
            return False
        running = self._started
        fixed = [
            name
            for name, old, new in (
                ("server.listen", running.server.listen, config.server.listen),
                ("server.backlog", running.server.backlog, config.server.backlog),
                ("server.workers", running.server.workers, config.server.workers),
                ("udp.listen", running.udp.listen, config.udp.listen),
                ("metrics.listen", running.metrics.listen, config.metrics.listen),
                ("sniff", running.sniff, config.sniff),
            )
            if old != new
        ]
        if fixed:
            self.log.warn(
                "{keys} changed: that takes a restart; the rest is applied now",
                event="config.reload_partial",
                keys=", ".join(fixed),
            )
        elif self._restartPending:
            self.log.info(
                "{keys} in the file match what runs again: no restart needed",
                event="config.reload_matches",
                keys=", ".join(self._restartPending),
            )
        self._restartPending = fixed
        for child in self:
            if IReconfigurable.providedBy(child):
                child.reconfigure(config)
        if self.logObserver is not None:
            self.logObserver.reconfigure(config.log.format, config.log.level)
        self.config = config
        self.log.info(
            "configuration reloaded from {source}",
            event="config.reloaded",
            source=config.source or "the embedded defaults",
        )
        return True

    def _sigterm(self, signum: int, frame: FrameType | None) -> None:
        # Not Twisted's own handler: that one records the signal and twistd
        # then kills itself with it (status 143); a drained stop exits 0.
        if self._stopping:
            self.reactor.callFromThread(self._abortConnections)
        else:
            self.reactor.callFromThread(self._stop)

    def _stop(self) -> None:
        self.log.info("SIGTERM: shutting down", event="shutdown.requested")
        self.reactor.stop()

    def _abortConnections(self) -> None:
        for service in self:
            if IDrainable.providedBy(service):
                service.abortAll()


def _raiseFileLimit(wanted: int, log: Logger) -> None:
    """
    Raise the soft limit on open files to the hard limit: thousands of clients
    need thousands of descriptors, and the usual soft limit is 1024.
    """
    try:
        import resource
    except ImportError:  # not on a Unix: no such limit to raise
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if wanted and soft < wanted + 64:
        log.warn(
            "open file limit {soft} is below max_connections {wanted}: raise "
            "LimitNOFILE= (systemd) or ulimit -n",
            soft=soft,
            wanted=wanted,
        )


def makeService(
    config: Config,
    reactor: IEchodReactor | None = None,
    logObserver: EchodLogObserver | None = None,
    handleSignals: bool = False,
    reload: Callable[[], Config] | None = None,
) -> EchodService:
    """
    Assemble the echo service tree for C{config}.  Nothing listens until the
    tree is started.  The parts are imported only when configured: the
    sniffer's command uses this root too, and needs neither the echo server
    nor its epoll reactor (which Windows does not have).
    """
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = reactorProviding(globalReactor, IEchodReactor)
    root = EchodService(config, reactor, logObserver, handleSignals, reload)
    if config.server.workers > 1 and (config.server.listen or config.udp.listen):
        # Worker processes serve the stream and UDP listeners alike.
        from echod.server.workers.supervisor import WorkersService

        workers = WorkersService(config, reactor)
        workers.setServiceParent(root)
        root.health.require("no worker running", workers.workerRunning)
    elif config.server.listen or config.udp.listen:
        from echod.server.listeners import EchoService, UDPEchoService

        if config.server.listen:
            EchoService(config, reactor).setServiceParent(root)
        if config.udp.listen:
            UDPEchoService(config, reactor).setServiceParent(root)
    if config.sniff.enabled:
        from echod.sniff.service import SniffService

        SniffService(config.sniff, reactor).setServiceParent(root)
    if config.metrics.listen:
        from echod.metrics.listener import MetricsService

        MetricsService(
            config.metrics.listen, root, root.health, config.metrics, reactor
        ).setServiceParent(root)
    return root
