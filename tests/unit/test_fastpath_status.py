"""
The start-up line that says which fast paths run (L{echod.server.fastpath.status}).
"""

from __future__ import annotations

import pytest
from twisted.internet.testing import MemoryReactorClock

from echod.server import fastpath


def test_offByConfig() -> None:
    assert fastpath.status(False, MemoryReactorClock()) == (
        "off ([server] fast_paths = false): Twisted's stock reactor and transports"
    )


def test_offOnAnotherTwisted(monkeypatch: pytest.MonkeyPatch) -> None:
    import twisted

    monkeypatch.setattr(twisted, "__version__", "27.1.0")
    assert fastpath.status(True, MemoryReactorClock()).startswith(
        "off (checked against Twisted 26.10.x only): "
    )


def test_onSaysWhatRuns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fastpath, "unsupportedReason", lambda: None)
    lean = fastpath.EchodReactor.__new__(fastpath.EchodReactor)
    helper = "in-place echo in C" if fastpath.INPLACE_IN_C else "no in-place echo"
    assert fastpath.status(True, lean).startswith(
        "on: lean epoll reactor, immediate writes, " + helper
    )
    assert fastpath.status(True, MemoryReactorClock()).startswith(
        "on: MemoryReactorClock (chosen with --reactor) instead of the lean one"
    )
