"""
Every service the root or the metrics talk to provides the interfaces it
declares (L{echod.interfaces}), checked with C{verifyObject}: the seams are
contracts, not attribute names that happen to exist.  So does the reactor,
for each part's intersection of Twisted's reactor interfaces.
"""

from __future__ import annotations

import dataclasses
import io

import pytest
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from zope.interface.verify import verifyObject

from echod import interfaces
from echod.app import makeService
from echod.config import Config, MetricsConfig, ServerConfig, UDPConfig
from echod.interfaces import (
    ICaptureStatistics,
    IDatagramStatistics,
    IDrainable,
    IListening,
    IReconfigurable,
    IRootReactor,
    IStopsLast,
    IStreamStatistics,
    IWorkerStatistics,
    reactorProviding,
)
from echod.metrics.listener import MetricsService
from echod.server.listeners import EchoService, UDPEchoService
from echod.server.workers.supervisor import WorkersService
from echod.sniff.service import SniffService
from tests.reactortesting import EchodMemoryReactor


def config(**server: object) -> Config:
    return Config(
        server=ServerConfig(listen=("tcp:0:interface=127.0.0.1",), **server),  # type: ignore[arg-type]
        udp=UDPConfig(listen=("udp:port=0:interface=127.0.0.1",)),
        metrics=MetricsConfig(listen="tcp:0:interface=127.0.0.1"),
    )


def test_echoService() -> None:
    service = EchoService(config(), EchodMemoryReactor())
    for interface in (IReconfigurable, IListening, IDrainable, IStreamStatistics):
        assert verifyObject(interface, service)


def test_udpEchoService() -> None:
    service = UDPEchoService(config(), EchodMemoryReactor())
    for interface in (IReconfigurable, IListening, IDatagramStatistics):
        assert verifyObject(interface, service)


def test_workersService() -> None:
    service = WorkersService(config(workers=2), EchodMemoryReactor())
    for interface in (
        IReconfigurable,
        IListening,
        IDrainable,
        IStreamStatistics,
        IWorkerStatistics,
    ):
        assert verifyObject(interface, service)


def test_metricsService() -> None:
    root = makeService(config(), EchodMemoryReactor())
    (metrics,) = [child for child in root if isinstance(child, MetricsService)]
    for interface in (IReconfigurable, IListening):
        assert verifyObject(interface, metrics)


def test_sniffService() -> None:
    settings = dataclasses.replace(Config().sniff, interface="lo")
    service = SniffService(settings, EchodMemoryReactor(), stdout=io.BytesIO())
    assert verifyObject(ICaptureStatistics, service)


def test_metricsListenerStopsLast() -> None:
    root = makeService(config(), EchodMemoryReactor())
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


# Every intersection of reactor interfaces echod.interfaces declares.
REACTORS = [getattr(interfaces, name) for name in interfaces.__all__ if name.endswith("Reactor")]


def test_realReactorProvidesEveryPartsInterfaces() -> None:
    """
    The reactor echod runs on provides every interface of each part's
    intersection, with the methods and attributes they declare.
    """
    from twisted.internet import reactor

    assert IRootReactor in REACTORS
    for interface in REACTORS:
        assert reactorProviding(reactor, interface) is reactor
        assert verifyObject(interface, reactor, tentative=True)


def test_fakeReactorProvidesEveryPartsInterfaces() -> None:
    """
    The unit tests' fake reactor can stand in for the reactor of any part.
    """
    reactor = EchodMemoryReactor()
    for interface in REACTORS:
        assert reactorProviding(reactor, interface) is reactor
        assert verifyObject(interface, reactor)


def test_reactorProvidingOneInterface() -> None:
    """
    A single Twisted interface is checked as it is.
    """
    clock = Clock()
    assert reactorProviding(clock, IReactorTime) is clock


def test_reactorLackingAnInterfaceIsRefused() -> None:
    """
    A reactor that lacks an interface of the intersection is refused, by
    the names of what it lacks.
    """
    with pytest.raises(TypeError) as caught:
        reactorProviding(MemoryReactorClock(), IRootReactor)
    assert str(caught.value) == "the MemoryReactorClock reactor lacks IReactorFromThreads"
