"""The `sms-pipeline` command.

Each command group lives in its own module under `sms_pipeline.cli` with a
`register(subparsers)` function that adds its sub-commands and sets `func` on them;
`func(args) -> int` is the exit code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from sms_pipeline.settings import SettingsError

# One module per command group; the order is the order of `--help`.
COMMAND_MODULES: tuple[str, ...] = (
    "db",
    "runtime",
    "simulator",
    "messages",
    "monitoring",
    "maintenance",
    "demo",
    "api",
    "inbound",
    "privacy",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sms-pipeline",
        description="The SMS channel: Celery pipeline over the IP2SMS gateway.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"sms_pipeline.cli.{name}")
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        code: int = args.func(args)
    except SettingsError as exc:
        print(f"sms-pipeline: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
