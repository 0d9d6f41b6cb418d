"""
Capture files against the real tools: echo traffic on loopback (TCP, UDP,
ICMP, IPv6) captured by C{tcpdump -w} (pcap) and C{dumpcap} (pcapng), also
converted by C{editcap}, read by echod and compared packet by packet with
what tshark reads; echod's filter compared with C{tcpdump -r FILE EXPR};
damaged files compared with what tcpdump delivers before its error; echod's
pcapng (from a file and from a live C{echod-sniff --format pcapng}) read by
tshark, capinfos and tcpdump.

Skipped on a laptop without root or the tools; under CI=true those fail.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import socketserver
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest

from echod.sniff.bpf import FilterError
from echod.sniff.capturefile import CaptureFileError, readCaptureFile
from echod.sniff.pcapng import PcapngSink
from echod.sniff.sinks import RotatingOutput
from echod.sniff.source import CaptureInfo
from tests import frames
from tests.capturetesting import RecordingConsumer
from tests.e2e.test_sniff import Sniffer
from tests.environment import hasIPv6, requireRoot, requireTool
from tests.testing import pythonPath, waitUntil
from tests.unit.test_sniff_capturefile import SECOND, epb, idb, micro, shb

pytestmark = [pytest.mark.e2e, pytest.mark.root]

MARKER = b"echod-capture-files-end"
FRAME = frames.ethernet(frames.ipv4(frames.udp(4000, 7, b"hello"), 17))


class _TCPEcho(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while True:
            data = self.request.recv(65536)
            if not data:
                return
            self.request.sendall(data)


class _UDPEcho(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data, sock = self.request
        sock.sendto(data, self.client_address)


class _UDP6Server(socketserver.ThreadingUDPServer):
    address_family = socket.AF_INET6


@dataclass
class Captures:
    """
    The same loopback traffic in several files, and what made it.
    """

    directory: Path
    pcap: Path
    microPcap: Path
    dumpcap: Path
    editcap: Path
    tcp: int
    udp: int
    closed: int
    ipv6: bool

    def files(self) -> dict[str, Path]:
        return {
            "tcpdump-pcap": self.pcap,
            "tcpdump-micro": self.microPcap,
            "dumpcap": self.dumpcap,
            "editcap": self.editcap,
        }


def _startServer(server: socketserver.BaseServer) -> None:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()


def _traffic(tcp: int, udp: int, closed: int, udp6: int | None) -> None:
    for size in (5, 300, 3000):
        with socket.create_connection(("127.0.0.1", tcp), timeout=5) as s:
            payload = os.urandom(size)
            s.sendall(payload)
            received = b""
            while len(received) < size:
                chunk = s.recv(65536)
                assert chunk
                received += chunk
            assert received == payload
            s.shutdown(socket.SHUT_WR)
            assert s.recv(10) == b""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        for size in (5, 300):
            s.sendto(b"u" * size, ("127.0.0.1", udp))
            assert s.recvfrom(65536)[0] == b"u" * size
        # No one listens there: the kernel answers ICMP port unreachable.
        for _ in range(2):
            s.sendto(b"nobody", ("127.0.0.1", closed))
    if udp6 is not None:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.settimeout(5)
            s.sendto(b"six", ("::1", udp6))
            assert s.recvfrom(100)[0] == b"six"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(MARKER, ("127.0.0.1", closed))


def _says(log: Path, text: bytes) -> bool:
    return text in log.read_bytes()


def _stopTool(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def captures(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Captures]:
    requireRoot()
    for tool in ("tcpdump", "tshark", "dumpcap", "editcap", "capinfos"):
        requireTool(tool)
    directory = tmp_path_factory.mktemp("capture-files")
    tcpServer = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _TCPEcho)
    udpServer = socketserver.ThreadingUDPServer(("127.0.0.1", 0), _UDPEcho)
    servers: list[socketserver.BaseServer] = [tcpServer, udpServer]
    udp6: int | None = None
    if hasIPv6():
        udp6Server = _UDP6Server(("::1", 0), _UDPEcho)
        servers.append(udp6Server)
        udp6 = udp6Server.server_address[1]
    for server in servers:
        _startServer(server)
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    closed = probe.getsockname()[1]
    probe.close()
    tcp, udp = tcpServer.server_address[1], udpServer.server_address[1]
    ports = [tcp, udp, closed] + ([udp6] if udp6 else [])
    expression = " or ".join(f"port {p}" for p in ports) + " or icmp"
    pcap, dumpcapFile = directory / "tcpdump.pcap", directory / "dumpcap.pcapng"
    microPcap = directory / "tcpdump-micro.pcap"
    logs = [directory / f"{name}.log" for name in ("tcpdump", "tcpdump-micro", "dumpcap")]
    tcpdump = ["tcpdump", "-i", "lo", "-n", "-U", "--immediate-mode"]
    argvs = [
        [*tcpdump, "--time-stamp-precision=nano", "-w", str(pcap), expression],
        [*tcpdump, "-w", str(microPcap), expression],
        ["dumpcap", "-i", "lo", "-q", "-w", str(dumpcapFile), "-f", expression],
    ]
    processes = []
    try:
        for argv, log in zip(argvs, logs, strict=True):
            with open(log, "wb") as out:
                processes.append(subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT))
        for log, ready in zip(logs, [b"listening on"] * 2 + [b"Capturing on"], strict=True):
            waitUntil(partial(_says, log, ready), timeout=15, what=f"{log.name}: ready")
        # All capture once a probe reaches every file (dumpcap says it
        # captures before its filter is on, and writes about every second).
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:

            def probed() -> bool:
                s.sendto(b"probe", ("127.0.0.1", closed))
                return all(
                    p.exists() and b"probe" in p.read_bytes()
                    for p in (pcap, microPcap, dumpcapFile)
                )

            waitUntil(probed, timeout=20, what="tcpdump and dumpcap capturing")
        _traffic(tcp, udp, closed, udp6)
        for path in (pcap, microPcap):
            waitUntil(partial(_says, path, MARKER), timeout=15, what="tcpdump wrote all")
        # dumpcap writes a block when its buffer fills or every second.
        waitUntil(
            lambda: dumpcapFile.exists() and MARKER in dumpcapFile.read_bytes(),
            timeout=15,
            what="dumpcap wrote all",
        )
    finally:
        for process in processes:
            _stopTool(process)
        for server in servers:
            server.shutdown()
            server.server_close()
    editcapFile = directory / "editcap.pcapng"
    subprocess.run(["editcap", "-F", "pcapng", str(pcap), str(editcapFile)], check=True, timeout=60)
    yield Captures(
        directory, pcap, microPcap, dumpcapFile, editcapFile, tcp, udp, closed, udp6 is not None
    )


def _ns(text: str) -> int:
    seconds, _, fraction = text.partition(".")
    return int(seconds) * 10**9 + int((fraction + "000000000")[:9])


def tsharkPackets(path: Path) -> list[tuple[int, int, int, bytes]]:
    """
    (time in ns, wire length, captured length, bytes) of each packet, as
    tshark reads them.
    """
    result = subprocess.run(
        ["tshark", "-r", str(path), "-T", "json", "-x"],
        capture_output=True,
        timeout=120,
        check=True,
    )
    packets = []
    for item in json.loads(result.stdout):
        layers = item["_source"]["layers"]
        frame = layers["frame"]
        packets.append(
            (
                _ns(frame["frame.time_epoch"]),
                int(frame["frame.len"]),
                int(frame["frame.cap_len"]),
                bytes.fromhex(layers["frame_raw"][0]),
            )
        )
    return packets


def echodPackets(path: Path, expression: str = "") -> list[tuple[int, int, int, bytes]]:
    consumer = RecordingConsumer()
    statistics = readCaptureFile(str(path), expression, consumer)
    assert statistics.delivered == len(consumer.packets)
    return [(t, meta.wireLength, len(data), data) for t, data, meta in consumer.packets]


def tcpdumpTimes(path: Path, expression: str) -> list[int]:
    result = subprocess.run(
        ["tcpdump", "-nn", "-tt", "--time-stamp-precision=nano", "-r", str(path), expression],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TZ": "UTC"},
    )
    assert result.returncode == 0, result.stderr
    return [_ns(line.split()[0]) for line in result.stdout.splitlines() if line[:1].isdigit()]


@pytest.mark.parametrize("kind", ["tcpdump-pcap", "tcpdump-micro", "dumpcap", "editcap"])
def test_readsLikeTshark(captures: Captures, kind: str) -> None:
    """
    Every packet of a file written by tcpdump (pcap, nanoseconds or
    microseconds), dumpcap (pcapng) or editcap (pcapng) reads as tshark
    reads it: time to the
    nanosecond, lengths and bytes.
    """
    path = captures.files()[kind]
    ours = echodPackets(path)
    assert len(ours) >= 30
    assert ours == tsharkPackets(path)


def test_formatsAgree(captures: Captures) -> None:
    """
    The pcap and its pcapng conversion give the same packets.
    """
    assert echodPackets(captures.pcap) == echodPackets(captures.editcap)


EXPRESSIONS = [
    "tcp",
    "udp port {udp}",
    "icmp",
    "ip6",
    "tcp[tcpflags] & tcp-syn != 0",
    "port {tcp} and len > 100",
    "not port 22",
    "not port {tcp}",
    "vlan",
    "ether host 00:00:00:00:00:00",
    "ether host 02:00:00:00:00:01",
    "host 127.0.0.1",
    "udp and udp[8:4] = 0x6e6f626f",
    "",
]


@pytest.mark.parametrize("template", EXPRESSIONS)
@pytest.mark.parametrize("kind", ["tcpdump-pcap", "tcpdump-micro", "dumpcap"])
def test_filterLikeTcpdump(captures: Captures, kind: str, template: str) -> None:
    """
    An expression selects exactly the packets C{tcpdump -r FILE EXPR}
    prints.
    """
    path = captures.files()[kind]
    expression = template.format(tcp=captures.tcp, udp=captures.udp)
    ours = [t for t, _, _, _ in echodPackets(path, expression)]
    assert ours == tcpdumpTimes(path, expression)
    nonEmpty = {
        "tcp",
        "icmp",
        "host 127.0.0.1",
        "not port 22",
        "udp port {udp}",
        "",
        EXPRESSIONS[12],
    }
    if captures.ipv6:
        nonEmpty.add("ip6")
    if template in nonEmpty | {"tcp[tcpflags] & tcp-syn != 0", "port {tcp} and len > 100"}:
        assert ours
    if template in ("vlan", "ether host 02:00:00:00:00:01"):
        assert ours == []


def _craftedFrames() -> list[bytes]:
    """
    Ethernet frames loopback does not carry: VLAN tags, ARP, real MAC
    addresses, broadcast, IPv6 with ICMPv6.
    """
    udp = frames.ipv4(frames.udp(4000, 7, b"x" * 200), 17)
    return [
        frames.ethernet(frames.vlan(udp, 10, 0x0800), 0x8100),
        frames.ethernet(frames.vlan(frames.vlan(udp, 20, 0x0800), 30, 0x8100), 0x88A8),
        frames.ethernet(udp),
        frames.ethernet(
            frames.arp(1, "02:00:00:00:00:01", "192.0.2.1", "00:00:00:00:00:00", "192.0.2.2"),
            0x0806,
            dst="ff:ff:ff:ff:ff:ff",
        ),
        frames.ethernet(frames.ipv6(frames.icmpv6(128), 58), 0x86DD, src="02:00:00:00:00:09"),
        frames.ethernet(frames.ipv4(frames.tcp(5, 7, 0x12), 6, src="198.51.100.1")),
    ]


CRAFTED_EXPRESSIONS = [
    "vlan",
    "vlan 10",
    "vlan and udp",
    "udp",
    "arp",
    "ether broadcast",
    "ether host 02:00:00:00:00:09",
    "ether src 02:00:00:00:00:01 and not arp",
    "icmp6",
    "ip6 and icmp6[0] = 128",
    "net 198.51.100.0/24",
    "tcp[tcpflags] & (tcp-syn|tcp-ack) = (tcp-syn|tcp-ack)",
    "greater 100",
    "less 100",
]


@pytest.mark.parametrize("expression", CRAFTED_EXPRESSIONS)
def test_filterLikeTcpdumpOnCraftedFrames(tmp_path: Path, expression: str) -> None:
    """
    On frames loopback cannot carry (VLAN tags, ARP, MAC addresses), the
    filter selects what C{tcpdump -r} selects, in pcap and in pcapng.
    """
    requireTool("tcpdump")
    crafted = _craftedFrames()
    pcap = tmp_path / "crafted.pcap"
    sink = PcapngSink(RotatingOutput(str(tmp_path / "crafted.pcapng")), nanoseconds=True)
    with open(pcap, "wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 262144, 1))
        sink.captureStarted(CaptureInfo("eth0", 1, 262144))
        for i, frame in enumerate(crafted):
            out.write(struct.pack("<IIII", SECOND, i, len(frame), len(frame)) + frame)
            sink.packetReceived(SECOND, i, frame, len(frame), 1, -1)
        sink.captureStopped()
    for path in (pcap, tmp_path / "crafted.pcapng"):
        ours = [t for t, _, _, _ in echodPackets(path, expression)]
        assert ours == tcpdumpTimes(path, expression)
        assert ours, "every expression here matches a frame"


def test_badFilter(captures: Captures) -> None:
    """
    An expression tcpdump refuses is refused, with libpcap's message.
    """
    for expression in ("port sevenn", "tcp and", "wlan type mgt"):
        result = subprocess.run(
            ["tcpdump", "-r", str(captures.pcap), expression], capture_output=True, text=True
        )
        assert result.returncode != 0
        with pytest.raises(FilterError, match="bad filter"):
            readCaptureFile(str(captures.pcap), expression, RecordingConsumer())


def test_count(captures: Captures) -> None:
    """
    A count stops after as many matching packets as C{tcpdump -c}.
    """
    consumer = RecordingConsumer()
    readCaptureFile(str(captures.dumpcap), "udp", consumer, count=3)
    expected = subprocess.run(
        [
            "tcpdump",
            "-nn",
            "-tt",
            "--time-stamp-precision=nano",
            "-c",
            "3",
            "-r",
            str(captures.dumpcap),
            "udp",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert [t for t, _, _ in consumer.packets] == [_ns(line.split()[0]) for line in expected]


def tcpdumpCount(path: Path) -> tuple[int, str]:
    result = subprocess.run(
        ["tcpdump", "-nn", "-r", str(path)], capture_output=True, text=True, timeout=60
    )
    return len(result.stdout.splitlines()), result.stderr


def test_damagedLikeTcpdump(captures: Captures, tmp_path: Path) -> None:
    """
    A damaged file delivers the packets tcpdump prints before its error,
    then fails with one line.
    """
    pcap = captures.pcap.read_bytes()
    pcapng = captures.dumpcap.read_bytes()
    cases = {
        "cut.pcap": pcap[: len(pcap) * 2 // 3],
        "cut.pcapng": pcapng[: len(pcapng) * 2 // 3],
        "header.pcap": pcap[:20],
        "magic.pcap": b"\0\0\0\0" + pcap[4:],
        "empty.pcap": b"",
        "caplen.pcap": pcap[:24] + b"\0\0\0\0\0\0\0\0\xff\xff\xff\x7f\x40\0\0\0" + pcap[40:],
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        printed, stderr = tcpdumpCount(path)
        assert "tcpdump: " in stderr, name
        consumer = RecordingConsumer()
        with pytest.raises(CaptureFileError) as caught:
            readCaptureFile(str(path), "", consumer)
        assert str(caught.value).startswith(f"{path}: "), name
        assert len(consumer.packets) == printed, (name, str(caught.value), stderr)


def _pcapngCases() -> dict[str, tuple[bytes, int | None]]:
    """
    Damaged or unusual pcapng files, with how many packets echod reads
    from each before its error (L{None}: all, without error).
    """
    first = epb(micro(SECOND, 1), FRAME)
    second = epb(micro(SECOND, 2), FRAME)
    good = shb() + idb(name="eth0") + first
    notMultiple = bytearray(second)
    struct.pack_into("<I", notMultiple, 4, 33)
    return {
        "length not a multiple of 4": (good + bytes(notMultiple), 1),
        "length 0": (good + struct.pack("<II", 6, 0) + bytes(8), 1),
        "trailer": (good + second[:-4] + struct.pack("<I", 12), 1),
        "huge block": (good + struct.pack("<II", 6, 0x7FFFFFF0), 1),
        "cut block": (good + second[:30], 1),
        "packet before interface": (shb() + first + idb(), 0),
        "no interface": (shb(), 0),
        "interface out of range": (good + epb(micro(SECOND, 2), FRAME, interface=3), 1),
        "two link types": (good + idb(113) + epb(micro(SECOND, 2), FRAME, interface=1), 1),
        # libpcap refuses these two; echod reads them.
        "two snapshot lengths": (good + idb(snaplen=100) + epb(0, FRAME, interface=1), None),
        "two byte orders": (good + shb(">") + idb(order=">") + epb(0, FRAME, order=">"), None),
    }


@pytest.mark.parametrize("case", list(_pcapngCases()))
def test_damagedPcapngLikeTcpdump(tmp_path: Path, case: str) -> None:
    """
    Each damaged pcapng delivers what tcpdump prints before its error, then
    fails with one line; the two files libpcap refuses for no damage are
    read whole.
    """
    requireTool("tcpdump")
    data, delivered = _pcapngCases()[case]
    path = tmp_path / "case.pcapng"
    path.write_bytes(data)
    printed, stderr = tcpdumpCount(path)
    assert "tcpdump: " in stderr
    consumer = RecordingConsumer()
    if delivered is None:
        readCaptureFile(str(path), "", consumer)
        assert len(consumer.packets) > printed
        return
    with pytest.raises(CaptureFileError) as caught:
        readCaptureFile(str(path), "", consumer)
    assert str(caught.value).startswith(f"{path}: ")
    assert len(consumer.packets) == printed == delivered


def test_standardInput(captures: Captures) -> None:
    """
    C{-} reads a capture piped into the process.
    """
    script = (
        "from echod.sniff.capturefile import readCaptureFile\n"
        "from echod.sniff.pcapng import PcapngSink\n"
        "from echod.sniff.sinks import RotatingOutput\n"
        "print(readCaptureFile('-', 'udp', PcapngSink(RotatingOutput('/dev/null'))).delivered)\n"
    )
    with open(captures.dumpcap, "rb") as stdin:
        result = subprocess.run(
            [sys.executable, "-P", "-c", script],
            stdin=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": pythonPath()},
        )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) == len(tcpdumpTimes(captures.dumpcap, "udp")) > 0


def test_pcapngFromFile(captures: Captures, tmp_path: Path) -> None:
    """
    A file read into echod's pcapng sink is what tshark reads back: the
    same packets, echod named as the writer, and no statistics block (no
    capture ran).
    """
    output = tmp_path / "echod.pcapng"
    sink = PcapngSink(RotatingOutput(str(output)), nanoseconds=True)
    readCaptureFile(str(captures.pcap), "", sink)
    assert tsharkPackets(output) == tsharkPackets(captures.pcap)
    info = subprocess.run(
        ["capinfos", str(output)], capture_output=True, text=True, check=True
    ).stdout
    assert "Capture application: echod " in info
    assert "File encapsulation:  Ethernet" in info
    assert "nanoseconds" in info
    assert isbFields(output, "pcapng.options.option.data.interface.received") == []
    (types,) = isbFields(output, "pcapng.block.type")
    packets = len(tsharkPackets(output))
    assert types.split(",") == ["0x0a0d0d0a", "0x00000001"] + ["0x00000006"] * packets


def test_pcapngRotation(captures: Captures, tmp_path: Path) -> None:
    """
    Each file of a rotation of echod's pcapng reads alone in tshark; all
    together they hold every packet, in order.
    """
    base = tmp_path / "rotated.pcapng"
    sink = PcapngSink(RotatingOutput(str(base), rotateBytes=4000, rotateCount=0))
    readCaptureFile(str(captures.pcap), "", sink)
    names = sink.output.names
    assert len(names) > 3
    together = []
    for name in names:
        packets = tsharkPackets(Path(name))
        assert packets
        together += packets
    assert [(length, data) for _, _, length, data in together] == [
        (length, data) for _, _, length, data in tsharkPackets(captures.pcap)
    ]


def isbFields(path: Path, field: str) -> list[str]:
    """
    A field of the file's own blocks, as Wireshark's file dissector shows
    them (C{Statistics > Capture File Properties} reads the same).
    """
    result = subprocess.run(
        [
            "tshark",
            "-X",
            "read_format:MIME Files Format",
            "-r",
            str(path),
            "-T",
            "fields",
            "-e",
            field,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return [line for line in result.stdout.splitlines() if line]


def test_livePcapng(tmp_path: Path) -> None:
    """
    C{echod-sniff --format pcapng} on loopback: tshark reads the interface
    name, each packet's direction (inbound: the outgoing copies on C{lo}
    are dropped) and the kernel's counters at the end; tcpdump reads it.
    """
    requireRoot()
    requireTool("tshark")
    requireTool("tcpdump")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        port = receiver.getsockname()[1]
        output = tmp_path / "live.pcapng"
        args = ["-i", "lo", "-f", f"udp port {port}", "--format", "pcapng", "-o", str(output)]
        with Sniffer(tmp_path, args) as sniffer:
            sniffer.waitUntilCapturing()
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
                for i in range(5):
                    sender.sendto(b"x" * i, ("127.0.0.1", port))
            receiver.settimeout(5)
            for _ in range(5):
                receiver.recv(100)
        assert sniffer.wait() == 0, sniffer.both()
    rows = [
        line.split("\t")
        for line in subprocess.run(
            [
                "tshark",
                "-r",
                str(output),
                "-T",
                "fields",
                "-e",
                "frame.interface_name",
                "-e",
                "frame.packet_flags_direction",
                "-e",
                "udp.length",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
    ]
    assert rows == [["lo", "0x00000001", str(8 + i)] for i in range(5)]
    assert isbFields(output, "pcapng.options.option.data.interface.dropped") == ["0"]
    assert isbFields(output, "pcapng.options.option.data.interface.received") == ["5"]
    assert isbFields(output, "pcapng.options.option.data.interface.accepted_by_filter") == ["5"]
    assert (
        len(
            subprocess.run(
                ["tcpdump", "-nn", "-r", str(output)], capture_output=True, text=True, check=True
            ).stdout.splitlines()
        )
        == 5
    )


def sniffCommand() -> str:
    candidate = Path(sys.executable).parent / "echod-sniff"
    return str(candidate) if candidate.exists() else "echod-sniff"


def runBoth(path: Path, options: list[str], expression: str) -> tuple[str, str]:
    """
    The standard output of C{echod-sniff -r PATH OPTIONS EXPR} and of
    C{tcpdump -nn -S -r PATH OPTIONS EXPR} (echod-sniff's sequence numbers
    are always absolute, as with C{-S}), in UTC.
    """
    env = {**os.environ, "TZ": "UTC"}
    argv = ["-r", str(path), *options, *([expression] if expression else [])]
    ours = subprocess.run(
        [sniffCommand(), *argv], capture_output=True, text=True, timeout=120, env=env
    )
    assert ours.returncode == 0, ours.stderr
    theirs = subprocess.run(
        ["tcpdump", "-nn", "-S", *argv], capture_output=True, text=True, timeout=120, env=env
    )
    assert theirs.returncode == 0, theirs.stderr
    # Both announce the file on standard error the same way.
    assert ours.stderr.splitlines()[0] == theirs.stderr.splitlines()[0]
    return ours.stdout, theirs.stdout


@pytest.mark.parametrize("template", EXPRESSIONS)
@pytest.mark.parametrize("kind", ["tcpdump-pcap", "dumpcap"])
def test_commandPrintsLikeTcpdump(captures: Captures, kind: str, template: str) -> None:
    """
    C{echod-sniff -r FILE EXPR} prints exactly what C{tcpdump -r FILE EXPR}
    prints, line for line, on a capture of real echo traffic written by
    tcpdump (pcap) and by dumpcap (pcapng).
    """
    path = captures.files()[kind]
    expression = template.format(tcp=captures.tcp, udp=captures.udp)
    ours, theirs = runBoth(path, [], expression)
    assert ours.splitlines() == theirs.splitlines()


@pytest.mark.parametrize(
    "options",
    [["-X"], ["-XX"], ["-x"], ["-A"], ["-e"], ["-q"], ["-v"], ["-tt", "--nano"], ["-ttt"]],
)
def test_commandDumpsLikeTcpdump(captures: Captures, options: list[str]) -> None:
    """
    tcpdump's printing options give tcpdump's output, byte for byte, for
    the same packets (TCP, UDP, ICMP echo and port unreachable, IPv6).
    """
    for path in (captures.pcap, captures.dumpcap):
        ours, theirs = runBoth(path, options, "")
        assert ours == theirs, (path, options)


def test_commandCount(captures: Captures) -> None:
    """
    C{--count} prints how many packets match, as tcpdump does; C{-c}
    stops after that many.
    """
    expression = f"udp port {captures.udp}"
    ours, theirs = runBoth(captures.dumpcap, ["--count"], expression)
    assert ours == theirs
    assert re.fullmatch(r"[1-9][0-9]* packets\n", ours)
    ours, theirs = runBoth(captures.pcap, ["-c", "3"], "")
    assert ours == theirs
    assert len(ours.splitlines()) == 3


@pytest.mark.parametrize("form", ["pcap", "pcapng"])
def test_commandConverts(captures: Captures, tmp_path: Path, form: str) -> None:
    """
    C{echod-sniff -r IN -w OUT [--format pcapng] EXPR}: a filter and a
    converter; tcpdump reads the result as it reads what it filters itself.
    """
    output = tmp_path / f"out.{form}"
    expression = f"tcp port {captures.tcp}"
    result = subprocess.run(
        [sniffCommand(), "-r", str(captures.dumpcap), "-w", str(output), "--format", form,
         expression],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    converted, _ = runBoth(output, [], "")
    _, direct = runBoth(captures.dumpcap, [], expression)
    assert converted and converted == direct


def test_commandDamagedFile(captures: Captures, tmp_path: Path) -> None:
    """
    A damaged file: the packets before the damage are printed, then one
    line says what is wrong, status 1, as tcpdump does.
    """
    data = captures.pcap.read_bytes()
    damaged = tmp_path / "cut.pcap"
    damaged.write_bytes(data[: len(data) - 7])
    result = subprocess.run(
        [sniffCommand(), "-r", str(damaged)], capture_output=True, text=True, timeout=120,
        env={**os.environ, "TZ": "UTC"},
    )  # fmt: skip
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("echod-sniff:")]
    assert len(errors) == 1 and str(damaged) in errors[0], result.stderr
    _, theirs = runBoth(captures.pcap, [], "")
    assert result.stdout.splitlines() == theirs.splitlines()[:-1]
    missing = subprocess.run(
        [sniffCommand(), "-r", str(tmp_path / "none.pcap")], capture_output=True, text=True
    )
    assert missing.returncode == 1
    assert (
        missing.stderr
        == f"echod-sniff: cannot read {tmp_path / 'none.pcap'}: no such file or directory\n"
    )
