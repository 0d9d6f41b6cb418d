"""
Filters attached to real sockets: the kernel obeys the programs
L{echod.sniff.bpf} hands it.
"""

from __future__ import annotations

import socket

from twisted.trial.unittest import SynchronousTestCase

from echod.sniff import bpf
from echod.sniff.bpf import FilterProgram


class AttachTests(SynchronousTestCase):
    """
    L{bpf.attachFilter} hands the kernel a real C{struct sock_fprog}: a UDP
    socket (no privilege needed) obeys the programs attached to it.
    """

    def exchange(self, program: FilterProgram) -> bytes | None:
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender,
        ):
            receiver.bind(("127.0.0.1", 0))
            bpf.attachFilter(receiver, program)
            sender.sendto(b"ping", receiver.getsockname())
            receiver.settimeout(0.3)
            try:
                return receiver.recv(100)
            except TimeoutError:
                return None

    def test_dropAll(self) -> None:
        assert self.exchange(bpf.DROP_ALL) is None

    def test_acceptAll(self) -> None:
        assert self.exchange(bpf.acceptAll(65535)) == b"ping"

    def test_truncates(self) -> None:
        """
        The program's return value is how many bytes are kept (for a UDP
        socket, counted from the UDP header).
        """
        assert self.exchange(bpf.acceptAll(8 + 2)) == b"pi"
