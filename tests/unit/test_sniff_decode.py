"""
The packet decoder: real frames captured on a veth pair, frames built for
each header it knows, every prefix of the real frames, and random bytes
(hypothesis): it never raises, and says where a packet was cut.
"""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from echod.sniff.bpf import LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2, LINKTYPE_RAW
from echod.sniff.decode import PacketSummary, decodePacket, describe
from tests import frames
from tests.classicbpf import packSLL2
from tests.testing import examples

# Frames captured with tcpdump on a veth pair in two network namespaces,
# with what tcpdump printed for each.
REAL = {
    "mld": (
        "333300000016f6e0ca3e19ab86dd600000000024000100000000000000000000000000000000ff02"
        "0000000000000000000000000016 3a000502000001008f0055a10000000104000000ff0200000000"
        "000000000001ff3e19ab",
        ":: > ff02::16: HBH ICMP6, multicast listener report v2, 1 group record(s), length 28",
    ),
    "ns": (
        "3333ff822b7e7a82c4822b7e86dd6000000000203aff00000000000000000000000000000000ff02"
        "00000000000000000001ff822b7e87002bf900000000fe800000000000007882c4fffe822b7e0e01"
        "fe5f885f27e2",
        ":: > ff02::1:ff82:2b7e: ICMP6, neighbor solicitation, who has "
        "fe80::7882:c4ff:fe82:2b7e, length 32",
    ),
    "arpRequest": (
        "ffffffffffff7a82c4822b7e080600010800060400017a82c4822b7e0a4d00010000000000000a4d0002",
        "Request who-has 10.77.0.2 tell 10.77.0.1, length 28",
    ),
    "arpReply": (
        "7a82c4822b7ef6e0ca3e19ab08060001080006040002f6e0ca3e19ab0a4d00027a82c4822b7e0a4d0001",
        "Reply 10.77.0.2 is-at f6:e0:ca:3e:19:ab, length 28",
    ),
    "udp": (
        "f6e0ca3e19ab7a82c4822b7e08004500001e051a4000401121190a4d00010a4d0002eb0e0009000a14b86869",
        "10.77.0.1.60174 > 10.77.0.2.9: UDP, length 2",
    ),
    "icmpUnreachable": (
        "7a82c4822b7ef6e0ca3e19ab080045c0003aed9f0000400177c70a4d00020a4d0001030394b90000"
        "00004500001e051a4000401121190a4d00010a4d0002eb0e0009000a14b86869",
        "10.77.0.2 > 10.77.0.1: ICMP 10.77.0.2 udp port 9 unreachable, length 38",
    ),
    "na": (
        "7a82c4822b7ef6e0ca3e19ab86dd6000000000203afffe80000000000000f4e0cafffe3e19abfe80"
        "0000000000007882c4fffe822b7e8800283d60000000fe80000000000000f4e0cafffe3e19ab0201"
        "f6e0ca3e19ab",
        "fe80::f4e0:caff:fe3e:19ab > fe80::7882:c4ff:fe82:2b7e: ICMP6, neighbor "
        "advertisement, tgt is fe80::f4e0:caff:fe3e:19ab, length 32",
    ),
    "udp6": (
        "f6e0ca3e19ab7a82c4822b7e86dd6004e741000b1140fe800000000000007882c4fffe822b7efe80"
        "000000000000f4e0cafffe3e19ab9f820009000b3c6c686936",
        "fe80::7882:c4ff:fe82:2b7e.40834 > fe80::f4e0:caff:fe3e:19ab.9: UDP, length 3",
    ),
    "syn": (
        "f6e0ca3e19ab7a82c4822b7e08004500003c2aec40004006fb330a4d00010a4d0002917e000734c4"
        "13be00000000a002faf014cb0000020405b40402080a43be5bcd000000000103030a",
        "10.77.0.1.37246 > 10.77.0.2.7: Flags [S], seq 885265342, win 64240, options "
        "[mss 1460,sackOK,TS val 1136548813 ecr 0,nop,wscale 10], length 0",
    ),
    "rst": (
        "7a82c4822b7ef6e0ca3e19ab08004500002800004000400626340a4d00020a4d00010007917e0000"
        "000034c413bf50140000c12b0000",
        "10.77.0.2.7 > 10.77.0.1.37246: Flags [R.], seq 0, ack 885265343, win 0, length 0",
    ),
}


def real(name: str) -> bytes:
    return bytes.fromhex(REAL[name][0].replace(" ", ""))


def decode(data: bytes, linktype: int = LINKTYPE_ETHERNET) -> PacketSummary:
    return decodePacket(linktype, data, len(data))


def line(data: bytes, linktype: int = LINKTYPE_ETHERNET) -> str:
    return describe(decode(data, linktype))


class RealFrameTests(SynchronousTestCase):
    """
    Real frames decode to what tcpdump said about them (echod's line is
    shorter where tcpdump decodes deeper: TCP options, ICMP payloads).
    """

    def test_tcpSyn(self) -> None:
        summary = decode(real("syn"))
        assert (summary.src, summary.dst, summary.src_port, summary.dst_port) == (
            "10.77.0.1",
            "10.77.0.2",
            37246,
            7,
        )
        assert (summary.tcp_flags, summary.seq, summary.ack, summary.window) == (
            "S",
            885265342,
            None,
            64240,
        )
        assert summary.payload_length == 0
        assert summary.eth_src == "7a:82:c4:82:2b:7e"
        assert line(real("syn")) == "IP " + REAL["syn"][1]

    def test_tcpResetAck(self) -> None:
        assert line(real("rst")) == "IP " + REAL["rst"][1]

    def test_udp(self) -> None:
        assert line(real("udp")) == "IP " + REAL["udp"][1]

    def test_udp6(self) -> None:
        assert line(real("udp6")) == "IP6 " + REAL["udp6"][1]

    def test_arp(self) -> None:
        assert line(real("arpRequest")) == "ARP, " + REAL["arpRequest"][1]
        assert line(real("arpReply")) == "ARP, " + REAL["arpReply"][1]
        summary = decode(real("arpReply"))
        assert summary.arp_sender_mac == "f6:e0:ca:3e:19:ab"
        assert summary.arp_target_ip == "10.77.0.1"

    def test_icmpUnreachable(self) -> None:
        summary = decode(real("icmpUnreachable"))
        assert (summary.icmp_type, summary.icmp_code) == (3, 3)
        assert line(real("icmpUnreachable")) == "IP " + REAL["icmpUnreachable"][1]

    def test_hopByHopMld(self) -> None:
        """
        A hop-by-hop options header is walked through to the ICMPv6 behind.
        """
        summary = decode(real("mld"))
        assert summary.extension_headers == ["HBH"]
        assert (summary.protocol, summary.icmp_type) == ("ICMPv6", 143)
        assert line(real("mld")) == "IP6 " + REAL["mld"][1]

    def test_neighborDiscovery(self) -> None:
        assert line(real("ns")) == "IP6 " + REAL["ns"][1]
        assert line(real("na")) == "IP6 " + REAL["na"][1]

    def test_truncatedPrefixes(self) -> None:
        """
        Every prefix of every real frame decodes without raising; those cut
        inside a header say at which layer, and keep what came before.
        """
        for name in REAL:
            frame = real(name)
            for end in range(len(frame)):
                summary = decodePacket(LINKTYPE_ETHERNET, frame[:end], len(frame))
                assert summary.problem is None or not summary.problem.startswith("decoder")
                assert summary.length == len(frame)
                assert summary.captured == end
                describe(summary)
            for end in (5, 13):
                assert decode(frame[:end]).truncated == "ethernet"

    def test_truncatedTcp(self) -> None:
        cut = real("syn")[: 14 + 20 + 10]
        summary = decodePacket(LINKTYPE_ETHERNET, cut, 74)
        assert summary.truncated == "tcp"
        assert (summary.src_port, summary.dst_port) == (37246, 7)
        assert describe(summary) == "IP 10.77.0.1.37246 > 10.77.0.2.7:  [|tcp]"

    def test_truncatedIp(self) -> None:
        summary = decode(real("udp")[: 14 + 12])
        assert (summary.network, summary.truncated, summary.src) == ("IPv4", "ip", None)
        assert describe(summary) == "IP  [|ip]"  # tcpdump's two spaces


class BuiltFrameTests(SynchronousTestCase):
    """
    Frames built for each header the decoder knows.
    """

    def test_vlan(self) -> None:
        """
        802.1Q tags are listed (id, priority) and the packet inside decoded.
        """
        inner = frames.ipv4(frames.udp(5, 6, b"x"), 17)
        frame = frames.ethernet(frames.vlan(inner, 100, 0x0800, priority=5), 0x8100)
        summary = decode(frame)
        assert summary.vlans == [{"tpid": 0x8100, "id": 100, "priority": 5, "dei": 0}]
        assert line(frame) == "vlan 100, p 5, IP 192.0.2.1.5 > 192.0.2.2.6: UDP, length 1"

    def test_qinq(self) -> None:
        inner = frames.vlan(frames.arp(1, "02:00:00:00:00:01", "10.0.0.1", "00:" * 5 + "00",
                                       "10.0.0.2"), 20, 0x0806)  # fmt: skip
        frame = frames.ethernet(frames.vlan(inner, 10, 0x8100), 0x88A8)
        summary = decode(frame)
        assert [(t["tpid"], t["id"]) for t in summary.vlans] == [(0x88A8, 10), (0x8100, 20)]
        assert summary.network == "ARP"

    def test_tooManyTags(self) -> None:
        payload = b""
        for _ in range(12):
            payload = struct.pack(">HH", 1, 0x8100) + payload
        summary = decode(frames.ethernet(payload, 0x8100))
        assert summary.problem == "more than 8 VLAN tags"

    def test_tcpFlags(self) -> None:
        """
        Flags print as tcpdump's: S, F, R, P, . (ACK), U, E, W.
        """
        cases = {0x02: "S", 0x12: "S.", 0x18: "P.", 0x11: "F.", 0x10: ".", 0: "none",
                 0xC2: "SEW", 0x21: "FU"}  # fmt: skip
        for bits, text in cases.items():
            frame = frames.ethernet(frames.ipv4(frames.tcp(1, 2, bits, ack=9), 6))
            assert decode(frame).tcp_flags == text

    def test_tcpPayload(self) -> None:
        """
        The TCP length is the IP length minus both headers, not what was
        captured (Ethernet padding is not payload).
        """
        segment = frames.tcp(1, 2, 0x18, payload=b"abc", options=b"\x01" * 4)
        frame = frames.ethernet(frames.ipv4(segment, 6)) + b"\0" * 10
        assert decode(frame).payload_length == 3

    def test_ipv4Options(self) -> None:
        packet = frames.ipv4(frames.udp(1, 2, b"zz"), 17, options=b"\x01\x01\x01\x00")
        summary = decode(frames.ethernet(packet))
        assert (summary.src_port, summary.payload_length) == (1, 2)

    def test_ipv4Fragment(self) -> None:
        """
        A later fragment has no transport header: only its offset is said.
        """
        packet = frames.ipv4(b"\0" * 16, 17, fragment=0x2000 | 185)
        summary = decode(frames.ethernet(packet))
        assert (summary.fragment_offset, summary.more_fragments) == (1480, True)
        assert summary.src_port is None
        assert summary.payload_length == 16
        assert describe(summary) == "IP 192.0.2.1 > 192.0.2.2: ip-proto-17"

    def test_badIpv4Header(self) -> None:
        packet = bytearray(frames.ipv4(frames.udp(1, 2), 17))
        packet[0] = 0x42
        summary = decode(frames.ethernet(bytes(packet)))
        assert summary.problem == "bad IPv4 header length 8"

    def test_ipv4VersionMismatch(self) -> None:
        packet = bytearray(frames.ipv4(frames.udp(1, 2), 17))
        packet[0] = 0x65
        assert decode(frames.ethernet(bytes(packet))).problem == "IPv4 header says version 6"

    def test_icmpEcho(self) -> None:
        packet = frames.ipv4(frames.icmp(8, rest=struct.pack(">HH", 7, 3), payload=b"p" * 56), 1)
        summary = decode(frames.ethernet(packet))
        assert (summary.icmp, summary.icmp_id, summary.icmp_seq) == ("echo request", 7, 3)
        assert describe(summary) == (
            "IP 192.0.2.1 > 192.0.2.2: ICMP echo request, id 7, seq 3, length 64"
        )

    def test_icmpv6Echo(self) -> None:
        packet = frames.ipv6(frames.icmpv6(129, body=struct.pack(">HH", 1, 2)), 58)
        summary = decode(frames.ethernet(packet, frames.ETH_IPV6))
        assert describe(summary) == (
            "IP6 2001:db8::1 > 2001:db8::2: ICMP6, echo reply, id 1, seq 2, length 8"
        )

    def test_ipv6ExtensionChain(self) -> None:
        """
        Hop-by-hop, routing and destination options headers are walked
        through in order to TCP.
        """
        tcpSegment = frames.tcp(1000, 7007, 0x02)
        chain = (
            frames.extension(43, b"\0" * 6)
            + frames.extension(60, b"\0" * 14)
            + frames.extension(6, b"\0" * 6)
        )
        packet = frames.ipv6(chain + tcpSegment, 0)
        summary = decode(frames.ethernet(packet, frames.ETH_IPV6))
        assert summary.extension_headers == ["HBH", "RT", "DSTOPT"]
        assert (summary.protocol, summary.dst_port, summary.payload_length) == ("TCP", 7007, 0)
        assert describe(summary) == (
            "IP6 2001:db8::1 > 2001:db8::2: HBH RT DSTOPT 1000 > 7007: Flags [S], seq 1000, "
            "win 65535, length 0"
        )

    def test_ipv6Fragments(self) -> None:
        """
        The first fragment shows its transport header; a later one only the
        offset.
        """
        first = frames.ipv6(frames.fragmentHeader(17, 0, True) + frames.udp(5, 53, b"q"), 44)
        summary = decode(frames.ethernet(first, frames.ETH_IPV6))
        assert (summary.extension_headers, summary.dst_port) == (["FRAG"], 53)
        later = frames.ipv6(frames.fragmentHeader(17, 1232, False) + b"\0" * 20, 44)
        summary = decode(frames.ethernet(later, frames.ETH_IPV6))
        assert (summary.fragment_offset, summary.dst_port) == (1232, None)
        assert summary.payload_length == 20

    def test_ipv6Esp(self) -> None:
        packet = frames.ipv6(b"\0" * 40, 50)
        summary = decode(frames.ethernet(packet, frames.ETH_IPV6))
        assert (summary.protocol, summary.payload_length) == ("ESP", 40)

    def test_ipv6AuthenticationHeader(self) -> None:
        ah = bytes([17, 4]) + b"\0" * 22  # (4 + 2) * 4 = 24 bytes
        packet = frames.ipv6(ah + frames.udp(1, 2), 51)
        summary = decode(frames.ethernet(packet, frames.ETH_IPV6))
        assert (summary.extension_headers, summary.protocol) == (["AH"], "UDP")

    def test_ipv6TooManyHeaders(self) -> None:
        chain = b"".join(frames.extension(60) for _ in range(20))
        packet = frames.ipv6(chain + frames.extension(59), 60)
        summary = decode(frames.ethernet(packet, frames.ETH_IPV6))
        assert summary.problem == "more than 16 IPv6 extension headers"

    def test_badUdpLength(self) -> None:
        datagram = bytearray(frames.udp(1, 2))
        datagram[4:6] = b"\0\3"
        summary = decode(frames.ethernet(frames.ipv4(bytes(datagram), 17)))
        assert summary.problem == "bad UDP length 3"

    def test_otherEthertype(self) -> None:
        assert line(frames.ethernet(b"\0" * 46, 0x88CC)) == "LLDP, length 60"
        assert line(frames.ethernet(b"\0" * 46, 0x9999)) == "ethertype 0x9999, length 60"
        assert line(frames.ethernet(b"\0" * 46, 46)) == "802.3, length 46"

    def test_otherIpProtocol(self) -> None:
        packet = frames.ipv4(b"\0" * 24, 47)
        assert line(frames.ethernet(packet)) == "IP 192.0.2.1 > 192.0.2.2: GRE, length 24"


class LinkTypeTests(SynchronousTestCase):
    def test_sll2(self) -> None:
        """
        A C{LINUX_SLL2} record gives the interface index, the direction and
        the source address.
        """
        packet = frames.ipv4(frames.udp(1, 2), 17)
        data = packSLL2(0x0800, 4, 1, 4, bytes.fromhex("020000000001")) + packet
        summary = decode(data, LINKTYPE_LINUX_SLL2)
        assert (summary.interface_index, summary.direction) == (4, "out")
        assert (summary.eth_src, summary.dst_port) == ("02:00:00:00:00:01", 2)
        assert summary.link == "linux-sll2"

    def test_sll(self) -> None:
        packet = frames.ipv6(frames.udp(1, 2), 17)
        data = struct.pack(">HHH8sH", 0, 772, 6, b"\0" * 8, 0x86DD) + packet
        summary = decode(data, LINKTYPE_LINUX_SLL)
        assert (summary.direction, summary.network, summary.src_port) == ("in", "IPv6", 1)

    def test_raw(self) -> None:
        """
        Raw IP (Windows captures) is told apart by the version nibble.
        """
        assert decode(frames.ipv4(frames.udp(1, 2), 17), LINKTYPE_RAW).network == "IPv4"
        assert decode(frames.ipv6(frames.udp(1, 2), 17), LINKTYPE_RAW).network == "IPv6"
        assert decode(b"\x50" * 30, LINKTYPE_RAW).problem == "not an IP packet (version 5)"
        assert decode(b"", LINKTYPE_RAW).truncated == "ip"

    def test_unknownLinkType(self) -> None:
        assert decode(b"abc", 147).problem == "unknown link type 147"

    def test_directionKept(self) -> None:
        """
        A direction the capture already knew is not replaced.
        """
        data = packSLL2(0x0800, 1, 1, 0) + frames.ipv4(b"", 17)
        summary = decodePacket(LINKTYPE_LINUX_SLL2, data, None, PacketSummary(direction="out"))
        assert summary.direction == "out"


class FuzzTests(SynchronousTestCase):
    """
    No bytes make the decoder raise or reach its last-resort guard.
    """

    def check(self, linktype: int, data: bytes) -> None:
        summary = decodePacket(linktype, data, len(data))
        assert summary.problem is None or not summary.problem.startswith("decoder error"), (
            summary.problem
        )
        describe(summary)
        summary.fields()

    @settings(max_examples=examples(1500), deadline=None)
    @given(
        st.sampled_from([LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2]),
        st.binary(max_size=200),
    )
    def test_randomBytes(self, linktype: int, data: bytes) -> None:
        self.check(linktype, data)

    @settings(max_examples=examples(1500), deadline=None)
    @given(
        st.sampled_from(sorted(REAL)),
        st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=6),
        st.integers(0, 200),
    )
    def test_mutatedRealFrames(self, name: str, changes: list[tuple[int, int]], cut: int) -> None:
        """
        Real frames with bytes changed and cut short: the headers are
        plausible, so the decoder goes deep before meeting the damage.
        """
        frame = bytearray(real(name))
        for position, value in changes:
            if position < len(frame):
                frame[position] = value
        self.check(LINKTYPE_ETHERNET, bytes(frame[: max(len(frame) - cut, 0)]))

    @settings(max_examples=examples(800), deadline=None)
    @given(
        st.sampled_from([0x0800, 0x86DD, 0x0806, 0x8100, 0x88A8]),
        st.sampled_from([0, 1, 6, 17, 43, 44, 50, 51, 58, 59, 60]),
        st.binary(max_size=120),
    )
    def test_plausibleHeaders(self, ethertype: int, protocol: int, tail: bytes) -> None:
        """
        Random bytes behind well-formed outer headers.
        """
        if ethertype == 0x0800:
            body = frames.ipv4(tail, protocol, total=20 + len(tail))
        elif ethertype == 0x86DD:
            body = frames.ipv6(tail, protocol)
        else:
            body = tail
        self.check(LINKTYPE_ETHERNET, frames.ethernet(body, ethertype))
