"""
echod's fast paths read private attributes of Twisted; Twisted's own tests,
run against them, say whether they still behave as Twisted does.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from echod.server import fastpath
from tests.testing import runPython

pytestmark = [pytest.mark.e2e, pytest.mark.fastpath]

ROOT = Path(__file__).resolve().parents[2]


def test_twistedSuitesPassAgainstFastPaths(tmp_path: Path) -> None:
    assert fastpath.supported(), "echod's fast paths are not checked against this Twisted"
    result = runPython(
        ["-m", "tests.twistedsuite", "--temp-directory", str(tmp_path / "trial")],
        cwd=ROOT,
        timeout=280,
    )
    tail = result.stdout[-3000:]
    assert result.returncode == 0, tail
    summary = result.stdout.strip().splitlines()[-1]
    assert summary.startswith("PASSED"), tail
    # The suite really ran: hundreds of tests, and only the known skips.
    ran = int(
        next(line for line in result.stdout.splitlines() if line.startswith("Ran ")).split()[1]
    )
    assert ran > 250, tail
