"""The process-wide IP2SMS client: one pooled HTTP session per worker process."""

from __future__ import annotations

import threading

from sms_pipeline.gateway import IP2SMSClient
from sms_pipeline.metrics import hooks as metrics
from sms_pipeline.settings import Settings, get_settings

_lock = threading.Lock()
_clients: dict[tuple[str, str, str], IP2SMSClient] = {}


def get_gateway_client(settings: Settings | None = None) -> IP2SMSClient:
    settings = settings or get_settings()
    key = (settings.ip2sms_send_url, settings.ip2sms_status_url, settings.ip2sms_login)
    with _lock:
        client = _clients.get(key)
        if client is None:
            client = IP2SMSClient.from_settings(settings, observer=metrics.gateway_request)
            _clients[key] = client
        return client
