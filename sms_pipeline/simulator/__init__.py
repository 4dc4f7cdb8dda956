"""A fast, deterministic IP2SMS gateway simulator for the demo, the tests and benchmarks.

Fault injection by the destination number's last digits: see
:mod:`sms_pipeline.simulator.rules`.
"""

from sms_pipeline.simulator.rules import DEFAULT_RULES, Action, Rule, RuleTable
from sms_pipeline.simulator.server import (
    CONFIG_KEY,
    STATE_KEY,
    SimulatorConfig,
    SimulatorServer,
    create_app,
    run,
    running_simulator,
)
from sms_pipeline.simulator.state import SimState

__all__ = [
    "CONFIG_KEY",
    "DEFAULT_RULES",
    "STATE_KEY",
    "Action",
    "Rule",
    "RuleTable",
    "SimState",
    "SimulatorConfig",
    "SimulatorServer",
    "create_app",
    "run",
    "running_simulator",
]
