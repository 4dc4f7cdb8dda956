"""The keyed hash that names a person without their number (audit log, erased opt-outs).

The key is a file in the data folder (0600), made on first use.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from sqlalchemy import delete
from sqlalchemy.orm import Session

from sms_pipeline.db import is_file_database
from sms_pipeline.db.files import private_folder
from sms_pipeline.db.models import OptOutHash
from sms_pipeline.settings import Settings, SettingsError, get_settings

KEY_FILE = "privacy.key"
_HASH_LABEL = b"sms-pipeline subject v1:"


def _key_path(settings: Settings) -> Path:
    return settings.sms_data_dir.resolve() / KEY_FILE


def privacy_key(settings: Settings, *, create: bool) -> bytes | None:
    """SMS_PRIVACY_KEY, or the key kept in the data folder (embedded database only).

    With `create`, an embedded install generates its key on first use (file mode 0600);
    with PostgreSQL a missing SMS_PRIVACY_KEY is a configuration error (several hosts must
    share one key, or an erased opt-out would stop holding).
    """
    if settings.sms_privacy_key is not None:
        value = settings.sms_privacy_key.get_secret_value()
        if len(value) < 16:
            raise SettingsError("SMS_PRIVACY_KEY: must be at least 16 characters")
        return value.encode("utf-8")
    if not is_file_database(settings.database_url) and not create:
        return None  # a server database never has a key file (see below): no disk look-up
    path = _key_path(settings)
    if path.exists():
        return path.read_bytes().strip()
    if not create:
        return None
    if not is_file_database(settings.database_url):
        raise SettingsError(
            "SMS_PRIVACY_KEY: required with a server database (a long random secret, "
            "the same on every host)"
        )
    private_folder(path.parent)  # 0700: the key file below is 0600
    # Written whole under a temporary name, then linked into place: another process never
    # reads a half-written key, and the first one linked wins.
    draft = path.with_name(f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_urlsafe(32))
    try:
        os.link(draft, path)
    except FileExistsError:
        pass
    finally:
        draft.unlink()
    return path.read_bytes().strip()


def subject_hash(number: str, settings: Settings | None = None, *, create: bool = True) -> str:
    """The keyed hash (HMAC-SHA256) that names a person without their number."""
    settings = settings or get_settings()
    key = privacy_key(settings, create=create)
    if key is None:
        raise SettingsError("SMS_PRIVACY_KEY: no key configured")
    return hmac.new(key, _HASH_LABEL + number.encode("utf-8"), hashlib.sha256).hexdigest()


def erased_opt_out(session: Session, number: str, settings: Settings | None = None) -> bool:
    """Whether `number` opted out and was erased since (its opt-out kept only as a hash)."""
    settings = settings or get_settings()
    if privacy_key(settings, create=False) is None:
        return False  # no key, so no hash was ever stored
    return session.get(OptOutHash, subject_hash(number, settings, create=False)) is not None


def forget_erased_opt_out(session: Session, number: str, settings: Settings | None = None) -> None:
    """An opt-in (START) from `number` also lifts an opt-out kept as a hash."""
    settings = settings or get_settings()
    if privacy_key(settings, create=False) is None:
        return
    session.execute(
        delete(OptOutHash).where(OptOutHash.phone_hash == subject_hash(number, settings))
    )
