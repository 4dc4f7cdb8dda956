"""Deterministic fault injection for the gateway simulator, chosen by the destination number.

Pure logic, no I/O. A rule matches when the destination number ends with its suffix
(the longest matching suffix wins). Attempts are counted per message by the state
module (per ``uniq_key`` when sent, else per number + body), so "the first K attempts
fail" works for a client that retries the same message.

Default table (:data:`DEFAULT_RULES`):

======  ==========================  ===================================================
suffix  name                        behaviour
======  ==========================  ===================================================
...01   transient_once              HTTP 503 on the 1st attempt, then accepted
...02   transient_twice             HTTP 503 on the first 2 attempts, then accepted
...03   transient_always            HTTP 503 on every attempt
...04   reject_invalid_number       ``Rejected`` / ``Invalid abonent number`` (permanent)
...05   never_final                 accepted, then Enroute forever
...06   slow                        answers after ``slow_seconds`` (default 15 s), then
                                    accepts: a client that timed out and resends gets
                                    ``uniq_key dupe`` (or a duplicate SMS without one)
...07   malformed                   plain text ``Request not recognized - xml parse failed``
...08   undeliverable               accepted, Enroute, then ``Undeliverable``
...09   throttled_once              HTTP 429 with ``Retry-After: 1`` on the 1st attempt
...10   credits_once                ``Rejected`` / ``Prepaid messages limit exceed`` on the
                                    1st attempt, then accepted
other   (none)                      Accepted -> Enroute -> Delivered
======  ==========================  ===================================================

Beware when choosing demo numbers: about one random number in ten ends in 01..10. Pass
``rules=()`` (CLI ``--no-faults``) for a gateway that always behaves.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from sms_pipeline.gateway.statuses import GatewayStatus


class Action(enum.StrEnum):
    """What the simulator does with one submission."""

    ACCEPT = "accept"
    HTTP_ERROR = "http_error"
    REJECT = "reject"
    MALFORMED = "malformed"
    SLOW = "slow"  # wait, then accept
    DUPLICATE = "duplicate"  # not a rule action: the uniq_key was already accepted


MALFORMED_ANSWER: Final = b"Request not recognized - xml parse failed"

SUFFIX_TRANSIENT_ONCE: Final = "01"
SUFFIX_TRANSIENT_TWICE: Final = "02"
SUFFIX_TRANSIENT_ALWAYS: Final = "03"
SUFFIX_REJECT: Final = "04"
SUFFIX_NEVER_FINAL: Final = "05"
SUFFIX_SLOW: Final = "06"
SUFFIX_MALFORMED: Final = "07"
SUFFIX_UNDELIVERABLE: Final = "08"
SUFFIX_THROTTLED: Final = "09"
SUFFIX_CREDITS: Final = "10"


@dataclass(frozen=True, slots=True)
class Rule:
    """One line of the fault table.

    ``action`` applies to the first ``attempts`` attempts of a message (None = all of
    them); later attempts are accepted. ``final_status`` / ``never_final`` shape the status
    progression of the message once accepted.
    """

    suffix: str
    name: str
    action: Action = Action.ACCEPT
    attempts: int | None = None
    http_status: int = 503
    retry_after: float | None = None
    error: str | None = None
    delay: float | None = None  # SLOW only; None = the simulator's slow_seconds
    final_status: GatewayStatus = GatewayStatus.DELIVERED
    never_final: bool = False

    def __post_init__(self) -> None:
        if not self.suffix or not self.suffix.isdigit():
            raise ValueError(f"rule {self.name!r}: suffix must be digits")
        if self.action is Action.DUPLICATE:
            raise ValueError(f"rule {self.name!r}: duplicate is not a rule action")
        if self.action is Action.REJECT and not self.error:
            raise ValueError(f"rule {self.name!r}: a reject needs an error reason")
        if self.attempts is not None and self.attempts < 0:
            raise ValueError(f"rule {self.name!r}: attempts must be >= 0")

    def fires(self, attempt: int) -> bool:
        """Whether the fault applies to this (1-based) attempt."""
        return self.action is not Action.ACCEPT and (
            self.attempts is None or attempt <= self.attempts
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "suffix": self.suffix,
            "name": self.name,
            "action": self.action.value,
            "attempts": self.attempts,
            "http_status": self.http_status,
            "retry_after": self.retry_after,
            "error": self.error,
            "delay": self.delay,
            "final_status": self.final_status.value,
            "never_final": self.never_final,
        }


DEFAULT_RULES: Final[tuple[Rule, ...]] = (
    Rule(SUFFIX_TRANSIENT_ONCE, "transient_once", Action.HTTP_ERROR, attempts=1),
    Rule(SUFFIX_TRANSIENT_TWICE, "transient_twice", Action.HTTP_ERROR, attempts=2),
    Rule(SUFFIX_TRANSIENT_ALWAYS, "transient_always", Action.HTTP_ERROR),
    Rule(SUFFIX_REJECT, "reject_invalid_number", Action.REJECT, error="Invalid abonent number"),
    Rule(SUFFIX_NEVER_FINAL, "never_final", never_final=True),
    Rule(SUFFIX_SLOW, "slow", Action.SLOW),
    Rule(SUFFIX_MALFORMED, "malformed", Action.MALFORMED),
    Rule(SUFFIX_UNDELIVERABLE, "undeliverable", final_status=GatewayStatus.UNDELIVERABLE),
    Rule(
        SUFFIX_THROTTLED,
        "throttled_once",
        Action.HTTP_ERROR,
        attempts=1,
        http_status=429,
        retry_after=1,
    ),
    Rule(
        SUFFIX_CREDITS,
        "credits_once",
        Action.REJECT,
        attempts=1,
        error="Prepaid messages limit exceed",
    ),
)


@dataclass(frozen=True, slots=True)
class Decision:
    """What to answer to one submission: the action, and the rule that chose it."""

    action: Action
    attempt: int
    rule: Rule | None = None

    @property
    def is_fault(self) -> bool:
        return self.action not in (Action.ACCEPT, Action.DUPLICATE)


class RuleTable:
    """Rules indexed for a cheap longest-suffix lookup."""

    __slots__ = ("_by_suffix", "_lengths", "rules")

    def __init__(self, rules: Iterable[Rule] = DEFAULT_RULES) -> None:
        self.rules = tuple(rules)
        self._by_suffix: dict[str, Rule] = {}
        for rule in self.rules:
            if rule.suffix in self._by_suffix:
                raise ValueError(f"two rules for suffix {rule.suffix!r}")
            self._by_suffix[rule.suffix] = rule
        self._lengths = tuple(sorted({len(s) for s in self._by_suffix}, reverse=True))

    def __repr__(self) -> str:
        return f"RuleTable({[r.suffix for r in self.rules]})"

    def match(self, number: str) -> Rule | None:
        """The rule for a destination number (longest suffix), or None."""
        number = number.rstrip()
        for length in self._lengths:
            rule = self._by_suffix.get(number[-length:])
            if rule is not None:
                return rule
        return None

    def decide(self, number: str, attempt: int) -> Decision:
        """The decision for the ``attempt``-th (1-based) submission of a message."""
        rule = self.match(number)
        if rule is not None and rule.fires(attempt):
            return Decision(rule.action, attempt, rule)
        return Decision(Action.ACCEPT, attempt, rule)


__all__ = [
    "DEFAULT_RULES",
    "MALFORMED_ANSWER",
    "SUFFIX_CREDITS",
    "SUFFIX_MALFORMED",
    "SUFFIX_NEVER_FINAL",
    "SUFFIX_REJECT",
    "SUFFIX_SLOW",
    "SUFFIX_THROTTLED",
    "SUFFIX_TRANSIENT_ALWAYS",
    "SUFFIX_TRANSIENT_ONCE",
    "SUFFIX_TRANSIENT_TWICE",
    "SUFFIX_UNDELIVERABLE",
    "Action",
    "Decision",
    "Rule",
    "RuleTable",
]
