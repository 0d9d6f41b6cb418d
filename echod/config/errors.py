# -*- test-case-name: tests.unit.test_config -*-
"""
L{ConfigError}, the one error of a configuration the user must fix, and how
its messages show what the user wrote: values as TOML writes them, keys and
file names shortened and escaped, so that every problem is one bounded line.

L{_Invalid} is what a validator raises; the loader turns it into a
L{ConfigError} that names the file, the line and the key.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from echod.errors import MAX_LINE, UserError, oneLine

__all__ = ["MAX_PROBLEMS", "ConfigError"]


# How much of a value, a key and a file name an error message quotes.
_SHOW_VALUE = 80
_SHOW_KEY = 100
_SHOW_SOURCE = 200
_SHOW_PROBLEM = 600
# How many problems of one file an error lists; the rest are counted.
MAX_PROBLEMS = 20


class ConfigError(UserError):
    """
    A configuration value the user must fix, or several at once.

    C{str()} of one problem is one line: C{FILE: line N: KEY = VALUE: PROBLEM},
    with the parts that are known.  An error made of several problems
    (L{combine}) has them in L{problems}; its C{str()} is their lines joined by
    newlines, at most L{MAX_PROBLEMS} of them and then C{... and N more}.  The
    CLI prints each line of L{lines} as it is and exits non-zero.
    """

    def __init__(
        self,
        problem: str,
        *,
        source: str | None = None,
        line: int | None = None,
        key: str | None = None,
        value: object = dataclasses.MISSING,
    ) -> None:
        super().__init__(problem)
        self.problem = problem
        self.source = source
        self.line = line
        self.key = key
        self.value = value
        self.problems: tuple[ConfigError, ...] = (self,)

    @classmethod
    def combine(cls, errors: Sequence[ConfigError]) -> ConfigError:
        """
        One error for all of C{errors} (each possibly combined already), in
        their order; the first gives the attributes of a single problem.
        """
        problems = tuple(p for e in errors for p in e.problems)
        if len(problems) == 1:
            return problems[0]
        first = problems[0]
        combined = cls(
            first.problem, source=first.source, line=first.line, key=first.key, value=first.value
        )
        combined.problems = problems
        return combined

    def lines(self) -> list[str]:
        """
        One bounded line per problem, at most L{MAX_PROBLEMS} and a last one
        saying how many more there are.
        """
        if len(self.problems) == 1:
            return [self._line()]
        shown = [p._line() for p in self.problems[:MAX_PROBLEMS]]
        if len(self.problems) > MAX_PROBLEMS:
            shown.append(f"... and {len(self.problems) - MAX_PROBLEMS} more")
        return shown

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def _line(self) -> str:
        """
        One line of bounded length, whatever the file name, key and value
        are: each is shortened, and escaped where it is not printable.
        """
        parts = []
        if self.source is not None:
            parts.append(_showSource(self.source))
        if self.line is not None:
            parts.append(f"line {self.line}")
        if self.key is not None:
            key = oneLine(self.key, _SHOW_KEY)
            if self.value is dataclasses.MISSING:
                parts.append(key)
            else:
                parts.append(f"{key} = {_show(self.value)}")
        parts.append(oneLine(self.problem, _SHOW_PROBLEM))
        return oneLine(": ".join(parts), MAX_LINE)


def _showSource(source: str) -> str:
    """
    A file name, escaped; a long one keeps its end, where its name is.
    """
    if len(source) > _SHOW_SOURCE:
        source = "\u2026" + source[-(_SHOW_SOURCE - 1) :]
    return oneLine(source, 2 * _SHOW_SOURCE)


def _show(value: object, limit: int = _SHOW_VALUE, depth: int = 0) -> str:
    """
    Render a value the way it is written in TOML, so the user recognises it:
    at most about C{limit} characters, escaped, a long string followed by its
    length.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        shown = oneLine(value, limit, quote=True)
        cut = len(value) > limit or (shown.endswith("\u2026") and not value.endswith("\u2026"))
        return f'"{shown}" ({len(value)} characters)' if cut else f'"{shown}"'
    if isinstance(value, int):
        if value.bit_length() > 3 * limit:
            # str() of an integer over 4,300 digits raises ValueError.
            return f"(an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits)"
        return oneLine(str(value), limit)
    if isinstance(value, list | tuple | dict):
        if depth > 3:
            return "[\u2026]" if not isinstance(value, dict) else "{\u2026}"
        items = value.items() if isinstance(value, dict) else enumerate(value)
        pieces, length = [], 0
        for key, item in items:
            piece = _show(item, limit, depth + 1)
            if isinstance(value, dict):
                piece = f"{oneLine(str(key), limit)} = {piece}"
            if length + len(piece) > limit:
                pieces.append("\u2026")
                break
            pieces.append(piece)
            length += len(piece) + 2
        opening, closing = ("{", "}") if isinstance(value, dict) else ("[", "]")
        return opening + ", ".join(pieces) + closing
    return oneLine(str(value), limit)


class _Invalid(ValueError):
    """
    Raised by a validator; the text says what is allowed.  C{index} is set when
    the fault is in one item of a list (1-based, as people count).
    """

    def __init__(self, allowed: str, index: int | None = None, item: object = None) -> None:
        super().__init__(allowed)
        self.index = index
        self.item = item


def _quoted(text: str) -> str:
    return "'" + oneLine(text, _SHOW_VALUE) + "'"
