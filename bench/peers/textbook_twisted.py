"""
The textbook Twisted echo server, as a benchmark peer: the C{Echo} protocol and a
C{Factory} of the Twisted documentation, made correct the way the documentation
says (FACTS.md, "TCP echo semantics"): the transport is its own streaming
producer (backpressure), and the protocol provides L{IHalfCloseableProtocol}
(after the peer's EOF, flush the echo, then close; unregister the producer
first, or a paused transport never closes).

Nothing is tuned: the stock reactor, the stock transport, one write per read.

C{--udp} serves UDP instead, with the documentation's UDP C{Echo} (a
C{DatagramProtocol} that writes each datagram back to its sender), made correct
too: the port reads datagrams of up to 65535 bytes (Twisted's default of 8192
truncates larger ones silently, FACTS.md, "UDP echo").

usage: python textbook_twisted.py --port PORT [--interface 127.0.0.1] [--udp]
"""

from __future__ import annotations

import argparse
import resource
from typing import Any

from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import DatagramProtocol, Protocol, ServerFactory
from zope.interface import implementer


@implementer(IHalfCloseableProtocol)
class Echo(Protocol):
    transport: Any

    def connectionMade(self) -> None:
        self.transport.registerProducer(self.transport, True)

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)

    def readConnectionLost(self) -> None:
        self.transport.unregisterProducer()
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass


class EchoDatagram(DatagramProtocol):
    transport: Any

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.transport.write(datagram, addr)


def raiseFileLimit() -> None:
    """
    Ten thousand clients need ten thousand descriptors.
    """
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--interface", default="127.0.0.1")
    parser.add_argument("--backlog", type=int, default=4096)
    parser.add_argument("--udp", action="store_true", help="serve UDP instead of TCP")
    args = parser.parse_args()
    raiseFileLimit()

    from twisted.internet import reactor as globalReactor

    reactor: Any = globalReactor
    if args.udp:
        udp = reactor.listenUDP(
            args.port, EchoDatagram(), interface=args.interface, maxPacketSize=65535
        )
        address = udp.getHost()
        print(
            f"listening on udp {address.host}:{address.port} ({type(reactor).__name__})",
            flush=True,
        )
        reactor.run()
        return
    factory = ServerFactory.forProtocol(Echo)
    factory.noisy = False
    port = reactor.listenTCP(args.port, factory, backlog=args.backlog, interface=args.interface)
    address = port.getHost()
    print(f"listening on {address.host}:{address.port} ({type(reactor).__name__})", flush=True)
    reactor.run()


if __name__ == "__main__":
    main()
