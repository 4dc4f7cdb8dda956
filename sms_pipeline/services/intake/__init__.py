"""The intake core: one threshold for every door.

Python (`enqueue_sms`, `enqueue_many`), the HTTP API, the SQL route (`sms_queue`) and
replication (`verifications`) only map their own shape onto these functions:

- `numbers`: the destination number (E.164, plain mobile/fixed-line, refused ranges);
- `texts`: the body and the short text fields (refused characters, segments);
- `times`: `send_at` (SMS_MAX_SCHEDULE_DAYS, infinity, text that is not a time);
- `validate`: all of them → a `Message` or every reason it is refused;
- `admit`: the row, opt-out (with the erased-number hash), supersede, metric, dispatch.
"""

from .admit import admit, admitted, is_opted_out, refuse, row_values, status_for, stopped
from .numbers import destination, parse_number
from .texts import ValidBody, check_text, optional_text, text_problem, validate_body
from .times import check_send_at, stored_time
from .validate import (
    FIELDS,
    Message,
    check_message,
    validate_callback_url,
    validate_message,
    validate_priority,
    validate_type,
)

__all__ = [
    "FIELDS",
    "Message",
    "ValidBody",
    "admit",
    "admitted",
    "check_message",
    "check_send_at",
    "check_text",
    "destination",
    "is_opted_out",
    "optional_text",
    "parse_number",
    "refuse",
    "row_values",
    "status_for",
    "stopped",
    "stored_time",
    "text_problem",
    "validate_body",
    "validate_callback_url",
    "validate_message",
    "validate_priority",
    "validate_type",
]
