"""
Tests for L{echod.versionLine}: what every command's C{--version} prints.
"""

from __future__ import annotations

import platform
import sys

import pytest

import twisted
from echod import __version__, versionLine
from echod.server import fastpath
from echod.sniff import linux

PYTHON = f"Python {platform.python_version()} {platform.python_implementation()}"
HELPER = "built" if fastpath.INPLACE_IN_C and linux.WALK_IN_C else "not built"


def test_here() -> None:
    """
    echod's, Twisted's and Python's versions and the C helper; the fast
    paths are not mentioned where they are on.
    """
    expected = f"echod {__version__} (Twisted {twisted.__version__}, {PYTHON}, C helper: {HELPER}"
    if fastpath.supported():
        assert versionLine() == f"{expected})"
    else:
        assert versionLine().startswith(f"{expected}, fast paths: off (")


def test_withoutTheCHelper(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "echod.server._inplace", None)
    monkeypatch.setitem(sys.modules, "echod.sniff._ringwalk", None)
    assert ", C helper: not built" in versionLine()


def test_partOfTheCHelper(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    A helper built without the sniffer's part (or the server's) is not
    said to be built: CI checks for "C helper: built".
    """
    monkeypatch.setitem(sys.modules, "echod.sniff._ringwalk", None)
    line = versionLine()
    assert "C helper: built" not in line
    assert ", C helper: partly built (without echod.sniff._ringwalk)" in line


def test_fastPathsOff(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    On a Twisted release the fast paths were not checked against, the line
    says they are off, and why.
    """
    monkeypatch.setattr(twisted, "__version__", "27.1.0")
    assert versionLine() == (
        f"echod {__version__} (Twisted 27.1.0, {PYTHON}, C helper: {HELPER}, "
        "fast paths: off (checked against Twisted 26.10.x only))"
    )
