"""Incoming messages: replies and shortcode messages, polled (`poll`) or pushed
(`record_inbound`), stored by one code path (`store`), with the opt-out keywords applied."""

from .poll import (
    MAX_PAGES_PER_POLL,
    PollResult,
    get_inbound_client,
    poll_account,
    poll_inbound,
    store_page,
)
from .store import StoredInbound, apply_keyword, record_inbound, store_inbound

__all__ = [
    "MAX_PAGES_PER_POLL",
    "PollResult",
    "StoredInbound",
    "apply_keyword",
    "get_inbound_client",
    "poll_account",
    "poll_inbound",
    "record_inbound",
    "store_inbound",
    "store_page",
]
