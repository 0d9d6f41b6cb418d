"""
What every capture source is (L{IPacketSource}), which one this platform
opens, and what importing the sniffer pulls in: nothing of the echo server,
and nothing that exists on Linux only.
"""

from __future__ import annotations

import json
import os
import textwrap
from typing import Any

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from echod.sniff import linux, windows
from echod.sniff.platforms import defaultSystem, openCapture
from echod.sniff.source import CaptureRequest, IPacketSource
from tests.capturetesting import MemoryLinuxSystem, MemoryWindowsSystem
from tests.testing import runPython

# What the sniffer must not import: the echo server (where it was, and the
# package it moves to, with the root service), the metrics (which import
# it), and the epoll reactor the server's fast paths choose.  A package
# stands for its modules.
SERVER_MODULES = (
    "echod.echo",
    "echod.fastpath",
    "echod.limits",
    "echod.service",
    "echod.server",
    "echod.app",
    "echod.metrics",
    "twisted.internet.epollreactor",
)

# Stand-in for Windows on Linux: the platform name, and neither the modules
# nor the names of the standard library that Windows lacks.  What the
# sniffer's own imports need from the standard library and Twisted is
# imported first, as the real platform has it.
WINDOWS = """
import mmap, socket, sys
import asyncio, ctypes.util, subprocess
import twisted.application.service, twisted.internet.abstract, twisted.internet.task
sys.platform = "win32"
for name in ("fcntl", "grp", "pwd", "resource", "termios"):
    sys.modules[name] = None
for name in ("AF_PACKET", "CMSG_LEN", "CMSG_SPACE"):
    vars(socket).pop(name, None)
for name in ("MAP_SHARED", "PROT_READ", "PROT_WRITE"):
    vars(mmap).pop(name, None)
"""


def importing(code: str) -> Any:
    """
    Run C{code} in a fresh interpreter; what it prints, as JSON, is returned.
    """
    done = runPython(["-c", textwrap.dedent(code)])
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


class InterfaceTests(SynchronousTestCase):
    """
    Each source provides L{IPacketSource}.
    """

    def test_linuxRing(self) -> None:
        source = openCapture(CaptureRequest(interface="eth0"), MemoryLinuxSystem())
        self.addCleanup(source.close)
        assert isinstance(source, linux.LinuxRingSource)
        assert verifyObject(IPacketSource, source)

    def test_linuxSocket(self) -> None:
        system = MemoryLinuxSystem()
        system.failures[(linux.SOL_PACKET, linux.PACKET_RX_RING)] = 12
        source = openCapture(CaptureRequest(interface="eth0"), system)
        self.addCleanup(source.close)
        assert isinstance(source, linux.LinuxSocketSource)
        assert verifyObject(IPacketSource, source)

    def test_windows(self) -> None:
        source = openCapture(CaptureRequest(interface="any"), MemoryWindowsSystem())
        self.addCleanup(source.close)
        assert isinstance(source, windows.WindowsSource)
        assert verifyObject(IPacketSource, source)


def test_realSystemPlatform() -> None:
    """
    The default system is the platform's.
    """
    system = defaultSystem()
    expected = windows.WindowsSystem if os.name == "nt" else linux.LinuxSystem
    assert isinstance(system, expected)


def test_noServer() -> None:
    """
    The sniffer's service imports nothing of the echo server, its metrics
    or its reactor.
    """
    loaded = importing(
        f"""
        import json, sys
        import echod.sniff.service
        names = {SERVER_MODULES!r}
        server = [m for m in sys.modules if any(m == n or m.startswith(n + ".") for n in names)]
        print(json.dumps(server))
        """
    )
    assert loaded == []


def test_importsOnWindows() -> None:
    """
    Nothing the sniffer imports needs what Windows lacks; there the default
    system is the Windows one, and a request is checked as Windows allows
    (no filter).
    """
    result = importing(
        WINDOWS
        + """
import json
from echod.config import SniffConfig
from echod.sniff.bpf import FilterError
from echod.sniff.platforms import defaultSystem
from echod.sniff.service import checkSniffing
try:
    checkSniffing(SniffConfig(filter="tcp"), None)
    refused = ""
except FilterError as e:
    refused = str(e)
print(json.dumps({"system": type(defaultSystem()).__name__, "refused": refused}))
"""
    )
    assert result["system"] == "WindowsSystem"
    assert "not available on Windows" in result["refused"]
