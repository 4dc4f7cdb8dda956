"""`sms-pipeline demo`: the whole pipeline on this machine, no server to install."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def _run(args: argparse.Namespace) -> int:
    from sms_pipeline.demo import DemoOptions, run_demo

    # The demo tells its own story; the pipeline's INFO logs go to the children's log files.
    logging.getLogger().setLevel(logging.WARNING)
    return run_demo(
        DemoOptions(
            count=args.count,
            keep=args.keep,
            data_dir=args.data_dir,
            timeout=args.timeout,
            concurrency=args.concurrency,
            seed=args.seed,
            gateway_outage=not args.no_gateway_outage,
        )
    )


def register(subparsers: Any) -> None:
    demo = subparsers.add_parser(
        "demo",
        help="run the pipeline end to end on this machine (simulated gateway, no servers)",
        description="Start the gateway simulator, a worker and beat in embedded mode, send a "
        "realistic mix of messages (faults included), follow them to their final states and "
        "print the report. Exit 1 if some message did not end as the rules promise.",
    )
    demo.add_argument("--count", type=_positive, default=200, help="messages to enqueue (200)")
    demo.add_argument(
        "--keep", action="store_true", help="keep the data of earlier runs (default: wipe it)"
    )
    demo.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where the demo keeps its database, broker and logs; wiped first unless --keep "
        "(default: the `demo` folder in SMS_DATA_DIR)",
    )
    demo.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds to wait for every message to be final (default: scaled with --count)",
    )
    demo.add_argument("--concurrency", type=_positive, default=8, help="worker threads (8)")
    demo.add_argument("--seed", type=int, default=None, help="random seed for the message mix")
    demo.add_argument(
        "--no-gateway-outage",
        action="store_true",
        help="skip the second act (two gateways, one stopped mid-run)",
    )
    demo.set_defaults(func=_run, uses_data=False)
