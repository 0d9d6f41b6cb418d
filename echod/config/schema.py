# -*- test-case-name: tests.unit.test_sample_config -*-
"""
The schema: one frozen dataclass per table of the file, and L{Config}, the
whole.  Each field carries its default, its validator and a one-line
description in its metadata, so the sample file in C{etc/} and the README's
reference are checked against one source of truth.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from echod.config.endpoints import (
    _datagramServer,
    _optionalStreamServer,
    _splitDescription,
    _streamClient,
    _streamServer,
)
from echod.config.errors import _Invalid
from echod.config.kinds import _Bool, _Float, _Int, _Kind, _List, _network, _PortRange, _Str
from echod.config.targets import MonitorTarget, _TargetKind

__all__ = [
    "DEFAULT_LISTEN",
    "DEFAULT_LISTEN_IPV4",
    "ClientConfig",
    "Config",
    "LogConfig",
    "MetricsConfig",
    "MonitorConfig",
    "ServerConfig",
    "SniffConfig",
    "UDPConfig",
    "sections",
    "setting",
]


DEFAULT_LISTEN = r"tcp6:port=7007:interface=\:\:"
DEFAULT_LISTEN_IPV4 = "tcp:port=7007"


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
_NETWORKS = _List(_Str(check=_network, what="a CIDR network"), "CIDR networks")


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
        "processes serving the stream and UDP listeners (tcp: and udp: a SO_REUSEPORT socket "
        "each; restarted if they die); limits apply per process, global UDP rates divided "
        "among them",
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
        _NETWORKS,
        "on haproxy: listeners, only connections from these networks may send a PROXY "
        "header; others are refused before a byte is read",
    )
    allow: tuple[str, ...] = setting(
        (),
        _NETWORKS,
        "if not empty, only peers in these networks are served",
    )
    deny: tuple[str, ...] = setting(
        (),
        _NETWORKS,
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
        20000.0,
        _Float(0, 1e9),
        "replies per second to all sources together (workers = N: 1/N each); 0: no limit",
    )
    global_bytes_per_second: float = setting(
        33554432.0,
        _Float(0, 1e12),
        "reply bytes per second to all sources (workers = N: 1/N each); 0: no limit",
    )
    burst_seconds: float = setting(
        1.0, _Float(0.001, 3600), "how many seconds of rate a bucket holds (the burst)"
    )
    max_sources: int = setting(
        65536,
        _Int(1, 10_000_000),
        "source addresses tracked for rate limits at most (workers = N: in each)",
    )
    allow: tuple[str, ...] = setting(
        (),
        _NETWORKS,
        "if not empty, only sources in these networks get replies",
    )
    deny: tuple[str, ...] = setting(
        (),
        _NETWORKS,
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
        "(TCP: Happy Eyeballs, IPv6 and IPv4; UDP: in getaddrinfo's order, the next when "
        "one never answers)",
    )
    port: int = setting(7007, _Int(1, 65535), "port of the echo server")
    protocol: str = setting(
        "tcp",
        _Str(("tcp", "udp")),
        'echo over "tcp" or "udp" (-u: one datagram per message, each reply matched and '
        "checked; loss, duplicates, reordering, jitter)",
    )
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
        "seconds between messages in ping mode; 0: each as soon as the previous reply is back "
        "(UDP: as soon as one of the window is answered or lost)",
    )
    window: int = setting(
        1,
        _Int(1, 65536),
        "UDP with interval 0: datagrams kept in flight at once (a flood, bounded by count); "
        "1: each sent once the previous is answered or lost",
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
        "seconds allowed to resolve and connect, and for each reply (UDP: a datagram not "
        "answered by then is lost)",
    )
    max_loss: float = setting(
        0.0,
        _Float(0, 100, " of percent"),
        "UDP: the loss, in percent of datagrams sent, a run may have and still succeed; "
        "more is exit status 8",
    )
    quiet: bool = setting(
        False, _Bool(), "ping mode: print the first line and the summary, not a line per reply"
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
        _Str(("text", "json", "pcap", "pcapng")),
        'output format: "text" (tcpdump-like lines), "json" (JSON lines), "pcap" or "pcapng"',
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
        "with rotate_bytes, keep this many files (FILE0...), reusing the oldest; "
        "with rotate_seconds alone, stop after this many files; 0: all",
    )
    rotate_seconds: float = setting(
        0.0,
        _Float(1, 31_536_000, " of seconds", zeroOr=True),
        "start a new output file this often, named by strftime from output "
        '(tcpdump -G: "cap-%Y%m%d-%H%M%S.pcap"); 0: never',
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
        'pcap and pcapng timestamps in microseconds ("micro", what every tool reads) or "nano"',
    )


# A monitor of this many targets was measured (README: "The monitor").
MAX_TARGETS = 50_000


@dataclass(frozen=True)
class MonitorConfig:
    """
    The monitor (twistd echod-monitor): echo servers probed forever, every
    address of each name on its own.
    """

    table: ClassVar[str] = "monitor"

    targets: tuple[MonitorTarget, ...] = setting(
        (),
        _List(_TargetKind(), "targets", maxItems=MAX_TARGETS),
        'what to probe: "HOST:PORT", "[IPV6]:PORT", "udp://HOST:PORT", "tls://HOST:PORT", '
        "a Twisted client endpoint string, or a table { target = ..., interval, timeout, "
        "spacing, size, count, verify, labels = { ... } } with settings of its own",
    )
    interval: float = setting(
        10.0,
        _Float(0.1, 86400, " of seconds"),
        "seconds between two rounds of a target (each round resolves the name again "
        "and probes every address)",
    )
    timeout: float = setting(
        2.0,
        _Float(0.001, 3600, " of seconds"),
        "seconds allowed to resolve, to connect, and for each reply (a datagram not "
        "answered by then is lost)",
    )
    count: int = setting(
        5, _Int(1, 1000), "messages per round and address (loss and jitter are of a round)"
    )
    size: int = setting(64, _Int(24, 65507, " of bytes"), "bytes per message")
    spacing: float = setting(
        0.2,
        _Float(0, 60, " of seconds"),
        "seconds between the messages of a round; 0: each once the previous is answered (or lost)",
    )
    verify: bool = setting(
        True,
        _Bool(),
        "tls:// targets: verify the server's certificate and name against the system's "
        "trusted CAs; false: encrypt only (per target: verify = false)",
    )
    listen: str = setting(
        "tcp:port=9108:interface=127.0.0.1",
        _Str(check=_optionalStreamServer, what="an endpoint string"),
        "endpoint for the status page (/), /metrics and /healthz; empty: none",
    )
    max_concurrency: int = setting(
        256,
        _Int(1, 100_000),
        "address probes in flight at most; more wait their turn (a round still waiting "
        "or running at its next time is counted as an overrun and skipped)",
    )
    max_addresses: int = setting(
        8,
        _Int(1, 64),
        "addresses of one name probed at most (A and AAAA together, in the resolver's order)",
    )


_SECTIONS: tuple[type[Any], ...] = (
    ServerConfig,
    UDPConfig,
    LogConfig,
    MetricsConfig,
    ClientConfig,
    SniffConfig,
    MonitorConfig,
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
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    source: str | None = None
    # Keys the command line set ("sniff.rotate_count") and the option as the
    # user typed it ("-W"), for errors; and how the command spells the option
    # of each key it has one for (long, short or None).
    given: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)
    spellings: Mapping[str, tuple[str, str | None]] = field(
        default_factory=dict, compare=False, repr=False
    )


def sections() -> tuple[type[Any], ...]:
    """
    The table dataclasses in file order (for the sample file and its test).
    """
    return _SECTIONS
