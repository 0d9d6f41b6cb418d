"""
echod and systemd, without systemd as PID 1: the unit files checked by
C{systemd-analyze}, socket activation through C{systemd-socket-activate} and
through a hand-made environment, sd_notify messages on a socket the test
binds, and the hardening the units ask for (W^X memory) applied for real.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from echod.config import ServerConfig
from tests.daemon import Twistd, twistdPath
from tests.environment import freePort, need, requireIPv6, requireTool
from tests.testing import echo, get, scrape, udpEcho, value

pytestmark = pytest.mark.e2e

ETC = Path(__file__).parents[2] / "etc"
UNITS = [
    "echod.socket",
    "echod-udp.socket",
    "echod.service",
    "echod-sniff.service",
    "echod-monitor.service",
]
INSTALLED_TWISTD = "/opt/echod/bin/twistd"
# Measured with systemd 252 (Debian 12): echod.service 1.5, echod-sniff.service
# 1.4, echod-monitor.service 1.2.  What is left is what an echo service is: network access, one
# capability, /proc for the process metrics, no private user namespace
# (CAP_NET_BIND_SERVICE would not reach the host's ports from one).
MAX_EXPOSURE = 2.0


def run(argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


@pytest.fixture
def units(tmp_path: Path) -> Path:
    """
    The unit files, with ExecStart= pointing at the twistd under test (the
    documented /opt/echod path does not exist here, and verify checks it).
    """
    directory = tmp_path / "units"
    directory.mkdir()
    for name in UNITS:
        text = (ETC / name).read_text()
        (directory / name).write_text(text.replace(INSTALLED_TWISTD, twistdPath()))
    return directory


def directives(path: Path) -> dict[str, list[str]]:
    """
    Every C{Key=value} of a unit file (all sections), values in file order.
    """
    found: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith(("#", ";", "[")):
            key, _, setting = line.partition("=")
            found.setdefault(key.strip(), []).append(setting.strip())
    return found


def seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|min|ms)?", text)
    assert match, text
    factor = {"s": 1, None: 1, "min": 60, "ms": 0.001}[match.group(2)]
    return float(match.group(1)) * factor


class UnitFileTests:
    def test_verifyIsSilent(self, units: Path) -> None:
        """
        systemd-analyze verify finds nothing to say about any unit; it only
        warns (exit 0) about unknown keys or bad values, so any output fails.
        """
        analyze = requireTool("systemd-analyze")
        result = run([analyze, "verify", "--man=no", *(str(units / u) for u in UNITS)])
        assert (result.returncode, result.stderr, result.stdout) == (0, "", "")

    def test_verifyWouldComplain(self, units: Path) -> None:
        """
        The check above is not vacuous: a misspelt key is reported on stderr.
        """
        analyze = requireTool("systemd-analyze")
        broken = units / "echod.service"
        broken.write_text(broken.read_text().replace("NoNewPrivileges=", "NoNewPrivilege="))
        result = run([analyze, "verify", "--man=no", str(units / "echod.socket"), str(broken)])
        assert "Unknown key 'NoNewPrivilege'" in result.stderr

    def test_capabilityNames(self) -> None:
        """
        Every capability named exists (systemd ignores a misspelt one in
        silence), and each service has exactly the one it needs.
        """
        setpriv = requireTool("setpriv")
        known = {"CAP_" + name.upper() for name in run([setpriv, "--list-caps"]).stdout.split()}
        assert "CAP_NET_BIND_SERVICE" in known
        wanted = {"echod.service": "CAP_NET_BIND_SERVICE", "echod-sniff.service": "CAP_NET_RAW"}
        for name, capability in wanted.items():
            found = directives(ETC / name)
            for key in ("AmbientCapabilities", "CapabilityBoundingSet"):
                names = [n.lstrip("~") for v in found[key] for n in v.split()]
                assert set(names) <= known, (name, key, names)
                assert names == [capability], (name, key)

    def test_serviceRunsEchodTheSystemdWay(self) -> None:
        """
        Type=notify with a twistd that never forks nor writes a pidfile, a
        reload by SIGHUP, and a stop timeout above echod's own drain.
        """
        found = directives(ETC / "echod.service")
        assert found["Type"] == ["notify"]
        (execStart,) = found["ExecStart"]
        assert execStart.startswith(f"{INSTALLED_TWISTD} --nodaemon --pidfile= echod ")
        assert found["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
        assert seconds(found["TimeoutStopSec"][0]) > ServerConfig().shutdown_timeout
        assert seconds(found["WatchdogSec"][0]) >= 10
        for key, setting in [
            ("DynamicUser", "yes"),
            ("NoNewPrivileges", "yes"),
            ("ProtectSystem", "strict"),
            ("MemoryDenyWriteExecute", "yes"),
            ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
            ("LimitNOFILE", "65536"),
            ("Restart", "on-failure"),
        ]:
            assert found[key] == [setting], key

    def test_socketsAreNamedForTheirListeners(self) -> None:
        """
        The names in FileDescriptorName= are those the sample configuration
        asks for, one per unit.
        """
        sample = (ETC / "echod-socket.toml").read_text()
        for name, listen, fdname in [
            ("echod.socket", "ListenStream", "echo"),
            ("echod-udp.socket", "ListenDatagram", "echo-udp"),
        ]:
            found = directives(ETC / name)
            assert found[listen] == ["7"]
            assert found["BindIPv6Only"] == ["both"]
            assert found["FileDescriptorName"] == [fdname]
            assert found["Service"] == ["echod.service"]
            assert f'"systemd:domain=INET6:name={fdname}"' in sample

    @pytest.mark.parametrize(
        "unit", ["echod.service", "echod-sniff.service", "echod-monitor.service"]
    )
    def test_securityExposure(self, units: Path, unit: str) -> None:
        analyze = requireTool("systemd-analyze")
        result = run([analyze, "security", "--offline=yes", "--no-pager", str(units / unit)])
        match = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", result.stdout)
        assert match, result.stdout + result.stderr
        exposure = float(match.group(1))
        print(f"{unit}: exposure {exposure} {match.group(2)}")
        assert exposure <= MAX_EXPOSURE


def retry(action: str, attempt: Callable[[], object], timeout: float = 15) -> None:
    """
    Call C{attempt} until it stops failing with an C{OSError} (the port is
    not bound yet, echod is not started yet).
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            attempt()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(f"{action}: no success in {timeout}s") from None
            time.sleep(0.1)


class SocketActivationTests:
    def test_systemdSocketActivateStream(self, tmp_path: Path) -> None:
        """
        systemd-socket-activate binds [::]:P (dual-stack) and execs twistd
        with LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES; echod adopts the socket by
        name and echoes over IPv4 and IPv6.
        """
        activate = requireTool("systemd-socket-activate")
        requireIPv6()
        port = freePort()
        daemon = Twistd(tmp_path, ["--listen", "systemd:domain=INET6:name=echo"])
        daemon.argv = [activate, "-l", str(port), "--fdname=echo", "--", *daemon.argv]
        with daemon:
            # The first connection makes systemd-socket-activate start twistd.
            retry("echo over IPv4", lambda: echo("127.0.0.1", port, b"v4"))
            assert echo("127.0.0.1", port, b"activated") == b"activated"
            assert echo("::1", port, b"activated six") == b"activated six"
            daemon.signal(signal.SIGTERM)
            assert daemon.wait() == 0
        out = daemon.output()
        assert f"listening on [::]:{port} (systemd:domain=INET6:name=echo)" in out
        assert "Traceback" not in out

    def test_systemdSocketActivateDatagram(self, tmp_path: Path) -> None:
        """
        A datagram socket passed by name (as from echod-udp.socket) is
        adopted, non-blocking, and echoes over IPv4 and IPv6.
        """
        activate = requireTool("systemd-socket-activate")
        requireIPv6()
        port = freePort(socket.AF_INET, socket.SOCK_DGRAM)
        conf = tmp_path / "echod.toml"
        conf.write_text(
            '[server]\nlisten = []\n[udp]\nlisten = ["systemd:domain=INET6:name=echo-udp"]\n'
        )
        daemon = Twistd(tmp_path, ["--config", str(conf)])
        daemon.argv = [
            activate,
            "--datagram",
            "-l",
            str(port),
            "--fdname=echo-udp",
            "--",
            *daemon.argv,
        ]
        with daemon:
            retry("UDP echo over IPv4", lambda: udpEcho("127.0.0.1", port, b"first", 2))
            daemon.waitFor("UDP echo listening on")
            assert udpEcho("127.0.0.1", port, b"datagram") == b"datagram"
            assert udpEcho("::1", port, b"datagram six") == b"datagram six"
            daemon.signal(signal.SIGTERM)
            assert daemon.wait() == 0
        assert f"UDP echo listening on [::]:{port}" in daemon.output()

    def test_handMadeEnvironment(self, tmp_path: Path) -> None:
        """
        What systemd does with echod.socket and echod-udp.socket, by hand:
        a stream socket as fd 3 and a datagram socket as fd 4, named
        echo:echo-udp, LISTEN_PID set by the process that execs twistd.
        """
        requireTool("bash")
        requireIPv6()
        stream = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        datagram = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        for s in (stream, datagram):
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            s.bind(("::", 0))
        stream.listen(16)
        tcpPort, udpPort = stream.getsockname()[1], datagram.getsockname()[1]
        # Above 9, so that moving them to 3 and 4 cannot clobber either.
        fds = [fcntl.fcntl(s.fileno(), fcntl.F_DUPFD, 10) for s in (stream, datagram)]
        stream.close()
        datagram.close()
        conf = tmp_path / "echod.toml"
        conf.write_text(
            '[server]\nlisten = ["systemd:domain=INET6:name=echo"]\n'
            '[udp]\nlisten = ["systemd:domain=INET6:name=echo-udp"]\n'
        )
        # bash, not dash: dash cannot redirect descriptors above 9.
        shim = 'exec 3<&"$1" 4<&"$2"; eval "exec $1<&- $2<&-"; shift 2; LISTEN_PID=$$ exec "$@"'
        daemon = Twistd(
            tmp_path,
            ["--config", str(conf)],
            env={"LISTEN_FDS": "2", "LISTEN_FDNAMES": "echo:echo-udp"},
            passFds=tuple(fds),
        )
        daemon.argv = ["bash", "-c", shim, "bash", *map(str, fds), *daemon.argv]
        with daemon:
            for fd in fds:
                os.close(fd)
            daemon.listeningPorts(1)
            daemon.waitFor("UDP echo listening on")
            assert echo("127.0.0.1", tcpPort, b"by hand") == b"by hand"
            assert udpEcho("127.0.0.1", udpPort, b"by hand, udp") == b"by hand, udp"
            assert echo("::1", tcpPort, b"six") == b"six"
            daemon.signal(signal.SIGTERM)
            assert daemon.wait() == 0
        out = daemon.output()
        assert f"listening on [::]:{tcpPort} (systemd:domain=INET6:name=echo)" in out
        assert f"UDP echo listening on [::]:{udpPort}" in out


class NotifySocket:
    """
    An AF_UNIX datagram socket standing in for systemd's: C{address} is a
    path, or C{@name} in the abstract namespace.
    """

    def __init__(self, address: str) -> None:
        self.address = address
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind("\0" + address[1:] if address.startswith("@") else address)
        self.messages: list[str] = []

    def close(self) -> None:
        self.socket.close()

    def waitFor(self, message: str, timeout: float = 15) -> str:
        """
        Receive until a message starting with C{message} arrives; return it.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.socket.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                received = self.socket.recv(4096).decode()
            except TimeoutError:
                break
            self.messages.append(received)
            if received.startswith(message):
                return received
        raise AssertionError(f"no {message!r} in {timeout}s; received {self.messages}")

    def collect(self, seconds: float) -> list[str]:
        """
        Everything received in the next C{seconds}.
        """
        deadline = time.monotonic() + seconds
        received = []
        while (left := deadline - time.monotonic()) > 0:
            self.socket.settimeout(left)
            try:
                received.append(self.socket.recv(4096).decode())
            except TimeoutError:
                break
        self.messages.extend(received)
        return received


@pytest.fixture(params=["path", "abstract"])
def notifySocket(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NotifySocket]:
    if request.param == "path":
        address = str(tmp_path / "notify")
    else:
        address = f"@echod-test-{uuid.uuid4().hex}"
    listener = NotifySocket(address)
    yield listener
    listener.close()


class NotifyTests:
    def test_readyAfterListeningThenWatchdogThenStopping(
        self, tmp_path: Path, notifySocket: NotifySocket
    ) -> None:
        """
        READY=1 comes once, when every listener (echo and metrics) accepts,
        with a STATUS naming them; WATCHDOG=1 every half WATCHDOG_USEC (here
        WATCHDOG_PID names the twistd process, as systemd does); STOPPING=1
        as SIGTERM begins the shutdown.
        """
        port, metricsPort = freePort(), freePort()
        conf = tmp_path / "echod.toml"
        conf.write_text(
            f"[server]\nlisten = ['tcp:{port}:interface=127.0.0.1']\n"
            f"[metrics]\nlisten = 'tcp:{metricsPort}:interface=127.0.0.1'\n"
        )
        daemon = Twistd(
            tmp_path,
            ["--config", str(conf)],
            env={"NOTIFY_SOCKET": notifySocket.address, "WATCHDOG_USEC": "200000"},
        )
        daemon.argv = ["sh", "-c", 'WATCHDOG_PID=$$ exec "$@"', "sh", *daemon.argv]
        with daemon:
            ready = notifySocket.waitFor("READY=1")
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            assert get(f"http://127.0.0.1:{metricsPort}/healthz") == (200, b"ok\n")
            assert ready == (
                f"READY=1\nSTATUS=serving on 127.0.0.1:{port}, 127.0.0.1:{metricsPort}"
            )
            pings = notifySocket.collect(1.0)
            assert 5 <= pings.count("WATCHDOG=1") <= 15, pings
            daemon.signal(signal.SIGTERM)
            notifySocket.waitFor("STOPPING=1")
            assert daemon.wait() == 0
        assert [m for m in notifySocket.messages if "READY=1" in m] == [ready]
        assert "Traceback" not in daemon.output()

    def test_watchdogOfAnotherProcess(self, tmp_path: Path) -> None:
        """
        WATCHDOG_PID naming another process: no pings from this one.
        """
        notifySocket = NotifySocket(str(tmp_path / "notify"))
        port = freePort()
        env = {"NOTIFY_SOCKET": notifySocket.address, "WATCHDOG_USEC": "200000"}
        env["WATCHDOG_PID"] = "1"
        with Twistd(tmp_path, ["--listen", f"tcp:{port}:interface=127.0.0.1"], env=env):
            notifySocket.waitFor("READY=1")
            assert notifySocket.collect(0.5) == []
        notifySocket.close()


def syscalls(analyze: str, group: str) -> set[str]:
    """
    The system calls of a systemd group (C{@system-service}), nested groups
    expanded.
    """
    names: set[str] = set()
    for line in run([analyze, "syscall-filter", group]).stdout.splitlines()[1:]:
        entry = line.strip()
        if entry and not entry.startswith("#"):
            names |= syscalls(analyze, entry) if entry.startswith("@") else {entry}
    assert names, group
    return names


def unitSandbox(analyze: str, unit: Path) -> tuple[set[str], list[str]]:
    """
    The system calls (C{SystemCallFilter=} lines, in order: an allow list,
    then C{~} removals) and address families a unit allows.
    """
    found = directives(unit)
    allowed: set[str] = set()
    for setting in found["SystemCallFilter"]:
        names: set[str] = set()
        for entry in setting.lstrip("~").split():
            names |= syscalls(analyze, entry) if entry.startswith("@") else {entry}
        allowed = allowed - names if setting.startswith("~") else allowed | names
    # Always allowed by systemd (systemd.exec(5), SystemCallFilter=).
    allowed |= {"execve", "exit", "exit_group", "getrlimit", "rt_sigreturn", "sigreturn"}
    (families,) = found["RestrictAddressFamilies"]
    return allowed, families.split()


# Runs a command the way systemd would with MemoryDenyWriteExecute=yes,
# SystemCallFilter= and RestrictAddressFamilies=: W^X by PR_SET_MDWE
# (Linux >= 6.3, inherited across exec; systemd uses seccomp for the same
# rule), then a libseccomp filter allowing the given system calls (others
# fail with EPERM, as SystemCallErrorNumber=EPERM says) and socket() only for
# the given families.
SANDBOX = """
import ctypes, json, os, socket, sys
allowed, families = json.loads(sys.argv[1]), json.loads(sys.argv[2])
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:
    sys.exit("PR_SET_MDWE: " + os.strerror(ctypes.get_errno()))
class Compare(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("a", ctypes.c_uint64), ("b", ctypes.c_uint64)]
try:
    seccomp = ctypes.CDLL("libseccomp.so.2")
except OSError as e:
    sys.exit(f"libseccomp: {e}")
seccomp.seccomp_init.restype = ctypes.c_void_p
seccomp.seccomp_init.argtypes = [ctypes.c_uint32]
seccomp.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
seccomp.seccomp_rule_add_array.argtypes = [
    ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(Compare)]
seccomp.seccomp_load.argtypes = [ctypes.c_void_p]
ALLOW, EPERM, EQUAL = 0x7FFF0000, 0x00050000 | 1, 4
context = seccomp.seccomp_init(EPERM)
for name in allowed:
    number = seccomp.seccomp_syscall_resolve_name(name.encode())
    if number >= 0 and name != "socket":
        seccomp.seccomp_rule_add_array(context, ALLOW, number, 0, None)
number = seccomp.seccomp_syscall_resolve_name(b"socket")
for family in families:
    compare = Compare(0, EQUAL, getattr(socket, family), 0)
    if seccomp.seccomp_rule_add_array(context, ALLOW, number, 1, ctypes.byref(compare)):
        sys.exit(f"cannot allow {family}")
if seccomp.seccomp_load(context):
    sys.exit("seccomp_load failed")
os.execvp(sys.argv[3], sys.argv[3:])
"""

# What the sandbox must refuse: W+X memory, a privileged system call, a
# socket family the unit does not list.
PROBE = """
import mmap, os, socket
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
except PermissionError:
    print("W+X refused")
try:
    os.setuid(os.getuid())
except PermissionError:
    print("setuid refused")
try:
    socket.socket(socket.AF_NETLINK, socket.SOCK_RAW)
except PermissionError:
    print("AF_NETLINK refused")
socket.socket(socket.AF_INET6, socket.SOCK_STREAM).close()
print("AF_INET6 allowed")
"""


def test_runsInTheSandboxOfItsUnit(tmp_path: Path) -> None:
    """
    echod.service's MemoryDenyWriteExecute=, SystemCallFilter= and
    RestrictAddressFamilies=, applied for real: echod (TCP, UDP, metrics,
    sd_notify) starts, serves and stops inside them.
    """
    analyze = requireTool("systemd-analyze")
    allowed, families = unitSandbox(analyze, ETC / "echod.service")
    sandbox = [sys.executable, "-c", SANDBOX, json.dumps(sorted(allowed)), json.dumps(families)]
    probe = run([*sandbox, sys.executable, "-c", PROBE])
    need(probe.returncode == 0, f"no sandbox here: {probe.stderr.strip()}")
    assert probe.stdout.splitlines() == [
        "W+X refused",
        "setuid refused",
        "AF_NETLINK refused",
        "AF_INET6 allowed",
    ]

    notifySocket = NotifySocket(str(tmp_path / "notify"))
    port, udpPort, metricsPort = freePort(), freePort(socket.AF_INET, socket.SOCK_DGRAM), freePort()
    conf = tmp_path / "echod.toml"
    conf.write_text(
        f"[server]\nlisten = ['tcp:{port}:interface=127.0.0.1']\n"
        f"[udp]\nlisten = ['udp:port={udpPort}:interface=127.0.0.1']\n"
        f"[metrics]\nlisten = 'tcp:{metricsPort}:interface=127.0.0.1'\n"
    )
    daemon = Twistd(
        tmp_path,
        ["--config", str(conf)],
        env={"NOTIFY_SOCKET": notifySocket.address, "WATCHDOG_USEC": "1000000"},
    )
    daemon.argv = [*sandbox, *daemon.argv]
    with daemon:
        notifySocket.waitFor("READY=1")
        assert echo("127.0.0.1", port, b"sandboxed") == b"sandboxed"
        assert udpEcho("127.0.0.1", udpPort, b"sandboxed udp") == b"sandboxed udp"
        samples = scrape(metricsPort)
        assert value(samples, "echod_up") == 1
        assert value(samples, "process_open_fds") > 0
        daemon.signal(signal.SIGTERM)
        notifySocket.waitFor("STOPPING=1")
        assert daemon.wait() == 0
    notifySocket.close()
    assert "Traceback" not in daemon.output()
