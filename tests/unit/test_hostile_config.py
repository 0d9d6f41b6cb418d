"""
The regression corpus of issue 11: config files and values that once ended
in a traceback, a hang, gigabytes of memory, or a daemon that accepted them
and then crashed.  Each now ends in one L{ConfigError} line of bounded length
that names the file, the line and the key where they are known.

The files are built here (deep nesting by string multiplication, huge files
sparse): nothing large is kept in the repository.  C{tests/e2e/
test_hostile_input.py} runs the same corpus through C{echod check-config}.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from echod import config
from echod.config import ConfigError
from echod.errors import MAX_LINE

# (name, TOML text, what the one line must contain)
TEXTS: list[tuple[str, str, str]] = [
    (
        "nested-arrays",
        "[server]\nlisten = " + "[" * 500 + "]" * 500 + "\n",
        "line 2: server.listen: arrays and inline tables nest more than 32 deep",
    ),
    (
        "nested-inline-tables",
        "[server]\nallow = " + "{a = " * 500 + "1" + "}" * 500 + "\n",
        "line 2: server.allow: arrays and inline tables nest more than 32 deep",
    ),
    (
        "nested-arrays-multiline",
        "[udp]\nlisten = [\n" + "[\n" * 400 + "]\n" * 400 + "]\n",
        "arrays and inline tables nest more than 32 deep",
    ),
    (
        "integer-over-4300-digits",
        "[server]\nbacklog = " + "9" * 5000 + "\n",
        "line 2: server.backlog: a number or date is longer than 100 characters",
    ),
    (
        "negative-integer-over-4300-digits",
        "[sniff]\ncount = -" + "1" * 4400 + "\n",
        "line 2: sniff.count: a number or date is longer than 100 characters",
    ),
    (
        "integer-too-large-for-a-float",
        "[server]\nidle_timeout = 0x" + "f" * 98 + "\n",
        "line 2: server.idle_timeout = (an integer of about 119 digits): expected a number",
    ),
    (
        "long-number-after-plain-items",
        "[udp]\nblocked_source_ports = [\n" + "1, 'x', # c\n" * 1000 + "9" * 5000 + "]\n",
        "line 1003: udp.blocked_source_ports: a number or date is longer than 100",
    ),
    (
        "nesting-after-plain-lines",
        "[server]\n" + "a = 1\n" * 1000 + "b = [1, 2, " + "[" * 40 + "]" * 40 + "]\n",
        "line 1002: server.b: arrays and inline tables nest more than 32 deep",
    ),
    (
        "dotted-key-deep",
        "[server]\n" + "a." * 50000 + "b = 1\n",
        "line 2: server: a dotted key has more than 32 parts",
    ),
    (
        "dotted-table-header-deep",
        "[" + "a." * 50000 + "b]\n",
        "line 1: a dotted key has more than 32 parts",
    ),
    (
        "dotted-key-in-inline-table",
        "server = {" + "x." * 50000 + "y = 1}\n",
        "line 1: server: a dotted key has more than 32 parts",
    ),
    (
        "backlog-huge-in-endpoint",
        "[server]\nlisten = ['tcp:7007:backlog=99999999999999999999']\n",
        'line 2: server.listen[1] = "tcp:7007:backlog=99999999999999999999": '
        "backlog='99999999999999999999' is not a whole number from 1 to 65535",
    ),
    (
        "backlog-negative-in-endpoint",
        "[server]\nlisten = ['tcp:7007:backlog=-5']\n",
        "backlog='-5' is not a whole number from 1 to 65535",
    ),
    (
        "port-arabic-indic-digits",
        "[server]\nlisten = ['tcp:port=\u0668\u0664\u0666\u0668']\n",
        'server.listen[1] = "tcp:port=\u0668\u0664\u0666\u0668": port',
    ),
    (
        "port-fullwidth-digits-tcp6-uppercase",
        "[server]\nlisten = ['TCP6:port=\uff18\uff10']\n",
        "is not a port number from 0 to 65535",
    ),
    (
        "port-non-ascii-behind-haproxy",
        "[server]\nlisten = ['haproxy:tcp:\u0667']\n",
        "is not a port number from 0 to 65535",
    ),
    (
        "udp-port-non-ascii",
        "[udp]\nlisten = ['udp:port=\u0667\u0660\u0660\u0667']\n",
        "line 2: udp.listen[1]",
    ),
    (
        "port-range-non-ascii",
        "[udp]\nblocked_source_ports = ['\u0661-\u0662']\n",
        "line 2: udp.blocked_source_ports[1]",
    ),
    (
        "metrics-port-non-ascii",
        "[metrics]\nlisten = 'tcp:\u0669\u0661\u0660\u0667'\n",
        "line 2: metrics.listen",
    ),
    (
        "client-endpoint-non-ascii",
        "[client]\nendpoint = 'tcp:host=localhost:port=\u0667'\n",
        "line 2: client.endpoint",
    ),
    (
        "unix-mode-non-ascii",
        "[server]\nlisten = ['unix:/tmp/e.sock:mode=\u0666\u0666\u0666']\n",
        "is not an octal file mode",
    ),
    (
        "unix-path-too-long",
        "[server]\nlisten = ['unix:/tmp/" + "a" * 120 + "']\n",
        "a unix socket path must be 1 to 107 bytes",
    ),
    (
        "user-non-ascii-digits",
        "[server]\nuser = '\u0668'\n",
        "line 2: server.user",
    ),
    (
        "stats-interval-tiny",
        "[sniff]\nstats_interval = 1e-7\n",
        "line 2: sniff.stats_interval = 1e-07: expected a number of seconds: 0, or from 1",
    ),
    (
        "idle-timeout-tiny",
        "[server]\nidle_timeout = 1e-9\n",
        "line 2: server.idle_timeout",
    ),
    (
        "haproxy-prefix-repeated",
        "[server]\nlisten = ['" + "haproxy:" * 1000 + "tcp:7007']\n",
        'a PROXY listener is written with one "haproxy:" prefix, in lower case',
    ),
    (
        "sniff-filter-long",
        "[sniff]\nfilter = '" + "tcp port 1 or " * 5000 + "udp'\n",
        "line 2: sniff.filter",
    ),
    (
        "value-10-MiB",
        "[server]\nuser = '" + "x" * (900 * 1024) + "'\n",
        'line 2: server.user = "xxxx',
    ),
    (
        "line-separators-in-value",
        '[log]\nlevel = "a\\u2028b\\u0085c\\nd"\n',
        'line 2: log.level = "a\\u2028b\\x85c\\nd": expected one of',
    ),
    (
        "line-separators-in-key",
        '[server]\n"a\\u2028b\\u0085c" = 1\n',
        "server.a\\u2028b\\x85c: unknown key",
    ),
    (
        "line-separator-in-table-name",
        '["a\\u2029b"]\n',
        "unknown table [a\\u2029b]",
    ),
]


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


# (name, builder of the file in a directory, what the one line must contain)
Builder = Callable[[Path], Path]


def _fifo(directory: Path) -> Path:
    path = directory / "fifo.pem"
    os.mkfifo(path)
    return path


def _huge(directory: Path) -> Path:
    path = directory / "huge.pem"
    with open(path, "wb") as f:
        f.truncate(1024**3)  # sparse: 1 GiB that takes no disk
    return path


def _directory(directory: Path) -> Path:
    path = directory / "sub"
    path.mkdir()
    return path


def _zero(directory: Path) -> Path:
    return Path("/dev/zero")


FILES: list[tuple[str, Builder, str]] = [
    ("dev-zero", _zero, "it is a character device, not a regular file"),
    ("fifo", _fifo, "it is a FIFO, not a regular file"),
    ("huge", _huge, "it is larger than 1 MiB (1073741824 bytes)"),
    ("directory", _directory, "it is a directory, not a regular file"),
]


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


ENDPOINT_FILES = [
    ("ssl-privateKey", "ssl:7443:privateKey={}", "privateKey"),
    ("ssl-certKey", "ssl:7443:privateKey={key}:certKey={}", "certKey"),
    ("ssl-extraCertChain", "ssl:7443:privateKey={key}:extraCertChain={}", "extraCertChain"),
    ("ssl-dhParameters", "ssl:7443:privateKey={key}:dhParameters={}", "dhParameters"),
]


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
