# -*- test-case-name: tests.integration.test_service -*-
"""
The echo server's listeners: each configured endpoint as a service that
opens its socket when twistd starts it (before privileges drop), says when it
listens and turns a failure into one line; the TCP echo service (one
L{EchoFactory} behind every stream listener) and the UDP one (one guard and
one set of totals behind every datagram port).
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from typing import Any

from twisted.application import strports
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IReactorCore,
    IStreamServerEndpoint,
)
from twisted.logger import Logger
from zope.interface import implementer

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
from echod.errors import ListenError
from echod.interfaces import (
    IDatagramServerReactor,
    IDatagramStatistics,
    IDrainable,
    IListening,
    IReconfigurable,
    IStreamServerReactor,
    IStreamStatistics,
)
from echod.server import fastpath
from echod.server.datagram import (
    BATCH,
    BATCH_IN_C,
    ROUNDS,
    DatagramEcho,
    DatagramEchoPort,
    enlargeReceiveBuffer,
    openDatagramSocket,
)
from echod.server.stats import DatagramStats, TCPTotals
from echod.server.stream import EchoFactory, ProxiedEchoFactory
from echod.systemd import inheritedSocket

__all__ = [
    "DatagramListenerService",
    "EchoService",
    "ListenerService",
    "UDPEchoService",
    "adoptDatagramSocket",
    "listenFailed",
    "logDatagramBatching",
    "logsConnections",
]

PROXY_PREFIX = "haproxy:"

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
            raise listenFailed(self.description, e) from None

    def startService(self) -> None:
        Service.startService(self)
        self._service.startService()

    def stopService(self) -> Deferred[None]:
        Service.stopService(self)
        return self._service.stopService()  # type: ignore[no-any-return]


def listenFailed(description: str, error: CannotListenError | OSError) -> ListenError:
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
        reactor: IStreamServerReactor,
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
        self.wanted = config.server.fast_paths
        self.fastPaths = self.wanted and fastpath.supported()
        # False when worker processes accept on these listeners instead.
        self.accepting = True
        self.listeners: list[ListenerService] = []
        for description in config.server.listen:
            self._addListener(description)

    def _addListener(self, description: str) -> ListenerService:
        factory: IProtocolFactory = self.factory
        inner = description
        if description.startswith(PROXY_PREFIX):
            # echod reads the PROXY header itself (see echod.server.proxyprotocol).
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
        if self.accepting:
            self.log.info(
                "fast paths {status}",
                event="fastpaths",
                status=fastpath.status(self.wanted, self._reactor),
            )

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
    datagram socket systemd passed (C{systemd:domain=INET6:name=NAME}),
    echoed by a L{DatagramEchoPort}.

    Not Twisted's C{UDPServer}: echod needs the port (its address, for the
    log and for tests that listen on port 0), and to adopt systemd's socket.
    """

    log = Logger()

    def __init__(
        self, description: str, echo: DatagramEcho, reactor: IDatagramServerReactor
    ) -> None:
        self.description = description
        self.echo = echo
        self.reactor = reactor
        self.port: DatagramEchoPort | None = None

    def privilegedStartService(self) -> None:
        Service.privilegedStartService(self)
        try:
            sock = self._open()
        except (CannotListenError, OSError) as e:
            raise listenFailed(self.description, e) from None
        enlargeReceiveBuffer(sock)
        self.port = DatagramEchoPort(sock, self.echo, self.reactor)
        self.log.info(
            "UDP echo listening on {address} ({description})",
            event="listener.started",
            address=describePeer(self.port.getHost()),
            description=self.description,
        )

    def _open(self) -> socket.socket:
        if self.description.startswith("systemd:"):
            return adoptDatagramSocket(self.description)
        endpoint: DatagramEndpoint = parseDatagramEndpoint(self.description)
        return openDatagramSocket(endpoint.port, endpoint.interface)

    def startService(self) -> None:
        Service.startService(self)
        if self.port is None:
            self.privilegedStartService()
        assert self.port is not None
        self.port.startListening()

    def stopService(self) -> Deferred[None]:
        Service.stopService(self)
        port, self.port = self.port, None
        return port.stopListening() if port is not None else succeed(None)


def adoptDatagramSocket(description: str) -> socket.socket:
    """
    The datagram socket systemd passed for the C{systemd:} UDP listener
    C{description}, non-blocking.

    @raise ListenError: systemd passed no such socket, or not a datagram one.
    """
    _, _, kwargs = endpointParameters(description)
    fd = inheritedSocket(kwargs.get("name", ""))
    if fd is None:
        raise ListenError(
            f"cannot listen on {description}: systemd passed no socket named {kwargs.get('name')!r}"
        )
    sock = socket.socket(fileno=fd)
    if sock.type != socket.SOCK_DGRAM:
        sock.detach()
        raise ListenError(
            f"cannot listen on {description}: systemd's socket "
            f"{kwargs.get('name')!r} is not a datagram socket"
        )
    # A blocking descriptor would hang the whole reactor on its first read.
    sock.setblocking(False)
    return sock


def logDatagramBatching(log: Logger) -> None:
    """
    Say how UDP datagrams are read and echoed here (with the C helper or
    without), once at start.
    """
    log.info(
        "UDP echo in batches of up to {batch} datagrams, {rounds} batches per reactor "
        "turn, with {calls}",
        event="udp.batching",
        batch=BATCH,
        rounds=ROUNDS,
        calls="recvmmsg and sendmmsg (C helper)"
        if BATCH_IN_C
        else "recvfrom and sendto (the C helper is not built)",
    )


@implementer(IReconfigurable, IListening, IDatagramStatistics)
class UDPEchoService(MultiService):
    """
    The UDP echo service: one L{DatagramEchoPort} per listener, sharing one
    L{DatagramEcho} (its guard, totals and drop log).
    """

    log = Logger()

    def __init__(self, config: Config, reactor: IDatagramServerReactor) -> None:
        super().__init__()
        self.setName("udp-echo")
        self.echo = DatagramEcho.fromSettings(config.udp, reactor)
        self.stats = self.echo.stats
        self.listeners: list[DatagramListenerService] = []
        for description in config.udp.listen:
            listener = DatagramListenerService(description, self.echo, reactor)
            listener.setServiceParent(self)
            self.listeners.append(listener)

    def reconfigure(self, config: Config) -> None:
        self.echo.reconfigure(config.udp)

    def datagramStats(self) -> DatagramStats:
        return self.stats

    def whenListening(self) -> Deferred[list[Any]]:
        """
        Fires with every UDP port: they are open once the service has started.
        """
        return succeed([listener.port for listener in self.listeners])

    def startService(self) -> None:
        super().startService()
        logDatagramBatching(self.log)

    def stopService(self) -> Deferred[None]:
        self.echo.flush()
        stopped: Deferred[None] = super().stopService()
        return stopped


# --- metrics listener (ops) ----------------------------------------------------
