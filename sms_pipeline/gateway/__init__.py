"""The IP2SMS gateway: XML codec, HTTP client, statuses and errors (no database here)."""

from sms_pipeline.gateway.client import (
    IP2SMSClient,
    Observer,
    SendRequest,
    SendResult,
    StatusResult,
)
from sms_pipeline.gateway.codec import (
    ParsedAnswer,
    ParsedState,
    build_send_xml,
    build_status_xml,
    parse_answer,
)
from sms_pipeline.gateway.errors import (
    GatewayAuthError,
    GatewayConnectionError,
    GatewayCreditsExhausted,
    GatewayDuplicate,
    GatewayError,
    GatewayHTTPError,
    GatewayProtocolError,
    GatewayRejected,
    GatewayRequestInvalid,
    GatewayThrottled,
    GatewayTimeout,
    Outcome,
)
from sms_pipeline.gateway.statuses import GatewayStatus

__all__ = [
    "GatewayAuthError",
    "GatewayConnectionError",
    "GatewayCreditsExhausted",
    "GatewayDuplicate",
    "GatewayError",
    "GatewayHTTPError",
    "GatewayProtocolError",
    "GatewayRejected",
    "GatewayRequestInvalid",
    "GatewayStatus",
    "GatewayThrottled",
    "GatewayTimeout",
    "IP2SMSClient",
    "Observer",
    "Outcome",
    "ParsedAnswer",
    "ParsedState",
    "SendRequest",
    "SendResult",
    "StatusResult",
    "build_send_xml",
    "build_status_xml",
    "parse_answer",
]
