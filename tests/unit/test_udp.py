"""
Tests for the UDP echo and its guard, with a fake clock, batch and socket.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from collections import OrderedDict
from collections.abc import Sequence
from typing import cast

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogEvent, capturedLogs

from echod.config import UDPConfig
from echod.server.datagram import (
    BATCH,
    ROUNDS,
    DatagramEcho,
    DatagramEchoPort,
    datagramDropLog,
)
from echod.server.limits import DatagramDrop, DatagramGuard
from echod.server.stats import DatagramStats
from tests.testing import FakeDatagramBatch, FakeDatagramSocket, examples


def guard(**settings: object) -> tuple[DatagramGuard, Clock]:
    clock = Clock()
    return DatagramGuard(UDPConfig(**settings), clock), clock  # type: ignore[arg-type]


class DatagramGuardTests:
    def test_wellKnownSourcePortsGetNoReply(self) -> None:
        """
        Replies to echo, daytime, chargen, time, DNS, NTP... would loop.
        """
        g, _ = guard()
        for port in (7, 13, 19, 37, 53, 123, 1023, 2049, 11211):
            assert g.check("192.0.2.1", port, 10) == DatagramDrop.SOURCE_PORT
        assert g.check("192.0.2.1", 1024, 10) is None
        assert g.check("192.0.2.1", 50000, 10) is None

    def test_portZeroAlwaysBlocked(self) -> None:
        """
        Port 0 means no reply is wanted, whatever the configured list says.
        """
        g, _ = guard(blocked_source_ports=((7, 7),))
        assert g.check("192.0.2.1", 0, 1) == DatagramDrop.SOURCE_PORT
        assert g.check("192.0.2.1", 19, 1) is None

    def test_impossibleSources(self) -> None:
        g, _ = guard()
        for host in (
            "224.0.0.1",
            "255.255.255.255",
            "0.0.0.0",
            "ff02::1",
            "::",
            "::ffff:239.1.1.1",
        ):
            assert g.check(host, 40000, 1) == DatagramDrop.SOURCE_ADDRESS, host

    def test_acl(self) -> None:
        g, _ = guard(deny=("198.51.100.0/24",), allow=("198.51.0.0/16", "2001:db8::/32"))
        assert g.check("::ffff:198.51.100.1", 40000, 1) == DatagramDrop.ACL
        assert g.check("198.51.1.1", 40000, 1) is None
        assert g.check("2001:db8::5", 40000, 1) is None
        assert g.check("203.0.113.1", 40000, 1) == DatagramDrop.ACL

    def test_perSourcePacketRate(self) -> None:
        """
        A source gets its burst, then the rate; another source is unaffected.
        """
        g, clock = guard(source_packets_per_second=10.0, burst_seconds=1.0)
        results = [g.check("192.0.2.1", 40000, 1) for _ in range(15)]
        assert results.count(None) == 10
        assert results[-1] == DatagramDrop.RATE_SOURCE
        assert g.check("192.0.2.2", 40000, 1) is None
        clock.advance(0.5)
        assert [g.check("192.0.2.1", 40000, 1) for _ in range(6)].count(None) == 5

    def test_perSourceByteRate(self) -> None:
        g, _ = guard(source_bytes_per_second=1000.0, source_packets_per_second=0.0)
        assert g.check("192.0.2.1", 40000, 600) is None
        assert g.check("192.0.2.1", 40000, 600) == DatagramDrop.RATE_SOURCE
        assert g.check("192.0.2.1", 40000, 400) is None

    def test_globalRate(self) -> None:
        """
        Many sources together are held to the global rate.
        """
        g, _ = guard(global_packets_per_second=100.0, source_packets_per_second=0.0)
        results = [g.check(f"10.0.{i // 250}.{i % 250 + 1}", 40000, 1) for i in range(300)]
        assert results.count(None) == 100
        assert results[-1] == DatagramDrop.RATE_GLOBAL

    def test_sourcesAreBounded(self) -> None:
        """
        A flood from spoofed sources keeps at most max_sources buckets.
        """
        g, _ = guard(max_sources=100, global_packets_per_second=0.0)
        for i in range(5000):
            g.check(f"10.{i // 65536}.{(i // 256) % 256}.{i % 256}", 40000, 1)
        assert g.sources() == 100

    def test_noLimits(self) -> None:
        g, _ = guard(
            source_packets_per_second=0.0,
            source_bytes_per_second=0.0,
            global_packets_per_second=0.0,
            global_bytes_per_second=0.0,
        )
        assert all(g.check("192.0.2.1", 40000, 65000) is None for _ in range(10000))
        assert g.sources() == 0


def port(
    capacity: int = 64, **settings: object
) -> tuple[DatagramEchoPort, FakeDatagramBatch, MemoryReactorClock]:
    reactor = MemoryReactorClock()
    udp = UDPConfig(**settings)  # type: ignore[arg-type]
    echo = DatagramEcho(DatagramGuard(udp, reactor), DatagramStats(), datagramDropLog(reactor, udp))
    batch = FakeDatagramBatch(capacity)
    sock = cast(socket.socket, FakeDatagramSocket())
    return DatagramEchoPort(sock, echo, reactor, batch), batch, reactor


class DatagramEchoPortTests:
    def test_echoesToSender(self) -> None:
        p, batch, reactor = port()
        p.startListening()
        assert p in reactor.getReaders()
        batch.arrive(b"ping", "::ffff:192.0.2.1", 40000)
        batch.arrive(b"", "2001:db8::1", 40001)
        p.doRead()
        assert batch.sent == [
            (b"ping", ("::ffff:192.0.2.1", 40000)),
            (b"", ("2001:db8::1", 40001)),
        ]
        assert p.echo.stats.received == 2
        assert p.echo.stats.echoed == 2
        assert p.echo.stats.bytesEchoed == 4

    def test_dropsCountedAndLogLinesBounded(self) -> None:
        p, batch, reactor = port(drop_log_interval=10.0)
        with capturedLogs() as events:
            for _ in range(100):
                batch.arrive(b"x", "192.0.2.1", 19)
            p.doRead()
            reactor.advance(10)
        assert batch.sent == []
        assert p.echo.stats.dropped[DatagramDrop.SOURCE_PORT] == 100
        lines: Sequence[LogEvent] = [e for e in events if e.get("event") == "datagram.dropped"]
        assert len(lines) == 5
        assert lines[0]["source"] == "192.0.2.1:19"
        summaries = [e for e in events if e.get("event") == "datagram.dropped.summary"]
        assert summaries[0]["total"] == 95

    def test_mixedBatchKeepsOrderAndCounts(self) -> None:
        """
        In one batch, each datagram meets the rules in order: the echoes go
        out in the order they came, the drops are counted by reason.
        """
        p, batch, _ = port(source_packets_per_second=2.0, burst_seconds=1.0)
        for n in range(5):
            batch.arrive(b"a%d" % n, "192.0.2.1", 40000)
            batch.arrive(b"b%d" % n, "192.0.2.2", 53)
        batch.arrive(b"c", "224.0.0.1", 40000)
        p.doRead()
        assert batch.sent == [(b"a0", ("192.0.2.1", 40000)), (b"a1", ("192.0.2.1", 40000))]
        stats = p.echo.stats
        assert (stats.received, stats.echoed, stats.bytesEchoed) == (11, 2, 4)
        assert stats.dropped == {
            DatagramDrop.RATE_SOURCE: 3,
            DatagramDrop.SOURCE_PORT: 5,
            DatagramDrop.SOURCE_ADDRESS: 1,
        }

    def test_refusedSendIsADrop(self) -> None:
        """
        An echo the kernel will not take now is dropped and counted as
        C{send_error}, not queued; the others of the batch go on.
        """
        p, batch, _ = port()
        batch.refuse.add(b"full")
        with capturedLogs() as events:
            for data in (b"one", b"full", b"two"):
                batch.arrive(data, "192.0.2.1", 40000)
            p.doRead()
        assert [data for data, _ in batch.sent] == [b"one", b"two"]
        stats = p.echo.stats
        assert (stats.echoed, stats.bytesEchoed) == (2, 6)
        assert stats.dropped == {DatagramDrop.SEND_ERROR: 1}
        (line,) = [e for e in events if e.get("event") == "datagram.dropped"]
        assert line["reason"] == os.strerror(errno.EAGAIN)

    def test_boundedPerReactorTurn(self) -> None:
        """
        One reactor turn takes at most ROUNDS batches: a flood waiting on
        the socket leaves the reactor time for its other descriptors.
        """
        p, batch, _ = port(capacity=BATCH, source_packets_per_second=0.0,
                           source_bytes_per_second=0.0, global_packets_per_second=0.0,
                           global_bytes_per_second=0.0)  # fmt: skip
        for n in range(BATCH * (ROUNDS + 2)):
            batch.arrive(b"%d" % n, "192.0.2.1", 40000)
        p.doRead()
        assert batch.receives == ROUNDS
        assert len(batch.sent) == BATCH * ROUNDS
        p.doRead()
        assert len(batch.sent) == BATCH * (ROUNDS + 2)

    def test_stopListeningClosesTheSocket(self) -> None:
        p, _, reactor = port()
        p.startListening()
        p.stopListening()
        assert p not in reactor.getReaders()
        assert p.fileno() == -1


class ReferenceGuard:
    """
    The guard's rules written the plain way, one datagram at a time, with
    nothing remembered but the buckets: what L{DatagramGuard.decide}, which
    keeps its counts in local variables and remembers sources, must agree
    with.
    """

    def __init__(self, settings: UDPConfig, share: int = 1) -> None:
        self.s = settings
        self.share = share
        self.buckets: OrderedDict[object, list[float]] = OrderedDict()
        burst = settings.burst_seconds
        self.globalRates = (
            settings.global_packets_per_second / share,
            settings.global_bytes_per_second / share,
        )
        self.globalBucket = [self.globalRates[0] * burst, self.globalRates[1] * burst, 0.0]

    def _refill(self, bucket: list[float], rates: tuple[float, float], now: float) -> None:
        elapsed = now - bucket[2]
        if elapsed > 0:
            burst = self.s.burst_seconds
            bucket[0] = min(rates[0] * burst, bucket[0] + elapsed * rates[0])
            bucket[1] = min(rates[1] * burst, bucket[1] + elapsed * rates[1])
            bucket[2] = now

    @staticmethod
    def _fits(bucket: list[float], rates: tuple[float, float], size: int) -> bool:
        return (not rates[0] or bucket[0] >= 1) and (not rates[1] or bucket[1] >= size)

    def check(self, host: str, port: int, size: int, now: float) -> int:
        s = self.s
        if port == 0 or any(low <= port <= high for low, high in s.blocked_source_ports):
            return 1
        ip = ipaddress.ip_address(host)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if ip.is_multicast or ip.is_unspecified or str(ip) == "255.255.255.255":
            return 2
        networks = [ipaddress.ip_network(n) for n in s.deny]
        if any(ip in n for n in networks if n.version == ip.version):
            return 3
        allowed = [ipaddress.ip_network(n) for n in s.allow]
        if allowed and not any(ip in n for n in allowed if n.version == ip.version):
            return 3
        rates = (s.source_packets_per_second, s.source_bytes_per_second)
        bucket = None
        if any(rates):
            bucket = self.buckets.get(ip)
            if bucket is None:
                bucket = [rates[0] * s.burst_seconds, rates[1] * s.burst_seconds, now]
                self.buckets[ip] = bucket
                if len(self.buckets) > s.max_sources:
                    self.buckets.popitem(last=False)
            else:
                self.buckets.move_to_end(ip)
                self._refill(bucket, rates, now)
            if not self._fits(bucket, rates, size):
                return 4
        if any(self.globalRates):
            self._refill(self.globalBucket, self.globalRates, now)
            if not self._fits(self.globalBucket, self.globalRates, size):
                return 5
            self.globalBucket[0] -= 1
            self.globalBucket[1] -= size
        if bucket is not None:
            bucket[0] -= 1
            bucket[1] -= size
        return 0


_HOSTS = ["192.0.2.1", "::ffff:192.0.2.1", "192.0.2.2", "2001:db8::1", "198.51.100.9",
          "224.0.0.5", "::", "10.0.0.1"]  # fmt: skip


@settings(max_examples=examples(300), deadline=None)
@given(
    batches=st.lists(
        st.tuples(
            st.floats(0, 0.5),  # time before the batch
            st.lists(
                st.tuples(
                    st.sampled_from(_HOSTS),
                    st.sampled_from([0, 7, 53, 1024, 40000, 40001]),
                    st.integers(0, 2000),
                ),
                max_size=40,
            ),
        ),
        max_size=12,
    ),
    sourcePackets=st.sampled_from([0.0, 3.0, 20.0]),
    sourceBytes=st.sampled_from([0.0, 2000.0]),
    globalPackets=st.sampled_from([0.0, 10.0]),
    maxSources=st.integers(1, 4),
    share=st.integers(1, 3),
)
def test_decideAgreesWithTheRulesOneByOne(
    batches: list[tuple[float, list[tuple[str, int, int]]]],
    sourcePackets: float,
    sourceBytes: float,
    globalPackets: float,
    maxSources: int,
    share: int,
) -> None:
    """
    Whatever the batches, sources, sizes, rates, time and the bound on
    sources, L{DatagramGuard.decide} gives each datagram the verdict the
    rules written one datagram at a time give it.
    """
    udp = UDPConfig(
        blocked_source_ports=((0, 1023),),
        source_packets_per_second=sourcePackets,
        source_bytes_per_second=sourceBytes,
        global_packets_per_second=globalPackets,
        global_bytes_per_second=0.0,
        burst_seconds=1.0,
        max_sources=maxSources,
        deny=("10.0.0.0/8",),
    )
    clock = Clock()
    guard = DatagramGuard(udp, clock, share=share)
    reference = ReferenceGuard(udp, share)
    for advance, datagrams in batches:
        clock.advance(advance)
        expected = [reference.check(h, p, n, clock.seconds()) for h, p, n in datagrams]
        assert list(guard.decide(datagrams)) == expected
