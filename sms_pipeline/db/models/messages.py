"""`verification.sms_log`: one row per message for its whole life, from enqueue to final.

The eHealth log's columns keep their names. The row is written (and committed) before the
gateway is called, so a crash at any point leaves an explained row behind.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    String,
    Text,
    Uuid,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from sms_pipeline.gateway.statuses import ALL_STATUSES, MOVING_STATUSES

from .base import Base, utcnow


class MessageType(enum.StrEnum):
    VERIFICATION = "verification"
    MEDICATION_REQUEST = "medication_request"
    TEXT = "text"
    TWO_FA = "2FA"


class SendStatus(enum.StrEnum):
    """Where a message is on the way to the gateway (SMSPortal's SENT.Status words)."""

    QUEUED = "QUEUED"  # waiting: for its turn, its send time, its window or a retry
    SENDING = "SENDING"  # claimed by a worker; lease_until bounds the claim
    SUBMITTED = "SUBMITTED"  # the gateway took it; gateway_status follows it
    REJECTED = "REJECTED"  # the gateway refused it for good (last_error says why)
    RETRYCOUNT_EXCEEDED = "RETRYCOUNT EXCEEDED"
    NUMBER_INVALID = "number invalid"
    DATA1_INVALID = "data1 invalid"
    SEND_AT_INVALID = "send_at invalid"  # a queue row's send time: infinity, not a time, too far
    PRIORITY_INVALID = "priority invalid"  # a queue row's priority outside the one range
    OPTED_OUT = "OPTED OUT"  # a text to a number that opted out: not sent
    EXPIRED = "EXPIRED"  # not submitted by expires_at (code validity or max queue age)
    SUPERSEDED = "SUPERSEDED"  # a newer code to the same number replaced it: never sent

    @property
    def is_final(self) -> bool:
        return self not in (SendStatus.QUEUED, SendStatus.SENDING)


MESSAGE_TYPES: tuple[str, ...] = tuple(t.value for t in MessageType)
URGENT_TYPES = frozenset({MessageType.VERIFICATION.value, MessageType.TWO_FA.value})


class QueueClass(enum.StrEnum):
    """Which send queue a message goes through: urgent never waits behind bulk."""

    URGENT = "urgent"  # verification and 2FA
    BULK = "bulk"  # text, medication_request


def queue_class_of(message_type: str) -> QueueClass:
    return QueueClass.URGENT if message_type in URGENT_TYPES else QueueClass.BULK


def types_of(queue_class: QueueClass) -> tuple[str, ...]:
    urgent = queue_class is QueueClass.URGENT
    return tuple(t for t in MESSAGE_TYPES if (t in URGENT_TYPES) == urgent)


SEND_STATUSES: tuple[str, ...] = tuple(s.value for s in SendStatus)
PENDING_SEND_STATUSES: tuple[str, ...] = (SendStatus.QUEUED.value, SendStatus.SENDING.value)
MOVING_STATUS_VALUES: tuple[str, ...] = tuple(sorted(s.value for s in MOVING_STATUSES))


def _in_list(column: str, values: tuple[str, ...]) -> str:
    quoted = ", ".join("'" + v.replace("'", "''") + "'" for v in values)
    return f"{column} IN ({quoted})"


_URGENT_PENDING = (
    _in_list("send_status", PENDING_SEND_STATUSES)
    + " AND "
    + _in_list("type", tuple(sorted(URGENT_TYPES)))
)


class SmsLog(Base):
    __tablename__ = "sms_log"
    __table_args__ = (
        CheckConstraint(_in_list("type", MESSAGE_TYPES), name="type"),
        CheckConstraint(
            "gateway_status IS NULL OR " + _in_list("gateway_status", ALL_STATUSES),
            name="gateway_status",
        ),
        CheckConstraint(_in_list("send_status", SEND_STATUSES), name="send_status"),
        CheckConstraint("attempts >= 0", name="attempts"),
        # Status sweep: only messages still moving, so its cost follows pending work.
        Index(
            "ix_sms_log_moving",
            "next_check_at",
            postgresql_where=text(_in_list("gateway_status", MOVING_STATUS_VALUES)),
            sqlite_where=text(_in_list("gateway_status", MOVING_STATUS_VALUES)),
        ),
        # Outbox and queue poller: waiting messages per account, highest priority first.
        Index(
            "ix_sms_log_outbox",
            "account_id",
            text("priority DESC"),
            "due_at",
            postgresql_where=text(_in_list("send_status", PENDING_SEND_STATUSES)),
            sqlite_where=text(_in_list("send_status", PENDING_SEND_STATUSES)),
        ),
        # The urgent drain's claim: without it, every urgent claim walks the whole bulk
        # backlog in the index above to find no urgent row (8 ms at 20,000 queued texts,
        # growing with the backlog; 0.04 ms with it). Bulk claims keep the one above.
        Index(
            "ix_sms_log_outbox_urgent",
            "account_id",
            text("priority DESC"),
            "due_at",
            postgresql_where=text(_URGENT_PENDING),
            sqlite_where=text(_URGENT_PENDING),
        ),
        Index("ix_sms_log_gateway_id", "gateway_id"),
        # Erasure, export and supersede find a person's messages by number.
        Index("ix_sms_log_phone_number", "phone_number"),
        # Redaction sweep: final messages whose body is still there, by type.
        Index(
            "ix_sms_log_unredacted",
            "type",
            "final_at",
            postgresql_where=text("redacted_at IS NULL AND final_at IS NOT NULL"),
            sqlite_where=text("redacted_at IS NULL AND final_at IS NOT NULL"),
        ),
        Index("ix_sms_log_inserted_at", "inserted_at"),
        # Latency-based demotion (services/gateways/latency.py): a gateway's recent
        # submissions, read every few seconds when SMS_GATEWAY_SLOW_SECONDS is set.
        Index(
            "ix_sms_log_gateway_submitted",
            "gateway",
            "submitted_at",
            postgresql_where=text("gateway IS NOT NULL"),
            sqlite_where=text("gateway IS NOT NULL"),
        ),
        # Callback sweep: recently final messages that asked for a status callback.
        Index(
            "ix_sms_log_callbacks",
            "final_at",
            postgresql_where=text("callback_url IS NOT NULL"),
            sqlite_where=text("callback_url IS NOT NULL"),
        ),
    )

    # --- the eHealth log's columns -------------------------------------------------------
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    phone_number: Mapped[str] = mapped_column(String(32))
    type: Mapped[str] = mapped_column(String(32))
    body: Mapped[str] = mapped_column(Text)
    gateway_id: Mapped[str | None] = mapped_column(String(64))
    # The gateway (verification.gateways.name) that accepted it, or may have (an attempt
    # whose outcome is unknown): set when an attempt goes out, cleared only by a definite
    # refusal; its resends and status checks go there and nowhere else.
    gateway: Mapped[str | None] = mapped_column(String(64))
    gateway_status: Mapped[str | None] = mapped_column(String(16))
    status_changed_at: Mapped[dt.datetime | None]
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    inserted_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    # --- what the pipeline needs ---------------------------------------------------------
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    sender_id: Mapped[str | None] = mapped_column(String(16))
    priority: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    # The caller's "not before" time (SMSPortal's SendDatetime).
    send_after: Mapped[dt.datetime | None]
    # When the next send attempt may run: send_after, a retry's backoff, or a pause.
    due_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    attempts: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    send_status: Mapped[str] = mapped_column(String(32), default=SendStatus.QUEUED.value)
    last_error: Mapped[str | None] = mapped_column(String(500))
    ext_id: Mapped[str | None] = mapped_column(String(64))
    uniq_key: Mapped[str | None] = mapped_column(String(64), unique=True)
    submitted_at: Mapped[dt.datetime | None]
    cost_centre: Mapped[str | None] = mapped_column(String(64))
    # The SQL route's own id (SMSPortal's CustomerID); sms_sent is read by it.
    customer_id: Mapped[str | None] = mapped_column(String(128), index=True)
    flash: Mapped[bool] = mapped_column(default=False, server_default=text("false"))
    segments: Mapped[int] = mapped_column(default=1, server_default=text("1"))
    encoding: Mapped[str] = mapped_column(String(8), default="GSM-7", server_default="GSM-7")
    verification_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, unique=True)
    # The sms_queue row this message came from (SQL route), once only.
    queue_id: Mapped[int | None] = mapped_column(BigInteger, unique=True)
    callback_url: Mapped[str | None] = mapped_column(String(2000))
    # The SQL route's Data2 and any column an operator added to sms_queue (JSON object of
    # texts): carried to the message and shown in sms_sent, as the seed promises.
    data2: Mapped[str | None] = mapped_column(Text)
    extra: Mapped[str | None] = mapped_column(Text)
    # The API key that created the message: its signing secret signs the callbacks.
    api_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id"))

    # --- data protection (docs/privacy.md) ----------------------------------------------
    # Not submitted by then, never sent (EXPIRED): min(due + max queue age, due + validity).
    expires_at: Mapped[dt.datetime | None]
    # The newer code that replaced this one; a claim refuses a superseded message.
    superseded_by: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    redacted_at: Mapped[dt.datetime | None]  # body replaced by the marker
    body_chars: Mapped[int | None]  # the body's length, kept when it is redacted

    # --- machinery -----------------------------------------------------------------------
    dispatched_at: Mapped[dt.datetime | None]  # last publish of a send task
    lease_until: Mapped[dt.datetime | None]  # SENDING claim expiry
    next_check_at: Mapped[dt.datetime | None]  # next status check (moving messages)
    status_checks: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    # When the gateway last answered a status request about it (the time the request went
    # out): Terminated is decided on this fact, see services/status/terminate.py.
    last_checked_at: Mapped[dt.datetime | None]
    # Status checks that failed (no usable answer) since the last usable one, when the
    # first of them was asked, and how the last one failed: the give-up rule's facts
    # (services/status/terminate.py). A usable answer resets them.
    status_failures: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    status_failing_since: Mapped[dt.datetime | None]
    status_failure: Mapped[str | None] = mapped_column(String(200))
    final_at: Mapped[dt.datetime | None]  # when the message reached a final state

    # --- OTP fallback (services/gateways/fallback.py) -------------------------------------
    # A code not Delivered in SMS_OTP_FALLBACK_SECONDS is sent once more, the same code,
    # through another gateway: the copy's id on the original, the original's on the copy.
    fallback_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    fallback_of: Mapped[uuid.UUID | None] = mapped_column(Uuid)

    def __repr__(self) -> str:
        # Never the body or the full number.
        return (
            f"SmsLog(id={self.id!s}, type={self.type!r}, send_status={self.send_status!r}, "
            f"gateway_status={self.gateway_status!r}, attempts={self.attempts!r})"
        )
