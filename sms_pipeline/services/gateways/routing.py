"""Routing one attempt of a batch across the gateways (the rules in order: docs/gateways.md).

A message bound to a gateway (an earlier attempt there accepted, or its outcome unknown)
goes there and nowhere else: elsewhere could deliver it twice. Others go to the account's
gateways or every active one by weight, among those where the account's password resolves.
The message is marked with its gateway before the request goes out; a definite refusal
moves it on within the same attempt, an ambiguous outcome keeps it there for its next
attempt, with the same uniq_key.
"""

from __future__ import annotations

import concurrent.futures
import random
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, bindparam, update

from sms_pipeline.db.models import Account, SmsLog
from sms_pipeline.gateway import (
    GatewayAuthError,
    GatewayError,
    IP2SMSClient,
    SendRequest,
    SendResult,
)
from sms_pipeline.metrics import hooks as metrics
from sms_pipeline.services import accounts as account_rules
from sms_pipeline.services.gateways import health, latency, registry
from sms_pipeline.services.gateways import stats as gateway_stats
from sms_pipeline.services.gateways.clients import (
    client_for,
    client_for_account,
    get_gateway_client,
)
from sms_pipeline.settings import Settings

Answer = SendResult | GatewayError


def movable(error: GatewayError) -> bool:
    """A refusal that certainly left the message untaken and is the gateway's, not the
    message's: the message may go to another gateway."""
    return health.is_definite(error) and (
        not error.permanent or isinstance(error, GatewayAuthError)
    )


def _route_outcome(answer: Answer) -> str:
    if not isinstance(answer, GatewayError):
        return "accepted"
    if getattr(answer, "duplicate", False):
        return "accepted"
    if movable(answer):
        return "definite"
    if answer.permanent or health.is_definite(answer):
        return "message_refused"
    return "ambiguous"


@dataclass
class _Choice:
    route: registry.Route | None
    wait_reason: str | None = None


def _weighted(routes: Sequence[registry.Route], settings: Settings) -> registry.Route:
    weights = [max(r.weight, 0) * health.ramp_share(r, settings) for r in routes]
    if sum(weights) <= 0:
        return random.choice(list(routes))
    return random.choices(list(routes), weights=weights)[0]


def choose(
    pinned: str | None,
    account: Account,
    table: registry.GatewayTable,
    tried: set[str],
    settings: Settings,
) -> _Choice:
    """The gateway for this message now, or why it waits (route None, a reason), or None
    for both when every candidate was tried in this attempt."""
    by_name = table.by_name()
    if pinned is not None:
        route = by_name.get(pinned)
        if route is None and not table.routes[0].from_table:
            route = table.routes[0]  # bound to a gateway row since removed: the settings'
        if route is None or not route.active:
            return _Choice(None, f"waits for gateway {pinned}, which may have it already")
        if route.name in tried:
            return _Choice(None)
        if route.state == "down" and route.from_table:
            return _Choice(None, f"waits for gateway {pinned} (out of rotation), which may "
                           "have it already")  # fmt: skip
        problem = registry.credential_problem(account, route, table, settings)
        if problem is not None:
            return _Choice(None, problem)
        return _Choice(route)
    problems: list[str] = []
    usable: list[registry.Route] = []
    for route in registry.candidates(account, table):
        if route.name in tried:
            continue
        problem = registry.credential_problem(account, route, table, settings)
        if problem is not None:
            problems.append(problem)
            continue
        usable.append(route)
    if not usable:
        if problems and not tried:
            return _Choice(None, problems[0])
        return _Choice(None)
    up = [r for r in usable if r.in_rotation]
    if table.linked(account.id):
        return _Choice((up or usable)[0])  # the account's order: the first in rotation
    weighted = [r for r in up if r.weight > 0]
    if weighted:
        return _Choice(_weighted(weighted, settings))
    if up:
        return _Choice(random.choice(up))
    return _Choice(_weighted(usable, settings))  # none in rotation: try them anyway


def _bind(db: Any, gateway: str, ids: Sequence[uuid.UUID]) -> None:
    """Mark messages with the gateway they are about to go to (so a worker dying mid-request
    leaves them bound there)."""
    table = cast(Table, SmsLog.__table__)
    statement = update(table).where(table.c.id == bindparam("b_id")).values(gateway=gateway)
    with db.tx.begin():
        db.tx.execute(statement, [{"b_id": i} for i in ids])


def submit(
    go: Sequence[Any],
    accounts: dict[int, Account],
    table: registry.GatewayTable,
    build: Callable[[Any], SendRequest],
    settings: Settings,
    db: Any,
    client: IP2SMSClient | None = None,
) -> tuple[list[tuple[Any, str, Answer]], list[tuple[Any, str, float]]]:
    """Send one attempt of each claim; returns (claim, gateway, answer) for every claim
    that went out, and (claim, reason, wait seconds) for those that wait."""
    tried: dict[uuid.UUID, set[str]] = {c.id: set() for c in go}
    last: dict[uuid.UUID, tuple[str, Answer]] = {}
    held: list[tuple[Any, str, float]] = []
    pending = list(go)
    bound = {c.id for c in go if c.gateway}
    full: set[str] = set()  # gateways at their max_per_second for now
    while pending:
        groups: dict[tuple[str, int], list[Any]] = {}
        routes: dict[str, registry.Route] = {}
        for claim in pending:
            account = accounts[claim.account_id]
            choice = choose(claim.gateway, account, table, tried[claim.id] | full, settings)
            while choice.route is not None and not account_rules.take_gateway_token(
                choice.route.name, choice.route.max_per_second, settings
            ):
                full.add(choice.route.name)
                choice = choose(claim.gateway, account, table, tried[claim.id] | full, settings)
            if choice.route is None:
                if claim.id not in last:
                    if choice.wait_reason:
                        wait, why = settings.sms_gateway_probe_seconds, choice.wait_reason
                    elif full:
                        # Every gateway it may use took its requests for this second.
                        wait, why = random.uniform(0.2, 1.0), "gateway rate"
                    else:
                        wait, why = 1.0, "no gateway"
                    held.append((claim, why, wait))
                continue
            routes[choice.route.name] = choice.route
            groups.setdefault((choice.route.name, claim.account_id), []).append(claim)
        if not groups:
            break
        answers = _send_groups(groups, routes, accounts, table, build, settings, db, client, bound)
        pending = []
        for (gateway, _account), (claims, results, _seconds) in answers.items():
            for claim, answer in zip(claims, results, strict=True):
                tried[claim.id].add(gateway)
                last[claim.id] = (gateway, answer)
                if isinstance(answer, GatewayError) and movable(answer) and claim.id not in bound:
                    pending.append(claim)
        _observe(answers, table, settings, db)
    sent = [(c, *last[c.id]) for c in go if c.id in last]
    return sent, held


def _send_groups(
    groups: dict[tuple[str, int], list[Any]],
    routes: dict[str, registry.Route],
    accounts: dict[int, Account],
    table: registry.GatewayTable,
    build: Callable[[Any], SendRequest],
    settings: Settings,
    db: Any,
    client: IP2SMSClient | None,
    bound: set[uuid.UUID],
) -> dict[tuple[str, int], tuple[list[Any], list[Answer], float]]:
    def one(key: tuple[str, int], claims: list[Any]) -> tuple[list[Any], list[Answer], float]:
        route = routes[key[0]]
        account = accounts[key[1]]
        if not route.from_table and client is not None:
            chosen: IP2SMSClient | None = client
        else:
            chosen = client_for_account(route, account, table, settings)
        assert chosen is not None  # choose() kept gateways without a password out
        started = time.monotonic()
        results = chosen.send_many([build(c) for c in claims])
        return claims, list(results), time.monotonic() - started

    if table.routes[0].from_table:
        for (gateway, _account), claims in groups.items():
            fresh = [c.id for c in claims if c.id not in bound]
            if fresh:
                _bind(db, gateway, fresh)
    if len(groups) == 1:
        ((key, claims),) = groups.items()
        return {key: one(key, claims)}
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, len(groups))) as pool:
        futures = {key: pool.submit(one, key, claims) for key, claims in groups.items()}
        return {key: future.result() for key, future in futures.items()}


def _observe(
    answers: dict[tuple[str, int], tuple[list[Any], list[Answer], float]],
    table: registry.GatewayTable,
    settings: Settings,
    db: Any,
) -> None:
    per_gateway: dict[str, list[tuple[str, float]]] = {}
    for (gateway, _account), (_claims, results, seconds) in answers.items():
        per_gateway.setdefault(gateway, []).extend((_route_outcome(a), seconds) for a in results)
    for gateway, outcomes in per_gateway.items():
        metrics.gateway_route(gateway, outcomes)
        if not table.routes[0].from_table:
            continue  # the settings' one gateway: nothing to judge, nowhere to go
        health.HEALTH.record(gateway, [(o == "definite", s) for o, s in outcomes])
        gateway_stats.add(
            db.tx,
            gateway,
            requests=len(outcomes),
            definite_failures=sum(1 for o, _ in outcomes if o == "definite"),
            ambiguous=sum(1 for o, _ in outcomes if o == "ambiguous"),
            latency_seconds=sum(s for _, s in outcomes),
        )


def after_batch(table: registry.GatewayTable, settings: Settings, db: Any) -> None:
    """Judge the gateways on this process's figures, and probe those out of rotation."""
    if not table.routes[0].from_table:
        return
    health.judge(db.tx, table, settings)
    latency.judge_latency(db.tx, table, settings)
    if any(r.state == "down" and r.active for r in table.routes):
        health.probe(db.tx, table, settings, _probe)


def _probe(route: registry.Route) -> GatewayError | None:
    from sms_pipeline.settings import get_settings

    settings = get_settings()
    password = registry.resolve_password(route.password_ref, settings) or ""
    answer = client_for(route, route.login, password, settings).status_many(["0"])[0]
    return answer if isinstance(answer, GatewayError) else None


__all__ = ["after_batch", "choose", "get_gateway_client", "movable", "submit"]
