"""A bad setting or data folder is one line naming the variable, its problem and where the
value came from, exit 2, for every command (`--help` too); `--debug` adds the traceback.
The CLI runs as a subprocess, as a user runs it."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import run_cli

# (variable, value, what the line says about it)
BAD = [
    ("SMS_WORKER_CONCURRENCY", "abc", "valid integer"),
    ("SMS_MAX_ATTEMPTS", "0", "greater than or equal to 1"),
    ("SMS_DATA_DIR", "/proc/nope", "cannot create the folder"),
    ("SMS_DATA_DIR", "/etc/passwd", "not a folder"),
]


def _clean_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("SMS_", "IP2SMS_"))}
    env["SMS_DATA_DIR"] = str(tmp_path / "data")
    return env


def _commands() -> list[str]:
    from sms_pipeline.cli import build_parser

    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return sorted(action.choices)
    raise AssertionError("no sub-commands")


def _assert_one_line(result: subprocess.CompletedProcess[str], name: str, says: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("sms-pipeline: ") and name in lines[0] and says in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "bad"),
    # Each bad value once, as a subprocess (every command meets each in-process below).
    [(["--help"], BAD[0]), (["worker"], BAD[1]), (["report"], BAD[2]), (["--help"], BAD[3])],
)
def test_a_bad_setting_is_one_line_from_the_environment_and_exit_2(
    tmp_path: Path, args: list[str], bad: tuple[str, str, str]
) -> None:
    name, value, says = bad
    env = _clean_env(tmp_path)
    env[name] = value
    result = run_cli(args, env, tmp_path)
    _assert_one_line(result, name, says)
    assert "(from the environment)" in result.stderr


def test_every_command_refuses_a_bad_setting_before_it_starts(tmp_path: Path) -> None:
    # One process per command would cost seconds; the same main() in this process,
    # with a different bad value per command.
    from sms_pipeline.cli import main
    from sms_pipeline.settings import reset_settings_cache

    commands = _commands()
    assert {"worker", "beat", "api", "up", "report", "send", "flower"} <= set(commands)
    failures = []
    saved = dict(os.environ)
    try:
        for i, command in enumerate(commands):
            # An invalid setting every command must refuse (a data folder only matters to
            # the commands that keep data: gateway-sim would start and serve for ever).
            name, value, _says = BAD[i % 2]
            os.environ.clear()
            os.environ.update(_clean_env(tmp_path))
            os.environ[name] = value
            reset_settings_cache()
            try:
                code = main([command])
            except SystemExit as exc:  # argparse: the command's own required arguments
                code = int(exc.code or 0)
            if code != 2:
                failures.append((command, name, code))
    finally:
        os.environ.clear()
        os.environ.update(saved)
        reset_settings_cache()
    assert failures == []


def test_a_bad_value_in_dot_env_names_the_file(tmp_path: Path) -> None:
    env = _clean_env(tmp_path)
    (tmp_path / ".env").write_text("SMS_WORKER_CONCURRENCY=many\n", encoding="utf-8")
    result = run_cli(["beat"], env, tmp_path)
    _assert_one_line(result, "SMS_WORKER_CONCURRENCY", "valid integer")
    assert f"(from the .env file {tmp_path / '.env'})" in result.stderr


def test_debug_adds_the_traceback(tmp_path: Path) -> None:
    env = _clean_env(tmp_path)
    env["SMS_MAX_ATTEMPTS"] = "0"
    result = run_cli(["--debug", "report"], env, tmp_path)
    assert result.returncode == 2
    assert "Traceback" in result.stderr and "SettingsError" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("sms-pipeline: invalid configuration")


def test_help_with_good_settings_creates_no_data_folder(tmp_path: Path) -> None:
    env = _clean_env(tmp_path)
    env["SMS_DATA_DIR"] = str(tmp_path / "not" / "yet")
    result = run_cli(["--help"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "usage: sms-pipeline" in result.stdout
    assert not (tmp_path / "not").exists()


def test_the_celery_app_imports_with_a_bad_setting(tmp_path: Path) -> None:
    # `celery -A sms_pipeline.celery_app` and the CLI import it before any setting is read.
    env = _clean_env(tmp_path)
    env["SMS_WORKER_CONCURRENCY"] = "abc"
    code = "import sms_pipeline.celery_app as m, sms_pipeline.tasks.send; print(m.app.main)"
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "sms_pipeline"


def test_the_data_folder_a_command_creates_is_private(tmp_path: Path) -> None:
    env = _clean_env(tmp_path)
    env["SMS_DATA_DIR"] = str(tmp_path / "new" / "data")
    result = run_cli(["db", "upgrade"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "new" / "data").stat().st_mode & 0o777 == 0o700
