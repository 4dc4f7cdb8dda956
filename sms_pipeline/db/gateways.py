"""The gateways table as the sender and the metrics read it (docs/gateways.md).

With no row in `verification.gateways`, the IP2SMS_* settings are the one gateway
`default`. `services.gateways` caches this read and resolves logins; the exporter reads it
for the gateway gauges.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Any, Final, cast

from sqlalchemy import Connection, Table, select

from sms_pipeline.db.models import AccountGateway, Gateway
from sms_pipeline.settings import Settings

DEFAULT: Final = "default"


@dataclass(frozen=True)
class Route:
    """One gateway as the sender sees it."""

    name: str
    send_url: str
    status_url: str
    inbound_url: str
    login: str
    password_ref: str = field(repr=False)
    source: str
    weight: int
    active: bool
    max_per_second: float | None
    state: str
    state_since: dt.datetime | None
    state_reason: str
    from_table: bool = True

    @property
    def in_rotation(self) -> bool:
        return self.active and self.state != "down"


@dataclass
class GatewayTable:
    routes: tuple[Route, ...]
    # (account id, gateway name) -> (position, login, password_ref)
    links: dict[tuple[int, str], tuple[int, str, str]] = field(default_factory=dict)
    read_at: float = 0.0

    def linked(self, account_id: int) -> list[str]:
        """The gateways an account named, in its order (empty: every gateway)."""
        mine = [
            (pos, name) for (acc, name), (pos, _l, _p) in self.links.items() if acc == account_id
        ]
        return [name for _pos, name in sorted(mine)]

    def by_name(self) -> dict[str, Route]:
        return {r.name: r for r in self.routes}


def status_url_of(send_url: str, status_url: str) -> str:
    if status_url:
        return status_url
    if send_url.rstrip("/").endswith("/ip2sms"):
        return send_url.rstrip("/") + "-request/"
    return send_url


def default_route(settings: Settings) -> Route:
    return Route(
        name=DEFAULT,
        send_url=settings.ip2sms_send_url,
        status_url=settings.ip2sms_status_url,
        inbound_url=settings.ip2sms_inbound_url or "",
        login=settings.ip2sms_login,
        password_ref="",
        source=settings.ip2sms_source,
        weight=1,
        active=True,
        max_per_second=None,
        state="up",
        state_since=None,
        state_reason="",
        from_table=False,
    )


def _route(row: Any, settings: Settings) -> Route:
    return Route(
        name=row.name,
        send_url=row.send_url,
        status_url=status_url_of(row.send_url, row.status_url),
        inbound_url=row.inbound_url or "",
        login=row.login or settings.ip2sms_login,
        password_ref=row.password_ref or "",
        source=row.source or settings.ip2sms_source,
        weight=row.weight,
        active=row.active,
        max_per_second=row.max_per_second,
        state=row.state,
        state_since=row.state_since,
        state_reason=row.state_reason or "",
    )


def read_table(conn: Connection, settings: Settings) -> GatewayTable:
    """The gateways and the accounts' links to them, as they are now."""
    gateways = cast(Table, Gateway.__table__)
    links = cast(Table, AccountGateway.__table__)
    rows = list(conn.execute(select(gateways).order_by(gateways.c.name)).all())
    if not rows:
        return GatewayTable((default_route(settings),), {}, time.monotonic())
    names = {r.id: r.name for r in rows}
    linked = {
        (r.account_id, names[r.gateway_id]): (r.position, r.login or "", r.password_ref or "")
        for r in conn.execute(select(links)).all()
        if r.gateway_id in names
    }
    return GatewayTable(tuple(_route(r, settings) for r in rows), linked, time.monotonic())


__all__ = ["DEFAULT", "GatewayTable", "Route", "default_route", "read_table", "status_url_of"]
