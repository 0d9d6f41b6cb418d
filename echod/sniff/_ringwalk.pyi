"""
echod's C helper for the sniffer (echod/sniff/_ringwalk.c): the frames of a
TPACKET_V3 ring block walked in C, as pcap records or delivered one by one.
"""

from collections.abc import Callable
from typing import Any

from _typeshed import ReadableBuffer

def records(
    ring: ReadableBuffer,
    offset: int,
    end: int,
    count: int,
    snaplen: int,
    divisor: int,
    cooked: bool,
    room: int,
    /,
) -> tuple[bytes, int, int]: ...
def frames(
    ring: ReadableBuffer,
    offset: int,
    end: int,
    count: int,
    snaplen: int,
    cooked: bool,
    deliver: Callable[[int, int, bytes, int, int, int], Any],
    /,
) -> tuple[int, int, Exception | None]: ...
