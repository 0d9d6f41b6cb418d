"""
What echod's tests share, in the spirit of C{twisted.internet.testing}:
waiting for a condition with a deadline, a fresh Python running the echod
under test, fakes (resolvers), PROXY headers, a TLS certificate, an echod
service tree in this process, and the clients and probes several end-to-end
modules use (echo round trips, the witness client, metrics scrapes, worker
processes).  Test modules import from here (and from L{tests.daemon},
L{tests.environment}, L{tests.capturetesting}, L{tests.hostileconfigs},
L{tests.frames}, L{tests.classicbpf}), never from one another.  Nothing here
imports the reactor at import time.
"""

from __future__ import annotations

import errno
import importlib.util
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IAddress,
    IHostnameResolver,
    IHostResolution,
    IListeningPort,
    IResolutionReceiver,
)
from twisted.internet.protocol import DatagramProtocol
from zope.interface import implementer

from bench.udp import readsSocket
from echod import config
from echod.app import makeService
from echod.server.listeners import EchoService
from echod.server.proxyprotocol import V2_SIGNATURE
from echod.server.stream import EchoFactory
from tests.daemon import twistdPath
from tests.reactortesting import EchodMemoryReactor

__all__ = [
    "CHECKOUT",
    "ConnectedDatagramPort",
    "DatagramClientReactor",
    "FakeDatagramBatch",
    "FakeDatagramSocket",
    "FixedResolver",
    "Samples",
    "Server",
    "SilentResolver",
    "Witness",
    "echo",
    "eventually",
    "examples",
    "get",
    "inThread",
    "listeningSockets",
    "needTLS",
    "openConnections",
    "pcapRecords",
    "proxyV2",
    "pythonPath",
    "reactor",
    "readsPacketSocket",
    "recvAll",
    "roundTrip",
    "runPython",
    "runTwistd",
    "scrape",
    "selfSigned",
    "sleep",
    "udpEcho",
    "value",
    "waitUntil",
    "workerPids",
]

T = TypeVar("T")

CHECKOUT = Path(__file__).resolve().parents[1]


def examples(thorough: int) -> int:
    """
    How many examples a property test (hypothesis) draws: C{thorough} when
    C{ECHOD_THOROUGH=1} (set by C{.ci/run}), a tenth of it (at least 25)
    otherwise, so that a developer's C{pytest tests/unit} takes seconds
    while CI searches as deep as before.
    """
    if os.environ.get("ECHOD_THOROUGH") == "1":
        return thorough
    return max(25, thorough // 10)


def waitUntil(
    condition: Callable[[], object],
    timeout: float = 15.0,
    interval: float = 0.05,
    what: str | None = None,
) -> None:
    """
    Return as soon as C{condition()} is true; fail once C{timeout} seconds
    have passed without it, naming C{what} (or the condition) in the message.
    """
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what or condition!r} not met within {timeout} s")
        time.sleep(interval)


def pythonPath() -> str:
    """
    C{PYTHONPATH} for a fresh interpreter that imports the echod under test
    (the one tests/conftest.py chose) and the tests package.
    """
    import echod

    entries = dict.fromkeys([str(Path(echod.__file__).resolve().parents[1]), str(CHECKOUT)])
    return os.pathsep.join(entries)


def runPython(
    args: list[str], timeout: float = 60, cwd: Path | None = None, check: bool = False
) -> subprocess.CompletedProcess[str]:
    """
    Run C{python -P ARGS} (C{-c CODE}, C{-m MODULE}) with the echod under
    test first on its path: the working directory, which C{-c} and C{-m}
    would otherwise put in front, is left out (C{-P}).
    """
    env = {**os.environ, "PYTHONPATH": pythonPath()}
    return subprocess.run(
        [sys.executable, "-P", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=env,
        check=check,
    )


# --- In-process echod, on the global reactor -----------------------------------


def reactor() -> Any:
    from twisted.internet import reactor as globalReactor

    return globalReactor


def inThread(f: Callable[..., T], *args: object) -> Deferred[T]:
    from twisted.internet.threads import deferToThread

    return deferToThread(f, *args)


def sleep(seconds: float) -> Deferred[None]:
    from twisted.internet.task import deferLater

    return deferLater(reactor(), seconds, lambda: None)


async def eventually(
    condition: Callable[[], object],
    timeout: float = 10.0,
    interval: float = 0.01,
    what: str | None = None,
) -> None:
    """
    L{waitUntil} for tests that run in the reactor: the reactor goes on
    running between the checks.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what or condition!r} not met within {timeout} s")
        await sleep(interval)


class Server:
    """
    An echod service tree started in this process.
    """

    def __init__(self, listen: list[str], **server: object) -> None:
        base = config.Config()
        settings = config.ServerConfig(listen=tuple(listen), **server)  # type: ignore[arg-type]
        self.config = config.Config(server=settings, log=base.log)
        self.root = makeService(self.config, reactor())
        self.echo: EchoService = next(s for s in self.root if isinstance(s, EchoService))
        self.factory: EchoFactory = self.echo.factory
        self.ports: list[int] = []

    async def start(self) -> Server:
        self.root.privilegedStartService()
        self.root.startService()
        listening = await self.echo.whenListening()
        self.ports = [getattr(p.getHost(), "port", 0) for p in listening]
        return self

    async def stop(self) -> None:
        if self.root.running:
            await self.root.stopService()


def recvAll(s: socket.socket, size: int | None) -> bytes:
    chunks, total = [], 0
    while size is None or total < size:
        chunk = s.recv(262144)
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


# --- Fakes --------------------------------------------------------------------------


@implementer(IHostResolution)
class _Resolution:
    def __init__(self, name: str) -> None:
        self.name = name

    def cancel(self) -> None:
        pass


@implementer(IHostnameResolver)
class SilentResolver:
    """
    A resolver that never answers.
    """

    def resolveHostName(
        self,
        resolutionReceiver: IResolutionReceiver,
        hostName: str,
        portNumber: int = 0,
        addressTypes: Sequence[type[IAddress]] | None = None,
        transportSemantics: str = "TCP",
    ) -> IHostResolution:
        resolution = _Resolution(hostName)
        resolutionReceiver.resolutionBegan(resolution)
        return resolution


class FakeDatagramBatch:
    """
    A batch of L{echod.server.datagram} over datagrams the test queues with
    L{arrive}: what the port echoes lands in L{sent}; the echo of a payload
    in L{refuse} fails as a full send buffer would.
    """

    def __init__(self, capacity: int = 64) -> None:
        self.capacity = capacity
        self.queue: list[tuple[bytes, tuple[str, int]]] = []
        self.sent: list[tuple[bytes, tuple[str, int]]] = []
        self.refuse: set[bytes] = set()
        self.receives = 0
        self._held: list[tuple[bytes, tuple[str, int]]] = []

    def arrive(self, data: bytes, host: str, port: int) -> None:
        self.queue.append((data, (host, port)))

    def receive(self) -> list[tuple[str, int, int]]:
        self.receives += 1
        self._held, self.queue = self.queue[: self.capacity], self.queue[self.capacity :]
        return [(host, port, len(data)) for data, (host, port) in self._held]

    def send(self, verdicts: bytes | bytearray) -> list[tuple[int, int]]:
        failures = []
        for i, (data, address) in enumerate(self._held):
            if verdicts[i] == 0:
                if data in self.refuse:
                    failures.append((i, errno.EAGAIN))
                else:
                    self.sent.append((data, address))
        self._held = []
        return failures


class FakeDatagramSocket:
    """
    What L{echod.server.datagram.DatagramEchoPort} asks of its socket, with
    no socket: its descriptor, family and address, and C{close}.
    """

    family = socket.AF_INET6

    def __init__(self, address: tuple[str, int] = ("::", 7)) -> None:
        self.address = address
        self.closed = False

    def fileno(self) -> int:
        return -1 if self.closed else 1000

    def getsockname(self) -> tuple[str, int, int, int]:
        return (*self.address, 0, 0)

    def close(self) -> None:
        self.closed = True


@implementer(IHostnameResolver)
class FixedResolver:
    """
    Resolves every name to the given addresses, at once, honouring the
    address types asked for.
    """

    def __init__(self, *hosts: str) -> None:
        self.hosts = hosts
        self.asked: list[Sequence[type[IAddress]] | None] = []

    def resolveHostName(
        self,
        resolutionReceiver: IResolutionReceiver,
        hostName: str,
        portNumber: int = 0,
        addressTypes: Sequence[type[IAddress]] | None = None,
        transportSemantics: str = "TCP",
    ) -> IHostResolution:
        self.asked.append(addressTypes)
        resolution = _Resolution(hostName)
        resolutionReceiver.resolutionBegan(resolution)
        for host in self.hosts:
            kind = IPv6Address if ":" in host else IPv4Address
            if addressTypes is None or kind in addressTypes:
                resolutionReceiver.addressResolved(kind("TCP", host, portNumber))
        resolutionReceiver.resolutionComplete()
        return resolution


# --- A UDP client's ports, in memory -------------------------------------------------


class _PortSocket:
    """
    The socket of a L{ConnectedDatagramPort}: the options set on it, and
    C{SO_ERROR}, read once, as the kernel's pending error.
    """

    def __init__(self, port: ConnectedDatagramPort) -> None:
        self.port = port
        self.options: dict[tuple[int, int], int] = {}

    def setsockopt(self, level: int, option: int, value: int) -> None:
        self.options[level, option] = value

    def getsockopt(self, level: int, option: int) -> int:
        if (level, option) == (socket.SOL_SOCKET, socket.SO_ERROR):
            error, self.port.error = self.port.error, 0
            return error
        return self.options.get((level, option), 0)


@implementer(IListeningPort)
class ConnectedDatagramPort:
    """
    What C{listenUDP} gives a client, in memory: the datagrams written, the
    address connected to, and ways to answer (L{deliver}), refuse (as
    Twisted's select reactor reports an ICMP port unreachable) or lose the
    port with a socket error (as its epoll reactor does).
    """

    def __init__(self, protocol: DatagramProtocol, interface: str, maxPacketSize: int) -> None:
        self.protocol = protocol
        self.interface = interface
        self.maxPacketSize = maxPacketSize
        self.connected: tuple[str, int] | None = None
        self.written: list[bytes] = []
        self.listening = True
        self.error = 0
        # What write() raises (OSError(EAGAIN): the send buffer is full).
        self.writeError: Exception | None = None
        self.handle = _PortSocket(self)
        protocol.makeConnection(self)  # type: ignore[arg-type]

    def startListening(self) -> None:
        pass

    def connect(self, host: str, port: int) -> None:
        self.connected = (host, port)

    def write(self, datagram: bytes, addr: object = None) -> None:
        if self.writeError is not None:
            raise self.writeError
        self.written.append(datagram)

    def getHandle(self) -> _PortSocket:
        return self.handle

    def getHost(self) -> IPv4Address:
        return IPv4Address("UDP", "0.0.0.0", 40000)

    def stopListening(self) -> None:
        if self.listening:
            self.listening = False
            self.protocol.doStop()

    def deliver(self, datagram: bytes) -> None:
        assert self.connected is not None
        self.protocol.datagramReceived(datagram, self.connected)

    def take(self) -> list[bytes]:
        """
        The datagrams written since the last call.
        """
        written, self.written = self.written, []
        return written

    def lose(self, error: int) -> None:
        """
        Close the port as the epoll reactor does when the socket has an
        error (an ICMP message came back).
        """
        self.error = error
        self.stopListening()


class DatagramClientReactor(EchodMemoryReactor):
    """
    L{EchodMemoryReactor} whose C{listenUDP} gives L{ConnectedDatagramPort}s,
    kept in C{udpPorts}, for the client's tests; each raises C{writeError}
    from its C{write} until told otherwise.
    """

    def __init__(self, writeError: Exception | None = None) -> None:
        super().__init__()
        self.udpPorts: list[ConnectedDatagramPort] = []
        self.writeError = writeError

    def listenUDP(
        self,
        port: int,
        protocol: DatagramProtocol,
        interface: str = "",
        maxPacketSize: int = 8192,
    ) -> IListeningPort:
        opened = ConnectedDatagramPort(protocol, interface, maxPacketSize)
        opened.writeError = self.writeError
        self.udpPorts.append(opened)
        return opened


# --- PROXY protocol and TLS -------------------------------------------------------


def proxyV2(command: int, family: int, block: bytes, tlvs: bytes = b"") -> bytes:
    """
    A PROXY protocol v2 header: C{command} (0 local, 1 proxy), C{family}
    (address family and transport byte), the address block and TLVs.
    """
    body = block + tlvs
    return V2_SIGNATURE + struct.pack("!BBH", 0x20 | command, family, len(body)) + body


def selfSigned(directory: Path) -> tuple[Path, Path, Path]:
    """
    A self-signed certificate for localhost and 127.0.0.1, its key, and a
    trust-roots directory holding it.
    """
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    keyPath, certPath, roots = directory / "key.pem", directory / "cert.pem", directory / "roots"
    keyPath.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    certPath.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    roots.mkdir()
    (roots / "cert.pem").write_bytes(certPath.read_bytes())
    return keyPath, certPath, roots


def needTLS() -> None:
    # Not environment.need(): pyOpenSSL is an optional extra (Twisted[tls]),
    # not something .ci/run installs, so its absence is a plain skip.
    if importlib.util.find_spec("OpenSSL") is None:
        pytest.skip("pyOpenSSL is not installed (pip install 'Twisted[tls]')")


# --- Clients and probes of a running echod ------------------------------------------


def echo(host: str, port: int, payload: bytes, timeout: float = 10) -> bytes:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.settimeout(timeout)
        s.connect((host, port))
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def runTwistd(args: list[str], cwd: Path, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [twistdPath(), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def udpEcho(host: str, port: int, payload: bytes, timeout: float = 10) -> bytes:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(payload, (host, port))
        return s.recv(65535)


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def scrape(port: int) -> Samples:
    status, body = get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), -1)


def roundTrip(s: socket.socket, payload: bytes) -> None:
    s.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = s.recv(65536)
        assert chunk, f"closed by the server after {got!r}"
        got += chunk
    assert got == payload


class Witness(threading.Thread):
    """
    A well-behaved client echoing random messages and checking each reply,
    for as long as the abuse goes on.
    """

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.stopping = threading.Event()
        self.roundTrips = 0
        self.failure: str | None = None

    def run(self) -> None:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
                while not self.stopping.is_set():
                    message = os.urandom(1 + self.roundTrips % 4000)
                    s.sendall(message)
                    got = b""
                    while len(got) < len(message):
                        chunk = s.recv(65536)
                        if not chunk:
                            raise AssertionError("server closed the witness connection")
                        got += chunk
                    if got != message:
                        raise AssertionError(f"mismatch after {self.roundTrips} round trips")
                    self.roundTrips += 1
                    # Stay well inside the idle timeout.
                    time.sleep(0.01)
        except Exception as e:
            self.failure = f"{type(e).__name__}: {e}"

    def finish(self) -> None:
        self.stopping.set()
        self.join(15)
        assert self.failure is None, self.failure
        assert self.roundTrips > 10


def workerPids(mainPid: int) -> list[int]:
    result = subprocess.run(
        ["pgrep", "-P", str(mainPid), "-f", "echod.server.workers.child"],
        capture_output=True,
        text=True,
        check=False,
    )
    return sorted(int(pid) for pid in result.stdout.split())


def listeningSockets(port: int) -> int:
    """
    How many sockets listen on TCP C{port} (IPv4 and IPv6), from /proc.
    """
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                count += 1
    return count


def openConnections(port: int) -> int:
    """
    How many TCP sockets of this host, other than listening ones, have
    C{port} as their local port and are still held by a process (a
    connection in TIME_WAIT belongs to no one), from /proc.
    """
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if int(local.rsplit(":", 1)[1], 16) == port and state != "0A" and inode != "0":
                count += 1
    return count


def readsPacketSocket(pid: int) -> bool:
    """
    Whether process C{pid} has a packet socket registered with its epoll
    (the reactor reads it): a sniffer logs "capturing on" once the capture is
    open, and reads it once the reactor runs.
    """
    try:
        inodes = {
            line.split()[-1]
            for line in Path(f"/proc/{pid}/net/packet").read_text().splitlines()[1:]
        }
    except OSError:
        return False
    return readsSocket(pid, inodes)


def pcapRecords(path: Path) -> int:
    """
    How many whole records a classic pcap file holds so far.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return 0
    if len(data) < 24:
        return 0
    order = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    offset, count = 24, 0
    while offset + 16 <= len(data):
        (captured,) = struct.unpack(order + "I", data[offset + 8 : offset + 12])
        if offset + 16 + captured > len(data):
            break
        offset += 16 + captured
        count += 1
    return count
