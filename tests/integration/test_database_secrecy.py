"""A failing database never shows a body or a full number: not in an exception, a log line,
a task's failure (what Celery logs and sends as a task event) or an API answer.

PostgreSQL is made to refuse every new sms_log row with a CHECK constraint: its error
DETAIL quotes the whole row ("Failing row contains (..., +380..., ..., Your code is ...)"),
the worst case of a database error carrying data.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import traceback
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text, update

from sms_pipeline.api.app import create_app
from sms_pipeline.db import session_scope
from sms_pipeline.db.models import SendStatus, SmsLog, utcnow
from sms_pipeline.services.accounts.api_keys import create_api_key
from sms_pipeline.services.intake.enqueue import enqueue_sms

NUMBER = "+380931234567"
BODY = "Your code is 987654"
SECRETS = (NUMBER, NUMBER[1:], "987654")


def leaks(text_: str) -> list[str]:
    return [s for s in SECRETS if s in text_]


@contextlib.contextmanager
def refusing_writes(db: Any) -> Iterator[Any]:
    """sms_log refuses new and changed rows for the block (NOT VALID: rows already there
    stay)."""
    with db.begin() as conn:
        conn.execute(
            text(
                "ALTER TABLE verification.sms_log "
                "ADD CONSTRAINT test_refuse_everything CHECK (false) NOT VALID"
            )
        )
    try:
        yield db
    finally:
        with db.begin() as conn:
            conn.execute(
                text("ALTER TABLE verification.sms_log DROP CONSTRAINT test_refuse_everything")
            )


@pytest.fixture
def refusing_database(db: Any) -> Iterator[Any]:
    with refusing_writes(db):
        yield db


def everything_logged(caplog: pytest.LogCaptureFixture) -> str:
    parts = []
    for record in caplog.records:
        parts.append(record.getMessage())
        if record.exc_info:
            parts.append("".join(traceback.format_exception(*record.exc_info)))
    return "\n".join(parts)


@pytest.mark.parametrize("message_type", ["verification", "text"])
def test_a_failed_insert_raised_to_enqueue_sms_caller_carries_no_number_or_body(
    refusing_database: Any, redis_url: str, caplog: pytest.LogCaptureFixture, message_type: str
) -> None:
    """Both one-statement paths (a code's pipelined transaction, a text's INSERT) run on a
    held psycopg connection: their errors are SQLAlchemy's, scrubbed like the engine's."""
    from sqlalchemy.exc import IntegrityError

    caplog.set_level(logging.DEBUG)
    with pytest.raises(IntegrityError) as caught:
        enqueue_sms(NUMBER, BODY, message_type)
    shown = "".join(traceback.format_exception(caught.value))  # with its chained causes
    assert "test_refuse_everything" in shown  # the error is still explained...
    assert leaks(shown) == []  # ...without the row
    assert leaks(repr(caught.value)) == []
    assert leaks(everything_logged(caplog)) == []


def test_the_api_answers_any_database_failure_with_a_generic_503_and_logs_its_type_only(
    refusing_database: Any, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with session_scope() as session:
        key = create_api_key(session, "secrecy")
    with TestClient(create_app(), raise_server_exceptions=False) as client:
        answer = client.post(
            "/v1/messages",
            json={"phone_number": NUMBER, "body": BODY, "type": "verification"},
            headers={"Authorization": f"Bearer {key.key}"},
        )
    assert answer.status_code == 503
    assert answer.json()["error"] == "unavailable"
    assert leaks(answer.text) == []
    logged = everything_logged(caplog)
    assert "IntegrityError" in logged
    assert leaks(logged) == []
    assert "test_refuse_everything" not in logged  # the type only


def test_a_send_task_failing_on_the_database_reports_no_number_or_body(
    db: Any, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    import sms_pipeline.tasks.send  # noqa: F401  (registers the task)
    from sms_pipeline.broker.app import SEND_DUE_TASK, app

    caplog.set_level(logging.DEBUG)
    message_id = enqueue_sms(
        NUMBER, BODY, "verification", send_at=utcnow() + dt.timedelta(days=300)
    )
    with session_scope() as session:
        session.execute(update(SmsLog).where(SmsLog.id == message_id).values(due_at=utcnow()))
    with refusing_writes(db):
        # What a worker records, logs and sends in its task-failed event: repr + traceback.
        result = app.tasks[SEND_DUE_TASK].apply(args=["urgent"])
    assert result.failed()
    assert "test_refuse_everything" in str(result.traceback)
    assert leaks(str(result.traceback)) == []
    assert leaks(repr(result.result)) == []
    assert leaks(everything_logged(caplog)) == []
    with session_scope() as session:  # the refused claim left the message waiting, not lost
        assert session.get_one(SmsLog, message_id).send_status == SendStatus.QUEUED.value
