# -*- test-case-name: tests.integration.test_fastpath -*-
"""
echod's fast paths: the same Twisted model (reactor, transports, producers),
with less Python work per message.

Where a textbook Twisted echo server spends its time, besides the kernel's
recv and send: every C{transport.write()} registers the socket for
writability (an C{epoll_ctl}), the next reactor turn sends and unregisters it
(another C{epoll_ctl}); and every event goes through C{log.callWithLogger}
and C{_doReadOrWrite}.  Three pieces remove that, and nothing else changes:

  - L{ImmediateWriteTCPServer} (and its Unix twin): C{write()} sends at once
    when nothing is buffered, and hands only an unsent tail to Twisted's own
    buffered path, so pausing producers, backpressure, half-close and
    C{loseConnection} stay Twisted's.  It also reads up to 256 KiB per
    C{recv} (what streaming needs) while pausing its producer past 64 KiB
    buffered (what memory per stalled client needs): Twisted uses one
    C{bufferSize} for both.  Installed per listening port through
    C{Port.transport}, which Twisted documents as the class to instantiate
    for accepted connections.
  - L{EchoTCPServer}: where echod was built with its C helper
    (L{echod.server._inplace}, optional), the transport of listeners whose factory
    provides L{IInPlaceEcho}: while its protocol says it is echoing, one
    call into C reads and sends back, and the transport counts it on the
    protocol.  Skipped per message: the protocol's C{dataReceived} and the
    C{write} call (two Python frames and their attribute loads), the bytes
    object, argument parsing, and the GIL hand-over around the two system
    calls: about half of echod's own CPU time per small message.
  - L{EchodReactor}: Twisted's epoll reactor, whose poll loop hands a plain
    "readable" event straight to C{doRead()} (keeping the closed-descriptor
    check and the error handling) and everything else to the stock path.

CPython 3.11 specialises attribute loads of instance attributes, not of class
attributes read through an instance: on the hot path, state that Twisted
keeps as class defaults (C{dataBuffer}, C{_writeDisconnected}, C{_aborting})
is made instance state, and the read size is a module constant.

Both read private attributes of Twisted 26.10 (the transport's buffer state,
the reactor's poller and selectables): they are used only on the Twisted
version they were checked against (L{supported}); on any other, echod runs
Twisted's stock classes and says so.  Twisted's own reactor and TCP test
suites run against them in CI (tests/e2e/test_twisted_suite.py).
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import sys
from collections.abc import Callable
from typing import Any

from twisted.internet import tcp, unix
from twisted.internet.epollreactor import EPOLLIN, EPollReactor
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IReactorSocket
from twisted.internet.main import CONNECTION_DONE, CONNECTION_LOST
from twisted.internet.posixbase import _NO_FILEDESC
from twisted.python import log
from twisted.python.failure import Failure
from zope.interface import Interface

import twisted

__all__ = [
    "CHECKED_TWISTED",
    "INPLACE_IN_C",
    "AdoptedUNIXPort",
    "EchoTCPServer",
    "EchodReactor",
    "IInPlaceEcho",
    "ImmediateWriteTCPServer",
    "ImmediateWriteUNIXServer",
    "adoptStreamPort",
    "install",
    "status",
    "supported",
    "unsupportedReason",
    "useImmediateWrites",
]

# The Twisted release whose private attributes these classes use.
CHECKED_TWISTED = "26.10."

# Read this much per recv: small messages cost the same, streams need fewer
# reactor turns.
READ_SIZE = 256 * 1024
# Pause the peer (stop reading it) once this much echo is waiting to be sent.
HIGH_WATER = 64 * 1024

_TRY_AGAIN = {errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS, errno.EINTR}

_inplaceEcho: Callable[[int], int | tuple[int, bytes]] | None
try:
    from echod.server._inplace import echo as _inplaceEcho
except ImportError:  # built without a C compiler: echo through the immediate write
    _inplaceEcho = None

# Whether the in-place echo runs in echod's C helper.
INPLACE_IN_C = _inplaceEcho is not None

# What echod.server._inplace.echo's codes other than a byte count mean for doRead.
_INPLACE_OUTCOMES: dict[int, Any] = {0: CONNECTION_DONE, -1: None, -2: CONNECTION_LOST}


def supported() -> bool:
    """
    Whether the fast paths may be used here: Linux epoll, and the Twisted
    release they were checked against.
    """
    return unsupportedReason() is None


def unsupportedReason() -> str | None:
    """
    Why the fast paths may not be used here (for C{--version}), or L{None}.
    """
    if not sys.platform.startswith("linux"):
        return f"Linux only, this is {sys.platform}"
    if not twisted.__version__.startswith(CHECKED_TWISTED):
        return f"checked against Twisted {CHECKED_TWISTED}x only"
    return None


def status(wanted: bool, reactor: object) -> str:
    """
    Which fast paths run, or why none does, for the start-up log line:
    C{on: lean epoll reactor, immediate writes, in-place echo in C}, or
    C{off (checked against Twisted 26.10.x only): Twisted's stock reactor
    and transports}.

    @param wanted: C{[server] fast_paths}.
    @param reactor: the reactor that runs.
    """
    reason = "[server] fast_paths = false" if not wanted else unsupportedReason()
    if reason is not None:
        return f"off ({reason}): Twisted's stock reactor and transports"
    parts = [
        "lean epoll reactor"
        if isinstance(reactor, EchodReactor)
        else f"{type(reactor).__name__} (chosen with --reactor) instead of the lean one",
        "immediate writes",
        "in-place echo in C" if INPLACE_IN_C else "no in-place echo (the C helper is not built)",
    ]
    return "on: " + ", ".join(parts)


class IInPlaceEcho(Interface):
    """
    A protocol factory whose protocols let their transport echo for them.

    Its protocols have two attributes: C{echoing}, true while every byte
    received is to be written back unchanged, and C{received}, a byte count.
    While C{echoing} is true, an L{EchoTCPServer} writes back what it reads
    and adds its length to C{received} instead of calling C{dataReceived};
    otherwise it calls C{dataReceived} as any transport does.
    """


class _ImmediateWrite:
    """
    The write fast path and the split read size / high-water mark, for a
    subclass of Twisted's stream transports.
    """

    bufferSize = READ_SIZE

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Twisted's class defaults, as instance attributes: the fast paths
        # read them for every message, and CPython 3.11 specialises only
        # instance attribute loads (24 bytes per connection).
        self.dataBuffer = b""
        self._writeDisconnected = False
        self._aborting = False

    # Declared for the type checker; all are Twisted's.
    dataBuffer: bytes
    _tempDataLen: int
    connected: int
    _writeDisconnected: bool
    _aborting: bool
    TLS: bool
    socket: Any

    # Descriptors waiting for sendmsg (Unix sockets only): while any are
    # queued, writes take Twisted's path, which sends them with the bytes.
    _sendmsgQueue: Any = ()

    def write(self, data: bytes) -> None:
        if (
            self.dataBuffer
            or self._tempDataLen
            or not self.connected
            or self._writeDisconnected
            or self._aborting
            or self.TLS
            or type(data) is not bytes
            or self._sendmsgQueue
        ):
            # Something is queued (order), the connection is going, or the
            # data is odd: Twisted's own path decides.
            super().write(data)  # type: ignore[misc]
            return
        try:
            sent = self.socket.send(data)
        except OSError as e:
            if e.errno not in _TRY_AGAIN:
                # Let the stock path meet the error in doWrite and disconnect
                # the way it always does.
                super().write(data)  # type: ignore[misc]
                return
            sent = 0
        if sent < len(data):
            super().write(data[sent:] if sent else data)  # type: ignore[misc]

    def _isSendBufferFull(self) -> bool:
        return len(self.dataBuffer) + self._tempDataLen > HIGH_WATER


class ImmediateWriteTCPServer(_ImmediateWrite, tcp.Server):
    """
    Twisted's accepted TCP connection, with the write fast path, and a
    C{doRead} that hands data to the protocol without the extra
    C{_dataReceived} call (the same results as C{tcp.Connection.doRead}).
    """

    def doRead(self) -> Any:
        try:
            data = self.socket.recv(READ_SIZE)
        except OSError as e:
            if e.args[0] == errno.EWOULDBLOCK:
                return None
            return CONNECTION_LOST
        if not data:
            return CONNECTION_DONE
        self.protocol.dataReceived(data)
        return None


class EchoTCPServer(ImmediateWriteTCPServer):
    """
    L{ImmediateWriteTCPServer} for protocols of an L{IInPlaceEcho} factory,
    where echod's C helper was built: while the protocol is C{echoing} and
    nothing is queued, one call into C reads and sends back, and the count
    goes on the protocol; a tail it could not send goes to Twisted's
    buffered path.  Anything else (the protocol not echoing, something
    queued, the connection closing) reads as L{ImmediateWriteTCPServer} does.
    """

    def doRead(self) -> Any:
        protocol: Any = self.protocol
        # The same "nothing queued, still writing" test as _ImmediateWrite.write,
        # inlined: a shared method would add a call to every message.
        if (
            not protocol.echoing
            or self.dataBuffer
            or self._tempDataLen
            or self._writeDisconnected
            or self._aborting
        ):
            return ImmediateWriteTCPServer.doRead(self)
        result = _inplaceEcho(self.socket.fileno())  # type: ignore[misc]
        if isinstance(result, int):
            if result > 0:
                protocol.received += result
                return None
            return _INPLACE_OUTCOMES[result]
        received, tail = result
        protocol.received += received
        tcp.Server.write(self, tail)
        return None


class ImmediateWriteUNIXServer(_ImmediateWrite, unix.Server):
    """
    Twisted's accepted Unix-socket connection, with the write fast path.
    Descriptors queued by C{sendFileDescriptor} go out with the bytes through
    C{sendmsg} (Twisted's C{_sendmsgQueue}): while any are queued, writes take
    Twisted's path.
    """


_FAST: dict[type, type] = {
    tcp.Server: ImmediateWriteTCPServer,
    unix.Server: ImmediateWriteUNIXServer,
}


def useImmediateWrites(port: IListeningPort) -> bool:
    """
    Make C{port} accept connections as fast-path transports, if it is one of
    Twisted's TCP or Unix ports (TLS ports are TCP ports underneath): an
    L{EchoTCPServer} for a TCP port whose factory provides L{IInPlaceEcho}
    (not behind TLS, whose factory is Twisted's), if echod's C helper was
    built.

    @return: whether it did.
    """
    stock = getattr(port, "transport", None)
    fast = _FAST.get(stock) if isinstance(stock, type) else None
    if fast is None:
        return False
    if (
        fast is ImmediateWriteTCPServer
        and INPLACE_IN_C
        and IInPlaceEcho.providedBy(getattr(port, "factory", None))
    ):
        fast = EchoTCPServer
    port.transport = fast  # type: ignore[attr-defined]
    return True


class AdoptedUNIXPort(unix.Port):
    """
    A unix listening socket inherited from the main process, which made it
    and its path and removes them.  Twisted's adopted unix port treats the
    socket as its own: it sets the path's mode to its default (0666), shuts
    the socket down when it stops listening (refusing connections for every
    process that shares it) and unlinks the path (systemd.socket(5): a daemon
    must not unlink a socket it was passed).  This one does none of that.
    """

    # tcp.Port's own switch, set on its adopted sockets (not on unix ones).
    _shouldShutdown = False

    def connectionLost(self, reason: Failure) -> None:
        # unix.Port.connectionLost without the unlink.
        if self.lockFile is not None:
            self.lockFile.unlock()
        tcp.Port.connectionLost(self, reason)


def adoptStreamPort(
    reactor: IReactorSocket, fd: int, family: socket.AddressFamily, factory: IProtocolFactory
) -> IListeningPort:
    """
    C{reactor.adoptStreamPort}, but for a unix socket an L{AdoptedUNIXPort},
    made as the reactor makes its own (C{_fromListeningDescriptor}), with
    the mode the path has (which C{startListening} sets again).
    tests/integration/test_worker.py checks all of it on the Twisted in use.
    Twisted's private parts: only with the Twisted release they were
    checked against (L{unsupportedReason}); the supervisor refuses to share
    a unix socket among workers on any other.
    """
    if family != socket.AF_UNIX:
        # Annotated as taking a ServerFactory, but any IProtocolFactory does:
        # Twisted's own systemd: endpoint hands it one.
        return reactor.adoptStreamPort(fd, family, factory)  # type: ignore[arg-type]
    with socket.fromfd(fd, socket.AF_UNIX, socket.SOCK_STREAM) as inherited:
        path = inherited.getsockname()
    port: AdoptedUNIXPort = AdoptedUNIXPort._fromListeningDescriptor(reactor, fd, factory)
    if path and path[:1] not in (b"\0", "\0"):  # not an abstract name
        port.mode = stat.S_IMODE(os.stat(path).st_mode)
    port.startListening()
    return port


class EchodReactor(EPollReactor):
    """
    Twisted's epoll reactor with a leaner poll loop for the common event.

    A plain "readable" event goes straight to C{doRead()}, with the same
    closed-descriptor check, error logging and disconnection as
    C{_doReadOrWrite}; any other event (writable, hang-up, error, several
    at once) takes the stock path.  What is skipped is C{callWithLogger}'s
    legacy log context (the "system" prefix of old-style log lines emitted
    inside C{dataReceived}) and a layer of calls.
    """

    def doPoll(self, timeout: float | None) -> None:
        if timeout is None:
            timeout = -1
        try:
            events = self._poller.poll(timeout, len(self._selectables))
        except OSError as err:
            if err.errno == errno.EINTR:
                return
            raise
        selectables = self._selectables
        stock = self._doReadOrWrite
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is None:
                continue
            if event == EPOLLIN:
                try:
                    # Twisted's contract: a selectable whose fileno() is -1
                    # is disconnected, never read (test_fdset checks it).
                    why = _NO_FILEDESC if selectable.fileno() == -1 else selectable.doRead()
                except BaseException:
                    why = sys.exc_info()[1]
                    log.err()
                if why:
                    self._disconnectSelectable(selectable, why, True)
            else:
                log.callWithLogger(selectable, stock, selectable, fd, event)

    doIteration = doPoll


def _liftMmapThreshold() -> None:
    """
    glibc serves allocations above its mmap threshold (128 KiB at start) with
    a fresh mmap, and C{recv(READ_SIZE)} allocates READ_SIZE before it shrinks
    the result to what arrived: each read of a 64-byte message then costs an
    mmap and a munmap (measured here: 15 us instead of 2.6 us).  The shrink
    is a realloc, which never moves the threshold; a free() of a mapped block
    does (mallopt(3), "dynamic mmap threshold"): free one larger than two
    reads, once.
    """
    block = bytearray(4 * READ_SIZE)
    del block


def install() -> EchodReactor:
    """
    Install L{EchodReactor} as the global reactor (before anything imports
    C{twisted.internet.reactor}).
    """
    from twisted.internet.main import installReactor

    _liftMmapThreshold()
    reactor = EchodReactor()
    installReactor(reactor)
    return reactor
