"""One priority range (sms_pipeline.priorities) in Python, HTTP, the SQL route and the CLI."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import select

from sms_pipeline import InvalidMessage, enqueue_sms
from sms_pipeline.api.schemas import MessageIn
from sms_pipeline.cli.options import priority as cli_priority
from sms_pipeline.db import session_scope
from sms_pipeline.db.models import SmsLog, SmsQueue
from sms_pipeline.priorities import PRIORITY_MAX, PRIORITY_MIN
from sms_pipeline.services import sql_route
from tests.helpers import NORMAL
from tests.integration.test_send_rules import make_account

OUTSIDE = [PRIORITY_MIN - 1, PRIORITY_MAX + 1, 99, -5]


def test_the_range_is_0_to_9() -> None:
    assert (PRIORITY_MIN, PRIORITY_MAX) == (0, 9)


@pytest.mark.parametrize("value", OUTSIDE)
def test_every_entry_point_refuses_the_same_values(
    db: Any,
    no_dispatch: list[Any],
    value: int,
) -> None:
    with pytest.raises(InvalidMessage, match="from 0 to 9") as refused:
        enqueue_sms(NORMAL, "hi", priority=value)
    assert refused.value.field == "priority"
    with pytest.raises(ValidationError):
        MessageIn.model_validate({"phone_number": NORMAL, "body": "hi", "priority": value})
    import argparse

    with pytest.raises(argparse.ArgumentTypeError, match="from 0 to 9"):
        cli_priority(str(value))

    account_id = make_account(process_queue_interval=1)
    with session_scope() as session:
        session.add(SmsQueue(account_id=account_id, num_to=NORMAL, data1="hi", priority=value))
    assert sql_route.poll_queues() == 1
    with session_scope() as session:
        row = session.scalars(select(SmsLog)).one()
        # Refused and explained, never sent.
        assert (row.send_status, row.final_at is not None) == ("priority invalid", True)
        assert row.last_error is not None and "priority" in row.last_error


@pytest.mark.parametrize("value", [PRIORITY_MIN, PRIORITY_MAX])
def test_every_entry_point_accepts_the_bounds(
    db: Any,
    no_dispatch: list[Any],
    value: int,
) -> None:
    assert enqueue_sms(NORMAL, "hi", priority=value)
    assert MessageIn.model_validate({"phone_number": NORMAL, "body": "hi", "priority": value})
    assert cli_priority(str(value)) == value
