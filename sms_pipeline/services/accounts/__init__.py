"""Accounts: who may send and how much. `rules` (the default account, send windows,
credits, pauses, the cross-worker rate limit), `api_keys` (keys, scopes, signing) and
`quotas` (abuse limits per key and account)."""

from .rules import (
    SendPermission,
    account_permission,
    charge_credits,
    find_account,
    get_or_create_default_account,
    has_credits,
    in_send_window,
    next_window_open,
    pause_account,
    pause_warning,
    take_gateway_token,
    take_rate_token,
)

__all__ = [
    "SendPermission",
    "account_permission",
    "charge_credits",
    "find_account",
    "get_or_create_default_account",
    "has_credits",
    "in_send_window",
    "next_window_open",
    "pause_account",
    "pause_warning",
    "take_gateway_token",
    "take_rate_token",
]
