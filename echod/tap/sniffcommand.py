# -*- test-case-name: tests.unit.test_sniffcommand -*-
"""
C{echod-sniff}, the console command: the sniffer with tcpdump's options and
tcpdump's manners (the filter expression as trailing arguments, C{-c} a
count, C{-w}/C{-r} files, C{-X}/C{-A} dumps, its messages on standard error),
beside C{twistd echod-sniff}, the same sniffer as a twistd plugin with echod's
own option names.

A live capture runs under L{twisted.internet.task.react}: the capture is the
reactor's reader, as under twistd, without twistd's pid file, log and
daemon.  Reading a file (C{-r}) needs no reactor.
"""

from __future__ import annotations

import getopt
import re
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import IO, Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorCore
from twisted.logger import (
    ILogObserver,
    LogLevel,
    formatEvent,
    globalLogBeginner,
)
from twisted.python import usage
from zope.interface import implementer

from echod import config as _config
from echod import versionLine
from echod.config.errors import ConfigError
from echod.errors import UserError, errorLines, oneLine
from echod.interfaces import ISniffReactor, reactorProviding
from echod.sniff.bpf import FilterError
from echod.sniff.capturefile import CaptureFileError, OfflineStatistics, readCaptureFile
from echod.sniff.reader import IPacketConsumer
from echod.sniff.service import SniffService, checkSniffing, makeConsumer, standardOutput
from echod.sniff.source import CaptureInfo, CaptureStatistics, UnknownInterfaceError
from echod.sniff.text import TextStyle
from echod.tap.arguments import optionsFirst

__all__ = [
    "ExitStatus",
    "Options",
    "SniffCommand",
    "linktypeText",
    "listInterfaces",
    "main",
    "runLive",
]

PROG = "echod-sniff"

# tcpdump's default snapshot length, which -s 0 asks for.
_MAX_SNAPLEN = 262144


class ExitStatus(IntEnum):
    """
    How C{echod-sniff} ends.
    """

    OK = 0
    FAILED = 1
    USAGE = 2


# tcpdump's options that echod-sniff does not have, and what they do there:
# said in one line instead of getopt's "option -Q not recognized".
UNSUPPORTED = {
    "b": "BGP AS numbers in ASDOT notation",
    "d": "dumping the compiled filter",
    "E": "decrypting IPsec ESP",
    "H": "detecting 802.11s draft mesh headers",
    "I": "monitor mode",
    "j": "time stamp types",
    "J": "listing time stamp types",
    "K": "not verifying checksums (echod-sniff never verifies them)",
    "L": "listing data link types",
    "M": "TCP-MD5 secrets",
    "O": "filter optimizer switch",
    "Q": "capture direction",
    "T": "interpreting packets as a given type",
    "u": "undecoded NFS handles",
    "V": "reading a list of files",
    "y": "data link types",
    "z": "post-rotate commands",
    "#": "packet numbers",
    "number": "packet numbers",
    "print": "printing packets while writing them with -w",
    "direction": "capture direction",
    "list-time-stamp-types": "listing time stamp types",
    "list-data-link-types": "listing data link types",
}


def _decimal(text: str, name: str, low: int, high: int) -> int:
    """
    A whole number in ASCII digits (C{int()} takes every script's digits)
    within C{low}-C{high}, or a one-line usage error naming the option.
    """
    if not re.fullmatch(r"[0-9]{1,20}", text):
        raise usage.UsageError(f"{name}: '{oneLine(text, 80)}' is not a whole number")
    value = int(text)
    if not low <= value <= high:
        raise usage.UsageError(f"{name}: {value} is not from {low} to {high}")
    return value


def _seconds(text: str, name: str) -> float:
    if not re.fullmatch(r"[0-9]{1,12}(\.[0-9]{1,9})?", text):
        raise usage.UsageError(f"{name}: '{oneLine(text, 80)}' is not a number of seconds")
    return float(text)


@dataclass(frozen=True)
class SniffCommand:
    """
    One run of C{echod-sniff}, as the command line and the config file ask.

    @ivar config: the whole configuration; C{config.sniff} is what is
        captured, where it goes and in what format.
    @ivar read: C{-r FILE}: read packets from a capture file instead.
    @ivar countOnly: C{--count}: print only how many packets matched.
    @ivar listInterfaces: C{-D}.
    @ivar user: C{-Z USER}: the user to run as once the capture is open.
    """

    config: _config.Config
    text: TextStyle = field(default_factory=TextStyle)
    read: str | None = None
    countOnly: bool = False
    listInterfaces: bool = False
    user: str | None = None


class Options(usage.Options):
    """
    tcpdump's options, with tcpdump's letters and meanings, and echod's
    C{--config}, C{--format}, C{--json}, C{--stats-interval}; the result is
    L{command}.
    """

    synopsis = "[options] [expression]"
    longdesc = (
        "Capture packets as tcpdump does, with tcpdump's options: the filter "
        "expression (pcap-filter(7), compiled by libpcap, run in the kernel) after the "
        "options, -i interface, -c count, -w FILE to write a pcap file (pcapng with "
        "--format pcapng), -r FILE to read pcap or pcapng files (the same filter, applied "
        "by libpcap), -X/-A payload dumps; or --json for one JSON object per packet. "
        "Messages go to standard error. Needs root or CAP_NET_RAW to capture (not to "
        "read files). The same sniffer runs as a daemon under twistd: twistd echod-sniff. "
        "Exit status: 0 done (count reached, end of file, interrupted), 1 the capture, "
        "the file or the output failed, 2 usage or config error."
    )

    optFlags = [
        ["help", "h", "Show this help and exit."],
        ["json", None, "One JSON object per packet (--format json)."],
        ["count", None, "With -r: print only how many packets match, as tcpdump --count."],
        ["no-promiscuous-mode", "p", "Do not put the interface into promiscuous mode."],
        ["link-header", "e", "Print the link-level header on each line."],
        ["quick", "q", "Quick output: less protocol detail."],
        ["numeric", "n", "Accepted: echod-sniff never resolves addresses or ports."],
        ["no-domain-names", "N", "Accepted: echod-sniff never resolves host names."],
        ["numeric-foreign", "f", "Accepted: addresses are always numeric."],
        [
            "absolute-tcp-sequence-numbers",
            "S",
            "Accepted: TCP sequence numbers are always absolute.",
        ],
        ["packet-buffered", "U", "Accepted: output is written after every batch of packets."],
        ["line-buffered", "l", "Accepted: output is written after every batch of packets."],
        ["immediate-mode", None, "Accepted: packets are read as the kernel hands them over."],
        ["list-interfaces", "D", "List the interfaces a capture can use, and exit."],
        ["micro", None, "Timestamps in microseconds (the default)."],
        ["nano", None, "Timestamps in nanoseconds."],
    ]
    optParameters = [
        ["interface", "i", None, 'Interface to capture on; "any" (the default): all of them.'],
        ["max-packets", "c", None, "Exit after N packets."],
        ["write", "w", None, 'Write packets to FILE ("-": standard output), as pcap by default.'],
        ["read", "r", None, 'Read packets from a pcap or pcapng FILE ("-": standard input).'],
        ["snapshot-length", "s", None, "Bytes kept of each packet (0: 262144, the default)."],
        ["file-size", "C", None, "With -w: a new file before this many millions of bytes."],
        ["file-count", "W", None, "With -C: keep N files; with -G: stop after N files."],
        ["rotate-seconds", "G", None, "With -w: a new file every N seconds (strftime name)."],
        ["buffer-size", "B", None, "Kernel capture buffer, in KiB."],
        ["filter-file", "F", None, "Read the filter expression from FILE."],
        ["relinquish-privileges", "Z", None, "Run as USER once the capture is open."],
        ["time-stamp-precision", None, None, "Timestamps in micro (the default) or nano."],
        ["format", None, None, "text, json, pcap or pcapng (default: text; pcap with -w)."],
        ["config", None, None, "TOML config file whose [sniff] table gives the defaults."],
        ["stats-interval", None, None, "Print statistics every N seconds."],
    ]

    command: SniffCommand

    def __init__(self) -> None:
        super().__init__()
        self.counted: dict[str, int] = {"v": 0, "x": 0, "X": 0, "A": 0, "t": 0}
        self.expression: list[str] = []
        self._typed: dict[str, str] = {}

    def opt_verbose(self) -> None:
        """
        IP header fields and checksums (as tcpdump -v; -vv is -v).
        """
        self.counted["v"] += 1

    opt_v = opt_verbose

    def opt_hex(self) -> None:
        """
        Each packet in hex, without its link-level header (-xx: with it).
        """
        self.counted["x"] += 1

    opt_x = opt_hex

    def opt_hex_ascii(self) -> None:
        """
        Each packet in hex and ASCII, without its link-level header (-XX:
        with it).
        """
        self.counted["X"] += 1

    opt_X = opt_hex_ascii

    def opt_ascii(self) -> None:
        """
        Each packet in ASCII, without its link-level header (-AA: with it).
        """
        self.counted["A"] += 1

    opt_A = opt_ascii

    def opt_timestamps(self) -> None:
        """
        -t: no timestamp; -tt: seconds since the epoch; -ttt: since the
        previous packet; -tttt: date and time; -ttttt: since the first.
        """
        self.counted["t"] += 1

    opt_t = opt_timestamps

    def opt_version(self) -> None:
        """
        Print the versions of echod, Twisted and Python, and exit.
        """
        print(versionLine())
        raise SystemExit(0)

    def getSynopsis(self) -> str:
        return f"Usage: {PROG} {self.synopsis}"

    def parseArgs(self, *expression: str) -> None:
        self.expression = list(expression)

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        argv = list(sys.argv[1:] if options is None else options)
        super().parseOptions(self._optionsFirst(argv))

    def _optionsFirst(self, argv: list[str]) -> list[str]:
        """
        Options may follow the expression, as tcpdump (GNU getopt) takes
        them: L{usage.Options} stops at the first argument, so put them
        first.  A tcpdump option echod-sniff lacks is named as such.
        """
        try:
            ordered, typed = optionsFirst(self, argv)
        except getopt.GetoptError as e:
            if e.opt in UNSUPPORTED:
                dashes = "-" if len(e.opt) == 1 else "--"
                raise usage.UsageError(
                    f"{dashes}{e.opt} ({UNSUPPORTED[e.opt]}) is a tcpdump option echod-sniff "
                    "does not have"
                ) from None
            raise usage.UsageError(str(e)) from None
        self._typed.update(typed)
        return ordered

    def opt_help(self) -> None:
        print(str(self).rstrip())
        raise SystemExit(0)

    opt_h = opt_help

    def _name(self, option: str) -> str:
        return self._typed.get(option, f"--{option}")

    def postOptions(self) -> None:
        config = _config.load(self["config"])
        sniff = config.sniff
        values: dict[str, object] = {}
        origins: dict[str, str] = {}

        def put(key: str, option: str, value: object) -> None:
            values[key] = value
            origins[key] = self._name(option)

        if self["interface"] is not None:
            put("interface", "interface", self["interface"])
        expression = " ".join(self.expression)
        if self["filter-file"] is not None:
            if expression:
                raise usage.UsageError(
                    f"{self._name('filter-file')} and an expression on the command line "
                    "exclude each other (tcpdump would ignore the expression)"
                )
            expression = _filterFromFile(self["filter-file"], self._name("filter-file"))
        if self["filter-file"] is not None:
            put("filter", "filter-file", expression)
        elif expression:
            values["filter"] = expression
            origins["filter"] = "the expression"
        if self["max-packets"] is not None:
            name = self._name("max-packets")
            put("count", "max-packets", _decimal(self["max-packets"], name, 1, 2**62))
        if self["snapshot-length"] is not None:
            name = self._name("snapshot-length")
            snaplen = _decimal(self["snapshot-length"], name, 0, _MAX_SNAPLEN)
            put("snaplen", "snapshot-length", snaplen or _MAX_SNAPLEN)
        if self["buffer-size"] is not None:
            kib = _decimal(self["buffer-size"], self._name("buffer-size"), 64, 2**21)
            put("buffer_bytes", "buffer-size", kib * 1024)
        if self["file-size"] is not None:
            millions = _decimal(self["file-size"], self._name("file-size"), 1, 2**30)
            put("rotate_bytes", "file-size", millions * 1_000_000)
        if self["file-count"] is not None:
            put("rotate_count", "file-count", _decimal(self["file-count"], "-W", 1, 1_000_000))
        if self["rotate-seconds"] is not None:
            seconds = _seconds(self["rotate-seconds"], self._name("rotate-seconds"))
            put("rotate_seconds", "rotate-seconds", seconds)
        if self["stats-interval"] is not None:
            put(
                "stats_interval",
                "stats-interval",
                _seconds(self["stats-interval"], self._name("stats-interval")),
            )
        elif not _config.isSet(config, "sniff", "stats_interval"):
            # tcpdump prints its counters when it ends, not as it goes.
            values["stats_interval"] = 0.0
        form = self._format(sniff.format, _config.isSet(config, "sniff", "format"))
        if form is not None:
            put("format", "format", form)
        if self["write"] is not None:
            put("output", "write", self["write"])
        elif self["read"] is not None or not _config.isSet(config, "sniff", "output"):
            values["output"] = "-"
        for key in ("rotate_bytes", "rotate_seconds"):
            if key in origins and self["write"] is None and sniff.output == "-":
                raise usage.UsageError(f"{origins[key]} needs -w FILE")
        interface = values.get("interface", sniff.interface)
        if self["no-promiscuous-mode"] or interface == "any":
            put("promiscuous", "no-promiscuous-mode", False)
        elif not _config.isSet(config, "sniff", "promiscuous"):
            # tcpdump's default: promiscuous on one interface.
            values["promiscuous"] = True
        precision = self._precision()
        if precision is not None:
            put("precision", "time-stamp-precision", precision)
        spellings = {f"sniff.{key}": (origin, None) for key, origin in origins.items()}
        # One key at a time, so that an error names the option it came from;
        # in this order, so that each rule across keys sees what it needs.
        for key in sorted(values, key=_ORDER.index):
            value = values[key]
            origin = origins.get(key, "the command line")
            config = _config.override(config, "sniff", {key: value}, origin, spellings)
        try:
            style = TextStyle.fromTcpdumpFlags(
                t=self.counted["t"],
                x=self.counted["x"],
                X=self.counted["X"],
                A=self.counted["A"],
                e=bool(self["link-header"]),
                q=bool(self["quick"]),
                v=self.counted["v"] > 0,
                nano=config.sniff.precision == "nano",
            )
        except ValueError as e:
            raise usage.UsageError(str(e)) from None
        self.command = SniffCommand(
            config=config,
            text=style,
            read=self["read"],
            countOnly=bool(self["count"]),
            listInterfaces=bool(self["list-interfaces"]),
            user=self["relinquish-privileges"],
        )
        if self.command.countOnly and self.command.read is None:
            raise usage.UsageError("--count counts the packets of a file: give -r FILE")

    def _format(self, configured: str, given: bool) -> str | None:
        """
        The output format: C{--format}, C{--json}, else pcap with C{-w} (as
        tcpdump writes), else the file's, else text.
        """
        chosen: str | None = self["format"]
        if self["json"]:
            if chosen is not None and chosen != "json":
                raise usage.UsageError(f"--json and --format {chosen} exclude each other")
            chosen = "json"
        if chosen is None and self["write"] is not None:
            return configured if given and configured in ("pcap", "pcapng") else "pcap"
        if chosen is None and not given:
            return "text"
        return chosen

    def _precision(self) -> str | None:
        chosen: str | None = self["time-stamp-precision"]
        if chosen is not None and chosen not in ("micro", "nano"):
            raise usage.UsageError(
                f"--time-stamp-precision: '{oneLine(chosen, 80)}' is not micro or nano"
            )
        if self["micro"] and self["nano"]:
            raise usage.UsageError("--micro and --nano exclude each other")
        flag = "nano" if self["nano"] else "micro" if self["micro"] else None
        if chosen is not None and flag is not None and chosen != flag:
            raise usage.UsageError(f"--time-stamp-precision {chosen} and --{flag} disagree")
        return chosen or flag


_ORDER = [
    "interface",
    "output",
    "format",
    "filter",
    "snaplen",
    "count",
    "buffer_bytes",
    "precision",
    "stats_interval",
    "rotate_bytes",
    "rotate_seconds",
    "rotate_count",
    "promiscuous",
]


def _filterFromFile(path: str, name: str) -> str:
    """
    The expression in a C{-F} file, as tcpdump reads it: the whole file,
    with C{#} comments to the end of a line removed.
    """
    try:
        with open(path, "rb") as f:
            data = f.read(1 << 20 + 1)
    except OSError as e:
        reason = (e.strerror or str(e)).lower()
        raise usage.UsageError(f"{name}: cannot read {path}: {reason}") from None
    if len(data) > 1 << 20:
        raise usage.UsageError(f"{name}: {path} is over 1 MiB: not a filter expression")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise usage.UsageError(f"{name}: {path} is not UTF-8 text") from None
    lines = [line.split("#", 1)[0] for line in text.splitlines()]
    return " ".join(" ".join(lines).split())


# The names tcpdump prints for link types (libpcap's pcap_datalink_val_to_name
# and _description).
LINKTYPE_NAMES = {
    0: ("NULL", "BSD loopback"),
    1: ("EN10MB", "Ethernet"),
    101: ("RAW", "Raw IP"),
    113: ("LINUX_SLL", "Linux cooked v1"),
    276: ("LINUX_SLL2", "Linux cooked v2"),
}


def linktypeText(linktype: int) -> str:
    name, description = LINKTYPE_NAMES.get(linktype, (f"DLT {linktype}", "unknown"))
    return f"{name} ({description})"


def _exitStatus(error: BaseException) -> ExitStatus:
    """
    Mistakes in the command line or the config file (an option, a value,
    the filter, the interface's name) are usage errors; the rest is a
    failure to capture, read or write.
    """
    if isinstance(error, usage.UsageError | ConfigError | FilterError | UnknownInterfaceError):
        return ExitStatus.USAGE
    return ExitStatus.FAILED


@implementer(ILogObserver)
class Messages:
    """
    The command's messages on standard error, as tcpdump words them, from
    the sniffer's log events; the counters it ends with are kept in
    L{final}, printed once the output is closed.
    """

    def __init__(self, stderr: IO[str]) -> None:
        self.stderr = stderr
        self.final: list[str] = []

    def line(self, text: str) -> None:
        self.stderr.write(text + "\n")
        self.stderr.flush()

    def __call__(self, event: Mapping[str, Any]) -> None:
        kind = event.get("event")
        if kind == "sniff.opened":
            self.line(
                f"{PROG}: listening on {event['interface']}, link-type "
                f"{linktypeText(event['linktype'])}, snapshot length "
                f"{event['snaplen']} bytes"
            )
        elif kind == "sniff.statistics":
            dropped = event.get("dropped", "unknown")
            lines = [
                f"{event['passed']} packets captured",
                f"{event['seen']} packets received by filter",
                f"{dropped} packets dropped by kernel",
            ]
            if event.get("not_written"):
                lines.append(f"{event['not_written']} packets not written (the output failed)")
            if event.get("final"):
                self.final = lines
            else:
                self.line(", ".join(lines))
        elif kind == "sniff.output_complete":
            self.line(f"{PROG}: {event['reason']}")
        elif event.get("log_level", LogLevel.info) >= LogLevel.warn:
            text = formatEvent(dict(event))
            failure = event.get("log_failure")
            if failure is not None and not isinstance(failure.value, UserError):
                text = f"{text}: {failure.getErrorMessage()}"
            self.line(f"{PROG}: {oneLine(text)}")


def listInterfaces(stdout: IO[str]) -> None:
    """
    C{-D}: the interfaces by index, as tcpdump lists them, then C{any}.
    """
    import socket

    try:
        interfaces = sorted(socket.if_nameindex())
    except OSError:
        interfaces = []
    number = 0
    for number, (_, name) in enumerate(interfaces, 1):
        flags = _interfaceFlags(name)
        stdout.write(f"{number}.{name}{flags}\n")
    stdout.write(f"{number + 1}.any (Pseudo-device that captures on all interfaces)\n")


def _interfaceFlags(name: str) -> str:
    try:
        with open(f"/sys/class/net/{name}/flags") as f:
            flags = int(f.read().strip(), 16)
    except (OSError, ValueError):
        return ""
    words = [w for bit, w in ((0x1, "Up"), (0x40, "Running"), (0x8, "Loopback")) if flags & bit]
    return f" [{', '.join(words)}]" if words else ""


def _switchUser(user: str) -> None:
    """
    C{-Z USER}: become that user (its groups too), now that the capture is
    open; the output is opened after, as that user.
    """
    import pwd

    from twisted.python.util import switchUID

    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise usage.UsageError(f"-Z: no user named {user!r}") from None
    try:
        switchUID(entry.pw_uid, entry.pw_gid)
    except OSError as e:
        raise UserError(f"cannot run as {user}: {(e.strerror or str(e)).lower()}") from None


def runLive(
    command: SniffCommand,
    reactor: ISniffReactor,
    messages: Messages,
    stdout: IO[bytes] | None,
) -> Deferred[ExitStatus]:
    """
    Capture until the count is reached, the files are written, the capture
    fails, or the reactor stops (SIGINT, SIGTERM); the result is the exit
    status.
    """
    sniff = command.config.sniff
    checkSniffing(sniff, None)
    consumer = makeConsumer(sniff, stdout, command.text)
    service = SniffService(sniff, reactor, stdout, standalone=False, consumer=consumer)
    service.privilegedStartService()
    if command.user is not None:
        _switchUser(command.user)
    service.startService()
    done: Deferred[ExitStatus] = Deferred()

    def finished(_: object) -> None:
        if not done.called:
            done.callback(ExitStatus.FAILED if service.failed else ExitStatus.OK)

    service.whenFinished().addCallback(finished)

    def stopping() -> Deferred[None]:
        if service.running:
            service.stopService()
        return service.whenFinished()

    reactor.addSystemEventTrigger("before", "shutdown", stopping)

    def statistics(*_: object) -> None:
        # As tcpdump does on SIGUSR1 (SIGINFO on BSD).
        service.logStatistics()

    signal.signal(signal.SIGUSR1, statistics)
    return done


def main(argv: Sequence[str] | None = None) -> int:
    """
    C{echod-sniff [options] [expression]}: returns the exit status.
    """
    options = Options()
    stderr = sys.stderr
    try:
        options.parseOptions(list(sys.argv[1:] if argv is None else argv))
    except (usage.UsageError, UserError) as e:
        stderr.write(errorLines(PROG, e))
        if isinstance(e, usage.UsageError) and not isinstance(e, UserError):
            stderr.write(f"{PROG}: try {PROG} --help\n")
        return int(_exitStatus(e))
    command = options.command
    if command.listInterfaces:
        listInterfaces(sys.stdout)
        return int(ExitStatus.OK)
    messages = Messages(stderr)
    # A reader that goes away (echod-sniff | head) ends the command as it
    # ends tcpdump and every filter: quietly, by SIGPIPE (Python ignores it).
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    # SIGINT stops a capture even where the shell started it ignoring SIGINT
    # (a background job of a script), as it stops tcpdump: Twisted handles
    # SIGINT only if Python's own handler is in place.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if command.read is not None:
        return int(runOffline(command, messages))
    return _react(command, messages)


def _react(command: SniffCommand, messages: Messages) -> int:
    from twisted.internet.task import react

    stdout = standardOutput()
    globalLogBeginner.beginLoggingTo([messages], redirectStandardIO=False)
    status = [int(ExitStatus.OK)]

    def start(globalReactor: IReactorCore) -> Deferred[None]:
        reactor = reactorProviding(globalReactor, ISniffReactor)
        try:
            done = runLive(command, reactor, messages, stdout)
        except (usage.UsageError, UserError) as e:
            messages.stderr.write(errorLines(PROG, e))
            status[0] = int(_exitStatus(e))
            return Deferred.fromCoroutine(_nothing())

        def exit(code: ExitStatus) -> None:
            status[0] = int(code)

        return done.addCallback(exit)

    try:
        react(start)
    except SystemExit as e:
        if isinstance(e.code, int) and e.code:
            status[0] = e.code
    for line in messages.final:
        messages.line(line)
    return status[0]


async def _nothing() -> None:
    return None


@implementer(IPacketConsumer)
class _Announced:
    """
    A consumer that first says, as tcpdump does, what the file holds.
    """

    def __init__(self, consumer: IPacketConsumer, messages: Messages, path: str) -> None:
        self.consumer = consumer
        self.messages = messages
        self.path = path
        self.packetReceived = consumer.packetReceived
        self.flush = consumer.flush
        self.captureStopped = consumer.captureStopped

    def captureStarted(self, info: CaptureInfo) -> None:
        name = "-" if self.path == "-" else self.path
        self.messages.line(
            f"reading from file {name}, link-type {linktypeText(info.linktype)}, "
            f"snapshot length {info.snaplen}"
        )
        self.consumer.captureStarted(info)


@implementer(IPacketConsumer)
class _Counter:
    """
    C{--count}: takes packets and writes nothing.
    """

    def captureStarted(self, info: CaptureInfo) -> None:
        pass

    def packetReceived(
        self,
        seconds: int,
        nanoseconds: int,
        data: bytes,
        wireLength: int,
        interfaceIndex: int,
        direction: int,
    ) -> None:
        pass

    def flush(self) -> None:
        pass

    def captureStopped(self, statistics: CaptureStatistics | None = None) -> None:
        pass


def runOffline(
    command: SniffCommand,
    messages: Messages,
    stdout: IO[bytes] | None = None,
    stdin: IO[bytes] | None = None,
) -> ExitStatus:
    """
    C{-r FILE}: the file's packets that match the expression, to the
    output in its format (a filter and a converter), as tcpdump reads it:
    the packets before a damage are written, then one line says what is
    wrong, and the status is 1.
    """
    assert command.read is not None
    sniff = command.config.sniff
    if stdout is None:
        stdout = standardOutput()
    consumer: IPacketConsumer = (
        _Counter() if command.countOnly else makeConsumer(sniff, stdout, command.text)
    )
    announced = _Announced(consumer, messages, command.read)
    status = ExitStatus.OK
    statistics: OfflineStatistics | None
    try:
        statistics = readCaptureFile(command.read, sniff.filter, announced, sniff.count, stdin)
    except CaptureFileError as e:
        statistics = e.statistics
        messages.stderr.write(errorLines(PROG, e))
        status = ExitStatus.FAILED
    except UserError as e:
        messages.stderr.write(errorLines(PROG, e))
        return _exitStatus(e)
    if command.countOnly and statistics is not None:
        out = sys.stdout
        out.write(f"{statistics.matched} packets\n")
        out.flush()
    return status
