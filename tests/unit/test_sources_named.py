"""Code and docs name the documents they follow (the eHealth SMS log, the SMSPortal SQL
service) instead of "seed 2", a name that means nothing outside the project's notes."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Not `--seed 7`: the demo's random seed is a command-line option.
SHORTHAND = re.compile(r"(?<![-\w])seed[- ]?\d\b|\bthe seed's\b", re.IGNORECASE)
# test_readme.py spells the shorthand out to forbid it in the README; so does this file.
SKIP = {Path(__file__).resolve(), ROOT / "tests" / "integration" / "test_readme.py"}


def _texts() -> list[Path]:
    files = [
        *(ROOT / "sms_pipeline").rglob("*.py"),
        *(ROOT / "tests").rglob("*.py"),
        *(ROOT / "docs").rglob("*.md"),
        ROOT / "README.md",
    ]
    return [f for f in files if f.resolve() not in SKIP]


def test_no_code_or_doc_cites_a_seed_by_number() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in _texts()
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if SHORTHAND.search(line)
    ]
    assert found == []


def test_the_check_sees_the_shorthand() -> None:
    for text in ("(seed 2's SENT)", "# Seed 2: UserID", "the seed-2 QUEUE", "seed2", "the seed's"):
        assert SHORTHAND.search(text), text
    for text in ("random seed for the message mix", "sms-pipeline demo --seed 7"):
        assert not SHORTHAND.search(text), text
