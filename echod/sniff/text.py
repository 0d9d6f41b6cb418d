# -*- test-case-name: tests.unit.test_sniff_text -*-
"""
tcpdump's text output options for the text sink: timestamps (C{-t} ...
C{-ttttt}, C{--time-stamp-precision}), the link-level header (C{-e}),
quick (C{-q}) and verbose (C{-v}) packet words, the interface and
direction words of C{-i any} captures, and the packet dumps after each
line (C{-x}, C{-xx}, C{-X}, C{-XX}, C{-A}, C{-AA}).

The dumps are tcpdump 4.99.3's, byte for byte (C{print-ascii.c}): the
layout comes from there, not from a guess.  Each dump function returns
what tcpdump prints between a packet's line and its final newline.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from echod.sniff.bpf import LINKTYPE_RAW
from echod.sniff.decode import PacketSummary, decodePacket, describe

__all__ = [
    "DUMPS",
    "TCPDUMP_TIMESTAMPS",
    "TIMESTAMPS",
    "TextFormatter",
    "TextStyle",
    "asciiDump",
    "hexAsciiDump",
    "hexDump",
]

TIMESTAMPS = ("time", "none", "epoch", "delta", "date", "since-first")
"""
The timestamp styles: local time of day (tcpdump's default), none (C{-t}),
seconds since the epoch (C{-tt}), time since the previous packet
(C{-ttt}), local date and time (C{-tttt}), time since the first packet
(C{-ttttt}).
"""

TCPDUMP_TIMESTAMPS = TIMESTAMPS
"""
The timestamp style for the number of C{-t} given to tcpdump (0 to 5).
"""

DUMPS = ("", "hex", "hex-ascii", "ascii")
"""
The packet dumps: none, hex (C{-x}), hex and ASCII (C{-X}), ASCII (C{-A}).
"""

_NS = 1_000_000_000
_LINKTYPE_LINUX_SLL2 = "linux-sll2"
# ICMP errors, whose quoted packet tcpdump -v prints (its ICMP_ERRTYPE).
_ICMP_ERRORS = frozenset((3, 4, 5, 11, 12))
_DIRECTION_WORDS = {"in": "In", "out": "Out", "broadcast": "B", "multicast": "M", "otherhost": "P"}

# tcpdump's ND_ASCII_ISGRAPH: 0x21-0x7e as themselves, the rest as ".".
_GRAPH = bytes(c if 0x21 <= c <= 0x7E else 0x2E for c in range(256))
# ascii_print (-A) also keeps tab, space and newline; a carriage return is
# kept here and decided on afterwards (see asciiDump).
_ASCII = bytes(
    c if 0x21 <= c <= 0x7E or c in (0x09, 0x0A, 0x0D, 0x20) else 0x2E for c in range(256)
)


def hexAsciiDump(data: bytes) -> str:
    """
    C{-X}: 16 bytes a line, C{"\\n\\t0x0010:  4500 002d ... "} padded to 40
    columns, two spaces, the bytes as ASCII (C{.} for all but 0x21-0x7e).
    Nothing for no bytes.
    """
    return "".join(
        [
            f"\n\t0x{offset:04x}: {' ' + chunk.hex(' ', -2):<40}  {text}"
            for offset, chunk, text in _chunks(data, _GRAPH)
        ]
    )


def hexDump(data: bytes) -> str:
    """
    C{-x}: the same lines as L{hexAsciiDump} without the padding and ASCII.
    """
    return "".join(
        [f"\n\t0x{offset:04x}:  {chunk.hex(' ', -2)}" for offset, chunk, _ in _chunks(data)]
    )


def _chunks(data: bytes, table: bytes | None = None) -> list[tuple[int, bytes, str]]:
    """
    The 16-byte lines of C{data}: offset, bytes, and the bytes through
    C{table} as text (empty without one).
    """
    text = data.translate(table).decode() if table is not None else ""
    return [
        (offset, data[offset : offset + 16], text[offset : offset + 16])
        for offset in range(0, len(data), 16)
    ]


def asciiDump(data: bytes) -> str:
    """
    C{-A}: a newline, then the bytes as text: printable ASCII, tab, space
    and newline as themselves, the rest as C{.}; a carriage return is left
    out before a newline and when it is one of the last two bytes, and is
    a C{.} elsewhere (tcpdump's C{ascii_print}).
    """
    text = data.translate(_ASCII)
    if b"\r" in data:
        text = _carriageReturns(data, text)
    return "\n" + text.decode()


def _carriageReturns(data: bytes, text: bytes) -> bytes:
    pieces: list[bytes] = []
    size = len(data)
    start = 0
    at = data.find(b"\r")
    while at >= 0:
        pieces.append(text[start:at])
        if size - at - 1 > 1 and data[at + 1] != 0x0A:
            pieces.append(b".")
        start = at + 1
        at = data.find(b"\r", start)
    pieces.append(text[start:])
    return b"".join(pieces)


@dataclass(frozen=True)
class TextStyle:
    """
    How the text sink writes each packet.  The defaults are echod's own
    line (C{TIME INTERFACE DIRECTION PACKET}, VLAN tags included); the
    C{echod-sniff} command sets C{tcpdumpLayout} and what tcpdump's options
    ask for.

    @ivar timestamps: one of L{TIMESTAMPS}.
    @ivar nanoseconds: nine digits of a second instead of six
        (C{--time-stamp-precision=nano}).
    @ivar dump: one of L{DUMPS}.
    @ivar dumpLinkHeader: dump from the first byte of the frame (C{-xx},
        C{-XX}, C{-AA}) instead of from the network layer.
    @ivar linkHeader: print the link-level header (C{-e}).
    @ivar quiet: less protocol detail (C{-q}).
    @ivar verbose: IP header fields and checksums (C{-v}).
    @ivar tcpdumpLayout: the interface and direction words only where
        tcpdump prints them (C{LINUX_SLL2} captures, that is C{-i any}),
        padded as tcpdump pads them, and no VLAN words without
        C{linkHeader}.
    """

    timestamps: str = "time"
    nanoseconds: bool = False
    dump: str = ""
    dumpLinkHeader: bool = False
    linkHeader: bool = False
    quiet: bool = False
    verbose: bool = False
    tcpdumpLayout: bool = False

    def __post_init__(self) -> None:
        if self.timestamps not in TIMESTAMPS:
            raise ValueError(f"unknown timestamp style {self.timestamps!r}")
        if self.dump not in DUMPS:
            raise ValueError(f"unknown dump {self.dump!r}")

    @classmethod
    def fromTcpdumpFlags(
        cls,
        t: int = 0,
        x: int = 0,
        X: int = 0,
        A: int = 0,
        e: bool = False,
        q: bool = False,
        v: bool = False,
        nano: bool = False,
    ) -> TextStyle:
        """
        The style of a tcpdump command line, from how often each option was
        given: C{-t} (0 to 5), C{-x}, C{-X}, C{-A} (C{-X} wins over C{-x},
        which wins over C{-A}; twice: from the frame's first byte), C{-e},
        C{-q}, C{-v} and C{--time-stamp-precision=nano}.

        @raise ValueError: more than five C{-t}, with tcpdump's words.
        """
        if not 0 <= t < len(TCPDUMP_TIMESTAMPS):
            raise ValueError("only -t, -tt, -ttt, -tttt and -ttttt are supported")
        dump, count = next(
            ((name, n) for name, n in (("hex-ascii", X), ("hex", x), ("ascii", A)) if n),
            ("", 0),
        )
        return cls(
            timestamps=TCPDUMP_TIMESTAMPS[t],
            nanoseconds=nano,
            dump=dump,
            dumpLinkHeader=count > 1,
            linkHeader=e,
            quiet=q,
            verbose=v,
            tcpdumpLayout=True,
        )


class TextFormatter:
    """
    Writes packets as text in one L{TextStyle}, for one capture at a time.  It keeps
    what the relative timestamps need (the first and the previous packet's
    time) and the last second it formatted, so most packets cost no
    C{strftime}.
    """

    def __init__(self, style: TextStyle) -> None:
        self.style = style
        self._unit = 1 if style.nanoseconds else 1000
        self._digits = 9 if style.nanoseconds else 6
        self._perSecond = _NS // self._unit
        self._reference: int | None = None
        self._second = -1
        self._secondText = ""
        self._dump = {"": None, "hex": hexDump, "hex-ascii": hexAsciiDump, "ascii": asciiDump}[
            style.dump
        ]

    def timestamp(self, nanoseconds: int) -> str:
        """
        The packet's time as the style asks, without the following space
        (empty for C{"none"}).
        """
        style = self.style.timestamps
        ticks = nanoseconds // self._unit
        seconds, fraction = divmod(ticks, self._perSecond)
        if style == "time" or style == "date":
            if seconds != self._second:
                layout = "%H:%M:%S" if style == "time" else "%Y-%m-%d %H:%M:%S"
                self._secondText = time.strftime(layout, time.localtime(seconds))
                self._second = seconds
            return f"{self._secondText}.{fraction:0{self._digits}d}"
        if style == "epoch":
            return f"{seconds}.{fraction:0{self._digits}d}"
        if style == "none":
            return ""
        # delta or since-first: tcpdump prints " 00:00:01.001000" (a space
        # or "-" first), hours wrapping at a day.
        if self._reference is None:
            self._reference = ticks
        delta = ticks - self._reference
        if style == "delta":
            self._reference = ticks
        sign = "-" if delta < 0 else " "
        seconds, fraction = divmod(abs(delta), self._perSecond)
        clock = time.strftime("%H:%M:%S", time.gmtime(seconds))
        return f"{sign}{clock}.{fraction:0{self._digits}d}"

    def format(self, summary: PacketSummary, data: bytes) -> str:
        """
        The packet's line, and its dump if the style asks for one, without
        the final newline.
        """
        style = self.style
        stamp = self.timestamp(summary.time)
        words = describe(
            summary,
            linkHeader=style.linkHeader,
            quiet=style.quiet,
            verbose=style.verbose,
            vlanWords=not style.tcpdumpLayout,
        )
        if style.tcpdumpLayout:
            head = f"{stamp} " if stamp else ""
            if summary.link == _LINKTYPE_LINUX_SLL2 and summary.truncated != "linux-sll2":
                direction = _DIRECTION_WORDS.get(summary.direction or "", "?")
                head += f"{summary.interface or '?':<5} {direction:<3} "
            line = head + words
        else:
            parts = [stamp] if stamp else []
            if summary.interface:
                parts.append(summary.interface)
            if summary.direction:
                parts.append(_DIRECTION_WORDS.get(summary.direction, summary.direction))
            parts.append(words)
            line = " ".join(parts)
        if style.verbose and summary.icmp_type in _ICMP_ERRORS and summary.protocol == "ICMP":
            line += _quotedPacket(summary, data)
        dump = self._dump
        if dump is None:
            return line
        if style.dumpLinkHeader or (
            summary.dump_whole and not (style.quiet and summary.tcp_options_cut)
        ):
            # tcpdump's printer gave up mid-packet (a longjmp): it dumps all,
            # but -q never reads the TCP options that made it give up.
            return line + dump(data)
        start = summary.link_length
        if len(data) <= start:
            return line
        return line + dump(data[start:])


def _quotedPacket(summary: PacketSummary, data: bytes) -> str:
    """
    The IPv4 packet an ICMP error quotes, on lines of its own as tcpdump
    C{-v} prints it (C{"\n\tIP (tos 0x0, ...)\n    a.1 > b.2: UDP, length 2"}).
    """
    if summary.transport_offset is None or summary.truncated:
        return ""
    start = summary.transport_offset + 8
    if len(data) < start + 4:
        return ""
    length = int.from_bytes(data[start + 2 : start + 4], "big")
    quoted = decodePacket(LINKTYPE_RAW, data[start : start + length], length, checksums=True)
    return "\n\t" + describe(quoted, verbose=True)
