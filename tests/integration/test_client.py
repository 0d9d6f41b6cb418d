"""
The echo client against real sockets on loopback, with the real reactor:
echod's own server started in-process (IPv4, IPv6, Unix), a server that listens
on IPv6 only (reached by falling back across families), and small misbehaving
servers: one that corrupts a byte, one that never answers, one that hangs up.
"""

from __future__ import annotations

import dataclasses
import io
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest_twisted
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import (
    IHostnameResolver,
    IListeningPort,
)
from twisted.internet.protocol import Factory, Protocol

from echod import app
from echod.client.errors import ExitStatus
from echod.client.plan import Plan, makePlan
from echod.client.run import runClient as startClient
from echod.client.service import EchoClientService
from echod.config import ClientConfig, Config, ServerConfig
from echod.server.listeners import EchoService
from tests.environment import hasIPv6, requireIPv6
from tests.testing import FixedResolver, needTLS, selfSigned

_F = TypeVar("_F")


def _typed(decorator: Any) -> Callable[[_F], _F]:
    """
    pytest-twisted's decorators, typed: they keep the signature.
    """
    return cast(Callable[[_F], _F], decorator)


inReactor = _typed(pytest_twisted.ensureDeferred)
asyncFixture = _typed(pytest_twisted.async_yield_fixture)


def getReactor() -> Any:
    from twisted.internet import reactor

    return reactor


class Run:
    """
    The outcome of one client run: exit status and what it printed.
    """

    def __init__(self, status: ExitStatus, out: str, err: str, seconds: float) -> None:
        self.status = status
        self.out = out
        self.err = err
        self.seconds = seconds


async def runClient(resolver: IHostnameResolver | None = None, **settings: object) -> Run:
    thePlan = makePlan(dataclasses.replace(ClientConfig(), **settings))  # type: ignore[arg-type]
    out, err = io.StringIO(), io.StringIO()
    started = time.monotonic()
    _, status = startClient(getReactor(), thePlan, out, err, resolver)
    result = await status
    return Run(result, out.getvalue(), err.getvalue(), time.monotonic() - started)


class EchoServer:
    """
    echod's service tree, started in-process on the given listeners.
    """

    def __init__(self, *listen: str) -> None:
        config = Config(server=ServerConfig(listen=listen, shutdown_timeout=1.0))
        self.root = app.makeService(config, getReactor())
        echo = self.root.getServiceNamed("tcp-echo")
        assert isinstance(echo, EchoService)
        self.echo = echo
        self.ports: list[int] = []

    async def start(self) -> EchoServer:
        self.root.startService()
        listening = await self.echo.whenListening()
        self.ports = [getattr(port.getHost(), "port", 0) for port in listening]
        return self

    async def stop(self) -> None:
        await self.root.stopService()


@asyncFixture
async def server() -> AsyncIterator[EchoServer]:
    """
    echod on 127.0.0.1 and, where the host has IPv6, on ::1; each on a port
    of its own.
    """
    listen = ["tcp:0:interface=127.0.0.1"]
    if hasIPv6():
        listen.append(r"tcp6:0:interface=\:\:1")
    running = await EchoServer(*listen).start()
    yield running
    await running.stop()


class _CorruptingEcho(Protocol):
    """
    Echoes, but changes the byte at offset C{factory.at} of the stream.
    """

    factory: Any
    seen = 0

    def dataReceived(self, data: bytes) -> None:
        at = self.factory.at - self.seen
        if 0 <= at < len(data):
            data = data[:at] + bytes([data[at] ^ 0x20]) + data[at + 1 :]
        self.seen += len(data)
        self.transport.write(data)  # type: ignore[union-attr]


class _Silent(Protocol):
    """
    Accepts and reads, never answers.
    """


class _HangUp(Protocol):
    """
    Echoes the first read's first half, then closes.
    """

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data[: len(data) // 2])  # type: ignore[union-attr]
        self.transport.loseConnection()  # type: ignore[union-attr]


class Listening:
    """
    A misbehaving server on 127.0.0.1, port chosen by the system.
    """

    def __init__(self, protocol: type[Protocol], **attributes: object) -> None:
        factory = Factory.forProtocol(protocol)
        for name, value in attributes.items():
            setattr(factory, name, value)
        self._port: IListeningPort = getReactor().listenTCP(0, factory, interface="127.0.0.1")
        host = self._port.getHost()
        assert isinstance(host, IPv4Address)
        self.number = host.port

    async def stop(self) -> None:
        await maybeDeferred(self._port.stopListening)


# --- against echod ----------------------------------------------------------------


@inReactor
async def test_oneShotIPv4(server: EchoServer) -> None:
    """
    One message over IPv4 comes back and prints the seed's line.
    """
    run = await runClient(host="127.0.0.1", port=server.ports[0])
    assert (run.status, run.out, run.err) == (0, "Received b'Hello, world'\n", "")


@inReactor
async def test_oneShotIPv6(server: EchoServer) -> None:
    """
    One message over IPv6 comes back and prints the seed's line.
    """
    requireIPv6()
    run = await runClient(host="::1", port=server.ports[1])
    assert (run.status, run.out, run.err) == (0, "Received b'Hello, world'\n", "")


@inReactor
async def test_localhostByName(server: EchoServer) -> None:
    """
    The name C{localhost}, resolved by the system, reaches the server.
    """
    run = await runClient(host="localhost", port=server.ports[0])
    assert (run.status, run.out) == (0, "Received b'Hello, world'\n")


@inReactor
async def test_pingIPv6(server: EchoServer) -> None:
    """
    Ping mode over IPv6: every reply verified, a line each, then the summary.
    """
    requireIPv6()
    run = await runClient(host="::1", port=server.ports[1], count=4, interval=0.01, size=1000)
    lines = run.out.splitlines()
    assert run.status == 0, run.err
    assert lines[0].startswith(f"ECHO ::1 port {server.ports[1]} ([::1]:{server.ports[1]})")
    assert [line.split(": seq=")[1].split()[0] for line in lines[1:5]] == ["1", "2", "3", "4"]
    assert lines[-2].startswith("4 sent, 4 received, 0 mismatched, 0.0% loss")
    assert lines[-1].startswith("rtt min/avg/max/p50/p99 = ")


@inReactor
async def test_pipelinedLargeMessages(server: EchoServer) -> None:
    """
    Messages larger than a socket read, sent faster than they come back,
    are still matched by byte counts.
    """
    run = await runClient(
        host="127.0.0.1", port=server.ports[0], count=20, interval=0.0001, size=300_000, json=True
    )
    assert run.status == 0, run.err
    assert '"received": 20' in run.out


@inReactor
async def test_bulk(server: EchoServer) -> None:
    """
    Bulk mode streams, verifies every byte, and reports MB/s.
    """
    run = await runClient(host="127.0.0.1", port=server.ports[0], bulk=16 * 1024 * 1024)
    assert run.status == 0, run.err
    last = run.out.splitlines()[-1]
    assert last.startswith("16777216 bytes sent, 16777216 bytes verified in ")
    assert last.endswith(" MB/s")


@inReactor
async def test_unixEndpointString(tmp_path: Path) -> None:
    """
    A Twisted endpoint string is accepted instead of host and port.
    """
    path = tmp_path / "echo.sock"
    unixServer = await EchoServer(f"unix:{path}").start()
    try:
        run = await runClient(endpoint=f"unix:path={path}")
    finally:
        await unixServer.stop()
    assert (run.status, run.out) == (0, "Received b'Hello, world'\n")


@inReactor
async def test_tcpEndpointString(server: EchoServer) -> None:
    """
    A C{tcp:} client endpoint string works too.
    """
    run = await runClient(
        endpoint=f"tcp:host=127.0.0.1:port={server.ports[0]}", count=2, interval=0
    )
    assert run.status == 0, run.err


# --- falling back across families ----------------------------------------------------


@inReactor
async def test_fallBackToIPv6() -> None:
    """
    A name whose first address (IPv4) refuses still reaches a server that
    listens on IPv6 only, at its second address.
    """
    requireIPv6()
    v6only = await EchoServer(r"tcp6:0:interface=\:\:1").start()
    try:
        resolver = FixedResolver("127.0.0.1", "::1")
        run = await runClient(resolver, host="echo.test", port=v6only.ports[0], count=2, interval=0)
    finally:
        await v6only.stop()
    assert run.status == 0, run.err
    assert f"([::1]:{v6only.ports[0]})" in run.out.splitlines()[0]


@inReactor
async def test_forcedFamilyDoesNotFallBack() -> None:
    """
    With -4, the IPv6 address is never tried: an IPv6-only server is
    refused, and the error names the address tried.
    """
    requireIPv6()
    v6only = await EchoServer(r"tcp6:0:interface=\:\:1").start()
    try:
        resolver = FixedResolver("::1", "127.0.0.1")
        run = await runClient(resolver, host="echo.test", port=v6only.ports[0], family="ipv4")
    finally:
        await v6only.stop()
    assert run.status == ExitStatus.UNREACHABLE
    assert run.err == (
        f"echod-client: connection refused by echo.test port {v6only.ports[0]} (tried 127.0.0.1)\n"
    )


# --- faults ---------------------------------------------------------------------------


@inReactor
async def test_corruptedByte() -> None:
    """
    A server that changes one byte is caught: mismatch status, and the byte.
    """
    port = Listening(_CorruptingEcho, at=3)
    try:
        run = await runClient(host="127.0.0.1", port=port.number)
    finally:
        await port.stop()
    assert run.status == ExitStatus.MISMATCH
    assert run.out == "Received b'HelLo, world'\n"
    assert run.err == (
        "echod-client: the echo differs from what was sent (sent 0x6c, received 0x4c at byte 3)\n"
    )


@inReactor
async def test_corruptedByteInBulk() -> None:
    """
    One byte changed deep in a bulk stream is found, with its offset.
    """
    port = Listening(_CorruptingEcho, at=5_000_000)
    try:
        run = await runClient(host="127.0.0.1", port=port.number, bulk=8_000_000)
    finally:
        await port.stop()
    assert run.status == ExitStatus.MISMATCH
    assert run.err.endswith("at byte 5000000\n")


@inReactor
async def test_silentServerTimesOut() -> None:
    """
    A server that accepts but never answers: the reply timeout ends the run.
    """
    port = Listening(_Silent)
    try:
        run = await runClient(host="127.0.0.1", port=port.number, timeout=0.3)
    finally:
        await port.stop()
    assert run.status == ExitStatus.TIMEOUT
    assert run.err == "echod-client: no reply to message 1 within 0.3 s\n"
    assert 0.3 <= run.seconds < 2


@inReactor
async def test_serverHangsUp() -> None:
    """
    A server that closes before echoing everything: closed-early status.
    """
    port = Listening(_HangUp)
    try:
        run = await runClient(host="127.0.0.1", port=port.number)
    finally:
        await port.stop()
    assert run.status == ExitStatus.CLOSED
    assert run.err == (
        "echod-client: the server closed the connection after 0 of 1 replies, 6 bytes of reply 1\n"
    )


@inReactor
async def test_refused() -> None:
    """
    Nothing listening: refused, its own status.
    """
    port = Listening(_Silent)
    number = port.number
    await port.stop()
    run = await runClient(host="127.0.0.1", port=number)
    assert run.status == ExitStatus.UNREACHABLE
    assert (
        run.err
        == f"echod-client: connection refused by 127.0.0.1 port {number} (tried 127.0.0.1)\n"
    )


@inReactor
async def test_unresolvableName() -> None:
    """
    A name under .invalid (never resolves, RFC 6761) fails fast with its own
    status.
    """
    run = await runClient(host="no-such-host.invalid", port=7, timeout=10)
    assert run.status == ExitStatus.UNRESOLVED
    assert run.err == "echod-client: no-such-host.invalid: name does not resolve\n"
    assert run.seconds < 5


@inReactor
async def test_missingUnixSocket(tmp_path: Path) -> None:
    """
    A Unix socket that is not there: cannot connect.
    """
    run = await runClient(endpoint=f"unix:path={tmp_path}/none.sock")
    assert run.status == ExitStatus.UNREACHABLE
    assert run.err.startswith(f"echod-client: cannot connect to unix:path={tmp_path}/none.sock: ")


# --- the twistd service ---------------------------------------------------------------


def _plan(**settings: object) -> Plan:
    return makePlan(dataclasses.replace(ClientConfig(), **settings))  # type: ignore[arg-type]


@inReactor
async def test_serviceRunsOnce(server: EchoServer) -> None:
    """
    The twistd service runs the plan once when started and keeps the status.
    """
    out, err = io.StringIO(), io.StringIO()
    clientService = EchoClientService(
        _plan(host="127.0.0.1", port=server.ports[0]), getReactor(), out, err
    )
    clientService.startService()
    status = await clientService.result
    await clientService.stopService()
    assert (status, out.getvalue()) == (0, "Received b'Hello, world'\n")


@inReactor
async def test_serviceStoppedMidRun(server: EchoServer) -> None:
    """
    Stopping the service (twistd shutting down) interrupts the run, prints
    the summary so far, and waits for the connection to close.
    """
    out, err = io.StringIO(), io.StringIO()
    clientService = EchoClientService(
        _plan(host="127.0.0.1", port=server.ports[0], count=1000, interval=0.02),
        getReactor(),
        out,
        err,
    )
    clientService.startService()
    waited: Deferred[None] = Deferred()
    getReactor().callLater(0.2, waited.callback, None)
    await waited
    await clientService.stopService()
    assert clientService.status == ExitStatus.INTERRUPTED
    assert "echo statistics" in out.getvalue()
    assert err.getvalue().startswith("echod-client: interrupted after ")


# --- TLS (needs Twisted's tls extra) ------------------------------------------------------


@inReactor
async def test_tlsEndpointString(tmp_path: Path) -> None:
    """
    A C{tls:} endpoint string reaches echod's C{ssl:} listener, verifying
    its certificate; an untrusted certificate is a connect failure.
    """
    needTLS()
    key, cert, roots = selfSigned(tmp_path)
    tlsServer = await EchoServer(
        f"ssl:port=0:interface=127.0.0.1:privateKey={key}:certKey={cert}"
    ).start()
    port = tlsServer.ports[0]
    try:
        trusted = await runClient(
            endpoint=f"tls:localhost:{port}:trustRoots={roots}", count=3, interval=0
        )
        untrusted = await runClient(endpoint=f"tls:localhost:{port}")
    finally:
        await tlsServer.stop()
    assert trusted.status == 0, trusted.err
    assert "3 sent, 3 received, 0 mismatched" in trusted.out
    assert untrusted.status == ExitStatus.UNREACHABLE
    assert untrusted.err == (
        f"echod-client: TLS with tls:localhost:{port} failed: certificate verify failed\n"
    )
