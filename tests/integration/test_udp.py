"""
UDP echo on real loopback sockets, in-process.
"""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest
import pytest_twisted

from echod import config
from echod.app import makeService
from echod.server.limits import DatagramDrop
from echod.server.listeners import UDPEchoService
from tests.environment import requireIPv6, requireRoot


def reactor() -> Any:
    from twisted.internet import reactor as globalReactor

    return globalReactor


class UDPServer:
    def __init__(self, listen: list[str], **udp: object) -> None:
        settings = config.UDPConfig(listen=tuple(listen), **udp)  # type: ignore[arg-type]
        cfg = config.Config(server=config.ServerConfig(listen=()), udp=settings)
        self.root = makeService(cfg, reactor())
        self.udp: UDPEchoService = next(s for s in self.root if isinstance(s, UDPEchoService))

    def start(self) -> list[int]:
        self.root.privilegedStartService()
        self.root.startService()
        return [listener.port.getHost().port for listener in self.udp.listeners]

    async def stop(self) -> None:
        await self.root.stopService()


def exchange(
    family: socket.AddressFamily,
    target: tuple[str, int],
    payloads: list[bytes],
    source: tuple[str, int] | None = None,
    wait: float = 2.0,
) -> list[bytes]:
    """
    Send each payload, collect whatever comes back within C{wait} seconds.
    """
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        if source is not None:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(source)
        for payload in payloads:
            s.sendto(payload, target)
        replies: list[bytes] = []
        deadline = time.monotonic() + wait
        s.settimeout(0.2)
        while time.monotonic() < deadline and len(replies) < len(payloads):
            try:
                replies.append(s.recv(70000))
            except TimeoutError:
                continue
        return replies


def inThread(f: Any, *args: Any, **kwargs: Any) -> Any:
    from twisted.internet.threads import deferToThread

    return deferToThread(f, *args, **kwargs)


@pytest_twisted.ensureDeferred
async def test_dualStackEchoesBothFamilies() -> None:
    requireIPv6()
    server = UDPServer(["udp:port=0"], source_packets_per_second=0.0)
    (port,) = server.start()
    try:
        v4 = await inThread(exchange, socket.AF_INET, ("127.0.0.1", port), [b"four"])
        v6 = await inThread(exchange, socket.AF_INET6, ("::1", port), [b"six"])
        assert v4 == [b"four"] and v6 == [b"six"]
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_largestAndEmptyDatagrams() -> None:
    """
    Never less than what came in: 65,507 bytes over IPv4 (65,527 over
    IPv6) come back whole, and an empty datagram comes back empty.
    """
    server = UDPServer(["udp:port=0:interface=127.0.0.1"])
    (port,) = server.start()
    try:
        big = bytes(range(256)) * 255 + b"\x01" * 227
        assert len(big) == 65507
        replies = await inThread(exchange, socket.AF_INET, ("127.0.0.1", port), [big, b""])
        assert replies == [big, b""]
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_largestIPv6Datagram() -> None:
    requireIPv6()
    server = UDPServer([r"udp:port=0:interface=\:\:1"])
    (port,) = server.start()
    try:
        big = b"\x5a" * 65527
        assert await inThread(exchange, socket.AF_INET6, ("::1", port), [big]) == [big]
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_wellKnownSourcePortsGetNoReply() -> None:
    """
    Crafted datagrams from the echo, daytime, chargen, time, DNS and NTP
    ports get no reply, and each drop is counted.
    """
    requireRoot()
    server = UDPServer(["udp:port=0:interface=127.0.0.1"])
    (port,) = server.start()
    try:
        for source in (7, 13, 19, 37, 53, 123):
            replies = await inThread(
                exchange,
                socket.AF_INET,
                ("127.0.0.1", port),
                [b"loop?"],
                ("127.0.0.1", source),
                0.5,
            )
            assert replies == [], source
        assert server.udp.stats.dropped[DatagramDrop.SOURCE_PORT] == 6
        ok = await inThread(exchange, socket.AF_INET, ("127.0.0.1", port), [b"fine"])
        assert ok == [b"fine"]
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_floodFromOneSourceIsRateLimited() -> None:
    """
    A bounded flood of 2,000 datagrams from one source: the replies stop at
    about the burst, the rest are counted as rate drops.
    """
    server = UDPServer(
        ["udp:port=0:interface=127.0.0.1"], source_packets_per_second=50.0, burst_seconds=1.0
    )
    (port,) = server.start()
    try:
        flood = [i.to_bytes(4, "big") for i in range(2000)]
        replies = await inThread(exchange, socket.AF_INET, ("127.0.0.1", port), flood, None, 2.0)
        stats = server.udp.stats
        assert 50 <= len(replies) <= 200
        assert stats.echoed == len(replies)
        assert stats.dropped[DatagramDrop.RATE_SOURCE] == stats.received - stats.echoed
        assert stats.received > 500
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_busyUDPPortIsListenError() -> None:
    from echod.errors import ListenError

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        server = UDPServer([f"udp:port={port}:interface=127.0.0.1"])
        with pytest.raises(ListenError, match=f"cannot listen on udp:port={port}"):
            server.start()
