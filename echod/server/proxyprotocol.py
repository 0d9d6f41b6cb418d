# -*- test-case-name: tests.unit.test_proxyprotocol -*-
"""
The PROXY protocol (versions 1 and 2), as HAProxy's C{send-proxy} and
C{send-proxy-v2} write it: the header a load balancer puts before the client's
bytes to say who the client really is.

echod reads it itself, inside its echo protocol, instead of through Twisted's
C{haproxy:} wrapper (C{twisted.protocols.haproxy}): that wrapper is a
C{ProtocolWrapper}, so a client's half-close becomes a full close and unsent
echo is lost; a first segment shorter than the header drops the connection
silently; there is no header timeout.  Here, the parser is a pure function
over the bytes received so far: it says "need more", "here is the header and
its length", or why the bytes are not a PROXY header.

Reference: https://www.haproxy.org/download/2.6/doc/proxy-protocol.txt
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress

__all__ = ["MAX_HEADER", "ProxyHeader", "ProxyHeaderError", "parseProxyHeader"]

V1_PREFIX = b"PROXY "
V1_MAX = 107
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED = 16
# v2's length field is 16 bits: a header is never longer than this.
MAX_HEADER = V2_FIXED + 0xFFFF

Address = IPv4Address | IPv6Address | UNIXAddress


class ProxyHeaderError(ValueError):
    """
    The bytes are not a valid PROXY header; the text says what is wrong.
    """


@dataclass(frozen=True)
class ProxyHeader:
    """
    A parsed header.

    @ivar source: the client the proxy serves, or L{None} when the header
        carries no address (v1 C{UNKNOWN}, v2 C{LOCAL} such as a health check,
        or an unsupported family): the connection is then the proxy's own.
    @ivar destination: the address the client connected to, if given.
    @ivar length: how many bytes of the stream the header took.
    """

    version: int
    length: int
    source: Address | None = None
    destination: Address | None = None


def parseProxyHeader(data: bytes) -> ProxyHeader | None:
    """
    Parse the PROXY header at the start of C{data}.

    @return: the header, or L{None} if C{data} is a valid beginning of one
        but too short yet.
    @raise ProxyHeaderError: if C{data} cannot be the start of a header.
    """
    if data[: len(V2_SIGNATURE)] == V2_SIGNATURE[: len(data)]:
        return _parseV2(data)
    if data[: len(V1_PREFIX)] == V1_PREFIX[: len(data)]:
        return _parseV1(data)
    raise ProxyHeaderError("not a PROXY protocol header")


def _parseV1(data: bytes) -> ProxyHeader | None:
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX:
            raise ProxyHeaderError(f"v1 header has no CRLF within {V1_MAX} bytes")
        if b"\n" in data or b"\r" in data[:-1]:
            raise ProxyHeaderError("v1 header line is not ended by CRLF")
        return None
    try:
        line = data[:end].decode("ascii")
    except UnicodeDecodeError:
        raise ProxyHeaderError("v1 header is not ASCII") from None
    fields = line.split(" ")
    length = end + 2
    if len(fields) >= 2 and fields[1] == "UNKNOWN":
        return ProxyHeader(1, length)
    if len(fields) != 6:
        raise ProxyHeaderError(f"v1 header has {len(fields)} fields, expected 6: {line!r}")
    _, protocol, sourceHost, destinationHost, sourcePort, destinationPort = fields
    if protocol not in ("TCP4", "TCP6"):
        raise ProxyHeaderError(f"v1 protocol {protocol!r} is not TCP4, TCP6 or UNKNOWN")
    version = 4 if protocol == "TCP4" else 6
    source = _ipAddress(sourceHost, _port(sourcePort), version)
    destination = _ipAddress(destinationHost, _port(destinationPort), version)
    return ProxyHeader(1, length, source, destination)


def _port(text: str) -> int:
    if not text.isdigit() or (len(text) > 1 and text[0] == "0") or int(text) > 65535:
        raise ProxyHeaderError(f"v1 port {text!r} is not a port number")
    return int(text)


def _ipAddress(text: str, port: int, version: int) -> IPv4Address | IPv6Address:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise ProxyHeaderError(f"{text!r} is not an IP address") from None
    if ip.version != version:
        raise ProxyHeaderError(f"{text!r} is not an IPv{version} address")
    if version == 4:
        return IPv4Address("TCP", str(ip), port)
    return IPv6Address("TCP", str(ip), port)


def _parseV2(data: bytes) -> ProxyHeader | None:
    if len(data) < V2_FIXED:
        return None
    versionCommand, familyProtocol, size = struct.unpack_from("!BBH", data, 12)
    if versionCommand >> 4 != 2:
        raise ProxyHeaderError(f"v2 header version {versionCommand >> 4} is not 2")
    command = versionCommand & 0x0F
    if command not in (0, 1):
        raise ProxyHeaderError(f"v2 command {command} is neither LOCAL (0) nor PROXY (1)")
    length = V2_FIXED + size
    if len(data) < length:
        return None
    if command == 0:
        return ProxyHeader(2, length)
    family, protocol = familyProtocol >> 4, familyProtocol & 0x0F
    block = data[V2_FIXED:length]
    if family == 1 and protocol in (1, 2):
        if size < 12:
            raise ProxyHeaderError(f"v2 IPv4 address block is {size} bytes, expected 12")
        src, dst, sport, dport = struct.unpack_from("!4s4sHH", block)
        return ProxyHeader(
            2,
            length,
            IPv4Address("TCP", str(ipaddress.IPv4Address(src)), sport),
            IPv4Address("TCP", str(ipaddress.IPv4Address(dst)), dport),
        )
    if family == 2 and protocol in (1, 2):
        if size < 36:
            raise ProxyHeaderError(f"v2 IPv6 address block is {size} bytes, expected 36")
        src, dst, sport, dport = struct.unpack_from("!16s16sHH", block)
        # ipaddress writes IPv6 compressed (2001:db8::1), as everything else
        # in echod's logs and ACLs does.
        return ProxyHeader(
            2,
            length,
            IPv6Address("TCP", str(ipaddress.IPv6Address(src)), sport),
            IPv6Address("TCP", str(ipaddress.IPv6Address(dst)), dport),
        )
    if family == 3 and protocol in (1, 2):
        if size < 216:
            raise ProxyHeaderError(f"v2 UNIX address block is {size} bytes, expected 216")
        source = block[:108].split(b"\0", 1)[0]
        destination = block[108:216].split(b"\0", 1)[0]
        return ProxyHeader(2, length, UNIXAddress(source), UNIXAddress(destination))
    # AF_UNSPEC, or a family/protocol this version does not know: the
    # receiver must accept the connection and use the real addresses.
    return ProxyHeader(2, length)
