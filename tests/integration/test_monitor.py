"""
The monitor's probes against real sockets on loopback, with the real
reactor: servers that echo (TCP, UDP, TLS, IPv4 and IPv6), refuse, never
answer, or corrupt what they echo, and a UDP relay that loses every fifth
datagram; then the scheduler running rounds of several at once.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest_twisted
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import maybeDeferred
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.internet.task import deferLater

from echod.interfaces import IClientReactor
from echod.monitor.collector import exposition
from echod.monitor.probes import Probe, ProbeResult, resolveTarget
from echod.monitor.schedule import Scheduler
from echod.monitor.targets import Target
from tests.environment import requireIPv6
from tests.testing import needTLS, selfSigned

_F = TypeVar("_F")


def _typed(decorator: Any) -> Callable[[_F], _F]:
    return cast(Callable[[_F], _F], decorator)


inReactor = _typed(pytest_twisted.ensureDeferred)


def getReactor() -> Any:
    from twisted.internet import reactor

    return reactor


def target(
    kind: str, host: str, port: int, count: int = 5, timeout: float = 1.0, **more: Any
) -> Target:
    name = f"{kind}://{host}:{port}" if ":" not in host else f"{kind}://[{host}]:{port}"
    settings: dict[str, Any] = {
        "interval": 10.0,
        "timeout": timeout,
        "size": 64,
        "count": count,
        "spacing": 0.0,
        "verify": True,
        "labels": (),
    }
    settings.update(more)
    return Target(name=name, kind=kind, host=host, port=port, **settings)


async def probe(t: Target) -> ProbeResult:
    address = IPv6Address("TCP", t.host, 0) if ":" in t.host else IPv4Address("TCP", t.host, 0)
    return await Probe(cast(IClientReactor, getReactor()), t, address).run()


class _Echo(Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]


class _Silent(Protocol):
    pass


class _Corrupting(Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data[:-1] + bytes([data[-1] ^ 0x01]))  # type: ignore[union-attr]


class _DatagramEcho(DatagramProtocol):
    def __init__(self, corrupt: bool = False, silent: bool = False) -> None:
        self.corrupt, self.silent = corrupt, silent

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        if self.silent:
            return
        if self.corrupt:
            datagram = datagram[:-1] + bytes([datagram[-1] ^ 0x01])
        self.transport.write(datagram, addr)  # type: ignore[union-attr]


class _LossyRelay(DatagramProtocol):
    """
    Forwards datagrams to C{server} and the replies back, dropping every
    C{every}-th datagram on its way to the server.
    """

    def __init__(self, server: tuple[str, int], every: int) -> None:
        self.server, self.every = server, every
        self.seen = 0
        self.client: Any = None

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        if addr == self.server:
            self.transport.write(datagram, self.client)  # type: ignore[union-attr]
            return
        self.client = addr
        self.seen += 1
        if self.seen % self.every:
            self.transport.write(datagram, self.server)  # type: ignore[union-attr]


class Servers:
    def __init__(self) -> None:
        self.ports: list[IListeningPort] = []

    def tcp(self, protocol: type[Protocol], interface: str = "127.0.0.1") -> int:
        port = getReactor().listenTCP(0, Factory.forProtocol(protocol), interface=interface)
        self.ports.append(port)
        return int(port.getHost().port)

    def udp(self, protocol: DatagramProtocol, interface: str = "127.0.0.1") -> int:
        port = getReactor().listenUDP(0, protocol, interface=interface)
        self.ports.append(port)
        return int(port.getHost().port)

    def closedPort(self) -> int:
        number = self.tcp(_Silent)
        self.ports.pop().stopListening()
        return number

    async def stop(self) -> None:
        for port in self.ports:
            await maybeDeferred(port.stopListening)


@inReactor
async def test_tcpUpOverBothFamilies() -> None:
    """
    An echo server answers every message of a round, over IPv4 and IPv6,
    each address on its own.
    """
    requireIPv6()
    servers = Servers()
    try:
        v4 = await probe(target("tcp", "127.0.0.1", servers.tcp(_Echo)))
        v6 = await probe(target("tcp", "::1", servers.tcp(_Echo, "::1")))
    finally:
        await servers.stop()
    for result in (v4, v6):
        assert (result.result, result.sent, result.received, result.mismatched) == (
            "success",
            5,
            5,
            0,
        )
        assert len(result.rtts) == 5 and all(0 < rtt < 1 for rtt in result.rtts)
        assert result.jitter is not None and result.error is None


@inReactor
async def test_tcpRefused() -> None:
    servers = Servers()
    closed = servers.closedPort()
    result = await probe(target("tcp", "127.0.0.1", closed))
    assert (result.result, result.received) == ("refused", 0)
    assert result.error == f"connection refused by 127.0.0.1 port {closed}"


@inReactor
async def test_tcpTimesOut() -> None:
    """
    A server that accepts and never echoes times out after the timeout.
    """
    servers = Servers()
    reactor = getReactor()
    try:
        started = reactor.seconds()
        result = await probe(target("tcp", "127.0.0.1", servers.tcp(_Silent), timeout=0.3))
    finally:
        await servers.stop()
    assert result.result == "timeout"
    assert result.error == "no reply to message 1 within 0.3 s"
    assert 0.3 <= reactor.seconds() - started < 2


@inReactor
async def test_tcpCorrupting() -> None:
    servers = Servers()
    try:
        result = await probe(target("tcp", "127.0.0.1", servers.tcp(_Corrupting)))
    finally:
        await servers.stop()
    assert result.result == "mismatch"
    assert result.mismatched >= 1
    assert result.error is not None and "replies differed" in result.error


@inReactor
async def test_udpUpBlackholeRefusedCorrupting() -> None:
    """
    Over UDP: an echo answers all, a blackhole none (lost after the
    timeout), a closed port refuses, a corrupter mismatches.
    """
    servers = Servers()
    try:
        up = await probe(target("udp", "127.0.0.1", servers.udp(_DatagramEcho())))
        hole = await probe(
            target("udp", "127.0.0.1", servers.udp(_DatagramEcho(silent=True)), timeout=0.3)
        )
        refused = await probe(target("udp", "127.0.0.1", servers.closedPort()))
        bad = await probe(target("udp", "127.0.0.1", servers.udp(_DatagramEcho(corrupt=True))))
    finally:
        await servers.stop()
    assert (up.result, up.received, up.mismatched) == ("success", 5, 0)
    assert up.jitter is not None
    assert (hole.result, hole.sent, hole.received) == ("timeout", 5, 0)
    assert refused.result == "refused"
    assert (bad.result, bad.mismatched) == ("mismatch", 5)


@inReactor
async def test_udpBehindLossyRelay() -> None:
    """
    Behind a relay that drops every fifth datagram, a round of 20 loses
    exactly 4: loss 0.2, and the round still succeeds (loss is its own
    metric).
    """
    servers = Servers()
    try:
        echo = servers.udp(_DatagramEcho())
        relay = servers.udp(_LossyRelay(("127.0.0.1", echo), 5))
        result = await probe(target("udp", "127.0.0.1", relay, count=20, timeout=0.3))
    finally:
        await servers.stop()
    assert (result.result, result.sent, result.received) == ("success", 20, 16)


@inReactor
async def test_tls(tmp_path: Path) -> None:
    """
    Over TLS the certificate is verified by default (a self-signed one
    fails the round); with verify = false the round succeeds.
    """
    needTLS()
    from twisted.internet.ssl import PrivateCertificate

    key, cert, _ = selfSigned(tmp_path)
    pem = cert.read_bytes() + key.read_bytes()
    options = PrivateCertificate.loadPEM(pem).options()
    factory = Factory.forProtocol(_Echo)
    port = getReactor().listenSSL(0, factory, options, interface="127.0.0.1")
    number = port.getHost().port
    try:
        trusting = await probe(target("tls", "127.0.0.1", number, verify=False))
        verifying = await probe(target("tls", "127.0.0.1", number))
    finally:
        await maybeDeferred(port.stopListening)
    assert (trusting.result, trusting.received) == ("success", 5)
    assert verifying.result == "error"
    assert verifying.error is not None and "certificate verify failed" in verifying.error


@inReactor
async def test_resolveBothFamiliesOfLocalhost() -> None:
    """
    A name is resolved by the reactor's resolver, every address once; an
    unknown name fails in one line.
    """
    reactor = cast(IClientReactor, getReactor())
    resolution = await resolveTarget(reactor, target("tcp", "localhost", 7), 8)
    assert "127.0.0.1" in [a.host for a in resolution.addresses]
    failure = resolveTarget(reactor, target("tcp", "name.invalid", 7), 8)
    try:
        await failure
    except Exception as e:
        assert str(e) == "name.invalid: name does not resolve"
    else:
        raise AssertionError("name.invalid resolved")


@inReactor
async def test_schedulerRounds() -> None:
    """
    The scheduler runs rounds of several targets with real probes; their
    results reach the metrics.
    """
    servers = Servers()
    reactor = getReactor()
    scheduler = Scheduler(cast(IClientReactor, reactor), 2, 8)
    up = target("tcp", "127.0.0.1", servers.tcp(_Echo), interval=0.5, count=2)
    udp = target("udp", "127.0.0.1", servers.udp(_DatagramEcho()), interval=0.5, count=2)
    down = target("tcp", "127.0.0.1", servers.closedPort(), interval=0.5, count=2)
    scheduler.update([up, udp, down])
    scheduler.start()
    try:
        for _ in range(100):
            states = scheduler.states.values()
            if all(a.last is not None for s in states for a in s.addresses.values()) and all(
                s.addresses for s in states
            ):
                break
            await deferLater(reactor, 0.05, lambda: None)
    finally:
        await scheduler.stop()
        await servers.stop()
    success = {t.name: [a.up for a in s.addresses.values()] for t, s in scheduler.states.items()}
    assert success == {up.name: [True], udp.name: [True], down.name: [False]}

    text = exposition(scheduler).decode()
    labels = f'target="{udp.name}",address="127.0.0.1",family="ipv4",protocol="udp"'
    assert f"echod_probe_success{{{labels}}} 1\n" in text
