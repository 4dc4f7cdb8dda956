"""The command line as a newcomer meets it: `up` in one shell, `send` / `show` in another.

Every command runs as a subprocess in embedded mode (none of the test run's SMS_* /
IP2SMS_* settings reach it), in a fresh folder, with nothing migrated beforehand.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from sms_pipeline.supervise import CLI
from tests.helpers import run_cli
from tests.support import free_port, wait_until

NUMBER = "+380931234567"


def embedded_env(data_dir: Path, gateway_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("SMS_", "IP2SMS_"))}
    env.update(
        {
            "SMS_DATA_DIR": str(data_dir),
            "IP2SMS_SEND_URL": f"http://127.0.0.1:{gateway_port}/ip2sms/",
            "IP2SMS_STATUS_URL": f"http://127.0.0.1:{gateway_port}/ip2sms-request/",
            "SMS_WORKER_CONCURRENCY": "4",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


class Up:
    """`sms-pipeline up` as a child; its stdout collected line by line in a thread."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.popen = subprocess.Popen(
            [*CLI, "up", "--interval=0.5", *args],
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 120.0) -> re.Match[str]:
        found: list[re.Match[str]] = []

        def shown() -> bool:
            exited = self.popen.poll() is not None
            if exited:
                self._reader.join(5)  # what it wrote before it exited
            match = re.search(pattern, self.output)
            if match:
                found.append(match)
                return True
            assert not exited, f"up exited {self.popen.returncode}:\n{self.output}"
            return False

        wait_until(shown, timeout, lambda: f"{pattern!r} from up:\n{self.output}", 0.1)
        return found[0]

    def child_pids(self) -> list[int]:
        found = re.search(r"started\s+(.*)", self.output)
        assert found, self.output
        return [int(p) for p in re.findall(r"pid (\d+)", found.group(1))]

    def interrupt(self) -> int:
        self.popen.send_signal(signal.SIGINT)
        code = self.popen.wait(60)
        self._reader.join(5)
        return code

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)


@pytest.fixture
def fresh(tmp_path: Path) -> tuple[dict[str, str], Path]:
    work = tmp_path / "work"
    work.mkdir()
    return embedded_env(tmp_path / "data", free_port()), work


def _gone(pid: int) -> bool:
    try:
        os.killpg(pid, 0)  # each child leads its own group: the group must be empty too
    except ProcessLookupError:
        return True
    return False


@pytest.mark.slow
def test_up_runs_a_sent_message_to_delivered_and_ctrl_c_stops_every_child(
    fresh: tuple[dict[str, str], Path],
) -> None:
    env, cwd = fresh
    # A new shell's PATH, as `make run`'s user has it: the venv's bin is not on it.
    venv_bin = Path(sys.executable).parent.resolve()
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if p and Path(p).resolve() != venv_bin
    )
    up = Up([], env, cwd)
    try:
        ready = up.wait_for(r"(?m)^ready: .* in this folder: (.+ send --to \S+ --body hi)$")
        # IP2SMS_SEND_URL was set: the simulator is started for it, not "no gateway".
        assert "IP2SMS_SEND_URL points at this machine and nothing answered" in up.output
        assert "simulator at http://127.0.0.1:" in up.output
        pids = up.child_pids()
        assert len(pids) == 4, up.output  # simulator, worker, callbacks worker, beat

        # The suggested command, exactly as printed, in a shell without the venv on PATH.
        sent = subprocess.run(
            shlex.split(ready.group(1)),
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert sent.returncode == 0, sent.stderr
        message_id = uuid.UUID(sent.stdout.strip())
        assert f"queued as {message_id}" in sent.stderr
        assert "Traceback" not in sent.stderr

        record: dict[str, object] = {}

        def final() -> bool:
            shown = run_cli(["show", str(message_id), "--json"], env, cwd)
            assert shown.returncode == 0, shown.stderr
            record.update(json.loads(shown.stdout))
            return bool(record["final_at"])

        wait_until(final, 60, lambda: f"the message to end: {record}", 0.5)
        assert record["gateway_status"] == "Delivered", record
        up.wait_for(r"final: Delivered 1")

        assert up.interrupt() == 0, up.output
        assert "stopped" in up.lines[-1]
        wait_until(
            lambda: all(_gone(pid) for pid in pids),
            10,
            lambda: f"the children to go: {up.output}",
            0.1,
        )
    finally:
        up.kill()


@pytest.mark.slow
def test_up_without_a_reachable_gateway_warns_with_the_url_and_the_hint(
    fresh: tuple[dict[str, str], Path],
) -> None:
    env, cwd = fresh
    env["SMS_MAX_ATTEMPTS"] = "1"
    up = Up(["--simulator=no"], env, cwd)
    try:
        up.wait_for(r"(?m)^ready\b")
        sent = run_cli(["send", "--to", NUMBER, "--body", "hi"], env, cwd)
        assert sent.returncode == 0, sent.stderr
        port = env["IP2SMS_SEND_URL"].split(":")[2].split("/")[0]
        line = up.wait_for(r"worker: .* WARNING .*gateway unreachable at (\S+):.*sms-pipeline up")
        assert line.group(1) == f"http://127.0.0.1:{port}/ip2sms/"
        up.wait_for(r"gateway errors 1 · final: RETRYCOUNT EXCEEDED 1")
        assert up.interrupt() == 0
    finally:
        up.kill()


def test_fresh_embedded_folder_needs_no_db_upgrade_and_prints_its_absolute_data_folder(
    fresh: tuple[dict[str, str], Path],
) -> None:
    env, cwd = fresh
    env["SMS_DATA_DIR"] = "relative-data"
    unknown = uuid.uuid4()
    # Commands that only read refuse to make an empty database (issue 33: a report run from
    # another folder reported on nothing); the line names the folder they looked in.
    for args in (["show", str(unknown)], ["report", "--since", "1h"]):
        refused = run_cli(args, env, cwd)
        assert refused.returncode == 2, (args, refused.stderr)
        assert f"no database in the data folder {cwd / 'relative-data'}" in refused.stderr
    for args in (["inbound", "list"], ["api-key", "list"]):
        result = run_cli(args, env, cwd)
        assert result.returncode == 0, (args, result.stderr)
        assert "Traceback" not in result.stderr
    shown = run_cli(["show", str(unknown)], env, cwd)
    assert shown.returncode == 1 and f"no message {unknown}" in shown.stderr, shown.stderr
    assert f"data folder {cwd / 'relative-data'}" in shown.stderr
    assert run_cli(["report", "--since", "1h"], env, cwd).returncode == 0
    # kombu's exchange table lives in the data folder, not in the working directory.
    sent = run_cli(["send", "--to", NUMBER, "--body", "hi", "--wait", "0"], env, cwd)
    assert sent.returncode == 0, sent.stderr
    assert not (cwd / "control").exists()
    assert list((cwd / "relative-data" / "broker" / "control").glob("*.exchange"))


def test_send_without_a_worker_says_to_start_up(fresh: tuple[dict[str, str], Path]) -> None:
    env, cwd = fresh
    sent = run_cli(["send", "--to", NUMBER], env, cwd, stdin="Your code is 123456\n")
    assert sent.returncode == 0, sent.stderr
    message_id = sent.stdout.strip()
    assert f"queued as {message_id}; no worker answered in 1 s: start `sms-pipeline up`" in (
        sent.stderr
    )
    shown = run_cli(["show", message_id, "--json", "--body"], env, cwd)
    assert json.loads(shown.stdout)["body"] == "Your code is 123456"  # stdin, newline dropped


def test_send_reads_the_body_from_a_file(fresh: tuple[dict[str, str], Path]) -> None:
    env, cwd = fresh
    (cwd / "body.txt").write_text("from a file", encoding="utf-8")
    sent = run_cli(["send", "--to", NUMBER, "--body-file", "body.txt", "--wait", "0"], env, cwd)
    assert sent.returncode == 0, sent.stderr
    shown = run_cli(["show", sent.stdout.strip(), "--json", "--body"], env, cwd)
    assert json.loads(shown.stdout)["body"] == "from a file"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--send-at", "tomorrow"], "not a time"),
        (["--send-at", "2030-01-01T08:00"], "needs a zone"),
        (["--priority", "99"], "from 0 to 9"),
        (["--priority", "-5"], "from 0 to 9"),
        (["--type", "promo"], "invalid choice"),
        (["--to", "+38012"], "phone_number"),
    ],
)
def test_bad_send_input_is_one_clear_line_and_exit_2(
    fresh: tuple[dict[str, str], Path], args: list[str], says: str
) -> None:
    env, cwd = fresh
    base = {"--to": NUMBER, "--body": "hi"}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    result = run_cli(["send", *(part for pair in base.items() for part in pair)], env, cwd)
    assert result.returncode == 2, result.stderr
    assert says in result.stderr
    assert "Traceback" not in result.stderr


def test_send_at_accepts_relative_times(fresh: tuple[dict[str, str], Path]) -> None:
    env, cwd = fresh
    sent = run_cli(["send", "--to", NUMBER, "--body", "hi", "--send-at", "+10m"], env, cwd)
    assert sent.returncode == 0, sent.stderr
    assert "waits until" in sent.stderr


def test_an_unreachable_database_is_one_line_and_debug_shows_the_traceback(
    fresh: tuple[dict[str, str], Path],
) -> None:
    env, cwd = fresh
    env["SMS_DATABASE_URL"] = f"postgresql+psycopg://postgres:secret@127.0.0.1:{free_port()}/x"
    plain = run_cli(["show", str(uuid.uuid4())], env, cwd)
    assert plain.returncode == 2
    lines = [x for x in plain.stderr.strip().splitlines() if "data folder" not in x]
    assert len(lines) == 1 and lines[0].startswith("sms-pipeline: database "), plain.stderr
    assert "secret" not in plain.stderr and "***" in plain.stderr
    debug = run_cli(["show", str(uuid.uuid4()), "--debug"], env, cwd)
    assert debug.returncode == 2 and "Traceback" in debug.stderr


def test_postgres_without_tables_names_db_upgrade(
    fresh: tuple[dict[str, str], Path],
) -> None:
    from tests.conftest import PG_PROBLEM, require
    from tests.support import PG_ADMIN_URL

    require(PG_PROBLEM)
    import psycopg

    name = f"sms_empty_{uuid.uuid4().hex[:8]}"
    admin = PG_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        env, cwd = fresh
        env["SMS_DATABASE_URL"] = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
        result = run_cli(["send", "--to", NUMBER, "--body", "hi"], env, cwd)
        assert result.returncode == 2, result.stderr
        assert "has no sms-pipeline tables: run `sms-pipeline db upgrade`" in result.stderr
        assert "Traceback" not in result.stderr
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_every_cli_option_has_help_text() -> None:
    import argparse

    from sms_pipeline.cli import build_parser

    missing = []

    def walk(parser: argparse.ArgumentParser, path: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{path} {name}")
            elif not isinstance(action, argparse._HelpAction) and not action.help:
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")

    walk(build_parser(), "sms-pipeline")
    assert missing == []
