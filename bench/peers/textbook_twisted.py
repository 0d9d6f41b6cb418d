"""
The textbook Twisted echo server, as a benchmark peer: the C{Echo} protocol and a
C{Factory} of the Twisted documentation, made correct the way the documentation
says (FACTS.md, "TCP echo semantics"): the transport is its own streaming
producer (backpressure), and the protocol provides L{IHalfCloseableProtocol}
(after the peer's EOF, flush the echo, then close; unregister the producer
first, or a paused transport never closes).

Nothing is tuned: the stock reactor, the stock transport, one write per read.

usage: python textbook_twisted.py --port PORT [--interface 127.0.0.1]
"""

from __future__ import annotations

import argparse
import resource
from typing import Any

from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Protocol, ServerFactory
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
    args = parser.parse_args()
    raiseFileLimit()

    from twisted.internet import reactor as globalReactor

    reactor: Any = globalReactor
    factory = ServerFactory.forProtocol(Echo)
    factory.noisy = False
    port = reactor.listenTCP(args.port, factory, backlog=args.backlog, interface=args.interface)
    address = port.getHost()
    print(f"listening on {address.host}:{address.port} ({type(reactor).__name__})", flush=True)
    reactor.run()


if __name__ == "__main__":
    main()
