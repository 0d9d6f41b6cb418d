# -*- test-case-name: tests.unit.test_workers,tests.e2e.test_workers -*-
"""
The listening sockets of C{[server] workers = N}, one per worker for each
C{tcp:}/C{tcp6:} listener, bound with C{SO_REUSEPORT} so that the kernel
spreads new connections over them by a hash of the peer's address and port.

L{ReusePortReactor} binds the main process's own socket (after checking that
nothing listens on the address already: C{SO_REUSEPORT} would join it
instead of failing), L{siblingSockets} opens the workers' sockets beside it,
and L{WorkerSockets} takes one worker's sockets out of their groups while it
is down and puts them back before it restarts.  L{echod.server.workers.supervisor}
says how they are used.
"""

from __future__ import annotations

import contextlib
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from twisted.internet import tcp
from twisted.internet.abstract import isIPv6Address
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from zope.interface import implementer

from echod.interfaces import IStreamServerReactor

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTCP2

__all__ = ["REUSE_PORT", "ReusePortReactor", "WorkerSockets", "siblingSockets"]

# None where the platform has no SO_REUSEPORT: every listener is then shared.
REUSE_PORT = getattr(socket, "SO_REUSEPORT", None)


@implementer(IStreamServerReactor)
class ReusePortReactor:
    """
    The reactor, as the main process's C{tcp:}/C{tcp6:} endpoints see it when
    C{workers > 1}: C{listenTCP} binds with C{SO_REUSEPORT} (so that the
    workers' sibling sockets can join the same address) after checking that
    no other socket listens there.  Everything else is the reactor's own.
    """

    def __init__(self, reactor: IStreamServerReactor) -> None:
        self._reactor = reactor
        # The ports bound here: those that get a socket per worker.
        self.ports: list[IListeningPort] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)

    def listenTCP(
        self, port: int, factory: Any, backlog: int = 50, interface: str = ""
    ) -> IListeningPort:
        if port:  # port 0 is a fresh one: nobody else can be on it
            _refuseIfListening(interface, port)
        listening: IListeningPort
        if hasattr(tcp, "makeBinding"):  # Twisted 26.10 and later
            binding = tcp.makeBinding(interface, port, reuseAddress=True, reusePort=True)
            # Its listenTCP takes a binding, as IReactorTCP2 says, but its
            # reactors declare only IReactorTCP.
            reactor = cast("IReactorTCP2", self._reactor)
            listening = reactor.listenTCP(binding, factory, backlog, interface)
        else:
            # What the reactor's listenTCP does, with the option set.
            listening = _ReusePortTCPPort(port, factory, backlog, interface, self._reactor)
            listening.startListening()
        self.ports.append(listening)
        return listening


class _ReusePortTCPPort(tcp.Port):
    """
    Twisted's TCP port, with C{SO_REUSEPORT} set before it binds: on Twisted
    releases older than 26.10, whose C{listenTCP} takes no
    C{makeBinding(reusePort=True)}.
    """

    def createInternetSocket(self) -> socket.socket:
        skt: socket.socket = super().createInternetSocket()
        skt.setsockopt(socket.SOL_SOCKET, REUSE_PORT, 1)  # type: ignore[arg-type]
        return skt


def _refuseIfListening(interface: str, port: int) -> None:
    """
    Raise L{CannotListenError} if a socket listens on C{interface}:C{port}
    already: binding with C{SO_REUSEPORT} would join it (another echod, say)
    instead of failing.  A plain bind fails there, and only there (with
    C{SO_REUSEADDR}, connections left in TIME_WAIT do not count).
    """
    family = socket.AF_INET6 if isIPv6Address(interface) else socket.AF_INET
    try:
        address = socket.getaddrinfo(
            interface or None,
            port,
            family,
            socket.SOCK_STREAM,
            0,
            socket.AI_NUMERICHOST | socket.AI_PASSIVE,
        )[0][4]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as e:
        raise CannotListenError(interface, port, e) from None


def siblingSockets(listening: socket.socket, count: int, backlog: int) -> list[socket.socket]:
    """
    C{count} more sockets listening on the address of C{listening} (bound
    with C{SO_REUSEPORT}), with its family and its C{IPV6_V6ONLY}.
    """
    address = listening.getsockname()
    siblings: list[socket.socket] = []
    try:
        for _ in range(count):
            sibling = socket.socket(listening.family, socket.SOCK_STREAM)
            siblings.append(sibling)
            sibling.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sibling.setsockopt(socket.SOL_SOCKET, REUSE_PORT, 1)  # type: ignore[arg-type]
            if listening.family == socket.AF_INET6:
                sibling.setsockopt(
                    socket.IPPROTO_IPV6,
                    socket.IPV6_V6ONLY,
                    listening.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY),
                )
            sibling.bind(address)
            sibling.listen(backlog)
            sibling.setblocking(False)
    except OSError:
        for sibling in siblings:
            sibling.close()
        raise
    return siblings


@dataclass
class WorkerSockets:
    """
    The listening sockets that one worker, and only it, accepts on (one per
    C{SO_REUSEPORT} listener), with their backlogs.
    """

    sockets: list[tuple[socket.socket, int]]

    def pause(self) -> None:
        """
        Out of their C{SO_REUSEPORT} groups: the kernel stops sending new
        connections to these sockets, and resets those queued there.
        """
        for sock, _ in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RD)

    def resume(self) -> None:
        """
        Back in their groups (the address is still bound).
        """
        for sock, backlog in self.sockets:
            with contextlib.suppress(OSError):
                sock.listen(backlog)
