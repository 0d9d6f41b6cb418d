"""
Tests for the UDP echo and its guard, with a fake clock, batch and socket.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Sequence
from typing import cast

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
from tests.testing import FakeDatagramBatch, FakeDatagramSocket


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
