"""
A fake reactor for echod's unit tests: L{EchodMemoryReactor} can be handed to
any part of echod, which names what it asks of the reactor with the
intersections of L{echod.interfaces}.  Nothing here imports the reactor.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import AnyStr

from twisted.internet.interfaces import (
    IAddress,
    IHostnameResolver,
    IHostResolution,
    IListeningPort,
    IProcessProtocol,
    IProcessTransport,
    IResolutionReceiver,
)
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.testing import MemoryReactorClock
from zope.interface import implementer

from echod.interfaces import (
    IClientCommandReactor,
    IEchodReactor,
    IMonitorReactor,
    ISniffCommandReactor,
    IWorkerReactor,
)

__all__ = ["EchodMemoryReactor"]


@implementer(
    IEchodReactor, ISniffCommandReactor, IClientCommandReactor, IWorkerReactor, IMonitorReactor
)
class EchodMemoryReactor(MemoryReactorClock):
    """
    Twisted's L{MemoryReactorClock}, declared to provide each of echod's
    reactor intersections (no reactor class does), with the three methods it
    lacks for them.  C{callFromThread} runs the call at the next
    C{advance}, as the reactor thread would at its next turn; C{listenUDP}
    and C{spawnProcess} raise: no unit test opens a port or starts a process
    with this fake (the supervisor's tests have their own process fake).
    Before Twisted 25.5 MemoryReactor had no name resolver: this one then
    has one that raises.
    """

    def __init__(self) -> None:
        super().__init__()
        if not hasattr(self, "nameResolver"):
            self.nameResolver = _NoNameResolver()

    def installNameResolver(self, resolver: IHostnameResolver) -> IHostnameResolver:
        old, self.nameResolver = self.nameResolver, resolver
        return old

    def callFromThread(
        self, callable: Callable[..., object], *args: object, **kwargs: object
    ) -> None:
        self.callLater(0, callable, *args, **kwargs)

    def listenUDP(
        self,
        port: int,
        protocol: DatagramProtocol,
        interface: str = "",
        maxPacketSize: int = 8192,
    ) -> IListeningPort:
        raise NotImplementedError("EchodMemoryReactor opens no UDP port")

    def spawnProcess(
        self,
        processProtocol: IProcessProtocol,
        executable: bytes | str,
        args: Sequence[bytes | str],
        env: Mapping[AnyStr, AnyStr] | None = None,
        path: bytes | str | None = None,
        uid: int | None = None,
        gid: int | None = None,
        usePTY: bool = False,
        childFDs: Mapping[int, int | str] | None = None,
    ) -> IProcessTransport:
        raise NotImplementedError("EchodMemoryReactor starts no process")


@implementer(IHostnameResolver)
class _NoNameResolver:
    def resolveHostName(
        self,
        resolutionReceiver: IResolutionReceiver,
        hostName: str,
        portNumber: int = 0,
        addressTypes: Sequence[type[IAddress]] | None = None,
        transportSemantics: str = "TCP",
    ) -> IHostResolution:
        raise NotImplementedError("EchodMemoryReactor resolves no name")
