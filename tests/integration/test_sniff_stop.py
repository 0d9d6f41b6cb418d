"""
Stopping a capture on the real kernel and reactor loses none of the packets
that came before the stop, not even those of the ring block the kernel was
still filling (it hands a block over when full or after its retire
timeout): needs root (skipped elsewhere, required in CI).
"""

from __future__ import annotations

import dataclasses
import socket
import struct
from pathlib import Path

import pytest
import pytest_twisted

from echod.config import SniffConfig
from echod.sniff import linux
from echod.sniff.service import SniffService
from tests.environment import freePort, need, requireRoot


def pcapPayloads(path: Path) -> list[bytes]:
    """
    The last byte of each record of a pcap file (what the test sent).
    """
    data = path.read_bytes()
    offset, payloads = 24, []
    while offset + 16 <= len(data):
        caplen = struct.unpack_from("<I", data, offset + 8)[0]
        payloads.append(data[offset + 16 + caplen - 1 : offset + 16 + caplen])
        offset += 16 + caplen
    return payloads


async def _stopLosesNothing(tmp_path: Path, form: str, inC: bool) -> None:
    requireRoot()
    if inC:
        need(linux.WALK_IN_C, "echod's C helper (echod.sniff._ringwalk) was not built")
    from twisted.internet import reactor

    port = freePort(socket.AF_INET, socket.SOCK_DGRAM)
    output = tmp_path / f"capture.{form}"
    config = dataclasses.replace(
        SniffConfig(),
        interface="lo",
        filter=f"udp dst port {port}",
        format=form,
        output=str(output),
        stats_interval=0.0,
    )
    saved = linux.WALK_IN_C
    linux.WALK_IN_C = inC
    try:
        service = SniffService(config, reactor)  # type: ignore[arg-type]
        service.privilegedStartService()
    finally:
        linux.WALK_IN_C = saved
    service.startService()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for n in range(20):
            s.sendto(bytes([n]), ("127.0.0.1", port))
    # At once: the block holding them is still the kernel's.
    await service.stopService()
    if form == "pcap":
        assert pcapPayloads(output) == [bytes([n]) for n in range(20)]
    else:
        assert len(output.read_text().splitlines()) == 20
    assert not service.failed


@pytest.mark.parametrize(
    ("form", "inC"), [("pcap", True), ("pcap", False), ("text", True), ("text", False)]
)
def test_stopLosesNothing(tmp_path: Path, form: str, inC: bool) -> pytest_twisted.Deferred:
    """
    Datagrams sent just before the stop are all in the output, whichever
    the format and however the ring is walked.
    """
    return pytest_twisted.ensureDeferred(_stopLosesNothing)(tmp_path, form, inC)
