"""
Packets built byte by byte for tests: Ethernet, VLAN tags, ARP, IPv4, IPv6
with extension headers, TCP, UDP, ICMP and ICMPv6.  Checksums are left at
zero: nothing in echod checks them.
"""

from __future__ import annotations

import socket
import struct

__all__ = [
    "arp",
    "ethernet",
    "icmp",
    "icmpv6",
    "ipv4",
    "ipv6",
    "mac",
    "tcp",
    "udp",
    "vlan",
]

ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
ETH_ARP = 0x0806


def mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def ethernet(
    payload: bytes,
    ethertype: int = ETH_IPV4,
    src: str = "02:00:00:00:00:01",
    dst: str = "02:00:00:00:00:02",
) -> bytes:
    return mac(dst) + mac(src) + struct.pack(">H", ethertype) + payload


def vlan(payload: bytes, vid: int, ethertype: int, priority: int = 0) -> bytes:
    """
    A tag and what follows it (the TPID is the Ethernet type in front).
    """
    return struct.pack(">HH", (priority << 13) | vid, ethertype) + payload


def ipv4(
    payload: bytes,
    protocol: int,
    src: str = "192.0.2.1",
    dst: str = "192.0.2.2",
    ttl: int = 64,
    ident: int = 1,
    fragment: int = 0,
    options: bytes = b"",
    total: int | None = None,
) -> bytes:
    ihl = 5 + len(options) // 4
    length = total if total is not None else 4 * ihl + len(payload)
    header = struct.pack(
        ">BBHHHBBH4s4s",
        0x40 | ihl,
        0,
        length,
        ident,
        fragment,
        ttl,
        protocol,
        0,
        socket.inet_pton(socket.AF_INET, src),
        socket.inet_pton(socket.AF_INET, dst),
    )
    return header + options + payload


def ipv6(
    payload: bytes,
    nextHeader: int,
    src: str = "2001:db8::1",
    dst: str = "2001:db8::2",
    hopLimit: int = 64,
) -> bytes:
    return (
        struct.pack(">IHBB", 6 << 28, len(payload), nextHeader, hopLimit)
        + socket.inet_pton(socket.AF_INET6, src)
        + socket.inet_pton(socket.AF_INET6, dst)
        + payload
    )


def extension(nextHeader: int, body: bytes = b"\0" * 6) -> bytes:
    """
    A hop-by-hop, routing or destination options header (8-byte units).
    """
    assert (len(body) + 2) % 8 == 0
    return bytes([nextHeader, (len(body) + 2) // 8 - 1]) + body


def fragmentHeader(nextHeader: int, offset: int, more: bool, ident: int = 7) -> bytes:
    return struct.pack(">BBHI", nextHeader, 0, offset | int(more), ident)


def tcp(
    sport: int,
    dport: int,
    flags: int,
    seq: int = 1000,
    ack: int = 0,
    window: int = 65535,
    payload: bytes = b"",
    options: bytes = b"",
) -> bytes:
    offset = (20 + len(options)) // 4
    return (
        struct.pack(">HHIIBBHHH", sport, dport, seq, ack, offset << 4, flags, window, 0, 0)
        + options
        + payload
    )


def udp(sport: int, dport: int, payload: bytes = b"") -> bytes:
    return struct.pack(">HHHH", sport, dport, 8 + len(payload), 0) + payload


def icmp(kind: int, code: int = 0, rest: bytes = b"\0\0\0\0", payload: bytes = b"") -> bytes:
    return struct.pack(">BBH", kind, code, 0) + rest + payload


def icmpv6(kind: int, code: int = 0, body: bytes = b"\0\0\0\0") -> bytes:
    return struct.pack(">BBH", kind, code, 0) + body


def arp(
    operation: int,
    senderMac: str,
    senderIp: str,
    targetMac: str,
    targetIp: str,
) -> bytes:
    return (
        struct.pack(">HHBBH", 1, ETH_IPV4, 6, 4, operation)
        + mac(senderMac)
        + socket.inet_aton(senderIp)
        + mac(targetMac)
        + socket.inet_aton(targetIp)
    )
