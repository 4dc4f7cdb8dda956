"""The SQL route never stops for one row: values the database holds but no time or integer
can be made of, rows the database cannot read back, an account whose poll fails, and the
embedded queue emptied again and again (ids never reused). Plain SQL, both databases.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from sms_pipeline.db import migrate
from sms_pipeline.db.engine import make_engine
from sms_pipeline.metrics import catalogue as c
from sms_pipeline.metrics.store import get_store
from sms_pipeline.services import sql_route
from tests.integration.test_sql_route_plain_sql import (  # noqa: F401  (fixtures)
    Captured,
    Plain,
    as_uuid,
    plain,
    sent,
    upgraded_sqlite_file,
)

GOOD = "+380931234567"


def _around(route: Plain, bad: dict[str, Any]) -> list[str]:
    """Good rows of three other accounts (and the bad row's own) around one bad row."""
    accounts = [route.account(name) for name in ("first", "hostile", "third", "fourth")]
    first, hostile, third, fourth = accounts
    route.queue(first, GOOD, "one", customer_id="good-1")
    route.queue(hostile, GOOD, "two", customer_id="good-2")
    route.run(
        f"INSERT INTO {{s}}sms_queue (account_id, num_to, data1, customer_id, "
        f"{', '.join(bad)}) VALUES (%s, %s, %s, %s, {', '.join(bad.values())})",
        (hostile, GOOD, "bad", "bad"),
    )
    route.queue(third, GOOD, "three", customer_id="good-3")
    route.queue(fourth, GOOD, "four", customer_id="good-4")
    return [f"good-{i}" for i in range(1, 5)]


def _all_sent(route: Plain, captured: Captured, good: list[str]) -> None:
    rows = [route.sent(customer_id) for customer_id in good]
    assert [r["status"] for r in rows] == ["QUEUED"] * len(good)
    assert sorted(captured.ids) == sorted(as_uuid(r["id"]) for r in rows)
    assert route.count("sms_queue") == 0


@pytest.mark.parametrize(
    ("plain", "bad", "word", "reason"),
    [
        ("postgresql", {"send_at": "'infinity'"}, "send_at invalid", "is infinity"),
        ("postgresql", {"send_at": "'9999-12-31 23:59:59+00'"}, "send_at invalid", "366 days"),
        ("sqlite", {"send_at": "'not-a-date'"}, "send_at invalid", "is not a time"),
        ("sqlite", {"send_at": "'9999-12-31 23:59:59'"}, "send_at invalid", "366 days"),
        ("sqlite", {"priority": "'abc'"}, "priority invalid", "an integer from 0 to 9"),
        ("sqlite", {"priority": "2.5"}, "priority invalid", "an integer from 0 to 9"),
        ("sqlite", {"flash": "'maybe'", "priority": "99"}, "priority invalid", "0 to 9"),
    ],
    indirect=["plain"],
)
def test_a_value_no_time_or_priority_can_be_made_of_is_refused_and_nobody_waits(
    plain: Plain,  # noqa: F811  (the fixture imported above)
    bad: dict[str, str],
    word: str,
    reason: str,
    sent: Captured,  # noqa: F811
) -> None:
    route = plain
    good = _around(route, bad)
    assert sql_route.poll_queues() == 5  # never raises, every row leaves the queue
    _all_sent(route, sent, good)
    ((status, last_error),) = route.run(
        "SELECT s.status, l.last_error FROM {s}sms_sent s JOIN {s}sms_log l ON l.id = s.id "
        "WHERE s.customer_id = 'bad'"
    )
    assert status == word and reason in last_error


@pytest.mark.parametrize("plain", ["sqlite"], indirect=True)  # PostgreSQL refuses such text
def test_a_row_sqlite_cannot_read_back_is_moved_aside_with_its_id_and_the_error(
    plain: Plain,  # noqa: F811
    sent: Captured,  # noqa: F811
) -> None:
    route = plain
    good = _around(route, {"data2": "CAST(x'ff00fe' AS TEXT)"})
    ((bad_id,),) = route.run("SELECT id FROM sms_queue WHERE customer_id = 'bad'")
    get_store().flush()
    before = get_store().value(
        c.INTAKE_ERRORS_TOTAL, {"door": "sql_route", "kind": "unreadable_row"}
    )
    assert sql_route.poll_queues() == 5
    _all_sent(route, sent, good)
    ((queue_id, customer_id, error),) = route.run(
        "SELECT queue_id, customer_id, error FROM sms_queue_unreadable"
    )
    assert (queue_id, customer_id) == (bad_id, "bad")
    assert "UTF-8" in error and "data2" in error and "\ufffd" not in error  # never the text
    get_store().flush()
    after = get_store().value(
        c.INTAKE_ERRORS_TOTAL, {"door": "sql_route", "kind": "unreadable_row"}
    )
    assert after == before + 1


@pytest.mark.parametrize("plain", ["sqlite"], indirect=True)
def test_the_embedded_queue_keeps_working_across_emptied_queues(
    plain: Plain,  # noqa: F811
    sent: Captured,  # noqa: F811
) -> None:
    route = plain
    account = route.account("route", process_queue_interval=0)
    seen: set[int] = set()
    for i in range(100):
        route.queue(account, GOOD, f"message {i}", customer_id=f"c-{i}")
        ((queue_id,),) = route.run("SELECT id FROM sms_queue")
        assert queue_id not in seen  # never an id handed out before
        seen.add(queue_id)
        assert sql_route.ingest_account_queue(account) == 1
        assert route.count("sms_queue") == 0
    assert route.count("sms_log") == 100 and len(sent.ids) == 100


def test_upgrade_keeps_queued_rows_and_never_reuses_a_processed_id(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate.upgrade(engine, "0005")
    engine.dispose()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("INSERT INTO accounts (name, username) VALUES ('a', 'a')")
    for n in range(3):
        conn.execute(
            "INSERT INTO sms_queue (account_id, num_to, data1) VALUES (1, ?, ?)", (GOOD, str(n))
        )
    # The top two were processed (their ids live on in sms_log.queue_id) and deleted.
    for queue_id in (2, 3):
        conn.execute(
            "INSERT INTO sms_log (id, phone_number, type, body, account_id, priority, due_at, "
            "attempts, send_status, segments, encoding, flash, status_checks, queue_id, "
            "inserted_at, updated_at) VALUES (?, ?, 'text', 'x', 1, 0, '2030-01-01 00:00:00', "
            "0, 'QUEUED', 1, 'GSM-7', 0, 0, ?, '2030-01-01 00:00:00', '2030-01-01 00:00:00')",
            (f"{queue_id:032x}", GOOD, queue_id),
        )
        conn.execute("DELETE FROM sms_queue WHERE id = ?", (queue_id,))
    conn.close()
    engine = make_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    engine.dispose()
    conn = sqlite3.connect(path, isolation_level=None)
    assert conn.execute("SELECT id, data1 FROM sms_queue").fetchall() == [(1, "0")]
    conn.execute("INSERT INTO sms_queue (account_id, num_to, data1) VALUES (1, ?, 'new')", (GOOD,))
    ((new_id,),) = conn.execute("SELECT id FROM sms_queue WHERE data1 = 'new'").fetchall()
    assert new_id == 4  # after every id ever used, not the deleted 2
    (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'sms_queue'").fetchone()
    assert "AUTOINCREMENT" in sql
    conn.close()


@pytest.mark.parametrize("plain", ["postgresql"], indirect=True)
def test_an_account_whose_poll_fails_is_counted_and_the_others_are_polled(
    plain: Plain,  # noqa: F811
    sent: Captured,  # noqa: F811
) -> None:
    route = plain
    broken, fine = route.account("broken"), route.account("fine")
    # A real failure inside the broken account's transaction: the database refuses to let
    # its rows leave the queue (an operator's trigger).
    route.run(
        "CREATE FUNCTION {s}refuse_delete() RETURNS trigger LANGUAGE plpgsql AS "
        "$$BEGIN RAISE EXCEPTION 'held by the operator'; END$$"
    )
    route.run(
        "CREATE TRIGGER refuse_delete BEFORE DELETE ON {s}sms_queue FOR EACH ROW "
        f"WHEN (OLD.account_id = {broken}) EXECUTE FUNCTION {{s}}refuse_delete()"
    )
    try:
        route.queue(broken, GOOD, "held", customer_id="held")
        route.queue(fine, GOOD, "goes", customer_id="goes")
        get_store().flush()
        labels = {"poller": "sql_route"}
        before = get_store().value(c.POLLER_FAILURES_TOTAL, labels)
        assert sql_route.poll_queues() == 1  # never raises
        _all_sent_only(route, sent, "goes")
        assert route.run("SELECT customer_id FROM {s}sms_queue") == [("held",)]
        assert route.count("sms_log") == 1  # the broken account's transaction rolled back
        get_store().flush()
        assert get_store().value(c.POLLER_FAILURES_TOTAL, labels) == before + 1
    finally:
        route.run("DROP TRIGGER refuse_delete ON {s}sms_queue")
        route.run("DROP FUNCTION {s}refuse_delete()")


def _all_sent_only(route: Plain, captured: Captured, customer_id: str) -> None:
    row = route.sent(customer_id)
    assert row["status"] == "QUEUED" and captured.ids == [as_uuid(row["id"])]
