"""
[server] workers = N against a real twistd: shared listeners, supervision,
one log, added-up metrics, reload and drain across processes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.daemon import Twistd, twistdPath
from tests.environment import freePort

pytestmark = pytest.mark.e2e


def workerPids(mainPid: int) -> list[int]:
    result = subprocess.run(
        ["pgrep", "-P", str(mainPid), "-f", "echod.worker"],
        capture_output=True,
        text=True,
        check=False,
    )
    return sorted(int(pid) for pid in result.stdout.split())


def echo(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        got = b""
        while chunk := s.recv(65536):
            got += chunk
        return got


def refused(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        try:
            s.sendall(b"anyone?")
            return s.recv(10) == b""
        except (ConnectionResetError, BrokenPipeError):
            return True


def records(daemon: Twistd) -> list[dict[str, object]]:
    return [json.loads(line) for line in daemon.output().splitlines() if line.startswith("{")]


def metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return values


def waitUntil(condition: object, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[Twistd, int, int, Path]]:
    port, metricsPort = freePort(), freePort()
    conf = tmp_path / "echod.toml"
    conf.write_text(
        f"[server]\nlisten = ['tcp:{port}:interface=127.0.0.1']\n"
        "workers = 2\nshutdown_timeout = 5\n"
        f"[metrics]\nlisten = 'tcp:{metricsPort}:interface=127.0.0.1'\n"
        "[log]\nformat = 'json'\n"
    )
    with Twistd(tmp_path, ["--config", str(conf)]) as daemon:
        waitUntil(lambda: len(workerPids(daemon.pid)) == 2)
        daemon.waitFor("(?s)worker-1 serving.*|worker-2 serving.*")
        waitUntil(
            lambda: (
                '"worker.started"' in daemon.output()
                and daemon.output().count('"worker.started"') == 2
            )
        )
        yield daemon, port, metricsPort, conf


def test_workersServeAndLogThroughTheMain(cluster: tuple[Twistd, int, int, Path]) -> None:
    daemon, port, metricsPort, _ = cluster
    for i in range(60):
        payload = os.urandom(1000 + i)
        assert echo(port, payload) == payload
    waitUntil(lambda: sum(r.get("event") == "connection.closed" for r in records(daemon)) >= 60)
    closed = [r for r in records(daemon) if r.get("event") == "connection.closed"]
    assert {r["worker"] for r in closed} <= {"worker-1", "worker-2"}
    assert all(str(r["message"]).count("s, ") == 1 for r in closed)
    # Totals: every worker reports each second; the main adds them up.
    waitUntil(lambda: metrics(metricsPort).get("echod_connections_total") == 60)
    values = metrics(metricsPort)
    assert values["echod_bytes_sent_total"] == sum(1000 + i for i in range(60))
    assert values["echod_up"] == 1


def test_deadWorkerIsRestarted(cluster: tuple[Twistd, int, int, Path]) -> None:
    daemon, port, _, _ = cluster
    before = workerPids(daemon.pid)
    os.kill(before[0], signal.SIGKILL)
    waitUntil(lambda: len(workerPids(daemon.pid)) == 2 and workerPids(daemon.pid) != before)
    assert before[1] in workerPids(daemon.pid)
    for _ in range(20):
        assert echo(port, b"still served") == b"still served"
    assert any(r.get("event") == "worker.exited" for r in records(daemon))


def test_reloadReachesWorkers(cluster: tuple[Twistd, int, int, Path]) -> None:
    daemon, port, metricsPort, conf = cluster
    conf.write_text(conf.read_text().replace("workers = 2", "workers = 2\ndeny = ['127.0.0.0/8']"))
    daemon.signal(signal.SIGHUP)
    daemon.waitFor('"config.reloaded"')
    time.sleep(0.5)
    for _ in range(10):
        assert refused(port)
    waitUntil(
        lambda: metrics(metricsPort).get("echod_connections_refused_total{reason=acl}", 0) == 10
    )


def test_sigtermDrainsWorkersAndExitsZero(cluster: tuple[Twistd, int, int, Path]) -> None:
    daemon, port, _, _ = cluster
    held = socket.create_connection(("127.0.0.1", port), timeout=10)
    held.sendall(b"in flight")
    assert held.recv(100) == b"in flight"
    workers = workerPids(daemon.pid)
    daemon.signal(signal.SIGTERM)
    got = b""
    while chunk := held.recv(100):
        got += chunk
    held.close()
    assert got == b""  # drained: an orderly EOF, not a reset
    assert daemon.wait(20) == 0
    for pid in workers:
        assert (
            not os.path.exists(f"/proc/{pid}")
            or "zombie" in Path(f"/proc/{pid}/status").read_text()
        )
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2)


def test_workersDoNotOutliveTheirMain(cluster: tuple[Twistd, int, int, Path]) -> None:
    """
    Killed outright, the main process leaves no orphan holding the port.
    """
    daemon, port, _, _ = cluster
    workers = workerPids(daemon.pid)
    os.kill(daemon.pid, signal.SIGKILL)
    waitUntil(lambda: not any(os.path.exists(f"/proc/{pid}") for pid in workers), timeout=10)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2)


def test_sslWithWorkersIsRefused(tmp_path: Path) -> None:
    conf = tmp_path / "echod.toml"
    conf.write_text("[server]\nlisten = ['ssl:port=7443:privateKey=/etc/k.pem']\nworkers = 2\n")
    result = subprocess.run(
        [twistdPath(), "-n", "echod", "--config", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert "server.listen[1]" in result.stderr
