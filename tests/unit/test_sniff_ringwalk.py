"""
The pcap files of a capture are the same bytes however its ring is walked:
in Python a packet at a time, by echod's C helper (L{echod.sniff._ringwalk})
a packet at a time, or by the helper a batch of records at a time; rotation,
C{count}, the budget of one read, the counters and a failing output behave
the same.  An inconsistent ring is an error, never a read out of bounds.
"""

from __future__ import annotations

import errno
import io
import mmap
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.testing import MemoryReactorClock
from zope.interface import implementer_only
from zope.interface.verify import verifyObject

from echod.sniff import linux
from echod.sniff.linux import LinuxRingSource
from echod.sniff.reader import IPacketConsumer, IRecordConsumer, RawReader
from echod.sniff.sinks import OutputError, PcapSink, RotatingOutput
from echod.sniff.source import (
    PACKET_HOST,
    CaptureError,
    CaptureRequest,
    IBlockSource,
    IRecordSource,
)
from tests.capturetesting import MemoryLinuxSystem
from tests.environment import need
from tests.testing import examples

STAMP = 1_700_000_000_123_456_789
WALKS = ("Python", "C, a packet at a time", "C, records in bulk")


def needHelper() -> None:
    need(linux.WALK_IN_C, "echod's C helper (echod.sniff._ringwalk) was not built")


@contextmanager
def walkedInC(inC: bool) -> Iterator[None]:
    """
    Sources opened meanwhile walk their ring in C or in Python.
    """
    saved = linux.WALK_IN_C
    linux.WALK_IN_C = inC
    try:
        yield
    finally:
        linux.WALK_IN_C = saved


@implementer_only(IPacketConsumer)
class PacketPcapSink(PcapSink):
    """
    A L{PcapSink} that takes a packet at a time only.
    """


class MemoryFiles:
    """
    Files kept in memory by name (their bytes when closed); with
    C{failAfter}, writing more than that many bytes in all fails as a full
    disk does.
    """

    def __init__(self, failAfter: int | None = None) -> None:
        self.contents: dict[str, bytes] = {}
        self.failAfter = failAfter
        self.total = 0

    def open(self, name: str) -> IO[bytes]:
        files = self

        class File(io.BytesIO):
            def write(self, data: object) -> int:
                assert isinstance(data, bytes)
                files.total += len(data)
                if files.failAfter is not None and files.total > files.failAfter:
                    raise OSError(errno.ENOSPC, "No space left on device")
                return super().write(data)

            def close(self) -> None:
                files.contents[name] = self.getvalue()
                super().close()

        return File()


@dataclass(frozen=True)
class Packet:
    frame: bytes
    vlan: tuple[int, int] | None
    pkttype: int
    stamp: int


@dataclass(frozen=True)
class Scenario:
    interface: str
    snaplen: int
    nanoseconds: bool
    rotateBytes: int
    rotateCount: int
    budget: int
    count: int
    failAfter: int | None
    retireEvery: int
    packets: tuple[Packet, ...]


@dataclass(frozen=True)
class Outcome:
    files: dict[str, bytes]
    names: list[str]
    written: int
    notWritten: int
    passed: int
    errors: list[str]


def capture(scenario: Scenario, walk: str) -> Outcome:
    """
    Run C{scenario} through a L{RawReader} and a L{PcapSink} on the fake
    kernel, walking the ring as C{walk} says.
    """
    files = MemoryFiles(scenario.failAfter)
    output = RotatingOutput(
        "cap.pcap", scenario.rotateBytes, scenario.rotateCount, opener=files.open
    )
    bulk = walk == WALKS[2]
    sink = (PcapSink if bulk else PacketPcapSink)(output, scenario.nanoseconds)
    system = MemoryLinuxSystem()
    request = CaptureRequest(interface=scenario.interface, snaplen=scenario.snaplen)
    reader = RawReader(request, sink, MemoryReactorClock(), system, count=scenario.count)
    reader.budget = scenario.budget
    # A failed output ends the capture as the reactor would end it.
    reader.whenLost().addErrback(lambda _: None)
    errors: list[str] = []
    with walkedInC(walk != WALKS[0]):
        reader.startCapturing()
    assert reader.inBulk == bulk
    sock = system.socket

    def readAll() -> None:
        for _ in range(len(scenario.packets) // scenario.budget + 2):
            why = reader.doRead()
            if why is not None:
                errors.append(why.getErrorMessage())
                reader.connectionLost(why)
                return

    for n, packet in enumerate(scenario.packets, 1):
        sock.inject(
            packet.frame,
            timestamp=STAMP + packet.stamp,
            ifindex=2,
            pkttype=packet.pkttype,
            hatype=linux.ARPHRD_ETHER if scenario.interface != "tun0" else 65534,
            vlan=packet.vlan,
        )
        if n % scenario.retireEvery == 0:
            sock.retire()
            readAll()
    sock.retire()
    readAll()
    try:
        reader.stopCapturing()
    except OutputError as e:
        errors.append(str(e))
    return Outcome(
        files.contents,
        output.names,
        output.written,
        output.notWritten,
        reader.statistics().passed,
        errors,
    )


packets = st.builds(
    Packet,
    frame=st.binary(min_size=1, max_size=300),
    vlan=st.one_of(st.none(), st.tuples(st.sampled_from([0x8100, 0x88A8]), st.integers(0, 0xFFFF))),
    pkttype=st.sampled_from([PACKET_HOST, 1, 2, 3, 4]),
    stamp=st.integers(0, 10**12),
)
scenarios = st.builds(
    Scenario,
    interface=st.sampled_from(["eth0", "any", "tun0"]),
    snaplen=st.sampled_from([64, 100, 262144]),
    nanoseconds=st.booleans(),
    rotateBytes=st.sampled_from([0, 150, 700, 5000]),
    rotateCount=st.sampled_from([0, 3]),
    budget=st.sampled_from([1, 2, 5, 8192]),
    count=st.sampled_from([0, 1, 7]),
    failAfter=st.sampled_from([None, 300, 2000]),
    retireEvery=st.integers(1, 20),
    packets=st.lists(packets, max_size=40).map(tuple),
)


@settings(max_examples=examples(1000), deadline=None)
@given(scenarios)
def test_sameFiles(scenario: Scenario) -> None:
    """
    The files (names and bytes), the counters and the errors are the same
    whichever way the ring is walked.
    """
    needHelper()
    python, packetsInC, recordsInC = (capture(scenario, walk) for walk in WALKS)
    assert packetsInC == python
    assert recordsInC == python


def test_sameFilesExample() -> None:
    """
    One capture of every kind of frame (tagged, cut to the snapshot length,
    shorter than the Ethernet addresses) into rotating files: the walks
    agree, and the files hold every packet.
    """
    needHelper()
    frames = (b"\x01" * 200, b"\x02" * 5, b"\x03" * 60, b"\x04" * 90)
    scenario = Scenario(
        interface="eth0",
        snaplen=64,
        nanoseconds=False,
        rotateBytes=300,
        rotateCount=0,
        budget=3,
        count=0,
        failAfter=None,
        retireEvery=3,
        packets=tuple(
            Packet(frame, (0x8100, n) if n % 2 else None, PACKET_HOST, n)
            for n, frame in enumerate(frames * 5)
        ),
    )
    outcomes = [capture(scenario, walk) for walk in WALKS]
    assert outcomes[1] == outcomes[0]
    assert outcomes[2] == outcomes[0]
    assert outcomes[0].written == outcomes[0].passed == 20
    assert len(outcomes[0].names) > 1
    assert all(len(data) <= 300 or data.count(b"\x01" * 40) for data in outcomes[0].files.values())


class RingWalkTests:
    """
    The C helper's walk on its own.
    """

    def open(self, **kwargs: object) -> tuple[LinuxRingSource, MemoryLinuxSystem]:
        needHelper()
        system = MemoryLinuxSystem()
        with walkedInC(True):
            source = linux.openLinuxCapture(CaptureRequest(**kwargs), system)  # type: ignore[arg-type]
        assert isinstance(source, LinuxRingSource)
        return source, system

    def test_interfaces(self) -> None:
        """
        With the helper a ring source writes records and tells of its
        blocks; a pcap sink takes records.
        """
        source, _ = self.open(interface="eth0")
        assert verifyObject(IRecordSource, source)
        assert verifyObject(IBlockSource, source)
        assert verifyObject(IRecordConsumer, PcapSink(RotatingOutput("x")))
        source.close()

    def test_withoutHelper(self) -> None:
        """
        Without the helper the source does not offer records: the reader
        falls back to a packet at a time.
        """
        system = MemoryLinuxSystem()
        with walkedInC(False):
            source = linux.openLinuxCapture(CaptureRequest(interface="eth0"), system)
        assert not IRecordSource.providedBy(source)
        assert source.info.method == "TPACKET_V3 ring, walked in Python"
        source.close()

    def corrupt(self, field: int, value: int, walk: str) -> None:
        source, system = self.open(interface="eth0")
        sock = system.socket
        for n in range(3):
            sock.inject(bytes([n]) * 60, ifindex=2)
        sock.retire()
        ring = sock.ring
        assert ring is not None
        # The second frame's header starts where the first one's step says.
        step = struct.unpack_from("=I", ring, 48)[0]
        struct.pack_into("=I", ring, 48 + step + field, value)
        with pytest.raises(CaptureError, match="capture ring of eth0 is inconsistent"):
            if walk == "records":
                source.readRecords(PcapSink(RotatingOutput("-", stdout=io.BytesIO())), 10)
            else:
                source.readPackets(lambda *packet: None, 10, lambda: None)
        source.close()

    @pytest.mark.parametrize("walk", ["records", "packets"])
    def test_stepOutside(self, walk: str) -> None:
        """
        A frame whose successor would lie past its block is an error.
        """
        self.corrupt(0, 1 << 30, walk)

    @pytest.mark.parametrize("walk", ["records", "packets"])
    def test_lengthOutside(self, walk: str) -> None:
        """
        A frame whose data would run past its block is an error.
        """
        self.corrupt(12, 1 << 20, walk)

    def test_blockOutsideRing(self) -> None:
        """
        The helper refuses a block that ends past the mapping.
        """
        needHelper()
        from echod.sniff import _ringwalk

        ring = mmap.mmap(-1, 4096)
        with pytest.raises(ValueError, match="outside the 4096-byte ring"):
            _ringwalk.records(ring, 0, 8192, 1, 64, 1000, False, -1)
        with pytest.raises(ValueError, match="outside its block"):
            _ringwalk.records(ring, 4090, 4096, 1, 64, 1000, False, -1)
        ring.close()

    def test_room(self) -> None:
        """
        The walk stops before the first record past the room given, and
        says how many it wrote and where it stopped.
        """
        needHelper()
        from echod.sniff import _ringwalk

        source, system = self.open(interface="eth0")
        sock = system.socket
        for n in range(3):
            sock.inject(bytes([n]) * 84, ifindex=2)
        sock.retire()
        ring = sock.ring
        assert ring is not None
        end = sock.blockSize
        whole, taken, after = _ringwalk.records(ring, 48, end, 3, 262144, 1000, False, -1)
        assert (len(whole), taken) == (3 * 100, 3)
        part, taken, middle = _ringwalk.records(ring, 48, end, 3, 262144, 1000, False, 250)
        assert (part, taken) == (whole[:200], 2)
        rest, taken, last = _ringwalk.records(ring, middle, end, 1, 262144, 1000, False, 100)
        assert (rest, taken, last) == (whole[200:], 1, after)
        none, taken, same = _ringwalk.records(ring, 48, end, 3, 262144, 1000, False, 99)
        assert (none, taken, same) == (b"", 0, 48)
        source.close()
