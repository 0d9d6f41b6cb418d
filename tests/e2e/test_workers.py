"""
[server] workers = N against a real twistd: a SO_REUSEPORT socket per worker
(shared sockets for unix:), supervision, one log, added-up metrics, reload and
drain across processes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from echod.config import load, loads
from echod.server.workers.wire import EVENT, STOP, configLine
from tests.daemon import Twistd
from tests.environment import freePort
from tests.testing import (
    listeningSockets,
    openConnections,
    pythonPath,
    runTwistd,
    waitUntil,
    workerPids,
)

pytestmark = pytest.mark.e2e


def echo(port: int, payload: bytes, host: str = "127.0.0.1", timeout: float = 10) -> bytes:
    with socket.create_connection((host, port), timeout=timeout) as s:
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


def charactersRead(pid: int) -> int:
    """
    The bytes process C{pid} has read with read(2) and friends (its
    C{rchar}): a worker reads nothing but its standard input while idle.
    """
    for entry in Path(f"/proc/{pid}/io").read_text().splitlines():
        if entry.startswith("rchar:"):
            return int(entry.split()[1])
    raise AssertionError(f"no rchar for {pid}")


@contextmanager
def withWorkers(
    directory: Path,
    listen: list[str],
    shutdownTimeout: float = 5,
    metricsPort: int | None = None,
    newSession: bool = False,
) -> Iterator[Twistd]:
    """
    echod with two workers on C{listen} (and metrics on C{metricsPort}),
    JSON logs at info level, from C{directory}/echod.toml; both workers
    started.
    """
    # TOML literal strings: the backslashes of \\:\\: stay as they are.
    descriptions = ", ".join(f"'{d}'" for d in listen)
    text = (
        f"[server]\nlisten = [{descriptions}]\nworkers = 2\n"
        f"shutdown_timeout = {shutdownTimeout}\n[log]\nformat = 'json'\n"
    )
    if metricsPort is not None:
        text += f"[metrics]\nlisten = 'tcp:{metricsPort}:interface=127.0.0.1'\n"
    conf = directory / "echod.toml"
    conf.write_text(text)
    with Twistd(directory, ["--config", str(conf)], newSession=newSession) as daemon:
        waitUntil(
            lambda: (
                len(workerPids(daemon.pid)) == 2 and daemon.output().count('"worker.started"') == 2
            )
        )
        yield daemon


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[Twistd, int, int, Path]]:
    port, metricsPort = freePort(), freePort()
    listen = [f"tcp:{port}:interface=127.0.0.1"]
    with withWorkers(tmp_path, listen, metricsPort=metricsPort) as daemon:
        yield daemon, port, metricsPort, tmp_path / "echod.toml"


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


@pytest.fixture
def dualStack(tmp_path: Path) -> Iterator[tuple[Twistd, int, int, Path]]:
    """
    Two workers on a dual-stack tcp6 listener and a unix one.
    """
    port, metricsPort = freePort(socket.AF_INET6), freePort()
    listen = [f"tcp6:{port}:interface=\\:\\:", f"unix:{tmp_path}/echo.sock"]
    with withWorkers(tmp_path, listen, metricsPort=metricsPort) as daemon:
        yield daemon, port, metricsPort, tmp_path / "echo.sock"


def workerLabels(values: dict[str, float], name: str) -> dict[str, float]:
    prefix = f"echod_worker_{name}{{worker="
    return {key[len(prefix) : -1]: value for key, value in values.items() if key.startswith(prefix)}


@pytest.mark.fastpath  # a unix: listener shared by workers
def test_eachWorkerHasItsOwnSocketAndConnectionsSpreadEvenly(
    dualStack: tuple[Twistd, int, int, Path],
) -> None:
    """
    One SO_REUSEPORT socket per worker: the kernel spreads a burst of
    connections over them by hash (with one shared socket, 100 connections
    at once went 20/80), IPv4 and IPv6 alike; the unix listener stays one
    shared socket and is served too.
    """
    _, port, metricsPort, unixPath = dualStack
    assert listeningSockets(port) == 2
    held = []
    try:
        for i in range(200):
            host = "127.0.0.1" if i % 2 else "::1"
            held.append(socket.create_connection((host, port), timeout=10))
        for i, s in enumerate(held):
            s.sendall(b"%d" % i)
        for i, s in enumerate(held):
            assert s.recv(100) == b"%d" % i
        with socket.socket(socket.AF_UNIX) as u:
            u.settimeout(10)
            u.connect(str(unixPath))
            u.sendall(b"over unix")
            assert u.recv(100) == b"over unix"
        waitUntil(
            lambda: sum(workerLabels(metrics(metricsPort), "connections_open").values()) == 200
        )
        spread = workerLabels(metrics(metricsPort), "connections_open")
        # Binomial(200, 1/2): outside 60..140 once in ~10^8 runs.
        assert set(spread) == {"worker-1", "worker-2"}
        assert all(60 <= count <= 140 for count in spread.values()), spread
    finally:
        for s in held:
            s.close()


@pytest.mark.fastpath  # a unix: listener shared by workers
def test_deadWorkersSocketLeavesTheGroupUntilItsRestart(
    dualStack: tuple[Twistd, int, int, Path],
) -> None:
    """
    While a worker is down (quick deaths delay its restart), its
    socket is out of the group: new connections all go to the live worker
    instead of queueing for the dead one.  The restarted worker gets its
    socket back; totals stay monotonic and the restarts are counted.
    """
    daemon, port, metricsPort, _ = dualStack
    for i in range(20):
        assert echo(port, b"before %d" % i, host="::1") == b"before %d" % i
    waitUntil(lambda: metrics(metricsPort).get("echod_connections_total") == 20)
    # The scrapes' connections closed on echod's side too.
    waitUntil(lambda: openConnections(metricsPort) == 0, what="the scrapes' connections closed")
    fds = len(os.listdir(f"/proc/{daemon.pid}/fd"))
    first = workerPids(daemon.pid)
    victim = first[0]
    os.kill(victim, signal.SIGKILL)
    # Restarted at once (it had run a while), then killed again at once
    # twice: the supervisor waits 1 s, then 2 s before the restarts, a
    # window wide enough to see on a loaded machine.
    seen = set(first)
    for _ in range(2):
        waitUntil(lambda: len(workerPids(daemon.pid)) == 2 and set(workerPids(daemon.pid)) - seen)
        (restarted,) = set(workerPids(daemon.pid)) - seen
        seen.add(restarted)
        os.kill(restarted, signal.SIGKILL)
    waitUntil(
        lambda: listeningSockets(port) == 1 and len(workerPids(daemon.pid)) == 1,
        timeout=2,
        what="one worker left, with its socket alone in the group",
    )
    for i in range(50):
        payload = b"while down %d" % i
        assert echo(port, payload, host="127.0.0.1" if i % 2 else "::1", timeout=2) == payload
    waitUntil(lambda: len(workerPids(daemon.pid)) == 2, timeout=20)
    waitUntil(lambda: listeningSockets(port) == 2)
    waitUntil(lambda: len(workerLabels(metrics(metricsPort), "connections_open")) == 2)
    values = metrics(metricsPort)
    assert sorted(workerLabels(values, "restarts_total").values()) == [0, 3]
    assert values["echod_connections_total"] == 70
    # Both workers serve again.
    for _ in range(100):
        assert echo(port, b"after", host="::1") == b"after"
    waitUntil(lambda: metrics(metricsPort).get("echod_connections_total") == 170)
    values = metrics(metricsPort)
    (killed,) = [w for w, n in workerLabels(values, "restarts_total").items() if n == 3]
    assert workerLabels(values, "connections_total")[killed] > 0
    # Two restarts cost the main process no descriptor (pipes, sockets).
    waitUntil(lambda: len(os.listdir(f"/proc/{daemon.pid}/fd")) == fds, timeout=5)


def health(port: int) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.mark.fastpath  # a unix: listener shared by workers
def test_healthSaysWhenNoWorkerRuns(dualStack: tuple[Twistd, int, int, Path]) -> None:
    """
    Every worker down at once (each killed twice in a row: the restarts
    wait): /healthz answers 503 and echod_up is 0 until one is back.
    """
    daemon, _, metricsPort, _ = dualStack
    waitUntil(lambda: health(metricsPort) == (200, b"ok\n"))
    first = workerPids(daemon.pid)
    for pid in first:
        os.kill(pid, signal.SIGKILL)
    waitUntil(
        lambda: len(workerPids(daemon.pid)) == 2 and not set(workerPids(daemon.pid)) & set(first)
    )
    for pid in workerPids(daemon.pid):
        os.kill(pid, signal.SIGKILL)
    waitUntil(lambda: health(metricsPort) == (503, b"degraded: no worker running\n"), 5)
    assert metrics(metricsPort)["echod_up"] == 0
    waitUntil(lambda: health(metricsPort) == (200, b"ok\n"), 20)
    assert metrics(metricsPort)["echod_up"] == 1


def test_busyPortIsRefusedDespiteReusePort(
    cluster: tuple[Twistd, int, int, Path], tmp_path: Path
) -> None:
    """
    SO_REUSEPORT would let a second echod join the first one's port and take
    half its connections: it fails with one line instead, as without workers.
    """
    _, port, _, _ = cluster
    other = tmp_path / "other"
    other.mkdir()
    conf = other / "echod.toml"
    conf.write_text(f"[server]\nlisten = ['tcp:{port}:interface=127.0.0.1']\nworkers = 2\n")
    result = runTwistd(["-n", "--pidfile=", "echod", "--config", str(conf)], other)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert f"cannot listen on tcp:{port}:interface=127.0.0.1: address already in use" in (
        result.stderr
    )
    assert listeningSockets(port) == 2


def test_deadWorkerIsRestarted(cluster: tuple[Twistd, int, int, Path]) -> None:
    daemon, port, _, _ = cluster
    before = workerPids(daemon.pid)
    os.kill(before[0], signal.SIGKILL)
    waitUntil(lambda: len(workerPids(daemon.pid)) == 2 and workerPids(daemon.pid) != before)
    assert before[1] in workerPids(daemon.pid)
    for _ in range(20):
        assert echo(port, b"still served") == b"still served"
    assert any(r.get("event") == "worker.exited" for r in records(daemon))


def test_killedWorkerSaysHowItEndedAndWhatItHeld(
    cluster: tuple[Twistd, int, int, Path],
) -> None:
    """
    A worker killed with SIGKILL cannot log the close of its connections:
    the main process says how it ended (signal, pid) and how many
    connections it held as it last reported, in one line; the open gauge
    drops by as many.
    """
    daemon, port, metricsPort, _ = cluster
    held = []
    try:
        for i in range(30):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            held.append(s)
            s.sendall(b"%d" % i)
            assert s.recv(100) == b"%d" % i
        waitUntil(
            lambda: sum(workerLabels(metrics(metricsPort), "connections_open").values()) == 30
        )
        spread = workerLabels(metrics(metricsPort), "connections_open")
        victim = max(spread, key=lambda name: spread[name])
        count = int(spread[victim])
        (started,) = [
            r
            for r in records(daemon)
            if r.get("event") == "worker.started" and r["worker"] == victim
        ]
        pid = int(started["pid"])  # type: ignore[call-overload]
        os.kill(pid, signal.SIGKILL)

        def ended() -> list[dict[str, object]]:
            return [
                r
                for r in records(daemon)
                if r.get("event") in ("worker.exited", "worker.connections_lost")
            ]

        waitUntil(lambda: len(ended()) == 2)
        exited, lost = ended()
        assert exited["message"] == (
            f"{victim} (pid {pid}) killed by signal 9 (SIGKILL); it will be restarted"
        )
        assert (exited["signal"], exited["status"], exited["level"]) == (9, None, "warn")
        assert lost["message"] == (
            f"{victim} (pid {pid}) died with {count} connections open (as it last reported): "
            "the kernel closed them"
        )
        assert lost["count"] == count
        waitUntil(lambda: metrics(metricsPort)["echod_connections_open"] == 30 - count)
    finally:
        for s in held:
            s.close()


def test_howAWorkerEnded() -> None:
    """
    The words of the exit line, for the ends a test cannot easily cause.
    """
    from twisted.internet.error import ProcessDone, ProcessTerminated
    from twisted.python.failure import Failure

    from echod.server.workers.supervisor import howItEnded

    assert howItEnded(Failure(ProcessTerminated(exitCode=3))) == "exited with status 3"
    assert howItEnded(Failure(ProcessDone(0))) == "exited with status 0"
    assert howItEnded(Failure(ProcessTerminated(signal=15))) == "killed by signal 15 (SIGTERM)"
    assert howItEnded(Failure(ProcessTerminated(signal=99))) == "killed by signal 99"


def test_reloadReachesWorkers(cluster: tuple[Twistd, int, int, Path]) -> None:
    daemon, port, metricsPort, conf = cluster
    conf.write_text(conf.read_text().replace("workers = 2", "workers = 3\ndeny = ['127.0.0.0/8']"))
    # What each worker has read so far (/proc/PID/io): the new configuration
    # reaches it as one line on its standard input.
    before = {pid: charactersRead(pid) for pid in workerPids(daemon.pid)}
    line = configLine(load(str(conf)))
    daemon.signal(signal.SIGHUP)
    daemon.waitFor('"config.reloaded"')
    # The number of workers takes a restart; the ACL is applied in every worker.
    (partial,) = [r for r in records(daemon) if r.get("event") == "config.reload_partial"]
    assert partial["keys"] == "server.workers"
    assert len(workerPids(daemon.pid)) == 2
    waitUntil(
        lambda: all(charactersRead(pid) - read >= len(line) for pid, read in before.items()),
        what="both workers read the new configuration",
    )
    for _ in range(10):
        assert refused(port)
    waitUntil(
        lambda: metrics(metricsPort).get("echod_connections_refused_total{reason=acl}", 0) == 10
    )


def sigtermDrains(
    daemon: Twistd, connect: Callable[[], socket.socket], count: int = 1, group: bool = False
) -> None:
    """
    C{count} connections with an echo done, then SIGTERM to the main
    process (or to its whole process group, as systemd does): each gets an
    orderly end of file, every process exits, the main with status 0.
    """
    held = []
    for _ in range(count):
        s = connect()
        s.settimeout(10)
        s.sendall(b"in flight")
        assert s.recv(100) == b"in flight"
        held.append(s)
    workers = workerPids(daemon.pid)
    if group:
        os.killpg(daemon.pid, signal.SIGTERM)
    else:
        daemon.signal(signal.SIGTERM)
    for s in held:
        got = b""
        while chunk := s.recv(100):
            got += chunk
        s.close()
        assert got == b""  # drained: an orderly EOF, not a reset
    assert daemon.wait(20) == 0
    for pid in workers:
        assert (
            not os.path.exists(f"/proc/{pid}")
            or "zombie" in Path(f"/proc/{pid}/status").read_text()
        )
    # Every worker drained and stopped by itself, without an error on the
    # way (a worker whose port had been closed under it once failed there,
    # never drained, and waited for the monitor's SIGKILL).
    assert not [r for r in records(daemon) if r.get("level") in ("error", "critical")]


def test_sigtermDrainsWorkersAndExitsZero(cluster: tuple[Twistd, int, int, Path]) -> None:
    daemon, port, _, _ = cluster
    sigtermDrains(daemon, lambda: socket.create_connection(("127.0.0.1", port), timeout=10))
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2)


@pytest.mark.fastpath  # a unix: listener shared by workers
def test_sigtermDrainsWorkersOnSharedSockets(dualStack: tuple[Twistd, int, int, Path]) -> None:
    """
    The same through the unix listener, one socket shared by the workers:
    the main process closing its side must not take it from under them.
    """
    daemon, _, _, unixPath = dualStack

    def connect() -> socket.socket:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(10)
        s.connect(str(unixPath))
        return s

    sigtermDrains(daemon, connect)


@contextmanager
def twoWorkers(
    directory: Path, shutdownTimeout: float, newSession: bool = False
) -> Iterator[tuple[Twistd, int]]:
    port = freePort()
    listen = [f"tcp:{port}:interface=127.0.0.1"]
    with withWorkers(directory, listen, shutdownTimeout, newSession=newSession) as daemon:
        yield daemon, port


def test_sigtermToTheWholeGroupDrains(tmp_path: Path) -> None:
    """
    systemd stops a service by sending SIGTERM to every process of it (the
    default KillMode=control-group), the workers included, before the main
    process tells them to stop too: a worker must drain once, not take the
    second request for the "stop now" of a second SIGTERM.
    """
    with twoWorkers(tmp_path, 5, newSession=True) as (daemon, port):
        sigtermDrains(
            daemon,
            lambda: socket.create_connection(("127.0.0.1", port), timeout=10),
            count=10,
            group=True,
        )
        aborted = [r for r in records(daemon) if "second SIGTERM" in str(r.get("message"))]
        assert not aborted


def test_secondSigtermCutsWorkersConnections(tmp_path: Path) -> None:
    """
    A second SIGTERM to the main process: the workers cut the connections
    still draining (a peer that never reads would otherwise hold them for
    all of shutdown_timeout), and echod exits 0.
    """
    with twoWorkers(tmp_path, 600) as (daemon, port):
        stuck = socket.create_connection(("127.0.0.1", port), timeout=10)
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.setblocking(False)
        sent = 0
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # until echod stops reading it
            try:
                sent += stuck.send(b"x" * 65536)
            except BlockingIOError:
                time.sleep(0.2)
                try:
                    sent += stuck.send(b"x" * 65536)
                except BlockingIOError:
                    break
        daemon.signal(signal.SIGTERM)
        daemon.waitFor('"shutdown.requested"')
        daemon.waitFor('"shutdown.draining"')  # the stuck connection's worker
        assert daemon.process is not None and daemon.process.poll() is None  # draining
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(20) == 0
        stuck.setblocking(True)
        with pytest.raises(ConnectionResetError):
            while stuck.recv(65536):
                pass
        stuck.close()
        cut = [r for r in records(daemon) if "second SIGTERM" in str(r.get("message"))]
        assert cut and all(r.get("worker") for r in cut), cut


def test_sigtermRightAfterTraffic(tmp_path: Path) -> None:
    """
    SIGTERM while the workers are busy accepting: each drains and exits on
    its own.
    """
    with twoWorkers(tmp_path, 5) as (daemon, port):
        for i in range(20):
            assert echo(port, b"%d" % i) == b"%d" % i
        sigtermDrains(daemon, lambda: socket.create_connection(("127.0.0.1", port), timeout=10))


def test_workerDrainsWhenItsPortClosedBeforeTheStop(tmp_path: Path) -> None:
    """
    The order that once made a stop racy, forced: the main process shuts a
    listening socket it shares with a worker down (as Twisted's port does
    when it stops listening), the worker's port closes with it, and only
    then does the worker read the main's stop line.  It still drains (an
    orderly end of file for the connection it holds) and exits 0 by itself,
    logging no error.  (Its stop used to raise there, never drain, and wait
    for the monitor's SIGKILL; SIGTERM right after traffic hit that order
    only now and then.)
    """
    config = loads("[server]\nlisten = ['tcp:0:interface=127.0.0.1']\nshutdown_timeout = 5\n")
    shared = socket.create_server(("127.0.0.1", 0))
    shared.setblocking(False)  # as the main process's are: a worker accepts until EAGAIN
    address = shared.getsockname()
    log = tmp_path / "worker.log"
    with shared, open(log, "wb") as out:
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "echod.server.workers.child",
                "--listener",
                f"{shared.fileno()}:{int(socket.AF_INET)}:tcp:0:interface=127.0.0.1",
                "--name",
                "worker-1",
            ],
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=subprocess.STDOUT,
            pass_fds=(shared.fileno(),),
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": pythonPath()},
        )
        assert worker.stdin is not None
        try:
            worker.stdin.write(configLine(config))
            worker.stdin.flush()
            waitUntil(lambda: '"worker.started"' in log.read_text(), what="the worker's start")
            held = socket.create_connection(address, timeout=10)
            held.sendall(b"in flight")
            assert held.recv(100) == b"in flight"
            shared.shutdown(socket.SHUT_RDWR)
            waitUntil(lambda: "Closed)" in log.read_text(), what="the worker's port closing")
            worker.stdin.write(STOP + b"\n")
            worker.stdin.flush()
            got = b""
            while chunk := held.recv(100):
                got += chunk
            held.close()
            assert got == b""  # drained: an orderly EOF, not a reset
            assert worker.wait(20) == 0
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
            worker.stdin.close()
    events = [
        json.loads(line.split(" ", 1)[1])
        for line in log.read_text().splitlines()
        if line.startswith(EVENT)
    ]
    assert not [e for e in events if e.get("log_level", {}).get("name") in ("error", "critical")]


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
    result = runTwistd(["-n", "echod", "--config", str(conf)], tmp_path)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert "server.listen[1]" in result.stderr
