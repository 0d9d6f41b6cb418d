"""
What echod's tests share: waiting for a condition with a deadline, a fresh
Python running the echod under test, and the helpers several test modules use.
Test modules import from here (and from L{tests.daemon}, L{tests.environment},
L{tests.capturetesting}), never from one another.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["CHECKOUT", "pythonPath", "runPython", "waitUntil"]

CHECKOUT = Path(__file__).resolve().parents[1]


def waitUntil(
    condition: Callable[[], object],
    timeout: float = 15.0,
    interval: float = 0.05,
    what: str | None = None,
) -> None:
    """
    Return as soon as C{condition()} is true; fail once C{timeout} seconds
    have passed without it, naming C{what} (or the condition) in the message.
    """
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what or condition!r} not met within {timeout} s")
        time.sleep(interval)


def pythonPath() -> str:
    """
    C{PYTHONPATH} for a fresh interpreter that imports the echod under test
    (the one tests/conftest.py chose) and the tests package.
    """
    import echod

    entries = dict.fromkeys([str(Path(echod.__file__).resolve().parents[1]), str(CHECKOUT)])
    return os.pathsep.join(entries)


def runPython(
    args: list[str], timeout: float = 60, cwd: Path | None = None, check: bool = False
) -> subprocess.CompletedProcess[str]:
    """
    Run C{python -P ARGS} (C{-c CODE}, C{-m MODULE}) with the echod under
    test first on its path: the working directory, which C{-c} and C{-m}
    would otherwise put in front, is left out (C{-P}).
    """
    env = {**os.environ, "PYTHONPATH": pythonPath()}
    return subprocess.run(
        [sys.executable, "-P", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=env,
        check=check,
    )
