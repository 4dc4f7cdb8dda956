"""API keys: create (shown once), revoke, list, and check a presented key.

A key is `sk_<prefix>_<secret>`: the prefix (random, not secret) finds the row, the whole
key is stored as HMAC-SHA256 under a fixed label. Keys are 256-bit random values, so
nobody can guess or brute-force one from its hash: a slow password hash (bcrypt, argon2)
protects low-entropy human passwords and would only add latency to every request here.
Comparison is constant-time (`hmac.compare_digest`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from sms_pipeline.db import HeldRows, rows_alone
from sms_pipeline.db.models import Account, ApiKey, utcnow
from sms_pipeline.settings import Settings, get_settings

KEY_PREFIX = "sk"
_PREFIX_BYTES = 4  # 8 hex characters: no "_", so the key splits unambiguously
_SECRET_BYTES = 32
# Domain separation: the stored value is useless as a hash of anything but an API key.
_HASH_LABEL = b"sms-pipeline api key v1"


class ApiKeyError(ValueError):
    """A key operation was refused (unknown name, duplicate name, unknown account, scope)."""


@dataclass(frozen=True)
class NewApiKey:
    """What `create_api_key` returns: the only time the key and secret are visible."""

    name: str
    key: str = field(repr=False)
    signing_secret: str = field(repr=False)
    account: str | None
    admin: bool = False
    platform_admin: bool = False


@dataclass(frozen=True)
class Principal:
    """The authenticated caller of an API request."""

    key_id: int
    name: str
    account_id: int | None
    admin: bool = False  # may export and erase a person's data in its own account
    prefix: str = ""  # random per key, never reused: what its abuse limits are counted by
    platform_admin: bool = False  # may export and erase in every account (CLI-made only)

    @property
    def subject_scope(self) -> int | None:
        """The account whose data this key may export and erase; None = every account.

        Raises PermissionError for a key that may not: not an admin, or an admin key bound
        to no account (before platform admins were their own kind, that meant "every
        account"; it is refused now, never widened).
        """
        if self.platform_admin:
            return None
        if self.admin and self.account_id is not None:
            return self.account_id
        if self.admin:
            raise PermissionError(
                "this admin key is bound to no account: create an account admin "
                "(api-key create NAME --account ACCOUNT --admin) or a platform admin "
                "(api-key create NAME --platform-admin)"
            )
        raise PermissionError(
            "an admin API key is required (api-key create NAME --account ACCOUNT --admin)"
        )


@dataclass(frozen=True)
class ApiKeyInfo:
    name: str
    prefix: str
    account: str | None
    active: bool
    created_at: dt.datetime
    revoked_at: dt.datetime | None
    kind: str = "send"  # send | admin (its account's data) | platform-admin (every account)


def hash_key(key: str) -> str:
    return hmac.new(_HASH_LABEL, key.encode("utf-8"), hashlib.sha256).hexdigest()


def _split(key: str) -> str | None:
    """The prefix of a well-formed key, or None."""
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1]


def create_api_key(
    session: Session,
    name: str,
    account: str | None = None,
    *,
    admin: bool = False,
    platform_admin: bool = False,
) -> NewApiKey:
    """A new key. `admin` needs `account` (its data only); `platform_admin` takes none.

    The HTTP API has no route that creates keys: a platform admin comes only from the
    command line (`api-key create NAME --platform-admin`).
    """
    name = name.strip()
    if not name or len(name) > 64:
        raise ApiKeyError("a key name is 1-64 characters")
    if platform_admin and (admin or account is not None):
        raise ApiKeyError("a platform admin key has no account and is not also --admin")
    if admin and account is None:
        raise ApiKeyError(
            "an admin key is bound to one account (--account NAME); "
            "for every account create a platform admin key (--platform-admin)"
        )
    if session.scalar(select(ApiKey.id).where(ApiKey.name == name)) is not None:
        raise ApiKeyError(f"an API key named {name!r} exists (revoke it or pick another name)")
    account_id = None
    if account is not None:
        account_id = session.scalar(select(Account.id).where(Account.name == account))
        if account_id is None:
            raise ApiKeyError(f"no account named {account!r}")
    # The prefix is random, not part of the secret: it narrows the lookup to one row.
    prefix = secrets.token_hex(_PREFIX_BYTES)
    key = f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(_SECRET_BYTES)}"
    signing_secret = "whsec_" + secrets.token_urlsafe(_SECRET_BYTES)
    session.add(
        ApiKey(
            name=name,
            prefix=prefix,
            key_hash=hash_key(key),
            signing_secret=signing_secret,
            account_id=account_id,
            active=True,
            admin=admin,
            platform_admin=platform_admin,
        )
    )
    session.flush()
    return NewApiKey(name, key, signing_secret, account, admin, platform_admin)


def revoke_api_key(session: Session, name: str) -> bool:
    """Revoke the key named `name`; False when there is no active key of that name."""
    key = session.scalar(select(ApiKey).where(ApiKey.name == name))
    if key is None or not key.active:
        return False
    key.active = False
    key.revoked_at = utcnow()
    return True


def list_api_keys(session: Session) -> list[ApiKeyInfo]:
    rows = session.execute(
        select(ApiKey, Account.name)
        .outerjoin(Account, Account.id == ApiKey.account_id)
        .order_by(ApiKey.name)
    ).all()
    return [
        ApiKeyInfo(k.name, k.prefix, acct, k.active, k.created_at, k.revoked_at, _kind(k))
        for k, acct in rows
    ]


def _kind(key: ApiKey) -> str:
    if key.platform_admin:
        return "platform-admin"
    return "admin" if key.admin else "send"


def authenticate_alone(
    presented: str,
    settings: Settings | None = None,
    *,
    held_rows: HeldRows | None = None,
) -> Principal | None:
    """`authenticate` as one statement in autocommit (the API's per-request check: one
    round trip; on PostgreSQL through the producing thread's held connection, no pool
    checkout and no SQLAlchemy execution per request: the caller passes that connection's
    `held_rows`, enqueue's, so the INSERT that follows uses it too)."""
    prefix = _split(presented)
    if prefix is None or len(presented) > 200:
        return None
    expected = hash_key(presented)
    settings = settings or get_settings()
    rows = rows_alone(_KEY_BY_PREFIX, {"prefix": prefix}, settings, held_rows)
    for key_id, name, account_id, admin, key_prefix, platform_admin, key_hash, active in rows:
        if hmac.compare_digest(key_hash, expected) and active:
            return Principal(key_id, name, account_id, admin, key_prefix, platform_admin)
    return None


_columns = ApiKey.__table__.c
# One statement for the process: `rows_alone` compiles it once per database.
_KEY_BY_PREFIX = select(
    _columns.id,
    _columns.name,
    _columns.account_id,
    _columns.admin,
    _columns.prefix,
    _columns.platform_admin,
    _columns.key_hash,
    _columns.active,
).where(_columns.prefix == bindparam("prefix"))


def authenticate(session: Session, presented: str) -> Principal | None:
    """The principal of an active key, or None (malformed, unknown, wrong or revoked)."""
    prefix = _split(presented)
    if prefix is None or len(presented) > 200:
        return None
    expected = hash_key(presented)
    for key in session.scalars(select(ApiKey).where(ApiKey.prefix == prefix)):
        if hmac.compare_digest(key.key_hash, expected) and key.active:
            return Principal(
                key.id, key.name, key.account_id, key.admin, key.prefix, key.platform_admin
            )
    return None
