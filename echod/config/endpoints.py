# -*- test-case-name: tests.unit.test_config -*-
"""
Endpoint strings: Twisted's stream server and client descriptions, checked
when the config is loaded the way Twisted will parse them, plus what Twisted
leaves to the moment of listening or connecting (port ranges, address
families, unix path lengths, the files it reads); and echod's own forms,
C{udp:} (Twisted has no datagram endpoint strings) and the C{tcp6:} client.
The service uses the same parsers at run time.
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from echod.config.errors import _Invalid, _quoted
from echod.config.files import FileProblem, _openRegular

__all__ = [
    "DatagramEndpoint",
    "clientEndpointTypes",
    "endpointParameters",
    "parseDatagramEndpoint",
    "tcp6ClientParameters",
    "withBacklog",
]


# Files named in endpoint strings (keys, certificates, DH parameters) and the
# directories of CA certificates Twisted reads when it parses the string.
MAX_PEM_BYTES = 1024 * 1024
MAX_CA_FILES = 1000
MAX_ENDPOINT_CHARS = 8192
# sun_path is 108 bytes on Linux (104 on the BSDs and macOS), with its NUL.
MAX_UNIX_PATH_BYTES = 107 if sys.platform.startswith("linux") else 103


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


def _checkPort(text: str | None, kind: str) -> None:
    if text is None:
        raise _Invalid(f"a {kind}: endpoint needs a port, such as {kind}:port=7007")
    # Not str.isdigit() or int() alone: both take digits of every script.
    if not re.fullmatch(r"[0-9]{1,5}", text) or not 0 <= int(text) <= 65535:
        raise _Invalid(f"port {_quoted(text)} is not a port number from 0 to 65535")


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
