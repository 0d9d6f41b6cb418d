"""
echod behind a real HAProxy (send-proxy-v2): the original client address is
the one logged, counted per peer and checked against ACLs; half-close works
through the proxy; HAProxy's health checks are not errors.  Clients that
reach the PROXY listener directly, from addresses that are not trusted
proxies, are refused whatever header they send.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.daemon import Twistd
from tests.environment import freePort, hasIPv6, requireTool
from tests.testing import waitUntil

pytestmark = pytest.mark.e2e


def waitForPort(host: str, port: int, timeout: float = 15) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET

    def listening() -> bool:
        with socket.socket(family) as s:
            return s.connect_ex((host, port)) == 0

    waitUntil(listening, timeout, what=f"{host}:{port} listening")


class Stack:
    def __init__(
        self,
        frontend: int,
        backends: list[int],
        echods: list[Twistd],
        haproxy: subprocess.Popen[bytes],
        statsSocket: Path,
    ) -> None:
        self.statsSocket = statsSocket
        self.frontend = frontend
        self.backends = backends
        self.echods = echods
        self.haproxy = haproxy

    def records(self) -> list[dict[str, object]]:
        out = []
        for echod in self.echods:
            for line in echod.output().splitlines():
                if line.startswith("{"):
                    out.append(json.loads(line))
        return out

    def waitForRecords(
        self, match: Callable[[dict[str, object]], bool], count: int = 1, timeout: float = 10
    ) -> list[dict[str, object]]:
        """
        The log records that C{match}, once there are at least C{count}.
        """
        found: list[dict[str, object]] = []

        def enough() -> bool:
            found[:] = [r for r in self.records() if match(r)]
            return len(found) >= count

        with contextlib.suppress(AssertionError):  # the caller asserts on what was found
            waitUntil(enough, timeout)
        return found

    def checkStatuses(self) -> dict[str, str]:
        """
        HAProxy's last health-check status of each backend server (C{L4OK},
        C{L7OK}, ...), from its stats socket; C{show stat} is CSV.
        """
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(self.statsSocket))
            s.sendall(b"show stat\n")
            text = readAll(s).decode()
        header, *rows = text.lstrip("# ").splitlines()
        names = header.split(",")
        statuses = {}
        for row in rows:
            fields = dict(zip(names, row.split(","), strict=False))
            if fields.get("pxname") == "be" and fields.get("svname") not in ("BACKEND", None):
                statuses[fields["svname"]] = f"{fields.get('status')} {fields.get('check_status')}"
        return statuses

    def allUp(self) -> bool:
        statuses = self.checkStatuses()
        return len(statuses) == len(self.backends) and all(
            status.startswith("UP ") for status in statuses.values()
        )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    haproxyPath = requireTool("haproxy")
    directory = tmp_path_factory.mktemp("haproxy")
    backends = [freePort(), freePort()]
    echods = []
    for index, port in enumerate(backends):
        conf = directory / f"echod{index}.toml"
        conf.write_text(
            f"[server]\nlisten = ['haproxy:tcp:{port}:interface=127.0.0.1']\n"
            "max_connections_per_peer = 1\ndeny = ['127.0.0.4/32']\n"
            # HAProxy connects from 127.0.0.1; other 127.x clients are not proxies.
            "trusted_proxies = ['127.0.0.1/32', '::1/128']\n"
            '[log]\nformat = "json"\n'
        )
        workdir = directory / f"e{index}"
        workdir.mkdir()
        echods.append(Twistd(workdir, ["--config", str(conf)]).start())
    for port in backends:
        waitForPort("127.0.0.1", port)
    frontend = freePort()
    bind6 = f"    bind [::1]:{frontend}\n" if hasIPv6() else ""
    cfg = directory / "haproxy.cfg"
    cfg.write_text(
        "global\n    maxconn 200\n"
        f"    stats socket {directory / 'stats.sock'}\n"
        "defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 30s\n"
        "    timeout server 30s\n"
        f"frontend fe\n    bind 127.0.0.1:{frontend}\n{bind6}    default_backend be\n"
        "backend be\n    balance source\n"
        + "".join(
            f"    server e{i} 127.0.0.1:{p} send-proxy-v2 check check-send-proxy inter 300ms\n"
            for i, p in enumerate(backends)
        )
    )
    log = open(directory / "haproxy.log", "wb")  # noqa: SIM115
    haproxy = subprocess.Popen([haproxyPath, "-db", "-f", str(cfg)], stdout=log, stderr=log)
    try:
        waitForPort("127.0.0.1", frontend)
        stack = Stack(frontend, backends, echods, haproxy, directory / "stats.sock")
        # A few health checks: HAProxy has seen both backends up.
        waitUntil(stack.allUp, what="both backends up by HAProxy's health checks")
        yield stack
    finally:
        haproxy.terminate()
        haproxy.wait(10)
        log.close()
        for echod in echods:
            echod.stop()


def connectFrom(source: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in source else socket.AF_INET
    s = socket.socket(family)
    s.settimeout(10)
    s.bind((source, 0))
    s.connect((source if family == socket.AF_INET6 else "127.0.0.1", port))
    return s


def readAll(s: socket.socket) -> bytes:
    chunks = []
    try:
        while chunk := s.recv(262144):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def test_echoWithHalfCloseThroughHAProxy(stack: Stack) -> None:
    """
    1 MiB sent, the client's sending side shut down: all of it comes back
    through HAProxy (echod's PROXY handling keeps half-close).
    """
    payload = os.urandom(1024 * 1024)
    with connectFrom("127.0.0.2", stack.frontend) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        assert readAll(s) == payload


def test_originalClientIsLogged(stack: Stack) -> None:
    with connectFrom("127.0.0.3", stack.frontend) as s:
        s.sendall(b"who am I")
        s.shutdown(socket.SHUT_WR)
        assert readAll(s) == b"who am I"
    opened = stack.waitForRecords(
        lambda r: r.get("event") == "connection.opened" and str(r["peer"]).startswith("127.0.0.3:"),
        timeout=5,
    )
    assert opened, "echod did not log the original client 127.0.0.3"
    assert str(opened[0]["proxy"]).startswith("127.0.0.1:")


def test_bothBackendsServe(stack: Stack) -> None:
    for last in range(10, 40):
        with connectFrom(f"127.0.0.{last}", stack.frontend) as s:
            s.sendall(b"spread")
            s.shutdown(socket.SHUT_WR)
            assert readAll(s) == b"spread"
    waitUntil(
        lambda: all("connection.opened" in echod.output() for echod in stack.echods), timeout=5
    )
    for echod in stack.echods:
        assert "127.0.0." in echod.output() and "connection.opened" in echod.output()


def test_perPeerLimitAppliesToOriginalClient(stack: Stack) -> None:
    """
    max_connections_per_peer = 1 counts the client behind HAProxy: its second
    connection is refused, while another client is served at the same time,
    though all arrive from HAProxy's one address.
    """
    first = connectFrom("127.0.0.5", stack.frontend)
    first.sendall(b"one")
    assert first.recv(10) == b"one"
    second = connectFrom("127.0.0.5", stack.frontend)
    second.sendall(b"two")
    assert readAll(second) == b""
    other = connectFrom("127.0.0.6", stack.frontend)
    other.sendall(b"three")
    assert other.recv(10) == b"three"
    for s in (first, second, other):
        s.close()
    refused = [
        r
        for r in stack.records()
        if r.get("event") == "connection.refused"
        and str(r.get("peer", "")).startswith("127.0.0.5:")
    ]
    assert refused and refused[0]["reason"] == "max_connections_per_peer"


def test_aclAppliesToOriginalClient(stack: Stack) -> None:
    with connectFrom("127.0.0.4", stack.frontend) as s:
        s.sendall(b"let me in")
        assert readAll(s) == b""
    refused = stack.waitForRecords(
        lambda r: (
            r.get("event") == "connection.refused"
            and str(r.get("peer", "")).startswith("127.0.0.4:")
        ),
        timeout=5,
    )
    assert refused and refused[0]["reason"] == "acl"


def test_ipv6ClientThroughHAProxy(stack: Stack) -> None:
    if not hasIPv6():
        pytest.skip("no IPv6")
    with connectFrom("::1", stack.frontend) as s:
        s.sendall(b"six")
        s.shutdown(socket.SHUT_WR)
        assert readAll(s) == b"six"
    assert stack.waitForRecords(
        lambda r: r.get("event") == "connection.opened" and str(r["peer"]).startswith("[::1]:"),
        timeout=5,
    )


def test_healthChecksAreNotErrors(stack: Stack) -> None:
    """
    HAProxy's checks (check-send-proxy: a v2 LOCAL header) are served as the
    proxy's own connections, never logged as bad PROXY headers.
    """
    # The fixture waited for both backends to be up: checks were served.
    assert stack.allUp(), stack.checkStatuses()
    records = stack.records()
    assert not [r for r in records if r.get("reason") == "proxy_header"]
    assert any(
        r.get("event") == "connection.opened" and str(r["peer"]).startswith("127.0.0.1:")
        for r in records
    )


def spoofedHeader(version: int, claimed: str) -> bytes:
    """
    The header a direct client writes to pass as C{claimed}.
    """
    if version == 1:
        return f"PROXY TCP4 {claimed} 127.0.0.1 40404 7\r\n".encode()
    return (
        b"\r\n\r\n\x00\r\nQUIT\n"
        + struct.pack("!BBH", 0x21, 0x11, 12)
        + socket.inet_aton(claimed)
        + socket.inet_aton("127.0.0.1")
        + struct.pack("!HH", 40404, 7)
    )


@pytest.mark.parametrize("version", [1, 2])
def test_directClientCannotSpoofItsAddress(stack: Stack, version: int) -> None:
    """
    A client from a denied address that reaches the PROXY listener directly
    and claims 198.51.100.7 is refused, unserved, as untrusted_proxy: it is
    never admitted or logged as the address it claims.
    """
    port = stack.backends[0]
    with connectFrom("127.0.0.4", port) as s:
        s.sendall(spoofedHeader(version, "198.51.100.7") + b"let me in")
        assert readAll(s) == b""
    refused = stack.waitForRecords(
        lambda r: (
            r.get("reason") == "untrusted_proxy" and str(r.get("peer", "")).startswith("127.0.0.4:")
        )
    )
    assert refused, "no untrusted_proxy refusal logged"
    assert not [r for r in stack.records() if "198.51.100.7" in str(r.get("peer", ""))]


def test_spoofedAddressesCannotDodgeThePerPeerCap(stack: Stack) -> None:
    """
    300 connections from one untrusted host, each claiming another address,
    under max_connections_per_peer = 1: none is served.
    """
    port = stack.backends[1]
    served = 0
    for n in range(300):
        with connectFrom("127.0.0.9", port) as s:
            try:
                s.sendall(spoofedHeader(1 + n % 2, f"198.51.{n // 250}.{n % 250 + 1}") + b"x")
                served += readAll(s) != b""
            except (BrokenPipeError, ConnectionResetError):
                pass
    assert served == 0


def test_spoofersCannotLockOutTheGenuineClient(stack: Stack) -> None:
    """
    Direct connections claiming 127.0.0.8 used to take 127.0.0.8's only
    slot (max_connections_per_peer = 1), so that the genuine 127.0.0.8,
    coming through HAProxy, was refused.  Now they are refused and the
    genuine client is served.
    """
    spoofers = []
    for port in stack.backends:
        s = connectFrom("127.0.0.7", port)
        with contextlib.suppress(OSError):
            s.sendall(spoofedHeader(2, "127.0.0.8"))
        spoofers.append(s)
    with connectFrom("127.0.0.8", stack.frontend) as genuine:
        genuine.sendall(b"genuine")
        assert genuine.recv(10) == b"genuine"
    for s in spoofers:
        assert readAll(s) == b""
        s.close()
