# -*- test-case-name: tests.unit.test_limits -*-
"""
Peer addresses as echod names them: one identity per client (an IPv4 client
of a dual-stack listener is itself, not C{::ffff:a.b.c.d}), written as
people write them.  Used by the server, the client and the metrics alike.
"""

from __future__ import annotations

import ipaddress

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import IAddress

__all__ = ["IPAddress", "IPNetwork", "describePeer", "peerIP"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def peerIP(address: IAddress | None) -> IPAddress | None:
    """
    The IP address of a peer, with IPv4-mapped IPv6 addresses (what a dual-stack
    C{::} listener reports for IPv4 clients) turned back into IPv4, so that one
    client has one identity in logs, limits and ACLs.  L{None} for peers without
    an IP address (Unix sockets).
    """
    if not isinstance(address, IPv4Address | IPv6Address):
        return None
    try:
        ip = ipaddress.ip_address(address.host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def describePeer(address: IAddress | None) -> str:
    """
    A peer as people write it: C{192.0.2.1:5000}, C{[2001:db8::1]:5000},
    C{unix:/run/echod.sock}.
    """
    ip = peerIP(address)
    if ip is not None and isinstance(address, IPv4Address | IPv6Address):
        if ip.version == 6:
            return f"[{ip}]:{address.port}"
        return f"{ip}:{address.port}"
    if isinstance(address, UNIXAddress):
        name = address.name
        if isinstance(name, bytes):
            name = name.decode("utf-8", "replace")
        return f"unix:{name or '(unnamed)'}"
    return str(address)
