"""
echod behind a real HAProxy (send-proxy-v2): the original client address is
the one logged, counted per peer and checked against ACLs; half-close works
through the proxy; HAProxy's health checks are not errors.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.daemon import Twistd
from tests.environment import freePort, hasIPv6, requireTool

pytestmark = pytest.mark.e2e


def waitForPort(host: str, port: int, timeout: float = 15) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket(family) as s:
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"{host}:{port} never listened")


class Stack:
    def __init__(
        self, frontend: int, echods: list[Twistd], haproxy: subprocess.Popen[bytes]
    ) -> None:
        self.frontend = frontend
        self.echods = echods
        self.haproxy = haproxy

    def records(self) -> list[dict[str, object]]:
        out = []
        for echod in self.echods:
            for line in echod.output().splitlines():
                if line.startswith("{"):
                    out.append(json.loads(line))
        return out


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
        time.sleep(1.0)  # a few health checks
        yield Stack(frontend, echods, haproxy)
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
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        opened = [
            r
            for r in stack.records()
            if r.get("event") == "connection.opened" and str(r["peer"]).startswith("127.0.0.3:")
        ]
        if opened:
            break
        time.sleep(0.05)
    assert opened, "echod did not log the original client 127.0.0.3"
    assert str(opened[0]["proxy"]).startswith("127.0.0.1:")


def test_bothBackendsServe(stack: Stack) -> None:
    for last in range(10, 40):
        with connectFrom(f"127.0.0.{last}", stack.frontend) as s:
            s.sendall(b"spread")
            s.shutdown(socket.SHUT_WR)
            assert readAll(s) == b"spread"
    time.sleep(0.3)
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
    time.sleep(0.2)
    refused = [
        r
        for r in stack.records()
        if r.get("event") == "connection.refused"
        and str(r.get("peer", "")).startswith("127.0.0.4:")
    ]
    assert refused and refused[0]["reason"] == "acl"


def test_ipv6ClientThroughHAProxy(stack: Stack) -> None:
    if not hasIPv6():
        pytest.skip("no IPv6")
    with connectFrom("::1", stack.frontend) as s:
        s.sendall(b"six")
        s.shutdown(socket.SHUT_WR)
        assert readAll(s) == b"six"
    time.sleep(0.2)
    assert any(
        r.get("event") == "connection.opened" and str(r["peer"]).startswith("[::1]:")
        for r in stack.records()
    )


def test_healthChecksAreNotErrors(stack: Stack) -> None:
    """
    HAProxy's checks (check-send-proxy: a v2 LOCAL header) are served as the
    proxy's own connections, never logged as bad PROXY headers.
    """
    time.sleep(0.7)
    records = stack.records()
    assert not [r for r in records if r.get("reason") == "proxy_header"]
    assert any(
        r.get("event") == "connection.opened" and str(r["peer"]).startswith("127.0.0.1:")
        for r in records
    )
