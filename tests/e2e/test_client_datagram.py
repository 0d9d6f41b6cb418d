"""
The installed client over UDP, as a user runs it (C{echod-client -u} and
C{twistd -n echod-client --udp}): against a real C{twistd -n echod} with UDP
listeners on 127.0.0.1 and ::1, against socat and xinetd's internal echo,
through a relay of our own that drops, duplicates, reorders and corrupts
chosen datagrams (every count exact), under random loss in a network
namespace of our own (nftables; the loss within a binomial bound), at a port
that refuses, and falling back from an address that refuses.  Loopback only.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from collections.abc import Set as AbstractSet
from pathlib import Path

import pytest

from tests.daemon import Twistd, twistdPath
from tests.environment import freePort, requireIPv6, requireRoot, requireTool
from tests.testing import waitUntil

pytestmark = pytest.mark.e2e

RUN_TIMEOUT = 60

# echod's default limits answer a source 50 datagrams a second; these runs
# send faster.
UNLIMITED = (
    "source_packets_per_second = 0\nglobal_packets_per_second = 0\n"
    "source_bytes_per_second = 0\nglobal_bytes_per_second = 0\n"
)


def clientPath() -> str:
    candidate = Path(sys.executable).parent / "echod-client"
    return str(candidate) if candidate.exists() else "echod-client"


def run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def console(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run([clientPath(), *args], cwd)


def twistd(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """
    C{twistd -n echod-client ARGS}, its log in a file, so that standard
    output holds only what the client prints.
    """
    log = f"--logfile={cwd}/twistd-client.log"
    return run([twistdPath(), "-n", "--pidfile=", log, "echod-client", *args], cwd)


RUNNERS = {"console": console, "twistd": twistd}


def summaryOf(result: subprocess.CompletedProcess[str]) -> dict[str, object]:
    document: dict[str, object] = json.loads(result.stdout)
    return document


def udpBound(port: int) -> bool:
    """
    Whether a UDP socket of this host is bound to C{port} (IPv4 or IPv6).
    """
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            if int(line.split()[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False


class Servers:
    """
    The UDP ports of the running echod: C{v4} on 127.0.0.1, C{v6} on ::1.
    """

    def __init__(self, v4: int, v6: int) -> None:
        self.v4 = v4
        self.v6 = v6


@pytest.fixture(scope="module")
def echod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    requireIPv6()
    directory = tmp_path_factory.mktemp("echod-udp")
    config = directory / "echod.toml"
    config.write_text(
        "[server]\nlisten = []\n"
        "[udp]\nlisten = ['udp:port=0:interface=127.0.0.1', 'udp:port=0:interface=\\:\\:1']\n"
        + UNLIMITED
    )
    with Twistd(directory, ["--config", str(config)]) as daemon:
        v4, v6 = daemon.listeningPorts(2)
        yield Servers(v4, v6)


# --- against echod ---------------------------------------------------------------------


@pytest.mark.parametrize("how", ["console", "twistd"])
@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_oneShot(echod: Servers, tmp_path: Path, how: str, host: str) -> None:
    """
    C{echod-client -u HOST PORT "Hello, world"} prints what TCP prints.
    """
    port = echod.v4 if host == "127.0.0.1" else echod.v6
    result = RUNNERS[how](tmp_path, "-u", host, str(port), "Hello, world")
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        "Received b'Hello, world'\n",
        "",
    )


@pytest.mark.parametrize("how", ["console", "twistd"])
@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_ping(echod: Servers, tmp_path: Path, how: str, host: str) -> None:
    """
    Ping mode: a line per reply with its sequence number, then the summary.
    """
    port = echod.v4 if host == "127.0.0.1" else echod.v6
    peer = f"{host}:{port}" if host == "127.0.0.1" else f"[{host}]:{port}"
    result = RUNNERS[how](tmp_path, "--udp", host, str(port), "-n", "4", "-i", "0.05", "-s", "100")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"ECHO {host} port {port} over UDP ({peer}): 100 bytes, 4 datagrams"
    for seq, line in enumerate(lines[1:5], 1):
        assert line.startswith(f"100 bytes from {peer}: seq={seq} time=")
        assert line.endswith(" ms")
    assert lines[6] == f"--- {host} port {port} echo statistics (UDP) ---"
    assert lines[7].startswith(
        "4 sent, 4 received, 0 lost, 0 duplicated, 0 reordered, 0 mismatched, 0.0% loss, time "
    )
    assert lines[8].startswith("rtt min/avg/max/p50/p99/mdev = ")
    assert " ms, jitter " in lines[8]
    assert result.stderr == ""


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_pingJSON(echod: Servers, tmp_path: Path, host: str) -> None:
    port = echod.v4 if host == "127.0.0.1" else echod.v6
    result = console(tmp_path, "-u", host, str(port), "-n", "20", "-i", "0", "--json")
    assert result.returncode == 0, result.stderr
    summary = summaryOf(result)
    expected = {
        "sent": 20,
        "received": 20,
        "lost": 0,
        "duplicates": 0,
        "reordered": 0,
        "mismatched": 0,
        "loss_percent": 0.0,
        "protocol": "udp",
        "matched_by": "sequence",
        "status": 0,
    }
    assert {key: summary[key] for key in expected} == expected
    rtt = summary["rtt_ms"]
    assert isinstance(rtt, dict)
    assert set(rtt) == {"min", "avg", "max", "p50", "p99", "mdev"}
    assert rtt["min"] <= rtt["p50"] <= rtt["p99"] <= rtt["max"]
    assert isinstance(summary["jitter_ms"], float)
    assert summary["tried"] == [host]


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_flood(echod: Servers, tmp_path: Path, host: str) -> None:
    """
    --interval 0 --window 32: a flood bounded by --count, every datagram
    back and checked.
    """
    port = echod.v4 if host == "127.0.0.1" else echod.v6
    result = console(
        tmp_path, "-u", host, str(port), "-n", "20000", "-i", "0", "--window", "32", "--json"
    )
    assert result.returncode == 0, result.stderr
    summary = summaryOf(result)
    assert (summary["sent"], summary["received"], summary["lost"]) == (20000, 20000, 0)
    assert (summary["mismatched"], summary["duplicates"], summary["window"]) == (0, 0, 32)


def test_payloadOfOneOwnMatchedByContent(echod: Servers, tmp_path: Path) -> None:
    result = console(
        tmp_path, "-u", "127.0.0.1", str(echod.v4), "-n", "5", "-i", "0", "my text", "--json"
    )
    assert result.returncode == 0, result.stderr
    summary = summaryOf(result)
    assert (summary["matched_by"], summary["reordered"]) == ("content", None)
    assert (summary["received"], summary["bytes_per_message"]) == (5, 7)


@pytest.mark.parametrize(("host", "size"), [("127.0.0.1", 65507), ("::1", 65527)])
def test_largestDatagrams(echod: Servers, tmp_path: Path, host: str, size: int) -> None:
    """
    The largest datagram of each family comes back whole (the client reads
    up to 65535 bytes, not Twisted's default 8192).
    """
    port = echod.v4 if host == "127.0.0.1" else echod.v6
    result = console(tmp_path, "-u", host, str(port), "-n", "3", "-i", "0", "-s", str(size))
    assert result.returncode == 0, result.stderr
    assert f"{size} bytes from " in result.stdout


def test_fileFromStandardInput(echod: Servers, tmp_path: Path) -> None:
    payload = tmp_path / "payload"
    payload.write_bytes(bytes(range(256)) * 4)
    result = console(tmp_path, "-u", "::1", str(echod.v6), "-f", str(payload), "-n", "2", "-q")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].endswith("1024 bytes, 2 datagrams")


@pytest.mark.parametrize("how", ["console", "twistd"])
def test_interrupted(echod: Servers, tmp_path: Path, how: str) -> None:
    """
    Ctrl-C during a UDP ping run prints the summary so far; the console
    script exits 130, twistd dies of the signal as it always does.
    """
    if how == "console":
        argv = [clientPath()]
    else:
        argv = [twistdPath(), "-n", "--pidfile=", f"--logfile={tmp_path}/log", "echod-client"]
    argv += ["-u", "127.0.0.1", str(echod.v4), "-n", "1000", "-i", "0.05"]
    process = subprocess.Popen(
        argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 15
        assert process.stdout is not None
        seen = 0
        while seen < 3 and time.monotonic() < deadline:
            if "seq=" in process.stdout.readline():
                seen += 1
        os.kill(process.pid, signal.SIGINT)
        out, err = process.communicate(timeout=RUN_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == (130 if how == "console" else -signal.SIGINT)
    assert "echo statistics (UDP)" in out
    assert err.startswith("echod-client: interrupted after ")


# --- refusals and addresses -------------------------------------------------------------


@pytest.mark.parametrize("how", ["console", "twistd"])
@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_refused(tmp_path: Path, how: str, host: str) -> None:
    """
    A port with no listener: the ICMP port unreachable is a refusal, exit
    status 4, one line.
    """
    if host == "::1":
        requireIPv6()
    family = socket.AF_INET6 if host == "::1" else socket.AF_INET
    port = freePort(family, socket.SOCK_DGRAM)
    started = time.monotonic()
    result = RUNNERS[how](tmp_path, "-u", host, str(port), "-n", "3", "-q", "--timeout", "10")
    assert result.returncode == 4, result.stdout + result.stderr
    assert result.stderr == (
        f"echod-client: refused by {host} port {port} (ICMP port unreachable; tried {host})\n"
    )
    assert time.monotonic() - started < 10


def test_fallsBackFromAnAddressThatRefuses(echod: Servers, tmp_path: Path) -> None:
    """
    A name with two addresses (a private hosts file in a mount namespace of
    our own; the machine's is untouched): the first in getaddrinfo's order
    refuses, the second answers, and the output says which.
    """
    requireRoot()
    unshare = requireTool("unshare")
    requireTool("mount")
    machineHosts = Path("/etc/hosts").read_bytes()
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 echotest.invalid\n::1 echotest.invalid\n")
    prefix = [unshare, "-m", "sh", "-c", 'mount --bind "$0" /etc/hosts && exec "$@"', str(hosts)]
    order = run([*prefix, "getent", "ahosts", "echotest.invalid"], tmp_path)
    addresses = list(dict.fromkeys(line.split()[0] for line in order.stdout.splitlines()))
    assert sorted(addresses) == ["127.0.0.1", "::1"], order.stdout + order.stderr
    first, second = addresses
    # Only the second address has an echo server on this port.
    secondPort = echod.v4 if second == "127.0.0.1" else echod.v6
    family = socket.AF_INET6 if first == "::1" else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.bind((first, secondPort))  # nothing on the first: it refuses
    result = run(
        [*prefix, clientPath(), "-u", "echotest.invalid", str(secondPort), "-n", "2", "-i", "0"],
        tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    show = {"127.0.0.1": f"127.0.0.1:{secondPort}", "::1": f"[::1]:{secondPort}"}
    lines = result.stdout.splitlines()
    assert f"{show[first]} refused (ICMP port unreachable); trying {show[second]}" in lines
    assert f"64 bytes from {show[second]}: seq=1 " in result.stdout
    assert Path("/etc/hosts").read_bytes() == machineHosts


def test_fallsBackFromAnAddressThatNeverAnswers(tmp_path: Path) -> None:
    """
    In a network namespace of our own, echod listens on 127.0.0.1 and ::1,
    and nftables silently drops what is sent to the first address of the
    name (in getaddrinfo's order, from a private hosts file): the client
    gives that address up at its first datagram's deadline and goes on
    with the second, which answers.
    """
    requireRoot()
    ip = requireTool("ip")
    nft = requireTool("nft")
    unshare = requireTool("unshare")
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 echotest.invalid\n::1 echotest.invalid\n")
    namespace = f"echod-fallback-{os.getpid()}"
    subprocess.run([ip, "netns", "add", namespace], check=True)
    try:
        inside = [ip, "netns", "exec", namespace]
        private = [unshare, "-m", "sh", "-c", 'mount --bind "$0" /etc/hosts && exec "$@"']
        subprocess.run([*inside, ip, "link", "set", "lo", "up"], check=True)
        order = run(
            [*inside, *private, str(hosts), "getent", "ahosts", "echotest.invalid"], tmp_path
        )
        first, second = dict.fromkeys(line.split()[0] for line in order.stdout.splitlines())
        silence = "ip6 daddr ::1" if first == "::1" else "ip daddr 127.0.0.1"
        for rule in (
            "add table inet echodsilent",
            "add chain inet echodsilent input { type filter hook input priority 0; }",
            f"add rule inet echodsilent input {silence} udp dport 7007 drop",
        ):
            subprocess.run([*inside, nft, rule], check=True)
        config = tmp_path / "echod.toml"
        config.write_text(
            "[server]\nlisten = []\n[udp]\nlisten = ['udp:port=7007:interface=127.0.0.1', "
            "'udp:port=7007:interface=\\:\\:1']\n" + UNLIMITED
        )
        daemon = Twistd(tmp_path, ["--config", str(config)])
        daemon.argv = [*inside, *daemon.argv]
        with daemon:
            daemon.listeningPorts(2)
            started = time.monotonic()
            result = run(
                [
                    *inside,
                    *private,
                    str(hosts),
                    clientPath(),
                    "-u",
                    "echotest.invalid",
                    "7007",
                    "-n",
                    "2",
                    "-i",
                    "0",
                    "-t",
                    "1",
                ],
                tmp_path,
            )
            elapsed = time.monotonic() - started
    finally:
        subprocess.run([ip, "netns", "delete", namespace], check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    show = {"127.0.0.1": "127.0.0.1:7007", "::1": "[::1]:7007"}
    lines = result.stdout.splitlines()
    assert lines[1] == f"{show[first]} sent no reply within 1 s; trying {show[second]}"
    assert lines[3].startswith(f"64 bytes from {show[second]}: seq=1 ")
    assert "2 sent, 2 received, 0 lost" in result.stdout
    assert elapsed >= 1


# --- a relay of our own --------------------------------------------------------------------


class Relay(threading.Thread):
    """
    A UDP relay on 127.0.0.1 between the client and echod that does to
    chosen datagrams (by the sequence number of the client's header) what
    the network may: C{drop} on the way out, and on the way back
    C{duplicate}, C{corrupt} (the last byte flipped), C{reorder} (held until
    the next reply has gone) and C{stray} (the reply also sent to the client
    from another port, which the client's connected socket must ignore).
    """

    def __init__(
        self,
        serverPort: int,
        drop: AbstractSet[int] = frozenset(),
        duplicate: AbstractSet[int] = frozenset(),
        corrupt: AbstractSet[int] = frozenset(),
        reorder: AbstractSet[int] = frozenset(),
        stray: AbstractSet[int] = frozenset(),
    ) -> None:
        super().__init__(daemon=True)
        self.server = ("127.0.0.1", serverPort)
        self.drop, self.duplicate, self.corrupt = drop, duplicate, corrupt
        self.reorder, self.stray = reorder, stray
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind(("127.0.0.1", 0))
        self.port: int = self.front.getsockname()[1]
        self.back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.back.connect(self.server)
        self.other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.other.bind(("127.0.0.1", 0))
        self.client: tuple[str, int] | None = None
        self.forwarded = 0
        self.strays = 0
        self._stopping = threading.Event()

    def __enter__(self) -> Relay:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self.join(5)
        for s in (self.front, self.back, self.other):
            s.close()

    def run(self) -> None:
        held: list[bytes] = []
        deadline = time.monotonic() + RUN_TIMEOUT
        while not self._stopping.is_set() and time.monotonic() < deadline:
            ready, _, _ = select.select([self.front, self.back], [], [], 0.05)
            if self.front in ready:
                data, self.client = self.front.recvfrom(65535)
                if seqOf(data) not in self.drop:
                    self.back.send(data)
                    self.forwarded += 1
            if self.back in ready:
                data = self.back.recv(65535)
                seq = seqOf(data)
                assert self.client is not None
                if seq in self.reorder:
                    held.append(data)
                    continue
                if seq in self.corrupt:
                    data = data[:-1] + bytes([data[-1] ^ 0x01])
                self.front.sendto(data, self.client)
                if seq in self.duplicate:
                    self.front.sendto(data, self.client)
                if seq in self.stray:
                    self.other.sendto(data, self.client)
                    self.strays += 1
                for late in held:
                    self.front.sendto(late, self.client)
                held.clear()


def seqOf(datagram: bytes) -> int:
    return int.from_bytes(datagram[8:16], "big") if len(datagram) >= 24 else 0


def test_relayCountsEveryFaultExactly(echod: Servers, tmp_path: Path) -> None:
    """
    Through the relay: 2 of 20 dropped, 1 duplicated, 1 reordered, 1
    corrupted, and strays from another port: each count exact, the strays
    not counted; the mismatch decides the exit status (7), the loss is said
    too.
    """
    with Relay(
        echod.v4, drop={5, 13}, duplicate={8}, reorder={10}, corrupt={16}, stray={3, 4}
    ) as relay:
        result = console(
            tmp_path,
            "-u",
            "127.0.0.1",
            str(relay.port),
            "-n",
            "20",
            "-i",
            "0",
            "--window",
            "4",
            "--timeout",
            "1",
        )
    assert relay.strays == 2
    assert result.returncode == 7, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[-2].startswith(
        "20 sent, 18 received, 2 lost, 1 duplicated, 1 reordered, 1 mismatched, 10.0% loss, "
    )
    assert sum(line.endswith(" (DUP!)") for line in lines) == 1
    assert sum(" seq=10 " in line and line.endswith(" (reordered)") for line in lines) == 1
    assert sum(" seq=16 " in line and " MISMATCH (" in line for line in lines) == 1
    assert {line for line in lines if line.startswith("no reply to ")} == {
        "no reply to seq=5 within 1 s",
        "no reply to seq=13 within 1 s",
    }
    assert result.stderr == (
        "echod-client: 1 reply differed from what was sent "
        "(first: sent 0x6c, received 0x6d at byte 63)\n"
        "echod-client: 2 of 20 datagrams lost (10.0%, more than the 0% allowed)\n"
    )


@pytest.mark.parametrize(("maxLoss", "status"), [(None, 8), ("9.9", 8), ("10", 0), ("50%", 0)])
def test_partialLossAndMaxLoss(echod: Servers, tmp_path: Path, maxLoss: str, status: int) -> None:
    """
    Partial loss is exit status 8, unless --max-loss allows it.
    """
    allowance = ["--max-loss", maxLoss] if maxLoss is not None else []
    with Relay(echod.v4, drop={3, 7}) as relay:
        result = console(
            tmp_path,
            "-u",
            "127.0.0.1",
            str(relay.port),
            "-n",
            "20",
            "-i",
            "0",
            "--window",
            "4",
            "--timeout",
            "0.5",
            "--json",
            *allowance,
        )
    assert result.returncode == status, result.stderr
    summary = summaryOf(result)
    assert (summary["lost"], summary["loss_percent"], summary["status"]) == (2, 10.0, status)
    if status:
        assert result.stderr == (
            "echod-client: 2 of 20 datagrams lost (10.0%, more than the "
            f"{'0' if maxLoss is None else maxLoss}% allowed)\n"
        )
    else:
        assert result.stderr == ""


def test_everythingLostIsATimeout(echod: Servers, tmp_path: Path) -> None:
    with Relay(echod.v4, drop=set(range(1, 6))) as relay:
        result = console(
            tmp_path, "-u", "127.0.0.1", str(relay.port), "-n", "5", "-i", "0", "-t", "0.5", "-q"
        )
    assert result.returncode == 5
    assert result.stderr == (
        "echod-client: no reply to any of 5 datagrams within 0.5 s (tried 127.0.0.1)\n"
    )


# --- third-party echo servers ----------------------------------------------------------------


@pytest.fixture
def socatEcho(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """
    socat echoing UDP on 127.0.0.1 and ::1 (a child per datagram, the
    datagram piped back), with 64 KiB buffers: by default socat reads 8 KiB
    of a datagram and echoes that.
    """
    socat = requireTool("socat")
    requireIPv6()
    v4 = freePort(socket.AF_INET, socket.SOCK_DGRAM)
    v6 = freePort(socket.AF_INET6, socket.SOCK_DGRAM)
    processes = [
        subprocess.Popen(
            [socat, "-b", "65535", f"UDP4-RECVFROM:{v4},bind=127.0.0.1,fork,reuseaddr", "PIPE"]
        ),
        subprocess.Popen(
            [socat, "-b", "65535", f"UDP6-RECVFROM:{v6},bind=[::1],fork,reuseaddr", "PIPE"]
        ),
    ]
    try:
        waitUntil(lambda: udpBound(v4) and udpBound(v6), what="socat bound")
        yield v4, v6
    finally:
        for process in processes:
            process.terminate()
            process.wait(10)


@pytest.mark.parametrize("family", ["v4", "v6"])
def test_socat(socatEcho: tuple[int, int], tmp_path: Path, family: str) -> None:
    host, port = ("127.0.0.1", socatEcho[0]) if family == "v4" else ("::1", socatEcho[1])
    once = console(tmp_path, "-u", host, str(port), "Hello, world")
    assert (once.returncode, once.stdout) == (0, "Received b'Hello, world'\n"), once.stderr
    result = console(
        tmp_path, "-u", host, str(port), "-n", "10", "-i", "0.02", "-s", "9000", "--json"
    )
    assert result.returncode == 0, result.stderr
    summary = summaryOf(result)
    assert (summary["received"], summary["mismatched"]) == (10, 0)


def test_socatCutsLongDatagramsByDefault(tmp_path: Path) -> None:
    """
    socat without -b echoes only the first 8192 bytes of a datagram: the
    client says so (status 7).
    """
    socat = requireTool("socat")
    port = freePort(socket.AF_INET, socket.SOCK_DGRAM)
    with subprocess.Popen(
        [socat, f"UDP4-RECVFROM:{port},bind=127.0.0.1,fork,reuseaddr", "PIPE"]
    ) as process:
        try:
            waitUntil(lambda: udpBound(port), what="socat bound")
            result = console(tmp_path, "-u", "127.0.0.1", str(port), "-n", "2", "-s", "9000")
        finally:
            process.terminate()
    assert result.returncode == 7
    assert "8192 bytes from 127.0.0.1" in result.stdout
    assert result.stderr.startswith(
        "echod-client: 2 replies differed from what was sent (first: sent 9000 bytes, "
        "received 8192)"
    )


@pytest.fixture
def xinetdEcho(tmp_path: Path) -> Iterator[int]:
    """
    An xinetd of our own (-dontfork, its own config and port) serving its
    internal UDP echo on 127.0.0.1.  Its default cps (50 a second, then 10 s
    off) would close the port after 50 datagrams: raised.
    """
    requireRoot()
    xinetd = requireTool("xinetd")
    port = freePort(socket.AF_INET, socket.SOCK_DGRAM)
    config = tmp_path / "xinetd.conf"
    config.write_text(
        "defaults\n{\n}\n"
        "service echo\n{\n"
        "    type = INTERNAL UNLISTED\n    id = echo-dgram\n    socket_type = dgram\n"
        f"    protocol = udp\n    port = {port}\n    wait = yes\n    bind = 127.0.0.1\n"
        "    user = root\n    cps = 100000 1\n}\n"
    )
    process = subprocess.Popen(
        [xinetd, "-dontfork", "-f", str(config), "-pidfile", str(tmp_path / "xinetd.pid")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        waitUntil(lambda: udpBound(port), what="xinetd bound")
        yield port
    finally:
        process.terminate()
        process.wait(10)


def test_xinetd(xinetdEcho: int, tmp_path: Path) -> None:
    """
    xinetd's internal echo: one-shot, and a ping run of 64-byte datagrams
    50 ms apart.
    """
    once = console(tmp_path, "-u", "127.0.0.1", str(xinetdEcho), "Hello, world")
    assert (once.returncode, once.stdout) == (0, "Received b'Hello, world'\n"), once.stderr
    result = console(
        tmp_path, "-u", "127.0.0.1", str(xinetdEcho), "-n", "10", "-i", "0.05", "--json"
    )
    assert result.returncode == 0, result.stderr
    summary = summaryOf(result)
    assert (summary["received"], summary["mismatched"], summary["lost"]) == (10, 0, 0)


def test_xinetdDropsWhatComesWhileItEchoes(xinetdEcho: int, tmp_path: Path) -> None:
    """
    After each datagram it echoes, xinetd reads and discards whatever else
    waits on the socket (its drain of a "wait" service): a flood loses
    datagrams there, none of them differs, and the run fails with the
    partial-loss status (8).
    """
    result = console(
        tmp_path,
        "-u",
        "127.0.0.1",
        str(xinetdEcho),
        "-n",
        "40",
        "-i",
        "0",
        "--window",
        "8",
        "-t",
        "0.5",
        "--json",
    )
    summary = summaryOf(result)
    assert result.returncode == 8, result.stderr
    assert isinstance(summary["lost"], int) and 0 < summary["lost"] < 40
    assert (summary["mismatched"], summary["duplicates"]) == (0, 0)


def test_xinetdCutsDatagramsAt2048Bytes(xinetdEcho: int, tmp_path: Path) -> None:
    """
    xinetd's internal echo returns at most 2048 bytes of a datagram: the
    client says so (status 7).
    """
    result = console(
        tmp_path, "-u", "127.0.0.1", str(xinetdEcho), "-n", "2", "-i", "0.05", "-s", "2049"
    )
    assert result.returncode == 7
    assert "2048 bytes from 127.0.0.1" in result.stdout
    assert "(first: sent 2049 bytes, received 2048)" in result.stderr


# --- random loss in a network namespace -----------------------------------------------------


def test_randomLossWithinItsBound(tmp_path: Path) -> None:
    """
    In a network namespace of our own, nftables drops each UDP datagram
    with probability p = 10 % in the input hook; on lo a round trip passes
    it twice, so a datagram is lost with q = 1 - 0.9**2 = 19 %.  Over n
    datagrams the loss counted is within 5 standard deviations of n * q
    (binomial), and nothing is duplicated, reordered or mismatched.
    """
    requireRoot()
    ip = requireTool("ip")
    nft = requireTool("nft")
    namespace = f"echod-loss-{os.getpid()}"
    subprocess.run([ip, "netns", "add", namespace], check=True)
    try:
        inside = [ip, "netns", "exec", namespace]
        subprocess.run([*inside, ip, "link", "set", "lo", "up"], check=True)
        for rule in (
            "add table inet echodloss",
            "add chain inet echodloss input { type filter hook input priority 0; }",
            "add rule inet echodloss input meta l4proto udp numgen random mod 100 < 10 drop",
        ):
            subprocess.run([*inside, nft, rule], check=True)
        config = tmp_path / "echod.toml"
        config.write_text(
            "[server]\nlisten = []\n[udp]\nlisten = ['udp:port=7007:interface=127.0.0.1']\n"
            + UNLIMITED
        )
        daemon = Twistd(tmp_path, ["--config", str(config)])
        daemon.argv = [*inside, *daemon.argv]
        with daemon:
            daemon.listeningPorts(1)
            n = 3000
            result = run(
                [
                    *inside,
                    clientPath(),
                    "-u",
                    "127.0.0.1",
                    "7007",
                    "-n",
                    str(n),
                    "-i",
                    "0",
                    "--window",
                    "64",
                    "--timeout",
                    "0.5",
                    "--max-loss",
                    "100",
                    "--json",
                ],
                tmp_path,
            )
    finally:
        subprocess.run([ip, "netns", "delete", namespace], check=False)
    assert result.returncode == 0, result.stderr
    summary = summaryOf(result)
    q = 1 - 0.9**2
    bound = 5 * (n * q * (1 - q)) ** 0.5
    lost = summary["lost"]
    assert isinstance(lost, int)
    assert abs(lost - n * q) <= bound, (lost, n * q, bound)
    assert summary["sent"] == n
    assert summary["received"] == n - lost
    assert (summary["duplicates"], summary["reordered"], summary["mismatched"]) == (0, 0, 0)
    assert (
        namespace
        not in subprocess.run(
            [ip, "netns", "list"], capture_output=True, text=True, check=False
        ).stdout
    )
