"""
Every service the root or the metrics talk to provides the interfaces it
declares (L{echod.interfaces}), checked with C{verifyObject}: the seams are
contracts, not attribute names that happen to exist.
"""

from __future__ import annotations

import dataclasses
import io

from twisted.internet.testing import MemoryReactorClock
from zope.interface.verify import verifyObject

from echod.app import makeService
from echod.config import Config, MetricsConfig, ServerConfig, UDPConfig
from echod.interfaces import (
    ICaptureStatistics,
    IDatagramStatistics,
    IDrainable,
    IListening,
    IReconfigurable,
    IStopsLast,
    IStreamStatistics,
    IWorkerStatistics,
)
from echod.metrics.listener import MetricsService
from echod.server.listeners import EchoService, UDPEchoService
from echod.server.workers.supervisor import WorkersService
from echod.sniff.service import SniffService


def config(**server: object) -> Config:
    return Config(
        server=ServerConfig(listen=("tcp:0:interface=127.0.0.1",), **server),  # type: ignore[arg-type]
        udp=UDPConfig(listen=("udp:port=0:interface=127.0.0.1",)),
        metrics=MetricsConfig(listen="tcp:0:interface=127.0.0.1"),
    )


def test_echoService() -> None:
    service = EchoService(config(), MemoryReactorClock())
    for interface in (IReconfigurable, IListening, IDrainable, IStreamStatistics):
        assert verifyObject(interface, service)


def test_udpEchoService() -> None:
    service = UDPEchoService(config(), MemoryReactorClock())
    for interface in (IReconfigurable, IListening, IDatagramStatistics):
        assert verifyObject(interface, service)


def test_workersService() -> None:
    service = WorkersService(config(workers=2), MemoryReactorClock())
    for interface in (
        IReconfigurable,
        IListening,
        IDrainable,
        IStreamStatistics,
        IWorkerStatistics,
    ):
        assert verifyObject(interface, service)


def test_metricsService() -> None:
    root = makeService(config(), MemoryReactorClock())
    (metrics,) = [child for child in root if isinstance(child, MetricsService)]
    for interface in (IReconfigurable, IListening):
        assert verifyObject(interface, metrics)


def test_sniffService() -> None:
    settings = dataclasses.replace(Config().sniff, interface="lo")
    service = SniffService(settings, MemoryReactorClock(), stdout=io.BytesIO())
    assert verifyObject(ICaptureStatistics, service)


def test_metricsListenerStopsLast() -> None:
    root = makeService(config(), MemoryReactorClock())
    (metrics,) = [child for child in root if isinstance(child, MetricsService)]
    assert verifyObject(IStopsLast, metrics)


def test_sniffersCommandLoadsNoServer() -> None:
    """
    C{twistd echod-sniff} uses the same root service, but its command loads
    neither the echo server nor the metrics nor the epoll reactor (which
    Windows, where the sniffer also runs, does not have).
    """
    import json

    from tests.testing import runPython

    code = (
        "import json, sys; import echod.tap.sniff, echod.app; "
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith(("
        "'echod.server', 'echod.metrics', 'twisted.internet.epollreactor')))))"
    )
    done = runPython(["-c", code], check=True)
    assert json.loads(done.stdout) == []
