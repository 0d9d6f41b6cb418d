"""
The text sink's tcpdump options: the dumps (against literal ports of
tcpdump 4.99.3's C{print-ascii.c} loops and against lines tcpdump printed),
the timestamps, the interface words, which bytes are dumped, and the
styles' validation.  tests/e2e/test_sniff_text.py compares whole outputs
with tcpdump itself.
"""

# ruff: noqa: UP031
from __future__ import annotations

import io
import time
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from zope.interface.verify import verifyObject

from echod.sniff.bpf import LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL2
from echod.sniff.decode import PacketSummary, decodePacket
from echod.sniff.reader import IPacketConsumer
from echod.sniff.sinks import RotatingOutput, SummarySink
from echod.sniff.source import PACKET_HOST, PACKET_OUTGOING, CaptureInfo
from echod.sniff.text import (
    DUMPS,
    TCPDUMP_TIMESTAMPS,
    TIMESTAMPS,
    TextFormatter,
    TextStyle,
    asciiDump,
    hexAsciiDump,
    hexDump,
)
from tests import frames
from tests.classicbpf import packSLL2
from tests.testing import examples

ETHERNET = CaptureInfo("eth0", LINKTYPE_ETHERNET, 65535, {2: "eth0"}, "test")
ANY = CaptureInfo("any", LINKTYPE_LINUX_SLL2, 65535, {1: "lo", 7: "veth-long"}, "test")
SECOND = 1_700_000_000  # 2023-11-14 22:13:20 UTC
STAMP = SECOND * 10**9 + 123_456_789


# Literal ports of tcpdump 4.99.3's print-ascii.c, loop for loop (printf
# formats included, hence the % formatting), as the reference for any bytes.


def _isgraph(c: int) -> bool:
    return 0x20 < c <= 0x7E


def referenceHexAscii(data: bytes) -> str:
    out: list[str] = []
    hexstuff, asciistuff = "", ""
    i = 0
    oset = 0
    position = 0
    for _ in range(len(data) // 2):
        s1, s2 = data[position], data[position + 1]
        position += 2
        hexstuff += " %02x%02x" % (s1, s2)
        asciistuff += (chr(s1) if _isgraph(s1) else ".") + (chr(s2) if _isgraph(s2) else ".")
        i += 1
        if i >= 8:
            out.append("%s0x%04x: %-*s  %s" % ("\n\t", oset, 40, hexstuff, asciistuff))
            i, hexstuff, asciistuff = 0, "", ""
            oset += 16
    if len(data) & 1:
        s1 = data[position]
        hexstuff += " %02x" % s1
        asciistuff += chr(s1) if _isgraph(s1) else "."
        i += 1
    if i > 0:
        out.append("%s0x%04x: %-*s  %s" % ("\n\t", oset, 40, hexstuff, asciistuff))
    return "".join(out)


def referenceHex(data: bytes) -> str:
    out: list[str] = []
    i = 0
    oset = 0
    position = 0
    for _ in range(len(data) // 2):
        if i % 8 == 0:
            out.append("%s0x%04x: " % ("\n\t", oset))
            oset += 16
        i += 1
        out.append(" %02x%02x" % (data[position], data[position + 1]))
        position += 2
    if len(data) & 1:
        if i % 8 == 0:
            out.append("%s0x%04x: " % ("\n\t", oset))
        out.append(" %02x" % data[position])
    return "".join(out)


def referenceAscii(data: bytes) -> str:
    out = ["\n"]
    length = len(data)
    position = 0
    while length > 0:
        s = data[position]
        position += 1
        length -= 1
        if s == 0x0D:
            if length > 1 and data[position] != 0x0A:
                out.append(".")
        elif not _isgraph(s) and s not in (0x09, 0x20, 0x0A):
            out.append(".")
        else:
            out.append(chr(s))
    return "".join(out)


class DumpTests:
    """
    C{-X}, C{-x} and C{-A} as tcpdump lays them out.
    """

    def test_printedByTcpdump(self) -> None:
        """
        The lines tcpdump 4.99.3 printed for an IPv4 TCP segment of 45
        bytes (an odd length: the last line ends in one byte).
        """
        segment = frames.tcp(40000, 7, 0x18, seq=1, ack=2, payload=b"hello")
        packet = frames.ipv4(segment, 6, "127.0.0.1", "127.0.0.1")
        assert hexAsciiDump(packet) == (
            "\n\t0x0000:  4500 002d 0001 0000 4006 0000 7f00 0001  E..-....@......."
            "\n\t0x0010:  7f00 0001 9c40 0007 0000 0001 0000 0002  .....@.........."
            "\n\t0x0020:  5018 ffff 0000 0000 6865 6c6c 6f         P.......hello"
        )
        assert hexDump(packet) == (
            "\n\t0x0000:  4500 002d 0001 0000 4006 0000 7f00 0001"
            "\n\t0x0010:  7f00 0001 9c40 0007 0000 0001 0000 0002"
            "\n\t0x0020:  5018 ffff 0000 0000 6865 6c6c 6f"
        )
        assert asciiDump(packet) == "\nE..-....@............@..........P.......hello"

    def test_empty(self) -> None:
        assert (hexAsciiDump(b""), hexDump(b""), asciiDump(b"")) == ("", "", "\n")

    def test_oneByte(self) -> None:
        assert hexAsciiDump(b"A") == "\n\t0x0000:  41" + " " * 37 + "  A"
        assert hexDump(b"A") == "\n\t0x0000:  41"

    def test_sixteenAndSeventeen(self) -> None:
        """
        Exactly 16 bytes fill one line; the 17th starts the next at 0x0010.
        """
        sixteen = bytes(range(0x40, 0x50))
        line = "\n\t0x0000:  4041 4243 4445 4647 4849 4a4b 4c4d 4e4f  @ABCDEFGHIJKLMNO"
        assert hexAsciiDump(sixteen) == line
        assert hexAsciiDump(sixteen + b"~") == line + "\n\t0x0010:  7e" + " " * 37 + "  ~"
        assert hexDump(sixteen + b"~").endswith("4e4f\n\t0x0010:  7e")

    def test_nonPrintables(self) -> None:
        """
        Only 0x21-0x7e print as themselves in C{-X}: space, tab, DEL and
        bytes above 0x7f are dots.
        """
        assert hexAsciiDump(b" \t\x7f\x80\xff!~") == (
            "\n\t0x0000:  2009 7f80 ff21 7e" + " " * 22 + "  .....!~"
        )

    def test_offsetsPastFourDigits(self) -> None:
        data = bytes(0x10010)
        assert hexAsciiDump(data).split("\n\t")[-1].startswith("0x10000:  0000")
        assert hexDump(data).split("\n\t")[-1].startswith("0x10000:  0000")

    def test_asciiKeepsTabSpaceNewline(self) -> None:
        assert asciiDump(b"a\tb c\nd\x00\x7f\xe9") == "\na\tb c\nd..."

    def test_carriageReturns(self) -> None:
        """
        -A drops a CR before LF and in the last two bytes; elsewhere it is a
        dot.
        """
        assert asciiDump(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") == "\nGET / HTTP/1.1\nHost: x\n\n"
        assert asciiDump(b"a\rbc") == "\na.bc"
        assert asciiDump(b"a\rb") == "\nab"
        assert asciiDump(b"ab\r") == "\nab"
        assert asciiDump(b"\r\r\r\r") == "\n.."
        assert asciiDump(b"\r") == "\n"

    @given(st.binary(max_size=100))
    @settings(max_examples=examples(300))
    def test_sameAsTcpdumpsLoops(self, data: bytes) -> None:
        """
        For any bytes, the same text as the loops of tcpdump's
        C{hex_and_ascii_print_with_offset}, C{hex_print_with_offset} and
        C{ascii_print}.
        """
        assert hexAsciiDump(data) == referenceHexAscii(data)
        assert hexDump(data) == referenceHex(data)
        assert asciiDump(data) == referenceAscii(data)

    @given(st.lists(st.sampled_from(b"\r\n\ta \x00"), max_size=12).map(bytes))
    @settings(max_examples=examples(300))
    def test_carriageReturnsAsTcpdump(self, data: bytes) -> None:
        assert asciiDump(data) == referenceAscii(data)


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def formatter(**fields: object) -> TextFormatter:
    return TextFormatter(TextStyle(**fields))  # type: ignore[arg-type]


def stamps(formatter: TextFormatter, *nanoseconds: int) -> list[str]:
    return [formatter.timestamp(value) for value in nanoseconds]


class TimestampsTests:
    def test_default(self, utc: None) -> None:
        """
        Local time of day, microseconds cut (not rounded) from nanoseconds.
        """
        assert stamps(formatter(), STAMP, STAMP + 10**9) == ["22:13:20.123456", "22:13:21.123456"]

    def test_nanoseconds(self, utc: None) -> None:
        assert formatter(nanoseconds=True).timestamp(STAMP) == "22:13:20.123456789"

    def test_localTime(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("TZ", "Asia/Kolkata")
        time.tzset()
        try:
            assert formatter().timestamp(STAMP) == "03:43:20.123456"
        finally:
            monkeypatch.undo()
            time.tzset()

    def test_none(self) -> None:
        assert formatter(timestamps="none").timestamp(STAMP) == ""

    def test_epoch(self) -> None:
        assert formatter(timestamps="epoch").timestamp(STAMP) == "1700000000.123456"
        assert formatter(timestamps="epoch", nanoseconds=True).timestamp(5) == "0.000000005"

    def test_date(self, utc: None) -> None:
        assert formatter(timestamps="date").timestamp(STAMP) == "2023-11-14 22:13:20.123456"

    def test_delta(self) -> None:
        """
        -ttt: since the previous packet, a space (or a minus going back)
        first, hours wrapping at a day.
        """
        text = formatter(timestamps="delta")
        assert stamps(text, STAMP, STAMP + 1_001_000_000, STAMP, STAMP + 90_000 * 10**9) == [
            " 00:00:00.000000",
            " 00:00:01.001000",
            "-00:00:01.001000",
            " 01:00:00.000000",
        ]

    def test_deltaOfMicroseconds(self) -> None:
        """
        Like tcpdump, the difference of the microseconds the packets have,
        not of their nanoseconds.
        """
        text = formatter(timestamps="delta")
        assert stamps(text, STAMP, STAMP + 1_000_000_999)[1] == " 00:00:01.000001"

    def test_deltaNanoseconds(self) -> None:
        text = formatter(timestamps="delta", nanoseconds=True)
        assert stamps(text, STAMP, STAMP + 1) == [" 00:00:00.000000000", " 00:00:00.000000001"]

    def test_sinceFirst(self) -> None:
        text = formatter(timestamps="since-first")
        assert stamps(text, STAMP, STAMP + 10**9, STAMP + 3 * 10**9) == [
            " 00:00:00.000000",
            " 00:00:01.000000",
            " 00:00:03.000000",
        ]

    def test_tcpdumpCounts(self) -> None:
        """
        The style for tcpdump's number of -t.
        """
        assert TCPDUMP_TIMESTAMPS == ("time", "none", "epoch", "delta", "date", "since-first")


class StyleTests:
    def test_default(self) -> None:
        style = TextStyle()
        assert (style.timestamps, style.dump, style.tcpdumpLayout) == ("time", "", False)
        assert not (style.linkHeader or style.quiet or style.verbose or style.nanoseconds)

    def test_unknownTimestamps(self) -> None:
        with pytest.raises(ValueError, match="unknown timestamp style 'tai'"):
            TextStyle(timestamps="tai")

    def test_unknownDump(self) -> None:
        with pytest.raises(ValueError, match="unknown dump 'octal'"):
            TextStyle(dump="octal")

    def test_frozen(self) -> None:
        with pytest.raises(AttributeError):
            TextStyle().quiet = True  # type: ignore[misc]

    def test_fromTcpdumpFlags(self) -> None:
        """
        tcpdump's options by count: -X over -x over -A, doubled for the
        whole frame; -t counts pick the timestamps.
        """
        style = TextStyle.fromTcpdumpFlags(t=3, x=1, X=2, A=1, e=True, q=True, v=True, nano=True)
        assert style == TextStyle(
            timestamps="delta",
            nanoseconds=True,
            dump="hex-ascii",
            dumpLinkHeader=True,
            linkHeader=True,
            quiet=True,
            verbose=True,
            tcpdumpLayout=True,
        )
        assert TextStyle.fromTcpdumpFlags(x=1, A=2).dump == "hex"
        assert TextStyle.fromTcpdumpFlags(A=1).dump == "ascii"
        assert TextStyle.fromTcpdumpFlags() == TextStyle(tcpdumpLayout=True)

    def test_tooManyTs(self) -> None:
        with pytest.raises(ValueError, match="only -t, -tt, -ttt, -tttt and -ttttt are supported"):
            TextStyle.fromTcpdumpFlags(t=6)

    def test_vocabulary(self) -> None:
        assert set(TCPDUMP_TIMESTAMPS) == set(TIMESTAMPS)
        assert DUMPS == ("", "hex", "hex-ascii", "ascii")


def summaryOf(
    info: CaptureInfo, data: bytes, index: int = 0, direction: int = 0, verbose: bool = False
) -> PacketSummary:
    summary = PacketSummary(
        time=STAMP,
        interface=info.interfaceName(index),
        direction={PACKET_HOST: "in", PACKET_OUTGOING: "out"}.get(direction),
    )
    return decodePacket(info.linktype, data, len(data), summary, checksums=verbose)


UDP = frames.ipv4(frames.udp(40000, 7, b"hello"), 17, "127.0.0.1", "127.0.0.1")
ETHERNET_UDP = frames.ethernet(UDP)


class LayoutTests:
    def test_ethernetHasNoInterfaceWords(self, utc: None) -> None:
        """
        tcpdump prints no interface or direction for one Ethernet interface.
        """
        text = formatter(tcpdumpLayout=True)
        line = text.format(summaryOf(ETHERNET, ETHERNET_UDP, 2, PACKET_OUTGOING), ETHERNET_UDP)
        assert line == "22:13:20.123456 IP 127.0.0.1.40000 > 127.0.0.1.7: UDP, length 5"

    def test_echodsOwnLine(self, utc: None) -> None:
        """
        Without the tcpdump layout: time, interface, direction, packet (the
        twistd plugin's line), VLAN tags included.
        """
        tagged = frames.ethernet(frames.vlan(UDP, 10, frames.ETH_IPV4, 3), 0x8100)
        line = formatter().format(summaryOf(ETHERNET, tagged, 2, PACKET_OUTGOING), tagged)
        assert line == (
            "22:13:20.123456 eth0 Out vlan 10, p 3, IP 127.0.0.1.40000 > 127.0.0.1.7: UDP, length 5"
        )
        line = formatter(tcpdumpLayout=True).format(summaryOf(ETHERNET, tagged), tagged)
        assert line == "22:13:20.123456 IP 127.0.0.1.40000 > 127.0.0.1.7: UDP, length 5"

    def test_anyInterfaceWords(self, utc: None) -> None:
        """
        For -i any (LINUX_SLL2), the interface padded to 5 and the direction
        to 3, as tcpdump's C{"%-5s %-3s "}; longer names are not cut.
        """
        text = formatter(tcpdumpLayout=True, timestamps="none")
        cooked = packSLL2(frames.ETH_IPV4, 1, 772, PACKET_HOST) + UDP
        line = text.format(summaryOf(ANY, cooked, 1, PACKET_HOST), cooked)
        assert line == "lo    In  IP 127.0.0.1.40000 > 127.0.0.1.7: UDP, length 5"
        cooked = packSLL2(frames.ETH_IPV4, 7, 772, PACKET_OUTGOING) + UDP
        line = text.format(summaryOf(ANY, cooked, 7, PACKET_OUTGOING), cooked)
        assert line.startswith("veth-long Out IP ")

    def test_unknownDirection(self) -> None:
        text = formatter(tcpdumpLayout=True, timestamps="none")
        cooked = packSLL2(frames.ETH_IPV4, 1, 772, 9) + UDP
        assert text.format(summaryOf(ANY, cooked, 1, 9), cooked).startswith("lo    ?   IP ")


class DumpedBytesTests:
    """
    Which bytes -X/-x/-A dump: from the network layer, or the whole frame
    with -XX/-xx/-AA.
    """

    def dump(self, info: CaptureInfo, data: bytes, **fields: object) -> str:
        text = formatter(tcpdumpLayout=True, timestamps="none", **fields)
        line = text.format(summaryOf(info, data), data)
        return line[line.index("\n") :] if "\n" in line else ""

    def test_skipsTheEthernetHeader(self) -> None:
        assert self.dump(ETHERNET, ETHERNET_UDP, dump="hex-ascii") == hexAsciiDump(UDP)
        assert self.dump(ETHERNET, ETHERNET_UDP, dump="hex") == hexDump(UDP)
        assert self.dump(ETHERNET, ETHERNET_UDP, dump="ascii") == asciiDump(UDP)

    def test_skipsVlanTags(self) -> None:
        tagged = frames.ethernet(frames.vlan(UDP, 10, frames.ETH_IPV4), 0x8100)
        assert self.dump(ETHERNET, tagged, dump="hex") == hexDump(UDP)

    def test_skipsTheCookedHeader(self) -> None:
        cooked = packSLL2(frames.ETH_IPV4, 1, 772, PACKET_HOST) + UDP
        assert self.dump(ANY, cooked, dump="hex-ascii") == hexAsciiDump(UDP)

    def test_wholeFrame(self) -> None:
        dump = self.dump(ETHERNET, ETHERNET_UDP, dump="hex-ascii", dumpLinkHeader=True)
        assert dump == hexAsciiDump(ETHERNET_UDP)
        dump = self.dump(ETHERNET, ETHERNET_UDP, dump="ascii", dumpLinkHeader=True)
        assert dump == asciiDump(ETHERNET_UDP)

    def test_nothingPastTheLinkHeader(self) -> None:
        """
        A frame cut inside its link-level header: nothing dumped, but -XX
        still dumps it.
        """
        header = ETHERNET_UDP[:9]
        assert self.dump(ETHERNET, header, dump="hex-ascii") == ""
        assert self.dump(ETHERNET, header, dump="ascii") == ""
        assert self.dump(ETHERNET, header, dump="hex", dumpLinkHeader=True) == hexDump(header)

    def test_printerGaveUp(self) -> None:
        """
        Where tcpdump's printer stops at a read past the capture's end
        (here the IPv4 version of a frame that ends after its Ethernet
        header), tcpdump dumps the whole frame.
        """
        header = ETHERNET_UDP[:14]
        assert self.dump(ETHERNET, header, dump="hex-ascii") == hexAsciiDump(header)

    def test_noDump(self) -> None:
        assert self.dump(ETHERNET, ETHERNET_UDP) == ""


class SinkTests:
    def sink(
        self, style: TextStyle, info: CaptureInfo = ETHERNET
    ) -> tuple[SummarySink, io.BytesIO]:
        stream = io.BytesIO()
        sink = SummarySink(RotatingOutput("-", stdout=stream), "text", style)
        sink.captureStarted(info)
        return sink, stream

    def test_interface(self) -> None:
        assert verifyObject(IPacketConsumer, self.sink(TextStyle())[0])

    def test_dumpAfterTheLine(self, utc: None) -> None:
        sink, stream = self.sink(TextStyle(tcpdumpLayout=True, dump="hex"))
        sink.packetReceived(SECOND, 123_456_789, ETHERNET_UDP, len(ETHERNET_UDP), 2, 0)
        sink.flush()
        assert stream.getvalue().decode() == (
            "22:13:20.123456 IP 127.0.0.1.40000 > 127.0.0.1.7: UDP, length 5" + hexDump(UDP) + "\n"
        )

    def test_verboseChecksChecksums(self) -> None:
        """
        With -v the sink has the checksums checked: a zero TCP checksum is
        reported with what it should be.
        """
        segment = frames.tcp(40000, 7, 0x02, seq=1)
        frame = frames.ethernet(frames.ipv4(segment, 6, "127.0.0.1", "127.0.0.1"))
        sink, stream = self.sink(TextStyle(tcpdumpLayout=True, verbose=True, timestamps="none"))
        sink.packetReceived(SECOND, 0, frame, len(frame), 2, 0)
        sink.flush()
        first, second = stream.getvalue().decode().splitlines()
        assert first == (
            "IP (tos 0x0, ttl 64, id 1, offset 0, flags [none], proto TCP (6), length 40,"
            " bad cksum 0 (->7ccd)!)"
        )
        # As tcpdump -v printed them for this frame.
        assert second == (
            "    127.0.0.1.40000 > 127.0.0.1.7: Flags [S], cksum 0x0000 (incorrect -> 0x1598),"
            " seq 1, win 65535, length 0"
        )

    def test_jsonIgnoresTheStyle(self) -> None:
        stream = io.BytesIO()
        sink = SummarySink(RotatingOutput("-", stdout=stream), "json", TextStyle(dump="hex"))
        sink.captureStarted(ETHERNET)
        sink.packetReceived(SECOND, 0, ETHERNET_UDP, len(ETHERNET_UDP), 2, 0)
        sink.flush()
        (line,) = stream.getvalue().decode().splitlines()
        assert line.startswith('{"time": "2023-11-14T22:13:20.000000Z"')
        assert "0x0000" not in line


class FuzzTests:
    @given(
        st.sampled_from([1, 101, 113, 276]),
        st.one_of(
            st.binary(max_size=120),
            st.builds(
                lambda body, protocol: frames.ethernet(frames.ipv4(body, protocol)),
                st.binary(max_size=80),
                st.sampled_from([1, 6, 17]),
            ),
            st.builds(
                lambda body, protocol: frames.ethernet(frames.ipv6(body, protocol), 0x86DD),
                st.binary(max_size=80),
                st.sampled_from([0, 6, 17, 44, 58, 60]),
            ),
        ),
        st.fixed_dictionaries(
            {
                "linkHeader": st.booleans(),
                "quiet": st.booleans(),
                "verbose": st.booleans(),
                "tcpdumpLayout": st.booleans(),
                "dump": st.sampled_from(DUMPS),
                "dumpLinkHeader": st.booleans(),
                "timestamps": st.sampled_from(TIMESTAMPS),
            }
        ),
    )
    @settings(max_examples=examples(500))
    def test_anyBytesAnyStyle(self, linktype: int, data: bytes, fields: dict[str, object]) -> None:
        """
        Any bytes in any style give text, never an exception or a decoder
        error, and the dump covers only captured bytes.
        """
        info = CaptureInfo("any", linktype, 65535, {}, "test")
        style = TextStyle(**fields)  # type: ignore[arg-type]
        summary = summaryOf(info, data, verbose=style.verbose)
        assert not (summary.problem or "").startswith("decoder error"), summary.problem
        line = TextFormatter(style).format(summary, data)
        assert isinstance(line, str) and line
        assert 0 <= summary.link_length <= len(data)
