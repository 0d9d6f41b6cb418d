"""
Tests for L{echod.client}: statistics, reply matching across split and joined
reads, the bulk pattern and its backpressure, timeouts on a fake clock, and
the mapping of failures to exit statuses.  No real sockets.
"""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import pytest
from twisted.internet import error
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import CancelledError
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.test import iosim

from echod.client.bulk import BulkPattern
from echod.client.connect import connectFailure
from echod.client.errors import ClosedEarly, ExitStatus, Mismatched, TimedOut
from echod.client.plan import Plan, makePlan
from echod.client.protocols import (
    BULK_WINDOW,
    BulkEchoProtocol,
    EchoClientFactory,
    EchoClientProtocol,
)
from echod.client.report import Reporter, Summary
from echod.client.run import runClient
from echod.client.statistics import RTTStats
from echod.config import ClientConfig, ConfigError, ServerConfig
from echod.server.stream import EchoFactory
from tests.reactortesting import EchodMemoryReactor
from tests.testing import FixedResolver, SilentResolver

PEER = IPv4Address("TCP", "127.0.0.1", 7007)


def plan(**settings: object) -> Plan:
    return makePlan(dataclasses.replace(ClientConfig(), **settings))  # type: ignore[arg-type]


class Harness:
    """
    A client protocol on a L{StringTransport} and a L{Clock}, with its output.
    """

    def __init__(self, thePlan: Plan, window: int = BULK_WINDOW) -> None:
        self.plan = thePlan
        self.clock = Clock()
        self.out = io.StringIO()
        self.err = io.StringIO()
        self.reporter = Reporter(thePlan, self.out, self.err)
        self.factory = EchoClientFactory(thePlan, self.clock, self.reporter)
        self.protocol: EchoClientProtocol | BulkEchoProtocol
        if thePlan.mode == "bulk":
            self.protocol = BulkEchoProtocol(window)
            self.protocol.factory = self.factory
        else:
            built = self.factory.buildProtocol(PEER)
            assert isinstance(built, EchoClientProtocol)
            self.protocol = built
        self.transport = StringTransport(peerAddress=PEER)
        self.closed = False
        self.results: list[None] = []
        self.protocol.finished.addCallback(self.results.append)
        self.protocol.makeConnection(self.transport)

    @property
    def summary(self) -> Summary:
        return self.factory.summary

    def sent(self) -> bytes:
        data: bytes = self.transport.value()
        self.transport.clear()
        return data

    def close(self) -> None:
        """
        What the reactor does once the transport is closed or aborted.
        """
        self.closed = True
        self.protocol.connectionLost(Failure(error.ConnectionDone()))

    def finish(self) -> ExitStatus:
        """
        Close as the reactor would, then report as the run would.
        """
        if self.transport.disconnecting and not self.closed:
            self.close()
        self.summary.error = self.protocol.error
        self.reporter.finished(self.summary)
        return self.summary.status


# --- statistics ---------------------------------------------------------------


def test_statsOfNoReplies() -> None:
    """
    With nothing sent there is no loss and no round-trip summary.
    """
    stats = RTTStats()
    assert stats.lossPercent == 0.0
    assert stats.summary() is None


def test_statsMinAvgMaxPercentiles() -> None:
    """
    min, avg and max are exact; p50 and p99 are nearest-rank percentiles.
    """
    stats = RTTStats(sent=100)
    for value in range(100, 0, -1):
        stats.add(value / 1000, True)
    summary = stats.summary()
    assert summary is not None
    assert summary["min"] == 0.001
    assert summary["max"] == 0.1
    assert summary["avg"] == pytest.approx(0.0505)
    assert summary["p50"] == 0.05
    assert summary["p99"] == 0.099


def test_statsPercentilesOfFewValues() -> None:
    """
    With fewer values than percentiles need, p99 is the largest and p50 the
    middle (lower) one.
    """
    stats = RTTStats(sent=3)
    for value in (0.3, 0.1, 0.2):
        stats.add(value, True)
    summary = stats.summary()
    assert summary is not None
    assert (summary["p50"], summary["p99"]) == (0.2, 0.3)


def test_statsLossAndMismatches() -> None:
    """
    Loss counts messages without a whole reply; a mismatched reply is
    received, not lost.
    """
    stats = RTTStats(sent=4)
    stats.add(0.001, True)
    stats.add(0.002, False)
    stats.add(0.003, True)
    assert stats.lossPercent == 25.0
    assert stats.mismatched == 1
    assert stats.received == 3


# --- the plan -----------------------------------------------------------------


def test_planOneShotByDefault() -> None:
    """
    One message as it is: one-shot mode, the message as UTF-8.
    """
    result = plan(message="Grüße")
    assert (result.mode, result.payload) == ("once", "Grüße".encode())


@pytest.mark.parametrize(
    "settings",
    [{"count": 2}, {"size": 5}, {"json": True}],
)
def test_planPingMode(settings: dict[str, object]) -> None:
    """
    A count, a size or JSON output make it ping mode.
    """
    assert plan(**settings).mode == "ping"


def test_planBulkMode() -> None:
    """
    A bulk size selects bulk mode and needs no payload.
    """
    result = plan(bulk=1000, message="")
    assert (result.mode, result.payload) == ("bulk", b"")


def test_planSizeRepeatsOrCuts() -> None:
    """
    A size repeats the message, or cuts it, to exactly that many bytes.
    """
    assert plan(message="abc", size=7).payload == b"abcabca"
    assert plan(message="abcdef", size=2).payload == b"ab"


def test_planEmptyPayload() -> None:
    """
    An empty message is refused: there would be nothing to echo.
    """
    with pytest.raises(ConfigError, match="nothing to echo"):
        plan(message="")


def test_planFromFile(tmp_path: Path) -> None:
    """
    The payload can be a file, sent as it is, in ping mode.
    """
    path = tmp_path / "payload.bin"
    path.write_bytes(b"\x00\x01\xff")
    result = plan(file=str(path))
    assert (result.mode, result.payload) == ("ping", b"\x00\x01\xff")


def test_planFromStandardInput() -> None:
    """
    C{file = "-"} reads standard input.
    """
    settings = dataclasses.replace(ClientConfig(), file="-")
    assert makePlan(settings, io.BytesIO(b"piped")).payload == b"piped"


def test_planMissingFile(tmp_path: Path) -> None:
    """
    A file that cannot be read is a config error naming it.
    """
    with pytest.raises(ConfigError, match="cannot read the payload: no such file"):
        plan(file=f"{tmp_path}/missing")


# --- one-shot and ping: reply matching ----------------------------------------


def test_oneShotPrintsTheSeedLine() -> None:
    """
    One-shot mode sends the message once and prints exactly what the socket
    example prints, then closes.
    """
    h = Harness(plan())
    assert h.sent() == b"Hello, world"
    h.protocol.dataReceived(b"Hello, world")
    assert h.transport.disconnecting
    assert h.finish() == ExitStatus.OK
    assert h.out.getvalue() == "Received b'Hello, world'\n"
    assert h.err.getvalue() == ""


def test_replySplitIntoSingleBytes() -> None:
    """
    A reply that arrives one byte at a time is one reply.
    """
    h = Harness(plan())
    for byte in b"Hello, world":
        assert not h.transport.disconnecting
        h.protocol.dataReceived(bytes([byte]))
    assert h.finish() == ExitStatus.OK
    assert h.out.getvalue() == "Received b'Hello, world'\n"
    assert h.summary.stats.received == 1


def test_repliesJoinedInOneRead() -> None:
    """
    Replies to several messages that arrive in one read are split by byte
    counts and each gets its own round-trip time.
    """
    h = Harness(plan(count=3, interval=1.0, message="abcd"))
    h.clock.advance(1)
    h.clock.advance(1)
    assert h.sent() == b"abcd" * 3
    h.clock.advance(0.5)
    h.protocol.dataReceived(b"abcdab")
    h.protocol.dataReceived(b"cdabcd")
    assert h.finish() == ExitStatus.OK
    assert h.summary.stats.rtts == [2.5, 1.5, 0.5]
    lines = h.out.getvalue().splitlines()
    assert lines[0] == "ECHO localhost port 7007 (127.0.0.1:7007): 4 bytes, 3 messages"
    assert lines[1:4] == [
        "4 bytes from 127.0.0.1:7007: seq=1 time=2500.000 ms",
        "4 bytes from 127.0.0.1:7007: seq=2 time=1500.000 ms",
        "4 bytes from 127.0.0.1:7007: seq=3 time=500.000 ms",
    ]
    assert lines[-2] == "3 sent, 3 received, 0 mismatched, 0.0% loss, time 2500 ms"
    assert lines[-1] == "rtt min/avg/max/p50/p99 = 500.000/1500.000/2500.000/1500.000/2500.000 ms"


def test_quietPingPrintsTheFirstLineAndTheSummary() -> None:
    """
    With --quiet (ping -q), no line per reply.
    """
    h = Harness(plan(count=2, interval=0.0, message="xy", quiet=True))
    h.protocol.dataReceived(b"xyxy")
    assert h.finish() == ExitStatus.OK
    lines = h.out.getvalue().splitlines()
    assert lines[0].startswith("ECHO ")
    assert not any("seq=" in line for line in lines)
    assert lines[-2].startswith("2 sent, 2 received")


def test_intervalZeroSendsAfterEachReply() -> None:
    """
    With an interval of 0, each message goes as soon as the previous reply is
    back, never two at once.
    """
    h = Harness(plan(count=3, interval=0.0, message="xy"))
    assert h.sent() == b"xy"
    h.protocol.dataReceived(b"x")
    assert h.sent() == b""
    h.protocol.dataReceived(b"y")
    assert h.sent() == b"xy"
    h.protocol.dataReceived(b"xy")
    assert h.sent() == b"xy"
    h.protocol.dataReceived(b"xy")
    assert h.sent() == b""
    assert h.finish() == ExitStatus.OK
    assert h.summary.stats.sent == 3


def test_mismatchedReplyInPingMode() -> None:
    """
    A reply with one byte changed is counted as mismatched, said on its line
    with the offset and both bytes; the run goes on and exits with the
    mismatch status.
    """
    h = Harness(plan(count=2, interval=0.0, message="abcd"))
    h.protocol.dataReceived(b"ab")
    h.protocol.dataReceived(b"Xd")
    h.protocol.dataReceived(b"abcd")
    assert h.finish() == ExitStatus.MISMATCH
    assert h.summary.stats.mismatched == 1
    lines = h.out.getvalue().splitlines()
    assert lines[1].endswith("MISMATCH (sent 0x63, received 0x58 at byte 2)")
    assert "MISMATCH" not in lines[2]
    assert h.err.getvalue() == (
        "echod-client: 1 of 2 replies differed from what was sent "
        "(first: sent 0x63, received 0x58 at byte 2)\n"
    )


def test_mismatchedReplyInOneShotMode() -> None:
    """
    One-shot mode prints what came back and says on stderr how it differs.
    """
    h = Harness(plan())
    h.protocol.dataReceived(b"Hellp, world")
    assert h.finish() == ExitStatus.MISMATCH
    assert h.out.getvalue() == "Received b'Hellp, world'\n"
    assert h.err.getvalue() == (
        "echod-client: the echo differs from what was sent (sent 0x6f, received 0x70 at byte 4)\n"
    )


def test_extraBytesAreAMismatch() -> None:
    """
    Bytes beyond what was sent are a mismatch, and the connection is
    aborted.
    """
    h = Harness(plan(message="ab"))
    h.protocol.dataReceived(b"abc")
    assert h.transport.disconnecting
    h.close()
    assert isinstance(h.protocol.error, Mismatched)
    assert h.finish() == ExitStatus.MISMATCH
    assert "1 bytes more than it was sent" in h.err.getvalue()


def test_replyTimeoutOnTheClock() -> None:
    """
    A reply not complete within the timeout of its message being sent ends
    the run with the timeout status; the message counts as lost.
    """
    h = Harness(plan(count=3, interval=1.0, timeout=2.5, message="abcd"))
    h.clock.advance(1)
    h.protocol.dataReceived(b"abcdab")
    h.clock.advance(2.4)
    assert not h.transport.disconnecting
    h.clock.advance(0.2)
    assert isinstance(h.protocol.error, TimedOut)
    assert h.finish() == ExitStatus.TIMEOUT
    assert (h.summary.stats.sent, h.summary.stats.received) == (3, 1)
    assert h.summary.stats.lossPercent == pytest.approx(200 / 3)
    assert h.err.getvalue() == (
        "echod-client: no reply to message 2 within 2.5 s (2 of 4 bytes came back)\n"
    )
    assert not h.clock.getDelayedCalls()


def test_eachReplyHasItsOwnDeadline() -> None:
    """
    The deadline follows the oldest unanswered message: a late first reply
    does not give the second more time.
    """
    h = Harness(plan(count=2, interval=1.0, timeout=3.0, message="ab"))
    h.clock.advance(1)
    h.clock.advance(1.9)
    h.protocol.dataReceived(b"ab")
    h.clock.advance(1.05)
    assert not h.transport.disconnecting
    h.clock.advance(0.1)
    assert isinstance(h.protocol.error, TimedOut)


def test_serverClosesEarly() -> None:
    """
    The server closing before every reply is back ends the run with the
    closed-early status and says how far it got.
    """
    h = Harness(plan(count=2, interval=0.0, message="abcd"))
    h.protocol.dataReceived(b"abcdab")
    h.close()
    assert isinstance(h.protocol.error, ClosedEarly)
    assert h.finish() == ExitStatus.CLOSED
    assert h.err.getvalue() == (
        "echod-client: the server closed the connection after 1 of 2 replies, 2 bytes of reply 2\n"
    )
    assert not h.clock.getDelayedCalls()


def test_jsonSummaryIsTheOnlyOutput() -> None:
    """
    With JSON, standard output is one JSON object and nothing else.
    """
    h = Harness(plan(count=2, interval=0.0, message="ab", json=True))
    h.protocol.dataReceived(b"abab")
    h.finish()
    document = json.loads(h.out.getvalue())
    assert document["sent"] == 2
    assert document["received"] == 2
    assert document["mismatched"] == 0
    assert document["loss_percent"] == 0.0
    assert document["status"] == 0
    assert set(document["rtt_ms"]) == {"min", "avg", "max", "p50", "p99"}
    assert h.out.getvalue().count("\n") == 1


def test_againstTheRealEchoProtocol() -> None:
    """
    Paired in memory with echod's own server protocol, a ping run gets every
    reply back.
    """
    clock = Clock()
    thePlan = plan(count=5, interval=0.0, message="ping!")
    out, err = io.StringIO(), io.StringIO()
    factory = EchoClientFactory(thePlan, clock, Reporter(thePlan, out, err))
    serverFactory = EchoFactory(ServerConfig(idle_timeout=0), clock)
    server = serverFactory.buildProtocol(PEER)
    clientProtocol = factory.buildProtocol(PEER)
    assert server is not None and clientProtocol is not None
    pump = iosim.connect(
        server,
        iosim.makeFakeServer(server),
        clientProtocol,
        iosim.makeFakeClient(clientProtocol),
    )
    pump.flush()
    assert factory.summary.stats.received == 5
    assert factory.summary.status == ExitStatus.OK


# --- bulk ---------------------------------------------------------------------


def test_patternIsDeterministic() -> None:
    """
    Two patterns of the same size hold the same bytes.
    """
    assert BulkPattern(100_000).chunk(1) == BulkPattern(100_000).chunk(1)


def test_patternChunksDiffer() -> None:
    """
    No two chunks are alike: each starts with its index.
    """
    pattern = BulkPattern(10 * 1024, chunkSize=1024)
    chunks = {pattern.chunk(i) for i in range(10)}
    assert len(chunks) == 10


def test_patternLastChunkIsCut() -> None:
    """
    The stream is exactly the bulk size long.
    """
    pattern = BulkPattern(2500, chunkSize=1024)
    assert [len(pattern.chunk(i)) for i in range(3)] == [1024, 1024, 452]


def test_patternVerifiesAcrossChunkBoundaries() -> None:
    """
    Any split of the stream verifies, piece by piece, across chunk
    boundaries.
    """
    pattern = BulkPattern(5000, chunkSize=1024)
    stream = b"".join(pattern.chunk(i) for i in range(5))
    assert len(stream) == 5000
    checker = BulkPattern(5000, chunkSize=1024)
    offset = 0
    for size in (1, 1500, 7, 2000, 1492):
        assert checker.mismatch(offset, stream[offset : offset + size]) is None
        offset += size
    assert offset == 5000


def test_patternFindsOneChangedByte() -> None:
    """
    One changed byte is found, with its offset in the stream.
    """
    pattern = BulkPattern(5000, chunkSize=1024)
    stream = bytearray(b"".join(pattern.chunk(i) for i in range(5)))
    stream[3000] ^= 0x01
    problem = pattern.mismatch(2048, bytes(stream[2048:4000]))
    assert problem is not None and problem.endswith(f"at byte {3000}")


def test_patternFindsAChunkRepeated() -> None:
    """
    A chunk echoed twice (with one missing) does not pass.
    """
    pattern = BulkPattern(4096, chunkSize=1024)
    assert pattern.mismatch(2048, pattern.chunk(1)) is not None


def test_bulkKeepsAtMostAWindowUnverified() -> None:
    """
    Bulk mode never has more than its window sent and unverified, and sends
    more as the echo is verified.
    """
    h = Harness(plan(bulk=100_000), window=10_000)
    assert isinstance(h.protocol, BulkEchoProtocol)
    assert h.transport.producer is h.protocol
    first = h.sent()
    assert len(first) == 10_000
    h.protocol.dataReceived(first[:4000])
    assert len(h.sent()) == 4000
    assert h.protocol.sent - h.protocol.verified == 10_000


def test_bulkObeysTheTransportsPause() -> None:
    """
    While the transport has paused it, bulk mode writes nothing; it goes on
    when resumed.
    """
    h = Harness(plan(bulk=100_000), window=10_000)
    assert isinstance(h.protocol, BulkEchoProtocol)
    first = h.sent()
    h.protocol.pauseProducing()
    h.protocol.dataReceived(first)
    assert h.sent() == b""
    h.protocol.resumeProducing()
    assert len(h.sent()) == 10_000


def test_bulkVerifiesEverythingThenCloses() -> None:
    """
    Echoing the whole stream back, in odd pieces, verifies every byte; the
    producer is unregistered before closing, and the MB/s comes from the clock.
    """
    h = Harness(plan(bulk=300_000), window=50_000)
    assert isinstance(h.protocol, BulkEchoProtocol)
    while not h.transport.disconnecting:
        data = h.sent()
        assert data
        h.clock.advance(0.01)
        for start in range(0, len(data), 7777):
            h.protocol.dataReceived(data[start : start + 7777])
    assert h.transport.producer is None
    assert h.finish() == ExitStatus.OK
    assert h.summary.bytesVerified == 300_000
    assert h.summary.seconds == pytest.approx(0.06)
    assert h.summary.megabytesPerSecond == pytest.approx(5.0)
    assert h.out.getvalue().splitlines()[-1] == (
        "300000 bytes sent, 300000 bytes verified in 0.060 s: 5.0 MB/s"
    )


def test_bulkMismatch() -> None:
    """
    One changed byte in the echo ends bulk mode with the mismatch status and
    its offset.
    """
    h = Harness(plan(bulk=100_000), window=10_000)
    data = bytearray(h.sent())
    data[1234] ^= 0xFF
    h.protocol.dataReceived(bytes(data))
    assert h.transport.disconnecting
    h.close()
    assert h.finish() == ExitStatus.MISMATCH
    assert "at byte 1234" in h.err.getvalue()


def test_bulkTimeoutWithoutProgress() -> None:
    """
    Bulk mode times out when nothing comes back for the timeout, however long
    the whole transfer takes.
    """
    h = Harness(plan(bulk=100_000, timeout=1.0), window=10_000)
    unechoed = bytearray()
    for _ in range(5):
        h.clock.advance(0.9)
        unechoed += h.sent()
        h.protocol.dataReceived(bytes(unechoed[:1000]))
        del unechoed[:1000]
    assert not h.transport.disconnecting
    h.clock.advance(1.0)
    assert h.transport.disconnecting
    h.close()
    assert h.finish() == ExitStatus.TIMEOUT
    assert "no echo for 1 s" in h.err.getvalue()


# --- failures and exit statuses ------------------------------------------------


@pytest.mark.parametrize(
    ("failure", "status", "text"),
    [
        (error.DNSLookupError("x"), ExitStatus.UNRESOLVED, "srv.invalid: name does not resolve"),
        (
            error.ConnectionRefusedError(),
            ExitStatus.UNREACHABLE,
            "connection refused by srv.invalid port 7007",
        ),
        (
            error.NoRouteError(113, "No route to host"),
            ExitStatus.UNREACHABLE,
            "cannot connect to srv.invalid port 7007: no route to host",
        ),
        (
            error.TimeoutError(),
            ExitStatus.TIMEOUT,
            "could not connect to srv.invalid port 7007 within 5 s",
        ),
        (CancelledError(), ExitStatus.TIMEOUT, "within 5 s"),
    ],
)
def test_connectFailures(failure: Exception, status: ExitStatus, text: str) -> None:
    """
    Each way a connection fails has its own line and exit status.
    """
    result = connectFailure(Failure(failure), plan(host="srv.invalid"))
    assert result.status == status
    assert text in str(result)


def test_connectFailureNamesTheAddressesTried() -> None:
    """
    The addresses the name resolved to are in the message.
    """
    result = connectFailure(
        Failure(error.ConnectionRefusedError()),
        plan(),
        [IPv6Address("TCP", "::1", 7007), IPv4Address("TCP", "127.0.0.1", 7007)],
    )
    assert str(result) == "connection refused by localhost port 7007 (tried ::1, 127.0.0.1)"


def test_connectFailureForOneFamily() -> None:
    """
    With -6, a name without IPv6 addresses says so.
    """
    result = connectFailure(Failure(error.DNSLookupError()), plan(family="ipv6"))
    assert str(result) == "localhost: no IPv6 address found"
    assert result.status == ExitStatus.UNRESOLVED


def test_exitStatusesAreDistinct() -> None:
    """
    Every failure class has its own documented status.
    """
    assert [int(s) for s in ExitStatus] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 130]


def test_mismatchDecidesOverTheEndingError() -> None:
    """
    Replies that differed give the mismatch status even when an error ended
    the run; without them, the error decides.
    """
    mismatched = Summary("ping", "t", error=TimedOut("late"))
    mismatched.stats.add(0.1, False)
    assert mismatched.status == ExitStatus.MISMATCH
    late = Summary("ping", "t", error=TimedOut("late"))
    late.stats.add(0.1, True)
    assert late.status == ExitStatus.TIMEOUT


def test_mismatchAndEndingErrorAreBothSaid() -> None:
    """
    A mismatch and then an early close: a line each on stderr.
    """
    h = Harness(plan(count=3, interval=0.0, message="abcd"))
    h.protocol.dataReceived(b"abXd")
    h.close()
    assert h.finish() == ExitStatus.MISMATCH
    assert h.err.getvalue().splitlines() == [
        "echod-client: 1 of 1 replies differed from what was sent "
        "(first: sent 0x63, received 0x58 at byte 2)",
        "echod-client: the server closed the connection after 1 of 3 replies",
    ]


# --- connecting on a fake clock -------------------------------------------------


def test_connectTimeoutCoversResolution() -> None:
    """
    The timeout bounds resolving and connecting together, on the reactor's
    clock: a resolver that never answers ends the run with the timeout
    status.
    """
    reactor = EchodMemoryReactor()
    out, err = io.StringIO(), io.StringIO()
    _, status = runClient(reactor, plan(timeout=2.0), out, err, SilentResolver())
    results: list[ExitStatus] = []
    status.addCallback(results.append)
    reactor.advance(1.9)
    assert results == []
    reactor.advance(0.2)
    assert results == [ExitStatus.TIMEOUT]
    assert err.getvalue() == ("echod-client: could not connect to localhost port 7007 within 2 s\n")


@pytest.mark.parametrize(
    ("family", "hosts"),
    [("any", ["::1", "127.0.0.1"]), ("ipv4", ["127.0.0.1"]), ("ipv6", ["::1"])],
)
def test_familyFiltersAddresses(family: str, hosts: list[str]) -> None:
    """
    -4 and -6 ask the resolver for one family, so only those addresses are
    tried.
    """
    reactor = EchodMemoryReactor()
    resolver = FixedResolver("::1", "127.0.0.1")
    runClient(reactor, plan(family=family), io.StringIO(), io.StringIO(), resolver)
    reactor.advance(1)
    assert [c[0] for c in reactor.tcpClients] == hosts
