# -*- test-case-name: tests.unit.test_monitor_collector -*-
"""
The monitor's Prometheus metrics, read from the scheduler's state at every
scrape (nothing is counted twice): one series per target address, labelled
C{target}, C{address}, C{family}, C{protocol} and the target's own labels.

They are written in Prometheus' text format (0.0.4) here rather than by
prometheus_client's collector machinery: with 10,000 targets a scrape is
some 300,000 samples, and the scrape is answered in the reactor thread,
where every second spent delays the probes' timers.  Each address's label
text is escaped once and kept; a line is then one string formatting.  The
process's own metrics (memory, CPU, descriptors) come from prometheus_client
as in echod's metrics.
"""

from __future__ import annotations

from prometheus_client.exposition import generate_latest
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import CollectorRegistry
from twisted.web.resource import Resource
from twisted.web.server import Request

from echod.monitor.schedule import RTT_BUCKETS, AddressState, Scheduler, TargetState

__all__ = ["FAMILIES", "RESULTS", "MonitorMetricsResource", "exposition"]

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
_LE = [f'le="{bound!r}"' for bound in RTT_BUCKETS] + ['le="+Inf"']


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labelText(state: TargetState, address: AddressState | None) -> str:
    target = state.target
    pairs = [
        ("target", target.name),
        ("address", address.address if address is not None else ""),
        ("family", address.family if address is not None else ""),
        ("protocol", target.protocol),
        *target.labels,
    ]
    return ",".join(f'{name}="{_escape(value)}"' for name, value in pairs)


def _number(value: float) -> str:
    return repr(float(value))


def exposition(scheduler: Scheduler) -> bytes:
    """
    The monitor's families in Prometheus' text format.
    """
    lines: dict[str, list[str]] = {name: [] for name in FAMILIES}
    success = lines["echod_probe_success"]
    rtt = lines["echod_probe_rtt_seconds"]
    loss = lines["echod_probe_loss_ratio"]
    jitter = lines["echod_probe_jitter_seconds"]
    mismatches = lines["echod_probe_mismatches_total"]
    rounds = lines["echod_probe_rounds_total"]
    resolve = lines["echod_probe_resolve_failures_total"]
    lastSuccess = lines["echod_probe_last_success_timestamp_seconds"]
    for state in scheduler.states.values():
        if state.labelText is None:
            state.labelText = _labelText(state, None)
        own = state.labelText
        if state.target.kind != "endpoint":
            resolve.append(f"echod_probe_resolve_failures_total{{{own}}} {state.resolveFailures}")
        rounds.append(f'echod_probe_rounds_total{{{own},result="overrun"}} {state.overruns}')
        if not state.addresses:
            # Never resolved (or not probed yet): down, for the alerts.
            success.append(f"echod_probe_success{{{own}}} 0")
            continue
        for address in state.addresses.values():
            if address.labelText is None:
                address.labelText = _labelText(state, address)
            labels = address.labelText
            success.append(f"echod_probe_success{{{labels}}} {1 if address.up else 0}")
            counts = address.rounds
            for result in RESULTS:
                rounds.append(
                    f'echod_probe_rounds_total{{{labels},result="{result}"}} {counts[result]}'
                )
            mismatches.append(f"echod_probe_mismatches_total{{{labels}}} {address.mismatches}")
            cumulative = 0
            for le, count in zip(_LE, address.buckets, strict=True):
                cumulative += count
                rtt.append(f"echod_probe_rtt_seconds_bucket{{{labels},{le}}} {cumulative}")
            rtt.append(f"echod_probe_rtt_seconds_count{{{labels}}} {cumulative}")
            rtt.append(f"echod_probe_rtt_seconds_sum{{{labels}}} {_number(address.rttSum)}")
            last = address.last
            if last is not None:
                ratio = 1 - last.received / last.sent if last.sent else 1.0
                loss.append(f"echod_probe_loss_ratio{{{labels}}} {_number(ratio)}")
                if last.jitter is not None:
                    jitter.append(f"echod_probe_jitter_seconds{{{labels}}} {_number(last.jitter)}")
            if address.lastSuccess is not None:
                lastSuccess.append(
                    f"echod_probe_last_success_timestamp_seconds{{{labels}}} "
                    f"{_number(address.lastSuccess)}"
                )
    lines["echod_monitor_targets"].append(f"echod_monitor_targets {len(scheduler.states)}")
    lines["echod_monitor_probes_in_flight"].append(
        f"echod_monitor_probes_in_flight {scheduler.inFlight}"
    )
    lines["echod_monitor_probes_waiting"].append(f"echod_monitor_probes_waiting {scheduler.queued}")
    out: list[str] = []
    for name, samples in lines.items():
        kind, documentation = FAMILIES[name]
        out.append(f"# HELP {name} {documentation}")
        out.append(f"# TYPE {name} {kind}")
        out.extend(samples)
    out.append("")
    return "\n".join(out).encode("utf-8")


class MonitorMetricsResource(Resource):
    """
    C{GET /metrics}: the monitor's families, then the process's, collected
    now, in the reactor thread.
    """

    isLeaf = True

    def __init__(self, scheduler: Scheduler) -> None:
        super().__init__()
        self.scheduler = scheduler
        self.process = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self.process)
        PlatformCollector(registry=self.process)

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")
        body: bytes = exposition(self.scheduler) + generate_latest(self.process)
        return body
