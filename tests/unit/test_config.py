"""
Tests for L{echod.config}: defaults, strict validation, one-line errors that
name the file, line, key and value.
"""

from __future__ import annotations

import dataclasses
import json
import time
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
            "known: server, udp, log, metrics, client, sniff, monitor)"
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
            "--listen = \"tcp:x\": port 'x' is not a port number from 0 to 65535"
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


def errors(text: str) -> list[str]:
    """
    Every problem of a config text, one line each.
    """
    with pytest.raises(ConfigError) as caught:
        config.loads(text, "echod.toml")
    lines = str(caught.value).split("\n")
    assert lines == caught.value.lines()
    assert all(0 < len(line) <= MAX_LINE for line in lines)
    return lines


class EveryProblemAtOnceTests:
    """
    A file's problems are told together, in the order of its lines: a user
    fixes them in one go, not one run each.
    """

    def test_unknownTablesKeysAndValuesInFileOrder(self) -> None:
        lines = errors(
            "[log]\n"
            'format = "xml"\n'
            "[server]\n"
            'listen = ["tcp:7007", "tcp:port=70000"]\n'
            "bakclog = 5\n"
            'idle_timeout = "5m"\n'
            "[metric]\n"
            'listen = "tcp:9107"\n'
        )
        assert lines == [
            'echod.toml: line 2: log.format = "xml": expected one of "text", "json"',
            'echod.toml: line 4: server.listen[2] = "tcp:port=70000": '
            "port '70000' is not a port number from 0 to 65535",
            "echod.toml: line 5: server.bakclog: unknown key (did you mean backlog? known: "
            + ", ".join(f.name for f in dataclasses.fields(config.ServerConfig))
            + ")",
            'echod.toml: line 6: server.idle_timeout = "5m": '
            "expected a number of seconds: 0, or from 0.1 to 31536000",
            "echod.toml: line 7: unknown table [metric] (did you mean metrics? known: "
            "server, udp, log, metrics, client, sniff, monitor)",
        ]

    def test_oneProblemPerKey(self) -> None:
        """
        A list with several bad items is one problem, its first bad item.
        """
        lines = errors('[server]\nlisten = ["tcp:x", "tcp:y"]\ndeny = ["10.0.0.1/8"]\n')
        assert [line.split(": ")[2].split(" = ")[0] for line in lines] == [
            "server.listen[1]",
            "server.deny[1]",
        ]

    def test_crossKeyRulesAfterEachKeyIsRight(self) -> None:
        """
        The rules between keys are checked once every key is valid on its own
        (they would be about values that are wrong anyway); then each rule
        broken is told, with the line of its key.
        """
        text = "[sniff]\nrotate_count = 3\npromiscuous = true\nsnaplen = 1\n"
        assert errors(text) == [
            "echod.toml: line 4: sniff.snaplen = 1: expected an integer of bytes from 64 to 262144"
        ]
        assert errors(text.replace("snaplen = 1", "snaplen = 64")) == [
            "echod.toml: line 2: sniff.rotate_count = 3: "
            "needs sniff.rotate_bytes or sniff.rotate_seconds too "
            "(files rotate by size or by time)",
            'echod.toml: line 3: sniff.promiscuous = true: needs one interface, not "any"',
        ]

    def test_crossKeyRulesOfSeveralTables(self) -> None:
        lines = errors(
            "[server]\nworkers = 2\n"
            'listen = ["ssl:7443:privateKey=/nonexistent", "tcp:7007"]\n'
            "[sniff]\nrotate_bytes = 1000\n"
        )
        assert len(lines) == 1, lines
        assert "privateKey='/nonexistent'" in lines[0]
        lines = errors("[server]\nlisten = []\n[sniff]\nrotate_bytes = 1000\n")
        assert lines == [
            "echod.toml: line 4: sniff.rotate_bytes = 1000: "
            "needs sniff.output to name a file (stdout cannot rotate)",
            "echod.toml: nothing to listen on: server.listen and udp.listen are both empty",
        ]

    def test_atMostTwentyThenACount(self) -> None:
        text = "[server]\n" + "".join(f"k{n} = 1\n" for n in range(30))
        lines = errors(text)
        assert len(lines) == config.MAX_PROBLEMS + 1
        assert lines[0].startswith("echod.toml: line 2: server.k0: unknown key (")
        assert lines[19].startswith("echod.toml: line 21: server.k19: unknown key (")
        assert lines[-1] == "... and 10 more"

    def test_manyUnknownKeysStayQuick(self) -> None:
        """
        Tens of thousands of unknown keys cost no more than reading them.
        """
        text = "[server]\n" + "".join(f"key{n} = 1\n" for n in range(50000))
        started = time.monotonic()
        lines = errors(text)
        assert time.monotonic() - started < 5
        assert lines[-1] == "... and 49980 more"

    def test_syntaxErrorStopsAtTheFirst(self) -> None:
        """
        TOML cannot be read past a syntax error: that one is told alone.
        """
        lines = errors('[server]\nbakclog = 5\nbacklog = = 3\n[log]\nformat = "xml"\n')
        assert len(lines) == 1
        assert lines[0].startswith("echod.toml: line 3: invalid TOML at column")

    def test_oneProblemIsOneLine(self) -> None:
        """
        A single problem is the same one-line error as ever: its attributes
        are its own, L{ConfigError.problems} holds just it.
        """
        with pytest.raises(ConfigError) as caught:
            config.loads('[log]\nformat = "xml"\n', "echod.toml")
        assert caught.value.problems == (caught.value,)
        assert (caught.value.line, caught.value.key) == (2, "log.format")

    def test_combinedKeepsTheFirstsAttributes(self) -> None:
        combined = ConfigError.combine(
            [ConfigError("a", line=1, key="x"), ConfigError("b", line=2, key="y")]
        )
        assert (combined.problem, combined.line, combined.key) == ("a", 1, "x")
        assert str(combined) == "line 1: x: a\nline 2: y: b"


class ClientEndpointTests:
    """
    The client's endpoint strings: Twisted's types, and echod's C{tcp6:}.
    """

    def endpoint(self, description: str) -> str:
        text = "[client]\nendpoint = " + json.dumps(description) + "\n"
        return config.loads(text).client.endpoint

    def problem(self, description: str) -> str:
        with pytest.raises(ConfigError) as caught:
            self.endpoint(description)
        return caught.value.problem

    def test_tcp6Accepted(self) -> None:
        for description in (
            r"tcp6:host=\:\:1:port=7007",
            r"tcp6:\:\:1:7007",
            r"TCP6:host=2001\:db8\:\:1:port=7:timeout=3",
            r"tcp6:host=\:\:1:port=7:bindAddress=\:\:1",
        ):
            assert self.endpoint(description) == description
        assert config.tcp6ClientParameters(r"tcp6:host=\:\:1:port=7:timeout=3") == (
            "::1",
            7,
            3.0,
            None,
        )

    @pytest.mark.parametrize(
        ("description", "problem"),
        [
            (
                "tcp6:host=::1:port=7007",
                r"write the colons of an IPv6 address as \:, such as tcp6:host=\:\:1:port=7007",
            ),
            (
                "tcp6:host=127.0.0.1:port=7",
                "host '127.0.0.1' is not an IPv6 address (use tcp: for it)",
            ),
            ("tcp6:host=localhost:port=7", "host 'localhost' is not an IPv6 address (for a host"),
            (r"tcp6:host=\:\:1:port=70000", "port '70000' is not a port number from 0 to 65535"),
            ("tcp6:port=7", r"a tcp6: endpoint needs host=IPV6ADDRESS and port=N"),
            (r"tcp6:host=\:\:1", "a tcp6: endpoint needs host=IPV6ADDRESS and port=N"),
            (r"tcp6:host=\:\:1:port=7:mode=1", "a tcp6: endpoint takes host, port, timeout and"),
        ],
    )
    def test_tcp6Refused(self, description: str, problem: str) -> None:
        assert self.problem(description).startswith(problem)

    def test_unknownTypeListsTheTypes(self) -> None:
        """
        An unknown type is told with the types this installation has:
        Twisted's, tcp6: and those of Twisted's endpoint plugins.
        """
        assert config.clientEndpointTypes()[:4] == ["tcp", "tcp6", "ssl", "unix"]
        assert "tls" in config.clientEndpointTypes()
        assert self.problem("sctp:host=x:port=7") == (
            "unknown client endpoint type 'sctp': the types here are "
            + ", ".join(f"{kind}:" for kind in config.clientEndpointTypes())
        )
