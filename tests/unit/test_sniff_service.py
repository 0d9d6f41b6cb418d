"""
L{SniffService}: opens the capture before privileges are dropped, starts it
and its output after, logs statistics, and stops at C{count}.
"""

from __future__ import annotations

import atexit
import dataclasses
import errno
import io
import os
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from twisted.internet.error import ConnectionLost
from twisted.logger import LogEvent, LogLevel, capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from echod import app as echodService
from echod import config as _config
from echod.config import SniffConfig
from echod.metrics.collector import _captureMetrics
from echod.sniff.service import SniffService
from echod.sniff.sinks import OutputError
from echod.sniff.source import CapturePermissionError
from tests import frames
from tests.capturetesting import MemoryLinuxSystem
from tests.reactortesting import EchodMemoryReactor


def events(logged: Sequence[LogEvent], name: str) -> list[LogEvent]:
    return [e for e in logged if e.get("event") == name]


class SniffServiceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = EchodMemoryReactor()
        # Before Twisted 26.4 a MemoryReactor starts out stopped.
        self.reactor.hasStopped = False
        self.system = MemoryLinuxSystem()
        self.stdout = io.BytesIO()

    def service(self, standalone: bool = True, **keys: Any) -> SniffService:
        settings = {"interface": "eth0", "stats_interval": 10.0, **keys}
        config = dataclasses.replace(SniffConfig(), **settings)
        service = SniffService(config, self.reactor, self.stdout, standalone, self.system)
        self.addCleanup(self.stop, service)
        return service

    def stop(self, service: SniffService) -> None:
        if service.running:
            service.stopService()

    def start(self, service: SniffService) -> None:
        service.privilegedStartService()
        service.startService()

    def arrive(self, count: int) -> None:
        sock = self.system.socket
        for n in range(count):
            frame = frames.ethernet(frames.ipv4(frames.udp(1000, 7007, bytes([n])), 17))
            sock.inject(frame, ifindex=2)
        sock.retire()

    def test_privilegedStart(self) -> None:
        """
        The capture is opened in C{privilegedStartService}, and said so;
        nothing is read or written before C{startService}.
        """
        service = self.service(filter="udp")
        with capturedLogs() as logged:
            service.privilegedStartService()
        assert len(self.system.sockets) == 1
        assert self.reactor.readers == set()
        (opened,) = events(logged, "sniff.opened")
        assert (opened["interface"], opened["filter"]) == ("eth0", "udp")
        assert opened["method"].startswith("TPACKET_V3 ring, walked in ")

    def test_start(self) -> None:
        """
        Starting registers the reader and opens the output.
        """
        service = self.service()
        self.start(service)
        assert service.reader in self.reactor.readers
        self.arrive(2)
        service.reader.doRead()
        assert self.stdout.getvalue().count(b"\n") == 2

    def test_permission(self) -> None:
        """
        Without the privilege, C{privilegedStartService} raises the one-line
        error twistd's start-up reports.
        """
        self.system.openError = errno.EPERM
        with pytest.raises(CapturePermissionError, match="CAP_NET_RAW"):
            self.service().privilegedStartService()

    def test_outputFails(self) -> None:
        """
        An output that cannot be opened stops the start with one line.
        """
        service = self.service(output="/nonexistent/dir/out.txt")
        service.privilegedStartService()
        with pytest.raises(OutputError, match=r"/nonexistent/dir/out\.txt"):
            service.startService()

    def test_statistics(self) -> None:
        """
        Statistics are logged every C{stats_interval} seconds, and once more
        when the service stops.
        """
        service = self.service()
        self.start(service)
        self.arrive(3)
        service.reader.doRead()
        with capturedLogs() as logged:
            self.reactor.advance(10)
            self.reactor.advance(10)
            service.stopService()
        stats = events(logged, "sniff.statistics")
        assert len(stats) == 3
        assert [e["final"] for e in stats] == [False, False, True]
        last = stats[-1]
        assert (last["seen"], last["passed"], last["dropped"]) == (3, 3, 0)
        assert "3 packets seen, 3 passed to output, 0 dropped by the kernel" in (
            last["log_format"].format(**last)
        )

    def test_statisticsOnlyAtExit(self) -> None:
        service = self.service(stats_interval=0.0)
        self.start(service)
        assert self.reactor.getDelayedCalls() == []

    def test_countStandalone(self) -> None:
        """
        Alone in its process, reaching C{count} stops the reactor.
        """
        service = self.service(count=2)
        self.start(service)
        self.arrive(3)
        with capturedLogs() as logged:
            service.reader.doRead()
        assert self.reactor.hasStopped
        assert events(logged, "sniff.count_reached")
        assert self.stdout.getvalue().count(b"\n") == 2

    def test_countInsideEchod(self) -> None:
        """
        Beside the echo service, reaching C{count} ends the capture only.
        """
        service = self.service(standalone=False, count=1)
        self.start(service)
        self.arrive(1)
        with capturedLogs() as logged:
            service.reader.doRead()
        assert not self.reactor.hasStopped
        assert self.system.socket.closed
        assert [e["final"] for e in events(logged, "sniff.statistics")] == [True]
        with capturedLogs() as logged:
            service.stopService()
        assert events(logged, "sniff.statistics") == []

    def test_lostStandalone(self) -> None:
        """
        A capture lost while running is logged as an error; alone in its
        process, the reactor stops and the exit status will be non-zero.
        """
        registered: list[Callable[[], None]] = []
        self.patch(atexit, "register", registered.append)
        service = self.service()
        self.start(service)
        with capturedLogs() as logged:
            service.reader.connectionLost(Failure(ConnectionLost("network is down")))
        (failed,) = events(logged, "sniff.failed")
        assert "network is down" in failed["reason"]
        assert self.reactor.hasStopped
        assert len(registered) == 1
        assert service.failed

    def test_fullDisk(self) -> None:
        """
        An output on a full disk (/dev/full): the packets it could not
        write are counted as not written, not as passed, in the statistics
        and in the summary line; the failure is said once, in one line.
        """
        if not os.path.exists("/dev/full"):
            raise pytest.skip("no /dev/full here")
        service = self.service(standalone=False, output="/dev/full", format="pcap")
        self.start(service)
        self.arrive(3)
        with capturedLogs() as logged:
            why = service.reader.doRead()
            assert isinstance(why, Failure)
            service.reader.connectionLost(why)
            service.stopService()
        stats = service.statistics()
        assert (stats.seen, stats.passed, stats.notWritten) == (3, 0, 3)
        errors = [e for e in logged if e["log_level"] >= LogLevel.warn]
        assert [e["event"] for e in errors] == ["sniff.failed"], errors
        assert errors[0]["reason"] == "cannot write /dev/full: no space left on device"
        (last,) = events(logged, "sniff.statistics")
        assert last["final"] and (last["passed"], last["not_written"]) == (0, 3)
        assert (
            "3 packets seen, 0 passed to output, 3 not written (the output failed), "
            "0 dropped by the kernel"
        ) in formatEvent(last)
        metrics = {m.name: m.samples[0].value for m in _captureMetrics([stats])}
        assert metrics["echod_sniff_packets_passed"] == 0
        assert metrics["echod_sniff_packets_not_written"] == 3

    def test_stop(self) -> None:
        """
        Stopping closes the socket and writes what is buffered.
        """
        service = self.service(format="pcap")
        self.start(service)
        self.arrive(1)
        service.reader.doRead()
        with capturedLogs():
            service.stopService()
        assert self.system.socket.closed
        assert len(self.stdout.getvalue()) > 24
        assert self.reactor.readers == set()


class EchodIntegrationTests(SynchronousTestCase):
    def test_enabled(self) -> None:
        """
        C{[sniff] enabled = true} adds the sniffer to echod's service tree,
        beside the echo service; it does not stop the process at C{count}.
        """
        config = _config.loads("[sniff]\nenabled = true\ninterface = 'lo'\n")
        root = echodService.makeService(config, EchodMemoryReactor())
        sniff = root.getServiceNamed("sniff")
        assert isinstance(sniff, SniffService)
        assert not sniff.standalone
        assert root.getServiceNamed("tcp-echo") is not None

    def test_disabled(self) -> None:
        root = echodService.makeService(_config.Config(), EchodMemoryReactor())
        with pytest.raises(KeyError):
            root.getServiceNamed("sniff")
