"""Sending in batches: claim due messages, call the gateway for them concurrently, record.

One batch is three steps, each a constant number of statements whatever its size:

1. **Claim** (one statement, committed before the gateway is called): the due messages
   `eligibility` admits, highest priority first, become SENDING with `attempts + 1` and a
   lease; an expired lease puts a crashed attempt back, and `uniq_key` makes the gateway
   refuse a repeat rather than deliver it twice.
2. **Submit**: concurrently over one keep-alive pool, each exchange under a total deadline.
3. **Record** (one transaction): every outcome, credits charged, accounts paused after a 429
   or an exhausted balance.

`eligibility` names the send rule once, in the order its parts apply. The modules: `scope`,
`eligibility`, `claim`, `record`, `batch` (claim, submit through `gateways.routing`,
record), `drain` and `results`.
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
