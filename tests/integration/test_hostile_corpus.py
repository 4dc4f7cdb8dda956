"""One hostile corpus through every door: the same verdict and the same reason everywhere.

The doors as their outside users reach them: Python (`enqueue_sms`), HTTP (`POST
/v1/messages`), the SQL route by plain SQL on PostgreSQL and on the embedded SQLite file
(`sms_queue`, read back from `sms_sent`), and rows in the verification service's real
table (replication). A refused Python or HTTP call stores nothing; on the SQL route the
refused row ends in `sms_sent` with its word and the good rows of three other accounts,
inserted around it, are all sent.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, insert, select

from sms_pipeline.api.app import create_app
from sms_pipeline.db import session_scope
from sms_pipeline.db.models import SmsLog, Verification, utcnow
from sms_pipeline.errors import InvalidMessage
from sms_pipeline.services import replication, sql_route
from sms_pipeline.services.api_keys import create_api_key
from sms_pipeline.services.enqueue import enqueue_sms
from tests.integration.test_sql_route_plain_sql import (  # noqa: F401  (fixtures)
    Captured,
    Plain,
    as_uuid,
    plain,
    sent,
    upgraded_sqlite_file,
)

GOOD = "+380931234567"
YEAR_9999 = dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC)
FAR = (utcnow() + dt.timedelta(days=400)).replace(microsecond=0)


@dataclass(frozen=True)
class Entry:
    name: str
    field: str  # the field at fault, as every door names it
    reason: str  # a part of the reason every door gives
    word: str  # the SQL route's status word in sms_sent
    fields: dict[str, Any]  # enqueue_sms's arguments (besides a good number and body)

    def python(self) -> dict[str, Any]:
        return {"phone_number": GOOD, "body": "hello", **self.fields}

    def json(self) -> dict[str, Any]:
        values = self.python()
        if isinstance(values.get("send_at"), dt.datetime):
            values["send_at"] = values["send_at"].isoformat()
        return values

    def queue_row(self, backend: str) -> dict[str, Any]:
        values = self.python()
        row = {"num_to": values.pop("phone_number"), "data1": values.pop("body")}
        if "send_at" in values:
            moment = values.pop("send_at")
            row["send_at"] = (
                moment.strftime("%Y-%m-%d %H:%M:%S")
                if backend == "sqlite"
                else moment.isoformat(sep=" ")
            )
        row.update(values)
        return row


CORPUS = [
    Entry("letters", "phone_number", "contains letters", "number invalid",
          {"phone_number": "+38093ABC4567"}),
    Entry("words", "phone_number", "contains letters", "number invalid",
          {"phone_number": "call me"}),
    Entry("extension", "phone_number", "has an extension", "number invalid",
          {"phone_number": "+380931234567;ext=1"}),
    Entry("x-extension", "phone_number", "has an extension", "number invalid",
          {"phone_number": "+380931234567 x99"}),
    Entry("premium", "phone_number", "starts with +1900", "number invalid",
          {"phone_number": "+19005550123"}),
    Entry("premium-intl", "phone_number", "starts with +979", "number invalid",
          {"phone_number": "+979123456789"}),
    Entry("satellite", "phone_number", "starts with +881", "number invalid",
          {"phone_number": "+881612345678"}),
    Entry("toll-free", "phone_number", "toll-free number", "number invalid",
          {"phone_number": "+18005550100"}),
    Entry("rlo", "body", "RIGHT-TO-LEFT OVERRIDE (U+202E) at position 10", "data1 invalid",
          {"body": "Your code \u202e123456"}),
    Entry("isolate", "body", "LEFT-TO-RIGHT ISOLATE (U+2066)", "data1 invalid",
          {"body": "code \u2066123"}),
    Entry("c1", "body", "C1 control U+0085 at position 2", "data1 invalid",
          {"body": "ab\x85cd"}),
    Entry("line-separator", "body", "LINE SEPARATOR (U+2028)", "data1 invalid",
          {"body": "one\u2028two"}),
    Entry("year-9999", "send_at", "is more than 366 days ahead", "send_at invalid",
          {"send_at": YEAR_9999}),
    Entry("400-days", "send_at", "is more than 366 days ahead", "send_at invalid",
          {"send_at": FAR}),
    Entry("priority-10", "priority", "an integer from 0 to 9", "priority invalid",
          {"priority": 10}),
    Entry("priority-negative", "priority", "an integer from 0 to 9", "priority invalid",
          {"priority": -1}),
    Entry("sender-rlo", "sender_id", "RIGHT-TO-LEFT OVERRIDE", "data1 invalid",
          {"sender_id": "Clinic\u202e"}),
    Entry("customer-id-c1", "customer_id", "C1 control U+009B", "data1 invalid",
          {"customer_id": "id\x9b1"}),
]  # fmt: skip
IDS = [e.name for e in CORPUS]


def log_count() -> int:
    with session_scope() as session:
        return int(session.scalar(select(func.count()).select_from(SmsLog)) or 0)


def python_reason(entry: Entry) -> str:
    with pytest.raises(InvalidMessage) as refused:
        enqueue_sms(**entry.python())
    assert refused.value.field == entry.field
    assert entry.reason in refused.value.reason
    return refused.value.reason


@pytest.fixture
def client(db: Any, redis_url: str) -> Iterator[TestClient]:
    with TestClient(create_app()) as test_client:
        yield test_client


@pytest.mark.parametrize("entry", CORPUS, ids=IDS)
def test_python_and_http_refuse_with_the_same_reason_and_store_nothing(
    client: TestClient, entry: Entry
) -> None:
    reason = python_reason(entry)
    assert log_count() == 0
    with session_scope() as session:
        key = create_api_key(session, f"corpus-{uuid.uuid4().hex[:8]}", None).key
    answer = client.post(
        "/v1/messages", json=entry.json(), headers={"Authorization": f"Bearer {key}"}
    )
    assert answer.status_code == 422, answer.text
    assert {"field": entry.field, "reason": reason} in answer.json()["errors"]
    assert log_count() == 0


@pytest.mark.parametrize("entry", CORPUS, ids=IDS)
def test_sql_route_refuses_with_the_same_reason_and_sends_everybody_else(
    plain: Plain,  # noqa: F811  (the fixture imported above)
    sent: Captured,  # noqa: F811
    entry: Entry,
) -> None:
    reason = python_reason(entry)
    accounts = [plain.account(name) for name in ("before", "hostile", "after", "last")]
    before, hostile, after, last = accounts
    plain.queue(before, GOOD, "good 1", customer_id="good-1")
    plain.queue(hostile, GOOD, "good 2", customer_id="good-2")
    row = entry.queue_row(plain.backend)
    row.setdefault("customer_id", "bad")
    plain.queue(hostile, row.pop("num_to"), row.pop("data1"), **row)
    plain.queue(hostile, GOOD, "good 3", customer_id="good-3")
    plain.queue(after, GOOD, "good 4", customer_id="good-4")
    plain.queue(last, GOOD, "good 5", customer_id="good-5")
    assert sql_route.poll_queues() == 6
    assert plain.count("sms_queue") == 0
    good = [plain.sent(f"good-{i}") for i in range(1, 6)]
    assert [g["status"] for g in good] == ["QUEUED"] * 5
    assert sorted(sent.ids) == sorted(as_uuid(g["id"]) for g in good)
    customer_id = "bad" if entry.field != "customer_id" else None
    ((word, last_error),) = plain.run(
        "SELECT s.status, l.last_error FROM {s}sms_sent s JOIN {s}sms_log l ON l.id = s.id "
        "WHERE s.status NOT IN ('QUEUED')"
    )
    assert (word, last_error) == (entry.word, f"{entry.field}: {reason}")
    if customer_id is not None:
        assert plain.sent(customer_id)["status"] == entry.word


NUMBERS = [e for e in CORPUS if e.field == "phone_number"]


@pytest.mark.parametrize("entry", NUMBERS, ids=[e.name for e in NUMBERS])
def test_replication_refuses_the_same_numbers_with_the_same_reason(
    db: Any,
    pg_engine: Any,
    sent: Captured,  # noqa: F811  (the fixture imported above)
    entry: Entry,
) -> None:
    reason = python_reason(entry)
    now = utcnow()
    verification_id = uuid.uuid4()
    with pg_engine.begin() as conn:
        conn.execute(
            insert(Verification),
            [
                {
                    "id": verification_id,
                    "phone_number": entry.fields["phone_number"],
                    "check_digit": 0,
                    "code": 123456,
                    "status": "new",
                    "active": True,
                    "attempts_count": 0,
                    "code_expired_at": now + dt.timedelta(minutes=10),
                    "inserted_at": now,
                }
            ],
        )
    assert replication.replicate_verifications().invalid == 1
    with session_scope() as session:
        (message,) = session.scalars(select(SmsLog)).all()
    assert (message.verification_id, message.send_status) == (verification_id, entry.word)
    assert message.last_error == f"{entry.field}: {reason}"
    assert sent.ids == []
