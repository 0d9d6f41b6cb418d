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
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

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
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import Request, Site
from zope.interface import Interface

from echod import __version__
from echod.echo import DatagramStats, TCPTotals
from echod.health import Health
from echod.limits import DatagramDrop, Refusal

__all__ = [
    "CaptureCounts",
    "EchodCollector",
    "HealthResource",
    "ICaptureStatistics",
    "MetricsResource",
    "MetricsSite",
    "metricsRegistry",
    "metricsSite",
]


class CaptureCounts(Protocol):
    """
    Counters of one packet capture since it opened (the sniffer's
    C{ReaderStatistics} has this shape).
    """

    @property
    def seen(self) -> int:
        """Packets the capture filter accepted, including those then dropped."""

    @property
    def passed(self) -> int:
        """Packets handed to the output."""

    @property
    def dropped(self) -> int | None:
        """Packets the kernel dropped (buffer full); L{None}: not counted here."""


class ICaptureStatistics(Interface):
    """
    A service running a packet capture whose counters the metrics report.
    Any provider anywhere in the service tree is found at every scrape: the
    sniffer's service declares C{@implementer(ICaptureStatistics)}.
    """

    def statistics() -> CaptureCounts:
        """
        Cumulative counters: cheap, and safe to call at any time from the
        reactor thread.
        """


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
    service reports L{TCPTotals} (C{.tcpTotals()}: an echo service, or the
    worker processes' last reports), UDP metrics where one has
    L{DatagramStats} (C{.stats}), capture metrics where one provides
    L{ICaptureStatistics}.  Families of a part that is not running are left
    out.
    """

    def __init__(self, root: IServiceCollection, health: Health) -> None:
        self.root = root
        self.health = health

    def collect(self) -> Iterator[Metric]:
        tcp: list[TCPTotals] = []
        workers: dict[str, tuple[TCPTotals, int]] = {}
        datagrams: dict[int, DatagramStats] = {}
        captures: list[CaptureCounts] = []
        for service in _services(self.root):
            tcpTotals = getattr(service, "tcpTotals", None)
            if callable(tcpTotals):
                totals = tcpTotals()
                if totals is not None:
                    tcp.append(totals)
            workerTotals = getattr(service, "workerTotals", None)
            if callable(workerTotals):
                workers.update(workerTotals())
            stats = getattr(service, "stats", None)
            if isinstance(stats, DatagramStats):
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
        "Captured packets handed to the sniffer's output.",
        value=sum(c.passed for c in captures),
    )
    counted = [c.dropped for c in captures if c.dropped is not None]
    if counted:
        yield CounterMetricFamily(
            "echod_sniff_drops",
            "Packets the kernel dropped because the capture buffer was full "
            "(left out where the platform does not count them).",
            value=sum(counted),
        )


def metricsRegistry(root: IServiceCollection, health: Health) -> CollectorRegistry:
    """
    echod's registry: its own collector, plus process (memory, CPU, open
    files against their limit) and platform (Python version) metrics.
    """
    registry = CollectorRegistry()
    registry.register(EchodCollector(root, health))
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


class MetricsSite(Site):
    """
    A L{Site} without an access log: a scrape or health check every few
    seconds is not news.
    """

    noisy = False

    def log(self, request: http.Request) -> None:
        pass


def metricsSite(root: IServiceCollection, health: Health, reactor: Any) -> Site:
    """
    The HTTP site of the metrics listener: C{/metrics}, C{/healthz} and an
    index at C{/}.
    """
    top = Resource()
    top.putChild(b"", _Index())
    top.putChild(b"metrics", MetricsResource(metricsRegistry(root, health)))
    top.putChild(b"healthz", HealthResource(health))
    return MetricsSite(top, reactor=reactor)
