"""
Every command as a newcomer first runs it: C{--version}, and advice where a
message alone leaves them stuck.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from echod import versionLine
from echod.server import fastpath
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


@pytest.mark.parametrize(
    "command",
    [
        ["echod"],
        ["echod", "check-config"],
        ["echod-client"],
        ["twistd", "echod"],
        ["twistd", "echod-sniff"],
        ["twistd", "echod-client"],
    ],
    ids=" ".join,
)
def test_version(command: list[str], tmp_path: Path) -> None:
    """
    Each console script and twistd plugin prints echod's version line (not
    Twisted's), the same as this installation's, and exits 0.
    """
    program = twistdPath() if command[0] == "twistd" else script(command[0])
    result = run([program, *command[1:], "--version"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{versionLine()}\n"
    assert result.stderr == ""
    if fastpath.INPLACE_IN_C:
        assert ", C helper: built" in result.stdout


def test_twistdsOwnVersion(tmp_path: Path) -> None:
    """
    C{twistd --version} is still twistd's.
    """
    result = run([twistdPath(), "--version"], tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith("twistd (the Twisted daemon) ")


def test_versionLineImportsNoReactor(tmp_path: Path) -> None:
    """
    Making the line installs no reactor: under twistd it runs while options
    are parsed, before twistd (or echod) chooses one.
    """
    code = (
        "import sys, echod; echod.versionLine(); print('twisted.internet.reactor' in sys.modules)"
    )
    result = run([sys.executable, "-c", code], tmp_path)
    assert result.stdout == "False\n", result.stderr


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
