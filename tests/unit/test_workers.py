"""
The supervisor's side of the wire from the workers (L{echod.server.workers.supervisor}), with a
fake clock and captured logs: no process is started.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import AnyStr, cast

from twisted.internet.error import ProcessTerminated
from twisted.internet.interfaces import IProcessProtocol, IProcessTransport
from twisted.internet.task import Clock
from twisted.logger import (
    LogLevel,
    capturedLogs,
    eventAsJSON,
    formatEventAsClassicLogText,
)
from twisted.python.failure import Failure
from zope.interface import implementer

from echod.config import Config
from echod.interfaces import ISupervisorReactor
from echod.server.workers.sockets import WorkerSockets
from echod.server.workers.supervisor import WorkerSupervisor
from echod.server.workers.wire import EVENT


def test_workerEventsNameTheirWorker() -> None:
    """
    A worker's log event is logged by the main process with the worker's
    name: as a field (JSON lines) and where text lines name the logger.
    """
    monitor = WorkerSupervisor(ProcessReactor(), Config())
    with capturedLogs() as seen:
        event = {
            "log_format": "127.0.0.1:5000 connected to 127.0.0.1:7007",
            "log_namespace": "echod.server.stream.EchoProtocol",
            "log_level": LogLevel.info,
            "log_time": 0.0,
            "event": "connection.opened",
        }
        monitor.lineFromWorker("worker-2", (EVENT + eventAsJSON(event)).encode())
    (logged,) = [e for e in seen if e.get("event") == "connection.opened"]
    assert logged["worker"] == "worker-2"
    text = formatEventAsClassicLogText(logged)
    assert text is not None
    assert "[worker-2 echod.server.stream.EchoProtocol#info] 127.0.0.1:5000 connected" in text


class FakeProcess:
    """
    What the supervisor sees of a spawned worker.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.written: list[bytes] = []
        self.signals: list[str] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def signalProcess(self, signal: str) -> None:
        self.signals.append(signal)


@implementer(ISupervisorReactor)
class ProcessReactor(Clock):
    """
    A clock that records spawnProcess calls (MemoryReactor has none).
    """

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[
            tuple[IProcessProtocol, Sequence[bytes | str], Mapping[int, int | str], FakeProcess]
        ] = []

    def spawnProcess(
        self,
        processProtocol: IProcessProtocol,
        executable: bytes | str,
        args: Sequence[bytes | str],
        env: Mapping[AnyStr, AnyStr] | None = None,
        path: bytes | str | None = None,
        uid: int | None = None,
        gid: int | None = None,
        usePTY: bool = False,
        childFDs: Mapping[int, int | str] | None = None,
    ) -> IProcessTransport:
        process = FakeProcess(1000 + len(self.spawned))
        self.spawned.append((processProtocol, args, childFDs or {}, process))
        # FakeProcess has what the supervisor uses of a process transport
        # (pid, write, signalProcess), not all of IProcessTransport.
        return cast(IProcessTransport, process)


def supervised() -> tuple[WorkerSupervisor, ProcessReactor]:
    reactor = ProcessReactor()
    supervisor = WorkerSupervisor(reactor, Config())
    supervisor.addWorker(
        "worker-1", ["python", "-m", "echod.server.workers.child"], {0: "w", 3: 7}, _NoSockets()
    )
    supervisor.startService()
    return supervisor, reactor


class _NoSockets(WorkerSockets):
    def __init__(self) -> None:
        super().__init__([])
        self.paused = 0

    def pause(self) -> None:
        self.paused += 1


def died(signal: int = 9) -> Failure:
    return Failure(ProcessTerminated(signal=signal))


class SupervisorTests:
    def test_spawnsWithItsDescriptorsAndConfig(self) -> None:
        _, reactor = supervised()
        ((_, args, childFDs, process),) = reactor.spawned
        assert args == ["python", "-m", "echod.server.workers.child"]
        assert childFDs == {0: "w", 3: 7}
        assert process.written and process.written[0].startswith(b"config ")

    def test_restartAtOnceAfterALongRunThenBackOff(self) -> None:
        """
        ProcessMonitor's policy: a worker that ran past the threshold comes
        back at once; one that dies at once waits 1 s, then 2 s, 4 s...
        """
        supervisor, reactor = supervised()
        reactor.advance(10)
        protocol = reactor.spawned[-1][0]
        protocol.processEnded(died())
        reactor.advance(0)
        assert len(reactor.spawned) == 2
        for delay in (1.0, 2.0, 4.0):
            reactor.spawned[-1][0].processEnded(died())
            reactor.advance(delay - 0.01)
            count = len(reactor.spawned)
            reactor.advance(0.01)
            assert len(reactor.spawned) == count + 1, delay
        assert supervisor.restarts == {"worker-1": 4}

    def test_stopAsksOnStdinThenKills(self) -> None:
        supervisor, reactor = supervised()
        process = reactor.spawned[0][3]
        stopped: list[object] = []
        d = supervisor.stopService()
        d.addCallback(stopped.append)
        assert process.written[-1] == b"stop\n"
        reactor.advance(supervisor.killTime)
        assert process.signals == ["KILL"]
        reactor.spawned[0][0].processEnded(died())
        assert stopped
        assert not reactor.getDelayedCalls()
        assert len(reactor.spawned) == 1

    def test_deadWorkerLeavesItsSocketGroups(self) -> None:
        supervisor, reactor = supervised()
        reactor.spawned[0][0].processEnded(died())
        sockets = supervisor.workers["worker-1"].sockets
        assert isinstance(sockets, _NoSockets) and sockets.paused == 1

    def test_udpTotalsStayMonotonicAcrossARestart(self) -> None:
        """
        A worker's C{udpstats} lines are its UDP totals since it started;
        once it exits, its last report stays in the sum and its restart
        counts from 0.
        """
        from echod.server.stats import DatagramStats
        from echod.server.workers.wire import STATS, UDP_STATS

        supervisor, reactor = supervised()

        def report(received: int) -> None:
            stats = DatagramStats(received=received, echoed=received)
            line = UDP_STATS + json.dumps(stats.asJSON())
            supervisor.lineFromWorker("worker-1", line.encode())
            supervisor.lineFromWorker("worker-1", (STATS + json.dumps(_TCP)).encode())

        report(7)
        assert supervisor.datagrams.total().received == 7
        reactor.spawned[0][0].processEnded(died())
        assert supervisor.datagrams.total().received == 7
        assert supervisor.datagrams.workers == {}
        reactor.advance(0)
        report(2)
        assert supervisor.datagrams.total().received == 9
        assert supervisor.datagrams.workers["worker-1"].received == 2
        with capturedLogs() as seen:
            supervisor.lineFromWorker("worker-1", b"udpstats {not json")
        assert [e["line"] for e in seen] == ["udpstats {not json"]


_TCP = {
    "opened": 0,
    "refused": {},
    "evicted": 0,
    "sent": 0,
    "discarded": 0,
    "open": 0,
    "limit": 0,
}


class WireTests:
    def test_configGoesAsDataAndComesBackValidated(self) -> None:
        """
        A worker's configuration crosses the pipe as values (JSON), not as
        pickled objects, and comes out equal for what a worker serves.
        """
        from echod.config import LogConfig, ServerConfig
        from echod.server.workers.wire import configFromLine, configLine

        config = Config(
            server=ServerConfig(listen=("tcp:7007",), max_connections=5, workers=2),
            log=LogConfig(format="json"),
            source="/etc/echod/echod.toml",
        )
        line = configLine(config)
        assert line.startswith(b"config {") and line.endswith(b"}\n")
        assert b"pickle" not in line and b"\x80" not in line
        back = configFromLine(line.rstrip(b"\n"))
        assert back is not None
        assert (back.server, back.log, back.source) == (config.server, config.log, config.source)

    def test_onlyWhatAWorkerServes(self) -> None:
        """
        The main process's own tables (metrics, sniffer, client) stay in the
        main process: a root-only key named there is not the worker's to
        read.  C{[udp]} goes: workers serve the UDP listeners.
        """
        from echod.config import MetricsConfig, ServerConfig, UDPConfig
        from echod.server.workers.wire import configFromLine, configLine

        config = Config(
            server=ServerConfig(listen=("tcp:7007",)),
            udp=UDPConfig(listen=("udp:port=7007",), deny=("192.0.2.0/24",)),
            metrics=MetricsConfig(listen="tcp:9107"),
        )
        back = configFromLine(configLine(config).rstrip(b"\n"))
        assert back is not None and back.metrics == MetricsConfig()
        assert back.udp == config.udp

    def test_badDocumentIsAConfigError(self) -> None:
        import pickle

        import pytest

        from echod.config import ConfigError
        from echod.server.workers.wire import CONFIG, configFromLine

        for line in (
            CONFIG + b'{"server": {"max_connections": -1}}',
            CONFIG + b"not json",
            CONFIG + pickle.dumps(Config()),
        ):
            with pytest.raises(ConfigError):
                configFromLine(line)
        assert configFromLine(b"stop") is None
