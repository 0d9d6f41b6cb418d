"""
L{optionsFirst}: GNU getopt's order for L{usage.Options}, and how each
option was typed.
"""

from __future__ import annotations

import getopt

import pytest
from twisted.python import usage

from echod.tap.arguments import optionsFirst


class Options(usage.Options):
    optFlags = [["quiet", "q", "Say less."]]
    optParameters = [["count", "c", None, "How many."], ["rotate-count", "W", None, "Files."]]


def test_optionsFirst() -> None:
    """
    Options after the arguments come first, values kept with their option,
    the arguments after C{--}; each option is named as it was typed last.
    """
    ordered, typed = optionsFirst(
        Options(), ["host", "-c", "3", "port", "-q", "--rotate-c=2", "-W5", "--", "-x"]
    )
    assert ordered == [
        "-c",
        "3",
        "-q",
        "--rotate-count",
        "2",
        "-W",
        "5",
        "--",
        "host",
        "port",
        "-x",
    ]
    assert typed == {"count": "-c", "quiet": "-q", "rotate-count": "-W"}


def test_unknown() -> None:
    with pytest.raises(getopt.GetoptError) as caught:
        optionsFirst(Options(), ["-Q"])
    assert caught.value.opt == "Q"
