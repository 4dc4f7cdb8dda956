"""`sms-pipeline demo` from a fresh directory: embedded mode, no server, exit 0, a report."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_demo_runs_every_message_to_its_promised_final_state_and_reports(tmp_path: Path) -> None:
    # Embedded mode: none of the test run's SMS_* / IP2SMS_* settings reach the demo.
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("SMS_", "IP2SMS_"))}
    result = subprocess.run(
        [sys.executable, "-m", "sms_pipeline.cli", "demo", "--count", "30", "--seed", "7"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert re.search(r"all \d+ messages final", output), output
    assert "SMS channel report" in output, output
    assert (tmp_path / ".sms_pipeline" / "demo" / "report.png").stat().st_size > 0
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
