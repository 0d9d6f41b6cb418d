"""
Reading capture files: pcap and pcapng built byte by byte (both byte
orders, every time stamp resolution, several sections and interfaces, the
simple and obsolete packet blocks), hostile and damaged files (one error
line each, the packets before delivered), the offline filter and the whole
read (count, flushes, standard input, a pipe).  Real tools' files are read
in tests/e2e/test_sniff_files.py.
"""

from __future__ import annotations

import builtins
import io
import os
import shutil
import struct
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from echod.errors import UserError
from echod.sniff.bpf import FilterError, OfflineFilter, loadLibrary
from echod.sniff.capturefile import (
    MAXIMUM_BLOCK,
    CaptureFileError,
    CaptureFileReader,
    OfflineStatistics,
    openCaptureFile,
    readCaptureFile,
)
from echod.sniff.reader import CaptureComplete
from echod.sniff.sinks import OutputError
from echod.sniff.source import (
    DIRECTION_UNKNOWN,
    PACKET_BROADCAST,
    PACKET_HOST,
    PACKET_MULTICAST,
    PACKET_OTHERHOST,
    PACKET_OUTGOING,
)
from tests import frames
from tests.capturetesting import RecordingConsumer
from tests.environment import need
from tests.testing import examples

SECOND = 1_700_000_000


def udpFrame(port: int, payload: bytes = b"hello") -> bytes:
    return frames.ethernet(frames.ipv4(frames.udp(4000, port, payload), 17))


def tcpFrame(port: int) -> bytes:
    return frames.ethernet(frames.ipv4(frames.tcp(40000, port, 0x02), 6))


# pcap -------------------------------------------------------------------


def pcapFile(
    records: list[tuple[int, int, bytes]],
    order: str = "<",
    nano: bool = False,
    snaplen: int = 262144,
    linktype: int = 1,
    version: tuple[int, int] = (2, 4),
) -> bytes:
    """
    A pcap file of (seconds, fraction, data) records.
    """
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = struct.pack(order + "IHHiIII", magic, *version, 0, 0, snaplen, linktype)
    for seconds, fraction, data in records:
        out += struct.pack(order + "IIII", seconds, fraction, len(data), len(data) + 4) + data
    return out


# pcapng -----------------------------------------------------------------


def pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def option(code: int, value: bytes, order: str = "<") -> bytes:
    return struct.pack(order + "HH", code, len(value)) + pad(value)


def block(kind: int, body: bytes, order: str = "<") -> bytes:
    length = 12 + len(body)
    return struct.pack(order + "II", kind, length) + body + struct.pack(order + "I", length)


def shb(order: str = "<", version: tuple[int, int] = (1, 0)) -> bytes:
    return block(0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, *version, -1), order)


def idb(
    linktype: int = 1,
    snaplen: int = 0,
    name: str | None = None,
    tsresol: int | None = None,
    tsoffset: int | None = None,
    order: str = "<",
) -> bytes:
    options = b""
    if name is not None:
        options += option(2, name.encode(), order)
    if tsresol is not None:
        options += option(9, bytes([tsresol]), order)
    if tsoffset is not None:
        options += option(14, struct.pack(order + "q", tsoffset), order)
    if options:
        options += b"\0\0\0\0"
    return block(1, struct.pack(order + "HHI", linktype, 0, snaplen) + options, order)


def epb(
    stamp: int,
    data: bytes,
    interface: int = 0,
    flags: int | None = None,
    wire: int | None = None,
    order: str = "<",
) -> bytes:
    body = struct.pack(
        order + "IIIII",
        interface,
        stamp >> 32,
        stamp & 0xFFFFFFFF,
        len(data),
        len(data) if wire is None else wire,
    )
    body += pad(data)
    if flags is not None:
        body += option(2, struct.pack(order + "I", flags), order) + b"\0\0\0\0"
    return block(6, body, order)


def spb(data: bytes, wire: int, order: str = "<") -> bytes:
    return block(3, struct.pack(order + "I", wire) + pad(data), order)


def opb(stamp: int, data: bytes, interface: int = 0, order: str = "<") -> bytes:
    body = struct.pack(
        order + "HHIIII", interface, 0, stamp >> 32, stamp & 0xFFFFFFFF, len(data), len(data)
    )
    return block(2, body + pad(data), order)


def micro(seconds: int, fraction: int) -> int:
    return seconds * 1_000_000 + fraction


class Files:
    def write(self, data: bytes, name: str = "f.cap") -> str:
        directory = tempfile.mkdtemp(prefix="echod-capturefile-")
        self.addCleanup(shutil.rmtree, directory, True)  # type: ignore[attr-defined]
        path = os.path.join(directory, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def read(
        self, data: bytes, expression: str = "", **kwargs: Any
    ) -> tuple[RecordingConsumer, OfflineStatistics]:
        consumer = RecordingConsumer()
        statistics = readCaptureFile(self.write(data), expression, consumer, **kwargs)
        return consumer, statistics

    def fails(self, data: bytes, *words: str) -> tuple[RecordingConsumer, CaptureFileError]:
        """
        Reading C{data} fails with one line naming the file and C{words}.
        """
        consumer = RecordingConsumer()
        path = self.write(data)
        with pytest.raises(CaptureFileError) as caught:
            readCaptureFile(path, "", consumer)
        message = str(caught.value)
        assert message.startswith((path + ": ", f"cannot read {path}"))
        assert "\n" not in message
        for word in words:
            assert word in message, message
        return consumer, caught.value


def packets(consumer: RecordingConsumer) -> list[tuple[int, bytes, int, int, int]]:
    return [(t, data, *meta) for t, data, meta in consumer.packets]


class PcapTests(Files, SynchronousTestCase):
    def test_microsecondsLittleEndian(self) -> None:
        """
        A little-endian microsecond pcap file gives each packet's time in
        nanoseconds, its bytes and wire length, no interface and no
        direction; the consumer learns the link type and snapshot length.
        """
        data = [udpFrame(7), udpFrame(8)]
        consumer, stats = self.read(
            pcapFile([(SECOND, 123456, data[0]), (SECOND + 1, 999999, data[1])], snaplen=1500)
        )
        assert consumer.info is not None
        assert (consumer.info.linktype, consumer.info.snaplen) == (1, 1500)
        assert consumer.info.method == "pcap file"
        assert packets(consumer) == [
            (SECOND * 10**9 + 123456000, data[0], len(data[0]) + 4, 0, DIRECTION_UNKNOWN),
            ((SECOND + 1) * 10**9 + 999999000, data[1], len(data[1]) + 4, 0, DIRECTION_UNKNOWN),
        ]
        assert stats == OfflineStatistics(2, 2, 2)
        assert consumer.stopped == 1
        assert consumer.statistics is None

    def test_nanosecondsBigEndian(self) -> None:
        """
        A big-endian nanosecond file is read to the nanosecond.
        """
        consumer, _ = self.read(
            pcapFile([(SECOND, 123456789, udpFrame(7))], order=">", nano=True, linktype=101)
        )
        assert consumer.info is not None and consumer.info.linktype == 101
        assert consumer.packets[0][0] == SECOND * 10**9 + 123456789

    def test_microsecondsBigEndianNanosecondsLittleEndian(self) -> None:
        """
        The two other magic numbers and byte orders.
        """
        big, _ = self.read(pcapFile([(SECOND, 5, b"x")], order=">"))
        little, _ = self.read(pcapFile([(SECOND, 5, b"x")], nano=True))
        assert big.packets[0][0] == SECOND * 10**9 + 5000
        assert little.packets[0][0] == SECOND * 10**9 + 5

    def test_snaplenZero(self) -> None:
        """
        A snapshot length of 0 stands for libpcap's maximum.
        """
        consumer, _ = self.read(pcapFile([(SECOND, 0, b"x")], snaplen=0))
        assert consumer.info is not None and consumer.info.snaplen == 262144

    def test_capturedBeyondSnaplen(self) -> None:
        """
        A packet longer than the file's snapshot length is cut to it, as
        libpcap does.
        """
        consumer, _ = self.read(pcapFile([(SECOND, 0, bytes(range(200)))], snaplen=100))
        assert consumer.packets[0][1] == bytes(range(100))
        assert consumer.packets[0][2].wireLength == 204

    def test_empty(self) -> None:
        """
        A file of no packets is a capture of no packets.
        """
        consumer, stats = self.read(pcapFile([]))
        assert stats == OfflineStatistics(0, 0, 0)
        assert consumer.info is not None and consumer.stopped == 1

    def test_badVersion(self) -> None:
        self.fails(pcapFile([], version=(3, 0)), "unsupported pcap version 3.0")

    def test_fractionOfASecondOrMore(self) -> None:
        """
        A fraction of a second or more (which libpcap passes on) is carried
        into the seconds; past 2106 it is an error.
        """
        consumer, _ = self.read(pcapFile([(SECOND, 2_500_000, b"x")]))
        assert consumer.packets[0][0] == (SECOND + 2) * 10**9 + 500_000_000
        self.fails(pcapFile([(0xFFFFFFFF, 1_000_000, b"x")]), "packet 1", "outside 1970-2106")

    def test_linkTypeFlags(self) -> None:
        """
        The upper bits of the link type field (FCS information) are not the
        link type.
        """
        consumer, _ = self.read(pcapFile([], linktype=0x14000001))
        assert consumer.info is not None and consumer.info.linktype == 1


class PcapngTests(Files, SynchronousTestCase):
    def test_littleEndian(self) -> None:
        """
        Enhanced packet blocks give microsecond times by default, their
        bytes, wire length, interface (1: the first) and the direction of
        their flags; the interface's name reaches the consumer.
        """
        data = udpFrame(7)
        consumer, _ = self.read(
            shb()
            + idb(snaplen=1500, name="eth0")
            + epb(micro(SECOND, 42), data, flags=0x2, wire=100)
        )
        info = consumer.info
        assert info is not None
        assert (info.linktype, info.snaplen, info.interface) == (1, 1500, "eth0")
        assert info.interfaceName(1) == "eth0"
        assert info.method == "pcapng file"
        assert packets(consumer) == [(SECOND * 10**9 + 42000, data, 100, 1, PACKET_OUTGOING)]

    def test_bigEndian(self) -> None:
        """
        A big-endian section reads the same.
        """
        data = udpFrame(7)
        consumer, _ = self.read(
            shb(">") + idb(name="lo", order=">") + epb(micro(SECOND, 1), data, order=">")
        )
        assert packets(consumer) == [(SECOND * 10**9 + 1000, data, len(data), 1, -1)]
        assert consumer.info is not None and consumer.info.snaplen == 262144

    def test_resolutions(self) -> None:
        """
        if_tsresol in powers of 10 (nanoseconds, milliseconds) and of 2, and
        if_tsoffset in seconds.
        """
        cases = [
            (9, SECOND * 10**9 + 123456789, SECOND * 10**9 + 123456789),
            (3, SECOND * 1000 + 5, SECOND * 10**9 + 5_000_000),
            (0x80 | 10, SECOND * 1024 + 512, SECOND * 10**9 + 500_000_000),
            (0x80 | 30, SECOND * 2**30 + 1, SECOND * 10**9 + 0),
        ]
        for resolution, stamp, expected in cases:
            consumer, _ = self.read(shb() + idb(tsresol=resolution) + epb(stamp, b"x"))
            assert consumer.packets[0][0] == expected, resolution
        consumer, _ = self.read(shb() + idb(tsoffset=100) + epb(micro(SECOND, 7), b"x"))
        assert consumer.packets[0][0] == (SECOND + 100) * 10**9 + 7000

    def test_directions(self) -> None:
        """
        epb_flags: inbound with its reception type, outbound, or none.
        """
        flags = [0x1, 0x5, 0x9, 0xD, 0x11, 0x2, 0x0, None]
        expected = [
            PACKET_HOST,
            PACKET_HOST,
            PACKET_MULTICAST,
            PACKET_BROADCAST,
            PACKET_OTHERHOST,
            PACKET_OUTGOING,
            DIRECTION_UNKNOWN,
            DIRECTION_UNKNOWN,
        ]
        body = b"".join(epb(micro(SECOND, i), b"x", flags=f) for i, f in enumerate(flags))
        consumer, _ = self.read(shb() + idb() + body)
        assert [meta.direction for _, _, meta in consumer.packets] == expected

    def test_interfaces(self) -> None:
        """
        Packets of several interfaces of one link type keep their
        interface's index and name.
        """
        consumer, _ = self.read(
            shb()
            + idb(name="eth0")
            + idb(name="eth1", snaplen=64)
            + epb(micro(SECOND, 1), b"a", interface=1)
            + epb(micro(SECOND, 2), b"b", interface=0)
            + epb(micro(SECOND, 3), bytes(100), interface=1)
        )
        assert [meta.interfaceIndex for _, _, meta in consumer.packets] == [2, 1, 2]
        assert consumer.info is not None
        assert consumer.info.interfaceName(2) == "eth1"
        # Each interface keeps its own snapshot length.
        assert len(consumer.packets[2][1]) == 64

    def test_sections(self) -> None:
        """
        A second section (here of the other byte order) numbers its
        interfaces from 0 again; they follow the first section's.
        """
        consumer, _ = self.read(
            shb()
            + idb(name="a")
            + epb(micro(SECOND, 1), b"1")
            + shb(">")
            + idb(name="b", order=">")
            + epb(micro(SECOND, 2), b"2", order=">")
        )
        assert [(data, meta.interfaceIndex) for _, data, meta in consumer.packets] == [
            (b"1", 1),
            (b"2", 2),
        ]
        assert consumer.info is not None and consumer.info.interfaceName(2) == "b"

    def test_simpleAndObsoletePackets(self) -> None:
        """
        A simple packet block (no time, the first interface, cut to its
        snapshot length) and the obsolete packet block are read.
        """
        consumer, _ = self.read(
            shb()
            + idb(snaplen=4)
            + spb(b"abcd", 10)
            + opb(micro(SECOND, 3), b"xyz")
            + spb(b"ab", 2)
        )
        assert packets(consumer) == [
            (0, b"abcd", 10, 1, DIRECTION_UNKNOWN),
            (SECOND * 10**9 + 3000, b"xyz", 3, 1, DIRECTION_UNKNOWN),
            (0, b"ab", 2, 1, DIRECTION_UNKNOWN),
        ]

    def test_unknownBlocks(self) -> None:
        """
        Blocks of other types (statistics, name resolution, custom, unknown)
        are skipped, before the first interface too.
        """
        consumer, _ = self.read(
            shb()
            + block(0xB0B, b"xxxx")
            + idb()
            + block(4, b"\0\0\0\0")
            + epb(micro(SECOND, 1), b"a")
            + block(5, bytes(12))
            + block(0x40000BAD, bytes(8))
        )
        assert [data for _, data, _ in consumer.packets] == [b"a"]

    def test_otherLinkType(self) -> None:
        """
        An interface of another link type than the first is refused, as
        libpcap does, after the packets before it.
        """
        consumer, _error = self.fails(
            shb() + idb(1) + epb(micro(SECOND, 1), b"a") + idb(113, name="any"),
            "interface 2 (any",
            "link type 113",
            "first has 1",
        )
        assert len(consumer.packets) == 1

    def test_noInterface(self) -> None:
        self.fails(shb(), "without an interface description block")

    def test_packetBeforeInterface(self) -> None:
        """
        An enhanced packet block before any interface is refused.
        """
        self.fails(shb() + epb(0, b"a"), "packet 1", "before any interface description block")

    def test_interfaceOutOfRange(self) -> None:
        consumer, _ = self.fails(
            shb() + idb() + epb(0, b"a") + epb(0, b"b", interface=3),
            "packet 2",
            "of interface 3",
            "describes 1 interface",
        )
        assert len(consumer.packets) == 1

    def test_badVersion(self) -> None:
        self.fails(shb(version=(2, 0)) + idb(), "unsupported pcapng version 2.0")

    def test_badByteOrder(self) -> None:
        data = bytearray(shb() + idb())
        data[8:12] = b"\x01\x02\x03\x04"
        self.fails(bytes(data), "bad byte-order magic 0x01020304")


class DamageTests(Files, SynchronousTestCase):
    """
    Every damaged file gives one line naming the file and the damage, after
    the packets before it, as tcpdump prints them before its error.
    """

    def test_missing(self) -> None:
        with pytest.raises(CaptureFileError, match=r"^cannot read /nonexistent/x: no such file"):
            readCaptureFile("/nonexistent/x", "", RecordingConsumer())

    def test_directory(self) -> None:
        path = os.path.dirname(self.write(b""))
        with pytest.raises(CaptureFileError, match=f"^cannot read {path}: is a directory$"):
            readCaptureFile(path, "", RecordingConsumer())

    def test_noPermission(self) -> None:
        """
        A file that cannot be opened says why (faked: root may read all).
        """

        real = builtins.open

        def refuse(path: Any, *args: Any, **kwargs: Any) -> Any:
            if path == "/x":
                raise PermissionError(13, "Permission denied")
            return real(path, *args, **kwargs)

        self.patch(builtins, "open", refuse)
        with pytest.raises(CaptureFileError, match=r"^cannot read /x: permission denied$"):
            readCaptureFile("/x", "", RecordingConsumer())

    def test_empty(self) -> None:
        self.fails(b"", "empty file")

    def test_badMagic(self) -> None:
        self.fails(b"GET / HTTP/1.1\r\n", "not a pcap or pcapng capture", "0x47455420")

    def test_truncatedHeader(self) -> None:
        self.fails(pcapFile([])[:10], "truncated pcap file header", "24 bytes needed, 10 present")
        self.fails(b"\xd4\xc3", "truncated file of 2 bytes")

    def test_truncatedRecord(self) -> None:
        """
        A record cut short: the packets before are delivered, the consumer
        stopped, and the error carries the statistics.
        """
        data = pcapFile([(SECOND, 0, udpFrame(7))] * 3)
        consumer, error = self.fails(data[:-10], "truncated packet 3", "needed", "present")
        assert len(consumer.packets) == 2
        assert consumer.stopped == 1
        assert error.statistics == OfflineStatistics(2, 2, 2)
        self.fails(data[: 24 + 2 * 63 + 5], "truncated header of packet 3")

    def test_absurdCaptureLength(self) -> None:
        data = pcapFile([(SECOND, 0, b"x")])
        data += struct.pack("<IIII", SECOND, 0, 0x7FFFFFFF, 60)
        consumer, _ = self.fails(data, "packet 2", "2147483647 captured bytes", "maximum")
        assert len(consumer.packets) == 1

    def test_blockLengthNotMultipleOf4(self) -> None:
        data = bytearray(shb() + idb() + epb(0, b"a"))
        struct.pack_into("<I", data, len(shb()) + len(idb()) + 4, 33)
        self.fails(bytes(data), "length of 33", "multiple of 4")

    def test_zeroLengthBlock(self) -> None:
        self.fails(shb() + idb() + struct.pack("<II", 6, 0), "length of 0")

    def test_hugeBlock(self) -> None:
        """
        A block claiming more than the limit is refused before anything is
        allocated for it.
        """
        tracemalloc.start()
        try:
            self.fails(shb() + idb() + struct.pack("<II", 6, 0xFFFFFFF0), "maximum")
            self.fails(shb() + idb() + struct.pack("<II", 6, MAXIMUM_BLOCK - 4), "truncated")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 4 * 1024 * 1024

    def test_trailerMismatch(self) -> None:
        data = bytearray(shb() + idb() + epb(0, b"a"))
        data[-4:] = struct.pack("<I", 40)
        self.fails(bytes(data), "its length is 36 at the start and 40 at the end")

    def test_truncatedBlock(self) -> None:
        consumer, _ = self.fails(
            shb() + idb() + epb(0, b"a") + epb(0, b"b")[:20], "truncated enhanced packet block"
        )
        assert len(consumer.packets) == 1

    def test_packetLongerThanBlock(self) -> None:
        data = bytearray(epb(0, b"abcd"))
        struct.pack_into("<I", data, 20, 200)
        self.fails(shb() + idb() + bytes(data), "claims 200 captured bytes", "holds 4")

    def test_optionPastBlock(self) -> None:
        body = struct.pack("<HHI", 1, 0, 0) + struct.pack("<HH", 2, 200) + b"abcd"
        self.fails(shb() + block(1, body), "option 2 runs past the end")

    def test_timestampOutOfRange(self) -> None:
        self.fails(shb() + idb(tsoffset=-(10**12)) + epb(0, b"a"), "outside 1970-2106")


class ReadTests(Files, SynchronousTestCase):
    def test_filter(self) -> None:
        """
        Only packets matching the expression (compiled by libpcap for the
        file's link type) are delivered.
        """
        try:
            loadLibrary()
        except FilterError:
            need(False, "libpcap is not installed")
        data = pcapFile(
            [(SECOND, i, frame) for i, frame in enumerate([udpFrame(7), tcpFrame(7), udpFrame(9)])]
        )
        consumer, stats = self.read(data, "udp")
        assert [t % 10**9 for t, _, _ in consumer.packets] == [0, 2000]
        assert stats == OfflineStatistics(3, 2, 2)
        consumer, stats = self.read(data, "udp port 9 or tcp")
        assert stats.matched == 2

    def test_badFilter(self) -> None:
        """
        An expression that does not compile for the file's link type is
        refused with libpcap's message, before the consumer starts.
        """
        consumer = RecordingConsumer()
        path = self.write(pcapFile([(SECOND, 0, b"x")], linktype=101))
        with pytest.raises(FilterError, match="bad filter 'ether host 1:2:3:4:5:6' for link"):
            readCaptureFile(path, "ether host 1:2:3:4:5:6", consumer)
        assert consumer.info is None and consumer.stopped == 0

    def test_count(self) -> None:
        """
        With a count, reading stops after that many matching packets.
        """
        data = pcapFile([(SECOND, i, udpFrame(7 + i % 2)) for i in range(10)])
        consumer, stats = self.read(data, "udp port 8", count=3)
        assert [t % 10**9 for t, _, _ in consumer.packets] == [1000, 3000, 5000]
        assert stats == OfflineStatistics(6, 3, 3)
        assert consumer.stopped == 1

    def test_flushes(self) -> None:
        """
        The consumer is flushed every C{flushEvery} packets.
        """
        data = pcapFile([(SECOND, i, b"x") for i in range(10)])
        consumer, _ = self.read(data, flushEvery=3)
        assert consumer.flushes == 3

    def test_consumerComplete(self) -> None:
        """
        A consumer that wants no more packets (its files are written) ends
        the read at its flush, as a count does, and says why.
        """
        consumer = RecordingConsumer()
        consumer.flushError = CaptureComplete("maximum file limit reached: 2")
        path = self.write(pcapFile([(SECOND, i, b"x") for i in range(10)]))
        stats = readCaptureFile(path, "", consumer, flushEvery=3)
        assert stats == OfflineStatistics(3, 3, 3, 0, "maximum file limit reached: 2")
        assert consumer.stopped == 1

    def test_outputFails(self) -> None:
        """
        When the consumer's output fails, the consumer is stopped and the
        failure raised.
        """
        consumer = RecordingConsumer()
        consumer.flushError = OutputError("cannot write x: no space left on device")
        path = self.write(pcapFile([(SECOND, i, b"x") for i in range(10)]))
        with pytest.raises(OutputError, match="no space left"):
            readCaptureFile(path, "", consumer, flushEvery=3)
        assert consumer.stopped == 1

    def test_consumerFails(self) -> None:
        """
        A packet the consumer fails on is counted, and reading goes on.
        """
        consumer = RecordingConsumer(failOn=2)
        path = self.write(pcapFile([(SECOND, i, b"x") for i in range(3)]))
        stats = readCaptureFile(path, "", consumer)
        assert stats == OfflineStatistics(3, 3, 2, 1)
        self.flushLoggedErrors(ValueError)

    def test_standardInput(self) -> None:
        """
        C{-} reads standard input, which is not closed afterwards.
        """
        stdin = io.BufferedReader(io.BytesIO(pcapFile([(SECOND, 0, b"x")])))
        consumer = RecordingConsumer()
        stats = readCaptureFile("-", "", consumer, stdin=stdin)
        assert stats.delivered == 1
        assert not stdin.closed
        with pytest.raises(CaptureFileError, match=r"^standard input: empty file"):
            readCaptureFile("-", "", consumer, stdin=io.BytesIO(b""))

    def test_pipe(self) -> None:
        """
        A named pipe is read as its writer sends, a few bytes at a time.
        """
        directory = Path(tempfile.mkdtemp(prefix="echod-capturefile-"))
        self.addCleanup(shutil.rmtree, directory, True)
        fifo = directory / "fifo"
        os.mkfifo(fifo)
        data = pcapFile([(SECOND, i, udpFrame(7)) for i in range(20)])

        def feed() -> None:
            with open(fifo, "wb", buffering=0) as f:
                for i in range(0, len(data), 37):
                    f.write(data[i : i + 37])
                    time.sleep(0.0005)

        writer = threading.Thread(target=feed)
        writer.start()
        consumer = RecordingConsumer()
        try:
            stats = readCaptureFile(str(fifo), "", consumer)
        finally:
            writer.join(10)
        assert stats.delivered == 20
        assert [t % 10**9 for t, _, _ in consumer.packets] == [i * 1000 for i in range(20)]

    def test_reader(self) -> None:
        """
        The reader alone: its packets, and how many it read.
        """
        reader = CaptureFileReader(io.BytesIO(shb() + idb() + epb(5, b"a")), "x")
        info = reader.open()
        assert info.linktype == 1 and reader.format == "pcapng"
        assert list(reader.packets()) == [(0, 5000, b"a", 1, 1, DIRECTION_UNKNOWN)]
        assert reader.packetsRead == 1
        reader.close()

    def test_openCaptureFile(self) -> None:
        reader = openCaptureFile(self.write(pcapFile([])))
        self.addCleanup(reader.close)
        assert reader.format == "pcap"


class OfflineFilterTests(SynchronousTestCase):
    def setUp(self) -> None:
        try:
            loadLibrary()
        except FilterError:
            need(False, "libpcap is not installed")

    def test_matches(self) -> None:
        """
        libpcap's interpreter decides, with the packet's wire length.
        """
        f = OfflineFilter("udp port 7 and len > 100", 1, 262144)
        self.addCleanup(f.close)
        small = udpFrame(7)
        assert not f.matches(small, len(small))
        assert f.matches(small, 101)
        assert not f.matches(udpFrame(8), 101)
        assert not f.matchesAll

    def test_empty(self) -> None:
        """
        The empty expression matches everything without libpcap.
        """
        f = OfflineFilter("  ", 999, 0, library=object())  # type: ignore[arg-type]
        assert f.matchesAll and f.matches(b"", 0)

    def test_otherLinkTypes(self) -> None:
        """
        Raw IP files (link type 101, DLT 12 for libpcap) are filtered too.
        """
        f = OfflineFilter("udp", 101, 65535)
        self.addCleanup(f.close)
        packet = frames.ipv4(frames.udp(1, 2, b"x"), 17)
        assert f.matches(packet, len(packet))

    def test_close(self) -> None:
        """
        Closing frees the program, once; it cannot be used after.
        """
        f = OfflineFilter("tcp", 1, 262144)
        f.close()
        f.close()
        with pytest.raises(ValueError):
            f.matches(b"", 0)

    def test_bad(self) -> None:
        with pytest.raises(FilterError, match="bad filter 'port sevenn' for link type 1: unknown"):
            OfflineFilter("port sevenn", 1, 262144)
        with pytest.raises(FilterError, match="NUL"):
            OfflineFilter("tcp\0", 1, 262144)


# Fuzzing -------------------------------------------------------------------

_VALID = [
    shb()
    + idb(name="eth0", tsresol=9)
    + epb(SECOND * 10**9, udpFrame(7), flags=0x5)
    + spb(b"abcd", 4)
    + shb(">")
    + idb(order=">")
    + epb(micro(SECOND, 1), tcpFrame(7), order=">")
    + opb(micro(SECOND, 2), b"xy"),
    pcapFile([(SECOND, i, udpFrame(7 + i)) for i in range(3)]),
]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(_VALID)))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "word", "cut", "insert"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "word" and len(data) >= 4:
            at = min(at, len(data) - 4)
            value = draw(st.sampled_from([0, 1, 3, 0xFFFFFFFF, 0x7FFFFFFF, 0x10000000, 12, 13]))
            data[at : at + 4] = value.to_bytes(4, draw(st.sampled_from(["little", "big"])))
        elif kind == "cut":
            del data[at:]
        else:
            data[at:at] = draw(st.binary(max_size=8))
    return bytes(data)


@settings(
    max_examples=examples(2000),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(mutated())
def test_fuzz(data: bytes) -> None:
    """
    A damaged file either reads or fails with a L{UserError} (one line),
    whatever the damage; nothing else escapes and nothing large is read.
    """
    consumer = RecordingConsumer()
    reader = CaptureFileReader(io.BytesIO(data), "fuzz")
    try:
        reader.open()
        for packet in reader.packets():
            assert len(packet[2]) <= len(data)
            consumer.packetReceived(*packet)
    except UserError as e:
        assert isinstance(e, CaptureFileError)
        assert str(e).startswith("fuzz: ") and "\n" not in str(e)
    assert len(reader._buffer) <= max(len(data), 1)
