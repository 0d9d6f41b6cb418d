"""
echod's immediate-write transports on real sockets: what is sent comes back
in order across partial writes, the peer is paused past the high-water mark,
the in-place echo stops when the protocol stops echoing, TLS listeners keep
their protocol in the loop, and the switch turns them off.
"""

from __future__ import annotations

import contextlib
import select
import socket
import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import tcp

from echod.server import fastpath
from tests.environment import need
from tests.testing import Server, eventually, inThread, needTLS, recvAll, selfSigned


def needHelper() -> None:
    need(fastpath.INPLACE_IN_C, "echod's C helper was not built")


@pytest.fixture(params=["C helper", "no C helper"])
def inPlace(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """
    Run the test with the in-place echo of echod's C helper, then without it
    (what runs where it was not built: the protocol echoes through the
    immediate write).
    """
    if request.param == "C helper":
        needHelper()
    else:
        monkeypatch.setattr(fastpath, "INPLACE_IN_C", False)
    return str(request.param)


def pattern(size: int) -> bytes:
    return b"".join(i.to_bytes(4, "big") for i in range(size // 4))


async def connected(server: Server) -> tuple[socket.socket, Any]:
    s = socket.create_connection(("127.0.0.1", server.ports[0]))
    await eventually(lambda: server.factory.connections, timeout=1)
    (protocol,) = server.factory.connections
    return s, protocol


@pytest.mark.fastpath
@pytest_twisted.ensureDeferred
async def test_transportsFollowTheSwitch(inPlace: str) -> None:
    on = await Server(["tcp:0:interface=127.0.0.1"]).start()
    off = await Server(["tcp:0:interface=127.0.0.1"], fast_paths=False).start()
    try:
        fast, fastProtocol = await connected(on)
        slow, slowProtocol = await connected(off)
        fastTransport = (
            fastpath.EchoTCPServer if inPlace == "C helper" else fastpath.ImmediateWriteTCPServer
        )
        assert type(fastProtocol.transport) is fastTransport
        assert type(slowProtocol.transport) is tcp.Server
        fast.close()
        slow.close()
    finally:
        await on.stop()
        await off.stop()


@pytest.mark.fastpath
@pytest_twisted.ensureDeferred
async def test_inPlaceEchoCountsOnTheProtocol() -> None:
    """
    The in-place echo sends every byte back and counts it on the protocol,
    as C{dataReceived} would; the protocol's C{dataReceived} is not called.
    """
    needHelper()
    server = await Server(["tcp:0:interface=127.0.0.1"]).start()
    try:
        s, protocol = await connected(server)
        assert protocol.echoing
        called: list[bytes] = []
        protocol.dataReceived = called.append

        def exchange() -> bytes:
            s.settimeout(10)
            s.sendall(b"x" * 5000)
            return recvAll(s, 5000)

        assert await inThread(exchange) == b"x" * 5000
        assert protocol.received == 5000
        assert called == []
        # An echo is a reply: sent at once, not after Nagle's wait.
        assert protocol.transport.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        s.close()
    finally:
        await server.stop()


@pytest.mark.fastpath
@pytest_twisted.ensureDeferred
async def test_noInPlaceEchoOnceFinishing(inPlace: str) -> None:
    """
    Once the protocol stops echoing (an orderly close at shutdown), the
    transport hands what it reads to the protocol, which discards it: the
    peer gets the earlier echo, then EOF, and nothing of its late bytes.
    """
    server = await Server(["tcp:0:interface=127.0.0.1"]).start()
    try:
        s, protocol = await connected(server)
        s.settimeout(10)
        await inThread(lambda: s.sendall(b"early"))
        assert await inThread(lambda: recvAll(s, 5)) == b"early"
        protocol.finish("test")
        assert not protocol.echoing
        # The end of file has reached the peer (seen, not read).
        await eventually(lambda: select.select([s], [], [], 0)[0])
        await inThread(lambda: s.sendall(b"late"))
        assert await inThread(lambda: recvAll(s, None)) == b""
        await eventually(lambda: protocol.discarded, timeout=1)
        assert (protocol.received, protocol.discarded) == (9, 4)
        s.close()
    finally:
        await server.stop()


@pytest.mark.fastpath
@pytest_twisted.ensureDeferred
async def test_tlsListenersKeepTheirProtocol(tmp_path: Path) -> None:
    """
    Under TLS the transport carries ciphertext: a TLS listener gets the
    immediate writes, not the in-place echo, and echoes plaintext correctly.
    """
    needTLS()
    import ssl

    key, cert, _ = selfSigned(tmp_path)
    server = await Server(
        [f"ssl:port=0:interface=127.0.0.1:privateKey={key}:certKey={cert}"]
    ).start()
    try:
        context = ssl.create_default_context(cafile=str(cert))

        def exchange() -> bytes:
            raw = socket.create_connection(("127.0.0.1", server.ports[0]), timeout=10)
            with context.wrap_socket(raw, server_hostname="localhost") as s:
                s.sendall(pattern(100_000))
                return recvAll(s, 100_000)

        assert await inThread(exchange) == pattern(100_000)
        (port,) = await server.echo.whenListening()
        assert port.transport is fastpath.ImmediateWriteTCPServer  # type: ignore[attr-defined]
    finally:
        await server.stop()


@pytest.mark.fastpath
@pytest_twisted.ensureDeferred
async def test_orderKeptAcrossPartialWrites(inPlace: str) -> None:
    """
    A reader that stalls mid-stream makes sends partial: the unsent tail is
    buffered, later echo queues behind it, and every byte comes back in order.
    """
    server = await Server(["tcp:0:interface=127.0.0.1"]).start()
    try:
        s, protocol = await connected(server)
        payload = pattern(16 * 1024 * 1024)

        def stallThenRead() -> bytes:
            s.setblocking(False)
            sent, received = 0, bytearray()
            deadline = time.monotonic() + 30
            stalledUntil = time.monotonic() + 1.0
            while len(received) < len(payload) and time.monotonic() < deadline:
                if sent < len(payload):
                    with contextlib.suppress(BlockingIOError):
                        sent += s.send(payload[sent : sent + 65536])
                if time.monotonic() > stalledUntil:
                    try:
                        received += s.recv(262144)
                    except BlockingIOError:
                        time.sleep(0.0005)
                else:
                    time.sleep(0.0005)
            return bytes(received)

        got = await inThread(stallThenRead)
        assert got == payload
        assert protocol.received == len(payload)
        s.close()
    finally:
        await server.stop()


@pytest.mark.fastpath
@pytest_twisted.ensureDeferred
async def test_pausedPastHighWater(inPlace: str) -> None:
    """
    With more than 64 KiB of echo waiting, the transport stops reading the
    peer; once the peer reads, it resumes.
    """
    server = await Server(["tcp:0:interface=127.0.0.1"]).start()
    try:
        s, protocol = await connected(server)

        def push() -> int:
            s.setblocking(False)
            sent, deadline = 0, time.monotonic() + 1.0
            while time.monotonic() < deadline:
                try:
                    sent += s.send(b"p" * 65536)
                except BlockingIOError:
                    time.sleep(0.01)
            return sent

        sent = await inThread(push)
        transport = protocol.transport
        assert transport.producerPaused
        buffered = len(transport.dataBuffer) + transport._tempDataLen
        assert fastpath.HIGH_WATER < buffered < fastpath.HIGH_WATER + 2 * fastpath.READ_SIZE

        def readAll() -> None:
            s.setblocking(True)
            s.settimeout(10)
            got = 0
            while got < sent:
                got += len(s.recv(262144))

        await inThread(readAll)
        await eventually(lambda: not transport.producerPaused)
        assert not transport.producerPaused
        s.close()
    finally:
        await server.stop()


def test_unsupportedTwistedFallsBack(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    On a Twisted release the fast paths were not checked against, echod
    uses Twisted's stock classes.
    """
    import twisted

    monkeypatch.setattr(twisted, "__version__", "27.1.0")
    assert not fastpath.supported()
