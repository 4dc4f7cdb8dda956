"""Sending through a window: claim due messages, keep their gateway calls in flight, record.

A drain keeps up to SMS_SEND_WINDOW requests of its queue class in flight (`window`),
each step a constant number of statements whatever its size:

1. **Claim** (one statement, committed before the gateway is called): as many due messages
   as there are free slots that `eligibility` admits, highest priority first, become SENDING
   with `attempts + 1` and a lease; an expired lease puts a crashed attempt back, and
   `uniq_key` makes the gateway refuse a repeat rather than deliver it twice.
2. **Start**: the requests go out over one keep-alive pool without waiting, each under a
   total deadline; each answer settles its own future.
3. **Record** (one transaction per group): whatever has been answered when the drain wakes,
   credits charged, accounts paused after a 429 or an exhausted balance. A slow request
   holds only its own slot.

`eligibility` names the send rule once, in the order its parts apply. The modules: `scope`,
`eligibility`, `claim`, `record`, `window` (claim, start through `gateways.routing`, record
as answers come), `drain` (the window until the queue is empty), `batch` (the window filled
once: CLI, tests) and `results`.
"""

from .batch import send_batch
from .drain import DrainResult, drain
from .results import AttemptResult, BatchResult, Outcome, retry_delay, with_db_retry
from .scope import Claim

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
