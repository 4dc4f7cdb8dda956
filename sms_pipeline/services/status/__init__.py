"""Status polling: the check schedule, Terminated, the status sweep and one status check.

The schedule (docs/status-checks.md): a message's deadline is SMS_TERMINATE_AFTER_SECONDS
after submission. Its first check is due SMS_STATUS_FIRST_CHECK_SECONDS after submission
(at most the first SMS_STATUS_CHECK_BACKOFF step), later checks one backoff step after the
previous one, and every due time before the deadline is clamped to the deadline, so the
gateway is always asked at (or just after) it.

The sweep runs on beat every SMS_STATUS_POLL_SECONDS:

1. Terminated: a conditional UPDATE ends every message still moving after its deadline
   whose gateway answered a status request sent at or after that deadline
   (`last_checked_at`, a recorded fact, never inferred from `next_check_at`). A message
   without a gateway id cannot be asked and ends at the deadline. A final status is never
   touched.
2. Claim: messages still moving whose `next_check_at` is due are claimed in one UPDATE
   that also moves `next_check_at` forward by the next backoff step (indexed by
   `status_checks`), clamped to the deadline. That bump is the lease: a second,
   overlapping sweep no longer sees the row as due (PostgreSQL adds FOR UPDATE SKIP
   LOCKED so it does not even wait for it; SQLite serialises writers with BEGIN
   IMMEDIATE). `updated_at` is kept as it was: it says when the message changed, not
   when we looked at it.
3. Fan-out: the claimed ids go out SMS_STATUS_CHUNK_SIZE per broker message (through
   `sms_pipeline.broker.dispatch`); the worker reads a chunk in one query, asks the gateway for
   all of it concurrently over the client's status pool (`check_many`), and records all
   the answers in one statement (PostgreSQL; one transaction on SQLite), so a slow
   gateway costs one round trip per chunk, not per message, and status checks never hold
   the send path's connections.

A check asks the gateway, records when it asked (`last_checked_at`, only when the gateway
answered) and writes only a forward change, with a compare-and-set on the status it read,
so a late or repeated check can neither overwrite a final status nor move a message
backwards. A failed check changes nothing: the lease already scheduled the next one.

The modules, one concern each: `rules` (pure: transitions, schedule, deadline),
`checks` (asking the gateway), `record` (writing answers), `outcomes` (what a check
did), `terminate`, `claims` (the lease) and `sweep` (the beat job and its fan-out).
"""

from __future__ import annotations

from sms_pipeline.services.status.checks import StatusClient, check_many, check_status
from sms_pipeline.services.status.claims import Claimed, claim_due_checks
from sms_pipeline.services.status.outcomes import CheckOutcome, CheckResult
from sms_pipeline.services.status.rules import (
    Transition,
    check_delay_seconds,
    checked_after_deadline,
    classify_transition,
    deadline_of,
    first_check_at,
    next_check_time,
    status_date,
    status_rank,
)
from sms_pipeline.services.status.sweep import (
    SweepResult,
    check_inline,
    fan_out,
    sweep_statuses,
)
from sms_pipeline.services.status.terminate import give_up_failing, terminate_overdue

__all__ = [
    "CheckOutcome",
    "CheckResult",
    "Claimed",
    "StatusClient",
    "SweepResult",
    "Transition",
    "check_delay_seconds",
    "check_inline",
    "check_many",
    "check_status",
    "checked_after_deadline",
    "claim_due_checks",
    "classify_transition",
    "deadline_of",
    "fan_out",
    "first_check_at",
    "give_up_failing",
    "next_check_time",
    "status_date",
    "status_rank",
    "sweep_statuses",
    "terminate_overdue",
]
