# -*- test-case-name: tests.unit.test_monitor_collector -*-
"""
The monitor's Prometheus metrics, read from the scheduler's state at every
scrape (nothing is counted twice): one series per target address, labelled
C{target}, C{address}, C{family}, C{protocol} and the target's own labels.

Targets may carry different labels of their own, so the families are built
sample by sample rather than with a fixed label list (the exposition format
allows it; Prometheus takes it).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import CollectorRegistry

from echod.monitor.schedule import RTT_BUCKETS, AddressState, Scheduler, TargetState

__all__ = ["FAMILIES", "RESULTS", "MonitorCollector", "monitorRegistry"]

# Each family: its type and help text, as README's metrics table has them.
FAMILIES = {
    "echod_probe_success": ("gauge", "1 if the last round of the address succeeded, else 0"),
    "echod_probe_rtt_seconds": ("histogram", "round-trip time of every answer"),
    "echod_probe_loss_ratio": ("gauge", "messages of the last round not answered, 0 to 1"),
    "echod_probe_jitter_seconds": (
        "gauge",
        "mean difference between consecutive round-trip times of the last round",
    ),
    "echod_probe_mismatches_total": ("counter", "answers that differed from what was sent"),
    "echod_probe_rounds_total": ("counter", "rounds by result (overrun: skipped, per target)"),
    "echod_probe_resolve_failures_total": ("counter", "rounds whose name did not resolve"),
    "echod_probe_last_success_timestamp_seconds": (
        "gauge",
        "when the last successful round of the address ended (Unix time)",
    ),
    "echod_monitor_targets": ("gauge", "targets probed"),
    "echod_monitor_probes_in_flight": ("gauge", "address probes running now"),
    "echod_monitor_probes_waiting": ("gauge", "address probes waiting for max_concurrency"),
}

# Every result an address round can have, so that each series exists (at 0)
# from the first scrape on.
RESULTS = ("success", "timeout", "refused", "closed", "mismatch", "error")


def _family(name: str) -> Metric:
    kind, documentation = FAMILIES[name]
    base = name.removesuffix("_total") if kind == "counter" else name
    return Metric(base, documentation, kind)


def _labels(state: TargetState, address: AddressState | None) -> dict[str, str]:
    target = state.target
    labels = {"target": target.name, "protocol": target.protocol}
    if address is not None:
        labels["address"] = address.address
        labels["family"] = address.family
    else:
        labels["address"] = ""
        labels["family"] = ""
    labels.update(target.labels)
    return labels


class MonitorCollector:
    """
    Reads L{Scheduler.states} at every scrape, in the reactor thread.
    """

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler

    def collect(self) -> Iterator[Metric]:
        families = {name: _family(name) for name in FAMILIES}
        success = families["echod_probe_success"]
        rtt = families["echod_probe_rtt_seconds"]
        loss = families["echod_probe_loss_ratio"]
        jitter = families["echod_probe_jitter_seconds"]
        mismatches = families["echod_probe_mismatches_total"]
        rounds = families["echod_probe_rounds_total"]
        resolve = families["echod_probe_resolve_failures_total"]
        lastSuccess = families["echod_probe_last_success_timestamp_seconds"]
        for state in self.scheduler.states.values():
            targetLabels = _labels(state, None)
            if state.target.kind != "endpoint":
                resolve.add_sample(
                    "echod_probe_resolve_failures_total", targetLabels, state.resolveFailures
                )
            rounds.add_sample(
                "echod_probe_rounds_total", {**targetLabels, "result": "overrun"}, state.overruns
            )
            if not state.addresses:
                # Never resolved (or not probed yet): down, for the alerts.
                success.add_sample("echod_probe_success", targetLabels, 0)
                continue
            for address in state.addresses.values():
                labels = _labels(state, address)
                success.add_sample("echod_probe_success", labels, 1 if address.up else 0)
                for result in RESULTS:
                    rounds.add_sample(
                        "echod_probe_rounds_total",
                        {**labels, "result": result},
                        address.rounds[result],
                    )
                mismatches.add_sample("echod_probe_mismatches_total", labels, address.mismatches)
                cumulative = 0
                for bound, count in zip((*RTT_BUCKETS, float("inf")), address.buckets, strict=True):
                    cumulative += count
                    le = "+Inf" if bound == float("inf") else repr(bound)
                    rtt.add_sample(
                        "echod_probe_rtt_seconds_bucket", {**labels, "le": le}, cumulative
                    )
                rtt.add_sample("echod_probe_rtt_seconds_count", labels, cumulative)
                rtt.add_sample("echod_probe_rtt_seconds_sum", labels, address.rttSum)
                last = address.last
                if last is not None:
                    loss.add_sample(
                        "echod_probe_loss_ratio",
                        labels,
                        1 - last.received / last.sent if last.sent else 1.0,
                    )
                    if last.jitter is not None:
                        jitter.add_sample("echod_probe_jitter_seconds", labels, last.jitter)
                if address.lastSuccess is not None:
                    lastSuccess.add_sample(
                        "echod_probe_last_success_timestamp_seconds", labels, address.lastSuccess
                    )
        scheduler = self.scheduler
        families["echod_monitor_targets"].add_sample(
            "echod_monitor_targets", {}, len(scheduler.states)
        )
        families["echod_monitor_probes_in_flight"].add_sample(
            "echod_monitor_probes_in_flight", {}, scheduler.inFlight
        )
        families["echod_monitor_probes_waiting"].add_sample(
            "echod_monitor_probes_waiting", {}, scheduler.queued
        )
        yield from families.values()


def monitorRegistry(scheduler: Scheduler) -> CollectorRegistry:
    """
    The monitor's own registry: its metrics and the process's.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MonitorCollector(scheduler))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry
