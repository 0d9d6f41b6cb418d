# -*- test-case-name: tests.unit.test_limits -*-
"""
echod's own limits: who may connect, how many at once, and how loudly refusals
are reported.

These are applied to the real peer address (after a PROXY header, when there is
one), by the echo factory and protocol themselves.  Twisted's
C{twisted.protocols.policies} wrappers are not used: any C{ProtocolWrapper}
turns a half-close into a full close and loses unsent echo, and
C{LimitConnectionsByPeer} fails on every connection in Twisted 26.10.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime

__all__ = [
    "AccessList",
    "ConnectionLimits",
    "IPAddress",
    "LogBudget",
    "Refusal",
    "describePeer",
    "peerIP",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def peerIP(address: IAddress | None) -> IPAddress | None:
    """
    The IP address of a peer, with IPv4-mapped IPv6 addresses (what a dual-stack
    C{::} listener reports for IPv4 clients) turned back into IPv4, so that one
    client has one identity in logs, limits and ACLs.  L{None} for peers without
    an IP address (Unix sockets).
    """
    if not isinstance(address, IPv4Address | IPv6Address):
        return None
    try:
        ip = ipaddress.ip_address(address.host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def describePeer(address: IAddress | None) -> str:
    """
    A peer as people write it: C{192.0.2.1:5000}, C{[2001:db8::1]:5000},
    C{unix:/run/echod.sock}.
    """
    ip = peerIP(address)
    if ip is not None and isinstance(address, IPv4Address | IPv6Address):
        if ip.version == 6:
            return f"[{ip}]:{address.port}"
        return f"{ip}:{address.port}"
    if isinstance(address, UNIXAddress):
        name = address.name
        if isinstance(name, bytes):
            name = name.decode("utf-8", "replace")
        return f"unix:{name or '(unnamed)'}"
    return str(address)


class Refusal:
    """
    Why a connection was refused: the values are the C{reason} label of the
    refusal metric and the word in the log line.
    """

    ACL = "acl"
    MAX_CONNECTIONS = "max_connections"
    MAX_CONNECTIONS_PER_PEER = "max_connections_per_peer"
    SHUTTING_DOWN = "shutting_down"


@dataclass(frozen=True)
class AccessList:
    """
    C{deny} wins; with a non-empty C{allow}, only addresses in it pass.  Peers
    without an IP address (Unix sockets) are governed by file permissions and
    always pass.
    """

    allow: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    deny: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def fromStrings(cls, allow: Iterable[str], deny: Iterable[str]) -> AccessList:
        return cls(
            tuple(ipaddress.ip_network(n) for n in allow),
            tuple(ipaddress.ip_network(n) for n in deny),
        )

    def permits(self, ip: IPAddress | None) -> bool:
        if ip is None:
            return True
        if any(ip in network for network in self.deny):
            return False
        return not self.allow or any(ip in network for network in self.allow)


class ConnectionLimits:
    """
    Open connections, counted in total and per peer IP, against the configured
    caps (0: no cap).  L{admit} and L{release} must pair up; the settings may be
    replaced at any time (a reload) without touching the counts.
    """

    def __init__(self, maxTotal: int, maxPerPeer: int, acl: AccessList) -> None:
        self.maxTotal = maxTotal
        self.maxPerPeer = maxPerPeer
        self.acl = acl
        self.total = 0
        self._perPeer: Counter[IPAddress] = Counter()

    def reconfigure(self, maxTotal: int, maxPerPeer: int, acl: AccessList) -> None:
        """
        Apply new caps to connections opened from now on; open ones stay.
        """
        self.maxTotal, self.maxPerPeer, self.acl = maxTotal, maxPerPeer, acl

    def admit(self, ip: IPAddress | None) -> str | None:
        """
        Count a new connection from C{ip}, or say why it is refused (a
        L{Refusal} value) without counting it.
        """
        if not self.acl.permits(ip):
            return Refusal.ACL
        if self.maxTotal and self.total >= self.maxTotal:
            return Refusal.MAX_CONNECTIONS
        if ip is not None:
            if self.maxPerPeer and self._perPeer[ip] >= self.maxPerPeer:
                return Refusal.MAX_CONNECTIONS_PER_PEER
            self._perPeer[ip] += 1
        self.total += 1
        return None

    def release(self, ip: IPAddress | None) -> None:
        """
        Forget a connection that L{admit} counted.
        """
        self.total -= 1
        if ip is not None:
            left = self._perPeer[ip] - 1
            if left > 0:
                self._perPeer[ip] = left
            else:
                del self._perPeer[ip]

    def openFrom(self, ip: IPAddress) -> int:
        return self._perPeer.get(ip, 0)

    def peers(self) -> int:
        """
        How many distinct peer addresses have connections open.
        """
        return len(self._perPeer)


class LogBudget:
    """
    At most C{perInterval} log lines of one kind per C{interval} seconds; the
    rest are counted and reported as one summary line when the interval ends.
    A flood of refused connections or dropped datagrams then costs a bounded
    number of lines and no memory beyond a counter per reason.
    """

    def __init__(
        self,
        clock: IReactorTime,
        emitSummary: Callable[[dict[str, int], float], None],
        perInterval: int = 10,
        interval: float = 10.0,
    ) -> None:
        self._clock = clock
        self._emitSummary = emitSummary
        self.perInterval = perInterval
        self.interval = interval
        self._windowStart = clock.seconds()
        self._spent = 0
        self._suppressed: Counter[str] = Counter()
        self._summaryCall: IDelayedCall | None = None

    def allow(self, reason: str) -> bool:
        """
        Whether a line for this event may be logged now; if not, it is counted
        for the summary at the end of the interval.
        """
        now = self._clock.seconds()
        if now - self._windowStart >= self.interval and not self._suppressed:
            self._windowStart, self._spent = now, 0
        if self._spent < self.perInterval:
            self._spent += 1
            return True
        self._suppressed[reason] += 1
        if self._summaryCall is None:
            delay = max(0.0, self._windowStart + self.interval - now)
            self._summaryCall = self._clock.callLater(delay, self._windowEnded)
        return False

    def flush(self) -> None:
        """
        Emit the summary of suppressed lines now (at shutdown), if any, and
        cancel the pending one.
        """
        if self._summaryCall is not None and self._summaryCall.active():
            self._summaryCall.cancel()
        self._summaryCall = None
        if self._suppressed:
            now = self._clock.seconds()
            self._emitSummary(dict(self._suppressed), now - self._windowStart)
            self._suppressed.clear()
            self._windowStart, self._spent = now, 0

    def _windowEnded(self) -> None:
        self._summaryCall = None
        self.flush()
