# -*- test-case-name: tests.unit.test_monitor_schedule -*-
"""
The monitor's clockwork and its state: every target has a round every
C{interval} seconds at a fixed phase of its own (so thousands of targets are
spread over the interval, never probed in step), each round resolves the
name and probes every address, and the results are kept per target address
(L{AddressState}) for the metrics and the status page.

Rounds follow the schedule, not the previous round: a timer that fires late
does not move the next one.  At most C{max_concurrency} address probes run
at once; the others wait in order.  A round still waiting or running when
its target's next one is due is an I{overrun}: counted, and the new round
skipped, so rounds never pile up.
"""

from __future__ import annotations

import dataclasses
import math
from array import array
from bisect import bisect_left
from collections import Counter, deque
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from echod.interfaces import IClientReactor
from echod.monitor.history import History
from echod.monitor.probes import (
    Address,
    Probe,
    ProbeResult,
    Resolution,
    familyOfAddress,
    resolveTarget,
)
from echod.monitor.targets import Target

__all__ = ["RTT_BUCKETS", "AddressState", "Changes", "Scheduler", "TargetState"]

# Upper bounds of the round-trip-time histogram, in seconds: loopback to
# intercontinental, and the timeouts people set.
RTT_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)


class AddressState:
    """
    What is known of one address of a target: its last round, its counters
    (rounds by result, mismatches, the RTT histogram) and its history.
    """

    __slots__ = (
        "address",
        "buckets",
        "family",
        "history",
        "labelText",
        "last",
        "lastError",
        "lastSuccess",
        "lastSummary",
        "mismatches",
        "rounds",
        "rttSum",
        "up",
    )

    def __init__(self, address: str, family: str) -> None:
        self.address = address
        self.family = family
        self.history = History()
        self.last: ProbeResult | None = None
        # The median, lowest and highest round-trip time of the last round.
        self.lastSummary: tuple[float, float, float] | None = None
        self.up = False
        self.lastError: str | None = "not probed yet"
        self.lastSuccess: float | None = None
        self.mismatches = 0
        self.rounds: Counter[str] = Counter()
        # Per bucket of RTT_BUCKETS, then +Inf: answers counted (not cumulative).
        self.buckets = array("Q", bytes(8 * (len(RTT_BUCKETS) + 1)))
        self.rttSum = 0.0
        # Its labels as the metrics write them (escaped once).
        self.labelText: str | None = None

    def record(self, result: ProbeResult) -> None:
        summary = result.summary
        # The last round without its round-trip times (up to count of
        # them): what the page and the metrics show is kept apart.
        self.last = dataclasses.replace(result, rtts=())
        self.lastSummary = summary
        self.up = result.succeeded
        self.lastError = result.error
        if result.succeeded:
            self.lastSuccess = result.ended
        self.rounds[result.result] += 1
        self.mismatches += result.mismatched
        for rtt in result.rtts:
            self.buckets[bisect_left(RTT_BUCKETS, rtt)] += 1
            self.rttSum += rtt
        self.history.add(result.ended, result.sent, result.received, summary, self.up)

    def unresolved(self, why: str) -> None:
        """
        The name did not resolve this round: this address was not probed,
        and is not known to be up.
        """
        self.up = False
        self.lastError = why


class TargetState:
    """
    One target: its addresses (in the resolver's order), its own counters,
    and its round in progress.
    """

    __slots__ = (
        "addresses",
        "error",
        "labelText",
        "left",
        "more",
        "next",
        "overruns",
        "probes",
        "removed",
        "resolveFailures",
        "running",
        "target",
        "timer",
    )

    def __init__(self, target: Target) -> None:
        self.target = target
        self.addresses: dict[str, AddressState] = {}
        self.error: str | None = None
        self.resolveFailures = 0
        self.overruns = 0
        # Addresses of the name beyond max_addresses, at the last resolution.
        self.more = 0
        self.running = False
        self.removed = False
        self.timer: IDelayedCall | None = None
        self.next = 0.0
        # Address probes of the round still to end, and those running.
        self.left = 0
        self.probes: list[Probe] = []
        self.labelText: str | None = None


class Changes(NamedTuple):
    """
    What a new target list changed: targets kept (with their history),
    of those how many with new settings, targets added and removed.
    """

    kept: int
    changed: int
    added: int
    removed: int


def nextTime(now: float, phase: float, interval: float) -> float:
    """
    The first time at or after C{now} that is C{phase} seconds into an
    interval (intervals counted from the epoch).
    """
    return phase + math.ceil((now - phase) / interval) * interval


class Scheduler:
    """
    Runs the rounds of every target and keeps their state.

    @param probe: makes the probe of one address (L{None} for an endpoint
        string); L{Probe} by default, a fake in tests.
    @param resolve: resolves a target's name; L{resolveTarget} by default.
    """

    log = Logger()

    def __init__(
        self,
        reactor: IClientReactor,
        maxConcurrency: int,
        maxAddresses: int,
        probe: Callable[[IClientReactor, Target, Address | None], Probe] | None = None,
        resolve: Callable[[IClientReactor, Target, int], Deferred[Resolution]] | None = None,
    ) -> None:
        self.reactor = reactor
        self.maxConcurrency = maxConcurrency
        self.maxAddresses = maxAddresses
        self._probe = probe or Probe
        self._resolve = resolve or resolveTarget
        self.states: dict[Target, TargetState] = {}
        self.running = False
        self.inFlight = 0
        self._waiting: deque[Callable[[], None]] = deque()
        # Probes running, and names being resolved (cancelled at stop).
        self._rounds: set[Deferred[Any]] = set()
        self._resolving: set[Deferred[Resolution]] = set()

    @property
    def queued(self) -> int:
        return len(self._waiting)

    # --- the target list ------------------------------------------------------

    def update(self, targets: Iterable[Target]) -> Changes:
        """
        Probe C{targets} from now on.  A target that runs already, by its
        series (L{Target.identity}: its string and its labels), keeps its
        state, history and counters; if its settings changed, its next
        rounds use them (and follow its new interval).  The others start,
        and those no longer listed stop (a round of theirs in flight is
        interrupted).
        """
        wanted = list(dict.fromkeys(targets))
        old = {state.target.identity: state for state in self.states.values()}
        self.states = {}
        added = changed = 0
        for target in wanted:
            state = old.pop(target.identity, None)
            if state is None:
                state = TargetState(target)
                added += 1
                if self.running:
                    self._schedule(state)
            elif state.target != target:
                changed += 1
                interval = state.target.interval
                state.target = target
                if self.running and target.interval != interval:
                    if state.timer is not None and state.timer.active():
                        state.timer.cancel()
                    self._schedule(state)
            self.states[target] = state
        for state in old.values():
            self._forget(state)
        return Changes(len(wanted) - added, changed, added, len(old))

    def _forget(self, state: TargetState) -> None:
        state.removed = True
        if state.timer is not None and state.timer.active():
            state.timer.cancel()
        state.timer = None
        for probe in list(state.probes):
            probe.interrupt()

    # --- starting and stopping --------------------------------------------------

    def start(self) -> None:
        self.running = True
        for state in self.states.values():
            self._schedule(state)

    def stop(self) -> Deferred[Any]:
        """
        Cancel every timer, drop the probes still waiting, interrupt those
        running; fires once they have ended (closed their sockets).
        """
        self.running = False
        self._waiting.clear()
        for state in self.states.values():
            self._forget(state)
        for resolving in list(self._resolving):
            resolving.cancel()
        if not self._rounds:
            return succeed(None)
        return DeferredList(list(self._rounds), consumeErrors=True)

    # --- rounds ---------------------------------------------------------------

    def _schedule(self, state: TargetState, after: float | None = None) -> None:
        target = state.target
        now = self.reactor.seconds()
        due = nextTime(now if after is None else max(now, after), target.phase(), target.interval)
        state.next = due
        state.timer = self.reactor.callLater(due - now, self._due, state)

    def _due(self, state: TargetState) -> None:
        state.timer = None
        if state.removed or not self.running:
            return
        # The next round is one interval after this one's time, however late
        # this timer fired.
        self._schedule(state, after=state.next + state.target.interval * 0.5)
        if state.running:
            state.overruns += 1
            self.log.debug(
                "{target}: round still running at the next one's time (overrun)",
                target=state.target.name,
            )
            return
        self._round(state)

    def _round(self, state: TargetState) -> None:
        state.running = True
        target = state.target
        if target.kind == "endpoint":
            self._probeAll(state, [None])
            return
        resolving = self._resolve(self.reactor, target, self.maxAddresses)
        self._resolving.add(resolving)

        def resolved(resolution: Resolution) -> None:
            self._resolving.discard(resolving)
            if state.removed or not self.running:
                state.running = False
                return
            state.error = None
            state.more = max(0, resolution.more)
            self._probeAll(state, list(resolution.addresses))

        def failed(reason: Failure) -> None:
            self._resolving.discard(resolving)
            state.running = False
            if state.removed or not self.running:
                return
            why = reason.getErrorMessage()
            state.resolveFailures += 1
            state.error = why
            for address in state.addresses.values():
                address.unresolved(why)

        resolving.addCallbacks(resolved, failed)

    def _probeAll(self, state: TargetState, addresses: list[Address | None]) -> None:
        target = state.target
        known = state.addresses
        current: dict[str, AddressState] = {}
        for address in addresses:
            if address is None:
                label, family = target.name, target.endpointFamily
            else:
                label, family = address.host, familyOfAddress(address)
            current[label] = known.get(label) or AddressState(label, family)
        # An address the name no longer has is no longer shown nor exported.
        state.addresses = current
        state.left = len(addresses)
        if not addresses:
            state.running = False
        for address in addresses:
            label = target.name if address is None else address.host
            self._enqueue(state, current[label], address)

    def _enqueue(self, state: TargetState, where: AddressState, address: Address | None) -> None:
        def go() -> None:
            if state.removed or not self.running:
                self._release()
                self._ended(state)
                return
            self._run(state, where, address)

        if self.inFlight < self.maxConcurrency:
            self.inFlight += 1
            go()
        else:
            self._waiting.append(go)

    def _release(self) -> None:
        if self._waiting and self.running and self.inFlight <= self.maxConcurrency:
            self._waiting.popleft()()
        else:
            self.inFlight -= 1

    def setConcurrency(self, limit: int) -> None:
        """
        A new C{max_concurrency} (a reload): probes waiting start at once
        if it is higher; if it is lower, running ones finish and fewer
        start.
        """
        self.maxConcurrency = limit
        while self.running and self._waiting and self.inFlight < limit:
            self.inFlight += 1
            self._waiting.popleft()()

    def _run(self, state: TargetState, where: AddressState, address: Address | None) -> None:
        try:
            probe = self._probe(self.reactor, state.target, address)
            running = probe.run()
        except Exception as e:
            self.log.failure("probe of {target} failed", Failure(e), target=state.target.name)
            self._release()
            self._ended(state)
            return
        state.probes.append(probe)
        self._rounds.add(running)

        def ended(result: ProbeResult) -> None:
            self._rounds.discard(running)
            state.probes.remove(probe)
            if result.result != "interrupted" and not state.removed and self.running:
                wasUp, first = where.up, where.last is None
                where.record(result)
                if where.up != wasUp or (first and not where.up):
                    self._changed(state, where)
            self._release()
            self._ended(state)

        def crashed(reason: Failure) -> None:
            self.log.failure("probe of {target} failed", reason, target=state.target.name)

        running.addCallback(ended).addErrback(crashed)

    def _changed(self, state: TargetState, where: AddressState) -> None:
        """
        Log an address going down (and why) or coming back: the journal
        tells when, the metrics and the page how.
        """
        if where.up:
            self.log.info(
                "{target} ({address}) is up",
                event="monitor.up",
                target=state.target.name,
                address=where.address,
            )
        else:
            self.log.warn(
                "{target} ({address}) is down: {error}",
                event="monitor.down",
                target=state.target.name,
                address=where.address,
                error=where.lastError,
                result=where.last.result if where.last is not None else None,
            )

    def _ended(self, state: TargetState) -> None:
        state.left -= 1
        if state.left <= 0:
            state.running = False
