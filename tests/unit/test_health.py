"""
Tests for L{echod.health}, and for how the root of the service tree drives it:
READY=1 only once every listener is up, STOPPING=1 and 503 from the first
moment of shutdown, the metrics listener stopped last.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.application.service import Service
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from zope.interface import implementer

from echod import config
from echod.app import EchodService
from echod.health import Health, watchdogInterval
from echod.interfaces import IListening
from echod.metrics.listener import MetricsService
from tests.reactortesting import EchodMemoryReactor


class Notifications:
    """
    Records what would have been sent to systemd.
    """

    def __init__(self) -> None:
        self.sent: list[str] = []

    def __call__(self, state: str, environ: Mapping[str, str] | None) -> bool:
        self.sent.append(state)
        return True


def health(
    environ: Mapping[str, str] | None = None, clock: Any = None
) -> tuple[Health, Notifications]:
    notifications = Notifications()
    return Health(clock or Clock(), environ or {}, notifications, pid=42), notifications


class WatchdogIntervalTests:
    def test_halfTheInterval(self) -> None:
        """
        Pings go out twice per WATCHDOG_USEC, as sd_watchdog_enabled(3) advises.
        """
        assert watchdogInterval({"WATCHDOG_USEC": "3000000"}, 42) == 1.5

    def test_matchingPid(self) -> None:
        assert watchdogInterval({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "42"}, 42) == 0.1

    def test_otherPid(self) -> None:
        """
        WATCHDOG_PID naming another process (a parent that exec'd us without
        unsetting it) means this process is not watched.
        """
        assert watchdogInterval({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "7"}, 42) is None

    def test_absentOrNonsense(self) -> None:
        for environ in ({}, {"WATCHDOG_USEC": "0"}, {"WATCHDOG_USEC": "soon"}):
            assert watchdogInterval(environ, 42) is None


class HealthTests:
    def test_readyOnlyOnceListening(self) -> None:
        """
        Nothing is sent, and the state is not serving, until the listening
        Deferred fires; then READY=1 with a STATUS naming the addresses.
        """
        state, notifications = health()
        listening: Deferred[list[str]] = Deferred()
        state.started(listening)
        assert notifications.sent == []
        assert not state.serving
        listening.callback(["[::]:7", "127.0.0.1:9107"])
        assert notifications.sent == ["READY=1\nSTATUS=serving on [::]:7, 127.0.0.1:9107"]
        assert state.serving

    def test_listenerFailureIsNotReady(self) -> None:
        state, notifications = health()
        listening: Deferred[list[str]] = Deferred()
        state.started(listening)
        listening.errback(Failure(OSError("no")))
        assert not any("READY=1" in n for n in notifications.sent)
        assert notifications.sent[0].startswith("STATUS=a listener failed to start")
        assert state.state == Health.STARTING

    def test_requirements(self) -> None:
        """
        While the listeners are up, a requirement that fails makes echod
        not serving, its status saying what is missing; stopping wins.
        """
        state, _ = health()
        workers = [True]
        state.require("no worker running", lambda: workers[0])
        state.started(succeed([]))
        assert state.serving and state.status == "serving"
        workers[0] = False
        assert not state.serving
        assert state.status == "degraded: no worker running"
        workers[0] = True
        assert state.serving
        workers[0] = False
        state.stopping()
        assert state.status == "stopping"

    def test_stopping(self) -> None:
        """
        Shutdown: STOPPING=1 once, and unhealthy from then on.
        """
        state, notifications = health()
        state.started(succeed([]))
        state.stopping()
        state.stopping()
        assert notifications.sent[1:] == ["STOPPING=1\nSTATUS=shutting down: draining connections"]
        assert not state.serving
        assert state.state == Health.STOPPING

    def test_stoppedBeforeListening(self) -> None:
        """
        A stop that comes before the listeners are up is never followed by a
        READY=1.
        """
        state, notifications = health()
        listening: Deferred[list[str]] = Deferred()
        state.started(listening)
        state.stopping()
        listening.callback(["[::]:7"])
        assert not any("READY=1" in n for n in notifications.sent)

    def test_watchdogPings(self) -> None:
        """
        With WATCHDOG_USEC, WATCHDOG=1 every half interval on the given clock,
        until stopped.
        """
        clock = Clock()
        state, notifications = health({"WATCHDOG_USEC": "1000000"}, clock)
        state.started(Deferred())
        clock.pump([0.5] * 4)
        assert notifications.sent == ["WATCHDOG=1"] * 5
        state.stopped()
        clock.advance(10)
        assert notifications.sent == ["WATCHDOG=1"] * 5
        assert clock.getDelayedCalls() == []

    def test_noWatchdogForAnotherPid(self) -> None:
        clock = Clock()
        state, notifications = health({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}, clock)
        state.started(Deferred())
        clock.advance(5)
        assert notifications.sent == []
        assert clock.getDelayedCalls() == []


class Address:
    def __init__(self, port: int) -> None:
        self.port = port

    def getHost(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", self.port)


@implementer(IListening)
class SlowListener(Service):
    """
    A child that listens when told to, and stops when told to.
    """

    def __init__(self, *ports: int) -> None:
        self.listening: Deferred[list[Any]] = Deferred()
        self.ports = ports
        self.stopped: Deferred[None] = Deferred()

    def whenListening(self) -> Deferred[list[Any]]:
        return self.listening

    def listen(self) -> None:
        self.listening.callback([Address(p) for p in self.ports])

    def stopService(self) -> Deferred[None]:
        Service.stopService(self)
        return self.stopped


def tree(*children: Service) -> tuple[EchodService, Notifications, EchodMemoryReactor]:
    reactor = EchodMemoryReactor()
    root = EchodService(config.Config(), reactor)
    notifications = Notifications()
    root.health = Health(reactor, {}, notifications)
    for child in children:
        child.setServiceParent(root)
    return root, notifications, reactor


class RootReadinessTests:
    def test_readyWhenEveryChildListens(self) -> None:
        """
        READY=1 waits for the last listener of the last child.
        """
        first, second = SlowListener(7), SlowListener(7007, 7008)
        root, notifications, _ = tree(first, second, Service())
        root.startService()
        first.listen()
        assert notifications.sent == []
        second.listen()
        assert notifications.sent == [
            "READY=1\nSTATUS=serving on 127.0.0.1:7, 127.0.0.1:7007, 127.0.0.1:7008"
        ]

    def test_metricsListenerStopsLast(self) -> None:
        """
        On stop, the echo services stop (and drain) first; the metrics
        listener keeps answering, unhealthy, until they are done.
        """
        echo = SlowListener(7)
        root, notifications, reactor = tree()
        metrics = MetricsService(
            "tcp:9107:interface=127.0.0.1", root, root.health, root.config.metrics, reactor
        )
        metrics.setServiceParent(root)
        echo.setServiceParent(root)
        root.privilegedStartService()
        root.startService()
        echo.listen()
        assert root.health.serving
        assert len(reactor.tcpServers) == 1

        stopped = root.stopService()
        assert "STOPPING=1" in notifications.sent[-1]
        assert not root.health.serving
        assert metrics.running
        assert not stopped.called

        echo.stopped.callback(None)
        assert not metrics.running
        assert stopped.called
