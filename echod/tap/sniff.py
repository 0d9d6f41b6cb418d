# -*- test-case-name: tests.unit.test_tap_sniff -*-
"""
C{twistd echod-sniff}: capture packets, print them or write a pcap file.
"""

from __future__ import annotations

import getopt
import re
import sys
from collections.abc import Mapping
from typing import Any

from twisted.application.service import IService
from twisted.python import usage

from echod import config as _config
from echod import versionLine
from echod.app import EchodService
from echod.errors import oneLine, reportUserErrors
from echod.interfaces import ISniffCommandReactor, reactorProviding
from echod.logs import EchodLogObserver, observerForTwistd
from echod.sniff.service import SniffService, checkSniffing, standardOutput
from echod.tap.arguments import optionsFirst

__all__ = ["Options", "makeService"]

# Command-line option -> [sniff] key.
_KEYS = {
    "interface": "interface",
    "filter": "filter",
    "snaplen": "snaplen",
    "format": "format",
    "output": "output",
    "rotate-bytes": "rotate_bytes",
    "rotate-count": "rotate_count",
    "rotate-seconds": "rotate_seconds",
    "count": "count",
    "stats-interval": "stats_interval",
    "buffer-bytes": "buffer_bytes",
    "precision": "precision",
}


# Options whose text is a number: parsed here, not by usage.Options' coercion,
# whose failure is twistd's usage text; ASCII digits only (int() and float()
# take every script's digits), the range is the [sniff] key's.
_NUMBERS = {
    "snaplen": int,
    "rotate-bytes": int,
    "rotate-count": int,
    "rotate-seconds": float,
    "count": int,
    "stats-interval": float,
    "buffer-bytes": int,
}


def _number(option: str, text: str, typed: str) -> int | float:
    if re.fullmatch(r"[0-9]{1,20}", text):
        return int(text)
    if _NUMBERS[option] is float and re.fullmatch(r"[0-9]{0,20}\.[0-9]{1,20}|[0-9]{1,20}\.", text):
        return float(text)
    what = "a number" if _NUMBERS[option] is float else "a whole number"
    raise usage.UsageError(f"{typed}: '{oneLine(text, 80)}' is not {what} in ASCII digits")


def typedOptions(options: usage.Options, argv: list[str]) -> dict[str, str]:
    """
    For each option of C{argv}, its long name and how the user wrote it
    (C{"-W"}, or C{"--rotate-count"} for C{--rotate-c=3} too), the last time
    it was given: errors about its value name it so.
    """
    try:
        return optionsFirst(options, argv)[1]
    except getopt.GetoptError:
        return {}


def spellings(options: usage.Options, keys: Mapping[str, str]) -> dict[str, tuple[str, str | None]]:
    """
    C{{"TABLE.KEY": ("--long", "-s" or None)}} for the options in C{keys}
    (option -> C{TABLE.KEY}).
    """
    short = {
        long: f"-{name}"
        for name, long in options.synonyms.items()
        if len(name) == 1 and long != name
    }
    return {key: (f"--{option}", short.get(option)) for option, key in keys.items()}


class Options(usage.Options):
    """
    Options override the [sniff] section of the config file.  Everything a
    user can get wrong (the values, the interface, the filter) is checked
    here, before anything is opened; each problem is one line on stderr and
    exit status 1.
    """

    synopsis = "[--config FILE] [--interface IF] [--filter EXPR] [--format F] [--output FILE] ..."
    longdesc = (
        "Capture packets with a kernel filter (tcpdump syntax) and print one line per "
        "packet (text), one JSON object per packet (json), or write a pcap file that "
        "tcpdump, tshark and Wireshark read. Needs root or CAP_NET_RAW to open the "
        "capture; with twistd's --uid/--gid it then runs as that user. Example: "
        "twistd -n echod-sniff --interface lo --filter 'tcp port 7007'"
    )
    optParameters = [
        ["config", "c", None, "TOML config file; its [sniff] table gives the defaults."],
        ["interface", "i", None, 'Interface to capture on; "any": all of them.'],
        ["filter", "f", None, "tcpdump filter expression, such as 'tcp port 7007'."],
        ["snaplen", "s", None, "Bytes kept of each packet (64-262144)."],
        ["format", None, None, "Output format: text, json, pcap or pcapng."],
        ["output", "o", None, 'File to write packets to; "-": standard output.'],
        ["rotate-bytes", "C", None, "Start a new file before it passes N bytes."],
        [
            "rotate-count",
            "W",
            None,
            "With --rotate-bytes, keep N files, reusing the oldest; "
            "with --rotate-seconds alone, stop after N files.",
        ],
        [
            "rotate-seconds",
            "G",
            None,
            "Start a new file every N seconds, named by strftime from --output.",
        ],
        ["count", None, None, "Stop after N packets."],
        ["stats-interval", None, None, "Log statistics every N seconds (0: at exit)."],
        ["buffer-bytes", "B", None, "Size of the kernel capture ring in bytes."],
        ["precision", None, None, "pcap and pcapng timestamps: micro or nano."],
    ]
    optFlags = [
        ["promiscuous", "p", "Put the interface in promiscuous mode."],
    ]

    config: _config.Config
    typed: dict[str, str]

    def opt_version(self) -> None:
        """
        Print the versions of echod, Twisted and Python, and exit.
        """
        print(versionLine())
        raise SystemExit(0)

    def parseOptions(self, options: list[str] | None = None) -> None:
        """
        Under twistd, a usage mistake is one line on stderr and exit status
        1, not twistd's usage text (which L{usage.UsageError} gets there).
        """
        if options is None:
            options = sys.argv[1:]
        self.typed = typedOptions(self, list(options))
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            if getattr(self, "parent", None) is None:
                raise
            stderr = sys.__stderr__ or sys.stderr
            stderr.write(f"echod-sniff: {oneLine(str(e))}\n")
            stderr.flush()
            raise SystemExit(1) from None

    def postOptions(self) -> None:
        reportUserErrors("echod-sniff")
        config = _config.load(self["config"])
        typed = getattr(self, "typed", {})
        names = spellings(self, {o: f"sniff.{k}" for o, k in _KEYS.items()})
        names["sniff.promiscuous"] = ("--promiscuous", "-p")
        for option, key in _KEYS.items():
            if self[option] is not None:
                origin = typed.get(option, f"--{option}")
                text = self[option]
                value = _number(option, text, origin) if option in _NUMBERS else text
                config = _config.override(config, "sniff", {key: value}, origin, names)
        if self["promiscuous"]:
            origin = typed.get("promiscuous", "--promiscuous")
            config = _config.override(config, "sniff", {"promiscuous": True}, origin, names)
        checkSniffing(config.sniff, getattr(self, "parent", None))
        self.config = config


def _logObserver(
    twistd: Mapping[str, Any] | None, log: _config.LogConfig, packetsOnStdout: bool
) -> EchodLogObserver | None:
    """
    twistd's log observer, except where it would write to standard output
    while packets go there too: then the log goes to standard error, as
    tcpdump's messages do.
    """
    observer = observerForTwistd(twistd, log.format, log.level)
    if observer is None or twistd is None or not packetsOnStdout:
        return observer
    logfile = twistd.get("logfile")
    nodaemon = bool(twistd.get("nodaemon") or twistd.get("debug"))
    if not (logfile == "-" or (nodaemon and not logfile)):
        return observer
    stderr = sys.stderr
    return EchodLogObserver(log.format, log.level, lambda: stderr)


def makeService(options: Options, reactor: ISniffCommandReactor | None = None) -> IService:
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = reactorProviding(globalReactor, ISniffCommandReactor)
    twistd = getattr(options, "parent", None)
    config = options.config
    observer = _logObserver(twistd, config.log, config.sniff.output == "-")
    root = EchodService(
        config, reactor, observer, handleSignals=twistd is not None, servesConnections=False
    )
    sniffer = SniffService(config.sniff, reactor, standardOutput(), standalone=True)
    sniffer.setServiceParent(root)
    return root
