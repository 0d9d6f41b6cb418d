"""
echod-sniff against tcpdump on the same UDP flood, in the same run.

    sudo python -m bench.sniff.run [--rate 200000 --rate 300000 ...] [--seconds 5]

For each rate, a native sender (udpflood.c, compiled into bench/build/sniff/)
floods UDP on loopback at that fixed rate for a few seconds, while both
``tcpdump -w`` and ``twistd echod-sniff --format pcap`` capture it with the
same filter, snapshot length and ring size.  Reported for both: frames
written to the pcap file (counted from the file), frames per second over the
flood, the kernel's drop counter (PACKET_STATISTICS, as each tool reports
it) and the CPU time each used from the flood's start until one second
after its end.  A last round ("drain") stops both tools, fills their rings,
resumes them together and times how fast each empties its ring: the
reading speed with the sender out of the way.  Results go to stdout as a
table and to bench/results/sniff-*.json.

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


@dataclass
class Capture:
    tool: str
    frames: int
    frames_per_second: float
    kernel_dropped: int
    kernel_seen: int
    cpu_seconds: float


@dataclass
class Round:
    rate: int
    seconds: float
    sent: int
    sent_per_second: float
    tcpdump: Capture
    echod: Capture


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


def cpuSeconds(pid: int) -> float:
    """
    User plus system CPU time of a running process, from /proc.
    """
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def waitFor(path: Path, pattern: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and re.search(pattern, path.read_text(errors="replace")):
            return
        if process.poll() is not None:
            break
        time.sleep(0.05)
    sys.exit(f"run.py: {pattern!r} not seen in {path}:\n{path.read_text(errors='replace')}")


def runRound(flooder: Path, rate: int, seconds: float, bufferBytes: int, work: Path) -> Round:
    port = freeUdpPort()
    expression = f"udp dst port {port}"
    tcpdumpPcap, echodPcap = work / "tcpdump.pcap", work / "echod.pcap"
    tcpdumpLog, echodLog = work / "tcpdump.log", work / "echod.log"
    for path in (tcpdumpPcap, echodPcap, tcpdumpLog, echodLog):
        path.unlink(missing_ok=True)
    with open(tcpdumpLog, "wb") as tlog, open(echodLog, "wb") as elog:
        dump = subprocess.Popen(
            ["tcpdump", "-i", "lo", "-n", "-B", str(bufferBytes // 1024), "-w", str(tcpdumpPcap),
             expression],
            stdout=tlog, stderr=subprocess.STDOUT,
        )  # fmt: skip
        sniff = subprocess.Popen(
            [twistd(), "-n", "--pidfile=", "--logfile", str(echodLog), "echod-sniff",
             "--interface", "lo", "--filter", expression, "--format", "pcap",
             "--output", str(echodPcap), "--buffer-bytes", str(bufferBytes),
             "--stats-interval", "0"],
            stdout=elog, stderr=subprocess.STDOUT, cwd=work,
        )  # fmt: skip
        try:
            waitFor(tcpdumpLog, r"listening on", dump, 10)
            waitFor(echodLog, r"capturing on lo", sniff, 20)
            time.sleep(0.5)
            dumpStart, sniffStart = cpuSeconds(dump.pid), cpuSeconds(sniff.pid)
            flood = subprocess.run(
                [str(flooder), "127.0.0.1", str(port), str(rate), str(seconds)],
                check=True,
                capture_output=True,
                text=True,
            )
            sent = json.loads(flood.stdout)
            time.sleep(1.0)  # let both drain their rings
            dumpCpu = cpuSeconds(dump.pid) - dumpStart
            sniffCpu = cpuSeconds(sniff.pid) - sniffStart
        finally:
            dump.send_signal(signal.SIGINT)
            sniff.send_signal(signal.SIGTERM)
            dump.wait(30)
            sniff.wait(30)
    tcpdumpText = tcpdumpLog.read_text(errors="replace")
    echodText = echodLog.read_text(errors="replace")
    seen = re.search(r"(\d+) packets received by filter", tcpdumpText)
    dropped = re.search(r"(\d+) packets dropped by kernel", tcpdumpText)
    final = re.search(
        r"stopped: (\d+) packets seen, (\d+) passed to output, (\d+) dropped by the kernel",
        echodText,
    )
    if not (seen and dropped and final):
        sys.exit(f"run.py: no statistics:\n{tcpdumpText}\n{echodText}")
    duration = float(sent["seconds"])
    tcpdumpFrames, echodFrames = countPcap(tcpdumpPcap), countPcap(echodPcap)
    return Round(
        rate=rate,
        seconds=duration,
        sent=int(sent["sent"]),
        sent_per_second=float(sent["rate"]),
        tcpdump=Capture(
            "tcpdump -w",
            tcpdumpFrames,
            tcpdumpFrames / duration,
            int(dropped.group(1)),
            int(seen.group(1)),
            dumpCpu,
        ),
        echod=Capture(
            "echod-sniff",
            echodFrames,
            echodFrames / duration,
            int(final.group(3)),
            int(final.group(1)),
            sniffCpu,
        ),
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
            ["tcpdump", "-i", "lo", "-n", "-B", str(ring // 1024), "-w", str(tcpdumpPcap),
             expression],
            stdout=tlog, stderr=subprocess.STDOUT,
        )  # fmt: skip
        sniff = subprocess.Popen(
            [twistd(), "-n", "--pidfile=", "--logfile", str(echodLog), "echod-sniff",
             "--interface", "lo", "--filter", expression, "--format", "pcap",
             "--output", str(echodPcap), "--buffer-bytes", str(ring), "--stats-interval", "0"],
            stdout=elog, stderr=subprocess.STDOUT, cwd=work,
        )  # fmt: skip
        try:
            waitFor(tcpdumpLog, r"listening on", dump, 10)
            waitFor(echodLog, r"capturing on lo", sniff, 20)
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
    with tempfile.TemporaryDirectory(prefix="echod-bench-sniff-") as directory:
        work = Path(directory)
        for _ in range(args.rounds):
            for rate in rates:
                result = runRound(flooder, rate, args.seconds, args.buffer_bytes, work)
                rounds.append(result)
                print(
                    f"rate {rate:>9,}/s  sent {result.sent:>9,} ({result.sent_per_second:>9,.0f}/s)"
                    f"  | tcpdump {result.tcpdump.frames:>9,} frames"
                    f" {result.tcpdump.frames_per_second:>9,.0f}/s"
                    f" drops {result.tcpdump.kernel_dropped:>7,}"
                    f" cpu {result.tcpdump.cpu_seconds:5.2f}s"
                    f"  | echod-sniff {result.echod.frames:>9,} frames"
                    f" {result.echod.frames_per_second:>9,.0f}/s"
                    f" drops {result.echod.kernel_dropped:>7,}"
                    f" cpu {result.echod.cpu_seconds:5.2f}s",
                    flush=True,
                )
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
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"sniff-{time.strftime('%Y%m%dT%H%M%S')}.json"
    machine = {"cpus": os.cpu_count(), "kernel": os.uname().release}
    report = {
        "machine": machine,
        "rounds": [asdict(r) for r in rounds],
        "drain": asdict(drain) if drain is not None else None,
    }
    out.write_text(json.dumps(report, indent=2))
    print(f"results: {out}")


if __name__ == "__main__":
    main()
