"""
Reading a capture of the loopback interface on the real kernel, the same
tests as against the fake system in tests/unit/test_sniff_linux.py: needs
root (skipped elsewhere, required in CI).
"""

from __future__ import annotations

import select
import socket
import time

from twisted.trial.unittest import SynchronousTestCase

from echod.sniff import linux
from echod.sniff.source import IPacketSource
from tests.capturetesting import Collector, ReadingTestsMixin
from tests.environment import requireRoot


class RealReadingTests(ReadingTestsMixin, SynchronousTestCase):
    """
    The same on the real kernel: needs root (skipped elsewhere, required in
    CI).
    """

    def setUp(self) -> None:
        requireRoot()

    def makeSystem(self) -> linux.LinuxSystem:
        return linux.LinuxSystem()

    def send(self, port: int, payload: bytes) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(payload, ("127.0.0.1", port))

    def collect(self, source: IPacketSource, count: int) -> Collector:
        collector = Collector()
        poller = select.poll()
        poller.register(source.fileno(), select.POLLIN)
        deadline = time.monotonic() + 5
        while len(collector.packets) < count and time.monotonic() < deadline:
            poller.poll(100)
            collector.read(source)
        # Anything more would show up within the ring's block timeout.
        time.sleep(0.2)
        collector.read(source)
        return collector
