"""
The pieces of a worker process (echod.server.workers.child) that stand on Twisted's
internals, run on the real reactor so that a Twisted upgrade that changes
them fails here.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor as _reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol

from echod.server.fastpath import AdoptedUNIXPort, adoptStreamPort

reactor: Any = _reactor


class Echo(Protocol):
    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)


def listeningUNIX(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    path.chmod(0o660)
    s.listen(5)
    s.setblocking(False)
    return s


async def roundTrip(path: Path) -> bytes:
    client = socket.socket(socket.AF_UNIX)
    client.setblocking(False)
    client.connect(str(path))
    client.send(b"adopted")
    for _ in range(200):  # bounded: 2 s
        d: Deferred[None] = Deferred()
        reactor.callLater(0.01, d.callback, None)
        await d
        try:
            got = client.recv(100)
        except BlockingIOError:
            continue
        client.close()
        return got
    client.close()
    return b""


@pytest.mark.fastpath
@pytest_twisted.ensureDeferred
async def test_adoptedUNIXPortLeavesThePathToItsOwner(tmp_path: Path) -> None:
    """
    A worker's unix port serves the socket it inherited, leaves its mode
    alone and, when it stops listening, leaves socket and path to the main
    process that made them: the main's socket still takes connections.
    """
    path = tmp_path / "echo.sock"
    with listeningUNIX(path) as inherited:
        port = adoptStreamPort(
            reactor, inherited.fileno(), socket.AF_UNIX, Factory.forProtocol(Echo)
        )
        assert isinstance(port, AdoptedUNIXPort)
        assert path.stat().st_mode & 0o777 == 0o660
        assert await roundTrip(path) == b"adopted"
        await port.stopListening()
        assert path.exists()
        # The main process's socket still listens there.
        with socket.socket(socket.AF_UNIX) as again:
            again.connect(str(path))


@pytest_twisted.ensureDeferred
async def test_twistedsOwnAdoptedUNIXPortUnlinksThePath(tmp_path: Path) -> None:
    """
    Why L{AdoptedUNIXPort} exists: Twisted's own makes the path
    world-writable and, when it stops, shuts the shared socket down and
    unlinks a path it did not make.  When this fails, Twisted has changed:
    see whether the subclass is still needed.
    """
    path = tmp_path / "echo.sock"
    with listeningUNIX(path) as inherited:
        port = reactor.adoptStreamPort(
            inherited.fileno(), socket.AF_UNIX, Factory.forProtocol(Echo)
        )
        assert path.stat().st_mode & 0o777 == 0o666
        alias = tmp_path / "alias.sock"
        alias.hardlink_to(path)
        await port.stopListening()
        assert not path.exists()
        # Shut down: the socket, still open here, refuses connections.
        with socket.socket(socket.AF_UNIX) as client, pytest.raises(ConnectionRefusedError):
            client.connect(str(alias))


@pytest_twisted.ensureDeferred
async def test_tcpPortsAreTheReactorsOwn() -> None:
    with socket.create_server(("127.0.0.1", 0)) as inherited:
        inherited.setblocking(False)
        port = adoptStreamPort(
            reactor, inherited.fileno(), socket.AF_INET, Factory.forProtocol(Echo)
        )
        assert not isinstance(port, AdoptedUNIXPort)
        host = port.getHost()
        assert isinstance(host, IPv4Address)
        assert host.port == inherited.getsockname()[1]
        stopped = port.stopListening()
        assert stopped is not None
        await stopped


@pytest_twisted.ensureDeferred
async def test_reusePortListenerTakesSiblings() -> None:
    """
    With workers, the main process's C{tcp:} socket is bound with
    C{SO_REUSEPORT} (by Twisted's C{makeBinding} from Twisted 26.10 on, by
    a port of echod's own before), so the workers' sockets join its address.
    """
    from echod.server.workers.sockets import ReusePortReactor, siblingSockets

    reusing = ReusePortReactor(reactor)
    port = reusing.listenTCP(0, Factory.forProtocol(Echo), interface="127.0.0.1")
    try:
        assert reusing.ports == [port]
        stream: Any = port
        assert stream.socket.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
        (sibling,) = siblingSockets(stream.socket, 1, 5)
        with sibling:
            assert sibling.getsockname() == stream.socket.getsockname()
    finally:
        stopped = port.stopListening()
        assert stopped is not None
        await stopped


def test_sharedUnixSocketRefusedOnAnotherTwisted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    On a Twisted release the private parts were not checked against, the
    workers could only adopt a shared unix socket the stock way (mode 0666,
    unlinked when one stops): echod refuses to start instead, in one line.
    """
    from echod.config import Config, ServerConfig
    from echod.errors import ListenError
    from echod.interfaces import IWorkersReactor, reactorProviding
    from echod.server import fastpath
    from echod.server.workers.supervisor import WorkersService

    monkeypatch.setattr(
        fastpath, "unsupportedReason", lambda: "checked against Twisted 26.10.x only"
    )
    path = tmp_path / "echo.sock"
    config = Config(server=ServerConfig(listen=(f"unix:{path}",), workers=2))
    service = WorkersService(config, reactorProviding(_reactor, IWorkersReactor))
    with pytest.raises(ListenError) as caught:
        service.privilegedStartService()
    assert str(caught.value) == (
        f"workers = N cannot share unix:{path} here (checked against Twisted 26.10.x only): "
        "use workers = 1 for unix: listeners"
    )
    service.listening.stopService()
