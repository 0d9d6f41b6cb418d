"""
Issue 11's hostile input end to end: C{echod check-config}, C{twistd echod},
C{twistd echod-sniff} and C{echod-client} as subprocesses, under a memory
limit and a timeout, on every class of the regression corpus.  Each must end
in exit 0 or its error status with exactly one line on stderr, of bounded
length, and never a traceback, a hang or a blown memory limit.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from echod.errors import MAX_LINE
from tests.daemon import Twistd, twistdPath
from tests.environment import freePort
from tests.hostileconfigs import ENDPOINT_FILES, FILES, TEXTS, Builder

pytestmark = pytest.mark.e2e

# Address space for one echod process: Python, Twisted and OpenSSL need a
# few hundred megabytes of it; reading /dev/zero into memory needs more.
MEMORY = 768 * 1024 * 1024
TIMEOUT = 30


def _limitMemory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))


def _script(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        cwd=cwd,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=TIMEOUT,
        stdin=subprocess.DEVNULL,
        preexec_fn=_limitMemory,
        check=False,
    )


def assertOneLine(result: subprocess.CompletedProcess[str], status: int = 1) -> str:
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.returncode in (0, status), (result.returncode, result.stderr[-3000:])
    if result.returncode == 0:
        return ""
    # splitlines(): U+2028, U+0085 and the like end a line too.
    assert len(result.stderr.splitlines()) == 1, result.stderr[:3000]
    assert result.stderr.endswith("\n") and result.stderr.count("\n") == 1
    assert len(result.stderr) <= MAX_LINE + 40, len(result.stderr)
    return result.stderr


def checkConfig(path: Path, cwd: Path) -> str:
    return assertOneLine(run([_script("echod"), "check-config", str(path)], cwd))


@pytest.mark.parametrize(("text", "expected"), [t[1:] for t in TEXTS], ids=[t[0] for t in TEXTS])
def test_checkConfigText(tmp_path: Path, text: str, expected: str) -> None:
    conf = tmp_path / "hostile.toml"
    conf.write_text(text)
    line = checkConfig(conf, tmp_path)
    assert line.startswith(f"echod: {conf}: ")
    assert expected in line


@pytest.mark.parametrize(("build", "expected"), [f[1:] for f in FILES], ids=[f[0] for f in FILES])
def test_checkConfigFileKinds(tmp_path: Path, build: Builder, expected: str) -> None:
    """
    The config file itself is a device, a FIFO, huge, a directory.
    """
    path = build(tmp_path)
    line = checkConfig(path, tmp_path)
    assert line == f"echod: {path}: cannot read the config file: {expected}\n"


@pytest.mark.parametrize(("build", "problem"), [f[1:] for f in FILES], ids=[f[0] for f in FILES])
@pytest.mark.parametrize(
    ("template", "name"), [e[1:] for e in ENDPOINT_FILES], ids=[e[0] for e in ENDPOINT_FILES]
)
def test_checkConfigEndpointFiles(
    tmp_path: Path, build: Builder, problem: str, template: str, name: str
) -> None:
    key = tmp_path / "key.pem"
    key.write_text("not a key\n")
    description = template.format(build(tmp_path), key=key)
    conf = tmp_path / "ssl.toml"
    conf.write_text(f"[server]\nlisten = ['{description}']\n")
    line = checkConfig(conf, tmp_path)
    assert f": {name}='" in line and line.endswith(f": {problem}\n")


def test_checkConfigManyFilesAtOnce(tmp_path: Path) -> None:
    """
    One line per bad file, whatever they hold.
    """
    paths = []
    for index, (_, text, _) in enumerate(TEXTS):
        path = tmp_path / f"{index}.toml"
        path.write_text(text)
        paths.append(str(path))
    result = run([_script("echod"), "check-config", *paths], tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == len(TEXTS)


def _twistd(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return run([twistdPath(), "-n", "--pidfile=", *args], cwd)


@pytest.mark.parametrize(
    "name",
    [
        "nested-arrays",
        "integer-over-4300-digits",
        "dotted-key-deep",
        "backlog-huge-in-endpoint",
        "port-arabic-indic-digits",
        "unix-path-too-long",
        "user-non-ascii-digits",
        "stats-interval-tiny",
        "line-separators-in-value",
    ],
)
def test_twistdEchodConfig(tmp_path: Path, name: str) -> None:
    """
    twistd echod --config F refuses each class in one line, status 1,
    before anything listens.
    """
    text, expected = next(t[1:] for t in TEXTS if t[0] == name)
    conf = tmp_path / "hostile.toml"
    conf.write_text(text)
    line = assertOneLine(_twistd(["echod", "--config", str(conf)], tmp_path))
    assert line.startswith("echod: ") and expected in line


@pytest.mark.parametrize(
    "args",
    [
        ["echod", "--config", "/dev/zero"],
        ["echod", "--listen", "tcp:7007:backlog=99999999999999999999"],
        ["echod", "--listen", "tcp:7007:backlog=-5"],
        ["echod", "--listen", "tcp:\u0668\u0664\u0666\u0668"],
        ["echod", "--listen", "unix:/tmp/" + "a" * 200],
        ["echod", "--listen", "ssl:7443:privateKey=/dev/zero"],
        ["echod", "--listen", "tcp:" + "\u2028" * 30_000],
        ["echod-sniff", "--snaplen", "\u0669\u0666"],
        ["echod-sniff", "--count", "9" * 5000],
        ["echod-sniff", "--stats-interval", "0.0000001"],
        ["echod-sniff", "--buffer-bytes", "-5"],
        ["echod-sniff", "--config", "/dev/zero"],
    ],
    ids=lambda args: f"{args[0]} {args[1]}",
)
def test_twistdCommandLineValues(tmp_path: Path, args: list[str]) -> None:
    """
    twistd echod and twistd echod-sniff: one line and status 1 for a bad
    value, not a traceback or twistd's usage text.
    """
    line = assertOneLine(_twistd(args, tmp_path))
    assert line.startswith(f"{args[0]}: ")


@pytest.mark.parametrize(
    "args",
    [
        ["--count", "\u0668"],
        ["--count", "9" * 5000],
        ["--port", "\uff17"],
        ["--size", "\u0661K"],
        ["--timeout", "1e999"],
        ["--file", "/dev/zero"],
        ["--file", "FIFO"],
        ["--endpoint", "tcp:host=localhost:port=\u0667"],
        ["--endpoint", "unix:path=/" + "a" * 200],
        ["--config", "/dev/zero"],
        ["--message", "x" * 100_000, "--size", "\u2028"],
    ],
    ids=lambda args: args[0],
)
@pytest.mark.parametrize("how", ["console", "twistd"])
def test_clientCommandLineValues(tmp_path: Path, args: list[str], how: str) -> None:
    """
    echod-client and twistd echod-client: one line and the client's usage
    status (2), before anything connects.
    """
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    args = [str(fifo) if a == "FIFO" else a for a in args]
    target = [] if "--port" in args else ["localhost", "7"]
    if how == "console":
        result = run([_script("echod-client"), *args, *target], tmp_path)
    else:
        result = _twistd(["echod-client", *args, *target], tmp_path)
    assert result.returncode == 2
    assertOneLine(result, status=2)


def test_acceptedEdgeValuesStart(tmp_path: Path) -> None:
    """
    What the checker accepts at the edges of its ranges starts: a unix path
    of exactly the kernel's length, the largest backlog, the shortest idle
    timeout and statistics interval.
    """
    port = freePort()
    sock = Path("/tmp") / f"{os.getpid()}-".ljust(102, "e")
    assert len(os.fsencode(str(sock))) == 107
    conf = tmp_path / "edge.toml"
    conf.write_text(
        f"[server]\nlisten = ['tcp:{port}:interface=127.0.0.1:backlog=65535', "
        f"'unix:{sock}:mode=600:backlog=65535']\nidle_timeout = 0.1\n"
        "[sniff]\nstats_interval = 1\n"
    )
    assert run([_script("echod"), "check-config", str(conf)], tmp_path).returncode == 0
    try:
        with Twistd(tmp_path, ["--config", str(conf)]) as daemon:
            daemon.waitFor(r"(?s)listening on .*listening on ")
            daemon.signal(signal.SIGTERM)
            assert daemon.wait() == 0
        assert "Traceback" not in daemon.output()
    finally:
        for leftover in (sock, Path(f"{sock}.lock")):
            if leftover.is_symlink() or leftover.exists():
                leftover.unlink()
