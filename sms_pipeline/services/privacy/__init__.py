"""Data protection: codes that expire and are superseded, redaction, retention, erasure.

Every rule has its one home here (docs/privacy.md says what is kept, where, how long):
`expiry` (send-time: `expires_at`, `still_sendable`), `supersede` (a newer one-time code
ends the older ones), `redaction` and the privacy sweep, `retention` (purge and rollups),
`keyed_hash` (a person named without their number), `audit`, and `subjects` (export and
erasure of one person).
"""

from .audit import audit, audit_body_read, audit_rows, os_actor
from .expiry import (
    OTP_TYPES,
    end_unsendable,
    expire_waiting,
    expiry_for,
    gateway_validity,
    parse_valid_for,
    still_sendable,
    superseded_reason,
)
from .keyed_hash import KEY_FILE, erased_opt_out, forget_erased_opt_out, privacy_key, subject_hash
from .redaction import REDACTED, privacy_sweep, redact_final
from .retention import PurgeResult, purge_expired_rows
from .subjects import erase_subject, export_subject, normalise_subject
from .supersede import number_lock_key, supersede_older, supersedes

__all__ = [
    "KEY_FILE",
    "OTP_TYPES",
    "REDACTED",
    "PurgeResult",
    "audit",
    "audit_body_read",
    "audit_rows",
    "end_unsendable",
    "erase_subject",
    "erased_opt_out",
    "expire_waiting",
    "expiry_for",
    "export_subject",
    "forget_erased_opt_out",
    "gateway_validity",
    "normalise_subject",
    "number_lock_key",
    "os_actor",
    "parse_valid_for",
    "privacy_key",
    "privacy_sweep",
    "purge_expired_rows",
    "redact_final",
    "still_sendable",
    "subject_hash",
    "supersede_older",
    "superseded_reason",
    "supersedes",
]
