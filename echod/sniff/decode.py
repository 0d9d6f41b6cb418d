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

_U16 = struct.Struct(">H")
_ETHERNET = struct.Struct(">6s6sH")
_SLL = struct.Struct(">HHH8sH")
_SLL2 = struct.Struct(">HHiHBB8s")
_IPV4 = struct.Struct(">BBHHHBBH4s4s")
_IPV6 = struct.Struct(">IHBB16s16s")
_TCP = struct.Struct(">HHIIBBH")
_UDP = struct.Struct(">HHH")
_ARP = struct.Struct(">HHBBH")


@dataclass
class PacketSummary:
    """
    The decoded fields of one packet; L{None} where a layer is absent or was
    not reached.  C{length} is the length on the wire, C{captured} what was
    kept; C{payload_length} is what the transport header says its payload
    is (TCP and UDP), as tcpdump's C{length}.
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
) -> PacketSummary:
    """
    Decode C{data} (a packet of pcap link type C{linktype}) as far as it
    goes.  Never raises on any bytes.
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
    except Exception as e:
        # Not reached by any input the tests know; kept so that one
        # unforeseen packet cannot stop a capture.
        summary.problem = f"decoder error: {type(e).__name__}: {e}"
    return summary


def _ethernet(summary: PacketSummary, data: bytes) -> None:
    if len(data) < _ETHERNET.size:
        summary.truncated = "ethernet"
        if len(data) >= 12:
            summary.eth_dst, summary.eth_src = _mac(data[0:6]), _mac(data[6:12])
        return
    dst, src, ethertype = _ETHERNET.unpack_from(data)
    summary.eth_dst, summary.eth_src = _mac(dst), _mac(src)
    _ethertype(summary, ethertype, data, _ETHERNET.size)


def _sll(summary: PacketSummary, data: bytes) -> None:
    if len(data) < _SLL.size:
        summary.truncated = "linux-sll"
        return
    pkttype, _hatype, halen, address, protocol = _SLL.unpack_from(data)
    summary.direction = summary.direction or _DIRECTIONS.get(pkttype)
    if halen == 6:
        summary.eth_src = _mac(address[:6])
    _ethertype(summary, protocol, data, _SLL.size)


def _sll2(summary: PacketSummary, data: bytes) -> None:
    if len(data) < _SLL2.size:
        summary.truncated = "linux-sll2"
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
            return
        tci, inner = struct.unpack_from(">HH", data, offset)
        summary.vlans.append(
            {"tpid": ethertype, "id": tci & 0x0FFF, "priority": tci >> 13, "dei": (tci >> 12) & 1}
        )
        ethertype = inner
        offset += 4
        tags += 1
    summary.ethertype = ethertype
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
        return
    summary.arp_sender_mac = _mac(data[body : body + 6])
    summary.arp_sender_ip = _ipv4(data[body + 6 : body + 10])
    summary.arp_target_mac = _mac(data[body + 10 : body + 16])
    summary.arp_target_ip = _ipv4(data[body + 16 : body + 20])


def _ipv4Packet(summary: PacketSummary, data: bytes, offset: int) -> None:
    summary.network = "IPv4"
    if len(data) < offset + _IPV4.size:
        summary.truncated = "ip"
        return
    (vihl, _tos, total, ident, fragment, ttl, protocol, _checksum, src, dst) = _IPV4.unpack_from(
        data, offset
    )
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
    _transport(summary, protocol, payload, payloadLength, version=4)


def _ipv6Packet(summary: PacketSummary, data: bytes, offset: int) -> None:
    summary.network = "IPv6"
    if len(data) < offset + _IPV6.size:
        summary.truncated = "ip6"
        return
    first, payloadLength, nextHeader, hopLimit, src, dst = _IPV6.unpack_from(data, offset)
    summary.src, summary.dst = _ipv6(src), _ipv6(dst)
    summary.ttl = hopLimit
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
            fragment = _U16.unpack_from(payload, position + 2)[0]
            summary.fragment_offset = fragment & 0xFFF8
            summary.more_fragments = bool(fragment & 1)
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
    if len(payload) < _TCP.size:
        summary.truncated = "tcp"
        return
    _sport, _dport, seq, ack, offset, flags, window = _TCP.unpack_from(payload)
    summary.seq, summary.window = seq, window
    summary.tcp_flags = "".join(char for bit, char in _TCP_FLAGS if flags & bit) or "none"
    if flags & 0x10:
        summary.ack = ack
    headerLength = (offset >> 4) * 4
    if headerLength < _TCP.size:
        summary.problem = f"bad TCP header length {headerLength}"
        return
    if headerLength > payloadLength:
        summary.problem = f"TCP header length {headerLength} is past the packet's end"
        return
    summary.payload_length = payloadLength - headerLength


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
        return
    kind, code = payload[0], payload[1]
    summary.icmp_type, summary.icmp_code = kind, code
    name = names.get(kind, f"type {kind}")
    if names is _ICMP_TYPES and kind == 3:
        name = _ICMP_UNREACHABLE.get(code, f"unreachable code {code}")
    summary.icmp = name
    echo = (0, 8) if names is _ICMP_TYPES else (128, 129)
    if kind in echo:
        if len(payload) < 8:
            summary.truncated = layer
            return
        summary.icmp_id, summary.icmp_seq = struct.unpack_from(">HH", payload, 4)
    elif names is _ICMPV6_TYPES and kind in (135, 136):
        if len(payload) < 24:
            summary.truncated = layer
            return
        target = _ipv6(payload[8:24])
        summary.icmp = f"{name}, {'who has' if kind == 135 else 'tgt is'} {target}"


# --- text ---------------------------------------------------------------------


def _endpoint(address: str | None, port: int | None) -> str:
    text = address or "?"
    return text if port is None else f"{text}.{port}"


def describe(summary: PacketSummary) -> str:
    """
    The packet the way tcpdump prints it after the time and interface:
    C{IP 127.0.0.1.40000 > 127.0.0.1.7007: Flags [S], seq 1, win 65495,
    length 0}.
    """
    parts: list[str] = []
    for tag in summary.vlans:
        parts.append(f"vlan {tag['id']}, p {tag['priority']}, ")
    text = "".join(parts) + _describeNetwork(summary)
    if summary.truncated:
        text += f" [|{summary.truncated}]"
    if summary.problem:
        text += f" [{summary.problem}]"
    return text


def _describeNetwork(summary: PacketSummary) -> str:
    network = summary.network
    if network == "ARP":
        return _describeARP(summary)
    if network in ("IPv4", "IPv6"):
        label = "IP" if network == "IPv4" else "IP6"
        if summary.src is None:
            return label
        source = _endpoint(summary.src, summary.src_port)
        target = _endpoint(summary.dst, summary.dst_port)
        head = f"{label} {source} > {target}:"
        if summary.extension_headers:
            head += " " + " ".join(summary.extension_headers)
        return f"{head} {_describeTransport(summary)}".rstrip()
    if summary.ethertype is None:
        return summary.link
    name = network or f"ethertype 0x{summary.ethertype:04x}"
    if network == "802.3":
        return f"802.3, length {summary.ethertype}"
    return f"{name}, length {summary.length}"


def _describeARP(summary: PacketSummary) -> str:
    operation = summary.arp_operation
    if summary.arp_sender_ip is None:
        return f"ARP, {operation or '?'}, length {summary.length}"
    if operation == "request":
        body = f"Request who-has {summary.arp_target_ip} tell {summary.arp_sender_ip}"
    elif operation == "reply":
        body = f"Reply {summary.arp_sender_ip} is-at {summary.arp_sender_mac}"
    else:
        body = f"{operation} {summary.arp_sender_ip} > {summary.arp_target_ip}"
    return f"ARP, {body}, length 28"


def _describeTransport(summary: PacketSummary) -> str:
    protocol = summary.protocol
    if summary.fragment_offset:
        flag = "+" if summary.more_fragments else ""
        return (
            f"{protocol} fragment offset {summary.fragment_offset}{flag}, "
            f"length {summary.payload_length}"
        )
    if protocol == "TCP":
        if summary.tcp_flags is None:
            return "TCP"
        text = f"Flags [{summary.tcp_flags}], seq {summary.seq}"
        if summary.ack is not None:
            text += f", ack {summary.ack}"
        text += f", win {summary.window}"
        if summary.payload_length is not None:
            text += f", length {summary.payload_length}"
        return text
    if protocol == "UDP":
        if summary.payload_length is None:
            return "UDP"
        return f"UDP, length {summary.payload_length}"
    if protocol in ("ICMP", "ICMPv6"):
        label = "ICMP" if protocol == "ICMP" else "ICMP6,"
        if summary.icmp is None:
            return label.rstrip(",")
        text = f"{label} {summary.icmp}"
        if summary.icmp_id is not None:
            text += f", id {summary.icmp_id}, seq {summary.icmp_seq}"
        return f"{text}, length {summary.payload_length}"
    if protocol is None:
        return ""
    if summary.payload_length is None:
        return protocol
    return f"{protocol}, length {summary.payload_length}"
