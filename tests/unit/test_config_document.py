"""
Tests for L{echod.config.document}: a configuration as one line of JSON and
back, validated again as a file is; anything else is a L{ConfigError}.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from echod import config
from echod.config import Config, ConfigError
from tests.testing import examples

_ROUND_TRIP = settings(
    max_examples=examples(200), deadline=2000, suppress_health_check=[HealthCheck.too_slow]
)

# Values each validator gives, in the form it gives them (networks
# normalised, floats as floats): a config built of them is valid.
_STREAM_SERVERS = st.sampled_from(
    [
        config.DEFAULT_LISTEN,
        config.DEFAULT_LISTEN_IPV4,
        "tcp:port=7:interface=127.0.0.1",
        r"tcp6:port=0:interface=\:\:1",
        "unix:/run/echod.sock",
        "haproxy:tcp:port=7007",
        "systemd:domain=INET6:name=echo",
    ]
)
_DATAGRAM_SERVERS = st.sampled_from(
    ["udp:port=7007", "udp:7", "udp:port=7:interface=127.0.0.1", r"udp:port=0:interface=\:\:1"]
)
_NETWORKS = st.lists(
    st.sampled_from(["127.0.0.0/8", "::1/128", "192.0.2.0/24", "2001:db8::/32", "0.0.0.0/0"]),
    max_size=4,
)
_PORT_RANGES = st.lists(
    st.tuples(st.integers(0, 65535), st.integers(0, 65535)).map(lambda r: (min(r), max(r))),
    max_size=8,
)
# Any text, surrogates too: the command line can give them (surrogateescape).
_TEXT = st.text(st.characters(exclude_categories=()), max_size=40)


def _seconds(low: float, high: float) -> st.SearchStrategy[float]:
    return st.floats(low, high, allow_nan=False)


@st.composite
def configs(draw: st.DrawFn) -> Config:
    """
    A valid L{Config}: the defaults with a few keys of each table varied.
    """
    defaults = Config()
    server = dataclasses.replace(
        defaults.server,
        listen=tuple(draw(st.lists(_STREAM_SERVERS, min_size=1, max_size=3))),
        backlog=draw(st.integers(1, 65535)),
        idle_timeout=draw(st.just(0.0) | _seconds(0.1, 86400 * 365)),
        user=draw(st.sampled_from(["", "echod", "65534"])),
        workers=draw(st.integers(1, 256)),
        fast_paths=draw(st.booleans()),
        trusted_proxies=tuple(draw(_NETWORKS)),
        deny=tuple(draw(_NETWORKS)),
    )
    udp = dataclasses.replace(
        defaults.udp,
        listen=tuple(draw(st.lists(_DATAGRAM_SERVERS, max_size=3))),
        blocked_source_ports=tuple(draw(_PORT_RANGES)),
        source_bytes_per_second=draw(_seconds(0, 1e12)),
    )
    log = dataclasses.replace(
        defaults.log,
        format=draw(st.sampled_from(["text", "json"])),
        level=draw(st.sampled_from(["debug", "info", "warn", "error", "critical"])),
    )
    metrics = dataclasses.replace(
        defaults.metrics, listen=draw(st.sampled_from(["", "tcp:9107:interface=127.0.0.1"]))
    )
    client = dataclasses.replace(
        defaults.client,
        message=draw(_TEXT),
        count=draw(st.integers(1, 100_000_000)),
        bulk=draw(st.integers(0, 2**50)),
        json=draw(st.booleans()),
    )
    rotateBytes = draw(st.integers(0, 2**50))
    sniff = dataclasses.replace(
        defaults.sniff,
        filter=draw(_TEXT.filter(lambda text: "\0" not in text)),
        output=draw(st.sampled_from(["capture.pcap", "/var/tmp/x y"])) if rotateBytes else "-",
        rotate_bytes=rotateBytes,
        rotate_count=draw(st.integers(0, 1_000_000)) if rotateBytes else 0,
        count=draw(st.integers(0, 2**62)),
        precision=draw(st.sampled_from(["micro", "nano"])),
    )
    return Config(
        server=server,
        udp=udp,
        log=log,
        metrics=metrics,
        client=client,
        sniff=sniff,
        source=draw(st.none() | _TEXT),
    )


@_ROUND_TRIP
@given(configs())
def test_roundTrip(original: Config) -> None:
    """
    A valid configuration comes back equal, C{source} too, from one line of
    ASCII.
    """
    line = config.dumps(original)
    assert "\n" not in line
    assert line.isascii()
    loaded = config.loadsDocument(line)
    assert loaded == original
    assert loaded.source == original.source


@_ROUND_TRIP
@given(configs(), st.data())
def test_tamperedDocument(original: Config, data: st.DataObject) -> None:
    """
    A document with characters changed, cut or added is a configuration or a
    L{ConfigError}, nothing else.
    """
    line = config.dumps(original)
    start = data.draw(st.integers(0, len(line)))
    end = data.draw(st.integers(start, min(len(line), start + 20)))
    insert = data.draw(st.text(st.sampled_from('{}[]",:0123456789-.eE nulltrfas\\u'), max_size=8))
    try:
        loaded = config.loadsDocument(line[:start] + insert + line[end:])
    except ConfigError as e:
        assert e.lines()
    else:
        assert isinstance(loaded, Config)


def _document(**tables: Any) -> str:
    return json.dumps(tables)


def _error(text: str, source: str | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        config.loadsDocument(text, source)
    return str(caught.value)


class DumpsTests:
    def test_valuesAsTOMLWritesThem(self) -> None:
        """
        Lists are JSON arrays; a port range is C{N} or C{"LOW-HIGH"}, as the
        file takes it; every key of every table is there.
        """
        loaded = config.loads(
            '[udp]\nblocked_source_ports = [53, "0-1023"]\nlisten = ["udp:7"]\n', "echod.toml"
        )
        document = json.loads(config.dumps(loaded))
        assert document["source"] == "echod.toml"
        assert document["udp"]["blocked_source_ports"] == [53, "0-1023"]
        assert document["udp"]["listen"] == ["udp:7"]
        assert document["server"]["listen"] == [config.DEFAULT_LISTEN]
        for section in config.sections():
            names = {f.name for f in dataclasses.fields(section)}
            assert set(document[section.table]) == names

    def test_fileRoundTrip(self) -> None:
        """
        A configuration loaded from a file comes back equal.
        """
        loaded = config.loads(
            "[server]\nworkers = 4\nallow = ['10.0.0.0/8']\n[sniff]\n"
            "output = 'cap.pcap'\nrotate_bytes = 1000000\nrotate_count = 3\n",
            "/etc/echod/echod.toml",
        )
        assert config.loadsDocument(config.dumps(loaded)) == loaded

    def test_commandLineNotKept(self) -> None:
        """
        Which options the command line gave is not in the document.
        """
        overridden = config.override(Config(), "server", {"workers": 2}, "--workers")
        loaded = config.loadsDocument(config.dumps(overridden))
        assert loaded.server.workers == 2
        assert loaded.given == {}


class LoadsDocumentTests:
    def test_emptyObjectGivesDefaults(self) -> None:
        """
        Tables and keys left out have their defaults, as in a file.
        """
        assert config.loadsDocument("{}") == Config()
        assert config.loadsDocument("{}").source is None

    def test_notJSON(self) -> None:
        """
        Text that is not JSON is an error naming the document.
        """
        assert _error("config \x80\ufffd").startswith("<config document>: not a config document:")
        assert _error("").startswith("<config document>: not a config document:")

    @pytest.mark.parametrize("text", ["[]", "1", "null", '"server"'])
    def test_notAnObject(self, text: str) -> None:
        """
        A JSON value other than an object is not a config document.
        """
        assert "expected a JSON object" in _error(text)

    def test_badValueNamesKeyAndSource(self) -> None:
        """
        A value its validator refuses is told as in a file, by key and value,
        the document named by the file it came from.
        """
        message = _error(_document(source="/etc/echod.toml", server={"backlog": 0}))
        assert message == (
            "/etc/echod.toml: server.backlog = 0: expected an integer from 1 to 65535"
        )

    def test_sourceArgumentNamesDocument(self) -> None:
        """
        The C{source} argument names the document in errors.
        """
        message = _error(_document(server={"backlog": "1024"}), "the main process")
        assert message.startswith('the main process: server.backlog = "1024": expected')

    def test_typesAreNotCoerced(self) -> None:
        """
        A list given as a string, a port range of the wrong form, a table
        given as a value: each is refused, all of them at once.
        """
        message = _error(
            _document(
                server={"listen": config.DEFAULT_LISTEN},
                udp={"blocked_source_ports": [[0, 1023]]},
                log="debug",
            )
        )
        assert "server.listen" in message
        assert "udp.blocked_source_ports[1]" in message
        assert "expected a table [log], not a value" in message

    def test_unknownTableAndKey(self) -> None:
        """
        Unknown tables and keys are errors, as in a file.
        """
        message = _error(_document(servre={}, server={"listne": []}))
        assert "unknown table [servre] (did you mean server?" in message
        assert "server.listne: unknown key (did you mean listen?" in message

    def test_rulesAcrossKeys(self) -> None:
        """
        The rules across keys hold too: rotate_count needs rotate_bytes;
        something must listen.
        """
        message = _error(_document(sniff={"rotate_count": 2}))
        assert (
            "sniff.rotate_count = 2: needs sniff.rotate_bytes or sniff.rotate_seconds too"
            in message
        )
        message = _error(_document(server={"listen": []}))
        assert "nothing to listen on" in message

    def test_endpointsCheckedAgain(self) -> None:
        """
        Endpoint strings are parsed again, as in a file.
        """
        message = _error(_document(server={"listen": ["tcp:port=99999"]}))
        assert "server.listen[1]" in message
        assert "not a port number" in message

    @pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
    def test_nonNumbersRefused(self, constant: str) -> None:
        """
        JSON's non-standard constants are not values.
        """
        text = '{"server": {"idle_timeout": ' + constant + "}}"
        assert f"{constant} is not a value of TOML" in _error(text)

    def test_hugeNumbersRefused(self) -> None:
        """
        An integer too long for Python to read, or too large for its key, is
        an error, not an exception of Python's own.
        """
        assert "not a config document" in _error('{"server": {"backlog": ' + "9" * 5000 + "}}")
        assert "integer of about" in _error('{"server": {"backlog": ' + "9" * 4000 + "}}")
        assert "expected a number" in _error('{"server": {"idle_timeout": 1e400}}')

    def test_deepNestingRefused(self) -> None:
        """
        Arrays nested far too deep are an error, not a RecursionError.
        """
        text = '{"server": {"listen": ' + "[" * 200_000 + "]" * 200_000 + "}}"
        assert "not a config document" in _error(text)

    def test_keyGivenTwice(self) -> None:
        """
        A key given twice is refused rather than one of them chosen.
        """
        message = _error('{"server": {"workers": 1, "workers": 8}}')
        assert 'the key "workers" is given twice' in message

    def test_sourceMustBeText(self) -> None:
        """
        C{source} is the name of a file, or null.
        """
        message = _error(_document(source=7))
        assert "source = 7: expected the name of a file, or null" in message
