"""Argument types shared by the commands: times, priorities."""

from __future__ import annotations

import argparse
import datetime as dt
import re

from sms_pipeline.priorities import PRIORITY_MAX, PRIORITY_MIN, priority_problem

_RELATIVE = re.compile(r"^\s*\+\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
TIME_HELP = (
    "an ISO 8601 time with a zone (2030-01-01T08:00+02:00, ...Z) or from now: +90s, +10m, +2h, +1d"
)


def parse_time(value: str, now: dt.datetime | None = None) -> dt.datetime:
    """An aware datetime from `+10m`-style offsets or ISO 8601 with a zone."""
    match = _RELATIVE.match(value)
    if match:
        seconds = float(match.group(1)) * _UNITS[match.group(2).lower()]
        return (now or dt.datetime.now(dt.UTC)) + dt.timedelta(seconds=seconds)
    text = value.strip()
    if text[-1:] in ("z", "Z"):
        text = text[:-1] + "+00:00"
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a time: use {TIME_HELP}") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(
            "the time needs a zone, e.g. 2030-01-01T08:00+02:00 or ...Z (or +10m from now)"
        )
    return moment


def priority(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = None
    problem = priority_problem(number)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    assert number is not None
    return number


PRIORITY_HELP = f"{PRIORITY_MIN} (default) to {PRIORITY_MAX}; higher goes first"
