"""`sms-pipeline gateway add|list|disable|enable`: the gateways as data (docs/gateways.md)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

log = logging.getLogger("sms_pipeline.gateways")


def _add(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from sms_pipeline.db import session_scope
    from sms_pipeline.db.models import Gateway

    if args.weight < 0:
        print("--weight must be 0 (standby) or more", file=sys.stderr)
        return 1
    with session_scope() as session:
        if session.scalar(select(Gateway.id).where(Gateway.name == args.name)) is not None:
            print(f"gateway {args.name} exists already", file=sys.stderr)
            return 1
        session.add(
            Gateway(
                name=args.name,
                send_url=args.send_url,
                status_url=args.status_url,
                inbound_url=args.inbound_url or "",
                login=args.login,
                password_ref=args.password_env,
                source=args.source or "",
                weight=args.weight,
                max_per_second=args.max_per_second,
            )
        )
    print(
        f"gateway {args.name} added (weight {args.weight}{', standby' if not args.weight else ''})"
    )
    return 0


def _set_active(name: str, active: bool) -> int:
    from sqlalchemy import insert, select, update

    from sms_pipeline.db import session_scope
    from sms_pipeline.db.models import Gateway, GatewayEvent, utcnow

    now = utcnow()
    word = "enabled" if active else "disabled"
    with session_scope() as session:
        row = session.execute(
            select(Gateway.active, Gateway.state).where(Gateway.name == name)
        ).first()
        if row is None:
            print(f"no gateway {name}", file=sys.stderr)
            return 1
        if row.active != active:
            session.execute(update(Gateway).where(Gateway.name == name).values(active=active))
            session.execute(
                insert(GatewayEvent).values(
                    at=now,
                    gateway=name,
                    from_state=row.state if row.active else "disabled",
                    to_state=row.state if active else "disabled",
                    reason=f"{word} by an operator",
                    figures="{}",
                )
            )
            log.warning("gateway %s %s by an operator", name, word)
    print(f"gateway {name} {word}")
    return 0


def _disable(args: argparse.Namespace) -> int:
    return _set_active(args.name, False)


def _enable(args: argparse.Namespace) -> int:
    return _set_active(args.name, True)


def _list(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from sms_pipeline.db import get_engine
    from sms_pipeline.db.models import GatewayEvent
    from sms_pipeline.services import gateways as registry
    from sms_pipeline.services.gateways.stats import recent_figures
    from sms_pipeline.settings import get_settings, mask_url

    settings = get_settings()
    with get_engine(settings).connect() as conn:
        table = registry.read_table(conn, settings)
        figures = recent_figures(conn, settings)
        last: dict[str, Any] = {}
        for row in conn.execute(select(GatewayEvent).order_by(GatewayEvent.at)).all():
            last[row.gateway] = row
        problems = registry.credential_problems(conn, settings)
    for route in table.routes:
        state = route.state if route.active else "disabled"
        f = figures.get(route.name, {})
        share = f.get("share")
        latency = f.get("latency_mean_s")
        line = (
            f"{route.name}: {state}, weight {route.weight}"
            f"{' (standby)' if route.weight == 0 else ''}, {mask_url(route.send_url)}, "
            f"last {f.get('window_minutes', 5)} min: {f.get('requests', 0)} requests, "
            f"error rate {share * 100:.1f} %"
            if share is not None
            else ""
        )
        if share is None:
            line = (
                f"{route.name}: {state}, weight {route.weight}"
                f"{' (standby)' if route.weight == 0 else ''}, {mask_url(route.send_url)}, "
                f"no requests in the last {f.get('window_minutes', 5)} min"
            )
        if latency is not None:
            line += f", mean latency {latency * 1000:.0f} ms"
        event = last.get(route.name)
        if event is not None:
            line += (
                f"; last change {event.at:%Y-%m-%d %H:%M:%S} UTC {event.from_state} -> "
                f"{event.to_state}: {event.reason}"
            )
            if args.figures and event.figures not in ("", "{}"):
                line += f" {json.dumps(json.loads(event.figures), sort_keys=True)}"
        elif not route.from_table:
            line += "; the IP2SMS_* settings (no gateway rows)"
        print(line)
    for problem in problems:
        print(f"REFUSED {problem}")
    return 0


def register(subparsers: Any) -> None:
    gateway = subparsers.add_parser("gateway", help="add, list, disable and enable gateways")
    sub = gateway.add_subparsers(dest="gateway_command", metavar="ACTION", required=True)
    add = sub.add_parser("add", help="add a gateway (its password stays in a variable)")
    add.add_argument("name", help="the gateway's name (unique)")
    add.add_argument("--send-url", required=True, metavar="URL", help="its send URL")
    add.add_argument("--status-url", required=True, metavar="URL", help="its status URL")
    add.add_argument("--inbound-url", default="", metavar="URL", help="its inbound URL (polled)")
    add.add_argument("--login", required=True, help="its login (for accounts without their own)")
    add.add_argument(
        "--password-env",
        required=True,
        metavar="VAR",
        help="the environment variable (or secret file path) holding its password",
    )
    add.add_argument(
        "--weight", type=int, default=1, metavar="N", help="share of new messages (0 = standby)"
    )
    add.add_argument("--source", default="", metavar="S", help="sender id (default IP2SMS_SOURCE)")
    add.add_argument(
        "--max-per-second", type=float, default=None, metavar="N", help="requests per second"
    )
    add.set_defaults(func=_add)
    listing = sub.add_parser(
        "list", help="state, weight, recent error rate and latency, last change and why"
    )
    listing.add_argument("--figures", action="store_true", help="the last change's figures")
    listing.set_defaults(func=_list)
    disable = sub.add_parser("disable", help="take a gateway out of rotation by hand")
    disable.add_argument("name", help="the gateway's name")
    disable.set_defaults(func=_disable)
    enable = sub.add_parser("enable", help="put a disabled gateway back")
    enable.add_argument("name", help="the gateway's name")
    enable.set_defaults(func=_enable)
