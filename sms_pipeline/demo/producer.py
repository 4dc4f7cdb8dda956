"""The demo's producer: a child process that enqueues the run's messages.

    python -m sms_pipeline.demo.producer --tag TAG --count N [--seed S] --out FILE
    python -m sms_pipeline.demo.producer --tag TAG --steady-until STOPFILE --out FILE

The demo starts it like the worker and beat, with the demo's environment as an explicit
`env=` dict: `enqueue_sms` and the Celery app it publishes through take their settings
from the process's environment, so the messages are enqueued from a process configured
for the demo from its first line, the way an application would enqueue them. It also
writes the rows other systems write (the SQL route's queue, a verification to
replicate), records a STOP reply and texts that number (logged OPTED OUT), then the run's
record (ids and scenario names) to FILE. With --steady-until (the gateway outage act) it
enqueues a few plain messages at a time, steadily, until STOPFILE exists. It prints counts,
never a number or a body.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from sms_pipeline.demo.record import RunRecord
from sms_pipeline.demo.scenario import (
    GATEWAY_OUTAGE,
    OPTED_OUT,
    REPLICATED,
    SQL_ROUTE_BAD_NUMBER,
    SQL_ROUTE_EMPTY_TEXT,
    SQL_ROUTE_GOOD,
    PlannedMessage,
    message_body,
    phone_number,
    plan_messages,
)


def enqueue_planned(planned: Sequence[PlannedMessage], record: RunRecord) -> None:
    from sms_pipeline import InvalidMessage, enqueue_sms

    for message in planned:
        try:
            message_id = enqueue_sms(
                message.number,
                message.body,
                message.type,
                priority=message.priority,
                cost_centre=record.tag,
            )
        except InvalidMessage as exc:
            record.refused[exc.field] += 1
            continue
        assert message.scenario is not None, "an invalid number was accepted"
        record.by_id[message_id] = message.scenario


def insert_side_doors(rng: random.Random, record: RunRecord) -> None:
    """Rows other systems write: the SQL route's queue and a verification to replicate."""
    from sms_pipeline.db import session_scope
    from sms_pipeline.db.models import SmsQueue, Verification, utcnow
    from sms_pipeline.services.accounts import get_or_create_default_account

    with session_scope() as session:
        account = get_or_create_default_account(session)
        rows = [
            (SQL_ROUTE_GOOD, phone_number(rng, None), message_body(rng, "text")),
            (SQL_ROUTE_GOOD, phone_number(rng, None), message_body(rng, "medication_request")),
            (SQL_ROUTE_GOOD, phone_number(rng, None), message_body(rng, "text")),
            (SQL_ROUTE_BAD_NUMBER, "0000-garbage", message_body(rng, "text")),
            (SQL_ROUTE_EMPTY_TEXT, phone_number(rng, None), ""),
        ]
        queued = []
        for scenario, number, body in rows:
            row = SmsQueue(
                account_id=account.id,
                message_type="text",
                num_to=number,
                data1=body,
                cost_centre=record.tag,
            )
            session.add(row)
            queued.append((scenario, row))
        # The verification service's real row: an integer code that is valid 10 minutes.
        verification = Verification(
            phone_number=phone_number(rng, None),
            code=rng.randint(100000, 999999),
            check_digit=rng.randint(0, 9),
            code_expired_at=utcnow() + dt.timedelta(minutes=10),
        )
        session.add(verification)
        session.flush()
        for scenario, row in queued:
            record.by_queue_id[row.id] = scenario
        record.by_verification_id[verification.id] = REPLICATED


def opt_out_and_send(rng: random.Random, record: RunRecord) -> None:
    """A number replies STOP (as the gateway would push it), then gets a text: OPTED OUT."""
    from sms_pipeline import OptedOut, enqueue_sms, record_inbound

    number = phone_number(rng, None)
    record_inbound(number, "STOP")
    try:
        enqueue_sms(number, message_body(rng, "text"), "text", cost_centre=record.tag)
    except OptedOut as exc:
        record.by_id[exc.message_id] = OPTED_OUT
    else:
        raise AssertionError("a text to a number that sent STOP was accepted for sending")


def produce(tag: str, count: int, seed: int | None) -> RunRecord:
    """Enqueue `count` planned messages and the side-door rows; what went in."""
    rng = random.Random(seed)
    record = RunRecord(tag=tag)
    planned = plan_messages(count, rng)
    started = time.monotonic()
    enqueue_planned(planned, record)
    insert_side_doors(rng, record)
    opt_out_and_send(rng, record)
    record.enqueue_seconds = time.monotonic() - started
    return record


# The outage act's pace: enough requests for a stopped gateway to meet its threshold
# (SMS_GATEWAY_FAILURES refusals) within a couple of seconds, few enough for SQLite.
STEADY_CHUNK = 2
STEADY_PAUSE_SECONDS = 0.4
STEADY_MAX_SECONDS = 120.0


def produce_steadily(tag: str, stop_file: Path, seed: int | None) -> RunRecord:
    """Plain messages, STEADY_CHUNK every STEADY_PAUSE_SECONDS, until `stop_file` exists."""
    from sms_pipeline import enqueue_sms

    rng = random.Random(seed)
    record = RunRecord(tag=tag)
    started = time.monotonic()
    while not stop_file.exists() and time.monotonic() - started < STEADY_MAX_SECONDS:
        for _ in range(STEADY_CHUNK):
            message_type = rng.choice(("verification", "text"))
            message_id = enqueue_sms(
                phone_number(rng, None),
                message_body(rng, message_type),
                message_type,
                cost_centre=tag,
            )
            record.by_id[message_id] = GATEWAY_OUTAGE
        time.sleep(STEADY_PAUSE_SECONDS)
    record.enqueue_seconds = time.monotonic() - started
    return record


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sms_pipeline.demo.producer")
    parser.add_argument("--tag", required=True, help="the run's cost centre")
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument(
        "--steady-until", type=Path, default=None, help="enqueue steadily until this file exists"
    )
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--out", type=Path, required=True, help="where the record goes")
    args = parser.parse_args(argv)
    # "No hostname was supplied" is how kombu greets every serverless transport.
    logging.getLogger("kombu.connection").setLevel(logging.ERROR)
    if args.steady_until is not None:
        record = produce_steadily(args.tag, args.steady_until, args.seed)
    else:
        record = produce(args.tag, args.count, args.seed)
    record.save(args.out)
    print(
        f"enqueued {len(record.by_id)} messages ({sum(record.refused.values())} refused), "
        f"{len(record.by_queue_id)} SQL-route rows, {len(record.by_verification_id)} "
        f"verification in {record.enqueue_seconds:.1f} s",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
