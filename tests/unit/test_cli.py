"""
Tests for L{echod.tap.command}: echod check-config.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import twisted
from echod import __version__, versionLine
from echod.tap.command import main

SAMPLE = Path(__file__).resolve().parents[2] / "etc" / "echod.toml"


class CheckConfigTests:
    def test_validFiles(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        other = tmp_path / "udp.toml"
        other.write_text("[udp]\nlisten = ['udp:port=7007']\n[metrics]\nlisten = 'tcp:9107'\n")
        assert main(["check-config", str(SAMPLE), str(other)]) == 0
        out = capsys.readouterr().out.splitlines()
        assert out[0] == f"{SAMPLE}: OK (1 stream listener(s))"
        assert (
            out[1] == f"{other}: OK (1 stream listener(s), 1 UDP listener(s), metrics on tcp:9107)"
        )

    def test_invalidFile(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        bad = tmp_path / "bad.toml"
        bad.write_text("[server]\nmax_connections = -5\n")
        assert main(["check-config", str(SAMPLE), str(bad)]) == 1
        captured = capsys.readouterr()
        assert captured.err == (
            f"echod: {bad}: line 2: server.max_connections = -5: "
            "expected an integer from 0 to 10000000\n"
        )

    def test_everyProblemOnItsOwnLine(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """
        Every problem of each file is told, each on its own C{echod:} line.
        """
        bad = tmp_path / "bad.toml"
        bad.write_text('[server]\nmax_connections = -5\n[log]\nformat = "xml"\n[nope]\n')
        worse = tmp_path / "worse.toml"
        worse.write_text("[sniff]\nrotate_count = 2\n")
        assert main(["check-config", str(bad), str(SAMPLE), str(worse)]) == 1
        captured = capsys.readouterr()
        assert captured.err.splitlines() == [
            f"echod: {bad}: line 2: server.max_connections = -5: "
            "expected an integer from 0 to 10000000",
            f'echod: {bad}: line 4: log.format = "xml": expected one of "text", "json"',
            f"echod: {bad}: line 5: unknown table [nope] (known: server, udp, log, metrics, "
            "client, sniff, monitor)",
            f"echod: {worse}: line 2: sniff.rotate_count = 2: "
            "needs sniff.rotate_bytes or sniff.rotate_seconds too "
            "(files rotate by size or by time)",
        ]
        assert captured.out == f"{SAMPLE}: OK (1 stream listener(s))\n"

    def test_noFile(self, capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["check-config"]) == 2
        assert "echod: name at least one config file" in capsys.readouterr().err

    def test_noCommand(self, capsys: pytest.CaptureFixture[str]) -> None:
        """
        Bare C{echod}: the usage, then a line saying what is missing; status 2.
        """
        assert main([]) == 2
        err = capsys.readouterr().err.splitlines()
        assert err[0] == "Usage: echod [options] COMMAND ..."
        assert err[-1] == "echod: name a command (check-config)"

    def test_unknownCommand(self, capsys: pytest.CaptureFixture[str]) -> None:
        """
        A command echod does not have: one line naming it and the commands.
        """
        assert main(["chek-config", "a.toml"]) == 2
        captured = capsys.readouterr()
        assert captured.err == "echod: unknown command 'chek-config' (commands: check-config)\n"
        assert captured.out == ""

    def test_noFileShowsTheCommandsUsage(self, capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["check-config"]) == 2
        err = capsys.readouterr().err.splitlines()
        assert err[0] == "Usage: echod check-config FILE [FILE ...]"
        assert err[-1] == "echod: name at least one config file"

    @pytest.mark.parametrize("argv", [["--version"], ["check-config", "--version"]])
    def test_version(self, argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
        """
        C{echod --version} and C{echod check-config --version} print echod's
        line, not Twisted's.
        """
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 0
        out = capsys.readouterr().out
        assert out == f"{versionLine()}\n"
        assert out.startswith(f"echod {__version__} (Twisted {twisted.__version__}, ")


class HostileInputTests:
    def test_fifoIsRefusedNotRead(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """
        A FIFO named as the config file is refused at once (reading it
        would block until a writer comes).
        """
        fifo = tmp_path / "fifo"
        os.mkfifo(fifo)
        assert main(["check-config", str(fifo)]) == 1
        assert capsys.readouterr().err == (
            f"echod: {fifo}: cannot read the config file: it is a FIFO, not a regular file\n"
        )

    def test_fileNameEscaped(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """
        A file name with a line break in it is shown escaped, on one line.
        """
        odd = tmp_path / "a\nb\u2028c.toml"
        odd.write_text("")
        assert main(["check-config", str(odd)]) == 0
        out = capsys.readouterr().out
        assert out == f"{tmp_path}/a\\nb\\u2028c.toml: OK (1 stream listener(s))\n"


class HelpTests:
    """
    The usage lines name the program and its command, whatever sys.argv[0] is.
    """

    def help(self, argv: list[str], capsys: pytest.CaptureFixture[str]) -> list[str]:
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 0
        return capsys.readouterr().out.splitlines()

    def test_help(
        self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr("sys.argv", ["/usr/local/bin/whatever"])
        out = self.help(["--help"], capsys)
        assert out[0] == "Usage: echod [options] COMMAND ..."
        commands = out.index("Commands:")
        assert out[commands + 1].split()[0] == "check-config"

    def test_checkConfigHelp(
        self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr("sys.argv", ["/usr/local/bin/whatever"])
        out = self.help(["check-config", "--help"], capsys)
        assert out[0] == "Usage: echod check-config FILE [FILE ...]"
