"""kombu's Redis transport, made to survive losing Redis while a late-ack task runs.

When the connection breaks, celery's consumer closes the transport (its `client` becomes
None) and then the channel, whose restore of unacknowledged messages builds a Redis pool
from that None and raises an `AttributeError` nothing catches: the consumer stops for good
in a live process (RELIABILITY.md). Here a channel whose transport is closed says so with
a connection error, which every close path ignores, so the consumer reconnects; the
unacknowledged message is restored by Redis after the visibility timeout (and its row is
in the outbox either way).

Importing this module registers the transport for `redis://`, `rediss://` and `sentinel://`
URLs in this process (broker/app.py imports it), so the URL users see stays kombu's.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import redis as kombu_redis

log = logging.getLogger(__name__)


class _ClosedTransportGuard:
    connection: Any

    def _connparams(self, asynchronous: bool = False) -> Any:
        if self.connection.client is None:
            log.warning(
                "broker connection closed while messages were unacknowledged; Redis "
                "restores them after the visibility timeout"
            )
            raise redis.exceptions.ConnectionError("the broker connection is closed")
        return super()._connparams(asynchronous=asynchronous)  # type: ignore[misc]


class Channel(_ClosedTransportGuard, kombu_redis.Channel):
    pass


class Transport(kombu_redis.Transport):
    Channel = Channel


# Sentinel: the same channel, its pool built through the Sentinels (kombu's SentinelChannel).
class SentinelChannel(_ClosedTransportGuard, kombu_redis.SentinelChannel):
    pass


class SentinelTransport(kombu_redis.SentinelTransport):
    Channel = SentinelChannel


for _scheme in ("redis", "rediss"):
    TRANSPORT_ALIASES[_scheme] = f"{__name__}:Transport"
TRANSPORT_ALIASES["sentinel"] = f"{__name__}:SentinelTransport"
