"""Pauses that speak (issue 27, item 4): a paused account's messages are visible as waiting
behind it in `up`'s status line, `show`, `send`, the metrics and one WARNING per pause.

The simulator's `...10` number answers `Prepaid messages limit exceed` once: the account
is paused for SMS_CREDIT_PAUSE_SECONDS and the attempt given back.
"""

from __future__ import annotations

import datetime as dt
import logging
import subprocess
import uuid
from typing import Any

import pytest
from prometheus_client import generate_latest

from sms_pipeline import enqueue_sms
from sms_pipeline.cli.up_screen import status_counts, status_line
from sms_pipeline.db import session_scope
from sms_pipeline.db.models import Account, SendStatus, SmsLog, utcnow
from sms_pipeline.metrics.collector import SmsCollector, build_registry
from sms_pipeline.services import accounts
from tests.helpers import attempt_send, run_cli

OUT_OF_CREDITS = "+380931234510"
CODE_TO = "+380931234567"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    # The test's settings (database, broker) are in os.environ: the CLI reads the same.
    return run_cli(args)


def scrape(clock: dt.datetime | None = None) -> str:
    collector = SmsCollector(clock=(lambda: clock) if clock else utcnow)
    return generate_latest(build_registry(collector)).decode()


@pytest.fixture
def paused(
    db: Any, simulator: Any, no_dispatch: list[Any], caplog: pytest.LogCaptureFixture
) -> tuple[uuid.UUID, uuid.UUID]:
    """The default account paused for credits; a code to another number waiting behind it."""
    first = enqueue_sms(OUT_OF_CREDITS, "hello")
    with caplog.at_level(logging.WARNING, logger="sms_pipeline"):
        assert attempt_send(first).outcome == "deferred"
        code = enqueue_sms(CODE_TO, "code 123456", "verification")
        assert attempt_send(code).outcome == "deferred"  # the pause holds it
    return first, code


def test_one_warning_per_pause_and_the_attempt_given_back(
    paused: tuple[uuid.UUID, uuid.UUID], caplog: pytest.LogCaptureFixture
) -> None:
    records = caplog.get_records("setup")  # the fixture paused the account
    warnings = [r.getMessage() for r in records if "paused (credits" in r.getMessage()]
    assert len(warnings) == 1, warnings
    with session_scope() as session:  # a second pause while paused only extends it
        account = session.query(Account).filter(Account.name == "default").one()
        assert account.paused_until is not None
        later = account.paused_until + dt.timedelta(minutes=1)
        assert accounts.pause_account(session, account.id, later, "gateway throttled (429)") is None
    assert "Prepaid messages limit exceed" in warnings[0] and " until " in warnings[0]
    with session_scope() as session:
        for message_id in paused:
            row = session.get_one(SmsLog, message_id)
            assert (row.send_status, row.attempts) == (SendStatus.QUEUED.value, 0)


def test_the_gauge_and_the_oldest_waiting_age_show_the_pause(
    paused: tuple[uuid.UUID, uuid.UUID],
) -> None:
    text = scrape()
    assert 'sms_account_paused{account="default",reason="credits"} 1.0' in text
    # Five minutes later the code has waited five minutes, whatever due_at the pause set.
    later = utcnow() + dt.timedelta(minutes=5)
    for line in scrape(later).splitlines():
        if line.startswith('sms_queue_oldest_age_seconds{priority="0",queue="urgent"}'):
            assert float(line.split()[-1]) >= 300.0
            break
    else:
        raise AssertionError("no oldest age for the urgent queue")


def test_up_status_line_names_the_pause(paused: tuple[uuid.UUID, uuid.UUID]) -> None:
    line = status_line(status_counts(utcnow()))
    assert line.startswith("queued 2 (paused: default, credits, until ")
    assert "2 waiting)" in line


def test_show_and_send_say_the_message_waits_behind_the_paused_account(
    paused: tuple[uuid.UUID, uuid.UUID],
) -> None:
    _, code = paused
    shown = cli("show", str(code))
    assert shown.returncode == 0, shown.stderr
    waiting = [line for line in shown.stdout.splitlines() if line.startswith("waiting")]
    assert len(waiting) == 1
    assert "behind a paused account: account default paused (credits: " in waiting[0]
    assert "Prepaid messages limit exceed) until " in waiting[0]
    sent = cli("send", "--to", CODE_TO, "--type", "2FA", "--body", "x", "--wait", "0.5")
    assert sent.returncode == 0, sent.stderr
    assert "waits behind a paused account: account default paused (credits" in sent.stderr
    assert "no worker answered" not in sent.stderr


def test_a_manual_pause_shows_and_resume_makes_the_waiting_messages_due(
    db: Any, no_dispatch: list[Any]
) -> None:
    message_id = enqueue_sms(CODE_TO, "hello")
    paused = cli("account", "pause", "default", "--until", "+10m", "--reason", "maintenance")
    assert paused.returncode == 0, paused.stderr
    assert "WARNING" in paused.stderr and "paused (manual: maintenance)" in paused.stderr
    assert 'sms_account_paused{account="default",reason="manual"} 1.0' in scrape()
    listed = cli("account", "paused")
    assert "account default paused (manual" in listed.stdout and "1 waiting" in listed.stdout
    assert attempt_send(message_id).outcome == "deferred"
    resumed = cli("account", "resume", "default")
    assert resumed.returncode == 0, resumed.stderr
    assert "sms_account_paused{" not in scrape()
    with session_scope() as session:
        account = session.query(Account).filter(Account.name == "default").one()
        assert account.paused_until is None
        assert session.get_one(SmsLog, message_id).due_at <= utcnow()
