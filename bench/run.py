"""
echod's benchmark: every scenario against echod and its peers, in one run.

    python -m bench.run             # the full run: 7 alternating rounds of 3 s
    python -m bench.run --quick     # smoke run (CI): 1 round of 0.5 s, about a minute
    python -m bench.run --scenarios udp    # the UDP scenarios only

The harness compiles the native load generators (bench/loadgen.c for TCP,
bench/udpgen.c for UDP) and the native reference servers
(bench/peers/epoll_echo.c, bench/peers/mmsg_echo.c) into bench/build/.  Each
round starts a fresh process of every server, each on a port of its own, and
checks that it echoes correctly (a random message; a half-closed stream); then
runs every scenario on every server in turn (the server pinned to one core, the
load generator to another), and stops them all.  Then the same for UDP (see
bench/udp.py): fresh UDP servers, their check (a random, an empty and a
65,507-byte datagram), the UDP scenarios; C{--scenarios udp} runs UDP only.
The order of the servers is reversed every other round, so drift on a shared
machine hits all alike; a measurement disturbed by other processes is rerun.
Medians over the rounds are printed as a Markdown table, with ratios to uvloop,
and written as JSON (default bench/results/latest.json).

Any byte echoed wrongly (or a datagram echoed from another address) aborts the
run (exit status 2); a server that fails its correctness check is not measured
(exit status 1 at the end); lost datagrams are counted, not failures.  Nothing
here asserts a timing.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import json
import os
import platform
import random
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from bench import udp

BENCH = Path(__file__).resolve().parent
BUILD = BENCH / "build"
DEFAULT_JSON = BENCH / "results" / "latest.json"
HOST = "127.0.0.1"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

Result = dict[str, Any]


class BenchError(Exception):
    """
    A failure that ends the run: the message says what and where.
    """


class MismatchError(BenchError):
    """
    A server echoed a byte that was not sent (or in the wrong place).
    """


class ServerFailed(Exception):
    """
    One server could not be started, checked or measured.
    """


# --- scenarios ------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    higherIsBetter: bool
    digits: int = 1
    ratio: bool = True  # whether a ratio to the baseline means anything


@dataclass(frozen=True)
class Scenario:
    """
    One load.  For UDP (C{transport} "udp"): C{conns} sockets, each keeping
    C{window} datagrams of C{size} bytes in flight, from C{sources} loopback
    addresses; for TCP streaming, C{window} is bytes in flight.
    """

    name: str
    title: str
    mode: str
    conns: int
    size: int
    metrics: tuple[Metric, ...]
    window: int = 256 * 1024
    transport: str = "tcp"
    sources: int = 0

    @property
    def primary(self) -> Metric:
        return self.metrics[0]


MSGS = Metric("msgs_per_s", "messages/s", True, 0)
UDP_METRICS = (
    Metric("dgrams_per_s", "datagrams/s", True, 0),
    Metric("server_cpu_us_per_dgram", "server CPU per datagram, us", False, 2),
    Metric("lost", f"datagrams lost (no echo in {udp.LOSS_TIMEOUT * 1000:g} ms)", False, 0, False),
)
TRANSPORTS = ("tcp", "udp")


def scenarios(connections: int, lanes: int) -> list[Scenario]:
    """
    Every scenario, in the order a server session runs them: the idle
    connections first, so that RSS is sampled on a fresh process.
    """
    return [
        Scenario(
            "conn-10k",
            f"{connections:,} concurrent idle connections",
            "hold",
            connections,
            64,
            (
                Metric("establish_s", "time to establish all, s", False, 3),
                Metric("rss_kib_per_conn", "server RSS per connection, KiB", False, 2),
            ),
        ),
        Scenario(
            "pingpong-1x64",
            "1 connection x 64 B ping-pong",
            "pingpong",
            1,
            64,
            (
                Metric("rtt_p50_us", "p50 round trip, us", False, 1),
                Metric("rtt_p99_us", "p99 round trip, us", False, 1),
                MSGS,
            ),
        ),
        Scenario(
            "pingpong-100x64", "100 connections x 64 B ping-pong", "pingpong", 100, 64, (MSGS,)
        ),
        Scenario(
            "pingpong-100x4k",
            "100 connections x 4 KiB ping-pong",
            "pingpong",
            100,
            4096,
            (MSGS, Metric("mb_per_s", "MB/s echoed", True, 1)),
        ),
        Scenario(
            "stream-4",
            "4 connections streaming (256 KiB window each)",
            "stream",
            4,
            65536,
            (Metric("mb_per_s", "MB/s echoed", True, 1),),
        ),
        Scenario(
            "conn-rate",
            f"connection rate ({lanes} lanes: connect, echo 64 B, close)",
            "rate",
            lanes,
            64,
            (Metric("conn_per_s", "connections/s", True, 0),),
        ),
        *(
            Scenario(
                load.name,
                load.title,
                "udp",
                load.sockets,
                load.size,
                UDP_METRICS,
                window=load.window,
                transport="udp",
                sources=load.sources,
            )
            for load in udp.LOADS
        ),
    ]


# --- servers -------------------------------------------------------------------


@dataclass
class ServerSpec:
    """
    How to start one server.  C{argv} (TCP) and C{udpArgv} (UDP; None: the
    server has no UDP flavour) receive the port and a private work directory;
    C{pin} says whether it may be held to one core.
    """

    name: str
    title: str
    argv: Callable[[int, Path], list[str]]
    pin: bool = True
    skipReason: str | None = None
    configExtra: dict[str, dict[str, Any]] = field(default_factory=dict)
    udpArgv: Callable[[int, Path], list[str]] | None = None
    udpSkipReason: str | None = None

    def skip(self, transport: str) -> str | None:
        """
        Why this server is not run over C{transport}, or None.
        """
        if self.skipReason is not None or transport == "tcp":
            return self.skipReason
        if self.udpArgv is None:
            return "serves no UDP"
        return self.udpSkipReason


def twistdCommand() -> list[str]:
    """
    The twistd of the interpreter running the harness, so echod and the
    Twisted peer run the same Python and Twisted.
    """
    candidate = Path(sys.executable).parent / "twistd"
    if candidate.exists():
        return [str(candidate)]
    return [sys.executable, "-c", "import sys; from twisted.scripts.twistd import run; run()"]


def tomlValue(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(tomlValue(v) for v in value) + "]"
    raise BenchError(f"cannot write {value!r} as a TOML value")


def echodConfig(port: int, extra: dict[str, dict[str, Any]]) -> str:
    """
    The benchmark's echod config: listen on loopback, limits and idle timeout
    off, warnings only; C{extra} (table -> key -> value) added or overriding.
    """
    tables: dict[str, dict[str, Any]] = {
        "server": {
            "listen": [f"tcp:{port}:interface={HOST}"],
            "backlog": 4096,
            "max_connections": 0,
            "max_connections_per_peer": 0,
            "idle_timeout": 0,
            "shutdown_timeout": 2.0,
        },
        "log": {"level": "warn"},
    }
    for table, values in extra.items():
        tables.setdefault(table, {}).update(values)
    lines = []
    for table, values in tables.items():
        lines.append(f"[{table}]")
        lines.extend(f"{key} = {tomlValue(value)}" for key, value in values.items())
        lines.append("")
    return "\n".join(lines)


def parseConfigExtra(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    """
    C{table.key=VALUE} items (VALUE in TOML syntax; a bare word is a string).
    """
    extra: dict[str, dict[str, Any]] = {}
    for item in items:
        path, sep, text = item.partition("=")
        table, dot, key = path.strip().partition(".")
        if not sep or not dot or not table or not key:
            raise BenchError(f"--echod-config-extra {item!r}: expected TABLE.KEY=VALUE")
        try:
            value = tomllib.loads(f"v = {text.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = text.strip()
        extra.setdefault(table, {})[key] = value
    return extra


def echodRejects(extra: dict[str, dict[str, Any]]) -> str | None:
    """
    Why echod's own config loader rejects the benchmark config with C{extra},
    or None if it accepts it (so a key echod does not know yet, such as
    C{server.workers}, skips that server instead of failing the run).
    """
    with tempfile.TemporaryDirectory(prefix="echod-bench-") as directory:
        path = Path(directory) / "echod.toml"
        path.write_text(echodConfig(7, extra))
        check = (
            "import sys\n"
            "from echod.config import ConfigError, load\n"
            "try:\n"
            "    load(sys.argv[1])\n"
            "except ConfigError as e:\n"
            "    print(e)\n"
            "    sys.exit(3)\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", check, str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    if done.returncode == 0:
        return None
    if done.returncode == 3:
        return done.stdout.strip().replace(str(path), "config")
    raise BenchError(f"cannot load echod's config module:\n{done.stderr.strip()}")


def echodSpec(name: str, title: str, extra: dict[str, dict[str, Any]]) -> ServerSpec:
    def argv(port: int, directory: Path) -> list[str]:
        path = directory / "echod.toml"
        path.write_text(echodConfig(port, extra))
        return [*twistdCommand(), "-n", "--pidfile=", "echod", "--config", str(path)]

    def udpArgv(port: int, directory: Path) -> list[str]:
        path = directory / "echod-udp.toml"
        path.write_text(echodConfig(port, udp.echodTables(port, extra)))
        return [*twistdCommand(), "-n", "--pidfile=", "echod", "--config", str(path)]

    workers = extra.get("server", {}).get("workers", 1)
    spec = ServerSpec(name, title, argv, pin=workers in (0, 1), configExtra=extra, udpArgv=udpArgv)
    spec.skipReason = echodRejects(extra)
    if spec.skipReason is not None:
        spec.skipReason = f"echod rejects the config: {spec.skipReason}"
    else:
        spec.udpSkipReason = echodRejects(udp.echodTables(7, extra))
        if spec.udpSkipReason is not None:
            spec.udpSkipReason = f"echod rejects the UDP config: {spec.udpSkipReason}"
    return spec


def peerSpecs() -> list[ServerSpec]:
    python = sys.executable
    peers = BENCH / "peers"

    def textbook(port: int, directory: Path) -> list[str]:
        return [python, str(peers / "textbook_twisted.py"), "--port", str(port)]

    def asyncio(port: int, directory: Path) -> list[str]:
        return [python, str(peers / "asyncio_echo.py"), "--port", str(port)]

    def uvloop(port: int, directory: Path) -> list[str]:
        return [*asyncio(port, directory), "--uvloop"]

    def native(port: int, directory: Path) -> list[str]:
        return [str(BUILD / "epoll_echo"), str(port), HOST]

    def udpFlavour(
        tcp: Callable[[int, Path], list[str]],
    ) -> Callable[[int, Path], list[str]]:
        return lambda port, directory: [*tcp(port, directory), "--udp"]

    def mmsg(port: int, directory: Path) -> list[str]:
        return [str(BUILD / "mmsg_echo"), str(port), HOST]

    specs = [
        ServerSpec("textbook", "textbook Twisted", textbook, udpArgv=udpFlavour(textbook)),
        ServerSpec("asyncio", "asyncio (stdlib)", asyncio, udpArgv=udpFlavour(asyncio)),
        ServerSpec("uvloop", "asyncio on uvloop", uvloop, udpArgv=udpFlavour(uvloop)),
        ServerSpec("native", "C epoll; UDP: C recvmmsg/sendmmsg (reference)", native, udpArgv=mmsg),
    ]
    if importlib.util.find_spec("uvloop") is None:
        specs[2].skipReason = f"uvloop is not installed for {python}"
    return specs


# --- processes --------------------------------------------------------------------


def _dieWithParent() -> None:
    """
    In the child, before exec: be killed if the harness dies, however it dies.
    """
    PR_SET_PDEATHSIG = 1
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _preexec(cpus: set[int] | None) -> Callable[[], None]:
    def run() -> None:
        _dieWithParent()
        if cpus:
            os.sched_setaffinity(0, cpus)

    return run


def _procStat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces.
    return text[text.rindex(")") + 2 :].split()


def processTree(pid: int) -> list[int]:
    """
    C{pid} and its descendants (worker processes, when echod has them).
    """
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _procStat(int(entry))
            if stat is not None:
                children.setdefault(int(stat[1]), []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def rssKiB(pid: int) -> int:
    """
    Resident memory of C{pid} and its descendants, KiB.
    """
    total = 0
    for member in processTree(pid):
        try:
            with open(f"/proc/{member}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


def cpuSeconds(pid: int) -> float:
    """
    User and system CPU time of C{pid} and its live descendants.
    """
    ticks = 0
    for member in processTree(pid):
        stat = _procStat(member)
        if stat is not None:
            ticks += int(stat[11]) + int(stat[12])
    return ticks / CLOCK_TICKS


PF_KTHREAD = 0x00200000


def otherProcessTicks(exclude: set[int]) -> dict[int, int]:
    """
    CPU ticks of every user process but C{exclude}, with the time of the
    children each has reaped: an estimate of the other work on the machine
    (tests run by others).  Kernel threads are left out: they also carry the
    loopback traffic of the benchmark itself.
    """
    ticks = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in exclude:
            continue
        stat = _procStat(int(entry))
        if stat is None or int(stat[6]) & PF_KTHREAD:
            continue
        ticks[int(entry)] = sum(int(v) for v in stat[11:15])
    return ticks


def freePort() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


class Server:
    """
    One running server process, in a session of its own, serving TCP or UDP.
    """

    def __init__(
        self, spec: ServerSpec, directory: Path, cpus: set[int] | None, transport: str = "tcp"
    ) -> None:
        self.spec = spec
        self.directory = directory
        self.transport = transport
        self.port = udp.freePort() if transport == "udp" else freePort()
        self.logPath = directory / f"{spec.name}.log"
        self.stopped = False
        if transport == "udp":
            assert spec.udpArgv is not None
            argv = spec.udpArgv(self.port, directory)
        else:
            argv = spec.argv(self.port, directory)
        with open(self.logPath, "wb") as log:
            self.process = subprocess.Popen(
                argv,
                cwd=directory,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_preexec(cpus),
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self, tail: int = 2000) -> str:
        try:
            return self.logPath.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.process.poll() is None

    def waitListening(self, timeout: float) -> None:
        if self.transport == "udp":
            try:
                udp.waitServing(self.port, self.alive, timeout)
            except udp.CheckFailed as e:
                if self.alive():
                    raise ServerFailed(str(e)) from None
                raise ServerFailed(
                    f"exited with status {self.process.returncode} before serving UDP:\n"
                    f"{self.output()}"
                ) from None
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise ServerFailed(
                    f"exited with status {self.process.returncode} before listening:\n"
                    f"{self.output()}"
                )
            try:
                with socket.create_connection((HOST, self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise ServerFailed(f"not listening on port {self.port} after {timeout:g}s")

    def stop(self, timeout: float = 10.0) -> None:
        if self.stopped:
            return
        self.stopped = True
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout)
        # The whole session: worker processes too.
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        with suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout)


# --- correctness check ---------------------------------------------------------------


def exchange(port: int, data: bytes, halfClose: bool, timeout: float) -> bytes:
    """
    Send C{data} while reading the echo; with C{halfClose}, shut down our
    sending side after it and read until the server closes, else read until
    as many bytes came back as were sent.
    """
    deadline = time.monotonic() + timeout
    received = bytearray()
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.setblocking(False)
        with selectors.DefaultSelector() as selector:
            sent = 0
            selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    stuck = f"sent {sent} of {len(data)} bytes, received {len(received)}"
                    if halfClose and sent == len(data):
                        stuck += ", half-closed: the server did not close"
                    raise ServerFailed(f"echo check timed out: {stuck}")
                for key, events in selector.select(min(left, 0.5)):
                    if events & selectors.EVENT_WRITE:
                        with suppress(BlockingIOError):
                            sent += sock.send(data[sent : sent + 65536])
                        if sent == len(data):
                            if halfClose:
                                sock.shutdown(socket.SHUT_WR)
                            selector.modify(key.fileobj, selectors.EVENT_READ)
                    if events & selectors.EVENT_READ:
                        try:
                            chunk = sock.recv(262144)
                        except BlockingIOError:
                            continue
                        except ConnectionError as e:
                            raise ServerFailed(f"echo check: connection lost: {e}") from None
                        if not chunk:
                            return bytes(received)
                        received += chunk
                if not halfClose and len(received) >= len(data):
                    return bytes(received)


def firstDifference(expected: bytes, got: bytes) -> str:
    for index, (a, b) in enumerate(zip(expected, got, strict=False)):
        if a != b:
            return f"first difference at byte {index}: expected 0x{a:02x}, got 0x{b:02x}"
    return f"expected {len(expected)} bytes, got {len(got)}"


def checkServer(port: int) -> Result:
    """
    Every server passes this before it is measured: a random message comes
    back byte for byte; a half-closed stream comes back whole, then the server
    closes.
    """
    rng = random.Random()
    message = rng.randbytes(100_003)
    got = exchange(port, message, halfClose=False, timeout=10)
    if got != message:
        raise MismatchError(f"echo check: random message: {firstDifference(message, got)}")
    stream = rng.randbytes(1 << 20)
    got = exchange(port, stream, halfClose=True, timeout=10)
    if got != stream:
        raise MismatchError(f"echo check: half-closed stream: {firstDifference(stream, got)}")
    return {"message_bytes": len(message), "half_close_bytes": len(stream), "ok": True}


def checkUdpServer(port: int) -> Result:
    """
    The UDP servers' check: a random, an empty and a 65,507-byte datagram
    come back whole, from the server's address (bench.udp.checkEcho).
    """
    try:
        return udp.checkEcho(port)
    except udp.WrongEcho as e:
        raise MismatchError(str(e)) from None
    except udp.CheckFailed as e:
        raise ServerFailed(str(e)) from None


# --- the load generator ---------------------------------------------------------------


def build(cc: str) -> None:
    """
    Compile the native programs into bench/build/ (always: it takes a second,
    and a stale binary would be worse).
    """
    BUILD.mkdir(parents=True, exist_ok=True)
    for source, target, extra in (
        (BENCH / "loadgen.c", BUILD / "loadgen", ["-pthread"]),
        (BENCH / "peers" / "epoll_echo.c", BUILD / "epoll_echo", []),
        *udp.NATIVE,
    ):
        # Built beside, then renamed: another run may be executing the old one.
        partial = target.with_name(f"{target.name}.{os.getpid()}")
        argv = [cc, "-O2", "-Wall", "-Wextra", "-o", str(partial), str(source), *extra]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            partial.unlink(missing_ok=True)
            raise BenchError(f"{' '.join(argv)} failed:\n{done.stderr}")
        os.replace(partial, target)


@dataclass
class Settings:
    seconds: float
    warmup: float
    rounds: int
    connections: int
    lanes: int
    threads: int
    serverCpus: set[int] | None
    loadgenCpus: set[int] | None
    maxOther: float = 25.0
    retries: int = 2


def loadgenArgv(scenario: Scenario, port: int, settings: Settings) -> list[str]:
    if scenario.transport == "udp":
        load = udp.Load(
            scenario.name,
            scenario.title,
            scenario.conns,
            scenario.window,
            scenario.size,
            scenario.sources,
        )
        return udp.loadgenArgv(load, port, settings.seconds, settings.warmup)
    options = {
        "mode": scenario.mode,
        "port": port,
        "conns": scenario.conns,
        "size": scenario.size,
        "seconds": settings.seconds,
        "warmup": settings.warmup,
        "threads": settings.threads,
        "window": scenario.window,
        "timeout": settings.warmup + settings.seconds + 60,
    }
    argv = [str(BUILD / "loadgen")]
    for name, value in options.items():
        argv += [f"--{name}", str(value)]
    return argv


def parseLoadgen(stdout: str, stderr: str, status: int, what: str) -> Result:
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise ServerFailed(f"{what}: load generator exited {status} without a result:\n{stderr}")
    result: Result = json.loads(lines[-1])
    if status == 2 or result.get("mismatches"):
        raise MismatchError(f"{what}: {result.get('error')}")
    if status != 0 or not result.get("ok"):
        raise ServerFailed(f"{what}: {result.get('error') or stderr.strip()}")
    return result


class Machine:
    """
    Samples the CPU time of the server, and of everything else on the machine,
    during a measurement.
    """

    def __init__(self, server: Server) -> None:
        self.server = server

    def _exclude(self) -> set[int]:
        return {os.getpid(), *processTree(os.getpid()), *processTree(self.server.pid)}

    @contextmanager
    def measure(self, result: Result) -> Iterator[None]:
        others = otherProcessTicks(self._exclude())
        serverCpu, start = cpuSeconds(self.server.pid), time.monotonic()
        yield
        wall = time.monotonic() - start
        serverCpu = cpuSeconds(self.server.pid) - serverCpu
        after = otherProcessTicks(self._exclude())
        other = sum(max(0, t - others.get(pid, 0)) for pid, t in after.items()) / CLOCK_TICKS
        loadgen = float(result.get("cpu_s", 0))
        result["server_cpu_s"] = round(serverCpu, 3)
        result["server_cpu_pct"] = round(100 * serverCpu / wall, 1)
        result["loadgen_cpu_pct"] = round(100 * loadgen / wall, 1)
        result["other_cpu_pct"] = round(100 * other / wall, 1)


def runScenario(scenario: Scenario, server: Server, settings: Settings) -> Result:
    what = f"{server.spec.name} / {scenario.name}"
    argv = loadgenArgv(scenario, server.port, settings)
    result: Result = {}
    if scenario.mode == "hold":
        return runHold(scenario, server, settings, argv)
    with Machine(server).measure(result):
        try:
            done = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=settings.warmup + settings.seconds + 90,
                preexec_fn=_preexec(settings.loadgenCpus),
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise ServerFailed(f"{what}: the load generator did not finish") from None
        result.update(parseLoadgen(done.stdout, done.stderr, done.returncode, what))
    if result.get("msgs_per_s"):
        active = settings.warmup + settings.seconds
        perMessage = result["server_cpu_s"] / (result["msgs_per_s"] * active)
        result["server_cpu_us_per_msg"] = round(perMessage * 1e6, 2)
    if scenario.transport == "udp" and result.get("received"):
        # Datagrams: the server's CPU over the whole load generator run, per
        # datagram echoed in that run (warm-up and drain included).
        perDatagram = result["server_cpu_s"] / result["received"]
        result["server_cpu_us_per_dgram"] = round(perDatagram * 1e6, 3)
    if not server.alive():
        raise ServerFailed(f"{what}: the server exited:\n{server.output()}")
    return result


def runHold(scenario: Scenario, server: Server, settings: Settings, argv: list[str]) -> Result:
    """
    Open the connections, sample the server's RSS while they are idle, then
    let the load generator check and close them.
    """
    what = f"{server.spec.name} / {scenario.name}"
    argv = [*argv, "--pending", "1000", "--hold-max", "60"]
    before = after = rssKiB(server.pid)
    result: Result = {}
    with Machine(server).measure(result):
        process = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=_preexec(settings.loadgenCpus),
        )
        try:
            established = _waitEstablished(process, timeout=60)
            if established:
                time.sleep(0.5)  # let the server finish its bookkeeping
                after = rssKiB(server.pid)
            # A line on stdin ends the hold: the connections are checked and closed.
            stdout, stderr = process.communicate(b"\n", timeout=90)
        except subprocess.TimeoutExpired:
            raise ServerFailed(f"{what}: the load generator did not finish") from None
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        result.update(parseLoadgen(stdout.decode(), stderr.decode(), process.returncode, what))
    result["server_rss_kib_before"] = before
    result["server_rss_kib_held"] = after
    result["rss_kib_per_conn"] = round((after - before) / scenario.conns, 3)
    return result


def _waitEstablished(process: subprocess.Popen[bytes], timeout: float) -> bool:
    """
    Wait for the load generator's "ESTABLISHED" line on stderr; False if it
    exited first.
    """
    assert process.stderr is not None
    deadline = time.monotonic() + timeout
    buffered = b""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stderr, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not selector.select(0.2):
                if process.poll() is not None:
                    return False
                continue
            chunk = os.read(process.stderr.fileno(), 4096)
            if not chunk:
                return False
            buffered += chunk
            if b"ESTABLISHED" in buffered:
                return True
    raise subprocess.TimeoutExpired("loadgen", timeout)


# --- the run ------------------------------------------------------------------------------


@dataclass
class Run:
    specs: list[ServerSpec]
    scenarios: list[Scenario]
    settings: Settings
    baseline: str
    results: dict[str, dict[str, list[Result]]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    checks: dict[str, Result] = field(default_factory=dict)
    aborted: str | None = None

    @staticmethod
    def key(name: str, transport: str) -> str:
        """
        A server's key in C{failures} and C{checks}: its UDP process fails
        on its own, leaving its TCP figures alone (and the other way round).
        """
        return name if transport == "tcp" else f"{name} ({transport})"

    def active(self, transport: str = "tcp") -> list[ServerSpec]:
        return [
            s
            for s in self.specs
            if s.skip(transport) is None and self.key(s.name, transport) not in self.failures
        ]

    def record(self, scenario: Scenario, server: str, result: Result) -> None:
        self.results.setdefault(scenario.name, {}).setdefault(server, []).append(result)


def measureQuietly(scenario: Scenario, server: Server, settings: Settings) -> Result:
    """
    Run a scenario; while other processes took more than C{settings.maxOther}
    percent of a core meanwhile, run it again (at most C{settings.retries}
    more times) and keep the quietest attempt.  On a shared machine this
    trades time for figures that compare like with like.
    """
    attempts = []
    for _ in range(1 + settings.retries):
        result = runScenario(scenario, server, settings)
        attempts.append(result)
        if result["other_cpu_pct"] <= settings.maxOther:
            break
        time.sleep(1.0)
    best = min(attempts, key=lambda r: float(r["other_cpu_pct"]))
    best["attempts"] = len(attempts)
    if scenario.mode == "hold":
        # Memory is measured on the first attempt only: a process keeps (and
        # later reuses) what its first connections made it allocate.
        for key in ("server_rss_kib_before", "server_rss_kib_held", "rss_kib_per_conn"):
            best[key] = attempts[0][key]
    return best


def startServers(
    run: Run,
    specs: list[ServerSpec],
    directory: Path,
    number: int,
    servers: list[Server],
    transport: str = "tcp",
) -> None:
    """
    Start a fresh process of each server, add it to C{servers} (which the
    caller stops, whatever happens) and check that it echoes correctly; one
    that fails is stopped, recorded and not measured further.
    """
    check = checkUdpServer if transport == "udp" else checkServer
    for spec in specs:
        cpus = run.settings.serverCpus if spec.pin else None
        suffix = "" if transport == "tcp" else f"-{transport}"
        home = directory / f"{spec.name}-round{number}{suffix}"
        home.mkdir()
        server = Server(spec, home, cpus, transport)
        servers.append(server)
        key = run.key(spec.name, transport)
        try:
            server.waitListening(timeout=30)
            run.checks.setdefault(key, check(server.port))
        except ServerFailed as e:
            server.stop()
            run.failures[key] = f"round {number}: {e}"
            print(f"  {key:>10} FAILED its start or echo check: {e}", flush=True)


def runRound(
    run: Run, servers: list[Server], number: int, chosen: list[Scenario] | None = None
) -> None:
    """
    Every scenario (of C{chosen}, by default all), each on every server in
    turn: results compared with each other are measured seconds apart, not
    minutes.
    """
    for scenario in run.scenarios if chosen is None else chosen:
        for server in servers:
            name = server.spec.name
            key = run.key(name, server.transport)
            if key in run.failures:
                continue
            try:
                result = measureQuietly(scenario, server, run.settings)
            except ServerFailed as e:
                print(f"  {name:>10} {scenario.name:<16} FAILED: {e}", flush=True)
                run.record(scenario, name, {"ok": False, "error": str(e), "round": number})
                if not server.alive():
                    run.failures[key] = f"round {number}: {e}"
                continue
            except MismatchError as e:
                run.failures[key] = f"round {number}: {e}"
                raise MismatchError(f"{key}: {e}") from None
            result["round"] = number
            run.record(scenario, name, result)
            print(f"  {name:>10} {scenario.name:<16} {summary(scenario, result)}", flush=True)
            time.sleep(0.2)


def summary(scenario: Scenario, result: Result) -> str:
    parts = [f"{m.label} {result.get(m.key, float('nan')):,.{m.digits}f}" for m in scenario.metrics]
    parts.append(f"server cpu {result.get('server_cpu_pct', 0):.0f}%")
    parts.append(f"loadgen cpu {result.get('loadgen_cpu_pct', 0):.0f}%")
    parts.append(f"others {result.get('other_cpu_pct', 0):.0f}%")
    if result.get("attempts", 1) > 1:
        parts.append(f"quietest of {result['attempts']} attempts")
    return "; ".join(parts)


def execute(run: Run, directory: Path) -> None:
    """
    Round after round: fresh server processes, all TCP scenarios, servers
    stopped; then the same for UDP.  The order of the servers is reversed
    every other round.
    """
    for number in range(1, run.settings.rounds + 1):
        print(f"round {number}/{run.settings.rounds}", flush=True)
        for transport in TRANSPORTS:
            chosen = [s for s in run.scenarios if s.transport == transport]
            if not chosen:
                continue
            active = run.active(transport)
            order = active if number % 2 else list(reversed(active))
            servers: list[Server] = []
            try:
                startServers(run, order, directory, number, servers, transport)
                runRound(run, servers, number, chosen)
            finally:
                for server in servers:
                    server.stop()


def medians(good: list[Result]) -> Result:
    keys = {
        k
        for r in good
        for k, v in r.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
    keys -= {"round", "conns", "size", "threads", "window", "pending", "mismatches", "attempts"}
    keys -= {"sockets", "sources", "loss_timeout_s"}
    out: Result = {}
    for key in sorted(keys):
        values = [float(r[key]) for r in good if isinstance(r.get(key), int | float)]
        if values:
            out[key] = statistics.median(values)
    return out


def quiet(run: Run, result: Result) -> bool:
    """
    Whether other processes left this measurement alone (see --max-other-cpu).
    """
    return float(result.get("other_cpu_pct", 0.0)) <= run.settings.maxOther


def ratios(run: Run, scenario: Scenario, server: str) -> Result:
    """
    Per metric: the median over rounds of (server / baseline) in the same
    round, so that drift between rounds cancels.
    """
    rounds = run.results.get(scenario.name, {})
    mine = {r["round"]: r for r in rounds.get(server, []) if r.get("ok")}
    base = {r["round"]: r for r in rounds.get(run.baseline, []) if r.get("ok")}
    out: Result = {}
    for metric in (m for m in scenario.metrics if m.ratio):
        values = [
            mine[k][metric.key] / base[k][metric.key]
            for k in mine.keys() & base.keys()
            if base[k].get(metric.key)
        ]
        if values:
            out[metric.key] = round(statistics.median(values), 3)
    return out


def quietFigures(run: Run, scenario: Scenario, server: str) -> Result:
    """
    Medians of the measurements undisturbed by other load, and their ratios
    to the baseline's (quiet measurements are too few to pair by round).
    """

    def quietMedians(name: str) -> tuple[int, Result]:
        rounds = run.results.get(scenario.name, {}).get(name, [])
        calm = [r for r in rounds if r.get("ok") and quiet(run, r)]
        return len(calm), medians(calm)

    count, mine = quietMedians(server)
    _, base = quietMedians(run.baseline)
    ratio = {
        m.key: round(mine[m.key] / base[m.key], 3)
        for m in scenario.metrics
        if m.ratio and m.key in mine and base.get(m.key)
    }
    return {"rounds": count, "median": mine, "ratio_to_baseline": ratio}


def spread(values: list[float]) -> float:
    """
    Half the range over the median, in percent.
    """
    if len(values) < 2 or not statistics.median(values):
        return 0.0
    return 100 * (max(values) - min(values)) / 2 / statistics.median(values)


def report(run: Run) -> Result:
    out: Result = {}
    for scenario in run.scenarios:
        servers: Result = {}
        for spec in run.specs:
            rounds = run.results.get(scenario.name, {}).get(spec.name, [])
            skipped = spec.skip(scenario.transport)
            if skipped is not None:
                servers[spec.name] = {"status": "skipped", "reason": skipped}
                continue
            ok = [r for r in rounds if r.get("ok")]
            entry: Result = {
                "status": "ok" if ok else "failed",
                "median": medians(ok),
                "ratio_to_baseline": ratios(run, scenario, spec.name),
                "spread_pct": {
                    m.key: round(spread([float(r[m.key]) for r in ok if m.key in r]), 1)
                    for m in scenario.metrics
                },
                "quiet": quietFigures(run, scenario, spec.name),
                "rounds": rounds,
            }
            servers[spec.name] = entry
        out[scenario.name] = {
            "title": scenario.title,
            "mode": scenario.mode,
            "transport": scenario.transport,
            "conns": scenario.conns,
            "size": scenario.size,
            "window": scenario.window,
            "sources": scenario.sources,
            "metrics": [
                {"key": m.key, "label": m.label, "higher_is_better": m.higherIsBetter}
                for m in scenario.metrics
            ],
            "servers": servers,
        }
    return out


def table(run: Run, results: Result, quietOnly: bool = False) -> str:
    """
    The results as a Markdown table: medians, and in parentheses the median
    per-round ratio to the baseline; with C{quietOnly}, from the measurements
    undisturbed by other load only (their number in brackets; the ratio is
    that of the medians).
    """
    shown = [s for s in run.specs if s.skipReason is None]
    head = "| scenario | metric | " + " | ".join(s.name for s in shown) + " |"
    lines = [head, "|" + "---|" * (len(shown) + 2)]
    for scenario in run.scenarios:
        entry = results[scenario.name]["servers"]
        for index, metric in enumerate(scenario.metrics):
            arrow = "higher is better" if metric.higherIsBetter else "lower is better"
            cells = []
            for spec in shown:
                data = entry.get(spec.name, {})
                status = data.get("status")
                if quietOnly:
                    data = data.get("quiet", {})
                value = data.get("median", {}).get(metric.key)
                if value is None:
                    cells.append("failed" if status == "failed" else "-")
                    continue
                ratio = data.get("ratio_to_baseline", {}).get(metric.key)
                text = f"{value:,.{metric.digits}f}"
                if ratio is not None and spec.name != run.baseline:
                    text += f" ({ratio:.2f}x)"
                if quietOnly:
                    text += f" [{data['rounds']}]"
                cells.append(text)
            name = scenario.name if index == 0 else ""
            lines.append(f"| {name} | {metric.label} ({arrow}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def loadgenCheck(run: Run, results: Result, quietOnly: bool = False) -> list[str]:
    """
    Whether the load generator drove the native reference faster than every
    Python server, scenario by scenario (primary metric).
    """
    lines = []
    for scenario in run.scenarios:
        metric = scenario.primary
        entry = results[scenario.name]["servers"]
        if quietOnly:
            entry = {name: data["quiet"] for name, data in entry.items() if "quiet" in data}
        native = entry.get("native", {}).get("median", {}).get(metric.key)
        python = {
            name: data["median"][metric.key]
            for name, data in entry.items()
            if name != "native" and metric.key in data.get("median", {})
        }
        if native is None or not python:
            continue
        ranked = sorted(python, key=lambda name: python[name], reverse=metric.higherIsBetter)
        best = ranked[0]
        ahead = native > python[best] if metric.higherIsBetter else native < python[best]
        busy = entry["native"]["median"].get("loadgen_cpu_pct", 0.0)
        verdict = "native ahead" if ahead else "native NOT ahead"
        lines.append(
            f"{scenario.name}: native {native:,.{metric.digits}f} vs best Python "
            f"({best}) {python[best]:,.{metric.digits}f}: {verdict} "
            f"(load generator at {busy:.0f}% of its core against native)"
        )
    return lines


# --- machine description -------------------------------------------------------------------


def packageVersion(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def machineInfo(cc: str) -> Result:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    compiler = subprocess.run([cc, "--version"], capture_output=True, text=True, check=False)
    commit = subprocess.run(
        ["git", "-C", str(BENCH), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    return {
        "nproc": os.cpu_count(),
        "cpus_usable": sorted(os.sched_getaffinity(0)),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "twisted": packageVersion("Twisted"),
        "uvloop": packageVersion("uvloop"),
        "echod": packageVersion("echod"),
        "compiler": compiler.stdout.splitlines()[0] if compiler.stdout else cc,
        "git_commit": commit.stdout.strip() or None,
        "loadavg_start": os.getloadavg(),
    }


# --- command line --------------------------------------------------------------------------


SERVER_NAMES = ("echod", "textbook", "asyncio", "uvloop", "native")


def parseArgs(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="Benchmark echod against the textbook Twisted, asyncio, uvloop and "
        "native echo servers, side by side.",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 round of 0.5 s")
    parser.add_argument("--rounds", type=int, help="alternating rounds (default 7; quick 1)")
    parser.add_argument("--seconds", type=float, help="measured seconds per run (default 3)")
    parser.add_argument("--warmup", type=float, help="unmeasured seconds first (default 0.5)")
    parser.add_argument(
        "--connections", type=int, help="idle connections of conn-10k (default 10000; quick 2000)"
    )
    parser.add_argument(
        "--lanes", type=int, default=50, help="parallel lanes of conn-rate (default 50)"
    )
    parser.add_argument(
        "--loadgen-threads", type=int, default=1, help="load generator threads (default 1)"
    )
    parser.add_argument(
        "--scenarios",
        help="comma-separated scenario names, or tcp or udp for all of one transport "
        "(default: all); see --list",
    )
    parser.add_argument(
        "--servers", help=f"comma-separated servers (default: all of {', '.join(SERVER_NAMES)})"
    )
    parser.add_argument(
        "--echod-config-extra",
        action="append",
        default=[],
        metavar="TABLE.KEY=VALUE",
        help="extra echod config (TOML value), such as server.workers=2; repeatable",
    )
    parser.add_argument(
        "--workers",
        help="also run echod with [server] workers = N for each N listed (such as 1,2); "
        "skipped if echod does not know the key",
    )
    parser.add_argument(
        "--baseline", default="uvloop", help="server the ratios refer to (default uvloop)"
    )
    parser.add_argument(
        "--max-other-cpu",
        type=float,
        default=25.0,
        metavar="PCT",
        help="rerun a measurement while other processes used more than PCT%% of a core "
        "(default 25)",
    )
    parser.add_argument(
        "--retries", type=int, default=2, help="reruns of a noisy measurement at most (default 2)"
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    parser.add_argument("--cc", default=os.environ.get("CC", "gcc"), help="C compiler")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write JSON")
    parser.add_argument("--list", action="store_true", help="list scenarios and servers")
    parser.add_argument(
        "--report", type=Path, metavar="JSON", help="print the tables of a saved run; run nothing"
    )
    args = parser.parse_args(argv)
    quick = args.quick
    args.rounds = args.rounds or (1 if quick else 7)
    args.seconds = args.seconds or (0.5 if quick else 3.0)
    args.warmup = args.warmup if args.warmup is not None else (0.1 if quick else 0.5)
    args.connections = args.connections or (2000 if quick else 10000)
    for name in ("rounds", "seconds", "connections", "lanes", "loadgen_threads"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    return args


def cpuPlan(pin: bool, threads: int) -> tuple[set[int] | None, set[int] | None]:
    """
    The server on the first usable core, the load generator on the next ones
    (it needs a core of its own: on 2 cores, everything else shares the first).
    """
    usable = sorted(os.sched_getaffinity(0))
    if not pin or len(usable) < 2:
        return None, None
    return {usable[0]}, set(usable[1 : 1 + threads])


def selectServers(args: argparse.Namespace) -> list[ServerSpec]:
    extra = parseConfigExtra(args.echod_config_extra)
    specs = [echodSpec("echod", "echod", extra), *peerSpecs()]
    if args.workers:
        for text in args.workers.split(","):
            count = int(text)
            variant = {t: dict(v) for t, v in extra.items()}
            variant.setdefault("server", {})["workers"] = count
            specs.append(echodSpec(f"echod-w{count}", f"echod, {count} workers", variant))
    if args.servers:
        wanted = [s.strip() for s in args.servers.split(",") if s.strip()]
        known = {s.name for s in specs}
        unknown = [w for w in wanted if w not in known]
        if unknown:
            raise BenchError(f"unknown server {', '.join(unknown)} (known: {', '.join(known)})")
        specs = [s for s in specs if s.name in wanted]
    return specs


NOISY_PCT = 5.0


def background(run: Run) -> float:
    """
    The median share of a core other processes used during the measurements.
    """
    other = [
        float(r["other_cpu_pct"])
        for servers in run.results.values()
        for rounds in servers.values()
        for r in rounds
        if "other_cpu_pct" in r
    ]
    return statistics.median(other) if other else 0.0


def printReport(run: Run, document: Result) -> None:
    """
    The tables and the load generator check, from a run or a saved JSON file.
    """
    info, settings = document["machine"], document["settings"]
    results = report(run)
    backgroundPct = background(run)
    print()
    print(
        f"{info['nproc']} CPUs ({info['cpu_model']}), Linux {info['kernel']}, "
        f"Python {info['python']}, Twisted {info['twisted']}, uvloop {info['uvloop']}; "
        f"{settings['rounds']} round(s) of {settings['seconds']:g} s; medians "
        f"(ratio to {run.baseline}: median of per-round ratios)"
    )
    if backgroundPct > NOISY_PCT:
        print(f"NOISY: other processes used a median {backgroundPct:.0f}% of a core meanwhile")
    print(table(run, results))
    print()
    if backgroundPct > NOISY_PCT:
        print(
            f"Only the measurements during which other processes used at most "
            f"{run.settings.maxOther:g}% of a core [how many]:"
        )
        print(table(run, results, quietOnly=True))
        print()
    print("Load generator check (all measurements):")
    for line in loadgenCheck(run, results):
        print(f"  {line}")
    if backgroundPct > NOISY_PCT:
        print("Load generator check (undisturbed measurements only):")
        for line in loadgenCheck(run, results, quietOnly=True):
            print(f"  {line}")


def udpStatus(run: Run, spec: ServerSpec) -> Result:
    """
    The UDP flavour of a server, for the JSON file: ok, skipped or failed.
    """
    key = run.key(spec.name, "udp")
    why = spec.skip("udp")
    status = "skipped" if why else "failed" if key in run.failures else "ok"
    return {"status": status, "reason": why or run.failures.get(key), "check": run.checks.get(key)}


def runFromDocument(document: Result) -> Run:
    """
    A finished run, rebuilt from its JSON file (for --report).
    """
    saved = document["settings"]
    known = {s.name: s for s in scenarios(saved["connections"], saved["lanes"])}
    chosen = [known[name] for name in document["scenarios"]]

    def notStarted(port: int, directory: Path) -> list[str]:
        raise BenchError("a saved run starts no server")

    specs = []
    for name, data in document["servers"].items():
        spec = ServerSpec(name, data["title"], notStarted, udpArgv=notStarted)
        if data["status"] == "skipped":
            spec.skipReason = data["reason"]
        udpData = data.get("udp") or {}
        if udpData.get("status") == "skipped":
            spec.udpSkipReason = udpData["reason"]
        specs.append(spec)
    settings = Settings(
        seconds=saved["seconds"],
        warmup=saved["warmup"],
        rounds=saved["rounds"],
        connections=saved["connections"],
        lanes=saved["lanes"],
        threads=saved["loadgen_threads"],
        serverCpus=None,
        loadgenCpus=None,
        maxOther=saved.get("max_other_cpu_pct", 25.0),
        retries=saved.get("retries", 0),
    )
    run = Run(specs, chosen, settings, saved["baseline"])
    for name, entry in document["scenarios"].items():
        for server, data in entry["servers"].items():
            for result in data.get("rounds", []):
                run.record(known[name], server, result)
    for name, data in document["servers"].items():
        if data["status"] == "failed":
            run.failures[name] = data["reason"]
        if (data.get("udp") or {}).get("status") == "failed":
            run.failures[Run.key(name, "udp")] = data["udp"]["reason"]
    return run


def main(argv: Sequence[str] | None = None) -> int:
    args = parseArgs(argv)
    if args.report:
        saved = json.loads(args.report.read_text())
        printReport(runFromDocument(saved), saved)
        return 0
    allScenarios = scenarios(args.connections, args.lanes)
    if args.list:
        for scenario in allScenarios:
            print(f"{scenario.name:<16} {scenario.transport}: {scenario.title}")
        for name in SERVER_NAMES:
            print(f"server: {name}")
        return 0
    chosen = allScenarios
    if args.scenarios:
        wanted = [s.strip() for s in args.scenarios.split(",") if s.strip()]
        unknown = set(wanted) - {s.name for s in allScenarios} - set(TRANSPORTS)
        if unknown:
            print(f"unknown scenario {', '.join(sorted(unknown))}; see --list", file=sys.stderr)
            return 64
        chosen = [s for s in allScenarios if s.name in wanted or s.transport in wanted]

    # SIGTERM ends the run like Ctrl-C: the finally blocks stop every server.
    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started ignoring it
    started = time.monotonic()
    try:
        specs = selectServers(args)
    except BenchError as e:
        print(f"run.py: {e}", file=sys.stderr)
        return 64
    runnable = [s.name for s in specs if s.skipReason is None]
    baseline = next(
        (b for b in (args.baseline, "uvloop", "asyncio", *runnable) if b in runnable), ""
    )
    if baseline != args.baseline:
        print(f"baseline {args.baseline} is not run; ratios refer to {baseline}", flush=True)
    serverCpus, loadgenCpus = cpuPlan(not args.no_pin, args.loadgen_threads)
    settings = Settings(
        seconds=args.seconds,
        warmup=args.warmup,
        rounds=args.rounds,
        connections=args.connections,
        lanes=args.lanes,
        threads=args.loadgen_threads,
        serverCpus=serverCpus,
        loadgenCpus=loadgenCpus,
        maxOther=args.max_other_cpu,
        retries=0 if args.quick else max(0, args.retries),
    )
    run = Run(specs, chosen, settings, baseline)
    info = machineInfo(args.cc)
    transports = {s.transport for s in chosen}
    for spec in specs:
        for transport in TRANSPORTS:
            why = spec.skip(transport)
            if transport in transports and why and (transport == "tcp" or not spec.skipReason):
                print(f"skipping {run.key(spec.name, transport)}: {why}", flush=True)
    status = 0
    try:
        build(args.cc)
        with tempfile.TemporaryDirectory(prefix="echod-bench-") as directory:
            execute(run, Path(directory))
    except MismatchError as e:
        run.aborted = f"byte mismatch: {e}"
        print(f"\nABORTED: {run.aborted}", file=sys.stderr, flush=True)
        status = 2
    except BenchError as e:
        run.aborted = str(e)
        print(f"\nABORTED: {e}", file=sys.stderr, flush=True)
        status = 1
    except KeyboardInterrupt:
        run.aborted = "interrupted"
        print("\ninterrupted; servers stopped", file=sys.stderr, flush=True)
        status = 130
    info["loadavg_end"] = os.getloadavg()
    results = report(run)
    backgroundPct = background(run)
    document: Result = {
        "machine": info,
        "settings": {
            "rounds": settings.rounds,
            "seconds": settings.seconds,
            "warmup": settings.warmup,
            "quick": args.quick,
            "connections": settings.connections,
            "lanes": settings.lanes,
            "loadgen_threads": settings.threads,
            "server_cpus": sorted(serverCpus) if serverCpus else None,
            "loadgen_cpus": sorted(loadgenCpus) if loadgenCpus else None,
            "max_other_cpu_pct": settings.maxOther,
            "retries": settings.retries,
            "echod_config_extra": args.echod_config_extra,
            "baseline": baseline,
        },
        "servers": {
            spec.name: {
                "title": spec.title,
                "status": (
                    "skipped"
                    if spec.skipReason
                    else "failed"
                    if spec.name in run.failures
                    else "ok"
                ),
                "reason": spec.skipReason or run.failures.get(spec.name),
                "check": run.checks.get(spec.name),
                "pinned": spec.pin and serverCpus is not None,
                "config_extra": spec.configExtra or None,
                "udp": udpStatus(run, spec) if "udp" in transports else None,
            }
            for spec in specs
        },
        "scenarios": results,
        "mismatches": 1 if status == 2 else 0,
        "aborted": run.aborted,
        "background_cpu_pct_median": round(backgroundPct, 1),
        "noisy": backgroundPct > NOISY_PCT,
        "duration_s": round(time.monotonic() - started, 1),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(document, indent=2) + "\n")

    printReport(run, document)
    for name, reason in run.failures.items():
        print(f"FAILED {name}: {reason}")
        status = status or 1
    print(f"\nJSON: {args.json} ({document['duration_s']:.0f} s)")
    return status


if __name__ == "__main__":
    sys.exit(main())
