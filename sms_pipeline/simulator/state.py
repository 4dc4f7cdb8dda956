"""In-memory message store of the gateway simulator and each message's status clock.

A message's status is computed from its age, not advanced by a timer, so thousands of
messages cost nothing while they wait::

    age < enroute_after          Accepted
    age < deliver_after          Enroute   (forever for a never-final rule)
    otherwise                    the rule's final status (Delivered by default)

Both delays count from submission. Not thread-safe by design: the simulator mutates it
from its single event-loop thread only. Message bodies are never stored, only a hash
(attempts without a uniq_key are counted per number + body).
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Final

from sms_pipeline.gateway.codec import SendRequest, format_gateway_date
from sms_pipeline.gateway.statuses import GatewayStatus
from sms_pipeline.simulator.rules import DEFAULT_RULES, Action, Decision, Rule, RuleTable

# The Ukrainian gateway stamps its answers in local time (+0300 in the protocol samples).
GATEWAY_TZ: Final = timezone(timedelta(hours=3))
DEFAULT_MAX_MESSAGES: Final = 1_000_000

Clock = Callable[[], float]


@dataclass(slots=True)
class SimMessage:
    """One accepted message."""

    gateway_id: str
    phone_number: str
    uniq_key: str | None
    ext_id: str | None
    source: str | None
    body_chars: int
    created: float  # clock() at acceptance
    created_wall: float  # time.time() at acceptance, for answer dates
    rule: str | None
    final_status: GatewayStatus
    never_final: bool

    def status_at(
        self, now: float, enroute_after: float, deliver_after: float
    ) -> tuple[GatewayStatus, float]:
        """(status, seconds after creation at which it was reached)."""
        age = now - self.created
        if age < enroute_after:
            return GatewayStatus.ACCEPTED, 0.0
        if self.never_final or age < deliver_after:
            return GatewayStatus.ENROUTE, enroute_after
        return self.final_status, max(deliver_after, enroute_after)


class SimState:
    """Messages, attempt counters, uniq_key index and statistics."""

    def __init__(
        self,
        *,
        rules: Iterable[Rule] | RuleTable = DEFAULT_RULES,
        enroute_after: float = 1.0,
        deliver_after: float = 2.0,
        clock: Clock = time.monotonic,
        max_messages: int = DEFAULT_MAX_MESSAGES,
    ) -> None:
        self.rules = rules if isinstance(rules, RuleTable) else RuleTable(rules)
        self.enroute_after = enroute_after
        self.deliver_after = deliver_after
        self.clock = clock
        self.max_messages = max_messages
        self.in_flight = 0  # gateway requests being answered now (a reset keeps counting them)
        self.reset()

    def reset(self) -> None:
        """Forget every message, counter and statistic."""
        self.messages: dict[str, SimMessage] = {}
        self.attempts: dict[str, int] = {}
        self.accepted_keys: dict[str, str] = {}  # uniq_key -> gateway_id
        self.stats: Counter[str] = Counter()
        # Requests by "path login" (which login each request carried), and the login each
        # accepted uniq_key came with.
        self.by_login: Counter[str] = Counter()
        # Set (e.g. 503): every send and status request gets this HTTP status.
        self.fail_all: int | None = None
        self.accepted_login: dict[str, str] = {}
        self.by_rule: Counter[str] = Counter()
        self.by_suffix: Counter[str] = Counter()
        # The most gateway requests answered at once since the reset: how many connections a
        # client really keeps busy (a batch that fits its pool arrives in one wave).
        self.peak_in_flight = self.in_flight
        # Ids look like the gateway's long digit strings and stay unique across restarts.
        self._ids = itertools.count(int(time.time()) * 10_000_000 + 1)

    def request_started(self) -> None:
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)

    def request_ended(self) -> None:
        self.in_flight -= 1

    # ------------------------------------------------------------------ sending

    @staticmethod
    def attempt_key(req: SendRequest) -> str:
        """Which submissions count as attempts of the same message."""
        if req.uniq_key:
            return "u:" + req.uniq_key
        digest = hashlib.blake2b(req.body.encode("utf-8", "surrogatepass"), digest_size=12)
        return f"n:{req.phone_number}:{digest.hexdigest()}"

    def submit(self, req: SendRequest) -> Decision:
        """Count one submission and decide what to answer (no message is stored yet)."""
        self.stats["submissions"] += 1
        key = self.attempt_key(req)
        attempt = self.attempts.get(key, 0) + 1
        self.attempts[key] = attempt
        self._trim(self.attempts)
        if req.uniq_key and req.uniq_key in self.accepted_keys:
            self.stats["duplicates"] += 1
            self.stats["rejected"] += 1
            return Decision(Action.DUPLICATE, attempt)
        decision = self.rules.decide(req.phone_number, attempt)
        rule = decision.rule
        if rule is not None:
            self.by_suffix[rule.suffix] += 1
        if decision.is_fault and rule is not None:
            self.stats["faults_injected"] += 1
            self.by_rule[rule.name] += 1
            self.stats[decision.action.value] += 1
            if decision.action is Action.REJECT:
                self.stats["rejected"] += 1
        return decision

    def is_duplicate(self, uniq_key: str | None) -> bool:
        """Whether a message with this uniq_key was accepted already."""
        return bool(uniq_key) and uniq_key in self.accepted_keys

    def count_late_duplicate(self) -> None:
        """A slow submission found its uniq_key accepted by a retry meanwhile."""
        self.stats["duplicates"] += 1
        self.stats["rejected"] += 1

    def accept(self, req: SendRequest, decision: Decision) -> SimMessage:
        """Store an accepted message and start its status clock."""
        rule = decision.rule
        message = SimMessage(
            gateway_id=str(next(self._ids)),
            phone_number=req.phone_number,
            uniq_key=req.uniq_key,
            ext_id=req.ext_id,
            source=req.source,
            body_chars=len(req.body),
            created=self.clock(),
            created_wall=time.time(),
            rule=rule.name if rule else None,
            final_status=rule.final_status if rule else GatewayStatus.DELIVERED,
            never_final=rule.never_final if rule else False,
        )
        self.messages[message.gateway_id] = message
        self._trim(self.messages)
        if req.uniq_key:
            self.accepted_keys[req.uniq_key] = message.gateway_id
            self._trim(self.accepted_keys)
        self.stats["accepted"] += 1
        return message

    # ------------------------------------------------------------------ status

    def status(self, gateway_id: str) -> tuple[SimMessage, GatewayStatus, str] | None:
        """(message, current status, gateway date string), or None for an unknown id."""
        self.stats["status_requests"] += 1
        message = self.messages.get(gateway_id)
        if message is None:
            self.stats["status_unknown"] += 1
            return None
        status, offset = message.status_at(self.clock(), self.enroute_after, self.deliver_after)
        return message, status, gateway_date(message.created_wall + offset)

    # ------------------------------------------------------------------ introspection

    def message_dict(self, gateway_id: str) -> dict[str, Any] | None:
        message = self.messages.get(gateway_id)
        if message is None:
            return None
        status, _ = message.status_at(self.clock(), self.enroute_after, self.deliver_after)
        return {
            "gateway_id": message.gateway_id,
            "phone_number": message.phone_number,
            "uniq_key": message.uniq_key,
            "ext_id": message.ext_id,
            "source": message.source,
            "body_chars": message.body_chars,
            "rule": message.rule,
            "status": status.value,
            "age_seconds": round(self.clock() - message.created, 3),
        }

    def submissions_for(self, uniq_key: str) -> dict[str, Any]:
        return {
            "uniq_key": uniq_key,
            "submissions": self.attempts.get("u:" + uniq_key, 0),
            "gateway_id": self.accepted_keys.get(uniq_key),
        }

    def stats_dict(self) -> dict[str, Any]:
        keys = (
            "submissions",
            "accepted",
            "rejected",
            "duplicates",
            "status_requests",
            "status_unknown",
            "faults_injected",
            "http_error",
            "reject",
            "malformed",
            "slow",
            "bad_requests",
            "auth_failures",
        )
        out: dict[str, Any] = {k: self.stats.get(k, 0) for k in keys}
        out["messages"] = len(self.messages)
        out["in_flight"] = self.in_flight
        out["peak_in_flight"] = self.peak_in_flight
        out["by_rule"] = dict(self.by_rule)
        out["by_number_suffix"] = dict(self.by_suffix)
        out["by_login"] = dict(self.by_login)
        return out

    def _trim(self, mapping: dict[str, Any]) -> None:
        # Bound memory for long benchmark runs: dicts keep insertion order, drop the oldest.
        if len(mapping) > self.max_messages:
            del mapping[next(iter(mapping))]


_date_cache: tuple[int, str] = (0, "")


def gateway_date(wall: float | None = None) -> str:
    """The gateway's RFC 1123 date (+0300) for a Unix time (now by default)."""
    global _date_cache
    second = int(time.time() if wall is None else wall)
    cached_second, text = _date_cache
    if cached_second != second:
        # Formatting costs more than the rest of an answer; one per second is enough.
        text = format_gateway_date(datetime.fromtimestamp(second, UTC).astimezone(GATEWAY_TZ))
        _date_cache = (second, text)
    return text


__all__ = ["GATEWAY_TZ", "SimMessage", "SimState", "gateway_date"]
