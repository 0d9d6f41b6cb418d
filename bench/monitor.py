"""
The monitor's memory with many targets: C{twistd echod-monitor} probing N
targets (10,000 by default) on loopback, each a distinct address of
127.0.0.0/8 (the kernel routes all of it to lo) served by one echod, its
resident memory measured once every target has run its rounds (so that
every history ring, allocated whole when an address is first probed, exists)
and compared with the same monitor probing one target.

    python -m bench.monitor                       # 10,000 targets, 3 intervals of 30 s
    python -m bench.monitor --targets 2000 --interval 10 --intervals 2

Also reported: rounds run and overruns (a round still running at its next
time), the monitor's CPU, and how long a scrape of /metrics and the status
page take at that size.  Loopback only; bounded in time.  Nothing here
asserts a figure: this is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def twistd() -> str:
    candidate = Path(sys.executable).parent / "twistd"
    return str(candidate) if candidate.exists() else "twistd"


def rssKiB(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpuSeconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fetch(url: str) -> tuple[bytes, float]:
    started = time.monotonic()
    with urllib.request.urlopen(url, timeout=60) as response:
        body: bytes = response.read()
    return body, time.monotonic() - started


def waitForListener(port: int, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def addresses(count: int) -> list[str]:
    """
    C{count} distinct addresses of 127.0.0.0/8, from 127.0.1.1 on.
    """
    result = []
    for n in range(count):
        high, low = divmod(n, 250)
        result.append(f"127.{1 + high // 250}.{high % 250}.{1 + low}")
    return result


def measure(
    directory: Path, echo: int, count: int, interval: float, intervals: int
) -> dict[str, float]:
    listen = freePort()
    targets = ",\n".join(f'  "{a}:{echo}"' for a in addresses(count))
    config = directory / f"monitor-{count}.toml"
    config.write_text(
        "[monitor]\n"
        f'listen = "tcp:port={listen}:interface=127.0.0.1"\n'
        f"interval = {interval}\ntimeout = 2\ncount = 5\nspacing = 0.05\n"
        f"targets = [\n{targets}\n]\n"
    )
    log = open(directory / f"monitor-{count}.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [twistd(), "-n", "--pidfile=", "echod-monitor", "--config", str(config)],
        cwd=directory,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        waitForListener(listen, process)
        started = rssKiB(process.pid)
        cpu = cpuSeconds(process.pid)
        time.sleep(interval * intervals)
        rss = rssKiB(process.pid)
        used = cpuSeconds(process.pid) - cpu
        metrics, scrapeSeconds = fetch(f"http://127.0.0.1:{listen}/metrics")
        _, pageSeconds = fetch(f"http://127.0.0.1:{listen}/")
        rounds = overruns = 0.0
        for family in text_string_to_metric_families(metrics.decode()):
            for sample in family.samples:
                if sample.name == "echod_probe_rounds_total":
                    if sample.labels.get("result") == "overrun":
                        overruns += sample.value
                    else:
                        rounds += sample.value
        return {
            "targets": count,
            "rss_start_mib": started / 1024,
            "rss_mib": rss / 1024,
            "rounds": rounds,
            "overruns": overruns,
            "cpu_share": used / (interval * intervals),
            "scrape_s": scrapeSeconds,
            "scrape_mib": len(metrics) / 2**20,
            "page_s": pageSeconds,
        }
    finally:
        process.terminate()
        process.wait(30)
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=int, default=10_000)
    parser.add_argument("--interval", type=float, default=30.0)
    parser.add_argument("--intervals", type=int, default=3)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="echod-bench-monitor-") as name:
        directory = Path(name)
        echo = freePort()
        # On every IPv4 address, so that each of 127.0.0.0/8 reaches it.
        (directory / "echod.toml").write_text(
            f'[server]\nlisten = ["tcp:port={echo}"]\nmax_connections = 0\n'
        )
        server = subprocess.Popen(
            [twistd(), "-n", "--pidfile=", "echod", "--config", str(directory / "echod.toml")],
            cwd=directory,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        try:
            waitForListener(echo, server)
            results = [
                measure(directory, echo, 1, arguments.interval, arguments.intervals),
                measure(
                    directory, echo, arguments.targets, arguments.interval, arguments.intervals
                ),
            ]
        finally:
            server.terminate()
            server.wait(30)
    print(
        "| targets | RSS at start | RSS after the rounds | rounds | overruns | CPU | "
        "/metrics | page |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {int(r['targets']):,} | {r['rss_start_mib']:.0f} MiB | {r['rss_mib']:.0f} MiB | "
            f"{int(r['rounds']):,} | {int(r['overruns'])} | {r['cpu_share'] * 100:.0f} % | "
            f"{r['scrape_s']:.2f} s ({r['scrape_mib']:.1f} MiB) | {r['page_s']:.2f} s |"
        )
    one, many = results
    perTarget = (many["rss_mib"] - one["rss_mib"]) * 1024 / max(1, many["targets"] - 1)
    print(f"\n{perTarget:.1f} KiB more per target")


if __name__ == "__main__":
    main()
