# -*- test-case-name: tests.integration.test_service -*-
"""
From a validated L{Config} to a running service tree.

C{makeService} only assembles objects; sockets are opened when twistd starts
the services (C{privilegedStartService}, before it drops privileges), and
closed in order when it stops them: listeners first, then open connections
drain.
"""

from __future__ import annotations

import errno
import resource
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

from twisted.application import strports
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, gatherResults, maybeDeferred, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IReactorCore,
    IReactorTime,
    IStreamServerEndpoint,
)
from twisted.logger import Logger
from zope.interface import implementer

from echod import fastpath
from echod.addresses import describePeer
from echod.config import (
    DEFAULT_LISTEN,
    DEFAULT_LISTEN_IPV4,
    Config,
    DatagramEndpoint,
    endpointParameters,
    parseDatagramEndpoint,
    withBacklog,
)
from echod.echo import (
    DatagramStats,
    EchoDatagramProtocol,
    EchoFactory,
    ProxiedEchoFactory,
    TCPTotals,
    datagramDropLog,
)
from echod.errors import ListenError, UserError
from echod.health import Health
from echod.interfaces import (
    IDatagramStatistics,
    IDrainable,
    IListening,
    IReconfigurable,
    IStreamStatistics,
)
from echod.limits import DatagramGuard
from echod.logs import EchodLogObserver, offerToTwistd
from echod.metrics import metricsSite
from echod.sniff.service import SniffService
from echod.systemd import inheritedSocket

__all__ = [
    "DatagramListenerService",
    "EchoService",
    "EchodService",
    "ListenerService",
    "MetricsService",
    "UDPEchoService",
    "makeService",
]

PROXY_PREFIX = "haproxy:"

# The largest UDP payload (65,507 bytes over IPv4, 65,527 over IPv6) fits.
MAX_DATAGRAM = 65535
# The kernel's default UDP receive buffer (~200 KiB) overflows at a burst of
# a thousand small datagrams before the reactor gets to read them.
UDP_RECEIVE_BUFFER = 4 * 1024 * 1024

# Errors that mean "this host has no IPv6", as opposed to "the port is taken".
_NO_IPV6 = {errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL, errno.EPROTONOSUPPORT}


@implementer(IStreamServerEndpoint)
class _ReportingEndpoint:
    """
    Passes C{listen} through and fires L{listening} with the port, so that
    the service tree knows when, and where, every listener is up.
    """

    def __init__(self, endpoint: IStreamServerEndpoint) -> None:
        self._endpoint = endpoint
        self.listening: Deferred[IListeningPort] = Deferred()

    def listen(self, factory: IProtocolFactory) -> Deferred[IListeningPort]:
        d = self._endpoint.listen(factory)

        def listened(port: IListeningPort) -> IListeningPort:
            self.listening.callback(port)
            return port

        return d.addCallback(listened)


class ListenerService(Service):
    """
    One listener, made by C{strports.service} (which aborts start-up when the
    port cannot be opened), with its description kept for messages, a
    one-line L{ListenError} instead of a traceback, and L{whenListening}.
    """

    log = Logger()

    def __init__(
        self,
        description: str,
        factory: IProtocolFactory,
        reactor: IReactorCore,
        listen: str | None = None,
    ) -> None:
        """
        @param description: the endpoint as the user wrote it, for messages.
        @param listen: the endpoint actually listened on, if echod added to it
            (a backlog).
        """
        self.description = description
        self._service = strports.service(listen or description, factory, reactor=reactor)
        self._reporting = _ReportingEndpoint(self._service.endpoint)
        self._service.endpoint = self._reporting

    def whenListening(self) -> Deferred[IListeningPort]:
        return self._reporting.listening

    def privilegedStartService(self) -> None:
        Service.privilegedStartService(self)
        try:
            self._service.privilegedStartService()
        except (CannotListenError, OSError) as e:
            # OSError: what Twisted raises before it tries to listen, such as
            # a unix: socket's lock file in a directory that does not exist.
            raise _listenFailed(self.description, e) from None

    def startService(self) -> None:
        Service.startService(self)
        self._service.startService()

    def stopService(self) -> Deferred[None]:
        Service.stopService(self)
        return self._service.stopService()  # type: ignore[no-any-return]


def _listenFailed(description: str, error: CannotListenError | OSError) -> ListenError:
    """
    The one-line L{ListenError} for a listener that could not open.  Not
    logged here: twistd stops, and echod's report of a start-up error (see
    L{echod.tap.server}) prints it once and logs it once where the log is
    not on the terminal.
    """
    cause = error.socketError if isinstance(error, CannotListenError) else error
    if isinstance(cause, OSError) and cause.strerror:
        reason = cause.strerror.lower()
        if cause.errno == errno.EACCES:
            reason += " (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
    else:
        reason = str(cause)
    return ListenError(
        f"cannot listen on {description}: {reason}",
        errno=cause.errno if isinstance(cause, OSError) else None,
    )


def logsConnections(config: Config) -> bool:
    """
    Whether connection open/close lines (info level) are logged at all.
    """
    return config.log.level in ("debug", "info")


def _withImmediateWrites(port: IListeningPort) -> IListeningPort:
    fastpath.useImmediateWrites(port)
    return port


@implementer(IReconfigurable, IListening, IDrainable, IStreamStatistics)
class EchoService(MultiService):
    """
    The TCP (stream) echo service: one L{EchoFactory} behind every configured
    listener.  Stopping it stops listening, then drains open connections for
    at most C{shutdown_timeout} seconds.
    """

    log = Logger()

    def __init__(
        self,
        config: Config,
        reactor: Any,
        listener: Callable[..., ListenerService] = ListenerService,
    ) -> None:
        super().__init__()
        self.setName("tcp-echo")
        self._reactor = reactor
        self._listener = listener
        self.shutdownTimeout = config.server.shutdown_timeout
        self.factory = EchoFactory(config.server, reactor)
        self.factory.logConnections = logsConnections(config)
        self.proxiedFactory = ProxiedEchoFactory(self.factory)
        self.backlog = config.server.backlog
        self.fastPaths = config.server.fast_paths and fastpath.supported()
        # False when worker processes accept on these listeners instead.
        self.accepting = True
        self.listeners: list[ListenerService] = []
        for description in config.server.listen:
            self._addListener(description)

    def _addListener(self, description: str) -> ListenerService:
        factory: IProtocolFactory = self.factory
        inner = description
        if description.startswith(PROXY_PREFIX):
            # echod reads the PROXY header itself (see echod.proxyprotocol).
            inner = description[len(PROXY_PREFIX) :]
            factory = self.proxiedFactory
        listen = withBacklog(inner, self.backlog)
        listener = self._listener(description, factory, self._reactor, listen)
        if self.fastPaths:
            # Before the first accept: listening is synchronous here.
            listener.whenListening().addCallback(_withImmediateWrites)
        listener.setServiceParent(self)
        self.listeners.append(listener)
        return listener

    def privilegedStartService(self) -> None:
        Service.privilegedStartService(self)
        for listener in list(self.listeners):
            try:
                listener.privilegedStartService()
            except ListenError as e:
                if not self._fallBackToIPv4(listener, e):
                    raise

    def _fallBackToIPv4(self, listener: ListenerService, error: ListenError) -> bool:
        """
        The embedded default listens dual-stack on C{::}; on a host without
        IPv6 that fails, and the default becomes IPv4-only, said in the log.
        """
        if listener.description != DEFAULT_LISTEN:
            return False
        if error.errno not in _NO_IPV6:
            return False
        self.log.warn(
            "IPv6 is not available here ({reason}): the default listener "
            "{fallback} (IPv4 only) replaces {default}",
            reason=error,
            fallback=DEFAULT_LISTEN_IPV4,
            default=DEFAULT_LISTEN,
        )
        listener.disownServiceParent()
        self.listeners.remove(listener)
        self._addListener(DEFAULT_LISTEN_IPV4).privilegedStartService()
        return True

    def whenListening(self) -> Deferred[list[IListeningPort]]:
        """
        Fires with every listening port once all are listening.
        """
        d = DeferredList(
            [listener.whenListening() for listener in self.listeners],
            fireOnOneErrback=True,
            consumeErrors=True,
        )
        return d.addCallback(lambda results: [port for _, port in results])

    def startService(self) -> None:
        super().startService()

        def listening(ports: list[IListeningPort]) -> None:
            for listener, port in zip(self.listeners, ports, strict=True):
                self.log.info(
                    "echo service listening on {address} ({description})",
                    event="listener.started",
                    address=describePeer(port.getHost()),
                    description=listener.description,
                )

        self.whenListening().addCallback(listening)

    def stopService(self) -> Deferred[None]:
        d: Deferred[Any] = super().stopService() or succeed(None)
        d.addCallback(lambda _: self.factory.drain(self.shutdownTimeout))
        return d

    def reconfigure(self, config: Config) -> None:
        self.factory.reconfigure(config.server)
        self.factory.logConnections = logsConnections(config)
        self.shutdownTimeout = config.server.shutdown_timeout

    def abortAll(self) -> None:
        self.factory.abortAll("second SIGTERM")

    def tcpTotals(self) -> TCPTotals | None:
        """
        What the metrics report of this service; L{None} when its sockets are
        served by worker processes (L{WorkersService} reports for them).
        """
        return self.factory.totals() if self.accepting else None


class DatagramListenerService(Service):
    """
    One UDP port: C{udp:port=N[:interface=ADDR]} (dual-stack on C{::}), or a
    datagram socket systemd passed (C{systemd:domain=INET6:name=NAME}).

    Not Twisted's C{UDPServer}: echod needs the port (its address, for the
    log and for tests that listen on port 0), and to adopt systemd's socket.
    """

    log = Logger()

    def __init__(self, description: str, protocol: EchoDatagramProtocol, reactor: Any) -> None:
        self.description = description
        self.protocol = protocol
        self.reactor = reactor
        self.port: Any = None

    def privilegedStartService(self) -> None:
        Service.privilegedStartService(self)
        try:
            self.port = self._open()
        except (CannotListenError, OSError) as e:
            raise _listenFailed(self.description, e) from None
        _enlargeReceiveBuffer(self.port.getHandle())
        self.log.info(
            "UDP echo listening on {address} ({description})",
            event="listener.started",
            address=describePeer(self.port.getHost()),
            description=self.description,
        )

    def _open(self) -> Any:
        if self.description.startswith("systemd:"):
            return self._adopt()
        endpoint: DatagramEndpoint = parseDatagramEndpoint(self.description)
        return self.reactor.listenUDP(
            endpoint.port,
            self.protocol,
            interface=endpoint.interface,
            maxPacketSize=MAX_DATAGRAM,
        )

    def _adopt(self) -> Any:
        import os
        import socket

        _, _, kwargs = endpointParameters(self.description)
        fd = inheritedSocket(kwargs.get("name", ""))
        if fd is None:
            raise ListenError(
                f"cannot listen on {self.description}: systemd passed no socket "
                f"named {kwargs.get('name')!r}"
            )
        family = {"INET": socket.AF_INET, "INET6": socket.AF_INET6}[kwargs.get("domain", "INET6")]
        # A blocking descriptor would hang the whole reactor on its first read.
        os.set_blocking(fd, False)
        return self.reactor.adoptDatagramPort(fd, family, self.protocol, MAX_DATAGRAM)

    def startService(self) -> None:
        Service.startService(self)
        if self.port is None:
            self.privilegedStartService()

    def stopService(self) -> Deferred[None]:
        Service.stopService(self)
        port, self.port = self.port, None
        return port.stopListening() if port is not None else succeed(None)


def _enlargeReceiveBuffer(handle: Any) -> None:
    """
    Ask for L{UDP_RECEIVE_BUFFER}; as root, past C{net.core.rmem_max} too.
    """
    import socket

    for option in (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF):
        if option is None:
            continue
        try:
            handle.setsockopt(socket.SOL_SOCKET, option, UDP_RECEIVE_BUFFER)
            return
        except OSError:
            continue


@implementer(IReconfigurable, IListening, IDatagramStatistics)
class UDPEchoService(MultiService):
    """
    The UDP echo service: one L{EchoDatagramProtocol} per port, sharing one
    L{DatagramGuard} and one set of totals.
    """

    def __init__(self, config: Config, reactor: Any) -> None:
        super().__init__()
        self.setName("udp-echo")
        self.guard = DatagramGuard(config.udp, reactor)
        self.stats = DatagramStats()
        self.dropLog = datagramDropLog(reactor, config.udp)
        self.listeners: list[DatagramListenerService] = []
        for description in config.udp.listen:
            protocol = EchoDatagramProtocol(self.guard, self.stats, self.dropLog)
            listener = DatagramListenerService(description, protocol, reactor)
            listener.setServiceParent(self)
            self.listeners.append(listener)

    def reconfigure(self, config: Config) -> None:
        self.guard.reconfigure(config.udp)
        self.dropLog.interval = config.udp.drop_log_interval

    def datagramStats(self) -> DatagramStats:
        return self.stats

    def whenListening(self) -> Deferred[list[Any]]:
        """
        Fires with every UDP port: they are open once the service has started.
        """
        return succeed([listener.port for listener in self.listeners])

    def stopService(self) -> Deferred[None]:
        self.dropLog.flush()
        stopped: Deferred[None] = super().stopService()
        return stopped


# --- metrics listener (ops) ----------------------------------------------------


@implementer(IReconfigurable, IListening)
class MetricsService(ListenerService):
    """
    C{/metrics} and C{/healthz} (L{echod.metrics}) on C{[metrics] listen}.

    A L{ListenerService}: a busy port stops start-up with one line.  The
    root stops it after everything else, so that C{/healthz} answers 503 and
    C{/metrics} keeps answering while connections drain.  Its connection cap
    and request timeout (C{root.config.metrics}) are reloadable.
    """

    def __init__(self, description: str, root: EchodService, reactor: Any) -> None:
        self.site = metricsSite(root, root.health, reactor, root.config.metrics)
        super().__init__(description, self.site, reactor)
        self.setName("metrics")

    def reconfigure(self, config: Config) -> None:
        self.site.reconfigure(config.metrics)

    def startService(self) -> None:
        super().startService()
        self.whenListening().addCallback(self._listening)

    def _listening(self, port: IListeningPort) -> IListeningPort:
        self.log.info(
            "metrics listening on {address} ({description})",
            event="metrics.started",
            address=describePeer(port.getHost()),
            description=self.description,
        )
        return port


# --- end of metrics listener ----------------------------------------------------


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
        reactor: Any,
        logObserver: EchodLogObserver | None = None,
        handleSignals: bool = False,
        reload: Callable[[], Config] | None = None,
    ) -> None:
        super().__init__()
        self.config = config
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
        _raiseFileLimit(self.config.server.max_connections, self.log)
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
        last = [child for child in children if isinstance(child, MetricsService)]
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
    reactor: IReactorTime | None = None,
    logObserver: EchodLogObserver | None = None,
    handleSignals: bool = False,
    reload: Callable[[], Config] | None = None,
) -> EchodService:
    """
    Assemble the echo service tree for C{config}.  Nothing listens until the
    tree is started.
    """
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = globalReactor
    root = EchodService(config, reactor, logObserver, handleSignals, reload)
    if config.server.listen:
        if config.server.workers > 1:
            from echod.workers import WorkersService

            workers = WorkersService(config, reactor)
            workers.setServiceParent(root)
            root.health.require("no worker running", workers.workerRunning)
        else:
            EchoService(config, reactor).setServiceParent(root)
    if config.udp.listen:
        UDPEchoService(config, reactor).setServiceParent(root)
    if config.sniff.enabled:
        SniffService(config.sniff, reactor).setServiceParent(root)
    if config.metrics.listen:
        MetricsService(config.metrics.listen, root, reactor).setServiceParent(root)
    return root
