"""
The monitor's metrics, as a scraper reads them: one series per target
address with its labels and the target's own, a cumulative RTT histogram,
and the counters of rounds, mismatches and resolve failures.
"""

from __future__ import annotations

from typing import cast

from prometheus_client.parser import text_string_to_metric_families
from twisted.web.test.requesthelper import DummyRequest

from echod.interfaces import IClientReactor
from echod.monitor.collector import FAMILIES, RESULTS, MonitorMetricsResource, exposition
from echod.monitor.probes import ProbeResult
from echod.monitor.schedule import AddressState, Scheduler
from echod.monitor.targets import Target
from tests.reactortesting import EchodMemoryReactor


def scrape(scheduler: Scheduler) -> dict[str, list[tuple[dict[str, str], float]]]:
    text = exposition(scheduler).decode()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def world() -> tuple[Scheduler, Target, Target]:
    scheduler = Scheduler(cast(IClientReactor, EchodMemoryReactor()), 10, 8)
    dual = Target(
        "echo.example:7", "tcp", "echo.example", 7, 10, 1, 64, 4, 0, True, (("site", "fra1"),)
    )
    gone = Target("udp://gone.example:7", "udp", "gone.example", 7, 10, 1, 64, 4, 0, True, ())
    scheduler.update([dual, gone])
    state = scheduler.states[dual]
    v4, v6 = AddressState("192.0.2.1", "ipv4"), AddressState("2001:db8::1", "ipv6")
    v4.record(ProbeResult("success", 4, 4, 0, (0.0004, 0.0008, 0.003, 0.02), 0.001, None, 1e9))
    v6.record(ProbeResult("timeout", 4, 0, 0, (), None, "no reply", 1e9 + 1))
    v6.record(ProbeResult("mismatch", 4, 3, 2, (0.001, 0.001, 0.001), 0.0, "differs", 1e9 + 2))
    state.addresses = {"192.0.2.1": v4, "2001:db8::1": v6}
    state.overruns = 2
    scheduler.states[gone].resolveFailures = 3
    return scheduler, dual, gone


def test_everyFamilyExported() -> None:
    """
    Every family FAMILIES names is in a scrape, and nothing else of the
    monitor's.
    """
    samples = scrape(world()[0])
    exported = {
        name.removesuffix("_bucket").removesuffix("_count").removesuffix("_sum")
        for name in samples
        if name.startswith(("echod_probe", "echod_monitor"))
    }
    assert exported == set(FAMILIES)


def test_successPerAddressWithLabels() -> None:
    """
    Each address has its success, labelled with target, address, family,
    protocol and the target's own labels; a name never resolved is down
    with an empty address.
    """
    samples = scrape(world()[0])
    success = {
        (labels["target"], labels["address"]): value
        for labels, value in samples["echod_probe_success"]
    }
    assert success == {
        ("echo.example:7", "192.0.2.1"): 1.0,
        ("echo.example:7", "2001:db8::1"): 0.0,
        ("udp://gone.example:7", ""): 0.0,
    }
    labels = next(ls for ls, _ in samples["echod_probe_success"] if ls["address"] == "2001:db8::1")
    assert labels == {
        "target": "echo.example:7",
        "address": "2001:db8::1",
        "family": "ipv6",
        "protocol": "tcp",
        "site": "fra1",
    }


def test_histogramCumulative() -> None:
    """
    The RTT histogram counts every answer, cumulatively by bucket, with its
    sum.
    """
    samples = scrape(world()[0])
    buckets = {
        labels["le"]: value
        for labels, value in samples["echod_probe_rtt_seconds_bucket"]
        if labels["address"] == "192.0.2.1"
    }
    assert buckets["0.0005"] == 1
    assert buckets["0.001"] == 2
    assert buckets["0.005"] == 3
    assert buckets["0.025"] == 4
    assert buckets["+Inf"] == 4
    (total,) = [
        v for ls, v in samples["echod_probe_rtt_seconds_sum"] if ls["address"] == "192.0.2.1"
    ]
    assert abs(total - 0.0242) < 1e-9


def test_countersAndLastRound() -> None:
    """
    Rounds by result (each result at 0 from the start), mismatches, loss
    and jitter of the last round, overruns and resolve failures per target.
    """
    samples = scrape(world()[0])
    rounds = {
        (ls["address"], ls["result"]): v
        for ls, v in samples["echod_probe_rounds_total"]
        if ls["target"] == "echo.example:7"
    }
    assert rounds[("2001:db8::1", "timeout")] == 1
    assert rounds[("2001:db8::1", "mismatch")] == 1
    assert rounds[("192.0.2.1", "success")] == 1
    assert {r for a, r in rounds if a == "192.0.2.1"} == set(RESULTS)
    assert rounds[("", "overrun")] == 2
    mismatches = {ls["address"]: v for ls, v in samples["echod_probe_mismatches_total"]}
    assert mismatches == {"192.0.2.1": 0, "2001:db8::1": 2}
    loss = {ls["address"]: v for ls, v in samples["echod_probe_loss_ratio"]}
    assert loss == {"192.0.2.1": 0.0, "2001:db8::1": 0.25}
    failures = {ls["target"]: v for ls, v in samples["echod_probe_resolve_failures_total"]}
    assert failures == {"echo.example:7": 0, "udp://gone.example:7": 3}
    last = {ls["address"]: v for ls, v in samples["echod_probe_last_success_timestamp_seconds"]}
    assert last == {"192.0.2.1": 1e9}
    assert samples["echod_monitor_targets"] == [({}, 2.0)]


def test_labelsEscaped() -> None:
    """
    Label values holding quotes, backslashes and newlines reach the
    scraper as they are.
    """
    scheduler = Scheduler(cast(IClientReactor, EchodMemoryReactor()), 10, 8)
    hostile = 'a"b\\c\nd'
    odd = Target("x.example:7", "tcp", "x.example", 7, 10, 1, 64, 4, 0, True, (("note", hostile),))
    scheduler.update([odd])
    samples = scrape(scheduler)
    ((labels, up),) = samples["echod_probe_success"]
    assert labels["note"] == hostile and up == 0


def test_monitorResource() -> None:
    """
    /metrics answers the monitor's families and the process's, in the
    text format.
    """
    scheduler = world()[0]
    request = DummyRequest([b""])
    body = MonitorMetricsResource(scheduler).render_GET(request)  # type: ignore[arg-type]
    assert request.responseHeaders.getRawHeaders(b"content-type") == [
        b"text/plain; version=0.0.4; charset=utf-8"
    ]
    names = {f.name for f in text_string_to_metric_families(body.decode())}
    assert "echod_probe_success" in names and "process_cpu_seconds" in names
