"""
Privileged ports, then no privilege: twistd opens port 7 as root and runs
echod as the user and group of C{--uid}/C{--gid}.
"""

from __future__ import annotations

import grp
import os
import pwd
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.daemon import Twistd
from tests.environment import freePort, need, requireRoot, requireTool
from tests.testing import (
    echo,
    listeningSockets,
    runTwistd,
    scrape,
    udpEcho,
    value,
    waitUntil,
    workerPids,
)

pytestmark = [pytest.mark.e2e, pytest.mark.root]


def portSevenIsFree() -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", 7))
            except OSError:
                return False
    return True


def procStatus(pid: int) -> dict[str, list[str]]:
    status = Path(f"/proc/{pid}/status").read_text()
    return {k: v.split() for k, _, v in (line.partition(":") for line in status.splitlines())}


def test_bindsPortSevenThenRunsAsNobody(tmp_path: Path) -> None:
    """
    twistd --uid nobody --gid nogroup: TCP and UDP port 7 and the metrics
    port are opened as root; then real, effective, saved and filesystem ids
    are nobody/nogroup, no capability is left, and everything still serves.
    """
    requireRoot()
    need(portSevenIsFree(), "port 7 is in use on 127.0.0.1")
    uid, gid = pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid
    metricsPort = freePort()
    conf = tmp_path / "echod.toml"
    conf.write_text(
        "[server]\nlisten = ['tcp:7:interface=127.0.0.1']\n"
        "[udp]\nlisten = ['udp:port=7:interface=127.0.0.1']\n"
        f"[metrics]\nlisten = 'tcp:{metricsPort}:interface=127.0.0.1'\n"
    )
    twistdArgs = ["-n", "--pidfile=", "--uid", "nobody", "--gid", "nogroup"]
    with Twistd(tmp_path, ["--config", str(conf)], twistdArgs=twistdArgs) as daemon:
        try:
            daemon.waitFor("metrics listening on")
        except AssertionError:
            # Another test on this machine may have taken port 7 meanwhile.
            need("address already in use" not in daemon.output(), "port 7 was taken")
            raise
        status = procStatus(daemon.pid)
        assert status["Uid"] == [str(uid)] * 4
        assert status["Gid"] == [str(gid)] * 4
        assert "0" not in status["Groups"]
        assert int(status["CapEff"][0], 16) == 0
        assert int(status["CapPrm"][0], 16) == 0

        assert echo("127.0.0.1", 7, b"as nobody") == b"as nobody"
        assert udpEcho("127.0.0.1", 7, b"as nobody, udp") == b"as nobody, udp"
        samples = scrape(metricsPort)
        assert value(samples, "echod_up") == 1
        assert value(samples, "echod_connections_total") == 1
        assert value(samples, "process_open_fds") > 0

        daemon.signal(signal.SIGTERM)
        assert daemon.wait() == 0
    out = daemon.output()
    assert f"set uid/gid {uid}/{gid}" in out
    assert "Unable to write to plugin cache" not in out
    assert "Traceback" not in out


def nobodyCanRun(path: str) -> bool:
    setpriv = requireTool("setpriv")
    done = subprocess.run(
        [setpriv, "--reuid", "nobody", "--regid", "nogroup", "--clear-groups", "test", "-x", path],
        check=False,
    )
    return done.returncode == 0


# Where the interpreter lives under /root (pyenv, as on this project's
# machines), nobody cannot reach it: in a mount namespace of its own, the test
# lays a world-readable /root over the real one with only .pyenv in it.
REACHABLE_ROOT = """set -e
mkdir -p "$1/pyenv"
mount --bind /root/.pyenv "$1/pyenv"
mount -t tmpfs -o mode=755 tmpfs /root
mkdir /root/.pyenv
mount --bind "$1/pyenv" /root/.pyenv
shift
exec "$@"
"""


def test_workersOnPortSevenAsNobody(tmp_path: Path) -> None:
    """
    workers = 2 under --uid nobody: the main process binds port 7 (TCP and
    UDP) and a socket per worker as root, then every process runs as
    nobody, serving a config file only root can read (the main process
    hands it to them); a worker that dies twice has its socket taken out of
    the group and put back for its restart, and its UDP sources steered to
    the other worker and back, without the privilege the bind needed.
    """
    requireRoot()
    need(portSevenIsFree(), "port 7 is in use on 127.0.0.1")
    uid = pwd.getpwnam("nobody").pw_uid
    conf = tmp_path / "echod.toml"
    conf.write_text(
        "[server]\nlisten = ['tcp:7:interface=127.0.0.1']\nworkers = 2\n"
        "[udp]\nlisten = ['udp:port=7:interface=127.0.0.1']\n"
    )
    conf.chmod(0o600)
    twistdArgs = ["-n", "--pidfile=", "--uid", "nobody", "--gid", "nogroup"]
    daemon = Twistd(tmp_path, ["--config", str(conf)], twistdArgs=twistdArgs)
    python = str(Path(sys.executable).resolve())
    if not nobodyCanRun(python):
        need(python.startswith("/root/.pyenv/"), f"nobody cannot run {python}")
        unshare = requireTool("unshare")
        daemon.argv = [unshare, "-m", "sh", "-c", REACHABLE_ROOT, "sh", str(tmp_path), *daemon.argv]
    with daemon:
        waitUntil(lambda: len(workerPids(daemon.pid)) == 2 and listeningSockets(7) == 2)
        daemon.waitFor("(?s)worker-1 serving.*worker-2 serving|worker-2 serving.*worker-1 serving")
        for pid in [daemon.pid, *workerPids(daemon.pid)]:
            assert procStatus(pid)["Uid"] == [str(uid)] * 4
        assert echo("127.0.0.1", 7, b"worker as nobody") == b"worker as nobody"
        assert udpEcho("127.0.0.1", 7, b"UDP as nobody") == b"UDP as nobody"

        first = workerPids(daemon.pid)
        os.kill(first[0], signal.SIGKILL)
        waitUntil(lambda: len(workerPids(daemon.pid)) == 2 and workerPids(daemon.pid) != first)
        (restarted,) = set(workerPids(daemon.pid)) - set(first)
        os.kill(restarted, signal.SIGKILL)
        waitUntil(lambda: listeningSockets(7) == 1, timeout=5)
        assert echo("127.0.0.1", 7, b"one worker left") == b"one worker left"
        daemon.waitFor("UDP datagrams steered to 1 of 2 workers")
        assert udpEcho("127.0.0.1", 7, b"one worker left") == b"one worker left"
        waitUntil(lambda: len(workerPids(daemon.pid)) == 2 and listeningSockets(7) == 2, 20)
        for _ in range(20):
            assert echo("127.0.0.1", 7, b"both again") == b"both again"
        daemon.waitFor("UDP datagrams steered to 2 of 2 workers")
        assert "cannot" not in daemon.output()
        assert "refused SO_ATTACH_REUSEPORT_CBPF" not in daemon.output()
        daemon.signal(signal.SIGTERM)
        assert daemon.wait() == 0


def test_workersThatCouldNotRunAreRefusedAtStart(tmp_path: Path) -> None:
    """
    If the user echod switches to cannot run its Python, every worker would
    fail to start, over and over, behind an echod that looks up: echod
    refuses to start instead, in one line.
    """
    requireRoot()
    python = str(Path(sys.executable).resolve())
    need(not nobodyCanRun(python), f"nobody can run {python}: nothing to refuse")
    port = freePort()
    conf = tmp_path / "echod.toml"
    conf.write_text(f"[server]\nlisten = ['tcp:{port}:interface=127.0.0.1']\nworkers = 2\n")
    asNobody = ["-n", "--pidfile=", "--uid", "nobody", "--gid", "nogroup"]
    done = runTwistd([*asNobody, "echod", "--config", str(conf)], tmp_path)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1
    assert "the workers cannot start: uid 65534" in done.stderr
    assert "or use workers = 1" in done.stderr
