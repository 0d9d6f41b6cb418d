"""
Tests for L{echod.metrics}: what a scrape reports about a service tree driven
with fakes, read back with prometheus_client's own parser.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.application.service import Service
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import (
    StringTransport,
)
from twisted.logger import capturedLogs
from twisted.protocols.policies import WrappingFactory
from twisted.python.failure import Failure
from twisted.web.test.requesthelper import DummyRequest
from zope.interface import implementer

from echod import __version__, config
from echod.app import EchodService, makeService
from echod.health import Health
from echod.interfaces import ICaptureStatistics
from echod.metrics.collector import HealthResource, MetricsResource, metricsRegistry
from echod.metrics.listener import MetricsService, MetricsSite, metricsSite
from echod.server.listeners import EchoService, UDPEchoService
from echod.server.stream import EchoProtocol
from tests.reactortesting import EchodMemoryReactor

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(root: EchodService) -> Samples:
    """
    Every sample of a scrape, keyed by name and sorted labels.
    """
    text = generate_latest(metricsRegistry(root, root.health)).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


class Tree:
    """
    An echod service tree (TCP and UDP echo, not listening) and ways to
    drive its protocols directly.
    """

    def __init__(self, **server: object) -> None:
        self.reactor = EchodMemoryReactor()
        cfg = config.Config(
            server=config.ServerConfig(listen=("tcp:7",), **server),  # type: ignore[arg-type]
            udp=config.UDPConfig(listen=("udp:port=7",)),
        )
        self.root = EchodService(cfg, self.reactor)
        self.tcp = EchoService(cfg, self.reactor)
        self.tcp.setServiceParent(self.root)
        self.udp = UDPEchoService(cfg, self.reactor)
        self.udp.setServiceParent(self.root)
        self.datagrams = self.udp.echo

    def connect(self, host: str = "192.0.2.1") -> EchoProtocol:
        protocol = self.tcp.factory.buildProtocol(IPv4Address("TCP", host, 40000))
        assert protocol is not None
        protocol.makeConnection(StringTransport(peerAddress=IPv4Address("TCP", host, 40000)))
        return protocol


class CollectorTests:
    def test_tcpConnections(self) -> None:
        """
        Open connections are a gauge, admitted ones a counter; refusals are
        counted by reason, every known reason present from the start.
        """
        tree = Tree(max_connections=2, deny=("198.51.100.0/24",))
        tree.connect()
        closing = tree.connect()
        tree.connect()  # a third: over max_connections
        tree.connect("198.51.100.9")  # denied
        closing.connectionLost()
        samples = scrape(tree.root)
        assert value(samples, "echod_connections_open") == 1
        assert value(samples, "echod_connections_total") == 2
        assert value(samples, "echod_connections_max") == 2
        assert value(samples, "echod_connections_refused_total", reason="max_connections") == 1
        assert value(samples, "echod_connections_refused_total", reason="acl") == 1
        assert value(samples, "echod_connections_refused_total", reason="shutting_down") == 0

    def test_tcpBytes(self) -> None:
        """
        Bytes are read from the protocols and the closed-connection totals;
        bytes discarded while closing are received but not sent, and the
        received total does not go down when such a connection closes.
        """
        tree = Tree()
        first, second = tree.connect(), tree.connect()
        first.dataReceived(b"x" * 100)
        first.connectionLost()
        second.dataReceived(b"y" * 10)
        second.finish("shutdown")
        second.dataReceived(b"z" * 5)
        samples = scrape(tree.root)
        assert value(samples, "echod_bytes_sent_total") == 110
        assert value(samples, "echod_bytes_received_total") == 115
        second.connectionLost()
        samples = scrape(tree.root)
        assert value(samples, "echod_bytes_sent_total") == 110
        assert value(samples, "echod_bytes_received_total") == 115

    def test_udp(self) -> None:
        """
        Datagrams received, echoed (and their bytes), and dropped by reason.
        """
        tree = Tree()
        tree.datagrams.decide([("192.0.2.1", 40000, 5), ("192.0.2.1", 19, 4)])
        samples = scrape(tree.root)
        assert value(samples, "echod_udp_datagrams_received_total") == 2
        assert value(samples, "echod_udp_datagrams_echoed_total") == 1
        assert value(samples, "echod_udp_bytes_echoed_total") == 5
        assert value(samples, "echod_udp_datagrams_dropped_total", reason="source_port") == 1
        assert value(samples, "echod_udp_datagrams_dropped_total", reason="rate_source") == 0

    def test_upFollowsHealth(self) -> None:
        tree = Tree()
        assert value(scrape(tree.root), "echod_up") == 0
        tree.root.health.state = Health.SERVING
        assert value(scrape(tree.root), "echod_up") == 1
        tree.root.health.stopping()
        assert value(scrape(tree.root), "echod_up") == 0

    def test_info(self) -> None:
        assert value(scrape(Tree().root), "echod_info", version=__version__) == 1

    def test_partsNotRunningAreLeftOut(self) -> None:
        """
        A UDP-only echod reports no TCP families, and no capture families
        without a capture.
        """
        reactor = EchodMemoryReactor()
        cfg = config.Config(
            server=config.ServerConfig(listen=()), udp=config.UDPConfig(listen=("udp:port=7",))
        )
        root = EchodService(cfg, reactor)
        UDPEchoService(cfg, reactor).setServiceParent(root)
        names = {name for name, _ in scrape(root)}
        assert "echod_udp_datagrams_received_total" in names
        assert not any(n.startswith(("echod_connections", "echod_bytes")) for n in names)
        assert not any(n.startswith("echod_sniff") for n in names)

    def test_processMetrics(self) -> None:
        names = {name for name, _ in scrape(Tree().root)}
        assert {"process_open_fds", "process_resident_memory_bytes", "python_info"} <= names


@dataclass(frozen=True)
class Counts:
    seen: int
    passed: int
    dropped: int | None
    notWritten: int = 0


@implementer(ICaptureStatistics)
class FakeCapture(Service):
    def __init__(self, counts: Counts) -> None:
        self.counts = counts

    def statistics(self) -> Counts:
        return self.counts


class CaptureSeamTests:
    def test_captureAnywhereInTheTree(self) -> None:
        """
        Any service providing ICaptureStatistics, however deep, is reported;
        several are summed.
        """
        tree = Tree()
        FakeCapture(Counts(100, 90, 3)).setServiceParent(tree.root)
        FakeCapture(Counts(1, 1, 0)).setServiceParent(tree.tcp)
        samples = scrape(tree.root)
        assert value(samples, "echod_sniff_packets_total") == 101
        assert value(samples, "echod_sniff_packets_passed_total") == 91
        assert value(samples, "echod_sniff_drops_total") == 3

    def test_dropsNotCounted(self) -> None:
        """
        Where the platform counts no drops, there is no drops metric (rather
        than a false zero).
        """
        tree = Tree()
        FakeCapture(Counts(5, 5, None)).setServiceParent(tree.root)
        names = {name for name, _ in scrape(tree.root)}
        assert "echod_sniff_packets_total" in names
        assert "echod_sniff_drops_total" not in names


class ResourceTests:
    def test_metricsTextFormat(self) -> None:
        tree = Tree()
        request = DummyRequest([b""])
        body = MetricsResource(metricsRegistry(tree.root, tree.root.health)).render_GET(
            request  # type: ignore[arg-type]
        )
        contentType = request.responseHeaders.getRawHeaders(b"content-type", [b""])[0]
        assert contentType.startswith(b"text/plain; version=0.0.4")
        assert b"\nechod_up 0.0\n" in body

    @pytest.mark.parametrize(
        "accept",
        [b"application/openmetrics-text; version=1.0.0", b"application/openmetrics-text"],
    )
    def test_metricsOpenMetrics(self, accept: bytes) -> None:
        """
        A scraper asking for OpenMetrics gets it.
        """
        tree = Tree()
        request = DummyRequest([b""])
        request.requestHeaders.setRawHeaders(b"accept", [accept])
        body = MetricsResource(metricsRegistry(tree.root, tree.root.health)).render_GET(
            request  # type: ignore[arg-type]
        )
        contentType = request.responseHeaders.getRawHeaders(b"content-type", [b""])[0]
        assert contentType.startswith(b"application/openmetrics-text")
        assert body.endswith(b"# EOF\n")

    @pytest.mark.parametrize(
        "state, code, body",
        [
            (Health.STARTING, 503, b"starting\n"),
            (Health.SERVING, 200, b"ok\n"),
            (Health.STOPPING, 503, b"stopping\n"),
        ],
    )
    def test_healthz(self, state: str, code: int, body: bytes) -> None:
        health = Health(EchodMemoryReactor(), {})
        health.state = state
        request = DummyRequest([b""])
        assert HealthResource(health).render_GET(request) == body  # type: ignore[arg-type]
        assert (request.responseCode or 200) == code
        assert request.responseHeaders.getRawHeaders(b"cache-control") == [b"no-store"]


def metricsListener(
    **settings: object,
) -> tuple[EchodService, MetricsSite, EchodMemoryReactor]:
    """
    A service tree with only the metrics listener (not listening), as
    C{makeService} builds it, and the site that serves its connections.
    """
    reactor = EchodMemoryReactor()
    cfg = config.Config(
        server=config.ServerConfig(listen=()),
        metrics=config.MetricsConfig(
            listen="tcp:9107:interface=127.0.0.1",
            **settings,  # type: ignore[arg-type]
        ),
    )
    root = makeService(cfg, reactor)
    service = root.getServiceNamed("metrics")
    assert isinstance(service, MetricsService)
    return root, service.site, reactor


def listenerScrape(root: EchodService, site: MetricsSite) -> Samples:
    text = generate_latest(metricsRegistry(root, root.health, site)).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


class Client:
    """
    One connection to the metrics site, over a L{StringTransport}.
    """

    def __init__(self, site: MetricsSite, port: int = 40000) -> None:
        address = IPv4Address("TCP", "192.0.2.7", port)
        self.channel = site.buildProtocol(address)
        self.transport = StringTransport(peerAddress=address)
        if self.channel is not None:
            self.channel.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        assert self.channel is not None
        self.channel.dataReceived(data)

    def lose(self) -> None:
        assert self.channel is not None
        self.channel.connectionLost(Failure(ConnectionDone()))

    @property
    def aborted(self) -> bool:
        return self.transport.disconnected

    @property
    def closing(self) -> bool:
        return self.transport.disconnecting or self.transport.disconnected


REQUEST = b"GET /healthz HTTP/1.1\r\nHost: echod\r\n\r\n"


class ListenerBoundsTests:
    """
    The metrics listener cannot be held open, or filled, by clients that
    never finish a request (issue 11, point 4).
    """

    def test_familiesFromTheFirstScrape(self) -> None:
        """
        The listener's own gauge and every refusal reason exist (at 0) from
        the first scrape.
        """
        root, site, _ = metricsListener()
        samples = listenerScrape(root, site)
        assert value(samples, "echod_metrics_connections_open") == 0
        assert value(samples, "echod_metrics_connections_max") == 16
        for reason in ("max_connections", "request_timeout", "request_too_large"):
            assert value(samples, "echod_metrics_connections_refused_total", reason=reason) == 0

    def test_refusedBeyondMaxConnections(self) -> None:
        """
        Beyond max_connections, buildProtocol returns None (the connection
        is closed at accept, holding no descriptor) and counts it; a place
        freed is taken again.
        """
        root, site, _ = metricsListener(max_connections=2)
        first, second = Client(site), Client(site)
        third = Client(site)
        assert first.channel is not None and second.channel is not None
        assert third.channel is None
        samples = listenerScrape(root, site)
        assert value(samples, "echod_metrics_connections_open") == 2
        assert (
            value(samples, "echod_metrics_connections_refused_total", reason="max_connections") == 1
        )
        first.lose()
        assert Client(site).channel is not None
        assert Client(site).channel is None
        samples = listenerScrape(root, site)
        assert value(samples, "echod_metrics_connections_open") == 2
        assert (
            value(samples, "echod_metrics_connections_refused_total", reason="max_connections") == 2
        )

    @pytest.mark.parametrize(
        "listen", ["haproxy:tcp:9107:interface=127.0.0.1", "ssl:9107:privateKey=k.pem"]
    )
    def test_refusedBehindAWrappingFactory(self, listen: str) -> None:
        """
        Behind a wrapping factory (PROXY, TLS), which cannot take None from
        buildProtocol, a connection over the cap is aborted as it is made.
        """
        root = EchodService(
            config.Config(server=config.ServerConfig(listen=())), EchodMemoryReactor()
        )
        settings = config.MetricsConfig(listen=listen, max_connections=1)
        site = metricsSite(root, root.health, Clock(), settings)
        wrapper = WrappingFactory(site)
        transports = [StringTransport(), StringTransport()]
        for transport in transports:
            protocol = wrapper.buildProtocol(IPv4Address("TCP", "192.0.2.7", 40000))
            protocol.makeConnection(transport)
        assert [t.disconnected for t in transports] == [False, True]
        samples = listenerScrape(root, site)
        assert value(samples, "echod_metrics_connections_open") == 1
        assert (
            value(samples, "echod_metrics_connections_refused_total", reason="max_connections") == 1
        )

    def test_deadlineNotResetByTrickle(self) -> None:
        """
        A byte every half second does not keep a connection open past
        request_timeout from its start: it is aborted then, and counted.
        """
        root, site, reactor = metricsListener(request_timeout=2)
        client = Client(site)
        for byte in REQUEST[:3]:
            reactor.advance(0.5)
            client.send(bytes([byte]))
        assert not client.closing
        reactor.advance(0.5)
        assert client.aborted
        samples = listenerScrape(root, site)
        assert (
            value(samples, "echod_metrics_connections_refused_total", reason="request_timeout") == 1
        )

    def test_silentConnectionTimesOut(self) -> None:
        root, site, reactor = metricsListener(request_timeout=2)
        client = Client(site)
        reactor.advance(1.9)
        assert not client.closing
        reactor.advance(0.1)
        assert client.aborted
        client.lose()
        samples = listenerScrape(root, site)
        assert value(samples, "echod_metrics_connections_open") == 0
        assert (
            value(samples, "echod_metrics_connections_refused_total", reason="request_timeout") == 1
        )

    def test_keptAliveGetsTheDeadlineAgain(self) -> None:
        """
        A request complete in time is answered; a kept-alive connection then
        has request_timeout again for its next request.  If it sends nothing
        more it is closed in order (FIN, not counted), and aborted a
        request_timeout later if it does not go.
        """
        root, site, reactor = metricsListener(request_timeout=2)
        client = Client(site)
        reactor.advance(1.9)
        client.send(REQUEST)
        assert client.transport.value().startswith(b"HTTP/1.1 503 ")
        reactor.advance(1.9)
        assert not client.closing
        client.transport.clear()
        client.send(REQUEST)
        assert client.transport.value().startswith(b"HTTP/1.1 503 ")
        reactor.advance(2)
        assert client.transport.disconnecting
        assert not client.aborted
        reactor.advance(2)
        assert client.aborted
        samples = listenerScrape(root, site)
        assert (
            value(samples, "echod_metrics_connections_refused_total", reason="request_timeout") == 0
        )

    def test_keptAliveLateWithItsNextRequest(self) -> None:
        root, site, reactor = metricsListener(request_timeout=2)
        client = Client(site)
        client.send(REQUEST)
        reactor.advance(1)
        client.send(b"GET /metr")
        reactor.advance(1)
        assert client.aborted
        samples = listenerScrape(root, site)
        assert (
            value(samples, "echod_metrics_connections_refused_total", reason="request_timeout") == 1
        )

    @pytest.mark.parametrize(
        "request_, status",
        [
            (b"GET / HTTP/1.1\r\nX-Long: " + b"a" * 9000 + b"\r\n\r\n", b"431"),
            (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", b"431"),
            (
                b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(65)) + b"\r\n",
                b"431",
            ),
            (
                b"POST /metrics HTTP/1.1\r\nContent-Length: 10000\r\n\r\n" + b"x" * 10000,
                b"413",
            ),
        ],
        ids=["header", "request-line", "headers", "body"],
    )
    def test_requestTooLarge(self, request_: bytes, status: bytes) -> None:
        """
        A request over the size limits is answered 431 (request line and
        headers) or 413 (body), closed, and counted.
        """
        root, site, _ = metricsListener()
        client = Client(site)
        client.send(request_)
        assert client.transport.value().startswith(b"HTTP/1.1 " + status + b" ")
        assert client.closing
        samples = listenerScrape(root, site)
        assert (
            value(samples, "echod_metrics_connections_refused_total", reason="request_too_large")
            == 1
        )

    def test_scrapeWithinTheLimits(self) -> None:
        """
        An ordinary scrape (with the headers a scraper sends) is answered,
        and sees its own connection.
        """
        _, site, _ = metricsListener()
        client = Client(site)
        client.send(
            b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:9107\r\nUser-Agent: Prometheus/2.45\r\n"
            b"Accept: text/plain;version=0.0.4;q=0.5,*/*;q=0.1\r\nAccept-Encoding: gzip\r\n"
            b"X-Prometheus-Scrape-Timeout-Seconds: 10\r\n\r\n"
        )
        response = client.transport.value()
        assert response.startswith(b"HTTP/1.1 200 ")
        assert b"\nechod_metrics_connections_open 1.0\n" in response

    def test_refusalsLoggedWithinBudget(self) -> None:
        """
        Refusals are logged, ten per interval, then summed up in one line.
        """
        _, site, reactor = metricsListener(max_connections=1, request_timeout=60)
        with capturedLogs() as events:
            Client(site)
            for port in range(25):
                assert Client(site, 50000 + port).channel is None
            refused = [e for e in events if e.get("event") == "metrics.refused"]
            assert len(refused) == 10
            assert refused[0]["peer"] == "192.0.2.7:50000"
            assert refused[0]["reason"] == "max_connections"
            reactor.advance(10)
        summaries = [e for e in events if e.get("event") == "metrics.refused.summary"]
        assert [s["total"] for s in summaries] == [15]

    def test_reload(self) -> None:
        """
        A reload applies max_connections and request_timeout to connections
        opened from then on.
        """
        reactor = EchodMemoryReactor()
        listen = "tcp:9107:interface=127.0.0.1"
        old = config.Config(
            server=config.ServerConfig(listen=()), metrics=config.MetricsConfig(listen=listen)
        )
        new = config.Config(
            server=config.ServerConfig(listen=()),
            metrics=config.MetricsConfig(listen=listen, max_connections=1, request_timeout=5),
        )
        root = makeService(old, reactor, reload=lambda: new)
        service = root.getServiceNamed("metrics")
        assert isinstance(service, MetricsService)
        site = service.site
        assert root.reload()
        client = Client(site)
        assert Client(site).channel is None
        reactor.advance(4.9)
        assert not client.closing
        reactor.advance(0.1)
        assert client.aborted
