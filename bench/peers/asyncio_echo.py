"""
The standard library's asyncio echo server, as a benchmark peer: the
C{asyncio.Protocol} of the Python documentation ("TCP Echo Server"), with
C{--uvloop} to run the same code on uvloop.

Half-close works as it is: C{eof_received} returns None, so the transport
closes itself once the echo is flushed.  The documented example has no
backpressure; C{--flow-control} adds it (pause reading while the write buffer is
above its high-water mark), off by default because uvloop 0.23 was seen to
crash intermittently with C{pause_reading} (FACTS.md, peers).

C{--udp} serves UDP instead, with the documentation's "UDP Echo Server": an
C{asyncio.DatagramProtocol} that sends each datagram back to its sender, made
correct for empty datagrams: C{sendto()} of asyncio (before Python 3.13) and
of uvloop silently sends nothing for empty data, so those go out through the
socket itself.

usage: python asyncio_echo.py --port PORT [--uvloop] [--flow-control | --udp]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import signal
import socket
from contextlib import suppress
from typing import Any, cast


class Echo(asyncio.Protocol):
    transport: asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


class FlowControlledEcho(Echo):
    def pause_writing(self) -> None:
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.transport.resume_reading()


class EchoDatagram(asyncio.DatagramProtocol):
    transport: asyncio.DatagramTransport

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if data:
            self.transport.sendto(data, addr)
        else:
            with suppress(OSError):
                self.sock.sendto(data, addr)


async def serveDatagrams(port: int, interface: str) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((interface, port))
    sock.setblocking(False)
    transport, _ = await loop.create_datagram_endpoint(lambda: EchoDatagram(sock), sock=sock)
    try:
        address = transport.get_extra_info("sockname")
        print(f"listening on udp {address[0]}:{address[1]} ({type(loop).__module__})", flush=True)
        await stop.wait()
    finally:
        transport.close()


async def serve(port: int, interface: str, backlog: int, flowControl: bool) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    protocol = FlowControlledEcho if flowControl else Echo
    server = await loop.create_server(protocol, interface, port, backlog=backlog)
    async with server:
        address = server.sockets[0].getsockname()
        print(f"listening on {address[0]}:{address[1]} ({type(loop).__module__})", flush=True)
        await stop.wait()


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
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    parser.add_argument("--flow-control", action="store_true", help="pause reading when behind")
    parser.add_argument("--udp", action="store_true", help="serve UDP instead of TCP")
    args = parser.parse_args()
    raiseFileLimit()
    if args.udp:
        coroutine = serveDatagrams(args.port, args.interface)
    else:
        coroutine = serve(args.port, args.interface, args.backlog, args.flow_control)
    if args.uvloop:
        import uvloop

        uvloop.run(coroutine)
    else:
        asyncio.run(coroutine)


if __name__ == "__main__":
    main()
