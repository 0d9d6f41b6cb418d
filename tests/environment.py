"""
What the machine offers the tests, and the rule for what it lacks: a test that
needs a tool, a privilege or IPv6 skips on a developer's machine but fails
under C{CI=true}, where .ci/run has installed everything.
"""

from __future__ import annotations

import os
import shutil
import socket

import pytest

__all__ = ["freePort", "hasIPv6", "inCI", "need", "requireIPv6", "requireRoot", "requireTool"]


def inCI() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need(condition: bool, what: str) -> None:
    """
    Skip the calling test unless C{condition}; under CI, fail instead.
    """
    if condition:
        return
    if inCI():
        pytest.fail(f"CI=true but {what}", pytrace=False)
    pytest.skip(what)


def requireTool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")
    need(path is not None, f"{name} is not installed")
    assert path is not None
    return path


def requireRoot() -> None:
    need(os.geteuid() == 0, "this test needs root")


def hasIPv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def requireIPv6() -> None:
    need(hasIPv6(), "this host has no IPv6 loopback")


def freePort(family: socket.AddressFamily = socket.AF_INET, kind: int = socket.SOCK_STREAM) -> int:
    """
    A port that was free a moment ago (for subprocesses that must be told a
    port; in-process tests listen on port 0 instead).
    """
    host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    with socket.socket(family, kind) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port
