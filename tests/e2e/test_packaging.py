"""
echod as pip installs it: the wheel ships the plugin and nothing that would
overwrite Twisted's files, and a fresh virtualenv runs twistd echod.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.environment import need

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def run(*argv: str | Path, cwd: Path | None = None, timeout: float = 300) -> str:
    result = subprocess.run(
        [str(a) for a in argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, f"{argv}: {result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("wheel")
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", out, ROOT)
    (built,) = out.glob("echod-*.whl")
    yield built


def test_wheelContents(wheel: Path) -> None:
    """
    The plugin file is in the wheel; no twisted/__init__.py or
    twisted/plugins/__init__.py (they would replace Twisted's own, and
    uninstalling echod would break twistd); no tests package; no plugin cache.
    """
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "twisted/plugins/echod_plugins.py" in names
    assert "echod/py.typed" in names
    assert {
        "echod/tap/server.py",
        "echod/config/__init__.py",
        "echod/sniff/__init__.py",
        "echod/monitor/service.py",
    } <= names
    assert "twisted/__init__.py" not in names
    assert "twisted/plugins/__init__.py" not in names
    assert not [n for n in names if n.startswith("tests/")]
    assert not [n for n in names if n.endswith("dropin.cache")]


def test_wheelHasTheCHelper(wheel: Path) -> None:
    """
    On Linux the wheel carries echod's C helper (the in-place echo, and the
    sniffer's ring walker) and their type stubs; where it cannot be built
    echod still installs, without it, so only CI insists.
    """
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in ("echod/server/_inplace", "echod/sniff/_ringwalk"):
        assert f"{module}.pyi" in names
        built = [n for n in names if n.startswith(f"{module}.") and n.endswith(".so")]
        need(bool(built), f"the wheel was built without {module} of echod's C helper")


def test_freshVirtualenv(wheel: Path, tmp_path: Path) -> None:
    """
    In a fresh venv: the wheel installs, twistd lists the plugins, echod
    answers --help without a traceback, and uninstalling echod leaves twistd
    working.
    """
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv)
    pip, twistd = venv / "bin" / "pip", venv / "bin" / "twistd"
    run(pip, "install", "-q", wheel)
    listing = run(twistd, "--help", cwd=tmp_path)
    for name in ("echod", "echod-client", "echod-sniff", "echod-monitor"):
        assert f"    {name} " in listing
    assert "Options" in run(twistd, "echod", "--help", cwd=tmp_path)
    run(pip, "uninstall", "-y", "-q", "echod")
    after = run(twistd, "--help", cwd=tmp_path)
    assert "    echod " not in after
    assert "web " in after


def test_installedVersion(wheel: Path, tmp_path: Path) -> None:
    """
    The installed C{echod --version} says whether the installed C helper
    was built (on Linux the wheel carries it), the same from any directory:
    run inside the checkout it reads the installation, not the source tree
    (where the helper may not be built).
    """
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv)
    run(venv / "bin" / "pip", "install", "-q", wheel)
    echod = venv / "bin" / "echod"
    line = run(echod, "--version", cwd=tmp_path)
    assert line.startswith("echod ")
    assert run(echod, "--version", cwd=ROOT) == line
    assert run(venv / "bin" / "twistd", "echod", "--version", cwd=ROOT) == line
    names = zipfile.ZipFile(wheel).namelist()
    built = [n for n in names if n.startswith("echod/server/_inplace.") and n.endswith(".so")]
    need(bool(built), "the wheel was built without echod's C helper")
    assert ", C helper: built" in line
