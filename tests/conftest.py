"""
Shared fixtures.  The reactor is pytest-twisted's (C{--reactor} default); no
test module imports it at top level.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.daemon import twistdPath


@pytest.fixture
def twistd() -> str:
    return twistdPath()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path
