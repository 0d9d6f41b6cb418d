"""
The regression corpus of issue 11: config files and values that once ended
in a traceback, a hang, gigabytes of memory, or a daemon that accepted them
and then crashed.  Each now ends in one L{ConfigError} line of bounded length
that names the file, the line and the key where they are known.

The corpus is in tests/hostileconfigs.py, its files built as the tests run
(deep nesting by string multiplication, huge files sparse): nothing large is
kept in the repository.  C{tests/e2e/
test_hostile_input.py} runs the same corpus through C{echod check-config}.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from echod import config
from echod.config import ConfigError
from echod.errors import MAX_LINE
from tests.hostileconfigs import ENDPOINT_FILES, FILES, TEXTS, Builder


def oneLine(message: str) -> None:
    assert "\n" not in message and len(message.splitlines()) == 1, repr(message[:200])
    assert len(message) <= MAX_LINE, len(message)


@pytest.mark.parametrize(("text", "expected"), [t[1:] for t in TEXTS], ids=[t[0] for t in TEXTS])
def test_hostileText(text: str, expected: str) -> None:
    """
    Each class of hostile TOML is one line naming the file, the line and the
    key, within a second.
    """
    started = time.monotonic()
    with pytest.raises(ConfigError) as caught:
        config.loads(text, "echod.toml")
    assert time.monotonic() - started < 5
    message = str(caught.value)
    oneLine(message)
    assert message.startswith("echod.toml: ")
    assert expected in message


def test_longValueQuotedShort() -> None:
    """
    A 10 MiB value (given on the command line, where the file limit does
    not apply) is quoted as 80 characters and its length.
    """
    with pytest.raises(ConfigError) as caught:
        config.override(config.Config(), "log", {"level": "x" * (10 * 1024 * 1024)}, "--level")
    message = str(caught.value)
    oneLine(message)
    assert '"' + "x" * 79 + '\u2026" (10485760 characters)' in message


@pytest.mark.parametrize(("build", "expected"), [f[1:] for f in FILES], ids=[f[0] for f in FILES])
def test_configFileOfEveryKind(tmp_path: Path, build: Builder, expected: str) -> None:
    """
    The config file itself: a device, a FIFO, a huge file, a directory.
    """
    path = build(tmp_path)
    with pytest.raises(ConfigError) as caught:
        config.load(str(path))
    message = str(caught.value)
    oneLine(message)
    assert message == f"{path}: cannot read the config file: {expected}"


@pytest.mark.parametrize(("build", "problem"), [f[1:] for f in FILES], ids=[f[0] for f in FILES])
@pytest.mark.parametrize(
    ("template", "name"), [e[1:] for e in ENDPOINT_FILES], ids=[e[0] for e in ENDPOINT_FILES]
)
def test_filesNamedInEndpointStrings(
    tmp_path: Path, build: Builder, problem: str, template: str, name: str
) -> None:
    """
    Twisted reads the files an ssl: string names when it parses the string:
    echod looks at them first and refuses what would block or never end.
    """
    key = tmp_path / "key.pem"
    key.write_text("not a key\n")
    path = build(tmp_path)
    description = template.format(path, key=key)
    toml = f"[server]\nlisten = ['{description}']\n"
    message = _error(toml)
    assert message.startswith('echod.toml: line 2: server.listen[1] = "ssl:7443:')
    assert f": {name}='" in message
    assert message.endswith(f": {problem}")


@pytest.mark.parametrize(("build", "problem"), [f[1:] for f in FILES], ids=[f[0] for f in FILES])
@pytest.mark.parametrize(
    "template", ["ssl:localhost:7:caCertsDir={}", "tls:localhost:7:trustRoots={}"]
)
def test_certificateDirectories(
    tmp_path: Path, build: Builder, problem: str, template: str
) -> None:
    """
    A client's CA directory: every *.pem in it is read at parse time.
    """
    certs = tmp_path / "certs"
    certs.mkdir()
    target = build(tmp_path)
    (certs / "bad.pem").symlink_to(target)
    message = _error(f"[client]\nendpoint = '{template.format(certs)}'\n")
    assert "line 2: client.endpoint" in message
    assert problem in message


def _error(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        config.loads(text, "echod.toml")
    message = str(caught.value)
    oneLine(message)
    return message


def test_configOverOneMiB() -> None:
    message = _error("#" * (1024 * 1024 + 1))
    assert message == "echod.toml: the config is larger than 1 MiB"


def test_nestingWithinTheLimitIsTOMLsToJudge() -> None:
    """
    The screen only refuses what is beyond its limits: nesting up to 32
    goes on to tomllib and the schema.
    """
    message = _error("[server]\nlisten = " + "[" * 32 + "]" * 32 + "\n")
    assert "server.listen" in message and "expected" in message


def test_stringsAndCommentsAreNotNesting() -> None:
    """
    Brackets inside strings and comments do not count.
    """
    text = "[server]\n# " + "[" * 100 + "\nuser = '" + "{" * 100 + "'\n"
    assert config.loads(text).server.user == "{" * 100
    text = '[server]\nuser = """\n' + "[" * 100 + '\n"""\n'
    assert config.loads(text).server.user == "[" * 100 + "\n"


def test_validStillValid() -> None:
    """
    What the limits allow: ASCII ports, a sane backlog, a short unix path,
    stats every second or never.
    """
    loaded = config.loads(
        "[server]\nlisten = ['tcp:7007:backlog=100', 'unix:/run/echod.sock:mode=660']\n"
        "[udp]\nblocked_source_ports = ['0-1023']\n"
        "[sniff]\nstats_interval = 1\n"
    )
    assert loaded.server.listen[0] == "tcp:7007:backlog=100"
    assert config.loads("[sniff]\nstats_interval = 0\n").sniff.stats_interval == 0
