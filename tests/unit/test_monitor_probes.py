"""
Resolving a target's name for a round, on a fake reactor: every address
once, at most C{max_addresses} of them, an IP address as it is, a name that
gives nothing or nothing in time said in one line; and cancelled when the
monitor stops.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import CancelledError
from twisted.internet.interfaces import (
    IAddress,
    IHostnameResolver,
    IHostResolution,
    IResolutionReceiver,
)
from twisted.python.failure import Failure
from zope.interface import implementer

from echod.interfaces import IClientReactor
from echod.monitor.probes import ProbeResult, Resolution, resolveTarget
from echod.monitor.targets import Target
from tests.reactortesting import EchodMemoryReactor
from tests.testing import FixedResolver


def target(host: str, timeout: float = 2.0) -> Target:
    return Target(f"{host}:7", "tcp", host, 7, 10, timeout, 64, 3, 0, True, ())


def resolved(reactor: EchodMemoryReactor, host: str, most: int = 8) -> Resolution | Failure:
    results: list[Resolution | Failure] = []
    resolveTarget(cast(IClientReactor, reactor), target(host), most).addBoth(results.append)
    assert results, "not resolved at once"
    return results[0]


@implementer(IHostnameResolver)
class _Silent:
    """
    A resolver that never answers.
    """

    def resolveHostName(
        self,
        resolutionReceiver: IResolutionReceiver,
        hostName: str,
        portNumber: int = 0,
        addressTypes: Sequence[type[IAddress]] | None = None,
        transportSemantics: str = "TCP",
    ) -> IHostResolution:
        return cast(IHostResolution, None)


def test_everyAddressOnce() -> None:
    reactor = EchodMemoryReactor()
    reactor.installNameResolver(FixedResolver("192.0.2.1", "2001:db8::1", "192.0.2.1"))
    result = resolved(reactor, "echo.example")
    assert isinstance(result, Resolution)
    assert [(type(a), a.host) for a in result.addresses] == [
        (IPv4Address, "192.0.2.1"),
        (IPv6Address, "2001:db8::1"),
    ]
    assert reactor.getDelayedCalls() == []


def test_atMostMaxAddresses() -> None:
    reactor = EchodMemoryReactor()
    reactor.installNameResolver(FixedResolver(*(f"192.0.2.{i}" for i in range(1, 11))))
    result = resolved(reactor, "many.example", most=4)
    assert isinstance(result, Resolution)
    assert [a.host for a in result.addresses] == [f"192.0.2.{i}" for i in range(1, 5)]
    assert result.more == 6


def test_addressesAreTheirOwn() -> None:
    """
    An IP address is not resolved.
    """
    reactor = EchodMemoryReactor()
    reactor.installNameResolver(_Silent())
    for host, kind in (("192.0.2.1", IPv4Address), ("2001:db8::1", IPv6Address)):
        result = resolved(reactor, host)
        assert isinstance(result, Resolution)
        ((address),) = result.addresses
        assert (type(address), address.host) == (kind, host)


def test_noAddress() -> None:
    reactor = EchodMemoryReactor()
    reactor.installNameResolver(FixedResolver())
    result = resolved(reactor, "gone.example")
    assert isinstance(result, Failure)
    assert result.getErrorMessage() == "gone.example: name does not resolve"


def test_notInTime() -> None:
    reactor = EchodMemoryReactor()
    reactor.installNameResolver(_Silent())
    results: list[object] = []
    resolving = resolveTarget(cast(IClientReactor, reactor), target("slow.example", 1.5), 8)
    resolving.addBoth(results.append)
    reactor.advance(1.4)
    assert results == []
    reactor.advance(0.2)
    (failure,) = results
    assert isinstance(failure, Failure)
    assert failure.getErrorMessage() == "slow.example: not resolved within 1.5 s"


def test_cancelled() -> None:
    """
    Cancelled (the monitor stopping), no timer is left behind.
    """
    reactor = EchodMemoryReactor()
    reactor.installNameResolver(_Silent())
    results: list[object] = []
    resolving = resolveTarget(cast(IClientReactor, reactor), target("slow.example"), 8)
    resolving.addBoth(results.append)
    resolving.cancel()
    (failure,) = results
    assert isinstance(failure, Failure) and failure.check(CancelledError)
    assert reactor.getDelayedCalls() == []


def test_summaryOfARound() -> None:
    """
    A round's median (of an even count, the mean of the middle two),
    lowest and highest round-trip time; none without answers.
    """
    result = ProbeResult("success", 4, 4, 0, (0.004, 0.001, 0.003, 0.002), 0.002, None, 0.0)
    assert result.summary == (0.0025, 0.001, 0.004)
    assert ProbeResult("timeout", 4, 0, 0, (), None, "x", 0.0).summary is None
