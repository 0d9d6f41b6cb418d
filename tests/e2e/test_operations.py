"""
Operating echod: SIGHUP reload, running as another user, TLS, check-config.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.daemon import Twistd
from tests.environment import freePort, need, requireRoot, requireTool

pytestmark = pytest.mark.e2e


def waitForPort(port: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"port {port} never listened")


def roundTrip(s: socket.socket, payload: bytes) -> bytes:
    s.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def refused(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"anyone?")
        try:
            return s.recv(10) == b""
        except ConnectionResetError:
            return True


def test_sighupReloadsWithoutDroppingConnections(tmp_path: Path) -> None:
    """
    SIGHUP: new limits, ACLs and log format apply; an open connection keeps
    echoing; a bad file is logged and the running config stays; a listen
    change is reported as needing a restart.
    """
    port = freePort()
    conf = tmp_path / "echod.toml"
    listen = f"listen = ['tcp:{port}:interface=127.0.0.1']\n"
    conf.write_text(f"[server]\n{listen}")
    with Twistd(tmp_path, ["--config", "echod.toml"]) as daemon:
        waitForPort(port)
        kept = socket.create_connection(("127.0.0.1", port), timeout=10)
        assert roundTrip(kept, b"before") == b"before"

        conf.write_text(f"[server]\n{listen}deny = ['127.0.0.0/8']\n[log]\nformat = 'json'\n")
        daemon.signal(signal.SIGHUP)
        daemon.waitFor('"event": "config.reloaded"')
        assert roundTrip(kept, b"after reload") == b"after reload"
        assert refused(port)

        conf.write_text("[server]\nlisten = [\n")
        daemon.signal(signal.SIGHUP)
        daemon.waitFor("reload failed, keeping the running configuration")
        assert refused(port)
        assert roundTrip(kept, b"still") == b"still"

        other = freePort()
        conf.write_text(f"[server]\nlisten = ['tcp:{other}:interface=127.0.0.1']\n")
        daemon.signal(signal.SIGHUP)
        daemon.waitFor("server.listen changed: that takes a restart")
        assert not refused(port)
        assert roundTrip(kept, b"end") == b"end"
        kept.close()
        daemon.signal(signal.SIGTERM)
        assert daemon.wait() == 0
    failed = [
        json.loads(line)
        for line in daemon.output().splitlines()
        if '"config.reload_failed"' in line
    ]
    assert failed[0]["level"] == "error"
    assert f"{conf}: line 2: invalid TOML at the end of the file" in failed[0]["error"]


def test_configUserAfterBindingPort7(tmp_path: Path) -> None:
    """
    [server] user: twistd binds port 7 as root, then runs as nobody.
    """
    requireRoot()
    with socket.socket() as probe:
        need(probe.connect_ex(("127.0.0.1", 7)) != 0, "port 7 is in use")
    conf = tmp_path / "echod.toml"
    conf.write_text("[server]\nlisten = ['tcp:7:interface=127.0.0.1']\nuser = 'nobody'\n")
    os.chmod(tmp_path, 0o755)
    with Twistd(tmp_path, ["--config", str(conf)]) as daemon:
        waitForPort(7)
        with socket.create_connection(("127.0.0.1", 7), timeout=10) as s:
            assert roundTrip(s, b"seven") == b"seven"
        status = Path(f"/proc/{daemon.pid}/status").read_text()
        uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
        nobody = 65534
        assert uids == [str(nobody)] * 4
        daemon.signal(signal.SIGTERM)
        assert daemon.wait() == 0


def test_unknownUserIsOneLine(tmp_path: Path) -> None:
    from tests.daemon import twistdPath

    conf = tmp_path / "echod.toml"
    conf.write_text("[server]\nuser = 'no-such-user-here'\n")
    result = subprocess.run(
        [twistdPath(), "-n", "echod", "--config", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr == (
        f'echod: {conf}: line 2: server.user = "no-such-user-here": no such user\n'
    )


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    openssl = requireTool("openssl")
    directory = tmp_path_factory.mktemp("tls")
    key, cert = directory / "key.pem", directory / "cert.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return key, cert


def test_tlsEcho(tmp_path: Path, certificate: tuple[Path, Path]) -> None:
    """
    An ssl: listener echoes over TLS, checked by Python's TLS client
    (verifying the certificate) and by openssl s_client.
    """
    key, cert = certificate
    port = freePort()
    listen = f"ssl:port={port}:interface=127.0.0.1:privateKey={key}:certKey={cert}"
    with Twistd(tmp_path, ["--listen", listen]) as daemon:
        waitForPort(port)
        context = ssl.create_default_context(cafile=str(cert))
        payload = os.urandom(512 * 1024)
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        with context.wrap_socket(raw, server_hostname="localhost") as s:
            assert s.version() in ("TLSv1.2", "TLSv1.3")
            got = b""
            for offset in range(0, len(payload), 16384):
                got += roundTrip(s, payload[offset : offset + 16384])
            assert got == payload
        openssl = requireTool("openssl")
        # -quiet implies -ign_eof: s_client waits; read the echo, then quit.
        client = subprocess.Popen(
            [
                openssl,
                "s_client",
                "-connect",
                f"127.0.0.1:{port}",
                "-quiet",
                "-CAfile",
                str(cert),
                "-verify_return_error",
                "-servername",
                "localhost",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        try:
            assert client.stdin is not None and client.stdout is not None
            client.stdin.write(b"Hello over TLS\n")
            client.stdin.flush()
            assert client.stdout.readline() == b"Hello over TLS\n"
        finally:
            client.kill()
            client.wait(10)
        daemon.waitFor("(?s)bytes echoed.*bytes echoed")


def test_checkConfigScript(tmp_path: Path) -> None:
    """
    The installed echod command validates files for deployment pipelines.
    """
    script = Path(sys.executable).parent / "echod"
    need(script.exists(), "the echod console script is not installed beside python")
    good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
    good.write_text("[server]\nidle_timeout = 30\n")
    bad.write_text("[log]\nlevel = 'loud'\n")
    ok = subprocess.run([script, "check-config", good], capture_output=True, text=True, check=False)
    assert ok.returncode == 0 and ok.stdout == f"{good}: OK (1 stream listener(s))\n"
    ko = subprocess.run([script, "check-config", bad], capture_output=True, text=True, check=False)
    assert ko.returncode == 1
    assert ko.stderr == (
        f'echod: {bad}: line 2: log.level = "loud": expected one of "debug", "info", '
        '"warn", "error", "critical"\n'
    )
