"""The process-wide IP2SMS client: one pooled HTTP session per worker process."""

from __future__ import annotations

import hashlib
import threading

from sms_pipeline.db.models import Account
from sms_pipeline.gateway import IP2SMSClient
from sms_pipeline.metrics import hooks as metrics
from sms_pipeline.services.gateways.registry import GatewayTable, Route, login_for, resolve_password
from sms_pipeline.settings import Settings, get_settings

_lock = threading.Lock()
_clients: dict[tuple[str, ...], IP2SMSClient] = {}


def get_gateway_client(settings: Settings | None = None) -> IP2SMSClient:
    settings = settings or get_settings()
    key = (settings.ip2sms_send_url, settings.ip2sms_status_url, settings.ip2sms_login)
    with _lock:
        client = _clients.get(key)
        if client is None:
            client = IP2SMSClient.from_settings(settings, observer=metrics.gateway_request)
            _clients[key] = client
        return client


def client_for(
    route: Route, login: str, password: str, settings: Settings | None = None
) -> IP2SMSClient:
    """The process-wide client for one gateway and one login (its own pools)."""
    settings = settings or get_settings()
    digest = hashlib.sha256(password.encode()).hexdigest()
    key = (route.name, route.send_url, route.status_url, login + "\0" + digest)
    with _lock:
        client = _clients.get(key)
        if client is None:
            client = IP2SMSClient(
                route.send_url,
                route.status_url,
                login,
                password,
                route.source or settings.ip2sms_source,
                (settings.ip2sms_connect_timeout, settings.ip2sms_read_timeout),
                total_timeout=settings.ip2sms_total_timeout,
                validity=settings.ip2sms_validity,
                max_response_bytes=settings.ip2sms_max_response_bytes,
                pool_size=settings.sms_gateway_connections,
                observer=metrics.gateway_request,
            )
            _clients[key] = client
        return client


def client_for_account(
    route: Route, account: Account, table: GatewayTable, settings: Settings | None = None
) -> IP2SMSClient | None:
    """The client with this account's login on this gateway; None when its password cannot be
    found (never another login instead)."""
    settings = settings or get_settings()
    login = login_for(account, route, table)
    password = resolve_password(login.password_ref, settings)
    if password is None:
        return None
    if not route.from_table and (
        not login.own
        or (login.login, password)
        == (settings.ip2sms_login, settings.ip2sms_password.get_secret_value())
    ):
        return get_gateway_client(settings)
    return client_for(route, login.login, password, settings)
