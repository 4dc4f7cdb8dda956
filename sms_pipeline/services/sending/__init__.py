"""Sending in batches: claim due messages, call the gateway for them concurrently, record.

One batch is three steps, each a constant number of statements whatever its size:

1. **Claim** (one statement, committed before the gateway is called): due QUEUED messages of
   one queue class (or of the given ids) whose account may send now, highest priority
   first, become SENDING with `attempts + 1` and a lease. A crash mid-call leaves rows
   that say an attempt was under way; their lease expires and the outbox sweeper puts
   them back. Every message carries `uniq_key`, so a repeated submission is refused by the
   gateway rather than delivered twice.
2. **Submit**: the claimed messages go to the gateway concurrently over one keep-alive pool,
   each exchange under a total deadline.
3. **Record** (one transaction): every outcome in one executemany, credits charged for what
   was submitted, accounts paused after a 429 or an exhausted balance.

The send rules live once each: the account's (active, pause, window) in
`accounts.account_permission`, credits in `accounts.has_credits`, the rate limit in
`accounts.take_rate_token`, the daily cap in `quotas.account_cap_reached`, the opt-out in
`optout.stops`, expiry and supersede in `privacy.still_sendable`; `eligibility` applies
them around the claim. The modules: `claim`, `eligibility`, `record`, `batch` (one batch:
claim, submit through `gateways.routing`, record), `drain` and `results`.
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
