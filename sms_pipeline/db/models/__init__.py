"""The pipeline's tables, one module per concern; all live in schema `verification`."""

from .accounts import POSTPAID_CREDITS, Account
from .api import ApiKey, CallbackEvent, IdempotencyRecord
from .base import SCHEMA, Base, UTCDateTime, UTCTimestamp, utcnow
from .gateways import GATEWAY_STATES, AccountGateway, Gateway, GatewayEvent, GatewayMinute
from .inbound import InboundMark, OptOut, SmsReply, SmsShortcode
from .messages import (
    MESSAGE_TYPES,
    MOVING_STATUS_VALUES,
    PENDING_SEND_STATUSES,
    SEND_STATUSES,
    URGENT_TYPES,
    MessageType,
    QueueClass,
    SendStatus,
    SmsLog,
    queue_class_of,
    types_of,
)
from .metrics import MetricCounter
from .privacy import AuditEvent, DailyRollup, OptOutHash
from .queue import SmsQueue, SmsQueueUnreadable
from .verifications import VERIFICATION_STATUSES, Verification

__all__ = [
    "GATEWAY_STATES",
    "MESSAGE_TYPES",
    "MOVING_STATUS_VALUES",
    "PENDING_SEND_STATUSES",
    "POSTPAID_CREDITS",
    "SCHEMA",
    "SEND_STATUSES",
    "URGENT_TYPES",
    "VERIFICATION_STATUSES",
    "Account",
    "AccountGateway",
    "ApiKey",
    "AuditEvent",
    "Base",
    "CallbackEvent",
    "DailyRollup",
    "Gateway",
    "GatewayEvent",
    "GatewayMinute",
    "IdempotencyRecord",
    "InboundMark",
    "MessageType",
    "MetricCounter",
    "OptOut",
    "OptOutHash",
    "QueueClass",
    "SendStatus",
    "SmsLog",
    "SmsQueue",
    "SmsQueueUnreadable",
    "SmsReply",
    "SmsShortcode",
    "UTCDateTime",
    "UTCTimestamp",
    "Verification",
    "queue_class_of",
    "types_of",
    "utcnow",
]
