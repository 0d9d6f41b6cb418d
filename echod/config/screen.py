# -*- test-case-name: tests.unit.test_hostile_config -*-
"""
The screen a config text passes before L{tomllib} reads it: bounds on its
size, on how deep arrays and inline tables nest, on how many parts a dotted
key has and on how long a number is written, so that no input costs more
than a moment and a few megabytes or ends in an exception of Python's own.
"""

from __future__ import annotations

import re

from echod.config.errors import ConfigError
from echod.config.files import _size

__all__ = ["MAX_CONFIG_BYTES", "MAX_KEY_PARTS", "MAX_NESTING", "MAX_NUMBER_CHARS"]


# Bounds on what echod reads, so that no input costs more than a moment and a
# few megabytes: the config file's size, how deep arrays and inline tables
# nest, how many parts a dotted key has, how long a number is written.
MAX_CONFIG_BYTES = 1024 * 1024
MAX_NESTING = 32
MAX_KEY_PARTS = 32
MAX_NUMBER_CHARS = 100


_TOKEN = re.compile(
    r"""
    (?P<multiline>\"\"\"|''')
    | (?P<string>"(?:[^"\\\n]|\\.)*"?|'[^'\n]*'?)
    | (?P<comment>\#[^\n]*)
    | (?P<newline>\n)
    | (?P<bare>[A-Za-z0-9_+\-.:]+)
    | (?P<space>[ \t\r]+)
    | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)
# Runs the screen can pass over in one step, being sure they hold nothing it
# counts: inside an array, short bare values, one-line strings, commas and
# comments; at the top level, lines of a bare key and such a value.
_SHORT_VALUE = r"""
    (?: [A-Za-z0-9_+\-.:]{1,100}(?![A-Za-z0-9_+\-.:])
      | "(?!"")(?:[^"\\\n]|\\.)*" | '(?!'')[^'\n]*' )
"""
_PLAIN_ARRAY_ITEMS = re.compile(rf"(?: {_SHORT_VALUE} | \#[^\n]* | [ \t\r\n,] )+", re.VERBOSE)
_PLAIN_LINES = re.compile(
    rf"""(?: [ \t]* (?: [A-Za-z0-9_\-]{{1,100}} [ \t]*=[ \t]* {_SHORT_VALUE} )?
             [ \t\r]* (?:\#[^\n]*)? \n )+""",
    re.VERBOSE,
)


def _screen(text: str, where: str) -> None:
    """
    Refuse, before L{tomllib} reads it, TOML that would cost it more than a
    moment or a few megabytes, or end in an exception of Python's own: a text
    longer than L{MAX_CONFIG_BYTES} characters, arrays and inline tables
    nested deeper than L{MAX_NESTING} (RecursionError), dotted keys of more
    than L{MAX_KEY_PARTS} parts (time and memory grow with the square of
    their depth), numbers longer than L{MAX_NUMBER_CHARS} characters
    (ValueError past 4,300 digits).

    A small scanner: it knows strings, comments, brackets and where keys are,
    which is all these limits need; everything else is L{tomllib}'s to judge.
    """
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f"the config is larger than {_size(MAX_CONFIG_BYTES)}", source=where)
    line, position = 1, 0
    nesting: list[str] = []
    expectKey, header, lineStart = True, False, True
    keyParts, keyStart = 1, 0
    table = key = ""

    def refuse(problem: str) -> ConfigError:
        name = ".".join(part for part in (table, key) if part) or None
        return ConfigError(problem, source=where, line=line, key=name)

    while position < len(text):
        plain = None
        if nesting and nesting[-1] == "[":
            plain = _PLAIN_ARRAY_ITEMS.match(text, position)
        elif lineStart and not nesting and position == keyStart:
            plain = _PLAIN_LINES.match(text, position)
        if plain is not None:
            line += text.count("\n", position, plain.end())
            position = plain.end()
            if not nesting:
                keyStart, key = position, ""
            continue
        match = _TOKEN.match(text, position)
        assert match is not None  # the last alternative takes any character
        kind, token, position = match.lastgroup, match.group(), match.end()
        atLineStart, lineStart = lineStart, kind == "space" and lineStart
        if kind == "newline":
            line += 1
            lineStart = True
            if not nesting:
                expectKey, header, keyParts, keyStart = True, False, 1, position
        elif kind == "multiline":
            end = text.find(token, position)
            end = len(text) if end < 0 else end + 3
            line += text.count("\n", position, end)
            position = end
        elif kind == "bare":
            if expectKey or header:
                keyParts += token.count(".")
                if keyParts > MAX_KEY_PARTS:
                    raise refuse(f"a dotted key has more than {MAX_KEY_PARTS} parts")
            elif len(token) > MAX_NUMBER_CHARS:
                raise refuse(f"a number or date is longer than {MAX_NUMBER_CHARS} characters")
        elif kind == "other":
            if token == "[" and atLineStart and not nesting:
                header, expectKey, keyParts, keyStart = True, False, 1, position
            elif token == "]" and header:
                if text[keyStart : keyStart + 1] == "[":
                    keyStart += 1
                table = text[keyStart : match.start()].strip()
                key, header = "", False
            elif token == "=":
                if not nesting:
                    key = text[keyStart : match.start()].strip()
                expectKey = False
            elif token in "[{" and not header:
                nesting.append(token)
                if len(nesting) > MAX_NESTING:
                    raise refuse(f"arrays and inline tables nest more than {MAX_NESTING} deep")
                expectKey, keyParts = token == "{", 1
            elif token in "]}" and nesting:
                nesting.pop()
                expectKey = False
            elif token == "," and nesting and nesting[-1] == "{":
                expectKey, keyParts = True, 1
