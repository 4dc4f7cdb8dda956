"""What one status check did, as the callers (tasks, CLI, tests) see it."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass


class CheckOutcome(enum.StrEnum):
    CHANGED = "changed"
    UNCHANGED = "unchanged"
    BACKWARDS = "backwards"  # ignored and counted
    NOT_MOVING = "not_moving"  # final already (or gone): the gateway was not asked
    NO_GATEWAY_ID = "no_gateway_id"  # cannot be polled; Terminated will end it
    GATEWAY_ERROR = "gateway_error"  # left for the next sweep
    LOST_RACE = "lost_race"  # the row changed between our read and our write
    MISSING = "missing"


@dataclass(frozen=True)
class CheckResult:
    message_id: uuid.UUID
    outcome: CheckOutcome
    old_status: str | None = None
    new_status: str | None = None
