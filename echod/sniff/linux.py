# -*- test-case-name: tests.unit.test_sniff_linux -*-
"""
The Linux capture source: an C{AF_PACKET} socket with a C{TPACKET_V3} ring
mapped into the process (L{LinuxRingSource}); the kernel fills whole blocks
of packets and echod reads them straight from the mapping, so thousands of
packets cost one wake-up and no system call each.  echod's C helper
(L{echod.sniff._ringwalk}) walks a block's frames, writing the pcap records
of a whole batch at once or delivering each packet; without it, Python walks
them with L{struct} and makes the same bytes.  If the ring cannot be set up,
a socket read with C{recvmsg} (L{LinuxSocketSource}) takes over.  Either way
the filter runs in the kernel (L{echod.sniff.bpf}), VLAN tags the kernel
stripped are put back into the frame, and on a loopback interface each
packet is seen once, not twice (C{PACKET_IGNORE_OUTGOING}, or a filter
prologue for C{any}).

Every operating-system call goes through L{LinuxSystem}, so that tests can
hand in a fake one.
"""

from __future__ import annotations

import dataclasses
import errno
import mmap
import socket
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.logger import Logger
from zope.interface import alsoProvides, implementer

from echod.sniff import bpf
from echod.sniff.bpf import LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL2, FilterError, FilterProgram
from echod.sniff.source import (
    CaptureError,
    CaptureInfo,
    CapturePermissionError,
    CaptureRequest,
    CaptureStatistics,
    Deliver,
    IBlockSource,
    IPacketSource,
    IRecordSink,
    IRecordSource,
    UnknownInterfaceError,
)

try:
    from echod.sniff import _ringwalk
except ImportError:  # built without a C compiler: Python walks the ring
    WALK_IN_C = False
else:
    WALK_IN_C = True

__all__ = [
    "WALK_IN_C",
    "CapturePlan",
    "LinuxRingSource",
    "LinuxSocket",
    "LinuxSocketSource",
    "LinuxSystem",
    "openLinuxCapture",
    "planCapture",
    "ringGeometry",
]

# <linux/if_packet.h>, <linux/if_ether.h>, <linux/if_arp.h>
AF_PACKET = 17
SOL_PACKET = 263
ETH_P_ALL = 0x0003
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_AUXDATA = 8
PACKET_VERSION = 10
PACKET_IGNORE_OUTGOING = 23
TPACKET_V3 = 2
TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
TP_STATUS_VLAN_VALID = 0x10
TP_STATUS_VLAN_TPID_VALID = 0x40
SOL_SOCKET = 1
SO_RCVBUF = 8
SO_RCVBUFFORCE = 33
SO_TIMESTAMPNS = 35
ARPHRD_ETHER = 1
ARPHRD_LOOPBACK = 772
ETH_P_8021Q = 0x8100

# The ring is in host byte order ("="), except sll_protocol.
# struct tpacket_block_desc: version, offset_to_priv, then tpacket_hdr_v1:
# block_status, num_pkts, offset_to_first_pkt, ...
_BLOCK = struct.Struct("=III")
_BLOCK_STATUS_OFFSET = 8
_BLOCK_STATUS = struct.Struct("=I")
# struct tpacket3_hdr (48 bytes: next_offset, sec, nsec, snaplen, len, status,
# mac, net, rxhash, vlan_tci, vlan_tpid, padding) followed by struct
# sockaddr_ll (family, protocol in network order, ifindex, hatype, pkttype,
# halen, addr).
_PACKET = struct.Struct("=IIIIIIHHIIHH8xH2siHBB8s")
# The fields of the same an Ethernet capture needs: next_offset, sec, nsec,
# snaplen, len, status, mac, vlan_tci, vlan_tpid, ifindex, pkttype.  Fewer
# fields unpacked is measurably faster per packet.
_ETHERNET_PACKET = struct.Struct("=IIIIIIH6xIH14xi2xB")
# struct tpacket_req3
_REQ3 = struct.Struct("=IIIIIII")
# struct tpacket_auxdata: status, len, snaplen, mac, net, vlan_tci, vlan_tpid
_AUXDATA = struct.Struct("=IIIHHHH")
_TIMESPEC = struct.Struct("=qq")
_STATS_V3 = struct.Struct("=III")
_STATS = struct.Struct("=II")
_MREQ = struct.Struct("=iHH8s")
_SLL2 = struct.Struct(">2sHiHBB8s")
_VLAN = struct.Struct(">HH")
_TCI = struct.Struct(">H")
_FRAME_SIZE = 2048
_RETIRE_MS = 50


class _BufferUnavailable(CaptureError):
    """
    The kernel would not set up the ring (or buffer) asked for.
    """


class LinuxSocket(Protocol):
    """
    The parts of a L{socket.socket} a Linux capture uses.
    """

    def fileno(self) -> int: ...
    def setsockopt(self, level: int, option: int, value: int | bytes, /) -> None: ...
    def getsockopt(self, level: int, option: int, buflen: int, /) -> bytes: ...
    def bind(self, address: tuple[str, int], /) -> None: ...
    def setblocking(self, flag: bool, /) -> None: ...
    def recvmsg(
        self, bufsize: int, ancbufsize: int, /
    ) -> tuple[bytes, list[tuple[int, int, bytes]], int, Any]: ...
    def close(self) -> None: ...


class LinuxSystem:
    """
    The operating-system calls a Linux capture makes (the real ones).
    """

    platform = "linux"

    def openSocket(self, family: int, kind: int, protocol: int) -> LinuxSocket:
        return socket.socket(family, kind, protocol)

    def mapRing(self, fileno: int, length: int) -> mmap.mmap:
        return mmap.mmap(fileno, length, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)

    def interfaceIndex(self, name: str) -> int:
        return socket.if_nametoindex(name)

    def interfaces(self) -> dict[int, str]:
        try:
            return dict(socket.if_nameindex())
        except OSError:
            return {}

    def interfaceType(self, name: str) -> int:
        """
        The ARPHRD_* hardware type of an interface, from sysfs.
        """
        try:
            with open(f"/sys/class/net/{name}/type") as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return ARPHRD_ETHER


@dataclass(frozen=True)
class CapturePlan:
    """
    Everything decided before a socket is opened (no privilege needed): the
    interface, the socket kind, the link type and the kernel filter.
    """

    interface: str
    index: int
    cooked: bool
    loopback: bool
    linktype: int
    program: FilterProgram
    loopbacks: tuple[int, ...]
    interfaces: Mapping[int, str]


def _interfaceList(interfaces: Mapping[int, str]) -> str:
    names = [interfaces[i] for i in sorted(interfaces)]
    return ", ".join([*names, "any"])


def planCapture(request: CaptureRequest, system: LinuxSystem) -> CapturePlan:
    """
    Resolve the interface and compile the filter for it.

    @raise UnknownInterfaceError: no such interface.
    @raise FilterError: the filter does not compile, or cannot run in the
        kernel on this interface.
    """
    interfaces = system.interfaces()
    if request.interface == "any":
        index, hatype = 0, -1
    else:
        try:
            index = system.interfaceIndex(request.interface)
        except OSError:
            raise UnknownInterfaceError(
                f"no interface named {request.interface!r} here "
                f"(there are: {_interfaceList(interfaces)})"
            ) from None
        hatype = system.interfaceType(request.interface)
    loopback = hatype == ARPHRD_LOOPBACK
    cooked = hatype not in (ARPHRD_ETHER, ARPHRD_LOOPBACK)
    linktype = LINKTYPE_LINUX_SLL2 if cooked else LINKTYPE_ETHERNET
    program = bpf.compileFilter(
        request.filter, linktype, request.snaplen, interface=request.interface
    )
    if cooked:
        program = bpf.forCookedSocket(program)
    loopbacks: tuple[int, ...] = ()
    if request.interface == "any":
        loopbacks = tuple(
            i for i, name in interfaces.items() if system.interfaceType(name) == ARPHRD_LOOPBACK
        )
        program = bpf.dropLoopbackOutgoing(program, loopbacks)
    return CapturePlan(
        request.interface, index, cooked, loopback, linktype, program, loopbacks, interfaces
    )


def _openProblem(interface: str, error: OSError) -> CaptureError:
    reason = (error.strerror or str(error)).lower()
    if error.errno in (errno.EPERM, errno.EACCES):
        return CapturePermissionError(
            f"capturing on {interface} needs root or the CAP_NET_RAW capability ({reason})"
        )
    if error.errno in (errno.ENODEV, errno.ENXIO):
        return UnknownInterfaceError(f"cannot capture on {interface}: {reason}")
    return CaptureError(f"cannot capture on {interface}: {reason}")


def ringGeometry(snaplen: int, bufferBytes: int) -> tuple[int, int]:
    """
    The block size and block count of a TPACKET_V3 ring of about
    C{bufferBytes}: a block (a power of two, at least 128 KiB) holds at
    least one packet of C{snaplen} bytes with its headers; there are at
    least 4 blocks, so the kernel fills some while Python reads others.
    """
    needed = snaplen + 256
    blockSize = 1 << max(17, (needed - 1).bit_length())
    return blockSize, max(4, bufferBytes // blockSize)


class _LinuxSource:
    """
    What the two Linux sources share: the socket's setup in libpcap's order
    (drop-all filter, options, bind, drain, real filter) and its counters.
    """

    log = Logger()
    _statsFormat = _STATS
    method = ""

    def __init__(self, request: CaptureRequest, plan: CapturePlan, system: LinuxSystem) -> None:
        self._request = request
        self._plan = plan
        self._system = system
        self._received = 0
        self._dropped = 0
        self._closed = False
        self.info = CaptureInfo(
            request.interface,
            plan.linktype,
            request.snaplen,
            dict(plan.interfaces),
            self.method,
        )
        kind = socket.SOCK_DGRAM if plan.cooked else socket.SOCK_RAW
        # For one interface, protocol 0: nothing is queued until bind() names
        # the interface and ETH_P_ALL.  Python cannot bind to interface index
        # 0 ("any"), so that socket takes every protocol from the start, and
        # what arrives before the drop-all filter is drained below.
        protocol = socket.htons(ETH_P_ALL) if request.interface == "any" else 0
        try:
            self._socket = system.openSocket(AF_PACKET, kind, protocol)
        except OSError as e:
            raise _openProblem(request.interface, e) from None
        try:
            self._setUp()
        except BaseException:
            self.close()
            raise

    def _setUp(self) -> None:
        sock = self._socket
        interface = self._request.interface
        try:
            bpf.attachFilter(sock, bpf.DROP_ALL)
            if self._plan.loopback:
                self._ignoreOutgoing()
        except OSError as e:
            raise _openProblem(interface, e) from None
        try:
            self._setUpBuffer()
        except OSError as e:
            raise _BufferUnavailable(
                f"cannot set up a {self.method} buffer on {interface}: "
                f"{(e.strerror or str(e)).lower()}"
            ) from None
        try:
            if interface != "any":
                sock.bind((interface, ETH_P_ALL))
            if self._request.promiscuous and self._plan.index:
                membership = _MREQ.pack(self._plan.index, PACKET_MR_PROMISC, 0, b"")
                sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, membership)
            sock.setblocking(False)
            self._drain()
        except OSError as e:
            raise _openProblem(interface, e) from None
        try:
            bpf.attachFilter(sock, self._plan.program)
        except OSError as e:
            raise FilterError(
                f"the kernel refused the filter {self._plan.program.expression!r}: "
                f"{(e.strerror or str(e)).lower()}"
            ) from None

    def _ignoreOutgoing(self) -> None:
        """
        On a loopback interface every packet goes out and comes back in: ask
        the kernel for the incoming copy only, or filter the outgoing one out
        where the kernel is older than 4.20.
        """
        try:
            self._socket.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        except OSError as e:
            if e.errno not in (errno.ENOPROTOOPT, errno.EINVAL):
                raise
            program = bpf.dropLoopbackOutgoing(self._plan.program, (self._plan.index,))
            self._plan = dataclasses.replace(self._plan, program=program)

    def _setUpBuffer(self) -> None:
        raise NotImplementedError()

    def _drain(self) -> None:
        """
        Throw away what arrived before the drop-all filter was attached.
        """
        for _ in range(1_000_000):
            try:
                self._socket.recvmsg(1, 0)
            except OSError:
                return

    def fileno(self) -> int:
        return self._socket.fileno()

    def statistics(self) -> CaptureStatistics:
        if not self._closed:
            self._readStatistics()
        return CaptureStatistics(self._received, self._dropped)

    def _readStatistics(self) -> None:
        # Reading the counters resets them: keep the running totals here.
        try:
            raw = self._socket.getsockopt(SOL_PACKET, PACKET_STATISTICS, self._statsFormat.size)
        except OSError:
            return
        packets, drops = struct.unpack_from("=II", raw)
        self._received += packets
        self._dropped += drops

    def close(self) -> None:
        if self._closed:
            return
        self._readStatistics()
        self._closed = True
        self._socket.close()


@implementer(IPacketSource, IBlockSource)
class LinuxRingSource(_LinuxSource):
    """
    A TPACKET_V3 ring: the kernel writes packets into blocks of a shared
    mapping and hands each full (or timed-out) block to user space by
    setting its status; reading a block is a walk over its frames (in C, or
    a loop of C{struct.unpack_from}), and handing it back is one store.

    With echod's C helper it is also an L{IRecordSource}: the pcap records
    of a batch of frames are written in one call.
    """

    _statsFormat = _STATS_V3
    method = "TPACKET_V3 ring"
    retireSeconds = _RETIRE_MS / 1000

    def __init__(self, request: CaptureRequest, plan: CapturePlan, system: LinuxSystem) -> None:
        self._inC = WALK_IN_C
        _LinuxSource.__init__(self, request, plan, system)
        walker = "C" if self._inC else "Python"
        self.info = dataclasses.replace(self.info, method=f"{self.method}, walked in {walker}")
        if self._inC:
            alsoProvides(self, IRecordSource)

    def _setUpBuffer(self) -> None:
        blockSize, blockCount = ringGeometry(self._request.snaplen, self._request.bufferBytes)
        self._blockSize, self._blockCount = blockSize, blockCount
        sock = self._socket
        sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
        request = _REQ3.pack(
            blockSize,
            blockCount,
            _FRAME_SIZE,
            blockSize // _FRAME_SIZE * blockCount,
            _RETIRE_MS,
            0,
            0,
        )
        sock.setsockopt(SOL_PACKET, PACKET_RX_RING, request)
        self._ring: mmap.mmap | None = self._system.mapRing(sock.fileno(), blockSize * blockCount)
        self._block = 0
        self._left = 0
        self._offset = 0
        self._end = 0
        self._released = 0

    def _drain(self) -> None:
        _LinuxSource._drain(self)
        ring = self._ring
        assert ring is not None
        for block in range(self._blockCount):
            base = block * self._blockSize + _BLOCK_STATUS_OFFSET
            if _BLOCK_STATUS.unpack_from(ring, base)[0] & TP_STATUS_USER:
                _BLOCK_STATUS.pack_into(ring, base, TP_STATUS_KERNEL)

    def _nextBlock(self, ring: mmap.mmap) -> bool:
        """
        Take the next block the kernel handed over, if any; skip empty ones.
        """
        while True:
            base = self._block * self._blockSize
            status, count, first = _BLOCK.unpack_from(ring, base + _BLOCK_STATUS_OFFSET)
            if not status & TP_STATUS_USER:
                return False
            if count == 0:
                self._releaseBlock()
                continue
            self._left, self._offset, self._end = count, base + first, base + self._blockSize
            return True

    def _took(self, count: int, offset: int) -> None:
        self._offset = offset
        self._left -= count
        if self._left == 0:
            self._releaseBlock()

    def readPackets(self, deliver: Deliver, limit: int, failed: Callable[[], None]) -> int:
        ring = self._ring
        if ring is None:
            return 0
        cooked = self._plan.cooked
        delivered = 0
        while delivered < limit:
            if self._left == 0 and not self._nextBlock(ring):
                break
            take = min(self._left, limit - delivered)
            if self._inC:
                offset = self._walkFrames(ring, take, deliver, failed)
            elif cooked:
                offset = self._readCooked(ring, self._offset, take, deliver, failed)
            else:
                offset = self._readEthernet(ring, self._offset, take, deliver, failed)
            self._took(take, offset)
            delivered += take
        return delivered

    def _inconsistent(self, error: ValueError) -> CaptureError:
        interface = self._request.interface
        return CaptureError(f"the capture ring of {interface} is inconsistent: {error}")

    def _walkFrames(
        self, ring: mmap.mmap, count: int, deliver: Deliver, failed: Callable[[], None]
    ) -> int:
        """
        Deliver C{count} packets of a block, walked by the C helper; an
        exception from C{deliver} stops its walk, and is raised again here
        to be reported from inside an C{except} block.
        """
        frames = _ringwalk.frames
        offset, end = self._offset, self._end
        snaplen, cooked = self._request.snaplen, self._plan.cooked
        while count > 0:
            try:
                taken, offset, error = frames(ring, offset, end, count, snaplen, cooked, deliver)
            except ValueError as e:
                raise self._inconsistent(e) from None
            count -= taken
            if error is not None:
                try:
                    raise error
                except Exception:
                    failed()
        return offset

    def readRecords(self, sink: IRecordSink, limit: int) -> int:
        """
        Write up to C{limit} packets into C{sink} as pcap records, a batch
        at a time (see L{IRecordSource}); only with the C helper.
        """
        ring = self._ring
        if ring is None:
            return 0
        records = _ringwalk.records
        snaplen, cooked = self._request.snaplen, self._plan.cooked
        divisor = 1 if sink.nanoseconds else 1000
        written = 0
        while written < limit:
            if self._left == 0 and not self._nextBlock(ring):
                break
            take = min(self._left, limit - written)
            offset, end = self._offset, self._end
            try:
                data, taken, after = records(
                    ring, offset, end, take, snaplen, divisor, cooked, sink.recordRoom()
                )
                if taken == 0:
                    # The next record alone is larger than the room left: it
                    # goes alone, into the next file or as the first of one.
                    data, taken, after = records(ring, offset, end, 1, snaplen, divisor, cooked, -1)
            except ValueError as e:
                raise self._inconsistent(e) from None
            sink.recordsReceived(data, taken)
            self._took(taken, after)
            written += taken
        return written

    def fillingBlock(self) -> int | None:
        ring = self._ring
        if ring is None:
            return None
        for ahead in range(self._blockCount):
            base = (self._block + ahead) % self._blockCount * self._blockSize
            status, count, _first = _BLOCK.unpack_from(ring, base + _BLOCK_STATUS_OFFSET)
            if not status & TP_STATUS_USER:
                # The first block not handed over is the one being filled.
                return self._released + ahead if count else None
        return None

    def blocksRead(self) -> int:
        return self._released

    def _readEthernet(
        self, ring: mmap.mmap, offset: int, count: int, deliver: Deliver, failed: Callable[[], None]
    ) -> int:
        """
        Deliver C{count} packets of a block from C{offset}; return the offset
        after them.  The hot loop: keep it lean.
        """
        unpack = _ETHERNET_PACKET.unpack_from
        snaplen = self._request.snaplen
        for _ in range(count):
            step, sec, nsec, caplen, length, status, mac, tci, tpid, ifindex, pkttype = unpack(
                ring, offset
            )
            start = offset + mac
            data = ring[start : start + caplen]
            offset += step
            if status & TP_STATUS_VLAN_VALID:
                if not status & TP_STATUS_VLAN_TPID_VALID:
                    tpid = ETH_P_8021Q
                data = (data[:12] + _VLAN.pack(tpid, tci) + data[12:])[:snaplen]
                length += 4
            try:
                deliver(sec, nsec, data, length, ifindex, pkttype)
            except Exception:
                failed()
        return offset

    def _readCooked(
        self, ring: mmap.mmap, offset: int, count: int, deliver: Deliver, failed: Callable[[], None]
    ) -> int:
        """
        The same for a cooked socket: each packet gets a C{LINUX_SLL2} header
        made from its C{sockaddr_ll}.
        """
        unpack = _PACKET.unpack_from
        snaplen = self._request.snaplen
        for _ in range(count):
            (
                step,
                sec,
                nsec,
                caplen,
                length,
                status,
                mac,
                _net,
                _hash,
                tci,
                tpid,
                _padding,
                _family,
                protocol,
                ifindex,
                hatype,
                pkttype,
                halen,
                address,
            ) = unpack(ring, offset)
            start = offset + mac
            data = ring[start : start + caplen]
            offset += step
            if status & TP_STATUS_VLAN_VALID:
                tag = _TCI.pack(tci) + protocol
                protocol = _TCI.pack(tpid if status & TP_STATUS_VLAN_TPID_VALID else 0x8100)
                data = tag + data
                length += 4
            header = _SLL2.pack(protocol, 0, ifindex, hatype, pkttype, halen, address)
            data = (header + data)[:snaplen]
            length += 20
            try:
                deliver(sec, nsec, data, length, ifindex, pkttype)
            except Exception:
                failed()
        return offset

    def _releaseBlock(self) -> None:
        assert self._ring is not None
        base = self._block * self._blockSize + _BLOCK_STATUS_OFFSET
        _BLOCK_STATUS.pack_into(self._ring, base, TP_STATUS_KERNEL)
        self._block = (self._block + 1) % self._blockCount
        self._left = 0
        self._released += 1

    def close(self) -> None:
        if self._closed:
            return
        ring, self._ring = getattr(self, "_ring", None), None
        if ring is not None:
            ring.close()
        super().close()


@implementer(IPacketSource)
class LinuxSocketSource(_LinuxSource):
    """
    One C{recvmsg} per packet, with the VLAN tag from C{PACKET_AUXDATA} and
    the kernel's timestamp from C{SO_TIMESTAMPNS}: the fallback where a ring
    cannot be mapped.  It reaches a fraction of the ring's rate.
    """

    method = "recvmsg"

    def _setUpBuffer(self) -> None:
        # CMSG_SPACE is POSIX only: this module is imported on Windows too.
        self._ancillary = socket.CMSG_SPACE(_AUXDATA.size) + socket.CMSG_SPACE(_TIMESPEC.size)
        sock = self._socket
        sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
        sock.setsockopt(SOL_SOCKET, SO_TIMESTAMPNS, 1)
        try:
            sock.setsockopt(SOL_SOCKET, SO_RCVBUFFORCE, self._request.bufferBytes)
        except OSError:
            sock.setsockopt(SOL_SOCKET, SO_RCVBUF, self._request.bufferBytes)
        self._names = {name: index for index, name in self._plan.interfaces.items()}

    def readPackets(self, deliver: Deliver, limit: int, failed: Callable[[], None]) -> int:
        sock = self._socket
        snaplen = self._request.snaplen
        delivered = 0
        while delivered < limit:
            try:
                data, ancillary, _flags, address = sock.recvmsg(snaplen, self._ancillary)
            except (BlockingIOError, InterruptedError):
                break
            delivered += 1
            name, protocol, pkttype, hatype, hwaddr = address
            ifindex = self._names.get(name, 0)
            length = len(data)
            sec = nsec = 0
            tag: tuple[int, int] | None = None
            for level, kind, value in ancillary:
                if level == SOL_PACKET and kind == PACKET_AUXDATA and len(value) >= _AUXDATA.size:
                    status, length, _snap, _mac, _net, tci, tpid = _AUXDATA.unpack_from(value)
                    if status & TP_STATUS_VLAN_VALID:
                        valid = status & TP_STATUS_VLAN_TPID_VALID
                        tag = (tpid if valid else ETH_P_8021Q, tci)
                elif level == SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec, nsec = _TIMESPEC.unpack_from(value)
            if self._plan.cooked:
                proto = _TCI.pack(protocol)
                if tag is not None:
                    data = _TCI.pack(tag[1]) + proto + data
                    proto = _TCI.pack(tag[0])
                    length += 4
                header = _SLL2.pack(proto, 0, ifindex, hatype, pkttype, len(hwaddr), hwaddr)
                data = (header + data)[:snaplen]
                length += 20
            elif tag is not None:
                data = (data[:12] + _VLAN.pack(*tag) + data[12:])[:snaplen]
                length += 4
            try:
                deliver(sec, nsec, data, max(length, len(data)), ifindex, pkttype)
            except Exception:
                failed()
        return delivered


def openLinuxCapture(request: CaptureRequest, system: LinuxSystem) -> IPacketSource:
    """
    Open a ring if the kernel gives one, else a socket read packet by packet.

    @raise CaptureError: (a L{UserError}) with one line saying what is wrong.
    @raise FilterError: the filter does not compile or cannot run here.
    """
    plan = planCapture(request, system)
    try:
        return LinuxRingSource(request, plan, system)
    except _BufferUnavailable as e:
        LinuxRingSource.log.warn(
            "no TPACKET_V3 ring ({reason}): reading packets one by one",
            reason=e,
        )
    return LinuxSocketSource(request, plan, system)
