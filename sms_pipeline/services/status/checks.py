"""Asking the gateway: one status check, or a chunk of them at once.

A check reads the message, asks the gateway only about one still moving with a gateway
id, and records the answer (`record.record_answers`); safe to run twice.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import queue
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any, Protocol, cast

from sqlalchemy import Uuid, any_, bindparam, select

from sms_pipeline.db import array_param, one_statement, takes_arrays
from sms_pipeline.db.models import MOVING_STATUS_VALUES, SmsLog, utcnow
from sms_pipeline.gateway import GatewayError, GatewayTimeout, StatusResult
from sms_pipeline.metrics import hooks as metrics
from sms_pipeline.services.gateways.clients import get_gateway_client
from sms_pipeline.services.status.outcomes import CheckOutcome, CheckResult
from sms_pipeline.services.status.record import Answer, Asked, record_answers
from sms_pipeline.settings import Settings, get_settings

log = logging.getLogger(__name__)

# When a group of answers is recorded (one statement): once the chunk is all answered, or
# no answer came for GROUP_IDLE_SECONDS (what is still out is slow), or GROUP_MAX_SECONDS
# after the group's first answer. A statement costs more than a check's parse and
# bookkeeping together, and with many chunks in flight a chunk's answers trickle in (the
# connections serve every chunk in turn): a fixed short gather made a statement of every
# two or three answers. A hung request holds back only itself; a status answer recorded
# a second later changes nothing (the time it was asked is what is recorded).
GROUP_IDLE_SECONDS = 0.05
GROUP_MAX_SECONDS = 1.0


class StatusClient(Protocol):
    def status(self, gateway_id: str) -> StatusResult: ...


@functools.cache
def _read_statement(arrays: bool) -> Any:  # a Select (its generic form varies across 2.x)
    # Built once: building a statement costs more Python time than a status check's query.
    # type, submitted_at and inserted_at are for the status-change metrics: read now, not in
    # a third query. On PostgreSQL the ids are one array parameter: the same short query
    # text whatever the chunk's size (psycopg converts it once), not a parameter per id.
    ids = (
        SmsLog.id == any_(array_param("b_ids", Uuid()))
        if arrays
        else SmsLog.id.in_(bindparam("b_ids", expanding=True))
    )
    return select(
        SmsLog.id,
        SmsLog.gateway_id,
        SmsLog.gateway,
        SmsLog.account_id,
        SmsLog.gateway_status,
        SmsLog.type,
        SmsLog.submitted_at,
        SmsLog.inserted_at,
    ).where(ids)


def read_rows(ids: Sequence[uuid.UUID], settings: Settings) -> dict[uuid.UUID, Any]:
    """The rows a check needs, by id (ids that are gone are left out)."""
    with one_statement(settings) as conn:
        statement = _read_statement(takes_arrays(conn))
        return {r.id: r for r in conn.execute(statement, {"b_ids": list(ids)})}


def _not_askable(message_id: uuid.UUID, row: Any) -> CheckResult | None:
    """Why the gateway is not asked about this message (gone, final, no id), or None."""
    if row is None:
        return CheckResult(message_id, CheckOutcome.MISSING)
    if row.gateway_status not in MOVING_STATUS_VALUES:
        return CheckResult(message_id, CheckOutcome.NOT_MOVING, row.gateway_status)
    if not row.gateway_id:
        return CheckResult(message_id, CheckOutcome.NO_GATEWAY_ID, row.gateway_status)
    return None


def _client_of(row: Any, settings: Settings) -> Any:
    """The client of the gateway that accepted this message, with its account's login there.

    A message without a gateway (accepted before gateways were data), or on the settings'
    gateway with the settings' login, asks the IP2SMS_* gateway.
    """
    from sqlalchemy import Table

    from sms_pipeline.db.models import Account
    from sms_pipeline.services import gateways as registry
    from sms_pipeline.services.gateways.clients import client_for, client_for_account

    accounts = cast(Table, Account.__table__)
    with one_statement(settings) as conn:
        table = registry.routes(conn, settings)
        found = conn.execute(select(accounts).where(accounts.c.id == row.account_id)).first()
    route = table.by_name().get(row.gateway or registry.DEFAULT)
    if route is None and not table.routes[0].from_table:
        route = table.routes[0]
    if route is None or found is None:
        return get_gateway_client(settings)
    account = Account(**found._mapping)
    login = registry.login_for(account, route, table)
    if not route.from_table and (
        not login.own
        or (login.login, registry.resolve_password(login.password_ref, settings))
        == (settings.ip2sms_login, settings.ip2sms_password.get_secret_value())
    ):
        return get_gateway_client(settings)
    client = client_for_account(route, account, table, settings)
    if client is not None:
        return client
    # Its own password cannot be found: asked with the gateway's login (a status check
    # sends nothing).
    password = registry.resolve_password(route.password_ref, settings) or ""
    return client_for(route, route.login, password, settings)


def check_status(
    message_id: uuid.UUID,
    *,
    settings: Settings | None = None,
    client: StatusClient | None = None,
    now: dt.datetime | None = None,
) -> CheckResult:
    """Ask the gateway about one message and record a forward change; safe to run twice.

    When the gateway answers, `last_checked_at` records when the request went out (`now`,
    taken just before asking unless a clock is passed in): the Terminated rule's fact.
    """
    settings = settings or get_settings()
    row = read_rows([message_id], settings).get(message_id)
    skipped = _not_askable(message_id, row)
    if skipped is not None:
        return skipped
    assert row is not None  # _not_askable says MISSING otherwise
    client = client or _client_of(row, settings)
    asked_at = now or utcnow()
    try:
        answer: Answer = client.status(row.gateway_id)
    except GatewayError as exc:
        answer = exc
    with one_statement(settings) as conn:
        return record_answers(conn, [Asked(message_id, row, answer)], asked_at)[0]


def _ask_and_record(
    askable: Sequence[uuid.UUID], rows: dict[uuid.UUID, Any], settings: Settings
) -> list[CheckResult]:
    """Ask about every message at once, each where it was accepted with its account's login,
    and record the answers in groups as they come (one statement each): a hung request
    holds back only its own answer, never the chunk's."""
    groups: dict[tuple[str | None, int], list[uuid.UUID]] = {}
    for i in askable:
        groups.setdefault((rows[i].gateway, rows[i].account_id), []).append(i)
    asked_at = utcnow()
    # Answers arrive on the pool's thread: each future puts itself here when done, so
    # taking the next answer costs the same whatever is still out (no wait over them all).
    answered: queue.SimpleQueue[Future[Answer]] = queue.SimpleQueue()
    pending: dict[Future[Answer], uuid.UUID] = {}
    deadline = 0.0
    for members in groups.values():
        client = _client_of(rows[members[0]], settings)
        futures = client.start_status([rows[i].gateway_id for i in members])
        deadline = max(deadline, time.monotonic() + client.deadline("status", len(members)))
        pending.update(zip(futures, members, strict=True))
    for future in pending:
        future.add_done_callback(answered.put)
    results: list[CheckResult] = []

    def record(asked: list[Asked]) -> None:
        with one_statement(settings) as conn:
            results.extend(record_answers(conn, asked, asked_at))

    group: list[Asked] = []
    group_latest = deadline  # the group's first answer + GROUP_MAX_SECONDS
    while pending:
        if group:
            # Let answers gather rather than waking this thread for each one.
            time.sleep(max(0.0, min(GROUP_IDLE_SECONDS, group_latest - time.monotonic())))
            arrived = _take_all(answered)
        else:
            try:
                arrived = [answered.get(timeout=max(0.0, deadline - time.monotonic()))]
            except queue.Empty:
                # Past every deadline: the pool's thread is stuck; a timeout, like any other.
                late = GatewayTimeout("total deadline exceeded")
                record([Asked(i, rows[i], late) for i in pending.values()])
                break
            group_latest = min(deadline, time.monotonic() + GROUP_MAX_SECONDS)
            arrived += _take_all(answered)
        for future in arrived:
            message_id = pending.pop(future)
            group.append(Asked(message_id, rows[message_id], future.result()))
        if not pending or not arrived or time.monotonic() >= group_latest:
            # All answered, or none came meanwhile (what is out is slow), or time is up.
            record(group)
            group = []
    return results


def _take_all(answered: queue.SimpleQueue[Future[Answer]]) -> list[Future[Answer]]:
    """Every answer already there, without waiting."""
    taken: list[Future[Answer]] = []
    while True:
        try:
            taken.append(answered.get_nowait())
        except queue.Empty:
            return taken


def check_many(ids: Sequence[uuid.UUID], settings: Settings | None = None) -> list[CheckResult]:
    """Check a chunk of messages (the worker's side of `fan_out`): one read for the chunk,
    the gateway asked for all of them concurrently, the answers recorded as they come, in
    groups of one statement each (PostgreSQL; one transaction on SQLite).

    A chunk that fails as a whole is logged; the sweep's lease already scheduled the next
    look at each of its messages.
    """
    settings = settings or get_settings()
    if not ids:
        return []
    try:
        rows = read_rows(ids, settings)
        results: dict[uuid.UUID, CheckResult] = {}
        askable: list[uuid.UUID] = []
        for message_id in dict.fromkeys(ids):  # a repeated id is asked about once
            skipped = _not_askable(message_id, rows.get(message_id))
            if skipped is not None:
                results[message_id] = skipped
            else:
                askable.append(message_id)
        if askable:
            for result in _ask_and_record(askable, rows, settings):
                results[result.message_id] = result
    except Exception:
        metrics.poller_unit_failed("status")
        log.exception("status checks of a chunk of %d failed; the next sweep retries", len(ids))
        return []
    return [results[i] for i in ids if i in results]


__all__ = ["StatusClient", "check_many", "check_status", "read_rows"]
