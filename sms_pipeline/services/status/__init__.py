"""Status polling: the check schedule, Terminated, the status sweep and one status check.

docs/status-checks.md gives the schedule and the rules. The sweep (beat, every
SMS_STATUS_POLL_SECONDS) ends what is past its deadline (`terminate`), claims what is due
(`claims`: the bump of `next_check_at` is the lease) and sends the claimed ids out in
chunks (`sweep`); a worker asks the gateway for a chunk at once (`checks`) and records the
answers (`record`): only a forward change, compared-and-set on the status it read, so a
late or repeated check never overwrites a final status nor moves a message backwards.
`rules` holds the pure parts (transitions, schedule, deadline), `outcomes` what a check did.
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
