"""Gateway health: out of rotation on definite refusals, probed, and brought back gradually
(the states and their thresholds: docs/gateways.md).

Each worker counts what its own requests met over SMS_GATEWAY_WINDOW_SECONDS; the state
(`verification.gateways.state`) is shared and changes with one conditional UPDATE, so only
the worker whose update wins writes the event row, the metric and the one WARNING line. A
timeout or a reset after the request was written is not counted: it says nothing certain.
A gateway whose deliveries are slow goes down too (latency.py, SMS_GATEWAY_SLOW_SECONDS).
The implicit gateway `default` is never taken out: alone, it has nowhere to fail over to.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, insert, update

from sms_pipeline.db.models import Gateway, GatewayEvent, utcnow
from sms_pipeline.gateway.errors import GatewayAuthError, GatewayError
from sms_pipeline.metrics import hooks as metrics
from sms_pipeline.services.gateways import registry
from sms_pipeline.settings import Settings

log = logging.getLogger(__name__)

# The reason a gateway goes down for slowness (services/gateways/latency.py): it is first
# probed only SMS_GATEWAY_SLOW_SECONDS later, since a probe cannot tell slowness.
SLOW_REASON = "deliveries slower than SMS_GATEWAY_SLOW_SECONDS"


def is_definite(error: GatewayError) -> bool:
    """The gateway certainly did not take the request (safe to send it elsewhere)."""
    return bool(getattr(error, "definite", False))


@dataclass
class _Window:
    # (monotonic time, definite refusal, seconds)
    samples: deque[tuple[float, bool, float]]

    def add(self, when: float, definite: bool, seconds: float) -> None:
        self.samples.append((when, definite, seconds))

    def trim(self, before: float) -> None:
        while self.samples and self.samples[0][0] < before:
            self.samples.popleft()

    def figures(self, since: float) -> dict[str, Any]:
        picked = [s for s in self.samples if s[0] >= since]
        requests = len(picked)
        failures = sum(1 for s in picked if s[1])
        latencies = sorted(s[2] for s in picked)
        return {
            "requests": requests,
            "definite_failures": failures,
            "share": round(failures / requests, 3) if requests else 0.0,
            "latency_p50_s": round(latencies[len(latencies) // 2], 4) if latencies else None,
        }


class Every:
    """Per gateway, at most once every `seconds` in this process (a clock passed in)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}

    def due(self, gateway: str, seconds: float) -> bool:
        now = self.clock()
        with self._lock:
            last = self._last.get(gateway)
            if last is not None and now - last < seconds:
                return False
            self._last[gateway] = now
            return True

    def reset(self) -> None:
        with self._lock:
            self._last.clear()


class Health:
    """One process's view of the gateways it talks to."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._windows: dict[str, _Window] = {}
        self._probed = Every(lambda: self.clock())

    def record(self, gateway: str, outcomes: Sequence[tuple[bool, float]]) -> None:
        now = self.clock()
        with self._lock:
            window = self._windows.setdefault(gateway, _Window(deque(maxlen=20000)))
            for definite, seconds in outcomes:
                window.add(now, definite, seconds)

    def figures(self, gateway: str, seconds: float, since: float | None = None) -> dict[str, Any]:
        now = self.clock()
        start = now - seconds if since is None else max(now - seconds, since)
        with self._lock:
            window = self._windows.get(gateway)
            if window is None:
                return _Window(deque()).figures(start)
            window.trim(now - seconds)
            return window.figures(start)

    def probe_due(self, gateway: str, every: float) -> bool:
        return self._probed.due(gateway, every)

    def reset(self) -> None:
        with self._lock:
            self._windows.clear()
        self._probed.reset()


HEALTH = Health()


def ramp_share(route: registry.Route, settings: Settings) -> float:
    """The share of its weight a gateway gets now (probing: a tenth, growing to all)."""
    if route.state != "probing" or route.state_since is None:
        return 1.0
    elapsed = (utcnow() - route.state_since).total_seconds()
    return min(1.0, max(0.1, elapsed / settings.sms_gateway_ramp_seconds))


def change_state(
    conn: Connection,
    route: registry.Route,
    to: str,
    reason: str,
    figures: dict[str, Any],
) -> bool:
    """Move a gateway from the state this process saw to `to`; False if another worker did
    it first. The winner writes the event, the metric and one WARNING."""
    now = utcnow()
    with conn.begin():
        changed = conn.execute(
            update(Gateway)
            .where(Gateway.name == route.name, Gateway.state == route.state)
            .values(state=to, state_since=now, state_reason=reason[:300])
        ).rowcount
        if changed != 1:
            return False
        conn.execute(
            insert(GatewayEvent).values(
                at=now,
                gateway=route.name,
                from_state=route.state,
                to_state=to,
                reason=reason[:300],
                figures=json.dumps(figures, sort_keys=True),
            )
        )
    registry.forget()
    metrics.gateway_switch(route.name, route.state, to)
    log.warning(
        "gateway %s: %s -> %s (%s; %s)",
        route.name,
        route.state,
        to,
        reason,
        ", ".join(f"{k}={v}" for k, v in sorted(figures.items())),
    )
    return True


def judge(conn: Connection, table: registry.GatewayTable, settings: Settings) -> None:
    """After a batch: take out, or bring back, the gateways this process has figures for."""
    window = settings.sms_gateway_window_seconds
    for route in table.routes:
        if not route.from_table or not route.active:
            continue
        if route.state == "up":
            # Only what it met since it was last up: refusals from before a short outage
            # must not take it out again once it is back.
            f = HEALTH.figures(route.name, window, since=_monotonic_since(route))
            if (
                f["definite_failures"] >= settings.sms_gateway_failures
                and f["share"] >= settings.sms_gateway_failure_share
            ):
                change_state(conn, route, "down", "definite refusals over the threshold", {
                    **f, "window_s": window,
                })  # fmt: skip
        elif route.state == "probing":
            since = _monotonic_since(route)
            f = HEALTH.figures(route.name, window, since=since)
            if f["definite_failures"] >= 1 and f["share"] >= settings.sms_gateway_failure_share:
                change_state(conn, route, "down", "refused again while probing", f)
            elif ramp_share(route, settings) >= 1.0:
                change_state(conn, route, "up", "probing ended without refusals", f)


def _monotonic_since(route: registry.Route) -> float:
    if route.state_since is None:
        return HEALTH.clock()
    ago = (utcnow() - route.state_since).total_seconds()
    return HEALTH.clock() - max(0.0, ago)


def probe(
    conn: Connection,
    table: registry.GatewayTable,
    settings: Settings,
    ask: Callable[[registry.Route], GatewayError | None],
) -> None:
    """Probe every gateway that is out of rotation and due a probe (one request each)."""
    for route in table.routes:
        if not route.from_table or not route.active or route.state != "down":
            continue
        if not HEALTH.probe_due(route.name, settings.sms_gateway_probe_seconds):
            continue
        if route.state_since is not None:
            down_for = (utcnow() - route.state_since).total_seconds()
            wait = settings.sms_gateway_probe_seconds
            if route.state_reason.startswith(SLOW_REASON):
                wait = max(wait, settings.sms_gateway_slow_seconds)
            if down_for < wait:
                continue
        error = ask(route)
        # Any answer but 5xx/429 means it is there again (a 401 too: the probe carries the
        # gateway's own login, which accounts with logins of their own may not share).
        if error is None or not is_definite(error) or isinstance(error, GatewayAuthError):
            change_state(conn, route, "probing", "answered a probe", {"probe": "ok"})
        else:
            log.debug("gateway %s probe: %s", route.name, error.reason)
