"""
The UDP sockets of C{workers = N} on this kernel: a C{SO_REUSEPORT} group
per listener, steered by source address with a classic BPF program
(L{echod.server.workers.datagrams}), on real loopback sockets in-process.
Every address of 127.0.0.0/8 is the loopback's, so a test can send from
many source addresses without root.
"""

from __future__ import annotations

import errno
import select
import socket
import sys
import time
from collections.abc import Iterator, Sequence

import pytest

from echod.errors import ListenError
from echod.server.limits import DatagramDrop
from echod.server.workers.datagrams import (
    DatagramGroup,
    DatagramReports,
    WorkerDatagramService,
    openDatagramGroup,
    steeredIndex,
)
from tests.environment import need, requireIPv6

SOURCES = [f"127.0.0.{i}" for i in range(2, 61)]


@pytest.fixture(autouse=True)
def linux() -> None:
    need(sys.platform.startswith("linux"), "SO_REUSEPORT groups steered by BPF are Linux's")


@pytest.fixture
def group() -> Iterator[DatagramGroup]:
    group = openDatagramGroup("udp:port=0:interface=127.0.0.1", 3)
    yield group
    group.close()


def landings(
    sockets: Sequence[socket.socket], datagrams: list[tuple[str, bytes]], target: tuple[str, int]
) -> dict[bytes, int]:
    """
    Send each C{(source address, payload)} from a fresh socket (a fresh
    port each time) to C{target}; return on which of C{sockets} (its
    index) each payload arrived.
    """
    for source, payload in datagrams:
        family = socket.AF_INET6 if ":" in source else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.bind((source, 0))
            s.sendto(payload, target)
    arrived: dict[bytes, int] = {}
    deadline = time.monotonic() + 10
    while len(arrived) < len(datagrams) and time.monotonic() < deadline:
        readable, _, _ = select.select(sockets, [], [], 0.5)
        for sock in readable:
            try:
                while True:
                    arrived[sock.recv(100, socket.MSG_DONTWAIT)] = sockets.index(sock)
            except BlockingIOError:
                pass
    assert len(arrived) == len(datagrams), f"{len(arrived)} of {len(datagrams)} arrived"
    return arrived


def test_eachSourceAddressAlwaysReachesTheSameSocket(group: DatagramGroup) -> None:
    """
    Three rounds from every source address, each datagram from a new port:
    an address always lands on the socket the program's hash names, which
    is its rank in the order the sockets were bound; every socket gets some.
    """
    assert group.steered and not group.shared
    target = group.sockets[0].getsockname()
    datagrams = [(src, f"{n} {src}".encode()) for n in range(3) for src in SOURCES]
    arrived = landings(group.sockets, datagrams, target)
    for payload, index in arrived.items():
        source = payload.split()[1].decode()
        assert index == steeredIndex(source, 3), payload
    assert set(arrived.values()) == {0, 1, 2}


def test_steeringLeavesOutADeadSocket(group: DatagramGroup) -> None:
    """
    Steered to sockets 0 and 2: nothing reaches 1, the sources of 0 and 2
    stay where they were, those of 1 spread over the others; steered to all
    again, they are back.
    """
    target = group.sockets[0].getsockname()
    group.steer([0, 2])
    arrived = landings(group.sockets, [(src, src.encode()) for src in SOURCES], target)
    assert set(arrived.values()) == {0, 2}
    for payload, index in arrived.items():
        assert index == steeredIndex(payload.decode(), 3, [0, 2])
        if steeredIndex(payload.decode(), 3) != 1:
            assert index == steeredIndex(payload.decode(), 3)
    group.steer([0, 1, 2])
    arrived = landings(group.sockets, [(src, b"again " + src.encode()) for src in SOURCES], target)
    assert {steeredIndex(p.split()[1].decode(), 3) for p in arrived} == set(arrived.values())


def test_dualStackGroupHashesIPv4AsIPv4() -> None:
    """
    On C{::} (dual-stack), IPv4 sources arrive as IPv4 packets and IPv6
    ones as IPv6: each lands where the hash of its own family says.
    """
    requireIPv6()
    group = openDatagramGroup("udp:port=0:interface=\\:\\:", 2)
    try:
        port = group.sockets[0].getsockname()[1]
        ipv4 = [(src, src.encode()) for src in SOURCES]
        arrived = landings(group.sockets, ipv4, ("127.0.0.1", port))
        arrived.update(landings(group.sockets, [("::1", b"::1")], ("::1", port)))
        for payload, index in arrived.items():
            assert index == steeredIndex(payload.decode(), 2), payload
    finally:
        group.close()


def test_boundAddressIsRefused() -> None:
    """
    With SO_REUSEPORT the group would silently join another socket's group
    (another echod's, or any process's of the same user that asks): a plain
    bind checks first, and fails there.
    """
    for reusePort in (False, True):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
            if reusePort:
                other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            other.bind(("127.0.0.1", 0))
            port = other.getsockname()[1]
            with pytest.raises(OSError) as caught:
                openDatagramGroup(f"udp:port={port}:interface=127.0.0.1", 2)
            assert caught.value.errno == errno.EADDRINUSE


def test_serviceRefusesABusyPortInOneLine() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
        other.bind(("127.0.0.1", 0))
        description = f"udp:port={other.getsockname()[1]}:interface=127.0.0.1"
        service = WorkerDatagramService([description], 2, DatagramReports())
        with pytest.raises(ListenError) as caught:
            service.privilegedStartService()
        assert str(caught.value) == f"cannot listen on {description}: address already in use"


def test_deadWorkersQueueIsDiscardedAndItsSourcesGoElsewhere() -> None:
    """
    A worker dies with datagrams queued on its socket: the main process
    steers its sources to the live worker and discards what was queued
    (counted: worker_down); once it is back, its sources are too.
    """
    service = WorkerDatagramService(["udp:port=0:interface=127.0.0.1"], 2, DatagramReports())
    service.privilegedStartService()
    try:
        service.resume(0)
        service.resume(1)
        (group,) = service.groups
        target = group.sockets[0].getsockname()
        ones = [src for src in SOURCES if steeredIndex(src, 2) == 1]
        for src in ones:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind((src, 0))
                s.sendto(b"queued", target)
        deadline = time.monotonic() + 10
        while select.select([group.sockets[1]], [], [], 0)[0] == [] and time.monotonic() < deadline:
            time.sleep(0.01)
        service.pause(1)
        assert service.live == {0}
        stats = service.datagramStats()
        assert stats.dropped[DatagramDrop.WORKER_DOWN] == stats.received == len(ones)
        arrived = landings(group.sockets, [(src, src.encode()) for src in ones], target)
        assert set(arrived.values()) == {0}
        service.resume(1)
        arrived = landings(group.sockets, [(src, b"back " + src.encode()) for src in ones], target)
        assert set(arrived.values()) == {1}
    finally:
        service.stopService()
    assert all(sock.fileno() == -1 for sock in group.sockets)
    service.pause(0)  # a worker exiting after the stop: nothing to steer
