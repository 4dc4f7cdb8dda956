"""`enqueue_many`: a batch of messages in one transaction and one INSERT."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from sms_pipeline.db import session_scope
from sms_pipeline.db.models import Account, OptOut, SendStatus, SmsLog, utcnow
from sms_pipeline.errors import InvalidMessage
from sms_pipeline.metrics import hooks as metrics
from sms_pipeline.services import intake, optout, privacy
from sms_pipeline.services.intake.account_refs import account_ref, refuse_account
from sms_pipeline.settings import Settings, get_settings


def enqueue_many(
    messages: Iterable[Mapping[str, Any]],
    *,
    account: str | int | None = None,
    session: Session | None = None,
) -> list[uuid.UUID]:
    """Store a batch of messages in one transaction and one INSERT; one kick per queue class.

    Each message is a mapping of `enqueue_sms`'s arguments (`phone_number`, `body`, and
    optionally `type`, `priority`, `send_at`, `sender_id`, `ext_id`, `customer_id`,
    `cost_centre`, `callback_url`, `account`; `account` defaults to this call's). Returns
    the ids in order. Any invalid message raises `InvalidMessage` (its field prefixed with
    `messages[i].`) and nothing is stored. Messages to numbers that opted out are stored
    as `OPTED OUT` (not sent) like `enqueue_sms` does, without raising; read their status
    by id. With `session`, the rows join the caller's transaction.
    """
    settings = get_settings()
    valid: list[intake.Message] = []
    for i, message in enumerate(messages):
        fields = dict(message)
        fields.setdefault("account", account)
        unknown = set(fields) - {*intake.FIELDS, "account"}
        if unknown:
            raise InvalidMessage(f"messages[{i}]", f"unknown fields: {', '.join(sorted(unknown))}")
        try:
            valid.append(intake.validate_message(settings, **fields))
        except InvalidMessage as exc:
            raise InvalidMessage(f"messages[{i}].{exc.field}", exc.reason) from None
        except TypeError:
            raise InvalidMessage(f"messages[{i}]", "phone_number and body are required") from None
    if not valid:
        return []
    if session is not None:
        return _store_many(session, valid, settings)
    with session_scope(settings) as own:
        return _store_many(own, valid, settings)


def _store_many(
    session: Session, valid: Sequence[intake.Message], settings: Settings
) -> list[uuid.UUID]:
    refs = {v.account: account_ref(session, v.account, settings)[0] for v in valid}
    # (cached identities: the statement below checks that every account is active)
    # Exact checks, one statement each for the whole batch: active accounts, opt-outs.
    ids = sorted({r.id for r in refs.values()})
    active = set(session.scalars(select(Account.id).where(Account.id.in_(ids), Account.active)))
    for ref in refs.values():
        if ref.id not in active:
            raise refuse_account(session, ref.id)
    numbers = sorted({v.phone_number for v in valid if optout.stops(v.type)})
    opted = (
        set(session.scalars(select(OptOut.phone_number).where(OptOut.phone_number.in_(numbers))))
        if numbers
        else set()
    )
    now = utcnow()
    rows: list[dict[str, Any]] = []
    # The newest code of the batch to a number is the live one: older ones, in the batch or
    # already stored, end SUPERSEDED.
    newest: dict[tuple[int, str, str], int] = {}
    for i, v in enumerate(valid):
        if privacy.supersedes(v.type, settings):
            newest[(refs[v.account].id, v.phone_number, v.type)] = i
    for i, v in enumerate(valid):
        ref = refs[v.account]
        values = intake.row_values(v, ref.id, now, settings)
        live = newest.get((ref.id, v.phone_number, v.type))
        if live is not None and live != i:
            reason = "superseded by a newer code to the same number in the same batch"
            intake.refuse(values, SendStatus.SUPERSEDED, reason, now)
            metrics.message_stored(session, v.type, ref.name, values["send_status"])
        else:
            intake.admit(session, values, account=ref.name, settings=settings, now=now, opted=opted)
        rows.append(values)
    session.execute(insert(SmsLog), rows)
    return [r["id"] for r in rows]
