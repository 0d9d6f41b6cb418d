# -*- test-case-name: tests.unit.test_steering,tests.integration.test_steering -*-
"""
The UDP listeners of C{[server] workers = N}, served by the workers: for
each C{udp:} listener the main process binds N sockets to the address with
C{SO_REUSEPORT} (socket i is worker i's), keeps them open without ever
reading them, and passes each to its worker.

Steered by source address: each worker has its own guard, and a source whose
datagrams reached two workers would get twice its per-source rate.  The
kernel's own choice within a group hashes the source address and port, so a
client with many ports would reach every worker; a classic BPF program
attached to the group (C{SO_ATTACH_REUSEPORT_CBPF}) picks the socket from a
hash of the source address alone (L{steeringProgram}), so that one source
always reaches one worker and its token bucket is exact, as in one process.
The program returns a socket's rank in the group, which is the order in
which the sockets were bound: the main process binds them in worker order
and holds them until it stops, so the ranks never change.

While a worker is down, a program of the live workers only replaces it: the
dead worker's sources spread over the live workers, the others keep theirs
(and their token buckets); and the main process reads and discards what was
queued on the dead worker's socket (counted as dropped, C{worker_down}): an
echo that waited for the restart would come seconds late.  The socket is
back in the program before the worker restarts; datagrams wait there until
the new worker reads them.  Datagrams the kernel is steering at the moment
a program is replaced may still reach the old socket: they are discarded
when the worker restarts.

Where the kernel refuses the program (Linux before 4.5), the kernel's hash
of address and port spreads the datagrams: per-source limits then apply per
worker, and a dead worker's share is lost until it is back (said once in the
log).  Where the platform has no such groups (not Linux), and for a
C{systemd:} datagram socket, one socket is shared by the workers: each
datagram goes to whichever worker reads first, and per-source limits apply
per worker.

Global rates are divided equally among the workers (L{DatagramGuard}'s
C{share}), so that together they never echo more than the configured rate;
C{max_sources} applies per worker.
"""

from __future__ import annotations

import ctypes
import ipaddress
import socket
import struct
import sys
from collections.abc import Sequence

from twisted.application.service import Service
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.logger import Logger
from zope.interface import implementer

from echod.addresses import describePeer
from echod.config import parseDatagramEndpoint
from echod.errors import ListenError
from echod.interfaces import IDatagramStatistics, IWorkerDatagramStatistics
from echod.server.datagram import MAX_DATAGRAM, enlargeReceiveBuffer, openDatagramSocket
from echod.server.limits import DatagramDrop
from echod.server.stats import DatagramStats

__all__ = [
    "DatagramGroup",
    "DatagramReports",
    "WorkerDatagramService",
    "attachSteering",
    "openDatagramGroup",
    "steeredIndex",
    "steeringProgram",
]

# Linux's socket option (include/uapi/asm-generic/socket.h), which Python
# does not name.
SO_ATTACH_REUSEPORT_CBPF = 51
# Whether UDP sockets bound with SO_REUSEPORT form a group that spreads
# datagrams over its sockets (BSD's SO_REUSEPORT does not for unicast).
GROUPS = sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")
# At most this many datagrams are discarded from a dead worker's socket at
# once: more than a 4 MiB receive buffer holds.
DRAIN_LIMIT = 65536

Instruction = tuple[int, int, int, int]
"""One C{struct sock_filter}: code, jt, jf, k."""

# Classic BPF (linux/bpf_common.h, linux/filter.h).
_LD_B_ABS = 0x30
_LD_W_ABS = 0x20
_RSH_K = 0x74
_MUL_K = 0x24
_MOD_K = 0x94
_DIV_K = 0x34
_ST = 0x02
_LD_MEM = 0x60
_XOR_X = 0xAC
_TAX = 0x07
_JA = 0x05
_JEQ_K = 0x15
_RET_K = 0x06
_RET_A = 0x16
# Loads from here on read the network (IP) header: for UDP the program's
# packet starts at the payload.
_SKF_NET_OFF = 0x100000000 - 0x100000
# Knuth's multiplicative hash: the low bits of an address (127.0.0.x) reach
# the bits kept.
_GOLDEN = 2654435761
_MASK = 0xFFFFFFFF


def steeringProgram(count: int, live: Sequence[int] | None = None) -> list[Instruction]:
    """
    The program that picks one of the C{count} sockets of a group for each
    datagram, from its source address alone: a hash H of the address in its
    IP header (IPv4; IPv6: its four 32-bit words XORed),
    C{(address * 2654435761 mod 2**32) >> 16}; the socket of rank
    C{H mod count} if it is C{live}, else the live one at position
    C{(H div count) mod len(live)}.  So while some are down, only their
    sources move, and each to a live socket; the others keep theirs (and
    their token buckets).  L{steeredIndex} computes the same in Python.

    @param live: the ranks of the sockets to steer to; L{None} or empty:
        all of them.
    """
    ranks = sorted(set(live or ())) or list(range(count))
    program: list[Instruction] = [
        (_LD_B_ABS, 0, 0, _SKF_NET_OFF),  # version and header length
        (_RSH_K, 0, 0, 4),
        (_JEQ_K, 0, 2, 4),
        (_LD_W_ABS, 0, 0, _SKF_NET_OFF + 12),  # IPv4 source
        (_JA, 0, 0, 12),  # to the hash
        (_JEQ_K, 1, 0, 6),
        # Neither IPv4 nor IPv6 (not seen over UDP): the first live socket.
        (_RET_K, 0, 0, ranks[0]),
        (_LD_W_ABS, 0, 0, _SKF_NET_OFF + 8),  # IPv6 source, its 4 words XORed
        (_TAX, 0, 0, 0),
        (_LD_W_ABS, 0, 0, _SKF_NET_OFF + 12),
        (_XOR_X, 0, 0, 0),
        (_TAX, 0, 0, 0),
        (_LD_W_ABS, 0, 0, _SKF_NET_OFF + 16),
        (_XOR_X, 0, 0, 0),
        (_TAX, 0, 0, 0),
        (_LD_W_ABS, 0, 0, _SKF_NET_OFF + 20),
        (_XOR_X, 0, 0, 0),
        (_MUL_K, 0, 0, _GOLDEN),  # the hash
        (_RSH_K, 0, 0, 16),
    ]
    if len(ranks) == count:
        return [*program, (_MOD_K, 0, 0, count), (_RET_A, 0, 0, 0)]
    program += [(_ST, 0, 0, 0), (_MOD_K, 0, 0, count)]
    # A jump table over every rank: a live one is returned; a dead one
    # jumps to the second table (its offset is set once that is placed).
    toSecond: list[int] = []
    for rank in range(count):
        program.append((_JEQ_K, 0, 1, rank))
        if rank in ranks:
            program.append((_RET_K, 0, 0, rank))
        else:
            toSecond.append(len(program))
            program.append((_JA, 0, 0, 0))
    second = len(program)
    for at in toSecond:
        program[at] = (_JA, 0, 0, second - at - 1)
    program += [(_LD_MEM, 0, 0, 0), (_DIV_K, 0, 0, count), (_MOD_K, 0, 0, len(ranks))]
    for position, rank in enumerate(ranks[:-1]):
        program += [(_JEQ_K, 0, 1, position), (_RET_K, 0, 0, rank)]
    program.append((_RET_K, 0, 0, ranks[-1]))
    return program


def steeredIndex(address: str, count: int, live: Sequence[int] | None = None) -> int:
    """
    The rank of the socket that L{steeringProgram}C{(count, live)} picks for
    a datagram from C{address} (as the kernel sees it: an IPv4 address
    mapped into IPv6 comes as IPv4).
    """
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if isinstance(ip, ipaddress.IPv4Address):
        word = int(ip)
    else:
        word = 0
        for i in range(4):
            word ^= (int(ip) >> (32 * i)) & _MASK
    ranks = sorted(set(live or ())) or list(range(count))
    hashed = ((word * _GOLDEN) & _MASK) >> 16
    if hashed % count in ranks:
        return hashed % count
    return ranks[(hashed // count) % len(ranks)]


def attachSteering(sock: socket.socket, program: Sequence[Instruction]) -> None:
    """
    Attach C{program} to the C{SO_REUSEPORT} group of C{sock} (which must be
    bound), replacing the one it had: the kernel runs it for every datagram
    from then on.

    @raise OSError: the kernel has no such option, or refuses the program.
    """
    code = b"".join(struct.pack("=HBBI", *instruction) for instruction in program)
    buffer = ctypes.create_string_buffer(code, len(code))
    fprog = struct.pack("HP", len(program), ctypes.addressof(buffer))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)


class DatagramGroup:
    """
    One UDP listener of the workers, as the main process holds it: a socket
    per worker in a C{SO_REUSEPORT} group (steered by source address where
    the kernel takes the program), or one socket they all share.
    """

    def __init__(self, description: str, sockets: list[socket.socket], shared: bool) -> None:
        self.description = description
        self.sockets = sockets
        self.shared = shared
        self.steered = False
        # Why the kernel refused the program, if it did.
        self.refusal: OSError | None = None

    def socketOf(self, worker: int) -> socket.socket:
        """
        The socket worker C{worker} (from 0) reads.
        """
        return self.sockets[0] if self.shared else self.sockets[worker]

    def steer(self, live: Sequence[int]) -> None:
        """
        Steer the datagrams to the sockets of C{live} workers only (all of
        them when none is).
        """
        if self.shared:
            return
        try:
            attachSteering(self.sockets[0], steeringProgram(len(self.sockets), live))
        except OSError as e:
            self.steered, self.refusal = False, e
        else:
            self.steered = True

    def drain(self, worker: int) -> int:
        """
        Read and discard what waits on C{worker}'s socket (not a shared
        one): at most L{DRAIN_LIMIT} datagrams.  Return how many.
        """
        if self.shared:
            return 0
        sock = self.sockets[worker]
        buffer = bytearray(MAX_DATAGRAM + 1)
        for count in range(DRAIN_LIMIT):
            try:
                sock.recv_into(buffer, len(buffer), socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return count
            except OSError:
                # A pending error of the socket (an ICMP error): read on.
                continue
        return DRAIN_LIMIT

    def getHost(self) -> IPv4Address | IPv6Address:
        host, port = self.sockets[0].getsockname()[:2]
        if self.sockets[0].family == socket.AF_INET6:
            return IPv6Address("UDP", host, port)
        return IPv4Address("UDP", host, port)

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


def _checkFree(port: int, interface: str) -> int:
    """
    Bind a plain socket (no C{SO_REUSEPORT}) to the address and let it go:
    raise L{OSError} if another socket is bound there, where the group's
    sockets would silently join its group or share its port.  Port 0 gets a
    fresh port, returned (the kernel may pick a port of another group of the
    same user for a socket with C{SO_REUSEPORT}; a plain one it may not).
    """
    with openDatagramSocket(port, interface) as probe:
        fresh: int = probe.getsockname()[1]
        return fresh


def openDatagramGroup(description: str, workers: int) -> DatagramGroup:
    """
    The sockets of the UDP listener C{description} for C{workers} workers,
    bound, their receive buffers enlarged, steered by source address where
    the kernel allows.

    @raise ListenError: the address is taken, or systemd passed no such
        socket.
    @raise OSError: a socket cannot be bound.
    """
    from echod.server.listeners import adoptDatagramSocket

    if description.startswith("systemd:"):
        sockets = [adoptDatagramSocket(description)]
    elif not GROUPS:
        endpoint = parseDatagramEndpoint(description)
        sockets = [openDatagramSocket(endpoint.port, endpoint.interface)]
    else:
        endpoint = parseDatagramEndpoint(description)
        port = _checkFree(endpoint.port, endpoint.interface)
        sockets = []
        try:
            for _ in range(workers):
                sockets.append(openDatagramSocket(port, endpoint.interface, reusePort=True))
        except OSError:
            for sock in sockets:
                sock.close()
            raise
    for sock in sockets:
        enlargeReceiveBuffer(sock)
    group = DatagramGroup(
        description, sockets, shared=description.startswith("systemd:") or not GROUPS
    )
    group.steer(range(workers))
    return group


class DatagramReports:
    """
    The workers' UDP totals, as each last reported (every second), and
    those of the workers that have exited: the totals stay monotonic.
    """

    def __init__(self) -> None:
        self.workers: dict[str, DatagramStats] = {}
        self.retired = DatagramStats()

    def report(self, worker: str, stats: DatagramStats) -> None:
        self.workers[worker] = stats

    def retire(self, worker: str) -> None:
        last = self.workers.pop(worker, None)
        if last is not None:
            self.retired.add(last)

    def total(self) -> DatagramStats:
        total = DatagramStats()
        total.add(self.retired)
        for stats in self.workers.values():
            total.add(stats)
        return total


class _WorkerShare:
    """
    One worker's sockets in the UDP groups, as its supervisor sees them:
    out of the steering while it is down, back before it restarts.
    """

    def __init__(self, service: WorkerDatagramService, worker: int) -> None:
        self._service = service
        self._worker = worker

    def pause(self) -> None:
        self._service.pause(self._worker)

    def resume(self) -> None:
        self._service.resume(self._worker)


@implementer(IDatagramStatistics, IWorkerDatagramStatistics)
class WorkerDatagramService(Service):
    """
    The UDP listeners of the main process when C{workers > 1}: it opens each
    listener's group (before privileges drop), steers it to the live
    workers, discards what a dead worker left queued, closes its copies of
    the sockets when it stops (each worker closes its own), and reports the
    workers' totals.
    """

    log = Logger()

    def __init__(self, listen: Sequence[str], workers: int, reports: DatagramReports) -> None:
        self.setName("udp-echo-workers")
        self.listen = list(listen)
        self.workers = workers
        self.reports = reports
        self.groups: list[DatagramGroup] = []
        self.live: set[int] = set()
        self._down: set[int] = set()
        self._closed = False
        # What the main process discarded itself (worker_down).
        self.discarded = DatagramStats()

    def privilegedStartService(self) -> None:
        from echod.server.listeners import listenFailed

        super().privilegedStartService()
        for description in self.listen:
            try:
                group = openDatagramGroup(description, self.workers)
            except OSError as e:
                self._close()
                raise listenFailed(description, e) from None
            except ListenError:
                self._close()
                raise
            self.groups.append(group)
            how = (
                "one socket shared by the workers"
                if group.shared
                else "a socket per worker, steered by source address"
                if group.steered
                else "a socket per worker, spread by the kernel's hash"
            )
            self.log.info(
                "UDP echo listening on {address} ({description}): {how}",
                event="listener.started",
                address=describePeer(group.getHost()),
                description=description,
                how=how,
            )
        self._warnOfPerWorkerLimits()

    def _warnOfPerWorkerLimits(self) -> None:
        refused = [group for group in self.groups if not group.shared and not group.steered]
        if refused:
            self.log.warn(
                "the kernel refused SO_ATTACH_REUSEPORT_CBPF ({reason}): UDP datagrams reach "
                "the workers by a hash of source address and port, so per-source rate limits "
                "apply per worker, and a dead worker's share is lost until its restart",
                event="udp.steering_refused",
                reason=_strerror(refused[0].refusal),
            )
        shared = [group.description for group in self.groups if group.shared]
        if shared:
            self.log.info(
                "{listeners}: one socket shared by the workers, each datagram read by any: "
                "per-source rate limits apply per worker",
                event="udp.shared",
                listeners=", ".join(shared),
            )

    def startService(self) -> None:
        from echod.server.listeners import logDatagramBatching

        super().startService()
        logDatagramBatching(self.log)

    def stopService(self) -> None:
        # Each worker stops reading and closes its own copies; datagrams
        # that arrive from now on get no echo.
        super().stopService()
        self._close()

    def _close(self) -> None:
        self._closed = True
        for group in self.groups:
            group.close()

    def childFDs(self, worker: int) -> list[tuple[int, str]]:
        """
        The descriptor of each listener's socket for C{worker} (from 0), and
        the listener's description.
        """
        return [(group.socketOf(worker).fileno(), group.description) for group in self.groups]

    def share(self, worker: int) -> _WorkerShare:
        return _WorkerShare(self, worker)

    def pause(self, worker: int) -> None:
        """
        C{worker} is down: steer to the others, and discard what its sockets
        hold.
        """
        if self._closed or worker in self._down:
            return
        self._down.add(worker)
        self.live.discard(worker)
        self._steer()
        self._discard(worker)

    def resume(self, worker: int) -> None:
        """
        C{worker} is about to start: what arrived while it was down goes
        (where the kernel's hash still sent datagrams there), then its
        sockets are back in the steering.
        """
        if self._closed:
            return
        wasDown = worker in self._down
        if wasDown:
            self._discard(worker)
            self._down.discard(worker)
        self.live.add(worker)
        self._steer(log=wasDown)

    def _steer(self, log: bool = True) -> None:
        live = sorted(self.live)
        for group in self.groups:
            group.steer(live)
        if not log or not any(group.steered for group in self.groups):
            return
        if live:
            self.log.info(
                "UDP datagrams steered to {live} of {count} workers",
                event="udp.steered",
                live=len(live),
                count=self.workers,
            )
        else:
            self.log.warn(
                "no worker runs: UDP datagrams get no echo until one is back",
                event="udp.steered",
                live=0,
                count=self.workers,
            )

    def _discard(self, worker: int) -> None:
        for group in self.groups:
            count = group.drain(worker)
            if count:
                self.discarded.received += count
                self.discarded.dropped[DatagramDrop.WORKER_DOWN] += count
                self.log.info(
                    "worker-{number} was down: {count} UDP datagrams queued for it on "
                    "{description} got no echo",
                    event="udp.worker_down",
                    number=worker + 1,
                    count=count,
                    description=group.description,
                )

    def datagramStats(self) -> DatagramStats:
        total = self.reports.total()
        total.add(self.discarded)
        return total

    def workerDatagramStats(self) -> dict[str, DatagramStats]:
        return dict(self.reports.workers)


def _strerror(error: OSError | None) -> str:
    return ((error and error.strerror) or str(error)).lower()
