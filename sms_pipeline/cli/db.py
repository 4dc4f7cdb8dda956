"""`sms-pipeline db upgrade|downgrade|current`."""

from __future__ import annotations

import argparse
from typing import Any

from sms_pipeline.settings import get_settings, mask_url


def _upgrade(args: argparse.Namespace) -> int:
    from sms_pipeline.db import get_engine, migrate

    engine = get_engine()
    migrate.upgrade(engine, revision=args.revision)
    print(f"database at {migrate.current(engine)} ({mask_url(get_settings().database_url)})")
    return 0


def _downgrade(args: argparse.Namespace) -> int:
    from sms_pipeline.db import get_engine, migrate

    engine = get_engine()
    migrate.downgrade(engine, revision=args.revision)
    print(f"database at {migrate.current(engine) or 'base'}")
    return 0


def _current(_args: argparse.Namespace) -> int:
    from sms_pipeline.db import get_engine, migrate

    now, head = migrate.current(get_engine()), migrate.head()
    print(f"current: {now or 'empty'}; head: {head}")
    return 0 if now == head else 1


def register(subparsers: Any) -> None:
    db = subparsers.add_parser("db", help="database migrations")
    sub = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    up = sub.add_parser("upgrade", help="apply migrations (default: to head)")
    up.add_argument(
        "revision", nargs="?", default="head", help="target revision (default %(default)s)"
    )
    up.set_defaults(func=_upgrade)
    down = sub.add_parser("downgrade", help="revert migrations (default: one step)")
    down.add_argument(
        "revision", nargs="?", default="-1", help="target revision or -N steps (default -1)"
    )
    down.set_defaults(func=_downgrade)
    cur = sub.add_parser("current", help="show the applied revision; exit 1 if behind")
    cur.set_defaults(func=_current)
