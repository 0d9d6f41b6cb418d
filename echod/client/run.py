# -*- test-case-name: tests.unit.test_client -*-
"""
One run of the client: connect within the timeout (resolution included), do
what the plan says, report, and fire with the summary; it can be interrupted
at any point and still reports what there is.  Over UDP the run is
L{echod.client.datagram.DatagramClient}'s.
"""

from __future__ import annotations

from typing import IO, Any

from twisted.internet import error as _error
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IHostnameResolver, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from echod.client.connect import connectFailure, endpointFor
from echod.client.datagram import DatagramClient
from echod.client.errors import ClientError, ExitStatus, InternalError, Interrupted
from echod.client.plan import Plan
from echod.client.protocols import ClientProtocol, EchoClientFactory
from echod.client.report import Reporter, Summary
from echod.interfaces import IClientReactor

__all__ = ["EchoClient", "Run", "runClient"]


class EchoClient:
    """
    One run: connect (within C{timeout}, resolution included), do what the
    plan says, report.  L{run} fires with the L{Summary}, never fails.
    """

    log = Logger()

    def __init__(
        self,
        reactor: IClientReactor,
        plan: Plan,
        out: IO[str],
        err: IO[str],
        resolver: IHostnameResolver | None = None,
        endpoint: IStreamClientEndpoint | None = None,
    ) -> None:
        """
        @param endpoint: connect there instead of where the plan says (the
            monitor connects to one address of a name, with TLS or not).
        """
        self._reactor = reactor
        self.plan = plan
        self.reporter = Reporter(plan, out, err)
        self.factory = EchoClientFactory(plan, reactor, self.reporter)
        self._resolver = resolver
        self._endpoint = endpoint
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
            if self._endpoint is not None:
                endpoint, recording = self._endpoint, None
            else:
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


Run = EchoClient | DatagramClient


def runClient(
    reactor: IClientReactor,
    plan: Plan,
    out: IO[str],
    err: IO[str],
    resolver: IHostnameResolver | None = None,
) -> tuple[Run, Deferred[ExitStatus]]:
    """
    Start a run, over TCP or UDP as the plan says; the L{Deferred} fires with
    its exit status once everything is printed and the connection (or the
    UDP socket) is closed.
    """
    client: Run
    if plan.udp:
        client = DatagramClient(reactor, plan, out, err, resolver)
    else:
        client = EchoClient(reactor, plan, out, err, resolver)
    status = client.run().addCallback(lambda summary: summary.status)
    return client, status
