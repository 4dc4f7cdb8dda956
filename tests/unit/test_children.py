"""Child processes share a log file run after run: each reads only what it wrote itself.

`sms-pipeline up` (and the benchmarks) wait for a child's "ready" or "listening on" line
in a log that earlier runs appended to. Reading the whole file took an earlier run's line
for the new child's: `up` said ready before the worker was, and the urgent benchmark
measured the worker's start-up as urgent latency.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from sms_pipeline.cli.up_screen import LogEcho
from sms_pipeline.supervise import ChildError, ChildProcess


def _child(name: str, code: str, log: Path) -> ChildProcess:
    return ChildProcess(name, [sys.executable, "-c", code], {}, log)


def test_a_child_does_not_see_the_ready_line_of_an_earlier_run(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    first = _child("worker", "print('worker ready.', flush=True)", log)
    first.wait_for_log(r"ready\.", timeout=30)
    first.popen.wait(30)

    second = _child("worker", "import time; time.sleep(30)", log)
    try:
        with pytest.raises(ChildError, match="no 'ready"):
            second.wait_for_log(r"ready\.", timeout=0.5)
        assert second.log_text() == ""
    finally:
        second.kill()
    assert "worker ready." in log.read_text()  # the earlier run's lines are kept


def test_a_child_reads_its_own_lines_after_an_earlier_runs(tmp_path: Path) -> None:
    log = tmp_path / "sim.log"
    _child("sim", "print('listening on http://127.0.0.1:1111', flush=True)", log).popen.wait(30)

    second = _child("sim", "print('listening on http://127.0.0.1:2222', flush=True)", log)
    found = second.wait_for_log(r"listening on (http://\S+)", timeout=30)

    assert found.group(1) == "http://127.0.0.1:2222"


def test_log_echo_repeats_only_this_runs_warnings(tmp_path: Path) -> None:
    log = tmp_path / "beat.log"
    _child("beat", "print('x WARNING old run', flush=True)", log).popen.wait(30)

    current = _child("beat", "print('x WARNING this run', flush=True)", log)
    current.popen.wait(30)

    assert LogEcho([current]).lines() == ["beat: x WARNING this run"]
