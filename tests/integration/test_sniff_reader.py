"""
L{RawReader} on the real reactor and kernel (as root).
"""

from __future__ import annotations

import socket
import time

import pytest_twisted

from echod.sniff.reader import RawReader
from echod.sniff.source import CaptureRequest
from tests.capturetesting import RecordingConsumer
from tests.environment import freePort, requireRoot


async def _realReactor() -> None:
    """
    On the real reactor and kernel, datagrams sent on loopback reach the
    consumer, each once.
    """
    requireRoot()
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    port = freePort(socket.AF_INET, socket.SOCK_DGRAM)
    consumer = RecordingConsumer()
    request = CaptureRequest(interface="lo", filter=f"udp dst port {port}")
    reader = RawReader(request, consumer, reactor)
    reader.startCapturing()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for n in range(3):
                s.sendto(bytes([n]), ("127.0.0.1", port))
        deadline = time.monotonic() + 5
        while len(consumer.packets) < 3 and time.monotonic() < deadline:
            await deferLater(reactor, 0.02, lambda: None)
        await deferLater(reactor, 0.2, lambda: None)
    finally:
        reader.stopCapturing()
    assert [p[1][-1] for p in consumer.packets] == [0, 1, 2]
    assert consumer.flushes >= 1
    assert consumer.stopped == 1


# Applied as a call, not a decorator: pytest_twisted has no types.
test_realReactor = pytest_twisted.ensureDeferred(_realReactor)
