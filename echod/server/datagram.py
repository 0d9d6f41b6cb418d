# -*- test-case-name: tests.unit.test_udp,tests.integration.test_udp -*-
"""
The echo service of RFC 862 over UDP: each datagram goes back to its sender,
whole, unless the guards (L{echod.server.limits.DatagramGuard}) say no.

Datagrams are read and echoed in batches: L{DatagramEchoPort} is a reader
of the reactor's (C{addReader}, public API) that takes what the socket holds,
up to L{BATCH} datagrams per system call where echod's C helper is built
(C{recvmmsg}, then C{sendmmsg} of the echoes from the same buffers) and up to
L{ROUNDS} batches per reactor turn, so that TCP connections keep being
served during a flood.  Without the helper, L{PythonDatagramBatch} does the
same with C{recvfrom} and C{sendto}.  Both hand the guards the same
C{(host, port, size)} for each datagram, and L{DatagramEcho} applies them,
keeps the totals and logs the drops: one statement of the rules for both.

Nothing blocks and nothing queues: an echo the kernel will not take now (a
full send buffer) is dropped and counted (C{send_error}), as any send error.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Sequence
from typing import Protocol

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IListeningPort, IReactorFDSet, IReactorTime, IReadDescriptor
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from echod.config import UDPConfig
from echod.server.limits import DatagramDrop, DatagramGuard, LogBudget, logSummary
from echod.server.stats import DatagramStats

__all__ = [
    "BATCH",
    "BATCH_IN_C",
    "MAX_DATAGRAM",
    "ROUNDS",
    "DatagramEcho",
    "DatagramEchoPort",
    "PythonDatagramBatch",
    "datagramBatch",
    "datagramDropLog",
    "openDatagramSocket",
]

# The largest UDP payload (65,507 bytes over IPv4, 65,527 over IPv6) fits.
MAX_DATAGRAM = 65535
# Datagrams per system call, and batches per reactor turn.
BATCH = 64
ROUNDS = 4
# The kernel's default UDP receive buffer (~200 KiB) overflows at a burst of
# a thousand small datagrams before the reactor gets to read them.
UDP_RECEIVE_BUFFER = 4 * 1024 * 1024

Datagrams = Sequence[tuple[str, int, int]]
Failures = Sequence[tuple[int, int]]


class Batch(Protocol):
    """
    What L{DatagramEchoPort} reads and echoes with: C{receive()} gives
    C{(host, port, size)} for each datagram waiting (none: nothing waits),
    C{send(verdicts)} echoes datagram i where C{verdicts[i] == 0} and
    returns C{(i, errno)} for each echo the kernel refused.
    """

    def receive(self) -> Datagrams: ...

    def send(self, verdicts: bytes | bytearray, /) -> Failures: ...


class PythonDatagramBatch:
    """
    L{Batch} with C{recvfrom} and C{sendto}: where echod's C helper is not
    built.
    """

    def __init__(self, sock: socket.socket, capacity: int) -> None:
        self._socket = sock
        self._capacity = capacity
        self._held: list[tuple[bytes, tuple[str, int]]] = []

    def receive(self) -> Datagrams:
        held: list[tuple[bytes, tuple[str, int]]] = []
        recvfrom = self._socket.recvfrom
        for _ in range(self._capacity):
            try:
                held.append(recvfrom(MAX_DATAGRAM + 1))
            except (BlockingIOError, InterruptedError):
                break
        self._held = held
        return [(address[0], address[1], len(data)) for data, address in held]

    def send(self, verdicts: bytes | bytearray) -> Failures:
        failures = []
        sendto = self._socket.sendto
        for i, (data, address) in enumerate(self._held):
            if verdicts[i] == 0:
                try:
                    sendto(data, address)
                except OSError as e:
                    failures.append((i, e.errno or errno.EIO))
        self._held = []
        return failures


try:
    from echod.server import _inplace
except ImportError:  # built without a C compiler
    BATCH_IN_C = False
else:
    # Whether UDP datagrams are batched in echod's C helper (recvmmsg, sendmmsg).
    BATCH_IN_C = True


def datagramBatch(sock: socket.socket, capacity: int = BATCH) -> Batch:
    """
    The fastest L{Batch} here for C{sock}.
    """
    if BATCH_IN_C:
        return _inplace.DatagramBatch(sock.fileno(), capacity)
    return PythonDatagramBatch(sock, capacity)


class DatagramEcho:
    """
    The rules of the UDP echo applied to each batch: the guard's verdicts,
    the totals, the drop log.  One per service; every port shares it.
    """

    log = Logger()

    def __init__(self, guard: DatagramGuard, stats: DatagramStats, dropLog: LogBudget) -> None:
        self.guard = guard
        self.stats = stats
        self._dropLog = dropLog

    @classmethod
    def fromSettings(cls, settings: UDPConfig, clock: IReactorTime, share: int = 1) -> DatagramEcho:
        """
        The echo of C{[udp]}: its guard (holding 1/C{share} of the global
        rates: C{share} worker processes have one each), fresh totals and
        its drop log.
        """
        guard = DatagramGuard(settings, clock, share=share)
        return cls(guard, DatagramStats(), datagramDropLog(clock, settings))

    def reconfigure(self, settings: UDPConfig) -> None:
        """
        Apply a reloaded C{[udp]}: the guard's rules (its share stays) and the
        drop log's interval.
        """
        self.guard.reconfigure(settings)
        self._dropLog.interval = settings.drop_log_interval

    def flush(self) -> None:
        """
        Log the summary of the drops not yet summarised (at stop).
        """
        self._dropLog.flush()

    def decide(self, datagrams: Datagrams) -> bytearray:
        """
        The verdicts for C{datagrams} (0: echo it), counted as if every echo
        were sent (L{sendFailed} corrects that).
        """
        verdicts = self.guard.decide(datagrams)
        stats = self.stats
        stats.received += len(datagrams)
        if verdicts.count(0) == len(verdicts):
            stats.echoed += len(datagrams)
            stats.bytesEchoed += sum([size for _, _, size in datagrams])
            return verdicts
        reasons = self.guard.VERDICTS
        for verdict, (host, port, size) in zip(verdicts, datagrams, strict=True):
            if verdict == 0:
                stats.echoed += 1
                stats.bytesEchoed += size
            else:
                self._dropped(reasons[verdict], reasons[verdict], host, port, size)
        return verdicts

    def sendFailed(self, datagrams: Datagrams, failures: Failures) -> None:
        """
        The echoes of C{failures} (index, errno) were not sent: drops.
        """
        for index, error in failures:
            host, port, size = datagrams[index]
            self.stats.echoed -= 1
            self.stats.bytesEchoed -= size
            self._dropped(DatagramDrop.SEND_ERROR, os.strerror(error), host, port, size)

    def _dropped(
        self, reason: str | None, detail: str | None, host: str, port: int, size: int
    ) -> None:
        assert reason is not None
        self.stats.dropped[reason] += 1
        if self._dropLog.allow(reason):
            self.log.info(
                "no UDP echo to {source}: {reason} ({size} bytes)",
                event="datagram.dropped",
                source=_datagramSource(host, port),
                reason=detail,
                size=size,
            )


def _datagramSource(host: str, port: int) -> str:
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def datagramDropLog(clock: IReactorTime, settings: UDPConfig) -> LogBudget:
    """
    The budget for UDP drop lines: a few per interval, then one summary.
    """
    summary = logSummary(DatagramEcho.log, "UDP datagrams got no echo", "datagram.dropped.summary")
    return LogBudget(clock, summary, perInterval=5, interval=settings.drop_log_interval)


def openDatagramSocket(port: int, interface: str, reusePort: bool = False) -> socket.socket:
    """
    A non-blocking UDP socket bound to C{interface}:C{port}: IPv6 where the
    interface is an IPv6 address, dual-stack on C{::} whatever the host's
    C{bindv6only}; C{SO_REUSEPORT} if asked (one socket per worker).

    @raise OSError: it cannot be bound.
    """
    family = socket.AF_INET6 if ":" in interface else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6 and interface == "::":
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        if reusePort:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((interface or "0.0.0.0", port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def enlargeReceiveBuffer(sock: socket.socket) -> None:
    """
    Ask for L{UDP_RECEIVE_BUFFER}; as root, past C{net.core.rmem_max} too.
    """
    for option in (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF):
        if option is None:
            continue
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, UDP_RECEIVE_BUFFER)
            return
        except OSError:
            continue


@implementer(IListeningPort, IReadDescriptor)
class DatagramEchoPort:
    """
    One UDP socket, echoed in batches: a reader of the reactor's.  It owns
    the socket (closed by L{stopListening}).
    """

    log = Logger()

    def __init__(
        self,
        sock: socket.socket,
        echo: DatagramEcho,
        reactor: IReactorFDSet,
        batch: Batch | None = None,
    ) -> None:
        self.socket = sock
        self.echo = echo
        self.reactor = reactor
        self.batch = batch if batch is not None else datagramBatch(sock)
        self._fileno = sock.fileno()
        self._reading = False
        self._errors = 0

    # IListeningPort

    def startListening(self) -> None:
        if not self._reading:
            self._reading = True
            self.reactor.addReader(self)

    def stopListening(self) -> Deferred[None]:
        if self._reading:
            self._reading = False
            self.reactor.removeReader(self)
        if self._fileno != -1:
            self._fileno = -1
            self.socket.close()
        return succeed(None)

    def getHost(self) -> IPv4Address | IPv6Address:
        host, port = self.socket.getsockname()[:2]
        if self.socket.family == socket.AF_INET6:
            return IPv6Address("UDP", host, port)
        return IPv4Address("UDP", host, port)

    # IReadDescriptor

    def fileno(self) -> int:
        return self._fileno

    def logPrefix(self) -> str:
        return "DatagramEchoPort"

    def doRead(self) -> None:
        batch, echo = self.batch, self.echo
        for _ in range(ROUNDS):
            try:
                datagrams = batch.receive()
            except OSError as e:
                # A pending error of the socket (an ICMP error queued by the
                # kernel, say): the socket still works.  Logged, not fatal.
                self._errors += 1
                if self._errors <= 5:
                    self.log.warn(
                        "UDP receive error on {address}: {error}",
                        event="datagram.receive_error",
                        address=self.getHost(),
                        error=e,
                    )
                return
            if not datagrams:
                return
            failures = batch.send(echo.decide(datagrams))
            if failures:
                echo.sendFailed(datagrams, failures)
            if len(datagrams) < BATCH:
                return  # the socket is empty: no extra system call to learn it

    def connectionLost(self, reason: Failure) -> None:
        # The reactor calls this when doRead raised or the descriptor went
        # bad: stop and close, as a port does.
        self.stopListening()
