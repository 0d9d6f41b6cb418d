"""
Peers that misbehave, against a real twistd echod: each must cost another
client nothing (a witness client verifies every byte throughout), and the
server no descriptor and no unbounded memory afterwards.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon import Twistd
from tests.environment import freePort
from tests.testing import Witness, waitUntil

pytestmark = pytest.mark.e2e

IDLE_TIMEOUT = 2.0


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[Twistd, int]]:
    port = freePort()
    conf = tmp_path / "echod.toml"
    conf.write_text(
        f"[server]\nlisten = ['tcp:{port}:interface=127.0.0.1']\n"
        f"idle_timeout = {IDLE_TIMEOUT}\nmax_connections = 20000\n"
        "[log]\nlevel = 'warn'\n"
    )
    with Twistd(tmp_path, ["--config", str(conf)]) as daemon:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield daemon, port
        assert "Traceback" not in daemon.output()


def settle(daemon: Twistd, baseline: int, seconds: float = IDLE_TIMEOUT + 6) -> int:
    """
    Wait for the server's descriptor count to come back to C{baseline}.
    """
    deadline = time.monotonic() + seconds
    count = daemon.openFiles()
    while count > baseline and time.monotonic() < deadline:
        time.sleep(0.1)
        count = daemon.openFiles()
    return count


def baselineOf(daemon: Twistd, witness: Witness) -> int:
    """
    The server's descriptors with only the witness connected.
    """
    deadline = time.monotonic() + 5
    while witness.roundTrips < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    return daemon.openFiles()


def test_resettingPeers(server: tuple[Twistd, int]) -> None:
    daemon, port = server
    witness = Witness(port)
    witness.start()
    baseline = baselineOf(daemon, witness)
    for _ in range(200):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(os.urandom(100000))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    assert settle(daemon, baseline, 5) == baseline
    witness.finish()


def test_halfClosingPeersThatNeverRead(server: tuple[Twistd, int]) -> None:
    """
    Half-close, then never read the echo: the server cannot flush, and the
    idle timeout frees the connection.
    """
    daemon, port = server
    witness = Witness(port)
    witness.start()
    baseline = baselineOf(daemon, witness)
    peers = []
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", port))
        s.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            for _ in range(64):
                s.send(b"h" * 65536)
        s.shutdown(socket.SHUT_WR)
        peers.append(s)
    waitUntil(lambda: daemon.openFiles() >= baseline + 20, timeout=5)
    assert daemon.openFiles() >= baseline + 20
    assert settle(daemon, baseline) == baseline
    witness.finish()
    for s in peers:
        s.close()


def test_nonReadersPushingAGibibyte(server: tuple[Twistd, int]) -> None:
    """
    Clients that try to push 1 GiB each and never read: echod stops reading
    them (backpressure), so its memory stays bounded and the other client is
    served; the idle timeout then frees them.
    """
    daemon, port = server
    witness = Witness(port)
    witness.start()
    baseline = baselineOf(daemon, witness)
    rssBefore = daemon.rssKiB()
    pushers = [socket.create_connection(("127.0.0.1", port)) for _ in range(50)]
    for s in pushers:
        s.setblocking(False)
    block = b"\x00" * 262144
    target = 1024**3
    sent = [0] * len(pushers)
    # Push for less than the idle timeout, which would (rightly) cut them.
    deadline = time.monotonic() + IDLE_TIMEOUT * 0.75
    while time.monotonic() < deadline and min(sent) < target:
        progress = False
        for i, s in enumerate(pushers):
            try:
                sent[i] += s.send(block)
                progress = True
            except BlockingIOError:
                pass
        if not progress:
            time.sleep(0.01)
    rssDuring = daemon.rssKiB()
    assert max(sent) < 64 * 1024 * 1024, f"a pusher got {max(sent)} bytes in"
    # 50 stalled clients: each costs echod about one buffer (64 KiB) or so.
    assert rssDuring - rssBefore < 40 * 1024, f"RSS grew {rssDuring - rssBefore} KiB"
    assert settle(daemon, baseline) == baseline
    witness.finish()
    for s in pushers:
        s.close()


def test_idlePeers(server: tuple[Twistd, int]) -> None:
    daemon, port = server
    witness = Witness(port)
    witness.start()
    baseline = baselineOf(daemon, witness)
    idlers = [socket.create_connection(("127.0.0.1", port)) for _ in range(300)]
    waitUntil(lambda: daemon.openFiles() >= baseline + 300, timeout=5)
    assert daemon.openFiles() >= baseline + 300
    assert settle(daemon, baseline) == baseline
    for s in idlers:
        s.settimeout(1)
        with contextlib.suppress(ConnectionResetError):
            assert s.recv(1) == b""
        s.close()
    witness.finish()


def test_connectionFlood(server: tuple[Twistd, int]) -> None:
    """
    Thousands of connect-and-close in a burst, from several threads.
    """
    daemon, port = server
    witness = Witness(port)
    witness.start()
    baseline = baselineOf(daemon, witness)
    rssBefore = daemon.rssKiB()
    errors: list[str] = []

    def flood() -> None:
        for _ in range(1000):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                    s.sendall(b"x")
            except OSError as e:
                errors.append(str(e))

    threads = [threading.Thread(target=flood) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors[:1]
    assert settle(daemon, baseline, 10) == baseline
    assert daemon.rssKiB() - rssBefore < 20 * 1024
    witness.finish()


def test_garbageIsEchoedExactly(server: tuple[Twistd, int]) -> None:
    """
    Bytes that look like other protocols (PROXY headers, TLS, HTTP, NULs)
    mean nothing to a plain echo listener: they come back unchanged.
    """
    daemon, port = server
    samples = [
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
        b"\r\n\r\n\x00\r\nQUIT\n" + os.urandom(64),
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(300),
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        bytes(range(256)) * 100,
    ]
    for sample in samples:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(sample)
            s.shutdown(socket.SHUT_WR)
            got = b""
            while chunk := s.recv(65536):
                got += chunk
        assert got == sample
    assert daemon.process is not None and daemon.process.poll() is None
