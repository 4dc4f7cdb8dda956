"""The gateway simulator with one fault only: numbers ending in 06 hang past the read timeout
on their first attempt (then are accepted), for the slow-minority benchmark.

    python -m bench.slow_simulator --port P [--latency-ms 20] [--slow-seconds 12]
"""

from __future__ import annotations

import argparse
import os

from sms_pipeline.simulator.rules import SUFFIX_SLOW, Action, Rule
from sms_pipeline.simulator.runner import run
from sms_pipeline.simulator.server import SimulatorConfig


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.slow_simulator")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--slow-seconds", type=float, default=12.0)
    args = parser.parse_args()
    run(
        SimulatorConfig(
            port=args.port,
            login=os.environ["IP2SMS_LOGIN"],
            password=os.environ["IP2SMS_PASSWORD"],
            latency_ms=args.latency_ms,
            enroute_after=0.0,
            deliver_after=0.0,
            slow_seconds=args.slow_seconds,
            rules=(Rule(SUFFIX_SLOW, "slow_once", Action.SLOW, attempts=1),),
        )
    )


if __name__ == "__main__":
    main()
