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
from twisted.internet.testing import FakeDatagramTransport, MemoryReactorClock, StringTransport
from twisted.web.test.requesthelper import DummyRequest
from zope.interface import implementer

from echod import __version__, config
from echod.echo import EchoProtocol
from echod.health import Health
from echod.metrics import (
    HealthResource,
    ICaptureStatistics,
    MetricsResource,
    metricsRegistry,
)
from echod.service import EchodService, EchoService, UDPEchoService

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
        self.reactor = MemoryReactorClock()
        cfg = config.Config(
            server=config.ServerConfig(listen=("tcp:7",), **server),  # type: ignore[arg-type]
            udp=config.UDPConfig(listen=("udp:port=7",)),
        )
        self.root = EchodService(cfg, self.reactor)
        self.tcp = EchoService(cfg, self.reactor)
        self.tcp.setServiceParent(self.root)
        self.udp = UDPEchoService(cfg, self.reactor)
        self.udp.setServiceParent(self.root)
        self.datagrams = self.udp.listeners[0].protocol
        self.datagrams.makeConnection(FakeDatagramTransport())

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
        tree.datagrams.datagramReceived(b"hello", ("192.0.2.1", 40000))
        tree.datagrams.datagramReceived(b"loop", ("192.0.2.1", 19))
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
        reactor = MemoryReactorClock()
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
        health = Health(MemoryReactorClock(), {})
        health.state = state
        request = DummyRequest([b""])
        assert HealthResource(health).render_GET(request) == body  # type: ignore[arg-type]
        assert (request.responseCode or 200) == code
        assert request.responseHeaders.getRawHeaders(b"cache-control") == [b"no-store"]
