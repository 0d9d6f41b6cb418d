"""
Tests for L{echod.server.proxyprotocol}.
"""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress

from echod.server.proxyprotocol import V2_SIGNATURE, ProxyHeader, ProxyHeaderError, parseProxyHeader
from tests.testing import proxyV2


def v2ipv4(src: str, dst: str, sport: int, dport: int, tlvs: bytes = b"") -> bytes:
    block = (
        ipaddress.IPv4Address(src).packed
        + ipaddress.IPv4Address(dst).packed
        + struct.pack("!HH", sport, dport)
    )
    return proxyV2(1, 0x11, block, tlvs)


def v2ipv6(src: str, dst: str, sport: int, dport: int) -> bytes:
    block = (
        ipaddress.IPv6Address(src).packed
        + ipaddress.IPv6Address(dst).packed
        + struct.pack("!HH", sport, dport)
    )
    return proxyV2(1, 0x21, block)


VALID = [
    b"PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\n",
    b"PROXY TCP6 2001:db8::1 2001:db8::2 56324 7\r\n",
    b"PROXY UNKNOWN\r\n",
    b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n",
    v2ipv4("192.0.2.1", "198.51.100.1", 56324, 443),
    v2ipv6("2001:db8::1", "2001:db8::2", 1, 7),
    proxyV2(0, 0x00, b""),
    v2ipv4("10.0.0.1", "10.0.0.2", 1, 2, tlvs=b"\x05\x00\x02ab"),
]


class V1Tests:
    def test_tcp4(self) -> None:
        header = parseProxyHeader(VALID[0] + b"hello")
        assert header == ProxyHeader(
            1,
            len(VALID[0]),
            IPv4Address("TCP", "192.0.2.1", 56324),
            IPv4Address("TCP", "198.51.100.1", 443),
        )

    def test_tcp6(self) -> None:
        header = parseProxyHeader(VALID[1])
        assert header is not None
        assert header.source == IPv6Address("TCP", "2001:db8::1", 56324)

    def test_unknown(self) -> None:
        assert parseProxyHeader(VALID[2]) == ProxyHeader(1, len(VALID[2]))
        assert parseProxyHeader(VALID[3]) == ProxyHeader(1, len(VALID[3]))

    @pytest.mark.parametrize(
        "data, problem",
        [
            (b"GET / HTTP/1.1\r\n", "not a PROXY protocol header"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "has 5 fields"),
            (b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", "is not TCP4, TCP6 or UNKNOWN"),
            (b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n", "is not an IPv4 address"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "is not a port number"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", "is not a port number"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "not ended by CRLF"),
            (b"PROXY " + b"x" * 120, "no CRLF within 107 bytes"),
            (b"PROXY TCP4 1.2.3.\xff 5.6.7.8 1 2\r\n", "not ASCII"),
        ],
    )
    def test_invalid(self, data: bytes, problem: str) -> None:
        with pytest.raises(ProxyHeaderError, match=problem):
            parseProxyHeader(data)


class V2Tests:
    def test_ipv4WithTLVs(self) -> None:
        data = VALID[7]
        header = parseProxyHeader(data + b"payload")
        assert header is not None
        assert header.length == len(data)
        assert header.source == IPv4Address("TCP", "10.0.0.1", 1)

    def test_ipv6IsCompressed(self) -> None:
        """
        Twisted's own parser writes v2 IPv6 addresses uncompressed; echod's
        are the usual form, as in its ACLs and logs.
        """
        header = parseProxyHeader(v2ipv6("2001:db8:0:0:0:0:0:1", "::1", 5, 7))
        assert header is not None and header.source is not None
        assert header.source == IPv6Address("TCP", "2001:db8::1", 5)

    def test_local(self) -> None:
        """
        LOCAL (health checks): no address; the connection is the proxy's.
        """
        assert parseProxyHeader(VALID[6]) == ProxyHeader(2, 16)

    def test_unix(self) -> None:
        block = b"/run/a.sock".ljust(108, b"\0") + b"/run/b.sock".ljust(108, b"\0")
        header = parseProxyHeader(proxyV2(1, 0x31, block))
        assert header is not None
        assert header.source == UNIXAddress(b"/run/a.sock")

    def test_unspecifiedFamilyAccepted(self) -> None:
        header = parseProxyHeader(proxyV2(1, 0x00, b"\x01\x02"))
        assert header == ProxyHeader(2, 18)

    @pytest.mark.parametrize(
        "data, problem",
        [
            (V2_SIGNATURE + b"\x11\x11\x00\x00", "version 1 is not 2"),
            (V2_SIGNATURE + b"\x22\x11\x00\x00", "command 2"),
            (proxyV2(1, 0x11, b"\x00" * 8), "IPv4 address block is 8 bytes"),
            (proxyV2(1, 0x21, b"\x00" * 12), "IPv6 address block is 12 bytes"),
        ],
    )
    def test_invalid(self, data: bytes, problem: str) -> None:
        with pytest.raises(ProxyHeaderError, match=problem):
            parseProxyHeader(data)


class StreamTests:
    @pytest.mark.parametrize("header", VALID)
    def test_everyShortPrefixNeedsMore(self, header: bytes) -> None:
        """
        A header split anywhere is not an error: more bytes are awaited.
        """
        for end in range(len(header)):
            assert parseProxyHeader(header[:end]) is None, end
        assert parseProxyHeader(header) is not None

    @given(st.binary(max_size=300))
    def test_garbageOnlyRaisesHeaderErrors(self, data: bytes) -> None:
        try:
            result = parseProxyHeader(data)
        except ProxyHeaderError:
            return
        assert result is None or result.length <= len(data)

    @given(st.sampled_from(VALID), st.binary(max_size=64))
    def test_validHeaderThenAnything(self, header: bytes, rest: bytes) -> None:
        result = parseProxyHeader(header + rest)
        assert result is not None and result.length == len(header)
