"""
echod-sniff against tcpdump on the same UDP flood, in the same run.

    sudo python -m bench.sniff.run [--rate 200000 --rate 300000 ...] [--seconds 5]

For each rate, a native sender (udpflood.c, compiled into bench/build/sniff/)
floods UDP on loopback at that fixed rate for a few seconds, while
``tcpdump -w`` and ``twistd echod-sniff --format pcap`` capture it together,
with the same filter, snapshot length and ring size; then a second flood at
the same rate is printed as text by ``tcpdump -nn`` (to a file) and
``twistd echod-sniff --format text`` (to a file), which needs a core of its
own.  Reported for
each: frames written (counted from its file), the kernel's drop counter
(PACKET_STATISTICS, as each tool reports it), the CPU time it used from the
flood's start until every file stopped growing, that CPU time per frame
written, and its ratio to tcpdump's doing the same in the same flood.  A last round
("drain") stops tcpdump and echod-sniff (pcap), fills their rings, resumes
them together and times how fast each empties its ring: the reading speed
with the sender out of the way, in frames per CPU-second.  Results go to
stdout as tables and to bench/results/sniff-*.json.

Needs root (raw capture), tcpdump and a C compiler.  Nothing here asserts a
speed: this is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
BUILD = ROOT / "bench" / "build" / "sniff"
RESULTS = ROOT / "bench" / "results"
TCPDUMP = "tcpdump -w"
TCPDUMP_TEXT = "tcpdump text"
SNIFF_PCAP = "echod-sniff pcap"
SNIFF_TEXT = "echod-sniff text"


@dataclass
class Capture:
    tool: str
    sent: int
    frames: int
    frames_per_second: float
    kernel_dropped: int
    kernel_seen: int
    cpu_seconds: float
    cpu_us_per_frame: float
    cpu_ratio_to_tcpdump: float


@dataclass
class Round:
    rate: int
    seconds: float
    sent: int
    sent_per_second: float
    captures: list[Capture]


def compileFlooder() -> Path:
    BUILD.mkdir(parents=True, exist_ok=True)
    binary = BUILD / "udpflood"
    source = HERE / "udpflood.c"
    if not binary.exists() or binary.stat().st_mtime < source.stat().st_mtime:
        compiler = shutil.which("cc") or shutil.which("gcc")
        if compiler is None:
            sys.exit("run.py: needs a C compiler (apt install gcc libc6-dev)")
        subprocess.run([compiler, "-O2", "-Wall", "-o", str(binary), str(source)], check=True)
    return binary


def twistd() -> str:
    candidate = Path(sys.executable).parent / "twistd"
    return str(candidate) if candidate.exists() else "twistd"


def freeUdpPort() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def countPcap(path: Path) -> int:
    """
    Records in a pcap file (either byte order), read from the file itself.
    """
    data = path.read_bytes()
    if len(data) < 24:
        return 0
    order = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    offset, count = 24, 0
    while offset + 16 <= len(data):
        caplen = struct.unpack_from(order + "I", data, offset + 8)[0]
        offset += 16 + caplen
        count += 1
    return count


def countFrames(path: Path) -> int:
    """
    Frames in a tool's output: pcap records, or lines of text.
    """
    if path.suffix == ".pcap":
        return countPcap(path)
    if not path.exists():
        return 0
    with open(path, "rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def cpuSeconds(pid: int) -> float:
    """
    User plus system CPU time of a running process, from /proc.
    """
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def waitFor(path: Path, pattern: str, process: subprocess.Popen[bytes], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            found = re.search(pattern, path.read_text(errors="replace"))
            if found:
                return found.group(0)
        if process.poll() is not None:
            break
        time.sleep(0.05)
    sys.exit(f"run.py: {pattern!r} not seen in {path}:\n{path.read_text(errors='replace')}")


def settle(paths: list[Path], minimum: float, quiet: float = 0.5, timeout: float = 60) -> None:
    """
    Wait C{minimum} seconds, then until no file has grown for C{quiet}
    seconds: each tool has emptied its ring (a slow one still reads after
    the flood).
    """
    time.sleep(minimum)
    sizes = [-1] * len(paths)
    changed = time.monotonic()
    deadline = changed + timeout
    while time.monotonic() < deadline:
        now = [p.stat().st_size if p.exists() else 0 for p in paths]
        if now != sizes:
            sizes, changed = now, time.monotonic()
        elif time.monotonic() - changed >= quiet:
            return
        time.sleep(0.05)


def sniffCommand(
    expression: str, form: str, output: Path, log: Path, bufferBytes: int
) -> list[str]:
    return [
        twistd(), "-n", "--pidfile=", "--logfile", str(log), "echod-sniff",
        "--interface", "lo", "--filter", expression, "--format", form,
        "--output", str(output), "--buffer-bytes", str(bufferBytes), "--stats-interval", "0",
    ]  # fmt: skip


def tcpdumpCommand(expression: str, output: Path, bufferBytes: int, form: str) -> list[str]:
    """
    tcpdump writing a pcap file, or printing text (to standard output,
    which the caller sends to C{output}).
    """
    write = ["-w", str(output)] if form == "pcap" else ["-nn"]
    return ["tcpdump", "-i", "lo", "-n", "-B", str(bufferBytes // 1024), *write,
            expression]  # fmt: skip


_TCPDUMP_SEEN = r"(\d+) packets received by filter"
_TCPDUMP_DROPPED = r"(\d+) packets dropped by kernel"
_SNIFF_FINAL = r"stopped: (\d+) packets seen, (\d+) passed to output, (\d+) dropped by the kernel"
# The line that says how echod-sniff reads its ring (in C or in Python).
SNIFF_METHOD = r"(?<=capturing on lo \()[^,]+, walked in \w+"


def kernelCounters(tool: str, log: Path) -> tuple[int, int]:
    """
    (seen, dropped) as the tool reported them when it stopped.
    """
    text = log.read_text(errors="replace")
    if tool in (TCPDUMP, TCPDUMP_TEXT):
        seen, dropped = re.search(_TCPDUMP_SEEN, text), re.search(_TCPDUMP_DROPPED, text)
        if seen and dropped:
            return int(seen.group(1)), int(dropped.group(1))
    else:
        final = re.search(_SNIFF_FINAL, text)
        if final:
            return int(final.group(1)), int(final.group(3))
    sys.exit(f"run.py: no statistics from {tool}:\n{text}")


def runRound(
    flooder: Path, rate: int, seconds: float, bufferBytes: int, work: Path, methods: set[str]
) -> Round:
    """
    echod-sniff writing pcap beside tcpdump writing pcap, then echod-sniff
    writing text beside tcpdump printing text, each pair on a flood of its
    own at C{rate}; each ratio is to tcpdump doing the same.
    """
    pcap = runFlood(flooder, rate, seconds, bufferBytes, work, methods, "pcap")
    text = runFlood(flooder, rate, seconds, bufferBytes, work, methods, "text")
    return Round(
        rate=rate,
        seconds=pcap.seconds,
        sent=pcap.sent,
        sent_per_second=pcap.sent_per_second,
        captures=[*pcap.captures, *text.captures],
    )


def runFlood(
    flooder: Path,
    rate: int,
    seconds: float,
    bufferBytes: int,
    work: Path,
    methods: set[str],
    form: str,
) -> Round:
    port = freeUdpPort()
    expression = f"udp dst port {port}"
    sniff = SNIFF_PCAP if form == "pcap" else SNIFF_TEXT
    tcpdump = TCPDUMP if form == "pcap" else TCPDUMP_TEXT
    outputs = {tcpdump: work / f"tcpdump.{form}", sniff: work / f"echod.{form}"}
    logs = {tool: path.with_name(f"{path.name}.log") for tool, path in outputs.items()}
    for path in [*outputs.values(), *logs.values()]:
        path.unlink(missing_ok=True)
    commands = {
        tcpdump: tcpdumpCommand(expression, outputs[tcpdump], bufferBytes, form),
        sniff: sniffCommand(expression, form, outputs[sniff], logs[sniff], bufferBytes),
    }
    processes: dict[str, subprocess.Popen[bytes]] = {}
    cpu: dict[str, float] = {}
    try:
        for tool, argv in commands.items():
            printing = tool == TCPDUMP_TEXT
            with (
                open(logs[tool], "ab") as log,
                open(outputs[tool] if printing else os.devnull, "wb") as printed,
            ):
                processes[tool] = subprocess.Popen(
                    argv, stdout=printed if printing else log, stderr=log, cwd=work
                )
        waitFor(logs[tcpdump], r"listening on", processes[tcpdump], 10)
        methods.add(waitFor(logs[sniff], SNIFF_METHOD, processes[sniff], 20))
        time.sleep(0.5)
        start = {tool: cpuSeconds(p.pid) for tool, p in processes.items()}
        flood = subprocess.run(
            [str(flooder), "127.0.0.1", str(port), str(rate), str(seconds)],
            check=True,
            capture_output=True,
            text=True,
        )
        sent = json.loads(flood.stdout)
        settle(list(outputs.values()), minimum=1.0)
        cpu = {tool: cpuSeconds(p.pid) - start[tool] for tool, p in processes.items()}
    finally:
        for tool, process in processes.items():
            process.send_signal(signal.SIGINT if tool.startswith("tcpdump") else signal.SIGTERM)
        for process in processes.values():
            process.wait(30)
    duration = float(sent["seconds"])
    captures = []
    for tool, output in outputs.items():
        frames = countFrames(output)
        seen, dropped = kernelCounters(tool, logs[tool])
        captures.append(
            Capture(tool, int(sent["sent"]), frames, frames / duration, dropped, seen, cpu[tool],
                    cpu[tool] / max(frames, 1) * 1e6, 0.0)
        )  # fmt: skip
    base = captures[0].cpu_us_per_frame
    for capture in captures:
        capture.cpu_ratio_to_tcpdump = capture.cpu_us_per_frame / base if base else 0.0
    return Round(
        rate=rate,
        seconds=duration,
        sent=int(sent["sent"]),
        sent_per_second=float(sent["rate"]),
        captures=captures,
    )


def printRound(result: Round) -> None:
    print(
        f"rate {result.rate:,}/s: sent {result.sent:,} ({result.sent_per_second:,.0f}/s)\n"
        f"  {'tool':<18} {'sent':>10} {'frames':>10} {'drops':>9} {'CPU s':>7} {'us/frame':>9}"
        f" {'x tcpdump':>9}"
    )
    for c in result.captures:
        print(
            f"  {c.tool:<18} {c.sent:>10,} {c.frames:>10,} {c.kernel_dropped:>9,}"
            f" {c.cpu_seconds:>7.2f}"
            f" {c.cpu_us_per_frame:>9.3f} {c.cpu_ratio_to_tcpdump:>9.2f}",
            flush=True,
        )


@dataclass
class Drain:
    frames: int
    tcpdump_frames: int
    tcpdump_seconds: float
    tcpdump_cpu_seconds: float
    tcpdump_dropped: int
    echod_frames: int
    echod_seconds: float
    echod_cpu_seconds: float
    echod_dropped: int


def _watchDrain(
    files: dict[str, Path], pids: dict[str, int], expected: int, started: float
) -> dict[str, tuple[float, float]]:
    """
    For each tool, the seconds from C{started} until its pcap file last grew
    (it has all frames once it reaches C{expected} bytes, less tcpdump's
    stdio buffer, which it writes at exit) and the CPU seconds it used by
    then.
    """
    cpu = {name: cpuSeconds(pid) for name, pid in pids.items()}
    last = {name: (-1, started, cpu[name]) for name in files}
    done: dict[str, tuple[float, float]] = {}
    deadline = started + 60
    while len(done) < len(files) and time.monotonic() < deadline:
        now = time.monotonic()
        for name, path in files.items():
            if name in done:
                continue
            size = path.stat().st_size if path.exists() else 0
            if size != last[name][0]:
                last[name] = (size, now, cpuSeconds(pids[name]))
            if size >= expected or now - last[name][1] > 2.0:
                done[name] = (last[name][1] - started, last[name][2] - cpu[name])
        time.sleep(0.002)
    return done


def runDrain(flooder: Path, frames: int, work: Path) -> Drain:
    """
    Both tools stopped (SIGSTOP) while a flood fills their rings, then
    resumed together: how fast each empties its ring into a pcap file is
    its reading speed, with the sender out of the way.
    """
    port = freeUdpPort()
    expression = f"udp dst port {port}"
    ring = 512 << 20
    tcpdumpPcap, echodPcap = work / "drain-tcpdump.pcap", work / "drain-echod.pcap"
    tcpdumpLog, echodLog = work / "drain-tcpdump.log", work / "drain-echod.log"
    with open(tcpdumpLog, "wb") as tlog, open(echodLog, "wb") as elog:
        dump = subprocess.Popen(
            tcpdumpCommand(expression, tcpdumpPcap, ring, "pcap"),
            stdout=tlog,
            stderr=subprocess.STDOUT,
        )
        sniff = subprocess.Popen(
            # Its own log file (--logfile): its output here is tcpdump's.
            sniffCommand(expression, "pcap", echodPcap, echodLog, ring),
            stdout=elog,
            stderr=subprocess.STDOUT,
            cwd=work,
        )
        try:
            waitFor(tcpdumpLog, r"listening on", dump, 10)
            waitFor(echodLog, SNIFF_METHOD, sniff, 20)
            time.sleep(0.5)
            dump.send_signal(signal.SIGSTOP)
            sniff.send_signal(signal.SIGSTOP)
            seconds = frames / 150_000
            flood = subprocess.run(
                [str(flooder), "127.0.0.1", str(port), str(frames / seconds), f"{seconds:.3f}"],
                check=True,
                capture_output=True,
                text=True,
            )
            sent = int(json.loads(flood.stdout)["sent"])
            expected = 24 + sent * (16 + 14 + 20 + 8 + 18)
            started = time.monotonic()
            dump.send_signal(signal.SIGCONT)
            sniff.send_signal(signal.SIGCONT)
            done = _watchDrain(
                {"tcpdump": tcpdumpPcap, "echod": echodPcap},
                {"tcpdump": dump.pid, "echod": sniff.pid},
                expected,
                started,
            )
        finally:
            dump.send_signal(signal.SIGCONT)
            sniff.send_signal(signal.SIGCONT)
            dump.send_signal(signal.SIGINT)
            sniff.send_signal(signal.SIGTERM)
            dump.wait(30)
            sniff.wait(30)
    tcpdumpText = tcpdumpLog.read_text(errors="replace")
    echodText = echodLog.read_text(errors="replace")
    dropped = re.search(r"(\d+) packets dropped by kernel", tcpdumpText)
    final = re.search(r"(\d+) dropped by the kernel", echodText)
    if not (dropped and final and len(done) == 2):
        sys.exit(f"run.py: no statistics:\n{tcpdumpText}\n{echodText}")
    return Drain(
        frames=sent,
        tcpdump_frames=countPcap(tcpdumpPcap),
        tcpdump_seconds=done["tcpdump"][0],
        tcpdump_cpu_seconds=done["tcpdump"][1],
        tcpdump_dropped=int(dropped.group(1)),
        echod_frames=countPcap(echodPcap),
        echod_seconds=done["echod"][0],
        echod_cpu_seconds=done["echod"][1],
        echod_dropped=int(final.group(1)),
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.sniff.run", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--rate", type=int, action="append", help="datagrams/s (repeatable)")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=1, help="rounds per rate")
    parser.add_argument("--buffer-bytes", type=int, default=8 << 20)
    parser.add_argument(
        "--drain",
        type=int,
        default=1_000_000,
        metavar="FRAMES",
        help="then fill both rings with this many frames while both are stopped, and time "
        "how fast each empties its ring (0: skip)",
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run.py: capturing needs root")
    if shutil.which("tcpdump") is None:
        sys.exit("run.py: needs tcpdump")
    flooder = compileFlooder()
    rates = args.rate or [100_000, 200_000, 300_000, 2_000_000]
    rounds: list[Round] = []
    methods: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="echod-bench-sniff-") as directory:
        work = Path(directory)
        for _ in range(args.rounds):
            for rate in rates:
                result = runRound(flooder, rate, args.seconds, args.buffer_bytes, work, methods)
                rounds.append(result)
                if len(rounds) == 1:
                    print(f"echod-sniff reads a {' / '.join(sorted(methods))}")
                printRound(result)
        drain = runDrain(flooder, args.drain, work) if args.drain else None
        if drain is not None:
            line = f"drain {drain.frames:,} frames from a full ring"
            for tool, frames_, seconds, cpu, drops in (
                ("tcpdump", drain.tcpdump_frames, drain.tcpdump_seconds,
                 drain.tcpdump_cpu_seconds, drain.tcpdump_dropped),
                ("echod-sniff", drain.echod_frames, drain.echod_seconds,
                 drain.echod_cpu_seconds, drain.echod_dropped),
            ):  # fmt: skip
                line += (
                    f"  | {tool} {frames_:,} in {seconds:.2f}s"
                    f" ({frames_ / max(seconds, 1e-9):,.0f}/s,"
                    f" {frames_ / max(cpu, 1e-9):,.0f}/CPU-s) drops {drops:,}"
                )
            print(line, flush=True)
            ratio = (drain.echod_frames / max(drain.echod_cpu_seconds, 1e-9)) / (
                drain.tcpdump_frames / max(drain.tcpdump_cpu_seconds, 1e-9)
            )
            print(f"drain: echod-sniff reads {ratio:.2f}x tcpdump's frames per CPU-second")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"sniff-{time.strftime('%Y%m%dT%H%M%S')}.json"
    machine = {"cpus": os.cpu_count(), "kernel": os.uname().release}
    report = {
        "machine": machine,
        "echod_sniff": sorted(methods),
        "rounds": [asdict(r) for r in rounds],
        "drain": asdict(drain) if drain is not None else None,
    }
    out.write_text(json.dumps(report, indent=2))
    print(f"results: {out}")


if __name__ == "__main__":
    main()
