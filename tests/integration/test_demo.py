"""`sms-pipeline demo` from a fresh directory: embedded mode, no server, exit 0, a report;
its second act (a gateway stopped mid-run) loses nothing and sends nothing twice."""

from __future__ import annotations

import os
import re
import sqlite3
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
    # The gateway outage act: every message Delivered, none accepted by both simulators
    # (the demo checks each simulator's accepted uniq_keys), the switch seen three ways.
    assert re.search(
        r"gateway outage: (\d+) messages, north [1-9]\d*, south [1-9]\d*; [1-9]\d* through "
        r"north while south was stopped, [1-9]\d* on south after it returned",
        output,
    ), output
    assert (
        "accepted by both simulators: 0; sms_log.gateway not the simulator that accepted it: "
        "0; not Delivered: 0" in output
    ), output
    assert re.search(r"(?m)^    south: down, weight 1, .*up -> down: definite refusals", output)
    assert re.search(r"(?m)^    south: up, weight 1, .*probing -> up", output), output
    assert re.search(r"south\s+up → down\s+definite refusals over the threshold", output)
    assert re.search(r"Messages by gateway: .*north \d+, south \d+", output), output
    with sqlite3.connect(data / "sms_pipeline.db") as conn:
        switches = conn.execute(
            "SELECT from_state, to_state FROM gateway_events WHERE gateway = 'south' "
            "ORDER BY at, id"
        ).fetchall()
        undelivered = conn.execute(
            "SELECT count(*) FROM sms_log WHERE gateway IN ('north', 'south') "
            "AND gateway_status IS NOT 'Delivered'"
        ).fetchone()[0]
        by_gateway = dict(
            conn.execute(
                "SELECT gateway, count(*) FROM sms_log WHERE gateway IN ('north', 'south') "
                "GROUP BY gateway"
            ).fetchall()
        )
    assert switches[0] == ("up", "down") and switches[-1][1] == "up", switches
    assert undelivered == 0
    assert by_gateway["north"] > 0 and by_gateway["south"] > 0, by_gateway
    # Every child it started (simulator, worker, beat) was stopped.
    pids = re.search(r"\(pids ([\d, ]+)\)", output)
    assert pids, output
    for pid in (int(p) for p in pids.group(1).split(",")):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
