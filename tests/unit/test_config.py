"""
Tests for L{echod.config}: defaults, strict validation, one-line errors that
name the file, line, key and value.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from echod import config
from echod.config import ConfigError
from echod.errors import MAX_LINE


def error(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        config.loads(text, "echod.toml")
    message = str(caught.value)
    assert "\n" not in message
    return message


class ConfigDefaultsTests:
    def test_emptyTextGivesDefaults(self) -> None:
        """
        An empty file is valid: every key has a default.
        """
        assert config.loads("") == config.Config()

    def test_noFileGivesDefaults(self) -> None:
        """
        No file at all gives the embedded defaults, listening dual-stack on 7007.
        """
        loaded = config.load(None)
        assert loaded.source is None
        assert loaded.server.listen == (r"tcp6:port=7007:interface=\:\:",)

    def test_sectionsCanBeGivenPartially(self) -> None:
        """
        Keys left out of a table keep their defaults.
        """
        loaded = config.loads("[server]\nidle_timeout = 5\n")
        assert loaded.server.idle_timeout == 5.0
        assert loaded.server.backlog == 1024

    def test_integerAcceptedForFloat(self) -> None:
        """
        A duration may be written as an integer; it becomes a float.
        """
        loaded = config.loads("[server]\nshutdown_timeout = 3\n")
        assert isinstance(loaded.server.shutdown_timeout, float)


class ConfigErrorTests:
    def test_unknownTable(self) -> None:
        """
        An unknown table is named, with the closest known one.
        """
        assert error("[serer]\n") == (
            "echod.toml: line 1: unknown table [serer] (did you mean server? "
            "known: server, udp, log, metrics, client, sniff)"
        )

    def test_unknownKey(self) -> None:
        """
        An unknown key is named with its table and line, and a suggestion.
        """
        message = error("[server]\n\nbakclog = 5\n")
        assert message.startswith(
            "echod.toml: line 3: server.bakclog: unknown key (did you mean backlog?"
        )

    def test_wrongType(self) -> None:
        """
        A string is not coerced to an integer.
        """
        assert error('[server]\nbacklog = "100"\n') == (
            'echod.toml: line 2: server.backlog = "100": expected an integer from 1 to 65535'
        )

    def test_boolIsNotANumber(self) -> None:
        """
        TOML booleans are not numbers, though Python's are.
        """
        assert "expected a number of seconds" in error("[server]\nidle_timeout = true\n")

    def test_outOfRange(self) -> None:
        assert "server.backlog = 0: expected an integer from 1 to 65535" in error(
            "[server]\nbacklog = 0\n"
        )

    def test_badChoice(self) -> None:
        assert error('[log]\nformat = "xml"\n') == (
            'echod.toml: line 2: log.format = "xml": expected one of "text", "json"'
        )

    def test_syntaxError(self) -> None:
        """
        A TOML syntax error names its line and column.
        """
        message = error("[server]\nbacklog = = 3\n")
        assert message.startswith("echod.toml: line 2: invalid TOML at column")

    def test_syntaxErrorAtEnd(self) -> None:
        assert error("[server]\nbacklog =").startswith("echod.toml: line 2: invalid TOML")

    def test_valueWhereTableExpected(self) -> None:
        assert "expected a table [server], not a value" in error("server = 3\n")

    def test_badEndpointNamesItem(self) -> None:
        """
        A bad endpoint string is named by its position in the list.
        """
        message = error('[server]\nlisten = ["tcp:7007", "tcp:port=abc"]\n')
        assert message == (
            'echod.toml: line 2: server.listen[2] = "tcp:port=abc": '
            "port 'abc' is not a port number from 0 to 65535"
        )

    @pytest.mark.parametrize(
        "description, problem",
        [
            ("tcp6:port=99999", "is not a port number"),
            ("bogus:7", "Unknown endpoint type: 'bogus'"),
            ("tcp:7:colour=blue", "not a valid Twisted server endpoint"),
            (r"tcp:7:interface=\:\:1", "is not an IPv4 address (use tcp6: for it)"),
            ("tcp6:7:interface=127.0.0.1", "is not an IPv6 address (use tcp: for it)"),
            ("unix:", "needs a path"),
            ("systemd:name=echo", "needs domain=INET, INET6 or UNIX"),
            ("ssl:port=7443:privateKey=/nonexistent.pem", "No such file"),
        ],
    )
    def test_endpointProblems(self, description: str, problem: str) -> None:
        """
        Endpoint strings are checked the way Twisted parses them, plus what
        Twisted only finds out when listening.
        """
        escaped = description.replace("\\", "\\\\")
        assert problem in error(f'[server]\nlisten = ["{escaped}"]\n')

    def test_cidrHostBits(self) -> None:
        assert "host bits are set; the network is 10.0.0.0/8" in error(
            '[server]\nallow = ["10.0.0.1/8"]\n'
        )

    def test_nothingToListenOn(self) -> None:
        assert "nothing to listen on" in error("[server]\nlisten = []\n")

    def test_missingFile(self, tmp_path: Path) -> None:
        path = tmp_path / "absent.toml"
        with pytest.raises(ConfigError) as caught:
            config.load(str(path))
        assert (
            str(caught.value) == f"{path}: cannot read the config file: No such file or directory"
        )

    def test_notUTF8(self, tmp_path: Path) -> None:
        path = tmp_path / "latin1.toml"
        path.write_bytes(b"# caf\xe9\n")
        with pytest.raises(ConfigError, match="not UTF-8 text"):
            config.load(str(path))


class EndpointTests:
    def test_backlogAdded(self) -> None:
        """
        Listeners that take a backlog and name none get the configured one.
        """
        assert config.withBacklog("tcp:7007", 512) == "tcp:7007:backlog=512"
        assert config.withBacklog("unix:/run/e.sock", 9) == "unix:/run/e.sock:backlog=9"
        assert config.withBacklog("haproxy:tcp6:7007", 9) == "haproxy:tcp6:7007:backlog=9"

    def test_backlogKept(self) -> None:
        assert config.withBacklog("tcp:7007:backlog=5", 512) == "tcp:7007:backlog=5"
        assert config.withBacklog("systemd:domain=INET6:name=e", 5) == "systemd:domain=INET6:name=e"

    def test_datagramEndpoint(self) -> None:
        assert config.parseDatagramEndpoint("udp:port=7") == config.DatagramEndpoint(7, "::")
        parsed = config.parseDatagramEndpoint("udp:7:interface=127.0.0.1")
        assert parsed == config.DatagramEndpoint(7, "127.0.0.1")

    def test_datagramEndpointErrors(self) -> None:
        message = error('[udp]\nlisten = ["udp:port=7:colour=red"]\n')
        assert 'udp.listen[1] = "udp:port=7:colour=red"' in message


class OverrideTests:
    def test_overrideReplaces(self) -> None:
        updated = config.override(config.Config(), "server", {"listen": ["tcp:0"]}, "--listen")
        assert updated.server.listen == ("tcp:0",)

    def test_overrideErrorNamesOption(self) -> None:
        """
        A bad value from the command line is reported against the option.
        """
        with pytest.raises(ConfigError) as caught:
            config.override(config.Config(), "server", {"listen": ["tcp:x"]}, "--listen")
        assert str(caught.value) == (
            "command line: --listen = \"tcp:x\": port 'x' is not a port number from 0 to 65535"
        )


class InheritedSocketTests:
    def test_systemdSocketMissing(self) -> None:
        """
        A systemd: listener whose socket was not passed is a config error
        naming the socket, not a KeyError.
        """
        loaded = config.loads('[server]\nlisten = ["systemd:domain=INET6:name=nosuch"]\n', "e.toml")
        with pytest.raises(ConfigError) as caught:
            config.checkInheritedSockets(loaded)
        assert "systemd passed no socket nosuch" in str(caught.value)
        assert "server.listen[1]" in str(caught.value)


class BoundedMessageTests:
    def test_valueShortenedAndEscaped(self) -> None:
        """
        A value is quoted as at most 80 characters, escaped, with its length
        when it was cut.
        """
        message = error('[log]\nlevel = "' + "\\u2028" * 500 + '"\n')
        assert message == (
            'echod.toml: line 2: log.level = "' + "\\u2028" * 13 + '\u2026" (500 characters): '
            'expected one of "debug", "info", "warn", "error", "critical"'
        )

    def test_hugeIntegerShownBySize(self) -> None:
        """
        str() of an integer over 4,300 digits raises: it is described.
        """
        with pytest.raises(ConfigError) as caught:
            config.override(config.Config(), "server", {"backlog": 10**5000}, "--backlog")
        assert "--backlog = (an integer of about 5001 digits): expected an integer" in str(
            caught.value
        )

    def test_everyPartLongAtOnce(self) -> None:
        """
        A long file name, key, value and problem together still make one
        line of at most MAX_LINE characters.
        """
        error = ConfigError(
            "p" * 5000, source="/" + "s" * 5000, line=3, key="k" * 5000, value=["v" * 5000] * 50
        )
        message = str(error)
        assert len(message) <= MAX_LINE and "\n" not in message
        assert message.startswith("\u2026" + "s" * 100)
