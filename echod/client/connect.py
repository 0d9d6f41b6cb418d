# -*- test-case-name: tests.unit.test_client -*-
"""
Connecting: the endpoint a plan names, or a L{HostnameEndpoint} (Happy
Eyeballs over every address of the host, IPv6 and IPv4) whose resolver keeps
to one family for C{-4}/C{-6} and records what it found; and the one line for
a connection that could not be made.  Over UDP, L{resolveAddresses} gives the
host's addresses in the resolver's (getaddrinfo's) order.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Literal

from twisted.internet import error as _error
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import (
    IAddress,
    IHostnameResolver,
    IHostResolution,
    IReactorPluggableNameResolver,
    IResolutionReceiver,
    IStreamClientEndpoint,
)
from twisted.python.failure import Failure
from zope.interface import implementer

from echod.client.errors import ClientError, ConnectFailed, NameNotResolved, TimedOut
from echod.client.plan import Plan
from echod.config import endpointParameters, tcp6ClientParameters
from echod.interfaces import IClientReactor

__all__ = [
    "RecordingResolver",
    "addressesOf",
    "connectFailure",
    "endpointFor",
    "resolveAddresses",
]

_FAMILIES: dict[str, Sequence[type[IAddress]] | None] = {
    "any": None,
    "ipv4": [IPv4Address],
    "ipv6": [IPv6Address],
}


@implementer(IHostnameResolver)
class RecordingResolver:
    """
    The reactor's resolver (or one handed in), restricted to one address
    family for C{-4}/C{-6}, and recording the addresses it found for error
    messages.
    """

    def __init__(
        self, resolver: IHostnameResolver, addressTypes: Sequence[type[IAddress]] | None
    ) -> None:
        self._resolver = resolver
        self._addressTypes = addressTypes
        self.addresses: list[IAddress] = []

    def resolveHostName(
        self,
        resolutionReceiver: IResolutionReceiver,
        hostName: str,
        portNumber: int = 0,
        addressTypes: Sequence[type[IAddress]] | None = None,
        transportSemantics: str = "TCP",
    ) -> IHostResolution:
        found = self.addresses

        @implementer(IResolutionReceiver)
        class Recording:
            def resolutionBegan(self, resolutionInProgress: IHostResolution) -> None:
                resolutionReceiver.resolutionBegan(resolutionInProgress)

            def addressResolved(self, address: IAddress) -> None:
                found.append(address)
                resolutionReceiver.addressResolved(address)

            def resolutionComplete(self) -> None:
                resolutionReceiver.resolutionComplete()

        return self._resolver.resolveHostName(
            Recording(),
            hostName,
            portNumber,
            self._addressTypes if self._addressTypes is not None else addressTypes,
            transportSemantics,
        )


@implementer(IReactorPluggableNameResolver)
class _ResolvingReactor:
    """
    The reactor as L{HostnameEndpoint} sees it: the same in every way but its
    C{nameResolver}.  Nothing global is changed.
    """

    def __init__(self, reactor: IClientReactor, resolver: IHostnameResolver) -> None:
        self._reactor = reactor
        self._resolver = resolver

    @property
    def nameResolver(self) -> IHostnameResolver:
        return self._resolver

    def installNameResolver(self, resolver: IHostnameResolver) -> IHostnameResolver:
        previous, self._resolver = self._resolver, resolver
        return previous

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)


def _describeAddress(address: IAddress) -> str:
    if isinstance(address, IPv4Address | IPv6Address):
        return address.host
    return str(address)


def connectFailure(reason: Failure, plan: Plan, addresses: Sequence[IAddress] = ()) -> ClientError:
    """
    The one line, and the exit status, for a connection that could not be
    made.
    """
    target = plan.target
    settings = plan.settings
    tried = ""
    if addresses:
        hosts = dict.fromkeys(_describeAddress(a) for a in addresses)
        tried = " (tried " + ", ".join(hosts) + ")"
    if reason.check(_error.DNSLookupError) or (
        reason.check(ValueError) and "invalid hostname" in str(reason.value)
    ):
        if settings.family != "any" and not settings.endpoint:
            version = "IPv4" if settings.family == "ipv4" else "IPv6"
            return NameNotResolved(f"{settings.host}: no {version} address found")
        name = settings.endpoint or settings.host
        return NameNotResolved(f"{name}: name does not resolve")
    if reason.check(_error.TimeoutError, CancelledError):
        return TimedOut(f"could not connect to {target} within {settings.timeout:g} s{tried}")
    if reason.check(_error.ConnectionRefusedError):
        return ConnectFailed(f"connection refused by {target}{tried}")
    value = reason.value
    if isinstance(value, _error.ConnectError):
        if isinstance(value.osError, int):
            detail = os.strerror(value.osError)
        else:
            detail = str(value.args[0] if value.args else "") or (value.__doc__ or "")
        detail = detail.strip().rstrip(".").lower() or "connection failed"
        return ConnectFailed(f"cannot connect to {target}: {detail}{tried}")
    return ConnectFailed(f"cannot connect to {target}: {reason.getErrorMessage()}{tried}")


def endpointFor(
    reactor: IClientReactor, plan: Plan, resolver: IHostnameResolver | None
) -> tuple[IStreamClientEndpoint, RecordingResolver | None]:
    """
    The endpoint to connect to, and the resolver recording the addresses
    tried (L{None} for an endpoint string, which resolves by itself).
    """
    from twisted.internet.endpoints import (
        HostnameEndpoint,
        TCP6ClientEndpoint,
        clientFromString,
    )

    settings = plan.settings
    if settings.endpoint:
        if endpointParameters(settings.endpoint)[0].lower() == "tcp6":
            # echod's own type: Twisted's client strings have no tcp6:.
            host, port, timeout, bindAddress = tcp6ClientParameters(settings.endpoint)
            bind = (bindAddress, 0) if bindAddress is not None else None
            tcp6 = TCP6ClientEndpoint(
                reactor, host, port, timeout=timeout or settings.timeout, bindAddress=bind
            )
            return tcp6, None
        return clientFromString(reactor, settings.endpoint), None
    recording = RecordingResolver(resolver or reactor.nameResolver, _FAMILIES[settings.family])
    endpoint = HostnameEndpoint(
        _ResolvingReactor(reactor, recording),
        settings.host,
        settings.port,
        timeout=settings.timeout,
    )
    return endpoint, recording


def resolveAddresses(
    reactor: IClientReactor, plan: Plan, resolver: IHostnameResolver | None
) -> Deferred[list[IPv4Address | IPv6Address]]:
    """
    The addresses of the plan's host for UDP, in the resolver's order
    (getaddrinfo's, for the reactor's own), each once, of the plan's family
    only; an empty list when there is none.
    """
    settings = plan.settings
    recording = RecordingResolver(resolver or reactor.nameResolver, _FAMILIES[settings.family])
    return addressesOf(recording, settings.host, settings.port, "UDP")


def addressesOf(
    resolver: IHostnameResolver, host: str, port: int, transport: Literal["TCP", "UDP"]
) -> Deferred[list[IPv4Address | IPv6Address]]:
    """
    Every IP address C{resolver} gives for C{host}, in its order, each once;
    an empty list when there is none.  The L{Deferred} has no canceller:
    cancelled, it fails at once and the resolver's late answer is ignored.
    """
    result: Deferred[list[IPv4Address | IPv6Address]] = Deferred()
    found: dict[tuple[str, str], IPv4Address | IPv6Address] = {}

    @implementer(IResolutionReceiver)
    class Receiver:
        def resolutionBegan(self, resolutionInProgress: IHostResolution) -> None:
            pass

        def addressResolved(self, address: IAddress) -> None:
            if isinstance(address, IPv4Address | IPv6Address):
                found.setdefault((type(address).__name__, address.host), address)

        def resolutionComplete(self) -> None:
            result.callback(list(found.values()))

    resolver.resolveHostName(Receiver(), host, port, transportSemantics=transport)
    return result
