# -*- test-case-name: tests.unit.test_client_datagram -*-
"""
The client over UDP: the datagrams it builds, the protocol that sends them and
matches each reply to the datagram it answers (L{DatagramEchoProtocol}), and
a run over the addresses of a name (L{DatagramClient}).

A datagram the client builds starts with a header: 4 bytes C{echd}, a 32-bit
number chosen for the run, the 64-bit sequence number and the send time (a
64-bit float, in seconds); then the message repeated to the size asked for.
A reply is that datagram's if the header names it, and it must equal it byte
for byte.  A payload of the user's own is sent as it is, the same in every
datagram, and a reply answers the oldest datagram still waiting.

The socket is connected to the address tried: the kernel drops datagrams from
any other address, and an ICMP port unreachable comes back as a refusal.
Twisted's poll and epoll reactors do not pass that refusal on: they see the
socket's error as a hang-up and close the port (twisted#5377, #6467), so
L{DatagramEchoProtocol.stopProtocol} reads the error before the socket is
closed.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections import deque
from typing import IO, Any

from twisted.internet import error as _error
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IHostnameResolver, IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from echod.addresses import describePeer
from echod.client.connect import connectFailure, resolveAddresses
from echod.client.errors import (
    ClientError,
    ConnectFailed,
    InternalError,
    Interrupted,
    LossExceeded,
    TimedOut,
    TooLarge,
)
from echod.client.plan import BUILT_HEADER, MAX_DATAGRAM_IPV4, Plan
from echod.client.report import Reporter, Summary, describeDifference
from echod.client.statistics import DatagramStats, ReplyKind
from echod.interfaces import IClientReactor

__all__ = ["MAGIC", "DatagramClient", "DatagramEchoProtocol", "builtDatagram"]

MAGIC = b"echd"
_PREFIX = struct.Struct("!4sI")
_STAMP = struct.Struct("!Qd")
assert _PREFIX.size + _STAMP.size == BUILT_HEADER

# Twisted's default of 8192 would cut longer replies short, and a cut reply
# would look like the server's fault.
MAX_PACKET = 65535
# Replies of a flood wait here while the client is busy: as echod's own.
_RECEIVE_BUFFER = 4 * 1024 * 1024
# A send the kernel could not take at once (its buffer full) is tried again.
_RETRY_SECONDS = 0.001
# Deadlines are compared with this much slack: a timer set for a deadline
# may fire a rounding error before it.
_SLACK = 1e-9


def builtDatagram(nonce: int, seq: int, sentAt: float, fill: bytes) -> bytes:
    """
    The datagram the client builds for message C{seq} sent at C{sentAt}.
    """
    return _PREFIX.pack(MAGIC, nonce) + _STAMP.pack(seq, sentAt) + fill


def _difference(expected: bytes, received: bytes) -> str:
    for index, (a, b) in enumerate(zip(expected, received, strict=False)):
        if a != b:
            return describeDifference(bytes([a]), bytes([b]), index)
    return f"sent {len(expected)} bytes, received {len(received)}"


class DatagramEchoProtocol(DatagramProtocol):
    """
    One-shot and ping over UDP, against one address: send C{count}
    datagrams C{interval} seconds apart (for an interval of 0, keep C{window}
    of them in flight), match each reply to its datagram, check it byte for
    byte, count and report it.  A datagram without a reply C{timeout} seconds
    after it was sent is lost.

    L{finished} fires once the run against this address is over: every
    datagram answered or lost, or refused, or interrupted; L{error} then says
    why it failed, if it did.  With C{fallBack}, an address that refuses or
    has not answered anything by its first datagram's deadline is given up:
    L{gaveUp} says why, for the next address to be tried.
    """

    log = Logger()
    # Not a line per port opened and closed: the monitor opens one a round.
    noisy = False

    def __init__(
        self,
        plan: Plan,
        clock: IReactorTime,
        reporter: Reporter,
        summary: Summary,
        nonce: int,
        fallBack: bool = False,
    ) -> None:
        self.plan = plan
        self.clock = clock
        self.reporter = reporter
        self.summary = summary
        self.fallBack = fallBack
        self.finished: Deferred[None] = Deferred()
        self.error: ClientError | None = None
        self.gaveUp: str | None = None
        self.refused = False
        settings = plan.settings
        self._count = settings.count
        self._interval = settings.interval
        self._window = settings.window if settings.interval == 0 else self._count
        self._timeout = settings.timeout
        self._built = plan.built
        self._payload = plan.payload
        self._prefix = _PREFIX.pack(MAGIC, nonce)
        self._nonce = nonce
        self.stats = DatagramStats() if plan.built else DatagramStats.unordered()
        summary.stats = self.stats
        self._heard = False
        self._ended = False
        # Messages in the order sent, for their deadlines (answered ones are
        # dropped when they reach the front).
        self._expiring: deque[int] = deque()
        # A payload of the user's own: the messages still waiting, oldest
        # first, and the lost ones no late reply has claimed yet.
        self._waiting: deque[int] = deque()
        self._unclaimed: deque[int] = deque()
        self._lastAnswered = 0
        self._expiry: IDelayedCall | None = None
        self._next: IDelayedCall | None = None
        self._handle: socket.socket | None = None

    # --- sending ------------------------------------------------------------

    def begin(self) -> None:
        """
        Start sending; the transport is connected to the address to try.
        """
        self._handle = self.transport.getHandle()  # type: ignore[union-attr]
        self.summary.started = self.clock.seconds()
        self.reporter.connected(self.summary)
        if self._interval > 0:
            self._tick()
        else:
            self._pump()

    def _tick(self) -> None:
        """
        Interval mode: one datagram now, the next at its time.
        """
        self._next = None
        if self._ended:
            return
        if not self._send():
            return
        if self.stats.sent < self._count:
            assert self.summary.started is not None
            due = self.summary.started + self.stats.sent * self._interval
            self._next = self.clock.callLater(max(0.0, due - self.clock.seconds()), self._tick)

    def _pump(self) -> None:
        """
        Flood mode: fill the window; end once everything is answered or
        lost.
        """
        self._next = None
        stats = self.stats
        while not self._ended and stats.sent < self._count and stats.inFlight < self._window:
            if not self._send():
                return
        self._endIfDone()

    def _resume(self) -> None:
        if self._interval > 0:
            self._tick()
        else:
            self._pump()

    def _send(self) -> bool:
        """
        Send the next datagram; L{False} if it could not be sent now (it is
        tried again shortly) or the run ended.
        """
        stats = self.stats
        now = self.clock.seconds()
        seq = stats.sent + 1
        if self._built:
            data = self._prefix + _STAMP.pack(seq, now) + self._payload
        else:
            data = self._payload
        transport = self.transport
        if transport is None:
            return False
        try:
            transport.write(data)  # type: ignore[call-arg]
        except _error.MessageLengthError:
            self._end(
                TooLarge(
                    f"a datagram of {len(data)} bytes is too large for IPv4 "
                    f"(at most {MAX_DATAGRAM_IPV4}): use a smaller --size"
                )
            )
            return False
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS):
                self._next = self.clock.callLater(_RETRY_SECONDS, self._resume)
                return False
            self._end(ConnectFailed(f"cannot send to {self.summary.peer}: {_reason(e)}"))
            return False
        if self._ended:
            # Refused while sending: the datagram never left.
            return False
        stats.recordSent(now)
        if not self._built:
            self._waiting.append(seq)
        self._expiring.append(seq)
        if self._expiry is None:
            self._expiry = self.clock.callLater(self._timeout, self._expire)
        return True

    # --- replies ------------------------------------------------------------

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        if self._ended:
            return
        self._heard = True
        now = self.clock.seconds()
        if self._built:
            self._matchBuilt(datagram, now)
        else:
            self._matchContent(datagram, now)

    def _matchBuilt(self, datagram: bytes, now: float) -> None:
        stats = self.stats
        seq = 0
        if len(datagram) >= BUILT_HEADER and datagram.startswith(self._prefix):
            seq = _STAMP.unpack_from(datagram, _PREFIX.size)[0]
        if not 1 <= seq <= stats.sent:
            self._stray(datagram)
            return
        expected = builtDatagram(self._nonce, seq, stats.sentAt(seq), self._payload)
        self._counted(seq, datagram, expected, now)

    def _matchContent(self, datagram: bytes, now: float) -> None:
        matched = datagram == self._payload
        if self._waiting:
            seq = self._waiting.popleft()
        elif matched and self._unclaimed:
            seq = self._unclaimed.popleft()
        elif matched and self._lastAnswered:
            seq = self._lastAnswered
        else:
            self._stray(datagram)
            return
        self._counted(seq, datagram, self._payload, now)

    def _counted(self, seq: int, datagram: bytes, expected: bytes, now: float) -> None:
        matched = datagram == expected
        problem = None if matched else _difference(expected, datagram)
        if problem is not None and self.summary.firstProblem is None:
            self.summary.firstProblem = problem
        counted = self.stats.recordReply(seq, now, matched)
        self.reporter.datagramReplied(self.summary, seq, datagram, counted, problem)
        if counted.kind is ReplyKind.ANSWER:
            self._lastAnswered = seq
            if self._interval == 0:
                self._pump()
            else:
                self._endIfDone()

    def _stray(self, datagram: bytes) -> None:
        self.stats.recordStray()
        if self.summary.firstProblem is None:
            self.summary.firstProblem = "a reply to no datagram sent"
        self.reporter.datagramStray(self.summary, datagram)

    # --- deadlines ----------------------------------------------------------

    def _expire(self) -> None:
        """
        Datagrams whose deadline passed are lost; the timer is set again
        for the oldest still waiting.
        """
        self._expiry = None
        stats = self.stats
        now = self.clock.seconds()
        expiring = self._expiring
        while expiring and not self._ended:
            seq = expiring[0]
            if not stats.isPending(seq):
                expiring.popleft()
                continue
            deadline = stats.sentAt(seq) + self._timeout
            if deadline > now + _SLACK:
                self._expiry = self.clock.callLater(deadline - now, self._expire)
                break
            expiring.popleft()
            stats.expire(seq)
            if not self._built:
                self._waiting.popleft()
                self._unclaimed.append(seq)
            if seq == 1 and not self._heard and self.fallBack:
                self._giveUp(f"sent no reply within {self._timeout:g} s")
                return
            self.reporter.datagramLost(self.summary, seq)
        if self._interval == 0:
            self._pump()
        else:
            self._endIfDone()

    # --- ending -------------------------------------------------------------

    def connectionRefused(self) -> None:
        """
        An ICMP port unreachable came back for a datagram sent.
        """
        if self._ended:
            return
        self.refused = True
        if not self._heard and self.fallBack:
            self._giveUp("refused (ICMP port unreachable)")
        else:
            self._end(None)

    def stopProtocol(self) -> None:
        """
        The port closed.  Before the run ended, that is the reactor's doing:
        the socket had an error (from an ICMP message), which it took for a
        hang-up; the socket is still open, so the error can be read.
        """
        if self._ended:
            return
        code = 0
        if self._handle is not None:
            try:
                code = self._handle.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            except OSError as e:
                code = e.errno or 0
        if code == errno.ECONNREFUSED:
            self.connectionRefused()
        elif not self._heard and self.fallBack:
            self._giveUp(f"cannot be reached ({_reason(OSError(code, os.strerror(code)))})")
        else:
            detail = os.strerror(code).lower() if code else "the socket was closed"
            self._end(ConnectFailed(f"cannot reach {self.summary.peer}: {detail}"))

    def _giveUp(self, why: str) -> None:
        self.gaveUp = why
        self._end(None)

    def _endIfDone(self) -> None:
        if self.stats.sent == self._count and self.stats.inFlight == 0:
            self._end(None)

    def interrupt(self, error: ClientError) -> None:
        self._end(error)

    def _end(self, error: ClientError | None) -> None:
        if self._ended:
            return
        self._ended = True
        self.error = error
        self.summary.ended = self.clock.seconds()
        for call in (self._expiry, self._next):
            if call is not None and call.active():
                call.cancel()
        self._expiry = self._next = None
        self.finished.callback(None)


def _reason(e: OSError) -> str:
    text = e.strerror or str(e)
    return text.rstrip(".").lower()


def _enlargeReceiveBuffer(handle: socket.socket) -> None:
    """
    As much of L{_RECEIVE_BUFFER} as this process may have (all of it with
    CAP_NET_ADMIN); the default is kept when it cannot be changed.
    """
    for option in (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF):
        if option is None:
            continue
        try:
            handle.setsockopt(socket.SOL_SOCKET, option, _RECEIVE_BUFFER)
            return
        except OSError:
            continue


class DatagramClient:
    """
    One run over UDP: resolve the host (within C{timeout}), then try its
    addresses in the resolver's order, the next one only when an address
    refuses or answers nothing by its first datagram's deadline, and report.
    L{run} fires with the L{Summary}, never fails.

    The summary is of the address that answered (or the last tried): the
    datagrams sent to an address given up are not counted.
    """

    log = Logger()

    def __init__(
        self,
        reactor: IClientReactor,
        plan: Plan,
        out: IO[str],
        err: IO[str],
        resolver: IHostnameResolver | None = None,
        nonce: int | None = None,
    ) -> None:
        self._reactor = reactor
        self.plan = plan
        self.reporter = Reporter(plan, out, err)
        self._resolver = resolver
        self._nonce = int.from_bytes(os.urandom(4), "big") if nonce is None else nonce
        self.summary = Summary(plan.mode, plan.target, protocol="udp")
        self.summary.payloadSize = plan.messageSize
        self.summary.matchedBy = "sequence" if plan.built else "content"
        self.summary.window = plan.settings.window if plan.settings.interval == 0 else 1
        self.summary.stats = DatagramStats() if plan.built else DatagramStats.unordered()
        self._addresses: list[IPv4Address | IPv6Address] = []
        self._protocol: DatagramEchoProtocol | None = None
        self._resolving: Deferred[Any] | None = None
        self._result: Deferred[Summary] | None = None

    def run(self) -> Deferred[Summary]:
        result: Deferred[Summary] = Deferred()
        self._result = result
        settings = self.plan.settings
        try:
            resolving = resolveAddresses(self._reactor, self.plan, self._resolver)
        except Exception as e:
            self._end(connectFailure(Failure(e), self.plan))
            return result
        self._resolving = resolving
        deadline = self._reactor.callLater(settings.timeout, self._resolveTimedOut)

        def resolved(addresses: list[IPv4Address | IPv6Address]) -> None:
            if self._resolving is not resolving:
                return
            self._resolving = None
            if deadline.active():
                deadline.cancel()
            if not addresses:
                self._end(connectFailure(Failure(_error.DNSLookupError(settings.host)), self.plan))
                return
            self._addresses = addresses
            self._try(0)

        def crashed(reason: Failure) -> None:
            self.log.failure("echod-client failed", reason)
            if deadline.active():
                deadline.cancel()
            self._end(InternalError(f"internal error: {reason.getErrorMessage()}"))

        resolving.addCallback(resolved).addErrback(crashed)
        return result

    def _resolveTimedOut(self) -> None:
        if self._resolving is not None:
            self._resolving = None
            self._end(
                TimedOut(
                    f"could not resolve {self.plan.settings.host} within "
                    f"{self.plan.settings.timeout:g} s"
                )
            )

    def _try(self, index: int) -> None:
        address = self._addresses[index]
        peer = describePeer(address)
        self.summary.peer = peer
        self.summary.tried.append(address.host)
        protocol = DatagramEchoProtocol(
            self.plan,
            self._reactor,
            self.reporter,
            self.summary,
            self._nonce,
            fallBack=index + 1 < len(self._addresses),
        )
        self._protocol = protocol
        ipv6 = isinstance(address, IPv6Address)
        try:
            # A udp.Port: connect() and getHandle() are not in IListeningPort.
            port: Any = self._reactor.listenUDP(
                0, protocol, interface="::" if ipv6 else "0.0.0.0", maxPacketSize=MAX_PACKET
            )
        except _error.CannotListenError as e:
            self._protocol = None
            self._next(index, f"cannot be reached: {_reason(e.socketError)}", None)
            return
        _enlargeReceiveBuffer(port.getHandle())
        try:
            port.connect(address.host, address.port)
        except OSError as e:
            protocol.interrupt(ConnectFailed(f"cannot reach {peer}: {_reason(e)}"))
        else:
            protocol.begin()
        protocol.finished.addCallback(lambda _: self._ended(index, protocol, port))

    def _ended(self, index: int, protocol: DatagramEchoProtocol, port: Any) -> Deferred[None]:
        stopped: Deferred[None] = maybeDeferred(port.stopListening)

        def closed(_: object) -> None:
            self._protocol = None
            if protocol.gaveUp is not None and protocol.error is None:
                self._next(index, protocol.gaveUp, protocol)
            else:
                self._end(self._verdict(protocol))

        return stopped.addCallback(closed)

    def _next(self, index: int, why: str, protocol: DatagramEchoProtocol | None) -> None:
        if index + 1 < len(self._addresses) and self._result is not None:
            nextPeer = describePeer(self._addresses[index + 1])
            self.reporter.fallingBack(self.summary, why, nextPeer)
            self._try(index + 1)
        else:
            self._end(ConnectFailed(f"{self.plan.target}: {self.summary.peer} {why}"))

    def _tried(self) -> str:
        return ", ".join(dict.fromkeys(self.summary.tried))

    def _verdict(self, protocol: DatagramEchoProtocol) -> ClientError | None:
        """
        Why the run failed, if it did: what ended it, else its loss.
        """
        if protocol.error is not None:
            return protocol.error
        stats = protocol.stats
        settings = self.plan.settings
        if protocol.refused:
            after = f" after {stats.received} of {stats.sent} replies" if stats.received else ""
            return ConnectFailed(
                f"refused by {self.plan.target}{after} (ICMP port unreachable; "
                f"tried {self._tried()})"
            )
        if not stats.lossPercent > settings.max_loss:
            return None
        if stats.received == 0:
            late = f"; {stats.late} came later" if stats.late else ""
            what = "the datagram" if stats.sent == 1 else f"any of {stats.sent} datagrams"
            return TimedOut(
                f"no reply to {what} within {settings.timeout:g} s{late} (tried {self._tried()})"
            )
        allowed = f"{settings.max_loss:g}%"
        return LossExceeded(
            f"{stats.lost} of {stats.sent} datagrams lost ({stats.lossPercent:.1f}%, "
            f"more than the {allowed} allowed)"
        )

    def _end(self, error: ClientError | None) -> None:
        self.summary.error = error
        result, self._result = self._result, None
        if result is None:
            return
        self.reporter.finished(self.summary)
        result.callback(self.summary)

    def interrupt(self) -> Deferred[Summary] | None:
        """
        Stop now (Ctrl-C, SIGTERM, the service stopping): print what there is.
        Returns the run's result if it is still to come.
        """
        result = self._result
        if result is None:
            return None
        if self._protocol is not None:
            stats = self._protocol.stats
            self._protocol.interrupt(
                Interrupted(f"interrupted after {stats.received} of {stats.sent} replies")
            )
        else:
            resolving, self._resolving = self._resolving, None
            self._end(Interrupted("interrupted while resolving" if resolving else "interrupted"))
        return result
