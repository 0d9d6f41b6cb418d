"""
Twisted's own reactor, TCP, Unix-socket and TLS test suites, run against
echod's fast paths: every reactor test builds an L{EchodReactor}, and every
listening port accepts connections as immediate-write transports.

Run as C{python -m tests.twistedsuite [trial arguments]}; used by
tests/e2e/test_twisted_suite.py.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.internet import tcp, unix
from twisted.internet.test import reactormixins
from twisted.trial.unittest import SkipTest

from echod.server import fastpath

# Before any test module is imported: they make one test class per reactor
# in this list when they are imported.
reactormixins.ReactorBuilder._reactors = ["echod.server.fastpath.EchodReactor"]

from twisted.internet.test import test_fdset, test_tcp, test_tls  # noqa: E402

MODULES = [
    "twisted.internet.test.test_core",
    "twisted.internet.test.test_fdset",
    "twisted.internet.test.test_epollreactor",
    "twisted.internet.test.test_tcp",
    "twisted.internet.test.test_unix",
    "twisted.internet.test.test_tls",
    "twisted.internet.test.test_abstract",
    "twisted.test.test_tcp",
    "twisted.test.test_unix",
    "twisted.test.test_loopback",
]

# What echod's fast paths knowingly do differently, with the reason.
KNOWN = {
    (test_fdset.ReactorFDSetTestsBuilder, "test_lostFileDescriptor"): (
        "epoll cannot see a descriptor replaced under it; Twisted skips this test for "
        "EPollReactor by class name, and EchodReactor is an EPollReactor"
    ),
    (test_tcp.TCPClientTestsBase, "test_logPrefix"): (
        "the lean poll loop does not push the legacy log context, so old-style log "
        "lines emitted inside dataReceived carry no 'system' prefix"
    ),
    (test_tls.SSLClientTestsMixin, "test_logPrefix"): "as test_tcp's test_logPrefix",
    (test_tls.StartTLSClientTestsMixin, "test_logPrefix"): "as test_tcp's test_logPrefix",
}


def _skipper(reason: str) -> Any:
    def skip(self: object) -> None:
        raise SkipTest(f"echod fast paths: {reason}")

    return skip


def main(argv: list[str]) -> None:
    tcp.Port.transport = fastpath.ImmediateWriteTCPServer
    unix.Port.transport = fastpath.ImmediateWriteUNIXServer
    for (cls, name), reason in KNOWN.items():
        setattr(cls, name, _skipper(reason))
    from twisted.scripts.trial import run

    modules = [] if any(a.startswith("twisted.") for a in argv) else MODULES
    sys.argv = ["trial", *argv, *modules]
    run()


if __name__ == "__main__":
    main(sys.argv[1:])
