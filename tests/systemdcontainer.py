"""
A Debian 12 tree booted with a real systemd as PID 1 (C{systemd-nspawn
--boot}), for the tests that need systemd itself to start echod's units.

The tree is built once by C{.ci/systemd-tree} (C{$ECHOD_SYSTEMD_TREE}, else
C{/var/lib/echod-ci/bookworm}): C{rootfs/} is the tree, C{wheels/} holds the
wheels of echod's dependencies, C{complete} says the build finished.  Each boot
runs on a volatile overlay of it (C{--volatile=overlay}: the tree is the lower
layer, a tmpfs takes every write), so a test starts from a clean system and
the tree stays as built.  Booting on the overlay took 0.6 s here; a copy of the
440 MB tree alone took 8 s.

The container has a network of its own (C{--private-network}: only C{lo}).
The test drives it from outside: commands run in all of its namespaces through
C{nsenter} (C{systemctl}, C{journalctl}, C{pip}), and L{BootedTree.socket}
makes sockets inside its network namespace, so that clients in the test
process reach echod on the container's loopback and nowhere else.

The host has no systemd bus: C{--register=no --keep-unit} keep nspawn from
asking it for a machine or a scope (C{machinectl} and C{systemd-run -M} do
not work here either).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from tests.environment import need, requireRoot, requireTool

__all__ = ["DEFAULT_TREE", "TREE_VARIABLE", "BootedTree", "systemdTree"]

TREE_VARIABLE = "ECHOD_SYSTEMD_TREE"
DEFAULT_TREE = Path("/var/lib/echod-ci/bookworm")
# What commands run inside see: the tree's own tools, no host variables.
INSIDE_ENVIRONMENT = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "HOME": "/root",
    "SYSTEMD_PAGER": "",
    "SYSTEMD_COLORS": "0",
    "PIP_DISABLE_PIP_VERSION_CHECK": "1",
}
CLONE_NEWNET = 0x40000000


def systemdTree() -> Path:
    """
    The tree built by C{.ci/systemd-tree}; skip (fail under CI) without it.
    """
    requireRoot()
    requireTool("systemd-nspawn")
    requireTool("nsenter")
    directory = Path(os.environ.get(TREE_VARIABLE) or DEFAULT_TREE)
    need(
        (directory / "complete").is_file() and (directory / "wheels").is_dir(),
        f"no Debian tree to boot systemd in at {directory}: build it with"
        f" `sudo .ci/systemd-tree {directory}` (or set {TREE_VARIABLE})",
    )
    return directory


class BootedTree:
    """
    systemd booted in C{tree}'s root file system, in a container of its own.

    @ivar pid1: the host's pid of the container's PID 1 (systemd), once booted.
    """

    def __init__(self, tree: Path, consoleLog: Path, binds: Mapping[str, Path]) -> None:
        """
        @param consoleLog: where systemd's console output goes (for a failure's
            post-mortem; the journal inside has the rest).
        @param binds: directories of the host to show inside, read-only, by
            their path inside.
        """
        self.tree = tree
        self.consoleLog = consoleLog
        self.argv = [
            "systemd-nspawn",
            "--quiet",
            "--register=no",
            "--keep-unit",
            "--machine=echod-test",
            f"--directory={tree / 'rootfs'}",
            "--volatile=overlay",
            "--private-network",
            *(f"--bind-ro={host}:{inside}" for inside, host in binds.items()),
            "--boot",
        ]
        self.process: subprocess.Popen[bytes] | None = None
        self.pid1 = 0
        self._console: IO[bytes] | None = None

    def boot(self, timeout: float = 60) -> float:
        """
        Start the container and wait until systemd has finished booting.

        @return: how many seconds the boot took.
        """
        started = time.monotonic()
        self._console = open(self.consoleLog, "wb")  # noqa: SIM115 (closed by poweroff())
        self.process = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=self._console, stderr=subprocess.STDOUT
        )
        deadline = started + timeout
        while not self.pid1:
            self.pid1 = self._findInit()
            self._checkDeadline(deadline, "systemd-nspawn started no init")
        state = ""
        while state not in ("running", "degraded"):
            result = self.run(["systemctl", "is-system-running"], check=False, timeout=10)
            state = result.stdout.decode().strip()
            self._checkDeadline(deadline, f"the container did not finish booting ({state!r})")
        if state == "degraded":
            failed = self.run(["systemctl", "--failed", "--no-legend"]).stdout.decode()
            raise AssertionError(f"the container booted degraded: {failed}")
        return time.monotonic() - started

    def _checkDeadline(self, deadline: float, what: str) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(
                f"systemd-nspawn exited with status {self.process.returncode}:"
                f" {self.consoleLog.read_text(errors='replace')[-2000:]}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} (console: {self.consoleLog})")
        time.sleep(0.1)

    def _findInit(self) -> int:
        """
        The child of nspawn that is PID 1 of the new pid namespace.
        """
        assert self.process is not None
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
            if fields.get("PPid") == str(self.process.pid) and fields["NSpid"].split()[-1] == "1":
                return int(entry.name)
        return 0

    def poweroff(self, timeout: float = 30) -> int | None:
        """
        Shut the container down (nspawn turns SIGTERM into systemd's
        poweroff); kill it if that takes longer than C{timeout}.

        @return: nspawn's exit status, or L{None} if it had to be killed.
        """
        status: int | None = None
        if self.process is not None:
            if self.process.poll() is None:
                self.process.terminate()
            try:
                status = self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                # SIGKILL to PID 1 ends every process of its pid namespace.
                if self.pid1:
                    os.kill(self.pid1, signal.SIGKILL)
                self.process.kill()
                self.process.wait(10)
        if self._console is not None:
            self._console.close()
        return status

    def run(
        self,
        argv: Sequence[str],
        input: bytes | None = None,
        timeout: float = 60,
        check: bool = True,
    ) -> subprocess.CompletedProcess[bytes]:
        """
        Run C{argv} inside: in every namespace of the container, its root and
        working directory, as root.
        """
        assert self.pid1, "not booted"
        result = subprocess.run(
            ["nsenter", "-t", str(self.pid1), "-a", "-r", "-w", *argv],
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            env=INSIDE_ENVIRONMENT,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(argv)} exited {result.returncode} inside the container:\n"
                f"{result.stdout.decode(errors='replace')}{result.stderr.decode(errors='replace')}"
            )
        return result

    def systemctl(self, *args: str, check: bool = True, timeout: float = 60) -> str:
        return self.run(["systemctl", *args], check=check, timeout=timeout).stdout.decode()

    def show(self, unit: str, *properties: str) -> dict[str, str]:
        """
        C{systemctl show} of C{properties} of C{unit}.
        """
        out = self.systemctl("show", *(f"--property={p}" for p in properties), unit)
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def readFile(self, path: str) -> bytes:
        return self.run(["cat", path]).stdout

    def writeFile(self, path: str, data: str, mode: str = "0644") -> None:
        """
        Write C{path} inside as C{install -m MODE} would (root's, C{mode}).
        """
        self.run(["sh", "-c", f'cat > "$1" && chmod {mode} "$1"', "sh", path], data.encode())

    def cursor(self) -> str:
        """
        The journal's position now: L{journal} reads what comes after it.
        """
        self.run(["journalctl", "--sync"])
        out = self.run(["journalctl", "--quiet", "--lines=0", "--show-cursor"]).stdout.decode()
        prefix = "-- cursor: "
        (line,) = [line for line in out.splitlines() if line.startswith(prefix)]
        return line[len(prefix) :]

    def journal(self, after: str, *match: str) -> list[dict[str, str]]:
        """
        The journal's entries since the cursor C{after}, those matching
        C{match} (C{journalctl} arguments: C{-u UNIT}, C{FIELD=VALUE}), as
        dictionaries of their fields (binary fields left out).
        """
        self.run(["journalctl", "--sync"])
        out = self.run(
            ["journalctl", "--quiet", "--output=json", f"--after-cursor={after}", *match]
        ).stdout.decode()
        entries = [json.loads(line) for line in out.splitlines() if line.strip()]
        return [{k: v for k, v in e.items() if isinstance(v, str)} for e in entries]

    def messages(self, after: str, *match: str) -> list[str]:
        return [e.get("MESSAGE", "") for e in self.journal(after, *match)]

    def socket(
        self, family: socket.AddressFamily, kind: socket.SocketKind = socket.SOCK_STREAM
    ) -> socket.socket:
        """
        A socket in the container's network namespace, for use in this process.

        A socket belongs for its whole life to the namespace it was made in:
        a short-lived thread joins the container's (setns applies to the
        calling thread only) and makes it there.
        """
        made: list[socket.socket] = []
        failed: list[BaseException] = []

        def makeInside() -> None:
            libc = ctypes.CDLL(None, use_errno=True)
            try:
                fd = os.open(f"/proc/{self.pid1}/ns/net", os.O_RDONLY)
                try:
                    if libc.setns(fd, CLONE_NEWNET) != 0:
                        error = ctypes.get_errno()
                        raise OSError(error, f"setns: {os.strerror(error)}")
                finally:
                    os.close(fd)
                made.append(socket.socket(family, kind))
            except BaseException as e:
                failed.append(e)

        thread = threading.Thread(target=makeInside, name="netns")
        thread.start()
        thread.join(10)
        if failed:
            raise failed[0]
        (made_,) = made
        return made_
