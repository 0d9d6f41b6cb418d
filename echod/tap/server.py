# -*- test-case-name: tests.unit.test_tap_server -*-
"""
C{twistd echod}: the echo service.
"""

from __future__ import annotations

import grp
import os
import pwd
import select
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

from twisted.application.service import IService
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.util import untilConcludes

from echod import app, versionLine
from echod import config as _config
from echod.errors import UserError, errorLines, reportUserErrors
from echod.interfaces import IEchodReactor
from echod.logs import observerForTwistd
from echod.server import fastpath
from echod.sniff.service import checkSniffing

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
        "systemd:domain=INET6:name=echo, haproxy:tcp6:port=7007. "
        "SIGHUP reloads the config file; SIGTERM drains and exits."
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

    def opt_version(self) -> None:
        """
        Print the versions of echod, Twisted and Python, and exit.
        """
        print(versionLine())
        raise SystemExit(0)

    def postOptions(self) -> None:
        twistd = getattr(self, "parent", None)
        reportUserErrors("echod", alsoLog=_logsAwayFromStderr(twistd))
        if twistd is not None:
            _reportDaemonStartErrorsPlainly("echod")
        typed = self["config"]
        if typed is not None:
            # twistd may change directory (--rundir); SIGHUP must find the file.
            self["config"] = os.path.abspath(typed)
        # Now, in the directory the user typed it in, errors name it as typed.
        config = self.loadConfig(typed)
        _config.checkInheritedSockets(config)
        if config.sniff.enabled:
            checkSniffing(config.sniff, twistd)
        if twistd is not None:
            _switchUser(config, twistd)
            _chooseReactor(config)
        self.config = config

    def loadConfig(self, path: str | None = None) -> _config.Config:
        """
        The file (or the embedded defaults), then the command line over it;
        used at start and on every SIGHUP.

        @param path: the file's name as typed, at start; else its absolute name.
        """
        config = _config.load(self["config"] if path is None else path)
        if self["listen"]:
            listen = {"listen": list(self["listen"])}
            config = _config.override(config, "server", listen, "--listen")
        return config


def _logsAwayFromStderr(twistd: Mapping[str, Any] | None) -> bool:
    """
    Whether a start-up error must be logged besides its line on stderr: in
    the foreground with the log in a file or syslog.  A log on standard
    output (C{-n} alone) would show it twice; a daemon logs it as it tells
    the waiting parent (L{_reportDaemonStartErrorsPlainly}).
    """
    if twistd is None or not (twistd.get("nodaemon") or twistd.get("debug")):
        return False
    logfile = twistd.get("logfile")
    return bool(twistd.get("logger") or twistd.get("syslog") or (logfile and logfile != "-"))


# What echod's daemon writes before its one line on twistd's status pipe.
_PLAIN_LINE = b"1 \x1eechod "


def _reportDaemonStartErrorsPlainly(prog: str) -> None:
    """
    In daemon mode a start-up failure happens in twistd's forked child, which
    tells the waiting parent over a pipe; the parent prints C{An error has
    occurred: b'echod.errors.ListenError: ...'} (cut at 100 bytes) and
    points to the log.  For a L{UserError} the child now logs it and sends
    C{PROG: MESSAGE}, which the parent prints as it is: the same line as in
    the foreground.  Twisted has no hook for this: the two methods of its
    C{UnixApplicationRunner} are replaced, before the fork, only on the
    Twisted release they were checked against (as the fast paths are); any
    other keeps its own message.
    """
    import twisted

    if not twisted.__version__.startswith(fastpath.CHECKED_TWISTED):
        return
    try:
        from twisted.scripts._twistd_unix import UnixApplicationRunner as runner
    except ImportError:  # not on a Unix
        return
    formatChild = getattr(runner, "_formatChildException", None)
    waitForStart = getattr(runner, "_waitForStart", None)
    if formatChild is None or waitForStart is None or getattr(formatChild, "_echod", False):
        return

    def _formatChildException(self: Any, exception: BaseException) -> bytes:
        if not isinstance(exception, UserError):
            return formatChild(self, exception)  # type: ignore[no-any-return]
        for problem in exception.lines():
            Logger(namespace=prog).critical("{problem}", problem=problem, event="start.failed")
        line = errorLines(prog, exception).rstrip("\n").encode("utf-8", "backslashreplace")
        # One write of at most PIPE_BUF bytes: the parent reads it whole.
        return _PLAIN_LINE + line[: select.PIPE_BUF - len(_PLAIN_LINE)]

    def _waitForStart(self: Any, readPipe: int) -> int:
        data = untilConcludes(os.read, readPipe, select.PIPE_BUF)
        if data == b"0":
            return 0
        stderr = sys.__stderr__ or sys.stderr
        if data.startswith(_PLAIN_LINE):
            message = data[len(_PLAIN_LINE) :].decode("utf-8", "replace") + "\n"
        else:  # Twisted's own message
            message = (
                f"An error has occurred: {data[2:]!r}\n"
                "Please look at log file for more information.\n"
            )
        untilConcludes(stderr.write, message)
        stderr.flush()
        return 1

    _formatChildException._echod = True  # type: ignore[attr-defined]
    runner._formatChildException = _formatChildException  # type: ignore[method-assign]
    runner._waitForStart = _waitForStart  # type: ignore[method-assign]


def _switchUser(config: _config.Config, twistd: MutableMapping[str, Any]) -> None:
    """
    C{[server] user/group} mean what twistd's C{--uid/--gid} mean (which win
    when given): twistd opens the sockets, then switches.
    """
    user, group = config.server.user, config.server.group
    if user and twistd.get("uid") is None:
        try:
            entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
        except KeyError:
            raise _config.errorAt(config, "server", "user", user, "no such user") from None
        if entry.pw_uid != os.geteuid():
            if os.geteuid() != 0:
                raise _config.errorAt(
                    config, "server", "user", user, "only root can switch to another user"
                )
            twistd["uid"] = entry.pw_uid
            if not group and twistd.get("gid") is None:
                twistd["gid"] = entry.pw_gid
    if group and twistd.get("gid") is None:
        try:
            gid = grp.getgrgid(int(group)).gr_gid if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise _config.errorAt(config, "server", "group", group, "no such group") from None
        if gid != os.getegid():
            twistd["gid"] = gid


def _chooseReactor(config: _config.Config) -> None:
    """
    twistd installs its reactor when the service is made, unless --reactor
    installed one already: echod's lean epoll reactor goes in first, if the
    fast paths are on and usable here.
    """
    if not config.server.fast_paths or "twisted.internet.reactor" in sys.modules:
        return
    if fastpath.supported():
        fastpath.install()


def makeService(options: Options, reactor: IEchodReactor | None = None) -> IService:
    twistd = getattr(options, "parent", None)
    log = options.config.log
    return app.makeService(
        options.config,
        reactor,
        logObserver=observerForTwistd(twistd, log.format, log.level),
        handleSignals=twistd is not None,
        reload=options.loadConfig,
    )
