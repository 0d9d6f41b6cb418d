"""
L{RawReader}: a reactor reader that drains the capture in batches and hands
packets to an L{IPacketConsumer}; against the fake kernel and a memory
reactor (tests/integration/test_sniff_reader.py has the real ones).
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import CancelledError
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IReadDescriptor
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor
from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from echod.sniff import linux
from echod.sniff.reader import CaptureComplete, IRecordConsumer, RawReader
from echod.sniff.sinks import OutputError
from echod.sniff.source import CapturePermissionError, CaptureRequest, CaptureStatistics
from tests import frames
from tests.capturetesting import MemoryLinuxSystem, RecordingConsumer
from tests.environment import need


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


@implementer(IRecordConsumer)
class RecordingRecordConsumer(RecordingConsumer):
    """
    Keeps the batches of records it is given; C{room} is what it says it
    takes.
    """

    nanoseconds = False

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[tuple[bytes, int]] = []
        self.room = -1

    def recordRoom(self) -> int:
        return self.room

    def recordsReceived(self, records: bytes, count: int) -> None:
        self.batches.append((records, count))


class BulkTests(SynchronousTestCase):
    """
    Where the consumer takes records in bulk and the source writes them (the
    C helper), the reader hands over batches of records instead of packets.
    """

    def setUp(self) -> None:
        need(linux.WALK_IN_C, "echod's C helper (echod.sniff._ringwalk) was not built")
        self.system = MemoryLinuxSystem()
        self.consumer = RecordingRecordConsumer()

    def reader(self, count: int = 0) -> RawReader:
        request = CaptureRequest(interface="eth0")
        reader = RawReader(request, self.consumer, MemoryReactor(), self.system, count=count)
        self.addCleanup(reader.stopCapturing)
        reader.startCapturing()
        return reader

    def arrive(self, n: int) -> None:
        for i in range(n):
            self.system.socket.inject(frame(i), ifindex=2)
        self.system.socket.retire()

    def test_batches(self) -> None:
        """
        One batch of records per block read, nothing a packet at a time.
        """
        reader = self.reader()
        assert reader.inBulk
        self.arrive(4)
        reader.doRead()
        ((records, count),) = self.consumer.batches
        assert count == 4
        assert len(records) == 4 * (16 + len(frame(0)))
        assert self.consumer.packets == []
        assert reader.statistics().passed == 4

    def test_budgetAndCount(self) -> None:
        """
        The budget of one read and C{count} hold for batches too.
        """
        reader = self.reader(count=5)
        reader.budget = 3
        self.arrive(7)
        reader.doRead()
        reader.doRead()
        reader.doRead()
        assert [count for _, count in self.consumer.batches] == [3, 2]
        self.successResultOf(reader.whenCountReached())

    def test_roomSplitsBatches(self) -> None:
        """
        A batch never holds more records than the room the consumer has;
        a record larger than the room comes alone.
        """
        reader = self.reader()
        size = 16 + len(frame(0))
        self.consumer.room = 2 * size + 1
        self.arrive(5)
        reader.doRead()
        assert [count for _, count in self.consumer.batches] == [2, 2, 1]
        self.consumer.batches.clear()
        self.consumer.room = 10
        self.arrive(2)
        reader.doRead()
        assert [count for _, count in self.consumer.batches] == [1, 1]

    def test_packetConsumer(self) -> None:
        """
        A consumer of packets only gets packets, from the same source.
        """
        request = CaptureRequest(interface="eth0")
        consumer = RecordingConsumer()
        reader = RawReader(request, consumer, MemoryReactor(), self.system)
        self.addCleanup(reader.stopCapturing)
        reader.startCapturing()
        assert not reader.inBulk
        self.arrive(2)
        reader.doRead()
        assert len(consumer.packets) == 2


class HandOverTests(SynchronousTestCase):
    """
    L{RawReader.whenHandedOver}: a stop waits for the block the kernel is
    still filling, up to twice its retire timeout.
    """

    def setUp(self) -> None:
        self.system = MemoryLinuxSystem()
        self.consumer = RecordingConsumer()
        self.clock = Clock()

    def reader(self, count: int = 0) -> RawReader:
        request = CaptureRequest(interface="eth0")
        reader = RawReader(request, self.consumer, MemoryReactor(), self.system, count=count)
        self.addCleanup(reader.stopCapturing)
        reader.startCapturing()
        self.system.socket.countsWhileFilling = True
        return reader

    def fill(self, n: int) -> None:
        for i in range(n):
            self.system.socket.inject(frame(i), ifindex=2)

    def test_nothingHeldBack(self) -> None:
        """
        With no packet in a block being filled, it fires at once.
        """
        reader = self.reader()
        self.fill(2)
        self.system.socket.retire()
        self.successResultOf(reader.whenHandedOver(self.clock))

    def test_waitsForTheBlock(self) -> None:
        """
        Packets of a block being filled are read once the kernel hands it
        over (the reactor reads them meanwhile), and then it fires; the
        stop that follows has them all.
        """
        reader = self.reader()
        self.fill(3)
        handedOver = reader.whenHandedOver(self.clock)
        self.clock.advance(0.02)
        self.assertNoResult(handedOver)
        self.system.socket.retire()
        self.clock.advance(0.02)
        self.assertNoResult(handedOver)
        reader.doRead()
        self.clock.advance(0.01)
        self.successResultOf(handedOver)
        reader.stopCapturing()
        assert len(self.consumer.packets) == 3
        assert self.clock.getDelayedCalls() == []

    def test_deadline(self) -> None:
        """
        A block the kernel keeps is waited for twice its retire timeout at
        most.
        """
        reader = self.reader()
        self.fill(1)
        handedOver = reader.whenHandedOver(self.clock)
        self.clock.advance(0.09)
        self.assertNoResult(handedOver)
        self.clock.advance(0.02)
        self.successResultOf(handedOver)
        assert self.clock.getDelayedCalls() == []

    def test_lostMeanwhile(self) -> None:
        """
        A capture lost while waiting ends the wait.
        """
        reader = self.reader()
        self.fill(1)
        handedOver = reader.whenHandedOver(self.clock)
        reader.connectionLost(Failure(ConnectionDone("gone")))
        self.failureResultOf(reader.whenLost(), ConnectionDone)
        self.clock.advance(0.01)
        self.successResultOf(handedOver)

    def test_countReached(self) -> None:
        """
        Once C{count} packets were read, nothing is waited for.
        """
        reader = self.reader(count=2)
        self.fill(2)
        self.system.socket.retire()
        reader.doRead()
        self.fill(1)
        self.successResultOf(reader.whenHandedOver(self.clock))

    def test_cancel(self) -> None:
        """
        Cancelling the wait leaves no timer behind.
        """
        reader = self.reader()
        self.fill(1)
        handedOver = reader.whenHandedOver(self.clock)
        handedOver.cancel()
        self.failureResultOf(handedOver, CancelledError)
        assert self.clock.getDelayedCalls() == []
