"""Exceptions raised to application code."""

from __future__ import annotations

import uuid


class InvalidMessage(ValueError):  # noqa: N818  (the name is the public contract)
    """A message was refused before anything was stored; `field` names the bad argument."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class OptedOut(InvalidMessage):
    """A `text` message to a number that opted out: logged as `OPTED OUT`, not sent.

    Unlike other refusals the message IS stored (so the log explains it): `message_id`
    is its id.
    """

    def __init__(self, message_id: uuid.UUID) -> None:
        super().__init__("phone_number", "the number opted out of non-essential messages")
        self.message_id = message_id
