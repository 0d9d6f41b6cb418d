# -*- test-case-name: tests.unit.test_config -*-
"""
echod's configuration: one TOML file, one table per part, every key with a default.

The file is read with L{tomllib}, then every value is checked against the schema
below: unknown tables and keys are errors, values are never coerced across types
(an integer may stand for a float, nothing else), and the first problem becomes a
L{ConfigError} whose message names the file, the line, the key, the value and what
is allowed.  An empty file, or no file at all, gives the embedded defaults.

The schema is the dataclasses themselves: each field carries a validator and a
one-line description in its metadata, so the sample file in C{etc/} and the
README's reference can be checked against one source of truth.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import importlib.util
import ipaddress
import json
import math
import os
import re
import stat
import sys
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from echod.errors import MAX_LINE, UserError, oneLine

__all__ = [
    "DEFAULT_LISTEN",
    "DEFAULT_LISTEN_IPV4",
    "ClientConfig",
    "Config",
    "ConfigError",
    "DatagramEndpoint",
    "FileProblem",
    "LogConfig",
    "MetricsConfig",
    "ServerConfig",
    "SniffConfig",
    "UDPConfig",
    "checkInheritedSockets",
    "clientEndpointTypes",
    "endpointParameters",
    "errorAbout",
    "errorAt",
    "load",
    "loads",
    "override",
    "parseDatagramEndpoint",
    "readRegularFile",
    "sections",
    "setting",
    "tcp6ClientParameters",
    "withBacklog",
]

DEFAULT_LISTEN = r"tcp6:port=7007:interface=\:\:"
DEFAULT_LISTEN_IPV4 = "tcp:port=7007"

# Bounds on what echod reads, so that no input costs more than a moment and a
# few megabytes: the config file's size, how deep arrays and inline tables
# nest, how many parts a dotted key has, how long a number is written.
MAX_CONFIG_BYTES = 1024 * 1024
MAX_NESTING = 32
MAX_KEY_PARTS = 32
MAX_NUMBER_CHARS = 100
# Files named in endpoint strings (keys, certificates, DH parameters) and the
# directories of CA certificates Twisted reads when it parses the string.
MAX_PEM_BYTES = 1024 * 1024
MAX_CA_FILES = 1000
MAX_ENDPOINT_CHARS = 8192
# sun_path is 108 bytes on Linux (104 on the BSDs and macOS), with its NUL.
MAX_UNIX_PATH_BYTES = 107 if sys.platform.startswith("linux") else 103
# How much of a value, a key and a file name an error message quotes.
_SHOW_VALUE = 80
_SHOW_KEY = 100
_SHOW_SOURCE = 200
_SHOW_PROBLEM = 600
# How many problems of one file an error lists; the rest are counted.
MAX_PROBLEMS = 20

T = TypeVar("T")


class ConfigError(UserError):
    """
    A configuration value the user must fix, or several at once.

    C{str()} of one problem is one line: C{FILE: line N: KEY = VALUE: PROBLEM},
    with the parts that are known.  An error made of several problems
    (L{combine}) has them in L{problems}; its C{str()} is their lines joined by
    newlines, at most L{MAX_PROBLEMS} of them and then C{... and N more}.  The
    CLI prints each line of L{lines} as it is and exits non-zero.
    """

    def __init__(
        self,
        problem: str,
        *,
        source: str | None = None,
        line: int | None = None,
        key: str | None = None,
        value: object = dataclasses.MISSING,
    ) -> None:
        super().__init__(problem)
        self.problem = problem
        self.source = source
        self.line = line
        self.key = key
        self.value = value
        self.problems: tuple[ConfigError, ...] = (self,)

    @classmethod
    def combine(cls, errors: Sequence[ConfigError]) -> ConfigError:
        """
        One error for all of C{errors} (each possibly combined already), in
        their order; the first gives the attributes of a single problem.
        """
        problems = tuple(p for e in errors for p in e.problems)
        if len(problems) == 1:
            return problems[0]
        first = problems[0]
        combined = cls(
            first.problem, source=first.source, line=first.line, key=first.key, value=first.value
        )
        combined.problems = problems
        return combined

    def lines(self) -> list[str]:
        """
        One bounded line per problem, at most L{MAX_PROBLEMS} and a last one
        saying how many more there are.
        """
        if len(self.problems) == 1:
            return [self._line()]
        shown = [p._line() for p in self.problems[:MAX_PROBLEMS]]
        if len(self.problems) > MAX_PROBLEMS:
            shown.append(f"... and {len(self.problems) - MAX_PROBLEMS} more")
        return shown

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def _line(self) -> str:
        """
        One line of bounded length, whatever the file name, key and value
        are: each is shortened, and escaped where it is not printable.
        """
        parts = []
        if self.source is not None:
            parts.append(_showSource(self.source))
        if self.line is not None:
            parts.append(f"line {self.line}")
        if self.key is not None:
            key = oneLine(self.key, _SHOW_KEY)
            if self.value is dataclasses.MISSING:
                parts.append(key)
            else:
                parts.append(f"{key} = {_show(self.value)}")
        parts.append(oneLine(self.problem, _SHOW_PROBLEM))
        return oneLine(": ".join(parts), MAX_LINE)


def _showSource(source: str) -> str:
    """
    A file name, escaped; a long one keeps its end, where its name is.
    """
    if len(source) > _SHOW_SOURCE:
        source = "\u2026" + source[-(_SHOW_SOURCE - 1) :]
    return oneLine(source, 2 * _SHOW_SOURCE)


def _show(value: object, limit: int = _SHOW_VALUE, depth: int = 0) -> str:
    """
    Render a value the way it is written in TOML, so the user recognises it:
    at most about C{limit} characters, escaped, a long string followed by its
    length.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        shown = oneLine(value, limit, quote=True)
        cut = len(value) > limit or (shown.endswith("\u2026") and not value.endswith("\u2026"))
        return f'"{shown}" ({len(value)} characters)' if cut else f'"{shown}"'
    if isinstance(value, int):
        if value.bit_length() > 3 * limit:
            # str() of an integer over 4,300 digits raises ValueError.
            return f"(an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits)"
        return oneLine(str(value), limit)
    if isinstance(value, list | tuple | dict):
        if depth > 3:
            return "[\u2026]" if not isinstance(value, dict) else "{\u2026}"
        items = value.items() if isinstance(value, dict) else enumerate(value)
        pieces, length = [], 0
        for key, item in items:
            piece = _show(item, limit, depth + 1)
            if isinstance(value, dict):
                piece = f"{oneLine(str(key), limit)} = {piece}"
            if length + len(piece) > limit:
                pieces.append("\u2026")
                break
            pieces.append(piece)
            length += len(piece) + 2
        opening, closing = ("{", "}") if isinstance(value, dict) else ("[", "]")
        return opening + ", ".join(pieces) + closing
    return oneLine(str(value), limit)


class _Invalid(ValueError):
    """
    Raised by a validator; the text says what is allowed.  C{index} is set when
    the fault is in one item of a list (1-based, as people count).
    """

    def __init__(self, allowed: str, index: int | None = None, item: object = None) -> None:
        super().__init__(allowed)
        self.index = index
        self.item = item


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


# --- validators: raw TOML value in, final value out ---------------------------


class _Kind(Generic[T]):
    def __call__(self, value: object) -> T:
        raise NotImplementedError


class _Int(_Kind[int]):
    def __init__(self, low: int, high: int, unit: str = "") -> None:
        self.low, self.high, self.unit = low, high, unit

    def __call__(self, value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Invalid(self.allowed())
        if not self.low <= value <= self.high:
            raise _Invalid(self.allowed())
        return value

    def allowed(self) -> str:
        return f"expected an integer{self.unit} from {self.low} to {self.high}"


class _Float(_Kind[float]):
    """
    A number from C{low} to C{high}; with C{zeroOr}, 0 (off) or a number
    from C{low} (an interval that small would be a busy loop).
    """

    def __init__(self, low: float, high: float, unit: str = "", zeroOr: bool = False) -> None:
        self.low, self.high, self.unit, self.zeroOr = low, high, unit, zeroOr

    def __call__(self, value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Invalid(self.allowed())
        if isinstance(value, int) and not -(2**64) < value < 2**64:
            raise _Invalid(self.allowed())
        number = float(value)
        if self.zeroOr and number == 0:
            return number
        if math.isnan(number) or not self.low <= number <= self.high:
            raise _Invalid(self.allowed())
        return number

    def allowed(self) -> str:
        zero = ": 0, or" if self.zeroOr else ""
        return (
            f"expected a number{self.unit}{zero} from {_number(self.low)} to {_number(self.high)}"
        )


class _Bool(_Kind[bool]):
    def __call__(self, value: object) -> bool:
        if not isinstance(value, bool):
            raise _Invalid("expected true or false")
        return value


class _Str(_Kind[str]):
    def __init__(
        self,
        choices: Sequence[str] = (),
        check: Callable[[str], str] | None = None,
        what: str = "a string",
    ) -> None:
        self.choices, self.check, self.what = tuple(choices), check, what

    def __call__(self, value: object) -> str:
        if not isinstance(value, str):
            raise _Invalid(f"expected {self.allowed()}")
        if self.choices and value not in self.choices:
            raise _Invalid(f"expected {self.allowed()}")
        return self.check(value) if self.check else value

    def allowed(self) -> str:
        if self.choices:
            return "one of " + ", ".join(json.dumps(c) for c in self.choices)
        return self.what


class _List(_Kind[tuple[T, ...]]):
    def __init__(self, item: _Kind[T], what: str, maxItems: int = 1024) -> None:
        self.item, self.what, self.maxItems = item, what, maxItems

    def __call__(self, value: object) -> tuple[T, ...]:
        if not isinstance(value, list):
            raise _Invalid(f"expected a list of {self.what}")
        if len(value) > self.maxItems:
            raise _Invalid(f"expected at most {self.maxItems} items")
        result = []
        for index, item in enumerate(value):
            try:
                result.append(self.item(item))
            except _Invalid as e:
                raise _Invalid(str(e), index + 1, item) from None
        return tuple(result)


def _network(text: str) -> str:
    try:
        return str(ipaddress.ip_network(text, strict=True))
    except ValueError:
        pass
    try:
        loose = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise _Invalid(
            "expected a network in CIDR notation, such as 192.0.2.0/24 or 2001:db8::/32"
        ) from None
    raise _Invalid(f"host bits are set; the network is {loose}")


def _portRange(value: object) -> tuple[int, int]:
    """
    A port (C{53}) or an inclusive range written as a string (C{"0-1023"}).
    """
    if isinstance(value, int) and not isinstance(value, bool):
        if 0 <= value <= 65535:
            return (value, value)
    elif isinstance(value, str):
        match = re.fullmatch(r"\s*([0-9]{1,5})\s*-\s*([0-9]{1,5})\s*", value)
        if match:
            low, high = int(match.group(1)), int(match.group(2))
            if low <= high <= 65535:
                return (low, high)
    raise _Invalid('expected a port from 0 to 65535 or a range such as "0-1023"')


class _PortRange(_Kind[tuple[int, int]]):
    def __call__(self, value: object) -> tuple[int, int]:
        return _portRange(value)


# --- endpoint strings -----------------------------------------------------------


def _splitDescription(description: str) -> list[str]:
    """
    Split a Twisted endpoint description on the colons that are not escaped with
    a backslash, keeping the escapes (the pieces are put back together as they
    were).
    """
    pieces, current, escaped = [], [], False
    for char in description:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            current.append(char)
            escaped = True
        elif char == ":":
            pieces.append("".join(current))
            current = []
        else:
            current.append(char)
    pieces.append("".join(current))
    return pieces


def _unescape(piece: str) -> str:
    return re.sub(r"\\(.)", r"\1", piece)


def endpointParameters(description: str) -> tuple[str, list[str], dict[str, str]]:
    """
    The type, positional arguments and keyword arguments (unescaped) of an
    endpoint description, with any C{haproxy:} prefixes removed.
    """
    pieces = _splitDescription(description)
    while pieces and pieces[0].lower() == "haproxy":
        pieces = pieces[1:]
    kind = pieces[0] if pieces else ""
    args, kwargs = [], {}
    for piece in pieces[1:]:
        key, sep, value = piece.partition("=")
        if sep and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            kwargs[key] = _unescape(value)
        else:
            args.append(_unescape(piece))
    return kind, args, kwargs


def _quoted(text: str) -> str:
    return "'" + oneLine(text, _SHOW_VALUE) + "'"


def _checkPort(text: str | None, kind: str) -> None:
    if text is None:
        raise _Invalid(f"a {kind}: endpoint needs a port, such as {kind}:port=7007")
    # Not str.isdigit() or int() alone: both take digits of every script.
    if not re.fullmatch(r"[0-9]{1,5}", text) or not 0 <= int(text) <= 65535:
        raise _Invalid(f"port {_quoted(text)} is not a port number from 0 to 65535")


class FileProblem(ValueError):
    """
    A named file echod will not read: missing, unreadable, not a regular file
    (a FIFO would block, a device never end), or too large.
    """


def _fileKind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _openRegular(path: str, limit: int) -> int:
    """
    Open C{path} for reading only if it is a regular file of at most C{limit}
    bytes, without blocking on a FIFO or touching a device: it is looked at
    first, opened non-blocking, and looked at again through the descriptor.
    """
    try:
        if stat.S_ISREG(os.stat(path).st_mode):
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
        else:
            fd = -1
    except OSError as e:
        raise FileProblem(e.strerror or str(e)) from None
    except ValueError:
        raise FileProblem("not a possible file name (a NUL character?)") from None
    if fd < 0:
        raise FileProblem(f"it is {_fileKind(os.stat(path).st_mode)}, not a regular file")
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
        os.close(fd)
        if not stat.S_ISREG(info.st_mode):
            raise FileProblem(f"it is {_fileKind(info.st_mode)}, not a regular file")
        raise FileProblem(f"it is larger than {_size(limit)} ({info.st_size} bytes)")
    return fd


def _size(count: int) -> str:
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if count >= factor and count % factor == 0:
            return f"{count // factor} {unit}"
    return f"{count} bytes"


def readRegularFile(path: str, limit: int) -> bytes:
    """
    The contents of C{path}, if it is a regular file of at most C{limit}
    bytes (a file that grows while it is read is cut off at C{limit + 1}).

    @raise FileProblem: otherwise; the text says why, without the name.
    """
    fd = _openRegular(path, limit)
    chunks, total = [], 0
    try:
        # os.read on the non-blocking descriptor: a "regular" file that has
        # nothing to give (/proc/kmsg) says so instead of blocking.
        while total <= limit:
            chunk = os.read(fd, min(1024 * 1024, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except BlockingIOError:
        raise FileProblem("reading it would block") from None
    except OSError as e:
        raise FileProblem(e.strerror or str(e)) from None
    finally:
        os.close(fd)
    if total > limit:
        raise FileProblem(f"it is larger than {_size(limit)}")
    return b"".join(chunks)


def _checkFile(text: str, name: str) -> None:
    try:
        os.close(_openRegular(text, MAX_PEM_BYTES))
    except FileProblem as e:
        raise _Invalid(f"{name}={_quoted(text)}: {e}") from None


def _checkDirectory(text: str, name: str) -> None:
    """
    Twisted reads every C{*.pem} file of a CA directory when it parses the
    endpoint string: each must be a file echod would read, and not too many.
    """
    try:
        if not stat.S_ISDIR(os.stat(text).st_mode):
            raise _Invalid(f"{name}={_quoted(text)}: not a directory")
        with os.scandir(text) as entries:
            pems = []
            for index, entry in enumerate(entries):
                if index >= 10 * MAX_CA_FILES:
                    break
                if entry.name.split(".")[-1].lower() == "pem":
                    pems.append(entry.path)
    except OSError as e:
        raise _Invalid(f"{name}={_quoted(text)}: {e.strerror or e}") from None
    except ValueError:
        raise _Invalid(f"{name}={_quoted(text)}: not a possible file name") from None
    if index >= 10 * MAX_CA_FILES or len(pems) > MAX_CA_FILES:
        raise _Invalid(f"{name}={_quoted(text)}: more than {MAX_CA_FILES} certificates")
    for path in pems:
        _checkFile(path, name)


# The parameters of Twisted's endpoint strings, in the order positional
# arguments take them.
_SERVER_PARAMETERS = {
    "tcp": ("port", "interface", "backlog"),
    "tcp6": ("port", "backlog", "interface"),
    "ssl": (
        "port",
        "privateKey",
        "certKey",
        "sslmethod",
        "interface",
        "backlog",
        "extraCertChain",
        "dhParameters",
    ),
    "unix": ("address", "mode", "backlog", "lockfile"),
}
_CLIENT_PARAMETERS = {
    "tcp": ("host", "port"),
    "tcp6": ("host", "port"),
    "ssl": ("host", "port"),
    "unix": ("path",),
    "tls": ("host", "port", "timeout", "bindAddress", "certificate", "privateKey", "trustRoots"),
}
# Parameters that name a file, or a directory of files, Twisted reads while it
# parses the string.
_FILES = ("privateKey", "certKey", "extraCertChain", "dhParameters", "certificate")
_DIRECTORIES = ("caCertsDir", "trustRoots")


def _named(kind: str, table: Mapping[str, Sequence[str]], description: str) -> dict[str, str]:
    """
    Every argument of an endpoint description under its parameter's name.
    """
    _, args, kwargs = endpointParameters(description)
    names = table.get(kind, ())
    if table is _CLIENT_PARAMETERS and len(args) == 1 and "host" in kwargs:
        names = ("port",)  # tcp:host=H:PORT, as Twisted reads it
    named = dict(zip(names, args, strict=False))
    named.update(kwargs)
    return named


def _checkParameters(kind: str, named: Mapping[str, str]) -> None:
    """
    What Twisted leaves to C{int()} (which takes any script's digits and any
    size) or to the moment of listening: numbers are ASCII and in range, a
    unix socket's path fits the kernel's limit, the files it reads are
    regular files of sane size.
    """
    if "port" in named:
        _checkPort(named["port"], kind)
    numbers = {"backlog": (1, 65535), "timeout": (1, 86400), "lockfile": (0, 1)}
    for name, (low, high) in numbers.items():
        text = named.get(name)
        if text is not None and (
            not re.fullmatch(r"[0-9]{1,6}", text) or not low <= int(text) <= high
        ):
            raise _Invalid(f"{name}={_quoted(text)} is not a whole number from {low} to {high}")
    mode = named.get("mode")
    if mode is not None and not re.fullmatch(r"[0-7]{1,4}", mode):
        raise _Invalid(f"mode={_quoted(mode)} is not an octal file mode such as 660")
    for name in ("address", "path"):
        path = named.get(name)
        if kind == "unix" and path is not None:
            # A leading NUL is Linux's abstract namespace.
            try:
                size = len(os.fsencode(path)) if "\0" not in path[1:] else -1
            except UnicodeError:
                size = -1
            if not 0 < size <= MAX_UNIX_PATH_BYTES:
                raise _Invalid(
                    f"a unix socket path must be 1 to {MAX_UNIX_PATH_BYTES} bytes "
                    "without NUL (the kernel's limit)"
                )
    for name in _FILES:
        if name in named:
            _checkFile(named[name], name)
    for name in _DIRECTORIES:
        if name in named:
            _checkDirectory(named[name], name)


def _checkInterface(text: str | None, version: int) -> None:
    if not text:
        return
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise _Invalid(f"interface {_quoted(text)} is not an IPv{version} address") from None
    if address.version != version:
        family = "tcp6:" if address.version == 6 else "tcp:"
        raise _Invalid(
            f"interface {_quoted(text)} is not an IPv{version} address (use {family} for it)"
        )


class _NoReactor:
    """
    Stands in for the reactor while endpoint descriptions are only being parsed:
    parsing stores the reactor and never uses it.
    """


def _streamServer(description: str) -> str:
    """
    Check a stream server endpoint description the way Twisted will parse it,
    plus the checks Twisted leaves to the moment of listening (port range,
    address family of the interface).
    """
    from twisted.internet.endpoints import serverFromString

    if len(description) > MAX_ENDPOINT_CHARS:
        raise _Invalid(f"an endpoint string is at most {MAX_ENDPOINT_CHARS} characters")
    prefixes = [p for p in _splitDescription(description)[:3] if p.lower() == "haproxy"]
    if prefixes and (prefixes != ["haproxy"] or not description.startswith("haproxy:")):
        # echod reads one PROXY header itself, after the one prefix it knows.
        raise _Invalid('a PROXY listener is written with one "haproxy:" prefix, in lower case')
    kind, _, kwargs = endpointParameters(description)
    kind = kind.lower()
    named = _named(kind, _SERVER_PARAMETERS, description)
    if kind in ("tcp", "tcp6", "ssl"):
        _checkPort(named.get("port"), kind)
        _checkInterface(named.get("interface"), 6 if kind == "tcp6" else 4)
    elif kind == "unix":
        if not named.get("address"):
            raise _Invalid("a unix: endpoint needs a path, such as unix:/run/echod.sock")
    elif kind == "systemd":
        # Whether systemd passed the named socket is known only where echod
        # starts; here only the form is checked.
        if kwargs.get("domain") not in ("INET", "INET6", "UNIX"):
            raise _Invalid("a systemd: endpoint needs domain=INET, INET6 or UNIX")
        if "name" not in kwargs and "index" not in kwargs:
            raise _Invalid("a systemd: endpoint needs name=NAME (as in FileDescriptorName=)")
        index = kwargs.get("index")
        if index is not None and not re.fullmatch(r"[0-9]{1,4}", index):
            raise _Invalid(f"index={_quoted(index)} is not a whole number from 0 to 9999")
        return description
    if kind == "ssl":
        # Twisted's defaults, read when the string is parsed.
        named.setdefault("privateKey", "server.pem")
        named.setdefault("certKey", named["privateKey"])
    _checkParameters(kind, named)
    try:
        serverFromString(_NoReactor(), description)
    except Exception as e:
        reason = str(e) or type(e).__name__
        raise _Invalid(f"not a valid Twisted server endpoint: {reason}") from None
    return description


def withBacklog(description: str, backlog: int) -> str:
    """
    Add C{backlog=N} to a listening endpoint description that can take one and
    does not name its own (Twisted's default of 50 turns a burst of connects into
    seconds of SYN retries).
    """
    kind, _, kwargs = endpointParameters(description)
    if kind in ("tcp", "tcp6", "ssl", "unix") and "backlog" not in kwargs:
        return f"{description}:backlog={backlog}"
    return description


@dataclass(frozen=True)
class DatagramEndpoint:
    """
    A UDP listening address: echod's own C{udp:port=N[:interface=ADDR]} form,
    since Twisted has no datagram endpoint strings.
    """

    port: int
    interface: str = "::"

    def __str__(self) -> str:
        interface = self.interface.replace(":", "\\:")
        return f"udp:port={self.port}:interface={interface}"


def parseDatagramEndpoint(description: str) -> DatagramEndpoint:
    """
    Parse C{udp:port=N}, C{udp:N}, C{udp:port=N:interface=ADDR}; the default
    interface C{::} is dual-stack.
    """
    pieces = _splitDescription(description)
    if pieces[0] != "udp":
        raise _Invalid('expected a UDP endpoint such as "udp:port=7007"')
    args, kwargs = [], {}
    for piece in pieces[1:]:
        key, sep, value = piece.partition("=")
        if sep:
            kwargs[key] = _unescape(value)
        else:
            args.append(_unescape(piece))
    unknown = set(kwargs) - {"port", "interface"}
    if unknown or len(args) > 1 or (args and "port" in kwargs):
        raise _Invalid('expected "udp:port=N" with an optional ":interface=ADDRESS"')
    _checkPort(kwargs.get("port", args[0] if args else None), "udp")
    interface = kwargs.get("interface", "::")
    try:
        ipaddress.ip_address(interface)
    except ValueError:
        raise _Invalid(f"interface {_quoted(interface)} is not an IP address") from None
    return DatagramEndpoint(int(kwargs.get("port", args[0] if args else "0")), interface)


def _datagramServer(description: str) -> str:
    if description.startswith("systemd:"):
        _, _, kwargs = endpointParameters(description)
        if kwargs.get("domain") not in ("INET", "INET6") or not kwargs.get("name"):
            raise _Invalid(
                "a systemd: datagram socket needs domain=INET or INET6 and name=NAME "
                "(FileDescriptorName= of its .socket unit)"
            )
        return description
    parseDatagramEndpoint(description)
    return description


def _checkClientParameters(description: str, depth: int = 0) -> None:
    if len(description) > MAX_ENDPOINT_CHARS:
        raise _Invalid(f"an endpoint string is at most {MAX_ENDPOINT_CHARS} characters")
    kind = _splitDescription(description)[0].lower()
    named = _named(kind, _CLIENT_PARAMETERS, description)
    _checkParameters(kind, named)
    inner = named.get("endpoint")
    if kind == "tls" and inner is not None:
        if depth >= 4:
            raise _Invalid("tls: endpoints nest at most 4 deep")
        _checkClientParameters(inner, depth + 1)


# Client endpoint types Twisted parses itself; others come from plugins.
_TWISTED_CLIENT_TYPES = ("tcp", "ssl", "unix")


def clientEndpointTypes() -> list[str]:
    """
    The client endpoint types this installation takes: Twisted's own, echod's
    C{tcp6:} and those of Twisted's endpoint plugins (such as C{tls:}).
    """
    from twisted.internet.interfaces import IStreamClientEndpointStringParserWithReactor
    from twisted.plugin import getPlugins

    plugins = getPlugins(IStreamClientEndpointStringParserWithReactor)
    found = {str(getattr(p, "prefix", "")).lower() for p in plugins} - {""}
    return ["tcp", "tcp6", "ssl", "unix", *sorted(found - {"tcp", "tcp6", "ssl", "unix"})]


_TCP6_HINT = r"tcp6:host=\:\:1:port=7007"


def tcp6ClientParameters(description: str) -> tuple[str, int, float | None, str | None]:
    """
    The host, port, timeout and bind address of a C{tcp6:} client endpoint:
    echod's own type (Twisted has none), a TCP connection over IPv6 only, to
    an IPv6 address (a host name over IPv6 is C{-6 HOST PORT}).
    """
    named = _named("tcp6", _CLIENT_PARAMETERS, description)
    _, args, _ = endpointParameters(description)
    unknown = sorted(set(named) - {"host", "port", "timeout", "bindAddress"})
    host = named.get("host", "")
    if len(args) > 2 or (not host and args):
        # tcp6:host=::1:port=7 splits at every colon of the address.
        raise _Invalid(f"write the colons of an IPv6 address as \\:, such as {_TCP6_HINT}")
    if unknown:
        raise _Invalid(
            f"a tcp6: endpoint takes host, port, timeout and bindAddress, not {unknown[0]}"
        )
    if not host or "port" not in named:
        raise _Invalid(f"a tcp6: endpoint needs host=IPV6ADDRESS and port=N, such as {_TCP6_HINT}")
    _checkParameters("tcp6", named)
    for name in ("host", "bindAddress"):
        text = named.get(name)
        if text is None:
            continue
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            raise _Invalid(
                f"{name} {_quoted(text)} is not an IPv6 address (for a host name over IPv6: "
                '-6 HOST PORT, or host and family = "ipv6" in [client])'
            ) from None
        if address.version != 6:
            raise _Invalid(f"{name} {_quoted(text)} is not an IPv6 address (use tcp: for it)")
    timeout = named.get("timeout")
    return (
        host,
        int(named["port"]),
        float(timeout) if timeout is not None else None,
        named.get("bindAddress"),
    )


def _streamClient(description: str) -> str:
    from twisted.internet.endpoints import clientFromString

    if len(description) > MAX_ENDPOINT_CHARS:
        raise _Invalid(f"an endpoint string is at most {MAX_ENDPOINT_CHARS} characters")
    kind = _splitDescription(description)[0].lower()
    if kind == "tcp6":
        tcp6ClientParameters(description)
        return description
    types = clientEndpointTypes() if kind not in _TWISTED_CLIENT_TYPES else []
    if types and kind not in types:
        raise _Invalid(
            f"unknown client endpoint type {_quoted(kind)}: the types here are "
            + ", ".join(f"{t}:" for t in types)
        )
    _checkClientParameters(description)
    try:
        clientFromString(_NoReactor(), description)
    except Exception as e:
        reason = str(e) or type(e).__name__
        raise _Invalid(f"not a valid Twisted client endpoint: {reason}") from None
    return description


def _optionalStreamServer(description: str) -> str:
    return _streamServer(description) if description else description


# --- the schema ---------------------------------------------------------------


def setting(default: Any, kind: _Kind[Any], doc: str) -> Any:
    """
    A config key: its default, its validator and a one-line description.
    """
    if isinstance(default, list):
        raise TypeError("use a tuple for list defaults")
    return field(default=default, metadata={"kind": kind, "doc": doc})


_durations = _Float(0, 86400 * 365, " of seconds")


def _account(text: str) -> str:
    """
    A user or group name, or a number written in ASCII digits (C{isdigit()}
    and C{int()} would take any script's digits and pick the wrong account).
    """
    if text.isdigit() and not (text.isascii() and int(text) < 2**32 - 1):
        raise _Invalid("expected a name, or a number from 0 to 4294967294 in ASCII digits")
    if "\0" in text or len(text) > 256:
        raise _Invalid("expected a name of at most 256 characters, without NUL")
    return text


_PORT = _Int(0, 65535)


@dataclass(frozen=True)
class ServerConfig:
    """
    The TCP (stream) echo service.
    """

    table: ClassVar[str] = "server"

    listen: tuple[str, ...] = setting(
        (DEFAULT_LISTEN,),
        _List(_Str(check=_streamServer, what="an endpoint string"), "endpoint strings"),
        "Twisted server endpoint strings to listen on (tcp6:, tcp:, unix:, ssl:, "
        "systemd:, haproxy:...); tcp6 on :: is dual-stack",
    )
    backlog: int = setting(
        1024,
        _Int(1, 65535),
        "listen backlog added to tcp/tcp6/ssl/unix endpoints that name none",
    )
    max_connections: int = setting(
        10000, _Int(0, 10_000_000), "open connections at most, all peers together; 0: no limit"
    )
    max_connections_per_peer: int = setting(
        0, _Int(0, 10_000_000), "open connections at most from one peer address; 0: no limit"
    )
    idle_timeout: float = setting(
        300.0,
        _Float(0.1, 86400 * 365, " of seconds", zeroOr=True),
        "abort a connection that sent nothing for this long (checked four times per "
        "period: within 1.25 times it); 0: never",
    )
    pressure_idle_timeout: float = setting(
        10.0,
        _durations,
        "when max_connections or max_connections_per_peer is reached, a newcomer takes the "
        "place of the connection idle longest, if idle at least this long; 0: any idle one",
    )
    shutdown_timeout: float = setting(
        10.0,
        _durations,
        "on SIGTERM, how long open connections may finish echoing before they are cut",
    )
    drain_quiet: float = setting(
        2.0,
        _Float(0.1, 3600, " of seconds"),
        "on SIGTERM, a connection silent for this long is done and closed in order "
        "(within shutdown_timeout)",
    )
    user: str = setting(
        "",
        _Str(check=_account, what="a user name or number"),
        "after opening its sockets, run as this user (as twistd --uid does); empty: stay",
    )
    group: str = setting(
        "",
        _Str(check=_account, what="a group name or number"),
        "after opening its sockets, run as this group (twistd --gid); empty: the user's",
    )
    workers: int = setting(
        1,
        _Int(1, 256),
        "processes serving the stream listeners (tcp: a SO_REUSEPORT socket each; restarted "
        "if they die); limits apply per process",
    )
    fast_paths: bool = setting(
        True,
        _Bool(),
        "send echo at once and poll lean (Linux, Twisted 26.10); false: Twisted's stock "
        "reactor and transports",
    )
    proxy_header_timeout: float = setting(
        5.0,
        _Float(0.001, 3600, " of seconds"),
        "on haproxy: listeners, how long the PROXY header may take to arrive",
    )
    trusted_proxies: tuple[str, ...] = setting(
        ("127.0.0.0/8", "::1/128"),
        _List(_Str(check=_network, what="a CIDR network"), "CIDR networks"),
        "on haproxy: listeners, only connections from these networks may send a PROXY "
        "header; others are refused before a byte is read",
    )
    allow: tuple[str, ...] = setting(
        (),
        _List(_Str(check=_network, what="a CIDR network"), "CIDR networks"),
        "if not empty, only peers in these networks are served",
    )
    deny: tuple[str, ...] = setting(
        (),
        _List(_Str(check=_network, what="a CIDR network"), "CIDR networks"),
        "peers in these networks are refused (deny wins over allow)",
    )


_DEFAULT_BLOCKED_PORTS = (
    (0, 1023),
    (1900, 1900),
    (2049, 2049),
    (3702, 3702),
    (5353, 5353),
    (5683, 5683),
    (11211, 11211),
)


@dataclass(frozen=True)
class UDPConfig:
    """
    The UDP (datagram) echo service and its guards against loops and reflection.
    """

    table: ClassVar[str] = "udp"

    listen: tuple[str, ...] = setting(
        (),
        _List(_Str(check=_datagramServer, what="a udp: endpoint"), "udp: endpoints"),
        'UDP addresses to echo on, such as "udp:port=7007" (dual-stack), '
        '"udp:port=7:interface=127.0.0.1" or "systemd:domain=INET6:name=echo-udp"; '
        "empty: no UDP",
    )
    blocked_source_ports: tuple[tuple[int, int], ...] = setting(
        _DEFAULT_BLOCKED_PORTS,
        _List(_PortRange(), 'ports or "low-high" ranges'),
        "datagrams from these source ports get no reply (loops with other UDP services)",
    )
    source_packets_per_second: float = setting(
        50.0, _Float(0, 1e9), "replies per second to one source address; 0: no limit"
    )
    source_bytes_per_second: float = setting(
        262144.0, _Float(0, 1e12), "reply bytes per second to one source address; 0: no limit"
    )
    global_packets_per_second: float = setting(
        20000.0, _Float(0, 1e9), "replies per second to all sources together; 0: no limit"
    )
    global_bytes_per_second: float = setting(
        33554432.0, _Float(0, 1e12), "reply bytes per second to all sources; 0: no limit"
    )
    burst_seconds: float = setting(
        1.0, _Float(0.001, 3600), "how many seconds of rate a bucket holds (the burst)"
    )
    max_sources: int = setting(
        65536, _Int(1, 10_000_000), "source addresses tracked for rate limits at most"
    )
    allow: tuple[str, ...] = setting(
        (),
        _List(_Str(check=_network, what="a CIDR network"), "CIDR networks"),
        "if not empty, only sources in these networks get replies",
    )
    deny: tuple[str, ...] = setting(
        (),
        _List(_Str(check=_network, what="a CIDR network"), "CIDR networks"),
        "sources in these networks get no reply (deny wins over allow)",
    )
    drop_log_interval: float = setting(
        10.0, _Float(0.1, 86400), "dropped datagrams are logged as one summary this often"
    )


@dataclass(frozen=True)
class LogConfig:
    """
    Logging: where is twistd's choice (--logfile, --syslog); this is the form.
    """

    table: ClassVar[str] = "log"

    format: str = setting(
        "text", _Str(("text", "json")), 'log lines as "text" or "json" (JSON lines)'
    )
    level: str = setting(
        "info",
        _Str(("debug", "info", "warn", "error", "critical")),
        "lowest level logged",
    )


@dataclass(frozen=True)
class MetricsConfig:
    """
    Prometheus metrics and the health check.
    """

    table: ClassVar[str] = "metrics"

    listen: str = setting(
        "",
        _Str(check=_optionalStreamServer, what="an endpoint string"),
        'endpoint for /metrics and /healthz, such as "tcp:9107:interface=127.0.0.1"; empty: off',
    )
    max_connections: int = setting(
        16,
        _Int(1, 10000),
        "open connections to the metrics listener at most; more are closed at once",
    )
    request_timeout: float = setting(
        10.0,
        _Float(0.1, 3600, " of seconds"),
        "a metrics connection must send its whole request within this long of connecting "
        "(or of its previous response); then it is closed",
    )


def _clientEndpoint(description: str) -> str:
    """
    An empty string (use C{host} and C{port}) or a Twisted client endpoint
    string; C{tls:} needs Twisted's TLS extra, said as such rather than as the
    C{NameError} Twisted raises without it.
    """
    if not description:
        return description
    kind = _splitDescription(description)[0]
    if kind in ("tls", "ssl") and importlib.util.find_spec("OpenSSL") is None:
        raise _Invalid(f"{kind}: endpoints need pyOpenSSL (pip install 'Twisted[tls]')")
    return _streamClient(description)


def _hostName(text: str) -> str:
    if not text.strip() or text != text.strip():
        raise _Invalid("expected a host name or an IP address, without spaces")
    return text


def _filePath(text: str) -> str:
    if "\0" in text:
        raise _Invalid("expected a file path")
    return text


@dataclass(frozen=True)
class ClientConfig:
    """
    The echo client (echod-client, twistd echod-client).
    """

    table: ClassVar[str] = "client"

    host: str = setting(
        "localhost",
        _Str(check=_hostName, what="a host name or address"),
        "host name or address of the echo server; every address it resolves to is tried "
        "(Happy Eyeballs, IPv6 and IPv4)",
    )
    port: int = setting(7007, _Int(1, 65535), "TCP port of the echo server")
    endpoint: str = setting(
        "",
        _Str(check=_clientEndpoint, what="an endpoint string"),
        "a Twisted client endpoint string used instead of host and port, such as "
        '"tcp:host=192.0.2.1:port=7", "unix:path=/run/echod.sock", "tls:echo.example:7443"; '
        "empty: host and port",
    )
    family: str = setting(
        "any",
        _Str(("any", "ipv4", "ipv6")),
        'address family to connect over: "any", "ipv4" (-4) or "ipv6" (-6)',
    )
    message: str = setting("Hello, world", _Str(), "the text to send (UTF-8)")
    file: str = setting(
        "",
        _Str(check=_filePath, what="a file path"),
        'send the contents of this file instead of the message; "-": standard input; '
        "empty: the message",
    )
    count: int = setting(1, _Int(1, 100_000_000), "messages to send; more than 1 is ping mode")
    interval: float = setting(
        1.0,
        _Float(0, 86400, " of seconds"),
        "seconds between messages in ping mode; 0: each as soon as the previous reply is back",
    )
    size: int = setting(
        0,
        _Int(0, 64 * 1024 * 1024, " of bytes"),
        "message size in bytes (the message or file repeated or cut to fit); 0: as it is",
    )
    bulk: int = setting(
        0,
        _Int(0, 2**50, " of bytes"),
        "throughput mode: stream this many bytes, verify them and report MB/s; 0: off",
    )
    timeout: float = setting(
        5.0,
        _Float(0.001, 86400, " of seconds"),
        "seconds allowed to resolve and connect, and for each reply",
    )
    json: bool = setting(False, _Bool(), "print the summary as one JSON object, nothing else")


def _interfaceName(text: str) -> str:
    """
    A network interface name as Linux allows it (at most 15 bytes, no
    slash, colon or white space), or on Windows an IPv4 address.
    """
    if not 0 < len(text.encode("utf-8")) <= 15 or re.search(r"[\s/:]", text) or text in (".", ".."):
        raise _Invalid('expected an interface name such as "eth0", or "any"')
    return text


# libpcap's compiler takes time with the square of a filter's length (4 s at
# 56,000 characters), and the kernel takes at most 4,096 instructions anyway.
MAX_FILTER_CHARS = 8192


def _filterText(text: str) -> str:
    if "\0" in text or len(text) > MAX_FILTER_CHARS:
        raise _Invalid(
            f"expected a tcpdump filter expression of at most {MAX_FILTER_CHARS} "
            "characters, without NUL"
        )
    return text


@dataclass(frozen=True)
class SniffConfig:
    """
    The packet sniffer (twistd echod-sniff, or inside echod with enabled = true).
    """

    table: ClassVar[str] = "sniff"

    enabled: bool = setting(False, _Bool(), "capture inside the echod server process too")
    interface: str = setting(
        "any",
        _Str(check=_interfaceName, what="an interface name"),
        'interface to capture on; "any": all (on Windows: an IPv4 address of one interface)',
    )
    filter: str = setting(
        "",
        _Str(check=_filterText, what="a tcpdump filter"),
        'tcpdump filter expression, run in the kernel, such as "tcp port 7007"; empty: all',
    )
    snaplen: int = setting(262144, _Int(64, 262144, " of bytes"), "bytes kept of each packet")
    promiscuous: bool = setting(
        False, _Bool(), "put the interface in promiscuous mode (not with interface = any)"
    )
    format: str = setting(
        "text",
        _Str(("text", "json", "pcap")),
        'output format: "text" (tcpdump-like lines), "json" (JSON lines) or "pcap"',
    )
    output: str = setting(
        "-", _Str(what="a file path"), 'where packets are written; "-": standard output'
    )
    rotate_bytes: int = setting(
        0,
        _Int(0, 2**50, " of bytes"),
        "start a new output file (FILE1, FILE2...) before this size is passed; 0: never",
    )
    rotate_count: int = setting(
        0,
        _Int(0, 1_000_000),
        "with rotate_bytes, keep this many files (FILE0...), reusing the oldest; 0: all",
    )
    count: int = setting(0, _Int(0, 2**62), "stop after this many packets; 0: never")
    stats_interval: float = setting(
        60.0,
        _Float(1, 86400, " of seconds", zeroOr=True),
        "log capture statistics this often; 0: only at exit",
    )
    buffer_bytes: int = setting(
        8 * 1024 * 1024,
        _Int(65536, 2**31, " of bytes"),
        "size of the kernel capture ring",
    )
    precision: str = setting(
        "micro",
        _Str(("micro", "nano")),
        'pcap timestamps in microseconds ("micro", what every tool reads) or "nano"',
    )


_SECTIONS: tuple[type[Any], ...] = (
    ServerConfig,
    UDPConfig,
    LogConfig,
    MetricsConfig,
    ClientConfig,
    SniffConfig,
)


@dataclass(frozen=True)
class Config:
    """
    The whole configuration; C{source} is the file it came from, or L{None} for
    the embedded defaults.
    """

    server: ServerConfig = field(default_factory=ServerConfig)
    udp: UDPConfig = field(default_factory=UDPConfig)
    log: LogConfig = field(default_factory=LogConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    client: ClientConfig = field(default_factory=ClientConfig)
    sniff: SniffConfig = field(default_factory=SniffConfig)
    source: str | None = None
    # Keys the command line set ("sniff.rotate_count") and the option as the
    # user typed it ("-W"), for errors; and how the command spells the option
    # of each key it has one for (long, short or None).
    given: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)
    spellings: Mapping[str, tuple[str, str | None]] = field(
        default_factory=dict, compare=False, repr=False
    )


# --- loading ------------------------------------------------------------------


class _Lines:
    """
    Where tables and keys are written in a config text (1-based lines).

    L{tomllib} keeps no positions, so this reads the text again, once, the
    simple way: table headers and C{key =} lines, and dotted keys (C{server.port
    = 1}).
    """

    def __init__(self, text: str) -> None:
        self._keys: dict[str, int] = {}
        self._headers: dict[str, int] = {}
        current = ""
        # Both patterns run in linear time, whatever the line holds.
        header = re.compile(r"[ \t]*\[([^\[\]\n]*)\][ \t]*(#.*)?$")
        keyPart = re.compile(r'[A-Za-z0-9_.\-" \t]+')
        for number, line in enumerate(text.split("\n"), 1):
            match = header.match(line)
            if match:
                current = re.sub(r'["\s]', "", match.group(1))
                self._headers.setdefault(current, number)
                continue
            equals = line.find("=", 0, 1000)
            if equals < 0 or not keyPart.fullmatch(line, 0, equals):
                continue
            name = re.sub(r'["\s]', "", line[:equals])
            if not name:
                continue
            full = f"{current}.{name}" if current else name
            # The key itself, and each table it is in (a dotted key's too).
            parts = full.split(".")
            for end in range(1, len(parts) + 1):
                self._keys.setdefault(".".join(parts[:end]), number)

    def of(self, table: str, key: str | None = None) -> int | None:
        """
        The line of C{table.key}; for a table, the first of its header and
        its first key (a dotted key, C{table.key = 1}, needs no header).
        """
        if key is not None:
            return self._keys.get(f"{table}.{key}")
        found = [n for n in (self._headers.get(table), self._keys.get(table)) if n is not None]
        return min(found, default=None)


def _locate(text: str, table: str, key: str | None = None) -> int | None:
    """
    The line (1-based) where C{[table]} or C{key} inside it is written.
    """
    return _Lines(text).of(table, key)


def _suggest(name: str, known: Sequence[str], hint: bool = True) -> str:
    close = difflib.get_close_matches(name, known, n=1) if hint else []
    suggestion = f"did you mean {close[0]}? " if close else ""
    return f"{suggestion}known: {', '.join(known)}"


def _fields(section: type[Any]) -> dict[str, dataclasses.Field[Any]]:
    return {f.name: f for f in dataclasses.fields(section)}


def _inFileOrder(problems: Sequence[ConfigError]) -> list[ConfigError]:
    """
    Problems by line; those without one after, in the order found.
    """
    return sorted(problems, key=lambda p: (p.line is None, p.line or 0))


def _build(
    section: type[T],
    values: Mapping[str, object],
    source: str | None,
    lines: _Lines,
    base: T | None = None,
    origin: str | None = None,
) -> T:
    """
    The table C{section} from C{values}, each key checked on its own.

    @param origin: the command-line option the values came from, which
        errors then name instead of the file, line and key.
    @raise ConfigError: with every unknown key and bad value, in file order.
    """
    table = section.table  # type: ignore[attr-defined]
    known = _fields(section)
    problems: list[ConfigError] = []
    unknown = sorted(
        (name for name in values if name not in known),
        key=lambda name: lines.of(table, name) or 0,
    )
    for count, name in enumerate(unknown):
        # A suggestion for those that will be shown; a file of many
        # unknown keys is not worth a second of difflib.
        problem = f"unknown key ({_suggest(name, list(known), count < MAX_PROBLEMS)})"
        if origin is not None:
            problems.append(ConfigError(problem, key=origin))
        else:
            line = lines.of(table, name)
            problems.append(ConfigError(problem, source=source, line=line, key=f"{table}.{name}"))
    checked: dict[str, object] = {}
    for name, raw in values.items():
        if name not in known:
            continue
        kind = known[name].metadata["kind"]
        try:
            checked[name] = kind(raw)
        except _Invalid as e:
            key, value = f"{table}.{name}", raw
            if e.index is not None:
                key, value = f"{key}[{e.index}]", e.item
            if origin is not None:
                problems.append(ConfigError(str(e), key=origin, value=value))
            else:
                line = lines.of(table, name)
                problems.append(ConfigError(str(e), source=source, line=line, key=key, value=value))
    if problems:
        raise ConfigError.combine(_inFileOrder(problems))
    if base is not None:
        return dataclasses.replace(base, **checked)  # type: ignore[type-var]
    return section(**checked)


class _Names:
    """
    How errors about a loaded configuration name its keys: a value the
    command line gave by the option as the user typed it, a value of the file
    by the file, its line and the key.
    """

    def __init__(self, config: Config, lines: _Lines | None = None) -> None:
        self.config = config
        self._lines = lines

    def lines(self) -> _Lines:
        if self._lines is None:
            text = ""
            if self.config.source is not None:
                with contextlib.suppress(FileProblem, UnicodeDecodeError):
                    text = readRegularFile(self.config.source, MAX_CONFIG_BYTES).decode("utf-8")
            self._lines = _Lines(text)
        return self._lines

    def error(self, key: str, value: object, problem: str, item: int | None = None) -> ConfigError:
        """
        An error about C{key} (C{"sniff.rotate_count"}), or item C{item}
        (1-based) of the list it holds.
        """
        option = self.config.given.get(key)
        if option is not None:
            return ConfigError(problem, key=option, value=value)
        table, _, name = key.partition(".")
        shown = key if item is None else f"{key}[{item}]"
        return ConfigError(
            problem,
            source=self.config.source or None,
            line=self.lines().of(table, name) if self.config.source else None,
            key=shown,
            value=value,
        )

    def name(self, key: str, about: str) -> str:
        """
        How a message about C{about} mentions another key, C{key}: as the
        user gave it (its option, or its key in the file); a key given
        nowhere, by its option (in the form the user typed C{about}'s) when
        C{about} came from the command line, else by its key.
        """
        given = self.config.given
        if key in given:
            return given[key]
        table, _, name = key.partition(".")
        inFile = self.config.source is not None and self.lines().of(table, name) is not None
        if about in given and key in self.config.spellings and not inFile:
            long, short = self.config.spellings[key]
            return short if short is not None and not given[about].startswith("--") else long
        return key


def _check(config: Config, lines: _Lines | None = None) -> Config:
    """
    Rules that involve more than one key; every one broken is told.
    """
    names = _Names(config, lines)
    problems: list[ConfigError] = []
    if config.server.workers > 1:
        for index, description in enumerate(config.server.listen, 1):
            if endpointParameters(description)[0] == "ssl":
                problems.append(
                    names.error(
                        "server.listen",
                        description,
                        "ssl: listeners are served by one process: use workers = 1, or end "
                        "TLS in front of echod",
                        item=index,
                    )
                )
    if not config.server.listen and not config.udp.listen:
        problems.append(
            ConfigError(
                "nothing to listen on: server.listen and udp.listen are both empty",
                source=config.source,
            )
        )
    problems.extend(_checkSniff(names))
    if problems:
        raise ConfigError.combine(_inFileOrder(problems))
    return config


def _checkSniff(names: _Names) -> list[ConfigError]:
    sniff = names.config.sniff
    problems = []
    if sniff.rotate_count and not sniff.rotate_bytes:
        other = names.name("sniff.rotate_bytes", "sniff.rotate_count")
        problems.append(
            names.error(
                "sniff.rotate_count",
                sniff.rotate_count,
                f"needs {other} too (files rotate by size)",
            )
        )
    if sniff.rotate_bytes and sniff.output == "-":
        other = names.name("sniff.output", "sniff.rotate_bytes")
        problems.append(
            names.error(
                "sniff.rotate_bytes",
                sniff.rotate_bytes,
                f"needs {other} to name a file (stdout cannot rotate)",
            )
        )
    if sniff.promiscuous and sniff.interface == "any":
        problems.append(
            names.error("sniff.promiscuous", sniff.promiscuous, 'needs one interface, not "any"')
        )
    return problems


_TOKEN = re.compile(
    r"""
    (?P<multiline>\"\"\"|''')
    | (?P<string>"(?:[^"\\\n]|\\.)*"?|'[^'\n]*'?)
    | (?P<comment>\#[^\n]*)
    | (?P<newline>\n)
    | (?P<bare>[A-Za-z0-9_+\-.:]+)
    | (?P<space>[ \t\r]+)
    | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)
# Runs the screen can pass over in one step, being sure they hold nothing it
# counts: inside an array, short bare values, one-line strings, commas and
# comments; at the top level, lines of a bare key and such a value.
_SHORT_VALUE = r"""
    (?: [A-Za-z0-9_+\-.:]{1,100}(?![A-Za-z0-9_+\-.:])
      | "(?!"")(?:[^"\\\n]|\\.)*" | '(?!'')[^'\n]*' )
"""
_PLAIN_ARRAY_ITEMS = re.compile(rf"(?: {_SHORT_VALUE} | \#[^\n]* | [ \t\r\n,] )+", re.VERBOSE)
_PLAIN_LINES = re.compile(
    rf"""(?: [ \t]* (?: [A-Za-z0-9_\-]{{1,100}} [ \t]*=[ \t]* {_SHORT_VALUE} )?
             [ \t\r]* (?:\#[^\n]*)? \n )+""",
    re.VERBOSE,
)


def _screen(text: str, where: str) -> None:
    """
    Refuse, before L{tomllib} reads it, TOML that would cost it more than a
    moment or a few megabytes, or end in an exception of Python's own: arrays
    and inline tables nested deeper than L{MAX_NESTING} (RecursionError),
    dotted keys of more than L{MAX_KEY_PARTS} parts (time and memory grow with
    the square of their depth), numbers longer than L{MAX_NUMBER_CHARS}
    characters (ValueError past 4,300 digits).

    A small scanner: it knows strings, comments, brackets and where keys are,
    which is all these limits need; everything else is L{tomllib}'s to judge.
    """
    line, position = 1, 0
    nesting: list[str] = []
    expectKey, header, lineStart = True, False, True
    keyParts, keyStart = 1, 0
    table = key = ""

    def refuse(problem: str) -> ConfigError:
        name = ".".join(part for part in (table, key) if part) or None
        return ConfigError(problem, source=where, line=line, key=name)

    while position < len(text):
        plain = None
        if nesting and nesting[-1] == "[":
            plain = _PLAIN_ARRAY_ITEMS.match(text, position)
        elif lineStart and not nesting and position == keyStart:
            plain = _PLAIN_LINES.match(text, position)
        if plain is not None:
            line += text.count("\n", position, plain.end())
            position = plain.end()
            if not nesting:
                keyStart, key = position, ""
            continue
        match = _TOKEN.match(text, position)
        assert match is not None  # the last alternative takes any character
        kind, token, position = match.lastgroup, match.group(), match.end()
        atLineStart, lineStart = lineStart, kind == "space" and lineStart
        if kind == "newline":
            line += 1
            lineStart = True
            if not nesting:
                expectKey, header, keyParts, keyStart = True, False, 1, position
        elif kind == "multiline":
            end = text.find(token, position)
            end = len(text) if end < 0 else end + 3
            line += text.count("\n", position, end)
            position = end
        elif kind == "bare":
            if expectKey or header:
                keyParts += token.count(".")
                if keyParts > MAX_KEY_PARTS:
                    raise refuse(f"a dotted key has more than {MAX_KEY_PARTS} parts")
            elif len(token) > MAX_NUMBER_CHARS:
                raise refuse(f"a number or date is longer than {MAX_NUMBER_CHARS} characters")
        elif kind == "other":
            if token == "[" and atLineStart and not nesting:
                header, expectKey, keyParts, keyStart = True, False, 1, position
            elif token == "]" and header:
                if text[keyStart : keyStart + 1] == "[":
                    keyStart += 1
                table = text[keyStart : match.start()].strip()
                key, header = "", False
            elif token == "=":
                if not nesting:
                    key = text[keyStart : match.start()].strip()
                expectKey = False
            elif token in "[{" and not header:
                nesting.append(token)
                if len(nesting) > MAX_NESTING:
                    raise refuse(f"arrays and inline tables nest more than {MAX_NESTING} deep")
                expectKey, keyParts = token == "{", 1
            elif token in "]}" and nesting:
                nesting.pop()
                expectKey = False
            elif token == "," and nesting and nesting[-1] == "{":
                expectKey, keyParts = True, 1


def loads(text: str, source: str | None = None) -> Config:
    """
    Parse and validate TOML text.

    @param source: the file name used in error messages.
    """
    where = source or "<config>"
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f"the config is larger than {_size(MAX_CONFIG_BYTES)}", source=where)
    _screen(text, where)
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        # The position is only in the text: "Invalid value (at line 3, column 9)".
        message = str(e)
        match = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
        if match:
            problem = f"invalid TOML at column {match.group(2)}: {message[: match.start()]}"
            raise ConfigError(problem, source=where, line=int(match.group(1))) from None
        match = re.search(r"\s*\(at end of document\)$", message)
        if match:
            problem = f"invalid TOML at the end of the file: {message[: match.start()]}"
            lastLine = max(1, len(text.rstrip().splitlines()))
            raise ConfigError(problem, source=where, line=lastLine) from None
        raise ConfigError(f"invalid TOML: {message}", source=where) from None
    except (RecursionError, ValueError, MemoryError) as e:
        # Not reached by anything the screen above lets through; kept so that
        # no input can end in a traceback.
        raise ConfigError(f"cannot be read: {type(e).__name__}: {e}", source=where) from None
    lines = _Lines(text)
    sections: dict[str, object] = {}
    tables = {s.table: s for s in _SECTIONS}
    problems: list[ConfigError] = []
    for name, values in document.items():
        if name not in tables:
            hint = len(problems) < MAX_PROBLEMS
            problems.append(
                ConfigError(
                    f"unknown table [{oneLine(name, _SHOW_KEY)}] "
                    f"({_suggest(name, list(tables), hint)})",
                    source=where,
                    line=lines.of(name),
                )
            )
        elif not isinstance(values, dict):
            problems.append(
                ConfigError(
                    f"expected a table [{name}], not a value",
                    source=where,
                    line=lines.of(name),
                    key=name,
                    value=values,
                )
            )
        else:
            try:
                sections[name] = _build(tables[name], values, where, lines)
            except ConfigError as e:
                problems.extend(e.problems)
    if problems:
        # Each key on its own; the rules across keys need them all valid.
        raise ConfigError.combine(_inFileOrder(problems))
    return _check(Config(source=source, **sections), lines)  # type: ignore[arg-type]


def load(path: str | None) -> Config:
    """
    Read and validate the file at C{path}; L{None} gives the embedded defaults.
    """
    if path is None:
        return Config()
    try:
        data = readRegularFile(path, MAX_CONFIG_BYTES)
    except FileProblem as e:
        raise ConfigError(f"cannot read the config file: {e}", source=path) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"not UTF-8 text (byte {e.start})", source=path) from None
    return loads(text, os.fspath(path))


def override(
    config: Config,
    table: str,
    values: Mapping[str, object],
    origin: str,
    spellings: Mapping[str, tuple[str, str | None]] | None = None,
) -> Config:
    """
    Replace keys of one table with values given elsewhere (the command line),
    validated the same way; errors name C{origin}, the option as the user
    typed it (such as C{"--listen"} or C{"-W"}).

    @param spellings: the options of the command, by key (C{"sniff.rotate_bytes"}:
        C{("--rotate-bytes", "-C")}), for errors that name a key the user did
        not give.
    """
    section = next(s for s in _SECTIONS if s.table == table)
    current = getattr(config, table)
    updated = _build(section, values, None, _Lines(""), base=current, origin=origin)
    given = {**config.given, **{f"{table}.{key}": origin for key in values}}
    return _check(
        dataclasses.replace(
            config,
            given=given,
            spellings={**config.spellings, **(spellings or {})},
            **{table: updated},
        )
    )


def errorAbout(config: Config, table: str, key: str, value: object, problem: str) -> ConfigError:
    """
    A L{ConfigError} about C{table.key} of a loaded configuration, named the
    way the user gave it: by its option if the command line set it, else by
    the file, the line where the file says it (when it does) and the key.
    """
    return _Names(config).error(f"{table}.{key}", value, problem)


def errorAt(config: Config, table: str, key: str, value: object, problem: str) -> ConfigError:
    """
    A L{ConfigError} about C{table.key} of a loaded configuration, with the
    line where the file says it (when it does).
    """
    error = _Names(config).error(f"{table}.{key}", value, problem)
    if error.source is None and config.given.get(f"{table}.{key}") is None:
        error.source = "command line"
    return error


def checkInheritedSockets(config: Config) -> None:
    """
    A C{systemd:} listener names a socket that exists only in the process
    systemd starts: check, where echod starts, that it was passed.
    """
    from twisted.internet.endpoints import serverFromString

    for index, description in enumerate(config.server.listen, 1):
        kind, _, kwargs = endpointParameters(description)
        if kind != "systemd":
            continue
        try:
            serverFromString(_NoReactor(), description)
        except (KeyError, IndexError):
            which = kwargs.get("name") or f"number {kwargs.get('index')}"
            raise ConfigError(
                f"systemd passed no socket {which!s} (see LISTEN_FDNAMES and the "
                ".socket unit's FileDescriptorName=)",
                source=config.source or "command line",
                key=f"server.listen[{index}]",
                value=description,
            ) from None
        except Exception as e:
            raise ConfigError(
                f"not a usable systemd socket: {e}",
                source=config.source or "command line",
                key=f"server.listen[{index}]",
                value=description,
            ) from None


def sections() -> tuple[type[Any], ...]:
    """
    The table dataclasses in file order (for the sample file and its test).
    """
    return _SECTIONS
