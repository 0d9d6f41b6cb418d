"""
L{RawReader}: a reactor reader that drains the capture in batches and hands
packets to an L{IPacketConsumer}; against the fake kernel and a memory
reactor (tests/integration/test_sniff_reader.py has the real ones).
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IReadDescriptor
from twisted.internet.testing import MemoryReactor
from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from echod.sniff.reader import CaptureComplete, RawReader
from echod.sniff.sinks import OutputError
from echod.sniff.source import CapturePermissionError, CaptureRequest, CaptureStatistics
from tests import frames
from tests.capturetesting import MemoryLinuxSystem, RecordingConsumer


def frame(n: int) -> bytes:
    return frames.ethernet(frames.ipv4(frames.udp(1, 9, n.to_bytes(2, "big")), 17))


class RawReaderTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.system = MemoryLinuxSystem()
        self.reactor = MemoryReactor()
        self.consumer = RecordingConsumer()

    def reader(self, count: int = 0, **kwargs: Any) -> RawReader:
        request = CaptureRequest(interface="eth0", **kwargs)
        reader = RawReader(request, self.consumer, self.reactor, self.system, count=count)
        self.addCleanup(reader.stopCapturing)
        return reader

    def arrive(self, n: int, start: int = 0) -> None:
        sock = self.system.socket
        for i in range(start, start + n):
            sock.inject(frame(i), ifindex=2)
        sock.retire()

    def delivered(self) -> list[int]:
        return [int.from_bytes(p[1][-2:], "big") for p in self.consumer.packets]

    def test_interface(self) -> None:
        """
        The reader is an L{IReadDescriptor}, which the reactor can watch.
        """
        reader = self.reader()
        reader.open()
        assert verifyObject(IReadDescriptor, reader)

    def test_open(self) -> None:
        """
        L{RawReader.open} opens the capture and nothing else: the consumer
        and the reactor are untouched until L{RawReader.startCapturing}.
        """
        reader = self.reader()
        reader.open()
        assert reader.fileno() == self.system.socket.fileno()
        assert self.consumer.info is None
        assert reader not in self.reactor.readers

    def test_startCapturing(self) -> None:
        """
        Starting tells the consumer what the capture is, then registers
        with the reactor.
        """
        reader = self.reader()
        reader.startCapturing()
        assert self.consumer.info is not None
        assert self.consumer.info.interface == "eth0"
        assert reader in self.reactor.readers

    def test_doRead(self) -> None:
        """
        One C{doRead} delivers every waiting packet, then flushes once.
        """
        reader = self.reader()
        reader.startCapturing()
        self.arrive(5)
        reader.doRead()
        assert self.delivered() == [0, 1, 2, 3, 4]
        assert self.consumer.flushes == 1

    def test_budget(self) -> None:
        """
        A C{doRead} takes at most C{budget} packets; the rest wait for the
        next turn of the reactor.
        """
        reader = self.reader()
        reader.budget = 3
        reader.startCapturing()
        self.arrive(5)
        reader.doRead()
        assert self.delivered() == [0, 1, 2]
        reader.doRead()
        assert self.delivered() == [0, 1, 2, 3, 4]

    def test_count(self) -> None:
        """
        With C{count}, reading stops after that many packets and
        L{RawReader.whenCountReached} fires.
        """
        reader = self.reader(count=3)
        reached = reader.whenCountReached()
        reader.startCapturing()
        self.arrive(2)
        reader.doRead()
        self.assertNoResult(reached)
        self.arrive(3, start=2)
        reader.doRead()
        assert self.delivered() == [0, 1, 2]
        self.successResultOf(reached)
        assert reader not in self.reactor.readers

    def test_consumerComplete(self) -> None:
        """
        A consumer whose flush raises L{CaptureComplete} (its files are
        written) ends the capture as a reached count does: reading stops,
        L{RawReader.whenCountReached} fires, L{RawReader.complete} says why,
        and stopping reads nothing more; it is not a loss.
        """
        reader = self.reader()
        reached, lost = reader.whenCountReached(), reader.whenLost()
        reader.startCapturing()
        self.arrive(2)
        self.consumer.flushError = CaptureComplete("maximum file limit reached: 2")
        assert reader.doRead() is None
        self.successResultOf(reached)
        assert reader.complete == "maximum file limit reached: 2"
        assert reader not in self.reactor.readers
        self.arrive(1, start=2)
        reader.stopCapturing()
        assert self.delivered() == [0, 1]
        self.assertNoResult(lost)

    def test_consumerFails(self) -> None:
        """
        A packet the consumer fails on is logged and counted; the following
        ones are still delivered.
        """
        self.consumer.failOn = 2
        reader = self.reader()
        reader.startCapturing()
        self.arrive(3)
        with capturedLogs() as events:
            reader.doRead()
        assert self.delivered() == [0, 1, 2]
        stats = reader.statistics()
        assert (stats.passed, stats.failed) == (2, 1)
        (event,) = events
        assert event["log_failure"].check(ValueError)
        assert len(self.flushLoggedErrors(ValueError)) == 1

    def test_flushFails(self) -> None:
        """
        If the output fails, C{doRead} returns the failure (the reactor then
        disconnects the reader): the capture is closed and
        L{RawReader.whenLost} fails with the error.
        """
        reader = self.reader()
        lost = reader.whenLost()
        reader.startCapturing()
        self.arrive(1)
        self.consumer.flushError = OutputError("cannot write out.pcap: no space left on device")
        why = reader.doRead()
        assert isinstance(why, Failure)
        reader.connectionLost(why)
        self.failureResultOf(lost, OutputError)
        assert self.system.socket.closed
        assert self.consumer.stopped == 1

    def test_stopCapturing(self) -> None:
        """
        Stopping unregisters the reader, stops the consumer and closes the
        socket, once; it is not a loss.
        """
        reader = self.reader()
        lost = reader.whenLost()
        reader.startCapturing()
        reader.stopCapturing()
        reader.stopCapturing()
        assert reader not in self.reactor.readers
        assert self.consumer.stopped == 1
        assert self.system.socket.closed
        self.assertNoResult(lost)

    def test_stopReadsWhatIsReady(self) -> None:
        """
        Packets the kernel handed over before the stop are not lost.
        """
        reader = self.reader()
        reader.startCapturing()
        self.arrive(3)
        reader.stopCapturing()
        assert self.delivered() == [0, 1, 2]

    def test_stopWriteFails(self) -> None:
        """
        If the last write fails, stopping says so (and still closes).
        """
        reader = self.reader()
        reader.startCapturing()
        self.arrive(1)
        self.consumer.flushError = OutputError("cannot write x: no space left on device")
        with pytest.raises(OutputError):
            reader.stopCapturing()
        assert self.system.socket.closed

    def test_statistics(self) -> None:
        """
        The statistics say what the kernel saw and dropped and what was
        passed on, and keep their last values once stopped.
        """
        reader = self.reader()
        reader.startCapturing()
        self.arrive(4)
        reader.doRead()
        stats = reader.statistics()
        assert (stats.seen, stats.dropped, stats.passed, stats.failed) == (4, 0, 4, 0)
        reader.stopCapturing()
        assert reader.statistics() == stats

    def test_stopPassesStatistics(self) -> None:
        """
        The consumer is stopped with the kernel's final counters (which
        pcapng writes in its statistics block).
        """
        reader = self.reader()
        reader.startCapturing()
        self.arrive(3)
        reader.stopCapturing()
        assert self.consumer.statistics == CaptureStatistics(3, 0)

    def test_openFails(self) -> None:
        """
        An error opening the capture reaches the caller as it is.
        """
        self.system.openError = 1
        reader = self.reader()
        with pytest.raises(CapturePermissionError):
            reader.open()

    def test_readsFromReactor(self) -> None:
        """
        A connection loss the reactor reports (the interface went away)
        closes the capture and fails L{RawReader.whenLost}.
        """
        reader = self.reader()
        lost = reader.whenLost()
        reader.startCapturing()
        reader.connectionLost(Failure(ConnectionDone("gone")))
        self.failureResultOf(lost, ConnectionDone)
        assert self.system.socket.closed
