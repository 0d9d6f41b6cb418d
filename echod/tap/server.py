# -*- test-case-name: tests.unit.test_tap_server -*-
"""
C{twistd echod}: the echo service.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import IService
from twisted.python import usage

from echod import config as _config
from echod import service
from echod.errors import reportUserErrors
from echod.logs import observerForTwistd

__all__ = ["Options", "makeService"]


class Options(usage.Options):
    """
    Everything a user can get wrong is checked here, before anything listens
    or daemonizes; a config error is one line on stderr and exit status 1.
    """

    synopsis = "[--config FILE] [--listen ENDPOINT ...]"
    longdesc = (
        "RFC 862 echo service. With no options it listens dual-stack on TCP "
        "port 7007 (tcp6:port=7007:interface=\\:\\:). ENDPOINT is any Twisted "
        "server endpoint string: tcp6:port=7:interface=\\:\\:, tcp:7007, "
        "unix:/run/echod.sock, ssl:port=7443:privateKey=key.pem:certKey=cert.pem, "
        "systemd:domain=INET6:name=echo, haproxy:tcp6:port=7007."
    )
    optParameters = [
        ["config", "c", None, "TOML config file (default: the embedded defaults)."],
    ]

    config: _config.Config

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []

    def opt_listen(self, description: str) -> None:
        """
        Listen on ENDPOINT (repeatable; replaces [server] listen of the file).
        """
        self["listen"].append(description)

    opt_l = opt_listen

    def postOptions(self) -> None:
        reportUserErrors("echod")
        config = _config.load(self["config"])
        if self["listen"]:
            listen = {"listen": list(self["listen"])}
            config = _config.override(config, "server", listen, "--listen")
        _config.checkInheritedSockets(config)
        self.config = config


def makeService(options: Options, reactor: Any = None) -> IService:
    twistd = getattr(options, "parent", None)
    log = options.config.log
    return service.makeService(
        options.config,
        reactor,
        logObserver=observerForTwistd(twistd, log.format, log.level),
        handleSignals=twistd is not None,
    )
