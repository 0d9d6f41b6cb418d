"""
echod's C helper (echod/_inplace.c) on real socket pairs: each outcome of
C{echo(fd)} — a whole echo, nothing to read, end of stream, a send that
could not finish, a read error — and that what comes back is what was sent.

The helper is optional for a user (built only where a C compiler and Python's
headers are found); under C{CI=true} it must have been built.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from types import ModuleType

import pytest

from echod.server import fastpath
from tests.environment import need


@pytest.fixture
def inplace() -> ModuleType:
    need(fastpath.INPLACE_IN_C, "echod's C helper was not built (no C compiler or Python headers)")
    from echod.server import _inplace

    return _inplace


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """
    (server side, peer) of a loopback TCP connection, the server side
    non-blocking as a reactor's sockets are.
    """
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        peer = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    server.setblocking(False)
    peer.settimeout(10)
    try:
        yield server, peer
    finally:
        server.close()
        peer.close()


def waitReadable(s: socket.socket) -> None:
    import select

    assert select.select([s], [], [], 10)[0], "nothing arrived"


def test_readSizeMatchesTheTransport(inplace: ModuleType) -> None:
    assert inplace.READ_SIZE == fastpath.READ_SIZE


def test_wholeEcho(inplace: ModuleType, pair: tuple[socket.socket, socket.socket]) -> None:
    """
    What arrived is sent back whole; the result is its length.
    """
    server, peer = pair
    payload = bytes(range(256)) * 40
    peer.sendall(payload)
    waitReadable(server)
    echoed = 0
    while echoed < len(payload):
        result = inplace.echo(server.fileno())
        assert isinstance(result, int) and result > 0
        echoed += result
    got = b""
    while len(got) < len(payload):
        got += peer.recv(65536)
    assert got == payload


def test_nothingToRead(inplace: ModuleType, pair: tuple[socket.socket, socket.socket]) -> None:
    server, _ = pair
    assert inplace.echo(server.fileno()) == -1


def test_endOfStream(inplace: ModuleType, pair: tuple[socket.socket, socket.socket]) -> None:
    server, peer = pair
    peer.shutdown(socket.SHUT_WR)
    waitReadable(server)
    assert inplace.echo(server.fileno()) == 0


def test_readError(inplace: ModuleType) -> None:
    """
    A descriptor that is not open reads as an error (the connection is lost).
    """
    fd = os.open(os.devnull, os.O_RDONLY)
    os.close(fd)
    assert inplace.echo(fd) == -2


def test_badDescriptorNumber(inplace: ModuleType) -> None:
    with pytest.raises(ValueError):
        inplace.echo(-1)
    with pytest.raises(TypeError):
        inplace.echo("3")


def test_unsentTailIsReturned(
    inplace: ModuleType, pair: tuple[socket.socket, socket.socket]
) -> None:
    """
    When the peer does not read, the send stops short: the result is the
    count read and the unsent tail, and echo plus tail, in order, is exactly
    what was read.
    """
    server, peer = pair
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    chunk = bytes(range(256)) * 256  # 64 KiB, a recognisable pattern
    peer.setblocking(False)
    pushed = 0
    for _ in range(200):
        try:
            pushed += peer.send(chunk)
        except BlockingIOError:
            break
    waitReadable(server)
    read, tails = 0, []
    for _ in range(100):
        result = inplace.echo(server.fileno())
        if isinstance(result, tuple):
            count, tail = result
            assert 0 < len(tail) <= count
            read += count
            tails.append((read, tail))
            break
        assert result > 0
        read += result
    assert tails, "the send never stopped short"
    # Drain the echo the kernel took, then compare it with the stream read.
    peer.setblocking(True)
    peer.settimeout(2)
    echoed = b""
    try:
        while True:
            data = peer.recv(1 << 20)
            if not data:
                break
            echoed += data
    except TimeoutError:
        pass
    stream = (chunk * (read // len(chunk) + 1))[:read]
    (end, tail) = tails[0]
    assert echoed + tail == stream[:end]
