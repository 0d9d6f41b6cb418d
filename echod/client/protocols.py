# -*- test-case-name: tests.unit.test_client -*-
"""
The TCP protocols of a run and their factory: ping and one-shot
(L{EchoClientProtocol}), bulk (L{BulkEchoProtocol}).

Echo is a byte stream: a reply may arrive split over several reads or joined
with the next one, so replies are matched to messages by byte counts, never by
read boundaries.

Still here, to be split next: connecting, one whole run, and the twistd service.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
from collections import deque
from collections.abc import Callable, Sequence
from typing import IO, Any

from twisted.application.service import Service
from twisted.internet import error as _error
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHostnameResolver,
    IHostResolution,
    IPushProducer,
    IReactorPluggableNameResolver,
    IReactorTime,
    IResolutionReceiver,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import ILogObserver, Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from echod.addresses import describePeer
from echod.client.bulk import BulkPattern
from echod.client.errors import (
    ClientError,
    ClosedEarly,
    ConnectFailed,
    ExitStatus,
    InternalError,
    Interrupted,
    Mismatched,
    NameNotResolved,
    TimedOut,
)
from echod.client.plan import Plan
from echod.client.report import Reporter, Summary, describeDifference
from echod.config import endpointParameters, tcp6ClientParameters
from echod.logs import offerToTwistd

__all__ = [
    "BULK_WINDOW",
    "BulkEchoProtocol",
    "ClientProtocol",
    "EchoClient",
    "EchoClientFactory",
    "EchoClientProtocol",
    "EchoClientService",
    "RecordingResolver",
    "connectFailure",
    "endpointFor",
    "runClient",
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


class EchoClientFactory(Factory[ClientProtocol]):
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


_FAMILIES: dict[str, Sequence[type[IAddress]] | None] = {
    "any": None,
    "ipv4": [IPv4Address],
    "ipv6": [IPv6Address],
}


@implementer(IHostnameResolver)
class RecordingResolver:
    """
    The reactor's resolver (or one handed in), restricted to one address
    family for C{-4}/C{-6}, and recording the addresses it found for error
    messages.
    """

    def __init__(
        self, resolver: IHostnameResolver, addressTypes: Sequence[type[IAddress]] | None
    ) -> None:
        self._resolver = resolver
        self._addressTypes = addressTypes
        self.addresses: list[IAddress] = []

    def resolveHostName(
        self,
        resolutionReceiver: IResolutionReceiver,
        hostName: str,
        portNumber: int = 0,
        addressTypes: Sequence[type[IAddress]] | None = None,
        transportSemantics: str = "TCP",
    ) -> IHostResolution:
        found = self.addresses

        @implementer(IResolutionReceiver)
        class Recording:
            def resolutionBegan(self, resolutionInProgress: IHostResolution) -> None:
                resolutionReceiver.resolutionBegan(resolutionInProgress)

            def addressResolved(self, address: IAddress) -> None:
                found.append(address)
                resolutionReceiver.addressResolved(address)

            def resolutionComplete(self) -> None:
                resolutionReceiver.resolutionComplete()

        return self._resolver.resolveHostName(
            Recording(),
            hostName,
            portNumber,
            self._addressTypes if self._addressTypes is not None else addressTypes,
            transportSemantics,
        )


@implementer(IReactorPluggableNameResolver)
class _ResolvingReactor:
    """
    The reactor as L{HostnameEndpoint} sees it: the same in every way but its
    C{nameResolver}.  Nothing global is changed.
    """

    def __init__(self, reactor: Any, resolver: IHostnameResolver) -> None:
        self._reactor = reactor
        self._resolver = resolver

    @property
    def nameResolver(self) -> IHostnameResolver:
        return self._resolver

    def installNameResolver(self, resolver: IHostnameResolver) -> IHostnameResolver:
        previous, self._resolver = self._resolver, resolver
        return previous

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)


def _describeAddress(address: IAddress) -> str:
    if isinstance(address, IPv4Address | IPv6Address):
        return address.host
    return str(address)


def connectFailure(reason: Failure, plan: Plan, addresses: Sequence[IAddress] = ()) -> ClientError:
    """
    The one line, and the exit status, for a connection that could not be
    made.
    """
    target = plan.target
    settings = plan.settings
    tried = ""
    if addresses:
        hosts = dict.fromkeys(_describeAddress(a) for a in addresses)
        tried = " (tried " + ", ".join(hosts) + ")"
    if reason.check(_error.DNSLookupError) or (
        reason.check(ValueError) and "invalid hostname" in str(reason.value)
    ):
        if settings.family != "any" and not settings.endpoint:
            version = "IPv4" if settings.family == "ipv4" else "IPv6"
            return NameNotResolved(f"{settings.host}: no {version} address found")
        name = settings.endpoint or settings.host
        return NameNotResolved(f"{name}: name does not resolve")
    if reason.check(_error.TimeoutError, CancelledError):
        return TimedOut(f"could not connect to {target} within {settings.timeout:g} s{tried}")
    if reason.check(_error.ConnectionRefusedError):
        return ConnectFailed(f"connection refused by {target}{tried}")
    value = reason.value
    if isinstance(value, _error.ConnectError):
        if isinstance(value.osError, int):
            detail = os.strerror(value.osError)
        else:
            detail = str(value.args[0] if value.args else "") or (value.__doc__ or "")
        detail = detail.strip().rstrip(".").lower() or "connection failed"
        return ConnectFailed(f"cannot connect to {target}: {detail}{tried}")
    return ConnectFailed(f"cannot connect to {target}: {reason.getErrorMessage()}{tried}")


def endpointFor(
    reactor: Any, plan: Plan, resolver: IHostnameResolver | None
) -> tuple[IStreamClientEndpoint, RecordingResolver | None]:
    """
    The endpoint to connect to, and the resolver recording the addresses
    tried (L{None} for an endpoint string, which resolves by itself).
    """
    from twisted.internet.endpoints import (
        HostnameEndpoint,
        TCP6ClientEndpoint,
        clientFromString,
    )

    settings = plan.settings
    if settings.endpoint:
        if endpointParameters(settings.endpoint)[0].lower() == "tcp6":
            # echod's own type: Twisted's client strings have no tcp6:.
            host, port, timeout, bindAddress = tcp6ClientParameters(settings.endpoint)
            bind = (bindAddress, 0) if bindAddress is not None else None
            tcp6 = TCP6ClientEndpoint(
                reactor, host, port, timeout=timeout or settings.timeout, bindAddress=bind
            )
            return tcp6, None
        return clientFromString(reactor, settings.endpoint), None
    recording = RecordingResolver(resolver or reactor.nameResolver, _FAMILIES[settings.family])
    endpoint = HostnameEndpoint(
        _ResolvingReactor(reactor, recording),
        settings.host,
        settings.port,
        timeout=settings.timeout,
    )
    return endpoint, recording


class EchoClient:
    """
    One run: connect (within C{timeout}, resolution included), do what the
    plan says, report.  L{run} fires with the L{Summary}, never fails.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        plan: Plan,
        out: IO[str],
        err: IO[str],
        resolver: IHostnameResolver | None = None,
    ) -> None:
        self._reactor = reactor
        self.plan = plan
        self.reporter = Reporter(plan, out, err)
        self.factory = EchoClientFactory(plan, reactor, self.reporter)
        self._resolver = resolver
        self._connecting: Deferred[Any] | None = None
        self._protocol: ClientProtocol | None = None
        self._timedOut = False
        self._interrupted = False
        self._result: Deferred[Summary] | None = None

    @property
    def summary(self) -> Summary:
        return self.factory.summary

    def run(self) -> Deferred[Summary]:
        result: Deferred[Summary] = Deferred()
        self._result = result
        try:
            endpoint, recording = endpointFor(self._reactor, self.plan, self._resolver)
        except Exception as e:
            self._end(connectFailure(Failure(e), self.plan))
            return result
        self.log.debug("connecting to {target}", target=self.plan.target)
        connecting: Deferred[Any] = endpoint.connect(self.factory)
        self._connecting = connecting
        # Not Deferred.addTimeout: cancelled while resolving, HostnameEndpoint
        # turns the CancelledError into a DNSLookupError, and a slow resolver
        # would be reported as a name that does not resolve.
        deadline = self._reactor.callLater(self.plan.settings.timeout, self._connectTimedOut)

        def connected(protocol: ClientProtocol) -> Deferred[None]:
            self._connecting = None
            if deadline.active():
                deadline.cancel()
            self._protocol = protocol
            return protocol.finished

        def notConnected(reason: Failure) -> None:
            self._connecting = None
            if deadline.active():
                deadline.cancel()
            addresses = recording.addresses if recording is not None else ()
            if self._interrupted:
                self.summary.error = Interrupted("interrupted while connecting")
            elif self._timedOut:
                self.summary.error = connectFailure(
                    Failure(_error.TimeoutError()), self.plan, addresses
                )
            else:
                self.summary.error = connectFailure(reason, self.plan, addresses)

        def ran(_: None) -> None:
            if self._protocol is not None and self.summary.error is None:
                self.summary.error = self._protocol.error
            self._end(self.summary.error)

        def crashed(reason: Failure) -> None:
            self.log.failure("echod-client failed", reason)
            self._end(InternalError(f"internal error: {reason.getErrorMessage()}"))

        connecting.addCallbacks(connected, notConnected)
        connecting.addCallback(ran)
        connecting.addErrback(crashed)
        return result

    def _connectTimedOut(self) -> None:
        self._timedOut = True
        if self._connecting is not None:
            self._connecting.cancel()

    def _end(self, error: ClientError | None) -> None:
        self.summary.error = error
        self.reporter.finished(self.summary)
        result, self._result = self._result, None
        if result is not None:
            result.callback(self.summary)

    def interrupt(self) -> Deferred[Summary] | None:
        """
        Stop now (Ctrl-C, SIGTERM, the service stopping): print what there is.
        Returns the run's result if it is still to come.
        """
        result = self._result
        if result is None:
            return None
        self._interrupted = True
        if self._connecting is not None:
            self._connecting.cancel()
        elif self._protocol is not None:
            stats = self.summary.stats
            self._protocol.done(
                Interrupted(f"interrupted after {stats.received} of {stats.sent} replies")
                if self.plan.mode != "bulk"
                else Interrupted(f"interrupted after {self.summary.bytesVerified} bytes"),
                abort=True,
            )
        return result


def runClient(
    reactor: Any,
    plan: Plan,
    out: IO[str],
    err: IO[str],
    resolver: IHostnameResolver | None = None,
) -> tuple[EchoClient, Deferred[ExitStatus]]:
    """
    Start a run; the L{Deferred} fires with its exit status once everything
    is printed and the connection is closed.
    """
    client = EchoClient(reactor, plan, out, err, resolver)
    status = client.run().addCallback(lambda summary: summary.status)
    return client, status


class EchoClientService(Service):
    """
    C{twistd echod-client}: one run, started when the reactor runs; then the
    reactor is stopped and the process exits with the run's status.

    Not L{twisted.application.internet.ClientService}: that one reconnects
    until stopped, and a check must fail at the first refusal.  twistd itself
    exits 0 whenever the reactor stops by itself, so the status is kept and an
    C{atexit} hook ends the process with it, after twistd has cleaned up
    (pidfile, logs) and the output is flushed.
    """

    log = Logger()

    def __init__(
        self,
        plan: Plan,
        reactor: Any,
        out: IO[str],
        err: IO[str],
        logObserver: ILogObserver | None = None,
        exitProcess: bool = False,
        resolver: IHostnameResolver | None = None,
    ) -> None:
        self.plan = plan
        self.reactor = reactor
        self.out = out
        self.err = err
        self.logObserver = logObserver
        self.exitProcess = exitProcess
        self.resolver = resolver
        self.status: ExitStatus | None = None
        self.client: EchoClient | None = None
        self.result: Deferred[ExitStatus] = Deferred()

    def setServiceParent(self, parent: Any) -> None:
        offerToTwistd(parent, self.logObserver)
        super().setServiceParent(parent)

    def startService(self) -> None:
        super().startService()
        if self.exitProcess:
            atexit.register(self._exitWithStatus)
        self.reactor.callWhenRunning(self._start)

    def _start(self) -> None:
        if not self.running:
            return
        self.client, status = runClient(self.reactor, self.plan, self.out, self.err, self.resolver)
        status.addCallback(self._finished)

    def _finished(self, status: ExitStatus) -> None:
        self.status = status
        summary = self.client.summary if self.client is not None else None
        self.log.info(
            "echo run against {target} finished: {outcome} (exit status {status})",
            event="client.finished",
            target=self.plan.target,
            outcome=str(summary.error) if summary and summary.error else status.name.lower(),
            status=int(status),
            summary=summary.asJSON() if summary is not None else None,
        )
        self.result.callback(status)
        if self.exitProcess and self.running:
            self.reactor.stop()

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        if self.client is not None and self.status is None:
            self.client.interrupt()
            return self.result
        return succeed(None)

    def _exitWithStatus(self) -> None:
        if not self.status:
            return
        for stream in (self.out, self.err, sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(int(self.status))
