"""
The monitor's scheduler on a fake clock: rounds at a fixed phase of each
target, spread over the interval and never drifting; every address of a
name probed on its own; at most C{max_concurrency} probes at once; overruns
counted, not stacked; a new target list keeps the state of the targets that
did not change; stopping interrupts what runs.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, cast

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import capturedLogs

from echod.interfaces import IClientReactor
from echod.monitor.probes import Address, Probe, ProbeResult, Resolution, ResolveFailed
from echod.monitor.schedule import RTT_BUCKETS, Changes, Scheduler, nextTime
from echod.monitor.targets import Target


def target(name: str, interval: float = 10.0, host: str = "echo.example") -> Target:
    return Target(name, "tcp", host, 7, interval, 1.0, 64, 3, 0.0, True, ())


class FakeProbe:
    """
    A probe that ends when the test says (L{finish}), or at once with
    C{instant}.
    """

    def __init__(self, world: World, target: Target, address: Address | None) -> None:
        self.world = world
        self.target = target
        self.address = address
        self.result: Deferred[ProbeResult] = Deferred()
        self.interrupted = False

    def run(self) -> Deferred[ProbeResult]:
        self.world.started.append(self)
        self.world.running += 1
        self.world.most = max(self.world.most, self.world.running)
        if self.world.instant:
            self.finish()
        return self.result

    def finish(self, ok: bool = True) -> None:
        self.world.running -= 1
        now = self.world.clock.seconds()
        if ok:
            result = ProbeResult("success", 3, 3, 0, (0.001, 0.002, 0.004), 0.0015, None, now)
        else:
            result = ProbeResult("timeout", 3, 0, 0, (), None, "no reply", now)
        self.result.callback(result)

    def interrupt(self) -> None:
        self.interrupted = True
        self.world.running -= 1
        self.result.callback(ProbeResult("interrupted", 0, 0, 0, (), None, "interrupted", 0.0))


class World:
    """
    A clock, a resolver giving every name 127.0.0.1 and ::1, and the
    probes made.
    """

    def __init__(self, instant: bool = True, maxConcurrency: int = 100) -> None:
        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.instant = instant
        self.started: list[FakeProbe] = []
        self.running = 0
        self.most = 0
        self.unresolvable: set[str] = set()
        self.scheduler = Scheduler(
            cast(IClientReactor, self.clock),
            maxConcurrency,
            8,
            probe=cast(Any, self.probe),
            resolve=self.resolve,
        )

    def probe(self, reactor: IClientReactor, target: Target, address: Address | None) -> Probe:
        return cast(Probe, FakeProbe(self, target, address))

    def resolve(self, reactor: IClientReactor, target: Target, most: int) -> Deferred[Resolution]:
        if target.host in self.unresolvable:
            return fail(ResolveFailed(f"{target.host}: name does not resolve"))
        return succeed(
            Resolution((IPv4Address("TCP", "127.0.0.1", 0), IPv6Address("TCP", "::1", 0)))
        )


def test_nextTime() -> None:
    """
    The next round is the first time at or after now that is the phase
    into an interval counted from the epoch.
    """
    assert nextTime(100.0, 3.0, 10.0) == 103.0
    assert nextTime(103.0, 3.0, 10.0) == 103.0
    assert nextTime(103.5, 3.0, 10.0) == 113.0


def test_everyAddressProbedOnItsOwn() -> None:
    """
    Each round resolves the name and probes each of its addresses; their
    results are kept apart, with their family.
    """
    world = World()
    world.scheduler.update([target("a")])
    world.scheduler.start()
    world.clock.advance(10)
    assert sorted(p.address.host for p in world.started if p.address) == ["127.0.0.1", "::1"]
    state = world.scheduler.states[target("a")]
    assert {a: (s.family, s.up) for a, s in state.addresses.items()} == {
        "127.0.0.1": ("ipv4", True),
        "::1": ("ipv6", True),
    }


def test_roundsSpreadOverTheInterval() -> None:
    """
    A thousand targets of one interval start their rounds spread over it:
    no second of the interval holds more than a few times its share.
    """
    world = World()
    targets = [target(f"t{i}.example:7") for i in range(1000)]
    world.scheduler.update(targets)
    world.scheduler.start()
    starts: Counter[int] = Counter()
    for second in range(10):
        before = len(world.started)
        world.clock.advance(1)
        starts[second] = len(world.started) - before
    assert sum(starts.values()) == 2000  # one round each, two addresses
    assert max(starts.values()) < 3 * 200, starts
    assert min(starts.values()) > 200 / 3, starts


def test_scheduleDoesNotDrift() -> None:
    """
    Rounds come at the target's phase every interval, however late a timer
    fires and however long rounds take.
    """
    world = World()
    t = target("steady", interval=5)
    world.scheduler.update([t])
    world.scheduler.start()
    times = []
    for _ in range(50):
        world.clock.advance(1.7)
        if world.started:
            times.append(world.scheduler.states[t].next)
    phase = t.phase()
    for due in set(times):
        assert abs((due - phase) / 5 - round((due - phase) / 5)) < 1e-6


def test_concurrencyIsBounded() -> None:
    """
    No more than max_concurrency probes run at once; the others wait their
    turn and run as slots free up.
    """
    world = World(instant=False, maxConcurrency=7)
    world.scheduler.update([target(f"c{i}:7") for i in range(20)])
    world.scheduler.start()
    world.clock.advance(10)
    assert world.running == 7
    assert world.scheduler.queued == 33
    while world.running:
        running = [p for p in world.started if not p.result.called]
        running[0].finish()
    assert len(world.started) == 40
    assert world.most == 7
    assert world.scheduler.inFlight == 0


def test_concurrencyChangedWhileRunning() -> None:
    """
    A higher limit starts waiting probes at once; a lower one lets the
    running finish and starts fewer.
    """
    world = World(instant=False, maxConcurrency=2)
    world.scheduler.update([target(f"c{i}:7") for i in range(5)])
    world.scheduler.start()
    world.clock.advance(10)
    assert (world.running, world.scheduler.queued) == (2, 8)
    world.scheduler.setConcurrency(5)
    assert (world.running, world.scheduler.queued) == (5, 5)
    world.scheduler.setConcurrency(1)
    for probe in [p for p in world.started if not p.result.called]:
        probe.finish()
    assert (world.running, world.scheduler.queued) == (1, 4)
    assert world.scheduler.inFlight == 1


def test_overrunCountedNotStacked() -> None:
    """
    A round still running when the next is due is an overrun: counted, and
    the new round skipped.
    """
    world = World(instant=False)
    t = target("slow", interval=2)
    world.scheduler.update([t])
    world.scheduler.start()
    world.clock.advance(2)
    assert len(world.started) == 2
    world.clock.advance(2)
    world.clock.advance(2)
    state = world.scheduler.states[t]
    assert state.overruns == 2
    assert len(world.started) == 2
    for probe in world.started:
        probe.finish()
    world.clock.advance(2)
    assert len(world.started) == 4


def test_unresolvedNameCounted() -> None:
    """
    A name that does not resolve counts a resolve failure, and the
    addresses it had are down with the reason.
    """
    world = World()
    t = target("n", host="gone.example")
    world.scheduler.update([t])
    world.scheduler.start()
    world.clock.advance(10)
    world.unresolvable.add("gone.example")
    world.clock.advance(10)
    state = world.scheduler.states[t]
    assert state.resolveFailures == 1
    assert state.error == "gone.example: name does not resolve"
    assert [a.up for a in state.addresses.values()] == [False, False]


def test_updateKeepsTargetsByTheirSeries() -> None:
    """
    A new list keeps the state (history, counters) of the targets whose
    string and labels it still has, with their new settings (and interval)
    if they changed; new labels make a new series, started afresh; a
    removed target stops.
    """
    world = World()
    a, b, c = target("a"), target("b"), target("c")
    world.scheduler.update([a, b, c])
    world.scheduler.start()
    world.clock.advance(10)
    kept, slower = world.scheduler.states[a], world.scheduler.states[b]
    assert kept.addresses["127.0.0.1"].rounds["success"] == 1
    b20 = target("b", interval=20)
    relabelled = Target("c", "tcp", "echo.example", 7, 10.0, 1.0, 64, 3, 0.0, True, (("x", "y"),))
    changes = world.scheduler.update([a, b20, relabelled])
    assert changes == Changes(kept=2, changed=1, added=1, removed=1)
    assert world.scheduler.states[a] is kept
    assert world.scheduler.states[b20] is slower and slower.target == b20
    assert world.scheduler.states[relabelled].addresses == {}
    for _ in range(4):
        world.clock.advance(10)
    assert kept.addresses["127.0.0.1"].rounds["success"] == 5
    assert slower.addresses["127.0.0.1"].rounds["success"] == 3
    phase = b20.phase()
    assert abs((slower.next - phase) / 20 - round((slower.next - phase) / 20)) < 1e-6


def test_stopInterruptsRunningProbes() -> None:
    """
    Stopping drops waiting probes, interrupts running ones (whose results
    are not recorded) and fires once they ended; no timer is left.
    """
    world = World(instant=False, maxConcurrency=1)
    world.scheduler.update([target("a"), target("b")])
    world.scheduler.start()
    world.clock.advance(10)
    assert world.running == 1
    stopped = world.scheduler.stop()
    assert stopped.called
    assert [p.interrupted for p in world.started] == [True]
    assert world.clock.getDelayedCalls() == []
    for state in world.scheduler.states.values():
        for address in state.addresses.values():
            assert address.last is None


def test_resultsRecorded() -> None:
    """
    A round's answers fill the RTT histogram, its counters and its history.
    """
    world = World()
    t = target("a")
    world.scheduler.update([t])
    world.scheduler.start()
    world.clock.advance(10)
    address = world.scheduler.states[t].addresses["::1"]
    assert sum(address.buckets) == 3
    assert address.buckets[RTT_BUCKETS.index(0.001)] == 1
    assert address.buckets[RTT_BUCKETS.index(0.0025)] == 1
    assert address.buckets[RTT_BUCKETS.index(0.005)] == 1
    assert address.lastSuccess == world.clock.seconds()
    # The last round is kept without its round-trip times, but summed up.
    assert address.last is not None and address.last.rtts == ()
    assert address.lastSummary == (0.002, 0.001, 0.004)
    (bucket,) = [b for b in address.history.buckets(world.clock.seconds()) if b]
    assert (bucket.rounds, bucket.sent, bucket.received) == (1, 3, 3)


def test_stopCancelsResolution() -> None:
    """
    A name still being resolved when the monitor stops is given up: the
    stop does not wait for the resolver.
    """
    world = World()
    pending: list[Deferred[Resolution]] = []

    def slow(reactor: IClientReactor, t: Target, most: int) -> Deferred[Resolution]:
        pending.append(Deferred())
        return pending[-1]

    world.scheduler._resolve = slow
    world.scheduler.update([target("a")])
    world.scheduler.start()
    world.clock.advance(10)
    assert len(pending) == 1
    assert world.scheduler.stop().called
    assert pending[0].called
    assert not world.scheduler.states[target("a")].running


def test_changesLogged() -> None:
    """
    An address going down is logged with why, once; coming back, once.
    """
    world = World()

    def one(reactor: IClientReactor, t: Target, most: int) -> Deferred[Resolution]:
        return succeed(Resolution((IPv4Address("TCP", "127.0.0.1", 0),)))

    world.scheduler._resolve = one
    t = target("a")
    world.scheduler.update([t])
    world.scheduler.start()
    outcomes = iter([False, False, True, True])
    original = FakeProbe.finish

    def finish(self: FakeProbe, ok: bool = True) -> None:
        original(self, next(outcomes))

    with capturedLogs() as events:
        FakeProbe.finish = finish  # type: ignore[method-assign]
        try:
            world.scheduler.update([t])
            for _ in range(4):
                world.clock.advance(10)
        finally:
            FakeProbe.finish = original  # type: ignore[method-assign]
    changes = [(e["event"], e.get("address")) for e in events if "event" in e]
    assert changes == [("monitor.down", "127.0.0.1"), ("monitor.up", "127.0.0.1")]
    down = next(e for e in events if e.get("event") == "monitor.down")
    assert down["error"] == "no reply"
