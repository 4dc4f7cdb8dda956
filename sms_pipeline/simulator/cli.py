"""Command-line wiring for ``sms-pipeline gateway-sim`` (and ``python -m ...simulator.cli``).

The login and password default to the client's settings (``IP2SMS_LOGIN`` /
``IP2SMS_PASSWORD``), so the pipeline and the simulator agree without a password on the
command line, where ``ps`` would show it.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sms_pipeline.simulator.rules import DEFAULT_RULES

if TYPE_CHECKING:
    from sms_pipeline.simulator.server import SimulatorConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the simulator's options to ``parser``."""
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    parser.add_argument(
        "--port", type=int, default=8080, help="port; 0 = any free port (default %(default)s)"
    )
    parser.add_argument("--login", default=None, help="Basic auth login (default IP2SMS_LOGIN)")
    parser.add_argument(
        "--password", default=None, help="Basic auth password (default IP2SMS_PASSWORD)"
    )
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay added to every answer")
    parser.add_argument(
        "--enroute-after", type=float, default=1.0, help="seconds until Enroute (default 1)"
    )
    parser.add_argument(
        "--deliver-after",
        type=float,
        default=2.0,
        help="seconds after submission until the final status (default 2)",
    )
    parser.add_argument(
        "--slow-seconds",
        type=float,
        default=15.0,
        help="delay of the 'slow' rule (numbers ending in 06; default 15)",
    )
    parser.add_argument(
        "--auto-reply",
        type=float,
        default=0.0,
        metavar="P",
        help="probability that a delivered message gets a reply (inbound API; default 0)",
    )
    parser.add_argument(
        "--no-faults",
        action="store_true",
        help="disable fault injection by number suffix: every message is delivered",
    )


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    """The SimulatorConfig the parsed options describe."""
    # Here, not at the top: `sms-pipeline --help` works without the simulator extra.
    from sms_pipeline.simulator.inbound import inbound_routes
    from sms_pipeline.simulator.server import SimulatorConfig

    login, password = args.login, args.password
    if login is None or password is None:
        from sms_pipeline.settings import get_settings

        settings = get_settings()
        login = login if login is not None else settings.ip2sms_login
        if password is None:
            password = settings.ip2sms_password.get_secret_value()
    if args.deliver_after < args.enroute_after:
        raise SystemExit("--deliver-after must not be smaller than --enroute-after")
    return SimulatorConfig(
        host=args.host,
        port=args.port,
        login=login,
        password=password,
        latency_ms=args.latency_ms,
        enroute_after=args.enroute_after,
        deliver_after=args.deliver_after,
        slow_seconds=args.slow_seconds,
        rules=() if args.no_faults else DEFAULT_RULES,
        extra_routes=(inbound_routes(args.auto_reply),),
    )


def main_from_args(args: argparse.Namespace) -> int:
    """Run the simulator as the parsed options say; blocks until interrupted."""
    from sms_pipeline.simulator.runner import run

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    run(config_from_args(args))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gateway-sim", description="IP2SMS gateway simulator")
    add_arguments(parser)
    return main_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
