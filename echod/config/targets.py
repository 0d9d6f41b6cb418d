# -*- test-case-name: tests.unit.test_monitor_targets -*-
"""
The targets of C{[monitor]}: each item of C{targets} is a string
(C{HOST:PORT}, C{[V6ADDR]:PORT}, C{udp://HOST:PORT}, C{tls://HOST:PORT} or a
Twisted client endpoint string) or a table that names one of those as
C{target} and gives it settings of its own.  Validated here, when the file
is loaded, so that a bad target is one line naming the file, the line and
the item; L{echod.monitor.targets} makes them runnable.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from echod.config.endpoints import _splitDescription, _streamClient
from echod.config.errors import _Invalid, _quoted
from echod.config.kinds import _Bool, _Float, _Int, _Kind, _Str

__all__ = ["MAX_LABELS", "RESERVED_LABELS", "MonitorTarget"]

# Labels every result carries; a target's own labels may not take these names.
RESERVED_LABELS = ("target", "address", "family", "protocol", "result")
MAX_LABELS = 16
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]{0,63}")
_HOST_NAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_-]{1,63})*\.?"
)
_HOST_PORT = re.compile(r"(\[[^\[\]]{1,100}\]|[^:\[\]/]{1,253}):([0-9]{1,5})")
# Prefixes that make a string an endpoint string rather than HOST:PORT.
_ENDPOINT_TYPES = ("tcp", "tcp6", "ssl", "tls", "unix")


@dataclass(frozen=True)
class MonitorTarget:
    """
    One item of C{[monitor] targets}, as written: C{text} (the string, or the
    table's C{target}), what it names, and the settings the table gives it
    (L{None}: the table's C{[monitor]} value).

    @ivar kind: C{"tcp"}, C{"udp"}, C{"tls"} or C{"endpoint"} (a Twisted
        client endpoint string, connected to as it is).
    @ivar host: the name or address to resolve (empty for an endpoint).
    """

    text: str
    kind: str
    host: str = ""
    port: int = 0
    interval: float | None = None
    timeout: float | None = None
    size: int | None = None
    count: int | None = None
    spacing: float | None = None
    verify: bool | None = None
    labels: tuple[tuple[str, str], ...] = field(default=())


def _host(text: str) -> str:
    """
    An IPv6 address in brackets, an IPv4 address or a host name.
    """
    if text.startswith("["):
        inner = text[1:-1]
        try:
            if ipaddress.ip_address(inner).version == 6:
                return inner
        except ValueError:
            pass
        raise _Invalid(f"{_quoted(text)} is not an IPv6 address in brackets")
    if not _HOST_NAME.fullmatch(text):
        raise _Invalid(f"{_quoted(text)} is not a host name or an IPv4 address")
    return text


def _port(text: str) -> int:
    port = int(text)
    if not 1 <= port <= 65535:
        raise _Invalid(f"port {port} is not from 1 to 65535")
    return port


def parseTarget(text: str) -> MonitorTarget:
    """
    What a target string names.

    @raise _Invalid: saying what is allowed.
    """
    if not text or text != text.strip() or len(text) > 1024:
        raise _Invalid(
            "expected HOST:PORT, [IPV6]:PORT, udp://HOST:PORT, tls://HOST:PORT or a "
            "Twisted client endpoint string, without spaces"
        )
    scheme, separator, rest = text.partition("://")
    if separator:
        if scheme.lower() not in ("tcp", "udp", "tls"):
            raise _Invalid(f"unknown scheme {_quoted(scheme)}: tcp://, udp:// or tls://")
        match = _HOST_PORT.fullmatch(rest)
        if match is None:
            raise _Invalid(f"expected {scheme}://HOST:PORT or {scheme}://[IPV6]:PORT")
        return MonitorTarget(text, scheme.lower(), _host(match.group(1)), _port(match.group(2)))
    match = _HOST_PORT.fullmatch(text)
    first = _splitDescription(text)[0].lower()
    if match is not None and first not in _ENDPOINT_TYPES:
        return MonitorTarget(text, "tcp", _host(match.group(1)), _port(match.group(2)))
    _streamClient(text)
    return MonitorTarget(text, "endpoint")


_INTERVAL = _Float(0.1, 86400, " of seconds")
_TIMEOUT = _Float(0.001, 3600, " of seconds")
_SPACING = _Float(0, 60, " of seconds")
_SIZE = _Int(24, 65507, " of bytes")
_COUNT = _Int(1, 1000)
_VERIFY = _Bool()
_LABEL_VALUE = _Str(what="a string")

# The keys of a target's table, and their validators.
_TABLE_KEYS: dict[str, _Kind[object]] = {
    "interval": _INTERVAL,  # type: ignore[dict-item]
    "timeout": _TIMEOUT,  # type: ignore[dict-item]
    "spacing": _SPACING,  # type: ignore[dict-item]
    "size": _SIZE,  # type: ignore[dict-item]
    "count": _COUNT,  # type: ignore[dict-item]
    "verify": _VERIFY,  # type: ignore[dict-item]
}


def _labels(value: object) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict):
        raise _Invalid('labels: expected a table of strings, such as { site = "fra1" }')
    if len(value) > MAX_LABELS:
        raise _Invalid(f"labels: at most {MAX_LABELS}")
    labels = []
    for name, text in value.items():
        if not _LABEL_NAME.fullmatch(name) or name.startswith("__"):
            raise _Invalid(
                f"label {_quoted(name)}: a Prometheus label name is a letter or _, then "
                "letters, digits and _ (at most 64), not starting with __"
            )
        if name in RESERVED_LABELS:
            raise _Invalid(f"label {_quoted(name)}: echod sets it itself")
        if not isinstance(text, str) or len(text) > 256:
            raise _Invalid(f"label {_quoted(name)}: expected a string of at most 256 characters")
        labels.append((name, text))
    return tuple(sorted(labels))


class _TargetKind(_Kind[MonitorTarget]):
    """
    A target: its string, or a table of C{target} and its own settings
    (C{interval}, C{timeout}, C{spacing}, C{size}, C{count}, C{verify},
    C{labels}).
    """

    def __call__(self, value: object) -> MonitorTarget:
        if isinstance(value, str):
            return parseTarget(value)
        if not isinstance(value, dict):
            raise _Invalid('expected a target string or a table such as { target = "HOST:PORT" }')
        known = ("target", *_TABLE_KEYS, "labels")
        for name in value:
            if name not in known:
                raise _Invalid(f"unknown key {_quoted(name)} (known: {', '.join(known)})")
        text = value.get("target")
        if not isinstance(text, str):
            raise _Invalid('a target table needs target = "HOST:PORT" (or udp://, tls://...)')
        parsed = parseTarget(text)
        settings: dict[str, object] = {}
        for name, kind in _TABLE_KEYS.items():
            if name in value:
                try:
                    settings[name] = kind(value[name])
                except _Invalid as e:
                    raise _Invalid(f"{name}: {e}") from None
        if "labels" in value:
            settings["labels"] = _labels(value["labels"])
        if "verify" in settings and parsed.kind != "tls":
            raise _Invalid("verify: only tls:// targets have a certificate to verify")
        return MonitorTarget(
            parsed.text,
            parsed.kind,
            parsed.host,
            parsed.port,
            **settings,  # type: ignore[arg-type]
        )

    def toTOML(self, value: MonitorTarget) -> object:
        table: dict[str, object] = {}
        for name in _TABLE_KEYS:
            setting = getattr(value, name)
            if setting is not None:
                table[name] = setting
        if value.labels:
            table["labels"] = dict(value.labels)
        if not table:
            return value.text
        return {"target": value.text, **table}
