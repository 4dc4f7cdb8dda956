"""`sms-pipeline api` (the HTTP API) and `sms-pipeline api-key create|revoke|list`."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from sms_pipeline.settings import get_settings


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from sms_pipeline.settings import require_production_gateway

    settings = get_settings()
    # Fail closed before uvicorn starts: one line and exit 2 (SettingsError), not a traceback.
    require_production_gateway(settings)
    uvicorn.run(
        "sms_pipeline.api.app:create_app",
        factory=True,
        host=args.host or settings.sms_api_host,
        port=args.port or settings.sms_api_port,
        workers=args.workers,
        log_level=settings.sms_log_level.lower(),
        # Behind a proxy only the proxy's own address is trusted for X-Forwarded-*.
        proxy_headers=True,
        access_log=True,
    )
    return 0


def _create(args: argparse.Namespace) -> int:
    from sms_pipeline.db import session_scope
    from sms_pipeline.services.accounts.api_keys import ApiKeyError, create_api_key

    try:
        with session_scope() as session:
            new = create_api_key(
                session,
                args.name,
                args.account,
                admin=args.admin,
                platform_admin=args.platform_admin,
            )
    except ApiKeyError as exc:
        print(f"sms-pipeline api-key: {exc}", file=sys.stderr)
        return 2
    scope = f"account {new.account}" if new.account else "any account"
    if new.admin:
        scope += ", admin: may export and erase a person's data in this account"
    if new.platform_admin:
        scope = "platform admin: may export and erase a person's data in every account"
    # Printed once: only hashes of the key are stored, so it cannot be shown again.
    print(f"API key {new.name!r} ({scope}). Store both values now; they are not shown again.")
    print(f"key:            {new.key}")
    print(f"signing secret: {new.signing_secret}")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    from sms_pipeline.db import session_scope
    from sms_pipeline.services.accounts.api_keys import revoke_api_key

    with session_scope() as session:
        done = revoke_api_key(session, args.name)
    if not done:
        print(f"sms-pipeline api-key: no active key named {args.name!r}", file=sys.stderr)
        return 1
    print(f"revoked {args.name!r}")
    return 0


def _list(_args: argparse.Namespace) -> int:
    from sms_pipeline.db import session_scope
    from sms_pipeline.services.accounts.api_keys import list_api_keys

    with session_scope() as session:
        keys = list_api_keys(session)
    print(f"{'NAME':24} {'PREFIX':10} {'ACCOUNT':16} {'KIND':15} {'STATE':8} CREATED")
    for k in keys:
        state = "active" if k.active else "revoked"
        print(
            f"{k.name:24} {k.prefix:10} {k.account or '*':16} {k.kind:15} {state:8} "
            f"{k.created_at:%Y-%m-%d %H:%M}"
        )
    return 0


def register(subparsers: Any) -> None:
    api = subparsers.add_parser("api", help="serve the HTTP API (uvicorn)")
    api.add_argument("--host", help="listen address (default SMS_API_HOST, 127.0.0.1)")
    api.add_argument("--port", type=int, help="listen port (default SMS_API_PORT, 8000)")
    api.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    api.set_defaults(func=_serve)

    keys = subparsers.add_parser("api-key", help="create, revoke and list HTTP API keys")
    sub = keys.add_subparsers(dest="api_key_command", metavar="ACTION", required=True)
    create = sub.add_parser("create", help="create a key; prints it and its signing secret once")
    create.add_argument("name", help="a name you will recognise (unique)")
    create.add_argument("--account", help="limit the key to this account")
    kind = create.add_mutually_exclusive_group()
    kind.add_argument(
        "--admin",
        action="store_true",
        help="with --account: may export and erase a person's data in that account "
        "(POST /v1/subjects/export|erase)",
    )
    kind.add_argument(
        "--platform-admin",
        action="store_true",
        help="no --account: may export and erase a person's data in every account",
    )
    create.set_defaults(func=_create)
    revoke = sub.add_parser("revoke", help="revoke a key: its requests get 401 from now on")
    revoke.add_argument("name", help="the key's name")
    revoke.set_defaults(func=_revoke)
    lst = sub.add_parser("list", help="list keys (names and prefixes, never the keys)")
    lst.set_defaults(func=_list)
