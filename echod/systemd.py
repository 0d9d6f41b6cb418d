# -*- test-case-name: tests.unit.test_systemd -*-
"""
What echod needs from systemd: telling it when the service is ready (or
stopping), and the sockets it passed (socket activation).

sd_notify is a datagram to the AF_UNIX socket named by C{$NOTIFY_SOCKET} (an
C{@} prefix means the abstract namespace); nothing is sent when the variable is
absent, so the same code runs under systemd and anywhere else.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

__all__ = ["inheritedSocket", "notify"]


def notify(state: str, environ: Mapping[str, str] | None = None) -> bool:
    """
    Send C{state} (such as C{"READY=1"} or C{"STOPPING=1"}) to systemd.

    @return: whether there was a notification socket to send to.
    """
    address = (os.environ if environ is None else environ).get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        try:
            s.sendto(state.encode("utf-8"), address)
        except OSError:
            return False
    return True


def inheritedSocket(name: str) -> int | None:
    """
    The descriptor systemd passed under C{name} (C{FileDescriptorName=}), or
    L{None}.

    Twisted reads C{LISTEN_FDS}/C{LISTEN_FDNAMES} once, when
    L{twisted.internet.endpoints} is imported, and removes them from the
    environment; its C{systemd:} endpoint parser is what still knows them.
    A stream endpoint is parsed here for its public C{fileno} (nothing is
    adopted: that happens only when it listens), which serves a datagram
    socket as well.
    """
    from twisted.internet.endpoints import serverFromString

    try:
        endpoint = serverFromString(None, f"systemd:domain=INET6:name={name}")
    except (KeyError, IndexError):
        return None
    fileno: int = endpoint.fileno
    return fileno
