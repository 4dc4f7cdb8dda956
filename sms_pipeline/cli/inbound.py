"""`sms-pipeline inbound list` and `sms-pipeline inbound poll`."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
from typing import Any

from sms_pipeline.services.masking import mask_phone

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(value: str, now: dt.datetime | None = None) -> dt.datetime:
    """`24h`, `30m`, `7d`, `90s`, `2w` back from now, or an ISO time with a zone."""
    now = now or dt.datetime.now(dt.UTC)
    match = _DURATION.match(value)
    if match:
        return now - dt.timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2).lower()])
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            "use a duration such as 24h, 30m, 7d or an ISO time with a zone"
        ) from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError("an ISO time needs a zone, e.g. +00:00")
    return moment


def inbound_records(since: dt.datetime, limit: int, *, with_text: bool) -> list[dict[str, Any]]:
    """Recent replies and shortcode messages, newest first, numbers masked."""
    from sqlalchemy import select

    from sms_pipeline.cli.messages import characters
    from sms_pipeline.db import session_scope
    from sms_pipeline.db.models import Account, SmsReply, SmsShortcode

    def text_of(value: str) -> str:
        return value if with_text else f"<{characters(len(value))}; --text to show>"

    records: list[dict[str, Any]] = []
    with session_scope() as session:
        names = {row.id: row.name for row in session.execute(select(Account.id, Account.name))}
        replies = session.scalars(
            select(SmsReply)
            .where(SmsReply.received_at >= since)
            .order_by(SmsReply.received_at.desc(), SmsReply.id.desc())
            .limit(limit)
        )
        for reply in replies:
            records.append(
                {
                    "kind": "reply",
                    "id": reply.id,
                    "received_at": reply.received_at,
                    "account": names.get(reply.account_id, reply.account_id),
                    "from": mask_phone(reply.phone_number),
                    "to": None,
                    "message_id": str(reply.message_id) if reply.message_id else None,
                    "customer_id": reply.customer_id,
                    "opt_out": reply.opt_out,
                    "opt_in": reply.opt_in,
                    "text": text_of(reply.received_data),
                }
            )
        shortcodes = session.scalars(
            select(SmsShortcode)
            .where(SmsShortcode.received_at >= since)
            .order_by(SmsShortcode.received_at.desc(), SmsShortcode.id.desc())
            .limit(limit)
        )
        for sc in shortcodes:
            records.append(
                {
                    "kind": "shortcode",
                    "id": sc.id,
                    "received_at": sc.received_at,
                    "account": names.get(sc.account_id, sc.account_id),
                    "from": mask_phone(sc.num_from),
                    "to": sc.shortcode + (f" {sc.keyword}" if sc.keyword else ""),
                    "message_id": None,
                    "customer_id": None,
                    "opt_out": sc.opt_out,
                    "opt_in": sc.opt_in,
                    "text": text_of(sc.data),
                }
            )
    records.sort(key=lambda r: (r["received_at"], r["id"]), reverse=True)
    return records[:limit]


def _list(args: argparse.Namespace) -> int:
    records = inbound_records(args.since, args.limit, with_text=args.text)
    if args.json:
        print(
            json.dumps(
                [{**r, "received_at": r["received_at"].isoformat()} for r in records],
                indent=2,
                ensure_ascii=False,
            )
        )
        return 0
    if not records:
        print("no inbound messages in that period")
        return 0
    for r in records:
        flag = "OPT-OUT" if r["opt_out"] else "OPT-IN" if r["opt_in"] else ""
        target = r["to"] or (f"re {r['message_id']}" if r["message_id"] else "re ?")
        print(
            f"{r['received_at']:%Y-%m-%d %H:%M:%S}  {r['kind']:<9}  {r['account']!s:<12}  "
            f"{r['from']:<16}  {target:<40}  {flag:<7}  {r['text']}"
        )
    return 0


def _poll(args: argparse.Namespace) -> int:
    from sms_pipeline.services.inbound import poll_inbound

    result = poll_inbound()
    print(json.dumps(result.as_dict()))
    for detail in result.details:
        print(detail, file=sys.stderr)
    return 1 if result.errors else 0


def register(subparsers: Any) -> None:
    inbound = subparsers.add_parser("inbound", help="replies and shortcode messages")
    commands = inbound.add_subparsers(dest="inbound_command", metavar="ACTION", required=True)

    listing = commands.add_parser("list", help="recent inbound messages (numbers masked)")
    listing.add_argument(
        "--since",
        type=parse_since,
        default="24h",
        help="how far back: 24h, 30m, 7d or an ISO time with zone (default 24h)",
    )
    listing.add_argument("--limit", type=int, default=50, help="most rows shown (default 50)")
    listing.add_argument("--text", action="store_true", help="show the message texts")
    listing.add_argument("--json", action="store_true", help="print the records as JSON")
    listing.set_defaults(func=_list)

    poll = commands.add_parser("poll", help="poll the accounts whose inbound interval is due")
    poll.set_defaults(func=_poll)
