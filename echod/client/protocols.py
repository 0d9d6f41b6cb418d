# -*- test-case-name: tests.unit.test_client -*-
"""
The TCP protocols of a run and their factory: ping and one-shot
(L{EchoClientProtocol}), bulk (L{BulkEchoProtocol}).

Echo is a byte stream: a reply may arrive split over several reads or joined
with the next one, so replies are matched to messages by byte counts, never by
read boundaries.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet import error as _error
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress, IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from echod.addresses import describePeer
from echod.client.bulk import BulkPattern
from echod.client.errors import ClientError, ClosedEarly, ConnectFailed, Mismatched, TimedOut
from echod.client.plan import Plan
from echod.client.report import Reporter, Summary, describeDifference

__all__ = [
    "BULK_WINDOW",
    "BulkEchoProtocol",
    "ClientProtocol",
    "EchoClientFactory",
    "EchoClientProtocol",
]

# Bulk mode: at most this many bytes sent but not yet verified (the memory
# the client holds is about twice this).
BULK_WINDOW = 4 * 1024 * 1024


class _Deadline:
    """
    One timer on the run's clock (never the global reactor), re-armed cheaply.

    Not L{TimeoutMixin}: a reply's deadline runs from when its message was
    sent, so re-arming needs the time left, not the whole period again.
    """

    def __init__(self, clock: IReactorTime, expired: Callable[[], None]) -> None:
        self._clock = clock
        self._expired = expired
        self._call: IDelayedCall | None = None

    def arm(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        if self._call is not None and self._call.active():
            self._call.reset(seconds)
        else:
            self._call = self._clock.callLater(seconds, self._fire)

    def _fire(self) -> None:
        self._call = None
        self._expired()

    def cancel(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None


def _tlsProblem(reason: Failure) -> str | None:
    """
    What went wrong in TLS (a failed handshake, a bad certificate), if that
    is what ended the connection: C{tls:} endpoints report it only as the
    reason the connection was lost.
    """
    value = reason.value
    if value is None or not type(value).__module__.startswith("OpenSSL"):
        return None
    details = value.args[0] if value.args else None
    if isinstance(details, list):
        texts = [str(item[-1]) for item in details if isinstance(item, tuple) and item]
        if texts:
            return "; ".join(texts)
    return str(value) or type(value).__name__


class ClientProtocol(Protocol):
    """
    What every mode shares: the summary, the reply deadline, and closing.
    L{finished} fires once the connection is closed; L{error} then says why
    the run failed, or is L{None}.
    """

    factory: EchoClientFactory
    transport: Any
    log = Logger()

    def __init__(self) -> None:
        self.finished: Deferred[None] = Deferred()
        self.error: ClientError | None = None
        self._closing = False
        self._deadline: _Deadline | None = None

    @property
    def clock(self) -> IReactorTime:
        return self.factory.clock

    @property
    def summary(self) -> Summary:
        return self.factory.summary

    def connectionMade(self) -> None:
        self._deadline = _Deadline(self.clock, self.replyTimedOut)
        self.summary.peer = describePeer(self.transport.getPeer())
        self.factory.reporter.connected(self.summary)
        self.summary.started = self.clock.seconds()
        self.log.debug("connected to {peer}", peer=self.summary.peer)
        self.start()

    def start(self) -> None:
        raise NotImplementedError()

    def replyTimedOut(self) -> None:
        raise NotImplementedError()

    def done(self, error: ClientError | None = None, abort: bool = False) -> None:
        """
        Stop the run: close (or, on a fault, abort) the connection; L{finished}
        fires when it is closed.
        """
        if self._closing:
            return
        self._closing = True
        self.error = error
        self.summary.ended = self.clock.seconds()
        if self._deadline is not None:
            self._deadline.cancel()
        self.stopSending()
        if abort:
            self.transport.abortConnection()
        else:
            self.transport.loseConnection()

    def stopSending(self) -> None:
        """
        Cancel whatever would send more.
        """

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self._closing:
            self._closing = True
            self.summary.ended = self.clock.seconds()
            if self._deadline is not None:
                self._deadline.cancel()
            self.stopSending()
            tls = _tlsProblem(reason)
            if tls is not None:
                self.error = ConnectFailed(f"TLS with {self.factory.plan.target} failed: {tls}")
            else:
                self.error = ClosedEarly(self.closedEarly(reason))
        self.finished.callback(None)

    def closedEarly(self, reason: Failure) -> str:
        raise NotImplementedError()

    @staticmethod
    def _how(reason: Failure) -> str:
        if reason.check(_error.ConnectionDone):
            return "closed the connection"
        if reason.check(_error.ConnectionLost):
            return "reset the connection"
        return f"lost the connection ({reason.getErrorMessage()})"


class EchoClientProtocol(ClientProtocol):
    """
    One-shot and ping modes: send the same payload C{count} times,
    C{interval} seconds apart (or each as soon as the previous reply is back,
    for an interval of 0), and match what comes back to the oldest
    unanswered message, byte for byte.

    Each reply must be complete within C{timeout} seconds of its message being
    sent; the first that is not ends the run with L{TimedOut}.
    """

    def __init__(self) -> None:
        super().__init__()
        self._outstanding: deque[tuple[int, float]] = deque()
        self._offset = 0
        self._problem: str | None = None
        self._reply: list[bytes] | None = None
        self._nextSend: IDelayedCall | None = None

    def start(self) -> None:
        plan = self.factory.plan
        self._payload = plan.payload
        self._count = plan.settings.count
        self._interval = plan.settings.interval
        self._timeout = plan.settings.timeout
        if plan.mode == "once":
            self._reply = []
        self.summary.payloadSize = len(self._payload)
        self._send()

    def _send(self) -> None:
        self._nextSend = None
        if self._closing:
            return
        stats = self.summary.stats
        stats.sent += 1
        now = self.clock.seconds()
        self._outstanding.append((stats.sent, now))
        self.transport.write(self._payload)
        if len(self._outstanding) == 1:
            self._armDeadline()
        if stats.sent < self._count and self._interval > 0:
            self._nextSend = self.clock.callLater(self._interval, self._send)

    def _armDeadline(self) -> None:
        assert self._deadline is not None
        if self._outstanding:
            _, sentAt = self._outstanding[0]
            self._deadline.arm(sentAt + self._timeout - self.clock.seconds())
        else:
            self._deadline.cancel()

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        payload = self._payload
        size = len(payload)
        position = 0
        while position < len(data):
            if not self._outstanding:
                extra = len(data) - position
                self.done(
                    Mismatched(
                        f"the server sent {extra} bytes more than it was sent "
                        f"(after reply {self.summary.stats.received})"
                    ),
                    abort=True,
                )
                return
            take = min(size - self._offset, len(data) - position)
            piece = data[position : position + take]
            if self._problem is None and not payload.startswith(piece, self._offset):
                self._problem = self._describe(piece)
            if self._reply is not None:
                self._reply.append(piece)
            self._offset += take
            position += take
            if self._offset == size:
                self._replied()
        if self.summary.stats.received == self._count:
            self.done()

    def _describe(self, piece: bytes) -> str:
        expected = self._payload[self._offset : self._offset + len(piece)]
        index = next(i for i, (a, b) in enumerate(zip(expected, piece, strict=True)) if a != b)
        return describeDifference(
            expected[index : index + 1], piece[index : index + 1], self._offset + index
        )

    def _replied(self) -> None:
        seq, sentAt = self._outstanding.popleft()
        rtt = self.clock.seconds() - sentAt
        problem, self._problem = self._problem, None
        self._offset = 0
        self.summary.stats.add(rtt, problem is None)
        reply = None
        if self._reply is not None:
            reply = b"".join(self._reply)
            self._reply = []
        if problem is not None and self.summary.firstProblem is None:
            self.summary.firstProblem = problem
        self.factory.reporter.replied(self.summary, seq, rtt, reply, problem)
        self._armDeadline()
        stats = self.summary.stats
        if self._interval == 0 and stats.received == stats.sent < self._count:
            self._send()

    def replyTimedOut(self) -> None:
        seq, _ = self._outstanding[0]
        got = f" ({self._offset} of {len(self._payload)} bytes came back)" if self._offset else ""
        self.done(
            TimedOut(f"no reply to message {seq} within {self._timeout:g} s{got}"), abort=True
        )

    def stopSending(self) -> None:
        if self._nextSend is not None and self._nextSend.active():
            self._nextSend.cancel()
        self._nextSend = None

    def closedEarly(self, reason: Failure) -> str:
        stats = self.summary.stats
        partial = f", {self._offset} bytes of reply {stats.received + 1}" if self._offset else ""
        return (
            f"the server {self._how(reason)} after {stats.received} of {self._count} "
            f"replies{partial}"
        )


@implementer(IPushProducer)
class BulkEchoProtocol(ClientProtocol):
    """
    Bulk mode: a streaming producer for its own transport.  It writes the
    pattern while the transport wants more (the transport pauses it when its
    buffer is full) and while fewer than L{BULK_WINDOW} bytes are unverified;
    replies are checked as they arrive, so neither side of the payload is
    ever held whole.  Data must keep coming back: C{timeout} seconds without
    progress end the run with L{TimedOut}.
    """

    def __init__(self, window: int = BULK_WINDOW) -> None:
        super().__init__()
        self._window = window
        self._paused = False
        self._producing = False
        self.sent = 0
        self.verified = 0

    def start(self) -> None:
        settings = self.factory.plan.settings
        self._total = settings.bulk
        self._timeout = settings.timeout
        self._sendPattern = BulkPattern(self._total)
        self._checkPattern = BulkPattern(self._total)
        self.summary.bulkBytes = self._total
        self.transport.registerProducer(self, True)
        self._produce()

    def _produce(self) -> None:
        if self._producing:
            return
        self._producing = True
        try:
            while (
                not self._paused
                and not self._closing
                and self.sent < self._total
                and self.sent - self.verified < self._window
            ):
                room = self._window - (self.sent - self.verified)
                data = self._sendPattern.slice(self.sent, min(room, self._total - self.sent))
                wasIdle = self.sent == self.verified
                self.sent += len(data)
                self.summary.bytesSent = self.sent
                if wasIdle:
                    assert self._deadline is not None
                    self._deadline.arm(self._timeout)
                self.transport.write(data)
        finally:
            self._producing = False

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._produce()

    def stopProducing(self) -> None:
        self._paused = True

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        problem = self._checkPattern.mismatch(self.verified, data)
        if problem is not None or self.verified + len(data) > self.sent:
            self.done(Mismatched(f"the echoed stream differs: {problem}"), abort=True)
            return
        self.verified += len(data)
        self.summary.bytesVerified = self.verified
        assert self._deadline is not None
        if self.verified == self._total:
            self.done()
            return
        if self.verified == self.sent:
            self._deadline.cancel()
        else:
            self._deadline.arm(self._timeout)
        self._produce()

    def stopSending(self) -> None:
        self._paused = True
        self.transport.unregisterProducer()

    def replyTimedOut(self) -> None:
        self.done(
            TimedOut(
                f"no echo for {self._timeout:g} s with {self.sent - self.verified} bytes "
                f"outstanding ({self.verified} of {self._total} verified)"
            ),
            abort=True,
        )

    def closedEarly(self, reason: Failure) -> str:
        return (
            f"the server {self._how(reason)} after {self.verified} of {self._total} "
            "bytes were echoed"
        )


if TYPE_CHECKING:
    _ClientProtocolFactory = Factory[ClientProtocol]
else:  # Twisted's Factory is generic at run time from 26.4 on only
    _ClientProtocolFactory = Factory


class EchoClientFactory(_ClientProtocolFactory):
    """
    Builds the protocol of the plan's mode and hands it the plan, the clock,
    the summary and the reporter: the only way they reach it.
    """

    noisy = False

    def __init__(self, plan: Plan, clock: IReactorTime, reporter: Reporter) -> None:
        self.plan = plan
        self.clock = clock
        self.reporter = reporter
        self.summary = Summary(plan.mode, plan.target)
        if plan.mode == "bulk":
            self.summary.bulkBytes = plan.settings.bulk
        else:
            self.summary.payloadSize = len(plan.payload)

    def buildProtocol(self, addr: IAddress | None) -> ClientProtocol | None:
        protocol: ClientProtocol
        protocol = BulkEchoProtocol() if self.plan.mode == "bulk" else EchoClientProtocol()
        protocol.factory = self
        return protocol
