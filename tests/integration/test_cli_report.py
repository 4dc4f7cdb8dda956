"""`report` and `show` as a user runs them (subprocess, embedded mode): no database made
where none exists, the plot kept out of the working tree, lengths said in good English."""

from __future__ import annotations

import os
from pathlib import Path

from tests.helpers import run_cli


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("SMS_", "IP2SMS_"))}
    env["SMS_DATA_DIR"] = str(data_dir)
    return env


def test_report_and_show_refuse_where_there_is_no_database(tmp_path: Path) -> None:
    env = {k: v for k, v in _env(tmp_path).items() if k != "SMS_DATA_DIR"}
    for args in (["report"], ["show", "3fa85f64-5717-4562-b3fc-2c963f66afa6"]):
        result = run_cli(args, env, tmp_path)
        assert result.returncode == 2, result.stderr
        line = result.stderr.strip().splitlines()[-1]
        assert f"no database in the data folder {tmp_path / '.sms_pipeline'}" in line, line
        assert "SMS_DATA_DIR not set" in line and "Traceback" not in result.stderr
    assert not (tmp_path / ".sms_pipeline").exists()


def test_report_plot_without_a_file_goes_to_the_data_folder_and_show_counts_one_character(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    env = _env(data)
    sent = run_cli(["send", "--to", "+380931234567", "--body", "x", "--wait", "0"], env, tmp_path)
    assert sent.returncode == 0, sent.stderr
    message_id = sent.stdout.strip()
    shown = run_cli(["show", message_id], env, tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "<1 character; --body to show>" in shown.stdout
    report = run_cli(["report", "--since", "1h", "--plot"], env, tmp_path)
    assert report.returncode == 0, report.stderr
    assert (data / "report.png").read_bytes().startswith(b"\x89PNG")
    assert f"plot written to {data / 'report.png'}" in report.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # nothing in the work folder
    helped = run_cli(["report", "--help"], env, tmp_path)
    assert "(default 24h)" in helped.stdout
