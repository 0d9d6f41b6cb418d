# -*- test-case-name: tests.unit.test_udp -*-
"""
The echo service of RFC 862 over UDP: each datagram goes back to its sender,
whole, unless the guards (L{echod.server.limits.DatagramGuard}) say no.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from echod.config import UDPConfig
from echod.server.limits import DatagramDrop, DatagramGuard, LogBudget, logSummary
from echod.server.stats import DatagramStats

__all__ = ["EchoDatagramProtocol", "datagramDropLog"]


class EchoDatagramProtocol(DatagramProtocol):
    """
    The echo service of RFC 862 over UDP: each datagram goes back to its
    sender, byte for byte, unless the L{DatagramGuard} says no.  One instance
    per listening port; the guard and the totals are shared.

    The port must read datagrams of up to 65535 bytes (Twisted's default of
    8192 truncates larger ones silently): an echo never returns less than
    it got.
    """

    log = Logger()
    noisy = False

    def __init__(
        self,
        guard: DatagramGuard,
        stats: DatagramStats,
        dropLog: LogBudget,
    ) -> None:
        self.guard = guard
        self.stats = stats
        self._dropLog = dropLog

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        host, port = addr[0], addr[1]
        self.stats.received += 1
        reason = self.guard.check(host, port, len(datagram))
        if reason is None:
            try:
                self.transport.write(datagram, addr)  # type: ignore[union-attr]
            except OSError as e:
                reason = DatagramDrop.SEND_ERROR
                detail = e.strerror or str(e)
            else:
                self.stats.echoed += 1
                self.stats.bytesEchoed += len(datagram)
                return
        else:
            detail = reason
        self.stats.dropped[reason] += 1
        if self._dropLog.allow(reason):
            self.log.info(
                "no UDP echo to {source}: {reason} ({size} bytes)",
                event="datagram.dropped",
                source=_datagramSource(host, port),
                reason=detail,
                size=len(datagram),
            )


def _datagramSource(host: str, port: int) -> str:
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def datagramDropLog(clock: IReactorTime, settings: UDPConfig) -> LogBudget:
    """
    The budget for UDP drop lines: a few per interval, then one summary.
    """
    summary = logSummary(
        EchoDatagramProtocol.log, "UDP datagrams got no echo", "datagram.dropped.summary"
    )
    return LogBudget(clock, summary, perInterval=5, interval=settings.drop_log_interval)
