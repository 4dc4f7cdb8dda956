"""`sms-pipeline send` and `sms-pipeline show ID`."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
import uuid
from typing import Any

from sms_pipeline.cli import options
from sms_pipeline.db.models import MESSAGE_TYPES
from sms_pipeline.services.masking import mask_phone


def read_body(args: argparse.Namespace) -> str | None:
    """The text from --body, --body-file (`-` = stdin), or stdin when it is not a terminal."""
    if args.body is not None:
        return str(args.body)
    if args.body_file is not None:
        if args.body_file == "-":
            text = sys.stdin.read()
        else:
            with open(args.body_file, encoding="utf-8") as handle:
                text = handle.read()
    elif not sys.stdin.isatty():
        text = sys.stdin.read()
    else:
        return None
    # `echo text | sms-pipeline send` ends with a newline nobody meant to send.
    return text[:-1] if text.endswith("\n") else text


def what_next(message_id: uuid.UUID, wait: float, send_at: dt.datetime | None) -> str:
    """Watch the row for `wait` seconds and say what happens to the message next."""
    from sms_pipeline import hints
    from sms_pipeline.db import session_scope
    from sms_pipeline.db.models import SmsLog, utcnow

    follow = f"follow it: sms-pipeline show {message_id}"
    if send_at is not None and send_at > utcnow():
        return f"queued as {message_id}; waits until {send_at.isoformat()} (--send-at); {follow}"
    deadline = time.monotonic() + wait
    while True:
        with session_scope() as session:
            row = session.get(SmsLog, message_id)
            state = (row.send_status, row.attempts) if row is not None else ("QUEUED", 0)
            waiting = _waiting_reason(session, row)
        if state != ("QUEUED", 0):
            return f"queued as {message_id}; a worker took it ({state[0]}); {follow}"
        if waiting is not None:
            # Not the worker's fault: say what it waits for.
            return f"queued as {message_id}; it waits behind {waiting}; {follow}"
        if time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    if wait <= 0:
        return f"queued as {message_id}; {follow}"
    return hints.no_worker(message_id, wait)


def _waiting_reason(session: Any, row: Any) -> str | None:
    """Why a QUEUED message waits when it is not for a worker: its account is paused, or a
    worker already deferred it (send window, daily cap...) to a later time."""
    from sms_pipeline.db.models import SendStatus, utcnow
    from sms_pipeline.db.pauses import active_pauses

    if row is None or row.send_status != SendStatus.QUEUED.value:
        return None
    now = utcnow()
    pauses = active_pauses(session, now, account_id=row.account_id)
    if pauses:
        return f"a paused account: {pauses[0].describe()}"
    if row.last_error and row.due_at is not None and row.due_at > now:
        return f"a deferral ({row.last_error}) until {row.due_at:%Y-%m-%dT%H:%M:%SZ}"
    return None


def _send(args: argparse.Namespace) -> int:
    from sms_pipeline.errors import InvalidMessage, OptedOut
    from sms_pipeline.services.intake.enqueue import enqueue_sms

    body = read_body(args)
    if body is None:
        print(
            "sms-pipeline send: give the text with --body TEXT, --body-file FILE or on stdin "
            "(stdin and files keep codes off the command line)",
            file=sys.stderr,
        )
        return 2
    try:
        message_id = enqueue_sms(
            args.to,
            body,
            args.type,
            account=args.account,
            priority=args.priority,
            send_at=args.send_at,
            sender_id=args.sender_id,
            customer_id=args.customer_id,
            cost_centre=args.cost_centre,
        )
    except OptedOut as exc:
        print(f"not sent: {exc} (logged as {exc.message_id})", file=sys.stderr)
        return 3
    except InvalidMessage as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    print(message_id, flush=True)
    print(what_next(message_id, args.wait, args.send_at), file=sys.stderr)
    return 0


def characters(count: int) -> str:
    """`1 character`, `42 characters`: a hidden text's length."""
    return f"{count} character" if count == 1 else f"{count} characters"


def message_record(message: Any, *, with_body: bool) -> dict[str, Any]:
    """A message's row as JSON-ready data: number masked, body only on request."""
    record: dict[str, Any] = {}
    for column in message.__table__.columns:
        value = getattr(message, column.key)
        if column.key == "phone_number":
            value = mask_phone(value)
        elif column.key == "body" and not with_body:
            value = f"<{characters(len(value))}; --body to show>"
        if isinstance(value, dt.datetime | uuid.UUID):
            value = str(value)
        record[column.key] = value
    return record


def _show(args: argparse.Namespace) -> int:
    from sms_pipeline.db import session_scope
    from sms_pipeline.db.models import SmsLog, SmsReply

    try:
        message_id = uuid.UUID(args.id)
    except ValueError:
        print("sms-pipeline show: not a message id", file=sys.stderr)
        return 2
    with session_scope() as session:
        message = session.get(SmsLog, message_id)
        if message is None:
            print(f"no message {message_id}", file=sys.stderr)
            return 1
        record = message_record(message, with_body=args.body)
        waiting = _waiting_reason(session, message)
        if args.body:  # every read of a body is audited (docs/privacy.md)
            from sms_pipeline.services import privacy

            privacy.audit_body_read(session, privacy.os_actor(), [message_id])
        replies = session.query(SmsReply).filter(SmsReply.message_id == message_id).count()
    history = [
        (label, record.get(key))
        for label, key in (
            ("inserted", "inserted_at"),
            ("due", "due_at"),
            ("submitted", "submitted_at"),
            ("status changed", "status_changed_at"),
            ("final", "final_at"),
        )
        if record.get(key)
    ]
    if args.json:
        extra = {"replies": replies, "waiting": waiting}
        print(json.dumps({**record, **extra}, indent=2, ensure_ascii=False))
        return 0
    width = max(len(k) for k in record)
    for key, value in record.items():
        print(f"{key:<{width}}  {'' if value is None else value}")
    print(f"{'replies':<{width}}  {replies}")
    if waiting is not None:
        print(f"{'waiting':<{width}}  behind {waiting}")
    print("\nhistory:")
    for label, when in sorted(history, key=lambda item: str(item[1])):
        print(f"  {when}  {label}")
    return 0


def register(subparsers: Any) -> None:
    send = subparsers.add_parser(
        "send",
        help="enqueue one SMS (prints its id)",
        description="Enqueue one SMS: prints its id on stdout and, on stderr, what happens "
        "next. The text comes from --body, --body-file or stdin (keep one-time codes off "
        "the command line, where `ps` and shell history see them).",
    )
    send.add_argument("--to", required=True, help="E.164 number, e.g. +380931234567")
    text = send.add_mutually_exclusive_group()
    text.add_argument("--body", default=None, help="the message text")
    text.add_argument(
        "--body-file",
        metavar="FILE",
        default=None,
        help="read the text from FILE (`-` = stdin); without --body or --body-file, "
        "a piped stdin is read",
    )
    send.add_argument(
        "--type",
        default="text",
        choices=MESSAGE_TYPES,
        help="message type; verification and 2FA use the urgent queue (default %(default)s)",
    )
    send.add_argument(
        "--account", default=None, help="account name (default SMS_DEFAULT_ACCOUNT, `default`)"
    )
    send.add_argument("--priority", type=options.priority, default=0, help=options.PRIORITY_HELP)
    send.add_argument(
        "--send-at",
        type=options.parse_time,
        default=None,
        metavar="TIME",
        help=f"not before this time: {options.TIME_HELP}",
    )
    send.add_argument(
        "--sender-id", default=None, help="sender id shown to the recipient (default IP2SMS_SOURCE)"
    )
    send.add_argument("--customer-id", default=None, help="your customer reference (stored)")
    send.add_argument("--cost-centre", default=None, help="cost centre for billing (stored)")
    send.add_argument(
        "--wait",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="how long to watch for a worker taking the message (default 1; 0 = do not wait)",
    )
    send.set_defaults(func=_send)

    show = subparsers.add_parser("show", help="a message's record and history (number masked)")
    show.add_argument("id", help="the message id `send` printed")
    show.add_argument("--body", action="store_true", help="include the message text")
    show.add_argument("--json", action="store_true", help="print the record as JSON")
    show.set_defaults(func=_show, reads_only=True)
