"""Which inbound APIs an account reads, and with whose login (docs/gateways.md).

With no gateway rows: the IP2SMS_* settings' inbound API with the settings' login, read
mark on the account (`max_replies_id`, `max_sc_id`) — as before gateways were rows. With
rows: every active gateway with an `inbound_url`, with the account's login there (the same
rule as sending: `registry.login_for`), its mark in `inbound_marks` under the gateway's
name. A row whose inbound URL is the settings' own keeps the account's mark and rows (key
''), so adding the existing gateway as a row re-reads nothing. A login whose password
cannot be found is skipped with a warning, never replaced by another login.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass

from sms_pipeline.db import get_engine
from sms_pipeline.db.models import Account
from sms_pipeline.gateway.inbound import DEFAULT_INBOUND_MAX_BYTES, InboundClient
from sms_pipeline.services.gateways import registry
from sms_pipeline.settings import Settings

log = logging.getLogger(__name__)

SETTINGS_KEY = ""  # the settings' own inbound API: the account's mark columns


@dataclass(frozen=True)
class Source:
    """One inbound API to read for one account."""

    scope: str  # '' (the settings' API) or the gateway's name: the mark's and the rows' key
    gateway: str  # the gateway's name (sms_log.gateway of the messages it carried)
    client: InboundClient


_lock = threading.Lock()
_clients: dict[tuple[str, str, str], InboundClient] = {}


def _client(url: str, login: str, password: str, settings: Settings) -> InboundClient:
    digest = hashlib.sha256(password.encode()).hexdigest()
    key = (url, login, digest)
    with _lock:
        client = _clients.get(key)
        if client is None:
            client = InboundClient(
                url,
                login,
                password,
                (settings.ip2sms_connect_timeout, settings.ip2sms_read_timeout),
                max_response_bytes=max(
                    settings.ip2sms_max_response_bytes, DEFAULT_INBOUND_MAX_BYTES
                ),
            )
            _clients[key] = client
        return client


def sources_for(
    account: Account, settings: Settings, default_client: InboundClient
) -> list[Source]:
    """The inbound APIs `account` reads this round (the settings' one: `default_client`)."""
    with get_engine(settings).connect() as conn:
        table = registry.routes(conn, settings)
    rows = [r for r in table.routes if r.from_table]
    if not rows:
        return [Source(SETTINGS_KEY, registry.DEFAULT, default_client)]
    sources = []
    for route in rows:
        if not route.active or not route.inbound_url:
            continue
        login = registry.login_for(account, route, table)
        password = registry.resolve_password(login.password_ref, settings)
        if password is None:
            log.warning(
                "account %s: inbound on gateway %s skipped: password_ref %r for login %r "
                "resolves to nothing",
                account.name,
                route.name,
                login.password_ref,
                login.login,
            )
            continue
        scope = SETTINGS_KEY if route.inbound_url == settings.ip2sms_inbound_url else route.name
        client = _client(route.inbound_url, login.login, password, settings)
        sources.append(Source(scope, route.name, client))
    return sources
