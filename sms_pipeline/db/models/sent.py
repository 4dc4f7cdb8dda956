"""`verification.sms_sent`: SMSPortal's SENT table, a read-only view over `sms_log`.

An application that queued messages by SQL reads their outcome here by its own
`customer_id`, in SMSPortal's status words. The mapping from our two status columns
(`send_status`, and `gateway_status` once the gateway took the message) to those words is
stated once, in the two dictionaries below; the view's SQL is generated from them
(`sms_sent_view_sql`), so the migration that creates the view and the tests that read
it share one source.
"""

from __future__ import annotations

from sms_pipeline.gateway.statuses import GatewayStatus

from .messages import SendStatus

VIEW_NAME = "sms_sent"

# Once submitted (send_status SUBMITTED), the gateway's status decides the word.
# SMSPortal's words are the SMPP receipt states (DELIVRD, UNDELIV, EXPIRED, DELETED,
# UNKNOWN, REJECTD); a message still moving reads SUBMITTED, as in the seed.
GATEWAY_STATUS_WORDS: dict[str, str] = {
    GatewayStatus.ACCEPTED.value: "SUBMITTED",
    GatewayStatus.ENROUTE.value: "SUBMITTED",
    GatewayStatus.PENDING.value: "SUBMITTED",
    GatewayStatus.DELIVERED.value: "DELIVRD",
    GatewayStatus.UNDELIVERABLE.value: "UNDELIV",
    GatewayStatus.EXPIRED.value: "EXPIRED",
    GatewayStatus.DELETED.value: "DELETED",
    GatewayStatus.REJECTED.value: "REJECTD",
    GatewayStatus.UNACCEPTED.value: "REJECTD",
    GatewayStatus.UNKNOWN.value: "UNKNOWN",
    GatewayStatus.TERMINATED.value: "UNKNOWN",
}
SUBMITTED_WITHOUT_GATEWAY_STATUS = "SUBMITTED"

# Before (or instead of) submission, the send status decides. SMSPortal's SENT only holds
# submitted rows; ours also shows messages taken from the queue but not yet submitted
# (waiting for send_at, the send window, a retry) as QUEUED, so a message never vanishes
# between sms_queue and sms_sent. Any send status not listed reads as itself.
SEND_STATUS_WORDS: dict[str, str] = {
    SendStatus.QUEUED.value: "QUEUED",
    SendStatus.SENDING.value: "QUEUED",
    SendStatus.REJECTED.value: "REJECTD",
    SendStatus.RETRYCOUNT_EXCEEDED.value: "RETRYCOUNT EXCEEDED",
    SendStatus.NUMBER_INVALID.value: "number invalid",
    SendStatus.DATA1_INVALID.value: "data1 invalid",
    SendStatus.SEND_AT_INVALID.value: "send_at invalid",
    SendStatus.PRIORITY_INVALID.value: "priority invalid",
    SendStatus.OPTED_OUT.value: "OPTED OUT",
    SendStatus.EXPIRED.value: "EXPIRED",  # not submitted before it expired (validity, queue age)
    SendStatus.SUPERSEDED.value: "SUPERSEDED",  # a newer code to the number replaced it
}

# The view's columns, in order: the queue's columns, SENT's own three, then `extra`.
SENT_COLUMNS: tuple[str, ...] = (
    "id",
    "account_id",
    "kind",
    "sender_id",
    "num_to",
    "data1",
    "data2",
    "flash",
    "send_at",
    "priority",
    "retry_count",
    "cost_centre",
    "customer_id",
    "submitted_at",
    "status_at",
    "status",
    "extra",
)


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _case(column: str, words: dict[str, str], otherwise: str) -> str:
    whens = " ".join(f"WHEN {_quote(k)} THEN {_quote(v)}" for k, v in words.items())
    return f"CASE {column} {whens} ELSE {otherwise} END"


def status_sql() -> str:
    """The SQL expression (over sms_log) for a message's status in SMSPortal's words."""
    gateway = _case(
        "gateway_status", GATEWAY_STATUS_WORDS, _quote(SUBMITTED_WITHOUT_GATEWAY_STATUS)
    )
    send = _case("send_status", SEND_STATUS_WORDS, "send_status")
    submitted = _quote(SendStatus.SUBMITTED.value)
    return f"CASE WHEN send_status = {submitted} THEN {gateway} ELSE {send} END"


def sms_sent_view_sql(dialect_name: str, *, carried: bool = True) -> str:
    """CREATE VIEW for `sms_sent` on PostgreSQL (schema verification) or SQLite (none).

    `carried=False`: the view before migration 0006 (no Data2, no `extra` column).
    """
    prefix = "" if dialect_name == "sqlite" else "verification."
    expressions = {
        "id": "id",
        "account_id": "account_id",
        "kind": "'SMS'",
        "sender_id": "sender_id",
        "num_to": "phone_number",
        "data1": "body",
        "data2": "data2",
        "flash": "flash",
        "send_at": "send_after",
        "priority": "priority",
        # SMSPortal's Retrycount starts at -1 and counts failed tries: attempts made - 1.
        "retry_count": "attempts - 1",
        "cost_centre": "cost_centre",
        "customer_id": "customer_id",
        "submitted_at": "submitted_at",
        "status_at": "COALESCE(status_changed_at, final_at)",
        "status": status_sql(),
        # The operator's own sms_queue columns, as a JSON object of texts (or NULL).
        "extra": "extra",
    }
    columns = SENT_COLUMNS
    if not carried:
        expressions["data2"] = "CAST(NULL AS TEXT)"
        columns = tuple(c for c in SENT_COLUMNS if c != "extra")
    select = ",\n    ".join(f"{expressions[c]} AS {c}" for c in columns)
    return f"CREATE VIEW {prefix}{VIEW_NAME} AS\nSELECT\n    {select}\nFROM {prefix}sms_log"


def drop_sms_sent_view_sql(dialect_name: str) -> str:
    prefix = "" if dialect_name == "sqlite" else "verification."
    return f"DROP VIEW IF EXISTS {prefix}{VIEW_NAME}"
