"""
Privileged ports, then no privilege: twistd opens port 7 as root and runs
echod as the user and group of C{--uid}/C{--gid}.
"""

from __future__ import annotations

import grp
import pwd
import signal
import socket
from pathlib import Path

import pytest

from tests.daemon import Twistd
from tests.e2e.test_metrics import scrape, value
from tests.e2e.test_systemd import udpEcho
from tests.e2e.test_twistd import echo
from tests.environment import freePort, need, requireRoot

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
