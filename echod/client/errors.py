# -*- test-case-name: tests.unit.test_client -*-
"""
Why a run fails, and the exit status each failure gives: every failure
becomes a L{ClientError} whose C{status} is the process exit status, the same
for C{echod-client} and C{twistd echod-client}.
"""

from __future__ import annotations

from enum import IntEnum

from echod.errors import UserError

__all__ = [
    "ClientError",
    "ClosedEarly",
    "ConnectFailed",
    "ExitStatus",
    "InternalError",
    "Interrupted",
    "LossExceeded",
    "Mismatched",
    "NameNotResolved",
    "TimedOut",
    "TooLarge",
]


class ExitStatus(IntEnum):
    """
    The exit status of C{echod-client} and C{twistd -n echod-client}.
    """

    OK = 0
    INTERNAL = 1
    USAGE = 2
    UNRESOLVED = 3
    UNREACHABLE = 4
    TIMEOUT = 5
    CLOSED = 6
    MISMATCH = 7
    LOSS = 8
    INTERRUPTED = 130


class ClientError(UserError):
    """
    Why a run failed, in one line; C{status} is the exit status it gives.
    """

    status: ExitStatus = ExitStatus.UNREACHABLE


class NameNotResolved(ClientError):
    status = ExitStatus.UNRESOLVED


class ConnectFailed(ClientError):
    status = ExitStatus.UNREACHABLE


class TimedOut(ClientError):
    status = ExitStatus.TIMEOUT


class ClosedEarly(ClientError):
    status = ExitStatus.CLOSED


class Mismatched(ClientError):
    status = ExitStatus.MISMATCH


class LossExceeded(ClientError):
    """
    Over UDP, some replies never came: more than C{max_loss} percent (but
    not all: no reply at all is L{TimedOut}).
    """

    status = ExitStatus.LOSS


class TooLarge(ClientError):
    """
    A message is larger than a datagram can be to the address chosen (a
    size only a resolved IPv4 address shows to be too large).
    """

    status = ExitStatus.USAGE


class Interrupted(ClientError):
    status = ExitStatus.INTERRUPTED


class InternalError(ClientError):
    status = ExitStatus.INTERNAL
