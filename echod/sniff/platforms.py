# -*- test-case-name: tests.unit.test_sniff_source -*-
"""
Which capture source this platform has: L{openCapture} opens a
L{echod.sniff.linux} source on Linux and a L{echod.sniff.windows} one on
Windows, and L{checkRequest} checks a request the same way without opening
anything.  Both take the system object to use, so that tests choose the
platform by handing in a fake one.
"""

from __future__ import annotations

import sys
from typing import TypeAlias

from echod.sniff.linux import LinuxSystem, openLinuxCapture, planCapture
from echod.sniff.source import CaptureRequest, CaptureUnsupportedError, IPacketSource
from echod.sniff.windows import WindowsSource, WindowsSystem, checkWindowsRequest

__all__ = ["CaptureSystem", "checkRequest", "defaultSystem", "openCapture"]

CaptureSystem: TypeAlias = LinuxSystem | WindowsSystem
"""
The operating-system calls of one platform's capture (the real ones, or a
fake one in tests).
"""


def defaultSystem() -> CaptureSystem:
    """
    The real system object for the platform running.
    """
    return WindowsSystem() if sys.platform == "win32" else LinuxSystem()


def _checkSupported(system: LinuxSystem) -> None:
    if not system.platform.startswith("linux"):
        raise CaptureUnsupportedError(
            f"packet capture is supported on Linux and Windows, not {system.platform}"
        )


def checkRequest(request: CaptureRequest, system: CaptureSystem | None = None) -> None:
    """
    Check what can be checked without the privilege to capture: that the
    interface exists and that the filter compiles for it.

    @raise echod.sniff.source.CaptureError: or L{echod.sniff.bpf.FilterError},
        one line each.
    """
    if system is None:
        system = defaultSystem()
    if isinstance(system, WindowsSystem) or system.platform == "win32":
        checkWindowsRequest(request)
        return
    _checkSupported(system)
    planCapture(request, system)


def openCapture(request: CaptureRequest, system: CaptureSystem | None = None) -> IPacketSource:
    """
    Open the capture C{request} describes, the way this platform allows.

    @raise echod.sniff.source.CaptureError: (a L{UserError}) with one line
        saying what is wrong.
    @raise echod.sniff.bpf.FilterError: the filter does not compile or cannot
        run here.
    """
    if system is None:
        system = defaultSystem()
    if isinstance(system, WindowsSystem) or system.platform == "win32":
        return WindowsSource(request, system)  # type: ignore[arg-type]
    _checkSupported(system)
    return openLinuxCapture(request, system)
