"""
Shared fixtures.  The reactor is pytest-twisted's (C{--reactor} default); no
test module imports it at top level.

The tests exercise the echod that pip installed, where there is one apart from
this checkout: that is what users run, with the C helper pip compiled (the
checkout's sources have none).  An editable install, or none, means the
checkout itself.  The header of every run names the echod under test.
"""

from __future__ import annotations

import importlib.machinery
import sys
from pathlib import Path

import pytest

from tests.daemon import twistdPath

CHECKOUT = Path(__file__).resolve().parents[1]


def _preferInstalledEchod() -> None:
    def inCheckout(entry: str) -> bool:
        return Path(entry or ".").resolve() == CHECKOUT

    if "echod" in sys.modules:
        return
    elsewhere = [entry for entry in sys.path if not inCheckout(entry)]
    if importlib.machinery.PathFinder.find_spec("echod", elsewhere) is None:
        return
    # The checkout stays on the path (the tests package lives there), last.
    sys.path[:] = elsewhere + [entry for entry in sys.path if inCheckout(entry)]


_preferInstalledEchod()


def pytest_report_header() -> str:
    import echod
    from echod.server import fastpath

    helper = "with" if fastpath.INPLACE_IN_C else "without"
    return f"echod under test: {Path(echod.__file__).parent} ({helper} its C helper)"


@pytest.fixture
def twistd() -> str:
    return twistdPath()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path
