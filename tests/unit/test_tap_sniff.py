"""
C{twistd echod-sniff}'s options: the [sniff] table, overridden by the
command line, checked (values, interface, filter) before anything opens.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import pytest
from twisted.application.service import IServiceMaker
from twisted.logger import LogLevel
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from echod.app import EchodService
from echod.config import ConfigError
from echod.sniff.bpf import FilterError
from echod.sniff.service import SniffService
from echod.sniff.sinks import OutputError
from echod.sniff.source import UnknownInterfaceError
from echod.tap import sniff
from tests.reactortesting import EchodMemoryReactor


def parse(*argv: str) -> sniff.Options:
    options = sniff.Options()
    options.parseOptions(list(argv))
    return options


class OptionsTests(SynchronousTestCase):
    def configFile(self, text: str) -> str:
        directory = Path(tempfile.mkdtemp(prefix="echod-tap-"))
        self.addCleanup(shutil.rmtree, directory, True)
        path = directory / "echod.toml"
        path.write_text(text)
        return str(path)

    def test_defaults(self) -> None:
        """
        With no options: every interface, no filter, text on stdout.
        """
        config = parse().config.sniff
        assert (config.interface, config.filter, config.format, config.output) == (
            "any",
            "",
            "text",
            "-",
        )
        assert (config.snaplen, config.count, config.promiscuous) == (262144, 0, False)

    def test_options(self) -> None:
        config = parse(
            "--interface",
            "lo",
            "--filter",
            "tcp port 7007",
            "--format",
            "pcap",
            "--output",
            "/tmp/x.pcap",
            "--snaplen",
            "96",
            "--count",
            "5",
            "--rotate-bytes",
            "1000000",
            "--rotate-count",
            "3",
            "--stats-interval",
            "2.5",
            "--buffer-bytes",
            "4194304",
            "--precision",
            "nano",
            "--promiscuous",
        ).config.sniff
        assert config.interface == "lo"
        assert config.filter == "tcp port 7007"
        assert (config.format, config.output) == ("pcap", "/tmp/x.pcap")
        assert (config.snaplen, config.count) == (96, 5)
        assert (config.rotate_bytes, config.rotate_count) == (1_000_000, 3)
        assert (config.stats_interval, config.buffer_bytes) == (2.5, 4194304)
        assert (config.precision, config.promiscuous) == ("nano", True)

    def test_shortOptions(self) -> None:
        config = parse("-i", "lo", "-f", "udp", "-s", "128", "-o", "-", "-p").config.sniff
        assert (config.interface, config.filter, config.snaplen, config.promiscuous) == (
            "lo",
            "udp",
            128,
            True,
        )

    def test_configFile(self) -> None:
        """
        The [sniff] table gives the values; options override them.
        """
        path = self.configFile(
            '[sniff]\ninterface = "lo"\nfilter = "udp"\nformat = "json"\ncount = 9\n'
        )
        config = parse("--config", path, "--count", "3").config.sniff
        assert (config.interface, config.filter, config.format, config.count) == (
            "lo",
            "udp",
            "json",
            3,
        )

    def test_badValue(self) -> None:
        """
        A value out of range is one line naming the option.
        """
        with pytest.raises(ConfigError) as caught:
            parse("--snaplen", "10")
        assert str(caught.value) == (
            "--snaplen = 10: expected an integer of bytes from 64 to 262144"
        )

    def test_badFormat(self) -> None:
        with pytest.raises(ConfigError, match='expected one of "text", "json", "pcap"'):
            parse("--format", "xml")

    def test_notANumber(self) -> None:
        with pytest.raises(usage.UsageError):
            parse("--count", "many")

    def test_badFilter(self) -> None:
        """
        A filter libpcap cannot compile is refused with libpcap's message.
        """
        with pytest.raises(FilterError) as caught:
            parse("--interface", "lo", "--filter", "tcp port sevenn")
        assert str(caught.value) == "bad filter 'tcp port sevenn': unknown port 'sevenn'"

    def test_unknownInterface(self) -> None:
        with pytest.raises(UnknownInterfaceError, match="no interface named 'nosuch0'"):
            parse("--interface", "nosuch0")

    def test_badInterfaceName(self) -> None:
        with pytest.raises(ConfigError, match="expected an interface name"):
            parse("--interface", "a/b")

    def test_rotateCountAlone(self) -> None:
        with pytest.raises(ConfigError, match=r"needs --rotate-bytes or --rotate-seconds too"):
            parse("--rotate-count", "3", "--output", "x.pcap")

    def test_rotateCountNamedAsTyped(self) -> None:
        """
        A value from the command line is named by the option as the user
        typed it, and so is the key the rule needs, which the user did not
        give.
        """
        for argv, message in (
            (["-W", "3"], "-W = 3: needs -C or -G too (files rotate by size or by time)"),
            (["-W3"], "-W = 3: needs -C or -G too (files rotate by size or by time)"),
            (
                ["--rotate-count", "3"],
                "--rotate-count = 3: needs --rotate-bytes or --rotate-seconds too "
                "(files rotate by size or by time)",
            ),
            (
                ["--rotate-c=3"],
                "--rotate-count = 3: needs --rotate-bytes or --rotate-seconds too "
                "(files rotate by size or by time)",
            ),
            (
                ["-o", "-", "--rotate-bytes", "100"],
                "--rotate-bytes = 100: needs -o to name a file (stdout cannot rotate)",
            ),
            (["-s", "10"], "-s = 10: expected an integer of bytes from 64 to 262144"),
            (["-p"], '-p = true: needs one interface, not "any"'),
        ):
            with pytest.raises(ConfigError) as caught:
                parse(*argv)
            assert str(caught.value) == message

    def test_fileValuesNamedByFileLineAndKey(self) -> None:
        """
        A value from the file keeps the file, line and key form; a rule
        broken by an option names the file's key as the file has it.
        """
        path = self.configFile('[sniff]\noutput = "-"\nrotate_count = 3\n')
        with pytest.raises(ConfigError) as caught:
            parse("--config", path)
        assert str(caught.value) == (
            f"{path}: line 3: sniff.rotate_count = 3: "
            "needs sniff.rotate_bytes or sniff.rotate_seconds too (files rotate by size or by time)"
        )
        path = self.configFile('[sniff]\noutput = "-"\n')
        with pytest.raises(ConfigError) as caught:
            parse("--config", path, "-C", "100")
        assert str(caught.value) == (
            "-C = 100: needs sniff.output to name a file (stdout cannot rotate)"
        )

    def test_notANumberNamedAsTyped(self) -> None:
        with pytest.raises(usage.UsageError) as caught:
            parse("-B", "lots")
        assert str(caught.value) == "-B: 'lots' is not a whole number in ASCII digits"

    def test_rotateStdout(self) -> None:
        with pytest.raises(ConfigError, match="stdout cannot rotate"):
            parse("--rotate-bytes", "1000")

    def test_promiscuousAny(self) -> None:
        with pytest.raises(ConfigError, match='needs one interface, not "any"'):
            parse("--promiscuous")

    def test_outputDirectory(self) -> None:
        """
        An output in a directory that does not exist is refused at once.
        """
        with pytest.raises(OutputError) as caught:
            parse("--output", "/nonexistent/dir/x.pcap")
        assert str(caught.value) == (
            "cannot write /nonexistent/dir/x.pcap: no directory /nonexistent/dir"
        )
        with pytest.raises(OutputError, match="it is a directory"):
            parse("--output", tempfile.gettempdir())

    def test_daemonStdout(self) -> None:
        """
        A daemon has no standard output: packets must go to a file.
        """
        options = sniff.Options()
        options.parent = {"nodaemon": False}  # type: ignore[assignment]
        with pytest.raises(OutputError, match="run twistd with --nodaemon"):
            options.parseOptions(["--interface", "lo"])
        options = sniff.Options()
        options.parent = {"nodaemon": False}  # type: ignore[assignment]
        options.parseOptions(["--interface", "lo", "--output", "/tmp/x.txt"])

    def test_errorsAreOneLine(self) -> None:
        """
        Parsing installs the hook that prints a L{UserError} as one line.
        """
        parse()
        assert getattr(sys.excepthook, "_echodHook", False)


class MakeServiceTests(SynchronousTestCase):
    def test_tree(self) -> None:
        """
        The service tree is echod's root with one standalone sniffer; nothing
        is opened while it is assembled.
        """
        options = parse("--interface", "lo")
        root = sniff.makeService(options, EchodMemoryReactor())
        assert isinstance(root, EchodService)
        child = root.getServiceNamed("sniff")
        assert isinstance(child, SniffService)
        assert child.standalone
        assert child.reader.info is None


def test_logToStderr(capsys: pytest.CaptureFixture[str]) -> None:
    """
    When packets go to standard output, twistd's log (which would go there
    too under --nodaemon) goes to standard error instead.
    """
    options = parse("--interface", "lo")
    options.parent = {"nodaemon": True, "logfile": None}  # type: ignore[assignment]
    root = sniff.makeService(options, EchodMemoryReactor())
    assert isinstance(root, EchodService)
    assert root.logObserver is not None
    root.logObserver(
        {
            "log_format": "hello from the log",
            "log_time": 0.0,
            "log_level": LogLevel.info,
            "log_namespace": "test",
        }
    )
    captured = capsys.readouterr()
    assert "hello from the log" in captured.err
    assert "hello from the log" not in captured.out


def test_logToFile() -> None:
    """
    With an output file, the log goes where twistd says (stdout here).
    """
    options = parse("--interface", "lo", "--output", "/tmp/never-opened.txt")
    options.parent = {"nodaemon": True, "logfile": None}  # type: ignore[assignment]
    root = sniff.makeService(options, EchodMemoryReactor())
    assert isinstance(root, EchodService)
    assert root.logObserver is not None
    assert type(root.logObserver).__name__ == "EchodLogObserver"


def test_plugin() -> None:
    """
    twistd finds echod-sniff, and it leads to this module.
    """
    makers = {m.tapname: m for m in getPlugins(IServiceMaker)}
    maker = makers["echod-sniff"]
    assert verifyObject(IServiceMaker, maker)
    assert maker.options is sniff.Options
