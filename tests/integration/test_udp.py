"""
UDP echo on real loopback sockets, in-process.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any, cast

import pytest
import pytest_twisted
from twisted.internet.address import IPv4Address

from echod import config
from echod.app import makeService
from echod.server import datagram
from echod.server.limits import DatagramDrop
from echod.server.listeners import EchoService, UDPEchoService
from tests.environment import requireIPv6, requireRoot
from tests.testing import echo, inThread


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
        ports = [listener.port for listener in self.udp.listeners]
        return [port.getHost().port for port in ports if port is not None]

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


@pytest.fixture(params=["C", "Python"])
def batches(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """
    Each test using it runs on both batches: recvmmsg/sendmmsg in echod's C
    helper, and the pure-Python recvfrom/sendto used where it is not built.
    """
    if request.param == "C":
        assert datagram.BATCH_IN_C, "echod's C helper is not built"
    else:
        monkeypatch.setattr(datagram, "BATCH_IN_C", False)
    yield request.param


@pytest_twisted.ensureDeferred
async def test_bothBatchesApplyTheSameRules(batches: str) -> None:
    """
    A burst mixing sizes, sources and rules comes back the same through
    either batch: every datagram allowed comes back whole, to its sender,
    the others are counted by reason.
    """
    server = UDPServer(
        ["udp:port=0:interface=127.0.0.1"],
        # A burst of 100, refilled so slowly (one every 20 s) that a slow
        # machine sending the burst over seconds earns no extra echo.
        source_packets_per_second=0.05,
        burst_seconds=2000.0,
        deny=("127.0.0.3/32",),
    )
    (port,) = server.start()
    expected = server.udp.listeners[0].port
    assert expected is not None
    kind = type(expected.batch).__name__
    assert kind == ("DatagramBatch" if batches == "C" else "PythonDatagramBatch")
    try:
        payloads = [b"", b"x", b"\xa5" * 1400, b"\x01" * 65507] + [
            n.to_bytes(2, "big") * 100 for n in range(150)
        ]
        allowed = await inThread(exchange, socket.AF_INET, ("127.0.0.1", port), payloads, None, 3.0)
        denied = await inThread(
            exchange, socket.AF_INET, ("127.0.0.1", port), [b"no"], ("127.0.0.3", 0), 0.5
        )
        # The first 100 (the burst) in order, byte for byte; then nothing.
        assert allowed == payloads[:100]
        assert denied == []
        stats = server.udp.stats
        assert stats.received == len(payloads) + 1
        assert stats.echoed == 100
        assert stats.bytesEchoed == sum(map(len, payloads[:100]))
        assert stats.dropped == {DatagramDrop.RATE_SOURCE: len(payloads) - 100, DatagramDrop.ACL: 1}
    finally:
        await server.stop()


_FLOOD = """
import socket, sys, time
port, seconds = int(sys.argv[1]), float(sys.argv[2])
socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(8)]
for s in socks:
    s.connect(("127.0.0.1", port))
    s.setblocking(False)
end, sent = time.monotonic() + seconds, 0
while time.monotonic() < end:
    for s in socks:
        for _ in range(64):
            try:
                s.send(b"f" * 64)
                sent += 1
            except OSError:
                pass
print(sent)
"""


@pytest_twisted.ensureDeferred
async def test_tcpServedDuringUDPFlood() -> None:
    """
    While a flood of datagrams fills the UDP socket (a process sending as
    fast as it can, reading nothing back), a TCP client of the same echod
    keeps getting its echoes: the UDP port takes a bounded number of
    datagrams per reactor turn.
    """
    cfg = config.Config(
        server=config.ServerConfig(listen=("tcp:0:interface=127.0.0.1",)),
        udp=config.UDPConfig(
            listen=("udp:port=0:interface=127.0.0.1",),
            source_packets_per_second=0.0,
            source_bytes_per_second=0.0,
            global_packets_per_second=0.0,
            global_bytes_per_second=0.0,
        ),
    )
    root = makeService(cfg, reactor())
    root.privilegedStartService()
    root.startService()
    try:
        tcp = next(s for s in root if isinstance(s, EchoService))
        udp = next(s for s in root if isinstance(s, UDPEchoService))
        (listening,) = await tcp.whenListening()
        tcpPort = cast(IPv4Address, listening.getHost()).port
        udpPort = udp.listeners[0].port
        assert udpPort is not None
        flooder = subprocess.Popen(
            [sys.executable, "-c", _FLOOD, str(udpPort.getHost().port), "4"],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 10
            while udp.stats.received < 10000:
                assert time.monotonic() < deadline, "the flood did not arrive"
                await inThread(time.sleep, 0.01)
            before = udp.stats.received
            for n in range(20):
                payload = b"tcp %d" % n
                reply = await inThread(echo, "127.0.0.1", tcpPort, payload, 2.0)
                assert reply == payload
            assert udp.stats.received > before, "the flood stopped before the TCP echoes"
        finally:
            flooder.kill()
            flooder.wait()
    finally:
        await root.stopService()


@pytest_twisted.ensureDeferred
async def test_largestAndEmptyDatagrams(batches: str) -> None:
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
async def test_largestIPv6Datagram(batches: str) -> None:
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
