"""
The echo service on real loopback sockets, in-process: IPv4, IPv6, dual-stack,
Unix sockets, thousands of clients, half-close, backpressure, limits, idle
timeout and graceful drain.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import time
from pathlib import Path
from typing import TypeVar

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.protocol import ClientFactory, Protocol, connectionDone
from twisted.python.failure import Failure

from echod.errors import ListenError
from echod.server.listeners import ListenerService
from tests.environment import requireIPv6
from tests.testing import Server, eventually, inThread, listeningSockets, reactor, recvAll

T = TypeVar("T")


async def started(listen: list[str], **server: object) -> Server:
    return await Server(listen, **server).start()


def roundTrip(host: str, port: int, payload: bytes, halfClose: bool = True) -> bytes:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect((host, port))
        s.sendall(payload)
        if halfClose:
            s.shutdown(socket.SHUT_WR)
        return recvAll(s, None if halfClose else len(payload))


@pytest_twisted.ensureDeferred
async def test_echoOverIPv4() -> None:
    server = await started(["tcp:0:interface=127.0.0.1"])
    try:
        got = await inThread(roundTrip, "127.0.0.1", server.ports[0], b"Hello, world")
        assert got == b"Hello, world"
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_echoOverIPv6() -> None:
    requireIPv6()
    server = await started([r"tcp6:0:interface=\:\:1"])
    try:
        assert await inThread(roundTrip, "::1", server.ports[0], b"six") == b"six"
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_dualStackDefaultShape() -> None:
    """
    A tcp6 listener on :: (the default's shape) serves IPv4 and IPv6 clients,
    and IPv4 clients count as IPv4 peers.
    """
    requireIPv6()
    server = await started([r"tcp6:0:interface=\:\:"], deny=("127.0.0.2/32",))
    try:
        port = server.ports[0]
        assert await inThread(roundTrip, "127.0.0.1", port, b"v4") == b"v4"
        assert await inThread(roundTrip, "::1", port, b"v6") == b"v6"
        # The deny list is written in IPv4 and applies to the mapped peer.
        assert await inThread(_refusedFrom, "127.0.0.2", port) == b""
    finally:
        await server.stop()


def _refusedFrom(source: str, port: int) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.bind((source, 0))
        s.connect(("127.0.0.1", port))
        try:
            return s.recv(10)
        except ConnectionResetError:
            return b""


@pytest_twisted.ensureDeferred
async def test_unixSocket(tmp_path: Path) -> None:
    path = tmp_path / "echod.sock"
    server = await started([f"unix:{path}"])
    try:

        def talk() -> bytes:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(10)
                s.connect(str(path))
                s.sendall(b"local")
                s.shutdown(socket.SHUT_WR)
                return recvAll(s, None)

        assert await inThread(talk) == b"local"
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_severalListenersAtOnce(tmp_path: Path) -> None:
    server = await started(["tcp:0:interface=127.0.0.1", f"unix:{tmp_path / 's'}"])
    try:
        assert len(server.ports) == 2
        assert await inThread(roundTrip, "127.0.0.1", server.ports[0], b"a") == b"a"
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_halfCloseReturnsEverything() -> None:
    """
    A client that sends 8 MiB and then shuts down its sending side before
    reading anything gets all 8 MiB back, then EOF.
    """
    server = await started(["tcp:0:interface=127.0.0.1"])
    try:
        payload = os.urandom(8 * 1024 * 1024)

        def sendAllThenRead() -> bytes:
            with socket.socket() as s:
                s.settimeout(20)
                s.connect(("127.0.0.1", server.ports[0]))
                # Send from a second thread-free loop: interleave to avoid the
                # deadlock of both sides' buffers filling.
                s.setblocking(False)
                sent, received = 0, list[bytes]()
                deadline = time.monotonic() + 20
                shut = False
                while time.monotonic() < deadline:
                    if sent < len(payload):
                        with contextlib.suppress(BlockingIOError):
                            sent += s.send(payload[sent : sent + 65536])
                    elif not shut:
                        s.shutdown(socket.SHUT_WR)
                        shut = True
                    try:
                        chunk = s.recv(262144)
                        if not chunk:
                            return b"".join(received)
                        received.append(chunk)
                    except BlockingIOError:
                        time.sleep(0.0005)
                raise AssertionError("timed out")

        got = await inThread(sendAllThenRead)
        assert len(got) == len(payload)
        assert got == payload
        await eventually(lambda: server.factory.limits.total == 0)
        assert server.factory.limits.total == 0
    finally:
        await server.stop()


class _Client(Protocol):
    """
    Sends a payload, collects the echo, reports when it has all of it.
    """

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.received = bytearray()
        self.done: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self.payload)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if len(self.received) >= len(self.payload) and not self.done.called:
            self.done.callback(bytes(self.received))
            assert self.transport is not None
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.done.called:
            self.done.errback(reason)


class _ClientFactory(ClientFactory):
    def __init__(self, client: _Client) -> None:
        self.client = client

    def buildProtocol(self, addr: object) -> _Client:
        return self.client


@pytest_twisted.ensureDeferred
async def test_thousandsOfConcurrentClients() -> None:
    """
    2,000 clients connected at once, each echoed its own data exactly.
    """
    from twisted.internet.endpoints import TCP4ClientEndpoint

    server = await started(["tcp:0:interface=127.0.0.1"], max_connections=0)
    try:
        endpoint = TCP4ClientEndpoint(reactor(), "127.0.0.1", server.ports[0], timeout=30)
        clients = [_Client(os.urandom(256) + i.to_bytes(4, "big")) for i in range(2000)]
        await gatherResults([endpoint.connect(_ClientFactory(c)) for c in clients])
        results = await gatherResults([c.done for c in clients])
        assert [r for r in results] == [c.payload for c in clients]
        assert server.factory.stats.opened == 2000
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_nonReadingClientIsHeldBack() -> None:
    """
    Backpressure: a client that only sends is stopped by TCP flow control
    after a few MiB (kernel buffers plus echod's bounded buffer), and other
    clients are still served meanwhile; everything it sent then comes back.
    """
    server = await started(["tcp:0:interface=127.0.0.1"])
    try:
        port = server.ports[0]
        pusher = socket.create_connection(("127.0.0.1", port))
        pusher.setblocking(False)

        def push(seconds: float) -> int:
            sent, deadline = 0, time.monotonic() + seconds
            block = b"\xa5" * 65536
            while time.monotonic() < deadline:
                try:
                    sent += pusher.send(block)
                except BlockingIOError:
                    time.sleep(0.01)
            return sent

        accepted = await inThread(push, 2.0)
        assert accepted < 64 * 1024 * 1024, "echod kept reading from a client that never reads"
        assert await inThread(roundTrip, "127.0.0.1", port, b"still here") == b"still here"

        def drainBack() -> int:
            pusher.setblocking(True)
            pusher.settimeout(10)
            pusher.shutdown(socket.SHUT_WR)
            total = 0
            while True:
                chunk = pusher.recv(262144)
                if not chunk:
                    return total
                assert chunk == b"\xa5" * len(chunk)
                total += len(chunk)

        assert await inThread(drainBack) == accepted
        pusher.close()
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_maxConnectionsRefusesExtra() -> None:
    server = await started(["tcp:0:interface=127.0.0.1"], max_connections=2)
    try:
        port = server.ports[0]
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
        await eventually(lambda: server.factory.limits.total == 2)
        assert server.factory.limits.total == 2
        got = await inThread(_refusedFrom, "127.0.0.1", port)
        assert got == b""
        for s in held:
            s.close()
        await eventually(lambda: server.factory.limits.total == 0)
        assert server.factory.limits.total == 0
        assert await inThread(roundTrip, "127.0.0.1", port, b"ok") == b"ok"
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_idleTimeoutAborts() -> None:
    server = await started(["tcp:0:interface=127.0.0.1"], idle_timeout=0.3)
    try:
        s = socket.create_connection(("127.0.0.1", server.ports[0]))
        s.settimeout(5)
        started_at = time.monotonic()

        def waitForClose() -> bytes:
            try:
                return s.recv(10)
            except ConnectionResetError:
                return b""

        assert await inThread(waitForClose) == b""
        assert 0.25 < time.monotonic() - started_at < 4
        s.close()
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_resetPeerReleasesConnection() -> None:
    """
    A peer that resets mid-stream costs nothing afterwards.
    """
    import struct

    server = await started(["tcp:0:interface=127.0.0.1"])
    try:
        s = socket.create_connection(("127.0.0.1", server.ports[0]))
        s.sendall(os.urandom(200000))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
        await eventually(lambda: server.factory.limits.total == 0, timeout=1)
        assert server.factory.limits.total == 0
        assert not server.factory.connections
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_stopDrainsOpenConnections() -> None:
    """
    Stopping stops accepting, delivers the echo of what was sent, then closes
    the connection cleanly (EOF, not reset).
    """
    server = await started(["tcp:0:interface=127.0.0.1"], shutdown_timeout=5.0)
    port = server.ports[0]
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(10)
    s.sendall(b"in flight")
    # The echo is on its way back (peeked at, not read).
    await eventually(lambda: select.select([s], [], [], 0)[0])
    stopping = server.root.stopService()
    await eventually(lambda: listeningSockets(port) == 0, what="the listener closed")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()

    def readToEOF() -> bytes:
        return recvAll(s, None)

    assert await inThread(readToEOF) == b"in flight"
    s.close()
    began = time.monotonic()
    await stopping
    assert time.monotonic() - began < 2
    assert not server.factory.connections


@pytest_twisted.ensureDeferred
async def test_stopAbortsNonReadersAtTimeout() -> None:
    server = await started(["tcp:0:interface=127.0.0.1"], shutdown_timeout=1.0)
    s = socket.create_connection(("127.0.0.1", server.ports[0]))
    s.setblocking(False)
    await eventually(lambda: server.factory.limits.total == 1, what="the connection accepted")

    def fill() -> None:
        deadline = time.monotonic() + 1
        while time.monotonic() < deadline:
            try:
                s.send(b"x" * 65536)
            except BlockingIOError:
                time.sleep(0.01)

    await inThread(fill)
    assert len(server.factory.connections) == 1
    began = time.monotonic()
    await server.root.stopService()
    elapsed = time.monotonic() - began
    assert 0.9 < elapsed < 3
    assert not server.factory.connections
    s.close()


class ListenerServiceTests:
    def test_busyPortBecomesListenError(self) -> None:
        """
        A port that cannot be opened is a one-line ListenError naming the
        endpoint as the user wrote it.
        """
        import socket

        from twisted.internet.protocol import Factory, Protocol

        holder = socket.socket()
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        try:
            from twisted.internet import reactor

            listener = ListenerService(
                f"tcp:{port}:interface=127.0.0.1",
                Factory.forProtocol(Protocol),
                reactor,
            )
            with pytest.raises(ListenError) as caught:
                listener.privilegedStartService()
        finally:
            holder.close()
        assert str(caught.value) == (
            f"cannot listen on tcp:{port}:interface=127.0.0.1: address already in use"
        )
        assert caught.value.errno == errno.EADDRINUSE
