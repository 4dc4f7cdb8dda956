"""The shared Redis of rate limits, abuse limits and kick flags: one URL, or Redis Sentinel.

`settings.redis_url` is `SMS_REDIS_URL`, or the broker's Redis when the broker is Redis
(plain or Sentinel). A `sentinel://h1:26379;sentinel://h2:26380` URL is resolved through
the Sentinels to the current master (`redis.sentinel.Sentinel.master_for`), so after a
failover the next command goes to the promoted replica. Reads go to the master too: a
replica may lag behind the counts.
"""

from __future__ import annotations

import os
import threading
from typing import Any
from urllib.parse import unquote, urlsplit

from sms_pipeline.settings import Settings, is_sentinel_url, sentinel_nodes

_lock = threading.Lock()
_clients: dict[tuple[int, str, str | None], Any] = {}
TIMEOUT_SECONDS = 2.0


def _master_options(url: str) -> dict[str, Any]:
    """The master's password and db from the first Sentinel URL (as kombu reads them)."""
    first = urlsplit(url.split(";", 1)[0].strip())
    options: dict[str, Any] = {}
    if first.password:
        options["password"] = unquote(first.password)
    if first.username:
        options["username"] = unquote(first.username)
    db = first.path.strip("/")
    if db.isdigit():
        options["db"] = int(db)
    return options


def sentinel_kwargs(settings: Settings) -> dict[str, Any] | None:
    """Options for connections to the Sentinels themselves (their own password, if any)."""
    if settings.sms_sentinel_password is None:
        return None
    return {"password": settings.sms_sentinel_password.get_secret_value()}


def client(settings: Settings) -> Any | None:
    """A redis-py client on `settings.redis_url` (its master under Sentinel), or None."""
    url = settings.redis_url
    if url is None:
        return None
    key = (os.getpid(), url, settings.redis_master_name)
    with _lock:
        found = _clients.get(key)
        if found is None:
            found = _new_client(url, settings)
            _clients[key] = found
        return found


def _new_client(url: str, settings: Settings) -> Any:
    import redis
    from redis.sentinel import Sentinel

    timeouts = {"socket_timeout": TIMEOUT_SECONDS, "socket_connect_timeout": TIMEOUT_SECONDS}
    if not is_sentinel_url(url):
        return redis.Redis.from_url(url, **timeouts)
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        sentinel_nodes(url),
        sentinel_kwargs={**timeouts, **(sentinel_kwargs(settings) or {})},
        **timeouts,
        **_master_options(url),
    )
    return sentinel.master_for(settings.redis_master_name, **timeouts)  # type: ignore[no-untyped-call]


def limits_key(settings: Settings) -> str:
    """Names the store `limits_storage` builds (callers keep one limiter per store)."""
    url = settings.redis_url
    if url is None:
        return "memory://"
    if not is_sentinel_url(url):
        return url
    return f"{url}|{settings.redis_master_name}"


def limits_storage(settings: Settings) -> Any:
    """The `limits` storage on `settings.redis_url` (Sentinel-aware), or in memory."""
    from limits import storage

    url = settings.redis_url
    if url is None:
        return storage.storage_from_string("memory://")
    if not is_sentinel_url(url):
        return storage.storage_from_string(url)
    # limits' own form: redis+sentinel://h1:p1,h2:p2/service_name (the auth as options)
    options = _master_options(url)
    hosts = ",".join(f"{h}:{p}" for h, p in sentinel_nodes(url))
    master = settings.redis_master_name
    uri = f"redis+sentinel://{hosts}/{master}"
    # limits gives the master's password to the Sentinels too unless told otherwise.
    sentinels = {"password": None, **(sentinel_kwargs(settings) or {})}
    options_any: dict[str, Any] = {"sentinel_kwargs": sentinels, **options}
    return storage.storage_from_string(
        uri,
        use_replicas=False,
        socket_timeout=TIMEOUT_SECONDS,
        **options_any,
    )
