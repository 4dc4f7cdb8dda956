"""Data protection in embedded mode (SQLite file, no server; the CLI as a user runs it)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest

from sms_pipeline import enqueue_sms
from sms_pipeline.db import get_engine, migrate, session_scope
from sms_pipeline.services import outbox, privacy
from tests.helpers import run_cli

NUMBER = "+380931234567"


def _cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("SMS_", "IP2SMS_"))}
    env["SMS_DATA_DIR"] = str(data_dir)
    return run_cli(args, env, data_dir.parent)


@pytest.fixture
def embedded(tmp_path: Path, settings_env: Any, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This process on an embedded SQLite file with no privacy key configured."""
    data_dir = tmp_path / "data"
    monkeypatch.delenv("SMS_PRIVACY_KEY", raising=False)
    settings_env(SMS_DATA_DIR=data_dir, SMS_DATABASE_URL="")
    monkeypatch.setattr(outbox, "publish", lambda ds: len(list(ds)))
    migrate.upgrade(get_engine())
    return data_dir


def test_embedded_codes_supersede_and_erase_keeps_a_generated_key_never_printed(
    embedded: Path,
) -> None:
    first = enqueue_sms(NUMBER, "Code 111111", "2FA")
    second = enqueue_sms(NUMBER, "Code 222222", "2FA")
    database = embedded / "sms_pipeline.db"
    with sqlite3.connect(database) as conn:
        rows = dict(conn.execute("SELECT id, send_status FROM sms_log"))
        assert (
            conn.execute("SELECT count(*) FROM sms_log WHERE expires_at IS NULL").fetchone()[0] == 0
        )
    assert {str(k).replace("-", ""): v for k, v in rows.items()} == {
        first.hex: "SUPERSEDED",
        second.hex: "QUEUED",
    }
    with session_scope() as session:
        exported = privacy.export_subject(session, NUMBER, "os:test")
    assert len(exported["tables"]["sms_log"]) == 2

    erased = _cli(embedded, "erase", "--phone", NUMBER, "--yes")
    assert erased.returncode == 0, erased.stderr
    assert "sms_log            2" in erased.stdout
    listed = _cli(embedded, "audit", "list")
    assert listed.returncode == 0, listed.stderr
    assert " export " in listed.stdout and " erase " in listed.stdout

    key = (embedded / privacy.KEY_FILE).read_text().strip()
    assert len(key) >= 32
    for output in (erased, listed):
        assert key not in output.stdout + output.stderr
    with sqlite3.connect(database) as conn:
        assert conn.execute("SELECT count(*) FROM sms_log").fetchone() == (0,)
        dump = "\n".join(conn.iterdump())
    assert NUMBER[4:] not in dump  # no trace of the number in the embedded database
    assert json.dumps(exported)  # the export was JSON-ready


def test_erase_without_yes_refuses_when_nobody_can_confirm(tmp_path: Path) -> None:
    refused = _cli(tmp_path / "data", "erase", "--phone", NUMBER)
    assert refused.returncode == 2 and "--yes" in refused.stderr
