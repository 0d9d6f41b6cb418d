# -*- test-case-name: tests.unit.test_cli -*-
"""
C{echod}, the command beside the twistd plugins: checks for deployment
pipelines (C{echod check-config FILE...}) and the version.
"""

from __future__ import annotations

import getopt
import sys
from collections.abc import Sequence

from twisted.python import usage

from echod import config as _config
from echod import versionLine
from echod.errors import errorLines, oneLine

__all__ = ["main"]


# The name in usage lines, however the command was started (twisted.python.usage
# takes it from sys.argv[0]).
PROG = "echod"


class CheckConfigOptions(usage.Options):
    synopsis = "FILE [FILE ...]"
    longdesc = (
        "Load and validate each config file exactly as twistd echod would; "
        "exit 0 if all are valid, 1 if any is not (its problem on stderr)."
    )

    def getSynopsis(self) -> str:
        return f"Usage: {PROG} check-config {self.synopsis}"

    def opt_version(self) -> None:
        """
        Print the versions of echod, Twisted and Python, and exit.
        """
        print(versionLine())
        raise SystemExit(0)

    def parseArgs(self, *files: str) -> None:
        if not files:
            raise usage.UsageError("name at least one config file")
        self["files"] = files


class UnknownCommand(usage.UsageError):
    """
    A command echod does not have: one line, without the usage text.
    """


class Options(usage.Options):
    synopsis = "[options] COMMAND ..."
    longdesc = (
        "Commands for deployment pipelines. The echo service, its client and the "
        "packet sniffer run under twistd: twistd echod, twistd echod-client, "
        "twistd echod-sniff (and the echod-client command)."
    )
    subCommands = [
        ["check-config", None, CheckConfigOptions, "Validate config files (exit 0 or 1)."],
    ]

    def getSynopsis(self) -> str:
        return f"Usage: {PROG} {self.synopsis}"

    def _commands(self) -> list[str]:
        return [str(command) for command, *_ in self.subCommands]

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        argv = list(sys.argv[1:] if options is None else options)
        try:
            _, arguments = getopt.getopt(argv, self.shortOpt, self.longOpt)
        except getopt.GetoptError:
            arguments = []  # the parser below tells what is wrong
        commands = self._commands()
        if arguments and arguments[0] not in commands:
            raise UnknownCommand(
                f"unknown command '{oneLine(arguments[0], 80)}' (commands: {', '.join(commands)})"
            )
        super().parseOptions(argv)

    def postOptions(self) -> None:
        if self.subCommand is None:
            raise usage.UsageError(f"name a command ({', '.join(self._commands())})")

    def opt_version(self) -> None:
        """
        Print the versions of echod, Twisted and Python, and exit.
        """
        print(versionLine())
        raise SystemExit(0)


def _summary(config: _config.Config) -> str:
    parts = [f"{len(config.server.listen)} stream listener(s)"]
    if config.udp.listen:
        parts.append(f"{len(config.udp.listen)} UDP listener(s)")
    if config.metrics.listen:
        parts.append(f"metrics on {config.metrics.listen}")
    if config.sniff.enabled:
        parts.append("sniffer on")
    return ", ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    options = Options()
    try:
        options.parseOptions(list(sys.argv[1:] if argv is None else argv))
    except UnknownCommand as e:
        sys.stderr.write(f"{PROG}: {e}\n")
        return 2
    except usage.UsageError as e:
        # The usage of the command that was named, if one was.
        shown = getattr(options, "subOptions", None)
        shown = options if shown is None else shown
        sys.stderr.write(f"{shown}\n{PROG}: {oneLine(str(e))}\n")
        return 2
    status = 0
    for path in options.subOptions["files"]:
        try:
            loaded = _config.load(path)
        except _config.ConfigError as e:
            sys.stderr.write(errorLines("echod", e))
            status = 1
        else:
            sys.stdout.write(f"{oneLine(path)}: OK ({oneLine(_summary(loaded))})\n")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
