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
