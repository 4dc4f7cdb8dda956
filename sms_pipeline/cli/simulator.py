"""`sms-pipeline gateway-sim`: the IP2SMS gateway simulator."""

from __future__ import annotations

import argparse
from typing import Any


def _run(args: argparse.Namespace) -> int:
    from sms_pipeline.simulator.cli import main_from_args

    return main_from_args(args) or 0


def register(subparsers: Any) -> None:
    from sms_pipeline.simulator.cli import add_arguments

    parser = subparsers.add_parser(
        "gateway-sim", help="run the IP2SMS gateway simulator (demo, tests, benchmarks)"
    )
    add_arguments(parser)
    parser.set_defaults(func=_run, needs_data_dir=False)
