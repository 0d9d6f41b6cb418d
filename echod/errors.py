# -*- test-case-name: tests.unit.test_errors -*-
"""
Failures the user must fix, and how the command line reports them.

Every user-facing failure class is a subclass of L{UserError}: its C{str()} is
one line that names what is wrong and what is allowed.  Under twistd they
surface at points twistd owns (option parsing, listening), where an ordinary
exception becomes a traceback; L{reportUserErrors} turns them into that one line
on stderr and exit status 1 instead, and leaves every other exception alone.
"""

from __future__ import annotations

import sys
from types import TracebackType

__all__ = ["ListenError", "UserError", "reportUserErrors"]


class UserError(Exception):
    """
    A failure caused by what the user asked for (a config value, a busy port);
    C{str()} is one complete line.
    """


class ListenError(UserError):
    """
    A listener could not be opened: the port is taken, the address is not
    local, the privilege is missing.  C{errno} is the socket error's, if any.
    """

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


def reportUserErrors(prog: str = "echod") -> None:
    """
    Make an uncaught L{UserError} print C{PROG: MESSAGE} on stderr (status 1)
    instead of a traceback.  Idempotent; other exceptions keep the hook that
    was there before.
    """
    previous = sys.excepthook
    if getattr(previous, "_echodHook", False):
        return

    def hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        if isinstance(value, UserError):
            # Not sys.stderr: once twistd has begun logging, that feeds the log.
            stderr = sys.__stderr__ or sys.stderr
            stderr.write(f"{prog}: {value}\n")
            stderr.flush()
        else:
            previous(kind, value, tb)

    hook._echodHook = True  # type: ignore[attr-defined]
    sys.excepthook = hook
