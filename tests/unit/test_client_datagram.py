"""
Tests for the client over UDP (L{echod.client.datagram}, L{DatagramStats},
the UDP rules of the plan): counting loss, duplicates, reordering, late and
mismatched replies, percentiles, mdev and jitter; matching by sequence number
and by content; the window of a flood; deadlines on a fake clock; falling
back to the next address; exit statuses.  No real sockets: ports are
L{tests.testing.ConnectedDatagramPort}s.
"""

from __future__ import annotations

import dataclasses
import errno
import io
import json
import math
import socket
import struct
from typing import NoReturn

import pytest
from twisted.internet.error import MessageLengthError

from echod.client.datagram import MAX_PACKET, DatagramClient, builtDatagram
from echod.client.errors import ExitStatus
from echod.client.plan import BUILT_HEADER, Plan, makePlan
from echod.client.report import Summary
from echod.client.statistics import DatagramStats, ReplyKind
from echod.config import ClientConfig, ConfigError
from tests.testing import ConnectedDatagramPort, DatagramClientReactor, FixedResolver

NONCE = 0x01020304


def udpPlan(messageGiven: bool = False, **settings: object) -> Plan:
    settings.setdefault("host", "127.0.0.1")
    config = dataclasses.replace(ClientConfig(), protocol="udp", **settings)  # type: ignore[arg-type]
    return makePlan(config, messageGiven=messageGiven)


class Run:
    """
    A L{DatagramClient} on a fake reactor and clock, resolving to C{hosts},
    with what it printed and its result.
    """

    def __init__(
        self,
        plan: Plan,
        hosts: tuple[str, ...] = ("127.0.0.1",),
        writeError: Exception | None = None,
    ) -> None:
        self.plan = plan
        self.reactor = DatagramClientReactor(writeError)
        self.out = io.StringIO()
        self.err = io.StringIO()
        self.client = DatagramClient(
            self.reactor, plan, self.out, self.err, resolver=FixedResolver(*hosts), nonce=NONCE
        )
        self.results: list[Summary] = []
        self.client.run().addCallback(self.results.append)

    @property
    def port(self) -> ConnectedDatagramPort:
        return self.reactor.udpPorts[-1]

    def advance(self, seconds: float) -> None:
        self.reactor.advance(seconds)

    def echo(self, datagrams: list[bytes] | None = None) -> None:
        """
        Send back C{datagrams}, by default everything written so far.
        """
        for datagram in self.port.take() if datagrams is None else datagrams:
            self.port.deliver(datagram)

    @property
    def summary(self) -> Summary:
        assert self.results, "the run has not ended"
        return self.results[0]

    @property
    def status(self) -> ExitStatus:
        return self.summary.status

    @property
    def stats(self) -> DatagramStats:
        stats = self.client.summary.stats
        assert isinstance(stats, DatagramStats)
        return stats

    def lines(self) -> list[str]:
        return self.out.getvalue().splitlines()


def seqOf(datagram: bytes) -> int:
    seq: int = struct.unpack_from("!Q", datagram, 8)[0]
    return seq


# --- statistics ------------------------------------------------------------------


def sentStats(count: int, unordered: bool = False) -> DatagramStats:
    stats = DatagramStats.unordered() if unordered else DatagramStats()
    for i in range(count):
        stats.recordSent(float(i))
    return stats


def test_statsAnswersDuplicatesAndLateReplies() -> None:
    """
    The first reply to a message is its answer; another is a duplicate; one
    to a message already given up is late, and the message stays lost.
    """
    stats = sentStats(3)
    assert stats.recordReply(1, 0.5, True).kind is ReplyKind.ANSWER
    assert stats.recordReply(1, 0.6, True).kind is ReplyKind.DUPLICATE
    assert stats.expire(2)
    assert not stats.expire(1)
    assert stats.recordReply(2, 9.0, True).kind is ReplyKind.LATE
    assert (stats.received, stats.duplicates, stats.late, stats.lost) == (1, 1, 1, 2)
    assert stats.inFlight == 1
    assert stats.lossPercent == pytest.approx(200 / 3)


def test_statsRoundTripTimeFromTheSendTime() -> None:
    stats = sentStats(2)
    reply = stats.recordReply(2, 1.25, True)
    assert reply.rtt == 0.25
    assert list(stats.rtts) == [0.25]


@pytest.mark.parametrize(
    ("order", "reordered"),
    [
        ([1, 2, 3, 4], 0),
        ([1, 3, 2, 4], 1),
        ([1, 4, 2, 3], 2),
        ([4, 3, 2, 1], 3),
        ([2, 1, 1, 3], 1),
    ],
)
def test_statsReorderedIsAnAnswerBelowTheHighest(order: list[int], reordered: int) -> None:
    """
    An answer whose sequence number is below the highest answered so far
    is reordered (RFC 4737); duplicates do not count.
    """
    stats = sentStats(4)
    for seq in order:
        stats.recordReply(seq, 5.0, True)
    assert stats.reordered == reordered


def test_statsWithoutOrderSeeNoReordering() -> None:
    """
    Messages told apart by content only: reordering is not known (None).
    """
    stats = sentStats(2, unordered=True)
    stats.recordReply(2, 3.0, True)
    stats.recordReply(1, 3.0, True)
    assert stats.reordered is None


def test_statsMismatchedCountsEveryDifferingReply() -> None:
    """
    A differing answer is received and mismatched; a differing duplicate or
    a stray (no message of ours) is mismatched only.
    """
    stats = sentStats(2)
    stats.recordReply(1, 1.0, False)
    stats.recordReply(1, 1.0, False)
    stats.recordStray()
    assert (stats.received, stats.duplicates, stats.mismatched, stats.lost) == (1, 1, 3, 1)


def test_statsPercentilesAndMdev() -> None:
    """
    p50 and p99 are nearest-rank; mdev is the population standard deviation
    (ping's).
    """
    stats = sentStats(100)
    for seq in range(100, 0, -1):
        stats.recordReply(seq, (seq - 1) + seq / 1000, True)
    summary = stats.summary()
    assert summary is not None
    assert (summary["min"], summary["max"]) == pytest.approx((0.001, 0.1))
    assert summary["avg"] == pytest.approx(0.0505)
    assert (summary["p50"], summary["p99"]) == pytest.approx((0.05, 0.099))
    assert summary["mdev"] == pytest.approx(math.sqrt((100**2 - 1) / 12) / 1000)


def test_statsJitterIsRFC3550OnRoundTripTimes() -> None:
    """
    Each answer moves the jitter by (|D| - J) / 16, D the difference of its
    round-trip time from the previous answer's, in order of arrival.
    """
    stats = sentStats(3)
    assert stats.jitterOrNone is None
    stats.recordReply(1, 0.010, True)
    assert stats.jitterOrNone == 0.0
    stats.recordReply(3, 2.020, True)
    stats.recordReply(2, 1.015, True)
    first = 0.010 / 16
    assert stats.jitter == pytest.approx(first + (0.005 - first) / 16)


def test_statsJitterIgnoresDuplicatesAndLateReplies() -> None:
    stats = sentStats(3)
    stats.recordReply(1, 0.010, True)
    stats.recordReply(1, 0.900, True)
    stats.expire(2)
    stats.recordReply(2, 5.0, True)
    assert stats.jitter == 0.0
    assert list(stats.rtts) == [0.010]


def test_statsOfNothing() -> None:
    stats = DatagramStats()
    assert (stats.lossPercent, stats.summary(), stats.jitterOrNone) == (0.0, None, None)


# --- the plan ------------------------------------------------------------------------


def test_planBuildsDatagramsWithoutAMessageOfTheUsers() -> None:
    """
    Ping mode with no message given and no file: the client builds 64-byte
    datagrams, a 24-byte header and the message repeated after it.
    """
    plan = udpPlan(count=3)
    assert (plan.mode, plan.built, plan.messageSize) == ("ping", True, 64)
    assert len(plan.payload) == 64 - BUILT_HEADER
    assert plan.payload.startswith(b"Hello, worldHello")


def test_planSizeOfBuiltDatagrams() -> None:
    assert udpPlan(count=3, size=1400).messageSize == 1400
    assert udpPlan(count=3, size=BUILT_HEADER).payload == b""


def test_planSendsTheUsersPayloadAsItIs() -> None:
    """
    A message of the user's (even the default text, typed) or a file is
    sent as it is; one-shot always is.
    """
    assert not udpPlan(count=3, message="hi", messageGiven=True).built
    assert not udpPlan(count=3, messageGiven=True).built
    assert udpPlan(count=3, message="hi", messageGiven=True, size=5).payload == b"hihih"
    once = udpPlan()
    assert (once.mode, once.built, once.payload) == ("once", False, b"Hello, world")


def test_planWithoutKnowingWhetherAMessageWasGiven() -> None:
    """
    When the caller cannot say, a message other than the default is the
    user's.
    """
    config = dataclasses.replace(ClientConfig(), protocol="udp", count=2, message="x")
    assert not makePlan(config).built
    assert makePlan(dataclasses.replace(config, message="Hello, world")).built


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"count": 2, "size": 10},
            "client.size = 10: datagrams the client builds are at least 24 bytes",
        ),
        ({"count": 2, "size": 65528}, "65528 bytes is too large for UDP (at most 65527)"),
        (
            {"count": 2, "size": 65508, "family": "ipv4"},
            "65508 bytes is too large for IPv4 (at most 65507)",
        ),
        ({"count": 2, "window": 4}, "client.window = 4: a window is for --interval 0"),
        ({"bulk": 1000}, "client.bulk = 1000: bulk mode streams over TCP"),
        ({"endpoint": "tcp:host=127.0.0.1:port=7"}, "endpoint strings are for TCP"),
    ],
)
def test_planRefusesWhatUDPCannotDo(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        udpPlan(**settings)  # type: ignore[arg-type]
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"window": 2, "interval": 0.0, "count": 5}, "a window is for UDP (-u)"),
        ({"max_loss": 5.0, "count": 5}, "a loss allowance is for UDP (-u)"),
    ],
)
def test_planRefusesUDPKeysOverTCP(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        makePlan(dataclasses.replace(ClientConfig(), **settings))  # type: ignore[arg-type]
    assert message in str(caught.value)


def test_planTooLargePayloadNamesItsKey() -> None:
    with pytest.raises(ConfigError) as caught:
        udpPlan(message="x" * 65528, messageGiven=True)
    assert str(caught.value).startswith('client.message = "xxxx')


# --- one-shot ------------------------------------------------------------------------


def test_oneShotPrintsTheSeedLine() -> None:
    """
    One datagram, as it is, to the address resolved; the reply printed as
    the socket example does; exit 0.
    """
    run = Run(udpPlan(message="Hello, world", messageGiven=True))
    assert run.port.connected == ("127.0.0.1", 7007)
    assert run.port.interface == "0.0.0.0"
    assert run.port.maxPacketSize == MAX_PACKET == 65535
    assert run.port.handle.options  # the receive buffer was raised
    assert run.port.written == [b"Hello, world"]
    run.echo()
    assert run.status == ExitStatus.OK
    assert run.out.getvalue() == "Received b'Hello, world'\n"
    assert run.err.getvalue() == ""
    assert not run.port.listening
    assert not run.reactor.getDelayedCalls()


def test_oneShotOverIPv6BindsAnIPv6Socket() -> None:
    run = Run(udpPlan(), hosts=("::1",))
    assert (run.port.interface, run.port.connected) == ("::", ("::1", 7007))
    run.echo()
    assert run.status == ExitStatus.OK


def test_oneShotCutReply() -> None:
    """
    A reply cut short (as by a server's small buffer) differs: status 7.
    """
    run = Run(udpPlan(message="Hello, world", messageGiven=True))
    run.port.take()
    run.port.deliver(b"Hello")
    assert run.status == ExitStatus.MISMATCH
    assert run.out.getvalue() == "Received b'Hello'\n"
    assert run.err.getvalue() == (
        "echod-client: the echo differs from what was sent (sent 12 bytes, received 5)\n"
    )


def test_oneShotWithoutReply() -> None:
    run = Run(udpPlan(timeout=2.0))
    run.advance(1.999)
    assert not run.results
    run.advance(0.001)
    assert run.status == ExitStatus.TIMEOUT
    assert run.err.getvalue() == (
        "echod-client: no reply to the datagram within 2 s (tried 127.0.0.1)\n"
    )


# --- ping, matched by sequence number --------------------------------------------------


def test_builtDatagramsCarrySequenceAndSendTime() -> None:
    run = Run(udpPlan(count=3, interval=0.5))
    run.advance(0.5)
    run.advance(0.5)
    written = run.port.take()
    fill = run.plan.payload
    assert written == [
        builtDatagram(NONCE, 1, 0.0, fill),
        builtDatagram(NONCE, 2, 0.5, fill),
        builtDatagram(NONCE, 3, 1.0, fill),
    ]
    assert written[1][:4] == b"echd"
    assert struct.unpack("!I", written[1][4:8]) == (NONCE,)
    assert struct.unpack("!Qd", written[1][8:24]) == (2, 0.5)


def test_pingLinesAndSummary() -> None:
    """
    A line per reply, then the summary with loss, duplicates, reordering,
    mismatches, RTT min/avg/max/p50/p99/mdev and jitter.
    """
    run = Run(udpPlan(count=3, interval=1.0))
    first = run.port.take()
    run.advance(0.25)
    run.echo(first)
    run.advance(0.75)
    second = run.port.take()
    run.advance(0.5)
    run.echo(second)
    run.advance(0.5)
    run.advance(0.125)
    run.echo()
    assert run.status == ExitStatus.OK
    assert run.lines() == [
        "ECHO 127.0.0.1 port 7007 over UDP (127.0.0.1:7007): 64 bytes, 3 datagrams",
        "64 bytes from 127.0.0.1:7007: seq=1 time=250.000 ms",
        "64 bytes from 127.0.0.1:7007: seq=2 time=500.000 ms",
        "64 bytes from 127.0.0.1:7007: seq=3 time=125.000 ms",
        "",
        "--- 127.0.0.1 port 7007 echo statistics (UDP) ---",
        "3 sent, 3 received, 0 lost, 0 duplicated, 0 reordered, 0 mismatched, 0.0% loss, "
        "time 2125 ms",
        "rtt min/avg/max/p50/p99/mdev = 125.000/291.667/500.000/250.000/500.000/155.902 ms, "
        "jitter 38.086 ms",
    ]
    assert run.err.getvalue() == ""


def test_intervalDoesNotDrift() -> None:
    """
    The n-th datagram goes at n intervals after the first, whatever the
    timers' lateness.
    """
    run = Run(udpPlan(count=4, interval=1.0, timeout=10.0))
    run.advance(1.3)
    run.advance(0.7)
    run.advance(1.0)
    sent = [struct.unpack_from("!d", d, 16)[0] for d in run.port.take()]
    assert sent == [0.0, 1.3, 2.0, 3.0]


def test_floodKeepsTheWindowInFlight() -> None:
    """
    --interval 0 --window 4: four datagrams at once, one more for each
    answer, never more than four waiting; --count bounds it.
    """
    run = Run(udpPlan(count=10, interval=0.0, window=4))
    first = run.port.take()
    assert [seqOf(d) for d in first] == [1, 2, 3, 4]
    run.echo(first[:1])
    fifth = run.port.take()
    assert [seqOf(d) for d in fifth] == [5]
    run.echo(first[1:])
    batch = run.port.take()
    assert [seqOf(d) for d in batch] == [6, 7, 8]
    run.echo(batch)
    last = run.port.take()
    assert [seqOf(d) for d in last] == [9, 10]
    run.echo(last)
    assert not run.results
    assert run.stats.inFlight == 1
    run.echo(fifth)
    assert run.status == ExitStatus.OK
    assert (run.stats.sent, run.stats.received) == (10, 10)
    assert run.lines()[0].endswith("64 bytes, 10 datagrams, 4 in flight")


def test_floodWindowOfOneSendsAfterEachAnswer() -> None:
    run = Run(udpPlan(count=3, interval=0.0))
    for seq in (1, 2, 3):
        written = run.port.take()
        assert [seqOf(d) for d in written] == [seq]
        run.echo(written)
    assert run.status == ExitStatus.OK


def test_lossAfterTheTimeoutFreesTheWindow() -> None:
    """
    A datagram without a reply within --timeout is lost, said so, and its
    place in the window goes to the next.
    """
    run = Run(udpPlan(count=3, interval=0.0, window=2, timeout=1.0))
    _, second = run.port.take()
    run.advance(0.5)
    run.echo([second])
    third = run.port.take()
    run.advance(0.5)
    assert "no reply to seq=1 within 1 s" in run.lines()
    run.echo(third)
    assert run.status == ExitStatus.LOSS
    assert (run.stats.sent, run.stats.received, run.stats.lost) == (3, 2, 1)
    assert run.err.getvalue() == (
        "echod-client: 1 of 3 datagrams lost (33.3%, more than the 0% allowed)\n"
    )


def test_maxLossAcceptsSomeLoss() -> None:
    def ending(maxLoss: float) -> ExitStatus:
        run = Run(udpPlan(count=4, interval=0.0, window=4, timeout=1.0, max_loss=maxLoss))
        run.echo(run.port.take()[1:])
        run.advance(1.0)
        return run.status

    assert ending(25.0) == ExitStatus.OK
    assert ending(24.9) == ExitStatus.LOSS


def test_noReplyAtAllIsATimeout() -> None:
    run = Run(udpPlan(count=3, interval=0.0, window=3, timeout=1.0))
    run.advance(1.0)
    assert run.status == ExitStatus.TIMEOUT
    assert run.err.getvalue() == (
        "echod-client: no reply to any of 3 datagrams within 1 s (tried 127.0.0.1)\n"
    )


def test_duplicateReorderedMismatchedAndStray() -> None:
    """
    Each kind of reply has its mark on its line and its count; duplicates
    and reordering are no failure, a differing byte is (status 7).
    """
    run = Run(udpPlan(count=4, interval=0.0, window=4))
    one, two, three, four = run.port.take()
    corrupted = four[:-1] + bytes([four[-1] ^ 0x20])
    run.echo([one, one, three, two, b"not ours", corrupted])
    assert run.lines()[1:6] == [
        "64 bytes from 127.0.0.1:7007: seq=1 time=0.000 ms",
        "64 bytes from 127.0.0.1:7007: seq=1 time=0.000 ms (DUP!)",
        "64 bytes from 127.0.0.1:7007: seq=3 time=0.000 ms",
        "64 bytes from 127.0.0.1:7007: seq=2 time=0.000 ms (reordered)",
        "8 bytes from 127.0.0.1:7007: MISMATCH (a reply to no datagram sent)",
    ]
    assert run.lines()[6] == (
        "64 bytes from 127.0.0.1:7007: seq=4 time=0.000 ms MISMATCH "
        "(sent 0x6c, received 0x4c at byte 63)"
    )
    stats = run.stats
    assert (stats.sent, stats.received, stats.lost) == (4, 4, 0)
    assert (stats.duplicates, stats.reordered, stats.mismatched) == (1, 1, 2)
    assert run.status == ExitStatus.MISMATCH
    assert run.lines()[-2].startswith(
        "4 sent, 4 received, 0 lost, 1 duplicated, 1 reordered, 2 mismatched, 0.0% loss"
    )
    assert run.err.getvalue() == (
        "echod-client: 2 replies differed from what was sent (first: a reply to no datagram sent)\n"
    )


def test_replyToAnotherRunIsAStray() -> None:
    """
    A datagram with another run's number, or a sequence number never sent,
    answers nothing of ours.
    """
    run = Run(udpPlan(count=2, interval=0.0, window=2))
    one, two = run.port.take()
    run.echo([builtDatagram(NONCE + 1, 1, 0.0, run.plan.payload)])
    run.echo([builtDatagram(NONCE, 3, 0.0, run.plan.payload)])
    run.echo([one, two])
    assert (run.stats.received, run.stats.mismatched) == (2, 2)


def test_lateReplyDuringTheRun() -> None:
    """
    A reply after its datagram's deadline, while the run goes on, is late:
    marked, counted, and the datagram stays lost.
    """
    run = Run(udpPlan(count=2, interval=1.0, timeout=1.0))
    first = run.port.take()
    run.advance(1.0)
    run.advance(0.25)
    run.echo(first)
    run.echo()
    assert run.lines()[1:4] == [
        "no reply to seq=1 within 1 s",
        "64 bytes from 127.0.0.1:7007: seq=1 time=1250.000 ms (late: lost after 1 s)",
        "64 bytes from 127.0.0.1:7007: seq=2 time=250.000 ms",
    ]
    assert (run.stats.received, run.stats.late, run.stats.lost) == (1, 1, 1)
    assert "1 lost, 1 late," in run.lines()[-2]


def test_quietPrintsTheFirstLineAndTheSummary() -> None:
    run = Run(udpPlan(count=2, interval=0.0, quiet=True, timeout=1.0))
    run.echo()
    run.advance(1.0)
    lines = run.lines()
    assert lines[0].startswith("ECHO ")
    assert lines[1:3] == ["", "--- 127.0.0.1 port 7007 echo statistics (UDP) ---"]
    assert len(lines) == 5


def test_fullSendBufferIsTriedAgain() -> None:
    """
    A send the kernel refuses for now (EAGAIN) is neither counted nor lost:
    it goes again a moment later.
    """
    run = Run(udpPlan(count=2, interval=0.0))
    first = run.port.take()
    run.port.writeError = OSError(errno.EAGAIN, "Resource temporarily unavailable")
    run.echo(first)
    assert (run.port.written, run.stats.sent) == ([], 1)
    run.port.writeError = None
    run.advance(0.001)
    assert [seqOf(d) for d in run.port.take()] == [2]
    assert run.stats.sent == 2


# --- matched by content --------------------------------------------------------------


def test_contentMatchingOldestFirst() -> None:
    """
    A payload of the user's own: every datagram the same, each reply
    answers the oldest waiting; after a loss, an identical reply is late,
    and one more a duplicate; reordering is not known.
    """
    run = Run(
        udpPlan(count=3, interval=0.0, window=3, timeout=1.0, message="ab", messageGiven=True)
    )
    assert run.port.take() == [b"ab", b"ab", b"ab"]
    run.port.deliver(b"ab")
    run.port.deliver(b"ab")
    run.advance(1.0)
    assert run.results
    stats = run.stats
    assert (stats.received, stats.lost, stats.reordered) == (2, 1, None)
    summary = next(line for line in run.lines() if line.startswith("3 sent"))
    assert "reordered" not in summary
    document = run.summary.asJSON()
    assert (document["reordered"], document["matched_by"]) == (None, "content")

    run = Run(udpPlan(count=3, interval=1.0, timeout=1.0, message="ab", messageGiven=True))
    run.advance(1.0)  # 1 is lost, 2 is sent
    run.port.deliver(b"ab")  # answers 2
    run.port.deliver(b"ab")  # late for 1
    run.port.deliver(b"ab")  # a duplicate
    run.port.deliver(b"xy")  # nothing waits: a stray
    run.advance(1.0)
    run.port.deliver(b"ab")  # answers 3
    assert run.results
    stats = run.stats
    assert (stats.received, stats.late, stats.duplicates, stats.mismatched) == (2, 1, 1, 1)


def test_contentMismatchAnswersTheOldest() -> None:
    run = Run(udpPlan(count=2, interval=0.0, message="abc", messageGiven=True))
    run.port.take()
    run.port.deliver(b"abd")
    run.echo()
    assert (run.stats.received, run.stats.mismatched) == (2, 1)
    assert run.status == ExitStatus.MISMATCH
    assert "(sent 0x63, received 0x64 at byte 2)" in run.out.getvalue()


# --- JSON ----------------------------------------------------------------------------


def test_jsonHasTheUDPFields() -> None:
    run = Run(udpPlan(count=2, interval=0.0, window=2, json=True))
    run.echo()
    document = json.loads(run.out.getvalue())
    required = {
        "sent",
        "received",
        "lost",
        "duplicates",
        "reordered",
        "mismatched",
        "loss_percent",
        "rtt_ms",
        "jitter_ms",
    }
    assert required <= set(document)
    assert set(document["rtt_ms"]) == {"min", "avg", "max", "p50", "p99", "mdev"}
    assert document["protocol"] == "udp"
    assert document["matched_by"] == "sequence"
    assert (document["sent"], document["received"], document["lost"]) == (2, 2, 0)
    assert document["window"] == 2
    assert document["tried"] == ["127.0.0.1"]
    assert document["peer"] == "127.0.0.1:7007"
    assert run.out.getvalue().count("\n") == 1


# --- refusals, addresses ------------------------------------------------------------


def test_refusedBySelectReactorWay() -> None:
    """
    connectionRefused() (an ICMP port unreachable, as the select reactor
    reports it): status 4.
    """
    run = Run(udpPlan(count=3, interval=1.0))
    run.port.protocol.connectionRefused()
    assert run.status == ExitStatus.UNREACHABLE
    assert run.err.getvalue() == (
        "echod-client: refused by 127.0.0.1 port 7007 (ICMP port unreachable; tried 127.0.0.1)\n"
    )
    assert not run.reactor.getDelayedCalls()


def test_refusedByEpollReactorWay() -> None:
    """
    The epoll reactor closes the port on the socket's error: the error is
    read from the socket before it closes, and is a refusal.
    """
    run = Run(udpPlan(count=3, interval=1.0))
    run.port.lose(errno.ECONNREFUSED)
    assert run.status == ExitStatus.UNREACHABLE
    assert "refused by 127.0.0.1 port 7007" in run.err.getvalue()


def test_refusedAfterSomeReplies() -> None:
    run = Run(udpPlan(count=3, interval=1.0))
    run.echo()
    run.advance(1.0)
    run.port.lose(errno.ECONNREFUSED)
    assert run.status == ExitStatus.UNREACHABLE
    assert run.err.getvalue() == (
        "echod-client: refused by 127.0.0.1 port 7007 after 1 of 2 replies "
        "(ICMP port unreachable; tried 127.0.0.1)\n"
    )


def test_unreachableHost() -> None:
    run = Run(udpPlan(count=3, interval=1.0))
    run.port.lose(errno.EHOSTUNREACH)
    assert run.status == ExitStatus.UNREACHABLE
    assert run.err.getvalue() == ("echod-client: cannot reach 127.0.0.1:7007: no route to host\n")


def test_nextAddressWhenTheFirstNeverAnswers() -> None:
    """
    The first address has not answered by its first datagram's deadline:
    the next is tried, said so, and the summary is the next one's.
    """
    run = Run(
        udpPlan(count=2, interval=0.5, timeout=1.0, host="localhost"), hosts=("::1", "127.0.0.1")
    )
    first = run.port
    assert first.connected == ("::1", 7007)
    run.advance(0.5)
    run.advance(0.5)
    assert not first.listening
    second = run.port
    assert second is not first and second.connected == ("127.0.0.1", 7007)
    run.echo()
    run.advance(0.5)
    run.echo()
    assert run.status == ExitStatus.OK
    lines = run.lines()
    assert lines[0] == "ECHO localhost port 7007 over UDP ([::1]:7007): 64 bytes, 2 datagrams"
    assert lines[1] == "[::1]:7007 sent no reply within 1 s; trying 127.0.0.1:7007"
    assert lines[2] == ("ECHO localhost port 7007 over UDP (127.0.0.1:7007): 64 bytes, 2 datagrams")
    assert lines[3].startswith("64 bytes from 127.0.0.1:7007: seq=1 ")
    assert (run.stats.sent, run.stats.received) == (2, 2)
    assert run.summary.tried == ["::1", "127.0.0.1"]


def test_nextAddressWhenTheFirstRefuses() -> None:
    run = Run(udpPlan(message="hi", messageGiven=True), hosts=("::1", "127.0.0.1"))
    run.port.lose(errno.ECONNREFUSED)
    assert run.port.connected == ("127.0.0.1", 7007)
    run.echo()
    assert run.status == ExitStatus.OK
    assert run.out.getvalue() == "Received b'hi'\n"
    assert run.err.getvalue() == (
        "echod-client: [::1]:7007 refused (ICMP port unreachable); trying 127.0.0.1:7007\n"
    )


def test_anAddressThatAnsweredIsKept() -> None:
    """
    Once an address answered, a lost datagram is loss, not a reason to
    move on.
    """
    run = Run(udpPlan(count=3, interval=0.0, window=3, timeout=1.0), hosts=("::1", "127.0.0.1"))
    written = run.port.take()
    run.echo(written[1:])
    run.advance(1.0)
    assert run.status == ExitStatus.LOSS
    assert len(run.reactor.udpPorts) == 1


def test_everyAddressRefuses() -> None:
    run = Run(udpPlan(host="localhost"), hosts=("::1", "127.0.0.1"))
    run.port.lose(errno.ECONNREFUSED)
    run.port.lose(errno.ECONNREFUSED)
    assert run.status == ExitStatus.UNREACHABLE
    assert run.err.getvalue().splitlines()[-1] == (
        "echod-client: refused by localhost port 7007 (ICMP port unreachable; tried ::1, 127.0.0.1)"
    )


def test_familyKeepsToItsAddresses() -> None:
    run = Run(udpPlan(family="ipv4"), hosts=("::1", "127.0.0.1"))
    assert run.port.connected == ("127.0.0.1", 7007)


def test_nameWithoutAddresses() -> None:
    run = Run(udpPlan(family="ipv6", host="localhost"), hosts=("127.0.0.1",))
    assert run.status == ExitStatus.UNRESOLVED
    assert run.err.getvalue() == "echod-client: localhost: no IPv6 address found\n"


def test_interruptedPrintsWhatThereIs() -> None:
    """
    Interrupted mid-run: the summary so far (datagrams still waiting count
    as lost), exit status 130.
    """
    run = Run(udpPlan(count=5, interval=1.0))
    run.echo()
    run.advance(1.0)
    run.client.interrupt()
    assert run.status == ExitStatus.INTERRUPTED
    assert run.err.getvalue() == "echod-client: interrupted after 1 of 2 replies\n"
    assert "2 sent, 1 received, 1 lost" in run.out.getvalue()
    assert not run.reactor.getDelayedCalls()


def test_tooLargeForIPv4() -> None:
    """
    A size only too large for IPv4 fails when the address turns out to be
    one (the kernel says EMSGSIZE, Twisted MessageLengthError): status 2.
    """
    run = Run(udpPlan(count=2, size=65527), writeError=MessageLengthError("message too long"))
    assert run.status == ExitStatus.USAGE
    assert run.err.getvalue() == (
        "echod-client: a datagram of 65527 bytes is too large for IPv4 (at most 65507): "
        "use a smaller --size\n"
    )


def test_receiveBufferRaised() -> None:
    run = Run(udpPlan())
    options = run.port.handle.options
    assert 4 * 1024 * 1024 in options.values()
    assert any(
        opt in (socket.SO_RCVBUF, getattr(socket, "SO_RCVBUFFORCE", -1)) for _, opt in options
    )


def test_resolverThatRaises() -> None:
    """
    A resolver that raises at once ends the run with one line, not a
    traceback.
    """

    class Raising(FixedResolver):
        def resolveHostName(self, *args: object, **kwargs: object) -> NoReturn:
            raise ValueError("invalid hostname: 'bad host'")

    err = io.StringIO()
    client = DatagramClient(
        DatagramClientReactor(), udpPlan(host="bad host"), io.StringIO(), err, Raising()
    )
    results: list[Summary] = []
    client.run().addCallback(results.append)
    assert results[0].status == ExitStatus.UNRESOLVED
    assert err.getvalue() == "echod-client: bad host: name does not resolve\n"
