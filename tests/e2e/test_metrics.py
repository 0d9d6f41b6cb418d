"""
Metrics and the health check of a real C{twistd -n echod}: real clients, real
refusals and drops, the exposition read back with prometheus_client's parser.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.daemon import Twistd
from tests.environment import freePort
from tests.testing import Samples, get, roundTrip, scrape, value

pytestmark = pytest.mark.e2e


def scrapeUntil(port: int, ready: Callable[[Samples], bool], timeout: float = 5) -> Samples:
    """
    Scrape until C{ready} holds (the daemon handles what a client did in
    its own time), and return that scrape; the last one if time runs out.
    """
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(port)
        if ready(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.05)


def refusedAtOnce(port: int, source: str = "127.0.0.1") -> None:
    """
    Connect from C{source}, and see the server close without echoing.
    """
    with socket.socket() as s:
        s.settimeout(5)
        s.bind((source, 0))
        s.connect(("127.0.0.1", port))
        assert s.recv(10) == b""


class Talker(threading.Thread):
    """
    Keeps a connection busy (a byte every 50 ms, echoes read back) until the
    server closes it, so that a drain lasts until half the shutdown timeout.
    """

    def __init__(self, connection: socket.socket) -> None:
        super().__init__(daemon=True)
        self.connection = connection
        self.closedByServer = threading.Event()

    def run(self) -> None:
        self.connection.settimeout(0.05)
        try:
            while True:
                self.connection.sendall(b".")
                try:
                    if self.connection.recv(4096) == b"":
                        break
                except TimeoutError:
                    pass
        except OSError:
            pass
        self.closedByServer.set()
        self.connection.close()


def test_metricsAndHealthOfARealDaemon(tmp_path: Path) -> None:
    """
    Connections (admitted, refused by max_connections and by the ACL), bytes,
    UDP echoes and drops all show in /metrics; /healthz says ok; from SIGTERM
    on, while a busy connection drains, /healthz says 503 and /metrics still
    answers, with echod_up 0.
    """
    port, udpPort, metricsPort = freePort(), freePort(socket.AF_INET, socket.SOCK_DGRAM), freePort()
    blocked = freePort(socket.AF_INET, socket.SOCK_DGRAM)
    conf = tmp_path / "echod.toml"
    conf.write_text(
        f"[server]\nlisten = ['tcp:{port}:interface=127.0.0.1']\n"
        "max_connections = 2\ndeny = ['127.0.0.2/32']\nshutdown_timeout = 4\n"
        f"[udp]\nlisten = ['udp:port={udpPort}:interface=127.0.0.1']\n"
        f'blocked_source_ports = ["0-1023", {blocked}]\n'
        f"[metrics]\nlisten = 'tcp:{metricsPort}:interface=127.0.0.1'\n"
    )
    with Twistd(tmp_path, ["--config", str(conf)]) as daemon:
        daemon.waitFor(rf"metrics listening on 127\.0\.0\.1:{metricsPort} ")
        assert get(f"http://127.0.0.1:{metricsPort}/healthz") == (200, b"ok\n")

        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            roundTrip(s, b"hello")
        # Closed on the server's side too before the next two, or one of them
        # would be over max_connections.
        scrapeUntil(metricsPort, lambda m: value(m, "echod_connections_open") == 0)
        held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(2)]
        for s in held:
            roundTrip(s, b"ab")
        refusedAtOnce(port)
        refusedAtOnce(port, source="127.0.0.2")

        sources = [("127.0.0.1", 0)] * 3 + [("127.0.0.1", blocked)]
        if os.geteuid() == 0:
            sources.append(("127.0.0.1", 19))
        for source in sources:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.bind(source)
                u.sendto(b"datagram", ("127.0.0.1", udpPort))
                if source[1] == 0:
                    u.settimeout(5)
                    assert u.recv(100) == b"datagram"

        samples = scrapeUntil(
            metricsPort,
            lambda m: (
                value(m, "echod_udp_datagrams_received_total") == len(sources)
                and value(m, "echod_connections_open") == 2
            ),
        )
        assert value(samples, "echod_up") == 1
        assert value(samples, "echod_connections_total") == 3
        assert value(samples, "echod_connections_open") == 2
        assert value(samples, "echod_connections_max") == 2
        assert value(samples, "echod_connections_refused_total", reason="max_connections") == 1
        assert value(samples, "echod_connections_refused_total", reason="acl") == 1
        assert value(samples, "echod_bytes_received_total") == 9
        assert value(samples, "echod_bytes_sent_total") == 9
        assert value(samples, "echod_udp_datagrams_received_total") == len(sources)
        assert value(samples, "echod_udp_datagrams_echoed_total") == 3
        assert value(samples, "echod_udp_bytes_echoed_total") == 3 * len(b"datagram")
        assert value(samples, "echod_udp_datagrams_dropped_total", reason="source_port") == (
            len(sources) - 3
        )
        assert value(samples, "process_open_fds") > 0

        held[1].close()
        talker = Talker(held[0])
        talker.start()
        daemon.signal(signal.SIGTERM)
        daemon.waitFor("draining 1 connections")
        assert get(f"http://127.0.0.1:{metricsPort}/healthz") == (503, b"stopping\n")
        draining = scrape(metricsPort)
        assert value(draining, "echod_up") == 0
        assert value(draining, "echod_connections_open") == 1
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2)

        assert talker.closedByServer.wait(10)
        assert daemon.wait(15) == 0
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", metricsPort), timeout=2)
    out = daemon.output()
    assert "Traceback" not in out
    assert "all connections closed" in out


def test_busyMetricsPortIsOneLine(tmp_path: Path) -> None:
    """
    A metrics port already in use stops start-up like any listener: one
    line, status 1.
    """
    port = freePort()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        conf = tmp_path / "echod.toml"
        conf.write_text(
            f"[server]\nlisten = ['tcp:{port}:interface=127.0.0.1']\n"
            f"[metrics]\nlisten = 'tcp:{busy}:interface=127.0.0.1'\n"
        )
        with Twistd(tmp_path, ["--config", str(conf)]) as daemon:
            assert daemon.wait(15) == 1
    assert f"echod: cannot listen on tcp:{busy}:interface=127.0.0.1: address already in use" in (
        daemon.output()
    )
    assert "Traceback" not in daemon.output()
