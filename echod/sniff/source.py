# -*- test-case-name: tests.unit.test_sniff_source -*-
"""
What a capture source is, whatever the platform: L{IPacketSource} (a
descriptor the reactor watches and the packets behind it), what is asked of
it (L{CaptureRequest}) and said about it (L{CaptureInfo},
L{CaptureStatistics}, the direction of a packet), and its errors.  The
sources are in L{echod.sniff.linux} and L{echod.sniff.windows};
L{echod.sniff.platforms} opens the one this platform has.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from zope.interface import Attribute, Interface

from echod.errors import UserError

__all__ = [
    "DIRECTION_NAMES",
    "DIRECTION_UNKNOWN",
    "PACKET_BROADCAST",
    "PACKET_HOST",
    "PACKET_MULTICAST",
    "PACKET_OTHERHOST",
    "PACKET_OUTGOING",
    "CaptureError",
    "CaptureInfo",
    "CapturePermissionError",
    "CaptureRequest",
    "CaptureStatistics",
    "CaptureUnsupportedError",
    "Deliver",
    "IBlockSource",
    "IPacketSource",
    "IRecordSink",
    "IRecordSource",
    "UnknownInterfaceError",
]

# The direction of a packet: Linux's packet types (sll_pkttype), which every
# source and sink speaks; a source that cannot tell says DIRECTION_UNKNOWN.
PACKET_HOST = 0
PACKET_BROADCAST = 1
PACKET_MULTICAST = 2
PACKET_OTHERHOST = 3
PACKET_OUTGOING = 4
DIRECTION_UNKNOWN = -1
DIRECTION_NAMES = {
    PACKET_HOST: "in",
    PACKET_BROADCAST: "broadcast",
    PACKET_MULTICAST: "multicast",
    PACKET_OTHERHOST: "otherhost",
    PACKET_OUTGOING: "out",
}


class CaptureError(UserError):
    """
    A capture could not be opened; C{str()} is one line saying why.
    """


class CapturePermissionError(CaptureError):
    """
    The process lacks the privilege to open a raw socket.
    """


class UnknownInterfaceError(CaptureError):
    """
    The interface named does not exist here.
    """


class CaptureUnsupportedError(CaptureError):
    """
    This platform has no raw capture echod knows how to open.
    """


@dataclass(frozen=True)
class CaptureRequest:
    """
    What to capture: the [sniff] keys that concern the socket.
    """

    interface: str = "any"
    filter: str = ""
    snaplen: int = 262144
    promiscuous: bool = False
    bufferBytes: int = 8 * 1024 * 1024


@dataclass(frozen=True)
class CaptureInfo:
    """
    What consumers must know about an open capture: the link type of every
    packet's bytes, the snapshot length, the interface asked for, the names
    of the interfaces by index, and how packets are read.
    """

    interface: str
    linktype: int
    snaplen: int
    interfaces: Mapping[int, str] = field(default_factory=dict)
    method: str = ""

    def interfaceName(self, index: int) -> str:
        """
        The name of interface C{index}, or of the one captured on.
        """
        if index in self.interfaces:
            return self.interfaces[index]
        if index <= 0 or self.interface != "any":
            return self.interface
        return f"if{index}"


@dataclass(frozen=True)
class CaptureStatistics:
    """
    Kernel counters since the capture opened: packets that passed the filter
    (C{received}, dropped ones included) and packets dropped because the
    buffer was full (C{dropped}; L{None} where the platform does not say).
    """

    received: int
    dropped: int | None


Deliver = Callable[[int, int, bytes, int, int, int], None]
"""
Takes one packet: its kernel timestamp (seconds since the epoch and
nanoseconds), its bytes, and what else the capture knows: its length on the
wire (at least C{len(data)}), the index of the interface it was seen on (0:
unknown) and its direction (C{PACKET_HOST}..., or C{DIRECTION_UNKNOWN}).

Plain arguments, not an object: a Python object made per packet costs more
than the rest of reading it from the ring (measured: ~300 ns of ~500 ns).
"""


class IPacketSource(Interface):
    """
    An open capture: a file descriptor the reactor watches, and the packets
    waiting behind it.
    """

    info = Attribute("The L{CaptureInfo} of this capture.")

    def fileno() -> int:
        """
        The descriptor that becomes readable when packets wait.
        """

    def readPackets(deliver: Deliver, limit: int, failed: Callable[[], None]) -> int:
        """
        Call C{deliver} (see L{Deliver}) for up to C{limit} waiting packets, in order; return
        how many were delivered (0: none waits).  An exception from
        C{deliver} is reported to C{failed} (inside the C{except} block, so
        it can log the failure) and reading goes on.
        """

    def statistics() -> CaptureStatistics:
        """
        The kernel's counters so far.
        """

    def close() -> None:
        """
        Release the socket and its ring; idempotent.
        """


class IRecordSink(Interface):
    """
    Takes pcap records in bulk: a pcap output that a source able to write
    them itself (L{IRecordSource}) fills a batch of frames at a time, with
    no Python call per frame.
    """

    nanoseconds = Attribute("Whether records carry nanoseconds (else microseconds).")

    def recordRoom() -> int:
        """
        How many bytes of records fit before the output must start its next
        file (C{-1}: no limit).  A record larger than that comes alone.
        """

    def recordsReceived(records: bytes, count: int) -> None:
        """
        C{count} whole pcap records (16-byte header and data each), in
        order: either all within L{recordRoom}, or one record alone.
        """


class IRecordSource(Interface):
    """
    A source that writes pcap records itself (echod's C helper walking a
    ring): what an L{IRecordSink} takes instead of one call per packet.
    """

    def readRecords(sink: IRecordSink, limit: int) -> int:
        """
        Write up to C{limit} waiting packets into C{sink} as the records the
        packets L{IPacketSource.readPackets} delivers would make (cut to the
        capture's snapshot length); return how many (0: none waits).
        """


class IBlockSource(Interface):
    """
    A source whose kernel hands packets over a block at a time: when the
    block is full, or C{retireSeconds} after it was started.  Until then
    the packets of the block being filled cannot be read.
    """

    retireSeconds = Attribute("How long the kernel may keep a block it fills, in seconds.")

    def fillingBlock() -> int | None:
        """
        The number of the block the kernel is filling if it already holds
        packets, else L{None}; blocks are numbered from 0 in the order they
        are read.
        """

    def blocksRead() -> int:
        """
        How many blocks were read (and handed back to the kernel).
        """
