"""
C{echod-sniff}'s command line: tcpdump's options with tcpdump's meanings,
the expression after them, the config file under them, one line per mistake.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from twisted.logger import LogLevel
from twisted.python import usage

from echod.config.errors import ConfigError
from echod.sniff.bpf import FilterError
from echod.sniff.source import CapturePermissionError, UnknownInterfaceError
from echod.tap.sniffcommand import (
    ExitStatus,
    Messages,
    Options,
    SniffCommand,
    _exitStatus,
    linktypeText,
    listInterfaces,
    main,
)


def parse(*argv: str) -> SniffCommand:
    options = Options()
    options.parseOptions(list(argv))
    return options.command


def test_tcpdumpHabits() -> None:
    """
    -i, -c, -s, -B (KiB), -C (millions of bytes), -W, -G, -w and the
    expression as trailing arguments, before or after the options.
    """
    command = parse(
        "-i", "lo", "-c", "5", "-s", "96", "-B", "4096", "-w", "cap", "-C", "2", "-W", "3", "tcp"
    )
    sniff = command.config.sniff
    assert (sniff.interface, sniff.count, sniff.snaplen) == ("lo", 5, 96)
    assert sniff.buffer_bytes == 4096 * 1024
    assert (sniff.output, sniff.format) == ("cap", "pcap")
    assert (sniff.rotate_bytes, sniff.rotate_count) == (2_000_000, 3)
    assert sniff.filter == "tcp"
    after = parse("tcp", "port", "7", "-c5", "-ilo").config.sniff
    assert (after.filter, after.count, after.interface) == ("tcp port 7", 5, "lo")
    assert parse("-G", "60", "-w", "cap-%H%M%S.pcap").config.sniff.rotate_seconds == 60.0


def test_defaults() -> None:
    """
    Without options: every interface, text on standard output, no periodic
    statistics (tcpdump prints its counters at the end), promiscuous mode
    only where there is one interface to put in it, unless -p.
    """
    sniff = parse().config.sniff
    assert (sniff.interface, sniff.format, sniff.output) == ("any", "text", "-")
    assert sniff.stats_interval == 0
    assert sniff.promiscuous is False
    assert sniff.snaplen == 262144
    assert parse("-i", "lo").config.sniff.promiscuous is True
    assert parse("-i", "lo", "-p").config.sniff.promiscuous is False
    assert parse("-s", "0").config.sniff.snaplen == 262144


def test_countedFlags() -> None:
    """
    -X, -XX, -x, -A, -e, -q, -v..., -t... as tcpdump counts them, clustered
    or not, into the text style; -n, -N, -U, -l, -S and -f are accepted.
    """
    text = parse("-nnvvvXXe", "-tt", "-q", "-U", "-l", "-N", "-S").text
    assert (text.dump, text.dumpLinkHeader, text.verbose, text.timestamps) == (
        "hex-ascii",
        True,
        True,
        "epoch",
    )
    assert text.linkHeader and text.quiet and text.tcpdumpLayout
    assert (parse("-x", "-A").text.dump, parse("-x", "-A").text.dumpLinkHeader) == ("hex", False)
    assert parse("-A").text.dump == "ascii"
    assert parse("--nano").text.nanoseconds
    assert parse().text.timestamps == "time"
    with pytest.raises(usage.UsageError, match="only -t, -tt, -ttt, -tttt and -ttttt"):
        parse("-tttttt")
    assert parse("--time-stamp-precision=nano").config.sniff.precision == "nano"


def test_formats(tmp_path: Path) -> None:
    """
    -w writes pcap unless --format says pcapng (or json, text); --json is
    --format json; the config file's format holds unless -w or --format.
    """
    assert parse("-w", "x").config.sniff.format == "pcap"
    assert parse("-w", "x", "--format", "pcapng").config.sniff.format == "pcapng"
    assert parse("--json").config.sniff.format == "json"
    assert parse("-w", "x.json", "--json").config.sniff.format == "json"
    with pytest.raises(usage.UsageError, match="--json and --format pcap exclude each other"):
        parse("--json", "--format", "pcap")
    config = tmp_path / "echod.toml"
    config.write_text('[sniff]\nformat = "json"\ninterface = "lo"\nstats_interval = 5\n')
    sniff = parse("--config", str(config)).config.sniff
    assert (sniff.format, sniff.interface, sniff.stats_interval) == ("json", "lo", 5)
    assert parse("--config", str(config), "-i", "any").config.sniff.interface == "any"


def test_filterFile(tmp_path: Path) -> None:
    """
    -F reads the expression from a file (comments removed); with an
    expression on the command line too it is an error, not tcpdump's
    silent choice.
    """
    path = tmp_path / "filter"
    path.write_text("tcp port 7   # echo\nor udp port 7\n")
    assert parse("-F", str(path)).config.sniff.filter == "tcp port 7 or udp port 7"
    with pytest.raises(usage.UsageError, match="-F and an expression"):
        parse("-F", str(path), "icmp")
    with pytest.raises(usage.UsageError, match=r"-F: cannot read .*: no such file"):
        parse("-F", str(tmp_path / "none"))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-c", "x"], "-c: 'x' is not a whole number"),
        (["-c", "0"], "-c: 0 is not from 1 to 4611686018427387904"),
        (["-c", "٣"], "-c: '٣' is not a whole number"),
        (["-s", "999999"], "-s: 999999 is not from 0 to 262144"),
        (["-B", "1"], "-B: 1 is not from 64 to 2097152"),
        (["-Q", "in"], "-Q (capture direction) is a tcpdump option echod-sniff does not have"),
        (["--bogus"], "option --bogus not recognized"),
        (
            ["--print"],
            "--print (printing packets while writing them with -w) is a tcpdump option "
            "echod-sniff does not have",
        ),
        (["-C", "1"], "-C needs -w FILE"),
        (["--time-stamp-precision", "pico"], "--time-stamp-precision: 'pico' is not micro or nano"),
        (["--count"], "--count counts the packets of a file: give -r FILE"),
    ],
)
def test_mistakes(argv: list[str], message: str) -> None:
    with pytest.raises(usage.UsageError) as caught:
        parse(*argv)
    assert str(caught.value) == message


def test_mistakeIsOneLine(capsys: pytest.CaptureFixture[str]) -> None:
    """
    A usage mistake is one line, a hint, and status 2; a bad config value
    names the file, its line and key.
    """
    assert main(["-c", "many"]) == ExitStatus.USAGE
    assert capsys.readouterr().err == (
        "echod-sniff: -c: 'many' is not a whole number\nechod-sniff: try echod-sniff --help\n"
    )


def test_configMistake(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "echod.toml"
    config.write_text("[sniff]\nsnaplen = 2\n")
    assert main(["--config", str(config)]) == ExitStatus.USAGE
    err = capsys.readouterr().err
    assert err == (
        f"echod-sniff: {config}: line 2: sniff.snaplen = 2: "
        "expected an integer of bytes from 64 to 262144\n"
    )


def test_exitStatuses() -> None:
    """
    What the user typed wrong is 2, what failed while running is 1.
    """
    assert _exitStatus(usage.UsageError("x")) == ExitStatus.USAGE
    assert _exitStatus(ConfigError("x")) == ExitStatus.USAGE
    assert _exitStatus(FilterError("x")) == ExitStatus.USAGE
    assert _exitStatus(UnknownInterfaceError("x")) == ExitStatus.USAGE
    assert _exitStatus(CapturePermissionError("x")) == ExitStatus.FAILED


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--help"])
    assert caught.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("Usage: echod-sniff [options] [expression]")
    for option in ("-c, --max-packets=", "--count ", "-w, --write=", "-r, --read=", "-X", "--json"):
        assert option in out


def test_listInterfaces() -> None:
    """
    -D lists the interfaces by number as tcpdump does, then any.
    """
    out = io.StringIO()
    listInterfaces(out)
    lines = out.getvalue().splitlines()
    assert any(line.split(".", 1)[1].startswith("lo [Up") for line in lines[:-1])
    assert lines[-1].endswith(".any (Pseudo-device that captures on all interfaces)")
    assert [int(line.split(".", 1)[0]) for line in lines] == list(range(1, len(lines) + 1))


def test_linktypeText() -> None:
    assert linktypeText(1) == "EN10MB (Ethernet)"
    assert linktypeText(276) == "LINUX_SLL2 (Linux cooked v2)"
    assert linktypeText(147) == "DLT 147 (unknown)"


def test_messages() -> None:
    """
    The sniffer's log events become tcpdump's lines on stderr: the
    listening line, the final counters (kept to print at the very end),
    errors as one line.
    """
    stderr = io.StringIO()
    messages = Messages(stderr)
    messages(
        {
            "event": "sniff.opened",
            "interface": "lo",
            "linktype": 1,
            "snaplen": 262144,
            "log_level": LogLevel.info,
        }
    )
    messages({"event": "sniff.count_reached", "log_level": LogLevel.info, "log_format": "x"})
    messages(
        {
            "event": "sniff.statistics",
            "passed": 3,
            "seen": 4,
            "dropped": 0,
            "not_written": 0,
            "final": True,
            "log_level": LogLevel.info,
        }
    )
    messages(
        {
            "log_format": "capture on {interface} failed: {reason}",
            "interface": "lo",
            "reason": "gone",
            "log_level": LogLevel.error,
        }
    )
    assert stderr.getvalue() == (
        "echod-sniff: listening on lo, link-type EN10MB (Ethernet), snapshot length 262144 bytes\n"
        "echod-sniff: capture on lo failed: gone\n"
    )
    assert messages.final == [
        "3 packets captured",
        "4 packets received by filter",
        "0 packets dropped by kernel",
    ]
