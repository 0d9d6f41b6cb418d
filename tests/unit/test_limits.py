"""
Tests for L{echod.server.limits}.
"""

from __future__ import annotations

import ipaddress

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.task import Clock

from echod.addresses import describePeer, peerIP
from echod.server.limits import AccessList, ConnectionLimits, LogBudget, Refusal


class PeerTests:
    def test_mappedIPv4BecomesIPv4(self) -> None:
        ip = peerIP(IPv6Address("TCP", "::ffff:10.1.2.3", 9))
        assert ip == ipaddress.IPv4Address("10.1.2.3")

    def test_scopedIPv6(self) -> None:
        assert peerIP(IPv6Address("TCP", "fe80::1%lo", 9)) == ipaddress.IPv6Address("fe80::1")

    def test_unixHasNoIP(self) -> None:
        assert peerIP(UNIXAddress(b"/run/x.sock")) is None

    def test_describe(self) -> None:
        assert describePeer(IPv4Address("TCP", "192.0.2.1", 7)) == "192.0.2.1:7"
        assert describePeer(IPv6Address("TCP", "2001:db8:0::1", 7)) == "[2001:db8::1]:7"
        assert describePeer(IPv6Address("TCP", "::ffff:192.0.2.1", 7)) == "192.0.2.1:7"
        assert describePeer(UNIXAddress(b"/run/e.sock")) == "unix:/run/e.sock"
        assert describePeer(UNIXAddress(None)) == "unix:(unnamed)"


class AccessListTests:
    def test_emptyAllowsAll(self) -> None:
        assert AccessList().permits(ipaddress.ip_address("203.0.113.1"))

    def test_denyWinsOverAllow(self) -> None:
        acl = AccessList.fromStrings(["10.0.0.0/8"], ["10.9.0.0/16"])
        assert acl.permits(ipaddress.ip_address("10.1.1.1"))
        assert not acl.permits(ipaddress.ip_address("10.9.1.1"))
        assert not acl.permits(ipaddress.ip_address("192.0.2.1"))

    def test_noIPAlwaysPermitted(self) -> None:
        """
        Unix-socket peers are governed by file permissions.
        """
        assert AccessList.fromStrings(["10.0.0.0/8"], ["::/0", "0.0.0.0/0"]).permits(None)


class ConnectionLimitsTests:
    def test_countsAndReleases(self) -> None:
        limits = ConnectionLimits(2, 1, AccessList())
        a, b = ipaddress.ip_address("192.0.2.1"), ipaddress.ip_address("192.0.2.2")
        assert limits.admit(a) is None
        assert limits.admit(a) == Refusal.MAX_CONNECTIONS_PER_PEER
        assert limits.admit(b) is None
        assert limits.admit(None) == Refusal.MAX_CONNECTIONS
        limits.release(a)
        assert limits.openFrom(a) == 0
        assert limits.peers() == 1
        assert limits.admit(None) is None
        assert limits.total == 2

    def test_refusalIsNotCounted(self) -> None:
        limits = ConnectionLimits(0, 0, AccessList.fromStrings([], ["0.0.0.0/0"]))
        assert limits.admit(ipaddress.ip_address("192.0.2.1")) == Refusal.ACL
        assert limits.total == 0


class LogBudgetTests:
    def test_boundedLinesThenSummary(self) -> None:
        clock = Clock()
        summaries: list[tuple[dict[str, int], float]] = []
        budget = LogBudget(clock, lambda c, s: summaries.append((c, s)), perInterval=3, interval=10)
        allowed = [budget.allow("a" if i % 2 else "b") for i in range(10)]
        assert allowed.count(True) == 3
        assert summaries == []
        clock.advance(10)
        assert summaries == [({"a": 4, "b": 3}, 10.0)]
        assert budget.allow("a")

    def test_flushReportsNowAndCancelsTimer(self) -> None:
        clock = Clock()
        summaries: list[tuple[dict[str, int], float]] = []
        budget = LogBudget(clock, lambda c, s: summaries.append((c, s)), perInterval=0, interval=10)
        budget.allow("x")
        clock.advance(1)
        budget.flush()
        assert summaries == [({"x": 1}, 1.0)]
        assert not clock.getDelayedCalls()
