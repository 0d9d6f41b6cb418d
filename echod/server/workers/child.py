# -*- test-case-name: tests.e2e.test_workers,tests.e2e.test_workers_udp -*-
"""
One worker of C{[server] workers = N} (see L{echod.server.workers.supervisor}):
C{python -m echod.server.workers.child --listener FD:FAMILY:DESCRIPTION ...
--datagram FD:DESCRIPTION ... --workers N --name NAME}.

Its configuration comes from the main process, on its standard input (a
C{config} line at start, another at each reload): the one the main process
validated and runs, command-line overrides included, which the worker, after
the switch to an unprivileged user, may not even be allowed to read from the
file.  It adopts the listening sockets it inherited, serves them with an
ordinary L{EchoFactory}, and its UDP sockets with an ordinary
L{DatagramEcho} (its global rates divided by the number of workers), writes
its log events and totals to its standard output for the main process and
drains on SIGTERM.  It must not import
L{twisted.runner.procmon}, which imports the global reactor before this
process installs its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.abstract import FileDescriptor
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.interfaces import IReactorFDSet
from twisted.internet.main import CONNECTION_DONE
from twisted.logger import Logger, eventAsJSON, formatEvent
from twisted.python.failure import Failure

from echod.config import Config, ConfigError
from echod.interfaces import IWorkerReactor, reactorProviding
from echod.server.workers.wire import (
    ABORT,
    EVENT,
    STATS,
    STATS_INTERVAL,
    STOP,
    UDP_STATS,
    configFromLine,
)

__all__ = ["main"]


def _readFirstConfig() -> tuple[Config | None, bytes]:
    """
    Block until the main process's first C{config} line (or end of file:
    the main process is gone); also return what followed it.
    """
    data = b""
    while b"\n" not in data:
        chunk = os.read(0, 65536)
        if not chunk:
            return None, b""
        data += chunk
    line, _, rest = data.partition(b"\n")
    try:
        return configFromLine(line), rest
    except ConfigError as e:
        sys.exit("\n".join(f"worker: {problem}" for problem in e.lines()))


def _jsonEvents(stream: Any, predicate: Any) -> Any:
    """
    Log events as C{event <JSON>} lines for the main process, which formats,
    filters again and writes them with its own.
    """
    from twisted.logger import FilteringLogObserver, ILogObserver
    from zope.interface import implementer

    @implementer(ILogObserver)
    def write(event: dict[str, Any]) -> None:
        # The message is formatted here: Twisted's JSON keeps a str() of each
        # field for the format, losing specs such as {duration:.3f}.
        event = dict(event)
        event["log_format"] = formatEvent(event).replace("{", "{{").replace("}", "}}")
        with contextlib.suppress(OSError):
            stream.write(EVENT + eventAsJSON(event) + "\n")
            stream.flush()

    return FilteringLogObserver(write, [predicate])


class ParentPipe(FileDescriptor):
    """
    Standard input, the pipe from the main process: C{received} with each
    line, C{gone} when it is closed (end of file, or a hang-up the reactor
    reports without a read), and when this worker's own reactor shuts down.
    """

    def __init__(
        self,
        reactor: IReactorFDSet,
        received: Callable[[bytes], object],
        gone: Callable[[], object],
    ) -> None:
        super().__init__(reactor)
        self._received = received
        self._gone = gone
        self._buffer = b""

    def fileno(self) -> int:
        return 0

    def feed(self, data: bytes) -> None:
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            self._received(line)

    def doRead(self) -> Any:
        try:
            data = os.read(0, 65536)
        except BlockingIOError:
            return None
        except OSError:
            data = b""
        if not data:
            return CONNECTION_DONE
        self.feed(data)
        return None

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        self._gone()


def main(argv: Sequence[str] | None = None) -> None:
    """
    C{python -m echod.server.workers.child --listener FD:FAMILY:DESCRIPTION ...
    --datagram FD:DESCRIPTION ... --workers N --name worker-N}, its
    configuration on standard input: one worker.
    """
    import argparse

    parser = argparse.ArgumentParser(prog="echod worker")
    parser.add_argument("--listener", action="append", default=[])
    parser.add_argument("--datagram", action="append", default=[])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--name", default="worker")
    args = parser.parse_args(argv)

    from echod.server import fastpath

    config, pending = _readFirstConfig()
    if config is None:
        sys.exit(f"{args.name}: no configuration from the main process")
    if config.server.fast_paths and fastpath.supported():
        fastpath.install()
    from twisted.internet import reactor as _reactor
    from twisted.logger import LogLevelFilterPredicate, globalLogBeginner

    from echod.logs import logLevel
    from echod.server.datagram import DatagramEcho, DatagramEchoPort
    from echod.server.listeners import PROXY_PREFIX, logsConnections
    from echod.server.stream import EchoFactory, ProxiedEchoFactory

    reactor = reactorProviding(_reactor, IWorkerReactor)
    out = sys.stdout
    predicate = LogLevelFilterPredicate(defaultLogLevel=logLevel(config.log.level))
    globalLogBeginner.beginLoggingTo([_jsonEvents(out, predicate)], redirectStandardIO=False)
    log = Logger(namespace="echod.workers")

    factory = EchoFactory(config.server, reactor)
    factory.logConnections = logsConnections(config)
    proxied = ProxiedEchoFactory(factory)
    ports = []
    for listener in args.listener:
        fd, family, description = listener.split(":", 2)
        port = fastpath.adoptStreamPort(
            reactor,
            int(fd),
            socket.AddressFamily(int(family)),
            proxied if description.startswith(PROXY_PREFIX) else factory,
        )
        os.close(int(fd))
        if config.server.fast_paths and fastpath.supported():
            fastpath.useImmediateWrites(port)
        ports.append(port)
    # One guard for all UDP listeners, as in one process; each worker holds
    # 1/N of the global rates.
    udpEcho = DatagramEcho.fromSettings(config.udp, reactor, share=args.workers)
    udpPorts = []
    for listener in args.datagram:
        fd, _ = listener.split(":", 1)
        sock = socket.socket(fileno=int(fd))
        sock.setblocking(False)
        udpPort = DatagramEchoPort(sock, udpEcho, reactor)
        udpPort.startListening()
        udpPorts.append(udpPort)
    log.info(
        "{worker}: fast paths {status}",
        worker=args.name,
        status=fastpath.status(config.server.fast_paths, reactor),
        event="fastpaths",
    )
    log.info(
        "{worker} serving {count} listeners (pid {pid})",
        worker=args.name,
        count=len(ports) + len(udpPorts),
        pid=os.getpid(),
        event="worker.started",
    )

    def report() -> None:
        # The main process may be gone (then ParentPipe stops this one).
        with contextlib.suppress(OSError):
            out.write(STATS + json.dumps(factory.totals().asJSON()) + "\n")
            if udpPorts:
                out.write(UDP_STATS + json.dumps(udpEcho.stats.asJSON()) + "\n")
            out.flush()

    from twisted.internet.task import LoopingCall

    LoopingCall(report).start(STATS_INTERVAL)
    stopping: list[bool] = []

    def stop() -> None:
        # Once: under systemd (KillMode=control-group) a worker gets SIGTERM
        # and the main process's stop line; neither means "at once".
        if stopping:
            return
        stopping.append(True)

        def finished(_: object) -> None:
            report()
            reactor.stop()

        # UDP first: nothing of it drains.  Datagrams queued on this
        # worker's sockets get no echo.
        for udpPort in udpPorts:
            udpPort.stopListening()
        udpEcho.flush()
        # A port may have closed already (its socket shut down under it):
        # stopListening then returns None, and draining must go on.
        d: Deferred[Any] = DeferredList([maybeDeferred(port.stopListening) for port in ports])
        d.addCallback(lambda _: factory.drain(config.server.shutdown_timeout))
        d.addBoth(finished)

    def reload(fresh: Config) -> None:
        # Validated by the main process, which logs the reload once.
        factory.reconfigure(fresh.server)
        factory.logConnections = logsConnections(fresh)
        udpEcho.reconfigure(fresh.udp)  # keeps its share
        predicate.defaultLogLevel = logLevel(fresh.log.level)

    def received(line: bytes) -> None:
        if line == STOP:
            stop()
        elif line == ABORT:
            stop()
            factory.abortAll("second SIGTERM")  # to the main process
        else:
            try:
                fresh = configFromLine(line)
            except ConfigError as e:
                for problem in e.lines():
                    log.error(
                        "configuration refused, keeping the running one: {problem}",
                        problem=problem,
                        event="worker.config_refused",
                    )
                return
            if fresh is not None:
                reload(fresh)

    def handleSignals() -> None:
        # After the reactor's own handlers, which would stop at once.
        signal.signal(signal.SIGTERM, lambda *_: reactor.callFromThread(stop))
        # Ctrl-C in a terminal, a SIGHUP sent to the whole group: the main
        # process decides (a reload reaches workers on their standard input).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    reactor.callWhenRunning(handleSignals)

    # The main process holds the other end of our standard input: end of
    # file there means it is gone (even by SIGKILL), and an orphan must not
    # go on holding the port.
    def orphaned() -> None:
        if stopping:  # this worker is stopping anyway (its reactor, at the end)
            return
        log.warn("{worker}: the main process is gone; stopping", worker=args.name)
        stop()

    os.set_blocking(0, False)
    pipe = ParentPipe(reactor, received, orphaned)
    reactor.addReader(pipe)
    reactor.callWhenRunning(pipe.feed, pending)
    reactor.run()


if __name__ == "__main__":
    main()
