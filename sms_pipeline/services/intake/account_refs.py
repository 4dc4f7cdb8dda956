"""An account's name → its id and name, cached for SMS_ACCOUNT_CACHE_SECONDS: the enqueue
hot path reads no account row (whether the account is active, its INSERT checks)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from sms_pipeline.db.models import Account
from sms_pipeline.errors import InvalidMessage
from sms_pipeline.services.accounts import find_account
from sms_pipeline.settings import Settings


@dataclass(frozen=True)
class AccountRef:
    id: int
    name: str
    expires: float


_accounts_lock = threading.Lock()
_accounts: dict[tuple[str, str | int | None], AccountRef] = {}


def account_ref(
    session: Session, account: str | int | None, settings: Settings, *, cached: bool = True
) -> tuple[AccountRef, bool]:
    """The account's id and name, and whether they came from the cache.

    The cache is trusted for SMS_ACCOUNT_CACHE_SECONDS and holds only identities read from
    existing rows (never an account created in a transaction that may roll back); whether
    the account is active is checked by the INSERT itself.
    """
    key = (settings.database_url, account)
    now = time.monotonic()
    if cached and (hit := cached_ref(account, settings)) is not None:
        return hit
    name = settings.sms_default_account if account is None else account
    found = (
        session.get(Account, name)
        if isinstance(name, int)
        else (session.scalar(select(Account).where(Account.name == name)))
    )
    if found is None and account is None:
        found = find_account(session, None)  # created now: not cached until seen again
        assert found is not None
        return AccountRef(found.id, found.name, now), False
    if found is None:
        raise InvalidMessage("account", "no such account")
    ref = AccountRef(found.id, found.name, now + settings.sms_account_cache_seconds)
    if settings.sms_account_cache_seconds > 0:
        with _accounts_lock:
            _accounts[key] = ref
    return ref, False


def cached_ref(account: str | int | None, settings: Settings) -> tuple[AccountRef, bool] | None:
    with _accounts_lock:
        ref = _accounts.get((settings.database_url, account))
    if ref is not None and ref.expires > time.monotonic():
        return ref, True
    return None


def forget_accounts() -> None:
    """Drop the account cache (tests; after renaming or deleting an account)."""
    with _accounts_lock:
        _accounts.clear()


def refuse_account(session: Session, account_id: int) -> InvalidMessage:
    active = session.scalar(select(Account.active).where(Account.id == account_id))
    if active is None:
        forget_accounts()
        return InvalidMessage("account", "no such account")
    return InvalidMessage("account", "the account is not active")
