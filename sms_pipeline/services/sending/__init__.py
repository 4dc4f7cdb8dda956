"""Sending through a window: claim due messages, keep their gateway calls in flight, record.

A drain keeps up to SMS_SEND_WINDOW requests of its queue class in flight (`window`),
each step a constant number of statements whatever its size:

1. **Claim** (one statement, committed before the gateway is called): as many due QUEUED
   messages of one queue class (or of the given ids) as there are free slots, of accounts
   that may send now, highest priority first, become SENDING with `attempts + 1` and a
   lease. A crash mid-call leaves rows that say an attempt was under way; their lease
   expires and the outbox sweeper puts them back. Every message carries `uniq_key`, so a
   repeated submission is refused by the gateway rather than delivered twice.
2. **Start**: the claimed messages' requests go out over one keep-alive pool without
   waiting, each under a total deadline; each answer settles its own future.
3. **Record** (one transaction per group): whatever has been answered when the drain
   wakes, in one executemany, credits charged for what was submitted, accounts paused
   after a 429 or an exhausted balance. A slow request holds only its own slot.

The send rules live once each: the account's (active, pause, window) in
`accounts.account_permission`, credits in `accounts.has_credits`, the rate limit in
`accounts.take_rate_token`, the daily cap in `quotas.account_cap_reached`, the opt-out in
`optout.stops`, expiry and supersede in `privacy.still_sendable`; `eligibility` applies
them around the claim. The modules: `claim`, `eligibility`, `record`, `window` (claim,
start through `gateways.routing`, record as answers come), `drain` (the window until the
queue is empty), `batch` (the window filled once: CLI, tests) and `results`.
"""

from .batch import send_batch
from .claim import Claim
from .drain import DrainResult, drain
from .results import AttemptResult, BatchResult, Outcome, retry_delay, with_db_retry

__all__ = [
    "AttemptResult",
    "BatchResult",
    "Claim",
    "DrainResult",
    "Outcome",
    "drain",
    "retry_delay",
    "send_batch",
    "with_db_retry",
]
