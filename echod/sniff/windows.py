# -*- test-case-name: tests.unit.test_sniff_windows -*-
"""
The Windows capture source: an C{AF_INET} raw socket with C{SIO_RCVALL}
(L{WindowsSource}), which sees the IPv4 packets of one interface at the IP
layer only and has no kernel filter.  The operating-system calls go through
L{WindowsSystem}, so that the logic runs on Linux against a fake one.

Read by the select reactor's C{addReader} (the IOCP reactor has none).
"""

from __future__ import annotations

import contextlib
import errno
import socket
import time
from collections.abc import Callable
from typing import Any, Protocol

from zope.interface import implementer

from echod.sniff.bpf import LINKTYPE_RAW, FilterError
from echod.sniff.source import (
    DIRECTION_UNKNOWN,
    CaptureError,
    CaptureInfo,
    CapturePermissionError,
    CaptureRequest,
    CaptureStatistics,
    Deliver,
    IPacketSource,
    UnknownInterfaceError,
)

__all__ = [
    "IP_HDRINCL",
    "RCVALL_IPLEVEL",
    "RCVALL_OFF",
    "RCVALL_ON",
    "SIO_RCVALL",
    "WindowsSocket",
    "WindowsSource",
    "WindowsSystem",
    "checkWindowsRequest",
]

# <mstcpip.h>, <ws2ipdef.h>
SIO_RCVALL = 0x98000001
RCVALL_OFF = 0
RCVALL_ON = 1
RCVALL_IPLEVEL = 3
IP_HDRINCL = 2

_NS = 1_000_000_000


class WindowsSocket(Protocol):
    """
    The parts of a L{socket.socket} the Windows capture uses.
    """

    def fileno(self) -> int: ...
    def setsockopt(self, level: int, option: int, value: int, /) -> None: ...
    def bind(self, address: tuple[str, int], /) -> None: ...
    def setblocking(self, flag: bool, /) -> None: ...
    def ioctl(self, control: int, option: int, /) -> Any: ...
    def recv(self, bufsize: int, /) -> bytes: ...
    def close(self) -> None: ...


class WindowsSystem:
    """
    The operating-system calls the Windows capture makes (the real ones).
    """

    platform = "win32"

    def openSocket(self, family: int, kind: int, protocol: int) -> WindowsSocket:
        return socket.socket(family, kind, protocol)  # type: ignore[return-value]

    def defaultAddress(self) -> str:
        return socket.gethostbyname(socket.gethostname())

    def nanoseconds(self) -> int:
        return time.time_ns()


def checkWindowsRequest(request: CaptureRequest) -> None:
    """
    What can be checked before opening: there is no filter to compile, and
    none may be asked for.

    @raise FilterError: a filter was asked for.
    """
    if request.filter.strip():
        raise FilterError(
            "filters are not available on Windows (SIO_RCVALL has no kernel "
            "filter); capture without one"
        )


@implementer(IPacketSource)
class WindowsSource:
    """
    C{SIO_RCVALL} on a raw IPv4 socket bound to one interface address: every
    IP packet of that interface, without a link-layer header (C{LINKTYPE_RAW}),
    timestamped when read.  There is no kernel filter and no drop counter.
    """

    method = "SIO_RCVALL"

    def __init__(self, request: CaptureRequest, system: WindowsSystem) -> None:
        checkWindowsRequest(request)
        self._system = system
        self._snaplen = request.snaplen
        self._received = 0
        self._closed = False
        address = request.interface
        if address == "any":
            address = system.defaultAddress()
        try:
            socket.inet_aton(address)
        except OSError:
            raise UnknownInterfaceError(
                f"on Windows the interface is the IPv4 address of one interface, "
                f"not {request.interface!r}"
            ) from None
        self.info = CaptureInfo(address, LINKTYPE_RAW, request.snaplen, {}, self.method)
        try:
            self._socket = system.openSocket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_IP)
        except OSError as e:
            if e.errno in (errno.EACCES, errno.EPERM) or getattr(e, "winerror", 0) == 10013:
                raise CapturePermissionError(
                    f"capturing on {address} needs Administrator rights"
                ) from None
            raise CaptureError(f"cannot capture on {address}: {e}") from None
        try:
            self._socket.bind((address, 0))
            self._socket.setsockopt(socket.IPPROTO_IP, IP_HDRINCL, 1)
            self._socket.ioctl(SIO_RCVALL, RCVALL_ON if request.promiscuous else RCVALL_IPLEVEL)
            self._socket.setblocking(False)
        except OSError as e:
            self._socket.close()
            self._closed = True
            if e.errno == errno.EADDRNOTAVAIL or getattr(e, "winerror", 0) == 10049:
                raise UnknownInterfaceError(f"no interface has the address {address}") from None
            raise CaptureError(f"cannot capture on {address}: {e}") from None

    def fileno(self) -> int:
        return self._socket.fileno()

    def readPackets(self, deliver: Deliver, limit: int, failed: Callable[[], None]) -> int:
        delivered = 0
        while delivered < limit:
            try:
                data = self._socket.recv(65535)
            except (BlockingIOError, InterruptedError):
                break
            delivered += 1
            self._received += 1
            sec, nsec = divmod(self._system.nanoseconds(), _NS)
            try:
                deliver(sec, nsec, data[: self._snaplen], len(data), 0, DIRECTION_UNKNOWN)
            except Exception:
                failed()
        return delivered

    def statistics(self) -> CaptureStatistics:
        return CaptureStatistics(self._received, None)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            self._socket.ioctl(SIO_RCVALL, RCVALL_OFF)
        self._socket.close()
