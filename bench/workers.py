"""
Worker scaling: echod with [server] workers = N, each worker held to the same
CPU budget, against echod in one process held to that budget, in one run.

    sudo python -m bench.workers                      # workers 1,2,3; 0.3 CPU each
    sudo python -m bench.workers --workers 1,2 --budget 0.45
    sudo python -m bench.workers --quick              # smoke run (CI)

Why budgets: on a 2-core machine the load generator needs about a core, so a
second echod process has no core of its own to show what it adds.  Here every
serving process (echod itself when N = 1, each worker otherwise) gets a CPU
cgroup of its own capped at --budget of one CPU (cgroup v1 cpu.cfs_quota_us or
v2 cpu.max): N workers have N such "cores" and, budgets plus the load
generator fitting in the machine, each worker is limited by its budget and
nothing else.  Throughput that scales with cores then shows as messages/s
growing with N while messages per server CPU-second stay flat (no shared
bottleneck: no lock, no shared accept queue); the table gives both, with how
often each budget was exhausted (throttled periods) and how many connections
each worker got.

Scenario: the native load generator's ping-pong (bench/loadgen.c, every echoed
byte verified), 100 connections x 64 bytes by default.  Configurations run in
alternating order, round after round, each on a fresh echod checked for
correct echo first; medians over the rounds.  Results: a Markdown table on
stdout, JSON in bench/results/workers-*.json.  Needs root (cgroups) and a C
compiler.  Nothing here asserts a speed: this is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from bench import run as harness

RESULTS = harness.BENCH / "results"
HOST = harness.HOST
CGROUP_V1 = Path("/sys/fs/cgroup/cpu")
CGROUP_V2 = Path("/sys/fs/cgroup")
# A short period: a capped process waits at most (1 - budget) x 10 ms at a time.
PERIOD_US = 10_000


class ScalingError(Exception):
    """
    The run cannot go on: said in one line, exit status 1.
    """


# --- CPU budgets ---------------------------------------------------------------------


class CpuBudget:
    """
    One cgroup whose processes may use at most C{budget} of one CPU.
    """

    def __init__(self, name: str, budget: float) -> None:
        quota = max(1000, round(budget * PERIOD_US))
        if (CGROUP_V1 / "cpu.cfs_quota_us").exists():
            self.version = 1
            self.path = CGROUP_V1 / name
            self.path.mkdir()
            (self.path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (self.path / "cpu.cfs_quota_us").write_text(str(quota))
        elif "cpu" in _read(CGROUP_V2 / "cgroup.controllers").split():
            self.version = 2
            if "cpu" not in _read(CGROUP_V2 / "cgroup.subtree_control").split():
                (CGROUP_V2 / "cgroup.subtree_control").write_text("+cpu")
            self.path = CGROUP_V2 / name
            self.path.mkdir()
            (self.path / "cpu.max").write_text(f"{quota} {PERIOD_US}")
        else:
            raise ScalingError("no CPU cgroup controller here (cgroup v1 cpu or v2 cpu.max)")

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(str(pid))

    def throttling(self) -> tuple[int, int]:
        """
        (periods, periods in which the budget ran out) so far.
        """
        stat = dict(line.split() for line in _read(self.path / "cpu.stat").splitlines())
        return int(stat.get("nr_periods", 0)), int(stat.get("nr_throttled", 0))

    def remove(self) -> None:
        # Its processes have exited (or are moved back to the root first).
        root = CGROUP_V1 if self.version == 1 else CGROUP_V2
        with suppress(OSError):
            for pid in _read(self.path / "cgroup.procs").split():
                with suppress(OSError):
                    (root / "cgroup.procs").write_text(pid)
        for _ in range(50):  # bounded: 5 s
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.1)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def canBudget() -> str | None:
    """
    Why CPU budgets cannot be set here, or None.
    """
    if os.geteuid() != 0:
        return "CPU cgroups need root: run as root (sudo)"
    if not (CGROUP_V1 / "cpu.cfs_quota_us").exists() and "cpu" not in _read(
        CGROUP_V2 / "cgroup.controllers"
    ):
        return "no CPU cgroup controller here (cgroup v1 cpu or v2 cpu.max)"
    return None


# --- echod under budgets ----------------------------------------------------------------


def metrics(port: int) -> list[Sample]:
    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def perWorker(samples: list[Sample], name: str) -> dict[str, float]:
    return {s.labels["worker"]: s.value for s in samples if s.name == name}


def total(samples: list[Sample], name: str) -> float:
    return sum(s.value for s in samples if s.name == name)


def workerPids(mainPid: int) -> list[int]:
    pids = []
    for pid in harness.processTree(mainPid)[1:]:
        with suppress(OSError):
            if b"echod.server.workers.child" in Path(f"/proc/{pid}/cmdline").read_bytes():
                pids.append(pid)
    return sorted(pids)


class Echod:
    """
    One echod (twistd echod) with C{workers} processes, each serving one in
    a CPU budget of its own.
    """

    def __init__(self, workers: int, budget: float, directory: Path, tag: str) -> None:
        self.workers = workers
        self.port, self.metricsPort = harness.freePort(), harness.freePort()
        config = directory / f"echod-{workers}.toml"
        config.write_text(
            harness.echodConfig(
                self.port,
                {
                    "server": {"workers": workers},
                    "metrics": {"listen": f"tcp:{self.metricsPort}:interface={HOST}"},
                },
            )
        )
        self.logPath = directory / f"echod-{workers}.log"
        with open(self.logPath, "wb") as log:
            self.process = subprocess.Popen(
                [*harness.twistdCommand(), "-n", "--pidfile=", "echod", "--config", str(config)],
                cwd=directory,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=harness._dieWithParent,
            )
        self.budgets: list[CpuBudget] = []
        try:
            self.serving = self._waitServing()
            for index, pid in enumerate(self.serving):
                budget_ = CpuBudget(f"echod-bench-{tag}-{workers}-{index}", budget)
                self.budgets.append(budget_)
                budget_.add(pid)
        except BaseException:
            self.stop()
            raise

    def _waitServing(self) -> list[int]:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ScalingError(f"echod exited {self.process.returncode}: {self.output()}")
            with suppress(OSError, ValueError):
                values = metrics(self.metricsPort)
                if self.workers == 1:
                    return [self.process.pid]
                pids = workerPids(self.process.pid)
                if len(perWorker(values, "echod_worker_connections_open")) == self.workers and (
                    len(pids) == self.workers
                ):
                    return pids
            time.sleep(0.1)
        raise ScalingError(f"echod with {self.workers} workers did not start: {self.output()}")

    def output(self) -> str:
        return self.logPath.read_text(errors="replace")[-2000:].strip()

    def connections(self) -> dict[str, float]:
        if self.workers == 1:
            return {"echod": total(metrics(self.metricsPort), "echod_connections_total")}
        return perWorker(metrics(self.metricsPort), "echod_worker_connections_total")

    def cpuSeconds(self) -> float:
        return sum(harness.cpuSeconds(pid) for pid in self.serving)

    def throttling(self) -> tuple[int, int]:
        periods = throttled = 0
        for budget in self.budgets:
            p, t = budget.throttling()
            periods += p
            throttled += t
        return periods, throttled

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                self.process.wait(15)
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with suppress(subprocess.TimeoutExpired):
            self.process.wait(15)
        for budget in self.budgets:
            budget.remove()


# --- measuring -------------------------------------------------------------------------


@dataclass
class Measurement:
    workers: int
    msgs_per_s: float
    server_cpu: float  # CPUs used by the serving processes, on average
    msgs_per_cpu_s: float
    throttled: float  # share of budget periods in which the budget ran out
    loadgen_cpu: float
    connections: dict[str, float] = field(default_factory=dict)


@dataclass
class Options:
    workers: list[int]
    budget: float
    rounds: int
    seconds: float
    warmup: float
    conns: int
    size: int
    threads: int


def measure(echod: Echod, options: Options) -> Measurement:
    harness.checkServer(echod.port)
    if echod.workers > 1:
        time.sleep(1.2)  # the check's connections in the workers' reports
    argv = [
        str(harness.BUILD / "loadgen"),
        *("--mode", "pingpong", "--port", str(echod.port), "--conns", str(options.conns)),
        *("--size", str(options.size), "--seconds", str(options.seconds)),
        *("--warmup", str(options.warmup), "--threads", str(options.threads)),
        *("--timeout", str(options.warmup + options.seconds + 60)),
    ]
    connectionsBefore = echod.connections()
    cpuBefore, throttleBefore = echod.cpuSeconds(), echod.throttling()
    started = time.monotonic()
    loadgenBefore = os.times()
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=options.warmup + options.seconds + 90,
        check=False,
        preexec_fn=harness._dieWithParent,
    )
    elapsed = time.monotonic() - started
    loadgenAfter = os.times()
    cpu = echod.cpuSeconds() - cpuBefore
    periods, throttled = (
        after - before for after, before in zip(echod.throttling(), throttleBefore, strict=True)
    )
    result = harness.parseLoadgen(done.stdout, done.stderr, done.returncode, "loadgen")
    msgs = float(result["msgs_per_s"])
    # The server's CPU over the whole loadgen run (warm-up included), and
    # the messages of that run: msgs/s was measured after the warm-up.
    serverCpu = cpu / elapsed
    loadgen = (
        loadgenAfter.children_user
        + loadgenAfter.children_system
        - loadgenBefore.children_user
        - loadgenBefore.children_system
    )
    # Workers report their totals every second.
    time.sleep(1.2)
    after = echod.connections()
    return Measurement(
        workers=echod.workers,
        msgs_per_s=msgs,
        server_cpu=serverCpu,
        msgs_per_cpu_s=msgs / serverCpu if serverCpu else 0.0,
        throttled=throttled / periods if periods else 0.0,
        loadgen_cpu=loadgen / elapsed,
        connections={k: v - connectionsBefore.get(k, 0) for k, v in sorted(after.items())},
    )


def runAll(options: Options, directory: Path) -> dict[int, list[Measurement]]:
    results: dict[int, list[Measurement]] = {n: [] for n in options.workers}
    tag = str(os.getpid())
    for number in range(options.rounds):
        order = options.workers if number % 2 == 0 else list(reversed(options.workers))
        for workers in order:
            echod = Echod(workers, options.budget, directory, tag)
            try:
                measurement = measure(echod, options)
            finally:
                echod.stop()
            results[workers].append(measurement)
            print(
                f"round {number + 1}/{options.rounds}: {workers} worker(s): "
                f"{measurement.msgs_per_s:,.0f} msgs/s, server {measurement.server_cpu:.2f} CPU, "
                f"throttled {measurement.throttled:.0%}, connections "
                + "/".join(f"{v:.0f}" for v in measurement.connections.values()),
                file=sys.stderr,
                flush=True,
            )
    return results


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def report(options: Options, results: dict[int, list[Measurement]]) -> dict[str, Any]:
    rows = []
    base = median([m.msgs_per_s for m in results[options.workers[0]]])
    for workers, measurements in results.items():
        msgs = median([m.msgs_per_s for m in measurements])
        rows.append(
            {
                "workers": workers,
                "budget_cpus": options.budget * workers,
                "msgs_per_s": msgs,
                "vs_first": msgs / base if base else 0.0,
                "server_cpus": median([m.server_cpu for m in measurements]),
                "msgs_per_cpu_s": median([m.msgs_per_cpu_s for m in measurements]),
                "throttled": median([m.throttled for m in measurements]),
                "loadgen_cpus": median([m.loadgen_cpu for m in measurements]),
                "connections_last_round": measurements[-1].connections,
                "rounds": [asdict(m) for m in measurements],
            }
        )
    return {"rows": rows}


def table(options: Options, summary: dict[str, Any]) -> str:
    first = options.workers[0]
    lines = [
        f"| workers | CPU budget | messages/s | x {first} | server CPU used | "
        "msgs per CPU-s | budget periods exhausted | load generator CPU | connections |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in summary["rows"]:
        lines.append(
            f"| {row['workers']} | {options.budget:g} x {row['workers']} | "
            f"{row['msgs_per_s']:,.0f} | {row['vs_first']:.2f}x | {row['server_cpus']:.2f} | "
            f"{row['msgs_per_cpu_s']:,.0f} | {row['throttled']:.0%} | "
            f"{row['loadgen_cpus']:.2f} | "
            + "/".join(f"{v:.0f}" for v in row["connections_last_round"].values())
            + " |"
        )
    return "\n".join(lines)


def parseArgs(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.workers",
        description="echod's worker scaling, each worker held to the same CPU budget",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 round of 0.5 s, 1,2")
    parser.add_argument("--workers", help="worker counts to compare (default 1,2,3)")
    parser.add_argument(
        "--budget", type=float, default=0.3, help="CPU per worker, of one CPU (default 0.3)"
    )
    parser.add_argument("--rounds", type=int, help="alternating rounds (default 5; quick 1)")
    parser.add_argument("--seconds", type=float, help="measured seconds (default 3; quick 0.5)")
    parser.add_argument("--warmup", type=float, default=0.5, help="unmeasured seconds first")
    parser.add_argument("--conns", type=int, default=100, help="connections (default 100)")
    parser.add_argument("--size", type=int, default=64, help="message bytes (default 64)")
    parser.add_argument("--threads", type=int, default=1, help="load generator threads")
    parser.add_argument("--cc", default=os.environ.get("CC", "cc"), help="C compiler")
    parser.add_argument("--json", type=Path, help="where to write the results")
    return parser.parse_args(argv)


def options(args: argparse.Namespace) -> Options:
    try:
        workers = [int(n) for n in (args.workers or ("1,2" if args.quick else "1,2,3")).split(",")]
    except ValueError:
        raise ScalingError(f"--workers {args.workers}: expected numbers such as 1,2,3") from None
    if not workers or any(n < 1 or n > 64 for n in workers):
        raise ScalingError(f"--workers {args.workers}: each from 1 to 64")
    if not 0.05 <= args.budget <= 1.0:
        raise ScalingError(f"--budget {args.budget:g}: expected 0.05 to 1 (of one CPU)")
    cpus = os.cpu_count() or 1
    if max(workers) * args.budget > cpus - 0.5:
        raise ScalingError(
            f"--budget {args.budget:g} x {max(workers)} workers leaves the load generator less "
            f"than half of this machine's {cpus} CPUs: lower either"
        )
    return Options(
        workers=workers,
        budget=args.budget,
        rounds=args.rounds or (1 if args.quick else 5),
        seconds=args.seconds or (0.5 if args.quick else 3.0),
        warmup=args.warmup,
        conns=args.conns,
        size=args.size,
        threads=args.threads,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parseArgs(argv)
    try:
        chosen = options(args)
        why = canBudget()
        if why is not None:
            raise ScalingError(why)
        if shutil.which(args.cc) is None:
            raise ScalingError(f"no C compiler {args.cc!r} for the load generator")
        harness.build(args.cc)
        with tempfile.TemporaryDirectory(prefix="echod-workers-") as directory:
            results = runAll(chosen, Path(directory))
    except (ScalingError, harness.BenchError, harness.ServerFailed) as e:
        print(f"bench.workers: {e}", file=sys.stderr)
        return 2 if isinstance(e, harness.MismatchError) else 1
    summary = report(chosen, results)
    output = args.json or RESULTS / f"workers-{time.strftime('%Y%m%dT%H%M%S')}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "options": asdict(chosen),
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "kernel": platform.release(),
            "python": platform.python_version(),
        },
        **summary,
    }
    output.write_text(json.dumps(document, indent=2) + "\n")
    print(table(chosen, summary))
    print(f"\n(JSON: {output})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
