"""The 11 IP2SMS message statuses and which of them are final."""

from __future__ import annotations

import enum


class GatewayStatus(enum.StrEnum):
    """A message's status as the IP2SMS gateway reports it (Terminated is ours to set)."""

    ACCEPTED = "Accepted"
    ENROUTE = "Enroute"
    DELIVERED = "Delivered"
    EXPIRED = "Expired"
    DELETED = "Deleted"
    UNDELIVERABLE = "Undeliverable"
    REJECTED = "Rejected"
    UNKNOWN = "Unknown"
    UNACCEPTED = "Unaccepted"
    TERMINATED = "Terminated"
    PENDING = "Pending"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES

    @classmethod
    def parse(cls, word: str) -> GatewayStatus:
        """Map a status word in any letter case (and stray whitespace) to the enum.

        Raises ValueError for a word that is not one of the 11 statuses.
        """
        status = _BY_WORD.get(word.strip().lower())
        if status is None:
            raise ValueError(f"unknown gateway status {word.strip()[:40]!r}")
        return status


# Every status answer is read through `parse`: one lookup, not a scan of the members.
_BY_WORD: dict[str, GatewayStatus] = {s.value.lower(): s for s in GatewayStatus}
FINAL_STATUSES: frozenset[GatewayStatus] = frozenset(
    {
        GatewayStatus.DELIVERED,
        GatewayStatus.EXPIRED,
        GatewayStatus.DELETED,
        GatewayStatus.UNDELIVERABLE,
        GatewayStatus.REJECTED,
        GatewayStatus.UNACCEPTED,
        GatewayStatus.TERMINATED,
    }
)
MOVING_STATUSES: frozenset[GatewayStatus] = frozenset(
    {
        GatewayStatus.ACCEPTED,
        GatewayStatus.ENROUTE,
        GatewayStatus.UNKNOWN,
        GatewayStatus.PENDING,
    }
)
ALL_STATUSES: tuple[str, ...] = tuple(s.value for s in GatewayStatus)
