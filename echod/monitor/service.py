# -*- test-case-name: tests.unit.test_monitor_service -*-
"""
The monitor as a service: the scheduler started and stopped with the
service tree, its target list reloaded (SIGHUP, through the root's
L{IReconfigurable} seam), and its listener: the status page at C{/},
C{/metrics} and C{/healthz}, on the bounded HTTP listener of echod's own
metrics (L{MetricsService}).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from twisted.application.service import IServiceCollection, Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.resource import Resource
from zope.interface import implementer

from echod.config import Config, MetricsConfig
from echod.health import Health
from echod.interfaces import IClientReactor, IReconfigurable, IStreamServerReactor
from echod.metrics.collector import HealthResource
from echod.metrics.listener import MetricsService, MetricsSite
from echod.monitor.collector import MonitorMetricsResource
from echod.monitor.page import StatusPage
from echod.monitor.schedule import Scheduler
from echod.monitor.targets import targetsOf

__all__ = ["MonitorService", "monitorListener"]

# On SIGTERM, how long interrupted probes may take to close their sockets.
STOP_TIMEOUT = 5.0


@implementer(IReconfigurable)
class MonitorService(Service):
    """
    Probes the targets of C{[monitor]} from the moment the service starts
    until it stops; L{reconfigure} swaps the target list, keeping the state
    and schedule of the targets that did not change.
    """

    log = Logger()

    def __init__(self, config: Config, reactor: IClientReactor) -> None:
        self.config = config
        self.reactor = reactor
        settings = config.monitor
        self.scheduler = Scheduler(reactor, settings.max_concurrency, settings.max_addresses)
        self.scheduler.update(targetsOf(settings))
        self.setName("monitor")

    def startService(self) -> None:
        super().startService()
        self.scheduler.start()
        self.log.info(
            "monitoring {count} targets",
            event="monitor.started",
            count=len(self.scheduler.states),
        )

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        stopped = self.scheduler.stop()
        stopped.addTimeout(STOP_TIMEOUT, self.reactor)
        return stopped.addErrback(lambda _: None)

    def reconfigure(self, config: Config) -> None:
        settings = config.monitor
        if settings.listen != self.config.monitor.listen:
            self.log.warn(
                "monitor.listen changed: that takes a restart",
                event="config.reload_partial",
            )
        self.scheduler.setConcurrency(settings.max_concurrency)
        self.scheduler.maxAddresses = settings.max_addresses
        changes = self.scheduler.update(targetsOf(settings))
        self.config = config
        self.log.info(
            "targets reloaded: {kept} kept (with their history; {changed} of them with new "
            "settings), {added} added, {removed} removed",
            event="monitor.reloaded",
            kept=changes.kept,
            changed=changes.changed,
            added=changes.added,
            removed=changes.removed,
        )


def monitorListener(
    config: Config,
    monitor: MonitorService,
    root: IServiceCollection,
    health: Health,
    reactor: IStreamServerReactor,
) -> MetricsService:
    """
    The listener of C{[monitor] listen}: the status page at C{/},
    C{/metrics} and C{/healthz}, bounded by C{[metrics] max_connections}
    and C{request_timeout} as echod's own metrics listener is.
    """
    settings: MetricsConfig = dataclasses.replace(config.metrics, listen=config.monitor.listen)
    top = Resource()
    site = MetricsSite(top, settings, reactor)
    top.putChild(b"", StatusPage(monitor.scheduler))
    top.putChild(b"metrics", MonitorMetricsResource(monitor.scheduler))
    top.putChild(b"healthz", HealthResource(health))
    return MetricsService(settings.listen, root, health, settings, reactor, site=site)
