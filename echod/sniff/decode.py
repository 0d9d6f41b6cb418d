# -*- test-case-name: tests.unit.test_sniff_decode -*-
"""
What a captured packet is, in one summary: link layer (Ethernet, VLAN tags,
Linux cooked headers), ARP, IPv4, IPv6 with its extension headers, and TCP,
UDP, ICMP or ICMPv6 on top.

The header parsing is echod's own (Twisted's C{twisted.pair.ip} swaps the
version and header-length nibbles and knows no IPv6).  It never raises on
junk: a packet cut short by the snapshot length or the wire says at which
layer (L{PacketSummary.truncated}), a header that cannot be right says what
is wrong (L{PacketSummary.problem}), and everything decoded up to there is
kept.
"""

from __future__ import annotations

import dataclasses
import socket
import struct
from dataclasses import dataclass, field
from typing import Any

from echod.sniff.bpf import LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2, LINKTYPE_RAW

__all__ = ["PacketSummary", "decodePacket", "describe"]

_DIRECTIONS = {0: "in", 1: "broadcast", 2: "multicast", 3: "otherhost", 4: "out"}
_LINKS = {
    LINKTYPE_ETHERNET: "ethernet",
    LINKTYPE_RAW: "raw",
    LINKTYPE_LINUX_SLL: "linux-sll",
    LINKTYPE_LINUX_SLL2: "linux-sll2",
}
_VLAN_TPIDS = (0x8100, 0x88A8, 0x9100)
_ETHERTYPE_IPV4 = 0x0800
_ETHERTYPE_ARP = 0x0806
_ETHERTYPE_IPV6 = 0x86DD
_ETHERTYPE_NAMES = {
    0x88CC: "LLDP",
    0x8035: "RARP",
    0x8847: "MPLS",
    0x8848: "MPLS multicast",
    0x8863: "PPPoE discovery",
    0x8864: "PPPoE session",
    0x88E5: "MACsec",
    0x88F7: "PTP",
    0x8809: "slow protocols",
    0x888E: "EAPOL",
}
_MAX_VLAN_TAGS = 8
_MAX_EXTENSION_HEADERS = 16

_IP_PROTOCOLS = {
    0: "HBH",
    1: "ICMP",
    2: "IGMP",
    4: "IPIP",
    6: "TCP",
    17: "UDP",
    41: "IPv6",
    43: "RT",
    44: "FRAG",
    47: "GRE",
    50: "ESP",
    51: "AH",
    58: "ICMPv6",
    59: "NONE",
    60: "DSTOPT",
    89: "OSPF",
    103: "PIM",
    112: "VRRP",
    132: "SCTP",
    135: "MH",
}
_IPV6_EXTENSIONS = {0, 43, 44, 50, 51, 60, 135, 139, 140}

_TCP_FLAGS = ((0x01, "F"), (0x02, "S"), (0x04, "R"), (0x08, "P"), (0x10, "."), (0x20, "U"),
              (0x40, "E"), (0x80, "W"))  # fmt: skip

_ICMP_TYPES = {
    0: "echo reply",
    3: "unreachable",
    4: "source quench",
    5: "redirect",
    8: "echo request",
    9: "router advertisement",
    10: "router solicitation",
    11: "time exceeded",
    12: "parameter problem",
    13: "timestamp request",
    14: "timestamp reply",
}
_ICMP_UNREACHABLE = {
    0: "net unreachable",
    1: "host unreachable",
    2: "protocol unreachable",
    3: "port unreachable",
    4: "need to frag",
    5: "source route failed",
    9: "net prohibited",
    10: "host prohibited",
    13: "administratively prohibited",
}
_ICMPV6_TYPES = {
    1: "destination unreachable",
    2: "packet too big",
    3: "time exceeded",
    4: "parameter problem",
    128: "echo request",
    129: "echo reply",
    130: "multicast listener query",
    131: "multicast listener report",
    132: "multicast listener done",
    133: "router solicitation",
    134: "router advertisement",
    135: "neighbor solicitation",
    136: "neighbor advertisement",
    137: "redirect",
    143: "multicast listener report v2",
}
_ARP_OPERATIONS = {1: "request", 2: "reply", 3: "rarp request", 4: "rarp reply"}
_ICMPV6_UNREACHABLE = {
    0: "unreachable route",
    1: " unreachable prohibited",  # sic: tcpdump's spelling, space and all
    2: "beyond scope",
    3: "unreachable address",
    4: "unreachable port",
}
# tcpdump's words for the IPv4 flags (reserved, DF, MF), as -v prints them.
_IP_FLAG_TEXT = tuple(
    ", ".join(name for bit, name in ((1, "+"), (2, "DF"), (4, "rsvd")) if bits & bit) or "none"
    for bits in range(8)
)
_TCP_OPTIONS = {0: "eol", 1: "nop", 2: "mss", 3: "wscale", 4: "sackOK", 5: "sack", 6: "echo",
                7: "echoreply", 8: "TS", 11: "cc", 12: "ccnew", 13: "", 19: "md5", 20: "scps",
                28: "uto", 29: "tcp-ao", 30: "mptcp", 34: "tfo", 254: "exp"}  # fmt: skip
# Where each transport keeps its checksum (TCP, UDP, ICMP, ICMPv6).
_CHECKSUM_FIELDS = {6: 16, 17: 6, 1: 2, 58: 2}
# tcpdump's fn_print_char for each byte: M- for the high bit, ^ for control.
_VISIBLE_CHARACTERS = tuple(
    ("M-" if byte & 0x80 else "")
    + (chr(byte & 0x7F) if 0x20 <= byte & 0x7F <= 0x7E else "^" + chr((byte & 0x7F) ^ 0x40))
    for byte in range(256)
)
# The flags' letters for each flags byte, as tcpdump prints them.
_TCP_FLAG_TEXT = tuple(
    "".join(char for bit, char in _TCP_FLAGS if flags & bit) or "none" for flags in range(256)
)
# Linux's options on every segment of a connection: nop, nop, timestamps.
_NOP_NOP_TIMESTAMPS = b"\x01\x01\x08\x0a"
_TIMESTAMPS = struct.Struct(">II")
_TCP_OPTION_SIZES = {2: 2, 3: 1, 6: 4, 7: 4, 8: 8, 11: 4, 12: 4, 13: 4, 20: 2, 28: 2}

_U16 = struct.Struct(">H")
_ETHERNET = struct.Struct(">6s6sH")
_SLL = struct.Struct(">HHH8sH")
_SLL2 = struct.Struct(">HHiHBB8s")
_IPV4 = struct.Struct(">BBHHHBBH4s4s")
_IPV6 = struct.Struct(">IHBB16s16s")
_TCP = struct.Struct(">HHIIBBH")
_TCP_HEADER = 20
_UDP = struct.Struct(">HHH")
_ARP = struct.Struct(">HHBBH")


@dataclass
class PacketSummary:
    """
    The decoded fields of one packet; L{None} where a layer is absent or was
    not reached.  C{length} is the length on the wire, C{captured} what was
    kept; C{payload_length} is what the transport header says its payload
    is (TCP and UDP), as tcpdump's C{length}.

    C{link_length} is where the network layer starts: what tcpdump's C{-X},
    C{-x} and C{-A} leave out, counted as tcpdump counts it when the header
    itself is cut short (all of C{captured} for Ethernet and VLAN tags,
    none for a cooked header).  C{tcp_options_cut}: the TCP options end early
    (C{tcp_options} then holds tcpdump's words up to its line's end: a bad
    option, or the capture's end).  C{dump_whole}: tcpdump's printer gave
    up at a read past the capture's end, and then dumps the frame from its
    first byte.  The C{*_checksum} fields are set only when
    L{decodePacket} was asked to check checksums and the bytes they cover
    were captured: the value in the header, and the one it should be.
    """

    time: int = 0
    interface: str | None = None
    direction: str | None = None
    length: int = 0
    captured: int = 0
    link: str = "unknown"
    eth_src: str | None = None
    eth_dst: str | None = None
    vlans: list[dict[str, int]] = field(default_factory=list)
    ethertype: int | None = None
    network: str | None = None
    src: str | None = None
    dst: str | None = None
    ttl: int | None = None
    ip_length: int | None = None
    ip_id: int | None = None
    fragment_offset: int | None = None
    more_fragments: bool | None = None
    extension_headers: list[str] = field(default_factory=list)
    protocol: str | None = None
    protocol_number: int | None = None
    src_port: int | None = None
    dst_port: int | None = None
    tcp_flags: str | None = None
    seq: int | None = None
    ack: int | None = None
    window: int | None = None
    payload_length: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None
    icmp: str | None = None
    icmp_id: int | None = None
    icmp_seq: int | None = None
    arp_operation: str | None = None
    arp_sender_mac: str | None = None
    arp_sender_ip: str | None = None
    arp_target_mac: str | None = None
    arp_target_ip: str | None = None
    interface_index: int | None = None
    link_length: int = 0
    tos: int | None = None
    ip_flags: str | None = None
    traffic_class: int | None = None
    flow_label: int | None = None
    next_header: int | None = None
    tcp_options: str | None = None
    tcp_options_cut: bool | None = None
    dump_whole: bool | None = None
    rst_data: str | None = None
    urgent: int | None = None
    transport_offset: int | None = None
    fragment_id: int | None = None
    fragment_length: int | None = None
    ip_checksum: int | None = None
    ip_checksum_expected: int | None = None
    checksum: int | None = None
    checksum_expected: int | None = None
    truncated: str | None = None
    problem: str | None = None

    def fields(self) -> dict[str, Any]:
        """
        The fields that are set, for JSON: L{None}, empty lists and a false
        C{truncated} are left out.
        """
        result: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None or value == []:
                continue
            result[f.name] = value
        return result


def _mac(raw: bytes) -> str:
    return raw.hex(":")


def _ipv4(raw: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET, raw)


def _ipv6(raw: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET6, raw)


def decodePacket(
    linktype: int,
    data: bytes,
    wireLength: int | None = None,
    summary: PacketSummary | None = None,
    checksums: bool = False,
) -> PacketSummary:
    """
    Decode C{data} (a packet of pcap link type C{linktype}) as far as it
    goes.  Never raises on any bytes.

    @param checksums: also check the IPv4 header's and the transport's
        checksums (what tcpdump C{-v} reports), which costs a pass over
        the packet's bytes.
    """
    if summary is None:
        summary = PacketSummary()
    summary.captured = len(data)
    summary.length = max(wireLength if wireLength is not None else 0, len(data))
    summary.link = _LINKS.get(linktype, f"linktype {linktype}")
    try:
        if linktype == LINKTYPE_ETHERNET:
            _ethernet(summary, data)
        elif linktype == LINKTYPE_LINUX_SLL2:
            _sll2(summary, data)
        elif linktype == LINKTYPE_LINUX_SLL:
            _sll(summary, data)
        elif linktype == LINKTYPE_RAW:
            _rawIP(summary, data)
        else:
            summary.problem = f"unknown link type {linktype}"
        if checksums:
            _checksums(summary, data)
    except Exception as e:
        # Not reached by any input the tests know; kept so that one
        # unforeseen packet cannot stop a capture.
        summary.problem = f"decoder error: {type(e).__name__}: {e}"
    return summary


def _ethernet(summary: PacketSummary, data: bytes) -> None:
    if len(data) < _ETHERNET.size:
        summary.truncated = "ethernet"
        summary.link_length = len(data)
        if len(data) >= 12:
            summary.eth_dst, summary.eth_src = _mac(data[0:6]), _mac(data[6:12])
        return
    dst, src, ethertype = _ETHERNET.unpack_from(data)
    summary.eth_dst, summary.eth_src = _mac(dst), _mac(src)
    _ethertype(summary, ethertype, data, _ETHERNET.size)


def _sll(summary: PacketSummary, data: bytes) -> None:
    if len(data) < _SLL.size:
        summary.truncated = "linux-sll"
        summary.link_length = len(data)
        return
    pkttype, _hatype, halen, address, protocol = _SLL.unpack_from(data)
    summary.direction = summary.direction or _DIRECTIONS.get(pkttype)
    if halen == 6:
        summary.eth_src = _mac(address[:6])
    _ethertype(summary, protocol, data, _SLL.size)


def _sll2(summary: PacketSummary, data: bytes) -> None:
    if len(data) < _SLL2.size:
        summary.truncated = "linux-sll2"  # tcpdump then dumps all of it
        return
    protocol, _reserved, ifindex, _hatype, pkttype, halen, address = _SLL2.unpack_from(data)
    summary.interface_index = ifindex
    summary.direction = summary.direction or _DIRECTIONS.get(pkttype)
    if halen == 6:
        summary.eth_src = _mac(address[:6])
    _ethertype(summary, protocol, data, _SLL2.size)


def _rawIP(summary: PacketSummary, data: bytes) -> None:
    if not data:
        summary.truncated = "ip"
        return
    version = data[0] >> 4
    if version == 4:
        summary.ethertype = _ETHERTYPE_IPV4
        _ipv4Packet(summary, data, 0)
    elif version == 6:
        summary.ethertype = _ETHERTYPE_IPV6
        _ipv6Packet(summary, data, 0)
    else:
        summary.problem = f"not an IP packet (version {version})"


def _ethertype(summary: PacketSummary, ethertype: int, data: bytes, offset: int) -> None:
    tags = 0
    while ethertype in _VLAN_TPIDS:
        if tags == _MAX_VLAN_TAGS:
            summary.problem = f"more than {_MAX_VLAN_TAGS} VLAN tags"
            return
        if len(data) < offset + 4:
            summary.ethertype = ethertype
            summary.truncated = "vlan"
            summary.link_length = len(data)
            return
        tci, inner = struct.unpack_from(">HH", data, offset)
        summary.vlans.append(
            {"tpid": ethertype, "id": tci & 0x0FFF, "priority": tci >> 13, "dei": (tci >> 12) & 1}
        )
        ethertype = inner
        offset += 4
        tags += 1
    summary.ethertype = ethertype
    summary.link_length = offset
    if ethertype == _ETHERTYPE_IPV4:
        _ipv4Packet(summary, data, offset)
    elif ethertype == _ETHERTYPE_IPV6:
        _ipv6Packet(summary, data, offset)
    elif ethertype == _ETHERTYPE_ARP:
        _arp(summary, data, offset)
    elif ethertype < 0x0600:
        summary.network = "802.3"
    else:
        summary.network = _ETHERTYPE_NAMES.get(ethertype)


def _arp(summary: PacketSummary, data: bytes, offset: int) -> None:
    summary.network = "ARP"
    if len(data) < offset + _ARP.size:
        summary.truncated = "arp"
        summary.dump_whole = True  # tcpdump's ARP printer reads on
        return
    hardware, protocol, hlen, plen, operation = _ARP.unpack_from(data, offset)
    summary.arp_operation = _ARP_OPERATIONS.get(operation, f"operation {operation}")
    if hardware != 1 or protocol != _ETHERTYPE_IPV4 or hlen != 6 or plen != 4:
        summary.problem = (
            f"ARP for hardware {hardware}, protocol 0x{protocol:04x} "
            f"(address lengths {hlen}, {plen})"
        )
        return
    body = offset + _ARP.size
    if len(data) < body + 20:
        summary.truncated = "arp"
        summary.dump_whole = True  # tcpdump's ARP printer reads on
        return
    summary.arp_sender_mac = _mac(data[body : body + 6])
    summary.arp_sender_ip = _ipv4(data[body + 6 : body + 10])
    summary.arp_target_mac = _mac(data[body + 10 : body + 16])
    summary.arp_target_ip = _ipv4(data[body + 16 : body + 20])


def _ipv4Packet(summary: PacketSummary, data: bytes, offset: int) -> None:
    summary.network = "IPv4"
    if len(data) < offset + _IPV4.size:
        summary.truncated = "ip"
        summary.dump_whole = len(data) <= offset or None  # tcpdump read its version
        return
    (vihl, tos, total, ident, fragment, ttl, protocol, _checksum, src, dst) = _IPV4.unpack_from(
        data, offset
    )
    summary.tos = tos
    summary.ip_flags = _IP_FLAG_TEXT[fragment >> 13]
    summary.src, summary.dst = _ipv4(src), _ipv4(dst)
    summary.ttl, summary.ip_length, summary.ip_id = ttl, total, ident
    summary.protocol_number = protocol
    summary.protocol = _IP_PROTOCOLS.get(protocol, f"ip-proto-{protocol}")
    version, headerLength = vihl >> 4, (vihl & 0x0F) * 4
    if version != 4:
        summary.problem = f"IPv4 header says version {version}"
        return
    if headerLength < _IPV4.size:
        summary.problem = f"bad IPv4 header length {headerLength}"
        return
    if total < headerLength:
        summary.problem = f"IPv4 total length {total} is shorter than its header ({headerLength})"
        return
    summary.fragment_offset = (fragment & 0x1FFF) * 8
    summary.more_fragments = bool(fragment & 0x2000)
    if len(data) < offset + headerLength:
        summary.truncated = "ip"
        return
    start = offset + headerLength
    payload = data[start : offset + total]
    payloadLength = total - headerLength
    if summary.fragment_offset:
        summary.payload_length = payloadLength
        return
    summary.transport_offset = start
    _transport(summary, protocol, payload, payloadLength, version=4)


def _ipv6Packet(summary: PacketSummary, data: bytes, offset: int) -> None:
    summary.network = "IPv6"
    if len(data) < offset + _IPV6.size:
        summary.truncated = "ip6"
        return
    first, payloadLength, nextHeader, hopLimit, src, dst = _IPV6.unpack_from(data, offset)
    summary.src, summary.dst = _ipv6(src), _ipv6(dst)
    summary.ttl = hopLimit
    summary.traffic_class = (first >> 20) & 0xFF
    summary.flow_label = first & 0xFFFFF
    summary.next_header = nextHeader
    summary.ip_length = payloadLength + _IPV6.size
    version = first >> 28
    if version != 6:
        summary.problem = f"IPv6 header says version {version}"
        return
    start = offset + _IPV6.size
    end = start + payloadLength if payloadLength else len(data)
    payload = data[start:end]
    if not payloadLength:
        payloadLength = len(payload)  # a jumbogram, or nothing: take what is there
    position = 0
    while nextHeader in _IPV6_EXTENSIONS:
        if len(summary.extension_headers) == _MAX_EXTENSION_HEADERS:
            summary.problem = f"more than {_MAX_EXTENSION_HEADERS} IPv6 extension headers"
            return
        name = _IP_PROTOCOLS.get(nextHeader, str(nextHeader))
        if nextHeader == 50:  # ESP: the rest is encrypted
            break
        summary.extension_headers.append(name)
        if len(payload) < position + 8:
            summary.truncated = name.lower()
            return
        following, size = payload[position], payload[position + 1]
        if nextHeader == 44:
            fragment, summary.fragment_id = struct.unpack_from(">HI", payload, position + 2)
            summary.fragment_offset = fragment & 0xFFF8
            summary.more_fragments = bool(fragment & 1)
            summary.fragment_length = payloadLength - position - 8
            length = 8
        elif nextHeader == 51:
            length = (size + 2) * 4
        else:
            length = (size + 1) * 8
        position += length
        nextHeader = following
        if summary.fragment_offset:
            break  # a later fragment: what follows is data, not headers
    summary.protocol_number = nextHeader
    summary.protocol = _IP_PROTOCOLS.get(nextHeader, f"ip-proto-{nextHeader}")
    if position > payloadLength:
        summary.problem = "IPv6 extension headers are longer than the payload"
        return
    if summary.fragment_offset:
        summary.payload_length = payloadLength - position
        return
    if nextHeader == 59:
        return
    summary.transport_offset = start + position
    _transport(summary, nextHeader, payload[position:], payloadLength - position, version=6)


def _transport(
    summary: PacketSummary, protocol: int, payload: bytes, payloadLength: int, version: int
) -> None:
    if protocol == 6:
        _tcp(summary, payload, payloadLength)
    elif protocol == 17:
        _udp(summary, payload)
    elif protocol == 1 and version == 4:
        _icmp(summary, payload, payloadLength, _ICMP_TYPES)
    elif protocol == 58 and version == 6:
        _icmp(summary, payload, payloadLength, _ICMPV6_TYPES)
    else:
        summary.payload_length = payloadLength


def _ports(summary: PacketSummary, payload: bytes, layer: str) -> bool:
    if len(payload) >= 4:
        summary.src_port, summary.dst_port = struct.unpack_from(">HH", payload)
        return True
    summary.truncated = layer
    return False


def _tcp(summary: PacketSummary, payload: bytes, payloadLength: int) -> None:
    if not _ports(summary, payload, "tcp"):
        return
    if len(payload) < _TCP_HEADER:
        summary.truncated = "tcp"
        return
    _sport, _dport, seq, ack, offset, flags, window = _TCP.unpack_from(payload)
    summary.seq, summary.window = seq, window
    summary.tcp_flags = _TCP_FLAG_TEXT[flags]
    if flags & 0x10:
        summary.ack = ack
    if flags & 0x20:
        summary.urgent = _U16.unpack_from(payload, 18)[0]
    headerLength = (offset >> 4) * 4
    if headerLength < _TCP_HEADER:
        summary.problem = f"bad TCP header length {headerLength}"
        return
    if headerLength > payloadLength:
        summary.problem = f"TCP header length {headerLength} is past the packet's end"
        return
    summary.payload_length = payloadLength - headerLength
    if flags & 0x04 and summary.payload_length:
        summary.rst_data = _rstData(payload[headerLength:], summary.payload_length)
    if headerLength > _TCP_HEADER:
        options, ending = _tcpOptions(payload, headerLength - _TCP_HEADER)
        summary.tcp_options = options
        if ending:
            summary.tcp_options_cut = True
            summary.dump_whole = (ending == "gave up") or None
        if len(payload) < headerLength:
            summary.truncated = "tcp"


def _rstData(data: bytes, length: int) -> str:
    """
    What a reset segment carries, as tcpdump C{-v} shows it: C{[RST text]}
    with at most 30 characters (C{RST+} when there are more, C{!RST} when
    not all was captured), control and non-ASCII bytes as C{^X} and C{M-x}.
    """
    head = "[RST" if len(data) >= length else "[!RST"
    if length > 30:
        head += "+"
    text = "".join([_VISIBLE_CHARACTERS[byte] for byte in data[: min(length, 30)]])
    return f"{head} {text}]"


def _fastOpen(cookie: bytes) -> str:
    """
    A TCP Fast Open option's words after its name, as tcpdump's
    C{print_tcp_fastopen_option}.
    """
    if not cookie:
        return " cookiereq"
    if len(cookie) % 2 or not 4 <= len(cookie) <= 16:
        return " (invalid)"
    return f" cookie {cookie.hex()}"


def _tcpOptions(segment: bytes, size: int) -> tuple[str, str]:
    """
    The C{size} bytes of TCP options after the fixed header of C{segment}
    (as far as it was captured) as tcpdump prints them after C{options [}
    (SACK blocks absolute, as with C{-S}), and how the list ends: C{""}
    (complete: C{]} follows), C{"bad"} (a bad option ends tcpdump's line),
    C{"cut"} (tcpdump's bounds check found the capture's end: C{ [|tcp]},
    and C{>} after a complete option) or C{"gave up"} (a read past the
    capture's end stopped tcpdump's printer: C{ [|tcp]}).
    """
    captured = len(segment)
    if (
        size == 12
        and captured >= 32
        and segment[_TCP_HEADER : _TCP_HEADER + 4] == _NOP_NOP_TIMESTAMPS
    ):
        value, echo = _TIMESTAMPS.unpack_from(segment, 24)
        return f"nop,nop,TS val {value} ecr {echo}", ""
    parts: list[str] = []
    position, left = _TCP_HEADER, size

    def stop(text: str, how: str) -> tuple[str, str]:
        body = ",".join(parts) + ("," if parts else "") + text
        if how == "bad":
            return body + "[bad opt]" + ("]" if parts else ""), how
        return body + " [|tcp]" + (">" if how == "cut" and parts else ""), how

    while left > 0:
        if position >= captured:
            return stop("", "gave up")
        kind = segment[position]
        position += 1
        if kind in (0, 1):
            length = 1
        else:
            if position >= captured:
                return stop("", "gave up")
            length = segment[position]
            position += 1
            if length < 2 or length > left:
                return stop("", "bad")
            left -= 1
        left -= 1
        text = _TCP_OPTIONS.get(kind, f"unknown-{kind}")
        fixed = _TCP_OPTION_SIZES.get(kind, 0)
        data = segment[position : position + length - 2]
        if kind in (0, 1, 4):
            size = 0
        elif fixed:
            size = fixed
            if size > left:
                return stop(text, "bad")
            if position + size > captured:
                return stop(text, "cut")
            value = int.from_bytes(segment[position : position + size], "big")
            if kind == 8:
                text += f" val {value >> 32} ecr {value & 0xFFFFFFFF}"
            elif kind == 20:
                text += f" cap {value >> 8:02x} id {value & 0xFF}"
            elif kind == 28:
                minutes = value & 1
                text += f" 0x{value:x} {(value >> 1) * 60 if minutes else value >> 1}"
            else:
                text += f" {value}"
        elif kind == 5:
            size = length - 2
            if size % 8:
                text += " invalid sack"
            else:
                text += f" {size // 8} "
                for block in range(0, size, 8):
                    if position + block + 8 > captured:
                        return stop(text, "cut")
                    first, last = struct.unpack_from(">II", segment, position + block)
                    text += f"{{{first}:{last}}}"
        elif kind in (34, 254):
            size = length - 2
            if position + size > captured:
                return stop(text, "cut")
            if kind == 34:
                text += " " + _fastOpen(data)
            elif size < 2:
                return stop(text, "bad")
            elif data[:2] == b"\xf9\x89":
                text += "-tfo" + _fastOpen(data[2:])
            else:
                text += f"-{data[:2].hex()}"
        else:
            size = length - 2
            if size:
                text += " 0x" + data.hex()
                if len(data) < size:
                    return stop(text, "cut")
        position += size
        left -= size
        if size + (1 if kind in (0, 1) else 2) != length:
            text += f"[len {length}]"
        parts.append(text)
        if kind == 0:
            break
    return ",".join(parts), ""


def _udp(summary: PacketSummary, payload: bytes) -> None:
    if not _ports(summary, payload, "udp"):
        return
    if len(payload) < 8:
        summary.truncated = "udp"
        return
    length = _U16.unpack_from(payload, 4)[0]
    if length < 8:
        summary.problem = f"bad UDP length {length}"
        return
    summary.payload_length = length - 8


def _icmp(
    summary: PacketSummary, payload: bytes, payloadLength: int, names: dict[int, str]
) -> None:
    summary.payload_length = payloadLength
    layer = "icmp" if names is _ICMP_TYPES else "icmp6"
    if len(payload) < 2:
        summary.truncated = layer
        summary.dump_whole = True  # tcpdump read the type and code
        if payload and names is _ICMPV6_TYPES:
            summary.icmp_type = payload[0]
            summary.icmp = names.get(payload[0], f"type {payload[0]}")
        return
    kind, code = payload[0], payload[1]
    summary.icmp_type, summary.icmp_code = kind, code
    name = names.get(kind, f"type {kind}")
    if names is _ICMP_TYPES and kind == 3:
        name = _ICMP_UNREACHABLE.get(code, f"unreachable code {code}")
    summary.icmp = name
    if kind == 3 and names is _ICMP_TYPES:
        _icmpUnreachable(summary, payload, code)
    elif kind == 1 and names is _ICMPV6_TYPES:
        _icmpv6Unreachable(summary, payload, code)
    echo = (0, 8) if names is _ICMP_TYPES else (128, 129)
    if kind in echo:
        if len(payload) < 8:
            summary.truncated = layer
            summary.dump_whole = True  # tcpdump reads the id and sequence number
            return
        summary.icmp_id, summary.icmp_seq = struct.unpack_from(">HH", payload, 4)
    elif names is _ICMPV6_TYPES and kind in (135, 136):
        if len(payload) < 24:
            summary.truncated = layer
            return
        target = _ipv6(payload[8:24])
        summary.icmp = f"{name}, {'who has' if kind == 135 else 'tgt is'} {target}"
    elif names is _ICMPV6_TYPES and kind == 143 and len(payload) >= 8:
        records = _U16.unpack_from(payload, 6)[0]
        summary.icmp = f"{name}, {records} group record(s)"


def _icmpUnreachable(summary: PacketSummary, payload: bytes, code: int) -> None:
    """
    Name the quoted packet's destination as tcpdump does (C{192.0.2.2 udp
    port 7 unreachable}), or say where the capture cut the quoted headers.
    """
    if code > 3:
        return
    portAt = 8 + (payload[8] & 0x0F) * 4 + 2 if len(payload) > 8 else 0
    if len(payload) < 28 or (code == 3 and len(payload) < portAt + 2):
        summary.truncated = "icmp"
        # tcpdump checks for the quoted protocol, then reads on (and gives up).
        summary.dump_whole = len(payload) >= 18 or None
        return
    quotedProtocol = payload[17]
    target = _ipv4(payload[24:28])
    if code == 0:
        summary.icmp = f"net {target} unreachable"
    elif code == 1:
        summary.icmp = f"host {target} unreachable"
    elif code == 2:
        summary.icmp = f"{target} protocol {quotedProtocol} unreachable"
    else:
        port = _U16.unpack_from(payload, portAt)[0]
        if quotedProtocol in (6, 17):
            name = "tcp" if quotedProtocol == 6 else "udp"
            summary.icmp = f"{target} {name} port {port} unreachable"
        else:
            summary.icmp = f"{target} protocol {quotedProtocol} port {port} unreachable"


def _icmpv6Unreachable(summary: PacketSummary, payload: bytes, code: int) -> None:
    words = _ICMPV6_UNREACHABLE.get(code, f"unknown unreach code ({code})")
    summary.icmp = f"destination unreachable, {words}"
    if len(payload) < 48 or code not in (0, 1, 3, 4):
        return
    target = _ipv6(payload[32:48])
    if code != 4:
        summary.icmp += f" {target}"
        return
    quotedProtocol = payload[14]
    if quotedProtocol not in (6, 17) or len(payload) < 52:
        return
    port = _U16.unpack_from(payload, 50)[0]
    summary.icmp += f", {target} {'tcp' if quotedProtocol == 6 else 'udp'} port {port}"


def _onesComplementSum(data: bytes) -> int:
    """
    The 16-bit one's complement sum of C{data} (padded to even length),
    in one big-integer operation: 2**16 is 1 modulo 0xFFFF.
    """
    if len(data) & 1:
        data += b"\0"
    total = int.from_bytes(data, "big") % 0xFFFF
    return 0xFFFF if total == 0 and any(data) else total


def _expected(words: int) -> int:
    """
    The checksum that makes C{words} (a one's complement sum taken with
    the checksum field zero) add up.
    """
    return 0xFFFF - words if words != 0xFFFF else 0


def _checksums(summary: PacketSummary, data: bytes) -> None:
    """
    Check the IPv4 header's checksum and the transport's (TCP, UDP,
    ICMP, ICMPv6) where the bytes they cover were captured, as tcpdump
    C{-v} does.
    """
    start = summary.link_length
    if summary.network == "IPv4" and summary.fragment_offset is not None:
        end = start + (data[start] & 0x0F) * 4
        if end <= len(data):
            header = bytearray(data[start:end])
            summary.ip_checksum = (header[10] << 8) | header[11]
            header[10:12] = b"\0\0"
            summary.ip_checksum_expected = _expected(_onesComplementSum(bytes(header)))
    transport = summary.transport_offset
    if transport is None or summary.more_fragments or summary.fragment_id is not None:
        return  # a fragment: tcpdump leaves its checksum alone too
    protocol = summary.protocol_number
    field = _CHECKSUM_FIELDS.get(protocol or 0)
    length = summary.ip_length
    if field is None or length is None:
        return
    if summary.network == "IPv4":
        end = start + length
        pseudo = data[start + 12 : start + 20] + struct.pack(">HH", protocol, end - transport)
    else:
        end = start + length
        pseudo = data[start + 8 : start + 40] + struct.pack(">IxxxB", end - transport, protocol)
    if end > len(data) or end - transport < field + 2:
        return
    segment = bytearray(data[transport:end])
    summary.checksum = (segment[field] << 8) | segment[field + 1]
    segment[field : field + 2] = b"\0\0"
    if protocol == 1:
        pseudo = b""
    summary.checksum_expected = _expected(_onesComplementSum(pseudo + bytes(segment)))


# --- text ---------------------------------------------------------------------

# tcpdump's names of Ethernet types and IP protocols, for -e and -v.
_ETHERTYPE_WORDS = {
    0x0800: "IPv4",
    0x86DD: "IPv6",
    0x0806: "ARP",
    0x8100: "802.1Q",
    0x9100: "802.1Q-9100",
    0x88A8: "802.1Q-QinQ",
    0x9200: "802.1Q-9200",
    0x8035: "Reverse ARP",
    0x88CC: "LLDP",
    0x8847: "MPLS unicast",
    0x8848: "MPLS multicast",
    0x8863: "PPPoE D",
    0x8864: "PPPoE S",
    0x88E5: "802.1AE MACsec",
    0x88F7: "PTP",
    0x8809: "Slow Protocols",
    0x888E: "EAPOL",
    0x9000: "Loopback",
}
_IPPROTO_WORDS = {0: "Options", 1: "ICMP", 2: "IGMP", 4: "IPIP", 6: "TCP", 8: "EGP", 9: "IGRP",
                  17: "UDP", 33: "DCCP", 41: "IPv6", 43: "Routing", 44: "Fragment", 46: "RSVP",
                  47: "GRE", 50: "ESP", 51: "AH", 55: "Mobile IP", 58: "ICMPv6",
                  62: "Mobile IP (old)", 88: "EIGRP", 89: "OSPF", 103: "PIM",
                  108: "Compressed IP", 112: "VRRP", 113: "PGM", 132: "SCTP", 135: "Mobility",
                  143: "Ethernet"}  # fmt: skip
# tcpdump's names of the layers a packet was cut in, where they differ.
_TRUNCATED_WORDS = {"ethernet": "ether", "linux-sll2": "sll2", "linux-sll": "sll"}
_ECN_WORDS = ("", ",ECT(1)", ",ECT(0)", ",CE")
_SLL_DIRECTION_WORDS = {
    "in": "In",
    "broadcast": "B",
    "multicast": "M",
    "otherhost": "P",
    "out": "Out",
}


def _endpoint(address: str | None, port: int | None) -> str:
    text = address or "?"
    return text if port is None else f"{text}.{port}"


def describe(
    summary: PacketSummary,
    *,
    linkHeader: bool = False,
    quiet: bool = False,
    verbose: bool = False,
    vlanWords: bool = True,
) -> str:
    """
    The packet the way tcpdump 4.99.3 C{-nn -S} prints it after the time
    and interface: C{IP 127.0.0.1.40000 > 127.0.0.1.7007: Flags [S], seq 1,
    win 65495, length 0}.

    @param linkHeader: start with the link-level header, as C{-e} does.
    @param quiet: less protocol detail, as C{-q} does.
    @param verbose: the IP header's fields and the checksums (where
        L{decodePacket} checked them), as C{-v} does.
    @param vlanWords: without C{linkHeader}, start with the VLAN tags
        (C{vlan 10, p 0, }); tcpdump prints them only with C{-e}.
    """
    if linkHeader:
        text = _describeLink(summary, quiet) + _describeNetwork(summary, False, quiet, verbose)
    elif summary.vlans and vlanWords:
        tags = "".join(f"vlan {tag['id']}, p {tag['priority']}, " for tag in summary.vlans)
        text = tags + _describeNetwork(summary, True, quiet, verbose)
    elif summary.vlans and summary.link in ("linux-sll2", "linux-sll") and not quiet:
        # tcpdump names what a cooked header's tag holds even without -e.
        tags = "".join(f"ethertype {name}, " for name in _innerTypes(summary))
        text = tags + _describeNetwork(summary, True, quiet, verbose)
    else:
        text = _describeNetwork(summary, True, quiet, verbose)
    if summary.truncated and not summary.tcp_options_cut:
        text += f" [|{_TRUNCATED_WORDS.get(summary.truncated, summary.truncated)}]"
    if summary.problem:
        text += f" [{summary.problem}]"
    return text


def _ethertypeWord(ethertype: int, quiet: bool) -> str:
    name = _ETHERTYPE_WORDS.get(ethertype)
    if quiet:
        return name or f"Unknown Ethertype (0x{ethertype:04x})"
    return f"ethertype {name or 'Unknown'} (0x{ethertype:04x})"


def _innerTypes(summary: PacketSummary) -> list[str]:
    """
    The names of the types each VLAN tag says follows it.
    """
    following = [tag["tpid"] for tag in summary.vlans[1:]] + [summary.ethertype or 0]
    return [_ETHERTYPE_WORDS.get(ethertype, "Unknown") for ethertype in following]


def _describeLink(summary: PacketSummary, quiet: bool) -> str:
    """
    The link-level header as tcpdump C{-e} prints it, up to the network
    layer's own words.
    """
    link = summary.link
    ethertype = summary.ethertype
    if link == "ethernet":
        if ethertype is None or summary.eth_src is None:
            return ""
        text = f"{summary.eth_src} > {summary.eth_dst}, "
        if summary.truncated == "vlan":
            return text
        lengthText = f", length {summary.length}: "
        printed = False
        for tag in summary.vlans:
            text += _ethertypeWord(tag["tpid"], quiet) + (", " if printed else lengthText)
            printed = True
            dei = ", DEI" if tag["dei"] else ""
            text += f"vlan {tag['id']}, p {tag['priority']}{dei}, "
        if summary.network == "802.3":
            return text + ("802.3" if printed else f"802.3, length {ethertype}: ")
        return text + _ethertypeWord(ethertype, quiet) + (", " if printed else lengthText)
    if link == "linux-sll2" or link == "linux-sll":
        if ethertype is None:
            return ""
        text = f"ifindex {summary.interface_index} " if link == "linux-sll2" else ""
        if link == "linux-sll":
            text = f"{_SLL_DIRECTION_WORDS.get(summary.direction or '', '?'):>3} "
        if summary.eth_src is not None:
            text += f"{summary.eth_src} "
        if summary.vlans:
            # The cooked header's protocol is the first tag's type.
            if not quiet:
                first = _ethertypeWord(summary.vlans[0]["tpid"], False)
                text += f"{first}, length {summary.length}: "
            for tag, inner in zip(summary.vlans, _innerTypes(summary), strict=True):
                dei = ", DEI" if tag["dei"] else ""
                text += f"vlan {tag['id']}, p {tag['priority']}{dei}, "
                if not quiet:
                    text += f"ethertype {inner}, "
            return text
        if not quiet:
            text += f"{_ethertypeWord(ethertype, False)}, length {summary.length}: "
        return text
    if link == "raw":
        return "ip: "
    return ""


def _describeNetwork(summary: PacketSummary, label: bool, quiet: bool, verbose: bool) -> str:
    network = summary.network
    if network == "ARP":
        return _describeARP(summary, label, verbose)
    if network in ("IPv4", "IPv6"):
        head = ("IP " if network == "IPv4" else "IP6 ") if label else ""
        if summary.src is None:
            # Cut in the header: tcpdump names IPv4 once it read a byte.
            return "" if network == "IPv6" or summary.dump_whole else head
        if verbose:
            head += _verboseIPv4(summary) if network == "IPv4" else _verboseIPv6(summary)
        if summary.extension_headers:
            return head + _describeExtended(summary, quiet, verbose)
        if network == "IPv4" and summary.fragment_offset:
            # A later fragment: tcpdump names the protocol only.
            return f"{head}{summary.src} > {summary.dst}: ip-proto-{summary.protocol_number}"
        source = _endpoint(summary.src, summary.src_port)
        target = _endpoint(summary.dst, summary.dst_port)
        text = f"{head}{source} > {target}:"
        transport = _describeTransport(summary, quiet, verbose)
        if transport:
            return f"{text} {transport}"
        if summary.truncated and (summary.protocol != "TCP" or summary.src_port is not None):
            return text + " "  # tcpdump: "a.1 > b.2:  [|tcp]", but "a > b: [|tcp]"
        return text
    if summary.ethertype is None or summary.truncated == "vlan":
        return "" if summary.truncated else summary.link
    name = network or f"ethertype 0x{summary.ethertype:04x}"
    if network == "802.3":
        return f"802.3, length {summary.ethertype}"
    return f"{name}, length {summary.length}"


def _describeExtended(summary: PacketSummary, quiet: bool, verbose: bool) -> str:
    """
    An IPv6 packet with extension headers, as tcpdump prints it: the
    addresses, each header, then ports and transport (C{2001:db8::1 >
    2001:db8::2: frag (0|16) 40000 > 7: UDP, length 8}).
    """
    words = []
    for name in summary.extension_headers:
        if name == "FRAG" and summary.fragment_id is not None:
            where = f"{summary.fragment_offset}|{summary.fragment_length}"
            if verbose:
                where = f"0x{summary.fragment_id:08x}:{where}"
            words.append(f"frag ({where})")
        else:
            words.append(name)
    text = f"{summary.src} > {summary.dst}: {' '.join(words)}"
    if summary.fragment_offset:
        return text
    transport = _describeTransport(summary, quiet, verbose)
    if summary.src_port is not None:
        text += f" {summary.src_port} > {summary.dst_port}:"
        if transport:
            return f"{text} {transport}"
        return text + " " if summary.truncated in ("tcp", "udp") else text
    return f"{text} {transport}" if transport else text


def _verboseIPv4(summary: PacketSummary) -> str:
    tos = summary.tos or 0
    text = f"(tos 0x{tos:x}{_ECN_WORDS[tos & 3]}"
    if summary.ttl:
        text += f", ttl {summary.ttl}"
    number = summary.protocol_number or 0
    text += (
        f", id {summary.ip_id}, offset {summary.fragment_offset or 0}, flags [{summary.ip_flags}],"
        f" proto {_IPPROTO_WORDS.get(number, 'unknown')} ({number}), length {summary.ip_length}"
    )
    if summary.ip_checksum is not None and summary.ip_checksum != summary.ip_checksum_expected:
        text += f", bad cksum {summary.ip_checksum:x} (->{summary.ip_checksum_expected:x})!"
    return text + ")\n    "


def _verboseIPv6(summary: PacketSummary) -> str:
    text = "("
    if summary.traffic_class:
        text += f"class 0x{summary.traffic_class:02x}, "
    if summary.flow_label:
        text += f"flowlabel 0x{summary.flow_label:05x}, "
    number = summary.next_header or 0
    payloadLength = (summary.ip_length or 40) - 40
    return text + (
        f"hlim {summary.ttl}, next-header {_IPPROTO_WORDS.get(number, 'unknown')} ({number})"
        f" payload length: {payloadLength}) "
    )


def _describeARP(summary: PacketSummary, label: bool, verbose: bool) -> str:
    head = "ARP, " if label else ""
    operation = summary.arp_operation
    if summary.truncated:
        return ""
    if summary.arp_sender_ip is None:
        return f"{head}{operation or '?'}, length {summary.length}"
    if verbose:
        head += "Ethernet (len 6), IPv4 (len 4), "  # the only kind decoded in full
    if operation == "request":
        body = f"Request who-has {summary.arp_target_ip} tell {summary.arp_sender_ip}"
    elif operation == "reply":
        body = f"Reply {summary.arp_sender_ip} is-at {summary.arp_sender_mac}"
    else:
        body = f"{operation} {summary.arp_sender_ip} > {summary.arp_target_ip}"
    return f"{head}{body}, length {summary.length - summary.link_length}"


def _checksumNote(summary: PacketSummary, name: str) -> str:
    """
    tcpdump's C{[udp sum ok] }/C{[bad udp cksum 0x0000 -> 0x443e!] } (and
    the C{icmp6} ones) before the transport's words, with C{-v}.
    """
    if summary.checksum is None:
        return ""
    if summary.checksum == summary.checksum_expected:
        return f"[{name} sum ok] "
    return f"[bad {name} cksum 0x{summary.checksum:04x} -> 0x{summary.checksum_expected:04x}!] "


def _describeTransport(summary: PacketSummary, quiet: bool, verbose: bool) -> str:
    protocol = summary.protocol
    if protocol == "TCP":
        return _describeTCP(summary, quiet, verbose)
    if protocol == "UDP":
        if summary.payload_length is None:
            return ""
        note = _checksumNote(summary, "udp") if verbose and summary.network == "IPv6" else ""
        return f"{note}UDP, length {summary.payload_length}"
    if protocol in ("ICMP", "ICMPv6"):
        return _describeICMP(summary, verbose)
    if protocol is None:
        return ""
    if summary.payload_length is None:
        return protocol
    return f"{protocol}, length {summary.payload_length}"


def _describeTCP(summary: PacketSummary, quiet: bool, verbose: bool) -> str:
    flags = summary.tcp_flags
    if flags is None:
        return ""
    length = summary.payload_length
    if quiet and length is not None:
        return f"tcp {length}"
    text = f"Flags [{flags}]"
    if verbose and summary.checksum is not None:
        expected = summary.checksum_expected
        text += f", cksum 0x{summary.checksum:04x}"
        if summary.checksum == expected:
            text += " (correct)"
        else:
            text += f" (incorrect -> 0x{expected:04x})"
    if length or "S" in flags or "F" in flags or "R" in flags:
        text += f", seq {summary.seq}"
        if length:
            text += f":{((summary.seq or 0) + length) & 0xFFFFFFFF}"
    if summary.ack is not None:
        text += f", ack {summary.ack}"
    text += f", win {summary.window}"
    if summary.urgent is not None:
        text += f", urg {summary.urgent}"
    options = summary.tcp_options
    if options is not None:
        if summary.tcp_options_cut:
            return f"{text}, options [{options}"  # tcpdump's line ends there
        text += f", options [{options}]"
    if length is not None:
        text += f", length {length}"
    if verbose and summary.rst_data is not None:
        text += f" {summary.rst_data}"
    return text


def _describeICMP(summary: PacketSummary, verbose: bool) -> str:
    version4 = summary.protocol == "ICMP"
    label = "ICMP" if version4 else "ICMP6,"
    if summary.truncated:
        # Cut: tcpdump has printed an ICMPv6 type's name, nothing of ICMP.
        if version4 or summary.icmp_type is None:
            return ""
        return f"ICMP6, {_ICMPV6_TYPES.get(summary.icmp_type, summary.icmp)}"
    if summary.icmp is None:
        return label.rstrip(",")
    text = f"{label} {summary.icmp}"
    if summary.icmp_id is not None:
        text += f", id {summary.icmp_id}, seq {summary.icmp_seq}"
    if version4:
        text += f", length {summary.payload_length}"
        checksum, expected = summary.checksum, summary.checksum_expected
        if verbose and checksum is not None and checksum != expected:
            text += f" (wrong icmp cksum {checksum:x} (->{expected:x})!)"
        return text
    if verbose:
        return _checksumNote(summary, "icmp6") + text
    return f"{text}, length {summary.payload_length}"
