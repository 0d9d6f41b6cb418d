"""
C{twistd echod-sniff} as a user runs it, as root, against a real
C{twistd echod} on loopback: text, JSON and pcap output (read back by
tshark and tcpdump), the kernel filter, C{--count}, rotation, the drop to
C{--uid nobody}, the error without privilege, the sniffer inside echod, and
real Ethernet frames on a veth pair in network namespaces of its own.

Skipped on a laptop without root or tshark; under CI=true those fail.
"""

from __future__ import annotations

import contextlib
import json
import os
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

from tests.daemon import Twistd, twistdPath
from tests.environment import hasIPv6, need, requireRoot, requireTool
from tests.testing import pcapRecords, readsPacketSocket, waitUntil

pytestmark = [pytest.mark.e2e, pytest.mark.root]

PAYLOAD = b"hello"


class Sniffer:
    """
    C{twistd -n --pidfile= [TWISTD_ARGS] echod-sniff ARGS}, optionally under
    a C{prefix} command (setpriv, ip netns exec), with standard output and
    standard error in separate files of C{directory}.
    """

    def __init__(
        self,
        directory: Path,
        args: list[str],
        twistdArgs: list[str] | None = None,
        prefix: list[str] | None = None,
    ) -> None:
        self.directory = directory
        self.argv = [
            *(prefix or []),
            twistdPath(),
            "-n",
            "--pidfile=",
            *(twistdArgs or []),
            "echod-sniff",
            *args,
        ]
        self.stdoutPath = directory / "sniff.out"
        self.stderrPath = directory / "sniff.err"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Sniffer:
        with open(self.stdoutPath, "wb") as out, open(self.stderrPath, "wb") as err:
            self.process = subprocess.Popen(
                self.argv, cwd=self.directory, stdout=out, stderr=err, stdin=subprocess.DEVNULL
            )
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stdout(self) -> str:
        return self.stdoutPath.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderrPath.read_text(errors="replace")

    def both(self) -> str:
        return self.stdout() + self.stderr()

    def waitFor(self, pattern: str, timeout: float = 20.0, where: str = "both") -> re.Match[str]:
        deadline = time.monotonic() + timeout
        compiled = re.compile(pattern, re.MULTILINE)
        while time.monotonic() < deadline:
            text = {"both": self.both, "stdout": self.stdout, "stderr": self.stderr}[where]()
            match = compiled.search(text)
            if match:
                return match
            if self.process is not None and self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{pattern!r} not seen; output:\n{self.both()}")

    def waitUntilCapturing(self) -> None:
        """
        The capture is open once logged; reading starts once the reactor
        runs, when the packet socket joins its epoll.
        """
        self.waitFor(r"capturing on \S+ \(")
        waitUntil(lambda: readsPacketSocket(self.pid), what="the sniffer reading its capture")

    def wait(self, timeout: float = 20.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self) -> int | None:
        """
        SIGTERM (after the kernel's 50 ms block timeout has handed over the
        last packets), then SIGKILL if it does not stop.
        """
        if self.process is None:
            return None
        if self.process.poll() is None:
            time.sleep(0.3)
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int | None]]:
    """
    A real C{twistd echod} on 127.0.0.1 (and ::1 where there is IPv6).
    """
    requireRoot()
    requireTool("tshark")
    requireTool("tcpdump")
    directory = tmp_path_factory.mktemp("echod-server")
    listen = ["--listen", "tcp:port=0:interface=127.0.0.1"]
    ipv6 = hasIPv6()
    if ipv6:
        listen += ["--listen", r"tcp6:port=0:interface=\:\:1"]
    with Twistd(directory, listen) as daemon:
        ports = daemon.listeningPorts(2 if ipv6 else 1)
        yield ports[0], ports[1] if ipv6 else None


def echo(port: int, payload: bytes = PAYLOAD, host: str = "127.0.0.1") -> int:
    """
    One TCP exchange with the echo server; returns the client's port.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect((host, port))
        client: int = s.getsockname()[1]
        s.sendall(payload)
        received = b""
        while len(received) < len(payload):
            chunk = s.recv(65536)
            assert chunk, "the echo server closed early"
            received += chunk
        assert received == payload
        s.shutdown(socket.SHUT_WR)
        assert s.recv(10) == b""
    return client


def tsharkFields(path: Path, *fields: str) -> list[list[str]]:
    argv = ["tshark", "-r", str(path), "-T", "fields"]
    for name in fields:
        argv += ["-e", name]
    # tshark as root warns on stderr: only the exit status counts.
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
    return [line.split("\t") for line in result.stdout.splitlines()]


def tcpdumpRead(path: Path) -> list[str]:
    result = subprocess.run(
        ["tcpdump", "-r", str(path), "-nn"], capture_output=True, text=True, timeout=60, check=True
    )
    return result.stdout.splitlines()


class Reference:
    """
    The reference capture of L{tcpdumpWriting}: its packets so far.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def waitFor(self, count: int) -> None:
        """
        Wait until tcpdump has written C{count} packets: the comparison is
        made once it had the time to see what we saw, not after a guess.
        """
        waitUntil(
            lambda: pcapRecords(self.path) >= count,
            timeout=20,
            what=f"tcpdump writing {count} packets to {self.path}",
        )


@contextlib.contextmanager
def tcpdumpWriting(path: Path, expression: str) -> Iterator[Reference]:
    """
    tcpdump -w on the same traffic: the reference count. The test calls
    L{Reference.waitFor} with its own count before this ends (SIGINT makes
    tcpdump drop what it has not read from its ring yet).
    """
    log = path.with_suffix(".log")
    with open(log, "wb") as out:
        process = subprocess.Popen(
            # --immediate-mode and -U: each packet reaches the file as soon
            # as tcpdump reads it, which Reference.waitFor watches.
            ["tcpdump", "-i", "lo", "-n", "-U", "--immediate-mode", "-w", str(path), expression],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        waitUntil(
            lambda: b"listening on" in log.read_bytes() or process.poll() is not None,
            timeout=10,
            what="tcpdump listening",
        )
        assert process.poll() is None, log.read_text()
        yield Reference(path)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(20)


def packetLines(text: str) -> list[str]:
    return [line for line in text.splitlines() if re.match(r"\d\d:\d\d:\d\d\.\d{6} ", line)]


def test_text(server: tuple[int, int | None], tmp_path: Path) -> None:
    """
    One tcpdump-like line per packet on stdout (the log on stderr); on lo
    each packet appears once, as many as tcpdump counts.
    """
    port, port6 = server
    expression = f"tcp port {port}" + (f" or tcp port {port6}" if port6 else "")
    reference = tmp_path / "reference.pcap"
    with tcpdumpWriting(reference, expression) as tcpdump:
        with Sniffer(tmp_path, ["--interface", "lo", "--filter", expression]) as sniffer:
            sniffer.waitUntilCapturing()
            client = echo(port)
            client6 = echo(port6, host="::1") if port6 else None
            sniffer.waitFor(rf"> 127\.0\.0\.1\.{client}: Flags \[F?\.", where="stdout")
        lines = packetLines(sniffer.stdout())
        tcpdump.waitFor(len(lines))
    assert sniffer.process is not None and sniffer.process.returncode is not None
    assert packetLines(sniffer.stderr()) == []
    syn = [line for line in lines if f"127.0.0.1.{client} > 127.0.0.1.{port}: Flags [S]," in line]
    assert len(syn) == 1, lines
    assert re.search(r"^\S+ lo In IP 127\.0\.0\.1\.\d+ > 127\.0\.0\.1\.\d+: Flags \[S\], seq \d+, "
                     r"win \d+, options \[mss \d+[^]]*\], length 0$", syn[0]), syn  # fmt: skip
    data = [line for line in lines if f"> 127.0.0.1.{port}: Flags [P.]" in line]
    assert data and data[0].endswith(f", length {len(PAYLOAD)}"), lines
    assert any(f"127.0.0.1.{port} > 127.0.0.1.{client}: Flags [P.]" in line for line in lines)
    assert not any(" Out " in line for line in lines)
    if client6 is not None:
        assert any(f"lo In IP6 ::1.{client6} > ::1.{port6}: Flags [S]" in line for line in lines)
    assert len(lines) == len(tcpdumpRead(reference))
    assert "dropped by the kernel" in sniffer.stderr()


def test_json(server: tuple[int, int | None], tmp_path: Path) -> None:
    """
    --format json: one object per packet with the decoded fields.
    """
    port, _ = server
    output = tmp_path / "packets.json"
    with Sniffer(
        tmp_path, ["-i", "lo", "-f", f"tcp port {port}", "--format", "json", "-o", str(output)]
    ) as sniffer:
        sniffer.waitUntilCapturing()
        client = echo(port)
        deadline = time.monotonic() + 5
        while output.read_text().count("\n") < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
    records = [json.loads(line) for line in output.read_text().splitlines()]
    (syn,) = [r for r in records if r.get("tcp_flags") == "S"]
    assert (syn["src"], syn["dst"], syn["src_port"], syn["dst_port"]) == (
        "127.0.0.1",
        "127.0.0.1",
        client,
        port,
    )
    assert (syn["interface"], syn["direction"], syn["protocol"]) == ("lo", "in", "TCP")
    assert syn["time"].endswith("Z") and isinstance(syn["time_ns"], int)
    pushed = [r for r in records if r.get("tcp_flags") == "P."]
    assert [r["payload_length"] for r in pushed] == [len(PAYLOAD), len(PAYLOAD)]
    assert all("ack" in r for r in pushed)


def test_pcap(server: tuple[int, int | None], tmp_path: Path) -> None:
    """
    --format pcap: tshark and tcpdump read the file, with the packet count
    tcpdump itself captured and the right fields.
    """
    port, _ = server
    output, reference = tmp_path / "sniff.pcap", tmp_path / "reference.pcap"
    expression = f"tcp port {port}"
    with tcpdumpWriting(reference, expression) as tcpdump:
        with Sniffer(
            tmp_path, ["-i", "lo", "-f", expression, "--format", "pcap", "-o", str(output)]
        ) as sniffer:
            sniffer.waitUntilCapturing()
            clients = [echo(port, PAYLOAD * n) for n in (1, 2, 3)]
        tcpdump.waitFor(pcapRecords(output))
    rows = tsharkFields(output, "frame.number", "tcp.srcport", "tcp.dstport", "tcp.len", "eth.type")
    assert len(rows) == len(tsharkFields(reference, "frame.number")) >= 3 * 7
    assert all(row[4] == "0x0800" for row in rows)
    lengths: dict[tuple[int, int], list[int]] = {}
    for row in rows:
        lengths.setdefault((int(row[1]), int(row[2])), []).append(int(row[3]))
    for n, client in enumerate(clients, 1):
        assert len(PAYLOAD) * n in lengths[(client, port)]
        assert len(PAYLOAD) * n in lengths[(port, client)]
    lines = tcpdumpRead(output)
    assert len(lines) == len(rows)
    assert sum("Flags [S]," in line for line in lines) == 3


def test_filter(server: tuple[int, int | None], tmp_path: Path) -> None:
    """
    The kernel filter keeps other traffic out: datagrams to another port
    are not seen, not even counted.
    """
    port, _ = server
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.bind(("127.0.0.1", 0))
    otherPort = other.getsockname()[1]
    with other, Sniffer(tmp_path, ["-i", "lo", "-f", f"tcp port {port}"]) as sniffer:
        sniffer.waitUntilCapturing()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for _ in range(20):
                sender.sendto(b"noise", ("127.0.0.1", otherPort))
        client = echo(port)
        sniffer.waitFor(rf"> 127\.0\.0\.1\.{client}: Flags \[F?\.", where="stdout")
    lines = packetLines(sniffer.stdout())
    assert lines and all(f".{port}" in line for line in lines)
    assert not any(str(otherPort) in line for line in lines)
    stats = re.search(r"stopped: (\d+) packets seen, (\d+) passed", sniffer.stderr())
    assert stats is not None, sniffer.stderr()
    assert int(stats.group(1)) == int(stats.group(2)) == len(lines)


def test_count(server: tuple[int, int | None], tmp_path: Path) -> None:
    """
    --count N: N packets, then the process stops by itself with status 0.
    """
    port, _ = server
    with Sniffer(tmp_path, ["-i", "lo", "-f", f"tcp port {port}", "--count", "3"]) as sniffer:
        sniffer.waitUntilCapturing()
        echo(port)
        status = sniffer.wait(20)
    assert status == 0, sniffer.both()
    assert len(packetLines(sniffer.stdout())) == 3
    assert "3 packets captured: stopping the capture" in sniffer.stderr()


def test_fullDisk(server: tuple[int, int | None], tmp_path: Path) -> None:
    """
    An output on a full disk (/dev/full, ENOSPC): the sniffer says once, in
    one line, that the output failed, exits 1, and its summary counts the
    packets it could not write as not written, never as passed to output.
    """
    port, _ = server
    args = ["-i", "lo", "-f", f"tcp port {port}", "--format", "pcap", "-o", "/dev/full"]
    with Sniffer(tmp_path, args) as sniffer:
        sniffer.waitUntilCapturing()
        echo(port)
        status = sniffer.wait(20)
    log = sniffer.both()
    assert status == 1, log
    assert log.count("no space left on device") == 1, log
    (line,) = [x for x in log.splitlines() if "cannot write /dev/full" in x]
    assert line.endswith("capture on lo failed: cannot write /dev/full: no space left on device")
    summary = re.search(
        r"capture on lo stopped: (\d+) packets seen, 0 passed to output, "
        r"(\d+) not written \(the output failed\), 0 dropped by the kernel",
        log,
    )
    assert summary is not None, log
    assert int(summary[2]) > 0
    assert "Traceback" not in log


def test_rotation(server: tuple[int, int | None], tmp_path: Path) -> None:
    """
    --rotate-bytes/--rotate-count: files like tcpdump -C/-W, each a pcap
    file of its own no larger than the size, the oldest reused.
    """
    port, _ = server
    base = tmp_path / "ring.pcap"
    args = ["-i", "lo", "-f", f"tcp port {port}", "--format", "pcap", "-o", str(base)]
    with Sniffer(tmp_path, [*args, "--rotate-bytes", "3000", "--rotate-count", "3"]) as sniffer:
        sniffer.waitUntilCapturing()
        for _ in range(12):
            echo(port, b"x" * 200)
    names = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("ring.pcap"))
    assert names == ["ring.pcap0", "ring.pcap1", "ring.pcap2"]
    for name in names:
        path = tmp_path / name
        assert 24 < path.stat().st_size <= 3000
        assert len(tsharkFields(path, "frame.number")) >= 1
    assert sniffer.process is not None and sniffer.process.returncode in (0, -signal.SIGTERM)


def test_rotationUnbounded(server: tuple[int, int | None], tmp_path: Path) -> None:
    """
    Without --rotate-count the files are FILE, FILE1, FILE2...
    """
    port, _ = server
    base = tmp_path / "all.pcap"
    args = ["-i", "lo", "-f", f"tcp port {port}", "--format", "pcap", "-o", str(base)]
    with Sniffer(tmp_path, [*args, "--rotate-bytes", "2000"]) as sniffer:
        sniffer.waitUntilCapturing()
        for _ in range(6):
            echo(port, b"y" * 200)
    names = {p.name for p in tmp_path.iterdir() if p.name.startswith("all.pcap")}
    assert {"all.pcap", "all.pcap1", "all.pcap2"} <= names
    total = sum(len(tsharkFields(tmp_path / name, "frame.number")) for name in names)
    assert total >= 6 * 7


def _uids(pid: int) -> list[int]:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Uid:"):
                return [int(n) for n in line.split()[1:]]
    raise AssertionError("no Uid line")


def test_dropPrivileges(server: tuple[int, int | None], request: pytest.FixtureRequest) -> None:
    """
    Opened as root, then --uid/--gid nobody: the process runs as nobody,
    keeps capturing, and its output file belongs to nobody.
    """
    port, _ = server
    need(shutil.which("setpriv") is not None, "setpriv (util-linux) is not installed")
    # Not under tmp_path: pytest's base directory is 0700, closed to nobody.
    directory = Path(tempfile.mkdtemp(prefix="echod-sniff-nobody-"))
    request.addfinalizer(lambda: shutil.rmtree(directory, ignore_errors=True))
    directory.chmod(0o777)
    output = directory / "packets.txt"
    with Sniffer(
        directory,
        ["-i", "lo", "-f", f"tcp port {port}", "-o", str(output)],
        twistdArgs=["--uid", "nobody", "--gid", "nogroup"],
    ) as sniffer:
        sniffer.waitFor(r"set uid/gid 65534/65534")
        sniffer.waitUntilCapturing()
        assert _uids(sniffer.pid) == [65534] * 4
        client = echo(port)
        deadline = time.monotonic() + 5
        while f"{client} > " not in output.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
    assert f"127.0.0.1.{client} > 127.0.0.1.{port}: Flags [S]" in output.read_text()
    assert output.stat().st_uid == 65534


def test_noPrivilege(tmp_path: Path) -> None:
    """
    As nobody, without CAP_NET_RAW: one line saying what is needed, status 1.

    The process is also given CAP_DAC_READ_SEARCH so that nobody can read
    the Python installation wherever it lives (root's home is 0700 here);
    it has nothing to do with capturing.
    """
    requireRoot()
    need(shutil.which("setpriv") is not None, "setpriv (util-linux) is not installed")
    tmp_path.chmod(0o777)
    prefix = [
        "setpriv",
        "--reuid=nobody",
        "--regid=nogroup",
        "--clear-groups",
        "--inh-caps=+dac_read_search",
        "--ambient-caps=+dac_read_search",
    ]
    with Sniffer(tmp_path, ["-i", "lo"], prefix=prefix) as sniffer:
        status = sniffer.wait(30)
    output = sniffer.both()
    assert status == 1, output
    assert "Traceback" not in output
    problems = [line for line in output.splitlines() if "CAP_NET_RAW" in line]
    assert len(problems) == 1, output
    assert problems[0].endswith(
        "echod-sniff: capturing on lo needs root or the CAP_NET_RAW capability "
        "(operation not permitted)"
    )


def test_capabilityOnly(server: tuple[int, int | None], tmp_path: Path) -> None:
    """
    Not root, only CAP_NET_RAW (as systemd's AmbientCapabilities= gives it):
    the capture opens and works.  (CAP_DAC_READ_SEARCH only lets nobody
    read the Python installation, as in L{test_noPrivilege}.)
    """
    port, _ = server
    need(shutil.which("setpriv") is not None, "setpriv (util-linux) is not installed")
    tmp_path.chmod(0o777)
    prefix = [
        "setpriv",
        "--reuid=nobody",
        "--regid=nogroup",
        "--clear-groups",
        "--inh-caps=+net_raw,+dac_read_search",
        "--ambient-caps=+net_raw,+dac_read_search",
    ]
    args = ["-i", "lo", "-f", f"tcp port {port}", "--count", "1"]
    with Sniffer(tmp_path, args, prefix=prefix) as sniffer:
        sniffer.waitUntilCapturing()
        assert _uids(sniffer.pid) == [65534] * 4
        echo(port)
        status = sniffer.wait(20)
    assert status == 0, sniffer.both()
    assert len(packetLines(sniffer.stdout())) == 1


def test_badFilter(tmp_path: Path) -> None:
    """
    A bad filter: libpcap's message on one line, status 1, before anything
    starts.
    """
    with Sniffer(tmp_path, ["-i", "lo", "-f", "tcp port sevenn"]) as sniffer:
        status = sniffer.wait(30)
    assert status == 1
    assert sniffer.stderr() == "echod-sniff: bad filter 'tcp port sevenn': unknown port 'sevenn'\n"
    assert sniffer.stdout() == ""


def test_commandLineValuesNamedAsTyped(tmp_path: Path) -> None:
    """
    A value from the command line is named by the option as typed, and so
    is the option the rule needs.
    """
    for args, line in (
        (
            ["-W", "3"],
            "echod-sniff: -W = 3: needs -C or -G too (files rotate by size or by time)\n",
        ),
        (
            ["--rotate-count", "3"],
            "echod-sniff: --rotate-count = 3: needs --rotate-bytes or --rotate-seconds too "
            "(files rotate by size or by time)\n",
        ),
    ):
        with Sniffer(tmp_path, args) as sniffer:
            status = sniffer.wait(30)
        assert status == 1
        assert sniffer.stderr() == line
        assert sniffer.stdout() == ""


def test_everyProblemOfTheConfigFile(tmp_path: Path) -> None:
    (tmp_path / "sniff.toml").write_text('[sniff]\nsnaplen = 1\nformat = "xml"\nfiltr = ""\n')
    with Sniffer(tmp_path, ["--config", "sniff.toml"]) as sniffer:
        status = sniffer.wait(30)
    assert status == 1
    assert sniffer.stderr().splitlines() == [
        "echod-sniff: sniff.toml: line 2: sniff.snaplen = 1: "
        "expected an integer of bytes from 64 to 262144",
        'echod-sniff: sniff.toml: line 3: sniff.format = "xml": '
        'expected one of "text", "json", "pcap", "pcapng"',
        "echod-sniff: sniff.toml: line 4: sniff.filtr: unknown key (did you mean filter? known: "
        "enabled, interface, filter, snaplen, promiscuous, format, output, rotate_bytes, "
        "rotate_count, rotate_seconds, count, stats_interval, buffer_bytes, precision)",
    ]


def test_unknownInterface(tmp_path: Path) -> None:
    with Sniffer(tmp_path, ["-i", "nosuch9"]) as sniffer:
        status = sniffer.wait(30)
    assert status == 1
    assert sniffer.stderr().startswith("echod-sniff: no interface named 'nosuch9' here (there are:")
    assert sniffer.stderr().count("\n") == 1


def test_insideEchod(tmp_path: Path) -> None:
    """
    [sniff] enabled = true: the echod daemon captures its own traffic.
    """
    requireRoot()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    output = tmp_path / "own.json"
    config = tmp_path / "echod.toml"
    config.write_text(
        f'[server]\nlisten = ["tcp:port={port}:interface=127.0.0.1"]\n\n'
        f'[sniff]\nenabled = true\ninterface = "lo"\nfilter = "tcp port {port}"\n'
        f'format = "json"\noutput = "{output}"\nstats_interval = 0\n'
    )
    with Twistd(tmp_path, ["--config", str(config)]) as daemon:
        daemon.listeningPorts(1)
        daemon.waitFor(r"capturing on lo")
        waitUntil(lambda: readsPacketSocket(daemon.pid), what="echod reading its capture")
        client = echo(port)
        deadline = time.monotonic() + 5
        while output.read_text().count("\n") < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
    records = [json.loads(line) for line in output.read_text().splitlines()]
    ports = {(r["src_port"], r["dst_port"]) for r in records}
    assert {(client, port), (port, client)} <= ports
    assert "capture on lo stopped" in daemon.output()


@pytest.fixture
def namespaces() -> Iterator[tuple[str, str]]:
    """
    Two network namespaces joined by a veth pair (vA: 10.213.0.1 in the
    first, vB: 10.213.0.2 in the second, whose loopback is up too), deleted
    afterwards.
    """
    requireRoot()
    requireTool("ip")
    a, b = f"echodsniff{os.getpid()}a", f"echodsniff{os.getpid()}b"

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, timeout=20)

    try:
        ip("netns", "add", a)
        ip("netns", "add", b)
        ip("-n", a, "link", "add", "vA", "type", "veth", "peer", "name", "vB", "netns", b)
        ip("-n", a, "addr", "add", "10.213.0.1/24", "dev", "vA")
        ip("-n", b, "addr", "add", "10.213.0.2/24", "dev", "vB")
        ip("-n", a, "link", "set", "vA", "up")
        ip("-n", b, "link", "set", "vB", "up")
        ip("-n", b, "link", "set", "lo", "up")
        yield a, b
    finally:
        for name in (a, b):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=20)


def _promiscuity(namespace: str, interface: str) -> int:
    shown = subprocess.run(
        ["ip", "-n", namespace, "-d", "link", "show", interface],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(r"promiscuity (\d+)", shown)
    assert match, shown
    return int(match.group(1))


def test_vethEthernet(namespaces: tuple[str, str], tmp_path: Path) -> None:
    """
    On a veth interface: real Ethernet frames (ARP, then UDP) with their
    link addresses; --promiscuous sets the interface promiscuous while the
    capture runs.
    """
    a, b = namespaces
    output = tmp_path / "veth.json"
    with Sniffer(
        tmp_path,
        ["-i", "vB", "--promiscuous", "-f", "arp or udp port 9", "--format", "json",
         "-o", str(output)],
        prefix=["ip", "netns", "exec", b],
    ) as sniffer:  # fmt: skip
        sniffer.waitUntilCapturing()
        assert _promiscuity(b, "vB") == 1
        sender = (
            "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
            "s.sendto(b'ping', ('10.213.0.2', 9))"
        )
        subprocess.run(
            ["ip", "netns", "exec", a, sys.executable, "-c", sender], check=True, timeout=20
        )
        deadline = time.monotonic() + 5
        while output.read_text().count('"UDP"') < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert _promiscuity(b, "vB") == 0
    records = [json.loads(line) for line in output.read_text().splitlines()]
    requests = [r for r in records if r.get("arp_operation") == "request"]
    replies = [r for r in records if r.get("arp_operation") == "reply"]
    assert requests and replies
    assert requests[0]["eth_dst"] == "ff:ff:ff:ff:ff:ff"
    assert requests[0]["direction"] == "broadcast"
    assert (requests[0]["arp_sender_ip"], requests[0]["arp_target_ip"]) == (
        "10.213.0.1",
        "10.213.0.2",
    )
    assert replies[0]["direction"] == "out"
    (udp,) = [r for r in records if r.get("protocol") == "UDP"]
    assert (udp["src"], udp["dst"], udp["dst_port"], udp["payload_length"]) == (
        "10.213.0.1",
        "10.213.0.2",
        9,
        4,
    )
    assert udp["link"] == "ethernet"
    assert udp["eth_src"] == requests[0]["eth_src"] == replies[0]["eth_dst"]
    assert udp["interface"] == "vB"


def test_anyInterface(namespaces: tuple[str, str], tmp_path: Path) -> None:
    """
    --interface any (cooked LINUX_SLL2 records): packets of every interface
    of the namespace, each named, and tshark reads the file.
    """
    a, b = namespaces
    output = tmp_path / "any.pcap"
    with Sniffer(
        tmp_path,
        ["-i", "any", "-f", "udp port 9", "--format", "pcap", "-o", str(output)],
        prefix=["ip", "netns", "exec", b],
    ) as sniffer:
        sniffer.waitUntilCapturing()
        sender = (
            "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
            "s.sendto(b'ping', ('10.213.0.2', 9))"
        )
        subprocess.run(
            ["ip", "netns", "exec", a, sys.executable, "-c", sender], check=True, timeout=20
        )
        local = "import socket; socket.socket(2, 2).sendto(b'self', ('127.0.0.1', 9))"
        subprocess.run(
            ["ip", "netns", "exec", b, sys.executable, "-c", local], check=True, timeout=20
        )
        waitUntil(lambda: pcapRecords(output) >= 2, timeout=5, what="both packets written")
    rows = tsharkFields(output, "sll.ifindex", "ip.src", "ip.dst", "udp.length")
    assert len(rows) == 2, rows
    by = {row[1]: row for row in rows}
    assert by["10.213.0.1"][3] == "12"
    assert by["127.0.0.1"][3] == "12"
    assert by["10.213.0.1"][0] != by["127.0.0.1"][0]
