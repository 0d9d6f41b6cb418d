"""
Commands as a newcomer first runs them: advice where a message alone leaves
them stuck.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from echod.sniff import bpf
from tests.daemon import twistdPath
from tests.environment import need

pytestmark = pytest.mark.e2e


def script(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def test_linkAddressFilterOnAny(tmp_path: Path) -> None:
    """
    C{twistd echod-sniff -i any -f 'ether host ...'}: libpcap's message, then
    why (C{any} has no link-layer addresses) and what to do; one line,
    status 1, before anything is opened.
    """
    try:
        bpf.loadLibrary()
    except bpf.FilterError:
        need(False, "libpcap (libpcap0.8) is not installed")
    result = run(
        [
            twistdPath(),
            "-n",
            "--pidfile=",
            "echod-sniff",
            "-i",
            "any",
            "-f",
            "ether host 00:11:22:33:44:55",
        ],
        tmp_path,
    )
    assert result.returncode == 1
    assert result.stderr == (
        "echod-sniff: bad filter 'ether host 00:11:22:33:44:55' on interface any: ethernet "
        "addresses supported only on ethernet/FDDI/token ring/802.11/ATM LANE/Fibre Channel "
        "(interface any has no link-layer addresses: capture on one interface, such as -i eth0)\n"
    )
