"""The SQL route as an outside application uses it: plain SQL on a raw connection.

Every row here is written and read through a DB-API connection (psycopg or sqlite3) with
SQL text, never the ORM, on PostgreSQL and on the embedded SQLite file. The schema comes
from the real migrations: `sms-pipeline db upgrade` (the CLI, as a subprocess) for
SQLite, `migrate.upgrade` at session start for PostgreSQL. The pipeline's own side runs
as it does in production (`poll_queues`, the send path, the status sweep).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from sms_pipeline.db.models import SendStatus, utcnow
from sms_pipeline.db.models.sent import (
    GATEWAY_STATUS_WORDS,
    SEND_STATUS_WORDS,
    SENT_COLUMNS,
)
from sms_pipeline.gateway.statuses import GatewayStatus
from sms_pipeline.services import status
from sms_pipeline.services.intake import sql_route
from tests.conftest import PG_TEST_URL
from tests.helpers import Published, attempt_send, capture_publishes
from tests.support import wait_until

NUMBER = "+380931234568"
FINAL_WORDS = {"DELIVRD", "UNDELIV", "EXPIRED", "DELETED", "UNKNOWN", "REJECTD"}


class Plain:
    """A raw DB-API connection, as an application that knows only SQL has one.

    Statements are written for PostgreSQL (`%s` placeholders, `{s}` before a table name
    for the `verification.` schema); on SQLite the schema prefix goes and `%s` becomes `?`.
    """

    def __init__(self, backend: str, conn: Any) -> None:
        self.backend = backend
        self.conn = conn
        self.prefix = "" if backend == "sqlite" else "verification."
        self.error: type[Exception] = (
            sqlite3.IntegrityError if backend == "sqlite" else psycopg.errors.CheckViolation
        )

    def run(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        sql = sql.replace("{s}", self.prefix)
        if self.backend == "sqlite":
            sql = sql.replace("%s", "?")
        cursor = self.conn.execute(sql, params)
        return list(cursor.fetchall()) if cursor.description else []

    def moment(self, when: dt.datetime) -> Any:
        """A UTC time as this application would write it (text on SQLite)."""
        if self.backend == "sqlite":
            return when.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        return when

    def read_moment(self, value: Any) -> dt.datetime:
        if isinstance(value, str):
            return dt.datetime.fromisoformat(value).replace(tzinfo=dt.UTC)
        assert isinstance(value, dt.datetime)
        return value.astimezone(dt.UTC)

    def account(self, name: str, **columns: Any) -> int:
        names = ["name", "username", *columns]
        marks = ", ".join(["%s"] * len(names))
        ((account_id,),) = self.run(
            f"INSERT INTO {{s}}accounts ({', '.join(names)}) VALUES ({marks}) RETURNING id",
            (name, "login", *columns.values()),
        )
        return int(account_id)

    def queue(self, account_id: int, num_to: str, data1: str, **columns: Any) -> None:
        names = ["account_id", "num_to", "data1", *columns]
        marks = ", ".join(["%s"] * len(names))
        self.run(
            f"INSERT INTO {{s}}sms_queue ({', '.join(names)}) VALUES ({marks})",
            (account_id, num_to, data1, *columns.values()),
        )

    def sent(self, customer_id: str) -> dict[str, Any]:
        rows = self.run(
            f"SELECT {', '.join(SENT_COLUMNS)} FROM {{s}}sms_sent WHERE customer_id = %s",
            (customer_id,),
        )
        assert len(rows) == 1, rows
        return dict(zip(SENT_COLUMNS, rows[0], strict=True))

    def count(self, table: str) -> int:
        ((n,),) = self.run(f"SELECT count(*) FROM {{s}}{table}")
        return int(n)


@pytest.fixture(scope="session")
def upgraded_sqlite_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An embedded database built once by `sms-pipeline db upgrade` (copied per test)."""
    path = tmp_path_factory.mktemp("sql-route") / "template.db"
    cli = Path(sys.executable).with_name("sms-pipeline")
    env = {**os.environ, "SMS_DATABASE_URL": f"sqlite:///{path}"}
    subprocess.run([str(cli), "db", "upgrade"], env=env, check=True, timeout=120)
    return path


@pytest.fixture(params=["postgresql", "sqlite"])
def plain(request: pytest.FixtureRequest, settings_env: Any, tmp_path: Path) -> Iterator[Plain]:
    if request.param == "postgresql":
        request.getfixturevalue("db")
        conn: Any = psycopg.connect(PG_TEST_URL.replace("+psycopg", ""), autocommit=True)
    else:
        path = tmp_path / "embedded.db"
        shutil.copy(request.getfixturevalue("upgraded_sqlite_file"), path)
        settings_env(SMS_DATABASE_URL=f"sqlite:///{path}")
        conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        yield Plain(request.param, conn)
    finally:
        conn.close()
        if request.param == "sqlite":
            from sms_pipeline.db import dispose_engines

            dispose_engines()


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> Published:
    return capture_publishes(monkeypatch)


def as_uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


# --- accounts -----------------------------------------------------------------------------


def test_two_column_account_insert_is_an_active_account_sending_around_the_clock(
    plain: Plain,
) -> None:
    # The SMSPortal SQL guide's Example 1: two rows, one username; bulk in business hours.
    urgent = plain.account("urgent")
    bulk = plain.account("bulk", send_start_hour=8, send_end_hour=17)
    rows = plain.run(
        "SELECT id, active, postpaid, credits, send_start_hour, send_end_hour, timezone, "
        "process_queue_interval, inserted_at IS NOT NULL AND updated_at IS NOT NULL "
        "FROM {s}accounts ORDER BY id"
    )
    assert [tuple(r) for r in rows] == [
        (urgent, True, False, 1_000_000, 0, 23, "UTC", 5, True),
        (bulk, True, False, 1_000_000, 8, 17, "UTC", 5, True),
    ]


@pytest.mark.parametrize(
    ("column", "value", "constraint"),
    [
        ("credits", -1, "ck_accounts_credits"),
        ("send_start_hour", 24, "ck_accounts_send_start_hour"),
        ("send_end_hour", -1, "ck_accounts_send_end_hour"),
        ("process_queue_interval", -5, "ck_accounts_intervals"),
    ],
)
def test_nonsense_account_values_are_refused_naming_the_rule(
    plain: Plain, column: str, value: int, constraint: str
) -> None:
    with pytest.raises(plain.error, match=constraint):
        plain.account("nonsense", **{column: value})
    assert plain.count("accounts") == 0


# --- the queue ----------------------------------------------------------------------------


def test_three_column_queue_row_becomes_a_message_and_leaves_the_queue(
    plain: Plain, sent: Published
) -> None:
    account = plain.account("route")
    plain.queue(account, NUMBER, "hello")
    assert sql_route.poll_queues() == 1
    assert plain.count("sms_queue") == 0  # processed rows are removed
    ((message_id, kind, num_to, data1, status_word, priority, retry_count),) = plain.run(
        "SELECT id, kind, num_to, data1, status, priority, retry_count FROM {s}sms_sent"
    )
    assert (kind, num_to, data1, status_word, priority, retry_count) == (
        "SMS",
        NUMBER,
        "hello",
        "QUEUED",
        0,
        -1,
    )
    assert sent.ids == [as_uuid(message_id)]


def test_bad_number_and_empty_text_end_in_sms_sent_under_their_customer_ids(
    plain: Plain, sent: Published
) -> None:
    account = plain.account("route")
    plain.queue(account, "not a number", "hi", customer_id="cust-1")
    plain.queue(account, NUMBER, "", customer_id="cust-2")
    plain.queue(account, NUMBER, "fine", customer_id="cust-3", cost_centre="wards")
    assert sql_route.poll_queues() == 3
    assert plain.count("sms_queue") == 0
    logged = dict(plain.run("SELECT customer_id, send_status FROM {s}sms_log"))
    assert logged == {"cust-1": "number invalid", "cust-2": "data1 invalid", "cust-3": "QUEUED"}
    assert plain.sent("cust-1")["status"] == "number invalid"
    assert plain.sent("cust-2")["status"] == "data1 invalid"
    good = plain.sent("cust-3")
    assert (good["status"], good["cost_centre"], good["num_to"]) == ("QUEUED", "wards", NUMBER)
    assert sent.ids == [as_uuid(good["id"])]


def test_send_at_in_the_future_is_not_sent_before_then(plain: Plain, sent: Published) -> None:
    account = plain.account("route")
    later = (utcnow() + dt.timedelta(hours=2)).replace(microsecond=0)
    plain.queue(
        account, NUMBER, "tomorrow's reminder", customer_id="later", send_at=plain.moment(later)
    )
    plain.queue(account, NUMBER, "now", customer_id="now")
    assert sql_route.poll_queues() == 2
    waiting, now = plain.sent("later"), plain.sent("now")
    assert waiting["status"] == "QUEUED" and waiting["submitted_at"] is None
    assert plain.read_moment(waiting["send_at"]) == later
    ((due_at,),) = plain.run("SELECT due_at FROM {s}sms_log WHERE customer_id = 'later'")
    assert plain.read_moment(due_at) == later
    assert sent.ids == [as_uuid(now["id"])]  # only the message that is due


def test_higher_priority_rows_are_taken_and_dispatched_first(plain: Plain, sent: Published) -> None:
    account = plain.account("route")
    for priority in (0, 5, 1, 9):
        plain.queue(account, NUMBER, f"p{priority}", customer_id=f"p{priority}", priority=priority)
    assert sql_route.poll_queues() == 4
    by_id = {as_uuid(i): p for i, p in plain.run("SELECT id, priority FROM {s}sms_sent")}
    assert [by_id[i] for i in sent.ids] == [9, 5, 1, 0]


def test_an_inactive_accounts_rows_stay_in_the_queue(plain: Plain, sent: Published) -> None:
    account = plain.account("route")
    plain.run("UPDATE {s}accounts SET active = false WHERE id = %s", (account,))
    plain.queue(account, NUMBER, "held", customer_id="held")
    assert sql_route.poll_queues() == 0
    assert plain.count("sms_queue") == 1 and plain.count("sms_log") == 0
    plain.run("UPDATE {s}accounts SET active = true WHERE id = %s", (account,))
    assert sql_route.poll_queues() == 1
    assert plain.count("sms_queue") == 0 and plain.sent("held")["status"] == "QUEUED"


def test_each_account_is_polled_at_its_own_process_queue_interval(
    plain: Plain, sent: Published
) -> None:
    now = utcnow()
    off = plain.account("off", process_queue_interval=0)
    recent = plain.account(
        "recent", process_queue_interval=3600, last_process_queue=plain.moment(now)
    )
    due = plain.account(
        "due",
        process_queue_interval=3600,
        last_process_queue=plain.moment(now - dt.timedelta(hours=2)),
    )
    fresh = plain.account("fresh")  # the default interval, never polled yet
    for account in (off, recent, due, fresh):
        plain.queue(account, NUMBER, "x")
    assert sql_route.poll_queues() == 2
    left = {a for (a,) in plain.run("SELECT account_id FROM {s}sms_queue")}
    assert left == {off, recent}
    # Polled just now: neither comes round again before its interval has passed.
    plain.queue(due, NUMBER, "y")
    plain.queue(fresh, NUMBER, "y")
    assert sql_route.poll_queues() == 0
    assert plain.count("sms_queue") == 4


# --- reading the outcome --------------------------------------------------------------------


def test_final_status_is_read_from_sms_sent_by_customer_id_after_a_real_send(
    plain: Plain, request: pytest.FixtureRequest, simulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    if plain.backend == "postgresql":
        request.getfixturevalue("worker")  # Redis and a real worker send it
        send_inline = None
    else:
        # Embedded, no broker here: the dispatch is kept and sent in-process below.
        send_inline = capture_publishes(monkeypatch)
    account = plain.account("route")
    plain.queue(account, NUMBER, "Your appointment is at 10:00", customer_id="order-42")
    assert sql_route.poll_queues() == 1
    if send_inline is not None:
        (message_id,) = send_inline.ids
        assert attempt_send(message_id).outcome == "submitted"

    def final() -> bool:
        if plain.sent("order-42")["status"] in FINAL_WORDS:
            return True
        ((next_check,),) = plain.run(
            "SELECT next_check_at FROM {s}sms_log WHERE customer_id = 'order-42'"
        )
        if next_check is not None:
            # The pipeline's status sweep, its clock moved to the check it planned itself.
            when = max(utcnow(), plain.read_moment(next_check))
            status.sweep_statuses(inline=True, now=when)
        return False

    wait_until(final, 30, lambda: f"a final status: {plain.sent('order-42')}", 0.1)
    row = plain.sent("order-42")
    assert row["status"] == "DELIVRD"
    assert row["submitted_at"] is not None and row["status_at"] is not None
    assert (row["num_to"], row["data1"], row["retry_count"]) == (
        NUMBER,
        "Your appointment is at 10:00",
        0,
    )
    (sent_id,) = [as_uuid(i) for (i,) in plain.run("SELECT id FROM {s}sms_log")]
    assert as_uuid(row["id"]) == sent_id


def test_every_status_reads_in_smsportal_words(plain: Plain) -> None:
    """The view's words are the mapping's, for every status pair the log can hold."""
    account = plain.account("route")
    cases: dict[str, tuple[str, str | None, str]] = {}
    for gateway_word, word in GATEWAY_STATUS_WORDS.items():
        cases[f"g-{gateway_word}"] = (SendStatus.SUBMITTED.value, gateway_word, word)
    cases["g-none"] = (SendStatus.SUBMITTED.value, None, "SUBMITTED")
    for send_status, word in SEND_STATUS_WORDS.items():
        if send_status != SendStatus.SUBMITTED.value:
            cases[f"s-{send_status}"] = (send_status, None, word)
    for customer_id, (send_status, gateway_status, _) in cases.items():
        plain.run(
            "INSERT INTO {s}sms_log (id, phone_number, type, body, account_id, send_status, "
            "gateway_status, customer_id, due_at, inserted_at, updated_at) VALUES "
            "(%s, %s, 'text', 'x', %s, %s, %s, %s, %s, %s, %s)",
            (
                uuid.uuid4().hex if plain.backend == "sqlite" else uuid.uuid4(),
                NUMBER,
                account,
                send_status,
                gateway_status,
                customer_id,
                *[plain.moment(utcnow())] * 3,
            ),
        )
    words = dict(plain.run("SELECT customer_id, status FROM {s}sms_sent"))
    assert words == {c: word for c, (_, _, word) in cases.items()}


def test_the_mapping_covers_every_status_the_pipeline_has() -> None:
    assert set(GATEWAY_STATUS_WORDS) == {s.value for s in GatewayStatus}
    assert {s.value for s in SendStatus} - {SendStatus.SUBMITTED.value} <= set(SEND_STATUS_WORDS)
    assert set(GATEWAY_STATUS_WORDS.values()) - {"SUBMITTED"} == FINAL_WORDS


def test_sms_sent_by_customer_id_uses_the_index(db: Any) -> None:
    with psycopg.connect(PG_TEST_URL.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute("SET enable_seqscan = off")
        plan = "\n".join(
            r[0]
            for r in conn.execute(
                "EXPLAIN SELECT status FROM verification.sms_sent WHERE customer_id = 'x'"
            )
        )
    assert "ix_sms_log_customer_id" in plan


# --- what the SMSPortal SQL service promises besides -------------------------------------


def test_data2_and_an_operators_own_columns_reach_sms_sent(plain: Plain, sent: Published) -> None:
    # "New columns can be added to any table for customisation ... data from the QUEUE
    # will be added to the SENT tables": an operator adds two, by SQL.
    plain.run("ALTER TABLE {s}sms_queue ADD COLUMN ward TEXT")
    plain.run("ALTER TABLE {s}sms_queue ADD COLUMN bed INTEGER")
    account = plain.account("route")
    plain.queue(account, NUMBER, "hello", customer_id="c-1", data2="ref 42", ward="B", bed=7)
    plain.queue(account, "not a number", "hi", customer_id="c-2", data2="ref 43", ward="C")
    assert sql_route.poll_queues() == 2
    good, bad = plain.sent("c-1"), plain.sent("c-2")
    assert (good["status"], good["data2"]) == ("QUEUED", "ref 42")
    assert json.loads(good["extra"]) == {"bed": "7", "ward": "B"}
    assert (bad["status"], bad["data2"], json.loads(bad["extra"])) == (
        "number invalid",
        "ref 43",
        {"ward": "C"},
    )


def test_a_postpaid_account_always_reads_a_million_credits(plain: Plain) -> None:
    account = plain.account("postpaid", postpaid=True, credits=5)
    prepaid = plain.account("prepaid", credits=5)
    plain.run("UPDATE {s}accounts SET credits = 0")
    rows = dict(plain.run("SELECT id, credits FROM {s}accounts"))
    assert rows == {account: 1_000_000, prepaid: 0}
    plain.run("UPDATE {s}accounts SET postpaid = %s WHERE id = %s", (True, prepaid))
    ((credits,),) = plain.run("SELECT credits FROM {s}accounts WHERE id = %s", (prepaid,))
    assert credits == 1_000_000
