"""
Filters compiled by libpcap and rewritten for Linux sockets, checked by
what the programs do to known packets (run by tests/classicbpf.py); the
kernel runs them in tests/integration/test_sniff_bpf.py.
"""

from __future__ import annotations

import pytest
from twisted.trial.unittest import SynchronousTestCase

from echod.sniff import bpf
from echod.sniff.bpf import (
    LINKTYPE_ETHERNET,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_RAW,
    FilterError,
    FilterProgram,
)
from tests import frames
from tests.classicbpf import (
    ANCILLARY_IFINDEX,
    ANCILLARY_PKTTYPE,
    ANCILLARY_PROTOCOL,
    packSLL2,
    run,
)
from tests.environment import need


def _library() -> bpf.PcapLibrary:
    try:
        return bpf.loadLibrary()
    except FilterError:
        need(False, "libpcap (libpcap0.8) is not installed")
        raise


def tcpFrame(dport: int, sport: int = 40000) -> bytes:
    return frames.ethernet(frames.ipv4(frames.tcp(sport, dport, 0x02), 6))


def udpFrame(dport: int) -> bytes:
    return frames.ethernet(frames.ipv4(frames.udp(5000, dport, b"hello"), 17))


def udp6Frame(dport: int) -> bytes:
    return frames.ethernet(frames.ipv6(frames.udp(5000, dport, b"hi"), 17), frames.ETH_IPV6)


class CompileTests(SynchronousTestCase):
    def test_matches(self) -> None:
        """
        A compiled expression keeps the snapshot length of the packets it
        matches and drops the others.
        """
        program = bpf.compileFilter("tcp port 7007", LINKTYPE_ETHERNET, 1500, _library())
        assert run(program.instructions, tcpFrame(7007)) == 1500
        assert run(program.instructions, tcpFrame(7008)) == 0
        assert run(program.instructions, udpFrame(7007)) == 0

    def test_ipv6(self) -> None:
        """
        The program knows both address families, as tcpdump's does.
        """
        program = bpf.compileFilter("udp port 53", LINKTYPE_ETHERNET, 96, _library())
        assert run(program.instructions, udp6Frame(53)) == 96
        assert run(program.instructions, udp6Frame(54)) == 0

    def test_rawLinkType(self) -> None:
        """
        For raw IP packets the program reads the IP header at offset 0.
        """
        program = bpf.compileFilter("udp", LINKTYPE_RAW, 200, _library())
        packet = frames.ipv4(frames.udp(1, 2), 17)
        assert run(program.instructions, packet) == 200

    def test_empty(self) -> None:
        """
        The empty expression keeps everything and needs no library.
        """

        class NoLibrary:
            def __getattr__(self, name: str) -> object:
                raise AssertionError("libpcap was used")

        program = bpf.compileFilter("  ", LINKTYPE_ETHERNET, 300, NoLibrary())
        assert program.instructions == ((0x06, 0, 0, 300),)

    def test_unknownPort(self) -> None:
        """
        A bad expression raises L{FilterError} with libpcap's own message.
        """
        with pytest.raises(FilterError) as caught:
            bpf.compileFilter("tcp port sevenn", LINKTYPE_ETHERNET, 100, _library())
        assert str(caught.value) == "bad filter 'tcp port sevenn': unknown port 'sevenn'"

    def test_syntaxError(self) -> None:
        """
        A syntax error is reported as libpcap words it.
        """
        with pytest.raises(FilterError, match="syntax error"):
            bpf.compileFilter("tcp port", LINKTYPE_ETHERNET, 100, _library())

    def test_linkAddressesOnAny(self) -> None:
        """
        On C{any} (a cooked capture) libpcap refuses link-layer addresses;
        its message is followed by why, and what to do instead.
        """
        with pytest.raises(FilterError) as caught:
            bpf.compileFilter(
                "ether host 00:11:22:33:44:55", LINKTYPE_LINUX_SLL2, 100, _library(), "any"
            )
        assert str(caught.value) == (
            "bad filter 'ether host 00:11:22:33:44:55' on interface any: ethernet addresses "
            "supported only on ethernet/FDDI/token ring/802.11/ATM LANE/Fibre Channel "
            "(interface any has no link-layer addresses: capture on one interface, "
            "such as -i eth0)"
        )

    def test_vlanOnAny(self) -> None:
        with pytest.raises(FilterError) as caught:
            bpf.compileFilter("vlan", LINKTYPE_LINUX_SLL2, 100, _library(), "any")
        assert str(caught.value).endswith(
            "(interface any has no link-layer header: capture on one interface, such as -i eth0)"
        )

    def test_linkAddressesOnAnotherCookedInterface(self) -> None:
        """
        A cooked interface of its own (a tunnel) has no addresses either;
        capturing on one interface is no advice there.
        """
        with pytest.raises(FilterError) as caught:
            bpf.compileFilter("ether broadcast", LINKTYPE_LINUX_SLL2, 100, _library(), "tun0")
        assert str(caught.value) == (
            "bad filter 'ether broadcast' on interface tun0: not a broadcast link "
            "(interface tun0 has no link-layer addresses)"
        )

    def test_otherMistakesOnAny(self) -> None:
        """
        A mistake that is not the link type's is libpcap's message alone.
        """
        with pytest.raises(FilterError) as caught:
            bpf.compileFilter("tcp port sevenn", LINKTYPE_LINUX_SLL2, 100, _library(), "any")
        assert str(caught.value) == "bad filter 'tcp port sevenn': unknown port 'sevenn'"

    def test_nul(self) -> None:
        """
        An expression with a NUL character is refused before libpcap sees it.
        """
        with pytest.raises(FilterError, match="NUL"):
            bpf.compileFilter("tcp\0", LINKTYPE_ETHERNET, 100, _library())

    def test_pack(self) -> None:
        """
        Instructions pack as C{struct sock_filter}: 8 bytes each, host order.
        """
        program = FilterProgram(((0x06, 1, 2, 0x01020304),))
        assert program.pack() == bytes([6, 0, 1, 2]) + (0x01020304).to_bytes(4, "little")


class CookedTests(SynchronousTestCase):
    """
    L{bpf.forCookedSocket} gives the same verdicts on a packet without its
    C{LINUX_SLL2} header as the original program gives on the whole packet.
    """

    def verdicts(self, expression: str, packet: bytes, pkttype: int = 0) -> tuple[int, int]:
        program = bpf.compileFilter(expression, LINKTYPE_LINUX_SLL2, 1000, _library())
        cooked = bpf.forCookedSocket(program)
        ethertype = frames.ETH_IPV6 if packet[0] >> 4 == 6 else frames.ETH_IPV4
        whole = packSLL2(ethertype, 3, 1, pkttype) + packet
        ancillary = {
            ANCILLARY_PROTOCOL: ethertype,
            ANCILLARY_PKTTYPE: pkttype,
            ANCILLARY_IFINDEX: 3,
        }
        return run(program.instructions, whole), run(cooked.instructions, packet, ancillary)

    def test_ports(self) -> None:
        packet = frames.ipv4(frames.tcp(1, 7007, 0x02), 6)
        original, cooked = self.verdicts("tcp port 7007", packet)
        assert original == 1000
        assert cooked == 1000 - 20
        assert self.verdicts("tcp port 80", packet) == (0, 0)

    def test_ipv6(self) -> None:
        packet = frames.ipv6(frames.udp(1, 53), 17)
        assert self.verdicts("ip6 and udp port 53", packet)[1] > 0
        assert self.verdicts("ip and udp port 53", packet) == (0, 0)

    def test_direction(self) -> None:
        """
        Tests of the packet type become ancillary loads.
        """
        packet = frames.ipv4(frames.udp(1, 2), 17)
        assert self.verdicts("inbound", packet, pkttype=0)[1] > 0
        assert self.verdicts("inbound", packet, pkttype=4)[1] == 0

    def test_linkAddresses(self) -> None:
        """
        An expression that tests link-layer addresses cannot run in the
        kernel on a cooked socket: L{FilterError} says so.
        """
        with pytest.raises(FilterError):
            program = bpf.compileFilter(
                "ether src 02:00:00:00:00:01", LINKTYPE_LINUX_SLL2, 100, _library()
            )
            bpf.forCookedSocket(program)


class LoopbackTests(SynchronousTestCase):
    """
    L{bpf.dropLoopbackOutgoing} drops what the host sends on a loopback
    interface, and leaves every other verdict to the program.
    """

    def program(self) -> FilterProgram:
        inner = bpf.compileFilter("udp port 9", LINKTYPE_LINUX_SLL2, 500, _library())
        return bpf.dropLoopbackOutgoing(bpf.forCookedSocket(inner), [1, 7])

    def verdict(self, ifindex: int, pkttype: int, dport: int = 9) -> int:
        packet = frames.ipv4(frames.udp(1, dport), 17)
        ancillary = {
            ANCILLARY_PROTOCOL: frames.ETH_IPV4,
            ANCILLARY_PKTTYPE: pkttype,
            ANCILLARY_IFINDEX: ifindex,
        }
        return run(self.program().instructions, packet, ancillary)

    def test_outgoingOnLoopback(self) -> None:
        assert self.verdict(ifindex=1, pkttype=4) == 0
        assert self.verdict(ifindex=7, pkttype=4) == 0

    def test_incomingOnLoopback(self) -> None:
        assert self.verdict(ifindex=1, pkttype=0) == 480

    def test_outgoingElsewhere(self) -> None:
        assert self.verdict(ifindex=2, pkttype=4) == 480

    def test_programStillFilters(self) -> None:
        assert self.verdict(ifindex=2, pkttype=0, dport=10) == 0

    def test_noLoopback(self) -> None:
        """
        Without loopback interfaces the program is unchanged.
        """
        program = bpf.acceptAll(10)
        assert bpf.dropLoopbackOutgoing(program, []) is program
