# -*- test-case-name: tests.unit.test_metrics -*-
"""
What a scrape reports: L{EchodCollector}, echod's registry, and the
resources that answer C{/metrics} and C{/healthz}.

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
from typing import TYPE_CHECKING

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
from twisted.web.resource import Resource
from twisted.web.server import Request

from echod import __version__
from echod.health import Health
from echod.interfaces import (
    CaptureCounts,
    ICaptureStatistics,
    IDatagramStatistics,
    IStreamStatistics,
    IWorkerDatagramStatistics,
    IWorkerStatistics,
)
from echod.server.limits import DatagramDrop, Refusal
from echod.server.stats import DatagramStats, TCPTotals

if TYPE_CHECKING:
    from echod.metrics.listener import MetricsSite

__all__ = [
    "EchodCollector",
    "HealthResource",
    "MetricsResource",
    "metricsRegistry",
    "reasonLabels",
]


def reasonLabels(kind: type) -> list[str]:
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
    provides L{IDatagramStatistics} (and L{IWorkerDatagramStatistics}: the
    worker processes'), capture metrics where one provides
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
        workerDatagrams: dict[str, DatagramStats] = {}
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
            if IWorkerDatagramStatistics.providedBy(service):
                workerDatagrams.update(service.workerDatagramStats())
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
        if workerDatagrams:
            yield from _workerDatagramMetrics(workerDatagrams)
        if captures:
            yield from _captureMetrics(captures)
        if self.listener is not None:
            yield from _listenerMetrics(self.listener)


def _tcpMetrics(parts: Iterable[TCPTotals]) -> Iterator[Metric]:
    total = TCPTotals(refused=Counter(dict.fromkeys(reasonLabels(Refusal), 0)))
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
    dropped: Counter[str] = Counter(dict.fromkeys(reasonLabels(DatagramDrop), 0))
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


def _workerDatagramMetrics(workers: dict[str, DatagramStats]) -> Iterator[Metric]:
    received = CounterMetricFamily(
        "echod_worker_udp_datagrams_received",
        "UDP datagrams received by each worker process (workers = N) since it last started, "
        "as it last reported.",
        labels=["worker"],
    )
    echoed = CounterMetricFamily(
        "echod_worker_udp_datagrams_echoed",
        "UDP datagrams echoed by each worker process since it last started.",
        labels=["worker"],
    )
    for name, stats in sorted(workers.items()):
        received.add_metric([name], stats.received)
        echoed.add_metric([name], stats.echoed)
    yield received
    yield echoed


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
