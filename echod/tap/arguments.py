# -*- test-case-name: tests.unit.test_tap_arguments -*-
"""
Command lines as GNU getopt reads them, for L{twisted.python.usage.Options}:
options may follow the arguments (C{ping HOST -c 3}, C{tcpdump EXPR -c 3}),
and an error about a value names the option as the user typed it.
"""

from __future__ import annotations

import getopt

from twisted.python import usage

__all__ = ["optionsFirst"]


def optionsFirst(options: usage.Options, argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """
    C{argv} with its options first, then C{--} and its arguments
    (L{usage.Options} stops at the first argument), and for each option
    given its long name and how the user wrote it (C{"-W"}, or
    C{"--rotate-count"} for C{--rotate-c=3} too), the last time it was given.

    @raise getopt.GetoptError: an unknown option, or one without its value.
    """
    found, arguments = getopt.gnu_getopt(argv, options.shortOpt, options.longOpt)
    takesValue = {f"--{name[:-1]}" for name in options.longOpt if name.endswith("=")}
    takesValue |= {
        f"-{c}"
        for c, n in zip(options.shortOpt, options.shortOpt[1:] + " ", strict=True)
        if n == ":"
    }
    ordered: list[str] = []
    typed: dict[str, str] = {}
    for name, value in found:
        ordered.extend([name, value] if name in takesValue else [name])
        long = options.synonyms.get(name.lstrip("-"))
        if long is not None:
            typed[long] = name
    return [*ordered, "--", *arguments], typed
