"""
The regression corpus of issue 11: hostile config texts, config files of
every kind but a regular one, and the endpoint-string parameters that name
files.  tests/unit/test_hostile_config.py loads them in-process,
tests/e2e/test_hostile_input.py runs them through C{echod check-config}.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

__all__ = ["ENDPOINT_FILES", "FILES", "TEXTS", "Builder"]

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


ENDPOINT_FILES = [
    ("ssl-privateKey", "ssl:7443:privateKey={}", "privateKey"),
    ("ssl-certKey", "ssl:7443:privateKey={key}:certKey={}", "certKey"),
    ("ssl-extraCertChain", "ssl:7443:privateKey={key}:extraCertChain={}", "extraCertChain"),
    ("ssl-dhParameters", "ssl:7443:privateKey={key}:dhParameters={}", "dhParameters"),
]
