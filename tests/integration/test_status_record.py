"""Recording a chunk of status answers: every rule holds for each row of the chunk.

PostgreSQL records the chunk in one statement, SQLite row by row; both are read back with
plain SQL. The chunk mixes every kind of answer: a forward change, a final one, the same
status, a backwards one, a failed request, a row that turned Terminated while the gateway
was being asked, a row already looked at later, a final row and an id that is gone.
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

import pytest
from sqlalchemy import DateTime, String, Uuid, bindparam, text, update

from sms_pipeline.db import get_engine, is_sqlite, session_scope
from sms_pipeline.db.models import SendStatus, SmsLog, UTCDateTime, utcnow
from sms_pipeline.gateway import GatewayError, GatewayStatus, GatewayTimeout, StatusResult
from sms_pipeline.metrics import catalogue as c
from sms_pipeline.metrics.store import get_store
from sms_pipeline.services import status
from sms_pipeline.services.accounts import get_or_create_default_account
from sms_pipeline.services.status import checks as status_checks
from tests.backends import backend  # noqa: F401  (the fixture, used by name)
from tests.helpers import AnswersAtOnce
from tests.support import wait_until

pytestmark = pytest.mark.usefixtures("backend")

S = GatewayStatus
GATEWAY_DATE = dt.datetime(2026, 5, 25, 17, 29, 56, tzinfo=dt.timezone(dt.timedelta(hours=3)))
LONG_AGO = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


class ChunkGateway(AnswersAtOnce):
    """Answers each gateway id from `answers`; `meanwhile` runs while it is being asked."""

    def __init__(self, answers: dict[str, GatewayStatus | GatewayError]) -> None:
        self.answers = answers
        self.asked: list[str] = []
        self.meanwhile: Callable[[], None] = lambda: None

    def status_many(self, gateway_ids: Sequence[str]) -> list[StatusResult | GatewayError]:
        self.asked.extend(gateway_ids)
        self.meanwhile()
        out: list[StatusResult | GatewayError] = []
        for gateway_id in gateway_ids:
            answer = self.answers[gateway_id]
            if isinstance(answer, GatewayError):
                out.append(answer)
            else:
                out.append(StatusResult(gateway_id, answer, GATEWAY_DATE, None, None, None, b""))
        return out


def insert(gateway_id: str, gateway_status: str, **values: Any) -> uuid.UUID:
    with session_scope() as session:
        account = get_or_create_default_account(session)
        columns: dict[str, Any] = {
            "phone_number": "+380931234567",
            "type": "text",
            "body": "hello",
            "account_id": account.id,
            "send_status": SendStatus.SUBMITTED.value,
            "gateway_id": gateway_id,
            "gateway_status": gateway_status,
            "status_changed_at": LONG_AGO,
            "submitted_at": LONG_AGO,
            "next_check_at": LONG_AGO + dt.timedelta(minutes=5),
            "last_checked_at": None,
            "inserted_at": LONG_AGO,
            "updated_at": LONG_AGO,
        }
        message = SmsLog(**{**columns, **values})
        session.add(message)
        session.flush()
        return message.id


def stored(message_id: uuid.UUID) -> Any:
    """The row as plain SQL reads it (SQLite's text timestamps read back as UTC)."""
    sqlite = is_sqlite(get_engine())
    table = "sms_log" if sqlite else "verification.sms_log"
    moment = UTCDateTime() if sqlite else DateTime(timezone=True)
    query = (
        text(
            "SELECT gateway_status, status_changed_at, updated_at, last_checked_at, final_at, "
            f"next_check_at FROM {table} WHERE id = :id"
        )
        .bindparams(bindparam("id", type_=Uuid()))
        .columns(
            gateway_status=String(),
            status_changed_at=moment,
            updated_at=moment,
            last_checked_at=moment,
            final_at=moment,
            next_check_at=moment,
        )
    )
    with session_scope() as session:
        return session.execute(query, {"id": message_id}).one()


def transitions(status_word: str) -> float:
    store = get_store()
    store.flush()
    return store.value(c.STATUS_TRANSITIONS_TOTAL, {"type": "text", "status": status_word})


def backwards_kept(status_word: str) -> float:
    store = get_store()
    store.flush()
    return store.value(c.STATUS_BACKWARDS_TOTAL, {"type": "text", "status": status_word})


def test_a_chunk_of_mixed_answers_is_recorded_by_the_rules_of_each_row(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    later = utcnow() + dt.timedelta(hours=1)
    ids = {
        "forward": insert("g-forward", "Accepted"),
        "final": insert("g-final", "Enroute"),
        "same": insert("g-same", "Enroute"),
        "back": insert("g-back", "Enroute"),
        "failed": insert("g-failed", "Enroute"),
        "raced": insert("g-raced", "Accepted"),
        "looked_later": insert("g-later", "Enroute", last_checked_at=later),
        "changed_after_later_look": insert("g-later-change", "Enroute", last_checked_at=later),
        "delivered": insert("g-delivered", "Delivered", final_at=LONG_AGO, next_check_at=None),
        "gone": uuid.uuid4(),
    }
    gateway = ChunkGateway({
        "g-forward": S.ENROUTE,
        "g-final": S.DELIVERED,
        "g-same": S.ENROUTE,
        "g-back": S.ACCEPTED,
        "g-failed": GatewayTimeout("read timeout"),
        "g-raced": S.DELIVERED,
        "g-later": S.ENROUTE,
        "g-later-change": S.UNDELIVERABLE,
    })  # fmt: skip

    def terminated_meanwhile() -> None:
        with session_scope() as session:
            session.execute(
                update(SmsLog)
                .where(SmsLog.id == ids["raced"])
                .values(gateway_status="Terminated", final_at=LONG_AGO, next_check_at=None)
            )

    gateway.meanwhile = terminated_meanwhile
    monkeypatch.setattr(status_checks, "get_gateway_client", lambda settings=None: gateway)
    counted = (transitions("Enroute"), transitions("Delivered"))
    backwards = backwards_kept("Enroute")

    before = utcnow()
    chunk = [*ids.values(), ids["forward"]]  # an id twice in a chunk is asked about once
    results = status.check_many(chunk)
    after = utcnow()

    o = status.CheckOutcome
    assert [(r.outcome, r.old_status, r.new_status) for r in results] == [
        (o.CHANGED, "Accepted", "Enroute"),
        (o.CHANGED, "Enroute", "Delivered"),
        (o.UNCHANGED, "Enroute", "Enroute"),
        (o.BACKWARDS, "Enroute", "Accepted"),
        (o.GATEWAY_ERROR, "Enroute", None),
        (o.LOST_RACE, "Accepted", "Delivered"),
        (o.UNCHANGED, "Enroute", "Enroute"),
        (o.CHANGED, "Enroute", "Undeliverable"),
        (o.NOT_MOVING, "Delivered", None),
        (o.MISSING, None, None),
        (o.CHANGED, "Accepted", "Enroute"),
    ]
    assert sorted(gateway.asked) == sorted(
        [
            "g-forward",
            "g-final",
            "g-same",
            "g-back",
            "g-failed",
            "g-raced",
            "g-later",
            "g-later-change",
        ]
    )
    rows = {name: stored(message_id) for name, message_id in ids.items() if name != "gone"}
    asked_at = rows["forward"].last_checked_at
    assert before <= asked_at <= after
    untouched_next = LONG_AGO + dt.timedelta(minutes=5)

    # A forward change: written with the gateway's date (in UTC), still moving.
    assert tuple(rows["forward"]) == (
        "Enroute", GATEWAY_DATE, asked_at, asked_at, None, untouched_next
    )  # fmt: skip
    # A final one: final_at is the check, no next check.
    assert tuple(rows["final"]) == ("Delivered", GATEWAY_DATE, asked_at, asked_at, asked_at, None)
    # The same status and a backwards one: only when we asked; updated_at kept.
    for name in ("same", "back"):
        assert tuple(rows[name]) == (
            "Enroute", LONG_AGO, LONG_AGO, asked_at, None, untouched_next
        )  # fmt: skip
    # A failed request writes nothing (the lease already scheduled the next look).
    assert tuple(rows["failed"]) == ("Enroute", LONG_AGO, LONG_AGO, None, None, untouched_next)
    # Terminated while asking: the final status is never overwritten.
    assert tuple(rows["raced"]) == ("Terminated", LONG_AGO, rows["raced"].updated_at, None,
                                    LONG_AGO, None)  # fmt: skip
    # last_checked_at never moves backwards, not even with a change.
    assert rows["looked_later"].last_checked_at == later
    assert rows["looked_later"].updated_at == LONG_AGO
    assert tuple(rows["changed_after_later_look"]) == (
        "Undeliverable", GATEWAY_DATE, asked_at, later, asked_at, None
    )  # fmt: skip
    # A final row is not asked about and not touched.
    assert tuple(rows["delivered"]) == ("Delivered", LONG_AGO, LONG_AGO, None, LONG_AGO, None)
    # Each change that landed is counted once; the lost race is not.
    assert (transitions("Enroute"), transitions("Delivered")) == (counted[0] + 1, counted[1] + 1)
    # The backwards answer is ignored and counted.
    assert backwards_kept("Enroute") == backwards + 1


class ErrorGateway(ChunkGateway):
    """Answers with a `<state error="...">` where `errors` has one."""

    def __init__(self, answers: dict[str, GatewayStatus], errors: dict[str, str]) -> None:
        super().__init__(dict(answers))
        self.statuses = answers
        self.errors = errors

    def status_many(self, gateway_ids: Sequence[str]) -> list[StatusResult | GatewayError]:
        return [
            StatusResult(g, self.statuses[g], GATEWAY_DATE, None, self.errors.get(g), None, b"")
            for g in gateway_ids
        ]


def test_a_status_answers_state_error_is_stored_like_a_send_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    undeliverable = insert("g-absent", "Enroute")
    delivered = insert("g-fine", "Enroute", last_error="an earlier note")
    gateway = ErrorGateway(
        {"g-absent": S.UNDELIVERABLE, "g-fine": S.DELIVERED}, {"g-absent": "Absent subscriber"}
    )
    monkeypatch.setattr(status_checks, "get_gateway_client", lambda settings=None: gateway)
    status.check_many([undeliverable, delivered])
    with session_scope() as session:
        errors = {
            m.id: m.last_error
            for m in session.query(SmsLog).filter(SmsLog.id.in_([undeliverable, delivered]))
        }
    assert errors == {
        undeliverable: "Undeliverable: Absent subscriber",
        delivered: "an earlier note",  # an answer without an error keeps what was there
    }


class OneHeld(ChunkGateway):
    """Answers every id at once but `held`, whose answer comes only when the test gives it."""

    def __init__(self, answers: dict[str, GatewayStatus | GatewayError], held: str) -> None:
        super().__init__(answers)
        self.held = held
        self.pending: Future[Any] = Future()

    def start_status(self, gateway_ids: Any) -> list[Future[Any]]:
        quick = super().start_status([i for i in gateway_ids if i != self.held])
        return [self.pending if i == self.held else quick.pop(0) for i in gateway_ids]


def test_a_hung_status_request_holds_back_only_its_own_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ids = {g: insert(g, "Accepted") for g in ("g-held", "g-one", "g-two")}
    gateway = OneHeld({"g-one": S.DELIVERED, "g-two": S.ENROUTE}, held="g-held")
    monkeypatch.setattr(status_checks, "get_gateway_client", lambda settings=None: gateway)

    results: list[Any] = []
    worker = threading.Thread(target=lambda: results.extend(status.check_many(list(ids.values()))))
    worker.start()
    try:
        # The chunk's other answers are recorded while the held request is still out.
        wait_until(
            lambda: (
                (stored(ids["g-one"]).gateway_status, stored(ids["g-two"]).gateway_status)
                == ("Delivered", "Enroute")
            ),
            30,
            "the answers that came",
        )
        assert worker.is_alive() and not results
        assert stored(ids["g-held"]).gateway_status == "Accepted"
    finally:
        gateway.pending.set_result(
            StatusResult("g-held", S.DELIVERED, GATEWAY_DATE, None, None, None, b"")
        )
        worker.join(30)
    assert stored(ids["g-held"]).gateway_status == "Delivered"
    assert [r.new_status for r in results] == ["Delivered"] * 2 + ["Enroute"]


class Trickle(ChunkGateway):
    """Answers one id every `gap` seconds, from a thread of its own (as many chunks sharing
    the connections do)."""

    def __init__(self, answers: dict[str, GatewayStatus | GatewayError], gap: float) -> None:
        super().__init__(answers)
        self.gap = gap

    def start_status(self, gateway_ids: Any) -> list[Future[Any]]:
        futures: list[Future[Any]] = [Future() for _ in gateway_ids]
        answers = self.status_many(gateway_ids)

        def answer_one_by_one() -> None:
            for future, answer in zip(futures, answers, strict=True):
                threading.Event().wait(self.gap)
                future.set_result(answer)

        threading.Thread(target=answer_one_by_one, daemon=True).start()
        return futures


def test_answers_that_keep_coming_are_recorded_together(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A statement per answer or two cost more than the checks themselves: a group is
    # recorded once the chunk is answered, or when answers stop coming (not per arrival).
    ids = [insert(f"g-{n}", "Accepted") for n in range(12)]
    gateway = Trickle({f"g-{n}": S.DELIVERED for n in range(12)}, gap=0.005)
    monkeypatch.setattr(status_checks, "get_gateway_client", lambda settings=None: gateway)
    # Gaps far below the idle time and a group time far above the whole chunk's: whatever
    # the machine's pace, the answers form one group.
    monkeypatch.setattr(status_checks, "GROUP_IDLE_SECONDS", 0.5)
    monkeypatch.setattr(status_checks, "GROUP_MAX_SECONDS", 30.0)
    groups: list[int] = []
    from sms_pipeline.services.status.record import record_answers as record

    def counted(conn: Any, answers: Any, asked_at: Any) -> Any:
        groups.append(len(answers))
        return record(conn, answers, asked_at)

    monkeypatch.setattr(status_checks, "record_answers", counted)
    results = status.check_many(ids)
    assert [r.new_status for r in results] == ["Delivered"] * 12
    assert groups == [12]
