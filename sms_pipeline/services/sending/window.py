"""The send window: requests of one queue class in flight at once, each holding one slot.

`fill` claims at most the free slots (one statement, committed before any request goes
out: SENDING, `attempts + 1`, the lease), applies the per-message rules and starts the
requests without waiting; `collect` waits until any answer is in and records every
answered one in one group (one `_record` statement). A slow request holds its own slot
only: the others are answered, recorded and replaced meanwhile. A definite refusal goes
on to another gateway within the same attempt (`routing.Attempts`). A crash leaves the
claimed rows SENDING: their lease expires and the outbox sweeper dispatches them again.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import logging
import time
import uuid
from collections.abc import Callable, Sequence

from sms_pipeline.db import alone
from sms_pipeline.db.models import Account, utcnow
from sms_pipeline.gateway import GatewayError, IP2SMSClient, SendRequest
from sms_pipeline.metrics import hooks as metrics
from sms_pipeline.services import gateways as gateway_routes
from sms_pipeline.services import outbox, privacy
from sms_pipeline.services.accounts import quotas
from sms_pipeline.services.gateways import flights, routing
from sms_pipeline.services.masking import mask_phone
from sms_pipeline.services.sending.claim import _claim
from sms_pipeline.services.sending.eligibility import (
    account_may_send,
    defer_blocked,
    message_rules,
)
from sms_pipeline.services.sending.record import _failed, _not_sent, _record, _submitted, _Write
from sms_pipeline.services.sending.results import _ENDED, AttemptResult, BatchResult, Outcome
from sms_pipeline.services.sending.scope import Claim, _accounts, _Db, _Scope
from sms_pipeline.settings import Settings

log = logging.getLogger(__name__)


def _request(claim: Claim, now: dt.datetime, settings: Settings) -> SendRequest:
    return SendRequest(
        phone_number=claim.phone_number,
        body=claim.body,
        ext_id=claim.ext_id or claim.id.hex,
        uniq_key=claim.uniq_key,
        source=claim.sender_id or None,
        # A code's time left, so the carrier drops it too once it stopped being valid.
        validity=privacy.gateway_validity(
            claim.type, claim.expires_at, now, settings.ip2sms_validity
        ),
    )


class Window:
    """Up to `size` send requests of one scope (a queue class, or given ids) in flight.

    Single-threaded: every statement runs on the caller's thread (`db`); the libcurl pool's
    thread only settles futures.
    """

    def __init__(
        self,
        scope: _Scope,
        size: int,
        settings: Settings,
        db: _Db,
        client: IP2SMSClient | None = None,
        clock: Callable[[], float] = time.monotonic,
        *,
        keep_results: bool = True,
    ) -> None:
        self.scope = scope
        self.keep_results = keep_results
        self.size = size
        self.settings = settings
        self.db = db
        self.clock = clock
        self.request = _request
        self.attempts = routing.Attempts(
            functools.partial(_request, now=utcnow(), settings=settings), settings, db, client
        )
        self.flights: list[flights.Flight] = []
        # How many were claimed, and what happened to each message touched (a drain keeps
        # the counts only: its results would grow with every message of its run).
        self.result = BatchResult()
        self.counts: dict[str, int] = {}
        self.claims = 0  # claim statements that claimed something
        self.accounts: dict[int, Account] = {}
        self._waiting: list[_Write] = []  # held back by a rule: written with the next group
        self._later: list[outbox.Dispatch] = []
        self._recorded_at = float("-inf")  # clock() of the last group recorded
        self.latency = 0.0  # seconds: the median request of the last group answered
        # Segments of prepaid messages in flight, not yet charged: the next claim's balance
        # check counts them, as if charged.
        self._reserved: dict[uuid.UUID, tuple[int, int]] = {}

    @property
    def free(self) -> int:
        return max(0, self.size - len(self.flights))

    def fill(self, limit: int, now: dt.datetime | None = None) -> int:
        """Claim up to `limit` due messages, apply the rules, route and start their
        requests; returns how many were claimed."""
        settings, db = self.settings, self.db
        now = now or utcnow()
        accounts = _accounts(db)
        for account_id, segments in self._reserved.values():
            account = accounts.get(account_id)
            if account is not None and not account.postpaid:
                account.credits -= segments
        self.accounts.update(accounts)
        permissions = {a.id: account_may_send(a, now, settings) for a in accounts.values()}
        blocked = {i: p for i, p in permissions.items() if not p.allowed}
        deferred, later = defer_blocked(self.scope, blocked, now, db)
        self._tally(deferred)
        self._later += later
        allowed = sorted(i for i, p in permissions.items() if p.allowed)
        claims = _claim(self.scope, allowed, now, limit, settings, db)
        self.result.claimed += len(claims)
        ids = self.scope.ids
        if ids is not None and len(claims) < len(ids):
            # Given messages the claim refused because they expired or were superseded end
            # now, explained (a drain leaves those to the privacy sweep).
            ended = privacy.end_unsendable(settings, now=now, ids=ids)
            self._tally({i: AttemptResult(_ENDED[s], detail=s.value) for i, s in ended})
        if not claims:
            return 0
        self.claims += 1
        go, writes = message_rules(claims, accounts, now, settings)
        self._waiting += writes
        if go:
            with alone(db.auto):
                table = gateway_routes.routes(db.auto, settings)
            self.attempts.refresh(accounts, table)
            self.attempts.build = functools.partial(self.request, now=now, settings=settings)
            flights, held = self.attempts.start(go)
            for claim, reason, wait in held:
                self._waiting.append(_not_sent(claim, Outcome.DEFERRED, reason, wait, now))
            for flight in flights:
                c = flight.claim
                self._reserved[c.id] = (c.account_id, c.segments)
            self.flights += flights
        return len(claims)

    def collect(
        self, timeout: float | None, gather: float = 0.0, enough: int | None = None
    ) -> None:
        """Wait until an answer is in (`timeout` at most; None: until one is), then record
        every answered request, and whatever the rules held back, as one group.

        With `gather`, a group is recorded at most that often: answers that come within
        it join the group (fewer, larger groups; the statements cost per group). Only
        requests out for less than `gather` (or twice the recent latency) are waited for:
        one out longer is late, and waiting for it made every group wait the whole
        `gather` (and the next claim with it) while any request hung: a barrier. With
        `enough` (a backlog waits), the group is recorded once that many are answered: the
        slots they free are claimed again while the rest are still out."""
        flights.wait_any(self.flights, timeout, self.clock)
        since = self.clock() - self._recorded_at
        if gather and since < gather:
            late = max(gather, 2 * self.latency)
            started = self.attempts.clock()
            fresh = [f for f in self.flights if started - f.started < late]
            flights.wait_all(fresh, gather - since, self.clock, enough)
        now = self.clock()
        answered, self.flights = flights.split_done(self.flights, now)
        if not answered:
            return
        self.latency = sorted(f.seconds(now) for f in answered)[len(answered) // 2]
        final, again, held = self.attempts.settle(answered)
        self.flights += again
        at = utcnow()
        for claim, reason, wait in held:
            self._waiting.append(_not_sent(claim, Outcome.DEFERRED, reason, wait, at))
        for claim, gateway, answer in final:
            self._reserved.pop(claim.id, None)
            self._waiting.append(self._write(claim, gateway, answer, at))
        self.record(at)

    def _write(self, claim: Claim, gateway: str, answer: flights.Answer, at: dt.datetime) -> _Write:
        table = self.attempts.table
        settings = self.settings
        bound = claim.gateway is not None and table is not None and table.routes[0].from_table
        if isinstance(answer, GatewayError) and bound and routing.movable(answer):
            # Bound to a gateway that may have it already, and that refuses for now: it
            # waits for that gateway (the attempt given back), never sent elsewhere.
            wait = settings.sms_gateway_probe_seconds
            why = f"waits for gateway {gateway}, which may have it already: {answer.reason}"
            return _not_sent(claim, Outcome.DEFERRED, why, wait, at)
        if isinstance(answer, GatewayError):
            write = _failed(claim, answer, at, settings)
            # A definite refusal leaves it free to go anywhere next time (unless an earlier
            # attempt's unknown outcome holds it to its gateway).
            keep = claim.gateway or (None if routing.movable(answer) else gateway)
            return dataclasses.replace(write, gateway=keep, set_gateway=True)
        write = _submitted(claim, answer, at, settings)
        # Post-paid accounts are never charged: their groups never touch accounts.
        prepaid = not self.accounts[claim.account_id].postpaid
        return dataclasses.replace(write, charge=prepaid, gateway=gateway, set_gateway=True)

    def record(self, now: dt.datetime | None = None) -> None:
        """Write what is waiting in one statement (`now`: when its answers came), then the
        gateways' judgement, the metrics, the daily caps and the countdown kicks."""
        writes, self._waiting = self._waiting, []
        now = now or utcnow()
        self._recorded_at = self.clock()
        if writes:
            written = _record(writes, now, self.db)
            if written < len(writes):
                log.warning(
                    "send window: %d of %d claims were lost meanwhile",
                    len(writes) - written,
                    len(writes),
                )
            if self.attempts.table is not None:
                routing.after_batch(self.attempts.table, self.settings, self.db)
            self._tally({w.claim.id: w.result for w in writes})
            _observe(writes, self.accounts, now, self.settings)
            self._later += [
                outbox.Dispatch(w.claim.id, w.claim.type, w.claim.priority, w.result.retry_in)
                for w in writes
                if w.result.retry_in is not None
            ]
        later, self._later = self._later, []
        _kick_later(later)

    def _tally(self, results: dict[uuid.UUID, AttemptResult]) -> None:
        for result in results.values():
            self.counts[result.outcome.value] = self.counts.get(result.outcome.value, 0) + 1
        if self.keep_results:
            self.result.results.update(results)

    def finish(self) -> None:
        """Wait for every request in flight and record it (the one-shot batch, a handover)."""
        while self.flights:
            self.collect(None)
        self.record()


def _observe(
    writes: Sequence[_Write], accounts: dict[int, Account], now: dt.datetime, settings: Settings
) -> None:
    """Metrics and logs for a recorded group: the metrics in one call, the daily caps counted
    once per account, logs per message and per group on DEBUG (the drain sums up on INFO)."""
    if not writes:
        return
    sent: list[metrics.Sent] = []
    submitted: dict[int, int] = {}
    for w in writes:
        c = w.claim
        outcome = w.result.outcome
        answer = None
        if outcome is Outcome.SUBMITTED:
            submitted[c.account_id] = submitted.get(c.account_id, 0) + 1
            if w.result.detail is None:  # the gateway answered (not a uniq_key dupe)
                answer = metrics.Answer(
                    gateway_status=w.gateway_status or "",
                    ready_at=c.ready_at,
                    submitted_at=now,
                    status_changed_at=w.status_changed_at or now,
                )
        account = accounts.get(c.account_id)
        sent.append(
            metrics.Sent(
                type=c.type,
                account=account.name if account is not None else "unknown",
                attempts=c.attempt - w.give_back,
                send_status=w.send_status,
                answer=answer,
            )
        )
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "message %s to %s attempt %d: %s (%s)",
                c.id,
                mask_phone(c.phone_number),
                c.attempt,
                outcome.value,
                w.gateway_id or w.last_error or "",
            )
        if outcome.is_final_failure:
            log.info(
                "message %s to %s: %s after attempt %d (%s)",
                c.id,
                mask_phone(c.phone_number),
                outcome.value,
                c.attempt,
                w.last_error,
            )
    metrics.messages_sent(sent)
    quotas.count_account_sends(submitted, settings)
    if log.isEnabledFor(logging.DEBUG):
        counts: dict[str, int] = {}
        for w in writes:
            counts[w.result.outcome.value] = counts.get(w.result.outcome.value, 0) + 1
        log.debug(
            "send group of %d: %s",
            len(writes),
            ", ".join(f"{n} {k}" for k, n in sorted(counts.items())),
        )


def _kick_later(later: Sequence[outbox.Dispatch]) -> None:
    """Messages that wait a short while (a retry, a rate limit, a pause) get a countdown kick
    (one per queue class, the soonest); longer waits are the sweeper's."""
    longest = outbox.max_countdown()
    soon = [d for d in later if d.countdown is not None and d.countdown <= longest]
    if soon:
        outbox.publish(soon)
