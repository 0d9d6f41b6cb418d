"""
A fake operating system for echod's capture, as C{twisted.pair.testing}'s
C{MemoryIOSystem} is for tun/tap: L{MemoryLinuxSystem} hands out
L{MemoryPacketSocket}s that act like the kernel's packet sockets (the filter
attached is run by L{tests.classicbpf}, packets go into a real TPACKET_V3
ring layout in an anonymous mapping, or into a queue read by C{recvmsg}),
and L{MemoryWindowsSystem} hands out C{SIO_RCVALL} sockets; L{Collector}
keeps what a source delivers.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import socket
import struct
from collections import deque
from dataclasses import dataclass
from typing import Any, NamedTuple

from zope.interface import implementer

from echod.sniff import linux, windows
from echod.sniff.platforms import openCapture
from echod.sniff.reader import IPacketConsumer
from echod.sniff.source import (
    PACKET_HOST,
    PACKET_OUTGOING,
    CaptureInfo,
    CaptureRequest,
    CaptureStatistics,
    IPacketSource,
)
from tests import classicbpf
from tests.environment import freePort

__all__ = [
    "Collector",
    "MemoryLinuxSystem",
    "MemoryPacketSocket",
    "MemoryRawSocket",
    "MemoryWindowsSystem",
    "Meta",
    "receive",
]


class Meta(NamedTuple):
    """
    What a capture says about a packet besides its bytes and time, kept
    together for comparisons in tests.
    """

    wireLength: int
    interfaceIndex: int
    direction: int


def receive(
    consumer: Any, timestamp: int, data: bytes, wireLength: int, interfaceIndex: int, direction: int
) -> None:
    """
    Hand one packet to C{consumer.packetReceived}, the timestamp given in
    nanoseconds.
    """
    seconds, nanoseconds = divmod(timestamp, 1_000_000_000)
    consumer.packetReceived(seconds, nanoseconds, data, wireLength, interfaceIndex, direction)


class Collector:
    """
    Keeps what a source delivers.
    """

    def __init__(self, failOn: int | None = None) -> None:
        self.packets: list[tuple[int, bytes, Meta]] = []
        self.failures = 0
        self.failOn = failOn

    def __call__(
        self,
        seconds: int,
        nanoseconds: int,
        data: bytes,
        wireLength: int,
        interfaceIndex: int,
        direction: int,
    ) -> None:
        timestamp = seconds * 1_000_000_000 + nanoseconds
        self.packets.append((timestamp, data, Meta(wireLength, interfaceIndex, direction)))
        if self.failOn is not None and len(self.packets) == self.failOn:
            raise ValueError("consumer failed")

    def failed(self) -> None:
        self.failures += 1

    def read(self, source: IPacketSource, limit: int = 1000) -> int:
        return source.readPackets(self, limit, self.failed)


_BLOCK_HEADER = 48
_PACKET_HEADER = struct.Struct("<IIIIIIHHIIHH8xH2siHBB8s")
_HDRLEN = 48 + 20


def _align(n: int) -> int:
    return (n + 15) & ~15


@dataclass
class _Injected:
    frame: bytes
    timestamp: int
    ifindex: int
    pkttype: int
    hatype: int
    protocol: int
    vlan: tuple[int, int] | None
    address: bytes


class MemoryPacketSocket:
    """
    An C{AF_PACKET} socket in memory.  L{inject} is the network: it plays
    the kernel's part (direction, filter, ring or queue, counters).
    """

    def __init__(self, system: MemoryLinuxSystem, kind: int, protocol: int) -> None:
        self.system = system
        self.kind = kind
        self.protocol = protocol
        self.calls: list[tuple[Any, ...]] = []
        self.filter: tuple[tuple[int, int, int, int], ...] | None = None
        self.filters: list[tuple[tuple[int, int, int, int], ...]] = []
        self.bound: tuple[str, int] | None = None
        self.options: dict[tuple[int, int], Any] = {}
        self.ring: mmap.mmap | None = None
        self.blockSize = self.blockCount = 0
        self.queue: deque[tuple[bytes, list[tuple[int, int, bytes]], int, Any]] = deque()
        self.packets = 0
        self.drops = 0
        self.closed = False
        self.blocking = True
        self._block = 0
        self._offset = 0
        self._count = 0
        self._fileno = system.nextFileno()
        # As the kernel does: the block being filled counts its packets
        # (num_pkts) before it is handed over.
        self.countsWhileFilling = False

    # --- the socket API --------------------------------------------------

    def fileno(self) -> int:
        return self._fileno

    def setsockopt(self, level: int, option: int, value: int | bytes) -> None:
        self.calls.append(("setsockopt", level, option, value))
        failure = self.system.failures.get((level, option))
        if failure is not None:
            raise OSError(failure, "injected failure")
        if (level, option) == (linux.SOL_SOCKET, 26):
            assert isinstance(value, bytes)
            length, address = struct.unpack("HL", value)
            raw = ctypes.string_at(address, length * 8)
            program = tuple(struct.iter_unpack("=HBBI", raw))
            self.filter = program
            self.filters.append(program)
            return
        if (level, option) == (linux.SOL_PACKET, linux.PACKET_RX_RING):
            assert isinstance(value, bytes)
            self.blockSize, self.blockCount = struct.unpack_from("=II", value)
        self.options[(level, option)] = value

    def getsockopt(self, level: int, option: int, buflen: int) -> bytes:
        self.calls.append(("getsockopt", level, option, buflen))
        assert (level, option) == (linux.SOL_PACKET, linux.PACKET_STATISTICS)
        # The kernel adds the drops to the packets, and reading resets both.
        stats = struct.pack("=II", self.packets + self.drops, self.drops)
        self.packets = self.drops = 0
        return stats + b"\0" * (buflen - 8)

    def bind(self, address: tuple[str, int]) -> None:
        self.calls.append(("bind", address))
        if address[0] not in self.system.names or address[0] in self.system.vanished:
            raise OSError(errno.ENODEV, "No such device")
        self.bound = address

    def setblocking(self, flag: bool) -> None:
        self.blocking = flag

    def recvmsg(
        self, bufsize: int, ancbufsize: int
    ) -> tuple[bytes, list[tuple[int, int, bytes]], int, Any]:
        if not self.queue:
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
        data, ancillary, flags, address = self.queue.popleft()
        return data[:bufsize], ancillary if ancbufsize else [], flags, address

    def close(self) -> None:
        self.calls.append(("close",))
        self.closed = True

    # --- the kernel's part -------------------------------------------------

    def mapped(self, length: int) -> mmap.mmap:
        assert self.blockSize * self.blockCount == length
        self.ring = mmap.mmap(-1, length)
        return self.ring

    def inject(
        self,
        frame: bytes,
        timestamp: int = 1_700_000_000_123_456_789,
        ifindex: int = 1,
        pkttype: int = PACKET_HOST,
        hatype: int = linux.ARPHRD_ETHER,
        protocol: int = 0x0800,
        vlan: tuple[int, int] | None = None,
        address: bytes = b"\x02\0\0\0\0\x01",
    ) -> bool:
        """
        A packet arrives: C{frame} starts at the link header for a raw
        socket, at the network header for a cooked one; C{vlan} is a tag
        the "driver" stripped, as (tpid, tci).  Returns whether it was
        queued (not filtered out, ignored or dropped).
        """
        packet = _Injected(frame, timestamp, ifindex, pkttype, hatype, protocol, vlan, address)
        if self.closed:
            return False
        if self.bound is None and self.protocol == 0:
            return False
        if self.bound is not None and self.system.names[self.bound[0]] != ifindex:
            return False
        ignore = self.options.get((linux.SOL_PACKET, linux.PACKET_IGNORE_OUTGOING))
        if ignore and pkttype == PACKET_OUTGOING:
            return False
        keep = len(frame)
        if self.filter is not None:
            loads = {
                classicbpf.ANCILLARY_PROTOCOL: protocol,
                classicbpf.ANCILLARY_PKTTYPE: pkttype,
                classicbpf.ANCILLARY_IFINDEX: ifindex,
            }
            keep = classicbpf.run(self.filter, frame, loads)
            if keep == 0:
                return False
        data = frame[:keep]
        if self.ring is not None:
            return self._writeRing(packet, data)
        self.packets += 1
        ancillary: list[tuple[int, int, bytes]] = []
        if self.options.get((linux.SOL_PACKET, linux.PACKET_AUXDATA)):
            status = linux.TP_STATUS_VLAN_VALID | linux.TP_STATUS_VLAN_TPID_VALID if vlan else 0
            tpid, tci = vlan or (0, 0)
            aux = struct.pack("=IIIHHHH", status, len(frame), len(data), 0, 0, tci, tpid)
            ancillary.append((linux.SOL_PACKET, linux.PACKET_AUXDATA, aux))
        if self.options.get((linux.SOL_SOCKET, linux.SO_TIMESTAMPNS)):
            stamp = struct.pack("=qq", *divmod(timestamp, 1_000_000_000))
            ancillary.append((linux.SOL_SOCKET, linux.SO_TIMESTAMPNS, stamp))
        name = self.system.indexes.get(ifindex, "")
        self.queue.append((data, ancillary, 0, (name, protocol, pkttype, hatype, address)))
        return True

    def _writeRing(self, packet: _Injected, data: bytes) -> bool:
        ring = self.ring
        assert ring is not None
        base = self._block * self.blockSize
        status = struct.unpack_from("<I", ring, base + 8)[0]
        if status & linux.TP_STATUS_USER:
            self.drops += 1
            return False
        maclen = 0 if self.kind == socket.SOCK_DGRAM else 14
        netoff = _align(_HDRLEN + max(maclen, 16))
        macoff = netoff - maclen
        if self._count == 0:
            self._offset = _BLOCK_HEADER
        needed = _align(macoff + len(data))
        if self._offset + needed > self.blockSize:
            self.retire()
            return self._writeRing(packet, data)
        self.packets += 1
        offset = base + self._offset
        status = 0
        tpid, tci = packet.vlan or (0, 0)
        if packet.vlan:
            status |= linux.TP_STATUS_VLAN_VALID | linux.TP_STATUS_VLAN_TPID_VALID
        seconds, nanoseconds = divmod(packet.timestamp, 1_000_000_000)
        _PACKET_HEADER.pack_into(
            ring,
            offset,
            needed,
            seconds,
            nanoseconds,
            len(data),
            len(packet.frame),
            status,
            macoff,
            netoff,
            0,
            tci,
            tpid,
            0,
            linux.AF_PACKET,
            struct.pack(">H", packet.protocol),
            packet.ifindex,
            packet.hatype,
            packet.pkttype,
            len(packet.address),
            packet.address.ljust(8, b"\0"),
        )
        ring[offset + macoff : offset + macoff + len(data)] = data
        self._offset += needed
        self._count += 1
        if self.countsWhileFilling:
            struct.pack_into("<I", ring, base + 12, self._count)
        return True

    def retire(self) -> None:
        """
        Hand the block being filled to user space (the kernel does it when
        the block is full or its timer expires).
        """
        ring = self.ring
        assert ring is not None
        if self._count == 0:
            return
        base = self._block * self.blockSize
        struct.pack_into("<IIII", ring, base + 8, linux.TP_STATUS_USER, self._count, 48, 0)
        self._block = (self._block + 1) % self.blockCount
        self._count = 0
        following = self._block * self.blockSize
        if self.countsWhileFilling and not struct.unpack_from("<I", ring, following + 8)[0]:
            # The next block is opened at once, its count reset.
            struct.pack_into("<I", ring, following + 12, 0)

    def userBlocks(self) -> int:
        """
        How many blocks user space holds.
        """
        ring = self.ring
        assert ring is not None
        return sum(
            struct.unpack_from("<I", ring, b * self.blockSize + 8)[0] & linux.TP_STATUS_USER
            for b in range(self.blockCount)
        )


class MemoryLinuxSystem(linux.LinuxSystem):
    """
    Interfaces C{lo} (1, loopback) and C{eth0} (2, Ethernet), C{tun0} (3,
    no link header) and packet sockets in memory.  C{failures} maps
    C{(level, option)} of C{setsockopt} to an errno to fail with;
    C{openError} makes C{openSocket} fail; C{bind} fails for interfaces in
    C{vanished}.
    """

    platform = "linux"

    def __init__(self) -> None:
        self.names = {"lo": 1, "eth0": 2, "tun0": 3}
        self.indexes = {index: name for name, index in self.names.items()}
        self.types = {"lo": linux.ARPHRD_LOOPBACK, "eth0": linux.ARPHRD_ETHER, "tun0": 65534}
        self.sockets: list[MemoryPacketSocket] = []
        self.failures: dict[tuple[int, int], int] = {}
        self.openError: int | None = None
        self.vanished: set[str] = set()
        self._filenos = 100

    def nextFileno(self) -> int:
        self._filenos += 1
        return self._filenos

    def openSocket(self, family: int, kind: int, protocol: int) -> MemoryPacketSocket:
        assert family == linux.AF_PACKET
        if self.openError is not None:
            raise OSError(self.openError, "injected")
        sock = MemoryPacketSocket(self, kind, protocol)
        self.sockets.append(sock)
        return sock

    def mapRing(self, fileno: int, length: int) -> mmap.mmap:
        (sock,) = [s for s in self.sockets if s.fileno() == fileno]
        return sock.mapped(length)

    def interfaceIndex(self, name: str) -> int:
        if name not in self.names:
            raise OSError(errno.ENODEV, "no interface with this name")
        return self.names[name]

    def interfaces(self) -> dict[int, str]:
        return dict(self.indexes)

    def interfaceType(self, name: str) -> int:
        return self.types[name]

    @property
    def socket(self) -> MemoryPacketSocket:
        """
        The one socket opened.
        """
        (sock,) = self.sockets
        return sock


class MemoryRawSocket:
    """
    A Windows raw IP socket in memory: C{received} is what C{recv} returns,
    in order.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.received: deque[bytes] = deque()
        self.closed = False

    def fileno(self) -> int:
        return 7

    def setsockopt(self, level: int, option: int, value: int) -> None:
        self.calls.append(("setsockopt", level, option, value))

    def bind(self, address: tuple[str, int]) -> None:
        self.calls.append(("bind", address))
        if address[0] != "192.0.2.10":
            raise OSError(errno.EADDRNOTAVAIL, "The requested address is not valid")

    def setblocking(self, flag: bool) -> None:
        self.calls.append(("setblocking", flag))

    def ioctl(self, control: int, option: int) -> None:
        self.calls.append(("ioctl", control, option))

    def recv(self, bufsize: int) -> bytes:
        if not self.received:
            raise BlockingIOError(errno.EWOULDBLOCK, "would block")
        return self.received.popleft()[:bufsize]

    def close(self) -> None:
        self.calls.append(("close",))
        self.closed = True


class MemoryWindowsSystem(windows.WindowsSystem):
    """
    One interface, 192.0.2.10; C{openError} makes C{openSocket} fail.
    """

    platform = "win32"

    def __init__(self) -> None:
        self.sockets: list[MemoryRawSocket] = []
        self.openError: int | None = None
        self.now = 1_700_000_000_000_000_000

    def openSocket(self, family: int, kind: int, protocol: int) -> MemoryRawSocket:
        if self.openError is not None:
            raise OSError(self.openError, "injected")
        sock = MemoryRawSocket()
        sock.calls.append(("socket", family, kind, protocol))
        self.sockets.append(sock)
        return sock

    def defaultAddress(self) -> str:
        return "192.0.2.10"

    def nanoseconds(self) -> int:
        self.now += 1000
        return self.now


@implementer(IPacketConsumer)
class RecordingConsumer:
    """
    Keeps what it is given; C{failOn} makes the Nth packet raise,
    C{flushError} makes L{flush} raise.
    """

    def __init__(self, failOn: int | None = None) -> None:
        self.info: CaptureInfo | None = None
        self.packets: list[tuple[int, bytes, Meta]] = []
        self.flushes = 0
        self.stopped = 0
        self.statistics: CaptureStatistics | None = None
        self.failOn = failOn
        self.flushError: Exception | None = None

    def captureStarted(self, info: CaptureInfo) -> None:
        self.info = info

    def packetReceived(
        self,
        seconds: int,
        nanoseconds: int,
        data: bytes,
        wireLength: int,
        interfaceIndex: int,
        direction: int,
    ) -> None:
        timestamp = seconds * 1_000_000_000 + nanoseconds
        self.packets.append((timestamp, data, Meta(wireLength, interfaceIndex, direction)))
        if self.failOn == len(self.packets):
            raise ValueError("cannot write this one")

    def flush(self) -> None:
        self.flushes += 1
        if self.flushError is not None:
            raise self.flushError

    def captureStopped(self, statistics: CaptureStatistics | None = None) -> None:
        self.stopped += 1
        self.statistics = statistics


class ReadingTestsMixin:
    """
    Reading a capture of the loopback interface, the same against the fake
    and the real kernel.
    """

    def makeSystem(self) -> Any:
        raise NotImplementedError()

    def send(self, port: int, payload: bytes) -> None:
        raise NotImplementedError()

    def collect(self, source: IPacketSource, count: int) -> Collector:
        raise NotImplementedError()

    def openLoopback(self, expression: str) -> IPacketSource:
        self.system = self.makeSystem()
        source = openCapture(CaptureRequest(interface="lo", filter=expression), self.system)
        self.addCleanup(source.close)  # type: ignore[attr-defined]
        return source

    def test_filteredOnce(self) -> None:
        """
        Matching packets arrive once each (not once out and once in);
        others never arrive.
        """
        port = freePort(socket.AF_INET, socket.SOCK_DGRAM)
        source = self.openLoopback(f"udp dst port {port}")
        self.send(port + 1 if port < 65535 else port - 1, b"other")
        self.send(port, b"first")
        self.send(port, b"second")
        collector = self.collect(source, 2)
        payloads = [p[1][42:] for p in collector.packets]
        assert payloads == [b"first", b"second"]
        assert {p[2].direction for p in collector.packets} == {PACKET_HOST}
        assert source.statistics().received == 2
