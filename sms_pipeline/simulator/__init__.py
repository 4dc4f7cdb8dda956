"""A fast, deterministic IP2SMS gateway simulator for the demo, the tests and benchmarks.

Fault injection by the destination number's last digits: see
:mod:`sms_pipeline.simulator.rules`.
"""

from __future__ import annotations

import importlib
from typing import Any

from sms_pipeline.simulator.rules import DEFAULT_RULES, Action, Rule, RuleTable

EXTRA_HINT = "the gateway simulator needs aiohttp: pip install 'sms-pipeline'"
# Names served by the aiohttp modules, imported on first use (PEP 562), so that importing
# the package (the CLI's parser, the rules) stays cheap.
_LAZY = {
    "CONFIG_KEY": "server",
    "STATE_KEY": "server",
    "SimulatorConfig": "server",
    "SimulatorServer": "runner",
    "create_app": "server",
    "run": "runner",
    "running_simulator": "runner",
    "SimState": "state",
}


def require_aiohttp() -> None:
    """Raise ImportError with the install hint when the simulator extra is missing."""
    try:
        importlib.import_module("aiohttp")
    except ImportError as exc:
        raise ImportError(EXTRA_HINT) from exc


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if module in ("server", "runner"):
        require_aiohttp()
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


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
