"""
Tests for L{echod.errors}: user errors become one line, other errors keep
their traceback.
"""

from __future__ import annotations

import subprocess

from tests.testing import runPython


def run(code: str) -> subprocess.CompletedProcess[str]:
    return runPython(["-c", code])


class ReportUserErrorsTests:
    def test_userErrorIsOneLine(self) -> None:
        result = run(
            "from echod.errors import reportUserErrors, ListenError\n"
            "reportUserErrors('echod')\n"
            "raise ListenError('cannot listen on tcp:7: address already in use')\n"
        )
        assert result.returncode == 1
        assert result.stderr == "echod: cannot listen on tcp:7: address already in use\n"

    def test_otherErrorsKeepTraceback(self) -> None:
        result = run(
            "from echod.errors import reportUserErrors\n"
            "reportUserErrors('echod')\n"
            "raise RuntimeError('a bug')\n"
        )
        assert result.returncode == 1
        assert "Traceback" in result.stderr
