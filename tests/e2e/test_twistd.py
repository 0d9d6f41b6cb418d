"""
echod as a user runs it: a real twistd subprocess, real sockets.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.daemon import Twistd
from tests.environment import freePort, hasIPv6, need, requireIPv6
from tests.testing import echo, runTwistd, waitUntil

pytestmark = pytest.mark.e2e


def portIsFree(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_helpListsPlugins(tmp_path: Path) -> None:
    """
    twistd --help names the echod command with a one-line description.
    """
    result = runTwistd(["--help"], tmp_path)
    line = next(x for x in result.stdout.splitlines() if x.split()[:1] == ["echod"])
    assert "echo service" in line


def test_noConfigServesDualStackOn7007(tmp_path: Path) -> None:
    """
    twistd -n echod with no file: dual-stack TCP on 7007, reachable from
    127.0.0.1 and ::1; SIGTERM stops it with status 0.
    """
    need(portIsFree(7007), "port 7007 is busy on this machine")
    with Twistd(tmp_path, []) as daemon:
        assert daemon.listeningPorts() == [7007]
        assert echo("127.0.0.1", 7007, b"Hello, world") == b"Hello, world"
        if hasIPv6():
            assert echo("::1", 7007, b"Hello, six") == b"Hello, six"
        daemon.signal(signal.SIGTERM)
        assert daemon.wait() == 0
    assert "listening on [::]:7007" in daemon.output()
    assert "Traceback" not in daemon.output()


def test_configFileWithSeveralListenersAndJSONLogs(tmp_path: Path) -> None:
    port = freePort()
    sock = tmp_path / "echod.sock"
    conf = tmp_path / "echod.toml"
    conf.write_text(
        f"[server]\nlisten = ['tcp:{port}:interface=127.0.0.1', 'unix:{sock}']\n"
        '[log]\nformat = "json"\n'
    )
    with Twistd(tmp_path, ["--config", str(conf)]) as daemon:
        assert daemon.listeningPorts() == [port]
        daemon.waitFor("unix:")
        assert echo("127.0.0.1", port, b"tcp") == b"tcp"
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(str(sock))
            s.sendall(b"unix")
            s.shutdown(socket.SHUT_WR)
            assert s.recv(10) == b"unix"
        daemon.waitFor("(?s)connection.closed.*connection.closed")
        daemon.signal(signal.SIGTERM)
        assert daemon.wait() == 0
    records = [json.loads(line) for line in daemon.output().splitlines() if line.strip()]
    closed = [r for r in records if r.get("event") == "connection.closed"]
    assert closed[0]["peer"].startswith("127.0.0.1:")
    assert closed[0]["bytes"] == 3
    assert closed[0]["level"] == "info"
    assert closed[1]["peer"].startswith("unix:")
    assert closed[1]["bytes"] == 4


def test_listenOptionOverridesFile(tmp_path: Path) -> None:
    port, other = freePort(), freePort()
    conf = tmp_path / "echod.toml"
    conf.write_text(f"[server]\nlisten = ['tcp:{other}:interface=127.0.0.1']\n")
    args = ["--config", str(conf), "--listen", f"tcp:{port}:interface=127.0.0.1"]
    with Twistd(tmp_path, args) as daemon:
        assert daemon.listeningPorts() == [port]
        assert echo("127.0.0.1", port, b"x") == b"x"


@pytest.mark.parametrize(
    "content, expected",
    [
        (None, "cannot read the config file: No such file or directory"),
        ("[server\n", "line 1: invalid TOML at column"),
        ("[server]\nbacklogg = 5\n", "line 2: server.backlogg: unknown key (did you mean backlog?"),
        ('[server]\nidle_timeout = "5"\n', 'line 2: server.idle_timeout = "5": expected a number'),
        (
            "[server]\nlisten = ['tcp:port=70000']\n",
            "line 2: server.listen[1] = \"tcp:port=70000\": port '70000' is not a port number",
        ),
        ("[server]\nlisten = ['nope:1']\n", "Unknown endpoint type: 'nope'"),
    ],
)
def test_badConfigIsOneLine(tmp_path: Path, content: str | None, expected: str) -> None:
    """
    A bad config: one line on stderr naming file, line and key; status 1;
    nothing listens, nothing daemonizes, no pidfile.
    """
    conf = tmp_path / "bad.toml"
    if content is not None:
        conf.write_text(content)
    result = runTwistd(
        ["--pidfile", str(tmp_path / "pid"), "echod", "--config", str(conf)], tmp_path
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"echod: {conf}: ")
    assert expected in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "pid").exists()


def test_badListenOptionIsOneLine(tmp_path: Path) -> None:
    result = runTwistd(["-n", "echod", "--listen", "tcp:port=x"], tmp_path)
    assert result.returncode == 1
    assert result.stderr == (
        "echod: --listen = \"tcp:port=x\": port 'x' is not a port number from 0 to 65535\n"
    )


def readmeErrorsExample() -> tuple[str, list[tuple[list[str], list[str]]]]:
    """
    README's example under "### Errors": the C{bad.toml} it shows, and each
    C{twistd} command with the lines it prints (the busy port's aside: it
    needs a port in use).
    """
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("### Errors\n") :]
    start = section.index("    $ cat bad.toml\n")
    lines = section[start:].split("\n")[1:]
    block = []
    for line in lines:
        if line and not line.startswith("    "):
            break
        block.append(line[4:])
    while block and not block[-1]:
        block.pop()
    first = next(i for i, line in enumerate(block) if line.startswith("$ "))
    content = "\n".join(block[:first]) + "\n"
    runs: list[tuple[list[str], list[str]]] = []
    for line in block[first:]:
        if line.startswith("$ "):
            runs.append((line[2:].split(), []))
        else:
            runs[-1][1].append(line)
    return content, [(argv, out) for argv, out in runs if "tcp:22" not in argv]


def test_readmeErrorsExample(tmp_path: Path) -> None:
    """
    README's example of a file with several mistakes is what a real run
    prints: every problem at once, one line each, in file order.
    """
    content, runs = readmeErrorsExample()
    assert "[metric]" in content
    (tmp_path / "bad.toml").write_text(content)
    assert [argv[:4] for argv, _ in runs] == [["twistd", "-n", "--pidfile=", "echod"]] * 2
    assert len(runs[0][1]) >= 3
    for argv, expected in runs:
        result = runTwistd(argv[1:], tmp_path)
        assert result.returncode == 1
        assert result.stderr.splitlines() == expected
        assert "Traceback" not in result.stderr + result.stdout


@contextmanager
def busyPort() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def test_busyPortIsOneLine(tmp_path: Path) -> None:
    """
    A port already in use: one clear line and status 1, no traceback, and
    not a second time as a critical line of the log (on standard output).
    """
    with busyPort() as port:
        result = runTwistd(
            ["-n", "--pidfile=", "echod", "--listen", f"tcp:{port}:interface=127.0.0.1"], tmp_path
        )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stderr == (
        f"echod: cannot listen on tcp:{port}:interface=127.0.0.1: address already in use\n"
    )
    assert "cannot listen" not in result.stdout


def test_unixSocketInAMissingDirectoryIsOneLine(tmp_path: Path) -> None:
    """
    Twisted fails before it listens (its lock file beside the socket): the
    same one line, not a traceback.
    """
    path = tmp_path / "missing" / "echod.sock"
    result = runTwistd(["-n", "--pidfile=", "echod", "--listen", f"unix:{path}"], tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stderr == f"echod: cannot listen on unix:{path}: no such file or directory\n"


def test_busyPortInTheForegroundWithALogFile(tmp_path: Path) -> None:
    """
    In the foreground with --logfile: the line on stderr, and once in the log.
    """
    log = tmp_path / "echod.log"
    with busyPort() as port:
        result = runTwistd(
            ["-n", "--pidfile=", f"--logfile={log}", "echod", "--listen", f"tcp:{port}"],
            tmp_path,
        )
    line = f"cannot listen on tcp:{port}: address already in use"
    assert result.returncode == 1
    assert result.stderr == f"echod: {line}\n"
    assert result.stdout == ""
    assert log.read_text().count(line) == 1


@pytest.mark.fastpath  # twistd's report replaced on the checked release only
def test_busyPortInDaemonMode(tmp_path: Path) -> None:
    """
    In daemon mode the error happens in the forked child; twistd's parent
    prints the same plain line as in the foreground (not twistd's
    "An error has occurred: b'echod.errors.ListenError: ...'"), exits 1, the
    pidfile is removed and the log says it once.
    """
    pidfile = tmp_path / "echod.pid"
    log = tmp_path / "echod.log"
    with busyPort() as port:
        listen = f"tcp:port={port}:interface=127.0.0.1:backlog=50"
        result = runTwistd(
            [f"--pidfile={pidfile}", f"--logfile={log}", "echod", "--listen", listen],
            tmp_path,
        )
    line = f"cannot listen on {listen}: address already in use"
    # Whole: twistd's own report kept 100 bytes of "1 echod.errors.ListenError: ...".
    assert len(line) > 100 - len("1 echod.errors.ListenError: ")
    assert result.returncode == 1
    assert result.stderr == f"echod: {line}\n"
    assert log.read_text().count(line) == 1  # logged before the parent was told
    # The child removes the pidfile just after telling the parent.
    deadline = time.monotonic() + 10
    while pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pidfile.exists()


def test_sigtermDrainsThenExitsZero(tmp_path: Path) -> None:
    """
    SIGTERM: listening stops, an open connection gets the echo of what it
    sent and a clean EOF, and twistd exits 0.
    """
    port = freePort()
    with Twistd(tmp_path, ["--listen", f"tcp:{port}:interface=127.0.0.1"]) as daemon:
        daemon.listeningPorts()
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"before the end")
        daemon.waitFor("connected to")
        # The echo is on its way back (seen, not read).
        waitUntil(lambda: select.select([s], [], [], 0)[0], timeout=10)
        daemon.signal(signal.SIGTERM)
        got = b""
        while chunk := s.recv(100):
            got += chunk
        assert got == b"before the end"
        s.close()
        assert daemon.wait(15) == 0
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2)
    out = daemon.output()
    assert "draining 1 connections" in out
    assert "all connections closed" in out


def test_shutdownTimeoutCutsNonReaders(tmp_path: Path) -> None:
    port = freePort()
    conf = tmp_path / "e.toml"
    conf.write_text(
        f"[server]\nlisten = ['tcp:{port}:interface=127.0.0.1']\nshutdown_timeout = 1\n"
    )
    with Twistd(tmp_path, ["--config", str(conf)]) as daemon:
        daemon.listeningPorts()
        s = socket.create_connection(("127.0.0.1", port))
        s.setblocking(False)
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            try:
                s.send(b"z" * 65536)
            except BlockingIOError:
                time.sleep(0.01)
        began = time.monotonic()
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(15) == 0
        assert time.monotonic() - began < 5
        s.close()
    assert "aborting 1 connections: shutdown timeout" in daemon.output()


def test_daemonModeWritesPidfileAndStops(tmp_path: Path) -> None:
    """
    twistd echod --pidfile --logfile: the parent returns 0 at once, the
    daemon serves and writes its pid; SIGTERM stops it and removes the pidfile.
    """
    port = freePort()
    pidfile, logfile = tmp_path / "echod.pid", tmp_path / "echod.log"
    result = runTwistd(
        [
            f"--pidfile={pidfile}",
            f"--logfile={logfile}",
            "echod",
            "--listen",
            f"tcp:{port}:interface=127.0.0.1",
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    pid = int(pidfile.read_text())
    try:
        assert os.path.exists(f"/proc/{pid}")
        assert echo("127.0.0.1", port, b"daemon") == b"daemon"
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not os.path.exists(f"/proc/{pid}")
        assert not pidfile.exists()
    finally:
        if os.path.exists(f"/proc/{pid}"):
            os.kill(pid, signal.SIGKILL)
    log = logfile.read_text()
    assert "connection.closed" not in log  # text format by default
    assert "disconnected after" in log
    assert "Server Shut Down." in log


@pytest.fixture(scope="module")
def sharedServer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    directory = tmp_path_factory.mktemp("shared")
    port = freePort()
    conf = directory / "e.toml"
    conf.write_text(
        f"[server]\nlisten = ['tcp:{port}:interface=127.0.0.1']\n[log]\nlevel = 'warn'\n"
    )
    daemon = Twistd(directory, ["--config", str(conf)]).start()
    try:
        deadline = time.monotonic() + 15
        while portIsFree(port) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not portIsFree(port), daemon.output()
        yield "127.0.0.1", port
    finally:
        daemon.stop()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(chunks=st.lists(st.binary(min_size=0, max_size=70000), max_size=12))
def test_arbitraryChunksOverRealSocket(sharedServer: tuple[str, int], chunks: list[bytes]) -> None:
    """
    Any byte sequence, sent in arbitrary pieces over a real connection to a
    real twistd echod, comes back identical.
    """
    host, port = sharedServer
    payload = b"".join(chunks)
    with socket.create_connection((host, port), timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        received = bytearray()
        for chunk in chunks:
            s.sendall(chunk)
            s.setblocking(False)
            try:
                while True:
                    data = s.recv(262144)
                    if not data:
                        break
                    received += data
            except BlockingIOError:
                pass
            s.setblocking(True)
            s.settimeout(10)
        s.shutdown(socket.SHUT_WR)
        while data := s.recv(262144):
            received += data
    assert bytes(received) == payload


def test_ipv6Only(tmp_path: Path) -> None:
    requireIPv6()
    port = freePort(socket.AF_INET6)
    with Twistd(tmp_path, ["--listen", rf"tcp6:{port}:interface=\:\:1"]) as daemon:
        daemon.listeningPorts()
        assert echo("::1", port, b"only six") == b"only six"


def test_badSniffFilterInsideEchodIsOneLine(tmp_path: Path) -> None:
    """
    With [sniff] enabled, the capture is checked with the rest of the config:
    a filter libpcap rejects stops echod before anything listens.
    """
    conf = tmp_path / "echod.toml"
    conf.write_text("[sniff]\nenabled = true\ninterface = 'lo'\nfilter = 'tcp port sevenn'\n")
    result = runTwistd(["-n", "--pidfile=", "echod", "--config", str(conf)], tmp_path)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("echod: ")
    assert "sevenn" in result.stderr
    assert "listening on" not in result.stdout
