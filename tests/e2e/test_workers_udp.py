"""
[server] workers = N serving UDP listeners, against a real twistd: a socket
per worker, each source address steered to one worker (per-source limits
exact), global limits divided among the workers, re-steering while a worker
is down, reload, totals across restarts, and a clean stop.

Every address of 127.0.0.0/8 is the loopback's: the tests send from many
source addresses without root.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from echod.config import load
from echod.server.workers.datagrams import steeredIndex
from echod.server.workers.wire import configLine
from tests.daemon import Twistd
from tests.e2e.test_workers import charactersRead, metrics, records, workerLabels
from tests.environment import freePort, requireTool
from tests.testing import udpEcho, waitUntil, workerPids

pytestmark = pytest.mark.e2e

SOURCES = [f"127.0.0.{i}" for i in range(2, 51)]


@contextmanager
def udpWorkers(
    directory: Path, udp: str = "", listen: list[str] | None = None
) -> Iterator[tuple[Twistd, int, int]]:
    """
    echod with two workers on a UDP listener of 127.0.0.1 (C{udp} adds keys
    to C{[udp]}) and the stream listeners C{listen} (none by default),
    metrics on, JSON logs; both workers started.  Yields the daemon, the
    UDP port and the metrics port.
    """
    port, metricsPort = freePort(kind=socket.SOCK_DGRAM), freePort()
    streams = ", ".join(f"'{d}'" for d in listen or [])
    text = (
        f"[server]\nlisten = [{streams}]\nworkers = 2\nshutdown_timeout = 5\n"
        f"[udp]\nlisten = ['udp:port={port}:interface=127.0.0.1']\n{udp}"
        f"[log]\nformat = 'json'\n"
        f"[metrics]\nlisten = 'tcp:{metricsPort}:interface=127.0.0.1'\n"
    )
    conf = directory / "echod.toml"
    conf.write_text(text)
    with Twistd(directory, ["--config", str(conf)]) as daemon:
        waitUntil(
            lambda: (
                len(workerPids(daemon.pid)) == 2 and daemon.output().count('"worker.started"') == 2
            )
        )
        yield daemon, port, metricsPort


def worker(source: str) -> str:
    """
    The worker the steering program sends C{source}'s datagrams to (rank
    0 is worker-1's socket).
    """
    return f"worker-{steeredIndex(source, 2) + 1}"


class Senders:
    """
    A socket per (source address, port): send datagrams and count the
    echoes that came back.
    """

    def __init__(self, sources: list[str], perSource: int = 1) -> None:
        self.sockets: list[socket.socket] = []
        for source in sources:
            for _ in range(perSource):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.bind((source, 0))
                s.setblocking(False)
                self.sockets.append(s)

    def __enter__(self) -> Senders:
        return self

    def __exit__(self, *exc: object) -> None:
        for s in self.sockets:
            s.close()

    def send(self, port: int, each: int = 1, payload: bytes = b"echo?") -> None:
        for _ in range(each):
            for s in self.sockets:
                s.sendto(payload, ("127.0.0.1", port))

    def echoes(self) -> int:
        """
        The echoes waiting now, read.
        """
        count = 0
        for s in self.sockets:
            while True:
                try:
                    s.recv(100)
                except BlockingIOError:
                    break
                count += 1
        return count

    def allEchoed(self, timeout: float = 10) -> bool:
        """
        Whether every socket gets its echo within C{timeout} (one each).
        """
        waiting = set(self.sockets)
        deadline = time.monotonic() + timeout
        while waiting and time.monotonic() < deadline:
            readable, _, _ = select.select(list(waiting), [], [], 0.2)
            for s in readable:
                s.recv(100)
                waiting.discard(s)
        return not waiting


def udp(values: dict[str, float], name: str, **labels: str) -> float:
    key = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    return values.get(f"echod_udp_{name}{{{key}}}" if key else f"echod_udp_{name}", 0)


def test_eachSourceIsServedByItsWorker(tmp_path: Path) -> None:
    """
    UDP listeners only, two workers: every source address gets its echo,
    from the worker the steering program names for it, and both workers
    serve (each one's count is that of its sources, exactly).  The TCP
    families stay out of the metrics.
    """
    with udpWorkers(tmp_path) as (daemon, port, metricsPort), Senders(SOURCES, 2) as senders:
        senders.send(port)
        assert senders.allEchoed()
        expected = {
            name: 2 * [worker(s) for s in SOURCES].count(name) for name in ("worker-1", "worker-2")
        }
        assert all(expected.values())
        waitUntil(
            lambda: workerLabels(metrics(metricsPort), "udp_datagrams_received_total") == expected
        )
        values = metrics(metricsPort)
        assert udp(values, "datagrams_received_total") == len(SOURCES) * 2
        assert udp(values, "datagrams_echoed_total") == len(SOURCES) * 2
        assert "echod_connections_total" not in values
        assert values["echod_up"] == 1
        started = [r for r in records(daemon) if r.get("event") == "listener.started"]
        assert "steered by source address" in str(started[0]["message"])


def test_perSourceLimitIsExactAcrossWorkers(tmp_path: Path) -> None:
    """
    200 datagrams from one address over 50 source ports, with a bucket of 50
    per source (1 per second, a burst of 50 s): one worker gets them all
    and echoes its 50 (and the few a second adds), not the 100 that two
    workers with a bucket each would.
    """
    limits = (
        "source_packets_per_second = 1\nsource_bytes_per_second = 0\nburst_seconds = 50\n"
        "global_packets_per_second = 0\nglobal_bytes_per_second = 0\n"
    )
    with (
        udpWorkers(tmp_path, udp=limits) as (_, port, metricsPort),
        Senders(["127.0.0.7"], 50) as senders,
    ):
        senders.send(port, each=4)
        waitUntil(lambda: udp(metrics(metricsPort), "datagrams_received_total") == 200)
        values = metrics(metricsPort)
        echoed = udp(values, "datagrams_echoed_total")
        assert 50 <= echoed <= 70, echoed
        assert udp(values, "datagrams_dropped_total", reason="rate_source") == 200 - echoed
        assert workerLabels(values, "udp_datagrams_received_total")[worker("127.0.0.7")] == 200
        assert senders.echoes() == echoed


def test_globalLimitIsDividedAmongWorkers(tmp_path: Path) -> None:
    """
    A global bucket of 100 (2 per second, a burst of 50 s) with two workers:
    each holds 50.  20 sources of each worker send 10 datagrams each (400
    in all, 200 per worker): about 100 are echoed in all, 50 by each (and
    the few a second adds), not 200.
    """
    limits = (
        "source_packets_per_second = 0\nsource_bytes_per_second = 0\nburst_seconds = 50\n"
        "global_packets_per_second = 2\nglobal_bytes_per_second = 0\n"
    )
    candidates = [f"127.0.{i}.{j}" for i in range(1, 4) for j in range(1, 60)]
    sources = [s for s in candidates if worker(s) == "worker-1"][:20]
    sources += [s for s in candidates if worker(s) == "worker-2"][:20]
    with udpWorkers(tmp_path, udp=limits) as (_, port, metricsPort), Senders(sources) as senders:
        senders.send(port, each=10)
        waitUntil(lambda: udp(metrics(metricsPort), "datagrams_received_total") == 400)
        values = metrics(metricsPort)
        assert workerLabels(values, "udp_datagrams_received_total") == {
            "worker-1": 200,
            "worker-2": 200,
        }
        perWorker = workerLabels(values, "udp_datagrams_echoed_total")
        assert all(50 <= echoed <= 60 for echoed in perWorker.values()), perWorker
        echoed = udp(values, "datagrams_echoed_total")
        assert udp(values, "datagrams_dropped_total", reason="rate_global") == 400 - echoed
        assert senders.echoes() == echoed


def test_deadWorkersSourcesGoToTheOtherUntilItsBack(tmp_path: Path) -> None:
    """
    A worker stopped (SIGSTOP) with datagrams queued on its socket, then
    killed: the main process discards what was queued (worker_down).
    Killed again as soon as it restarts, three times (its restarts then
    wait 1, 2, 4 s): while it is down, every source is echoed by the other
    worker.  Restarted, it gets its own sources back.  The totals never go
    down.
    """
    with udpWorkers(tmp_path) as (daemon, port, metricsPort):
        seen: list[float] = []

        def received() -> float:
            value = udp(metrics(metricsPort), "datagrams_received_total")
            seen.append(value)
            return value

        with Senders(SOURCES) as senders:
            senders.send(port)
            assert senders.allEchoed()
        waitUntil(lambda: received() == len(SOURCES))
        victim = worker(SOURCES[0])
        theirs = [s for s in SOURCES if worker(s) == victim]
        (started,) = [
            r
            for r in records(daemon)
            if r.get("event") == "worker.started" and r["worker"] == victim
        ]
        pid = int(str(started["pid"]))
        pids = set(workerPids(daemon.pid))
        os.kill(pid, signal.SIGSTOP)
        with Senders(theirs) as queued:
            queued.send(port)
            os.kill(pid, signal.SIGKILL)
            waitUntil(
                lambda: (
                    udp(metrics(metricsPort), "datagrams_dropped_total", reason="worker_down")
                    == len(theirs)
                ),
                what="the dead worker's queue discarded",
            )
            assert queued.echoes() == 0
        assert received() == len(SOURCES) + len(theirs)
        for _ in range(3):
            waitUntil(
                lambda: len(workerPids(daemon.pid)) == 2 and set(workerPids(daemon.pid)) - pids
            )
            (restarted,) = set(workerPids(daemon.pid)) - pids
            pids.add(restarted)
            os.kill(restarted, signal.SIGKILL)
        waitUntil(lambda: len(workerPids(daemon.pid)) == 1, timeout=2, what="one worker left")
        (survivor,) = workerPids(daemon.pid)
        before = workerLabels(metrics(metricsPort), "udp_datagrams_received_total")
        with Senders(SOURCES) as senders:
            senders.send(port)
            assert senders.allEchoed(timeout=3)
        assert workerPids(daemon.pid) == [survivor], "the test was too slow: the worker is back"
        other = "worker-1" if victim == "worker-2" else "worker-2"
        waitUntil(
            lambda: (
                workerLabels(metrics(metricsPort), "udp_datagrams_received_total").get(other)
                == before[other] + len(SOURCES)
            )
        )
        # Back: its socket is in the steering again before it starts.
        waitUntil(lambda: len(workerPids(daemon.pid)) == 2, timeout=20)
        (back,) = set(workerPids(daemon.pid)) - pids

        def serving() -> bool:
            return any(
                r.get("event") == "worker.started" and r.get("pid") == back for r in records(daemon)
            )

        waitUntil(serving, what="the restarted worker serving")
        with Senders(theirs) as senders:
            senders.send(port)
            assert senders.allEchoed()
        waitUntil(
            lambda: (
                workerLabels(metrics(metricsPort), "udp_datagrams_received_total").get(victim)
                == len(theirs)
            )
        )
        values = metrics(metricsPort)
        assert sorted(workerLabels(values, "restarts_total").values()) == [0, 4]
        total = len(SOURCES) * 2 + len(theirs) * 2
        waitUntil(lambda: received() == total)
        assert seen == sorted(seen), seen


def test_reloadChangesTheACLInEveryWorker(tmp_path: Path) -> None:
    with udpWorkers(tmp_path) as (daemon, port, metricsPort):
        conf = tmp_path / "echod.toml"
        conf.write_text(conf.read_text().replace("[log]", "deny = ['127.0.0.0/8']\n[log]"))
        before = {pid: charactersRead(pid) for pid in workerPids(daemon.pid)}
        line = configLine(load(str(conf)))
        daemon.signal(signal.SIGHUP)
        daemon.waitFor('"config.reloaded"')
        waitUntil(
            lambda: all(charactersRead(pid) - read >= len(line) for pid, read in before.items()),
            what="both workers read the new configuration",
        )
        with Senders(SOURCES) as senders:
            senders.send(port)
            waitUntil(
                lambda: (
                    udp(metrics(metricsPort), "datagrams_dropped_total", reason="acl")
                    == len(SOURCES)
                )
            )
            assert senders.echoes() == 0
        values = metrics(metricsPort)
        assert set(workerLabels(values, "udp_datagrams_received_total").values()) != {0}
        assert len(workerLabels(values, "udp_datagrams_received_total")) == 2


def test_stopEndsUDPAndDrainsTCP(tmp_path: Path) -> None:
    """
    Stream and UDP listeners together: SIGTERM stops the UDP ports in every
    worker, drains the TCP connection (an orderly end of file), and echod
    exits 0, every worker with status 0, without an error.
    """
    tcpPort = freePort()
    listen = [f"tcp:{tcpPort}:interface=127.0.0.1"]
    with udpWorkers(tmp_path, listen=listen) as (daemon, port, _):
        with Senders(SOURCES) as senders:
            senders.send(port)
            assert senders.allEchoed()
        held = socket.create_connection(("127.0.0.1", tcpPort), timeout=10)
        held.sendall(b"in flight")
        assert held.recv(100) == b"in flight"
        workers = workerPids(daemon.pid)
        daemon.signal(signal.SIGTERM)
        got = b""
        while chunk := held.recv(100):
            got += chunk
        held.close()
        assert got == b""  # drained: an orderly EOF, not a reset
        assert daemon.wait(20) == 0
        for pid in workers:
            assert (
                not os.path.exists(f"/proc/{pid}")
                or "zombie" in Path(f"/proc/{pid}/status").read_text()
            )
        exits = [r for r in records(daemon) if r.get("event") == "worker.exited"]
        assert sorted(r["status"] for r in exits) == [0, 0]  # type: ignore[type-var]
        assert not [r for r in records(daemon) if r.get("level") in ("error", "critical")]


def test_systemdDatagramSocketIsSharedByTheWorkers(tmp_path: Path) -> None:
    """
    A datagram socket systemd passed is one socket: every worker reads it
    (each datagram goes to whichever reads first), and the log says that
    per-source limits then apply per worker.
    """
    from tests.e2e.test_systemd import retry

    activate = requireTool("systemd-socket-activate")
    port, metricsPort = freePort(kind=socket.SOCK_DGRAM), freePort()
    conf = tmp_path / "echod.toml"
    conf.write_text(
        "[server]\nlisten = []\nworkers = 2\n"
        "[udp]\nlisten = ['systemd:domain=INET:name=echo-udp']\n[log]\nformat = 'json'\n"
        f"[metrics]\nlisten = 'tcp:{metricsPort}:interface=127.0.0.1'\n"
    )
    daemon = Twistd(tmp_path, ["--config", str(conf)])
    daemon.argv = [
        activate,
        "--datagram",
        "-l",
        f"127.0.0.1:{port}",
        "--fdname=echo-udp",
        "--",
        *daemon.argv,
    ]
    with daemon:
        # The first datagram makes systemd-socket-activate start twistd.
        retry("UDP echo", lambda: udpEcho("127.0.0.1", port, b"first", 2))
        waitUntil(lambda: daemon.output().count('"worker.started"') == 2)
        with Senders(SOURCES) as senders:
            senders.send(port)
            assert senders.allEchoed()
        waitUntil(lambda: udp(metrics(metricsPort), "datagrams_received_total") >= len(SOURCES))
        assert len(workerLabels(metrics(metricsPort), "udp_datagrams_received_total")) == 2
        (shared,) = [r for r in records(daemon) if r.get("event") == "udp.shared"]
        assert "per-source rate limits apply per worker" in str(shared["message"])
        daemon.signal(signal.SIGTERM)
        assert daemon.wait() == 0
