"""
A fair share against a real twistd echod: idle connections cannot lock
everybody else out of a full server, and a graceful stop keeps clients that
talk slowly until they are done.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.daemon import Twistd
from tests.environment import freePort
from tests.testing import Witness, workerPids

pytestmark = pytest.mark.e2e

PRESSURE_IDLE = 3.0


def waitUntil(condition: object, timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} not met in {timeout} s")


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    raise AssertionError(f"{name} not in /metrics")


def served(source: str, port: int, payload: bytes, timeout: float = 5) -> socket.socket | None:
    """
    A connection from C{source} that got C{payload} back, still open; L{None}
    if it was refused.
    """
    s = socket.socket()
    s.settimeout(timeout)
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    try:
        s.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = s.recv(65536)
            if not chunk:
                s.close()
                return None
            got += chunk
    except (ConnectionResetError, BrokenPipeError):
        s.close()
        return None
    assert got == payload
    return s


@contextlib.contextmanager
def fullServer(tmp_path: Path, workers: int) -> Iterator[tuple[Twistd, int, int]]:
    port, metricsPort = freePort(), freePort()
    conf = tmp_path / "echod.toml"
    conf.write_text(
        f"[server]\nlisten = ['tcp:{port}:interface=127.0.0.1']\n"
        f"max_connections = 40\npressure_idle_timeout = {PRESSURE_IDLE}\n"
        f"idle_timeout = 300\nworkers = {workers}\n"
        f"[metrics]\nlisten = 'tcp:{metricsPort}:interface=127.0.0.1'\n"
        "[log]\nlevel = 'warn'\n"
    )
    with Twistd(tmp_path, ["--config", str(conf)]) as daemon:
        waitUntil(lambda: _accepts(port), what="listening")
        if workers > 1:
            waitUntil(lambda: len(workerPids(daemon.pid)) == workers, what="workers")
        yield daemon, port, metricsPort
        assert "Traceback" not in daemon.output()


def _accepts(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("workers", [1, 2])
def test_idleConnectionsGiveWayToANewcomer(tmp_path: Path, workers: int) -> None:
    """
    One address fills the server with idle connections while a witness
    exchanges verified data.  At first a newcomer from another address is
    refused; once the idle ones have been idle for pressure_idle_timeout, it
    is echoed within a second, and the witness has lost nothing.
    """
    with fullServer(tmp_path, workers) as (daemon, port, metricsPort):
        witness = Witness(port)
        witness.start()
        waitUntil(lambda: witness.roundTrips > 3, what="witness running")
        idlers = []
        # Three times the slots: SO_REUSEPORT's hash spreads them unevenly,
        # and every worker must be full.
        for _ in range(3 * 40 * workers):
            s = socket.socket()
            s.bind(("127.0.0.2", 0))
            s.connect(("127.0.0.1", port))
            idlers.append(s)
        filled = time.monotonic()
        assert served("127.0.0.3", port, b"too early") is None
        assert time.monotonic() - filled < PRESSURE_IDLE, "filling took too long to test"
        waitUntil(lambda: time.monotonic() - filled > PRESSURE_IDLE, what="pressure idle")
        newcomers = []
        for n in range(3):
            # Within a second, with a second of slack for a loaded machine;
            # each stays connected, so that each needs a place of its own.
            deadline = time.monotonic() + 2.0
            while (newcomer := served("127.0.0.3", port, b"newcomer %d" % n)) is None:
                assert time.monotonic() < deadline, f"newcomer {n} not served"
                time.sleep(0.05)
            newcomers.append(newcomer)
        witness.finish()
        # Workers report their totals every second (a loaded machine may
        # take a few more before the main process has them).
        waitUntil(
            lambda: metric(metricsPort, "echod_connections_evicted_total") >= 3,
            timeout=20,
            what="3 evictions counted",
        )
        for s in idlers + newcomers:
            s.close()
    # Logged within the refusal budget: a line each, or in the summary.
    assert "evicted after" in daemon.output() or "evicted: " in daemon.output()


def client() -> str:
    candidate = Path(sys.executable).parent / "echod-client"
    return str(candidate) if candidate.exists() else "echod-client"


def test_slowTalkerGetsEveryReplyAcrossSigterm(tmp_path: Path) -> None:
    """
    C{echod-client HOST PORT -n 5 -i 1} (the client's own interval) started
    just before SIGTERM gets 5 of 5 replies and exits 0: the drain waits for
    drain_quiet of silence, not one 0.1 s check.
    """
    port = freePort()
    conf = tmp_path / "echod.toml"
    conf.write_text(
        f"[server]\nlisten = ['tcp:{port}:interface=127.0.0.1']\nshutdown_timeout = 10\n"
    )
    with Twistd(tmp_path, ["--config", str(conf)]) as daemon:
        daemon.listeningPorts()
        ping = subprocess.Popen(
            [client(), "127.0.0.1", str(port), "-n", "5", "-i", "1"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert ping.stdout is not None
        first = ""
        while "seq=1 " not in first:
            line = ping.stdout.readline()
            assert line, first
            first += line
        daemon.signal(signal.SIGTERM)
        out, err = ping.communicate(timeout=30)
        assert ping.returncode == 0, (first + out, err)
        assert daemon.wait(30) == 0
    assert "5 sent, 5 received" in out, first + out
