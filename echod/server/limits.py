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
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from echod.addresses import IPAddress, IPNetwork
from echod.config import UDPConfig

__all__ = [
    "AccessList",
    "ConnectionLimits",
    "DatagramDrop",
    "DatagramGuard",
    "LogBudget",
    "NetworkList",
    "Refusal",
    "TokenBucket",
    "logSummary",
]


class Refusal:
    """
    Why a connection was refused: the values are the C{reason} label of the
    refusal metric and the word in the log line.
    """

    ACL = "acl"
    MAX_CONNECTIONS = "max_connections"
    MAX_CONNECTIONS_PER_PEER = "max_connections_per_peer"
    SHUTTING_DOWN = "shutting_down"
    PROXY_HEADER = "proxy_header"
    UNTRUSTED_PROXY = "untrusted_proxy"


@dataclass(frozen=True)
class NetworkList:
    """
    A list of networks, as the config writes them (CIDR strings); an IPv4
    address is found in IPv4 networks whether it came as itself or mapped
    into IPv6 (L{peerIP} unmaps it).  An empty list contains nothing.
    """

    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def fromStrings(cls, networks: Iterable[str]) -> NetworkList:
        return cls(tuple(ipaddress.ip_network(n) for n in networks))

    def __contains__(self, ip: object) -> bool:
        return any(ip in network for network in self.networks)

    def __bool__(self) -> bool:
        return bool(self.networks)


@dataclass(frozen=True)
class AccessList:
    """
    C{deny} wins; with a non-empty C{allow}, only addresses in it pass.  Peers
    without an IP address (Unix sockets) are governed by file permissions and
    always pass.
    """

    allow: NetworkList = NetworkList()
    deny: NetworkList = NetworkList()

    @classmethod
    def fromStrings(cls, allow: Iterable[str], deny: Iterable[str]) -> AccessList:
        return cls(NetworkList.fromStrings(allow), NetworkList.fromStrings(deny))

    def permits(self, ip: IPAddress | None) -> bool:
        if ip is None:
            return True
        if ip in self.deny:
            return False
        return not self.allow or ip in self.allow


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

    def needsPeer(self) -> bool:
        """
        Whether admitting needs the peer's IP address (ACLs, per-peer caps).
        """
        return bool(self.maxPerPeer or self.acl.allow or self.acl.deny)

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


def logSummary(log: Logger, what: str, event: str) -> Callable[[dict[str, int], float], None]:
    """
    A L{LogBudget}'s summary as one warning: C{N more WHAT in Ss (reason: n,
    ...)}.
    """

    def summary(counts: dict[str, int], seconds: float) -> None:
        log.warn(
            "{total} more " + what + " in {seconds:.1f}s ({counts})",
            event=event,
            total=sum(counts.values()),
            seconds=seconds,
            counts=", ".join(f"{k}: {v}" for k, v in sorted(counts.items())),
        )

    return summary


class DatagramDrop:
    """
    Why a datagram got no reply: the values are the C{reason} label of the
    drop metric and the word in the log line.
    """

    SOURCE_PORT = "source_port"
    SOURCE_ADDRESS = "source_address"
    ACL = "acl"
    RATE_SOURCE = "rate_source"
    RATE_GLOBAL = "rate_global"
    SEND_ERROR = "send_error"
    # workers = N: queued on the socket of a worker that died, discarded by
    # the main process before its restart.
    WORKER_DOWN = "worker_down"


class TokenBucket:
    """
    Packets and bytes per second with a burst of C{burst} seconds' worth;
    a rate of 0 means no limit on that measure.  L{DatagramGuard.decide}
    checks a datagram against it and takes its tokens (inline: it runs for
    every datagram).
    """

    __slots__ = (
        "byteRate",
        "bytes",
        "capacityBytes",
        "capacityPackets",
        "last",
        "packetRate",
        "packets",
    )

    def __init__(self, packetRate: float, byteRate: float, burst: float, now: float) -> None:
        self.packetRate, self.byteRate = packetRate, byteRate
        self.capacityPackets, self.capacityBytes = packetRate * burst, byteRate * burst
        self.packets, self.bytes = self.capacityPackets, self.capacityBytes
        self.last = now

    def refill(self, now: float) -> None:
        elapsed = now - self.last
        if elapsed > 0:
            self.packets = min(self.capacityPackets, self.packets + elapsed * self.packetRate)
            self.bytes = min(self.capacityBytes, self.bytes + elapsed * self.byteRate)
            self.last = now


class DatagramGuard:
    """
    Decides whether a UDP datagram gets its echo, as inetd does and more:

      - no reply to source ports of other UDP services (a reply to chargen or
        to another echo server starts an endless loop) or to port 0 (RFC 768:
        no reply wanted);
      - no reply to sources that cannot be real senders (multicast,
        broadcast, unspecified): a spoofed one would make us a reflector;
      - the ACL;
      - token buckets per source and for all sources together, so that a
        reflector on an unblocked port, or a spoofed flood, gets a bounded
        rate of replies.

    In that order, for every datagram: L{decide} is the one statement of the
    rules, for a batch of datagrams (what the batched UDP port reads at
    once); L{check} asks it about one.

    At most C{max_sources} buckets are kept, least recently used first out, so
    a spoofed flood of sources costs bounded memory.  What the first three
    rules say of a source address is remembered (at most L{KNOWN_HOSTS}
    addresses, forgotten all at once past that, and at each reconfiguration)
    so that a datagram from a known address costs no address parsing.
    """

    # What decide() writes for a datagram: 0 (echo it) or the index of its
    # drop reason here.
    VERDICTS: tuple[str | None, ...] = (
        None,
        DatagramDrop.SOURCE_PORT,
        DatagramDrop.SOURCE_ADDRESS,
        DatagramDrop.ACL,
        DatagramDrop.RATE_SOURCE,
        DatagramDrop.RATE_GLOBAL,
    )
    KNOWN_HOSTS = 65536

    def __init__(self, settings: UDPConfig, clock: IReactorTime, share: int = 1) -> None:
        self._clock = clock
        self.share = share
        self.reconfigure(settings)

    def reconfigure(self, settings: UDPConfig) -> None:
        """
        Apply C{settings}; with a C{share} of N (N worker processes, each
        with a guard of its own), the global rates are divided by N.
        """
        self._blocked = _portTable(settings.blocked_source_ports)
        self.acl = AccessList.fromStrings(settings.allow, settings.deny)
        self._rates = (
            settings.source_packets_per_second,
            settings.source_bytes_per_second,
            settings.burst_seconds,
        )
        self._perSource = bool(
            settings.source_packets_per_second or settings.source_bytes_per_second
        )
        self.maxSources = settings.max_sources
        self._sources: OrderedDict[IPAddress, TokenBucket] = OrderedDict()
        self._hosts: dict[str, tuple[int, IPAddress | None]] = {}
        self._global = TokenBucket(
            settings.global_packets_per_second / self.share,
            settings.global_bytes_per_second / self.share,
            settings.burst_seconds,
            self._clock.seconds(),
        )
        self._globalLimited = bool(
            settings.global_packets_per_second or settings.global_bytes_per_second
        )

    def check(self, host: str, port: int, size: int) -> str | None:
        """
        L{None} if the datagram from C{(host, port)} is to be echoed (and its
        tokens are taken), else the L{DatagramDrop} reason.
        """
        return self.VERDICTS[self.decide([(host, port, size)])[0]]

    def decide(self, datagrams: Sequence[tuple[str, int, int]]) -> bytearray:
        """
        For each datagram C{(host, port, size)}, in order: 0 if it is to be
        echoed (its tokens are taken), else the index of its drop reason in
        L{VERDICTS}.
        """
        verdicts = bytearray(len(datagrams))
        blocked, hosts = self._blocked, self._hosts
        perSource, globalLimited = self._perSource, self._globalLimited
        sources = self._sources
        now = self._clock.seconds()
        # The token counts live in local variables during the batch (this
        # runs for every datagram): the global bucket's, and the bucket of
        # the source met last, written back when another source comes and
        # at the end.
        globalBucket = self._global
        globalBucket.refill(now)
        gp, gb = globalBucket.packets, globalBucket.bytes
        gpr, gbr = globalBucket.packetRate, globalBucket.byteRate
        bucket: TokenBucket | None = None
        bucketIP: IPAddress | None = None
        bp = bb = bpr = bbr = 0.0
        for i, (host, port, size) in enumerate(datagrams):
            if blocked[port]:
                verdicts[i] = 1
                continue
            known = hosts.get(host)
            if known is None:
                known = self._learn(host)
            verdict, ip = known
            if ip is None:
                verdicts[i] = verdict
                continue
            if perSource:
                if ip is not bucketIP:
                    if bucket is not None:
                        bucket.packets, bucket.bytes = bp, bb
                    bucket = sources.get(ip)
                    if bucket is None:
                        bucket = TokenBucket(*self._rates, now)
                        sources[ip] = bucket
                        if len(sources) > self.maxSources:
                            sources.popitem(last=False)
                    else:
                        sources.move_to_end(ip)
                        bucket.refill(now)
                    bucketIP = ip
                    bp, bb, bpr, bbr = (
                        bucket.packets,
                        bucket.bytes,
                        bucket.packetRate,
                        bucket.byteRate,
                    )
                if (bpr and bp < 1) or (bbr and bb < size):
                    verdicts[i] = 4
                    continue
            if globalLimited:
                if (gpr and gp < 1) or (gbr and gb < size):
                    verdicts[i] = 5
                    continue
                gp -= 1
                gb -= size
            if perSource:
                bp -= 1
                bb -= size
        if bucket is not None:
            bucket.packets, bucket.bytes = bp, bb
        if globalLimited:
            globalBucket.packets, globalBucket.bytes = gp, gb
        return verdicts

    def _learn(self, host: str) -> tuple[int, IPAddress | None]:
        """
        What the address rules say of C{host}: (0, its address) or (its
        verdict, L{None}); remembered.
        """
        try:
            ip: IPAddress = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            known: tuple[int, IPAddress | None] = (2, None)
        else:
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped
            if ip.is_multicast or ip.is_unspecified or ip == _BROADCAST:
                known = (2, None)
            elif not self.acl.permits(ip):
                known = (3, None)
            else:
                known = (0, ip)
        if len(self._hosts) >= self.KNOWN_HOSTS:
            self._hosts.clear()
        self._hosts[host] = known
        return known

    def sources(self) -> int:
        """
        How many source addresses have a bucket now.
        """
        return len(self._sources)


_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


def _portTable(ranges: Iterable[tuple[int, int]]) -> bytearray:
    table = bytearray(65536)
    # Port 0 always: RFC 768 says the sender wants no reply.
    table[0] = 1
    for low, high in ranges:
        table[low : high + 1] = b"\x01" * (high - low + 1)
    return table
