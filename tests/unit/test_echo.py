"""
Tests for L{echod.server.stream} with in-memory transports and a fake clock.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogEvent, LogLevel, capturedLogs
from twisted.python.failure import Failure

from echod.config import ServerConfig
from echod.server.limits import Refusal
from echod.server.stream import EchoFactory, EchoProtocol
from tests.testing import proxyV2


def makeFactory(**settings: object) -> tuple[EchoFactory, Clock]:
    clock = Clock()
    return EchoFactory(ServerConfig(**settings), clock), clock  # type: ignore[arg-type]


def connect(
    factory: EchoFactory, host: str = "192.0.2.1", port: int = 40000
) -> tuple[EchoProtocol, StringTransport]:
    address = IPv6Address("TCP", host, port) if ":" in host else IPv4Address("TCP", host, port)
    protocol = factory.buildProtocol(address)
    assert protocol is not None
    transport = StringTransport(peerAddress=address, hostAddress=IPv4Address("TCP", "192.0.2.9", 7))
    protocol.makeConnection(transport)
    return protocol, transport


def tick(clock: Clock, seconds: float, step: float = 0.25) -> None:
    """
    Let time pass the way it does, in small steps (Clock.advance(n) moves the
    time first, so a timer re-armed during a long jump counts from its end).
    """
    clock.pump([step] * round(seconds / step))


def lose(protocol: EchoProtocol) -> None:
    protocol.connectionLost(Failure(ConnectionDone()))


@pytest.fixture
def events() -> Iterator[Sequence[LogEvent]]:
    with capturedLogs() as captured:
        yield captured


class EchoProtocolTests:
    def test_echoesEveryByteInOrder(self) -> None:
        """
        Whatever arrives is written back, in order.
        """
        protocol, transport = connect(makeFactory()[0])
        for chunk in (b"hello", b" ", b"", b"world\x00\xff"):
            protocol.dataReceived(chunk)
        assert transport.value() == b"hello world\x00\xff"
        assert protocol.received == 13

    @given(st.lists(st.binary(max_size=2048), max_size=40))
    def test_arbitraryChunksComeBackIdentical(self, chunks: list[bytes]) -> None:
        """
        Any byte sequence, split anyhow, comes back identical.
        """
        protocol, transport = connect(makeFactory()[0])
        for chunk in chunks:
            protocol.dataReceived(chunk)
        assert transport.value() == b"".join(chunks)

    def test_transportIsItsOwnStreamingProducer(self) -> None:
        """
        Backpressure: the transport is registered as its own push producer,
        so Twisted stops reading while the echo cannot be sent.
        """
        _, transport = connect(makeFactory()[0])
        assert transport.producer is transport
        assert transport.streaming

    def test_halfCloseFlushesThenCloses(self) -> None:
        """
        When the peer shuts down its sending side, the producer is unregistered
        (else loseConnection would never complete) and the connection is lost
        after the echo already written.
        """
        protocol, transport = connect(makeFactory()[0])
        protocol.dataReceived(b"last words")
        protocol.readConnectionLost()
        assert transport.producer is None
        assert transport.disconnecting
        assert transport.value() == b"last words"

    def test_idleTimeoutAborts(self) -> None:
        """
        Nothing received for idle_timeout seconds: the connection is aborted
        (a peer that stopped reading would never let an orderly close end).
        """
        protocol, transport = connect(makeFactory(idle_timeout=30.0)[0])
        clock = protocol.factory.clock
        assert isinstance(clock, Clock)
        tick(clock, 29)
        assert not transport.disconnecting
        tick(clock, 1)
        assert transport.disconnecting  # abortConnection on StringTransport

    def test_activityPostponesIdleTimeout(self) -> None:
        """
        The idle timeout counts from the last byte received; it is checked a
        few times per timeout (nothing is done per message), so the abort
        comes between idle_timeout and 1.25 x idle_timeout after that byte.
        """
        factory, clock = makeFactory(idle_timeout=30.0)
        protocol, transport = connect(factory)
        tick(clock, 20)
        protocol.dataReceived(b"x")
        tick(clock, 29.75)
        assert not transport.disconnecting
        tick(clock, 37.5 - 29.75)
        assert transport.disconnecting

    def test_idleChecksAreFewPerTimeout(self) -> None:
        """
        A busy connection costs a timer firing only IDLE_CHECKS times per
        idle_timeout, however many messages it sends.
        """
        from echod.server.stream import IDLE_CHECKS

        # No connection caps: no pressure checks (PressureTests count those).
        factory, clock = makeFactory(idle_timeout=40.0, max_connections=0)
        protocol, transport = connect(factory)
        (call,) = clock.getDelayedCalls()
        assert call.getTime() == 40.0 / IDLE_CHECKS
        for _ in range(1000):
            protocol.dataReceived(b"m")
        (same,) = clock.getDelayedCalls()
        assert same is call and same.getTime() == 40.0 / IDLE_CHECKS
        clock.advance(1000)
        assert not transport.disconnecting or protocol.received == 1000

    def test_connectionLinesSkippedAboveInfo(self, events: Sequence[LogEvent]) -> None:
        """
        At [log] level warn and above, connections do not even build their
        open/close log events.
        """
        factory, _ = makeFactory()
        factory.logConnections = False
        protocol, _ = connect(factory)
        lose(protocol)
        assert not [e for e in events if str(e.get("event", "")).startswith("connection.")]
        assert factory.stats.closed == 1

    def test_noIdleTimeoutWhenZero(self) -> None:
        factory, clock = makeFactory(idle_timeout=0.0, max_connections=0)
        _, transport = connect(factory)
        clock.advance(10**6)
        assert not transport.disconnecting
        assert not clock.getDelayedCalls()

    def test_closedConnectionCancelsTimer(self) -> None:
        # No connection caps: no pressure checks (PressureTests count those).
        factory, clock = makeFactory(idle_timeout=30.0, max_connections=0)
        protocol, _ = connect(factory)
        lose(protocol)
        assert not clock.getDelayedCalls()

    def test_openAndCloseAreLogged(self, events: Sequence[LogEvent]) -> None:
        """
        Opening and closing are logged with the peer, and closing with the
        duration and bytes echoed; IPv4-mapped peers are shown as IPv4.
        """
        factory, clock = makeFactory()
        protocol, _ = connect(factory, "::ffff:192.0.2.7", 5555)
        protocol.dataReceived(b"12345")
        clock.advance(2.5)
        lose(protocol)
        opened = [e for e in events if e.get("event") == "connection.opened"]
        closed = [e for e in events if e.get("event") == "connection.closed"]
        assert opened[0]["peer"] == "192.0.2.7:5555"
        assert closed[0]["peer"] == "192.0.2.7:5555"
        assert closed[0]["bytes"] == 5
        assert closed[0]["duration"] == 2.5
        assert closed[0]["log_level"] == LogLevel.info


class AdmissionTests:
    def test_deniedPeerIsClosedAtOnce(self, events: Sequence[LogEvent]) -> None:
        """
        A peer in the deny list is disconnected at once, never echoed to, and
        the refusal is logged with the reason.
        """
        factory, _ = makeFactory(deny=("192.0.2.0/24",))
        protocol, transport = connect(factory, "192.0.2.1")
        assert transport.disconnecting
        assert transport.producer is None
        refused = [e for e in events if e.get("event") == "connection.refused"]
        assert refused[0]["reason"] == Refusal.ACL
        assert refused[0]["peer"] == "192.0.2.1:40000"
        assert factory.stats.refused[Refusal.ACL] == 1
        lose(protocol)
        assert factory.limits.total == 0

    def test_allowListLetsOnlyItsNetworksIn(self) -> None:
        factory, _ = makeFactory(allow=("2001:db8::/32",))
        _, inside = connect(factory, "2001:db8::1")
        _, outside = connect(factory, "2001:db9::1")
        assert not inside.disconnecting
        assert outside.disconnecting

    def test_mappedIPv4MatchesIPv4Network(self) -> None:
        """
        A dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d; ACLs
        written in IPv4 still apply to them.
        """
        factory, _ = makeFactory(deny=("198.51.100.0/24",))
        _, transport = connect(factory, "::ffff:198.51.100.20")
        assert transport.disconnecting

    def test_maxConnections(self) -> None:
        factory, _ = makeFactory(max_connections=2)
        first, _ = connect(factory, "192.0.2.1")
        connect(factory, "192.0.2.2")
        _, third = connect(factory, "192.0.2.3")
        assert third.disconnecting
        assert factory.stats.refused[Refusal.MAX_CONNECTIONS] == 1
        lose(first)
        _, fourth = connect(factory, "192.0.2.4")
        assert not fourth.disconnecting

    def test_maxConnectionsPerPeer(self) -> None:
        factory, _ = makeFactory(max_connections_per_peer=1)
        connect(factory, "192.0.2.1", 1)
        _, second = connect(factory, "192.0.2.1", 2)
        _, other = connect(factory, "192.0.2.2", 3)
        assert second.disconnecting
        assert not other.disconnecting

    def test_refusalLogIsBounded(self, events: Sequence[LogEvent]) -> None:
        """
        A flood of refusals logs a bounded number of lines, then one summary.
        """
        factory, clock = makeFactory(deny=("0.0.0.0/0",))
        for port in range(1000):
            connect(factory, "192.0.2.1", port)
        lines = [e for e in events if e.get("event") == "connection.refused"]
        assert len(lines) == 10
        clock.advance(10)
        summaries = [e for e in events if e.get("event") == "connection.refused.summary"]
        assert summaries[0]["total"] == 990

    def test_reconfigureKeepsOpenConnections(self) -> None:
        """
        New limits apply to new connections; open ones stay open.
        """
        factory, _ = makeFactory()
        _, old = connect(factory, "192.0.2.1")
        factory.reconfigure(ServerConfig(deny=("192.0.2.0/24",)))
        _, new = connect(factory, "192.0.2.1")
        assert not old.disconnecting
        assert new.disconnecting


class DrainTests:
    def test_drainWithoutConnectionsFiresAtOnce(self) -> None:
        factory, _ = makeFactory()
        fired: list[object] = []
        factory.drain(10).addCallback(fired.append)
        assert fired == [None]

    def test_quietConnectionIsClosedAfterDrainQuiet(self) -> None:
        """
        A connection with nothing arriving is closed in order once it has been
        quiet for drain_quiet seconds (counted from the SIGTERM at the
        latest); the drain fires when it is gone.
        """
        factory, clock = makeFactory(drain_quiet=2.0)
        protocol, transport = connect(factory)
        protocol.dataReceived(b"just now")
        fired: list[object] = []
        factory.drain(10).addCallback(fired.append)
        tick(clock, 1.9, 0.1)
        assert not transport.disconnecting
        tick(clock, 0.2, 0.1)
        assert transport.disconnecting
        assert transport.producer is None
        assert not fired
        lose(protocol)
        assert fired == [None]
        assert not clock.getDelayedCalls()

    def test_slowTalkerKeepsItsConnection(self) -> None:
        """
        A ping client with 1 s between messages is not done between two of
        them: every message sent during the drain is echoed, and the
        connection closes drain_quiet after the last one.
        """
        factory, clock = makeFactory(drain_quiet=2.0)
        protocol, transport = connect(factory)
        factory.drain(10)
        for n in range(4):
            protocol.dataReceived(b"ping %d\n" % n)
            tick(clock, 1.0, 0.1)
            assert not transport.disconnecting
        tick(clock, 1.1, 0.1)
        assert transport.disconnecting
        assert transport.value() == b"".join(b"ping %d\n" % n for n in range(4))

    def test_longQuietBeforeSigtermClosesAtOnce(self) -> None:
        """
        A connection already known to be quiet for drain_quiet before the
        drain starts is closed at the first check.
        """
        factory, clock = makeFactory(drain_quiet=2.0)
        _, transport = connect(factory)
        tick(clock, 5)
        factory.drain(10)
        assert transport.disconnecting

    def test_busyConnectionEchoesUntilHalfTime(self) -> None:
        """
        A connection that keeps talking keeps being echoed until half the
        timeout, then is closed in order.
        """
        factory, clock = makeFactory()
        protocol, transport = connect(factory)
        factory.drain(10)
        for _ in range(49):
            protocol.dataReceived(b"more")
            clock.advance(0.1)
        assert not transport.disconnecting
        assert transport.value() == b"more" * 49
        protocol.dataReceived(b"late")
        clock.advance(0.2)
        assert transport.disconnecting
        protocol.dataReceived(b"discarded")
        assert transport.value() == b"more" * 49 + b"late"

    def test_leftoversAbortedAtTimeout(self, events: Sequence[LogEvent]) -> None:
        factory, clock = makeFactory()
        protocol, transport = connect(factory)
        fired: list[object] = []
        factory.drain(2).addCallback(fired.append)
        clock.advance(2)
        assert any(e.get("event") == "shutdown.aborting" for e in events)
        assert transport.disconnecting
        lose(protocol)
        assert fired == [None]

    def test_newConnectionsRefusedWhileDraining(self) -> None:
        factory, _ = makeFactory()
        connect(factory)
        factory.drain(10)
        _, late = connect(factory, "192.0.2.77")
        assert late.disconnecting
        assert factory.stats.refused[Refusal.SHUTTING_DOWN] == 1

    def test_bytesEchoedCountsOpenAndClosed(self) -> None:
        factory, _ = makeFactory()
        one, _ = connect(factory)
        two, _ = connect(factory, "192.0.2.2")
        one.dataReceived(b"abc")
        two.dataReceived(b"de")
        lose(one)
        assert factory.bytesEchoed() == 5


def proxiedFactory(**settings: object) -> tuple[EchoFactory, Clock]:
    """
    A factory whose proxies (10.0.0.0/8 in these tests) are trusted.
    """
    settings.setdefault("trusted_proxies", ("10.0.0.0/8",))
    return makeFactory(**settings)


def connectProxied(
    factory: EchoFactory, proxyHost: str = "10.0.0.1"
) -> tuple[EchoProtocol, StringTransport]:
    from echod.server.stream import ProxiedEchoFactory

    address = IPv4Address("TCP", proxyHost, 50000)
    protocol = ProxiedEchoFactory(factory).buildProtocol(address)
    assert protocol is not None
    transport = StringTransport(peerAddress=address, hostAddress=IPv4Address("TCP", "10.0.0.9", 7))
    protocol.makeConnection(transport)
    return protocol, transport


class ProxiedTests:
    HEADER = b"PROXY TCP4 192.0.2.44 10.0.0.9 40404 7\r\n"

    def test_headerSplitThenEcho(self, events: Sequence[LogEvent]) -> None:
        """
        The header may arrive a byte at a time; the bytes after it are echoed,
        and the peer logged is the one the header names.
        """
        factory, _ = proxiedFactory()
        protocol, transport = connectProxied(factory)
        for i in range(len(self.HEADER)):
            protocol.dataReceived(self.HEADER[i : i + 1])
        assert transport.value() == b""
        protocol.dataReceived(b"hello")
        assert transport.value() == b"hello"
        opened = [e for e in events if e.get("event") == "connection.opened"]
        assert opened[0]["peer"] == "192.0.2.44:40404"
        assert opened[0]["proxy"] == "10.0.0.1:50000"

    def test_restOfFirstSegmentEchoed(self) -> None:
        factory, _ = proxiedFactory()
        protocol, transport = connectProxied(factory)
        protocol.dataReceived(self.HEADER + b"same segment")
        assert transport.value() == b"same segment"
        assert protocol.received == len(b"same segment")

    def test_limitsApplyToRealPeer(self) -> None:
        """
        ACLs and per-peer caps see the client, not the proxy.
        """
        factory, _ = proxiedFactory(deny=("192.0.2.44/32",), max_connections_per_peer=1)
        denied, deniedTransport = connectProxied(factory)
        denied.dataReceived(self.HEADER + b"x")
        assert deniedTransport.disconnecting
        assert deniedTransport.value() == b""
        other = b"PROXY TCP4 192.0.2.45 10.0.0.9 40404 7\r\n"
        first, firstTransport = connectProxied(factory)
        first.dataReceived(other)
        second, secondTransport = connectProxied(factory)
        second.dataReceived(other)
        assert not firstTransport.disconnecting
        assert secondTransport.disconnecting
        assert factory.stats.refused == {"acl": 1, "max_connections_per_peer": 1}

    def test_badHeaderAborts(self, events: Sequence[LogEvent]) -> None:
        factory, _ = proxiedFactory()
        protocol, transport = connectProxied(factory)
        protocol.dataReceived(b"GET / HTTP/1.0\r\n\r\n")
        assert transport.disconnecting
        assert transport.value() == b""
        refused = [e for e in events if e.get("event") == "connection.refused"]
        assert refused[0]["reason"] == "proxy_header"
        assert refused[0]["problem"] == "not a PROXY protocol header"
        assert not factory.awaitingHeader

    def test_headerTimeout(self) -> None:
        factory, clock = proxiedFactory(proxy_header_timeout=2.0)
        protocol, transport = connectProxied(factory)
        protocol.dataReceived(b"PROXY TCP4 ")
        clock.advance(2)
        assert transport.disconnecting
        assert factory.stats.refused["proxy_header"] == 1
        lose(protocol)
        assert not clock.getDelayedCalls()

    def test_localCommandIsTheProxyItself(self) -> None:
        factory, _ = proxiedFactory()
        protocol, transport = connectProxied(factory)
        protocol.dataReceived(proxyV2(0, 0, b"") + b"check")
        assert transport.value() == b"check"
        assert protocol.peerAddress == IPv4Address("TCP", "10.0.0.1", 50000)

    def test_halfCloseAfterHeader(self) -> None:
        factory, _ = proxiedFactory()
        protocol, transport = connectProxied(factory)
        protocol.dataReceived(self.HEADER + b"bye")
        protocol.readConnectionLost()
        assert transport.disconnecting and transport.producer is None
        assert transport.value() == b"bye"

    def test_waitingForHeaderCountsAgainstMaxConnections(self) -> None:
        factory, _ = proxiedFactory(max_connections=2)
        connectProxied(factory)
        connectProxied(factory)
        _, third = connectProxied(factory)
        assert third.disconnecting
        assert factory.stats.refused["max_connections"] == 1

    def test_drainAbortsConnectionsStillWaitingForHeader(self) -> None:
        factory, _ = proxiedFactory()
        _, transport = connectProxied(factory)
        factory.drain(10)
        assert transport.disconnecting

    def test_probeWithoutBytesIsNotABadHeader(self) -> None:
        """
        Connect-and-close (a port probe, a plain TCP health check) is not a
        broken proxy: nothing is counted as refused.
        """
        factory, clock = proxiedFactory()
        protocol, transport = connectProxied(factory)
        protocol.readConnectionLost()
        assert transport.disconnecting
        assert not factory.stats.refused
        assert not clock.getDelayedCalls()

    def test_partialHeaderThenCloseIsABadHeader(self) -> None:
        factory, _ = proxiedFactory()
        protocol, _ = connectProxied(factory)
        protocol.dataReceived(b"PROXY TCP4 1.2")
        protocol.readConnectionLost()
        assert factory.stats.refused["proxy_header"] == 1

    def test_healthCheckConnectionsLoggedAtDebug(self, events: Sequence[LogEvent]) -> None:
        factory, _ = proxiedFactory()
        protocol, _ = connectProxied(factory)
        protocol.dataReceived(proxyV2(0, 0, b""))
        lose(protocol)
        levels = {e["event"]: e["log_level"] for e in events if "event" in e}
        assert levels["connection.opened"] == LogLevel.debug
        assert levels["connection.closed"] == LogLevel.debug


class TrustedProxyTests:
    HEADER = b"PROXY TCP4 198.51.100.7 10.0.0.9 40404 7\r\n"

    def test_untrustedProxyRefusedBeforeReading(self, events: Sequence[LogEvent]) -> None:
        """
        A direct client of a PROXY listener that is not a trusted proxy is
        refused at once: it cannot become the address its header claims.
        """
        factory, clock = makeFactory(trusted_proxies=("10.0.0.0/8",))
        protocol, transport = connectProxied(factory, "192.0.2.66")
        assert transport.disconnecting
        assert factory.stats.refused == {Refusal.UNTRUSTED_PROXY: 1}
        assert not factory.awaitingHeader
        protocol.dataReceived(self.HEADER + b"hello")
        assert transport.value() == b""
        assert protocol.peerAddress is None
        assert not factory.connections
        refused = [e for e in events if e.get("event") == "connection.refused"]
        assert refused[0]["peer"] == "192.0.2.66:50000"
        assert refused[0]["reason"] == "untrusted_proxy"
        lose(protocol)
        assert not clock.getDelayedCalls()

    def test_defaultTrustsLoopbackOnly(self) -> None:
        factory, _ = makeFactory()
        _, v4 = connectProxied(factory, "127.0.0.5")
        _, remote = connectProxied(factory, "10.0.0.1")
        assert not v4.disconnecting
        assert remote.disconnecting

    def test_mappedAndIPv6Proxies(self) -> None:
        """
        A dual-stack listener sees an IPv4 proxy as ::ffff:a.b.c.d: it is
        trusted by the IPv4 network; ::1 by ::1/128.
        """
        from echod.server.stream import ProxiedEchoFactory

        factory, _ = makeFactory()
        for host, trusted in (("::ffff:127.0.0.1", True), ("::1", True), ("2001:db8::1", False)):
            address = IPv6Address("TCP", host, 50000)
            protocol = ProxiedEchoFactory(factory).buildProtocol(address)
            assert protocol is not None
            transport = StringTransport(peerAddress=address)
            protocol.makeConnection(transport)
            assert transport.disconnecting is not trusted, host

    def test_emptyListTrustsNobody(self) -> None:
        factory, _ = makeFactory(trusted_proxies=())
        _, transport = connectProxied(factory, "127.0.0.1")
        assert transport.disconnecting

    def test_reloadChangesTrust(self) -> None:
        factory, _ = makeFactory()
        _, before = connectProxied(factory, "10.0.0.1")
        factory.reconfigure(ServerConfig(trusted_proxies=("10.0.0.0/8",)))
        _, after = connectProxied(factory, "10.0.0.1")
        assert before.disconnecting and not after.disconnecting

    def test_spoofedHeadersCannotExhaustAThirdPartysSlots(self) -> None:
        """
        Untrusted clients claiming 192.0.2.44 use none of its per-peer slots:
        the genuine 192.0.2.44 arriving through the trusted proxy is served.
        """
        factory, _ = makeFactory(trusted_proxies=("10.0.0.1/32",), max_connections_per_peer=2)
        claim = b"PROXY TCP4 192.0.2.44 10.0.0.9 40404 7\r\n"
        for _ in range(5):
            spoofer, _ = connectProxied(factory, "10.0.0.66")
            spoofer.dataReceived(claim)
        genuine, transport = connectProxied(factory, "10.0.0.1")
        genuine.dataReceived(claim + b"hi")
        assert transport.value() == b"hi"
        assert factory.stats.refused == {Refusal.UNTRUSTED_PROXY: 5}


class PressureTests:
    """
    When the server is full, a connection idle for pressure_idle_timeout
    gives its place to a newcomer; one exchanging data never does.
    """

    def test_idleOneGivesWayToNewcomer(self, events: Sequence[LogEvent]) -> None:
        factory, clock = makeFactory(max_connections=3, pressure_idle_timeout=10.0)
        idle = [connect(factory, "192.0.2.1", 40000 + n) for n in range(2)]
        busy, busyTransport = connect(factory, "192.0.2.2")
        for _ in range(44):
            busy.dataReceived(b"x")
            tick(clock, 0.25)
        assert clock.seconds() == 11
        newcomer, transport = connect(factory, "203.0.113.5")
        assert not transport.disconnecting
        newcomer.dataReceived(b"hello")
        assert transport.value() == b"hello"
        # The one idle longest (the first) went; the other idle one and the
        # busy one stay.
        assert idle[0][1].disconnecting and not idle[1][1].disconnecting
        assert not busyTransport.disconnecting
        assert factory.stats.evicted == 1
        assert factory.totals().evicted == 1
        assert factory.limits.total == 3
        evicted = [e for e in events if e.get("event") == "connection.evicted"]
        assert evicted[0]["peer"] == "192.0.2.1:40000"
        assert evicted[0]["newcomer"] == "203.0.113.5:40000"
        # Its transport closes later; its place was released at once, once.
        lose(idle[0][0])
        assert factory.limits.total == 3
        assert factory.stats.closed == 1

    def test_nobodyIdleLongEnoughMeansRefusal(self) -> None:
        factory, clock = makeFactory(max_connections=2, pressure_idle_timeout=10.0)
        connect(factory, "192.0.2.1", 1)
        connect(factory, "192.0.2.1", 2)
        tick(clock, 8)
        _, transport = connect(factory, "203.0.113.5")
        assert transport.disconnecting
        assert factory.stats.refused == {Refusal.MAX_CONNECTIONS: 1}
        assert factory.stats.evicted == 0

    def test_activeConnectionsAreNeverEvicted(self) -> None:
        """
        Connections that keep sending stay, however long they have been
        open; activity since the last check counts too.
        """
        factory, clock = makeFactory(max_connections=2, pressure_idle_timeout=1.0)
        one, oneT = connect(factory, "192.0.2.1", 1)
        two, twoT = connect(factory, "192.0.2.1", 2)
        for _ in range(40):
            one.dataReceived(b"a")
            two.dataReceived(b"b")
            tick(clock, 0.25)
        # Between two checks: each just sent a byte.
        one.dataReceived(b"a")
        two.dataReceived(b"b")
        _, newT = connect(factory, "203.0.113.5")
        assert newT.disconnecting
        assert not oneT.disconnecting and not twoT.disconnecting

    def test_perPeerCapEvictsThatPeersIdleConnection(self) -> None:
        factory, clock = makeFactory(max_connections_per_peer=2, pressure_idle_timeout=2.0)
        _, other = connect(factory, "192.0.2.9")
        _, first = connect(factory, "192.0.2.1", 1)
        tick(clock, 1)
        _, secondT = connect(factory, "192.0.2.1", 2)
        tick(clock, 1.5)
        _, third = connect(factory, "192.0.2.1", 3)
        assert first.disconnecting and not third.disconnecting
        assert not other.disconnecting and not secondT.disconnecting
        assert factory.limits.openFrom(ipaddress.ip_address("192.0.2.1")) == 2

    def test_proxiedNewcomerEvictsWhileAwaitingHeader(self) -> None:
        factory, clock = proxiedFactory(max_connections=1, pressure_idle_timeout=1.0)
        _, idle = connect(factory, "192.0.2.1")
        tick(clock, 2)
        protocol, transport = connectProxied(factory)
        assert idle.disconnecting and not transport.disconnecting
        protocol.dataReceived(b"PROXY TCP4 192.0.2.44 10.0.0.9 40404 7\r\nhi")
        assert transport.value() == b"hi"

    def test_oneTimerPerFactoryNotPerConnection(self) -> None:
        from echod.server.stream import PRESSURE_TICK_MAX

        factory, clock = makeFactory(idle_timeout=0.0, pressure_idle_timeout=10.0)
        protocols = [connect(factory, "192.0.2.1", n)[0] for n in range(50)]
        (loop,) = clock.getDelayedCalls()
        assert loop.getTime() == PRESSURE_TICK_MAX
        for protocol in protocols:
            lose(protocol)
        # It stops at its next check with nobody left, not at each close.
        assert clock.getDelayedCalls() == [loop]
        connect(factory, "192.0.2.1", 99)[0].connectionLost(Failure(ConnectionDone()))
        clock.advance(PRESSURE_TICK_MAX)
        assert not clock.getDelayedCalls()

    def test_noChecksWithoutCaps(self) -> None:
        factory, clock = makeFactory(idle_timeout=0.0, max_connections=0)
        connect(factory)
        assert not clock.getDelayedCalls()

    def test_evictionsLoggedWithinTheRefusalBudget(self, events: Sequence[LogEvent]) -> None:
        factory, clock = makeFactory(max_connections=1, pressure_idle_timeout=0.5, idle_timeout=0)
        connect(factory, "192.0.2.1", 0)
        for n in range(1, 40):
            tick(clock, 1)
            connect(factory, "192.0.2.1", n)
        assert factory.stats.evicted == 39
        lines = [e for e in events if e.get("event") == "connection.evicted"]
        assert 0 < len(lines) <= 10 * 4


class CloseReasonTests:
    def test_tlsFailureIsAReadablePhrase(self) -> None:
        """
        A failed TLS handshake is logged as OpenSSL's reason, not as the
        repr of its error queue.
        """
        from OpenSSL import SSL

        from echod.server.stream import describeLoss

        failure = Failure(SSL.Error([("SSL routines", "", "tlsv1 alert unknown ca")]))
        assert describeLoss(failure) == "TLS failed: tlsv1 alert unknown ca"
        assert describeLoss(Failure(SSL.Error([]))) == "TLS failed: Error"
        assert describeLoss(Failure(ConnectionDone())) == "closed"

    def test_durationRoundedToMicroseconds(self, events: Sequence[LogEvent]) -> None:
        factory, clock = makeFactory()
        protocol, _ = connect(factory)
        clock.advance(0.0008974075317382812)
        lose(protocol)
        (closed,) = [e for e in events if e.get("event") == "connection.closed"]
        assert closed["duration"] == 0.000897
