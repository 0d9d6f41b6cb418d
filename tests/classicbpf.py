"""
A classic BPF interpreter, for tests: it runs the programs echod attaches
to sockets over known packets, so their meaning (not their bytes) is
checked, and lets the fake kernel of L{tests.capturetesting} filter the way
the real one does.

It follows Linux's C{bpf_prog_run} for classic BPF: A and X start at 0, a
load past the end of the packet ends the program with 0, offsets from
C{SKF_AD_OFF} are the ancillary loads (protocol, packet type, interface),
and offsets from C{SKF_NET_OFF} read the network header (a program of a
UDP socket's C{SO_REUSEPORT} group runs over the UDP payload).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence

__all__ = ["ANCILLARY_IFINDEX", "ANCILLARY_PKTTYPE", "ANCILLARY_PROTOCOL", "run"]

_SKF_AD_OFF = 0x100000000 - 0x1000
_SKF_NET_OFF = 0x100000000 - 0x100000
ANCILLARY_PROTOCOL = 0
ANCILLARY_PKTTYPE = 4
ANCILLARY_IFINDEX = 8
_MASK = 0xFFFFFFFF


class _OutOfBounds(Exception):
    pass


def _load(
    packet: bytes,
    offset: int,
    size: int,
    ancillary: Mapping[int, int],
    network: bytes | None = None,
) -> int:
    if offset >= _SKF_AD_OFF:
        which = offset - _SKF_AD_OFF
        if which not in ancillary:
            raise AssertionError(f"ancillary load {which} has no value in this test")
        return ancillary[which] & _MASK
    if offset >= _SKF_NET_OFF:
        if network is None:
            raise AssertionError("a network header load, and no network header in this test")
        return _load(network, offset - _SKF_NET_OFF, size, ancillary)
    if offset < 0 or offset + size > len(packet):
        raise _OutOfBounds()
    return int.from_bytes(packet[offset : offset + size], "big")


def run(
    program: Sequence[tuple[int, int, int, int]],
    packet: bytes,
    ancillary: Mapping[int, int] | None = None,
    network: bytes | None = None,
) -> int:
    """
    Run C{program} over C{packet}; return what it returns (the number of
    bytes to keep, 0: drop; a socket's rank, for a C{SO_REUSEPORT} group).

    @param network: the network header, for loads from C{SKF_NET_OFF}.
    """
    anc = dict(ancillary or {})
    a = x = 0
    memory = [0] * 16
    pc = 0
    steps = 0
    try:
        while True:
            steps += 1
            if steps > 100_000 or pc >= len(program):
                raise AssertionError("the program runs off its end")
            code, jt, jf, k = program[pc]
            pc += 1
            cls = code & 0x07
            size = {0x00: 4, 0x08: 2, 0x10: 1}.get(code & 0x18, 4)
            mode = code & 0xE0
            if cls == 0x00:  # LD
                if mode == 0x20:
                    a = _load(packet, k, size, anc, network)
                elif mode == 0x40:
                    a = _load(packet, (x + k) & _MASK, size, anc, network)
                elif mode == 0x00:
                    a = k
                elif mode == 0x60:
                    a = memory[k]
                elif mode == 0x80:
                    a = len(packet)
                else:
                    raise AssertionError(f"unknown load {code:#x}")
            elif cls == 0x01:  # LDX
                if mode == 0x00:
                    x = k
                elif mode == 0x60:
                    x = memory[k]
                elif mode == 0x80:
                    x = len(packet)
                elif mode == 0xA0:
                    x = (_load(packet, k, 1, anc) & 0x0F) * 4
                else:
                    raise AssertionError(f"unknown ldx {code:#x}")
            elif cls == 0x02:  # ST
                memory[k] = a
            elif cls == 0x03:  # STX
                memory[k] = x
            elif cls == 0x04:  # ALU
                operand = x if code & 0x08 else k
                op = code & 0xF0
                if op == 0x00:
                    a = (a + operand) & _MASK
                elif op == 0x10:
                    a = (a - operand) & _MASK
                elif op == 0x20:
                    a = (a * operand) & _MASK
                elif op == 0x30:
                    if operand == 0:
                        return 0
                    a = a // operand
                elif op == 0x40:
                    a = a | operand
                elif op == 0x50:
                    a = a & operand
                elif op == 0x60:
                    a = (a << operand) & _MASK if operand < 32 else 0
                elif op == 0x70:
                    a = a >> operand if operand < 32 else 0
                elif op == 0x80:
                    a = (-a) & _MASK
                elif op == 0x90:
                    if operand == 0:
                        return 0
                    a = a % operand
                elif op == 0xA0:
                    a = a ^ operand
                else:
                    raise AssertionError(f"unknown alu {code:#x}")
            elif cls == 0x05:  # JMP
                op = code & 0xF0
                operand = x if code & 0x08 else k
                if op == 0x00:
                    pc += k
                    continue
                if op == 0x10:
                    taken = a == operand
                elif op == 0x20:
                    taken = a > operand
                elif op == 0x30:
                    taken = a >= operand
                elif op == 0x40:
                    taken = bool(a & operand)
                else:
                    raise AssertionError(f"unknown jump {code:#x}")
                pc += jt if taken else jf
            elif cls == 0x06:  # RET
                rval = code & 0x18
                return a if rval == 0x10 else (x if rval == 0x08 else k)
            elif cls == 0x07:  # MISC
                if code & 0xF8 == 0x00:
                    x = a
                else:
                    a = x
    except _OutOfBounds:
        return 0


def packSLL2(
    protocol: int, ifindex: int, hatype: int, pkttype: int, address: bytes = b"\0" * 6
) -> bytes:
    """
    A C{LINUX_SLL2} header.
    """
    return struct.pack(
        ">HHiHBB8s", protocol, 0, ifindex, hatype, pkttype, len(address), address.ljust(8, b"\0")
    )
