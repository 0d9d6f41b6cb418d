"""
The C{echod-sniff} console command as a tcpdump user runs it, as root, on
loopback: tcpdump's options and messages, the same packets as tcpdump
prints, C{-w} read back by tcpdump, SIGINT and C{-c} ending with status 0,
C{-G}/C{-W} rotation ending by itself, C{-Z}, and one line for each mistake.

Skipped on a laptop without root or tcpdump; under CI=true those fail.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.environment import requireRoot, requireTool
from tests.testing import pcapRecords, readsPacketSocket, waitUntil

pytestmark = [pytest.mark.e2e, pytest.mark.root]


def sniffPath() -> str:
    candidate = Path(sys.executable).parent / "echod-sniff"
    return str(candidate) if candidate.exists() else "echod-sniff"


@pytest.fixture(autouse=True)
def _privileged() -> None:
    requireRoot()
    requireTool("tcpdump")


class Command:
    """
    C{echod-sniff ARGS} (or another command), its standard output and
    standard error in files of C{directory}.
    """

    def __init__(self, directory: Path, argv: list[str], name: str = "sniff") -> None:
        self.argv = argv
        self.stdoutPath = directory / f"{name}.out"
        self.stderrPath = directory / f"{name}.err"
        env = {**os.environ, "TZ": "UTC"}
        with open(self.stdoutPath, "wb") as out, open(self.stderrPath, "wb") as err:
            self.process = subprocess.Popen(
                argv, cwd=directory, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env
            )

    def stdout(self) -> str:
        return self.stdoutPath.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderrPath.read_text(errors="replace")

    def waitListening(self) -> None:
        waitUntil(
            lambda: "listening on" in self.stderr() or self.process.poll() is not None,
            timeout=20,
            what=f"{self.argv[0]} listening",
        )
        assert self.process.poll() is None, self.stderr()
        # Once it runs as another user (-Z) the process is not dumpable: its
        # /proc/PID/fd is out of reach without CAP_SYS_PTRACE.
        if self.argv[0] != "tcpdump" and "-Z" not in self.argv:
            waitUntil(lambda: readsPacketSocket(self.process.pid), what="reading the capture")

    def wait(self, timeout: float = 30) -> int:
        return self.process.wait(timeout)

    def interrupt(self) -> int:
        self.process.send_signal(signal.SIGINT)
        return self.wait()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def commands(tmp_path: Path) -> Iterator[list[Command]]:
    started: list[Command] = []
    yield started
    for command in started:
        command.kill()


def start(commands: list[Command], directory: Path, argv: list[str], name: str) -> Command:
    command = Command(directory, argv, name)
    commands.append(command)
    command.waitListening()
    return command


def freePort() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def send(port: int, count: int, size: int = 5) -> None:
    """
    C{count} UDP datagrams to a port where nobody listens (each gets an
    ICMP port unreachable back, which a "udp" filter leaves out).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for n in range(count):
            s.sendto(bytes([65 + n % 26]) * size, ("127.0.0.1", port))


def packetLines(text: str) -> list[str]:
    return [line for line in text.splitlines() if re.match(r"\d\d:\d\d:\d\d\.\d{6} ", line)]


def test_sameLinesAsTcpdump(commands: list[Command], tmp_path: Path) -> None:
    """
    C{echod-sniff -i lo -c N EXPR} beside C{tcpdump -i lo -c N -nn EXPR}:
    the same lines for the same packets, tcpdump's messages on standard
    error, status 0 once the count is reached.
    """
    port = freePort()
    expression = ["udp", "and", "dst", "port", str(port)]
    ours = start(commands, tmp_path, [sniffPath(), "-i", "lo", "-c", "5", *expression], "ours")
    theirs = start(commands, tmp_path, ["tcpdump", "-i", "lo", "-c", "5", "-nn", *expression], "td")
    send(port, 5)
    assert ours.wait() == 0, ours.stderr()
    assert theirs.wait() == 0, theirs.stderr()
    lines = packetLines(ours.stdout())
    assert len(lines) == 5
    # Each capture socket stamps packets itself: the times differ by a few
    # microseconds; the rest of each line is tcpdump's.
    assert [line.split(" ", 1)[1] for line in lines] == [
        line.split(" ", 1)[1] for line in packetLines(theirs.stdout())
    ]
    err = ours.stderr().splitlines()
    assert err[0] == (
        "echod-sniff: listening on lo, link-type EN10MB (Ethernet), snapshot length 262144 bytes"
    )
    assert err[-3:] == [
        "5 packets captured",
        "5 packets received by filter",
        "0 packets dropped by kernel",
    ]


def test_writeThenInterrupt(commands: list[Command], tmp_path: Path) -> None:
    """
    C{-w FILE}: a pcap file tcpdump reads; SIGINT ends the capture with
    every packet written, the counters, and status 0.
    """
    port = freePort()
    output = tmp_path / "echo.pcap"
    argv = [sniffPath(), "-i", "lo", "-w", str(output), "udp", "dst", "port", str(port)]
    ours = start(commands, tmp_path, argv, "ours")
    send(port, 20)
    # The kernel hands a block over when it is full or 50 ms old.
    waitUntil(lambda: output.exists() and pcapRecords(output) == 20, what="20 packets written")
    # SIGUSR1: the counters so far, on one line, as tcpdump prints them.
    ours.process.send_signal(signal.SIGUSR1)
    waitUntil(
        lambda: (
            "20 packets captured, 20 packets received by filter, 0 packets dropped by kernel"
            in ours.stderr()
        ),
        what="the counters on SIGUSR1",
    )
    assert ours.interrupt() == 0, ours.stderr()
    assert ours.stdout() == ""
    assert ours.stderr().splitlines()[-3] == "20 packets captured"
    read = subprocess.run(
        ["tcpdump", "-nn", "-r", str(output)], capture_output=True, text=True, check=True
    )
    assert len(packetLines(read.stdout)) == 20
    assert "link-type EN10MB (Ethernet)" in read.stderr


def test_rotationByTime(commands: list[Command], tmp_path: Path) -> None:
    """
    C{-G 1 -W 2 -w 'cap-%H%M%S.pcap'}: files named by strftime, a new one
    at the first packet a second after the last opened, and after two
    files the command ends by itself, status 0, as tcpdump does.
    """
    port = freePort()
    pattern = str(tmp_path / "cap-%H%M%S.pcap")
    argv = [sniffPath(), "-i", "lo", "-G", "1", "-W", "2", "-w", pattern, "udp port", str(port)]
    ours = start(commands, tmp_path, argv, "ours")
    deadline = time.monotonic() + 30
    while ours.process.poll() is None and time.monotonic() < deadline:
        send(port, 1)
        time.sleep(0.1)
    assert ours.wait() == 0, ours.stderr()
    files = sorted(tmp_path.glob("cap-*.pcap"))
    assert len(files) == 2, files
    assert all(re.fullmatch(r"cap-\d{6}\.pcap", f.name) for f in files)
    assert all(pcapRecords(f) > 0 for f in files)
    assert "echod-sniff: maximum file limit reached: 2" in ours.stderr()


def test_relinquishPrivileges(
    commands: list[Command], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """
    C{-Z nobody}: the capture is opened as root, then the process runs as
    nobody and creates its output as nobody.
    """
    # pytest's tmp_path is under a directory only root may enter.
    directory = Path(tempfile.mkdtemp(prefix="echod-sniff-Z-", dir="/tmp"))
    request.addfinalizer(lambda: shutil.rmtree(directory, ignore_errors=True))
    nobody = pwd.getpwnam("nobody")
    os.chown(directory, nobody.pw_uid, nobody.pw_gid)
    port = freePort()
    output = directory / "cap.pcap"
    argv = [sniffPath(), "-i", "lo", "-Z", "nobody", "-w", str(output), "udp port", str(port)]
    ours = start(commands, tmp_path, argv, "ours")
    status = Path(f"/proc/{ours.process.pid}/status").read_text()
    uids = re.search(r"^Uid:\s+(\d+)\s+(\d+)\s+(\d+)", status, re.MULTILINE)
    assert uids is not None and {int(u) for u in uids.groups()} == {nobody.pw_uid}
    deadline = time.monotonic() + 20
    while not (output.exists() and pcapRecords(output)) and time.monotonic() < deadline:
        send(port, 1)
        time.sleep(0.1)
    assert output.exists() and pcapRecords(output), ours.stderr()
    assert output.stat().st_uid == nobody.pw_uid
    assert ours.interrupt() == 0, ours.stderr()


@pytest.mark.parametrize(
    ("argv", "status", "message"),
    [
        (
            ["-i", "lo", "tcp port sevenn"],
            2,
            "echod-sniff: bad filter 'tcp port sevenn': unknown port 'sevenn'",
        ),
        (["-i", "eth9"], 2, "echod-sniff: no interface named 'eth9' here"),
        (["-w", "/nonexistent/x.pcap"], 1, "echod-sniff: cannot write /nonexistent/x.pcap"),
    ],
)
def test_mistakes(tmp_path: Path, argv: list[str], status: int, message: str) -> None:
    result = subprocess.run(
        [sniffPath(), *argv], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert result.returncode == status, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].startswith(message), lines
    assert "Traceback" not in result.stderr


def test_noPrivilege(tmp_path: Path) -> None:
    """
    As nobody: one line, status 1.
    """
    setpriv = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    result = subprocess.run(
        [*setpriv, sys.executable, "-c", "from echod.tap.sniffcommand import main; "
         "raise SystemExit(main(['-i', 'lo']))"],
        capture_output=True, text=True, timeout=60, cwd="/",
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert result.stderr == (
        "echod-sniff: capturing on lo needs root or the CAP_NET_RAW capability "
        "(operation not permitted)\n"
    )


def test_closedPipe(tmp_path: Path) -> None:
    """
    C{echod-sniff | head -n 1}: when the reader goes, the command ends
    quietly, as tcpdump does.
    """
    port = freePort()
    script = f"{sniffPath()} -i lo udp port {port} | head -n 1"
    process = subprocess.Popen(
        ["sh", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 30
        while process.poll() is None and time.monotonic() < deadline:
            send(port, 1)
            time.sleep(0.1)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert len(out.splitlines()) == 1
    assert "Traceback" not in err
    assert "broken pipe" not in err
