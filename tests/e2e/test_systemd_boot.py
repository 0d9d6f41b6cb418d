"""
echod's units under a real systemd: systemd 252 booted as PID 1 of a Debian 12
container (L{tests.systemdcontainer}), echod installed there as README's
"Running under systemd" says, and C{systemctl} starting, reloading and stopping
it, with socket activation, the sniffer and the monitor.

tests/e2e/test_systemd.py checks the same units without systemd (verify,
systemd-socket-activate, a notify socket of its own); here systemd itself
reads them.  The container boots once for the module and echod is installed
once (from an sdist of this checkout, its C helper compiled by the tree's gcc,
dependencies from the tree's wheels: no network inside); each test configures
and starts what it needs, and everything is stopped after it.  All traffic
stays on the container's own loopback.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.systemdcontainer import BootedTree, systemdTree
from tests.testing import Samples, value, waitUntil

pytestmark = [pytest.mark.e2e, pytest.mark.root]

CHECKOUT = Path(__file__).resolve().parents[2]
UNITS = [
    "echod.service",
    "echod.socket",
    "echod-udp.socket",
    "echod-sniff.service",
    "echod-monitor.service",
]
# systemd's range for DynamicUser= (DYNAMIC_UID_MIN..DYNAMIC_UID_MAX).
DYNAMIC_UIDS = range(61184, 65519 + 1)
CAP_NET_BIND_SERVICE = 10
CAP_NET_RAW = 13
METRICS_PORT = 9107
MONITOR_PORT = 9108
# README's example: dual-stack TCP and UDP port 7, metrics on loopback.
ECHO_CONFIG = r"""
[server]
listen = ['tcp6:port=7:interface=\:\:']
{server}
[udp]
listen = ["udp:port=7"]

[metrics]
listen = "tcp:9107:interface=127.0.0.1"
"""
STATUS = "serving on [::]:7, [::]:7, 127.0.0.1:9107"


def echoConfig(server: str = "", extra: str = "") -> str:
    return ECHO_CONFIG.format(server=server) + extra


def buildSdist(directory: Path) -> Path:
    """
    An sdist of this checkout: pip builds it inside, with the tree's gcc and
    Python headers, as a user's C{pip install /path/to/echod} would.
    """
    # The egg-info goes there too, not into the checkout.
    (directory / "egg").mkdir(parents=True)
    result = subprocess.run(
        [
            sys.executable,
            "setup.py",
            "-q",
            "egg_info",
            f"--egg-base={directory / 'egg'}",
            "sdist",
            f"--dist-dir={directory / 'dist'}",
        ],
        cwd=CHECKOUT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (sdist,) = (directory / "dist").glob("echod-*.tar.gz")
    return sdist


def install(container: BootedTree, sdist: str) -> None:
    """
    README's steps 1 to 4 (without enabling anything), inside.
    """
    container.run(["python3", "-m", "venv", "/opt/echod"])
    container.run(
        [
            "/opt/echod/bin/pip",
            "install",
            "-q",
            "--no-index",
            "--find-links=/mnt/echod-wheels",
            sdist,
        ],
        timeout=240,
    )
    cache = "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"
    container.run(["/opt/echod/bin/python", "-c", cache])
    container.run(["install", "-d", "/etc/echod"])
    container.run(["install", "-m", "0644", "/mnt/echod-etc/echod.toml", "/etc/echod/echod.toml"])
    container.run(
        ["install", "-m", "0644", *(f"/mnt/echod-etc/{u}" for u in UNITS), "/etc/systemd/system/"]
    )
    container.systemctl("daemon-reload")


@pytest.fixture(scope="module")
def booted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BootedTree]:
    tree = systemdTree()
    work = tmp_path_factory.mktemp("systemd-boot")
    sdist = buildSdist(work / "sdist")
    container = BootedTree(
        tree,
        work / "console.log",
        {
            "/mnt/echod-dist": sdist.parent,
            "/mnt/echod-wheels": tree / "wheels",
            "/mnt/echod-etc": CHECKOUT / "etc",
        },
    )
    try:
        print(f"booted in {container.boot():.1f} s")
        started = time.monotonic()
        install(container, f"/mnt/echod-dist/{sdist.name}")
        print(f"echod installed in {time.monotonic() - started:.1f} s")
        yield container
    finally:
        container.poweroff()


@pytest.fixture
def container(booted: BootedTree) -> Iterator[BootedTree]:
    """
    The booted container, left with none of echod's units running.
    """
    yield booted
    booted.systemctl("disable", "--now", *UNITS, check=False)
    booted.systemctl("reset-failed", check=False)
    booted.systemctl("log-level", "info", check=False)


def configure(container: BootedTree, text: str) -> None:
    container.writeFile("/etc/echod/echod.toml", text)
    container.run(["/opt/echod/bin/echod", "check-config", "/etc/echod/echod.toml"])


# --- Clients, in the container's network namespace ----------------------------------


def family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def readAll(s: socket.socket) -> bytes:
    chunks = []
    while chunk := s.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def tcpEcho(container: BootedTree, host: str, payload: bytes, port: int = 7) -> bytes:
    with container.socket(family(host)) as s:
        s.settimeout(15)
        s.connect((host, port))
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        return readAll(s)


def udpEcho(container: BootedTree, host: str, payload: bytes, timeout: float = 15) -> bytes:
    with container.socket(family(host), socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(payload, (host, 7))
        return s.recv(65535)


def scrape(container: BootedTree, port: int = METRICS_PORT) -> Samples:
    with container.socket(socket.AF_INET) as s:
        s.settimeout(10)
        s.connect(("127.0.0.1", port))
        s.sendall(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        head, _, body = readAll(s).partition(b"\r\n\r\n")
    assert head.startswith((b"HTTP/1.0 200 ", b"HTTP/1.1 200 ")), head
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for metrics in text_string_to_metric_families(body.decode())
        for sample in metrics.samples
    }


# --- What the kernel says about a process ------------------------------------------


def processStatus(container: BootedTree, pid: str) -> dict[str, str]:
    text = container.readFile(f"/proc/{pid}/status").decode()
    return dict(
        (key, setting.strip())
        for key, _, setting in (line.partition(":") for line in text.splitlines())
    )


def assertConfined(container: BootedTree, pid: str, user: str, capability: int | None) -> int:
    """
    Process C{pid} runs as a dynamic user named C{user}, holds exactly
    C{capability} (effective, permitted, bounding and ambient sets; L{None}:
    none at all), cannot gain privileges (no_new_privs) and runs under a
    seccomp filter.

    @return: its uid.
    """
    status = processStatus(container, pid)
    uids = {int(u) for u in status["Uid"].split()}
    gids = {int(g) for g in status["Gid"].split()}
    assert len(uids) == 1, status["Uid"]
    (uid,) = uids
    assert uid in DYNAMIC_UIDS, uid
    assert gids == {uid}, status["Gid"]
    entry = container.run(["getent", "passwd", str(uid)]).stdout.decode()
    assert entry.split(":")[0] == user, entry
    expected = 0 if capability is None else 1 << capability
    for key in ("CapEff", "CapPrm", "CapBnd", "CapAmb"):
        assert int(status[key], 16) == expected, (key, status[key])
    assert status["NoNewPrivs"] == "1"
    # 2: SECCOMP_MODE_FILTER (SystemCallFilter=, MemoryDenyWriteExecute=...).
    assert status["Seccomp"] == "2"
    return uid


def mainPid(container: BootedTree, unit: str) -> str:
    pid = container.show(unit, "MainPID")["MainPID"]
    assert pid != "0", f"{unit} has no main process"
    return pid


def waitForMessage(container: BootedTree, after: str, unit: str, text: str) -> None:
    waitUntil(
        lambda: any(text in m for m in container.messages(after, "-u", unit)),
        timeout=15,
        interval=0.2,
        what=f"{text!r} in the journal of {unit}",
    )


# --- The checks --------------------------------------------------------------------


def test_installed(container: BootedTree) -> None:
    """
    pip built the C helper with the tree's gcc; systemd-analyze verify has
    nothing to say about the installed units (it only warns, exit 0, so any
    output fails); the sample configuration passes check-config.
    """
    version = container.run(["/opt/echod/bin/echod", "--version"]).stdout.decode()
    print(version.strip())
    assert "C helper: built" in version
    result = container.run(
        ["systemd-analyze", "verify", *(f"/etc/systemd/system/{u}" for u in UNITS)],
        check=False,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")
    container.run(["/opt/echod/bin/echod", "check-config", "/etc/echod/echod.toml"])


def test_start(container: BootedTree) -> None:
    """
    C{systemctl start echod} returns once echod sent READY=1 (Type=notify),
    with its STATUS= line; echod echoes over TCP and UDP, IPv4 and IPv6, on
    port 7 as a transient user holding CAP_NET_BIND_SERVICE only, with
    no_new_privs and a seccomp filter; its watchdog pings reach systemd.
    """
    configure(container, echoConfig())
    after = container.cursor()
    container.systemctl("enable", "--now", "echod.service")  # README, step 4
    shown = container.show(
        "echod.service",
        "ActiveState",
        "SubState",
        "StatusText",
        "WatchdogUSec",
        "WatchdogTimestampMonotonic",
    )
    assert (shown["ActiveState"], shown["SubState"]) == ("active", "running")
    assert container.systemctl("is-enabled", "echod.service").strip() == "enabled"
    assert shown["StatusText"] == STATUS
    assert f'Status: "{STATUS}"' in container.systemctl("status", "--no-pager", "echod.service")

    for host in ("127.0.0.1", "::1"):
        payload = f"TCP over {host} ".encode() * 1000
        assert tcpEcho(container, host, payload) == payload
        payload = f"UDP over {host}".encode()
        assert udpEcho(container, host, payload) == payload
    # Port 7 is privileged in the container too: only the capability opens it.
    start = container.readFile("/proc/sys/net/ipv4/ip_unprivileged_port_start")
    assert int(start) > 7

    pid = mainPid(container, "echod.service")
    uid = assertConfined(container, pid, "echod", CAP_NET_BIND_SERVICE)
    print(f"echod: pid {pid}, uid {uid}")

    # echod pings every WatchdogSec/2 (15 s); each ping moves the timestamp.
    assert shown["WatchdogUSec"] == "30s"
    first = int(shown["WatchdogTimestampMonotonic"])
    assert first > 0
    waitUntil(
        lambda: (
            int(
                container.show("echod.service", "WatchdogTimestampMonotonic")[
                    "WatchdogTimestampMonotonic"
                ]
            )
            > first
        ),
        timeout=25,
        interval=0.5,
        what="a watchdog ping",
    )
    assert container.show("echod.service", "ActiveState", "MainPID") == {
        "ActiveState": "active",
        "MainPID": pid,
    }
    # Nothing to complain about (a plugin cache it cannot write, a file limit
    # below max_connections...).
    assert not complaints(container.messages(after, "-u", "echod.service"))


def complaints(messages: list[str]) -> list[str]:
    """
    Log lines of echod (text format) above info, and tracebacks.
    """
    levels = ("#warn] ", "#error] ", "#critical] ")
    return [m for m in messages if any(level in m for level in levels) or "Traceback" in m]


def test_reload(container: BootedTree) -> None:
    """
    C{systemctl reload} (SIGHUP) puts new limits in force in the same
    process; a file that does not load is logged and changes nothing, and
    the unit stays active.
    """
    configure(container, echoConfig("max_connections = 100"))
    container.systemctl("start", "echod.service")
    pid = mainPid(container, "echod.service")
    assert value(scrape(container), "echod_connections_max") == 100

    configure(container, echoConfig("max_connections = 3"))
    after = container.cursor()
    container.systemctl("reload", "echod.service")
    waitForMessage(
        container, after, "echod.service", "configuration reloaded from /etc/echod/echod.toml"
    )
    assert value(scrape(container), "echod_connections_max") == 3
    assert mainPid(container, "echod.service") == pid
    # In force, not only shown: three connections fill echod, a fourth is refused.
    held = [container.socket(socket.AF_INET) for _ in range(4)]
    try:
        for s in held[:3]:
            s.settimeout(10)
            s.connect(("127.0.0.1", 7))
            s.sendall(b"x")
            assert s.recv(1) == b"x"
        held[3].settimeout(10)
        held[3].connect(("127.0.0.1", 7))
        assert held[3].recv(1) == b""
        samples = scrape(container)
        assert value(samples, "echod_connections_refused_total", reason="max_connections") == 1
    finally:
        for s in held:
            s.close()

    container.writeFile("/etc/echod/echod.toml", echoConfig('max_connections = "many"'))
    after = container.cursor()
    container.systemctl("reload", "echod.service")
    waitForMessage(
        container, after, "echod.service", "reload failed, keeping the running configuration"
    )
    failure = [m for m in container.messages(after, "-u", "echod.service") if "reload" in m]
    print(failure)
    assert any("max_connections" in m for m in failure), failure
    assert container.show("echod.service", "ActiveState")["ActiveState"] == "active"
    assert mainPid(container, "echod.service") == pid
    assert value(scrape(container), "echod_connections_max") == 3
    assert tcpEcho(container, "::1", b"still here") == b"still here"


class StreamingClient(threading.Thread):
    """
    A client streaming random data to port 7 in small paced writes until
    told to stop, reading the echo in this thread until EOF.
    """

    def __init__(self, s: socket.socket) -> None:
        super().__init__(daemon=True)
        self.socket = s
        self.sent = bytearray()
        self.received = bytearray()
        self.ended: str | None = None
        self.stopSending = threading.Event()

    def run(self) -> None:
        try:
            while chunk := self.socket.recv(65536):
                self.received += chunk
            self.ended = "EOF"
        except OSError as e:
            self.ended = f"{type(e).__name__}: {e}"

    def stream(self, until: threading.Event, pause: float = 0.01) -> None:
        """
        Send 16 KiB every C{pause} seconds until C{until} is set.
        """
        while not until.is_set():
            chunk = os.urandom(16384)
            self.socket.sendall(chunk)
            self.sent += chunk
            time.sleep(pause)


def test_stopMidStream(container: BootedTree) -> None:
    """
    C{systemctl stop} while a client streams: echod keeps echoing through
    the drain, the client gets every byte back and then an orderly close,
    and echod exits with status 0, as the journal says (ExecMainStatus is
    not to be trusted once the stopped unit is unloaded).
    """
    configure(container, echoConfig())
    container.systemctl("start", "echod.service")
    s = container.socket(socket.AF_INET6)
    s.settimeout(30)
    s.connect(("::1", 7))
    client = StreamingClient(s)
    client.start()
    echoed = threading.Event()
    streaming = threading.Thread(target=client.stream, args=(echoed,), daemon=True)
    streaming.start()
    waitUntil(lambda: len(client.received) >= 1 << 20, timeout=15, what="1 MiB echoed")
    # systemd logs the main process's exit status (a success) at debug level.
    container.systemctl("log-level", "debug")
    after = container.cursor()
    stopped: list[subprocess.CompletedProcess[bytes]] = []
    stopping = threading.Thread(
        target=lambda: stopped.append(
            container.run(["systemctl", "stop", "echod.service"], check=False)
        )
    )
    stopping.start()
    waitUntil(
        lambda: container.show("echod.service", "ActiveState")["ActiveState"] == "deactivating",
        timeout=10,
        what="echod.service deactivating",
    )
    beforeDrain = len(client.received)
    # Go on streaming for a while into the drain, then fall silent.
    time.sleep(1)
    echoed.set()
    streaming.join(10)
    client.join(20)
    # Closing at EOF, as a client does: echod waits for that before it exits.
    s.close()
    stopping.join(40)
    assert stopped, "systemctl stop did not return"
    assert client.ended == "EOF"
    assert len(client.received) > beforeDrain
    assert len(client.received) == len(client.sent)
    assert client.received == client.sent
    print(f"{len(client.sent)} bytes streamed, {len(client.sent) - beforeDrain} during the drain")

    assert stopped[0].returncode == 0, stopped[0]
    assertStoppedCleanly(container, after, "echod.service")


def assertStoppedCleanly(container: BootedTree, after: str, unit: str) -> None:
    """
    C{unit}, stopped since the cursor C{after} with systemd's log level at
    debug, is inactive, and the journal shows its main process exiting with
    status 0 and nothing to complain about.
    """
    assert container.show(unit, "ActiveState")["ActiveState"] == "inactive"
    entries = container.journal(after, "-u", unit)
    exits = [(e.get("EXIT_CODE"), e.get("EXIT_STATUS")) for e in entries if "EXIT_CODE" in e]
    assert exits == [("exited", "0")], exits
    messages = [e.get("MESSAGE", "") for e in entries]
    assert not complaints(messages), messages
    assert f"{unit}: Main process exited, code=exited, status=0/SUCCESS (success)" in messages
    assert f"{unit}: Deactivated successfully." in messages


def test_socketActivation(container: BootedTree) -> None:
    """
    With echod.socket and echod-udp.socket (README's "Socket activation"):
    echod.service stays inactive until the first connection, or the first
    datagram; both sockets echo, over IPv4 and IPv6; connections and
    datagrams that arrive while the service restarts wait in the sockets'
    queues, and every one is answered.
    """
    container.run(
        ["install", "-m", "0644", "/mnt/echod-etc/echod-socket.toml", "/etc/echod/echod.toml"]
    )
    container.systemctl("enable", "--now", "echod.socket", "echod-udp.socket")
    for unit in ("echod.socket", "echod-udp.socket"):
        assert container.show(unit, "ActiveState", "UnitFileState") == {
            "ActiveState": "active",
            "UnitFileState": "enabled",
        }
    assert container.show("echod.service", "ActiveState")["ActiveState"] == "inactive"
    with pytest.raises(ConnectionRefusedError):
        scrape(container)
    assert container.show("echod.service", "ActiveState")["ActiveState"] == "inactive"

    # The first TCP connection starts echod, which then serves it.
    assert tcpEcho(container, "127.0.0.1", b"first, over TCP") == b"first, over TCP"
    assert container.show("echod.service", "ActiveState")["ActiveState"] == "active"
    assert tcpEcho(container, "::1", b"TCP six") == b"TCP six"
    assert udpEcho(container, "127.0.0.1", b"UDP four") == b"UDP four"
    assert udpEcho(container, "::1", b"UDP six") == b"UDP six"

    # The first datagram starts it too.
    container.systemctl("stop", "echod.service")
    assert container.show("echod.service", "ActiveState")["ActiveState"] == "inactive"
    assert container.show("echod-udp.socket", "ActiveState")["ActiveState"] == "active"
    assert udpEcho(container, "::1", b"first, over UDP", timeout=20) == b"first, over UDP"
    assert container.show("echod.service", "ActiveState")["ActiveState"] == "active"
    old = mainPid(container, "echod.service")

    # A restart: a streaming client keeps the old echod draining while
    # newcomers connect and send; they wait in the queue of systemd's socket.
    s = container.socket(socket.AF_INET)
    s.settimeout(30)
    s.connect(("127.0.0.1", 7))
    draining = StreamingClient(s)
    draining.start()
    quiet = threading.Event()
    streaming = threading.Thread(target=draining.stream, args=(quiet, 0.2), daemon=True)
    streaming.start()
    waitUntil(lambda: len(draining.received) > 0, what="the first echo")
    after = container.cursor()
    container.systemctl("restart", "--no-block", "echod.service")
    waitUntil(
        lambda: container.show("echod.service", "ActiveState")["ActiveState"] == "deactivating",
        timeout=10,
        what="echod.service deactivating",
    )
    queued = []
    for i in range(20):
        q = container.socket(socket.AF_INET6 if i % 2 else socket.AF_INET)
        q.settimeout(30)
        q.connect(("::1" if i % 2 else "127.0.0.1", 7))
        q.sendall(b"queued %d" % i)
        q.shutdown(socket.SHUT_WR)
        queued.append(q)
    datagrams = container.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    datagrams.settimeout(30)
    datagrams.bind(("::1", 0))
    for i in range(10):
        datagrams.sendto(b"datagram %d" % i, ("::1", 7))
    state = container.show("echod.service", "ActiveState")["ActiveState"]
    assert state == "deactivating", "the old echod stopped before everyone was queued"
    quiet.set()
    streaming.join(10)
    draining.join(20)
    s.close()
    assert draining.ended == "EOF"
    assert draining.received == draining.sent
    for i, q in enumerate(queued):
        assert readAll(q) == b"queued %d" % i
        q.close()
    replies = sorted(datagrams.recv(100) for _ in range(10))
    assert replies == sorted(b"datagram %d" % i for i in range(10))
    datagrams.close()
    assert container.show("echod.service", "ActiveState")["ActiveState"] == "active"
    assert mainPid(container, "echod.service") != old
    # Both processes did their part in order: no connection cut.
    assert not complaints(container.messages(after, "-u", "echod.service"))


def pcapPackets(data: bytes) -> tuple[int, list[bytes]]:
    """
    The link type and the records of a classic little-endian pcap file.
    """
    magic, _, _, _, _, _, linktype = struct.unpack_from("<IHHiIII", data)
    assert magic in (0xA1B2C3D4, 0xA1B23C4D), hex(magic)
    records, offset = [], 24
    while offset + 16 <= len(data):
        _, _, captured, _ = struct.unpack_from("<IIII", data, offset)
        records.append(data[offset + 16 : offset + 16 + captured])
        offset += 16 + captured
    assert offset == len(data), "a truncated record"
    return linktype, records


def test_sniffer(container: BootedTree) -> None:
    """
    echod-sniff.service captures echod's traffic on the container's loopback
    into its LogsDirectory, as its own transient user holding CAP_NET_RAW
    only.
    """
    output = "/var/log/echod-sniff/echo.pcap"
    sniff = (
        f'\n[sniff]\ninterface = "lo"\nfilter = "port 7"\nformat = "pcap"\noutput = "{output}"\n'
    )
    configure(container, echoConfig(extra=sniff))
    container.systemctl("start", "echod.service")
    after = container.cursor()
    container.systemctl("start", "echod-sniff.service")
    waitForMessage(container, after, "echod-sniff.service", "capturing on lo")
    pid = mainPid(container, "echod-sniff.service")
    uid = assertConfined(container, pid, "echod-sniff", CAP_NET_RAW)
    assert uid != assertConfined(
        container, mainPid(container, "echod.service"), "echod", CAP_NET_BIND_SERVICE
    )

    marks = [b"sniffed over TCP %d" % time.monotonic_ns(), b"sniffed over UDP %d" % os.getpid()]
    assert tcpEcho(container, "127.0.0.1", marks[0]) == marks[0]
    assert udpEcho(container, "::1", marks[1]) == marks[1]
    # The ring hands a block over when it is full or 50 ms old: wait for
    # the file to hold both exchanges before stopping (a stop loses the
    # block the kernel is still filling, as tcpdump's does).
    waitUntil(
        lambda: all(container.readFile(output).count(mark) >= 2 for mark in marks),
        timeout=10,
        interval=0.2,
        what="both exchanges in the capture file",
    )
    container.systemctl("stop", "echod-sniff.service")
    owner = container.run(["stat", "--dereference", "--format=%u", output]).stdout
    assert int(owner) == uid
    linktype, records = pcapPackets(container.readFile(output))
    print(f"{len(records)} packets captured, link type {linktype}")
    # No warning either: the sniffer serves no connections, so its
    # LimitNOFILE is not compared with [server] max_connections.
    logged = container.messages(after, "-u", "echod-sniff.service")
    assert not complaints(logged), logged
    assert linktype == 1  # Ethernet: lo has a (zero) Ethernet header
    # Request and echo of each, nothing but port 7 (a SYN, FIN... carry no mark).
    for mark in marks:
        assert sum(mark in r for r in records) == 2, mark
    assert all(7 in ports(r) for r in records)


def ports(frame: bytes) -> tuple[int, int]:
    """
    The source and destination ports of a TCP or UDP packet in an Ethernet
    frame (IPv4, or IPv6 without extension headers).
    """
    (ethertype,) = struct.unpack_from("!H", frame, 12)
    if ethertype == 0x0800:
        offset = 14 + (frame[14] & 0x0F) * 4
    else:
        assert ethertype == 0x86DD, hex(ethertype)
        offset = 14 + 40
    source, destination = struct.unpack_from("!HH", frame, offset)
    return source, destination


# --- The monitor -------------------------------------------------------------------

# Every address of these answers: echod.service on port 7 (ECHO_CONFIG).
MONITOR_TARGETS = ["127.0.0.1:7", "[::1]:7", "udp://127.0.0.1:7", "localhost:7"]
# (target, address, family, protocol) of each series the targets give.
MONITOR_SERIES = [
    ("127.0.0.1:7", "127.0.0.1", "ipv4", "tcp"),
    ("[::1]:7", "::1", "ipv6", "tcp"),
    ("udp://127.0.0.1:7", "127.0.0.1", "ipv4", "udp"),
    ("localhost:7", "127.0.0.1", "ipv4", "tcp"),
    ("localhost:7", "::1", "ipv6", "tcp"),
]
# What Debian's installer writes; debootstrap's minbase tree has no
# /etc/hosts, and without it "localhost" resolves nowhere.
HOSTS = "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n"


def monitorConfig(targets: list[str]) -> str:
    """
    echod's configuration with a C{[monitor]} table probing C{targets}
    every second (count x spacing + timeout fits in it).
    """
    listed = ", ".join(f"'{t}'" for t in targets)
    return echoConfig(
        extra=f"""
[monitor]
listen = "tcp:port={MONITOR_PORT}:interface=127.0.0.1"
interval = 1
timeout = 0.5
count = 3
spacing = 0.05
targets = [{listed}]
"""
    )


def probeSucceeded(samples: Samples, series: tuple[str, str, str, str]) -> bool:
    target, address, family_, protocol = series
    found = value(
        samples,
        "echod_probe_success",
        target=target,
        address=address,
        family=family_,
        protocol=protocol,
    )
    return found == 1


def scrapeUntilUp(container: BootedTree, series: list[tuple[str, str, str, str]]) -> Samples:
    """
    The monitor's metrics once the last round of every one of C{series}
    succeeded (a deadline, not a sleep: the first rounds are spread over
    the interval).
    """
    scraped: list[Samples] = []

    def allUp() -> bool:
        scraped[:] = [scrape(container, MONITOR_PORT)]
        return all(probeSucceeded(scraped[0], s) for s in series)

    try:
        waitUntil(allUp, timeout=15, interval=0.2, what=f"every address up: {series}")
    except AssertionError as e:
        last = {k: v for k, v in scraped[0].items() if k[0] == "echod_probe_success"}
        raise AssertionError(f"{e}; echod_probe_success: {last}") from None
    return scraped[0]


def test_monitor(container: BootedTree) -> None:
    """
    echod-monitor.service (README's "The monitor") probing echod.service in
    the same container: C{systemctl enable --now} returns on C{READY=1};
    it runs as a transient user without any capability, with
    no_new_privs and a seccomp filter; every address of its targets is up
    in its metrics, a name resolved by the sandboxed process included;
    C{systemctl reload} takes a new target list in the same process, and
    a file that does not load leaves the unit running as it was;
    C{systemctl stop} exits 0, with no warning in its log.
    """
    container.writeFile("/etc/hosts", HOSTS)
    configure(container, monitorConfig(MONITOR_TARGETS))
    container.systemctl("start", "echod.service")
    after = container.cursor()
    container.systemctl("enable", "--now", "echod-monitor.service")
    # Type=notify: enable --now returned once READY=1 came, with this STATUS=.
    shown = container.show("echod-monitor.service", "Type", "ActiveState", "SubState", "StatusText")
    assert shown == {
        "Type": "notify",
        "ActiveState": "active",
        "SubState": "running",
        "StatusText": f"serving on 127.0.0.1:{MONITOR_PORT}",
    }
    pid = mainPid(container, "echod-monitor.service")
    uid = assertConfined(container, pid, "echod-monitor", None)
    print(f"echod-monitor: pid {pid}, uid {uid}")

    samples = scrapeUntilUp(container, MONITOR_SERIES)
    assert value(samples, "echod_monitor_targets") == len(MONITOR_TARGETS)

    added = "udp://[::1]:7"
    configure(container, monitorConfig([*MONITOR_TARGETS, added]))
    reloading = container.cursor()
    container.systemctl("reload", "echod-monitor.service")
    waitForMessage(
        container,
        reloading,
        "echod-monitor.service",
        "targets reloaded: 4 kept (with their history; 0 of them with new settings), "
        "1 added, 0 removed",
    )
    assert mainPid(container, "echod-monitor.service") == pid
    samples = scrapeUntilUp(container, [*MONITOR_SERIES, (added, "::1", "ipv6", "udp")])
    assert value(samples, "echod_monitor_targets") == len(MONITOR_TARGETS) + 1
    logged = container.messages(after, "-u", "echod-monitor.service")
    assert not complaints(logged), logged

    container.writeFile("/etc/echod/echod.toml", monitorConfig(["echo.example:0"]))
    reloading = container.cursor()
    container.systemctl("reload", "echod-monitor.service")
    waitForMessage(
        container,
        reloading,
        "echod-monitor.service",
        "reload failed, keeping the running configuration",
    )
    failure = [
        m for m in container.messages(reloading, "-u", "echod-monitor.service") if "reload" in m
    ]
    print(failure)
    assert any('"echo.example:0": port 0 is not from 1 to 65535' in m for m in failure), failure
    assert container.show("echod-monitor.service", "ActiveState")["ActiveState"] == "active"
    assert mainPid(container, "echod-monitor.service") == pid
    samples = scrape(container, MONITOR_PORT)
    assert value(samples, "echod_monitor_targets") == len(MONITOR_TARGETS) + 1

    container.systemctl("log-level", "debug")
    stopping = container.cursor()
    container.systemctl("stop", "echod-monitor.service")
    assertStoppedCleanly(container, stopping, "echod-monitor.service")
