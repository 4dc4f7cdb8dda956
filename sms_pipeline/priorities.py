"""The one range of message priorities, for every entry point.

Python (`enqueue_sms`), HTTP (`POST /v1/messages`), the SQL route (`sms_queue.priority`)
and the command line (`send --priority`) accept the same integers: PRIORITY_MIN to
PRIORITY_MAX, higher goes first. Ten steps, because that is what the broker can order
(Redis priority steps 0-9).
"""

from __future__ import annotations

PRIORITY_MIN = 0
PRIORITY_MAX = 9
PRIORITY_DEFAULT = 0
PRIORITY_RULE = f"an integer from {PRIORITY_MIN} to {PRIORITY_MAX} (higher goes first)"


def priority_problem(value: object) -> str | None:
    """Why `value` is not a priority, or None when it is one."""
    if isinstance(value, bool) or not isinstance(value, int):
        return f"must be {PRIORITY_RULE}"
    if not PRIORITY_MIN <= value <= PRIORITY_MAX:
        return f"must be {PRIORITY_RULE}"
    return None
