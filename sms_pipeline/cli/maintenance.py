"""`sms-pipeline sweep` and `sms-pipeline replicate`: the periodic jobs, run by hand.

`sweep --once` runs one status sweep and checks the claimed messages in this process
(no broker, no worker needed); `replicate --once` runs one replication pass. Without
`--once` each repeats at its beat period until interrupted.
"""

from __future__ import annotations

import argparse
import collections
import time
from typing import Any

from sms_pipeline.settings import get_settings


def _sweep_once() -> None:
    from sms_pipeline.services import status

    result = status.sweep_statuses(inline=True)
    outcomes = collections.Counter(check.outcome.value for check in result.checks)
    detail = ", ".join(f"{name} {count}" for name, count in sorted(outcomes.items()))
    print(
        f"status sweep: terminated {result.terminated}, claimed {result.claimed}, "
        f"checked {result.dispatched}" + (f" ({detail})" if detail else ""),
        flush=True,
    )


def _replicate_once() -> None:
    from sms_pipeline.services.intake import replication

    result = replication.replicate_verifications()
    print(
        f"replication: inserted {result.inserted} (to send {result.dispatched}, "
        f"tracked {result.tracked}, refused {result.invalid})",
        flush=True,
    )


def _repeat(job: Any, once: bool, period: float) -> int:
    while True:
        job()
        if once:
            return 0
        time.sleep(period)


def _sweep(args: argparse.Namespace) -> int:
    return _repeat(_sweep_once, args.once, get_settings().sms_status_poll_seconds)


def _replicate(args: argparse.Namespace) -> int:
    return _repeat(_replicate_once, args.once, get_settings().sms_replication_seconds)


def register(subparsers: Any) -> None:
    sweep = subparsers.add_parser(
        "sweep", help="status sweep: Terminated + check moving messages (in this process)"
    )
    sweep.add_argument("--once", action="store_true", help="run one sweep and exit")
    sweep.set_defaults(func=_sweep)
    replicate = subparsers.add_parser(
        "replicate", help="replicate new verification SMS into sms_log"
    )
    replicate.add_argument("--once", action="store_true", help="run one pass and exit")
    replicate.set_defaults(func=_replicate)
