# -*- test-case-name: tests.unit.test_metrics -*-
"""
Prometheus metrics and the health check, served by twisted.web.

Nothing is counted for the metrics' sake: L{EchodCollector} reads, at scrape
time, the totals echod keeps anyway (L{EchoStats} and the open
L{EchoProtocol}s, L{DatagramStats}) and the counters of any packet capture in
the service tree (L{ICaptureStatistics}).  Scrapes are answered by a
synchronous C{render_GET}, in the reactor thread, where that state may be
read; C{prometheus_client.twisted.MetricsResource} would collect in a
thread-pool thread, and imports the reactor when imported.

The registry is echod's own: no global registry, no default collectors
beyond the process and platform ones added to it here.

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
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import CollectorRegistry
from twisted.application.service import IService, IServiceCollection
from twisted.internet.interfaces import IAddress, IListeningPort, IReactorTime
from twisted.internet.protocol import Protocol as _Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import Request, Site
from zope.interface import implementer

from echod import __version__
from echod.addresses import describePeer
from echod.config import Config, MetricsConfig
from echod.health import Health
from echod.interfaces import (
    CaptureCounts,
    ICaptureStatistics,
    IDatagramStatistics,
    IListening,
    IReconfigurable,
    IStopsLast,
    IStreamStatistics,
    IWorkerStatistics,
)
from echod.server.limits import DatagramDrop, LogBudget, Refusal, logSummary
from echod.server.listeners import ListenerService
from echod.server.stats import DatagramStats, TCPTotals

__all__ = [
    "MAX_HEADERS",
    "MAX_REQUEST_SIZE",
    "EchodCollector",
    "HealthResource",
    "MetricsChannel",
    "MetricsRefusal",
    "MetricsResource",
    "MetricsSite",
    "metricsRegistry",
    "metricsSite",
]


def _reasons(kind: type) -> list[str]:
    """
    Every reason a class of constants names, so that each label exists (at
    0) from the first scrape and C{rate()} sees the first event.
    """
    return [value for name, value in vars(kind).items() if name.isupper()]


def _services(root: IServiceCollection) -> Iterator[IService]:
    for child in root:
        yield child
        if IServiceCollection.providedBy(child):
            yield from _services(child)


class EchodCollector:
    """
    Reads the service tree under C{root} at every scrape: TCP metrics where a
    service provides L{IStreamStatistics} (an echo service, or the worker
    processes' last reports) and L{IWorkerStatistics}, UDP metrics where one
    provides L{IDatagramStatistics}, capture metrics where one provides
    L{ICaptureStatistics}.  Families of a part that is not running are left
    out.

    @param listener: the metrics listener's own site, whose connections are
        reported too; L{None}: not reported.
    """

    def __init__(
        self, root: IServiceCollection, health: Health, listener: MetricsSite | None = None
    ) -> None:
        self.root = root
        self.health = health
        self.listener = listener

    def collect(self) -> Iterator[Metric]:
        tcp: list[TCPTotals] = []
        workers: dict[str, tuple[TCPTotals, int]] = {}
        datagrams: dict[int, DatagramStats] = {}
        captures: list[CaptureCounts] = []
        for service in _services(self.root):
            if IStreamStatistics.providedBy(service):
                totals = service.tcpTotals()
                if totals is not None:
                    tcp.append(totals)
            if IWorkerStatistics.providedBy(service):
                workers.update(service.workerTotals())
            if IDatagramStatistics.providedBy(service):
                stats = service.datagramStats()
                datagrams[id(stats)] = stats
            if ICaptureStatistics.providedBy(service):
                captures.append(service.statistics())

        yield GaugeMetricFamily(
            "echod_up",
            "1 while echod serves: every listener is up, at least one worker process runs "
            "(workers = N), and shutdown has not begun (when /healthz answers 200); 0 while "
            "starting, while draining, and while every worker is down.",
            value=1 if self.health.serving else 0,
        )
        yield InfoMetricFamily("echod", "The running echod.", value={"version": __version__})
        if tcp:
            yield from _tcpMetrics(tcp)
        if workers:
            yield from _workerMetrics(workers)
        if datagrams:
            yield from _udpMetrics(datagrams.values())
        if captures:
            yield from _captureMetrics(captures)
        if self.listener is not None:
            yield from _listenerMetrics(self.listener)


def _tcpMetrics(parts: Iterable[TCPTotals]) -> Iterator[Metric]:
    total = TCPTotals(refused=Counter(dict.fromkeys(_reasons(Refusal), 0)))
    for part in parts:
        total.add(part)
    opened, refused, sent = total.opened, total.refused, total.sent
    discarded, openNow, limit = total.discarded, total.open, total.limit
    yield GaugeMetricFamily(
        "echod_connections_open",
        "TCP connections admitted and not closed yet.",
        value=openNow,
    )
    yield GaugeMetricFamily(
        "echod_connections_max",
        "max_connections in force (the sum over TCP services and worker processes); 0: no limit.",
        value=limit,
    )
    yield CounterMetricFamily(
        "echod_connections",
        "TCP connections admitted since echod started (refused ones are counted "
        "in echod_connections_refused_total instead).",
        value=opened,
    )
    family = CounterMetricFamily(
        "echod_connections_refused",
        "TCP connections closed at once, unserved, by reason.",
        labels=["reason"],
    )
    for reason, count in sorted(refused.items()):
        family.add_metric([reason], count)
    yield family
    yield CounterMetricFamily(
        "echod_connections_evicted",
        "TCP connections aborted after pressure_idle_timeout of silence to admit a "
        "newcomer while max_connections or max_connections_per_peer was reached.",
        value=total.evicted,
    )
    yield CounterMetricFamily(
        "echod_bytes_received",
        "Bytes read from TCP peers, by open and closed connections, counted per read.",
        value=sent + discarded,
    )
    yield CounterMetricFamily(
        "echod_bytes_sent",
        "Bytes echoed to TCP peers: every byte received except those read and "
        "discarded while a connection closed at shutdown. Counted when handed to "
        "the transport: a connection aborted (idle or shutdown timeout, reset) may "
        "not have delivered its last buffered bytes.",
        value=sent,
    )


def _workerMetrics(workers: dict[str, tuple[TCPTotals, int]]) -> Iterator[Metric]:
    openNow = GaugeMetricFamily(
        "echod_worker_connections_open",
        "TCP connections open in each worker process (workers = N), as it last reported.",
        labels=["worker"],
    )
    opened = CounterMetricFamily(
        "echod_worker_connections",
        "TCP connections admitted by each worker process since it last started.",
        labels=["worker"],
    )
    restarts = CounterMetricFamily(
        "echod_worker_restarts",
        "Times each worker process exited while echod was serving (and was restarted).",
        labels=["worker"],
    )
    for name, (totals, restarted) in sorted(workers.items()):
        openNow.add_metric([name], totals.open)
        opened.add_metric([name], totals.opened)
        restarts.add_metric([name], restarted)
    yield openNow
    yield opened
    yield restarts


def _udpMetrics(totals: Iterable[DatagramStats]) -> Iterator[Metric]:
    received = echoed = echoedBytes = 0
    dropped: Counter[str] = Counter(dict.fromkeys(_reasons(DatagramDrop), 0))
    for stats in totals:
        received += stats.received
        echoed += stats.echoed
        echoedBytes += stats.bytesEchoed
        dropped.update(stats.dropped)
    yield CounterMetricFamily(
        "echod_udp_datagrams_received",
        "UDP datagrams received, echoed or not.",
        value=received,
    )
    yield CounterMetricFamily(
        "echod_udp_datagrams_echoed",
        "UDP datagrams sent back to their source.",
        value=echoed,
    )
    family = CounterMetricFamily(
        "echod_udp_datagrams_dropped",
        "UDP datagrams that got no echo, by reason (guards, rate limits, send errors).",
        labels=["reason"],
    )
    for reason, count in sorted(dropped.items()):
        family.add_metric([reason], count)
    yield family
    yield CounterMetricFamily(
        "echod_udp_bytes_echoed",
        "Payload bytes of the UDP datagrams echoed.",
        value=echoedBytes,
    )


def _captureMetrics(captures: list[CaptureCounts]) -> Iterator[Metric]:
    yield CounterMetricFamily(
        "echod_sniff_packets",
        "Packets the capture filter accepted (including those the kernel then dropped).",
        value=sum(c.seen for c in captures),
    )
    yield CounterMetricFamily(
        "echod_sniff_packets_passed",
        "Captured packets written to the sniffer's output.",
        value=sum(c.passed for c in captures),
    )
    yield CounterMetricFamily(
        "echod_sniff_packets_not_written",
        "Captured packets lost because the output could not be written (a full disk, "
        "an I/O error, a closed pipe): the capture stops at the first such failure.",
        value=sum(c.notWritten for c in captures),
    )
    counted = [c.dropped for c in captures if c.dropped is not None]
    if counted:
        yield CounterMetricFamily(
            "echod_sniff_drops",
            "Packets the kernel dropped because the capture buffer was full "
            "(left out where the platform does not count them).",
            value=sum(counted),
        )


def _listenerMetrics(site: MetricsSite) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "echod_metrics_connections_open",
        "Connections open to the metrics listener, the scrape reading this included.",
        value=len(site.channels),
    )
    yield GaugeMetricFamily(
        "echod_metrics_connections_max",
        "[metrics] max_connections in force: more connections are closed at accept.",
        value=site.maxConnections,
    )
    family = CounterMetricFamily(
        "echod_metrics_connections_refused",
        "Metrics listener connections closed unserved, by reason: max_connections "
        "(at accept), request_timeout (a request not complete within request_timeout "
        "of the connection, or of the previous response), request_too_large.",
        labels=["reason"],
    )
    for reason, count in sorted(site.refused.items()):
        family.add_metric([reason], count)
    yield family


def metricsRegistry(
    root: IServiceCollection, health: Health, listener: MetricsSite | None = None
) -> CollectorRegistry:
    """
    echod's registry: its own collector, plus process (memory, CPU, open
    files against their limit) and platform (Python version) metrics.

    @param listener: the metrics listener's site, whose connections are
        reported too.
    """
    registry = CollectorRegistry()
    registry.register(EchodCollector(root, health, listener))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


class MetricsResource(Resource):
    """
    C{GET /metrics}: the exposition format the scraper asks for (Accept
    header), collected now, in the reactor thread.
    """

    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self.registry = registry

    def render_GET(self, request: Request) -> bytes:
        accept = request.getHeader(b"accept") or b""
        encode, contentType = choose_encoder(accept.decode("latin-1"))
        request.setHeader(b"content-type", contentType.encode("ascii"))
        body: bytes = encode(self.registry)
        return body


class HealthResource(Resource):
    """
    C{GET /healthz}: 200 C{ok} while echod serves; 503 with the state
    (C{starting}, C{stopping}) before every listener is up and from the moment
    shutdown begins, so that a load balancer stops sending new clients while
    open connections drain; 503 C{degraded: ...} while a part it needs is down
    (every worker process at once).
    """

    isLeaf = True

    def __init__(self, health: Health) -> None:
        super().__init__()
        self.health = health

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        if self.health.serving:
            return b"ok\n"
        request.setResponseCode(503)
        return f"{self.health.status}\n".encode()


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
        self.refused: Counter[str] = Counter(dict.fromkeys(_reasons(MetricsRefusal), 0))
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
    reactor: Any,
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
    C{/metrics} and C{/healthz} (L{echod.metrics}) on C{[metrics] listen}.

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
        reactor: Any,
    ) -> None:
        self.site = metricsSite(root, health, reactor, settings)
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
