"""kombu's Redis transport, made to survive losing Redis while a late-ack task runs.

When the broker connection breaks, celery 5.7's consumer first `collect()`s the connection
(which closes kombu's transport and sets its `client` to None) and then `close()`s it. If
the first close of the channel stopped early (the BRPOP still in flight raised the
connection error, which kombu swallows), the second one goes on to restore the channel's
unacknowledged messages: with late acks, the task still running. kombu builds a Redis
pool for that from `transport.client`, now None, and the `AttributeError` it raises is
not a connection error, so nothing catches it: the worker logs "Unrecoverable error:
AttributeError(... 'hostname')" and its consumer stops for good while the process stays
alive, consuming nothing (seen in the fault suite when Redis restarted under load: 54
messages left queued for 150 s).

Here a channel whose transport is closed reports that as what it is, a connection error,
which every close path already ignores; the consumer reconnects as it does after any
other broken connection. The unacknowledged message is not restored by this channel: it
stays in Redis's unacked hash and is restored after the visibility timeout, and its row
is in the outbox either way.

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
