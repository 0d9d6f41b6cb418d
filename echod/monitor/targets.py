# -*- test-case-name: tests.unit.test_monitor_targets -*-
"""
The targets of a monitor, ready to probe: each item of C{[monitor] targets}
with the table's settings filled in where the item gives none.

A target's identity is its series (L{Target.identity}: its string and its
labels): a reload keeps the history of every target whose identity runs
already, applying its new settings if it has any, and starts the others
afresh.
"""

from __future__ import annotations

import ipaddress
import zlib
from dataclasses import dataclass

from echod.config import MonitorConfig, MonitorTarget, endpointParameters

__all__ = ["Target", "familyOf", "targetsOf"]


def familyOf(host: str) -> str | None:
    """
    C{"ipv4"} or C{"ipv6"} for an IP address, L{None} for a name.
    """
    try:
        return "ipv4" if ipaddress.ip_address(host).version == 4 else "ipv6"
    except ValueError:
        return None


@dataclass(frozen=True)
class Target:
    """
    One target and everything a round of it needs.

    @ivar name: the string as the user wrote it: the C{target} label.
    @ivar kind: C{"tcp"}, C{"udp"}, C{"tls"} or C{"endpoint"}.
    @ivar host: the name or address resolved every round (empty for an
        endpoint string, which connects as it says).
    @ivar labels: the user's own labels, sorted by name.
    """

    name: str
    kind: str
    host: str
    port: int
    interval: float
    timeout: float
    size: int
    count: int
    spacing: float
    verify: bool
    labels: tuple[tuple[str, str], ...]

    @property
    def identity(self) -> tuple[str, tuple[tuple[str, str], ...]]:
        """
        What makes this target's series: its string and its labels.  A
        reload that keeps them keeps its history, whatever else changed.
        """
        return self.name, self.labels

    @property
    def protocol(self) -> str:
        """
        The C{protocol} label: C{tcp}, C{udp}, C{tls}, or an endpoint's
        type (C{unix}; C{ssl} is C{tls}, C{tcp6} is C{tcp}).
        """
        if self.kind != "endpoint":
            return self.kind
        kind = endpointParameters(self.name)[0].lower()
        return {"tcp6": "tcp", "ssl": "tls"}.get(kind, kind)

    @property
    def literal(self) -> str | None:
        """
        The family of an IP address given as the host (no resolution), else
        L{None}.
        """
        return familyOf(self.host) if self.host else None

    @property
    def endpointFamily(self) -> str:
        """
        The C{family} label of an endpoint string: of its C{host} when that
        is an address, C{unix}, or C{any} (it resolves by itself).
        """
        kind, args, kwargs = endpointParameters(self.name)
        if kind.lower() == "unix":
            return "unix"
        host = kwargs.get("host") or (args[0] if args else "")
        return familyOf(host) or ("ipv6" if kind.lower() == "tcp6" else "any")

    def phase(self) -> float:
        """
        Where in each interval this target's rounds start, in seconds: the
        same for the same name in every process, and spread evenly over the
        interval across names (a hash), so that thousands of targets never
        probe in step.
        """
        return (zlib.crc32(self.name.encode("utf-8")) / 2**32) * self.interval


def targetsOf(settings: MonitorConfig) -> list[Target]:
    """
    The targets of C{[monitor]}, in the file's order.
    """
    return [_target(settings, item) for item in settings.targets]


def _target(settings: MonitorConfig, item: MonitorTarget) -> Target:
    def pick(name: str) -> object:
        own = getattr(item, name)
        return own if own is not None else getattr(settings, name)

    return Target(
        name=item.text,
        kind=item.kind,
        host=item.host,
        port=item.port,
        interval=pick("interval"),  # type: ignore[arg-type]
        timeout=pick("timeout"),  # type: ignore[arg-type]
        size=pick("size"),  # type: ignore[arg-type]
        count=pick("count"),  # type: ignore[arg-type]
        spacing=pick("spacing"),  # type: ignore[arg-type]
        verify=pick("verify"),  # type: ignore[arg-type]
        labels=item.labels,
    )
