"""Metrics of the send path: one store call per recorded group, no account look-ups of their own,
and nothing counted for a transaction that rolls back."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest
from sqlalchemy import Engine

from sms_pipeline.metrics import catalogue as c
from sms_pipeline.metrics import hooks
from sms_pipeline.metrics.store import Increment, Observation, get_store


def _stored(name: str, labels: dict[str, str]) -> float:
    store = get_store()
    store.flush()
    return store.value(name, labels)


def test_a_send_batch_counts_each_recorded_group_in_one_store_call(
    db: Engine, simulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sms_pipeline import enqueue_sms
    from sms_pipeline.services.sending import send_batch

    ids = [enqueue_sms(f"+3809312345{n}", "hello", "text") for n in (21, 22, 23)]
    store = get_store()
    store.flush()
    calls: list[list[Increment]] = []
    add = store.add

    def counting_add(
        increments: Iterable[Increment] = (), observations: Iterable[Observation] = ()
    ) -> None:
        increments = list(increments)
        calls.append(increments)
        add(increments, observations)

    lookups: list[int] = []

    def no_lookup(account_id: int, bind: Any) -> str:
        lookups.append(account_id)
        return "looked up"

    from sms_pipeline.services.sending import record as recording
    from sms_pipeline.services.sending import window

    groups: list[int] = []
    record = recording._record

    def counting_record(writes: Any, now: Any, db: Any) -> int:
        groups.append(len(writes))
        return record(writes, now, db)

    monkeypatch.setattr(store, "add", counting_add)
    monkeypatch.setattr(hooks, "account_name", no_lookup)
    monkeypatch.setattr(window, "_record", counting_record)

    batch = send_batch(ids=ids)

    assert sorted(r.outcome for r in batch.results.values()) == ["submitted"] * 3
    with_messages = [i for i in calls if any(name == c.MESSAGES_TOTAL for name, _, _ in i)]
    # Answers are recorded in groups as they come (one statement each): one store call per
    # group, never one per message.
    assert sum(groups) == 3 and len(with_messages) == len(groups)
    statuses = [
        labels for call in with_messages for name, labels, _ in call if name == c.MESSAGES_TOTAL
    ]
    assert [(dict(s or {})["account"], dict(s or {})["status"]) for s in statuses] == [
        ("default", "submitted")
    ] * 3
    assert lookups == []  # the batch already read its accounts


def test_a_superseded_code_is_counted_only_when_the_new_one_commits(db: Engine) -> None:
    from sms_pipeline import enqueue_sms
    from sms_pipeline.db import session_scope

    superseded = {"type": "verification", "account": "default", "status": "superseded"}
    enqueue_sms("+380931234567", "Your code is 111111", "verification")
    before = _stored(c.MESSAGES_TOTAL, superseded)

    def supersede_then_fail() -> None:
        with session_scope() as session:
            enqueue_sms("+380931234567", "Your code is 222222", "verification", session=session)
            raise RuntimeError("the caller's transaction rolls back")

    with pytest.raises(RuntimeError):
        supersede_then_fail()
    assert _stored(c.MESSAGES_TOTAL, superseded) == before  # the first code still waits

    enqueue_sms("+380931234567", "Your code is 333333", "verification")
    assert _stored(c.MESSAGES_TOTAL, superseded) == before + 1
