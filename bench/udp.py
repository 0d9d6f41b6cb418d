"""
The UDP half of echod's benchmark: the scenarios, echod's UDP configuration,
the check every UDP server passes before it is measured, and the command line
of the native UDP load generator (bench/udpgen.c).  bench.run does the rest
as it does for TCP (rounds, pinning, CPU time, reruns of disturbed
measurements, medians, ratios, the table); bench.workers uses it for UDP
scaling.  This module imports nothing from either, so that C{python -m
bench.run} (which runs run.py as C{__main__}) never loads a second copy of
the harness.

Each server serves UDP from a process of its own, started fresh for the UDP
scenarios of each round: echod (twistd echod with a UDP listener on loopback
and its guards on, every rate limit far above the offered rate, so that each
datagram goes through them but none is refused), the textbook Twisted
C{DatagramProtocol}, asyncio's and uvloop's C{DatagramProtocol}, and a native
C{recvmmsg}/C{sendmmsg} server (bench/peers/mmsg_echo.c, the ceiling).

The load generator keeps a fixed number of datagrams in flight, so that what
the servers hold in their receive buffers stays below the default buffer
(212,992 bytes here: 256 datagrams of 64 bytes or 92 of 1,400 bytes on
loopback fill it).  Otherwise a server that falls behind drops datagrams, and
the measure is of the loss timeout rather than of the server.  Loss is
counted and shown; a wrong byte or sender aborts the run.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
BUILD = BENCH / "build"
HOST = "127.0.0.1"

# Native programs bench.run compiles: (source, binary in bench/build/, flags).
NATIVE: tuple[tuple[Path, Path, list[str]], ...] = (
    (BENCH / "udpgen.c", BUILD / "udpgen", []),
    (BENCH / "peers" / "mmsg_echo.c", BUILD / "mmsg_echo", []),
)

LOSS_TIMEOUT = 0.2  # seconds without a reply before a datagram counts as lost
LARGEST = 65_507  # the largest UDP payload over IPv4


@dataclass(frozen=True)
class Load:
    """
    What the load generator offers in one UDP scenario: C{sockets} sockets,
    each keeping C{window} datagrams of C{size} bytes in flight, bound in
    turn to C{sources} distinct loopback addresses (0: all from 127.0.0.1).
    """

    name: str
    title: str
    sockets: int
    window: int
    size: int
    sources: int = 0


LOADS = (
    Load("udp-64", "UDP 64 B datagrams (16 sockets x 8 in flight)", 16, 8, 64),
    Load("udp-1400", "UDP 1,400 B datagrams (16 sockets x 4 in flight)", 16, 4, 1400),
    Load(
        "udp-sources",
        "UDP 64 B datagrams from 128 source addresses (1 in flight each)",
        128,
        1,
        64,
        128,
    ),
)


def loadgenArgv(load: Load, port: int, seconds: float, warmup: float) -> list[str]:
    """
    The command line of the UDP load generator offering C{load} to C{port}.
    """
    options: dict[str, object] = {
        "host": HOST,
        "port": port,
        "sockets": load.sockets,
        "window": load.window,
        "size": load.size,
        "sources": load.sources,
        "seconds": seconds,
        "warmup": warmup,
        "loss-timeout": LOSS_TIMEOUT,
        "timeout": warmup + seconds + 60,
    }
    argv = [str(BUILD / "udpgen")]
    for name, value in options.items():
        argv += [f"--{name}", str(value)]
    return argv


# --- echod ----------------------------------------------------------------------------------

# The guards stay on, each limit far above what the load generator offers
# (a few hundred thousand datagrams/s, at most a few hundred MB/s): every
# datagram is checked and counted against its source's bucket and the global
# one, none is refused.
ECHOD_GUARDS: dict[str, Any] = {
    "source_packets_per_second": 1e8,
    "source_bytes_per_second": 1e12,
    "global_packets_per_second": 1e9,
    "global_bytes_per_second": 1e12,
}


def udpTable(port: int) -> dict[str, Any]:
    """
    echod's C{[udp]} table for the benchmark: a listener on loopback port
    C{port}, the guards on.
    """
    return {"listen": [f"udp:port={port}:interface={HOST}"], **ECHOD_GUARDS}


def echodTables(port: int, extra: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """
    Config tables that make the benchmark's echod config (bench.run's
    echodConfig) a UDP-only one on loopback port C{port} with the guards on;
    C{extra} (such as C{--echod-config-extra udp.max_sources=100}) wins.
    """
    tables: dict[str, dict[str, Any]] = {"server": {"listen": []}, "udp": udpTable(port)}
    for table, values in extra.items():
        tables.setdefault(table, {}).update(values)
    return tables


# --- who serves --------------------------------------------------------------------------------


def socketInodes(port: int) -> set[str]:
    """
    The inodes of the UDP sockets bound to C{port} (IPv4 and IPv6), from /proc.
    """
    inodes = set()
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def servingProcesses(pids: list[int], port: int) -> list[int]:
    """
    Those of C{pids} that serve UDP C{port}: a socket bound to it is
    registered with the process's epoll (its reactor reads it).  A process
    that merely holds such a socket (inherited, passed on) does not count.
    """
    inodes = socketInodes(port)
    return [pid for pid in pids if readsSocket(pid, inodes)]


def readsSocket(pid: int, inodes: set[str]) -> bool:
    """
    Whether process C{pid} has a socket whose inode is in C{inodes}
    registered with one of its epolls: its reactor reads it.
    """
    try:
        links = {fd: os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
    except OSError:
        return False
    sockets = {
        fd
        for fd, link in links.items()
        if link.startswith("socket:[") and link[len("socket:[") : -1] in inodes
    }
    watched: set[str] = set()
    for fd, link in links.items():
        if link == "anon_inode:[eventpoll]":
            try:
                info = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
            except OSError:
                continue
            watched |= {line.split()[1] for line in info.splitlines() if line.startswith("tfd:")}
    return bool(sockets & watched)


# --- checks ---------------------------------------------------------------------------------


class CheckFailed(Exception):
    """
    No echo (or an error) where one was due.
    """


class WrongEcho(CheckFailed):
    """
    An echo that differs from what was sent, or comes from elsewhere.
    """


def freePort() -> int:
    """
    A UDP port free on loopback now.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def _roundTrip(port: int, data: bytes, timeout: float) -> bytes | None:
    """
    Send C{data} from a fresh socket connected to the server; its echo, or
    None if none came within C{timeout}.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((HOST, port))
        s.settimeout(timeout)
        try:
            s.send(data)
            echo, sender = s.recvfrom(LARGEST + 1)
        except TimeoutError:
            return None
        except ConnectionRefusedError:
            raise CheckFailed(f"nothing listens on UDP port {port} (port unreachable)") from None
        if sender != (HOST, port):
            raise WrongEcho(f"the echo came from {sender[0]}:{sender[1]}, not {HOST}:{port}")
        return echo


def waitServing(port: int, alive: Callable[[], bool], timeout: float) -> None:
    """
    Wait until the server echoes a datagram (its port may not be bound yet:
    the kernel then answers with port unreachable).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise CheckFailed("exited before serving UDP")
        try:
            if _roundTrip(port, b"ready?", 0.2) is not None:
                return
        except CheckFailed as e:
            if isinstance(e, WrongEcho):
                raise
            time.sleep(0.05)
    raise CheckFailed(f"no echo on UDP port {port} after {timeout:g}s")


def _firstDifference(expected: bytes, got: bytes) -> str:
    for index, (a, b) in enumerate(zip(expected, got, strict=False)):
        if a != b:
            return f"first difference at byte {index}: expected 0x{a:02x}, got 0x{b:02x}"
    return f"expected {len(expected)} bytes, got {len(got)}"


def checkEcho(port: int, tries: int = 3, timeout: float = 2.0) -> dict[str, Any]:
    """
    Every UDP server passes this before it is measured: a random datagram,
    an empty one and one of 65,507 bytes (the largest over IPv4) each come
    back whole, from the server's address.  Each is tried up to C{tries}
    times (loopback may drop, rarely, under load).
    """
    checked = {}
    for name, data in (
        ("random", os.urandom(1000)),
        ("empty", b""),
        ("largest", os.urandom(LARGEST)),
    ):
        for _ in range(tries):
            echo = _roundTrip(port, data, timeout)
            if echo is not None:
                break
        else:
            raise CheckFailed(f"UDP echo check: no echo of the {name} datagram ({len(data)} B)")
        if echo != data:
            raise WrongEcho(f"UDP echo check: {name} datagram: {_firstDifference(data, echo)}")
        checked[f"{name}_bytes"] = len(data)
    return {**checked, "ok": True}
