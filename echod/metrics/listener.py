# -*- test-case-name: tests.unit.test_metrics -*-
"""
The metrics listener: the HTTP site serving C{/metrics} and C{/healthz}
(L{echod.metrics.collector}), and its service.

The listener is bounded so that it cannot be turned against the echo service
(whose connections need descriptors too): at most C{[metrics]
max_connections} connections (more are closed at accept), a deadline for each
whole request (C{request_timeout}; bytes trickled in do not extend it) and a
size limit for it (L{MAX_REQUEST_SIZE}, L{MAX_HEADERS}).  What is refused is
counted (C{echod_metrics_connections_refused_total}) and logged within a
budget.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from twisted.application.service import IServiceCollection
from twisted.internet.interfaces import IAddress, IListeningPort, IReactorTime
from twisted.internet.protocol import Protocol as _Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import Request, Site
from zope.interface import implementer

from echod.addresses import describePeer
from echod.config import Config, MetricsConfig
from echod.health import Health
from echod.interfaces import IListening, IReconfigurable, IStopsLast, IStreamServerReactor
from echod.metrics.collector import HealthResource, MetricsResource, metricsRegistry, reasonLabels
from echod.server.limits import LogBudget, logSummary
from echod.server.listeners import ListenerService

__all__ = [
    "MAX_HEADERS",
    "MAX_REQUEST_SIZE",
    "MetricsChannel",
    "MetricsRefusal",
    "MetricsService",
    "MetricsSite",
    "metricsSite",
]


class _Index(Resource):
    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"echod: /metrics (Prometheus), /healthz (200 ok while serving, else 503)\n"


class MetricsRefusal:
    """
    Why a metrics connection was closed unserved: the values are the
    C{reason} label of C{echod_metrics_connections_refused_total} and the word
    in the log line.
    """

    MAX_CONNECTIONS = "max_connections"
    REQUEST_TIMEOUT = "request_timeout"
    REQUEST_TOO_LARGE = "request_too_large"


# A scrape or a health check is one short GET: a few hundred bytes, a dozen
# headers.
MAX_REQUEST_SIZE = 8192
MAX_HEADERS = 64


class MetricsChannel(http.HTTPChannel):
    """
    HTTP/1.1 on the metrics listener, bounded for clients that never finish.

    Each request must be complete within C{timeOut} seconds (C{[metrics]
    request_timeout}) of the connection, or of the end of the previous
    response on a kept-alive connection: L{http.HTTPChannel}'s own timer
    (L{TimeoutMixin}, on the site's reactor) is made a deadline by not
    resetting it on every read, so a byte a second does not keep a connection
    open.  A kept-alive connection that sends nothing more is closed (FIN) at
    its next deadline, uncounted; one whose request is late is aborted and
    counted.  A request of more than L{MAX_REQUEST_SIZE} bytes (request line,
    headers and body) or L{MAX_HEADERS} headers is answered 431 or 413 and
    closed.  A connection still open a C{timeOut} after it was told to close
    (its response unread) is aborted.

    HTTP/1.1 only (no HTTP/2 over TLS), so that these bounds hold for every
    connection.
    """

    maxHeaders = MAX_HEADERS
    totalHeadersSize = MAX_REQUEST_SIZE
    MAX_LENGTH = MAX_REQUEST_SIZE

    factory: MetricsSite

    def __init__(self) -> None:
        super().__init__()
        # Bytes of the request being read (from the end of the last response).
        self.received = 0
        self.served = 0
        self._reading = True
        self._headers = 0
        self._closing = False

    def connectionMade(self) -> None:
        super().connectionMade()
        self.factory.channels.add(self)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self.factory.channels.discard(self)
        super().connectionLost(reason)

    def resetTimeout(self) -> None:
        """
        Not on every read: the request timeout is a deadline.
        """

    def dataReceived(self, data: bytes) -> None:
        while data and not self._closing:
            room = MAX_REQUEST_SIZE - self.received
            if not self._reading or len(data) <= room:
                self.received += len(data) if self._reading else 0
                super().dataReceived(data)
                return
            # Parse up to the limit first: what was being read then (headers
            # or body) decides the answer, and a request complete within it
            # is served.
            served = self.served
            self.received = MAX_REQUEST_SIZE
            super().dataReceived(data[:room])
            data = data[room:]
            if self.served == served and self._reading:
                self._tooLarge()

    def lineLengthExceeded(self, line: bytes) -> None:
        self._tooLarge()

    def headerReceived(self, line: bytes) -> bool:
        self._headers += 1
        if self._headers > MAX_HEADERS:
            self._tooLarge()
            return False
        ok: bool = super().headerReceived(line)
        return ok

    def allHeadersReceived(self) -> None:
        super().allHeadersReceived()
        if self.length is not None and self.received + self.length > MAX_REQUEST_SIZE:
            self._tooLarge(inBody=True)

    def allContentReceived(self) -> None:
        self._reading = False
        self._headers = 0
        super().allContentReceived()

    def requestDone(self, request: http.Request) -> None:
        self.served += 1
        # Before the next request, which the channel may read at once (pipelined).
        self._reading, self.received = True, 0
        super().requestDone(request)
        if not self.persistent and not self._closing:
            # Closing; the deadline aborts a peer that does not take its response.
            self._closing = True
            self.setTimeout(self.timeOut or self.factory.timeOut)

    def timeoutConnection(self) -> None:
        if self._closing or not self._reading:
            self._abort()
        elif self.served and not self.received:
            # Idle between requests (keep-alive): an ordinary end.
            self._closing = True
            self.loseConnection()
            self.setTimeout(self.timeOut or self.factory.timeOut)
        else:
            self._closing = True
            self.factory.refuse(MetricsRefusal.REQUEST_TIMEOUT, self._peer())
            self._abort()

    def _tooLarge(self, inBody: bool = False) -> None:
        if self._closing:
            return
        self._closing = True
        self.factory.refuse(MetricsRefusal.REQUEST_TOO_LARGE, self._peer())
        if self.line_mode and not inBody:
            status = b"431 Request Header Fields Too Large"
        else:
            status = b"413 Content Too Large"
        self.write(b"HTTP/1.1 " + status + b"\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
        self.loseConnection()
        # The deadline, still running, aborts it if the peer does not read.

    def _peer(self) -> IAddress | None:
        return self.transport.getPeer() if self.transport is not None else None

    def _abort(self) -> None:
        # Every stream transport has abortConnection (TCP, Unix, TLS).
        transport: Any = self.transport
        transport.abortConnection()


class _ClosedAtOnce(_Protocol):
    """
    A connection over C{max_connections} behind a wrapping factory (TLS,
    PROXY), which cannot take L{None} from C{buildProtocol}: aborted as soon
    as it is made.
    """

    def connectionMade(self) -> None:
        transport: Any = self.transport
        transport.abortConnection()


# Endpoints whose listening ports close a connection themselves, before
# making a transport for it, when the factory builds no protocol.
_CLOSE_AT_ACCEPT = frozenset({"tcp", "tcp6", "unix", "systemd"})


class MetricsSite(Site):
    """
    A L{Site} without an access log (a scrape or health check every few
    seconds is not news), serving L{MetricsChannel}s, at most
    C{max_connections} at once: more are closed at accept, counted in
    L{refused} and logged within a budget.  On a plain endpoint
    (L{_CLOSE_AT_ACCEPT}) C{buildProtocol} returns L{None} for them, and they
    cost no descriptor beyond the accept; behind a wrapping factory (C{ssl:},
    C{haproxy:}) they are aborted at once (L{_ClosedAtOnce}) instead.
    """

    noisy = False
    protocol = MetricsChannel  # type: ignore[assignment]
    logger = Logger()

    def __init__(self, resource: Resource, settings: MetricsConfig, reactor: IReactorTime) -> None:
        super().__init__(resource, timeout=settings.request_timeout, reactor=reactor)
        self.channels: set[MetricsChannel] = set()
        self.refused: Counter[str] = Counter(dict.fromkeys(reasonLabels(MetricsRefusal), 0))
        self.maxConnections = settings.max_connections
        self.closeAtAccept = settings.listen.split(":", 1)[0].lower() in _CLOSE_AT_ACCEPT
        self._refusals = LogBudget(
            reactor,
            logSummary(self.logger, "metrics connections refused", "metrics.refused.summary"),
        )

    def reconfigure(self, settings: MetricsConfig) -> None:
        """
        New caps for connections from now on; open ones keep their deadline.
        """
        self.maxConnections = settings.max_connections
        self.timeOut = settings.request_timeout

    def buildProtocol(  # type: ignore[override]
        self, addr: IAddress | None
    ) -> MetricsChannel | _ClosedAtOnce | None:
        if len(self.channels) >= self.maxConnections:
            self.refuse(MetricsRefusal.MAX_CONNECTIONS, addr)
            return None if self.closeAtAccept else _ClosedAtOnce()
        channel: MetricsChannel = super().buildProtocol(addr)
        return channel

    def refuse(self, reason: str, peer: IAddress | None) -> None:
        """
        Count a connection closed unserved, and log it within the budget.
        """
        self.refused[reason] += 1
        if self._refusals.allow(reason):
            self.logger.warn(
                "metrics client {peer} refused: {reason}",
                event="metrics.refused",
                peer=describePeer(peer),
                reason=reason,
            )

    def stopFactory(self) -> None:
        self._refusals.flush()
        super().stopFactory()

    def log(self, request: http.Request) -> None:
        pass


def metricsSite(
    root: IServiceCollection,
    health: Health,
    reactor: IReactorTime,
    settings: MetricsConfig | None = None,
) -> MetricsSite:
    """
    The HTTP site of the metrics listener: C{/metrics} (the listener's own
    connections included), C{/healthz} and an index at C{/}.

    @param settings: C{[metrics]}; L{None}: the defaults.
    """
    top = Resource()
    site = MetricsSite(top, settings or MetricsConfig(), reactor)
    top.putChild(b"", _Index())
    top.putChild(b"metrics", MetricsResource(metricsRegistry(root, health, site)))
    top.putChild(b"healthz", HealthResource(health))
    return site


@implementer(IReconfigurable, IListening, IStopsLast)
class MetricsService(ListenerService):
    """
    C{/metrics} and C{/healthz} (L{echod.metrics.collector}) on C{[metrics] listen}.

    A L{ListenerService}: a busy port stops start-up with one line.  The
    root stops it after everything else, so that C{/healthz} answers 503 and
    C{/metrics} keeps answering while connections drain.  Its connection cap
    and request timeout are reloadable.
    """

    def __init__(
        self,
        description: str,
        root: IServiceCollection,
        health: Health,
        settings: MetricsConfig,
        reactor: IStreamServerReactor,
        site: MetricsSite | None = None,
    ) -> None:
        """
        @param site: the site to serve; L{None}: echod's (L{metricsSite}).
            The monitor serves its own, on the same bounded listener.
        """
        self.site = site if site is not None else metricsSite(root, health, reactor, settings)
        super().__init__(description, self.site, reactor)
        self.setName("metrics")

    def reconfigure(self, config: Config) -> None:
        self.site.reconfigure(config.metrics)

    def startService(self) -> None:
        super().startService()
        self.whenListening().addCallback(self._listening)

    def _listening(self, port: IListeningPort) -> IListeningPort:
        self.log.info(
            "metrics listening on {address} ({description})",
            event="metrics.started",
            address=describePeer(port.getHost()),
            description=self.description,
        )
        return port
