"""
The benchmark harness (bench/) works end to end: its smoke run measures every
scenario, TCP and UDP, against every server with every echoed byte verified,
and its load generators catch a server that echoes wrongly.  No timing is ever
asserted: the numbers depend on the machine.
"""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from bench import run, udp
from bench import workers as scaling
from tests.environment import need, requireTool

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
RUN = "bench.run"
WORKERS = "bench.workers"
SERVERS = {"echod", "textbook", "asyncio", "uvloop", "native"}
SCENARIOS = {
    "conn-10k",
    "pingpong-1x64",
    "pingpong-100x64",
    "pingpong-100x4k",
    "stream-4",
    "conn-rate",
}
UDP_SCENARIOS = {"udp-64", "udp-1400", "udp-sources"}


def bench(module: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """
    Run C{python -m module} from the checkout, as the README does.
    """
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_quickRunMeasuresEveryScenarioOnEveryServer(tmp_path: Path) -> None:
    """
    C{python -m bench.run --quick} completes and writes JSON holding a result for
    every scenario on every server, with no byte mismatch: the UDP scenarios
    too, on every server's UDP flavour, each of which passed the UDP check.
    """
    requireTool("gcc")
    need(importlib.util.find_spec("uvloop") is not None, "uvloop is not installed")
    output = tmp_path / "bench.json"
    done = bench(RUN, "--quick", "--json", str(output), timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    document = json.loads(output.read_text())
    assert document["mismatches"] == 0
    assert document["aborted"] is None
    assert {name for name, s in document["servers"].items() if s["status"] == "ok"} == SERVERS
    assert {name for name, s in document["servers"].items() if s["udp"]["status"] == "ok"} == (
        SERVERS
    )
    for server in SERVERS:
        assert document["servers"][server]["udp"]["check"]["largest_bytes"] == 65507
    assert set(document["scenarios"]) == SCENARIOS | UDP_SCENARIOS
    for name, scenario in document["scenarios"].items():
        keys = [metric["key"] for metric in scenario["metrics"]]
        for server in SERVERS:
            entry = scenario["servers"][server]
            assert entry["status"] == "ok", (name, server, entry)
            assert entry["rounds"], (name, server)
            for result in entry["rounds"]:
                assert result["ok"] and result["mismatches"] == 0, (name, server, result)
            for key in keys:
                assert isinstance(entry["median"][key], float), (name, server, key)
    assert "| scenario |" in done.stdout


def test_workerScalingQuickRun(tmp_path: Path) -> None:
    """
    C{python -m bench.workers --quick} runs echod in one process and with two
    workers, each in a CPU budget of its own, and writes what it measured:
    the budgets held (no more CPU used than given), the two workers both got
    connections.  (How much faster two are is measured, never asserted.)
    """
    requireTool("gcc")
    need(scaling.canBudget() is None, str(scaling.canBudget()))
    output = tmp_path / "workers.json"
    done = bench(WORKERS, "--quick", "--json", str(output), timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    document = json.loads(output.read_text())
    rows = {row["workers"]: row for row in document["rows"]}
    assert set(rows) == {1, 2}
    for row in rows.values():
        assert row["msgs_per_s"] > 0
        assert 0 < row["server_cpus"] <= 0.3 * row["workers"] * 1.15
        assert sum(row["connections_last_round"].values()) == 100
    assert len(rows[2]["connections_last_round"]) == 2
    assert all(count > 0 for count in rows[2]["connections_last_round"].values())
    assert "| workers | CPU budget |" in done.stdout
    # The budgets are gone with the run.
    assert not list(Path("/sys/fs/cgroup/cpu").glob("echod-bench-*"))
    assert not list(Path("/sys/fs/cgroup").glob("echod-bench-*"))


def test_workerScalingQuickRunOverUdp(tmp_path: Path) -> None:
    """
    C{python -m bench.workers --udp --quick} puts the processes serving
    echod's UDP port in CPU budgets, whichever they are (the main process,
    or workers once they serve UDP), measures datagrams on them and says
    which served.
    """
    requireTool("gcc")
    need(scaling.canBudget() is None, str(scaling.canBudget()))
    output = tmp_path / "workers-udp.json"
    done = bench(WORKERS, "--udp", "--quick", "--json", str(output), timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {row["workers"]: row for row in json.loads(output.read_text())["rows"]}
    assert set(rows) == {1, 2}
    assert rows[1]["served_by_last_round"] == "main"
    for row in rows.values():
        assert row["dgrams_per_s"] > 0
        serving = len(row["cpu_per_process_last_round"])
        assert row["served_by_last_round"] in ("main", f"{serving} workers")
        assert row["udp_sockets_last_round"] >= 1
        assert 0 < row["server_cpus"] <= 0.3 * serving * 1.15
    assert "| workers | processes serving UDP |" in done.stdout


def test_workerScalingRefusesBudgetsLeavingNoRoomForTheLoad() -> None:
    done = bench(WORKERS, "--workers", "1,4", "--budget", "0.9")
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1
    assert "--budget 0.9 x 4 workers" in done.stderr


def test_listNamesEveryScenario() -> None:
    """
    C{--list} names every scenario and server without building or running
    anything.
    """
    done = bench(RUN, "--list")
    assert done.returncode == 0, done.stderr
    names = {line.split()[0] for line in done.stdout.splitlines() if line.strip()}
    assert names >= SCENARIOS | UDP_SCENARIOS
    assert {f"server: {s}" for s in SERVERS} <= set(done.stdout.splitlines())


# --- the load generator catches broken servers ----------------------------------


def _corrupting(connection: socket.socket) -> None:
    """
    Echo, but flip one bit of the 5,000th byte.
    """
    total = 0
    while data := connection.recv(65536):
        if total <= 5000 < total + len(data):
            changed = bytearray(data)
            changed[5000 - total] ^= 1
            data = bytes(changed)
        total += len(data)
        connection.sendall(data)


def _neverClosing(connection: socket.socket) -> None:
    """
    Echo, but after the peer's EOF keep the connection open.
    """
    while data := connection.recv(65536):
        connection.sendall(data)
    connection.recv(1)  # returns when the test closes the listener's connections


@contextmanager
def brokenServer(handle: Callable[[socket.socket], None]) -> Iterator[int]:
    """
    A threaded echo server on loopback that misbehaves as C{handle} does.
    """
    listener = socket.create_server(("127.0.0.1", 0))
    connections: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            connections.append(connection)
            threading.Thread(target=_quietly, args=(handle, connection), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        with suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)  # wakes the accept()
        listener.close()
        for connection in connections:
            connection.close()
        thread.join(5)


def _quietly(handle: Callable[[socket.socket], None], connection: socket.socket) -> None:
    with suppress(OSError):
        handle(connection)


def runLoadgen(loadgen: Path, port: int, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [str(loadgen), "--port", str(port), "--conns", "2", "--seconds", "0.3", *args]
    return subprocess.run(
        [*argv, "--warmup", "0", "--timeout", "20"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def loadgen() -> Path:
    requireTool("gcc")
    run.build("gcc")
    return run.BUILD / "loadgen"


@pytest.mark.parametrize("mode", ["pingpong", "stream"])
def test_loadgenReportsTheFirstWrongByte(loadgen: Path, mode: str) -> None:
    """
    A server that changes one byte makes the load generator exit with status
    2, naming the connection, the offset and both values.
    """
    with brokenServer(_corrupting) as port:
        done = runLoadgen(loadgen, port, "--mode", mode)
    assert done.returncode == 2, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result["ok"] is False
    assert result["mismatches"] >= 1
    assert "at stream offset 5000" in result["error"]
    assert "mismatch on connection" in done.stderr


def test_loadgenReportsAServerThatNeverClosesAfterHalfClose(loadgen: Path) -> None:
    """
    A server that keeps a half-closed connection open fails the run (status
    1) within the drain time, and the message says so.
    """
    with brokenServer(_neverClosing) as port:
        done = runLoadgen(loadgen, port, "--mode", "pingpong", "--drain", "1")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "2 connections half-closed and waiting for the server to close" in done.stdout


# --- the UDP load generator and check catch broken servers ----------------------

Address = tuple[str, int]


@contextmanager
def brokenUdpServer(handle: Callable[[socket.socket, bytes, Address, int], None]) -> Iterator[int]:
    """
    A UDP server on loopback, in a thread, that answers datagram number N
    (from 0) as C{handle(sock, data, sender, N)} does.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        count = 0
        while not stop.is_set():
            try:
                data, sender = sock.recvfrom(70000)
            except TimeoutError:
                continue
            except OSError:
                return
            with suppress(OSError):
                handle(sock, data, sender, count)
            count += 1

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        sock.close()


def runUdpgen(udpgen: Path, port: int, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [str(udpgen), "--port", str(port), "--sockets", "2", "--window", "2"]
    return subprocess.run(
        [*argv, "--seconds", "0.3", "--warmup", "0", "--timeout", "20", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def udpgen() -> Path:
    requireTool("gcc")
    run.build("gcc")
    return run.BUILD / "udpgen"


def test_udpgenReportsTheFirstWrongByte(udpgen: Path) -> None:
    """
    A server that changes one byte of the 100th datagram makes the UDP load
    generator exit with status 2, naming the socket, sequence, byte and values.
    """

    def corrupting(sock: socket.socket, data: bytes, sender: Address, n: int) -> None:
        if n == 100:
            data = data[:40] + bytes([data[40] ^ 1]) + data[41:]
        sock.sendto(data, sender)

    with brokenUdpServer(corrupting) as port:
        done = runUdpgen(udpgen, port)
    assert done.returncode == 2, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result["ok"] is False and result["mismatches"] >= 1
    assert ": byte 40: expected 0x" in result["error"]


def test_udpgenReportsADatagramEchoedToTheWrongSocket(udpgen: Path) -> None:
    """
    A server that sends each datagram to the previous sender instead of its
    own: the header names the socket it was meant for (status 2).
    """
    senders: list[Address] = []

    def misdirecting(sock: socket.socket, data: bytes, sender: Address, n: int) -> None:
        senders.append(sender)
        sock.sendto(data, senders[-2] if len(senders) > 1 else sender)

    with brokenUdpServer(misdirecting) as port:
        done = runUdpgen(udpgen, port)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "a reply carrying the header of socket" in json.loads(done.stdout)["error"]


def test_udpgenCountsLossAndGoesOn(udpgen: Path) -> None:
    """
    A server that drops every tenth datagram: those are counted lost (after
    the loss timeout, their slots send new ones), the run succeeds, and every
    datagram sent is either echoed or lost.
    """

    def lossy(sock: socket.socket, data: bytes, sender: Address, n: int) -> None:
        if n % 10 != 9:
            sock.sendto(data, sender)

    with brokenUdpServer(lossy) as port:
        done = runUdpgen(udpgen, port, "--loss-timeout", "0.05")
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result["ok"] is True and result["mismatches"] == 0
    assert result["lost"] >= 1 and result["received"] >= 1
    assert result["sent"] == result["received"] + result["lost"]
    assert result["in_flight_at_end"] == 0


def test_udpgenBindsManySourceAddresses(udpgen: Path) -> None:
    """
    --sources K: the server sees datagrams from K distinct loopback addresses.
    """
    seen: set[str] = set()

    def echo(sock: socket.socket, data: bytes, sender: Address, n: int) -> None:
        seen.add(sender[0])
        sock.sendto(data, sender)

    with brokenUdpServer(echo) as port:
        done = runUdpgen(udpgen, port, "--sockets", "5", "--window", "1", "--sources", "5")
    assert done.returncode == 0, done.stdout + done.stderr
    assert seen == {f"127.0.1.{k}" for k in range(1, 6)}


def test_udpCheckCatchesTruncationAndASilentEmptyDatagram() -> None:
    """
    The check every UDP server passes: a server that truncates datagrams to
    8 KiB (Twisted's default maxPacketSize) echoes wrongly; one that sends
    nothing back for an empty datagram (asyncio's sendto) fails the check.
    """

    def truncating(sock: socket.socket, data: bytes, sender: Address, n: int) -> None:
        sock.sendto(data[:8192], sender)

    wrong = "largest datagram: expected 65507 bytes, got 8192"
    with brokenUdpServer(truncating) as port, pytest.raises(udp.WrongEcho, match=wrong):
        udp.checkEcho(port)

    def notEmpty(sock: socket.socket, data: bytes, sender: Address, n: int) -> None:
        if data:
            sock.sendto(data, sender)

    silent = "no echo of the empty datagram"
    with brokenUdpServer(notEmpty) as port, pytest.raises(udp.CheckFailed, match=silent):
        udp.checkEcho(port, tries=1, timeout=0.3)
