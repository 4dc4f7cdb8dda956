"""One person: export of everything held about a number, and its erasure."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import phonenumbers
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from sms_pipeline.db import affected, forget_old_copies_after_commit
from sms_pipeline.db.models import (
    Account,
    CallbackEvent,
    IdempotencyRecord,
    OptOut,
    OptOutHash,
    SmsLog,
    SmsQueue,
    SmsReply,
    SmsShortcode,
    Verification,
)
from sms_pipeline.metrics import hooks as metrics
from sms_pipeline.services.numbers import parse_number
from sms_pipeline.services.privacy.audit import audit
from sms_pipeline.services.privacy.keyed_hash import subject_hash
from sms_pipeline.settings import Settings, get_settings


def normalise_subject(raw: str) -> str:
    """The E.164 form of a person's number (InvalidMessage when it is not one)."""
    return parse_number(raw)


def _same_number(raw: str | None, number: str) -> bool:
    if not raw:
        return False
    text_form = raw.strip()
    if text_form == number:
        return True
    if text_form[:1].isdigit():
        text_form = "+" + text_form.lstrip("0") if text_form.startswith("00") else "+" + text_form
    try:
        parsed = phonenumbers.parse(text_form, None)
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164) == number


def _matching(
    session: Session, column: Any, pk: Any, number: str, where: Sequence[Any] = ()
) -> list[Any]:
    """Primary keys of rows whose free-form number column holds `number` in any spelling."""
    tail = number[-7:]
    rows = session.execute(select(pk, column).where(column.like(f"%{tail}%"), *where)).all()
    return [key for key, raw in rows if _same_number(raw, number)]


def _row(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for column in obj.__table__.columns:
        value = getattr(obj, column.key)
        if isinstance(value, dt.datetime | dt.date | uuid.UUID):
            value = str(value)
        out[column.key] = value
    return out


@dataclass
class SubjectRows:
    number: str
    messages: list[Any] = field(default_factory=list)
    replies: list[Any] = field(default_factory=list)
    shortcodes: list[Any] = field(default_factory=list)
    queue: list[Any] = field(default_factory=list)
    callback_events: list[Any] = field(default_factory=list)
    idempotency_records: list[Any] = field(default_factory=list)
    opt_outs: list[Any] = field(default_factory=list)
    opt_out_hashes: list[Any] = field(default_factory=list)


def _in_account(column: Any, account_id: int | None) -> list[Any]:
    return [] if account_id is None else [column == account_id]


def _collect(
    session: Session, number: str, settings: Settings, account_id: int | None = None
) -> SubjectRows:
    """The person's rows; with `account_id`, only that account's (an account admin's scope).

    Opt-outs (kept for every account) are the platform's: collected only without an account.
    """
    found = SubjectRows(number)
    found.messages = list(
        session.scalars(
            select(SmsLog).where(
                SmsLog.phone_number == number, *_in_account(SmsLog.account_id, account_id)
            )
        )
    )
    ids = [m.id for m in found.messages]
    reply_ids = set(
        _matching(
            session,
            SmsReply.phone_number,
            SmsReply.id,
            number,
            _in_account(SmsReply.account_id, account_id),
        )
    )
    if ids:
        reply_ids |= set(session.scalars(select(SmsReply.id).where(SmsReply.message_id.in_(ids))))
        found.callback_events = list(
            session.scalars(select(CallbackEvent).where(CallbackEvent.message_id.in_(ids)))
        )
        found.idempotency_records = list(
            session.scalars(select(IdempotencyRecord).where(IdempotencyRecord.message_id.in_(ids)))
        )
    if reply_ids:
        found.replies = list(session.scalars(select(SmsReply).where(SmsReply.id.in_(reply_ids))))
    sc_ids = _matching(
        session,
        SmsShortcode.num_from,
        SmsShortcode.id,
        number,
        _in_account(SmsShortcode.account_id, account_id),
    )
    if sc_ids:
        found.shortcodes = list(
            session.scalars(select(SmsShortcode).where(SmsShortcode.id.in_(sc_ids)))
        )
    queue_ids = _matching(
        session, SmsQueue.num_to, SmsQueue.id, number, _in_account(SmsQueue.account_id, account_id)
    )
    if queue_ids:
        found.queue = list(session.scalars(select(SmsQueue).where(SmsQueue.id.in_(queue_ids))))
    if account_id is not None:
        return found
    opt_out = session.get(OptOut, number)
    found.opt_outs = [opt_out] if opt_out is not None else []
    hashed = session.get(OptOutHash, subject_hash(number, settings))
    found.opt_out_hashes = [hashed] if hashed is not None else []
    return found


def _account_name(session: Session, account_id: int | None) -> str | None:
    if account_id is None:
        return None
    name = session.scalar(select(Account.name).where(Account.id == account_id))
    return name if name is not None else f"#{account_id}"


def export_subject(
    session: Session,
    raw_number: str,
    actor: str,
    settings: Settings | None = None,
    *,
    account_id: int | None = None,
) -> dict[str, Any]:
    """Every row about one person, as JSON-ready data (a subject access request); audited.

    With `account_id` (an account admin), only that account's rows: its messages, replies,
    shortcode messages, queue rows and their events; the platform's opt-out list and the
    verification service's rows are left to a platform admin. The audit row names the account.

    The verification service's own rows (`verification.verifications`) are read, not
    written: they are listed under `verifications (owned by the verification service)`.
    """
    settings = settings or get_settings()
    number = normalise_subject(raw_number)
    found = _collect(session, number, settings, account_id)
    verifications = (
        list(
            session.scalars(
                select(Verification).where(
                    Verification.phone_number.in_([number, number.lstrip("+")])
                )
            )
        )
        if account_id is None
        else []
    )
    account = _account_name(session, account_id)
    data: dict[str, Any] = {
        "phone_number": number,
        "account": account,
        "tables": {
            "sms_log": [_row(m) for m in found.messages],
            "sms_replies": [_row(r) for r in found.replies],
            "sms_shortcodes": [_row(s) for s in found.shortcodes],
            "sms_queue": [_row(q) for q in found.queue],
            "callback_events": [_row(e) for e in found.callback_events],
            "api_idempotency": [_row(i) for i in found.idempotency_records],
            "opt_outs": [_row(o) for o in found.opt_outs],
            "opt_out_hashes": [_row(h) for h in found.opt_out_hashes],
            "verifications (owned by the verification service)": [_row(v) for v in verifications],
        },
    }
    audit(
        session,
        actor,
        "export",
        number=number,
        detail={t: len(rows) for t, rows in data["tables"].items()},
        settings=settings,
        account=account,
    )
    return data


def erase_subject(
    session: Session,
    raw_number: str,
    actor: str,
    settings: Settings | None = None,
    *,
    account_id: int | None = None,
) -> dict[str, int]:
    """Remove every row that holds one person's number; rows removed per table; audited.

    What stays: an opt-out becomes its keyed hash (so STOP still holds), and the audit row
    naming the person by that hash. `verification.verifications` is the verification
    service's to purge: never written here. With `account_id` (an account admin), only that
    account's rows go; other accounts' rows and the opt-out stay.
    """
    settings = settings or get_settings()
    number = normalise_subject(raw_number)
    found = _collect(session, number, settings, account_id)
    removed: dict[str, int] = {}
    message_ids = [m.id for m in found.messages]
    for name, rows in (
        ("callback_events", found.callback_events),
        ("api_idempotency", found.idempotency_records),
        ("sms_replies", found.replies),
        ("sms_shortcodes", found.shortcodes),
        ("sms_queue", found.queue),
    ):
        for row in rows:
            session.delete(row)
        removed[name] = len(rows)
    session.flush()
    removed["sms_log"] = (
        affected(session.execute(delete(SmsLog).where(SmsLog.id.in_(message_ids))))
        if message_ids
        else 0
    )
    removed["opt_outs"] = 0
    if found.opt_outs:
        opt_out = found.opt_outs[0]
        if not found.opt_out_hashes:
            session.add(
                OptOutHash(
                    phone_hash=subject_hash(number, settings),
                    opted_out_at=opt_out.opted_out_at,
                    source=opt_out.source,
                )
            )
        session.delete(opt_out)
        removed["opt_outs"] = 1
    audit(
        session,
        actor,
        "erase",
        number=number,
        detail=removed,
        settings=settings,
        account=_account_name(session, account_id),
    )
    forget_old_copies_after_commit(session)  # the caller commits: then the WAL's old copies go
    session.flush()
    metrics.privacy_action("erased", 1)
    return removed
