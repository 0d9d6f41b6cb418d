"""
pcapng output: the blocks byte by byte, each packet's direction, the
statistics block at the end, rotation, and the round trip through echod's
own reader.  tshark reads these files in tests/e2e/test_sniff_files.py.
"""

from __future__ import annotations

import io
import shutil
import struct
import tempfile
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from echod.config import SniffConfig
from echod.sniff.bpf import LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL2
from echod.sniff.capturefile import CaptureFileReader
from echod.sniff.pcapng import (
    EPB_FLAGS,
    PcapngSink,
    interfaceDescriptionBlock,
    sectionHeaderBlock,
    writerName,
)
from echod.sniff.reader import IPacketConsumer
from echod.sniff.service import makeConsumer
from echod.sniff.sinks import RotatingOutput
from echod.sniff.source import (
    DIRECTION_UNKNOWN,
    PACKET_BROADCAST,
    PACKET_HOST,
    PACKET_MULTICAST,
    PACKET_OTHERHOST,
    PACKET_OUTGOING,
    CaptureInfo,
    CaptureStatistics,
)
from tests import frames

SECOND = 1_700_000_000
INFO = CaptureInfo("eth0", LINKTYPE_ETHERNET, 65535, {2: "eth0"}, "test")
START = 1_699_999_990 * 10**9 + 5
END = 1_700_000_020 * 10**9 + 7


def blocks(data: bytes) -> list[tuple[int, bytes]]:
    """
    The (type, body) of each little-endian block, checking both lengths.
    """
    out = []
    at = 0
    while at < len(data):
        kind, length = struct.unpack_from("<II", data, at)
        assert length % 4 == 0
        assert struct.unpack_from("<I", data, at + length - 4)[0] == length
        out.append((kind, data[at + 8 : at + length - 4]))
        at += length
    assert at == len(data)
    return out


def options(data: bytes) -> dict[int, bytes]:
    found = {}
    at = 0
    while at < len(data):
        code, size = struct.unpack_from("<HH", data, at)
        if code == 0:
            assert at + 4 == len(data)
            break
        found[code] = data[at + 4 : at + 4 + size]
        at += 4 + (size + 3) // 4 * 4
    return found


class Clock:
    def __init__(self) -> None:
        self.times = [START, END]

    def __call__(self) -> int:
        return self.times.pop(0)


class PcapngSinkTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="echod-pcapng-"))
        self.addCleanup(shutil.rmtree, self.directory, True)

    def sink(self, nanoseconds: bool = False, rotateBytes: int = 0) -> tuple[PcapngSink, Path]:
        path = self.directory / "out.pcapng"
        output = RotatingOutput(str(path), rotateBytes)
        sink = PcapngSink(output, nanoseconds, clock=Clock())
        return sink, path

    def test_interface(self) -> None:
        assert verifyObject(IPacketConsumer, PcapngSink(RotatingOutput("-")))

    def test_header(self) -> None:
        """
        Each file starts with a little-endian section header (version 1.0,
        unknown length, naming echod) and one interface (its name, link
        type, snapshot length and time stamp resolution).
        """
        found = blocks(sectionHeaderBlock() + interfaceDescriptionBlock("any", 276, 96, True))
        (shbType, shb), (idbType, idb) = found
        assert shbType == 0x0A0D0D0A
        assert struct.unpack_from("<IHHq", shb) == (0x1A2B3C4D, 1, 0, -1)
        assert options(shb[16:]) == {4: writerName().encode()}
        assert writerName().startswith("echod ")
        assert idbType == 1
        assert struct.unpack_from("<HHI", idb) == (276, 0, 96)
        assert options(idb[8:]) == {2: b"any", 9: b"\x09"}
        micro = blocks(interfaceDescriptionBlock("", 1, 65535))[0][1]
        assert options(micro[8:]) == {9: b"\x06"}

    def test_packets(self) -> None:
        """
        Each packet is an enhanced packet block of interface 0 with its
        time in microseconds, lengths, padded bytes and direction flags.
        """
        sink, path = self.sink()
        sink.captureStarted(INFO)
        for length in range(5):
            sink.packetReceived(SECOND, 123456789, b"x" * length, 100, 2, PACKET_HOST)
        sink.captureStopped()
        found = blocks(path.read_bytes())
        epbs = [body for kind, body in found if kind == 6]
        assert len(epbs) == 5
        for length, body in enumerate(epbs):
            interface, high, low, caplen, wire = struct.unpack_from("<IIIII", body)
            assert interface == 0
            assert (high << 32 | low) == SECOND * 10**6 + 123456
            assert (caplen, wire) == (length, 100)
            padded = (length + 3) // 4 * 4
            assert body[20 : 20 + padded] == b"x" * length + b"\0" * (padded - length)
            assert options(body[20 + padded :]) == {2: struct.pack("<I", 0x5)}

    def test_nanoseconds(self) -> None:
        sink, path = self.sink(nanoseconds=True)
        sink.captureStarted(INFO)
        sink.packetReceived(SECOND, 123456789, b"abcd", 4, 0, DIRECTION_UNKNOWN)
        sink.captureStopped()
        body = next(b for kind, b in blocks(path.read_bytes()) if kind == 6)
        high, low = struct.unpack_from("<II", body, 4)
        assert (high << 32 | low) == SECOND * 10**9 + 123456789
        # No direction, no flags option.
        assert body[20 + 4 :] == b""

    def test_otherDirection(self) -> None:
        """
        A packet type pcapng has no flags for is written without flags.
        """
        sink, path = self.sink()
        sink.captureStarted(INFO)
        sink.packetReceived(SECOND, 0, b"abcde", 5, 0, 7)
        sink.captureStopped()
        body = next(b for kind, b in blocks(path.read_bytes()) if kind == 6)
        assert body[20:] == b"abcde\0\0\0"

    def test_directionFlags(self) -> None:
        """
        Inbound with the reception type of Linux's packet types, outbound.
        """
        assert EPB_FLAGS == {
            PACKET_HOST: 0b00101,
            PACKET_BROADCAST: 0b01101,
            PACKET_MULTICAST: 0b01001,
            PACKET_OTHERHOST: 0b10001,
            PACKET_OUTGOING: 0b00010,
        }

    def test_roundTrip(self) -> None:
        """
        echod's reader gives back every packet as it was written: time (to
        the resolution written), bytes, wire length, direction.
        """
        for nanoseconds in (False, True):
            sink, path = self.sink(nanoseconds)
            sent = []
            sink.captureStarted(INFO)
            for i, direction in enumerate(
                [
                    PACKET_HOST,
                    PACKET_BROADCAST,
                    PACKET_MULTICAST,
                    PACKET_OTHERHOST,
                    PACKET_OUTGOING,
                    DIRECTION_UNKNOWN,
                ]
            ):
                data = frames.ethernet(frames.ipv4(frames.udp(1, 7, bytes(i)), 17))
                sink.packetReceived(SECOND + i, 987654321, data, len(data) + i, 2, direction)
                fraction = 987654321 if nanoseconds else 987654000
                sent.append((SECOND + i, fraction, data, len(data) + i, 1, direction))
            sink.captureStopped(CaptureStatistics(6, 0))
            reader = CaptureFileReader(io.BytesIO(path.read_bytes()), str(path))
            info = reader.open()
            assert (info.linktype, info.snaplen, info.interfaceName(1)) == (1, 65535, "eth0")
            assert list(reader.packets()) == sent

    def test_statistics(self) -> None:
        """
        The capture ends with an interface statistics block as dumpcap
        writes it: when it started and ended, packets received by the
        output, dropped by the kernel, accepted by its filter.
        """
        sink, path = self.sink()
        sink.captureStarted(INFO)
        sink.packetReceived(SECOND, 0, b"abcd", 4, 0, PACKET_HOST)
        sink.captureStopped(CaptureStatistics(received=12, dropped=5))
        kind, body = blocks(path.read_bytes())[-1]
        assert kind == 5
        interface, high, low = struct.unpack_from("<III", body)
        assert (interface, high << 32 | low) == (0, END // 1000)
        found = options(body[12:])

        def stamp(ns: int) -> bytes:
            return struct.pack("<II", (ns // 1000) >> 32, (ns // 1000) & 0xFFFFFFFF)

        assert found == {
            2: stamp(START),
            3: stamp(END),
            4: struct.pack("<Q", 1),
            5: struct.pack("<Q", 5),
            6: struct.pack("<Q", 12),
        }
        assert sink.output.written == 1

    def test_statisticsUnknown(self) -> None:
        """
        Without a count of drops (Windows), the block has none; without the
        kernel's counters at all (packets read from a file), there is no
        statistics block.
        """
        sink, path = self.sink()
        sink.captureStarted(INFO)
        sink.captureStopped(CaptureStatistics(received=3, dropped=None))
        found = options(blocks(path.read_bytes())[-1][1][12:])
        assert sorted(found) == [2, 3, 4, 6]
        sink, path = self.sink()
        sink.captureStarted(INFO)
        sink.packetReceived(SECOND, 0, b"a", 1, 0, PACKET_HOST)
        sink.captureStopped()
        assert [kind for kind, _ in blocks(path.read_bytes())] == [0x0A0D0D0A, 1, 6]

    def test_rotation(self) -> None:
        """
        Every file of a rotation starts with the section and interface and
        reads alone; the statistics end the last one.
        """
        sink, _path = self.sink(rotateBytes=400)
        info = CaptureInfo("any", LINKTYPE_LINUX_SLL2, 262144)
        sink.captureStarted(info)
        for i in range(10):
            sink.packetReceived(SECOND, i, bytes(100), 100, 1, PACKET_OUTGOING)
            sink.flush()
        sink.captureStopped(CaptureStatistics(10, 0))
        names = sink.output.names
        assert len(names) > 2
        total = 0
        for name in names:
            data = Path(name).read_bytes()
            kinds = [kind for kind, _ in blocks(data)]
            assert kinds[:2] == [0x0A0D0D0A, 1]
            reader = CaptureFileReader(io.BytesIO(data), name)
            assert reader.open().interface == "any"
            total += len(list(reader.packets()))
            assert (kinds[-1] == 5) == (name == names[-1])
        assert total == 10

    def test_timeRotation(self) -> None:
        """
        Files started by time (C{-G}) begin with the section and interface
        too.
        """
        now = [1000.0]
        output = RotatingOutput(
            str(self.directory / "t-%S.pcapng"), rotateSeconds=10, clock=lambda: now[0]
        )
        sink = PcapngSink(output, clock=Clock())
        sink.captureStarted(INFO)
        for i in range(3):
            sink.packetReceived(SECOND, i, b"abcd", 4, 0, PACKET_HOST)
            sink.flush()
            now[0] += 11
        sink.captureStopped(CaptureStatistics(3, 0))
        assert len(output.names) == 3
        for name in output.names:
            kinds = [kind for kind, _ in blocks(Path(name).read_bytes())]
            assert kinds[:3] == [0x0A0D0D0A, 1, 6]

    def test_standardOutput(self) -> None:
        stdout = io.BytesIO()
        sink = PcapngSink(RotatingOutput("-", stdout=stdout), clock=Clock())
        sink.captureStarted(INFO)
        sink.packetReceived(SECOND, 0, b"a", 1, 0, PACKET_HOST)
        sink.captureStopped(CaptureStatistics(1, 0))
        assert [kind for kind, _ in blocks(stdout.getvalue())] == [0x0A0D0D0A, 1, 6, 5]

    def test_makeConsumer(self) -> None:
        """
        [sniff] format = "pcapng" makes this sink, with the precision asked.
        """
        consumer = makeConsumer(SniffConfig(format="pcapng", precision="nano"), None)
        assert isinstance(consumer, PcapngSink) and consumer.nanoseconds
