# -*- test-case-name: tests.integration.test_monitor -*-
"""
One round of a target: its name resolved (every round, both families), and
each address probed on its own by the client's protocols: over TCP and TLS a
connection to that one address (never Happy Eyeballs, which would hide a dead
family) and C{count} messages checked byte for byte; over UDP C{count}
datagrams with the client's header (sequence number, send time), matched and
checked, lost after C{timeout}.  Nothing of the client is copied: a round is
an L{EchoClient} or a L{DatagramClient} run with the output discarded and its
L{Summary} read.
"""

from __future__ import annotations

import io
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Any, Literal, cast

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import (
    IAddress,
    IHostnameResolver,
    IHostResolution,
    IResolutionReceiver,
    IStreamClientEndpoint,
)
from twisted.python.failure import Failure
from zope.interface import implementer

from echod.client.connect import addressesOf
from echod.client.datagram import DatagramClient
from echod.client.errors import ClosedEarly, ConnectFailed, Interrupted, TimedOut
from echod.client.plan import makePlan
from echod.client.report import Summary
from echod.client.run import EchoClient
from echod.config import ClientConfig
from echod.interfaces import IClientReactor
from echod.monitor.targets import Target

__all__ = ["Probe", "ProbeResult", "Resolution", "resolveTarget"]

Address = IPv4Address | IPv6Address


class _Discard(io.TextIOBase):
    """
    Where a probe's client writes its report: nowhere (the monitor reads
    the summary instead).
    """

    def write(self, text: str) -> int:
        return len(text)


@implementer(IHostResolution)
class _Resolution:
    def __init__(self, name: str) -> None:
        self.name = name

    def cancel(self) -> None:
        pass


@implementer(IHostnameResolver)
class _OneAddress:
    """
    A resolver that knows one address: the one address a UDP round probes
    (the client would otherwise resolve the name again and pick one).
    """

    def __init__(self, address: Address) -> None:
        self._address = address

    def resolveHostName(
        self,
        resolutionReceiver: IResolutionReceiver,
        hostName: str,
        portNumber: int = 0,
        addressTypes: Sequence[type[IAddress]] | None = None,
        transportSemantics: str = "TCP",
    ) -> IHostResolution:
        resolution = _Resolution(hostName)
        resolutionReceiver.resolutionBegan(resolution)
        kind = type(self._address)
        resolutionReceiver.addressResolved(kind("UDP", self._address.host, portNumber))
        resolutionReceiver.resolutionComplete()
        return resolution


class ResolveFailed(Exception):
    """
    A name gave no address, or not in time: C{str()} says which.
    """


@dataclass(frozen=True)
class Resolution:
    """
    The addresses a round probes, in the resolver's order, at most
    C{max_addresses}; C{more} counts those left out.
    """

    addresses: tuple[Address, ...]
    more: int = 0


def familyOfAddress(address: Address) -> str:
    return "ipv6" if isinstance(address, IPv6Address) else "ipv4"


def resolveTarget(
    reactor: IClientReactor, target: Target, maxAddresses: int
) -> Deferred[Resolution]:
    """
    Every address of the target's name, A and AAAA, each once, by the
    reactor's resolver (getaddrinfo, as every program on the machine); an
    IP address is its own.  Fails with L{ResolveFailed} when there is none,
    or none within the target's timeout.
    """
    transport: Literal["TCP", "UDP"] = "UDP" if target.kind == "udp" else "TCP"
    if target.literal == "ipv4":
        return succeed(Resolution((IPv4Address(transport, target.host, 0),)))
    if target.literal == "ipv6":
        return succeed(Resolution((IPv6Address(transport, target.host, 0, 0, 0),)))
    try:
        resolving = addressesOf(reactor.nameResolver, target.host, 0, transport)
    except Exception as e:
        return fail(ResolveFailed(f"{target.host}: {e}"))

    def timedOut(result: object, timeout: float) -> Failure:
        return Failure(ResolveFailed(f"{target.host}: not resolved within {target.timeout:g} s"))

    def resolved(addresses: list[IPv4Address | IPv6Address]) -> Resolution:
        if not addresses:
            raise ResolveFailed(f"{target.host}: name does not resolve")
        return Resolution(tuple(addresses[:maxAddresses]), len(addresses) - maxAddresses)

    # Cancelled (the monitor stopping) or timed out, the resolver's answer,
    # whenever it comes, is ignored.
    resolving.addTimeout(target.timeout, reactor, onTimeoutCancel=timedOut)
    return resolving.addCallback(resolved)


@dataclass(frozen=True)
class ProbeResult:
    """
    One round against one address.

    @ivar result: the C{result} label: C{success}, C{timeout}, C{refused},
        C{closed}, C{mismatch} or C{error}.
    @ivar rtts: the round-trip times of the answers, in arrival order.
    @ivar jitter: the mean difference between consecutive round-trip times
        (seconds); L{None} with fewer than two answers.
    @ivar error: what went wrong, one line; L{None} on success.
    """

    result: str
    sent: int
    received: int
    mismatched: int
    rtts: tuple[float, ...]
    jitter: float | None
    error: str | None
    ended: float

    @property
    def succeeded(self) -> bool:
        return self.result == "success"

    @property
    def summary(self) -> tuple[float, float, float] | None:
        """
        The median, lowest and highest round-trip time; L{None} without
        answers.
        """
        if not self.rtts:
            return None
        ordered = sorted(self.rtts)
        middle = len(ordered) // 2
        median = (
            ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
        )
        return median, ordered[0], ordered[-1]


def _jitter(rtts: Sequence[float]) -> float | None:
    if len(rtts) < 2:
        return None
    return math.fsum(abs(b - a) for a, b in itertools.pairwise(rtts)) / (len(rtts) - 1)


def _resultOf(summary: Summary, count: int, ended: float) -> ProbeResult:
    stats = summary.stats
    error = summary.error
    if stats.mismatched:
        result = "mismatch"
    elif error is None:
        result = "success" if stats.received else "timeout"
    elif isinstance(error, TimedOut):
        result = "timeout"
    elif isinstance(error, ConnectFailed) and "refused" in str(error):
        result = "refused"
    elif isinstance(error, ClosedEarly):
        result = "closed"
    else:
        result = "error"
    text = str(error) if error is not None else None
    if result == "mismatch" and summary.firstProblem is not None:
        text = f"{stats.mismatched} replies differed (first: {summary.firstProblem})"
    elif result == "timeout" and text is None:
        text = f"no reply to any of {stats.sent} datagrams"
    rtts = tuple(stats.rtts)
    return ProbeResult(
        result=result,
        sent=max(count, stats.sent),
        received=stats.received,
        mismatched=stats.mismatched,
        rtts=rtts,
        jitter=_jitter(rtts),
        error=text,
        ended=ended,
    )


def _tlsOptions(target: Target) -> Any:
    from twisted.internet.ssl import CertificateOptions, optionsForClientTLS

    if target.verify:
        return optionsForClientTLS(target.host)
    return CertificateOptions(verify=False)


class Probe:
    """
    One round against one address (L{None} for an endpoint string, which
    connects as it says): L{run} fires with a L{ProbeResult}, never fails;
    L{interrupt} ends it early (the monitor stopping), and it then fires
    with C{interrupted} as its result.
    """

    def __init__(self, reactor: IClientReactor, target: Target, address: Address | None) -> None:
        self._reactor = reactor
        self.target = target
        self.address = address
        udp = target.kind == "udp"
        settings = ClientConfig(
            host=address.host if address is not None else "localhost",
            port=target.port or 7,
            protocol="udp" if udp else "tcp",
            endpoint=target.name if target.kind == "endpoint" else "",
            count=target.count,
            interval=target.spacing,
            size=target.size,
            timeout=target.timeout,
            max_loss=100.0 if udp else 0.0,
            json=True,
        )
        plan = makePlan(settings, messageGiven=False)
        out = cast(IO[str], _Discard())
        self._client: EchoClient | DatagramClient
        if udp:
            assert address is not None
            self._client = DatagramClient(reactor, plan, out, out, _OneAddress(address))
        else:
            endpoint = self._endpoint(address) if address is not None else None
            self._client = EchoClient(reactor, plan, out, out, endpoint=endpoint)

    def _endpoint(self, address: Address) -> IStreamClientEndpoint:
        from twisted.internet.endpoints import (
            TCP4ClientEndpoint,
            TCP6ClientEndpoint,
            wrapClientTLS,
        )

        target = self.target
        endpoint: IStreamClientEndpoint
        if isinstance(address, IPv6Address):
            endpoint = TCP6ClientEndpoint(
                self._reactor, address.host, target.port, timeout=target.timeout
            )
        else:
            endpoint = TCP4ClientEndpoint(
                self._reactor, address.host, target.port, timeout=target.timeout
            )
        if target.kind == "tls":
            endpoint = wrapClientTLS(_tlsOptions(target), endpoint)
        return endpoint

    def run(self) -> Deferred[ProbeResult]:
        count = self.target.count

        def done(summary: Summary) -> ProbeResult:
            result = _resultOf(summary, count, self._reactor.seconds())
            if isinstance(summary.error, Interrupted):
                return ProbeResult("interrupted", 0, 0, 0, (), None, str(summary.error), 0.0)
            return result

        try:
            running = self._client.run()
        except Exception as e:  # a plan the client cannot start: said on the page
            return succeed(
                ProbeResult("error", count, 0, 0, (), None, str(e), self._reactor.seconds())
            )
        return running.addCallback(done)

    def interrupt(self) -> None:
        self._client.interrupt()
