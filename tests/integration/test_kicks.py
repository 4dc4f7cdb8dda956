"""Coalesced send kicks and enqueue_many: the broker carries one kick per queue class, not
one task per message, and no committed message is ever left without a drain to send it."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from sqlalchemy import func, select

from sms_pipeline import InvalidMessage, enqueue_many, enqueue_sms
from sms_pipeline.broker import dispatch
from sms_pipeline.broker.dispatch import QueueClass, flag_key
from sms_pipeline.db import session_scope
from sms_pipeline.db.models import OptOut, SendStatus, SmsLog
from sms_pipeline.services import outbox, sending
from tests.helpers import NORMAL


def test_producers_publish_one_kick_while_one_is_pending(db: Any, redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    for i in range(5):
        enqueue_sms(NORMAL, f"hello {i}")
    assert client.exists(flag_key(QueueClass.BULK))
    assert client.llen("bulk") == 1  # five messages, one pending kick
    enqueue_sms(NORMAL, "Your code is 1234", "verification")
    assert client.llen("urgent") == 1  # urgent has its own kick, never behind bulk


def test_drain_sends_a_row_committed_while_the_flag_was_set_and_clears_it(
    db: Any, redis_url: str, simulator: Any
) -> None:
    client = redis.Redis.from_url(redis_url)
    client.set(flag_key(QueueClass.BULK), b"1")  # a kick is pending (say, about to run)
    message_id = enqueue_sms(NORMAL, "committed while the flag was set")
    assert client.llen("bulk") == 0  # the producer relied on the pending kick
    result = sending.drain(QueueClass.BULK)
    assert result.claimed == 1
    assert not client.exists(flag_key(QueueClass.BULK))  # the next producer kicks afresh
    with session_scope() as session:
        assert session.get(SmsLog, message_id).send_status == SendStatus.SUBMITTED.value  # type: ignore[union-attr]
    client.delete("bulk")


class _FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_producer_trusts_a_flag_it_just_found_set_without_asking_redis_again(
    db: Any, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = _FakeClock()
    monkeypatch.setattr(dispatch, "_clock", clock)
    client = redis.Redis.from_url(redis_url)
    client.set(flag_key(QueueClass.BULK), b"1")  # a kick is pending
    asked: list[Any] = []
    real = dispatch._flag_client

    class Counting:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def set(self, *args: Any, **kwargs: Any) -> Any:
            asked.append(args)
            return self.inner.set(*args, **kwargs)

        def delete(self, *args: Any) -> Any:
            return self.inner.delete(*args)

    monkeypatch.setattr(dispatch, "_flag_client", lambda settings: Counting(real(settings)))
    enqueue_sms(NORMAL, "one")
    assert len(asked) == 1 and client.llen("bulk") == 0  # found set: no kick
    clock.now += dispatch.FLAG_TRUST_SECONDS / 2
    enqueue_sms(NORMAL, "two")  # within the trust: no round trip to Redis
    assert len(asked) == 1 and client.llen("bulk") == 0
    clock.now += dispatch.FLAG_TRUST_SECONDS
    client.delete(flag_key(QueueClass.BULK))  # the drain released it meanwhile
    enqueue_sms(NORMAL, "three")  # the trust ran out: asks, finds none, kicks
    assert len(asked) == 2 and client.llen("bulk") == 1
    assert client.exists(flag_key(QueueClass.BULK))
    client.delete("bulk")


def test_drain_last_claim_sees_a_row_a_trusting_producer_committed_during_the_release(
    db: Any, redis_url: str, simulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = _FakeClock()
    monkeypatch.setattr(dispatch, "_clock", clock)
    client = redis.Redis.from_url(redis_url)
    client.set(flag_key(QueueClass.BULK), b"1")
    first = enqueue_sms(NORMAL, "committed while the flag was set")
    late: list[Any] = []

    def release_wait(seconds: float) -> None:
        if seconds != dispatch.RELEASE_WAIT_SECONDS:
            return  # the linger after a part-full batch
        assert not client.exists(flag_key(QueueClass.BULK))  # deleted before the wait
        # Another producer process found the flag set just before it was deleted and
        # trusts it: it commits now and publishes no kick of its own.
        dispatch._flag_seen[QueueClass.BULK] = clock()
        late.append(enqueue_sms(NORMAL, "committed during the release wait"))

    result = sending.drain(QueueClass.BULK, sleep=release_wait)

    assert late and client.llen("bulk") == 0  # no kick was published for it
    assert result.claimed == 2  # the last claim, after the wait, took it
    with session_scope() as session:
        for message_id in (first, late[0]):
            row = session.get(SmsLog, message_id)
            assert row is not None and row.send_status == SendStatus.SUBMITTED.value


def test_enqueue_many_stores_a_batch_in_one_transaction_with_one_kick(
    db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[Any]] = []
    monkeypatch.setattr(outbox, "publish", lambda dispatches: calls.append(list(dispatches)))
    with session_scope() as session:
        session.add(OptOut(phone_number="+380931112299", source="test"))
    ids = enqueue_many(
        [
            {"phone_number": NORMAL, "body": "one"},
            {"phone_number": NORMAL, "body": "two", "priority": 5},
            {"phone_number": "+380931112299", "body": "to an opted-out number"},
            {"phone_number": "+380931112299", "body": "code 1", "type": "verification"},
        ]
    )
    with session_scope() as session:
        statuses = [session.get(SmsLog, i).send_status for i in ids]  # type: ignore[union-attr]
    assert statuses == ["QUEUED", "QUEUED", "OPTED OUT", "QUEUED"]
    assert len(calls) == 1  # one publish after the one commit
    assert sorted(d.message_id for d in calls[0]) == sorted([ids[0], ids[1], ids[3]])


def test_enqueue_many_with_one_bad_message_stores_nothing(db: Any) -> None:
    with pytest.raises(InvalidMessage) as info:
        enqueue_many(
            [{"phone_number": NORMAL, "body": "fine"}, {"phone_number": "12", "body": "x"}]
        )
    assert info.value.field == "messages[1].phone_number"
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(SmsLog)) == 0
