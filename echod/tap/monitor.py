# -*- test-case-name: tests.unit.test_monitor_service -*-
"""
C{twistd echod-monitor}: probe the targets of C{[monitor]} forever, export
the results to Prometheus and draw them on a status page.
"""

from __future__ import annotations

import sys

from twisted.application.service import IService
from twisted.python import usage

from echod import config as _config
from echod import versionLine
from echod.app import EchodService
from echod.errors import oneLine, reportUserErrors
from echod.interfaces import IMonitorReactor, reactorProviding
from echod.logs import observerForTwistd
from echod.monitor.service import MonitorService, monitorListener

__all__ = ["Options", "makeService"]


class Options(usage.Options):
    """
    C{--config FILE}, whose C{[monitor]} table names the targets.  A
    problem with the file is one line on stderr and exit status 1, before
    anything is probed or listens.
    """

    synopsis = "--config FILE"
    longdesc = (
        "Echo monitor: probe the targets of the [monitor] table of FILE on a schedule, "
        "forever, every address of each name on its own (A and AAAA), over TCP, UDP or "
        "TLS; export the results to Prometheus (/metrics) and draw them on a status "
        "page (/). SIGHUP reloads the target list, SIGTERM stops. Example: "
        "twistd -n --pidfile= echod-monitor --config /etc/echod/echod.toml"
    )
    optParameters = [
        ["config", "c", None, "TOML config file with a [monitor] table (required)."],
    ]

    config: _config.Config

    def opt_version(self) -> None:
        """
        Print the versions of echod, Twisted and Python, and exit.
        """
        print(versionLine())
        raise SystemExit(0)

    def parseOptions(self, options: list[str] | None = None) -> None:
        """
        Under twistd, a usage mistake is one line on stderr and exit status
        1, not twistd's usage text.
        """
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            if getattr(self, "parent", None) is None:
                raise
            stderr = sys.__stderr__ or sys.stderr
            stderr.write(f"echod-monitor: {oneLine(str(e))}\n")
            stderr.flush()
            raise SystemExit(1) from None

    def postOptions(self) -> None:
        reportUserErrors("echod-monitor")
        if self["config"] is None:
            raise usage.UsageError("name the config file: --config FILE")
        self.config = self.loadConfig()

    def loadConfig(self) -> _config.Config:
        """
        The file again (at start, and at every SIGHUP): its C{[monitor]}
        table must name at least one target.
        """
        loaded = _config.load(self["config"])
        if not loaded.monitor.targets:
            raise _config.ConfigError(
                'no targets: give [monitor] targets, such as targets = ["echo.example:7"]',
                source=loaded.source,
                key="monitor.targets",
            )
        return loaded


def makeService(options: Options, reactor: IMonitorReactor | None = None) -> IService:
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = reactorProviding(globalReactor, IMonitorReactor)
    twistd = getattr(options, "parent", None)
    config = options.config
    root = EchodService(
        config,
        reactor,
        observerForTwistd(twistd, config.log.format, config.log.level),
        handleSignals=twistd is not None,
        reload=options.loadConfig,
        # Its sockets are the probes', at most [monitor] max_concurrency:
        # [server] max_connections is not its business.
        servesConnections=False,
    )
    monitor = MonitorService(config, reactor)
    monitor.setServiceParent(root)
    if config.monitor.listen:
        monitorListener(config, monitor, root, root.health, reactor).setServiceParent(root)
    return root
