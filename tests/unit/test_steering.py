"""
The program that steers a UDP listener's datagrams to the workers by source
address (L{echod.server.workers.datagrams.steeringProgram}), run by the
classic BPF interpreter of the tests over IP headers, and the main
process's side of the workers' UDP totals: no socket, no process.
"""

from __future__ import annotations

import ipaddress
import struct
from collections import Counter

import pytest

from echod.server.limits import DatagramDrop
from echod.server.stats import DatagramStats
from echod.server.workers.datagrams import (
    DatagramReports,
    WorkerDatagramService,
    steeredIndex,
    steeringProgram,
)
from tests.classicbpf import run

# The kernel's limit on a classic program's length (BPF_MAXINSNS).
MAX_INSTRUCTIONS = 4096


def ipv4Header(source: str) -> bytes:
    return struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        28,
        0,
        0,
        64,
        17,
        0,
        ipaddress.IPv4Address(source).packed,
        ipaddress.IPv4Address("127.0.0.1").packed,
    )


def ipv6Header(source: str) -> bytes:
    return (
        struct.pack("!IHBB", 6 << 28, 8, 17, 64)
        + ipaddress.IPv6Address(source).packed
        + ipaddress.IPv6Address("::1").packed
    )


def steer(program: list[tuple[int, int, int, int]], source: str, payload: bytes = b"") -> int:
    """
    The rank the program returns for a datagram from C{source}: its packet
    is the UDP payload, the IP header is reached from SKF_NET_OFF.
    """
    header = ipv6Header(source) if ":" in source else ipv4Header(source)
    return run(program, payload, network=header)


IPV4 = [f"127.0.0.{i}" for i in range(1, 255)] + [f"192.0.2.{i}" for i in range(0, 256, 7)]
IPV6 = ["::1", "2001:db8::1", "2001:db8:1::1", "fe80::1"] + [f"2001:db8::{i:x}" for i in range(200)]


@pytest.mark.parametrize("count", [2, 3, 4, 7, 256])
def test_programPicksWhatPythonComputes(count: int) -> None:
    """
    For every source, the kernel's program and L{steeredIndex} agree, the
    rank is one of the group's, and neither the payload (the source port
    lives in the UDP header, which the program never reads) nor its size
    changes it.
    """
    program = steeringProgram(count)
    assert len(program) <= MAX_INSTRUCTIONS
    for source in IPV4 + IPV6:
        rank = steer(program, source)
        assert rank == steeredIndex(source, count), source
        assert 0 <= rank < count
        assert steer(program, source, b"x" * 1000) == rank
    # An IPv4 source reaching a dual-stack socket is hashed as IPv4.
    assert steeredIndex("::ffff:127.0.0.9", count) == steeredIndex("127.0.0.9", count)


def test_sourcesSpreadOverEveryRank() -> None:
    """
    The low bits of neighbouring addresses (127.0.0.x) reach the hash: a
    few hundred sources use every socket, none more than twice its share.
    """
    for count in (2, 3, 4):
        spread = Counter(steeredIndex(source, count) for source in IPV4)
        assert set(spread) == set(range(count))
        assert max(spread.values()) < 2 * len(IPV4) / count, spread


@pytest.mark.parametrize(
    ("count", "live"),
    [(2, [0]), (2, [1]), (3, [0, 2]), (4, [3]), (4, [1, 2]), (256, list(range(0, 256, 3)))],
)
def test_onlyTheDeadWorkersSourcesMove(count: int, live: list[int]) -> None:
    """
    While some workers are down, the program returns live ranks only; a
    source whose worker lives keeps it (and its token bucket there), and a
    dead worker's sources spread over the live ones.
    """
    everyone = steeringProgram(count)
    program = steeringProgram(count, live)
    assert len(program) <= MAX_INSTRUCTIONS
    moved: Counter[int] = Counter()
    for source in IPV4 + IPV6:
        before = steer(everyone, source)
        now = steer(program, source)
        assert now == steeredIndex(source, count, live), source
        assert now in live
        if before in live:
            assert now == before
        else:
            moved[now] += 1
    if len(live) > 1 and count < 10:
        assert set(moved) == set(live), moved


def test_everyoneOrNoOneLiveIsTheWholeGroup() -> None:
    assert steeringProgram(3, []) == steeringProgram(3) == steeringProgram(3, [2, 0, 1])


def test_reportsStayMonotonicAcrossExits() -> None:
    """
    The workers' last reports add up; a worker that exits leaves what it
    last reported, and its restart counts from 0 again.
    """
    reports = DatagramReports()
    reports.report("worker-1", DatagramStats(received=10, echoed=8, bytesEchoed=80))
    reports.report("worker-2", DatagramStats(received=5, echoed=5, bytesEchoed=50))
    reports.retire("worker-1")
    reports.report("worker-1", DatagramStats(received=1, echoed=1, bytesEchoed=10))
    total = reports.total()
    assert (total.received, total.echoed, total.bytesEchoed) == (16, 14, 140)


def test_reportCrossesThePipeAsJSON() -> None:
    import json

    stats = DatagramStats(received=3, echoed=1, bytesEchoed=9)
    stats.dropped[DatagramDrop.RATE_SOURCE] = 2
    assert DatagramStats.fromJSON(json.loads(json.dumps(stats.asJSON()))) == stats


def test_mainProcessCountsWhatItDiscarded() -> None:
    """
    The totals the metrics read: the workers' reports, and the datagrams
    the main process discarded from a dead worker's socket itself.
    """
    reports = DatagramReports()
    service = WorkerDatagramService([], 2, reports)
    reports.report("worker-2", DatagramStats(received=4, echoed=4))
    service.discarded.received = 3
    service.discarded.dropped[DatagramDrop.WORKER_DOWN] = 3
    total = service.datagramStats()
    assert (total.received, total.echoed) == (7, 4)
    assert total.dropped == {DatagramDrop.WORKER_DOWN: 3}
    assert service.workerDatagramStats() == {"worker-2": DatagramStats(received=4, echoed=4)}
