# -*- test-case-name: tests.unit.test_sniff_pcapng -*-
"""
pcapng output (C{format = "pcapng"}): what pcap cannot say, written so that
tshark, Wireshark and tcpdump read it.

Each file (of a rotation too) starts with a Section Header Block (naming
echod as the writer) and one Interface Description Block (the interface's
name, link type, snapshot length, time stamp resolution); each packet is an
Enhanced Packet Block whose C{epb_flags} carry its direction (inbound with
its reception type, or outbound) where the capture knows it.  When a live
capture stops, an Interface Statistics Block records the kernel's counters
as dumpcap writes them: C{isb_ifrecv} the packets handed to the output,
C{isb_ifdrop} those the kernel dropped (Wireshark's "Dropped packets"),
C{isb_filteraccept} those that passed the kernel's filter, and when the
capture started and ended.

Format: U{https://www.ietf.org/archive/id/draft-ietf-opsawg-pcapng-01.html}.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from importlib import metadata

from zope.interface import implementer

from echod.sniff.reader import IPacketConsumer
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

__all__ = [
    "EPB_FLAGS",
    "PcapngSink",
    "interfaceDescriptionBlock",
    "interfaceStatisticsBlock",
    "sectionHeaderBlock",
    "writerName",
]

_BT_SHB = 0x0A0D0D0A
_BT_IDB = 1
_BT_ISB = 5
_BT_EPB = 6
_BYTE_ORDER_MAGIC = 0x1A2B3C4D

_SHB_USERAPPL = 4
_IF_NAME = 2
_IF_TSRESOL = 9
_EPB_FLAGS_CODE = 2
_ISB_STARTTIME = 2
_ISB_ENDTIME = 3
_ISB_IFRECV = 4
_ISB_IFDROP = 5
_ISB_FILTERACCEPT = 6

_EPB = struct.Struct("<IIIIIII")
_U32 = struct.Struct("<I")
_OPTION_HEADER = struct.Struct("<HH")
_END_OF_OPTIONS = b"\0\0\0\0"
_PADDING = (b"", b"\0\0\0", b"\0\0", b"\0")
_NS = 1_000_000_000

EPB_FLAGS = {
    PACKET_HOST: 0x1 | 1 << 2,
    PACKET_BROADCAST: 0x1 | 3 << 2,
    PACKET_MULTICAST: 0x1 | 2 << 2,
    PACKET_OTHERHOST: 0x1 | 4 << 2,
    PACKET_OUTGOING: 0x2,
}
"""
The C{epb_flags} of each Linux packet type: inbound with the reception
type unicast, broadcast, multicast or promiscuous, or outbound.  A packet
of unknown direction has no flags option.
"""


def _option(code: int, value: bytes) -> bytes:
    return _OPTION_HEADER.pack(code, len(value)) + value + _PADDING[len(value) % 4]


def _block(kind: int, body: bytes) -> bytes:
    length = 12 + len(body)
    return _U32.pack(kind) + _U32.pack(length) + body + _U32.pack(length)


def writerName() -> str:
    """
    C{echod VERSION}, as installed (the sniffer may not import the C{echod}
    package, which reaches the server).
    """
    try:
        return f"echod {metadata.version('echod')}"
    except metadata.PackageNotFoundError:
        return "echod"


def sectionHeaderBlock(application: str | None = None) -> bytes:
    """
    A little-endian Section Header Block, version 1.0, of unknown length,
    naming the writing C{application} (C{shb_userappl}; by default
    L{writerName}).
    """
    if application is None:
        application = writerName()
    options = _option(_SHB_USERAPPL, application.encode("utf-8")) + _END_OF_OPTIONS
    body = struct.pack("<IHHq", _BYTE_ORDER_MAGIC, 1, 0, -1) + options
    return _block(_BT_SHB, body)


def interfaceDescriptionBlock(
    name: str, linktype: int, snaplen: int, nanoseconds: bool = False
) -> bytes:
    """
    An Interface Description Block: C{if_name}, the link type, the snapshot
    length and C{if_tsresol} (9: nanoseconds, 6: microseconds).
    """
    options = b""
    if name:
        options += _option(_IF_NAME, name.encode("utf-8", "surrogateescape"))
    options += _option(_IF_TSRESOL, bytes([9 if nanoseconds else 6])) + _END_OF_OPTIONS
    return _block(_BT_IDB, struct.pack("<HHI", linktype, 0, snaplen) + options)


def _stamp(nanoseconds: int, units: int) -> bytes:
    value = nanoseconds // (_NS // units)
    return struct.pack("<II", value >> 32, value & 0xFFFFFFFF)


def interfaceStatisticsBlock(
    start: int,
    end: int,
    received: int,
    statistics: CaptureStatistics | None,
    nanoseconds: bool = False,
) -> bytes:
    """
    An Interface Statistics Block of interface 0 at time C{end}: the
    capture ran from C{start} to C{end} (nanoseconds since the epoch); the
    output got C{received} packets (C{isb_ifrecv}, as dumpcap counts them);
    with the kernel's C{statistics}, the packets it dropped (C{isb_ifdrop},
    when it counts them) and those that passed its filter
    (C{isb_filteraccept}).  No C{isb_usrdeliv}: it would repeat
    C{isb_ifrecv}.
    """
    units = _NS if nanoseconds else 1_000_000
    options = _option(_ISB_STARTTIME, _stamp(start, units))
    options += _option(_ISB_ENDTIME, _stamp(end, units))
    options += _option(_ISB_IFRECV, struct.pack("<Q", received))
    if statistics is not None:
        if statistics.dropped is not None:
            options += _option(_ISB_IFDROP, struct.pack("<Q", statistics.dropped))
        options += _option(_ISB_FILTERACCEPT, struct.pack("<Q", statistics.received))
    options += _END_OF_OPTIONS
    return _block(_BT_ISB, _U32.pack(0) + _stamp(end, units) + options)


@implementer(IPacketConsumer)
class PcapngSink:
    """
    Writes a pcapng file: one section and one interface per file (the
    capture's, such as C{eth0}, or C{any} with C{LINUX_SLL2} packets), an
    Enhanced Packet Block per packet, and at the end of a live capture
    (stopped with the kernel's counters) its statistics.

    @param clock: nanoseconds since the epoch, for when the capture started
        and stopped.
    """

    def __init__(
        self,
        output: RotatingOutput,
        nanoseconds: bool = False,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.output = output
        self.nanoseconds = nanoseconds
        self.clock = clock
        self.received = 0
        self._started = 0
        self._divisor = 1 if nanoseconds else 1000
        self._perSecond = _NS // self._divisor
        self._add = output.add
        # What follows a packet's bytes (padding, then its flags option if
        # it has a direction) and the block length less the bytes, by
        # direction and length % 4: two lookups per packet.
        options = {
            direction: _option(_EPB_FLAGS_CODE, _U32.pack(flags)) + _END_OF_OPTIONS
            for direction, flags in EPB_FLAGS.items()
        }
        options[DIRECTION_UNKNOWN] = b""
        self._tails = {
            direction: tuple(
                (padding + option, _EPB.size + 4 + len(padding) + len(option))
                for padding in _PADDING
            )
            for direction, option in options.items()
        }

    def captureStarted(self, info: CaptureInfo) -> None:
        self._started = self.clock()
        header = sectionHeaderBlock() + interfaceDescriptionBlock(
            info.interface, info.linktype, info.snaplen, self.nanoseconds
        )
        self.output.open(header)

    def packetReceived(
        self,
        seconds: int,
        nanoseconds: int,
        data: bytes,
        wireLength: int,
        interfaceIndex: int,
        direction: int,
    ) -> None:
        stamp = seconds * self._perSecond + nanoseconds // self._divisor
        caplen = len(data)
        try:
            tail, length = self._tails[direction][caplen & 3]
        except KeyError:
            tail, length = self._tails[DIRECTION_UNKNOWN][caplen & 3]
        length += caplen
        self.received += 1
        self._add(
            _EPB.pack(_BT_EPB, length, 0, stamp >> 32, stamp & 0xFFFFFFFF, caplen, wireLength)
            + data
            + tail
            + _U32.pack(length)
        )

    def flush(self) -> None:
        self.output.flush()

    def captureStopped(self, statistics: CaptureStatistics | None = None) -> None:
        # Without the kernel's counters the packets came from elsewhere (a
        # file being converted): no statistics block describes a capture.
        if statistics is not None:
            block = interfaceStatisticsBlock(
                self._started, self.clock(), self.received, statistics, self.nanoseconds
            )
            self.output.addTrailer(block)
        self.output.close()
