"""Gateways as data: which gateways there are, and whose login goes where (docs/gateways.md).

With no row in `verification.gateways`, the IP2SMS_* settings are the one gateway `default`.
Rows are read at most once a second per process (`routes`); their `state` is the health
every worker shares. `login_for` picks an account's credentials on a gateway in the order
docs/gateways.md gives ("Whose login"). A password_ref (an environment variable's name or a
secret file's path) that resolves to nothing is never replaced by another login: the
account's messages wait on that gateway, and `gateway list`, `up` and the worker name it.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, cast

from sqlalchemy import Connection, Table, select

from sms_pipeline.db.gateways import (
    DEFAULT,
    GatewayTable,
    Route,
    default_route,
    read_table,
    status_url_of,
)
from sms_pipeline.db.models import Account
from sms_pipeline.settings import Settings

# The reference the default account is created with: the settings' own gateway login, so
# it means "no credentials of its own" (each gateway's login).
SETTINGS_PASSWORD: Final = "IP2SMS_PASSWORD"  # noqa: S105 - the name of a variable
# How long a process trusts its copy of the gateways table.
CACHE_SECONDS: Final = 1.0


@dataclass(frozen=True)
class Login:
    """Who a request says it is: the login and where its password lives."""

    login: str
    password_ref: str = field(repr=False)
    own: bool  # the account's own credentials (not the gateway's)


_lock = threading.Lock()
_cached: dict[str, GatewayTable] = {}


def routes(conn: Connection, settings: Settings, *, fresh: bool = False) -> GatewayTable:
    """The gateways table, read at most once per CACHE_SECONDS per process and database."""
    key = settings.database_url
    with _lock:
        table = _cached.get(key)
    if fresh or table is None or time.monotonic() - table.read_at > CACHE_SECONDS:
        table = read_table(conn, settings)
        with _lock:
            _cached[key] = table
    return table


def forget() -> None:
    """Drop the cached table (after a change this process made, and in tests)."""
    with _lock:
        _cached.clear()


# --- credentials ------------------------------------------------------------------------


def resolve_password(ref: str, settings: Settings) -> str | None:
    """The password a reference names, or None when it resolves to nothing."""
    if not ref:
        return settings.ip2sms_password.get_secret_value()
    if ref.startswith("file:") or ref.startswith("/"):
        path = Path(ref.removeprefix("file:"))
        try:
            from_file = path.read_text(encoding="utf-8").strip()
        except OSError:
            return None
        return from_file or None
    from_env = os.environ.get(ref)
    if from_env:
        return from_env
    if ref == "IP2SMS_PASSWORD":
        return settings.ip2sms_password.get_secret_value() or None
    return None


def login_for(account: Account, route: Route, table: GatewayTable) -> Login:
    link = table.links.get((account.id, route.name))
    if link is not None and link[2]:
        return Login(link[1] or account.username, link[2], own=True)
    if account.password_ref and account.password_ref != SETTINGS_PASSWORD:
        return Login(account.username, account.password_ref, own=True)
    # No credentials of its own (or the settings' password, as the default account is
    # created): the gateway's login.
    return Login(route.login, route.password_ref, own=False)


def candidates(account: Account, table: GatewayTable) -> list[Route]:
    """The gateways an account may use: the ones it named, in its order, else every one."""
    named = table.linked(account.id)
    by_name = table.by_name()
    if named:
        return [by_name[n] for n in named if n in by_name and by_name[n].active]
    return [r for r in table.routes if r.active]


def credential_problem(
    account: Account, route: Route, table: GatewayTable, settings: Settings
) -> str | None:
    """Why this account cannot send through this gateway with its own login, or None."""
    login = login_for(account, route, table)
    if resolve_password(login.password_ref, settings) is not None:
        return None
    whose = f"account {account.name}" if login.own else f"gateway {route.name}"
    return (
        f"{whose}: password_ref {login.password_ref!r} for login {login.login!r} on gateway "
        f"{route.name} resolves to nothing (no such environment variable or secret file); "
        "its messages wait, never sent with another login"
    )


def credential_problems(
    conn: Connection, settings: Settings, accounts: Sequence[Account] | None = None
) -> list[str]:
    """One clear line per account and gateway whose password cannot be found."""
    table = read_table(conn, settings)
    if accounts is None:
        acc = cast(Table, Account.__table__)
        accounts = [Account(**r._mapping) for r in conn.execute(select(acc)).all()]
    assert accounts is not None
    problems: list[str] = []
    for route in table.routes:
        if route.active and resolve_password(route.password_ref, settings) is None:
            problems.append(
                f"gateway {route.name}: password_ref {route.password_ref!r} for login "
                f"{route.login!r} resolves to nothing (no such environment variable or secret "
                "file); accounts without logins of their own cannot send through it"
            )
    for account in accounts:
        if not account.active:
            continue
        for route in candidates(account, table):
            if not login_for(account, route, table).own:
                continue  # the gateway's own login: named once above
            problem = credential_problem(account, route, table, settings)
            if problem is not None and problem not in problems:
                problems.append(problem)
    return problems


__all__ = [
    "CACHE_SECONDS",
    "DEFAULT",
    "SETTINGS_PASSWORD",
    "GatewayTable",
    "Login",
    "Route",
    "candidates",
    "credential_problem",
    "credential_problems",
    "default_route",
    "forget",
    "login_for",
    "read_table",
    "resolve_password",
    "routes",
    "status_url_of",
]
