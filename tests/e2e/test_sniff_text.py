"""
The text sink's tcpdump options against tcpdump 4.99.3 itself: the same
frames are written to a pcap file (by L{PcapSink}) that C{tcpdump -nn -S -r}
prints with C{-X}, C{-XX}, C{-x}, C{-xx}, C{-A}, C{-AA}, C{-e}, C{-q}, C{-v},
C{-t}...C{-ttttt} and C{--time-stamp-precision=nano}, and given to a
L{SummarySink} in the matching L{TextStyle}: every line must be the same,
byte for byte.  Both run with TZ=UTC.

The frames: Ethernet IPv4 TCP (with and without options and payload, a
bare ACK, with right and wrong checksums), UDP with binary and text
payloads of odd and even lengths (CR/LF included), ICMP echo and port
unreachable, IPv6 TCP, UDP and ICMPv6 echo, ARP, an 802.1Q tagged frame,
fragments and IPv6 extension headers, C{LINUX_SLL2} frames as C{-i any}
captures them, raw IP and Linux cooked (v1) captures, random TCP segments
(flags, options good and bad), and frames of each kind cut by the snapshot
length at every length.
"""

from __future__ import annotations

import io
import os
import random
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from echod.sniff.bpf import (
    LINKTYPE_ETHERNET,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_RAW,
)
from echod.sniff.sinks import PcapSink, RotatingOutput, SummarySink
from echod.sniff.source import PACKET_HOST, PACKET_OUTGOING, CaptureInfo
from echod.sniff.text import TextStyle
from tests import frames
from tests.classicbpf import packSLL2
from tests.environment import requireTool

pytestmark = [pytest.mark.e2e]

START = 1_700_000_000
SNAPLEN = 65535


def _sum(data: bytes) -> int:
    """
    The one's complement sum of 16-bit words, the textbook way (the
    decoder's own is not used to make the test's frames).
    """
    if len(data) % 2:
        data += b"\0"
    total = 0
    for index in range(0, len(data), 2):
        total += (data[index] << 8) | data[index + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return total


def _put(data: bytearray, at: int, value: int) -> None:
    data[at : at + 2] = struct.pack(">H", value)


def checksummed(packet: bytes) -> bytes:
    """
    An IPv4 or IPv6 packet of L{frames} with its checksums filled in, as a
    sender fills them.
    """
    data = bytearray(packet)
    if data[0] >> 4 == 4:
        headerLength = (data[0] & 0x0F) * 4
        _put(data, 10, 0xFFFF - _sum(bytes(data[:headerLength])))
        protocol = data[9]
        start = headerLength
        pseudo = bytes(data[12:20]) + struct.pack(">HH", protocol, len(data) - start)
    else:
        protocol = data[6]
        start = 40
        pseudo = bytes(data[8:40]) + struct.pack(">IxxxB", len(data) - start, protocol)
    field = {6: 16, 17: 6, 1: 2, 58: 2}[protocol]
    if protocol == 1:
        pseudo = b""
    _put(data, start + field, 0xFFFF - _sum(pseudo + bytes(data[start:])))
    return bytes(data)


def withHeader(packet: bytes, first: int | None = None, tos: int | None = None) -> bytes:
    """
    C{packet} with its IPv6 first word (class and flow label) or IPv4 type
    of service changed.
    """
    data = bytearray(packet)
    if first is not None:
        data[0:4] = struct.pack(">I", first)
    if tos is not None:
        data[1] = tos
    return bytes(data)


def _v4(segment: bytes, protocol: int, **fields: object) -> bytes:
    return frames.ipv4(segment, protocol, **fields)  # type: ignore[arg-type]


SYN_OPTIONS = bytes.fromhex("020405b40402080a43be5bcd000000000103030a")
HTTPISH = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nab\rc\r\n\r"
BINARY = bytes(range(0, 256, 7))


def ethernetPackets() -> list[tuple[bytes, int]]:
    """
    Ethernet frames and their lengths on the wire.
    """
    tcp = frames.tcp
    packets = [
        _v4(
            tcp(40000, 7, 0x18, seq=1, ack=2, payload=b"hello"), 6, src="127.0.0.1", dst="127.0.0.1"
        ),
        checksummed(_v4(tcp(40000, 7, 0x02, seq=7, options=SYN_OPTIONS), 6, ident=4660)),
        checksummed(_v4(tcp(7, 40000, 0x12, seq=9, ack=8, options=SYN_OPTIONS[:4]), 6)),
        checksummed(_v4(tcp(40000, 7, 0x10, seq=8, ack=10, window=502), 6, fragment=0x4000)),
        checksummed(_v4(tcp(40000, 7, 0x11, seq=8, ack=10), 6, ttl=1)),
        checksummed(_v4(tcp(40000, 7, 0x18, seq=4294967295, ack=3, payload=b"xy"), 6)),
        checksummed(_v4(tcp(7, 40000, 0x04, seq=3), 6)),
        checksummed(
            withHeader(_v4(tcp(40000, 7, 0x38, seq=1, ack=2, payload=b"!"), 6, ttl=0), tos=0xB9)
        ),
        checksummed(withHeader(_v4(tcp(40000, 7, 0x18, payload=b"more"), 6, fragment=0x6000))),
        checksummed(withHeader(_v4(tcp(40000, 7, 0xC2), 6), tos=0xFE)),
        _v4(frames.udp(40000, 7, BINARY), 17),
        checksummed(_v4(frames.udp(40000, 7, HTTPISH), 17)),
        checksummed(_v4(frames.udp(40000, 7, b""), 17)),
        checksummed(_v4(frames.udp(40000, 7, b"0123456789abcdef"), 17)),
        checksummed(_v4(frames.udp(40000, 7, b"0123456789abcdefg"), 17)),
        checksummed(
            _v4(frames.icmp(8, rest=struct.pack(">HH", 77, 3), payload=bytes(range(56))), 1)
        ),
        _v4(frames.icmp(0, rest=struct.pack(">HH", 77, 3), payload=b"\r\n\t odd"), 1),
        checksummed(frames.ipv6(tcp(40000, 7, 0x18, seq=5, ack=9, payload=b"abcdefg"), 6)),
        frames.ipv6(tcp(40000, 7, 0x10, seq=5, ack=9), 6),
        checksummed(frames.ipv6(frames.udp(40000, 7, b"x" * 15), 17)),
        frames.ipv6(frames.udp(40000, 7, b"\r"), 17),
        checksummed(withHeader(frames.ipv6(frames.udp(7, 9, b"flow"), 17), (6 << 28) | 0x124E741)),
        withHeader(frames.ipv6(frames.udp(7, 9, b"class"), 17), (6 << 28) | (0xB8 << 20)),
        checksummed(frames.ipv6(frames.icmpv6(128, body=struct.pack(">HH", 5, 6) + b"ping"), 58)),
        frames.ipv6(frames.icmpv6(129, body=struct.pack(">HH", 5, 6) + b"ping!"), 58),
    ]
    types = {4: frames.ETH_IPV4, 6: frames.ETH_IPV6}
    result = [(frames.ethernet(packet, types[packet[0] >> 4]), 0) for packet in packets]
    request = frames.arp(1, "02:00:00:00:00:01", "192.0.2.1", "00:00:00:00:00:00", "192.0.2.2")
    result.append((frames.ethernet(request, frames.ETH_ARP, dst="ff:ff:ff:ff:ff:ff"), 0))
    reply = frames.arp(2, "02:00:00:00:00:02", "192.0.2.2", "02:00:00:00:00:01", "192.0.2.1")
    result.append((frames.ethernet(reply + b"\0" * 18, frames.ETH_ARP), 0))
    tagged = frames.vlan(_v4(frames.udp(40000, 7, b"vlan!"), 17), 10, frames.ETH_IPV4, 3)
    result.append((frames.ethernet(tagged, 0x8100), 0))
    long = frames.ethernet(_v4(tcp(40000, 7, 0x18, seq=1, ack=2, payload=b"Z" * 61), 6))
    result.append((long[:60], len(long)))
    result.append((long[:40], len(long)))
    return [(frame, wire or len(frame)) for frame, wire in result]


def icmpErrors() -> list[tuple[bytes, int]]:
    quoted = _v4(frames.udp(40000, 7, b"xy"), 17)
    v4 = frames.ethernet(_v4(frames.icmp(3, 3, payload=quoted), 1, src="192.0.2.2"))
    quoted6 = frames.ipv6(frames.udp(40000, 7, b"xyz"), 17)
    v6 = frames.ethernet(
        frames.ipv6(frames.icmpv6(1, 4, body=b"\0\0\0\0" + quoted6), 58), frames.ETH_IPV6
    )
    # A router's error quotes the IP header and 8 bytes only.
    cut = _v4(frames.tcp(40000, 7, 0x02, payload=b"data"), 6)[:28]
    short = frames.ethernet(checksummed(_v4(frames.icmp(3, 3, payload=cut), 1)))
    return [(v4, len(v4)), (v6, len(v6)), (short, len(short))]


def sll2Packets() -> list[tuple[bytes, int, int]]:
    """
    C{LINUX_SLL2} frames on interface 1 (C{lo} on every Linux machine,
    which tcpdump looks up by index), and their direction.
    """
    udp = _v4(frames.udp(40000, 7, b"hello"), 17, src="127.0.0.1", dst="127.0.0.1")
    tcp = _v4(frames.tcp(7, 40000, 0x18, payload=b"x"), 6, src="127.0.0.1", dst="127.0.0.1")
    six = frames.ipv6(frames.udp(40000, 7, b"six"), 17, src="::1", dst="::1")
    return [
        (packSLL2(frames.ETH_IPV4, 1, 772, PACKET_HOST) + udp, 0x0800, PACKET_HOST),
        (packSLL2(frames.ETH_IPV4, 1, 772, PACKET_OUTGOING) + tcp, 0x0800, PACKET_OUTGOING),
        (packSLL2(frames.ETH_IPV6, 1, 772, PACKET_HOST) + six, 0x86DD, PACKET_HOST),
        (packSLL2(0x8100, 1, 1, PACKET_HOST) + frames.vlan(udp, 5, 0x0800, 6), 0x8100, PACKET_HOST),
    ]


class Capture:
    """
    Packets with their times and metadata, written as a pcap file and
    printed by a L{SummarySink}.
    """

    def __init__(self, info: CaptureInfo) -> None:
        self.info = info
        self.packets: list[tuple[int, bytes, int, int, int]] = []

    def add(self, stamp: int, data: bytes, wire: int, index: int = 0, direction: int = 0) -> None:
        self.packets.append((stamp, data, wire, index, direction))

    def write(self, path: Path) -> None:
        sink = PcapSink(RotatingOutput(str(path)), nanoseconds=True)
        self._feed(sink)

    def _feed(self, sink: PcapSink | SummarySink) -> None:
        sink.captureStarted(self.info)
        for stamp, data, wire, index, direction in self.packets:
            sink.packetReceived(stamp // 10**9, stamp % 10**9, data, wire, index, direction)
        sink.flush()
        sink.captureStopped()

    def text(self, style: TextStyle) -> list[str]:
        stream = io.BytesIO()
        self._feed(SummarySink(RotatingOutput("-", stdout=stream), "text", style))
        return stream.getvalue().decode().split("\n")


def ethernetCapture(withErrors: bool = False) -> Capture:
    capture = Capture(CaptureInfo("eth0", LINKTYPE_ETHERNET, SNAPLEN, {2: "eth0"}, "test"))
    # Times a second and 1,000,001 ns apart, and one going back, for -ttt.
    stamp = START * 10**9 + 123_456_789
    packets = ethernetPackets() + (icmpErrors() if withErrors else [])
    for number, (frame, wire) in enumerate(packets):
        capture.add(stamp + number * 1_001_000_001 - (2 * 10**9 if number == 5 else 0), frame, wire)
    return capture


def sll2Capture() -> Capture:
    capture = Capture(CaptureInfo("any", LINKTYPE_LINUX_SLL2, SNAPLEN, {1: "lo"}, "test"))
    for number, (frame, _, direction) in enumerate(sll2Packets()):
        capture.add(START * 10**9 + 999_999_999 + number, frame, len(frame), 1, direction)
    return capture


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def tcpdump(path: Path, *options: str) -> list[str]:
    tool = requireTool("tcpdump")
    result = subprocess.run(
        [tool, "-nn", "-S", "-r", str(path), *options],
        capture_output=True,
        timeout=60,
        check=True,
        env={**os.environ, "TZ": "UTC"},
    )
    return result.stdout.decode().split("\n")


def style(options: list[str]) -> TextStyle:
    """
    The L{TextStyle} of tcpdump's C{options}, as the console command makes
    it from its own command line.
    """
    counts: dict[str, int] = {}
    for option in options:
        if option == "--time-stamp-precision=nano":
            counts["nano"] = 1
        else:
            counts[option[1]] = len(option) - 1
    return TextStyle.fromTcpdumpFlags(
        t=counts.get("t", 0),
        x=counts.get("x", 0),
        X=counts.get("X", 0),
        A=counts.get("A", 0),
        e="e" in counts,
        q="q" in counts,
        v="v" in counts,
        nano="nano" in counts,
    )


OPTIONS = [
    [],
    ["-X"],
    ["-XX"],
    ["-x"],
    ["-xx"],
    ["-A"],
    ["-AA"],
    ["-e"],
    ["-q"],
    ["-q", "-e"],
    ["-v"],
    ["-v", "-e", "-X"],
    ["-t"],
    ["-tt"],
    ["-ttt"],
    ["-tttt"],
    ["-ttttt"],
    ["--time-stamp-precision=nano"],
    ["-ttt", "--time-stamp-precision=nano"],
    ["-tt", "--time-stamp-precision=nano", "-XX"],
]


def compare(capture: Capture, path: Path, options: list[str]) -> None:
    expected = tcpdump(path, *options)
    assert capture.text(style(options)) == expected


@pytest.mark.parametrize("options", OPTIONS, ids=lambda options: " ".join(options) or "plain")
def test_ethernet(options: list[str], tmp_path: Path, utc: None) -> None:
    """
    Ethernet frames: every line, dump and header as tcpdump prints them.
    """
    capture = ethernetCapture()
    capture.write(tmp_path / "ethernet.pcap")
    compare(capture, tmp_path / "ethernet.pcap", options)


@pytest.mark.parametrize("options", OPTIONS, ids=lambda options: " ".join(options) or "plain")
def test_sll2(options: list[str], tmp_path: Path, utc: None) -> None:
    """
    C{LINUX_SLL2} frames (C{-i any}): the interface and direction words,
    padded as tcpdump pads them, and its C{-e} header.
    """
    capture = sll2Capture()
    capture.write(tmp_path / "any.pcap")
    compare(capture, tmp_path / "any.pcap", options)


@pytest.mark.parametrize(
    "options", [["-X"], ["-A"], ["-e"], ["-q"], ["-v"]], ids=lambda options: " ".join(options)
)
def test_icmpErrors(options: list[str], tmp_path: Path, utc: None) -> None:
    """
    ICMP and ICMPv6 port unreachable name the quoted destination and port
    as tcpdump does; with C{-v}, the quoted IPv4 packet follows.
    """
    capture = Capture(CaptureInfo("eth0", LINKTYPE_ETHERNET, SNAPLEN, {}, "test"))
    for number, (frame, wire) in enumerate(icmpErrors()):
        capture.add(START * 10**9 + number, frame, wire)
    capture.write(tmp_path / "errors.pcap")
    compare(capture, tmp_path / "errors.pcap", options)


def randomOptions(draw: random.Random) -> bytes:
    """
    TCP options as stacks send them, and some no stack sends: unknown
    kinds, wrong lengths, a list running past the header.
    """
    choices = [
        lambda: struct.pack(">BBH", 2, 4, draw.randrange(65536)),
        lambda: struct.pack(">BBB", 3, 3, draw.randrange(15)),
        lambda: b"\x04\x02",
        lambda: b"\x01",
        lambda: struct.pack(">BBII", 8, 10, draw.randrange(2**32), draw.randrange(2**32)),
        lambda: (
            bytes([5, 2 + 8 * (blocks := draw.randrange(1, 4))])
            + bytes(draw.randrange(256) for _ in range(8 * blocks))
        ),
        lambda: bytes([draw.choice((99, 34, 254)), 4, 0xAB, 0xCD]),
        lambda: (
            bytes([draw.choice((34, 254)), 2 + 2 * draw.randrange(10)])
            + bytes(draw.randrange(256) for _ in range(2 * (draw.randrange(10))))
        ),
        lambda: b"\xfe\x06\xf9\x89" + bytes(draw.randrange(256) for _ in range(2)),
        lambda: struct.pack(">BBH", 28, 4, draw.randrange(65536)),
        lambda: bytes([2, 3, 1]),  # a wrong length
        lambda: bytes([5, 7]) + bytes(5),  # an invalid SACK
        lambda: b"\x00",
    ]
    options = b"".join(draw.choice(choices)() for _ in range(draw.randrange(1, 5)))
    if draw.random() < 0.1:
        options += bytes([8, 30])  # past the header's end
    return (options + b"\x00" * 3)[: len(options) + (-len(options)) % 4][:40]


def randomCapture(seed: int) -> Capture:
    """
    TCP segments over IPv4 and IPv6 with random flags, options, payloads
    and checksums right or wrong.
    """
    draw = random.Random(seed)
    capture = Capture(CaptureInfo("eth0", LINKTYPE_ETHERNET, SNAPLEN, {}, "test"))
    for number in range(60):
        segment = frames.tcp(
            draw.randrange(49152, 65536),  # no port tcpdump decodes the payload of
            7,
            draw.randrange(256),
            seq=draw.randrange(2**32),
            ack=draw.randrange(2**32),
            window=draw.randrange(65536),
            payload=bytes(draw.randrange(256) for _ in range(draw.randrange(30))),
            options=randomOptions(draw),
        )
        if draw.random() < 0.5:
            packet = frames.ipv4(segment, 6, ttl=draw.randrange(256), ident=number)
        else:
            packet = frames.ipv6(segment, 6, hopLimit=draw.randrange(256))
        if draw.random() < 0.7:
            packet = checksummed(packet)
        types = {4: frames.ETH_IPV4, 6: frames.ETH_IPV6}
        frame = frames.ethernet(packet, types[packet[0] >> 4])
        capture.add(START * 10**9 + number * 1000, frame, len(frame))
    return capture


@pytest.mark.parametrize("options", [[], ["-v", "-X"], ["-q", "-e"]], ids=str)
@pytest.mark.parametrize("seed", range(10))
def test_randomTcp(options: list[str], seed: int, tmp_path: Path, utc: None) -> None:
    """
    Random TCP flags, options (bad ones too) and payloads read the same.
    """
    capture = randomCapture(seed)
    capture.write(tmp_path / "random.pcap")
    compare(capture, tmp_path / "random.pcap", options)


def extendedPackets() -> list[bytes]:
    """
    Fragments (IPv4 and IPv6: first, middle, last, atomic) and IPv6
    extension headers in front of UDP and TCP.
    """
    udp = frames.udp(40000, 7, b"x" * 8)
    v6 = frames.ETH_IPV6
    return [
        frames.ethernet(checksummed(_v4(frames.udp(40000, 7, b"x" * 20), 17, fragment=0x2000))),
        frames.ethernet(checksummed(_v4(b"y" * 24, 17, fragment=0x2000 | 185))),
        frames.ethernet(_v4(b"y" * 23, 17, fragment=370)),
        frames.ethernet(frames.ipv6(frames.fragmentHeader(17, 0, True) + udp, 44), v6),
        frames.ethernet(frames.ipv6(frames.fragmentHeader(17, 1448, True) + b"z" * 16, 44), v6),
        frames.ethernet(frames.ipv6(frames.fragmentHeader(6, 2896, False) + b"z" * 9, 44), v6),
        frames.ethernet(frames.ipv6(frames.fragmentHeader(17, 0, False) + udp, 44), v6),
        frames.ethernet(frames.ipv6(frames.extension(17) + udp, 0), v6),
        frames.ethernet(frames.ipv6(frames.extension(6) + frames.tcp(1, 2, 2), 60), v6),
        frames.ethernet(frames.ipv6(frames.extension(60) + frames.extension(17) + udp, 0), v6),
    ]


@pytest.mark.parametrize(
    "options",
    [[], ["-X"], ["-e"], ["-q"], ["-v"]],
    ids=lambda options: " ".join(options) or "plain",
)
def test_extensionsAndFragments(options: list[str], tmp_path: Path, utc: None) -> None:
    """
    Fragments and IPv6 extension headers (with -v only fragments: tcpdump
    prints the options inside hop-by-hop and destination headers too).
    """
    capture = Capture(CaptureInfo("eth0", LINKTYPE_ETHERNET, SNAPLEN, {}, "test"))
    packets = extendedPackets()
    for number, frame in enumerate(packets[:7] if "-v" in options else packets):
        capture.add(START * 10**9 + number, frame, len(frame))
    capture.write(tmp_path / "extended.pcap")
    compare(capture, tmp_path / "extended.pcap", options)


def cutFrames() -> dict[str, tuple[CaptureInfo, bytes]]:
    """
    Frames of each kind the decoder knows, to be cut at every length.
    """
    ethernet = CaptureInfo("eth0", LINKTYPE_ETHERNET, SNAPLEN, {}, "test")
    cooked = CaptureInfo("any", LINKTYPE_LINUX_SLL2, SNAPLEN, {1: "lo"}, "test")
    v6 = frames.ETH_IPV6
    quoted = _v4(frames.udp(1, 7, b"ab"), 17)
    arp = frames.arp(1, "02:00:00:00:00:01", "192.0.2.1", "00:00:00:00:00:00", "192.0.2.2")
    tagged = frames.vlan(_v4(frames.udp(40000, 7, b"vlan!"), 17), 10, frames.ETH_IPV4, 3)
    return {
        "tcp": (
            ethernet,
            frames.ethernet(checksummed(_v4(frames.tcp(1, 7, 2, options=SYN_OPTIONS), 6))),
        ),
        "udp": (ethernet, frames.ethernet(checksummed(_v4(frames.udp(40000, 7, b"hello"), 17)))),
        "icmp": (ethernet, frames.ethernet(checksummed(_v4(frames.icmp(8, payload=b"abcd"), 1)))),
        "unreachable": (ethernet, frames.ethernet(_v4(frames.icmp(3, 3, payload=quoted), 1))),
        "udp6": (
            ethernet,
            frames.ethernet(checksummed(frames.ipv6(frames.udp(4, 7, b"six"), 17)), v6),
        ),
        "tcp6": (
            ethernet,
            frames.ethernet(checksummed(frames.ipv6(frames.tcp(4, 7, 0x10), 6)), v6),
        ),
        "icmp6": (
            ethernet,
            frames.ethernet(frames.ipv6(frames.icmpv6(128, body=b"\0\1\0\2ab"), 58), v6),
        ),
        "vlan": (ethernet, frames.ethernet(tagged, 0x8100)),
        "arp": (ethernet, frames.ethernet(arp, frames.ETH_ARP)),
        "sll2": (cooked, sll2Packets()[0][0]),
    }


@pytest.mark.parametrize(
    "options", [[], ["-X"], ["-e"], ["-q"], ["-v"], ["-A", "-e", "-q"]], ids=str
)
@pytest.mark.parametrize("kind", list(cutFrames()))
def test_everyLength(kind: str, options: list[str], tmp_path: Path, utc: None) -> None:
    """
    A frame cut by the snapshot length at every length reads the same:
    where tcpdump says which layer was cut ("[|tcp]"), what it printed up
    to there, and which bytes it dumps (all of them where its printer gave
    up mid-way).
    """
    info, frame = cutFrames()[kind]
    capture = Capture(info)
    for end in range(1, len(frame)):
        capture.add(START * 10**9 + end, frame[:end], len(frame), 1, PACKET_HOST)
    capture.write(tmp_path / "cut.pcap")
    compare(capture, tmp_path / "cut.pcap", options)


def otherCapture(linktype: int) -> Capture:
    """
    The Ethernet frames' packets as a raw IP capture (Windows'
    C{SIO_RCVALL}) or with a Linux cooked header (version 1).
    """
    capture = Capture(CaptureInfo("any", linktype, SNAPLEN, {}, "test"))
    for number, (frame, wire) in enumerate(ethernetPackets()):
        if linktype == LINKTYPE_RAW:
            if frame[12:14] in (b"\x08\x00", b"\x86\xdd"):
                capture.add(START * 10**9 + number, frame[14:], wire - 14)
            continue
        kind = struct.unpack_from(">H", frame, 12)[0]
        cooked = struct.pack(">HHH8sH", PACKET_OUTGOING, 1, 6, frame[6:12], kind)
        capture.add(START * 10**9 + number, cooked + frame[14:], wire + 2, 0, PACKET_OUTGOING)
    return capture


@pytest.mark.parametrize("options", [[], ["-X"], ["-e"], ["-q", "-e"], ["-v"]], ids=str)
@pytest.mark.parametrize("linktype", [LINKTYPE_RAW, LINKTYPE_LINUX_SLL])
def test_otherLinkTypes(linktype: int, options: list[str], tmp_path: Path, utc: None) -> None:
    """
    Raw IP and Linux cooked (version 1) captures: their link-level
    header with -e (C{ip: }, C{Out 02:00:00:00:00:01 ethertype ...}), and
    none of it dumped.
    """
    capture = otherCapture(linktype)
    capture.write(tmp_path / "other.pcap")
    compare(capture, tmp_path / "other.pcap", options)
