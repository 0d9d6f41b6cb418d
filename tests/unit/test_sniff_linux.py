"""
Opening Linux captures and reading packets from them (ring and recvmsg)
against a fake system; the same reading tests run against the real kernel
in tests/integration/test_sniff_linux.py.
"""

from __future__ import annotations

import errno
import socket
import struct
from typing import Any

import pytest
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from echod.sniff import linux
from echod.sniff.bpf import LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL2, FilterError
from echod.sniff.linux import LinuxRingSource, LinuxSocketSource, ringGeometry
from echod.sniff.platforms import checkRequest, openCapture
from echod.sniff.source import (
    PACKET_BROADCAST,
    PACKET_HOST,
    PACKET_OUTGOING,
    CaptureError,
    CapturePermissionError,
    CaptureRequest,
    CaptureUnsupportedError,
    IPacketSource,
    UnknownInterfaceError,
)
from tests import frames
from tests.capturetesting import (
    Collector,
    MemoryLinuxSystem,
    MemoryPacketSocket,
    Meta,
    ReadingTestsMixin,
)

STAMP = 1_700_000_000_123_456_789


def udpFrame(dport: int, payload: bytes = b"hello", sport: int = 40000) -> bytes:
    return frames.ethernet(
        frames.ipv4(frames.udp(sport, dport, payload), 17, "127.0.0.1", "127.0.0.1"),
        src="00:00:00:00:00:00",
        dst="00:00:00:00:00:00",
    )


def sendOnLoopback(sock: MemoryPacketSocket, frame: bytes) -> None:
    """
    What the loopback device shows a packet socket: the packet going out,
    then coming back in.
    """
    sock.inject(frame, ifindex=1, pkttype=PACKET_OUTGOING)
    sock.inject(frame, ifindex=1, pkttype=PACKET_HOST)


class SetUpTests(SynchronousTestCase):
    """
    The socket is set up in libpcap's order, with the options the interface
    needs.
    """

    def setUp(self) -> None:
        self.system = MemoryLinuxSystem()

    def open(self, **kwargs: Any) -> IPacketSource:
        source = openCapture(CaptureRequest(**kwargs), self.system)
        self.addCleanup(source.close)
        return source

    def test_order(self) -> None:
        """
        On one interface: protocol 0 (nothing queued yet), a drop-all filter,
        the ring, then bind, and the real filter last.
        """
        self.open(interface="eth0", filter="udp")
        sock = self.system.socket
        assert (sock.kind, sock.protocol) == (socket.SOCK_RAW, 0)
        names = [call[0] if call[0] != "setsockopt" else (call[1], call[2]) for call in sock.calls]
        attach = (linux.SOL_SOCKET, 26)
        assert names == [
            attach,
            (linux.SOL_PACKET, linux.PACKET_VERSION),
            (linux.SOL_PACKET, linux.PACKET_RX_RING),
            "bind",
            attach,
        ]
        assert sock.filters[0] == ((0x06, 0, 0, 0),)
        assert len(sock.filters[1]) > 1
        assert sock.bound == ("eth0", linux.ETH_P_ALL)

    def test_info(self) -> None:
        """
        The capture says its link type, snapshot length and interfaces, and
        how the ring is walked.
        """
        source = self.open(interface="eth0", snaplen=1500)
        assert isinstance(source, LinuxRingSource)
        info = source.info
        assert (info.interface, info.linktype, info.snaplen) == ("eth0", LINKTYPE_ETHERNET, 1500)
        assert info.interfaces == {1: "lo", 2: "eth0", 3: "tun0"}
        assert info.method == f"TPACKET_V3 ring, walked in {'C' if linux.WALK_IN_C else 'Python'}"

    def test_loopbackIgnoresOutgoing(self) -> None:
        """
        On a loopback interface the kernel is asked for incoming copies only.
        """
        self.open(interface="lo")
        option = (linux.SOL_PACKET, linux.PACKET_IGNORE_OUTGOING)
        assert self.system.socket.options[option] == 1

    def test_loopbackOldKernel(self) -> None:
        """
        Where the kernel has no PACKET_IGNORE_OUTGOING, the filter drops the
        outgoing copies instead.
        """
        self.system.failures[(linux.SOL_PACKET, linux.PACKET_IGNORE_OUTGOING)] = errno.ENOPROTOOPT
        source = self.open(interface="lo", filter="udp port 9")
        sock = self.system.socket
        sendOnLoopback(sock, udpFrame(9))
        sock.retire()
        collector = Collector()
        assert collector.read(source) == 1
        assert collector.packets[0][2].direction == PACKET_HOST

    def test_any(self) -> None:
        """
        C{any} is a cooked socket (packets start at the network header) with
        every protocol from the start, no bind, C{LINUX_SLL2} records, and a
        filter that drops outgoing copies on loopback interfaces only.
        """
        source = self.open(interface="any")
        sock = self.system.socket
        assert (sock.kind, sock.protocol) == (socket.SOCK_DGRAM, socket.htons(linux.ETH_P_ALL))
        assert sock.bound is None
        assert source.info.linktype == LINKTYPE_LINUX_SLL2
        packet = frames.ipv4(frames.udp(1, 2), 17)
        assert not sock.inject(packet, ifindex=1, pkttype=PACKET_OUTGOING)
        assert sock.inject(packet, ifindex=1, pkttype=PACKET_HOST)
        assert sock.inject(packet, ifindex=2, pkttype=PACKET_OUTGOING)

    def test_cookedInterface(self) -> None:
        """
        An interface without Ethernet headers (a tun device) is captured
        cooked, as C{LINUX_SLL2}.
        """
        source = self.open(interface="tun0", filter="udp")
        assert self.system.socket.kind == socket.SOCK_DGRAM
        assert self.system.socket.bound == ("tun0", linux.ETH_P_ALL)
        assert source.info.linktype == LINKTYPE_LINUX_SLL2

    def test_promiscuous(self) -> None:
        """
        Promiscuous mode is a membership of the interface, dropped with the
        socket.
        """
        self.open(interface="eth0", promiscuous=True)
        membership = self.system.socket.options[(linux.SOL_PACKET, linux.PACKET_ADD_MEMBERSHIP)]
        assert membership == struct.pack("=iHH8s", 2, linux.PACKET_MR_PROMISC, 0, b"")

    def test_permission(self) -> None:
        """
        Without CAP_NET_RAW: one line saying what is needed.
        """
        self.system.openError = errno.EPERM
        with pytest.raises(CapturePermissionError) as caught:
            openCapture(CaptureRequest(interface="eth0"), self.system)
        assert str(caught.value) == (
            "capturing on eth0 needs root or the CAP_NET_RAW capability (injected)"
        )

    def test_unknownInterface(self) -> None:
        """
        An unknown interface is named, with the ones that exist.
        """
        with pytest.raises(UnknownInterfaceError) as caught:
            openCapture(CaptureRequest(interface="eth9"), self.system)
        assert str(caught.value) == (
            "no interface named 'eth9' here (there are: lo, eth0, tun0, any)"
        )
        assert self.system.sockets == []

    def test_badFilter(self) -> None:
        """
        A filter that does not compile fails before any socket is opened.
        """
        with pytest.raises(FilterError, match="unknown port 'sevenn'"):
            openCapture(CaptureRequest(interface="lo", filter="port sevenn"), self.system)
        assert self.system.sockets == []

    def test_checkRequest(self) -> None:
        """
        L{checkRequest} finds the same mistakes without opening anything.
        """
        checkRequest(CaptureRequest(interface="lo", filter="tcp"), self.system)
        with pytest.raises(UnknownInterfaceError):
            checkRequest(CaptureRequest(interface="nope"), self.system)
        with pytest.raises(FilterError):
            checkRequest(CaptureRequest(filter="tcp port"), self.system)
        assert self.system.sockets == []

    def test_bindFails(self) -> None:
        """
        An interface that vanished between the check and the bind is an
        L{UnknownInterfaceError}, and the socket is closed.
        """
        self.system.vanished.add("eth0")
        with pytest.raises(UnknownInterfaceError, match="eth0: no such device"):
            openCapture(CaptureRequest(interface="eth0"), self.system)
        assert self.system.socket.closed

    def test_ringUnavailable(self) -> None:
        """
        When the ring cannot be set up, packets are read with C{recvmsg},
        and the log says so.
        """
        self.system.failures[(linux.SOL_PACKET, linux.PACKET_RX_RING)] = errno.ENOMEM
        with capturedLogs() as events:
            source = self.open(interface="eth0")
        assert isinstance(source, LinuxSocketSource)
        first, second = self.system.sockets
        assert first.closed and not second.closed
        assert any("no TPACKET_V3 ring" in str(e.get("log_format")) for e in events)

    def test_unsupportedPlatform(self) -> None:
        """
        Elsewhere than Linux and Windows: one line saying so.
        """
        self.system.platform = "darwin"
        with pytest.raises(CaptureUnsupportedError, match="Linux and Windows, not darwin"):
            openCapture(CaptureRequest(), self.system)

    def test_errorsAreUserErrors(self) -> None:
        """
        Every capture error is a L{echod.errors.UserError}: one line, no
        traceback.
        """
        from echod.errors import UserError

        assert issubclass(CaptureError, UserError)
        assert issubclass(FilterError, UserError)


class RingGeometryTests(SynchronousTestCase):
    def test_default(self) -> None:
        """
        Full-size packets fit in a block; the ring holds about the size asked.
        """
        assert ringGeometry(262144, 8 << 20) == (512 << 10, 16)

    def test_small(self) -> None:
        """
        Blocks are at least 128 KiB, and there are at least four.
        """
        assert ringGeometry(96, 65536) == (128 << 10, 4)


class RingReadTests(SynchronousTestCase):
    """
    L{LinuxRingSource.readPackets} reads the blocks the kernel hands over.
    """

    def setUp(self) -> None:
        self.system = MemoryLinuxSystem()

    def open(self, **kwargs: Any) -> tuple[IPacketSource, MemoryPacketSocket]:
        source = openCapture(CaptureRequest(**kwargs), self.system)
        self.addCleanup(source.close)
        return source, self.system.socket

    def test_inOrder(self) -> None:
        """
        Packets come with their kernel timestamp, wire length, interface and
        direction, in order; a block read is handed back.
        """
        source, sock = self.open(interface="eth0")
        for n in range(3):
            sock.inject(udpFrame(9, bytes([n])), timestamp=STAMP + n, ifindex=2)
        sock.retire()
        collector = Collector()
        assert collector.read(source) == 3
        assert [p[0] for p in collector.packets] == [STAMP, STAMP + 1, STAMP + 2]
        assert [p[1] for p in collector.packets] == [udpFrame(9, bytes([n])) for n in range(3)]
        assert collector.packets[0][2] == Meta(len(udpFrame(9, b"x")), 2, 0)
        assert sock.userBlocks() == 0
        assert collector.read(source) == 0

    def test_limit(self) -> None:
        """
        At most C{limit} packets are delivered; the next call goes on where
        the last stopped, in the middle of a block.
        """
        source, sock = self.open(interface="eth0")
        for n in range(5):
            sock.inject(udpFrame(9, bytes([n])), ifindex=2)
        sock.retire()
        collector = Collector()
        assert collector.read(source, limit=2) == 2
        assert sock.userBlocks() == 1
        assert collector.read(source, limit=2) == 2
        assert collector.read(source, limit=2) == 1
        assert [p[1][-1] for p in collector.packets] == [0, 1, 2, 3, 4]
        assert sock.userBlocks() == 0

    def test_manyBlocks(self) -> None:
        """
        Blocks are read in ring order, wrapping around.
        """
        source, sock = self.open(interface="eth0", bufferBytes=4 * 131072, snaplen=96)
        collector = Collector()
        sent = 0
        for _ in range(3):
            for _ in range(6):
                for _ in range(10):
                    sock.inject(udpFrame(9, sent.to_bytes(4, "big")), ifindex=2)
                    sent += 1
                sock.retire()
                collector.read(source)
        assert [int.from_bytes(p[1][-4:], "big") for p in collector.packets] == list(range(sent))

    def test_snaplen(self) -> None:
        """
        The filter's verdict truncates the packet; the wire length stays.
        """
        source, sock = self.open(interface="eth0", snaplen=64)
        frame = udpFrame(9, b"x" * 200)
        sock.inject(frame, ifindex=2)
        sock.retire()
        collector = Collector()
        collector.read(source)
        ((_, data, meta),) = collector.packets
        assert data == frame[:64]
        assert meta.wireLength == len(frame)

    def test_vlan(self) -> None:
        """
        A VLAN tag the kernel stripped is put back into the Ethernet frame.
        """
        source, sock = self.open(interface="eth0")
        frame = udpFrame(9)
        sock.inject(frame, ifindex=2, vlan=(0x8100, (3 << 13) | 100))
        sock.retire()
        collector = Collector()
        collector.read(source)
        ((_, data, meta),) = collector.packets
        assert data == frame[:12] + struct.pack(">HH", 0x8100, (3 << 13) | 100) + frame[12:]
        assert meta.wireLength == len(frame) + 4

    def test_cooked(self) -> None:
        """
        On C{any} each packet gets a C{LINUX_SLL2} header from what the
        kernel says about it.
        """
        source, sock = self.open(interface="any")
        packet = frames.ipv4(frames.udp(1, 2), 17)
        sock.inject(packet, ifindex=2, pkttype=PACKET_OUTGOING, address=b"\x02" * 6)
        sock.retire()
        collector = Collector()
        collector.read(source)
        ((_, data, meta),) = collector.packets
        header = struct.pack(">HHiHBB8s", 0x0800, 0, 2, 1, 4, 6, b"\x02" * 6 + b"\0\0")
        assert data == header + packet
        assert meta == Meta(len(packet) + 20, 2, PACKET_OUTGOING)

    def test_cookedVlan(self) -> None:
        """
        On a cooked capture a stripped tag comes back after the header, whose
        protocol becomes the tag's TPID.
        """
        source, sock = self.open(interface="any")
        packet = frames.ipv4(frames.udp(1, 2), 17)
        sock.inject(packet, ifindex=2, vlan=(0x88A8, 5))
        sock.retire()
        collector = Collector()
        collector.read(source)
        data = collector.packets[0][1]
        assert data[0:2] == b"\x88\xa8"
        assert data[20:24] == b"\x00\x05\x08\x00"
        assert data[24:] == packet

    def test_consumerFails(self) -> None:
        """
        An exception from the consumer is reported and reading goes on.
        """
        source, sock = self.open(interface="eth0")
        for n in range(3):
            sock.inject(udpFrame(9, bytes([n])), ifindex=2)
        sock.retire()
        collector = Collector(failOn=2)
        assert collector.read(source) == 3
        assert collector.failures == 1
        assert len(collector.packets) == 3

    def test_statistics(self) -> None:
        """
        Counters add up across reads (the kernel resets them when read);
        packets that find no free block are counted as dropped.
        """
        source, sock = self.open(interface="eth0", bufferBytes=4 * 131072, snaplen=96)
        for _ in range(4):
            sock.inject(udpFrame(9), ifindex=2)
            sock.retire()
        assert not sock.inject(udpFrame(9), ifindex=2)
        first = source.statistics()
        assert (first.received, first.dropped) == (5, 1)
        Collector().read(source)
        sock.inject(udpFrame(9), ifindex=2)
        second = source.statistics()
        assert (second.received, second.dropped) == (6, 1)

    def test_close(self) -> None:
        """
        Closing releases the socket once; the counters stay readable.
        """
        source, sock = self.open(interface="eth0")
        sock.inject(udpFrame(9), ifindex=2)
        source.close()
        source.close()
        assert sock.calls.count(("close",)) == 1
        assert source.statistics().received == 1
        assert source.readPackets(Collector(), 10, lambda: None) == 0


class PythonRingReadTests(RingReadTests):
    """
    The same, with the ring walked in Python (where echod's C helper was not
    built); the tests above walk it in C where it was.
    """

    def setUp(self) -> None:
        super().setUp()
        self.patch(linux, "WALK_IN_C", False)


class SocketReadTests(SynchronousTestCase):
    """
    L{LinuxSocketSource}, used where no ring can be mapped.
    """

    def setUp(self) -> None:
        self.system = MemoryLinuxSystem()
        self.system.failures[(linux.SOL_PACKET, linux.PACKET_RX_RING)] = errno.EINVAL

    def open(self, **kwargs: Any) -> tuple[IPacketSource, MemoryPacketSocket]:
        with capturedLogs():
            source = openCapture(CaptureRequest(**kwargs), self.system)
        self.addCleanup(source.close)
        return source, self.system.sockets[-1]

    def test_packets(self) -> None:
        """
        Each packet has the kernel's timestamp and its direction.
        """
        source, sock = self.open(interface="eth0")
        assert source.info.method == "recvmsg"
        sock.inject(udpFrame(9), timestamp=STAMP, ifindex=2, pkttype=PACKET_BROADCAST)
        collector = Collector()
        assert collector.read(source) == 1
        assert collector.packets == [
            (STAMP, udpFrame(9), Meta(len(udpFrame(9)), 2, PACKET_BROADCAST))
        ]

    def test_vlanFromAuxdata(self) -> None:
        """
        The stripped VLAN tag comes from PACKET_AUXDATA.
        """
        source, sock = self.open(interface="eth0")
        frame = udpFrame(9)
        sock.inject(frame, ifindex=2, vlan=(0x8100, 42))
        collector = Collector()
        collector.read(source)
        data = collector.packets[0][1]
        assert data == frame[:12] + b"\x81\x00\x00\x2a" + frame[12:]

    def test_cooked(self) -> None:
        """
        On C{any} the C{LINUX_SLL2} header is made from the address
        C{recvmsg} returns.
        """
        source, sock = self.open(interface="any")
        packet = frames.ipv6(frames.udp(1, 2), 17)
        sock.inject(packet, ifindex=1, protocol=0x86DD, hatype=772)
        collector = Collector()
        collector.read(source)
        data = collector.packets[0][1]
        assert data[:2] == b"\x86\xdd"
        assert struct.unpack(">i", data[4:8]) == (1,)
        assert data[20:] == packet


class FakeReadingTests(ReadingTestsMixin, SynchronousTestCase):
    def makeSystem(self) -> MemoryLinuxSystem:
        return MemoryLinuxSystem()

    def send(self, port: int, payload: bytes) -> None:
        sock = self.system.socket
        sendOnLoopback(sock, udpFrame(port, payload))
        sock.retire()

    def collect(self, source: IPacketSource, count: int) -> Collector:
        collector = Collector()
        collector.read(source)
        return collector
