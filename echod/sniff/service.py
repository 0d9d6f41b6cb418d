# -*- test-case-name: tests.unit.test_sniff_service -*-
"""
The sniffer as a Twisted service: L{SniffService} opens the capture in
C{privilegedStartService} (twistd calls it as root, before C{--uid/--gid}
take effect), starts reading and opens its output in C{startService} (as the
user it runs as), logs statistics every C{stats_interval} seconds and when
it stops.

It runs alone under C{twistd echod-sniff}, where reaching C{count} packets
or losing the capture stops the process, or beside the echo service under
C{twistd echod} with C{[sniff] enabled = true}, where it only stops itself.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
from collections.abc import Mapping
from dataclasses import replace
from typing import IO, Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from echod.config import SniffConfig
from echod.errors import UserError
from echod.interfaces import ICaptureStatistics, ISniffReactor
from echod.sniff.pcapng import PcapngSink
from echod.sniff.platforms import CaptureSystem, checkRequest, openCapture
from echod.sniff.reader import RawReader, ReaderStatistics
from echod.sniff.sinks import OutputError, PcapSink, RotatingOutput, SummarySink
from echod.sniff.source import CaptureRequest
from echod.sniff.text import TextStyle

__all__ = ["SniffService", "captureRequest", "checkSniffing", "makeConsumer", "standardOutput"]


def standardOutput() -> IO[bytes] | None:
    """
    The process's standard output as a binary stream, taken now: once twistd
    starts logging it replaces C{sys.stdout} with a file that feeds the log.
    """
    stream = getattr(sys.stdout, "buffer", None)
    return stream if stream is not None else None


def captureRequest(config: SniffConfig) -> CaptureRequest:
    return CaptureRequest(
        interface=config.interface,
        filter=config.filter,
        snaplen=config.snaplen,
        promiscuous=config.promiscuous,
        bufferBytes=config.buffer_bytes,
    )


def makeConsumer(
    config: SniffConfig, stdout: IO[bytes] | None, style: TextStyle | None = None
) -> PcapSink | PcapngSink | SummarySink:
    """
    The sink the [sniff] section asks for (nothing is opened yet); text in
    C{style} (by default echod's own line).
    """
    output = RotatingOutput(
        config.output,
        config.rotate_bytes,
        config.rotate_count,
        stdout,
        rotateSeconds=config.rotate_seconds,
    )
    if config.format == "pcap":
        return PcapSink(output, nanoseconds=config.precision == "nano")
    if config.format == "pcapng":
        return PcapngSink(output, nanoseconds=config.precision == "nano")
    return SummarySink(output, config.format, style)


def _exitNonZero() -> None:
    # twistd has no way to choose its exit status: once it has cleaned up
    # and returned, leave with 1 instead of 0.
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(1)


@implementer(ICaptureStatistics)
class SniffService(Service):
    """
    One capture, from the [sniff] section.

    @ivar standalone: the process exists for this capture: stop the reactor
        when C{count} is reached, and exit non-zero if the capture fails.
    """

    log = Logger()
    name = "sniff"

    def __init__(
        self,
        config: SniffConfig,
        reactor: ISniffReactor,
        stdout: IO[bytes] | None = None,
        standalone: bool = False,
        system: CaptureSystem | None = None,
        opener: Any = openCapture,
        consumer: PcapSink | PcapngSink | SummarySink | None = None,
    ) -> None:
        self.config = config
        self.reactor = reactor
        self.standalone = standalone
        if consumer is None:
            consumer = makeConsumer(config, stdout if stdout is not None else standardOutput())
        self.consumer = consumer
        self.reader = RawReader(
            captureRequest(config),
            self.consumer,
            reactor=reactor,
            system=system,
            count=config.count,
            opener=opener,
        )
        self._loop: LoopingCall | None = None
        self._loopDone: Deferred[LoopingCall] | None = None
        self._finished: Deferred[None] | None = None
        self._closed = False
        self._whenFinished: list[Deferred[None]] = []
        self.failed = False

    def privilegedStartService(self) -> None:
        Service.privilegedStartService(self)
        self.reader.open()
        info = self.reader.info
        assert info is not None
        self.log.info(
            "capturing on {interface} ({method}, link type {linktype}, snaplen {snaplen}), "
            "filter {filter!r}",
            event="sniff.opened",
            interface=info.interface,
            method=info.method,
            linktype=info.linktype,
            snaplen=info.snaplen,
            filter=self.config.filter,
        )

    def startService(self) -> None:
        Service.startService(self)
        self.reader.startCapturing()
        self.reader.whenCountReached().addCallback(self._countReached)
        self.reader.whenLost().addErrback(self._lost)
        if self.config.stats_interval > 0:
            self._loop = LoopingCall(self.logStatistics)
            self._loop.clock = self.reactor
            self._loopDone = self._loop.start(self.config.stats_interval, now=False)

    def stopService(self) -> Deferred[None]:
        """
        Stop the capture; what came before is written (see L{_finish}).
        twistd waits for the L{Deferred} before the process ends.
        """
        Service.stopService(self)
        return self._finish()

    def _finish(self) -> Deferred[None]:
        """
        Once: read the packets the kernel still holds back (those of a block
        of the ring it is still filling, for up to a tenth of a second),
        then stop reading, close the output and log the last statistics.
        """
        if self._finished is not None:
            return self._finished
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        self._finished = self.reader.whenHandedOver(self.reactor)
        self._finished.addCallback(self._close)
        return self._finished

    def _close(self, _: None) -> None:
        try:
            self.reader.stopCapturing()
        except UserError as e:
            self.failed = True
            self.log.error("{error}", error=str(e), event="sniff.output_failed")
        self.logStatistics(final=True)
        self._closed = True
        waiting, self._whenFinished = self._whenFinished, []
        for d in waiting:
            d.callback(None)

    def whenFinished(self) -> Deferred[None]:
        """
        Fires once the capture has ended (stopped, its count reached, its
        files written, or failed: then L{failed} is true), its output closed
        and its last statistics logged.
        """
        d: Deferred[None] = Deferred()
        if self._closed:
            d.callback(None)
        else:
            self._whenFinished.append(d)
        return d

    def statistics(self) -> ReaderStatistics:
        """
        The reader's counters, with C{passed} what the output really wrote:
        what a failed write lost is C{notWritten} instead.
        """
        output = self.consumer.output
        return replace(
            self.reader.statistics(), passed=output.written, notWritten=output.notWritten
        )

    def logStatistics(self, final: bool = False) -> None:
        stats = self.statistics()
        dropped = "unknown" if stats.dropped is None else stats.dropped
        lost = f", {stats.notWritten} not written (the output failed)" if stats.notWritten else ""
        self.log.info(
            "capture on {interface}{state}: {seen} packets seen, {passed} passed to output"
            "{lost}, {dropped} dropped by the kernel",
            event="sniff.statistics",
            interface=self.config.interface,
            state=" stopped" if final else "",
            seen=stats.seen,
            passed=stats.passed,
            lost=lost,
            not_written=stats.notWritten,
            dropped=dropped,
            failed=stats.failed,
            final=final,
        )

    def _countReached(self, _: None) -> None:
        if self.reader.complete is not None:
            self.log.info(
                "{reason}: stopping the capture",
                event="sniff.output_complete",
                reason=self.reader.complete,
            )
        else:
            self.log.info(
                "{count} packets captured: stopping the capture",
                event="sniff.count_reached",
                count=self.config.count,
            )
        if self.standalone:
            self.reactor.stop()
        else:
            self._finish()

    def _lost(self, reason: Failure) -> None:
        self.failed = True
        why = reason.value
        text = str(why) if isinstance(why, UserError) else reason.getErrorMessage()
        self.log.error(
            "capture on {interface} failed: {reason}",
            event="sniff.failed",
            interface=self.config.interface,
            reason=text,
        )
        if self.standalone:
            atexit.register(_exitNonZero)
            self.reactor.stop()
        else:
            self._finish()


def _checkOutput(path: str, twistd: Mapping[str, Any] | None) -> None:
    """
    The output is opened only once the capture runs (as the user twistd
    switches to); what can be seen now is refused now.
    """
    if path == "-":
        if twistd is not None and not (twistd.get("nodaemon") or twistd.get("debug")):
            raise OutputError(
                "packets go to standard output, which a daemon does not have: "
                "run twistd with --nodaemon (-n), or give --output FILE"
            )
        return
    directory = os.path.dirname(path) or "."
    if os.path.isdir(path):
        raise OutputError(f"cannot write {path}: it is a directory")
    if not os.path.isdir(directory):
        raise OutputError(f"cannot write {path}: no directory {directory}")


def checkSniffing(config: SniffConfig, twistd: Mapping[str, Any] | None) -> None:
    """
    What can be checked before twistd starts anything, with no privilege:
    the interface exists, the filter compiles, the output can be written
    (C{twistd echod-sniff}, and C{twistd echod} with C{[sniff] enabled}).
    """
    checkRequest(captureRequest(config))
    _checkOutput(config.output, twistd)
