"""Latency-based demotion: a gateway whose messages are too often not Delivered in time is
taken out of rotation like one that refuses (docs/gateways.md), from sms_log's facts.

With SMS_GATEWAY_SLOW_SECONDS = S set (0 = off), a gateway that is up is judged on its
messages **submitted between 4·S and S ago** (each has had its full S) and since it was last
up (so what it did before an outage does not count after it), the most recent
JUDGED_AT_MOST of them:

- **slow**: Delivered more than S after submission (the gateway's own delivery date,
  `status_changed_at`, else when we recorded it), Terminated, or still moving although a
  status check after S found it not Delivered;
- **not judged**: ended another way (Undeliverable, Rejected, Expired …: the handset's or the
  message's fault, not the gateway's delay), or moving and not asked since S passed (what
  happened is not known yet).

At least SMS_GATEWAY_SLOW_MESSAGES judged and a slow share ≥ SMS_GATEWAY_SLOW_SHARE take
it out: one conditional UPDATE, a gateway_events row with the figures, the switch metric
plus `sms_gateway_slow_demotions_total`, one WARNING. It comes back the usual way (probe,
ramp), but is first probed only S after it went out: a probe cannot tell slowness.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, Final

from sqlalchemy import Connection, select

from sms_pipeline.db.models import SmsLog, utcnow
from sms_pipeline.gateway.statuses import MOVING_STATUSES, GatewayStatus
from sms_pipeline.metrics import hooks as metrics
from sms_pipeline.services.gateways import registry
from sms_pipeline.services.gateways.health import SLOW_REASON, Every, change_state
from sms_pipeline.settings import Settings

PERIODS: Final = 3  # judged: messages submitted in the PERIODS periods of S before the last
JUDGED_AT_MOST: Final = 2000  # the most recent ones; enough for a share, cheap to read
CHECK_SECONDS: Final = 5.0  # a process judges each gateway's latency at most this often
_MOVING: Final = frozenset(s.value for s in MOVING_STATUSES)


def slow_figures(
    conn: Connection, gateway: str, since: dt.datetime | None, now: dt.datetime, slow: float
) -> dict[str, Any]:
    """How many of the gateway's recent messages were judged, and how many were slow."""
    newest = now - dt.timedelta(seconds=slow)
    oldest = now - dt.timedelta(seconds=slow * (PERIODS + 1))
    if since is not None:
        oldest = max(oldest, since)
    # Its own short transaction: the caller's connection holds none between statements
    # (change_state begins one next).
    with conn.begin():
        rows = _recent(conn, gateway, oldest, newest)
    limit = dt.timedelta(seconds=slow)
    judged = slow_count = 0
    for submitted, status, changed, final, checked in rows:
        if status == GatewayStatus.DELIVERED:
            delivered = changed or final
            judged += 1
            slow_count += delivered is not None and delivered - submitted > limit
        elif status == GatewayStatus.TERMINATED or (
            (status is None or status in _MOVING)
            and final is None
            and checked is not None
            and checked - submitted >= limit
        ):
            judged += 1
            slow_count += 1
        # Any other final status says nothing about the gateway's delay; a moving message
        # not asked about since S passed is not known yet.
    return {
        "judged": judged,
        "slow": slow_count,
        "share": round(slow_count / judged, 3) if judged else 0.0,
        "slow_s": slow,
        "submitted_from": oldest.isoformat(timespec="seconds"),
        "submitted_to": newest.isoformat(timespec="seconds"),
    }


def _recent(conn: Connection, gateway: str, oldest: dt.datetime, newest: dt.datetime) -> list[Any]:
    return list(
        conn.execute(
            select(
                SmsLog.submitted_at,
                SmsLog.gateway_status,
                SmsLog.status_changed_at,
                SmsLog.final_at,
                SmsLog.last_checked_at,
            )
            .where(
                SmsLog.gateway == gateway,
                SmsLog.submitted_at.is_not(None),
                SmsLog.submitted_at >= oldest,
                SmsLog.submitted_at <= newest,
            )
            .order_by(SmsLog.submitted_at.desc())
            .limit(JUDGED_AT_MOST)
        ).all()
    )


class _Due(Every):
    """When this process last judged each gateway's latency: at most every CHECK_SECONDS."""

    def __call__(self, gateway: str) -> bool:
        return self.due(gateway, CHECK_SECONDS)


DUE = _Due()


def judge_latency(
    conn: Connection,
    table: registry.GatewayTable,
    settings: Settings,
    *,
    now: dt.datetime | None = None,
    due: Callable[[str], bool] = DUE,
) -> list[str]:
    """Take out of rotation every gateway that is up and too slow; the names taken out."""
    slow = settings.sms_gateway_slow_seconds
    if slow <= 0:
        return []
    now = now or utcnow()
    taken = []
    for route in table.routes:
        if not route.from_table or not route.active or route.state != "up":
            continue
        if not due(route.name):
            continue
        figures = slow_figures(conn, route.name, route.state_since, now, slow)
        if (
            figures["judged"] >= settings.sms_gateway_slow_messages
            and figures["share"] >= settings.sms_gateway_slow_share
        ) and change_state(conn, route, "down", SLOW_REASON, figures):
            metrics.gateway_slow(route.name)
            taken.append(route.name)
    return taken
