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

__all__ = ["MAX_LINE", "ListenError", "UserError", "errorLines", "oneLine", "reportUserErrors"]

# The longest line a user error prints, whatever it quotes.
MAX_LINE = 1000


class UserError(Exception):
    """
    A failure caused by what the user asked for (a config value, a busy port);
    C{str()} is one complete line, or for several problems at once (a config
    file's) one line each: L{lines}.
    """

    def lines(self) -> list[str]:
        """
        Each problem as one line of at most L{MAX_LINE} characters.
        """
        return [oneLine(line) for line in str(self).split("\n")]


def errorLines(prog: str, error: BaseException) -> str:
    """
    C{PROG: PROBLEM} on a line of its own for each problem of C{error}, as
    the command line prints a L{UserError}.
    """
    lines = error.lines() if isinstance(error, UserError) else [oneLine(str(error))]
    return "".join(f"{prog}: {oneLine(line)}\n" for line in lines)


class ListenError(UserError):
    """
    A listener could not be opened: the port is taken, the address is not
    local, the privilege is missing.  C{errno} is the socket error's, if any.
    """

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


def _escape(char: str) -> str:
    code = ord(char)
    if char in "\t\n\r":
        return {"\t": "\\t", "\n": "\\n", "\r": "\\r"}[char]
    if 0xDC80 <= code <= 0xDCFF:
        # A byte that was not UTF-8, kept by surrogateescape (file names, argv).
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def oneLine(text: str, limit: int = MAX_LINE, quote: bool = False) -> str:
    """
    C{text} as it can be shown on one line of a terminal or a log: every
    character that is not printable (controls, line and paragraph separators,
    format characters, bytes that were not UTF-8) is escaped as in Python, and
    the result is cut at C{limit} characters with an ellipsis.  With C{quote},
    backslashes and double quotes are escaped too, for a value shown between
    double quotes.
    """
    pieces: list[str] = []
    length = 0
    for char in text:
        if char.isprintable():
            piece = "\\" + char if quote and char in '"\\' else char
        else:
            piece = _escape(char)
        if length + len(piece) > limit:
            # Too long: drop what does not leave room for the ellipsis.
            while pieces and length > limit - 1:
                length -= len(pieces.pop())
            pieces.append("\u2026")
            break
        pieces.append(piece)
        length += len(piece)
    return "".join(pieces)


def reportUserErrors(prog: str = "echod", alsoLog: bool = False) -> None:
    """
    Make an uncaught L{UserError} print C{PROG: MESSAGE} on stderr (status 1)
    instead of a traceback.  Idempotent; other exceptions keep the hook that
    was there before.

    @param alsoLog: log it as well (critical), for a log that is not where
        stderr goes (C{twistd -n --logfile=FILE}); a log on standard output
        would show the same line twice.  A later call changes it.
    """
    previous = sys.excepthook
    if getattr(previous, "_echodHook", False):
        previous._alsoLog = alsoLog  # type: ignore[attr-defined]
        return

    def hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        if isinstance(value, UserError):
            if hook._alsoLog:  # type: ignore[attr-defined]
                from twisted.logger import Logger

                for problem in value.lines():
                    Logger(namespace=prog).critical(
                        "{problem}", problem=problem, event="start.failed"
                    )
            # Not sys.stderr: once twistd has begun logging, that feeds the log.
            stderr = sys.__stderr__ or sys.stderr
            stderr.write(errorLines(prog, value))
            stderr.flush()
        else:
            previous(kind, value, tb)

    hook._echodHook = True  # type: ignore[attr-defined]
    hook._alsoLog = alsoLog  # type: ignore[attr-defined]
    sys.excepthook = hook
