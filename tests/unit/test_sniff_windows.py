"""
The Windows capture (C{SIO_RCVALL}) against a fake Windows socket: opening,
reading, closing, and a capture read by the sniffer service through the
reactor, as C{twistd --reactor=select echod-sniff} reads it on Windows.
"""

from __future__ import annotations

import dataclasses
import errno
import io
import socket

import pytest
from twisted.trial.unittest import SynchronousTestCase

from echod.config import SniffConfig
from echod.sniff import windows
from echod.sniff.bpf import LINKTYPE_RAW, FilterError
from echod.sniff.platforms import checkRequest, openCapture
from echod.sniff.service import SniffService
from echod.sniff.source import CapturePermissionError, CaptureRequest, UnknownInterfaceError
from echod.sniff.windows import WindowsSource
from tests import frames
from tests.capturetesting import Collector, MemoryWindowsSystem, Meta
from tests.reactortesting import EchodMemoryReactor


class WindowsSourceTests(SynchronousTestCase):
    """
    The C{SIO_RCVALL} capture, against a fake Windows socket.
    """

    def setUp(self) -> None:
        self.system = MemoryWindowsSystem()

    def test_setUp(self) -> None:
        """
        A raw IP socket bound to the interface's address, with the IP
        header included and every packet of that interface asked for.
        """
        source = openCapture(CaptureRequest(interface="192.0.2.10"), self.system)
        assert isinstance(source, WindowsSource)
        (sock,) = self.system.sockets
        assert sock.calls == [
            ("socket", socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_IP),
            ("bind", ("192.0.2.10", 0)),
            ("setsockopt", socket.IPPROTO_IP, windows.IP_HDRINCL, 1),
            ("ioctl", windows.SIO_RCVALL, windows.RCVALL_IPLEVEL),
            ("setblocking", False),
        ]
        assert source.info.linktype == LINKTYPE_RAW

    def test_promiscuous(self) -> None:
        openCapture(CaptureRequest(interface="192.0.2.10", promiscuous=True), self.system)
        assert ("ioctl", windows.SIO_RCVALL, windows.RCVALL_ON) in self.system.sockets[0].calls

    def test_any(self) -> None:
        """
        C{any} is the host's own address, as in the seed example.
        """
        source = openCapture(CaptureRequest(interface="any"), self.system)
        assert source.info.interface == "192.0.2.10"

    def test_read(self) -> None:
        """
        Packets are read until the socket would block, truncated to the
        snapshot length, stamped when read.
        """
        source = openCapture(CaptureRequest(interface="any", snaplen=64), self.system)
        sock = self.system.sockets[0]
        packets = [frames.ipv4(frames.udp(1, 2, bytes(100)), 17), frames.ipv4(b"", 1)]
        sock.received.extend(packets)
        collector = Collector()
        assert collector.read(source) == 2
        assert [p[1] for p in collector.packets] == [packets[0][:64], packets[1]]
        assert collector.packets[0][2] == Meta(len(packets[0]), 0, -1)
        assert collector.packets[0][0] < collector.packets[1][0]
        assert source.statistics().received == 2
        assert source.statistics().dropped is None

    def test_filter(self) -> None:
        """
        SIO_RCVALL has no kernel filter: asking for one is an error.
        """
        with pytest.raises(FilterError, match="not available on Windows"):
            openCapture(CaptureRequest(interface="any", filter="tcp"), self.system)
        with pytest.raises(FilterError):
            checkRequest(CaptureRequest(filter="tcp"), self.system)

    def test_permission(self) -> None:
        self.system.openError = errno.EACCES
        with pytest.raises(CapturePermissionError, match="Administrator"):
            openCapture(CaptureRequest(interface="any"), self.system)

    def test_unknownAddress(self) -> None:
        with pytest.raises(UnknownInterfaceError, match=r"192\.0\.2\.99"):
            openCapture(CaptureRequest(interface="192.0.2.99"), self.system)
        assert self.system.sockets[0].closed

    def test_notAnAddress(self) -> None:
        with pytest.raises(UnknownInterfaceError, match="IPv4 address"):
            openCapture(CaptureRequest(interface="eth0"), self.system)

    def test_close(self) -> None:
        """
        Closing turns SIO_RCVALL off first.
        """
        source = openCapture(CaptureRequest(interface="any"), self.system)
        source.close()
        source.close()
        calls = self.system.sockets[0].calls
        assert calls[-2:] == [("ioctl", windows.SIO_RCVALL, windows.RCVALL_OFF), ("close",)]


class WindowsServiceTests(SynchronousTestCase):
    """
    The sniffer service runs a Windows capture as it runs a Linux one: opened
    before privileges are dropped, read when the reactor says the socket is
    readable, written as text.
    """

    def test_readThroughTheReactor(self) -> None:
        system = MemoryWindowsSystem()
        reactor = EchodMemoryReactor()
        stdout = io.BytesIO()
        config = dataclasses.replace(SniffConfig(), interface="192.0.2.10", stats_interval=0.0)
        service = SniffService(config, reactor, stdout, True, system)
        service.privilegedStartService()
        service.startService()
        self.addCleanup(service.stopService)
        assert service.reader in reactor.readers
        (sock,) = system.sockets
        sock.received.extend(
            frames.ipv4(frames.udp(40000, 7007, b"hello"), 17, "192.0.2.1", "192.0.2.10")
            for _ in range(2)
        )
        service.reader.doRead()
        lines = stdout.getvalue().decode().splitlines()
        assert len(lines) == 2
        assert "192.0.2.1.40000 > 192.0.2.10.7007" in lines[0]
