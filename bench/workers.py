"""
Worker scaling: echod with [server] workers = N, each worker held to the same
CPU budget, against echod in one process held to that budget, in one run.

    sudo python -m bench.workers                      # workers 1,2,3; 0.3 CPU each
    sudo python -m bench.workers --workers 1,2 --budget 0.45
    sudo python -m bench.workers --quick              # smoke run (CI)
    sudo python -m bench.workers --udp --workers 1,2  # UDP: datagrams/s (see below)

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

With --udp: the UDP load generator's udp-64 load (bench/udp.py: 16 sockets x 8
datagrams of 64 bytes in flight, every datagram verified), each socket from a
loopback source address of its own (--sources 16: echod's workers share UDP
by source address, so datagrams from one address all go to one worker), on
echod's UDP listener, guards on above the offered rate.  The budgets go to the
processes that serve the UDP port (whose epoll reads a socket bound to it),
whichever they are: if echod serves UDP in its main process only, whatever
the workers setting, the table says so ("processes serving UDP": main) and
each row measures that one process; the CPU of each serving process shows how
the datagrams were shared.
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
from bench import udp

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

    def __init__(
        self, workers: int, budget: float, directory: Path, tag: str, datagrams: bool = False
    ) -> None:
        self.workers = workers
        self.port, self.metricsPort = harness.freePort(), harness.freePort()
        # With datagrams, the budgets go to the processes serving this UDP port.
        self.udpPort = udp.freePort() if datagrams else None
        tables: dict[str, dict[str, Any]] = {
            "server": {"workers": workers},
            "metrics": {"listen": f"tcp:{self.metricsPort}:interface={HOST}"},
        }
        if self.udpPort is not None:
            tables["udp"] = udp.udpTable(self.udpPort)
        config = directory / f"echod-{workers}.toml"
        config.write_text(harness.echodConfig(self.port, tables))
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
        # UDP: the processes serving the port, as many as there are workers
        # (each reads a socket of its own); they start reading one after the
        # other, the last one seconds later on a loaded machine.
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ScalingError(f"echod exited {self.process.returncode}: {self.output()}")
            with suppress(OSError, ValueError):
                values = metrics(self.metricsPort)
                if self.workers == 1:
                    pids = [self.process.pid]
                else:
                    pids = workerPids(self.process.pid)
                    if len(perWorker(values, "echod_worker_connections_open")) != self.workers:
                        pids = []
                if len(pids) == self.workers and self.udpPort is not None:
                    pids = self.servingUdp()
                    if len(pids) != self.workers:
                        pids = []
                if pids:
                    return pids
            time.sleep(0.1)
        raise ScalingError(f"echod with {self.workers} workers did not start: {self.output()}")

    def output(self) -> str:
        return self.logPath.read_text(errors="replace")[-2000:].strip()

    def connections(self) -> dict[str, float]:
        if self.workers == 1:
            return {"echod": total(metrics(self.metricsPort), "echod_connections_total")}
        return perWorker(metrics(self.metricsPort), "echod_worker_connections_total")

    def servingUdp(self) -> list[int]:
        assert self.udpPort is not None
        return sorted(udp.servingProcesses(harness.processTree(self.process.pid), self.udpPort))

    def cpuSeconds(self) -> float:
        return sum(harness.cpuSeconds(pid) for pid in self.serving)

    def servedBy(self) -> str:
        """
        Which processes serve (for the table): "main", or "N workers".
        """
        parts = ["main"] if self.process.pid in self.serving else []
        workers = len([pid for pid in self.serving if pid != self.process.pid])
        if workers:
            parts.append(f"{workers} worker{'s' if workers > 1 else ''}")
        return " + ".join(parts)

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
    msgs_per_s: float  # with --udp: datagrams/s
    server_cpu: float  # CPUs used by the serving processes, on average
    msgs_per_cpu_s: float
    throttled: float  # share of budget periods in which the budget ran out
    loadgen_cpu: float
    connections: dict[str, float] = field(default_factory=dict)
    # with --udp: who served, each serving process's CPU, datagrams lost
    served_by: str = ""
    udp_sockets: int = 0  # sockets bound to the UDP port (one per worker with SO_REUSEPORT)
    cpu_per_process: list[float] = field(default_factory=list)
    lost: int = 0


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
    udp: bool = False
    sources: int = 16


@dataclass
class LoadRun:
    """
    One run of a load generator against echod: its output, how long it took,
    the CPUs it used on average, and the share of echod's budget periods in
    which the budget ran out.
    """

    done: subprocess.CompletedProcess[str]
    elapsed: float
    loadgenCpu: float
    throttled: float


def runLoad(echod: Echod, argv: list[str], options: Options) -> LoadRun:
    throttleBefore = echod.throttling()
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
    periods, throttled = (
        after - before for after, before in zip(echod.throttling(), throttleBefore, strict=True)
    )
    loadgen = (
        loadgenAfter.children_user
        + loadgenAfter.children_system
        - loadgenBefore.children_user
        - loadgenBefore.children_system
    )
    return LoadRun(done, elapsed, loadgen / elapsed, throttled / periods if periods else 0.0)


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
    cpuBefore = echod.cpuSeconds()
    run = runLoad(echod, argv, options)
    cpu = echod.cpuSeconds() - cpuBefore
    result = harness.parseLoadgen(run.done.stdout, run.done.stderr, run.done.returncode, "loadgen")
    msgs = float(result["msgs_per_s"])
    # The server's CPU over the whole loadgen run (warm-up included), and
    # the messages of that run: msgs/s was measured after the warm-up.
    serverCpu = cpu / run.elapsed
    # Workers report their totals every second.
    time.sleep(1.2)
    after = echod.connections()
    return Measurement(
        workers=echod.workers,
        msgs_per_s=msgs,
        server_cpu=serverCpu,
        msgs_per_cpu_s=msgs / serverCpu if serverCpu else 0.0,
        throttled=run.throttled,
        loadgen_cpu=run.loadgenCpu,
        connections={k: v - connectionsBefore.get(k, 0) for k, v in sorted(after.items())},
    )


def measureDatagrams(echod: Echod, options: Options) -> Measurement:
    """
    The UDP load (bench.udp's udp-64: 16 sockets x 8 in flight, of --size
    bytes, from --sources addresses) on echod's UDP port, after its UDP check.
    """
    assert echod.udpPort is not None
    harness.checkUdpServer(echod.udpPort)
    base = udp.LOADS[0]
    load = udp.Load(base.name, base.title, base.sockets, base.window, options.size, options.sources)
    argv = udp.loadgenArgv(load, echod.udpPort, options.seconds, options.warmup)
    before = [harness.cpuSeconds(pid) for pid in echod.serving]
    run = runLoad(echod, argv, options)
    perProcess = [
        (harness.cpuSeconds(pid) - b) / run.elapsed
        for pid, b in zip(echod.serving, before, strict=True)
    ]
    result = harness.parseLoadgen(run.done.stdout, run.done.stderr, run.done.returncode, "udpgen")
    if echod.servingUdp() != echod.serving:
        raise ScalingError(
            f"the processes serving UDP changed during the run: {echod.serving} in budgets, "
            f"{echod.servingUdp()} after"
        )
    rate = float(result["dgrams_per_s"])
    serverCpu = sum(perProcess)
    return Measurement(
        workers=echod.workers,
        msgs_per_s=rate,
        server_cpu=serverCpu,
        # datagrams echoed in the whole run (warm-up included) per CPU-second
        msgs_per_cpu_s=result["received"] / (serverCpu * run.elapsed) if serverCpu else 0.0,
        throttled=run.throttled,
        loadgen_cpu=run.loadgenCpu,
        served_by=echod.servedBy(),
        udp_sockets=len(udp.socketInodes(echod.udpPort)),
        cpu_per_process=perProcess,
        lost=int(result["lost"]),
    )


def runAll(options: Options, directory: Path) -> dict[int, list[Measurement]]:
    results: dict[int, list[Measurement]] = {n: [] for n in options.workers}
    tag = str(os.getpid())
    for number in range(options.rounds):
        order = options.workers if number % 2 == 0 else list(reversed(options.workers))
        for workers in order:
            echod = Echod(workers, options.budget, directory, tag, datagrams=options.udp)
            try:
                if options.udp:
                    measurement = measureDatagrams(echod, options)
                else:
                    measurement = measure(echod, options)
            finally:
                echod.stop()
            results[workers].append(measurement)
            if options.udp:
                spread = (
                    f"served by {measurement.served_by} "
                    f"({measurement.udp_sockets} UDP socket(s)), lost {measurement.lost}, "
                    "CPU per serving process "
                    + "/".join(f"{v:.2f}" for v in measurement.cpu_per_process)
                )
            else:
                spread = "connections " + "/".join(
                    f"{v:.0f}" for v in measurement.connections.values()
                )
            print(
                f"round {number + 1}/{options.rounds}: {workers} worker(s): "
                f"{measurement.msgs_per_s:,.0f} {'datagrams' if options.udp else 'msgs'}/s, "
                f"server {measurement.server_cpu:.2f} CPU, "
                f"throttled {measurement.throttled:.0%}, {spread}",
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
        row: dict[str, Any] = {
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
        if options.udp:
            # The same figures under the names of datagrams; budgets per serving process.
            last = measurements[-1]
            row["dgrams_per_s"] = row.pop("msgs_per_s")
            row["dgrams_per_cpu_s"] = row.pop("msgs_per_cpu_s")
            del row["connections_last_round"]
            row["served_by_last_round"] = last.served_by
            row["udp_sockets_last_round"] = last.udp_sockets
            row["budget_cpus"] = options.budget * len(last.cpu_per_process)
            row["cpu_per_process_last_round"] = last.cpu_per_process
            row["lost"] = median([float(m.lost) for m in measurements])
        rows.append(row)
    return {"rows": rows}


def udpTable(options: Options, summary: dict[str, Any]) -> str:
    first = options.workers[0]
    lines = [
        f"| workers | processes serving UDP | UDP sockets | CPU budget | datagrams/s | "
        f"x {first} | server CPU used | datagrams per CPU-s | budget periods exhausted | "
        "load generator CPU | lost | CPU per serving process |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in summary["rows"]:
        serving = len(row["cpu_per_process_last_round"])
        lines.append(
            f"| {row['workers']} | {row['served_by_last_round']} | "
            f"{row['udp_sockets_last_round']} | {options.budget:g} x {serving} | "
            f"{row['dgrams_per_s']:,.0f} | {row['vs_first']:.2f}x | {row['server_cpus']:.2f} | "
            f"{row['dgrams_per_cpu_s']:,.0f} | {row['throttled']:.0%} | "
            f"{row['loadgen_cpus']:.2f} | {row['lost']:,.0f} | "
            + "/".join(f"{v:.2f}" for v in row["cpu_per_process_last_round"])
            + " |"
        )
    if any(row["workers"] > 1 and row["served_by_last_round"] == "main" for row in summary["rows"]):
        lines.append("")
        lines.append(
            "echod served UDP in its main process only, whatever the workers setting: "
            "the rows with workers > 1 measure that one process, not workers."
        )
    return "\n".join(lines)


def table(options: Options, summary: dict[str, Any]) -> str:
    if options.udp:
        return udpTable(options, summary)
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
    parser.add_argument(
        "--udp",
        action="store_true",
        help="measure UDP: 16 sockets x 8 datagrams in flight on echod's UDP listener",
    )
    parser.add_argument(
        "--sources",
        type=int,
        default=16,
        help="UDP: distinct loopback source addresses of the sockets (default 16)",
    )
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
        udp=args.udp,
        sources=args.sources,
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
