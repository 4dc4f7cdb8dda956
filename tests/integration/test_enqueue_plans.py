"""How `enqueue_sms`'s one-statement path is planned on PostgreSQL (`db.held`).

A producer's connection keeps its prepared statements for its life. A plan chosen while
sms_log was small must not become a scan of the whole table once it has grown: the older
codes of a number are found by the number's index whatever the statistics say.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from sms_pipeline import enqueue_many, enqueue_sms
from sms_pipeline.db.held import held_rows
from sms_pipeline.settings import get_settings

CODE = "Your verification code is 482913."
SMS_LOG = "verification.sms_log"


def _autocommit(engine: Any, sql: str) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(sql))


def _code_plan() -> str:
    """The plan PostgreSQL now runs for the held connection's prepared code statement (the
    one its plan cache chose: EXPLAIN EXECUTE plans as the next call would be)."""
    settings = get_settings()
    prepared = held_rows(
        "SELECT name, cardinality(parameter_types) FROM pg_prepared_statements "
        "WHERE statement LIKE %(older)s",
        {"older": "WITH older AS%"},
        settings,
    )
    assert len(prepared) == 1, prepared
    name, parameters = prepared[0]
    rows = held_rows(f"EXPLAIN EXECUTE {name}({', '.join(['NULL'] * parameters)})", {}, settings)
    return "\n".join(line for (line,) in rows)


def test_a_code_finds_older_codes_by_the_number_index_after_the_table_outgrew_its_statistics(
    db: Any,
) -> None:
    _autocommit(db, f"ALTER TABLE {SMS_LOG} SET (autovacuum_enabled = false)")
    try:
        for i in range(60):
            enqueue_sms(f"+38067{i:07d}", "hello")
        _autocommit(db, f"ANALYZE {SMS_LOG}")  # a small table: a scan is its cheapest plan
        for i in range(12):  # prepared (after five runs) and planned on those statistics
            enqueue_sms(f"+38050{i % 3:07d}", CODE, "verification")
        enqueue_many([{"phone_number": f"+38093{i:07d}", "body": "hi"} for i in range(3_000)])
        for i in range(3):
            enqueue_sms(f"+38050{i:07d}", CODE, "verification")
        plan = _code_plan()
    finally:
        _autocommit(db, f"ALTER TABLE {SMS_LOG} RESET (autovacuum_enabled)")
    assert "Seq Scan on sms_log" not in plan, plan
    assert "ix_sms_log_phone_number" in plan, plan
