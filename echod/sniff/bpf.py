# -*- test-case-name: tests.unit.test_sniff_bpf -*-
"""
tcpdump filter expressions as classic BPF programs the kernel runs.

The expression is compiled by libpcap's own compiler (C{pcap_compile} on a
C{pcap_open_dead} handle, through L{ctypes}: only the runtime library, Debian's
C{libpcap0.8}, is needed), so the syntax and the error messages are exactly
tcpdump's.  The program is attached to the capture socket with
C{SO_ATTACH_FILTER}: packets it rejects never leave the kernel.

Two rewrites adapt a program to Linux sockets the way libpcap does for its
own captures: L{forCookedSocket} for C{SOCK_DGRAM} ("cooked") sockets, whose
packets start at the network header while the program was compiled for a
C{LINUX_SLL2} header in front, and L{dropLoopbackOutgoing}, which makes the
kernel drop the outgoing copy of every packet on a loopback interface (on
C{lo} each packet is otherwise seen twice).

Packets read from a file are filtered in the process instead, by libpcap's
own interpreter (L{OfflineFilter}), as C{tcpdump -r FILE EXPRESSION} does.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import struct
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from echod.errors import UserError

__all__ = [
    "BPF_MAXINSNS",
    "DROP_ALL",
    "FilterError",
    "FilterProgram",
    "Instruction",
    "OfflineFilter",
    "PcapLibrary",
    "acceptAll",
    "attachFilter",
    "compileFilter",
    "dropLoopbackOutgoing",
    "forCookedSocket",
    "loadLibrary",
]

# Link types (pcap's LINKTYPE_*, which are also the DLT_* values that
# pcap_open_dead accepts for these four).
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
LINKTYPE_LINUX_SLL2 = 276
# pcap_open_dead wants a DLT, which for raw IP is 12 on Linux, not 101.
_DLT = {LINKTYPE_ETHERNET: 1, LINKTYPE_RAW: 12, LINKTYPE_LINUX_SLL: 113, LINKTYPE_LINUX_SLL2: 276}

BPF_MAXINSNS = 4096
_PCAP_NETMASK_UNKNOWN = 0xFFFFFFFF

# Classic BPF opcodes used here.
_BPF_LD_W_ABS = 0x20
_BPF_LD_IMM = 0x00
_BPF_LDX_IMM = 0x01
_BPF_JEQ_K = 0x15
_BPF_RET_K = 0x06
_BPF_CLASS_LD, _BPF_CLASS_LDX, _BPF_CLASS_RET = 0x00, 0x01, 0x06
_BPF_MODE_ABS, _BPF_MODE_IND, _BPF_MODE_MSH = 0x20, 0x40, 0xA0
_BPF_RVAL_K = 0x00

# Linux's "ancillary" loads: negative offsets that read skb fields.
_SKF_AD_OFF = 0x100000000 - 0x1000
_SKF_AD_PROTOCOL = 0
_SKF_AD_PKTTYPE = 4
_SKF_AD_IFINDEX = 8
_PACKET_OUTGOING = 4
_SLL2_HDR_LEN = 20

_SOL_SOCKET = 1
_SO_ATTACH_FILTER = 26

# libpcap's messages for expressions that need what a cooked (LINUX_SLL2)
# capture does not have: link-layer addresses, or the link-layer header itself.
_NEEDS_ADDRESSES = (
    "addresses supported only on",
    "multicast filters supported only on",
    "not a broadcast link",
    "link-layer types supported only on",
)
_NEEDS_HEADER = ("no VLAN support", "no MPLS support")

Instruction = tuple[int, int, int, int]
"""One C{sock_filter}/C{bpf_insn}: code, jt, jf, k."""

_INSN = struct.Struct("=HBBI")


class FilterError(UserError):
    """
    A filter expression libpcap cannot compile (its own message is kept), or
    one the kernel cannot run on this kind of socket.
    """


@dataclass(frozen=True)
class FilterProgram:
    """
    A classic BPF program and the expression it came from.
    """

    instructions: tuple[Instruction, ...]
    expression: str = ""

    def pack(self) -> bytes:
        """
        The instructions as an array of C{struct sock_filter}.
        """
        return b"".join(_INSN.pack(*i) for i in self.instructions)

    def __len__(self) -> int:
        return len(self.instructions)


DROP_ALL = FilterProgram(((_BPF_RET_K, 0, 0, 0),), "(drop all)")
"""Attached before the socket is bound, so nothing arrives unfiltered."""


def acceptAll(snaplen: int) -> FilterProgram:
    """
    The program of the empty expression: keep C{snaplen} bytes of everything
    (libpcap compiles "" to exactly this; no library needed).
    """
    return FilterProgram(((_BPF_RET_K, 0, 0, snaplen),), "")


class _BpfInsn(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_ushort),
        ("jt", ctypes.c_ubyte),
        ("jf", ctypes.c_ubyte),
        ("k", ctypes.c_uint32),
    ]


class _BpfProgram(ctypes.Structure):
    _fields_ = [("bf_len", ctypes.c_uint), ("bf_insns", ctypes.POINTER(_BpfInsn))]


class _PcapPkthdr(ctypes.Structure):
    # struct pcap_pkthdr: a struct timeval, then caplen and len.
    _fields_ = [
        ("tv_sec", ctypes.c_long),
        ("tv_usec", ctypes.c_long),
        ("caplen", ctypes.c_uint32),
        ("len", ctypes.c_uint32),
    ]


class PcapLibrary(Protocol):
    """
    The libpcap functions the compiler and the offline filter need (a
    L{ctypes.CDLL}).
    """

    pcap_open_dead: Any
    pcap_compile: Any
    pcap_geterr: Any
    pcap_freecode: Any
    pcap_close: Any
    pcap_offline_filter: Any


_LIBRARY_NAMES = ("libpcap.so.0.8", "libpcap.so.1", "libpcap.so")


def loadLibrary() -> PcapLibrary:
    """
    Load libpcap and declare the signatures used; L{FilterError} if it is not
    installed.
    """
    names: list[str] = ["wpcap.dll"] if sys.platform == "win32" else list(_LIBRARY_NAMES)
    found = ctypes.util.find_library("pcap")
    if found:
        names.append(found)
    library: Any = None
    for name in names:
        try:
            library = ctypes.CDLL(name)
            break
        except OSError:
            continue
    if library is None:
        raise FilterError(
            "filter expressions need libpcap (Debian: apt install libpcap0.8; "
            "Windows: Npcap); an empty filter needs nothing"
        )
    library.pcap_open_dead.restype = ctypes.c_void_p
    library.pcap_open_dead.argtypes = [ctypes.c_int, ctypes.c_int]
    library.pcap_compile.restype = ctypes.c_int
    library.pcap_compile.argtypes = [
        ctypes.c_void_p,
        ctypes.POINTER(_BpfProgram),
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_uint32,
    ]
    library.pcap_geterr.restype = ctypes.c_char_p
    library.pcap_geterr.argtypes = [ctypes.c_void_p]
    library.pcap_freecode.restype = None
    library.pcap_freecode.argtypes = [ctypes.POINTER(_BpfProgram)]
    library.pcap_close.restype = None
    library.pcap_close.argtypes = [ctypes.c_void_p]
    # Called per packet: no argtypes, whose checks cost a third of the
    # call; OfflineFilter passes the right pointers (byref) and bytes.
    library.pcap_offline_filter.restype = ctypes.c_int
    return library  # type: ignore[no-any-return]


def compileFilter(
    expression: str,
    linktype: int,
    snaplen: int,
    library: PcapLibrary | None = None,
    interface: str | None = None,
) -> FilterProgram:
    """
    Compile a tcpdump expression for packets of C{linktype}, keeping
    C{snaplen} bytes of each match.

    @param interface: the interface it is for, named in the advice that
        follows libpcap's message where the link type is the cause.

    @raise FilterError: with libpcap's message, such as C{unknown port
        'sevenn'} or C{syntax error}.
    """
    if not expression.strip():
        return acceptAll(snaplen)
    if linktype not in _DLT:
        raise FilterError(f"no filter compiler for link type {linktype}")
    try:
        encoded = expression.encode("utf-8")
    except UnicodeEncodeError:
        raise FilterError(f"bad filter {expression!r}: not text") from None
    if b"\0" in encoded:
        raise FilterError(f"bad filter {expression!r}: contains a NUL character")
    lib = library if library is not None else loadLibrary()
    handle = lib.pcap_open_dead(_DLT[linktype], snaplen)
    if not handle:
        raise FilterError("libpcap could not make a compiler handle (out of memory?)")
    program = _BpfProgram()
    try:
        if lib.pcap_compile(handle, ctypes.byref(program), encoded, 1, _PCAP_NETMASK_UNKNOWN) < 0:
            message = lib.pcap_geterr(handle) or b"unknown error"
            text = message.decode("utf-8", "replace")
            raise FilterError(_badFilter(expression, text, linktype, interface))
        try:
            instructions = tuple(
                (i.code, i.jt, i.jf, i.k)
                for i in (program.bf_insns[n] for n in range(program.bf_len))
            )
        finally:
            lib.pcap_freecode(ctypes.byref(program))
    finally:
        lib.pcap_close(handle)
    if len(instructions) > BPF_MAXINSNS:
        raise FilterError(
            f"filter {expression!r} compiles to {len(instructions)} instructions; "
            f"the kernel takes at most {BPF_MAXINSNS}"
        )
    return FilterProgram(instructions, expression)


# LINKTYPE_* values (in files) whose DLT_* value (for pcap_open_dead) is
# another on Linux; every other link type has the same number for both.
_OFFLINE_DLT = {100: 11, LINKTYPE_RAW: 12, 102: 15, 103: 16, 104: 104, 246: 121, 258: 258}
# What libpcap makes of a file's snapshot length of 0 or above its maximum.
_MAXIMUM_SNAPLEN = 262144


class OfflineFilter:
    """
    A tcpdump expression applied to packets read from a file, in the
    process, by libpcap's own interpreter (C{pcap_offline_filter}): the
    result is exactly what C{tcpdump -r FILE EXPRESSION} selects.

    It is compiled as tcpdump compiles the filter of a file: for the file's
    link type and snapshot length, optimized, with a netmask of 0.  The
    program stays allocated until L{close}; the empty expression matches
    every packet without libpcap.

    @raise FilterError: the expression does not compile for this link type
        (libpcap's message), or libpcap is missing.
    """

    def __init__(
        self,
        expression: str,
        linktype: int,
        snaplen: int,
        library: PcapLibrary | None = None,
    ) -> None:
        self.expression = expression
        self.linktype = linktype
        self.matchesAll = not expression.strip()
        """The expression is empty: every packet matches, libpcap is not asked."""
        self._library: PcapLibrary | None = None
        self._program: _BpfProgram | None = None
        self._closed = False
        if self.matchesAll:
            return
        try:
            encoded = expression.encode("utf-8")
        except UnicodeEncodeError:
            raise FilterError(f"bad filter {expression!r}: not text") from None
        if b"\0" in encoded:
            raise FilterError(f"bad filter {expression!r}: contains a NUL character")
        lib = library if library is not None else loadLibrary()
        if not 0 < snaplen <= _MAXIMUM_SNAPLEN:
            snaplen = _MAXIMUM_SNAPLEN
        handle = lib.pcap_open_dead(_OFFLINE_DLT.get(linktype, linktype), snaplen)
        if not handle:
            raise FilterError("libpcap could not make a compiler handle (out of memory?)")
        program = _BpfProgram()
        try:
            if lib.pcap_compile(handle, ctypes.byref(program), encoded, 1, 0) < 0:
                message = lib.pcap_geterr(handle) or b"unknown error"
                text = message.decode("utf-8", "replace")
                raise FilterError(f"bad filter {expression!r} for link type {linktype}: {text}")
        finally:
            lib.pcap_close(handle)
        self._library = lib
        self._program = program
        self._header = _PcapPkthdr()
        self._programPointer = ctypes.byref(program)
        self._headerPointer = ctypes.byref(self._header)
        self._run = lib.pcap_offline_filter

    def matches(self, data: bytes, wireLength: int) -> bool:
        """
        Whether the packet of C{data} (as captured), C{wireLength} bytes long
        on the wire, matches.
        """
        if self._program is None:
            if self._closed:
                raise ValueError("the filter is closed")
            return True
        header = self._header
        header.caplen = len(data)
        header.len = wireLength
        return bool(self._run(self._programPointer, self._headerPointer, data))

    def close(self) -> None:
        """
        Free the compiled program; idempotent.  L{matches} fails afterwards.
        """
        self._closed = True
        program, self._program = self._program, None
        if program is not None and self._library is not None:
            self._library.pcap_freecode(ctypes.byref(program))


def _badFilter(expression: str, problem: str, linktype: int, interface: str | None) -> str:
    """
    libpcap's message, and where the interface's cooked link type is the
    cause (C{ether host ...} on C{any}), what to do instead.
    """
    lacks = None
    if linktype == LINKTYPE_LINUX_SLL2 and interface is not None:
        if any(words in problem for words in _NEEDS_ADDRESSES):
            lacks = "link-layer addresses"
        elif any(words in problem for words in _NEEDS_HEADER):
            lacks = "link-layer header"
    if lacks is None:
        return f"bad filter {expression!r}: {problem}"
    advice = ": capture on one interface, such as -i eth0" if interface == "any" else ""
    return (
        f"bad filter {expression!r} on interface {interface}: {problem} "
        f"(interface {interface} has no {lacks}{advice})"
    )


def _fixCookedOffset(k: int) -> int | None:
    """
    Where a load at offset C{k} of a C{LINUX_SLL2} packet is found on a cooked
    socket (libpcap's C{fix_offset}): past the header, C{k - 20}; the
    header's protocol, interface index and packet type come from ancillary
    loads; other header fields are not available in the kernel (L{None}).
    """
    if k >= _SKF_AD_OFF:
        return k
    if k >= _SLL2_HDR_LEN:
        return k - _SLL2_HDR_LEN
    return {
        0: _SKF_AD_OFF + _SKF_AD_PROTOCOL,
        4: _SKF_AD_OFF + _SKF_AD_IFINDEX,
        10: _SKF_AD_OFF + _SKF_AD_PKTTYPE,
    }.get(k)


def forCookedSocket(program: FilterProgram) -> FilterProgram:
    """
    Rewrite a program compiled for C{LINUX_SLL2} so the kernel can run it on
    a C{SOCK_DGRAM} packet socket (used for C{any}), whose packets start at
    the network header.  The snapshot length it returns is reduced by the
    header echod adds in front, so each record keeps the asked length.

    @raise FilterError: the expression tests header fields the kernel does
        not offer (link-layer addresses).
    """
    fixed: list[Instruction] = []
    for code, jt, jf, k in program.instructions:
        cls = code & 0x07
        mode = code & 0xE0
        if cls in (_BPF_CLASS_LD, _BPF_CLASS_LDX) and mode in (
            _BPF_MODE_ABS,
            _BPF_MODE_IND,
            _BPF_MODE_MSH,
        ):
            moved = _fixCookedOffset(k)
            if moved is None:
                raise FilterError(
                    f"filter {program.expression!r} tests link-layer header fields, which "
                    "the kernel cannot filter on the 'any' interface; capture on one "
                    "interface instead"
                )
            k = moved
        elif cls == _BPF_CLASS_RET and (code & 0x18) == _BPF_RVAL_K and k:
            k = max(k - _SLL2_HDR_LEN, 1)
        fixed.append((code, jt, jf, k))
    return FilterProgram(tuple(fixed), program.expression)


def dropLoopbackOutgoing(program: FilterProgram, loopbacks: Iterable[int]) -> FilterProgram:
    """
    Put a prologue in front of C{program} that rejects packets the host sends
    on any of the C{loopbacks} interface indexes: each such packet also comes
    back in, and would be seen twice.

    Jumps in classic BPF are relative, so the program itself is unchanged;
    the prologue clears A and X before it starts, as the kernel does.
    """
    indexes: Sequence[int] = sorted(set(loopbacks))
    if not indexes:
        return program
    n = len(indexes)
    prologue: list[Instruction] = [
        (_BPF_LD_W_ABS, 0, 0, _SKF_AD_OFF + _SKF_AD_PKTTYPE),
        (_BPF_JEQ_K, 0, n + 2, _PACKET_OUTGOING),
        (_BPF_LD_W_ABS, 0, 0, _SKF_AD_OFF + _SKF_AD_IFINDEX),
    ]
    for i, index in enumerate(indexes, 1):
        prologue.append((_BPF_JEQ_K, n - i, 1 if i == n else 0, index))
    prologue += [
        (_BPF_RET_K, 0, 0, 0),
        (_BPF_LD_IMM, 0, 0, 0),
        (_BPF_LDX_IMM, 0, 0, 0),
    ]
    instructions = tuple(prologue) + program.instructions
    if len(instructions) > BPF_MAXINSNS:
        raise FilterError(f"filter {program.expression!r} is too long for the kernel")
    return FilterProgram(instructions, program.expression)


class _FilterSocket(Protocol):
    def setsockopt(self, level: int, option: int, value: bytes, /) -> None: ...


def attachFilter(sock: _FilterSocket, program: FilterProgram) -> None:
    """
    Attach C{program} to C{sock} (C{SO_ATTACH_FILTER}, which replaces any
    program already attached).  The kernel copies the instructions during
    the call; the buffer only has to live until it returns.
    """
    code = ctypes.create_string_buffer(program.pack(), max(len(program), 1) * _INSN.size)
    fprog = struct.pack("HL", len(program), ctypes.addressof(code))
    sock.setsockopt(_SOL_SOCKET, _SO_ATTACH_FILTER, fprog)
