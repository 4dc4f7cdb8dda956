"""`sms-pipeline account pause|resume|paused`: an operator's pause, and every pause shown."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from sms_pipeline.cli import options

log = logging.getLogger("sms_pipeline.accounts")


def _pause(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from sms_pipeline.db import session_scope
    from sms_pipeline.db.models import Account, utcnow
    from sms_pipeline.db.pauses import MANUAL_PREFIX
    from sms_pipeline.services.accounts import pause_account, pause_warning

    reason = MANUAL_PREFIX + (args.reason or "paused by an operator")
    with session_scope() as session:
        account_id = session.scalar(select(Account.id).where(Account.name == args.name))
        if account_id is None:
            print(f"no account {args.name}", file=sys.stderr)
            return 1
        started = pause_account(session, account_id, args.until, reason, utcnow())
    if started is not None:
        log.warning("%s", pause_warning(started, args.until, reason))
    print(f"account {args.name} paused until {args.until.isoformat()}")
    return 0


def _resume(args: argparse.Namespace) -> int:
    from sqlalchemy import update

    from sms_pipeline.broker import dispatch
    from sms_pipeline.db import affected, session_scope
    from sms_pipeline.db.models import Account, SendStatus, SmsLog, utcnow

    now = utcnow()
    with session_scope() as session:
        account_id = session.scalar(
            update(Account)
            .where(Account.name == args.name)
            .values(paused_until=None, pause_reason=None)
            .returning(Account.id)
        )
        if account_id is None:
            print(f"no account {args.name}", file=sys.stderr)
            return 1
        # Its waiting messages are due now (the pause had moved them to its end); the
        # outbox sweeper publishes them.
        waiting = affected(
            session.execute(
                update(SmsLog)
                .where(
                    SmsLog.account_id == account_id,
                    SmsLog.send_status == SendStatus.QUEUED.value,
                    SmsLog.due_at > now,
                )
                .values(due_at=now, dispatched_at=None)
            )
        )
    dispatch.kick(list(dispatch.QueueClass))
    print(f"account {args.name} resumed; {waiting} waiting messages are due now")
    return 0


def _paused(args: argparse.Namespace) -> int:
    from sms_pipeline.db import session_scope
    from sms_pipeline.db.models import utcnow
    from sms_pipeline.db.pauses import active_pauses

    with session_scope() as session:
        pauses = active_pauses(session, utcnow())
    for pause in pauses:
        print(f"{pause.describe()}; {pause.waiting} waiting")
    if not pauses:
        print("no account is paused")
    return 0


def register(subparsers: Any) -> None:
    account = subparsers.add_parser("account", help="pause, resume, and show paused accounts")
    sub = account.add_subparsers(dest="account_command", metavar="ACTION", required=True)
    pause = sub.add_parser("pause", help="stop an account sending until a time (its messages wait)")
    pause.add_argument("name", help="the account's name")
    pause.add_argument(
        "--until", required=True, type=options.parse_time, metavar="TIME", help=options.TIME_HELP
    )
    pause.add_argument("--reason", default=None, help="why (shown by up, show and send)")
    pause.set_defaults(func=_pause)
    resume = sub.add_parser("resume", help="end an account's pause now (any kind)")
    resume.add_argument("name", help="the account's name")
    resume.set_defaults(func=_resume)
    paused = sub.add_parser("paused", help="the accounts paused now, why, until when")
    paused.set_defaults(func=_paused)
