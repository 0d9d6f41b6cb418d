"""
The installed client, as a user runs it: the C{echod-client} console script and
C{twistd -n echod-client}, against a real C{twistd -n echod} subprocess and
small misbehaving servers, checking printed output and exit statuses.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.daemon import Twistd, twistdPath
from tests.environment import hasIPv6, requireIPv6, requireRoot, requireTool

pytestmark = pytest.mark.e2e

RUN_TIMEOUT = 30


def clientPath() -> str:
    candidate = Path(sys.executable).parent / "echod-client"
    return str(candidate) if candidate.exists() else "echod-client"


class Servers:
    """
    The ports of the running echod: C{v4} on 127.0.0.1, C{v6} on ::1.
    """

    def __init__(self, v4: int, v6: int | None, directory: Path) -> None:
        self.v4 = v4
        self.v6 = v6
        self.directory = directory


@pytest.fixture(scope="module")
def echod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    directory = tmp_path_factory.mktemp("echod")
    listen = ["--listen", "tcp:0:interface=127.0.0.1"]
    if hasIPv6():
        listen += ["--listen", r"tcp6:0:interface=\:\:1"]
    with Twistd(directory, listen) as daemon:
        ports = daemon.listeningPorts(len(listen) // 2)
        yield Servers(ports[0], ports[1] if len(ports) > 1 else None, directory)


def run(argv: list[str], cwd: Path, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        cwd=cwd,
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        stdin=None if stdin is not None else subprocess.DEVNULL,
    )


def console(cwd: Path, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return run([clientPath(), *args], cwd, stdin)


def twistd(cwd: Path, *args: str, logfile: bool = True) -> subprocess.CompletedProcess[str]:
    """
    C{twistd -n echod-client ARGS}, logging to a file so that standard
    output holds only what the client prints.
    """
    options = ["-n", "--pidfile="]
    if logfile:
        options.append(f"--logfile={cwd}/twistd-client.log")
    return run([twistdPath(), *options, "echod-client", *args], cwd)


Runner = Callable[..., subprocess.CompletedProcess[str]]
RUNNERS: dict[str, Runner] = {"console": console, "twistd": twistd}


# --- it works ------------------------------------------------------------------------


def test_consoleOneShotIPv4(echod: Servers, tmp_path: Path) -> None:
    """
    C{echod-client HOST PORT "Hello, world"} prints the seed's line, exit 0.
    """
    result = console(tmp_path, "127.0.0.1", str(echod.v4), "Hello, world")
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        "Received b'Hello, world'\n",
        "",
    )


def test_consoleOneShotIPv6(echod: Servers, tmp_path: Path) -> None:
    """
    The same over IPv6.
    """
    requireIPv6()
    result = console(tmp_path, "::1", str(echod.v6), "Hello, world")
    assert (result.returncode, result.stdout) == (0, "Received b'Hello, world'\n")


def test_consoleByName(echod: Servers, tmp_path: Path) -> None:
    """
    The same by the name C{localhost}, resolved by the system.
    """
    result = console(tmp_path, "localhost", str(echod.v4))
    assert (result.returncode, result.stdout) == (0, "Received b'Hello, world'\n")


def test_twistdOneShot(echod: Servers, tmp_path: Path) -> None:
    """
    C{twistd -n echod-client --host --port --message} prints the same line
    and exits 0.
    """
    result = twistd(
        tmp_path, "--host", "127.0.0.1", "--port", str(echod.v4), "--message", "Hello, world"
    )
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        "Received b'Hello, world'\n",
        "",
    )


def test_twistdLoggingToStdout(echod: Servers, tmp_path: Path) -> None:
    """
    Without --logfile, twistd's log lines share standard output, and the
    client's line stands on its own among them.
    """
    result = twistd(tmp_path, "127.0.0.1", str(echod.v4), logfile=False)
    assert result.returncode == 0
    assert "Received b'Hello, world'" in result.stdout.splitlines()
    assert "Main loop terminated" in result.stdout


def test_twistdConfigFile(echod: Servers, tmp_path: Path) -> None:
    """
    The [client] table of the config file drives C{twistd echod-client}.
    """
    requireIPv6()
    config = tmp_path / "echod.toml"
    config.write_text(f'[client]\nhost = "::1"\nport = {echod.v6}\nmessage = "from the file"\n')
    result = twistd(tmp_path, "--config", str(config))
    assert (result.returncode, result.stdout) == (0, "Received b'from the file'\n")


@pytest.mark.parametrize("how", ["console", "twistd"])
def test_ping(echod: Servers, tmp_path: Path, how: str) -> None:
    """
    Ping mode: a line per reply with its round-trip time, then the summary.
    """
    result = RUNNERS[how](
        tmp_path, "127.0.0.1", str(echod.v4), "--count", "3", "--interval", "0.05", "--size", "64"
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert (
        lines[0] == f"ECHO 127.0.0.1 port {echod.v4} (127.0.0.1:{echod.v4}): 64 bytes, 3 messages"
    )
    for seq, line in enumerate(lines[1:4], 1):
        assert line.startswith(f"64 bytes from 127.0.0.1:{echod.v4}: seq={seq} time=")
        assert line.endswith(" ms")
    assert lines[5] == f"--- 127.0.0.1 port {echod.v4} echo statistics ---"
    assert lines[6].startswith("3 sent, 3 received, 0 mismatched, 0.0% loss, time ")
    assert lines[7].startswith("rtt min/avg/max/p50/p99 = ")


@pytest.mark.parametrize("how", ["console", "twistd"])
def test_pingJSON(echod: Servers, tmp_path: Path, how: str) -> None:
    """
    --json: standard output is one JSON object with the summary.
    """
    result = RUNNERS[how](tmp_path, "127.0.0.1", str(echod.v4), "-n", "5", "-i", "0", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["sent"] == summary["received"] == 5
    assert summary["mismatched"] == 0
    assert summary["loss_percent"] == 0.0
    assert summary["status"] == 0
    rtt = summary["rtt_ms"]
    assert rtt["min"] <= rtt["p50"] <= rtt["p99"] <= rtt["max"]


def test_payloadFromStandardInput(echod: Servers, tmp_path: Path) -> None:
    """
    --file - sends what standard input holds.
    """
    result = console(
        tmp_path, "127.0.0.1", str(echod.v4), "--file", "-", "--json", stdin=b"piped payload"
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["bytes_per_message"] == len(b"piped payload")


@pytest.mark.parametrize("how", ["console", "twistd"])
def test_bulk(echod: Servers, tmp_path: Path, how: str) -> None:
    """
    --bulk streams, verifies every byte and reports MB/s.
    """
    result = RUNNERS[how](tmp_path, "127.0.0.1", str(echod.v4), "--bulk", "32M")
    assert result.returncode == 0, result.stderr
    last = result.stdout.splitlines()[-1]
    assert last.startswith("33554432 bytes sent, 33554432 bytes verified in ")
    assert float(last.split(": ")[1].split()[0]) > 0


def test_bulkMemoryStaysSmall(echod: Servers, tmp_path: Path) -> None:
    """
    Streaming 512 MiB never holds the payload: the client's peak resident
    memory stays far below it.
    """
    probe = (
        "import resource, subprocess, sys\n"
        "r = subprocess.run(sys.argv[1:], capture_output=True)\n"
        "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    result = run(
        [sys.executable, "-c", probe, clientPath(), "127.0.0.1", str(echod.v4), "--bulk", "512M"],
        tmp_path,
    )
    status, peakKiB = (int(x) for x in result.stdout.split())
    assert status == 0
    assert peakKiB < 120 * 1024


# --- falling back across families, by name ----------------------------------------------


def test_localhostWithBothFamilies(echod: Servers, tmp_path: Path) -> None:
    """
    In a mount namespace where C{localhost} is both ::1 and 127.0.0.1 (a
    private hosts file; the machine's is untouched), the client reaches an
    IPv4-only port by falling back from ::1, an IPv6 port directly, and -4
    keeps it off IPv6.
    """
    requireRoot()
    requireIPv6()
    unshare = requireTool("unshare")
    requireTool("mount")
    machineHosts = Path("/etc/hosts").read_bytes()
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n::1 localhost\n")

    def inNamespace(*args: str) -> subprocess.CompletedProcess[str]:
        script = 'mount --bind "$0" /etc/hosts && exec "$@"'
        return run([unshare, "-m", "sh", "-c", script, str(hosts), clientPath(), *args], tmp_path)

    resolved = run(
        [
            unshare,
            "-m",
            "sh",
            "-c",
            'mount --bind "$0" /etc/hosts && getent ahosts localhost',
            str(hosts),
        ],
        tmp_path,
    )
    need = resolved.returncode == 0 and "::1" in resolved.stdout
    if not need:
        pytest.fail(f"the private hosts file was not used: {resolved.stdout}{resolved.stderr}")

    assert echod.v6 is not None
    v4only = inNamespace("localhost", str(echod.v4), "-n", "2", "-i", "0")
    assert v4only.returncode == 0, v4only.stderr
    assert f"(127.0.0.1:{echod.v4})" in v4only.stdout.splitlines()[0]

    v6 = inNamespace("localhost", str(echod.v6), "-n", "2", "-i", "0")
    assert v6.returncode == 0, v6.stderr
    assert f"([::1]:{echod.v6})" in v6.stdout.splitlines()[0]

    forced = inNamespace("-4", "localhost", str(echod.v6))
    assert forced.returncode == 4
    assert forced.stderr == (
        f"echod-client: connection refused by localhost port {echod.v6} (tried 127.0.0.1)\n"
    )
    assert Path("/etc/hosts").read_bytes() == machineHosts


# --- faults, under both -------------------------------------------------------------------


class ThreadServer:
    """
    A tiny misbehaving TCP server on 127.0.0.1 in a thread: C{"corrupt"}
    echoes with one byte changed, C{"hangup"} reads and closes, C{"silent"}
    never even accepts.  Bounded: every wait has a timeout.
    """

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(8)
        self.socket.settimeout(0.1)
        self.port: int = self.socket.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> ThreadServer:
        if self.behaviour != "silent":
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self.socket.close()

    def _serve(self) -> None:
        deadline = time.monotonic() + RUN_TIMEOUT
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                connection, _ = self.socket.accept()
            except TimeoutError:
                continue
            with connection:
                connection.settimeout(5)
                try:
                    data = connection.recv(65536)
                    if self.behaviour == "corrupt" and data:
                        connection.sendall(data[:1] + bytes([data[1] ^ 0x01]) + data[2:])
                        connection.recv(65536)
                except OSError:
                    pass


@pytest.mark.parametrize("how", ["console", "twistd"])
@pytest.mark.parametrize(
    ("behaviour", "status", "message"),
    [
        (
            "corrupt",
            7,
            "echod-client: the echo differs from what was sent "
            "(sent 0x65, received 0x64 at byte 1)",
        ),
        (
            "hangup",
            6,
            "echod-client: the server closed the connection after 0 of 1 replies",
        ),
        ("silent", 5, "echod-client: no reply to message 1 within 0.5 s"),
    ],
)
def test_faultyServers(tmp_path: Path, how: str, behaviour: str, status: int, message: str) -> None:
    """
    Mismatch, early close and timeout: one line on stderr each, and their
    own exit statuses, the same under twistd.
    """
    with ThreadServer(behaviour) as server:
        result = RUNNERS[how](tmp_path, "127.0.0.1", str(server.port), "--timeout", "0.5")
    assert result.returncode == status, result.stderr
    assert result.stderr == message + "\n"


@pytest.mark.parametrize("how", ["console", "twistd"])
def test_refused(tmp_path: Path, how: str) -> None:
    """
    Connection refused: status 4.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = RUNNERS[how](tmp_path, "127.0.0.1", str(port))
    assert result.returncode == 4
    assert result.stderr == (
        f"echod-client: connection refused by 127.0.0.1 port {port} (tried 127.0.0.1)\n"
    )


@pytest.mark.parametrize("how", ["console", "twistd"])
def test_unresolvable(tmp_path: Path, how: str) -> None:
    """
    A name that does not resolve: status 3, quickly.
    """
    started = time.monotonic()
    result = RUNNERS[how](tmp_path, "no-such-host.invalid", "7007")
    assert result.returncode == 3
    assert result.stderr == "echod-client: no-such-host.invalid: name does not resolve\n"
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("how", ["console", "twistd"])
def test_usageError(tmp_path: Path, how: str) -> None:
    """
    A bad option value: one line, status 2, no usage dump, no traceback.
    """
    result = RUNNERS[how](tmp_path, "--count", "0")
    assert result.returncode == 2
    assert result.stderr.splitlines()[0] == (
        "echod-client: --count = 0: expected an integer from 1 to 100000000"
    )
    assert "Traceback" not in result.stderr
    assert "Usage" not in result.stdout + result.stderr


@pytest.mark.parametrize("how", ["console", "twistd"])
def test_configFileError(tmp_path: Path, how: str) -> None:
    """
    A bad config file: one line naming file, line and key; status 2.
    """
    config = tmp_path / "echod.toml"
    config.write_text("[client]\ncount = -1\n")
    result = RUNNERS[how](tmp_path, "--config", str(config))
    assert result.returncode == 2
    assert result.stderr == (
        f"echod-client: {config}: line 2: client.count = -1: "
        "expected an integer from 1 to 100000000\n"
    )


@pytest.mark.parametrize("how", ["console", "twistd"])
def test_interrupted(echod: Servers, tmp_path: Path, how: str) -> None:
    """
    Ctrl-C during a ping run prints the summary so far; the console script
    exits 130, twistd dies of the signal as it always does.
    """
    if how == "console":
        argv = [clientPath()]
    else:
        argv = [twistdPath(), "-n", "--pidfile=", f"--logfile={tmp_path}/log", "echod-client"]
    argv += ["127.0.0.1", str(echod.v4), "-n", "1000", "-i", "0.05"]
    process = subprocess.Popen(
        argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 10
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
    assert "echo statistics" in out
    assert err.startswith("echod-client: interrupted after ")


@pytest.mark.parametrize("how", ["console", "twistd"])
def test_payloadFileNamedAsTyped(tmp_path: Path, how: str) -> None:
    """
    A payload file that cannot be read is named by the option as typed.
    """
    for option in ("-f", "--file"):
        result = RUNNERS[how](tmp_path, option, "/nonexistent")
        assert result.returncode == 2
        assert result.stderr == (
            f'echod-client: {option} = "/nonexistent": '
            "cannot read the payload: no such file or directory\n"
        )


@pytest.mark.parametrize("how", ["console", "twistd"])
def test_everyProblemOfTheConfigFile(tmp_path: Path, how: str) -> None:
    config = tmp_path / "echod.toml"
    config.write_text('[client]\ncount = -1\nfamily = "ipx"\n')
    result = RUNNERS[how](tmp_path, "--config", str(config))
    assert result.returncode == 2
    assert result.stderr == (
        f"echod-client: {config}: line 2: client.count = -1: "
        "expected an integer from 1 to 100000000\n"
        f'echod-client: {config}: line 3: client.family = "ipx": '
        'expected one of "any", "ipv4", "ipv6"\n'
    )


@pytest.mark.parametrize("how", ["console", "twistd"])
def test_tcp6Endpoint(echod: Servers, tmp_path: Path, how: str) -> None:
    """
    C{--endpoint tcp6:host=\\:\\:1:port=P} reaches echod on ::1, over IPv6.
    """
    requireIPv6()
    endpoint = rf"tcp6:host=\:\:1:port={echod.v6}"
    result = RUNNERS[how](tmp_path, "--endpoint", endpoint, "-n", "2", "-i", "0")
    assert result.returncode == 0, result.stderr
    assert f"12 bytes from [::1]:{echod.v6}: seq=2" in result.stdout
    closed = rf"tcp6:host=\:\:1:port={echod.v4}"
    refused = RUNNERS[how](tmp_path, "--endpoint", closed)
    assert refused.returncode == 4
    assert refused.stderr == f"echod-client: connection refused by {closed}\n"


@pytest.mark.parametrize("how", ["console", "twistd"])
def test_unknownEndpointType(tmp_path: Path, how: str) -> None:
    result = RUNNERS[how](tmp_path, "-e", "sctp:host=192.0.2.1:port=7")
    assert result.returncode == 2
    assert result.stderr.startswith(
        'echod-client: -e = "sctp:host=192.0.2.1:port=7": unknown client endpoint type '
        "'sctp': the types here are tcp:, tcp6:, ssl:, unix:"
    )
