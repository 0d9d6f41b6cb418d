# -*- test-case-name: tests.unit.test_sniff_reader -*-
"""
The reactor's side of a capture: L{RawReader}, a file descriptor registered
with C{reactor.addReader}, which drains many packets per C{doRead} and hands
each (timestamp, bytes, meta) to an L{IPacketConsumer}, or, where both the
source and the consumer can (an L{IRecordConsumer} and echod's C helper
walking a ring), whole batches of pcap records.

Modelled on L{twisted.pair.tuntap.TuntapPort}: the capture is opened when
asked (in C{privilegedStartService}, as root), read within a budget per
reactor turn so that other connections keep being served, and every OS call
goes through an injected system object (see L{echod.sniff.platforms}).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet import abstract, error
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorFDSet, IReactorTime, IReadDescriptor
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from echod.sniff.platforms import CaptureSystem, openCapture
from echod.sniff.source import (
    CaptureInfo,
    CaptureRequest,
    CaptureStatistics,
    IBlockSource,
    IPacketSource,
    IRecordSink,
    IRecordSource,
)

__all__ = [
    "CaptureComplete",
    "IPacketConsumer",
    "IRecordConsumer",
    "RawReader",
    "ReaderStatistics",
]

# How often a stop waiting for the kernel to hand a block over looks again.
_HANDOVER_POLL = 0.005


class CaptureComplete(Exception):
    """
    Raised by L{IPacketConsumer.flush} when the consumer wants no more
    packets (the files it was asked to write are written): the capture ends
    as when its count is reached.  C{str()} says why, in one line.
    """


class IPacketConsumer(Interface):
    """
    Takes the packets of one capture, in order.
    """

    def captureStarted(info: CaptureInfo) -> None:
        """
        The capture is open and packets are about to come: C{info} says what
        their bytes are (link type, snapshot length, interfaces).  An output
        is opened here; a L{UserError} stops the start.
        """

    def packetReceived(
        seconds: int,
        nanoseconds: int,
        data: bytes,
        wireLength: int,
        interfaceIndex: int,
        direction: int,
    ) -> None:
        """
        One packet: its kernel timestamp (C{seconds} since the epoch and
        C{nanoseconds}), C{data} in the capture's link type (at most the
        snapshot length), and its meta: its length on the wire, the index of
        the interface it was seen on (0: unknown) and its direction (a Linux
        packet type such as C{PACKET_HOST}, or C{DIRECTION_UNKNOWN}).

        Called up to a million times a second, with plain arguments (no
        object is made per packet): keep it cheap, buffer output.
        """

    def flush() -> None:
        """
        The end of one batch of packets: write what is buffered.

        @raise CaptureComplete: the consumer wants no more packets.
        """

    def captureStopped(statistics: CaptureStatistics | None = None) -> None:
        """
        No more packets will come: write everything and close the output.
        C{statistics} are the kernel's final counters of a live capture
        (L{None}: not known, as for a file).
        """


class IRecordConsumer(IPacketConsumer, IRecordSink):
    """
    A packet consumer that also takes pcap records in bulk (a pcap output):
    from a source that writes them itself (L{IRecordSource}) it gets a
    batch of records per call instead of a call per packet.
    """


@dataclass(frozen=True)
class ReaderStatistics:
    """
    Counters of one capture: packets the kernel let through the filter
    (C{seen}, including those it then dropped), packets it C{dropped}
    because the buffer was full (L{None} where the platform does not count),
    packets C{passed} to the consumer (by L{SniffService}: written to the
    output), packets the consumer C{failed} on, and packets the output lost
    because it could not write them (C{notWritten}: a full disk, an I/O
    error, a closed pipe).
    """

    seen: int
    dropped: int | None
    passed: int
    failed: int
    notWritten: int = 0


@implementer(IReadDescriptor)
class RawReader(abstract.FileDescriptor):
    """
    Reads a raw capture from the reactor.

    L{open} opens the socket (needs the privilege); L{startCapturing} starts
    the consumer and registers with the reactor; L{stopCapturing} undoes
    both.  With C{count}, reading stops after that many packets and
    L{whenCountReached} fires.

    @ivar budget: packets read in one C{doRead} at most, so that a flood
        cannot starve the other descriptors of the reactor.
    """

    log = Logger()
    budget = 8192
    _failuresLogged = 5

    def __init__(
        self,
        request: CaptureRequest,
        consumer: IPacketConsumer,
        reactor: IReactorFDSet | None = None,
        system: CaptureSystem | None = None,
        count: int = 0,
        opener: Callable[[CaptureRequest, CaptureSystem | None], IPacketSource] = openCapture,
    ) -> None:
        abstract.FileDescriptor.__init__(self, reactor)
        self.request = request
        self.consumer = consumer
        self.count = count
        self._system = system
        self._opener = opener
        self._source: IPacketSource | None = None
        self.info: CaptureInfo | None = None
        self._delivered = 0
        self._failed = 0
        self._countReached: Deferred[None] = Deferred()
        self._lost: Deferred[None] = Deferred()
        self._stopping = False
        self._kernel: CaptureStatistics | None = None
        self._deliver = consumer.packetReceived
        self.complete: str | None = None
        self._records: IRecordSource | None = None

    def __repr__(self) -> str:
        state = "open" if self._source is not None else "closed"
        return f"<RawReader {state} on {self.request.interface}>"

    def logPrefix(self) -> str:
        return f"RawReader({self.request.interface})"

    def open(self) -> None:
        """
        Open the capture socket (as root, or with CAP_NET_RAW).

        @raise echod.errors.UserError: a one-line reason it cannot be opened.
        """
        if self._source is not None:
            return
        self._source = self._opener(self.request, self._system)
        self.info = self._source.info
        self.connected = 1

    def startCapturing(self) -> None:
        """
        Start the consumer and read packets as they come.
        """
        self.open()
        assert self.info is not None
        self.consumer.captureStarted(self.info)
        self._deliver = self.consumer.packetReceived
        # Records in bulk where both sides can, chosen once for the capture.
        source = self._source
        if IRecordConsumer.providedBy(self.consumer) and IRecordSource.providedBy(source):
            self._records = IRecordSource(source)
        self.startReading()

    @property
    def inBulk(self) -> bool:
        """
        Whether the source hands the consumer pcap records in bulk.
        """
        return self._records is not None

    def fileno(self) -> int:
        return self._source.fileno() if self._source is not None else -1

    def doRead(self) -> Failure | None:
        source = self._source
        if source is None:
            return None
        limit = self.budget
        if self.count:
            limit = min(limit, self.count - self._delivered)
        if limit > 0:
            if self._records is not None:
                self._delivered += self._records.readRecords(IRecordSink(self.consumer), limit)
            else:
                self._delivered += source.readPackets(self._deliver, limit, self._consumerFailed)
        try:
            self.consumer.flush()
        except CaptureComplete as e:
            self.complete = str(e)
            self._reachEnd()
            return None
        except Exception:
            return Failure()
        if self.count and self._delivered >= self.count:
            self._reachEnd()
        return None

    def _reachEnd(self) -> None:
        self.stopReading()
        if not self._countReached.called:
            self._countReached.callback(None)

    def _consumerFailed(self) -> None:
        # Called from inside the source's except block: log.failure sees it.
        self._failed += 1
        if self._failed <= self._failuresLogged:
            self.log.failure(
                "a packet could not be passed on (the first {limit} failures are logged)",
                limit=self._failuresLogged,
            )

    def whenCountReached(self) -> Deferred[None]:
        """
        Fires once C{count} packets were passed on, or the consumer wanted
        no more (L{complete} says why).
        """
        return self._countReached

    def whenLost(self) -> Deferred[None]:
        """
        Fails when reading stops for another reason than L{stopCapturing}
        (the interface went away, the output failed).
        """
        return self._lost

    def statistics(self) -> ReaderStatistics:
        if self._source is not None:
            self._kernel = self._source.statistics()
        kernel = self._kernel
        return ReaderStatistics(
            seen=kernel.received if kernel else 0,
            dropped=kernel.dropped if kernel else 0,
            passed=self._delivered - self._failed,
            failed=self._failed,
        )

    def whenHandedOver(self, clock: IReactorTime) -> Deferred[None]:
        """
        Fires once the packets the kernel holds now in a block it is still
        filling (a ring hands a block over when full, or C{retireSeconds}
        after starting it) were read, or after twice that time at most; at
        once where nothing is held back.  Reading goes on meanwhile, so
        that a stop after this loses no packet that came before it.
        """
        source = self._source
        if not IBlockSource.providedBy(source) or (self.count and self._delivered >= self.count):
            return succeed(None)
        blocks = IBlockSource(source)
        target = blocks.fillingBlock()
        if target is None:
            return succeed(None)
        deadline = clock.seconds() + 2 * blocks.retireSeconds
        pending: list[IDelayedCall] = []

        def stopPolling(_: Deferred[None]) -> None:
            while pending:
                pending.pop().cancel()

        done: Deferred[None] = Deferred(stopPolling)

        def check() -> None:
            pending.clear()
            gone = self._source is not source
            if gone or blocks.blocksRead() > target or clock.seconds() >= deadline:
                done.callback(None)
            else:
                pending.append(clock.callLater(_HANDOVER_POLL, check))

        check()
        return done

    def stopCapturing(self) -> None:
        """
        Read what the kernel has handed over, stop reading, write what the
        consumer holds and close the socket.  Idempotent.

        @raise echod.errors.UserError: the output failed on the last write.
        """
        self._stopping = True
        if self._source is None:
            return
        self.stopReading()
        if self.complete is None and (not self.count or self._delivered < self.count):
            # What the kernel has handed over is read before closing (the
            # block it is filling is not: it is the kernel's until retired).
            why = self.doRead()
            if why is not None:
                self.connectionLost(why)
                why.raiseException()
        self.connectionLost(Failure(error.ConnectionDone("capture stopped")))

    def connectionLost(self, reason: Failure) -> None:
        source, self._source = self._source, None
        abstract.FileDescriptor.connectionLost(self, reason)
        if source is None:
            return
        self._kernel = source.statistics()
        try:
            self.consumer.captureStopped(self._kernel)
        finally:
            source.close()
        if not self._stopping and not self._lost.called:
            self._lost.errback(reason)
