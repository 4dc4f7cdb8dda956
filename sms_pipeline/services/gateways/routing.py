"""Routing one attempt of a batch across the gateways (the rules in order: docs/gateways.md).

A message bound to a gateway (an earlier attempt there accepted, or its outcome unknown)
goes there and nowhere else: elsewhere could deliver it twice. Others go to the account's
gateways or every active one by weight, among those where the account's password resolves.
The message is marked with its gateway before the request goes out; a definite refusal
moves it on within the same attempt, an ambiguous outcome keeps it there for its next
attempt, with the same uniq_key. `Attempts` starts requests and settles answers without
waiting (the send window); `submit` is the same and waits for all.
"""

from __future__ import annotations

import functools
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
from sms_pipeline.services.gateways.flights import Answer, Flight, _ended, split_done, wait_any
from sms_pipeline.settings import Settings


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


class Attempts:
    """One attempt of each claim across the gateways, without waiting for any answer.

    `start` routes claims, binds them (before the request goes out) and starts their
    requests; `settle` takes answered flights: a definite refusal of a message not bound
    to its gateway is started again on another candidate within the same attempt, anything
    else is final for this attempt. The send window and `submit` share it.
    """

    def __init__(
        self,
        build: Callable[[Any], SendRequest],
        settings: Settings,
        db: Any,
        client: IP2SMSClient | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.build = build
        self.settings = settings
        self.db = db
        self.client = client
        self.clock = clock
        self.accounts: dict[int, Account] = {}
        self.table: registry.GatewayTable | None = None
        # Per claim in flight (dropped once final): gateways tried, the last answer.
        self._tried: dict[uuid.UUID, set[str]] = {}
        self._last: dict[uuid.UUID, tuple[str, Answer]] = {}
        self._bound: set[uuid.UUID] = set()

    def refresh(self, accounts: dict[int, Account], table: registry.GatewayTable) -> None:
        """The accounts and gateways the next routing decisions use."""
        self.accounts = accounts
        self.table = table

    def start(self, claims: Sequence[Any]) -> tuple[list[Flight], list[tuple[Any, str, float]]]:
        """Start one request per claim; returns the flights, and (claim, reason, wait
        seconds) for the claims never sent in this attempt that wait."""
        table = self.table
        assert table is not None, "refresh() first"
        settings = self.settings
        held: list[tuple[Any, str, float]] = []
        groups: dict[tuple[str, int], list[Any]] = {}
        routes: dict[str, registry.Route] = {}
        full: set[str] = set()  # gateways at their max_per_second for now
        for claim in claims:
            tried = self._tried.setdefault(claim.id, set())
            if claim.gateway:
                self._bound.add(claim.id)
            account = self.accounts[claim.account_id]
            choice = choose(claim.gateway, account, table, tried | full, settings)
            while choice.route is not None and not account_rules.take_gateway_token(
                choice.route.name, choice.route.max_per_second, settings
            ):
                full.add(choice.route.name)
                choice = choose(claim.gateway, account, table, tried | full, settings)
            if choice.route is None:
                if claim.id not in self._last:
                    if choice.wait_reason:
                        wait, why = settings.sms_gateway_probe_seconds, choice.wait_reason
                    elif full:
                        # Every gateway it may use took its requests for this second.
                        wait, why = random.uniform(0.2, 1.0), "gateway rate"
                    else:
                        wait, why = 1.0, "no gateway"
                    held.append((claim, why, wait))
                    self._forget(claim.id)
                continue
            routes[choice.route.name] = choice.route
            groups.setdefault((choice.route.name, claim.account_id), []).append(claim)
        if table.routes[0].from_table:
            for (gateway, _account), members in groups.items():
                fresh = [c.id for c in members if c.id not in self._bound]
                if fresh:
                    _bind(self.db, gateway, fresh)
        flights: list[Flight] = []
        for (gateway, account_id), members in groups.items():
            flights += self._start_group(routes[gateway], account_id, members)
        return flights, held

    def _start_group(
        self, route: registry.Route, account_id: int, claims: list[Any]
    ) -> list[Flight]:
        if not route.from_table and self.client is not None:
            chosen: IP2SMSClient | None = self.client
        else:
            assert self.table is not None
            chosen = client_for_account(route, self.accounts[account_id], self.table, self.settings)
        assert chosen is not None  # choose() kept gateways without a password out
        started = self.clock()
        futures = chosen.start_send([self.build(c) for c in claims])
        deadline = started + chosen.deadline("send", len(claims))
        flights = []
        for claim, future in zip(claims, futures, strict=True):
            flight = Flight(claim, route.name, account_id, future, started, deadline)
            future.add_done_callback(functools.partial(_ended, flight, self.clock))
            flights.append(flight)
        return flights

    def settle(
        self, answered: Sequence[Flight]
    ) -> tuple[list[tuple[Any, str, Answer]], list[Flight], list[tuple[Any, str, float]]]:
        """The answered flights: (claim, gateway, answer) final for this attempt; the
        flights started again elsewhere (definite refusals); and (claim, reason, wait) for
        claims held back (none here: a re-routed claim has its last answer)."""
        now = self.clock()
        outcomes: list[tuple[str, Answer, float]] = []
        again: list[Any] = []
        for flight in answered:
            claim, answer = flight.claim, flight.answer()
            self._tried.setdefault(claim.id, set()).add(flight.gateway)
            self._last[claim.id] = (flight.gateway, answer)
            outcomes.append((flight.gateway, answer, flight.seconds(now)))
            if isinstance(answer, GatewayError) and movable(answer) and claim.id not in self._bound:
                again.append(claim)
        assert self.table is not None
        _observe(outcomes, self.table, self.settings, self.db)
        flights, held = self.start(again) if again else ([], [])
        moving = {f.claim.id for f in flights}
        final: list[tuple[Any, str, Answer]] = []
        for flight in answered:
            claim = flight.claim
            if claim.id in moving or claim.id not in self._last:
                continue
            final.append((claim, *self._last[claim.id]))
            self._forget(claim.id)
        return final, flights, held

    def _forget(self, claim_id: uuid.UUID) -> None:
        self._tried.pop(claim_id, None)
        self._last.pop(claim_id, None)
        self._bound.discard(claim_id)


def submit(
    go: Sequence[Any],
    accounts: dict[int, Account],
    table: registry.GatewayTable,
    build: Callable[[Any], SendRequest],
    settings: Settings,
    db: Any,
    client: IP2SMSClient | None = None,
) -> tuple[list[tuple[Any, str, Answer]], list[tuple[Any, str, float]]]:
    """Send one attempt of each claim and wait for all; returns (claim, gateway, answer) for
    every claim that went out, and (claim, reason, wait seconds) for those that wait."""
    attempts = Attempts(build, settings, db, client)
    attempts.refresh(accounts, table)
    flights, held = attempts.start(go)
    sent: list[tuple[Any, str, Answer]] = []
    while flights:
        wait_any(flights, None, attempts.clock)
        answered, flights = split_done(flights, attempts.clock())
        final, again, more = attempts.settle(answered)
        sent += final
        flights += again
        held += more
    order = {c.id: i for i, c in enumerate(go)}
    sent.sort(key=lambda s: order[s[0].id])
    return sent, held


def _observe(
    outcomes: Sequence[tuple[str, Answer, float]],
    table: registry.GatewayTable,
    settings: Settings,
    db: Any,
) -> None:
    """Answered requests, (gateway, answer, seconds) each: metrics, health and stats."""
    per_gateway: dict[str, list[tuple[str, float]]] = {}
    for gateway, answer, seconds in outcomes:
        per_gateway.setdefault(gateway, []).append((_route_outcome(answer), seconds))
    for gateway, counted in per_gateway.items():
        metrics.gateway_route(gateway, counted)
        if not table.routes[0].from_table:
            continue  # the settings' one gateway: nothing to judge, nowhere to go
        health.HEALTH.record(gateway, [(o == "definite", s) for o, s in counted])
        gateway_stats.add(
            db.tx,
            gateway,
            requests=len(counted),
            definite_failures=sum(1 for o, _ in counted if o == "definite"),
            ambiguous=sum(1 for o, _ in counted if o == "ambiguous"),
            latency_seconds=sum(s for _, s in counted),
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


__all__ = [
    "Attempts",
    "after_batch",
    "choose",
    "get_gateway_client",
    "movable",
    "submit",
]
