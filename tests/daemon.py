"""
A real C{twistd} running an echod command, as a user would start it.

The binary is the one installed beside the running Python, so end-to-end tests
exercise the installed package (C{pip install .}) and its plugin.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["Twistd", "twistdPath"]


def twistdPath() -> str:
    candidate = Path(sys.executable).parent / "twistd"
    return str(candidate) if candidate.exists() else "twistd"


class Twistd:
    """
    C{twistd -n --pidfile= COMMAND ARGS} in C{directory}, its output in
    C{directory/out.log}.  Use as a context manager: leaving it stops the
    process (SIGTERM, then SIGKILL after C{stopTimeout}).
    """

    def __init__(
        self,
        directory: Path,
        args: list[str],
        command: str = "echod",
        twistdArgs: list[str] | None = None,
        env: dict[str, str] | None = None,
        stopTimeout: float = 20.0,
        passFds: tuple[int, ...] = (),
        newSession: bool = False,
    ) -> None:
        self.directory = Path(directory)
        self.argv = [twistdPath(), *(twistdArgs or ["-n", "--pidfile="]), command, *args]
        self.env = {**os.environ, **(env or {})}
        self.stopTimeout = stopTimeout
        self.passFds = passFds
        # In a session (and process group) of its own, as under systemd.
        self.newSession = newSession
        self.logPath = self.directory / "out.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Twistd:
        self._log = open(self.logPath, "wb")  # noqa: SIM115 (closed by stop())
        self.process = subprocess.Popen(
            self.argv,
            cwd=self.directory,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
            pass_fds=self.passFds,
            start_new_session=self.newSession,
        )
        return self

    def __enter__(self) -> Twistd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def output(self) -> str:
        return self.logPath.read_text(errors="replace")

    def waitFor(self, pattern: str, timeout: float = 15.0) -> re.Match[str]:
        """
        Wait until the output matches C{pattern} (a regex); fail with the
        output if the process exits or time runs out first.
        """
        deadline = time.monotonic() + timeout
        compiled = re.compile(pattern)
        while time.monotonic() < deadline:
            match = compiled.search(self.output())
            if match:
                return match
            if self.process is not None and self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{pattern!r} not seen; output:\n{self.output()}")

    def listeningPorts(self, count: int = 1, timeout: float = 15.0) -> list[int]:
        """
        The ports of the first C{count} listeners, from the log lines echod
        writes once each is listening.
        """
        pattern = r"listening on \S*?:(\d+) "
        deadline = time.monotonic() + timeout
        while True:
            ports = [int(p) for p in re.findall(pattern, self.output())]
            if len(ports) >= count:
                return ports[:count]
            if time.monotonic() > deadline or (self.process and self.process.poll() is not None):
                raise AssertionError(f"{count} listeners not seen; output:\n{self.output()}")
            time.sleep(0.05)

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait(self, timeout: float = 20.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(self.stopTimeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode

    def openFiles(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def rssKiB(self) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS")
