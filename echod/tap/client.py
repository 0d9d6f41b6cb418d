# -*- test-case-name: tests.unit.test_tap_client -*-
"""
C{twistd echod-client} and the C{echod-client} console script: one set of
options for both, and the script's entry point, L{main}.

Everything the user can get wrong (an option, the config file, the payload
file) is checked in L{Options.postOptions}, before anything connects.  Under
twistd such a mistake is one line on stderr and exit status 2, as for the
console script, instead of twistd's usage dump and status 1.
"""

from __future__ import annotations

import getopt
import re
import sys
from collections.abc import Sequence
from typing import Any

from twisted.application.service import IService
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorCore
from twisted.python import usage

from echod import config as _config
from echod import versionLine
from echod.client.errors import ExitStatus
from echod.client.plan import Plan, makePlan
from echod.client.report import PROG, Summary
from echod.client.run import runClient
from echod.client.service import EchoClientService
from echod.errors import UserError, errorLines, oneLine
from echod.interfaces import IClientCommandReactor, reactorProviding
from echod.logs import observerForTwistd
from echod.tap.arguments import optionsFirst

__all__ = ["OptionValueError", "Options", "main", "makeService"]

_UNITS = {
    "": 1,
    "k": 1024,
    "m": 1024**2,
    "g": 1024**3,
    "t": 1024**4,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}


def _bytes(text: str) -> int:
    """
    C{1500}, C{64K}, C{100M}, C{1G} (powers of 1024; C{KB}, C{MB}, C{GB} are
    powers of 1000, as dd has them).
    """
    # ASCII digits only: \d and int() take every script's digits.
    match = re.fullmatch(r"[ \t]*([0-9]{1,20})[ \t]*([A-Za-z]{0,3})[ \t]*", text)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        raise ValueError("not a number of bytes (such as 1500, 64K, 100M, 1G)")
    return int(match.group(1)) * _UNITS[unit]


def _integer(text: str) -> int:
    if not re.fullmatch(r"[0-9]{1,20}", text):
        raise ValueError("not a whole number")
    return int(text)


def _seconds(text: str) -> float | int:
    """
    A number of seconds; whole numbers stay integers, so that an error
    shows the value as it was typed.
    """
    if re.fullmatch(r"[0-9]{1,20}", text):
        return int(text)
    if re.fullmatch(r"[0-9]{0,20}\.[0-9]{1,20}|[0-9]{1,20}\.", text):
        return float(text)
    raise ValueError("not a number of seconds")


def _percent(text: str) -> float | int:
    """
    A percentage, C{5}, C{2.5} or C{5%}.
    """
    try:
        return _seconds(text.strip().removesuffix("%").rstrip())
    except ValueError:
        raise ValueError("not a percentage (such as 5, 0.5 or 5%)") from None


class OptionValueError(usage.UsageError, UserError):
    """
    An option's text is not what it must be: a usage error, and a user
    error that is one line (no "try --help" after it).
    """


class Options(usage.Options):
    """
    C{[HOST PORT [MESSAGE]]} and options; the result is L{plan}.  Options
    override the C{[client]} table of C{--config FILE}, which overrides the
    defaults.
    """

    synopsis = "[options] [HOST PORT [MESSAGE]]"
    longdesc = (
        "Echo client: resolves HOST to all of its addresses and talks to the first "
        "that answers (TCP: Happy Eyeballs, IPv6 and IPv4; UDP: in getaddrinfo's "
        "order, the next when one refuses or never answers). One message prints "
        "\"Received b'...'\"; --count, --size, --file or --json make it ping the "
        "server and print round-trip times and a summary; --bulk measures TCP "
        "throughput. Over UDP (-u) each datagram the client builds carries a sequence "
        "number and its send time (a payload of your own is matched by content), every "
        "reply is checked byte for byte, and the summary counts lost, duplicated, "
        "reordered and mismatched datagrams, with RTT min/avg/max/p50/p99/mdev and "
        "jitter: RFC 3550's interarrival jitter computed on round-trip times "
        "(J += (|D| - J)/16, D the difference of successive RTTs); --interval 0 "
        "--window N floods with N datagrams in flight. Exit status: 0 ok, 2 usage or "
        "config, 3 name does not resolve, 4 refused or unreachable (UDP: ICMP port "
        "unreachable), 5 timeout (UDP: no reply at all), 6 server closed early, 7 echo "
        "differs, 8 UDP loss above --max-loss, 130 interrupted."
    )
    optFlags = [
        ["ipv4", "4", "Connect over IPv4 only."],
        ["ipv6", "6", "Connect over IPv6 only."],
        ["udp", "u", "Echo over UDP: one datagram per message."],
        ["tcp", None, 'Echo over TCP (the default; overrides protocol = "udp" of the file).'],
        ["quiet", "q", "Ping mode: print the first line and the summary only."],
        ["json", None, "Print only the summary, as one JSON object."],
    ]
    optParameters = [
        ["config", "c", None, "TOML config file whose [client] table gives the defaults."],
        ["host", "H", None, "Host name or address of the echo server (default: localhost)."],
        ["port", "p", None, "Port of the echo server (default: 7007)."],
        ["message", "m", None, "Text to send (default: Hello, world)."],
        [
            "endpoint",
            "e",
            None,
            "Twisted client endpoint string instead of host and port "
            "(tcp:host=H:port=P, unix:path=/run/echod.sock, tls:H:P).",
        ],
        ["file", "f", None, 'Send the contents of FILE ("-": standard input).'],
        ["count", "n", None, "Messages to send (ping mode when more than 1)."],
        [
            "interval",
            "i",
            None,
            "Seconds between messages (default: 1; 0: each once the previous is back).",
        ],
        [
            "size",
            "s",
            None,
            "Message size in bytes: the message repeated or cut to fit "
            "(UDP datagrams the client builds: 64 by default).",
        ],
        [
            "window",
            None,
            None,
            "UDP with --interval 0: datagrams kept in flight, a flood bounded by "
            "--count (default: 1).",
        ],
        ["bulk", "b", None, "Stream this many bytes (100M, 1G...), verify them, report MB/s."],
        [
            "timeout",
            "t",
            None,
            "Seconds to connect, and for each reply (default: 5); "
            "UDP: a datagram not answered by then is lost.",
        ],
        [
            "max-loss",
            None,
            None,
            "UDP: percent of datagrams that may be lost, the run still a success (default: 0).",
        ],
    ]

    # option name -> ([client] key, parser of the command-line text)
    _keys: dict[str, tuple[str, Any]] = {
        "host": ("host", str),
        "port": ("port", _integer),
        "message": ("message", str),
        "endpoint": ("endpoint", str),
        "file": ("file", str),
        "count": ("count", _integer),
        "interval": ("interval", _seconds),
        "size": ("size", _bytes),
        "window": ("window", _integer),
        "bulk": ("bulk", _bytes),
        "timeout": ("timeout", _seconds),
        "max-loss": ("max_loss", _percent),
    }

    plan: Plan
    config: _config.Config

    def __init__(self) -> None:
        super().__init__()
        self._positional: dict[str, str] = {}
        self._typed: dict[str, str] = {}

    def getSynopsis(self) -> str:
        if getattr(self, "parent", None) is None:
            return f"Usage: {PROG} {self.synopsis}"
        return super().getSynopsis()

    def opt_version(self) -> None:
        """
        Print the versions of echod, Twisted and Python, and exit.
        """
        print(versionLine())
        raise SystemExit(0)

    def parseArgs(self, host: str | None = None, port: str | None = None, *rest: str) -> None:
        if host is not None and port is None:
            raise usage.UsageError("HOST needs a PORT after it")
        if len(rest) > 1:
            raise usage.UsageError(
                "too many arguments: expected HOST PORT [MESSAGE] (quote a message with spaces)"
            )
        for name, value in (("host", host), ("port", port), ("message", rest[0] if rest else None)):
            if value is not None:
                self._positional[name] = value

    def parseOptions(self, options: list[str] | None = None) -> None:
        """
        Under twistd (when this is a subcommand), a mistake is one line on
        stderr and exit status 2, as for the console script, which catches the
        same errors itself.
        """
        try:
            if options is None:
                options = sys.argv[1:]
            super().parseOptions(self._optionsFirst(list(options)))
        except (usage.UsageError, UserError) as e:
            if getattr(self, "parent", None) is None:
                raise
            sys.stderr.write(errorLines(PROG, e))
            sys.stderr.flush()
            raise SystemExit(int(ExitStatus.USAGE)) from None

    def _optionsFirst(self, argv: list[str]) -> list[str]:
        """
        Options may follow C{HOST PORT [MESSAGE]}, as in C{ping HOST -c 3}:
        L{usage.Options} stops at the first argument, so put them first.
        """
        try:
            ordered, typed = optionsFirst(self, argv)
        except getopt.GetoptError as e:
            raise usage.UsageError(str(e)) from None
        # An error about its value names the option as it was typed.
        self._typed.update(typed)
        return ordered

    def postOptions(self) -> None:
        config = _config.load(self["config"])
        overrides: list[tuple[str, str, object]] = []
        typed = dict(self._typed)
        for name, value in self._positional.items():
            if self[name] is not None and self[name] != value:
                first, second = oneLine(value, 80), oneLine(self[name], 80)
                raise usage.UsageError(
                    f"{name.upper()} is given twice: '{first}' and --{name} '{second}'"
                )
            if self[name] is None:
                typed[name] = name.upper()
            self[name] = value
        for option, (key, parse) in self._keys.items():
            text = self[option]
            if text is None:
                continue
            try:
                value = parse(text)
            except ValueError as e:
                name = typed.get(option, f"--{option}")
                raise OptionValueError(f"{name}: '{oneLine(text, 80)}' is {e}") from None
            overrides.append((option, key, value))
        if self["ipv4"] and self["ipv6"]:
            raise usage.UsageError("-4 and -6 exclude each other")
        if self["ipv4"] or self["ipv6"]:
            overrides.append(
                ("ipv4" if self["ipv4"] else "ipv6", "family", "ipv4" if self["ipv4"] else "ipv6")
            )
        if self["udp"] and self["tcp"]:
            raise usage.UsageError("-u (--udp) and --tcp exclude each other")
        if self["udp"] or self["tcp"]:
            overrides.append(
                ("udp" if self["udp"] else "tcp", "protocol", "udp" if self["udp"] else "tcp")
            )
        if self["quiet"]:
            overrides.append(("quiet", "quiet", True))
        if self["json"]:
            overrides.append(("json", "json", True))
        spellings = self._spellings()
        for origin, key, setting in overrides:
            name = typed.get(origin, f"--{origin}")
            config = _config.override(config, "client", {key: setting}, name, spellings)
        self.config = config

        def error(key: str, value: object, problem: str) -> _config.ConfigError:
            return _config.errorAbout(config, "client", key, value, problem)

        self.plan = makePlan(
            config.client, error=error, messageGiven=_config.isSet(config, "client", "message")
        )

    def _spellings(self) -> dict[str, tuple[str, str | None]]:
        """
        The options of the C{[client]} keys, long and short.
        """
        short = {
            long: f"-{name}"
            for name, long in self.synonyms.items()
            if len(name) == 1 and long != name
        }
        return {
            f"client.{key}": (f"--{option}", short.get(option))
            for option, (key, _) in self._keys.items()
        }


def makeService(options: Options, reactor: IClientCommandReactor | None = None) -> IService:
    """
    The client run as a twistd service: started with the reactor, it stops
    the reactor when done and twistd exits with the run's status.  Standard
    output and error are taken now, before twistd sends them to the log.
    """
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = reactorProviding(globalReactor, IClientCommandReactor)
    twistd = getattr(options, "parent", None)
    log = options.config.log
    return EchoClientService(
        options.plan,
        reactor,
        out=sys.stdout,
        err=sys.stderr,
        logObserver=observerForTwistd(twistd, log.format, log.level),
        exitProcess=twistd is not None,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """
    C{echod-client HOST PORT [MESSAGE] [options]}: one run under
    L{twisted.internet.task.react}; returns the exit status.
    """
    from twisted.internet.task import react

    options = Options()
    try:
        options.parseOptions(list(sys.argv[1:] if argv is None else argv))
    except (usage.UsageError, UserError) as e:
        sys.stderr.write(errorLines(PROG, e))
        if isinstance(e, usage.UsageError) and not isinstance(e, UserError):
            sys.stderr.write(f"{PROG}: try {PROG} --help\n")
        return int(ExitStatus.USAGE)

    def start(globalReactor: IReactorCore) -> Deferred[None]:
        reactor = reactorProviding(globalReactor, IClientCommandReactor)
        client, status = runClient(reactor, options.plan, sys.stdout, sys.stderr)

        def interrupted() -> Deferred[Summary] | None:
            return client.interrupt()

        reactor.addSystemEventTrigger("before", "shutdown", interrupted)

        def exit(code: ExitStatus) -> None:
            raise SystemExit(int(code))

        return status.addCallback(exit)

    try:
        react(start)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else int(ExitStatus.USAGE)
    return 0
