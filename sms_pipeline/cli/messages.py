"""`sms-pipeline send` and `sms-pipeline show ID`."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import uuid
from typing import Any

from sms_pipeline.services.masking import mask_phone


def _send(args: argparse.Namespace) -> int:
    from sms_pipeline.errors import InvalidMessage, OptedOut
    from sms_pipeline.services.enqueue import enqueue_sms

    send_at = None
    if args.send_at:
        send_at = dt.datetime.fromisoformat(args.send_at)
        if send_at.tzinfo is None:
            print("sms-pipeline send: --send-at needs a time zone (e.g. +00:00)", file=sys.stderr)
            return 2
    try:
        message_id = enqueue_sms(
            args.to,
            args.body,
            args.type,
            account=args.account,
            priority=args.priority,
            send_at=send_at,
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
    print(message_id)
    return 0


def message_record(message: Any, *, with_body: bool) -> dict[str, Any]:
    """A message's row as JSON-ready data: number masked, body only on request."""
    record: dict[str, Any] = {}
    for column in message.__table__.columns:
        value = getattr(message, column.key)
        if column.key == "phone_number":
            value = mask_phone(value)
        elif column.key == "body" and not with_body:
            value = f"<{len(value)} characters; --body to show>"
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
        print(json.dumps({**record, "replies": replies}, indent=2, ensure_ascii=False))
        return 0
    width = max(len(k) for k in record)
    for key, value in record.items():
        print(f"{key:<{width}}  {'' if value is None else value}")
    print(f"{'replies':<{width}}  {replies}")
    print("\nhistory:")
    for label, when in sorted(history, key=lambda item: str(item[1])):
        print(f"  {when}  {label}")
    return 0


def register(subparsers: Any) -> None:
    send = subparsers.add_parser("send", help="enqueue one SMS (prints its id)")
    send.add_argument("--to", required=True, help="E.164 number, e.g. +380931234567")
    send.add_argument("--body", required=True)
    send.add_argument(
        "--type", default="text", choices=["verification", "medication_request", "text", "2FA"]
    )
    send.add_argument("--account", default=None)
    send.add_argument("--priority", type=int, default=0)
    send.add_argument(
        "--send-at", default=None, help="ISO time with zone, e.g. 2030-01-01T08:00+02:00"
    )
    send.add_argument("--sender-id", default=None)
    send.add_argument("--customer-id", default=None)
    send.add_argument("--cost-centre", default=None)
    send.set_defaults(func=_send)

    show = subparsers.add_parser("show", help="a message's record and history (number masked)")
    show.add_argument("id")
    show.add_argument("--body", action="store_true", help="include the message text")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=_show)
