"""The SMS channel's predefined metrics (long: one entry per metric, each with its help).

One list that the exporter, the docs and the tests share.

Two sources:
- ``stored``: counters and histograms kept in ``verification.metric_counters`` (they survive
  restarts and add up across workers); histograms are stored the Prometheus way, as
  cumulative ``_bucket{le=...}`` rows plus ``_sum`` and ``_count``. The heartbeat gauge is
  stored there too, set (not added) by each worker and beat.
- ``scrape``: gauges computed from ``sms_log`` when Prometheus scrapes, with indexed queries.

Label values come from bounded vocabularies only (message types, statuses, outcomes, queue
names, account names): never a phone number, a message id or a gateway id.

``python -m sms_pipeline.metrics.catalogue`` prints the markdown table of docs/metrics.md.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from sms_pipeline.gateway.errors import Outcome as GatewayOutcome


class Kind(enum.StrEnum):
    COUNTER = "counter"
    HISTOGRAM = "histogram"
    GAUGE = "gauge"


class Source(enum.StrEnum):
    STORED = "stored"  # metric_counters rows, incremented by the workers
    SCRAPE = "scrape"  # computed from sms_log at scrape time


@dataclass(frozen=True)
class MetricSpec:
    """One metric as Prometheus shows it (counters carry their `_total` suffix here)."""

    name: str
    kind: Kind
    source: Source
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()
    label_values: str = ""  # the vocabulary of the labels, for the docs

    @property
    def family(self) -> str:
        """The metric family name (prometheus_client adds `_total` to counters itself)."""
        if self.kind is Kind.COUNTER and self.name.endswith("_total"):
            return self.name[: -len("_total")]
        return self.name


# Gateway answers normally take tens of milliseconds; the read timeout is 10 s by default.
GATEWAY_LATENCY_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Retries back off 5 s, 10 s, 20 s...; send windows and pauses can hold a message for hours.
ENQUEUE_TO_SUBMIT_BUCKETS: Final = (
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0
)  # fmt: skip
# Delivery reports arrive within seconds to minutes; Terminated after 30 minutes.
SUBMIT_TO_DELIVERED_BUCKETS: Final = (
    1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0
)  # fmt: skip
ATTEMPT_BUCKETS: Final = (1.0, 2.0, 3.0, 4.0, 5.0, 10.0)
# Codes are valid 10 minutes by default (SMS_OTP_VALID_SECONDS): bounds around it.
ENQUEUE_TO_DELIVERED_BUCKETS: Final = (
    1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0
)  # fmt: skip


class MessageEvent(enum.StrEnum):
    """The `status` values of sms_messages_total: what happened to a message on its way."""

    ENQUEUED = "enqueued"
    SUBMITTED = "submitted"
    REJECTED = "rejected"
    RETRYCOUNT_EXCEEDED = "retrycount_exceeded"
    NUMBER_INVALID = "number_invalid"
    DATA1_INVALID = "data1_invalid"
    SEND_AT_INVALID = "send_at_invalid"
    PRIORITY_INVALID = "priority_invalid"
    OPTED_OUT = "opted_out"
    EXPIRED = "expired"
    SUPERSEDED = "superseded"


MESSAGE_EVENTS: Final = tuple(e.value for e in MessageEvent)
PRIVACY_ACTIONS: Final = ("redacted", "purged", "erased")
# "ok" and every failure outcome the gateway client sorts an answer into (one list).
GATEWAY_OUTCOMES: Final = tuple(o.value for o in GatewayOutcome)

MESSAGES_TOTAL: Final = "sms_messages_total"
GATEWAY_REQUESTS_TOTAL: Final = "sms_gateway_requests_total"
PRIVACY_ACTIONS_TOTAL: Final = "sms_privacy_actions_total"
GATEWAY_DURATION: Final = "sms_gateway_request_duration_seconds"
STATUS_TRANSITIONS_TOTAL: Final = "sms_status_transitions_total"
STATUS_BACKWARDS_TOTAL: Final = "sms_status_backwards_total"
ENQUEUE_TO_SUBMIT: Final = "sms_enqueue_to_submit_seconds"
SUBMIT_TO_DELIVERED: Final = "sms_submit_to_delivered_seconds"
MESSAGE_ATTEMPTS: Final = "sms_message_attempts"
INBOUND_SKIPPED_TOTAL: Final = "sms_inbound_items_skipped_total"
INTAKE_ERRORS_TOTAL: Final = "sms_intake_errors_total"
SQL_QUEUE_DEPTH: Final = "sms_sql_queue_depth"
REPLICATION_WAITING: Final = "sms_replication_waiting"
POLLER_FAILURES_TOTAL: Final = "sms_poller_failures_total"
POLLERS: Final = ("inbound", "sql_route", "replication", "callbacks", "status")
QUEUE_DEPTH: Final = "sms_queue_depth"
QUEUE_OLDEST_AGE: Final = "sms_queue_oldest_age_seconds"
ACCOUNT_PAUSED: Final = "sms_account_paused"
MESSAGES_MOVING: Final = "sms_messages_moving"
MESSAGES_WINDOW: Final = "sms_messages_window"
TERMINATED_RATIO: Final = "sms_terminated_ratio"
DELIVERY_RATIO: Final = "sms_delivery_ratio"
RETRYCOUNT_EXCEEDED_RATIO: Final = "sms_retrycount_exceeded_ratio"
WINDOW_SECONDS: Final = "sms_metrics_window_seconds"
DATABASE_UP: Final = "sms_metrics_database_up"
LIMIT_REFUSALS_TOTAL: Final = "sms_limit_refusals_total"
ENQUEUE_TO_DELIVERED: Final = "sms_enqueue_to_delivered_seconds"
OTP_VALID_SECONDS: Final = "sms_otp_valid_seconds"
STATUS_CHECK_LAG: Final = "sms_status_check_lag_seconds"
REPLICATION_LAG: Final = "sms_replication_lag_seconds"
SQL_QUEUE_OLDEST_AGE: Final = "sms_sql_queue_oldest_age_seconds"
HEARTBEAT: Final = "sms_heartbeat_timestamp_seconds"
GATEWAY_ROUTE_REQUESTS_TOTAL: Final = "sms_gateway_route_requests_total"
GATEWAY_ROUTE_DURATION: Final = "sms_gateway_route_request_duration_seconds"
GATEWAY_SWITCHES_TOTAL: Final = "sms_gateway_switches_total"
GATEWAY_SLOW_DEMOTIONS_TOTAL: Final = "sms_gateway_slow_demotions_total"
OTP_FALLBACKS_TOTAL: Final = "sms_otp_fallbacks_total"
GATEWAY_STATE: Final = "sms_gateway_state"
GATEWAY_WEIGHT: Final = "sms_gateway_weight"
# A send's outcome on one gateway: accepted, a definite refusal (safe to move), ambiguous
# (may have been taken: stays there), or refused for the message's own sake.
ROUTE_OUTCOMES: Final = ("accepted", "definite", "ambiguous", "message_refused")
GATEWAY_STATE_VALUES: Final = ("up", "probing", "down", "disabled")

HEARTBEAT_ROLES: Final = ("worker", "beat")

_TYPES = "verification, medication_request, text, 2FA"

CATALOGUE: Final[tuple[MetricSpec, ...]] = (
    MetricSpec(
        MESSAGES_TOTAL,
        Kind.COUNTER,
        Source.STORED,
        "Messages by what happened to them: enqueued, then one send outcome each.",
        ("type", "account", "status"),
        label_values=f"type: {_TYPES}; account: account name; status: " + ", ".join(MESSAGE_EVENTS),
    ),
    MetricSpec(
        PRIVACY_ACTIONS_TOTAL,
        Kind.COUNTER,
        Source.STORED,
        "Data protection: bodies redacted, messages purged by retention, people erased.",
        ("action",),
        label_values="action: " + ", ".join(PRIVACY_ACTIONS),
    ),
    MetricSpec(
        GATEWAY_REQUESTS_TOTAL,
        Kind.COUNTER,
        Source.STORED,
        "IP2SMS HTTP requests by operation and outcome.",
        ("operation", "outcome"),
        label_values="operation: send, status; outcome: " + ", ".join(GATEWAY_OUTCOMES),
    ),
    MetricSpec(
        GATEWAY_DURATION,
        Kind.HISTOGRAM,
        Source.STORED,
        "IP2SMS request latency, whatever the outcome.",
        ("operation",),
        GATEWAY_LATENCY_BUCKETS,
        label_values="operation: send, status",
    ),
    MetricSpec(
        STATUS_TRANSITIONS_TOTAL,
        Kind.COUNTER,
        Source.STORED,
        "Gateway status changes recorded, by the status reached.",
        ("type", "status"),
        label_values=f"type: {_TYPES}; status: the 11 IP2SMS statuses",
    ),
    MetricSpec(
        STATUS_BACKWARDS_TOTAL,
        Kind.COUNTER,
        Source.STORED,
        "Gateway answers that would move a status backwards (ignored), by the status kept.",
        ("type", "status"),
        label_values=f"type: {_TYPES}; status: the 11 IP2SMS statuses",
    ),
    MetricSpec(
        ENQUEUE_TO_SUBMIT,
        Kind.HISTOGRAM,
        Source.STORED,
        "Time from enqueue (or the requested send time, if later) to the gateway's acceptance.",
        ("type",),
        ENQUEUE_TO_SUBMIT_BUCKETS,
        label_values=f"type: {_TYPES}",
    ),
    MetricSpec(
        SUBMIT_TO_DELIVERED,
        Kind.HISTOGRAM,
        Source.STORED,
        "Time from submission to the Delivered status (the gateway's status date).",
        ("type",),
        SUBMIT_TO_DELIVERED_BUCKETS,
        label_values=f"type: {_TYPES}",
    ),
    MetricSpec(
        MESSAGE_ATTEMPTS,
        Kind.HISTOGRAM,
        Source.STORED,
        "Send attempts a message used, observed at its final send outcome.",
        ("type",),
        ATTEMPT_BUCKETS,
        label_values=f"type: {_TYPES}",
    ),
    MetricSpec(
        INBOUND_SKIPPED_TOTAL,
        Kind.COUNTER,
        Source.STORED,
        "Incoming messages (replies, shortcodes) skipped because they could not be read or "
        "stored; the messages around them are stored.",
        ("kind",),
        label_values="kind: replies, shortcodes",
    ),
    MetricSpec(
        INTAKE_ERRORS_TOTAL,
        Kind.COUNTER,
        Source.STORED,
        "Rows a door could not read at all (an sms_queue row the database cannot read "
        "back: moved aside to sms_queue_unreadable); the rows around them are taken.",
        ("door", "kind"),
        label_values="door: sql_route; kind: unreadable_row",
    ),
    MetricSpec(
        POLLER_FAILURES_TOTAL,
        Kind.COUNTER,
        Source.STORED,
        "Units a periodic job could not process (an account's inbound round or SQL-route "
        "queue, a replication batch, a callback step, a chunk of status checks): each is "
        "skipped, counted and logged, and the job goes on with the others.",
        ("poller",),
        label_values="poller: " + ", ".join(POLLERS),
    ),
    MetricSpec(
        QUEUE_DEPTH,
        Kind.GAUGE,
        Source.SCRAPE,
        "Messages waiting to be sent or being sent (QUEUED, SENDING).",
        ("queue", "priority"),
        label_values="queue: urgent, bulk; priority: 0..9, <0, >9",
    ),
    MetricSpec(
        QUEUE_OLDEST_AGE,
        Kind.GAUGE,
        Source.SCRAPE,
        "How long the oldest waiting message has waited since it was enqueued (or since its "
        "requested send time): a pause, a retry or a window that moves its next attempt "
        "does not reset it (0 when none waits).",
        ("queue", "priority"),
        label_values="queue: urgent, bulk; priority: 0..9, <0, >9",
    ),
    MetricSpec(
        SQL_QUEUE_DEPTH,
        Kind.GAUGE,
        Source.SCRAPE,
        "Rows waiting in the SQL route's sms_queue, per account (rows behind an inactive "
        "account or a zero ProcessQueueInterval stay here; their age: "
        "sms_sql_queue_oldest_age_seconds).",
        ("account",),
        label_values="account: the account's name",
    ),
    MetricSpec(
        REPLICATION_WAITING,
        Kind.GAUGE,
        Source.SCRAPE,
        "Verifications that have no sms_log row yet (waiting to be replicated, whatever "
        "their age; the oldest one's age: sms_replication_lag_seconds).",
    ),
    MetricSpec(
        ACCOUNT_PAUSED,
        Kind.GAUGE,
        Source.SCRAPE,
        "1 for each account paused now (its messages wait until the pause ends); the "
        "series is absent otherwise.",
        ("account", "reason"),
        label_values="account: account names; reason: credits, 429, manual",
    ),
    MetricSpec(
        MESSAGES_MOVING,
        Kind.GAUGE,
        Source.SCRAPE,
        "Submitted messages still moving (Accepted, Enroute, Unknown, Pending).",
    ),
    MetricSpec(
        MESSAGES_WINDOW,
        Kind.GAUGE,
        Source.SCRAPE,
        "Messages enqueued within the window, by their current status.",
        ("type", "status"),
        label_values=f"type: {_TYPES}; status: a final gateway status, a final send "
        "status, moving or pending",
    ),
    MetricSpec(
        TERMINATED_RATIO,
        Kind.GAUGE,
        Source.SCRAPE,
        "Share of the window's finished messages that ended Terminated (no final status in time).",
    ),
    MetricSpec(
        DELIVERY_RATIO,
        Kind.GAUGE,
        Source.SCRAPE,
        "Share of the window's finished messages that were Delivered.",
        ("type",),
        label_values=f"type: {_TYPES}",
    ),
    MetricSpec(
        RETRYCOUNT_EXCEEDED_RATIO,
        Kind.GAUGE,
        Source.SCRAPE,
        "Share of the window's finished messages that ended RETRYCOUNT EXCEEDED.",
    ),
    MetricSpec(
        WINDOW_SECONDS,
        Kind.GAUGE,
        Source.SCRAPE,
        "The window the *_window and *_ratio gauges look back over.",
    ),
    MetricSpec(
        LIMIT_REFUSALS_TOTAL,
        Kind.COUNTER,
        Source.STORED,
        "Abuse limits that held a message back: API requests answered 429, account sends "
        "deferred by the daily cap.",
        ("limit", "subject"),
        label_values="limit: api_key_rate, api_key_daily, account_daily; subject: the API "
        "key's name or the account's name",
    ),
    MetricSpec(
        ENQUEUE_TO_DELIVERED,
        Kind.HISTOGRAM,
        Source.STORED,
        "Time from enqueue (or the requested send time, if later) to the Delivered status: "
        "what the recipient waits for a code.",
        ("type",),
        ENQUEUE_TO_DELIVERED_BUCKETS,
        label_values=f"type: {_TYPES}",
    ),
    MetricSpec(
        OTP_VALID_SECONDS,
        Kind.GAUGE,
        Source.SCRAPE,
        "A one-time code's validity (SMS_OTP_VALID_SECONDS of the exporter): the bound the "
        "codes-late alert compares enqueue-to-Delivered with.",
    ),
    MetricSpec(
        STATUS_CHECK_LAG,
        Kind.GAUGE,
        Source.SCRAPE,
        "How long the most overdue status check has been due (0 when none is overdue): "
        "status checks falling behind.",
    ),
    MetricSpec(
        REPLICATION_LAG,
        Kind.GAUGE,
        Source.SCRAPE,
        "Age of the oldest verification that has no sms_log row yet, whatever its age "
        "(0 when none).",
    ),
    MetricSpec(
        SQL_QUEUE_OLDEST_AGE,
        Kind.GAUGE,
        Source.SCRAPE,
        "Age of the oldest row waiting in the SQL route's sms_queue table, per account.",
        ("account",),
        label_values="account: account name",
    ),
    MetricSpec(
        HEARTBEAT,
        Kind.GAUGE,
        Source.STORED,
        "Unix time of the last heartbeat of a worker or beat process (every 15 s while it runs).",
        ("role",),
        label_values="role: " + ", ".join(HEARTBEAT_ROLES),
    ),
    MetricSpec(
        DATABASE_UP,
        Kind.GAUGE,
        Source.SCRAPE,
        "1 when the exporter could read the database at this scrape, else 0.",
    ),
    MetricSpec(
        GATEWAY_ROUTE_REQUESTS_TOTAL,
        Kind.COUNTER,
        Source.STORED,
        "Send requests per gateway (verification.gateways) and outcome (docs/gateways.md).",
        ("gateway", "outcome"),
        label_values="gateway: gateway name; outcome: " + ", ".join(ROUTE_OUTCOMES),
    ),
    MetricSpec(
        GATEWAY_ROUTE_DURATION,
        Kind.HISTOGRAM,
        Source.STORED,
        "Send request latency per gateway, whatever the outcome.",
        ("gateway",),
        GATEWAY_LATENCY_BUCKETS,
        label_values="gateway: gateway name",
    ),
    MetricSpec(
        GATEWAY_SWITCHES_TOTAL,
        Kind.COUNTER,
        Source.STORED,
        "Gateway state changes (out of rotation, probing, back), by the state reached.",
        ("gateway", "to"),
        label_values="gateway: gateway name; to: up, probing, down",
    ),
    MetricSpec(
        GATEWAY_SLOW_DEMOTIONS_TOTAL,
        Kind.COUNTER,
        Source.STORED,
        "Gateways taken out of rotation for slow deliveries (SMS_GATEWAY_SLOW_SECONDS).",
        ("gateway",),
        label_values="gateway: gateway name",
    ),
    MetricSpec(
        OTP_FALLBACKS_TOTAL,
        Kind.COUNTER,
        Source.STORED,
        "Verification/2FA codes sent once more through another gateway "
        "(SMS_OTP_FALLBACK_SECONDS), by type and the gateway of the copy.",
        ("type", "gateway"),
        label_values="type: verification, 2FA; gateway: gateway name",
    ),
    MetricSpec(
        GATEWAY_STATE,
        Kind.GAUGE,
        Source.SCRAPE,
        "1 for each gateway's current state (verification.gateways), 0 for the others.",
        ("gateway", "state"),
        label_values="gateway: gateway name; state: " + ", ".join(GATEWAY_STATE_VALUES),
    ),
    MetricSpec(
        GATEWAY_WEIGHT,
        Kind.GAUGE,
        Source.SCRAPE,
        "Each gateway's configured weight (0 = standby).",
        ("gateway",),
        label_values="gateway: gateway name",
    ),
)

BY_NAME: Final[dict[str, MetricSpec]] = {spec.name: spec for spec in CATALOGUE}


def spec(name: str) -> MetricSpec:
    return BY_NAME[name]


def render_markdown() -> str:
    """The catalogue as a markdown table (docs/metrics.md embeds this verbatim)."""
    lines = [
        "| Metric | Type | Source | Labels | Meaning |",
        "|---|---|---|---|---|",
    ]
    for item in CATALOGUE:
        labels = ", ".join(item.labels) or "—"
        if item.label_values:
            labels += f" ({item.label_values})"
        meaning = item.help
        if item.buckets:
            meaning += " Buckets: " + ", ".join(f"{b:g}" for b in item.buckets) + "."
        cells = [f"`{item.name}`", item.kind.value, item.source.value, labels, meaning]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover
    print(render_markdown(), end="")
