# -*- test-case-name: tests.unit.test_sniff_capturefile -*-
"""
Reading capture files (C{tcpdump -r}): pcap and pcapng, from a path or from
standard input, streamed in bounded memory, filtered with libpcap's own
semantics, into the same L{IPacketConsumer} a live capture feeds.

L{CaptureFileReader} parses; L{readCaptureFile} runs a whole read.  A file
that is damaged, truncated or hostile gives one L{CaptureFileError} naming
the file, the place (packet number, byte offset) and what is wrong, after
the packets before the damage were delivered, as tcpdump does.

Formats (pcap: U{https://www.ietf.org/archive/id/draft-ietf-opsawg-pcap-04.html},
pcapng: U{https://www.ietf.org/archive/id/draft-ietf-opsawg-pcapng-01.html}):
  - pcap 2.x, microsecond (C{0xa1b2c3d4}) or nanosecond (C{0xa1b23c4d})
    timestamps, either byte order;
  - pcapng 1.x: Section Header Blocks in either byte order (sections may
    differ), Interface Description Blocks (C{if_name}, C{if_tsresol} in
    powers of 10 or 2, C{if_tsoffset}), Enhanced Packet Blocks (with the
    direction of C{epb_flags}), Simple Packet Blocks, the obsolete Packet
    Block; every other block is skipped.

Like libpcap, one file has one link type: an interface of another link type
is an error (libpcap: "an interface has a type ... different from the type
of the first interface").  Unlike libpcap, interfaces of different snapshot
lengths and sections of different byte orders are read.
"""

from __future__ import annotations

import contextlib
import struct
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO

from twisted.logger import Logger

from echod.errors import UserError
from echod.sniff.bpf import OfflineFilter
from echod.sniff.reader import CaptureComplete, IPacketConsumer
from echod.sniff.source import (
    DIRECTION_UNKNOWN,
    PACKET_BROADCAST,
    PACKET_HOST,
    PACKET_MULTICAST,
    PACKET_OTHERHOST,
    PACKET_OUTGOING,
    CaptureInfo,
)

__all__ = [
    "MAXIMUM_BLOCK",
    "MAXIMUM_SNAPLEN",
    "CaptureFileError",
    "CaptureFileReader",
    "OfflineStatistics",
    "Packet",
    "openCaptureFile",
    "readCaptureFile",
]

MAXIMUM_SNAPLEN = 262144
"""
The largest packet libpcap keeps (its C{MAXIMUM_SNAPLEN}): a pcap record
claiming more is an error, as in libpcap; a file's snapshot length of 0 or
more stands for this.
"""

MAXIMUM_BLOCK = 16 * 1024 * 1024
"""
The largest pcapng block read (libpcap's initial limit): a longer one is an
error, not an allocation.
"""

_CHUNK = 1 << 20
_NS = 1_000_000_000
_MAX_SECONDS = 0xFFFFFFFF

_PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1000),
    b"\xa1\xb2\xc3\xd4": (">", 1000),
    b"\x4d\x3c\xb2\xa1": ("<", 1),
    b"\xa1\xb2\x3c\x4d": (">", 1),
}
_SHB_TYPE = b"\x0a\x0d\x0d\x0a"
_BYTE_ORDER_MAGIC = 0x1A2B3C4D

_BT_IDB = 1
_BT_PB = 2
_BT_SPB = 3
_BT_EPB = 6
_BT_SHB = 0x0A0D0D0A

_OPT_END = 0
_IF_NAME = 2
_IF_TSRESOL = 9
_IF_TSOFFSET = 14
_EPB_FLAGS = 2

# epb_flags: bits 0-1 direction, bits 2-4 reception type.
_INBOUND_BY_RECEPTION = {
    0: PACKET_HOST,
    1: PACKET_HOST,
    2: PACKET_MULTICAST,
    3: PACKET_BROADCAST,
    4: PACKET_OTHERHOST,
}

Packet = tuple[int, int, bytes, int, int, int]
"""
One packet as L{IPacketConsumer.packetReceived} takes it: seconds,
nanoseconds, data, wire length, interface index (pcapng: 1 for the first
interface of the file, and so on; pcap: 0), direction.
"""


class CaptureFileError(UserError):
    """
    A capture file cannot be opened or read: C{str()} names the file and
    what is wrong with it.  L{statistics} holds what was read before, when
    the error came during a L{readCaptureFile}.
    """

    statistics: OfflineStatistics | None = None


@dataclass(frozen=True)
class OfflineStatistics:
    """
    What one read of a file did: packets C{read} from it, packets that
    C{matched} the filter, packets C{delivered} to the consumer (those it
    C{failed} on are not), and why the consumer ended the read early
    (C{complete}: its L{CaptureComplete}, such as the files of C{-G} with
    C{-W} all written; empty otherwise).
    """

    read: int
    matched: int
    delivered: int
    failed: int = 0
    complete: str = ""


@dataclass
class _Interface:
    index: int
    linktype: int
    snaplen: int
    name: str
    units: int
    offset: int


class CaptureFileReader:
    """
    The packets of one pcap or pcapng stream, in file order, read in chunks
    (never the whole file).

    Construct it on a binary stream, then L{open} (reads the header, and for
    pcapng every block up to the first interface) and iterate L{packets}.

    @ivar info: what the consumer must know (link type, snapshot length,
        interface names by index: filled as interfaces are read).
    @ivar format: C{"pcap"} or C{"pcapng"}.
    """

    def __init__(self, stream: IO[bytes], name: str, owned: bool = True) -> None:
        self.name = name
        self._stream = stream
        self._owned = owned
        self._order = "<"
        self._read = getattr(stream, "read1", None) or stream.read
        self._buffer = b""
        self._at = 0
        self._consumed = 0
        self._interfaces: list[_Interface] = []
        self._sectionStart = 0
        self._names: dict[int, str] = {}
        self.packetsRead = 0
        self.format = ""
        self.info: CaptureInfo | None = None
        self._linktype = -1
        self._snaplen = 0

    def close(self) -> None:
        """
        Close the stream, unless it was lent (standard input); idempotent.
        """
        if self._owned:
            self._stream.close()

    # Reading --------------------------------------------------------------

    def _error(self, problem: str) -> CaptureFileError:
        return CaptureFileError(f"{self.name}: {problem}")

    def _fill(self, size: int) -> int:
        """
        Make C{size} bytes available at C{self._at} if the stream has them;
        return how many are.
        """
        available = len(self._buffer) - self._at
        if available >= size:
            return available
        pieces = [self._buffer[self._at :]]
        self._consumed += self._at
        self._at = 0
        while available < size:
            try:
                chunk = self._read(_CHUNK)
            except OSError as e:
                raise self._error(f"cannot read: {(e.strerror or str(e)).lower()}") from None
            if not chunk:
                break
            pieces.append(chunk)
            available += len(chunk)
        self._buffer = b"".join(pieces)
        return available

    def _position(self) -> int:
        return self._consumed + self._at

    def _take(self, size: int, what: str) -> int:
        """
        The offset in C{self._buffer} of the next C{size} bytes, consumed.

        @raise CaptureFileError: the stream ends before (C{what} says where).
        """
        available = self._fill(size)
        if available < size:
            raise self._error(
                f"truncated {what} at byte {self._position()}: "
                f"{size} bytes needed, {available} present"
            )
        at = self._at
        self._at = at + size
        return at

    def _atEnd(self) -> bool:
        return self._fill(1) == 0

    # Opening --------------------------------------------------------------

    def open(self) -> CaptureInfo:
        """
        Read the header (pcap) or the blocks up to the first interface
        (pcapng), and say what the packets are.

        @raise CaptureFileError: not a capture file, or a damaged header.
        """
        available = self._fill(4)
        if available < 4:
            if available == 0:
                raise self._error("empty file, not a pcap or pcapng capture")
            raise self._error(f"truncated file of {available} bytes, not a capture")
        magic = self._buffer[self._at : self._at + 4]
        if magic in _PCAP_MAGICS:
            self._openPcap(*_PCAP_MAGICS[magic])
        elif magic == _SHB_TYPE:
            self._openPcapng()
        else:
            raise self._error(f"not a pcap or pcapng capture (it starts with 0x{magic.hex()})")
        return self._makeInfo()

    def _makeInfo(self) -> CaptureInfo:
        self.info = CaptureInfo(
            interface=self._names.get(1, ""),
            linktype=self._linktype,
            snaplen=self._snaplen,
            interfaces=self._names,
            method=f"{self.format} file",
        )
        return self.info

    def _openPcap(self, order: str, multiplier: int) -> None:
        self.format = "pcap"
        at = self._take(24, "pcap file header")
        major, minor, _, _, snaplen, linktype = struct.unpack_from(
            order + "HHiIII", self._buffer, at + 4
        )
        if major != 2:
            raise self._error(f"unsupported pcap version {major}.{minor} (2.4 is read)")
        # The upper bits of the link type field hold FCS information.
        self._linktype = linktype & 0x03FFFFFF
        self._snaplen = snaplen if 0 < snaplen <= MAXIMUM_SNAPLEN else MAXIMUM_SNAPLEN
        self._pcapOrder = order
        self._pcapMultiplier = multiplier

    def _openPcapng(self) -> None:
        self.format = "pcapng"
        while not self._interfaces:
            if self._atEnd():
                raise self._error("pcapng file without an interface description block")
            # A packet block here is refused: it has no interface yet.
            self._nextBlock()

    # Packets --------------------------------------------------------------

    def packets(self) -> Iterator[Packet]:
        """
        Every packet, in file order; L{open} first.

        @raise CaptureFileError: at the first damage, after the packets
            before it.
        """
        if self.format == "pcap":
            return self._pcapPackets()
        return self._pcapngPackets()

    def _pcapPackets(self) -> Iterator[Packet]:
        unpack = struct.Struct(self._pcapOrder + "IIII").unpack_from
        multiplier = self._pcapMultiplier
        snaplen = self._snaplen
        limit = max(snaplen, MAXIMUM_SNAPLEN)
        while True:
            # The records wholly in the buffer, checked the cheap way...
            buffer, at, number = self._buffer, self._at, self.packetsRead
            size = len(buffer)
            while at + 16 <= size:
                seconds, fraction, caplen, wire = unpack(buffer, at)
                data = at + 16
                if caplen > snaplen or data + caplen > size or fraction * multiplier >= _NS:
                    break
                at = data + caplen
                number += 1
                self._at = at
                self.packetsRead = number
                yield (
                    seconds,
                    fraction * multiplier,
                    buffer[data:at],
                    wire if wire >= caplen else caplen,
                    0,
                    DIRECTION_UNKNOWN,
                )
            # ...then one record the careful way, reading more first.
            if self._atEnd():
                return
            yield self._pcapRecord(unpack, multiplier, snaplen, limit)

    def _pcapRecord(
        self,
        unpack: Callable[[bytes, int], tuple[int, int, int, int]],
        multiplier: int,
        snaplen: int,
        limit: int,
    ) -> Packet:
        number = self.packetsRead + 1
        at = self._take(16, f"header of packet {number}")
        seconds, fraction, caplen, wire = unpack(self._buffer, at)
        if caplen > limit:
            raise self._error(
                f"packet {number} at byte {self._position() - 16} claims {caplen} "
                f"captured bytes, more than the maximum of {limit}"
            )
        nanoseconds = fraction * multiplier
        if nanoseconds >= _NS:
            # A fraction of a second or more: libpcap passes it on,
            # consumers want it carried into the seconds.
            carried, nanoseconds = divmod(nanoseconds, _NS)
            seconds += carried
            if seconds > _MAX_SECONDS:
                raise self._error(
                    f"packet {number} has a time stamp of {seconds} seconds, outside 1970-2106"
                )
        at = self._take(caplen, f"packet {number} ({caplen} captured bytes)")
        # libpcap keeps the snapshot length of the file.
        kept = min(caplen, snaplen)
        self.packetsRead = number
        return (
            seconds,
            nanoseconds,
            self._buffer[at : at + kept],
            wire if wire >= kept else kept,
            0,
            DIRECTION_UNKNOWN,
        )

    def _pcapngPackets(self) -> Iterator[Packet]:
        while not self._atEnd():
            packet = self._nextBlock()
            if packet is not None:
                yield packet

    # pcapng blocks ----------------------------------------------------------

    def _nextBlock(self) -> Packet | None:
        """
        Read one block; a packet block gives its packet.
        """
        start = self._position()
        available = self._fill(12)
        buffer = self._buffer
        if available >= 4 and buffer[self._at : self._at + 4] == _SHB_TYPE:
            if available < 12:
                raise self._error(f"truncated section header block at byte {start}")
            magic = buffer[self._at + 8 : self._at + 12]
            if magic == b"\x4d\x3c\x2b\x1a":
                self._order = "<"
            elif magic == b"\x1a\x2b\x3c\x4d":
                self._order = ">"
            else:
                raise self._error(
                    f"section header block at byte {start} has a bad byte-order magic "
                    f"0x{magic.hex()}"
                )
        if available < 8:
            raise self._error(
                f"truncated block header at byte {start}: 8 bytes needed, {available} present"
            )
        order = self._order
        kind, length = struct.unpack_from(order + "II", buffer, self._at)
        if length < 12 or length % 4:
            problem = "less than 12" if length < 12 else "not a multiple of 4"
            raise self._error(
                f"block of type 0x{kind:08x} at byte {start} has a length of {length}, {problem}"
            )
        if length > MAXIMUM_BLOCK:
            raise self._error(
                f"block of type 0x{kind:08x} at byte {start} has a length of {length}, "
                f"more than the maximum of {MAXIMUM_BLOCK}"
            )
        what = _BLOCK_NAMES.get(kind, "block")
        at = self._take(length, f"{what} of {length} bytes")
        (trailer,) = struct.unpack_from(order + "I", self._buffer, at + length - 4)
        if trailer != length:
            raise self._error(
                f"{what} at byte {start}: its length is {length} at the start "
                f"and {trailer} at the end"
            )
        body = at + 8
        end = at + length - 4
        if kind == _BT_EPB:
            return self._enhancedPacket(body, end, start)
        if kind == _BT_IDB:
            self._interface(body, end, start)
        elif kind == _BT_SHB:
            self._section(body, end, start)
        elif kind == _BT_SPB:
            return self._simplePacket(body, end, start)
        elif kind == _BT_PB:
            return self._obsoletePacket(body, end, start)
        return None

    def _section(self, body: int, end: int, start: int) -> None:
        if end - body < 16:
            raise self._error(f"section header block at byte {start} is too short")
        major, minor = struct.unpack_from(self._order + "HH", self._buffer, body + 4)
        if major != 1:
            raise self._error(
                f"section header block at byte {start}: unsupported pcapng version "
                f"{major}.{minor} (1.0 is read)"
            )
        # Interface numbers start again in each section.
        self._sectionStart = len(self._interfaces)

    def _options(self, body: int, end: int, what: str) -> Iterator[tuple[int, int, int]]:
        """
        The (code, offset, length) of each option between C{body} and C{end}.
        """
        order = self._order
        buffer = self._buffer
        while body + 4 <= end:
            code, size = struct.unpack_from(order + "HH", buffer, body)
            if code == _OPT_END:
                return
            value = body + 4
            body = value + ((size + 3) & ~3)
            if value + size > end:
                raise self._error(f"{what}: option {code} runs past the end of the block")
            yield code, value, size

    def _interface(self, body: int, end: int, start: int) -> None:
        what = f"interface description block at byte {start}"
        if end - body < 8:
            raise self._error(f"{what} is too short")
        order = self._order
        linktype, _, snaplen = struct.unpack_from(order + "HHI", self._buffer, body)
        name = ""
        units = 1_000_000
        offset = 0
        for code, value, size in self._options(body + 8, end, what):
            if code == _IF_NAME:
                name = self._buffer[value : value + size].decode("utf-8", "replace")
            elif code == _IF_TSRESOL and size == 1:
                resolution = self._buffer[value]
                exponent = resolution & 0x7F
                if resolution & 0x80:
                    if exponent > 63:
                        raise self._error(f"{what}: time stamp resolution 2^-{exponent}")
                    units = 1 << exponent
                else:
                    if exponent > 19:
                        raise self._error(f"{what}: time stamp resolution 10^-{exponent}")
                    units = 10**exponent
            elif code == _IF_TSOFFSET and size == 8:
                (offset,) = struct.unpack_from(order + "q", self._buffer, value)
        index = len(self._interfaces) + 1
        if not self._interfaces:
            self._linktype = linktype
            self._snaplen = snaplen if 0 < snaplen <= MAXIMUM_SNAPLEN else MAXIMUM_SNAPLEN
        elif linktype != self._linktype:
            raise self._error(
                f"interface {index} ({name or 'unnamed'}, {what}) has link type {linktype}, "
                f"the first has {self._linktype}: one file of several link types is not "
                "read (nor by tcpdump); split it with tshark -Y frame.interface_id==N"
            )
        if not 0 < snaplen <= MAXIMUM_SNAPLEN:
            snaplen = MAXIMUM_SNAPLEN
        self._interfaces.append(_Interface(index, linktype, snaplen, name, units, offset))
        self._names[index] = name

    def _findInterface(self, number: int, interfaceId: int, what: str) -> _Interface:
        position = self._sectionStart + interfaceId
        if position >= len(self._interfaces):
            known = len(self._interfaces) - self._sectionStart
            if not known:
                raise self._error(
                    f"packet {number} ({what}) comes before any interface "
                    "description block of its section"
                )
            raise self._error(
                f"packet {number} ({what}) is of interface {interfaceId}, "
                f"but the section describes {known} interface{'s' if known != 1 else ''}"
            )
        return self._interfaces[position]

    def _timestamp(self, interface: _Interface, stamp: int, number: int) -> tuple[int, int]:
        units = interface.units
        seconds, fraction = divmod(stamp, units)
        seconds += interface.offset
        if not 0 <= seconds <= _MAX_SECONDS:
            raise self._error(
                f"packet {number} has a time stamp of {seconds} seconds, outside 1970-2106"
            )
        if units == 1_000_000:
            return seconds, fraction * 1000
        return seconds, fraction * _NS // units

    def _enhancedPacket(self, body: int, end: int, start: int) -> Packet:
        if end - body < 20:
            raise self._error(f"enhanced packet block at byte {start} is too short")
        interfaceId, high, low, caplen, wire = struct.unpack_from(
            self._order + "IIIII", self._buffer, body
        )
        what = f"enhanced packet block at byte {start}"
        return self._packet(interfaceId, high << 32 | low, caplen, wire, body + 20, end, what)

    def _obsoletePacket(self, body: int, end: int, start: int) -> Packet:
        if end - body < 20:
            raise self._error(f"packet block at byte {start} is too short")
        interfaceId, _, high, low, caplen, wire = struct.unpack_from(
            self._order + "HHIIII", self._buffer, body
        )
        what = f"packet block at byte {start}"
        return self._packet(interfaceId, high << 32 | low, caplen, wire, body + 20, end, what)

    def _packet(
        self, interfaceId: int, stamp: int, caplen: int, wire: int, data: int, end: int, what: str
    ) -> Packet:
        """
        The packet of an enhanced or obsolete packet block, whose bytes start
        at C{data}, followed by options up to C{end} (C{epb_flags} and the
        obsolete block's C{pack_flags} have the same code and meaning).
        """
        number = self.packetsRead + 1
        interface = self._findInterface(number, interfaceId, what)
        room = end - data
        if caplen > room:
            raise self._error(
                f"packet {number} ({what}) claims {caplen} captured bytes, "
                f"but its block holds {room}"
            )
        kept = min(caplen, interface.snaplen)
        packet = self._buffer[data : data + kept]
        direction = DIRECTION_UNKNOWN
        for code, value, size in self._options(data + ((caplen + 3) & ~3), end, what):
            if code == _EPB_FLAGS and size == 4:
                (flags,) = struct.unpack_from(self._order + "I", self._buffer, value)
                direction = _direction(flags)
        seconds, nanoseconds = self._timestamp(interface, stamp, number)
        self.packetsRead = number
        return (
            seconds,
            nanoseconds,
            packet,
            wire if wire >= kept else kept,
            interface.index,
            direction,
        )

    def _simplePacket(self, body: int, end: int, start: int) -> Packet:
        number = self.packetsRead + 1
        if end - body < 4:
            raise self._error(f"simple packet block at byte {start} is too short")
        interface = self._findInterface(number, 0, f"simple packet block at byte {start}")
        (wire,) = struct.unpack_from(self._order + "I", self._buffer, body)
        # No captured length: what the block holds, up to the snapshot length.
        caplen = min(wire, interface.snaplen, end - body - 4)
        data = self._buffer[body + 4 : body + 4 + caplen]
        self.packetsRead = number
        return (0, 0, data, wire, interface.index, DIRECTION_UNKNOWN)


_BLOCK_NAMES = {
    _BT_SHB: "section header block",
    _BT_IDB: "interface description block",
    _BT_EPB: "enhanced packet block",
    _BT_SPB: "simple packet block",
    _BT_PB: "packet block",
}


def _direction(flags: int) -> int:
    """
    The Linux packet type of pcapng's C{epb_flags}.
    """
    inbound = flags & 0x3
    if inbound == 2:
        return PACKET_OUTGOING
    if inbound == 1:
        return _INBOUND_BY_RECEPTION.get((flags >> 2) & 0x7, PACKET_HOST)
    return DIRECTION_UNKNOWN


def openCaptureFile(path: str, stdin: IO[bytes] | None = None) -> CaptureFileReader:
    """
    A reader of the file at C{path}, or of standard input for C{"-"}
    (C{stdin}, by default the process's), with its header read.

    @raise CaptureFileError: the file cannot be opened (missing, a
        directory, no permission) or is not a capture.
    """
    if path == "-":
        stream = stdin if stdin is not None else getattr(sys.stdin, "buffer", None)
        if stream is None:
            raise CaptureFileError("cannot read standard input: there is none")
        reader = CaptureFileReader(stream, "standard input", owned=False)
    else:
        try:
            stream = open(path, "rb")  # noqa: SIM115 - closed by readCaptureFile
        except OSError as e:
            reason = (e.strerror or str(e)).lower()
            raise CaptureFileError(f"cannot read {path}: {reason}") from None
        reader = CaptureFileReader(stream, path)
    try:
        reader.open()
    except BaseException:
        reader.close()
        raise
    return reader


log = Logger()
_FAILURES_LOGGED = 5


def readCaptureFile(
    path: str,
    expression: str,
    consumer: IPacketConsumer,
    count: int = 0,
    stdin: IO[bytes] | None = None,
    flushEvery: int = 4096,
) -> OfflineStatistics:
    """
    Deliver the packets of the capture file at C{path} (C{"-"}: standard
    input) that match the tcpdump filter C{expression} to C{consumer}, as
    C{tcpdump -r PATH [-c COUNT] EXPRESSION} prints them: C{captureStarted}
    with the file's link type and snapshot length, the packets in file order
    (flushed every C{flushEvery}), C{captureStopped} at the end, also after
    an error in the file.

    A plain loop, not the reactor: a file is always ready to read (the
    reactor would only add a turn per batch), the read has no timers or
    connections to serve meanwhile, and the consumer's output is blocking
    too.  Standard input may be a pipe fed by a live capture; it is read as
    data comes (C{read1}), and the loop ends with it.

    @param count: stop after this many matching packets (0: never).
    @return: how many packets were read, matched and delivered, and whether
        the consumer ended the read (C{complete}), as after a count.
    @raise CaptureFileError: the file cannot be read, or is damaged (after
        the packets before the damage; the error's C{statistics} say how
        many).
    @raise echod.sniff.bpf.FilterError: the expression does not compile for
        the file's link type.
    @raise echod.errors.UserError: the consumer's output failed (it is
        stopped first).
    """
    reader = openCaptureFile(path, stdin)
    read = matched = failed = 0
    complete = ""
    try:
        info = reader.info
        assert info is not None
        offline = OfflineFilter(expression, info.linktype, info.snaplen)
        try:
            consumer.captureStarted(info)
            deliver = consumer.packetReceived
            matches = None if offline.matchesAll else offline.matches
            try:
                for packet in reader.packets():
                    read += 1
                    if matches is not None and not matches(packet[2], packet[3]):
                        continue
                    matched += 1
                    try:
                        deliver(*packet)
                    except UserError:
                        raise
                    except Exception:
                        failed += 1
                        if failed <= _FAILURES_LOGGED:
                            log.failure(
                                "{file}: packet {number} could not be passed on "
                                "(the first {limit} failures are logged)",
                                file=reader.name,
                                number=read,
                                limit=_FAILURES_LOGGED,
                            )
                    if matched % flushEvery == 0:
                        try:
                            consumer.flush()
                        except CaptureComplete as e:
                            complete = str(e)
                            break
                    if count and matched >= count:
                        break
            except CaptureFileError as e:
                e.statistics = OfflineStatistics(read, matched, matched - failed, failed)
                consumer.captureStopped()
                raise
            except UserError:
                # The output failed: close what it can, report the first
                # failure.
                with contextlib.suppress(UserError):
                    consumer.captureStopped()
                raise
            consumer.captureStopped()
        finally:
            offline.close()
    finally:
        reader.close()
    return OfflineStatistics(read, matched, matched - failed, failed, complete)
