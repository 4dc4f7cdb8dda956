"""The demo's message mix: which faults, how many of each, and what each must end as.

A fault is chosen by the number's last two digits (the simulator's rules); the numbers
are realistic but random and are never printed.
"""

from __future__ import annotations

import dataclasses
import random


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    suffix: str | None  # the simulator's fault rule (None: a number with no rule)
    expected: str  # the outcome label the message must end with
    share: float  # fraction of --count
    story: str


NORMAL = Scenario("delivered", None, "Delivered", 0.0, "Accepted → Enroute → Delivered")
SCENARIOS: tuple[Scenario, ...] = (
    Scenario("transient once", "01", "Delivered", 0.03, "HTTP 503 once, retried, delivered"),
    Scenario("transient twice", "02", "Delivered", 0.02, "HTTP 503 twice, delivered on the 3rd"),
    Scenario("gateway down", "03", "RETRYCOUNT EXCEEDED", 0.02, "HTTP 503 on all 3 attempts"),
    Scenario("rejected", "04", "REJECTED", 0.02, "Rejected: Invalid abonent number"),
    Scenario("never final", "05", "Terminated", 0.02, "stays Enroute; ours to terminate"),
    Scenario("slow gateway", "06", "Delivered", 0.02, "answer after 2 s, still in time"),
    Scenario(
        "malformed answer", "07", "RETRYCOUNT EXCEEDED", 0.01, "plain-text answer on all 3 attempts"
    ),
    Scenario("undeliverable", "08", "Undeliverable", 0.03, "the handset never got it"),
    Scenario("throttled once", "09", "Delivered", 0.01, "HTTP 429: account paused 1 s, then sent"),
    Scenario(
        "out of credits once", "10", "Delivered", 0.01, "prepaid limit: account paused, then sent"
    ),
)
INVALID_SHARE = 0.02
SQL_ROUTE_GOOD = Scenario("SQL route", None, "Delivered", 0.0, "row in sms_queue → sent")
SQL_ROUTE_BAD_NUMBER = Scenario(
    "SQL route, bad number", None, "number invalid", 0.0, "garbage NumTo: logged, not sent"
)
SQL_ROUTE_EMPTY_TEXT = Scenario(
    "SQL route, empty text", None, "data1 invalid", 0.0, "empty Data1: logged, not sent"
)
REPLICATED = Scenario(
    "replicated verification", None, "Delivered", 0.0, "row in verifications → sms_log"
)
OPTED_OUT = Scenario(
    "opted out", None, "OPTED OUT", 0.0, "the number sent STOP first: a text is logged, not sent"
)
# The demo's second act (demo/outage.py): plain messages across two gateways, one of which
# is stopped mid-run; every one must still end Delivered.
GATEWAY_OUTAGE = Scenario(
    "gateway outage", None, "Delivered", 0.0, "1 of 2 gateways stopped mid-run: the other sends"
)
# Every scenario, in the order the report lists them (names are unique: the producer
# child hands its record back by name).
ALL_SCENARIOS: tuple[Scenario, ...] = (
    NORMAL,
    *SCENARIOS,
    SQL_ROUTE_GOOD,
    SQL_ROUTE_BAD_NUMBER,
    SQL_ROUTE_EMPTY_TEXT,
    REPLICATED,
    OPTED_OUT,
    GATEWAY_OUTAGE,
)
# The simulator's fault suffixes the demo sends to (every rule it has; a test holds them equal).
FAULT_SUFFIXES: frozenset[str] = frozenset(s.suffix for s in SCENARIOS if s.suffix)
BY_NAME: dict[str, Scenario] = {s.name: s for s in ALL_SCENARIOS}

# Ukrainian mobile operator codes: realistic numbers for the simulator, never real people
# in practice (random subscriber digits), and still never printed.
_OPERATOR_CODES = ("50", "63", "66", "67", "68", "73", "93", "95", "96", "97", "98", "99")
_INVALID_NUMBERS = ("+38012", "12345", "not-a-number", "+380 93 ABC", "+999999999999999")
_TYPES = ("verification", "2FA", "medication_request", "text")
_TYPE_WEIGHTS = (30, 15, 20, 35)
_TEXTS = (
    "Reminder: your appointment is tomorrow at {hh}:30. Reply STOP to opt out.",
    "Нагадування: прийом у лікаря завтра о {hh}:30.",
    "Your test results are ready in your patient account.",
)


def phone_number(rng: random.Random, suffix: str | None) -> str:
    """A valid +380 mobile number ending in `suffix` (or in no fault suffix at all)."""
    tail = suffix if suffix is not None else f"{rng.randint(11, 99)}"
    return f"+380{rng.choice(_OPERATOR_CODES)}{rng.randint(0, 99999):05d}{tail}"


def message_body(rng: random.Random, message_type: str) -> str:
    code = f"{rng.randint(0, 999999):06d}"
    if message_type == "verification":
        return f"Your verification code is {code}. Never share it."
    if message_type == "2FA":
        return f"Login code: {code}. Valid for 5 minutes."
    if message_type == "medication_request":
        return f"Prescription {rng.randint(1000, 9999)}-{code[:4]} is ready: show code {code}."
    return rng.choice(_TEXTS).format(hh=rng.randint(8, 17))


@dataclasses.dataclass(frozen=True)
class PlannedMessage:
    scenario: Scenario | None  # None: an invalid number, refused at enqueue
    number: str
    body: str
    type: str
    priority: int


def plan_messages(count: int, rng: random.Random) -> list[PlannedMessage]:
    """`count` messages: a few of each fault scenario and bad numbers, the rest normal."""
    specials: list[Scenario | None] = [None] * max(1, round(count * INVALID_SHARE))
    for fault in SCENARIOS:
        specials += [fault] * max(1, round(count * fault.share))
    chosen = specials[:count] + [NORMAL] * max(0, count - len(specials))
    rng.shuffle(chosen)
    planned = []
    for scenario in chosen:
        message_type = rng.choices(_TYPES, weights=_TYPE_WEIGHTS)[0]
        number = (
            rng.choice(_INVALID_NUMBERS) if scenario is None else phone_number(rng, scenario.suffix)
        )
        priority = 1 if message_type in ("verification", "2FA") else 0
        body = message_body(rng, message_type)
        planned.append(PlannedMessage(scenario, number, body, message_type, priority))
    return planned
