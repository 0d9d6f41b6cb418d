"""
Shared fixtures.  The reactor is pytest-twisted's (C{--reactor} default); no
test module imports it at top level.

Which echod is under test is decided here, once, when pytest loads this
conftest: before collection, so before any test module imports echod, and
whatever the flags.  Where pip installed echod apart from this checkout
(C{pip install .}), the tests exercise that copy, which is what users run, with
the C helper pip compiled (the checkout's sources have none); an editable
install, or none, means the checkout itself.  The checkout is moved behind the
other entries of C{sys.path} and echod is imported at once, so the choice is
pinned in C{sys.modules}: pytest's default ("prepend") import mode puts the
checkout back in front of C{sys.path} for every test module it imports, which
would otherwise hand the checkout's echod to the first test module importing it
(as it did under C{-q}, where the report header, which imported echod first,
is not made).  An echod imported before this conftest from elsewhere than the
one chosen stops the run.  Fresh interpreters started by tests get the same
echod through L{tests.testing.runPython}.  Every run names the echod under
test: in its header, or at its end under C{-q}.
"""

from __future__ import annotations

import importlib.machinery
import sys
from pathlib import Path

import pytest

from tests.daemon import twistdPath
from tests.environment import need

CHECKOUT = Path(__file__).resolve().parents[1]


def _inCheckout(entry: str) -> bool:
    return Path(entry or ".").resolve() == CHECKOUT


def _chooseEchod() -> None:
    """
    Put the checkout behind the rest of C{sys.path} when an echod is
    installed elsewhere, and import echod from there now.
    """
    elsewhere = [entry for entry in sys.path if not _inCheckout(entry)]
    spec = importlib.machinery.PathFinder.find_spec("echod", elsewhere)
    if spec is not None and spec.origin is not None:
        # The checkout stays on the path (the tests package lives there), last.
        sys.path[:] = elsewhere + [entry for entry in sys.path if _inCheckout(entry)]
        chosen = Path(spec.origin).parent
    else:
        chosen = None
    already = sys.modules.get("echod")
    import echod

    if chosen is not None and Path(echod.__file__).resolve().parent != chosen.resolve():
        raise pytest.UsageError(
            f"echod was imported from {Path(echod.__file__).parent} before tests/conftest.py"
            f" could choose the installed {chosen}"
            + (" (by a plugin loaded earlier)" if already is not None else "")
        )


_chooseEchod()


def _underTest() -> str:
    import echod
    from echod.server import fastpath

    helper = "with" if fastpath.INPLACE_IN_C else "without"
    return f"echod under test: {Path(echod.__file__).parent} ({helper} its C helper)"


def pytest_report_header() -> str:
    return _underTest()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    # Under -q there is no header: say it at the end instead.
    if terminalreporter.verbosity < 0:
        terminalreporter.write_line(_underTest())


def pytest_runtest_setup(item: pytest.Item) -> None:
    # Elsewhere than on the Twisted release the fast paths were checked
    # against, echod runs Twisted's stock classes: a test of the fast paths
    # would fail there, or pass without testing what it says.
    if item.get_closest_marker("fastpath") is not None:
        from echod.server import fastpath

        need(
            fastpath.supported(),
            f"the fast paths are off here ({fastpath.unsupportedReason()}): "
            "deselect these tests with -m 'not fastpath'",
        )


@pytest.fixture
def twistd() -> str:
    return twistdPath()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path
