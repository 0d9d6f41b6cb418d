# -*- test-case-name: tests.unit.test_echo -*-
"""
The echo service of RFC 862 over streams: every byte received is sent back, in
order, until the peer is done.

Three duties shape the protocol beyond C{transport.write(data)}:

  - Backpressure.  The transport is registered as its own streaming producer,
    so when the echo cannot be sent as fast as the peer sends (the peer does
    not read), Twisted stops reading from that peer until the buffer drains.
    Memory per connection stays near the transport's buffer size, whatever the
    peer pushes.
  - Half-close.  A peer that shuts down its sending side still gets every echoed
    byte, then the connection is closed (L{IHalfCloseableProtocol}).
  - Every close path unregisters the producer first: C{loseConnection()} on a
    transport that is its own paused producer never closes (twisted#5344).

The protocol and its factory stay in one module (longer than echod's usual
600 lines) because they are one mechanism: the factory admits, evicts, idles
and drains connections by reading and setting the protocol's per-connection
state (its byte count, activity mark, closing state), which neither has a
reason to expose to anyone else.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHalfCloseableProtocol,
    IReactorTime,
    ITCPTransport,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import LoopingCall
from twisted.logger import Logger, LogLevel
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure
from zope.interface import implementer

from echod.addresses import IPAddress, describePeer, peerIP
from echod.config import ServerConfig
from echod.server.fastpath import IInPlaceEcho
from echod.server.limits import (
    AccessList,
    ConnectionLimits,
    LogBudget,
    NetworkList,
    Refusal,
    logSummary,
)
from echod.server.proxyprotocol import ProxyHeaderError, parseProxyHeader
from echod.server.stats import EchoStats, TCPTotals

__all__ = [
    "EchoFactory",
    "EchoProtocol",
    "ProxiedEchoFactory",
    "describeLoss",
]

# While draining for shutdown, how often connections are checked for having been
# quiet for drain_quiet seconds: those are closed then.
DRAIN_TICK = 0.1
# How often open connections are looked at to tell which are idle, so that a
# newcomer can take the place of one idle for pressure_idle_timeout when the
# server is full: pressure_idle_timeout / PRESSURE_CHECKS, within these bounds.
# Nothing is done per message; one pass over the connections per check.
PRESSURE_CHECKS = 4
PRESSURE_TICK_MIN, PRESSURE_TICK_MAX = 0.25, 1.0
# The idle timeout is checked this many times per idle_timeout, instead of
# being pushed back at every message: a connection is aborted between
# idle_timeout and (1 + 1/IDLE_CHECKS) x idle_timeout after its last byte.
IDLE_CHECKS = 4


@implementer(IHalfCloseableProtocol)
class EchoProtocol(Protocol, TimeoutMixin):
    """
    Echo one stream connection.

    The peer is admitted (ACL, limits) in L{peerKnown}, which L{connectionMade}
    calls at once for a plain listener.  Behind a proxy (C{expectProxyHeader}),
    the PROXY header is read first, and the peer it names is the one admitted,
    counted and logged; the rest of the first segment is then echoed.

    @ivar received: bytes received (and, unless discarded while closing,
        echoed) so far.
    @ivar echoing: admitted and echoing every byte: the fast TCP transport
        (L{echod.server.fastpath.EchoTCPServer}) then echoes and counts what it
        reads itself, without calling L{dataReceived}.
    @ivar proxyAddress: the proxy's own address, behind a proxy.
    """

    log = Logger()
    factory: EchoFactory
    # A TCP, Unix or TLS transport: ITransport, and its own IPushProducer and
    # IConsumer; no single Twisted interface says all of that.
    transport: Any

    received = 0
    discarded = 0
    echoing = False
    peerAddress: IAddress | None = None
    proxyAddress: IAddress | None = None
    peer: IPAddress | None = None
    opened = 0.0
    expectProxyHeader = False
    # The proxy's own connections (PROXY LOCAL: health checks) are logged at
    # debug level: a check every few hundred milliseconds is not news.
    _quiet = False
    _header = b""
    _headerTimeout: IDelayedCall | None = None
    _admitted = False
    _closing = False
    _closeReason: str | None = None
    # What L{received} was when the factory last looked (L{EchoFactory}'s
    # activity checks): a different count means activity since.
    _activeMark = 0
    # Idle-check state: class defaults until they change, so that an idle
    # connection carries no instance entries for them (memory per connection).
    _idleMark = 0
    _quietChecks = 0

    def callLater(self, period: float, func: Callable[[], object]) -> IDelayedCall:
        """
        L{TimeoutMixin}'s timer, on the factory's clock rather than the global
        reactor.
        """
        return self.factory.clock.callLater(period, func)

    def connectionMade(self) -> None:
        self.opened = self.factory.clock.seconds()
        if not self.expectProxyHeader:
            self.peerKnown(self.transport.getPeer())
            return
        self.proxyAddress = self.transport.getPeer()
        refusal = self.factory.awaitHeader(self)
        if refusal is not None:
            self._refuse(refusal)
            return
        self.dataReceived = self._readProxyHeader  # type: ignore[method-assign]
        self._headerTimeout = self.factory.clock.callLater(
            self.factory.proxyHeaderTimeout, self._proxyHeaderFailed, "no PROXY header in time"
        )

    def _readProxyHeader(self, data: bytes) -> None:
        buffered = self._header + data
        try:
            header = parseProxyHeader(buffered)
        except ProxyHeaderError as e:
            self._proxyHeaderFailed(str(e))
            return
        if header is None:
            self._header = buffered
            return
        self._stopWaitingForHeader()
        del self.dataReceived  # back to the class's echo
        self._quiet = header.source is None
        self.peerKnown(header.source or self.proxyAddress)  # type: ignore[arg-type]
        rest = buffered[header.length :]
        if rest and self._admitted:
            self.dataReceived(rest)

    def _proxyHeaderFailed(self, problem: str) -> None:
        self._stopWaitingForHeader()
        self._closeReason = problem
        self.factory.proxyHeaderFailed(self, problem)
        self.transport.abortConnection()

    def _closedWhileWaitingForHeader(self) -> None:
        if self._header:
            self._proxyHeaderFailed("closed before the PROXY header ended")
            return
        # Connected and closed without a byte: a port probe or a plain TCP
        # health check, not a broken proxy.
        self._stopWaitingForHeader()
        self.log.debug(
            "{proxy} closed before sending a PROXY header",
            event="connection.probe",
            proxy=describePeer(self.proxyAddress),
        )
        self.transport.loseConnection()

    def _stopWaitingForHeader(self) -> None:
        if self._headerTimeout is not None and self._headerTimeout.active():
            self._headerTimeout.cancel()
        self._headerTimeout = None
        self._header = b""
        self.factory.headerDone(self)

    def peerKnown(self, address: IAddress) -> None:
        """
        The real peer is known: admit it or close the connection at once.
        """
        self.peerAddress = address
        # Parsing the address costs per connection; only limits need it (logs
        # describe the address when, and if, they are written).
        self.peer = peerIP(address) if self.factory.limits.needsPeer() else None
        refusal = self.factory.admit(self)
        if refusal is not None:
            self._refuse(refusal)
            return
        self._admitted = True
        if self.factory.noDelay and ITCPTransport.providedBy(self.transport):
            # An echo is a reply: send small ones now, not after Nagle's wait.
            self.transport.setTcpNoDelay(True)
        self.transport.registerProducer(self.transport, True)
        self.echoing = True
        self.armIdleTimeout()
        if not self.factory.logConnections:
            return
        if self.proxyAddress is None:
            self.log.info(
                "{peer} connected to {local}",
                event="connection.opened",
                peer=describePeer(address),
                local=describePeer(self.transport.getHost()),
            )
        else:
            self.log.emit(
                LogLevel.debug if self._quiet else LogLevel.info,
                "{peer} connected to {local} through {proxy}",
                event="connection.opened",
                peer=describePeer(address),
                local=describePeer(self.transport.getHost()),
                proxy=describePeer(self.proxyAddress),
            )

    def _refuse(self, refusal: str) -> None:
        """
        Close at once, unserved: not a byte is echoed, whatever the transport
        had already read.
        """
        self._closeReason = f"refused ({refusal})"
        self.dataReceived = self._ignore  # type: ignore[method-assign]
        self.transport.loseConnection()

    def _ignore(self, data: bytes) -> None:
        pass

    def dataReceived(self, data: bytes) -> None:
        # The hot path: the byte count is also what the idle checks look at.
        self.transport.write(data)
        self.received += len(data)

    def armIdleTimeout(self) -> None:
        """
        Start (or restart, after a reload) the idle checks: L{TimeoutMixin}'s
        timer, every C{idle_timeout / IDLE_CHECKS} seconds.
        """
        idle = self.factory.idleTimeout
        if self.received != self._idleMark:
            self._idleMark = self.received
        if self._quietChecks:
            self._quietChecks = 0
        self.setTimeout(idle / IDLE_CHECKS if idle else None)

    def _discard(self, data: bytes) -> None:
        self.received += len(data)
        self.discarded += len(data)

    def readConnectionLost(self) -> None:
        """
        The peer will send nothing more; everything it sent is already in the
        transport's buffer.  Close once that is flushed.
        """
        if not self._admitted:
            if self._headerTimeout is not None:
                self._closedWhileWaitingForHeader()
            return
        self._closeReason = self._closeReason or "peer closed"
        self.transport.unregisterProducer()
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        """
        Our side is shut down (L{finish}): keep reading, and discarding, until
        the peer closes, so that its late data does not make the kernel answer
        with a reset.
        """

    def timeoutConnection(self) -> None:
        """
        An idle check: if nothing arrived for C{idle_timeout}, abort (a peer
        that stopped reading would never let an orderly close finish);
        otherwise check again later.
        """
        if self.received != self._idleMark:
            self._idleMark, self._quietChecks = self.received, 0
        else:
            self._quietChecks += 1
        if self._quietChecks < IDLE_CHECKS:
            self.setTimeout(self.timeOut)
            return
        self._closeReason = "idle timeout"
        self.log.info(
            "{peer} idle for {timeout:g}s: aborting",
            event="connection.idle",
            peer=describePeer(self.peerAddress),
            timeout=self.factory.idleTimeout,
        )
        self.transport.abortConnection()

    def finish(self, reason: str) -> None:
        """
        Stop echoing and close in order: flush what was echoed, send FIN, then
        read and discard until the peer closes.  Where the transport cannot
        half-close (TLS), close after the flush.
        """
        if self._closing:
            return
        self._closing = True
        self._closeReason = reason
        self.setTimeout(None)
        # Instance attribute: the hot path keeps no "am I closing" test.
        self.dataReceived = self._discard  # type: ignore[method-assign]
        self.echoing = False
        self.transport.unregisterProducer()
        halfCloseable = ITCPTransport.providedBy(self.transport)
        if halfCloseable:
            self.transport.resumeProducing()
            self.transport.loseWriteConnection()
        else:
            self.transport.loseConnection()

    def abort(self, reason: str) -> None:
        self._closeReason = reason
        self.transport.abortConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.setTimeout(None)
        if not self._admitted:
            if self._headerTimeout is not None:
                self._closedWhileWaitingForHeader()
            return
        self.factory.release(self)
        if not self.factory.logConnections:
            return
        duration = self.factory.clock.seconds() - self.opened
        how = self._closeReason or describeLoss(reason)
        self.log.emit(
            LogLevel.debug if self._quiet else LogLevel.info,
            "{peer} disconnected after {duration:.3f}s, {bytes} bytes echoed ({how})",
            event="connection.closed",
            peer=describePeer(self.peerAddress),
            # Microseconds: JSON logs would show the float's every digit.
            duration=round(duration, 6),
            bytes=self.received - self.discarded,
            how=how,
        )


def describeLoss(reason: Failure) -> str:
    """
    How a connection ended, as a phrase for a log line: C{closed}, C{aborted},
    C{TLS failed: tlsv1 alert unknown ca}, or C{lost: ...} with the error's
    own message.
    """
    if reason.check(ConnectionDone):
        return "closed"
    if reason.check(ConnectionAborted):
        return "aborted"
    value = reason.value
    if value is not None and type(value).__module__.startswith("OpenSSL"):
        # pyOpenSSL's errors carry OpenSSL's queue: [(library, function,
        # reason), ...]; the reasons are what a person can read.
        queue = value.args[0] if value.args and isinstance(value.args[0], list) else []
        problems = [str(entry[-1]) for entry in queue if isinstance(entry, tuple) and entry]
        return "TLS failed: " + ("; ".join(problems) or type(value).__name__)
    return f"lost: {reason.getErrorMessage()}"


if TYPE_CHECKING:
    _EchoProtocolFactory = Factory[EchoProtocol]
else:  # Twisted's Factory is generic at run time from 26.4 on only
    _EchoProtocolFactory = Factory


@implementer(IInPlaceEcho)
class ProxiedEchoFactory(_EchoProtocolFactory):
    """
    The factory of a C{haproxy:} listener: the same L{EchoFactory} (one set
    of limits and connections for all listeners), with protocols that read a
    PROXY header first.
    """

    noisy = False

    def __init__(self, echoFactory: EchoFactory) -> None:
        self.echoFactory = echoFactory

    def buildProtocol(self, addr: IAddress | None) -> EchoProtocol | None:
        protocol = self.echoFactory.buildProtocol(addr)
        if protocol is not None:
            protocol.expectProxyHeader = True
        return protocol


@implementer(IInPlaceEcho)
class EchoFactory(_EchoProtocolFactory):
    """
    Builds L{EchoProtocol}s, admits their peers, tracks the open ones, and
    drains them on shutdown.

    Which connections are idle is known without any work per message: every
    so often (L{PRESSURE_CHECKS} per C{pressure_idle_timeout}, and every
    L{DRAIN_TICK} while draining) one pass compares each connection's byte
    count with the one seen last time.  Connections are kept in the order
    they were last seen active, oldest first, overall and per peer: the one
    idle longest is the first, found without a search.

    @param clock: the reactor's time interface; everything time-related in the
        protocols goes through it.
    """

    protocol = EchoProtocol
    log = Logger()
    noisy = False

    def __init__(self, settings: ServerConfig, clock: IReactorTime) -> None:
        self.clock = clock
        self.connections: set[EchoProtocol] = set()
        self.stats = EchoStats()
        self.draining = False
        self.limits = ConnectionLimits(0, 0, AccessList())
        self.trustedProxies = NetworkList()
        self.idleTimeout = 0.0
        self.pressureIdleTimeout = 10.0
        self.drainQuiet = 2.0
        self.proxyHeaderTimeout = 5.0
        # Whether connections log their opening and closing ([log] level info
        # or debug): at a higher level their log events are not even built.
        self.logConnections = True
        # TCP_NODELAY on TCP connections: an echo is a reply, to be sent at
        # once rather than after Nagle's wait (asyncio and uvloop do the same).
        self.noDelay = True
        # Connections behind a proxy whose PROXY header has not arrived yet:
        # their peer is unknown, but they hold a descriptor, so they count
        # against max_connections.
        self.awaitingHeader: set[EchoProtocol] = set()
        # Open connections by the time they were last seen active, oldest
        # first (insertion order; an active one is moved to the end), overall
        # and per peer address (for max_connections_per_peer).
        self._lastActive: dict[EchoProtocol, float] = {}
        self._peerLastActive: dict[IPAddress, dict[EchoProtocol, float]] = {}
        self._activityLoop: LoopingCall | None = None
        self.reconfigure(settings)
        self._refusals = LogBudget(
            clock,
            logSummary(self.log, "connections refused or evicted", "connection.refused.summary"),
        )
        self._drained: Deferred[None] | None = None
        self._drainLoop: LoopingCall | None = None
        self._drainDeadline: IDelayedCall | None = None
        self._finishAllAt = 0.0

    def reconfigure(self, settings: ServerConfig) -> None:
        """
        Apply new limits, ACLs, trusted proxies and timeouts; open connections
        are kept (new idle timeouts apply from their next activity).
        """
        self.limits.reconfigure(
            settings.max_connections,
            settings.max_connections_per_peer,
            AccessList.fromStrings(settings.allow, settings.deny),
        )
        self.trustedProxies = NetworkList.fromStrings(settings.trusted_proxies)
        self.idleTimeout = settings.idle_timeout
        self.pressureIdleTimeout = settings.pressure_idle_timeout
        self.drainQuiet = settings.drain_quiet
        self.proxyHeaderTimeout = settings.proxy_header_timeout
        for connection in self.connections:
            if not connection._closing:
                connection.armIdleTimeout()
        self._stopActivityChecks()
        if self.connections and not self.draining:
            self._startActivityChecks()

    def awaitHeader(self, protocol: EchoProtocol) -> str | None:
        """
        A connection to a PROXY listener, from C{protocol.proxyAddress}: refuse
        it at once unless that address is a trusted proxy (no header byte is
        read: anyone else could claim any address), else hold its place under
        C{max_connections} while its header comes, or say why it is refused.
        """
        proxy = peerIP(protocol.proxyAddress)
        if self.draining:
            refusal = Refusal.SHUTTING_DOWN
        elif proxy is not None and proxy not in self.trustedProxies:
            # Peers without an IP address (Unix sockets) are governed by the
            # socket file's permissions.
            refusal = Refusal.UNTRUSTED_PROXY
        elif self._full() and not self._evict(None, protocol):
            refusal = Refusal.MAX_CONNECTIONS
        else:
            self.awaitingHeader.add(protocol)
            return None
        self._refused(protocol, refusal)
        return refusal

    def _full(self) -> bool:
        maxTotal = self.limits.maxTotal
        return bool(maxTotal) and self.limits.total + len(self.awaitingHeader) >= maxTotal

    def headerDone(self, protocol: EchoProtocol) -> None:
        self.awaitingHeader.discard(protocol)

    def proxyHeaderFailed(self, protocol: EchoProtocol, problem: str) -> None:
        self.stats.refused[Refusal.PROXY_HEADER] += 1
        if self._refusals.allow(Refusal.PROXY_HEADER):
            self.log.warn(
                "{proxy}: bad PROXY header: {problem}",
                event="connection.refused",
                peer=describePeer(protocol.proxyAddress),
                proxy=describePeer(protocol.proxyAddress),
                reason=Refusal.PROXY_HEADER,
                problem=problem,
            )

    def admit(self, protocol: EchoProtocol) -> str | None:
        """
        Count C{protocol} in, or return why it is refused (and log that, within
        a budget).  When a cap is reached, the connection idle longest (for
        at least C{pressure_idle_timeout}) gives its place to the newcomer.
        """
        if self.draining:
            refusal: str | None = Refusal.SHUTTING_DOWN
        else:
            peer = protocol.peer
            refusal = self.limits.admit(peer)
            if refusal == Refusal.MAX_CONNECTIONS_PER_PEER and self._evict(peer, protocol):
                refusal = self.limits.admit(peer)
            if refusal == Refusal.MAX_CONNECTIONS and self._evict(None, protocol):
                refusal = self.limits.admit(peer)
        if refusal is None:
            self.connections.add(protocol)
            self.stats.opened += 1
            self._noteAdmitted(protocol)
            return None
        self._refused(protocol, refusal)
        return refusal

    def _refused(self, protocol: EchoProtocol, refusal: str) -> None:
        self.stats.refused[refusal] += 1
        if self._refusals.allow(refusal):
            self.log.warn(
                "{peer} refused: {reason}",
                event="connection.refused",
                peer=describePeer(protocol.peerAddress or protocol.proxyAddress),
                reason=refusal,
            )

    def release(self, protocol: EchoProtocol) -> None:
        """
        An admitted connection is gone (or evicted: then this comes before its
        transport has closed, and again when it has, which changes nothing).
        """
        if protocol not in self.connections:
            return
        self.connections.discard(protocol)
        self._forget(protocol)
        self.limits.release(protocol.peer)
        self.stats.closed += 1
        self.stats.bytesClosed += protocol.received - protocol.discarded
        self.stats.bytesDiscarded += protocol.discarded
        if self.draining and not self.connections:
            self._drainFinished()

    def totals(self) -> TCPTotals:
        """
        This factory's totals, open connections included, as metrics report them.
        """
        return TCPTotals(
            opened=self.stats.opened,
            refused=Counter(self.stats.refused),
            evicted=self.stats.evicted,
            sent=self.bytesEchoed(),
            discarded=self.stats.bytesDiscarded + sum(c.discarded for c in self.connections),
            open=len(self.connections),
            limit=self.limits.maxTotal,
        )

    def bytesEchoed(self) -> int:
        """
        Bytes echoed so far, by closed and open connections.
        """
        return self.stats.bytesClosed + sum(c.received - c.discarded for c in self.connections)

    # --- activity: who is idle, and who gives way under pressure ----------------

    def _noteAdmitted(self, protocol: EchoProtocol) -> None:
        now = self.clock.seconds()
        protocol._activeMark = protocol.received
        self._lastActive[protocol] = now
        if protocol.peer is not None:
            self._peerLastActive.setdefault(protocol.peer, {})[protocol] = now
        if self._activityLoop is None and not self.draining:
            self._startActivityChecks()

    def _forget(self, protocol: EchoProtocol) -> None:
        self._lastActive.pop(protocol, None)
        peer = protocol.peer
        if peer is not None:
            ofPeer = self._peerLastActive.get(peer)
            if ofPeer is not None:
                ofPeer.pop(protocol, None)
                if not ofPeer:
                    del self._peerLastActive[peer]

    def _noteActivity(self) -> None:
        """
        One pass: connections that received anything since the last pass are
        active now, and move to the end of the order.
        """
        if not self._lastActive:
            # Stopped here, not when the last connection goes: a stream of
            # short connections would otherwise start and stop it each time.
            self._stopActivityChecks()
            return
        now = self.clock.seconds()
        active = [c for c in self._lastActive if c.received != c._activeMark]
        for connection in active:
            self._touched(connection, now)

    def _touched(self, connection: EchoProtocol, now: float) -> None:
        connection._activeMark = connection.received
        del self._lastActive[connection]
        self._lastActive[connection] = now
        peer = connection.peer
        if peer is not None:
            ofPeer = self._peerLastActive[peer]
            del ofPeer[connection]
            ofPeer[connection] = now

    def _idleLongest(self, order: dict[EchoProtocol, float], quiet: float) -> EchoProtocol | None:
        """
        The first connection of C{order} that has received nothing for at
        least C{quiet} seconds, if any.  Those found active on the way move to
        the end; the search stops at the first one seen active too recently
        (all after it were seen later), so it costs no pass over the rest.
        """
        now = self.clock.seconds()
        for _ in range(len(order)):
            connection, seen = next(iter(order.items()))
            if connection.received != connection._activeMark:
                self._touched(connection, now)
            elif seen < now and now - seen >= quiet:
                return connection
            else:
                return None
        return None

    def _evict(self, peer: IPAddress | None, newcomer: EchoProtocol) -> bool:
        """
        Make room for C{newcomer}: abort the connection idle longest, overall
        (C{peer} L{None}) or of C{peer}, if it has been idle for at least
        C{pressure_idle_timeout}.  Its place is free on return.
        """
        if peer is None:
            order: dict[EchoProtocol, float] | None = self._lastActive
        else:
            order = self._peerLastActive.get(peer)
        if not order:
            return False
        victim = self._idleLongest(order, self.pressureIdleTimeout)
        if victim is None:
            return False
        idle = self.clock.seconds() - order[victim]
        cap = Refusal.MAX_CONNECTIONS if peer is None else Refusal.MAX_CONNECTIONS_PER_PEER
        self.stats.evicted += 1
        if self._refusals.allow("evicted"):
            self.log.warn(
                "{peer} evicted after {idle:.1f}s idle to admit {newcomer} ({cap} reached)",
                event="connection.evicted",
                peer=describePeer(victim.peerAddress),
                idle=idle,
                newcomer=describePeer(newcomer.peerAddress or newcomer.proxyAddress),
                cap=cap,
            )
        self.release(victim)
        victim.abort(f"evicted after {idle:.1f}s idle: {cap} reached")
        return True

    def _startActivityChecks(self) -> None:
        if not (self.limits.maxTotal or self.limits.maxPerPeer):
            return
        period = self.pressureIdleTimeout / PRESSURE_CHECKS
        period = min(PRESSURE_TICK_MAX, max(PRESSURE_TICK_MIN, period))
        loop = self._activityLoop = LoopingCall(self._noteActivity)
        loop.clock = self.clock
        loop.start(period, now=False)

    def _stopActivityChecks(self) -> None:
        loop, self._activityLoop = self._activityLoop, None
        if loop is not None and loop.running:
            loop.stop()

    # --- shutdown ---------------------------------------------------------------

    def drain(self, timeout: float) -> Deferred[None]:
        """
        Let open connections finish, for at most C{timeout} seconds; the
        result fires when none is left.

        A connection is closed in order (flush, FIN, discard until the peer
        closes) once it has received nothing for C{drain_quiet} seconds (a
        ping client between two messages is not done), or at half the
        timeout if it keeps talking; at the timeout, whatever is left is
        aborted.  Listening must have stopped before this is called.
        """
        self.draining = True
        self._stopActivityChecks()
        self._refusals.flush()
        for waiting in list(self.awaitingHeader):
            waiting.abort("shutdown before the PROXY header")
        if not self.connections:
            return succeed(None)
        if self._drained is not None:
            return self._drained
        self.log.info(
            "draining {count} connections (at most {timeout:g}s)",
            event="shutdown.draining",
            count=len(self.connections),
            timeout=timeout,
        )
        self._drained = Deferred()
        self._finishAllAt = self.clock.seconds() + timeout / 2
        loop = self._drainLoop = LoopingCall(self._drainTick)
        loop.clock = self.clock
        loop.start(min(DRAIN_TICK, timeout / 2) or DRAIN_TICK, now=True)
        self._drainDeadline = self.clock.callLater(timeout, self.abortAll, "shutdown timeout")
        return self._drained

    def _drainTick(self) -> None:
        if self.clock.seconds() >= self._finishAllAt:
            for connection in list(self.connections):
                connection.finish("shutdown")
            return
        self._noteActivity()
        while (quiet := self._idleLongest(self._lastActive, self.drainQuiet)) is not None:
            # Finished connections leave the order: what they still receive
            # is discarded, not activity.
            self._forget(quiet)
            quiet.finish("shutdown")

    def abortAll(self, reason: str) -> None:
        """
        Abort every open connection now (the drain timed out, or a second
        SIGTERM asked for it).
        """
        self._drainDeadline = None
        if self.connections:
            self.log.warn(
                "aborting {count} connections: {reason}",
                event="shutdown.aborting",
                count=len(self.connections),
                reason=reason,
            )
        for connection in list(self.connections):
            connection.abort(reason)

    def _drainFinished(self) -> None:
        if self._drainLoop is not None and self._drainLoop.running:
            self._drainLoop.stop()
        if self._drainDeadline is not None and self._drainDeadline.active():
            self._drainDeadline.cancel()
        self._drainDeadline = None
        drained, self._drained = self._drained, None
        if drained is not None:
            self.log.info("all connections closed", event="shutdown.drained")
            drained.callback(None)
