"""
Bounded property-based fuzzing (hypothesis) of what reads untrusted input:
config loading (TOML text, command-line values), the PROXY header parser
and the sniffer's packet decoder.  Each property is what the code promises:
a config is valid or one L{ConfigError} line; C{parseProxyHeader} returns a
header or L{None} or raises L{ProxyHeaderError}; C{decodePacket} never
raises.  The example counts keep the whole module well under a minute.
"""

from __future__ import annotations

import json
import tomllib
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from echod import config
from echod.config import ConfigError
from echod.config.screen import _screen
from echod.errors import MAX_LINE
from echod.server.proxyprotocol import V2_SIGNATURE, ProxyHeader, ProxyHeaderError, parseProxyHeader
from echod.sniff.bpf import LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2, LINKTYPE_RAW
from echod.sniff.decode import PacketSummary, decodePacket, describe
from tests.testing import examples

FUZZ = settings(
    max_examples=examples(300),
    deadline=2000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    derandomize=False,
)

# Pieces of TOML and of echod's vocabulary, so that random files get past
# the first byte: table headers, keys, values of every type, brackets.
_FRAGMENTS = st.sampled_from(
    [
        "[server]\n",
        "[udp]\n",
        "[sniff]\n",
        "[client]\n",
        "[metrics]\n",
        "[log]\n",
        "[[server]]\n",
        "listen = ",
        "backlog = ",
        "user = ",
        "stats_interval = ",
        "blocked_source_ports = ",
        "endpoint = ",
        "a.b.c = ",
        '"q\\u2028" = ',
        "[",
        "]",
        "{",
        "}",
        ",",
        "=",
        ".",
        "\n",
        "#",
        '"',
        "'",
        '"""',
        "'''",
        "\\",
        "1",
        "-5",
        "1e-7",
        "0x7f",
        "nan",
        "inf",
        "true",
        "1979-05-27T07:32:00Z",
        "9" * 120,
        "'tcp:7007'",
        "'tcp:\u0668'",
        "'tcp:7:backlog=99999999999999999999'",
        "'unix:/tmp/" + "a" * 110 + "'",
        "'ssl:7443:privateKey=/dev/zero'",
        "'udp:port=7'",
        "'0-1023'",
        "\u2028",
        "\x85",
        "\x00",
    ]
)
_TOML = st.one_of(
    st.lists(_FRAGMENTS, max_size=40).map("".join),
    st.text(max_size=200),
    st.lists(st.one_of(_FRAGMENTS, st.text(max_size=5)), max_size=30).map("".join),
)


def _assertOneLine(message: str) -> None:
    assert len(message.splitlines()) == 1, repr(message)
    assert len(message) <= MAX_LINE


@FUZZ
@given(_TOML)
def test_configText(text: str) -> None:
    """
    Any text: a valid config or one line of bounded length.
    """
    try:
        loaded = config.loads(text, "fuzz.toml")
    except ConfigError as e:
        _assertOneLine(str(e))
        assert str(e).startswith("fuzz.toml")
    else:
        assert isinstance(loaded, config.Config)


_OVERRIDES = [
    ("server", "listen", st.lists(st.text(max_size=60), max_size=3)),
    ("server", "backlog", st.integers()),
    ("server", "user", st.text(max_size=30)),
    ("udp", "listen", st.lists(st.text(max_size=40), max_size=3)),
    ("udp", "blocked_source_ports", st.lists(st.one_of(st.integers(), st.text()), max_size=3)),
    ("client", "endpoint", st.text(max_size=60)),
    ("client", "port", st.integers()),
    ("client", "interval", st.one_of(st.floats(), st.integers())),
    ("sniff", "stats_interval", st.one_of(st.floats(), st.integers(min_value=-(10**400)))),
    ("metrics", "listen", st.text(max_size=60)),
]


@FUZZ
@given(st.data())
def test_commandLineValues(data: st.DataObject) -> None:
    """
    Any value given for a key from the command line: accepted, or one line.
    """
    table, key, values = data.draw(st.sampled_from(_OVERRIDES))
    value = data.draw(values)
    try:
        config.override(config.Config(), table, {key: value}, f"--{key}")
    except ConfigError as e:
        _assertOneLine(str(e))


@FUZZ
@given(st.text(max_size=40).map(lambda t: "tcp:" + t))
def test_endpointDescriptions(description: str) -> None:
    try:
        config.override(config.Config(), "server", {"listen": [description]}, "--listen")
    except ConfigError as e:
        _assertOneLine(str(e))


@FUZZ
@given(
    st.one_of(
        st.binary(max_size=300),
        st.binary(max_size=120).map(lambda b: b"PROXY " + b),
        st.binary(max_size=300).map(lambda b: V2_SIGNATURE + b),
    )
)
def test_proxyHeader(data: bytes) -> None:
    """
    parseProxyHeader: a header, None (need more), or ProxyHeaderError;
    a header never claims more bytes than it was given.
    """
    try:
        header = parseProxyHeader(data)
    except ProxyHeaderError:
        return
    assert header is None or isinstance(header, ProxyHeader)
    if header is not None:
        assert 0 < header.length <= len(data)


@FUZZ
@given(
    st.sampled_from(
        [LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2, LINKTYPE_RAW, 0, 65535]
    ),
    st.binary(max_size=400),
    st.one_of(st.none(), st.integers(min_value=0, max_value=2**32)),
)
def test_decoder(linktype: int, data: bytes, wireLength: int | None) -> None:
    """
    decodePacket never raises on junk, and never needs its own safety net
    (a "decoder error" means an exception was caught inside it).
    """
    summary = decodePacket(linktype, data, wireLength)
    assert isinstance(summary, PacketSummary)
    assert not (summary.problem or "").startswith("decoder error"), summary.problem
    assert isinstance(describe(summary), str)


# Valid TOML of every shape within echod's limits: the screen in front of
# tomllib must let all of it through (no false refusals).
_KEY = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=8
).map(lambda k: json.dumps(k, ensure_ascii=False))
_BARE_KEY = st.from_regex(r"[A-Za-z0-9_-]{1,8}", fullmatch=True)
_LEAF = st.one_of(
    st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=20),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
)
_VALUE = st.recursive(
    _LEAF,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(_BARE_KEY, inner, max_size=3)
    ),
    max_leaves=40,
)


def _keyName(key: str) -> str:
    name = json.loads(key) if key.startswith('"') else key
    assert isinstance(name, str)
    return name


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


def _dump(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_dump(v) for v in value) + "]"
    return "{" + ", ".join(f"{k} = {_dump(v)}" for k, v in value.items()) + "}"


@FUZZ
@given(
    st.lists(
        st.tuples(
            st.lists(st.one_of(_BARE_KEY, _KEY), min_size=1, max_size=config.MAX_KEY_PARTS),
            _VALUE,
        ),
        max_size=6,
        unique_by=lambda item: _keyName(item[0][0]),
    ),
    st.booleans(),
)
def test_screenLetsValidTOMLThrough(entries: list[tuple[list[str], Any]], crlf: bool) -> None:
    """
    Whatever valid TOML within the limits is, the screen passes it on: the
    result is tomllib's and the schema's (a Config or a ConfigError about a
    key or value), never a refusal by the screen.
    """
    assume(all(_depth(value) <= config.MAX_NESTING for _, value in entries))
    lines = ["# " + "[" * 40, "[server]"]
    lines += [f"{'.'.join(key)} = {_dump(value)}  # ]]" for key, value in entries]
    text = ("\r\n" if crlf else "\n").join(lines) + "\n"
    tomllib.loads(text)  # the generator makes valid TOML
    _screen(text, "fuzz.toml")
