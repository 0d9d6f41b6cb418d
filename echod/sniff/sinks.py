# -*- test-case-name: tests.unit.test_sniff_sinks -*-
"""
Where captured packets go: one text line per packet (tcpdump-like), one
JSON object per line, or a pcap file that tcpdump, tshark and Wireshark
read; files rotate like tcpdump's C{-C}/C{-W}.

Each sink is an L{IPacketConsumer}: it buffers what one reactor turn
delivers and writes it at L{flush}, so a flood costs one C{write} per batch,
not per packet.  Packet output never goes through the Twisted logger, which
is for statistics and errors.
"""

from __future__ import annotations

import contextlib
import json
import struct
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO

from zope.interface import implementer

from echod.errors import UserError
from echod.sniff.decode import PacketSummary, decodePacket
from echod.sniff.reader import CaptureComplete, IPacketConsumer, IRecordConsumer
from echod.sniff.source import DIRECTION_NAMES, CaptureInfo, CaptureStatistics
from echod.sniff.text import TextFormatter, TextStyle

__all__ = [
    "OutputError",
    "PcapSink",
    "RotatingOutput",
    "SummarySink",
    "pcapHeader",
    "rotationName",
    "timedName",
]

PCAP_MAGIC_MICRO = 0xA1B2C3D4
PCAP_MAGIC_NANO = 0xA1B23C4D
_PCAP_HEADER = struct.Struct("<IHHiIII")
_PCAP_RECORD = struct.Struct("<IIII")
_NS = 1_000_000_000
_FLUSH_BYTES = 1 << 20
# Chunks this large on average are written one by one: joining them would
# cost a copy (and fresh memory) for nothing.
_LARGE_CHUNKS = 1 << 16


class OutputError(UserError):
    """
    An output file cannot be opened or written.
    """


def _reason(error: OSError) -> str:
    return (error.strerror or str(error)).lower()


def pcapHeader(linktype: int, snaplen: int, nanoseconds: bool = False) -> bytes:
    """
    The 24-byte global header of a pcap file (little-endian, version 2.4).
    """
    magic = PCAP_MAGIC_NANO if nanoseconds else PCAP_MAGIC_MICRO
    return _PCAP_HEADER.pack(magic, 2, 4, 0, 0, snaplen, linktype)


def rotationName(path: str, number: int, count: int) -> str:
    """
    The name of file C{number} (from 0) of a rotation, as tcpdump names
    them: without C{-W}, C{FILE}, C{FILE1}, C{FILE2}...; with C{-W count},
    C{FILE0}...C{FILE<count-1>}, zero-padded to the same width.
    """
    digits = len(str(count - 1)) if count > 1 else 0
    if number == 0 and digits == 0:
        return path
    return f"{path}{number:0{digits}d}"


def timedName(pattern: str, moment: float) -> str:
    """
    The name of the file of a time rotation (tcpdump's C{-G}) that starts at
    C{moment}: C{pattern} through C{strftime} in local time, as tcpdump
    names them (C{"cap-%H%M%S.pcap"}).
    """
    return time.strftime(pattern, time.localtime(moment))


class RotatingOutput:
    """
    A byte stream to standard output or to a file that, past C{rotateBytes},
    is closed and followed by the next one (each starting with C{header}),
    keeping at most C{rotateCount} files (0: all) by reusing the oldest name.

    Records are never split across files; a file gets at least one record
    even if that alone is larger than C{rotateBytes}.

    With C{rotateSeconds} (tcpdump's C{-G}), the first record that comes
    C{rotateSeconds} or more after the current file was opened starts a new
    file named by L{timedName} from C{path}; with C{rotateBytes} too, the
    files of one period are numbered after that name (tcpdump's C{-G} with
    C{-C}).  Without C{rotateBytes}, C{rotateCount} is then the number of
    files to write: the record that would open one more is not written, and
    the next L{flush} raises L{CaptureComplete} (tcpdump exits 0 there).

    A failed write (a full disk, an I/O error, a closed pipe) ends the
    output: the first L{flush} after it raises the L{OutputError}, once;
    from then on records are dropped.

    @ivar written: records written (in files or on standard output).
    @ivar notWritten: records lost to a failed write, or added after one.
    @ivar error: the failure that ended the output, if any.
    """

    def __init__(
        self,
        path: str,
        rotateBytes: int = 0,
        rotateCount: int = 0,
        stdout: IO[bytes] | None = None,
        opener: Callable[[str], IO[bytes]] | None = None,
        rotateSeconds: float = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.rotateBytes = rotateBytes if path != "-" else 0
        self.rotateCount = rotateCount
        self.rotateSeconds = rotateSeconds if path != "-" else 0
        self._clock = clock
        self._periodStart = 0.0
        self._periods = 0
        self.complete = False
        self._completeReported = False
        self._stdout = stdout
        self._opener = opener or (lambda name: open(name, "wb"))  # noqa: SIM115
        self._file: IO[bytes] | None = None
        self._header = b""
        self._buffer: list[bytes] = []
        self._pending = 0
        self._records = 0
        self.written = 0
        self.notWritten = 0
        self.error: OutputError | None = None
        self._reported = False
        self._size = 0
        self._number = 0
        self.names: list[str] = []

    def open(self, header: bytes = b"") -> None:
        """
        Open the first file (or take standard output) and write C{header}.
        """
        self._header = header
        self._number = 0
        self._periodStart = self._clock()
        self._periods = 1
        self._openFile()

    def _name(self) -> str:
        if not self.rotateSeconds:
            return rotationName(self.path, self._number, self.rotateCount)
        base = timedName(self.path, self._periodStart)
        if not self.rotateBytes:
            return base
        return rotationName(base, self._number, self.rotateCount)

    def _openFile(self) -> None:
        if self.path == "-":
            if self._stdout is None:
                raise OutputError("no standard output to write packets to")
            self._file = self._stdout
        else:
            name = self._name()
            try:
                self._file = self._opener(name)
            except OSError as e:
                raise OutputError(f"cannot write {name}: {_reason(e)}") from None
            if name not in self.names:
                self.names.append(name)
        self._size = 0
        if self._header:
            self._buffer.append(self._header)
            self._pending += len(self._header)

    def room(self) -> int:
        """
        How many bytes of records the current file takes before the next
        one must start (C{-1}: no limit, the files do not rotate).
        """
        if not self.rotateBytes or self.error is not None:
            return -1
        return max(0, self.rotateBytes - self._size - self._pending)

    def add(self, record: bytes, count: int = 1) -> None:
        """
        Queue one record, starting the next file first if it would not fit.
        Never raises: a failure is raised by the next L{flush}.

        @param count: how many records C{record} holds, one after another,
            when it holds more than one; they must fit the L{room} left.
        """
        if self.rotateSeconds and self.error is None and not self.complete:
            now = self._clock()
            if now - self._periodStart >= self.rotateSeconds:
                self._nextPeriod(now)
        if self.complete:
            return
        if self.error is None and self.rotateBytes:
            used = self._size + self._pending
            if used + len(record) > self.rotateBytes and used > len(self._header):
                self._rotate()
        if self.error is not None:
            self.notWritten += count
            return
        self._buffer.append(record)
        self._pending += len(record)
        self._records += count
        if self._pending >= _FLUSH_BYTES:
            self._write()

    def addTrailer(self, data: bytes) -> None:
        """
        Queue C{data} to end the current file, such as pcapng's statistics
        block: not a record (not counted), never moved to a new file.
        """
        if self.error is None and self._file is not None:
            self._buffer.append(data)
            self._pending += len(data)

    def _nextPeriod(self, now: float) -> None:
        """
        Close the file of the period that ended and open the next one, or,
        when C{rotateCount} files (and no C{rotateBytes}) were asked for and
        written, end the output.
        """
        self._write()
        if self.rotateCount and not self.rotateBytes and self._periods >= self.rotateCount:
            self.complete = True
            try:
                self._closeFile()
            except OutputError as e:
                self.error = self.error or e
            return
        try:
            self._closeFile()
            self._periodStart = now
            self._periods += 1
            self._number = 0
            self._openFile()
        except OutputError as e:
            self.error = self.error or e

    def _rotate(self) -> None:
        self._write()
        try:
            self._closeFile()
            self._number += 1
            if self.rotateCount:
                self._number %= self.rotateCount
            self._openFile()
        except OutputError as e:
            self.error = self.error or e

    def _write(self) -> None:
        """
        Write what is queued; a failure is kept in L{error}, and what was
        queued counted as not written.
        """
        chunks, size = self._buffer, self._pending
        records, self._records = self._records, 0
        self._buffer = []
        self._pending = 0
        if self.error is not None or self._file is None:
            self.notWritten += records
            return
        if not size:
            return
        try:
            if size >= _LARGE_CHUNKS * len(chunks):
                # Batches of records: written as they are, not copied first.
                self._file.writelines(chunks)
            else:
                self._file.write(b"".join(chunks))
            self._file.flush()
        except OSError as e:
            where = "standard output" if self.path == "-" else self._name()
            self.error = OutputError(f"cannot write {where}: {_reason(e)}")
            self.notWritten += records
            return
        self.written += records
        self._size += size

    def flush(self) -> None:
        """
        Write what is queued.

        @raise OutputError: the output failed (now or since the last call);
            raised once.
        @raise CaptureComplete: the files asked for are written (C{-G} with
            C{-W}); raised once.
        """
        self._write()
        if self.error is not None and not self._reported:
            self._reported = True
            raise self.error
        if self.complete and not self._completeReported:
            self._completeReported = True
            raise CaptureComplete(f"maximum file limit reached: {self.rotateCount}")

    def _closeFile(self) -> None:
        file, self._file = self._file, None
        if file is not None and file is not self._stdout:
            try:
                file.close()
            except OSError as e:
                if self.error is None:  # else: what it still holds failed already
                    raise OutputError(f"cannot write {self._name()}: {_reason(e)}") from None

    def close(self) -> None:
        """
        Write what is queued and close the file (standard output stays open).
        """
        try:
            with contextlib.suppress(CaptureComplete):
                self.flush()
        finally:
            self._closeFile()


@implementer(IRecordConsumer)
class PcapSink:
    """
    Writes a pcap file: the capture's link type (Ethernet, or C{LINUX_SLL2}
    for C{any}), its snapshot length, and microsecond or nanosecond
    timestamps, the same in every file of a rotation.

    It takes a record per packet, or whole batches of records from a source
    that writes them itself (L{IRecordConsumer}): the files are the same.
    """

    def __init__(self, output: RotatingOutput, nanoseconds: bool = False) -> None:
        self.output = output
        self.nanoseconds = nanoseconds
        self._divisor = 1 if nanoseconds else 1000
        self._add = output.add

    def captureStarted(self, info: CaptureInfo) -> None:
        self.output.open(pcapHeader(info.linktype, info.snaplen, self.nanoseconds))

    def packetReceived(
        self,
        seconds: int,
        nanoseconds: int,
        data: bytes,
        wireLength: int,
        interfaceIndex: int,
        direction: int,
    ) -> None:
        fraction = nanoseconds // self._divisor
        self._add(_PCAP_RECORD.pack(seconds, fraction, len(data), wireLength) + data)

    def recordRoom(self) -> int:
        return self.output.room()

    def recordsReceived(self, records: bytes, count: int) -> None:
        self._add(records, count)

    def flush(self) -> None:
        self.output.flush()

    def captureStopped(self, statistics: CaptureStatistics | None = None) -> None:
        self.output.close()


def _isoTime(timestamp: int) -> str:
    seconds, fraction = divmod(timestamp, _NS)
    moment = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{moment}.{fraction // 1000:06d}Z"


def formatJSON(summary: PacketSummary) -> str:
    """
    One JSON object: C{time} (ISO 8601, UTC), C{time_ns} and every decoded
    field that is set.
    """
    fields = summary.fields()
    fields["time_ns"] = fields.pop("time", 0)
    record = {"time": _isoTime(summary.time), **fields}
    return json.dumps(record, ensure_ascii=False, separators=(", ", ": "))


@implementer(IPacketConsumer)
class SummarySink:
    """
    Decodes each packet and writes one line: C{form} is C{"text"}
    (tcpdump-like, in the L{TextStyle} C{style}) or C{"json"} (JSON lines).
    """

    def __init__(
        self, output: RotatingOutput, form: str = "text", style: TextStyle | None = None
    ) -> None:
        if form not in ("text", "json"):
            raise ValueError(f"unknown form {form!r}")
        self.output = output
        self.form = form
        self.style = style or TextStyle()
        self._checksums = self.style.verbose and form == "text"
        self._text: TextFormatter | None = None
        self._info: CaptureInfo | None = None

    def captureStarted(self, info: CaptureInfo) -> None:
        self._info = info
        if self.form == "text":
            self._text = TextFormatter(self.style)
        self.output.open()

    def packetReceived(
        self,
        seconds: int,
        nanoseconds: int,
        data: bytes,
        wireLength: int,
        interfaceIndex: int,
        direction: int,
    ) -> None:
        info = self._info
        assert info is not None
        summary = PacketSummary(
            time=seconds * _NS + nanoseconds,
            interface=info.interfaceName(interfaceIndex),
            direction=DIRECTION_NAMES.get(direction),
        )
        decodePacket(info.linktype, data, wireLength, summary, self._checksums)
        text = self._text
        line = formatJSON(summary) if text is None else text.format(summary, data)
        self.output.add((line + "\n").encode("utf-8", "replace"))

    def flush(self) -> None:
        self.output.flush()

    def captureStopped(self, statistics: CaptureStatistics | None = None) -> None:
        self.output.close()
