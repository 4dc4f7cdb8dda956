"""Embedded files: private modes, and no redacted code or erased number left in their bytes.

Issue 32: `sms_pipeline.db` and its `-wal` were 0644 in a 0755 folder (bodies, numbers,
signing secrets readable by every local user), and a redacted code stayed in the WAL (15
copies) until a checkpoint. Here the files are read byte by byte, as another user or a
backup would read them.
"""

from __future__ import annotations

import datetime as dt
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from sms_pipeline import enqueue_sms
from sms_pipeline.db import dispose_engines, get_engine, session_scope
from sms_pipeline.db.models import SmsLog
from sms_pipeline.services import outbox, privacy

NUMBER = "+380931234567"
CODE = "918273"
CODE_TEXT = f"code: {CODE}"  # the code as the body holds it (bare digits could be a timestamp's)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def loose_umask() -> Iterator[None]:
    previous = os.umask(0o022)  # the usual default: files 0644, folders 0755
    try:
        yield
    finally:
        os.umask(previous)


@pytest.fixture
def embedded(
    tmp_path: Path, settings_env: Any, monkeypatch: pytest.MonkeyPatch, loose_umask: None
) -> Iterator[Path]:
    """This process on an embedded SQLite file in a new data folder, no privacy key set."""
    data_dir = tmp_path / "data"
    monkeypatch.delenv("SMS_PRIVACY_KEY", raising=False)
    settings_env(SMS_DATA_DIR=data_dir, SMS_DATABASE_URL="")
    monkeypatch.setattr(outbox, "publish", lambda ds: len(list(ds)))
    yield data_dir
    dispose_engines()


def _database_files(data_dir: Path) -> dict[str, bytes]:
    names = ("sms_pipeline.db", "sms_pipeline.db-wal", "sms_pipeline.db-shm")
    return {n: (data_dir / n).read_bytes() for n in names if (data_dir / n).exists()}


def _holding(data_dir: Path, needles: list[str]) -> list[tuple[str, str, int]]:
    return [
        (name, needle, raw.count(needle.encode()))
        for name, raw in _database_files(data_dir).items()
        for needle in needles
        if needle.encode() in raw
    ]


def test_the_data_folder_is_0700_and_the_database_wal_shm_and_key_0600(embedded: Path) -> None:
    enqueue_sms(NUMBER, "Your prescription is ready")
    privacy.subject_hash(NUMBER)  # generates the embedded privacy key file
    with get_engine().connect():  # a connection open: the -wal and -shm exist
        files = {p.name: _mode(p) for p in embedded.iterdir() if p.is_file()}
        assert {"sms_pipeline.db", "sms_pipeline.db-wal", "sms_pipeline.db-shm"} <= set(files)
        assert privacy.KEY_FILE in files
        assert _mode(embedded) == 0o700
        loose = {name: oct(mode) for name, mode in files.items() if mode & 0o077}
        assert loose == {}


def test_files_an_older_version_left_world_readable_are_tightened(
    tmp_path: Path, settings_env: Any, monkeypatch: pytest.MonkeyPatch, loose_umask: None
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)
    for name in ("sms_pipeline.db", "sms_pipeline.db-wal"):
        (data_dir / name).touch(mode=0o644)
    os.chmod(data_dir, 0o755)  # noqa: S103 (what an older version left)
    settings_env(SMS_DATA_DIR=data_dir, SMS_DATABASE_URL="")
    try:
        get_engine()
        assert _mode(data_dir) == 0o700
        assert _mode(data_dir / "sms_pipeline.db") == 0o600
        assert _mode(data_dir / "sms_pipeline.db-wal") == 0o600
    finally:
        dispose_engines()


def test_a_redacted_code_and_an_erased_number_leave_no_byte_in_the_files(embedded: Path) -> None:
    code_id = enqueue_sms(NUMBER, f"Your code: {CODE}", "verification")
    for n in range(20):  # churn: many page images of the code's page in the WAL
        enqueue_sms(f"+38067{n:07d}", f"Reminder {n}")
    with session_scope() as session:
        session.execute(
            update(SmsLog)
            .where(SmsLog.id == code_id)
            .values(send_status="SUBMITTED", gateway_status="Delivered", final_at=SmsLog.due_at)
        )
    assert _holding(embedded, [CODE_TEXT]), "the test must start with the code in the files"

    now = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    assert privacy.redact_final(now=now) == 1
    assert _holding(embedded, [CODE_TEXT]) == []

    enqueue_sms(NUMBER, "Your prescription is ready")
    digits = NUMBER[1:]
    assert _holding(embedded, [digits])
    with session_scope() as session:
        removed = privacy.erase_subject(session, NUMBER, "os:test")
    assert removed["sms_log"] == 2
    assert _holding(embedded, [digits, digits[-9:], CODE_TEXT]) == []
    wal = embedded / "sms_pipeline.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0  # checkpointed and truncated
