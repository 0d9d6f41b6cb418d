"""
The targets of C{[monitor]}: strings and tables parsed when the file is
loaded (each problem one line naming the file, the line and the item), and
made runnable with the table's settings filled in.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from echod import config
from echod.monitor.targets import Target, targetsOf
from tests.testing import examples


def load(text: str) -> config.Config:
    return config.loads("[monitor]\n" + text, "monitor.toml")


def problem(text: str) -> str:
    with pytest.raises(config.ConfigError) as caught:
        load(text)
    lines = caught.value.lines()
    assert len(lines) == 1, lines
    return lines[0]


class TargetStringTests:
    @pytest.mark.parametrize(
        ("text", "kind", "host", "port"),
        [
            ("echo.example:7", "tcp", "echo.example", 7),
            ("127.0.0.1:7007", "tcp", "127.0.0.1", 7007),
            ("[::1]:7007", "tcp", "::1", 7007),
            ("tcp://echo.example:7", "tcp", "echo.example", 7),
            ("udp://echo.example:7", "udp", "echo.example", 7),
            ("udp://[2001:db8::7]:7", "udp", "2001:db8::7", 7),
            ("tls://echo.example:7443", "tls", "echo.example", 7443),
            ("unix:path=/run/echod.sock", "endpoint", "", 0),
            ("tcp:host=192.0.2.1:port=7", "endpoint", "", 0),
            (r"tcp6:host=\:\:1:port=7", "endpoint", "", 0),
        ],
    )
    def test_kinds(self, text: str, kind: str, host: str, port: int) -> None:
        """
        Each form names its kind, host and port; endpoint strings are kept
        as they are.
        """
        (target,) = load(f"targets = ['{text}']").monitor.targets
        assert (target.text, target.kind, target.host, target.port) == (text, kind, host, port)

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("echo.example:0", "port 0 is not from 1 to 65535"),
            ("echo.example:70000", "port 70000 is not from 1 to 65535"),
            ("[192.0.2.1]:7", "is not an IPv6 address in brackets"),
            ("ftp://echo.example:7", "unknown scheme 'ftp'"),
            ("udp://echo.example", "expected udp://HOST:PORT"),
            ("bogus:x:y", "unknown client endpoint type 'bogus'"),
            (" echo.example:7", "without spaces"),
            ("", "expected HOST:PORT"),
        ],
    )
    def test_badStrings(self, text: str, expected: str) -> None:
        """
        A bad target string is one line naming the file, the line, the item
        and what is wrong.
        """
        line = problem(f"targets = [\n  '{text}',\n]")
        assert line.startswith(f'monitor.toml: line 2: monitor.targets[1] = "{text}": ')
        assert expected in line


class TargetTableTests:
    def test_ownSettingsAndLabels(self) -> None:
        """
        A table gives its target settings of its own and labels, sorted by
        name; the others come from the table.
        """
        loaded = load(
            "interval = 30\ntargets = [{ target = 'udp://a.example:7', count = 20, "
            "spacing = 0.5, size = 100, labels = { team = 'net', site = 'fra1' } }, 'b.example:7']"
        )
        own, plain = targetsOf(loaded.monitor)
        assert own == Target(
            name="udp://a.example:7",
            kind="udp",
            host="a.example",
            port=7,
            interval=30,
            timeout=2,
            size=100,
            count=20,
            spacing=0.5,
            verify=True,
            labels=(("site", "fra1"), ("team", "net")),
        )
        assert (plain.count, plain.size, plain.labels) == (5, 64, ())

    @pytest.mark.parametrize(
        ("item", "expected"),
        [
            ("{ count = 5 }", "a target table needs target"),
            ("{ target = 'a:1', colour = 'red' }", "unknown key 'colour'"),
            ("{ target = 'a:1', count = 0 }", "count: expected an integer from 1 to 1000"),
            ("{ target = 'a:1', labels = { target = 'x' } }", "label 'target': echod sets it"),
            ("{ target = 'a:1', labels = { '1x' = 'x' } }", "a Prometheus label name"),
            ("{ target = 'a:1', labels = { __x = 'x' } }", "not starting with __"),
            ("{ target = 'a:1', labels = { x = 1 } }", "expected a string"),
            ("{ target = 'a:1', verify = false }", "only tls:// targets"),
            ("3", "expected a target string or a table"),
        ],
    )
    def test_badTables(self, item: str, expected: str) -> None:
        line = problem(f"targets = [{item}]")
        assert line.startswith("monitor.toml: line 2: monitor.targets[1] = ")
        assert expected in line

    def test_givenTwice(self) -> None:
        """
        A target given twice would be one series: refused, naming the second.
        """
        line = problem("targets = ['a.example:7', 'b.example:7', 'a.example:7']")
        assert line == 'monitor.toml: line 2: monitor.targets[3] = "a.example:7": given twice'

    def test_roundLongerThanInterval(self) -> None:
        """
        A round that cannot end before the next is due is refused.
        """
        line = problem("interval = 1\ntargets = [{ target = 'a:1', count = 10 }]")
        assert "a round takes up to 3.8 s" in line
        assert "more than its interval of 1 s" in line

    def test_roundTripsThroughTheDocument(self) -> None:
        """
        Targets survive the JSON document (as strings or tables).
        """
        loaded = load(
            "targets = ['a:1', { target = 'tls://b:2', verify = false, labels = { s = 'x' } }]"
        )
        assert config.loadsDocument(config.dumps(loaded)) == loaded


class RunnableTargetTests:
    def test_labelsOfEndpoints(self) -> None:
        """
        An endpoint string's protocol and family labels come from its type
        and host.
        """
        loaded = load(
            "targets = ['unix:path=/run/e.sock', 'tcp:host=192.0.2.1:port=7', "
            r"'tcp6:host=\:\:1:port=7', 'tcp:host=echo.example:port=7']"
        )
        found = [(t.protocol, t.endpointFamily) for t in targetsOf(loaded.monitor)]
        assert found == [("unix", "unix"), ("tcp", "ipv4"), ("tcp", "ipv6"), ("tcp", "any")]

    @settings(max_examples=examples(200))
    @given(st.text(min_size=1, max_size=50), st.floats(0.1, 86400))
    def test_phaseWithinInterval(self, name: str, interval: float) -> None:
        """
        A target's phase is within its interval and depends on its name only.
        """
        target = Target(name, "tcp", "h", 7, interval, 1, 64, 1, 0, True, ())
        phase = target.phase()
        assert 0 <= phase < interval
        assert Target(name, "udp", "x", 8, interval, 2, 99, 3, 1, False, ()).phase() == phase


def test_readmeExampleLoads() -> None:
    """
    The example of README's monitor section is a valid file, each of its
    targets of the kind its comment says.
    """
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("## The monitor") :]
    start = section.index("```toml\n[monitor]") + len("```toml\n")
    loaded = config.loads(section[start : section.index("```", start)], "README.md")
    kinds = [t.kind for t in loaded.monitor.targets]
    assert kinds == ["tcp", "tcp", "udp", "tls", "endpoint", "udp", "tls"]
    assert loaded.monitor.targets[5].labels == (("site", "syd1"),)
    assert loaded.monitor.targets[6].verify is False
