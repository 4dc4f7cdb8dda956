"""Sentences that tell a person what to do next, in one place for every caller.

The gateway client and the send service log `gateway_unreachable(...)` when the gateway
cannot be reached; the CLI's `send` and `up` use the others.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from urllib.parse import urlsplit

from sms_pipeline.settings import Settings, get_settings, mask_url

START_COMMAND = "sms-pipeline up"
_lock = threading.Lock()
_last_warned: dict[str, float] = {}
WARN_EVERY_SECONDS = 10.0


def is_loopback_url(url: str) -> bool:
    """The URL's host is this machine (127.0.0.0/8, ::1 or localhost)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def gateway_unreachable(url: str | None = None, settings: Settings | None = None) -> str:
    """Why a send failed to connect, naming the (masked) URL, and what to start."""
    settings = settings or get_settings()
    url = url or settings.ip2sms_send_url
    text = f"gateway unreachable at {mask_url(url)}"
    if settings.is_embedded_database and is_loopback_url(url):
        # Say what the user did: a URL they set is not "no gateway configured".
        given = (
            "IP2SMS_SEND_URL points at this machine"
            if "ip2sms_send_url" in settings.explicit_gateway
            else "with no real gateway configured"
        )
        text += (
            f": {given}; `{START_COMMAND}` starts the simulator there "
            "(or run `sms-pipeline gateway-sim` next to your worker)"
        )
    else:
        text += ": check IP2SMS_SEND_URL / IP2SMS_STATUS_URL and the network"
    return text


def should_warn(key: str, now: float | None = None) -> bool:
    """True at most once per WARN_EVERY_SECONDS per key: a down gateway is one warning."""
    now = time.monotonic() if now is None else now
    with _lock:
        last = _last_warned.get(key)
        if last is not None and now - last < WARN_EVERY_SECONDS:
            return False
        _last_warned[key] = now
        return True


def no_worker(message_id: object, waited: float) -> str:
    return (
        f"queued as {message_id}; no worker answered in {waited:g} s: start `{START_COMMAND}` "
        "(worker, beat and, without a real gateway, the simulator)"
    )
