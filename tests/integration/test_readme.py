"""The README's examples run as written: its Python blocks execute against the test database
(with the gateway simulator standing in for the gateway), and its quick start uses the
commands the CLI tests run."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path
from typing import Any

from sqlalchemy import select

from sms_pipeline.db import session_scope
from sms_pipeline.db.models import SmsLog

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.DOTALL)


def test_readme_python_blocks_run_as_written(db: Any, redis_url: str, simulator: Any) -> None:
    python = blocks("python")
    assert len(python) >= 3
    namespace: dict[str, Any] = {"__name__": "readme"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for block in python:
            exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - our README
    printed = out.getvalue()
    assert f"queued as {namespace['message_id']}" in printed
    assert "refused: phone_number" in printed
    assert re.search(r"^(Accepted|Enroute|Delivered)$", printed, flags=re.MULTILINE), printed
    with session_scope() as session:
        types = sorted(session.scalars(select(SmsLog.type)))
    assert types == ["medication_request", "verification"]


def test_readme_quick_start_is_what_make_run_and_the_cli_tests_do() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^run: .*\n\t\$\(BIN\)/sms-pipeline up\b", makefile, flags=re.MULTILINE)
    quick = README[README.index("## Quick start") : README.index("## By hand")]
    assert "make run" in quick and "make test" in quick
    # tests/integration/test_cli_up.py runs exactly these against a running `up`.
    assert "sms-pipeline send --to +380931234567 --body hi" in quick
    assert "sms-pipeline show ID" in quick


def test_readme_names_its_sources_instead_of_internal_shorthand() -> None:
    for shorthand in ("seed 1", "seed 2", "the spec", "reference implementation"):
        assert shorthand not in README.lower(), shorthand


# Shown in the README but long-running or needing other machines: where each is tested.
ELSEWHERE = {
    "sms-pipeline up": "tests/integration/test_cli_up.py runs `up` to Delivered and Ctrl-C",
}


def _shell_commands() -> list[str]:
    """Every `sms-pipeline` command line of the README's sh blocks, comments removed."""
    found = []
    for block in blocks("sh"):
        for line in block.splitlines():
            command = re.split(r"\s+#\s", line, maxsplit=1)[0].strip()
            for part in command.split(" && "):
                if "sms-pipeline" in part:
                    found.append(part.strip())
    return found


def test_every_command_of_the_readme_runs_as_written(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    commands = _shell_commands()
    assert len(commands) >= 8, commands
    # `.venv/bin/sms-pipeline` as in the quick start, and `sms-pipeline` on PATH as after
    # `. .venv/bin/activate`; a fresh folder, embedded mode, no worker (nothing is sent).
    bin_dir = Path(sys.executable).parent
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / "bin").symlink_to(bin_dir)
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("SMS_", "IP2SMS_"))}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    last_id = None
    ran = []
    for command in commands:
        if command in ELSEWHERE:
            continue
        if " ID" in command:
            assert last_id, f"{command!r} before any send"
            command = command.replace(" ID", f" {last_id}")
        result = subprocess.run(
            ["bash", "-c", command],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, (command, result.stderr)
        assert "Traceback" not in result.stderr, (command, result.stderr)
        if " send " in f" {command} ":
            last_id = result.stdout.strip().splitlines()[-1]
        ran.append(command)
    assert any(c.startswith(".venv/bin/sms-pipeline report") for c in ran)
    assert (tmp_path / ".sms_pipeline" / "report.png").exists()  # `--plot`, not the repo root
    assert sorted(p.name for p in tmp_path.iterdir()) == [".sms_pipeline", ".venv"]


def _subcommand(parser: Any, words: list[str]) -> tuple[Any, list[str]]:
    """The sub-parser the words name, and the words left after its name."""
    import argparse

    while words:
        choices = next(
            (a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)),
            None,
        )
        if not choices or words[0] not in choices:
            break
        parser, words = choices[words[0]], words[1:]
    return parser, words


def test_every_command_and_option_the_readme_names_exists() -> None:
    from sms_pipeline.cli import build_parser

    parser = build_parser()
    mentions = re.findall(r"`sms-pipeline ([^`]+)`", README) + [
        line.split("sms-pipeline ", 1)[1] for line in _shell_commands()
    ]
    assert len(mentions) > 30
    unknown = []
    for mention in mentions:
        # "db upgrade` / `downgrade" and "[--since 24h]": look at words and --options only.
        words = re.findall(r"--?[a-z][a-z-]*|[a-z][a-z-]*", mention.split("|")[0])
        found, rest = _subcommand(parser, words)
        if found is parser:
            unknown.append(mention)
            continue
        options = {o for a in found._actions for o in a.option_strings}
        unknown += [f"{mention}: {w}" for w in rest if w.startswith("-") and w not in options]
    assert unknown == []


def test_the_demo_sends_to_every_fault_rule_the_readme_lists() -> None:
    from sms_pipeline.demo.scenario import FAULT_SUFFIXES
    from sms_pipeline.simulator.rules import DEFAULT_RULES

    rules = {rule.suffix for rule in DEFAULT_RULES}
    listed = set(re.findall(r"`…(\d\d)`", README[README.index("injects faults") :][:600]))
    assert listed == rules
    assert rules <= FAULT_SUFFIXES
