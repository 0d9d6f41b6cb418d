"""
Packet sinks: pcap files (headers, records, timestamps, rotation like
tcpdump's -C/-W), text lines and JSON lines.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import tempfile
import time
from pathlib import Path
from typing import IO

import pytest
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from echod.sniff.bpf import LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL2
from echod.sniff.reader import CaptureComplete, IPacketConsumer, IRecordConsumer
from echod.sniff.sinks import (
    OutputError,
    PcapSink,
    RotatingOutput,
    SummarySink,
    pcapHeader,
    rotationName,
)
from echod.sniff.source import CaptureInfo
from tests import frames
from tests.capturetesting import receive
from tests.classicbpf import packSLL2

STAMP = 1_700_000_000_123_456_789
INFO = CaptureInfo("eth0", LINKTYPE_ETHERNET, 262144, {1: "lo", 2: "eth0"}, "test")


def readPcap(data: bytes) -> tuple[tuple[int, ...], list[tuple[int, int, int, bytes]]]:
    """
    The global header fields and the records (seconds, fraction, wire
    length, bytes) of a little-endian pcap file.
    """
    header = struct.unpack_from("<IHHiIII", data)
    records = []
    offset = 24
    while offset < len(data):
        seconds, fraction, caplen, wire = struct.unpack_from("<IIII", data, offset)
        records.append((seconds, fraction, wire, data[offset + 16 : offset + 16 + caplen]))
        offset += 16 + caplen
    assert offset == len(data)
    return header, records


class Directory:
    def makeDirectory(self) -> Path:
        path = Path(tempfile.mkdtemp(prefix="echod-sinks-"))
        self.addCleanup(shutil.rmtree, path, True)  # type: ignore[attr-defined]
        return path


class PcapTests(Directory, SynchronousTestCase):
    def test_recordsInBulk(self) -> None:
        """
        A pcap sink takes records in bulk (L{IRecordConsumer}) and says the
        room its output has left.
        """
        stream = io.BytesIO()
        sink = PcapSink(RotatingOutput("-", stdout=stream), nanoseconds=True)
        assert verifyObject(IRecordConsumer, sink)
        sink.captureStarted(INFO)
        assert sink.recordRoom() == -1
        record = struct.pack("<IIII", 1, 2, 3, 3) + b"abc"
        sink.recordsReceived(record * 2, 2)
        sink.captureStopped()
        assert sink.output.written == 2
        assert stream.getvalue() == pcapHeader(LINKTYPE_ETHERNET, 262144, True) + record * 2

    def test_header(self) -> None:
        """
        The global header: magic (microseconds or nanoseconds), version 2.4,
        no time zone, the snapshot length and the link type.
        """
        assert pcapHeader(1, 65535) == struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
        assert pcapHeader(276, 96, nanoseconds=True)[:4] == struct.pack("<I", 0xA1B23C4D)

    def test_interface(self) -> None:
        assert verifyObject(IPacketConsumer, PcapSink(RotatingOutput("-")))

    def sink(self, nanoseconds: bool = False, info: CaptureInfo = INFO) -> tuple[PcapSink, Path]:
        path = self.makeDirectory() / "out.pcap"
        sink = PcapSink(RotatingOutput(str(path)), nanoseconds)
        sink.captureStarted(info)
        return sink, path

    def test_records(self) -> None:
        """
        Each packet is a record with its timestamp, captured and wire
        lengths; the file's link type is the capture's.
        """
        sink, path = self.sink()
        receive(sink, STAMP, b"abc", 60, 2, 0)
        receive(sink, STAMP + 1_000_000, b"defg", 4, 2, 0)
        sink.captureStopped()
        header, records = readPcap(path.read_bytes())
        assert header == (0xA1B2C3D4, 2, 4, 0, 0, 262144, LINKTYPE_ETHERNET)
        assert records == [
            (1_700_000_000, 123456, 60, b"abc"),
            (1_700_000_000, 124456, 4, b"defg"),
        ]

    def test_nanoseconds(self) -> None:
        sink, path = self.sink(nanoseconds=True)
        receive(sink, STAMP, b"abc", 3, 2, 0)
        sink.captureStopped()
        header, records = readPcap(path.read_bytes())
        assert header[0] == 0xA1B23C4D
        assert records[0][:2] == (1_700_000_000, 123456789)

    def test_linkType(self) -> None:
        info = CaptureInfo("any", LINKTYPE_LINUX_SLL2, 96, {}, "test")
        sink, path = self.sink(info=info)
        sink.captureStopped()
        assert readPcap(path.read_bytes())[0][5:] == (96, LINKTYPE_LINUX_SLL2)

    def test_buffered(self) -> None:
        """
        Records are written at L{PcapSink.flush}, once per batch.
        """
        sink, path = self.sink()
        receive(sink, STAMP, b"abc", 3, 2, 0)
        assert path.read_bytes() == b""
        sink.flush()
        assert len(path.read_bytes()) == 24 + 16 + 3

    def test_stdout(self) -> None:
        """
        To standard output: the same bytes, and the stream stays open.
        """
        stream = io.BytesIO()
        sink = PcapSink(RotatingOutput("-", stdout=stream))
        sink.captureStarted(INFO)
        receive(sink, STAMP, b"x", 1, 2, 0)
        sink.captureStopped()
        assert readPcap(stream.getvalue())[1] == [(1_700_000_000, 123456, 1, b"x")]
        assert not stream.closed


class RotationTests(Directory, SynchronousTestCase):
    def test_names(self) -> None:
        """
        Files are named as tcpdump names them: without a count FILE, FILE1,
        FILE2...; with a count FILE0... padded to the widest number.
        """
        assert [rotationName("f", n, 0) for n in range(3)] == ["f", "f1", "f2"]
        assert [rotationName("f", n, 3) for n in range(3)] == ["f0", "f1", "f2"]
        assert rotationName("f", 4, 12) == "f04"
        assert rotationName("f", 0, 1) == "f"

    def output(self, rotateBytes: int, rotateCount: int = 0) -> tuple[RotatingOutput, Path]:
        directory = self.makeDirectory()
        output = RotatingOutput(str(directory / "cap"), rotateBytes, rotateCount)
        output.open(b"H" * 24)
        return output, directory

    def test_rotates(self) -> None:
        """
        A record that would take the file past the size starts the next
        file, which begins with the header again.
        """
        output, directory = self.output(rotateBytes=110)
        for n in range(5):
            output.add(bytes([n]) * 40)
        output.close()
        assert sorted(os.listdir(directory)) == ["cap", "cap1", "cap2"]
        assert (directory / "cap").read_bytes() == b"H" * 24 + b"\0" * 40 + b"\1" * 40
        assert (directory / "cap1").read_bytes() == b"H" * 24 + b"\2" * 40 + b"\3" * 40
        assert (directory / "cap2").read_bytes() == b"H" * 24 + b"\4" * 40
        assert all(os.path.getsize(directory / name) <= 110 for name in os.listdir(directory))

    def test_ring(self) -> None:
        """
        With a count, the oldest file is reused.
        """
        output, directory = self.output(rotateBytes=70, rotateCount=2)
        for n in range(5):
            output.add(bytes([n]) * 40)
        output.close()
        assert sorted(os.listdir(directory)) == ["cap0", "cap1"]
        assert (directory / "cap0").read_bytes() == b"H" * 24 + b"\4" * 40
        assert (directory / "cap1").read_bytes() == b"H" * 24 + b"\3" * 40
        assert output.names == [str(directory / "cap0"), str(directory / "cap1")]

    def test_bigRecord(self) -> None:
        """
        A record larger than the size still goes whole into a file of its own.
        """
        output, directory = self.output(rotateBytes=50)
        output.add(b"a" * 80)
        output.add(b"b" * 10)
        output.close()
        assert (directory / "cap").read_bytes() == b"H" * 24 + b"a" * 80
        assert (directory / "cap1").read_bytes() == b"H" * 24 + b"b" * 10

    def timed(
        self, seconds: float, rotateBytes: int = 0, rotateCount: int = 0
    ) -> tuple[RotatingOutput, Path, list[float]]:
        directory = self.makeDirectory()
        now = [time.mktime((2026, 12, 3, 10, 0, 0, 0, 0, -1))]
        output = RotatingOutput(
            str(directory / "cap-%H%M%S"),
            rotateBytes,
            rotateCount,
            rotateSeconds=seconds,
            clock=lambda: now[0],
        )
        output.open(b"H" * 24)
        return output, directory, now

    def test_rotatesByTime(self) -> None:
        """
        -G: the first record C{rotateSeconds} or more after a file was opened
        starts the next file, named by strftime at that moment; no record, no
        file.
        """
        output, directory, now = self.timed(60)
        output.add(b"a" * 10)
        now[0] += 59.9
        output.add(b"b" * 10)
        now[0] += 0.1
        output.add(b"c" * 10)
        now[0] += 600
        output.add(b"d" * 10)
        output.close()
        assert sorted(os.listdir(directory)) == ["cap-100000", "cap-100100", "cap-101100"]
        assert (directory / "cap-100000").read_bytes() == b"H" * 24 + b"a" * 10 + b"b" * 10
        assert (directory / "cap-100100").read_bytes() == b"H" * 24 + b"c" * 10
        assert (directory / "cap-101100").read_bytes() == b"H" * 24 + b"d" * 10
        assert output.written == 4

    def test_timeAndSize(self) -> None:
        """
        -G with -C: the files of one period are numbered after its name, and
        the numbering starts again with the next period.
        """
        output, directory, now = self.timed(60, rotateBytes=70)
        for n in range(3):
            output.add(bytes([n]) * 40)
        now[0] += 60
        output.add(b"x" * 40)
        output.close()
        assert sorted(os.listdir(directory)) == [
            "cap-100000",
            "cap-1000001",
            "cap-1000002",
            "cap-100100",
        ]

    def test_timeAndCount(self) -> None:
        """
        -G with -W alone: after that many files the output is complete: the
        record that would open one more is not written, and the next flush
        raises L{CaptureComplete} (once); closing does not.
        """
        output, directory, now = self.timed(10, rotateCount=2)
        output.add(b"a")
        now[0] += 10
        output.add(b"b")
        now[0] += 10
        output.add(b"c")
        output.add(b"d")
        with pytest.raises(CaptureComplete, match="maximum file limit reached: 2"):
            output.flush()
        output.flush()
        output.close()
        assert sorted(os.listdir(directory)) == ["cap-100000", "cap-100010"]
        assert output.written == 2
        assert output.notWritten == 0

    def test_room(self) -> None:
        """
        The room left is what the current file takes before the next one
        must start; there is no limit where files do not rotate.
        """
        output, _ = self.output(rotateBytes=110)
        assert output.room() == 110 - 24
        output.add(b"a" * 40)
        assert output.room() == 110 - 24 - 40
        output.close()
        unlimited, _ = self.output(rotateBytes=0)
        assert unlimited.room() == -1
        unlimited.close()

    def test_records(self) -> None:
        """
        Several records added at once that fit the room are counted as
        many; the next one that does not fit starts the next file.
        """
        output, directory = self.output(rotateBytes=110)
        output.add(b"\0" * 40 + b"\1" * 40, 2)
        assert output.room() == 6
        output.add(b"\2" * 40)
        output.close()
        assert output.written == 3
        assert (directory / "cap").read_bytes() == b"H" * 24 + b"\0" * 40 + b"\1" * 40
        assert (directory / "cap1").read_bytes() == b"H" * 24 + b"\2" * 40

    def test_stdoutDoesNotRotate(self) -> None:
        stream = io.BytesIO()
        output = RotatingOutput("-", rotateBytes=10, stdout=stream)
        output.open()
        for _ in range(5):
            output.add(b"x" * 8)
        output.close()
        assert stream.getvalue() == b"x" * 40


class OutputErrorTests(Directory, SynchronousTestCase):
    def test_cannotOpen(self) -> None:
        """
        An output that cannot be created is one line naming it.
        """
        path = self.makeDirectory() / "missing" / "out.pcap"
        output = RotatingOutput(str(path))
        with pytest.raises(OutputError) as caught:
            output.open()
        assert str(caught.value) == f"cannot write {path}: no such file or directory"

    def test_cannotWrite(self) -> None:
        """
        A failed write (a full disk) is an L{OutputError} too.
        """

        class Full(io.BytesIO):
            def write(self, data: object) -> int:
                raise OSError(28, "No space left on device")

        def opener(name: str) -> IO[bytes]:
            return Full()

        output = RotatingOutput("out.pcap", opener=opener)
        output.open(b"header")
        with pytest.raises(OutputError, match=r"cannot write out\.pcap: no space left on device"):
            output.flush()

    def test_noStdout(self) -> None:
        output = RotatingOutput("-", stdout=None)
        with pytest.raises(OutputError):
            output.open()

    def test_fullDiskIsNotCountedAsWritten(self) -> None:
        """
        On a full disk (/dev/full: ENOSPC, a real file) the records are
        counted as not written, never as written; the failure is raised
        once, by the next flush, and the output then drops what comes.
        """
        if not os.path.exists("/dev/full"):
            raise pytest.skip("no /dev/full here")
        output = RotatingOutput("/dev/full")
        output.open(b"header")
        for _ in range(3):
            output.add(b"record")
        with pytest.raises(OutputError, match=r"^cannot write /dev/full: no space left on device$"):
            output.flush()
        assert (output.written, output.notWritten) == (0, 3)
        output.add(b"record")
        output.flush()
        output.close()
        assert (output.written, output.notWritten) == (0, 4)

    def test_failedWriteInABatchRaisesAtFlushOnly(self) -> None:
        """
        A batch larger than the write threshold fails in C{add}, which does
        not raise (the reader would count a failure per packet): the flush
        at the end of the batch raises, once.
        """
        if not os.path.exists("/dev/full"):
            raise pytest.skip("no /dev/full here")
        output = RotatingOutput("/dev/full")
        output.open()
        record = b"x" * 65536
        for _ in range(40):  # 2.5 MiB
            output.add(record)
        with pytest.raises(OutputError):
            output.flush()
        output.close()
        assert (output.written, output.notWritten) == (0, 40)

    def test_writtenCountsRecords(self) -> None:
        """
        What was written is counted in records (the header is not one).
        """
        stream = io.BytesIO()
        output = RotatingOutput("-", stdout=stream)
        output.open(b"header")
        for _ in range(5):
            output.add(b"record")
        output.flush()
        assert (output.written, output.notWritten) == (5, 0)


class SummaryTests(SynchronousTestCase):
    def sink(self, form: str) -> tuple[SummarySink, io.BytesIO]:
        stream = io.BytesIO()
        sink = SummarySink(RotatingOutput("-", stdout=stream), form)
        sink.captureStarted(INFO)
        return sink, stream

    def frame(self) -> bytes:
        segment = frames.tcp(40000, 7007, 0x18, seq=5, ack=9, window=512, payload=b"hello")
        return frames.ethernet(frames.ipv4(segment, 6, "127.0.0.1", "127.0.0.1"))

    def test_text(self) -> None:
        """
        One tcpdump-like line per packet: time, interface, direction, the
        packet.
        """
        sink, stream = self.sink("text")
        receive(sink, STAMP, self.frame(), len(self.frame()), 1, 0)
        sink.flush()
        (text,) = stream.getvalue().decode().splitlines()
        clock, interface, direction, rest = text.split(" ", 3)
        assert clock.endswith(".123456") and len(clock) == 15
        assert (interface, direction) == ("lo", "In")
        assert rest == (
            "IP 127.0.0.1.40000 > 127.0.0.1.7007: Flags [P.], seq 5:10, ack 9, win 512, length 5"
        )

    def test_json(self) -> None:
        """
        One JSON object per line, with the same fields.
        """
        sink, stream = self.sink("json")
        receive(sink, STAMP, self.frame(), len(self.frame()), 2, 4)
        receive(sink, STAMP, b"\x01", 1, 2, 4)
        sink.flush()
        first, second = (json.loads(line) for line in stream.getvalue().splitlines())
        assert first["time"] == "2023-11-14T22:13:20.123456Z"
        assert first["time_ns"] == STAMP
        assert (first["interface"], first["direction"]) == ("eth0", "out")
        assert (first["src"], first["dst"], first["src_port"], first["dst_port"]) == (
            "127.0.0.1",
            "127.0.0.1",
            40000,
            7007,
        )
        assert (first["protocol"], first["tcp_flags"], first["seq"], first["ack"]) == (
            "TCP",
            "P.",
            5,
            9,
        )
        assert first["payload_length"] == 5
        assert second["truncated"] == "ethernet"

    def test_anyInterfaceNames(self) -> None:
        """
        On C{any} each line names the interface the packet was seen on.
        """
        stream = io.BytesIO()
        sink = SummarySink(RotatingOutput("-", stdout=stream), "text")
        sink.captureStarted(CaptureInfo("any", LINKTYPE_LINUX_SLL2, 100, {3: "veth0"}, "t"))
        data = packSLL2(0x0800, 3, 1, 0) + frames.ipv4(frames.udp(1, 2), 17)
        receive(sink, STAMP, data, len(data), 3, 0)
        sink.captureStopped()
        assert b" veth0 In IP 192.0.2.1.1 > 192.0.2.2.2: UDP, length 0\n" in stream.getvalue()

    def test_unknownForm(self) -> None:
        with pytest.raises(ValueError):
            SummarySink(RotatingOutput("-"), "xml")
