"""Child processes: the worker, beat and simulator that `sms-pipeline up` supervises.

Below the interfaces: `up`, the demo, the benchmarks and the fault tests start their
processes with it.

Each child runs in its own process group with its output in a log file, so a signal to
the group also reaches anything the child started, and Ctrl-C in the terminal reaches
only the parent, which then stops its children in order.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

# `python -m sms_pipeline.cli ...`: the same interpreter and package as the parent.
CLI: tuple[str, ...] = (sys.executable, "-m", "sms_pipeline.cli")


class ChildError(RuntimeError):
    """A child exited or did not say what was expected in time; `child` is the culprit."""

    def __init__(self, message: str, child: ChildProcess) -> None:
        super().__init__(message)
        self.child = child


class ChildProcess:
    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        log_path: Path,
        *,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.log_path = log_path
        with log_path.open("ab") as log_file:
            # The log is appended to run after run: this child's output starts here, so a
            # line an earlier run wrote ("ready", "listening on") is never taken for its own.
            self.log_start = log_file.seek(0, os.SEEK_END)
            self.popen = subprocess.Popen(
                list(argv),
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=str(cwd) if cwd else None,
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.returncode

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_text(self) -> str:
        """What this child has written to its log so far (not earlier runs' lines)."""
        try:
            with self.log_path.open("rb") as handle:
                handle.seek(self.log_start)
                return handle.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        """Wait until the log has a match for the regular expression `pattern`."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = regex.search(self.log_text())
            if match:
                return match
            if not self.alive():
                raise ChildError(f"{self.name} exited with code {self.returncode}", self)
            time.sleep(0.05)
        raise ChildError(f"{self.name}: no {pattern!r} within {timeout:.0f} s", self)

    def signal_group(self, signum: int) -> None:
        # Also when the leader is gone: a grandchild may still hold the group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)

    def kill(self) -> None:
        """kill -9 of the whole group, then reap."""
        self.signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(10)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the group (a warm shutdown), SIGKILL it if it lingers."""
        stop_all([self], timeout)

    def rss_kib(self) -> int:
        """Resident memory of the process (with a threads pool: the whole worker)."""
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process (all its threads) so far."""
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return 0.0


def stop_all(children: Sequence[ChildProcess], timeout: float = 10.0) -> None:
    """SIGTERM every child's group (last started first), wait, then SIGKILL what is left."""
    for child in reversed(children):
        if child.alive():
            child.signal_group(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for child in children:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
    for child in children:
        child.kill()
