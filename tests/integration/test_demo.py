"""`sms-pipeline demo` from a fresh directory: embedded mode, no server, exit 0, a report."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.helpers import run_cli


@pytest.mark.slow
def test_demo_runs_every_message_to_its_promised_final_state_and_reports(tmp_path: Path) -> None:
    # Embedded mode: none of the test run's SMS_* / IP2SMS_* settings reach the demo.
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("SMS_", "IP2SMS_"))}
    result = run_cli(["demo", "--count", "30", "--seed", "7"], env, tmp_path, timeout=240)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert re.search(r"all \d+ messages final", output), output
    assert "SMS channel report" in output, output
    # Every scenario (each simulator fault rule, the side doors, an opt-out) ended as promised.
    from sms_pipeline.demo.scenario import ALL_SCENARIOS

    table = output[output.index("What happened to each kind of message") :]
    for scenario in ALL_SCENARIOS:
        row = re.search(rf"(?m)^ {re.escape(scenario.name.split()[0])}.*$", table)
        assert row, (scenario.name, table)
    assert not re.search(r"\bno \(\d+\)", table), table  # the "ok" column
    assert (tmp_path / ".sms_pipeline" / "demo" / "report.png").stat().st_size > 0
    # Without a terminal: progress as plain lines, saying what it waits for.
    progress = re.findall(r"(?m)^  progress  \d+/\d+ final after .*$", output)
    assert len(progress) >= 2 and progress[-1].endswith("all final"), output
    # One absolute data folder, and the exact command to look at it afterwards.
    data = tmp_path / ".sms_pipeline" / "demo"
    assert f"  data      {data}\n" in output
    assert f"look at it: SMS_DATA_DIR={data} sms-pipeline report" in output
    # Tables fit 80 columns.
    assert max(len(line) for line in output.splitlines() if "│" in line or "─" in line) <= 80
    assert (tmp_path / ".sms_pipeline" / "demo" / "sms_pipeline.db").exists()
    # Counts only: never a full phone number or a message body.
    assert not re.search(r"\+380\d{9}", output), "a full phone number was printed"
    assert "verification code is" not in output
    # Every child it started (simulator, worker, beat) was stopped.
    pids = re.search(r"\(pids ([\d, ]+)\)", output)
    assert pids, output
    for pid in (int(p) for p in pids.group(1).split(",")):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
