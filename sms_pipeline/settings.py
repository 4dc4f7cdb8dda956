"""One typed settings object (long: every setting lives here, each with its doc).

Read from the environment and an optional `.env` file.

This is the only module that reads the environment. A bad value fails at start with a
message naming the variable and where its value came from; secrets are `SecretStr` and
never appear in a repr.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import unquote, urlsplit

from dotenv import dotenv_values
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_DATA_DIR = Path(".sms_pipeline")


class SettingsError(RuntimeError):
    """A configuration value is missing or malformed; the message names the variable."""


# Every setting that holds a URL: shown masked in repr, str, the CLI and logs.
_URL_FIELDS = frozenset(
    {
        "sms_database_url",
        "sms_broker_url",
        "sms_redis_url",
        "ip2sms_send_url",
        "ip2sms_status_url",
        "ip2sms_inbound_url",
    }
)
# Query parameters whose values are secrets (compared without case, - and _).
_SECRET_PARAMS = frozenset(
    {"password", "passwd", "pwd", "pass", "secret", "token", "accesstoken", "apikey", "key"}
)


def mask_url(url: str) -> str:
    """The URL with any password (user info or query parameter) replaced by ***.

    A `;`-separated list (Sentinel: `sentinel://:pw@h1:26379;sentinel://:pw@h2:26380`) is
    masked URL by URL: `urlsplit` reads it as one URL and would mask the first password only.
    """
    if ";" in url:
        return ";".join(_mask_one(part) for part in url.split(";"))
    return _mask_one(url)


def _mask_one(url: str) -> str:
    try:
        parts = urlsplit(url)
        has_password = parts.password is not None
    except ValueError:
        return "***"  # unparseable: it could be anything, show nothing
    masked = url
    if has_password:
        userinfo, host = parts.netloc.rsplit("@", 1)
        masked = masked.replace(parts.netloc, f"{userinfo.split(':', 1)[0]}:***@{host}", 1)
    if parts.query:
        pairs = []
        for pair in parts.query.split("&"):
            name, sep, _value = pair.partition("=")
            plain = unquote(name).lower().replace("-", "").replace("_", "")
            pairs.append(f"{name}=***" if sep and plain in _SECRET_PARAMS else pair)
        masked = masked.replace("?" + parts.query, "?" + "&".join(pairs), 1)
    return masked


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


# Premium-rate, shared-cost and satellite ranges that SMS pumping targets.
_REFUSED_PREFIXES = (
    "+1900", "+1976", "+979", "+808", "+870", "+878", "+881", "+882", "+883", "+888",
)  # fmt: skip

# The give-up bound when no validity is sent (the gateway then keeps a message for its own
# default period, a day at most with the carriers we know).
FALLBACK_GIVE_UP_SECONDS = 86400
_VALIDITY = re.compile(r"^\s*\+?\s*(\d+)\s*(second|sec|minute|min|hour|day|week)s?\s*$", re.I)
_UNIT_SECONDS = {"second": 1, "sec": 1, "minute": 60, "min": 60, "hour": 3600, "day": 86400}


def validity_seconds(validity: str | None) -> int | None:
    """Seconds of an IP2SMS `validity` attribute ("+2 hour", "+30 minutes"), None if unread."""
    match = _VALIDITY.match(validity or "")
    if match is None:
        return None
    unit = match.group(2).lower()
    return int(match.group(1)) * _UNIT_SECONDS.get(unit, 7 * 86400)


class Settings(BaseSettings):
    """Every variable the pipeline reads. Names are the environment variable names."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        frozen=True,
    )

    # --- where things live --------------------------------------------------------------
    sms_data_dir: Path = Field(
        DEFAULT_DATA_DIR,
        description="Folder for the embedded database, broker, logs and reports; a relative "
        "path is resolved once, against the working directory of the process that reads it.",
    )
    sms_database_url: str | None = Field(
        None,
        description="SQLAlchemy URL; empty = embedded SQLite file in SMS_DATA_DIR. "
        "PostgreSQL: postgresql+psycopg://user@host/db",
    )
    sms_broker_url: str | None = Field(
        None,
        description="Celery broker; empty = embedded broker (no server) in SMS_DATA_DIR.",
    )
    sms_redis_url: str | None = Field(
        None,
        description="Redis for the accounts' send rates and the abuse limits, so every worker "
        "and API process counts together; empty = the broker's Redis when the broker is Redis, "
        "otherwise each process counts in its own memory (a limit then holds per process). "
        "Also holds the pending-kick flags (docs/deploy.md). Sentinel: "
        "sentinel://host:26379;sentinel://host:26380 with SMS_REDIS_MASTER_NAME.",
    )
    sms_broker_master_name: str | None = Field(
        None,
        description="The Sentinel master (service) name of a sentinel:// SMS_BROKER_URL "
        "(sentinel://:password@host:26379;sentinel://host:26380;…, the password being the "
        "master's); required with one, ignored otherwise.",
    )
    sms_redis_master_name: str | None = Field(
        None,
        description="The Sentinel master name of a sentinel:// SMS_REDIS_URL; empty = "
        "SMS_BROKER_MASTER_NAME.",
    )
    sms_sentinel_password: SecretStr | None = Field(
        None,
        description="Password of the Sentinels themselves (requirepass in sentinel.conf), when "
        "they have one; the Redis master's password goes in the sentinel:// URL.",
    )

    # --- the IP2SMS gateway ---------------------------------------------------------------
    ip2sms_send_url: str = Field("http://127.0.0.1:8080/ip2sms/", description="Send URL.")
    ip2sms_status_url: str = Field(
        "http://127.0.0.1:8080/ip2sms-request/", description="Status request URL."
    )
    ip2sms_inbound_url: str = Field(
        "http://127.0.0.1:8080/ip2sms-inbound/",
        description="Base URL of our inbound API (replies, shortcodes); see docs/inbound.md.",
    )
    sms_allow_simulator: bool = Field(
        False,
        description="Let a production worker, beat or API (a server database or broker) run "
        "against the gateway simulator: a gateway URL on this host or `gateway-sim`, or the "
        "demo login/password. docker-compose's demo profile sets it; production never does.",
    )
    ip2sms_login: str = Field("demo", description="HTTP Basic login.")
    ip2sms_password: SecretStr = Field(SecretStr("demo"), description="HTTP Basic password.")
    ip2sms_source: str = Field("HEALTH", description="Default sender id (source).")
    ip2sms_validity: str | None = Field(
        "+2 hour", description="validity attribute sent with each message; empty = none."
    )
    ip2sms_connect_timeout: float = Field(3.05, gt=0, description="Seconds to connect.")
    ip2sms_read_timeout: float = Field(10.0, gt=0, description="Seconds to wait for an answer.")
    ip2sms_total_timeout: float = Field(
        15.0,
        gt=0,
        description="Seconds one gateway exchange may take in all (connect, headers and body): "
        "a server that drips its answer cannot hold a connection longer.",
    )
    ip2sms_max_response_bytes: int = Field(
        65536, ge=1024, description="Answers larger than this are refused (transient error)."
    )

    # --- sending rules --------------------------------------------------------------------
    sms_max_attempts: int = Field(3, ge=1, le=20, description="Send attempts per message.")
    sms_retry_backoff_seconds: float = Field(
        5.0, gt=0, description="First retry delay; doubles per attempt, with jitter."
    )
    sms_retry_backoff_max_seconds: float = Field(300.0, gt=0, description="Retry delay cap.")
    sms_max_segments: int = Field(
        6, ge=1, le=255, description="Longest body allowed, in SMS segments."
    )
    sms_max_schedule_days: int = Field(
        366,
        ge=1,
        le=3660,
        description="Furthest a send_at may be ahead, in days, at every door (Python, API, "
        "SQL route); further, infinity or text that is not a time is refused.",
    )
    sms_refused_prefixes: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(_REFUSED_PREFIXES),
        description="E.164 prefixes never sent to (comma-separated): by default premium-rate "
        "(+1 900, +1 976, +979), shared-cost (+808) and satellite/international network "
        "ranges (+870, +878, +881, +882, +883, +888) that SMS pumping targets.",
    )
    sms_default_account: str = Field(
        "default", description="Account used when enqueue_sms gets account=None."
    )
    sms_send_lease_seconds: int = Field(
        120, ge=10, description="A claimed send not finished by then is free to retry."
    )
    sms_outbox_grace_seconds: int = Field(
        30, ge=1, description="A queued message not dispatched after this is re-dispatched."
    )
    sms_outbox_sweep_seconds: float = Field(10.0, gt=0, description="Outbox sweeper period.")
    sms_queue_poll_seconds: float = Field(
        5.0, gt=0, description="How often beat looks for accounts whose queue interval is due."
    )
    sms_rate_limit_backoff_seconds: float = Field(
        30.0, gt=0, description="Pause an account this long after a gateway 429."
    )
    sms_credit_pause_seconds: float = Field(
        300.0, gt=0, description="Pause an account this long after 'Prepaid messages limit'."
    )

    # --- several gateways (docs/gateways.md) ----------------------------------------------
    sms_gateway_failures: int = Field(
        5,
        ge=1,
        description="Definite refusals (connection refused, TLS, HTTP 5xx/429/401) within the "
        "window that take a gateway out of rotation (with the share below).",
    )
    sms_gateway_failure_share: float = Field(
        0.2,
        gt=0,
        le=1,
        description="Share of a gateway's requests within the window that must be definite "
        "refusals to take it out of rotation.",
    )
    sms_gateway_window_seconds: float = Field(
        30.0, gt=0, description="The window the two figures above are counted over."
    )
    sms_gateway_probe_seconds: float = Field(
        5.0,
        gt=0,
        description="A gateway out of rotation is probed (one status request, no message) "
        "this often; an answer brings it back gradually.",
    )
    sms_gateway_ramp_seconds: float = Field(
        20.0,
        gt=0,
        description="A probed gateway's share of new messages grows from a tenth to its "
        "weight over this time; without a refusal meanwhile it is up again.",
    )
    sms_gateway_slow_seconds: float = Field(
        0.0,
        ge=0,
        description="A message not Delivered this long after submission counts as slow for "
        "its gateway (0 = off). Judged over the messages submitted in the three such periods "
        "before the last, from sms_log (docs/gateways.md).",
    )
    sms_gateway_slow_share: float = Field(
        0.15,
        gt=0,
        le=1,
        description="Share of a gateway's judged messages that must be slow to take it out "
        "of rotation (with SMS_GATEWAY_SLOW_SECONDS set).",
    )
    sms_otp_fallback_seconds: float = Field(
        0.0,
        ge=0,
        description="A verification/2FA code not Delivered this long after submission, while "
        "still valid, is sent once more (the same code) through another gateway (0 = off; "
        "docs/gateways.md).",
    )
    sms_gateway_slow_messages: int = Field(
        20,
        ge=1,
        description="The fewest judged messages a gateway needs before its slowness counts.",
    )

    sms_send_batch_size: int = Field(
        200,
        ge=1,
        le=5000,
        description="Most messages one one-shot send batch claims (`send_batch`: the CLI); "
        "a drain claims up to SMS_SEND_WINDOW instead.",
    )
    sms_send_window: int = Field(
        100,
        ge=1,
        le=5000,
        description="Most send requests one drain (one queue class) keeps in flight; it claims "
        "more as answers free slots, so a slow request holds only its own slot. Keep the sum "
        "over the queue classes (urgent, bulk) at most SMS_GATEWAY_CONNECTIONS, so a slot is "
        "a connection and urgent requests never queue behind bulk ones in the pool.",
    )
    sms_gateway_connections: int = Field(
        200,
        ge=1,
        le=1000,
        description="Concurrent gateway requests per worker process (keep-alive pool size). "
        "At least 2 x SMS_SEND_WINDOW (urgent and bulk drains); sends per second per worker "
        "are at most this / the gateway's latency.",
    )
    sms_kick_ttl_seconds: float = Field(
        5.0,
        gt=0,
        le=300,
        description="How long a pending send kick stops producers publishing another (Redis "
        "flag); a lost kick is replaced after this at the latest.",
    )
    sms_drain_max_seconds: float = Field(
        30.0,
        gt=0,
        description="A send drain hands over to a fresh task after this long (keeps tasks short "
        "for warm shutdown and the broker's visibility timeout).",
    )
    sms_drain_linger_ms: float = Field(
        20.0,
        ge=0,
        le=1000,
        description="After a part-full send batch the drain waits this long for more "
        "messages (bigger batches under a steady trickle; a lone message is not delayed).",
    )
    sms_drain_linger_bulk_ms: float = Field(
        100.0,
        ge=0,
        le=1000,
        description="SMS_DRAIN_LINGER_MS for the bulk queue class (texts, prescription "
        "notices), which no one waits on by the millisecond: under a trickle each claim and "
        "each recorded group is a commit, so a longer linger makes fewer, larger groups.",
    )
    sms_account_cache_seconds: float = Field(
        5.0,
        ge=0,
        description="How long enqueue_sms trusts a cached account lookup (id, active); 0 = never.",
    )

    # --- status polling -------------------------------------------------------------------
    sms_status_poll_seconds: float = Field(60.0, gt=0, description="Status sweep period.")
    sms_status_check_backoff: Annotated[list[int], NoDecode] = Field(
        default_factory=lambda: [30, 60, 120, 300, 600],
        description="Seconds between a message's status checks, growing per check.",
    )
    sms_status_first_check_seconds: int = Field(
        10,
        ge=1,
        description="Seconds from submission to a message's first status check (at most the "
        "first SMS_STATUS_CHECK_BACKOFF step; never after the Terminated deadline). See "
        "docs/status-checks.md.",
    )
    sms_status_chunk_size: int = Field(
        100, ge=1, description="Status checks per broker message (celery chunks)."
    )
    sms_status_batch_limit: int = Field(
        10000, ge=1, description="Most messages one status sweep claims."
    )
    sms_terminate_after_seconds: int = Field(
        1800, ge=1, description="Moving this long after submission becomes Terminated."
    )
    sms_status_give_up_seconds: int | None = Field(
        None,
        ge=1,
        description="After the Terminated deadline, a message whose status checks have all "
        "failed (no usable answer) for this long ends Terminated, the failures in last_error. "
        "Default: the IP2SMS_VALIDITY period (after it the gateway delivers nothing more; "
        f"{FALLBACK_GIVE_UP_SECONDS} s when no validity is sent). See docs/status-checks.md.",
    )

    # --- replication and inbound ----------------------------------------------------------
    sms_replication_seconds: float = Field(5.0, gt=0, description="Replication poll period.")
    sms_verification_template: str = Field(
        "Your verification code: {code}",
        pattern=r"\{code\}",
        description="Body of a replicated verification SMS; {code} is the verification's code.",
    )
    sms_verification_code_digits: int = Field(
        0,
        ge=0,
        le=12,
        description="Digits an integer verification code is shown with in {code}, left-padded "
        "with zeros (the verification service stores codes as integers, so 0123 is kept as "
        "123); 0 shows the code as stored.",
    )
    sms_inbound_poll_seconds: float = Field(
        30.0, gt=0, description="How often beat looks for accounts whose inbound poll is due."
    )
    sms_opt_out_keywords: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: [
            "STOP",
            "STOPALL",
            "UNSUBSCRIBE",
            "CANCEL",
            "END",
            "QUIT",
            "СТОП",
            "ВІДПИСКА",
            "ВІДПИСАТИСЯ",
            "ОТПИСКА",
        ],
        description="Inbound words that opt a number out (case- and space-insensitive).",
    )
    sms_opt_in_keywords: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["START", "UNSTOP", "СТАРТ"],
        description="Inbound words that opt a number back in.",
    )

    # --- workers and monitoring -----------------------------------------------------------
    sms_worker_concurrency: int = Field(16, ge=1, le=1000, description="Worker threads.")
    sms_task_events: bool = Field(
        False,
        description="Workers send task events from the start; off by default because Flower "
        "(--enable_events, its default) switches them on at run time while it watches.",
    )
    sms_log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Log level."
    )
    sms_flower_basic_auth: SecretStr | None = Field(
        None, description="user:password for Flower's UI."
    )
    sms_metrics_port: int = Field(9808, ge=1, le=65535, description="Prometheus exporter port.")

    # --- HTTP API and status callbacks ------------------------------------------------------
    sms_api_host: str = Field("127.0.0.1", description="Address `sms-pipeline api` listens on.")
    sms_api_port: int = Field(8000, ge=1, le=65535, description="Port of `sms-pipeline api`.")
    sms_api_max_body_bytes: int = Field(
        16384, ge=1024, description="Larger API request bodies are refused (413) unread."
    )
    sms_callback_secret: SecretStr | None = Field(
        None,
        description="Signs callbacks of messages enqueued without an API key (HMAC-SHA256); "
        "empty = enqueue_sms refuses a callback_url (callbacks are never sent unsigned).",
    )
    sms_callback_timeout_seconds: float = Field(
        5.0,
        gt=0,
        le=30,
        description="Total deadline of one callback POST: connect, TLS, headers and body.",
    )
    sms_callback_allow_private: bool = Field(
        False,
        description="Let callback URLs reach loopback, private and link-local addresses "
        "(on-premise receivers). Off: such URLs are refused at enqueue and at delivery.",
    )

    # --- abuse limits ---------------------------------------------------------------------
    sms_api_key_rate_per_minute: int = Field(
        600,
        ge=0,
        description="Messages one API key may enqueue per minute (429 with Retry-After "
        "beyond); 0 = no limit.",
    )
    sms_api_key_daily_cap: int = Field(
        0, ge=0, description="Messages one API key may enqueue per 24 hours; 0 = no cap."
    )
    sms_account_daily_cap: int = Field(
        0,
        ge=0,
        description="Messages one account may send per 24 hours, whatever the route (API, "
        "SQL, Python); beyond it messages wait for the next window. 0 = no cap.",
    )
    sms_callback_concurrency: int = Field(
        8,
        ge=1,
        le=1000,
        description="Threads of the callbacks worker (`sms-pipeline worker --queues callbacks`, "
        "its own process in `up` and docker-compose): the most receivers served at once, "
        "however slow they are; sends and status checks never share them.",
    )
    sms_callback_max_attempts: int = Field(
        6, ge=1, le=20, description="Callback POSTs per event before it is given up."
    )
    sms_callback_backoff_seconds: float = Field(
        60.0, gt=0, description="Delay after the first failed callback; doubles per attempt."
    )
    sms_callback_sweep_seconds: float = Field(
        10.0,
        gt=0,
        description="Callback sweep period: how often beat records new final-status events "
        "and dispatches the callback deliveries that are due.",
    )
    sms_callback_lookback_seconds: int = Field(
        86400, ge=60, description="How far back the callback sweep looks for final messages."
    )
    sms_callback_batch_limit: int = Field(
        1000, ge=1, description="Most callback events one sweep creates or dispatches."
    )

    # --- data protection: expiry, supersede, redaction, retention (docs/privacy.md) ---------
    sms_otp_valid_seconds: int = Field(
        600,
        ge=1,
        description="Validity of a one-time code (verification, 2FA) when enqueue_sms gets "
        "no valid_for: not submitted by then, it ends EXPIRED; the gateway gets the time left.",
    )
    sms_max_queue_age_seconds: int = Field(
        86400,
        ge=1,
        description="A message not submitted this long after it was due ends EXPIRED "
        "(types without their own SMS_MAX_QUEUE_AGE_SECONDS_<TYPE>).",
    )
    sms_max_queue_age_seconds_verification: int | None = Field(
        600,
        ge=1,
        description="Maximum queue age of verification messages; empty = the general one.",
    )
    sms_max_queue_age_seconds_2fa: int | None = Field(
        600, ge=1, description="Maximum queue age of 2FA messages; empty = the general one."
    )
    sms_max_queue_age_seconds_medication_request: int | None = Field(
        None, ge=1, description="Maximum queue age of medication_request messages; empty = general."
    )
    sms_max_queue_age_seconds_text: int | None = Field(
        None, ge=1, description="Maximum queue age of text messages; empty = the general one."
    )
    sms_otp_supersede: bool = Field(
        True,
        description="A new verification/2FA message to a number ends the older ones of the "
        "same type and account not yet submitted as SUPERSEDED.",
    )
    sms_redact_types: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["verification", "2FA"],
        description="Types whose bodies are replaced by [redacted] once final (comma-separated; "
        "empty = none).",
    )
    sms_retention_days: int = Field(
        90, ge=1, description="Messages final longer than this are deleted (daily rollups stay)."
    )
    sms_retention_days_verification: int | None = Field(
        None, ge=1, description="Retention of verification messages; empty = SMS_RETENTION_DAYS."
    )
    sms_retention_days_2fa: int | None = Field(
        None, ge=1, description="Retention of 2FA messages; empty = SMS_RETENTION_DAYS."
    )
    sms_retention_days_medication_request: int | None = Field(
        None, ge=1, description="Retention of medication_request messages; empty = the general."
    )
    sms_retention_days_text: int | None = Field(
        None, ge=1, description="Retention of text messages; empty = SMS_RETENTION_DAYS."
    )
    sms_retention_batch_size: int = Field(
        5000, ge=1, le=100000, description="Messages one retention transaction deletes."
    )
    sms_retention_seconds: float = Field(
        3600.0, gt=0, description="How often beat runs the retention purge."
    )
    sms_privacy_key: SecretStr | None = Field(
        None,
        description="Secret key of the keyed hash (HMAC-SHA256) that names a person in the audit "
        "log and keeps erased opt-outs; empty = a key generated in SMS_DATA_DIR (embedded "
        "database only; required with PostgreSQL). Never printed.",
    )

    @field_validator("sms_status_check_backoff", mode="before")
    @classmethod
    def _backoff_list(cls, value: object) -> object:
        value = _split_csv(value)
        if isinstance(value, list) and not value:
            raise ValueError("needs at least one number of seconds")
        return value

    @field_validator(
        "sms_max_queue_age_seconds_verification",
        "sms_max_queue_age_seconds_2fa",
        "sms_max_queue_age_seconds_medication_request",
        "sms_max_queue_age_seconds_text",
        "sms_retention_days_verification",
        "sms_retention_days_2fa",
        "sms_retention_days_medication_request",
        "sms_retention_days_text",
        mode="before",
    )
    @classmethod
    def _empty_int_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("sms_redact_types", mode="before")
    @classmethod
    def _redact_list(cls, value: object) -> object:
        value = _split_csv(value)
        known = {"verification", "medication_request", "text", "2FA"}
        if isinstance(value, list):
            unknown = [v for v in value if v not in known]
            if unknown:
                raise ValueError(f"unknown message types {unknown}; known: {sorted(known)}")
        return value

    @field_validator("sms_data_dir")
    @classmethod
    def _absolute_data_dir(cls, value: Path) -> Path:
        # Resolved once: every path derived from it (database, broker, logs) is absolute,
        # so a command run from another folder still finds the same data.
        return value.expanduser().resolve()

    @field_validator("sms_refused_prefixes", mode="before")
    @classmethod
    def _prefix_list(cls, value: object) -> object:
        value = _split_csv(value)
        if isinstance(value, list):
            bad = [p for p in value if not re.fullmatch(r"\+[1-9]\d{0,7}", str(p))]
            if bad:
                raise ValueError(f"not E.164 prefixes such as +1900: {bad}")
        return value

    @field_validator("sms_opt_out_keywords", "sms_opt_in_keywords", mode="before")
    @classmethod
    def _keyword_list(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator(
        "sms_database_url",
        "sms_broker_url",
        "sms_redis_url",
        "ip2sms_validity",
        "sms_broker_master_name",
        "sms_redis_master_name",
    )
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("sms_broker_url", "sms_redis_url")
    @classmethod
    def _sentinel_list(cls, value: str | None) -> str | None:
        if value and value.startswith("sentinel:"):
            sentinel_nodes(value)  # raises ValueError naming what is wrong (never the input)
        elif value and ";" in value:
            # kombu's failover list: RabbitMQ nodes of one cluster, tried in turn.
            schemes = {part.strip().split(":", 1)[0] for part in value.split(";")}
            if not schemes <= {"amqp", "amqps", "pyamqp"}:
                raise ValueError("only sentinel:// or amqp:// URLs may be listed with ';'")
        return value

    @model_validator(mode="after")
    def _check_backoff(self) -> Settings:
        if any(s <= 0 for s in self.sms_status_check_backoff):
            raise ValueError("SMS_STATUS_CHECK_BACKOFF: every delay must be positive")
        return self

    @model_validator(mode="after")
    def _check_master_names(self) -> Settings:
        if is_sentinel_url(self.sms_broker_url) and not self.sms_broker_master_name:
            raise ValueError("SMS_BROKER_MASTER_NAME: required with a sentinel:// SMS_BROKER_URL")
        if is_sentinel_url(self.sms_redis_url) and not self.redis_master_name:
            raise ValueError(
                "SMS_REDIS_MASTER_NAME: required with a sentinel:// SMS_REDIS_URL "
                "(or SMS_BROKER_MASTER_NAME)"
            )
        return self

    def __repr_args__(self):  # type: ignore[no-untyped-def]
        # URLs may embed a password (postgresql://user:pw@host, ?password=): masked.
        for name, value in super().__repr_args__():
            if name in _URL_FIELDS and isinstance(value, str):
                value = mask_url(value)
            yield name, value

    @property
    def explicit_gateway(self) -> set[str]:
        """The IP2SMS_* settings given explicitly (environment, .env or arguments)."""
        return {n for n in _PRODUCTION_GATEWAY if n in self.model_fields_set}

    # --- derived values -------------------------------------------------------------------
    def max_queue_age(self, message_type: str) -> int:
        """Seconds a message of `message_type` may wait to be submitted once due."""
        own: int | None = getattr(self, f"sms_max_queue_age_seconds_{message_type.lower()}", None)
        return own if own is not None else self.sms_max_queue_age_seconds

    def retention_days(self, message_type: str) -> int:
        """Days a final message of `message_type` is kept."""
        own: int | None = getattr(self, f"sms_retention_days_{message_type.lower()}", None)
        return own if own is not None else self.sms_retention_days

    @property
    def embedded_database_file(self) -> Path:
        """The embedded SQLite database's file in SMS_DATA_DIR (used when no URL is set)."""
        return (self.sms_data_dir / "sms_pipeline.db").resolve()

    @property
    def status_give_up_seconds(self) -> int:
        """SMS_STATUS_GIVE_UP_SECONDS, or the validity period it defaults to."""
        if self.sms_status_give_up_seconds is not None:
            return self.sms_status_give_up_seconds
        return validity_seconds(self.ip2sms_validity) or FALLBACK_GIVE_UP_SECONDS

    @property
    def database_url(self) -> str:
        if self.sms_database_url:
            return self.sms_database_url
        return f"sqlite:///{self.embedded_database_file}"

    @property
    def broker_url(self) -> str:
        if self.sms_broker_url:
            return self.sms_broker_url
        return "filesystem://"

    @property
    def broker_folder(self) -> Path:
        """Where the embedded (filesystem) broker keeps its messages."""
        return (self.sms_data_dir / "broker").resolve()

    @property
    def is_embedded_database(self) -> bool:
        """The database is the SQLite file in SMS_DATA_DIR (SMS_DATABASE_URL unset)."""
        return not self.sms_database_url

    @property
    def is_production(self) -> bool:
        """A server database or a server broker: anything but the all-embedded default."""
        return not (self.is_embedded_broker and self.is_embedded_database)

    @property
    def uses_data_dir(self) -> bool:
        """Something this configuration keeps (database, broker) lives in SMS_DATA_DIR."""
        return self.is_embedded_database or self.broker_url.startswith("filesystem:")

    @property
    def is_embedded_broker(self) -> bool:
        return self.broker_url.startswith(("filesystem:", "sqla+", "memory:"))

    @property
    def broker_kind(self) -> BrokerKind:
        """Which kind of broker SMS_BROKER_URL names (its features differ; docs/deploy.md)."""
        url = self.broker_url
        if self.is_embedded_broker:
            return "embedded"
        if url.startswith("sentinel:"):
            return "sentinel"
        if url.startswith(("redis:", "rediss:")):
            return "redis"
        if url.startswith(("amqp:", "amqps:", "pyamqp:")):
            return "amqp"
        return "other"

    @property
    def broker_holds_countdowns(self) -> bool:
        """Whether a kick may wait in the broker (countdown). On RabbitMQ it may not: quorum
        queues would need delayed-delivery exchanges, so short waits, like long ones, live
        in the database (due_at) and the outbox sweeper kicks them when due."""
        return self.broker_kind != "amqp"

    @property
    def redis_url(self) -> str | None:
        if self.sms_redis_url:
            return self.sms_redis_url
        if self.broker_kind in ("redis", "sentinel"):
            return self.broker_url
        return None

    @property
    def redis_master_name(self) -> str | None:
        """The Sentinel master name for `redis_url` (None unless it is a sentinel:// URL)."""
        if self.sms_redis_url:
            if not is_sentinel_url(self.sms_redis_url):
                return None
            return self.sms_redis_master_name or self.sms_broker_master_name
        if self.broker_kind == "sentinel":
            return self.sms_broker_master_name
        return None


BrokerKind = Literal["embedded", "redis", "sentinel", "amqp", "other"]


def is_sentinel_url(url: str | None) -> bool:
    return bool(url) and str(url).startswith("sentinel:")


def sentinel_nodes(url: str) -> list[tuple[str, int]]:
    """The (host, port) of each Sentinel in `sentinel://h1:26379;sentinel://h2:26380`.

    Raises ValueError naming the position of a bad entry (never its text: it may hold a
    password)."""
    nodes = []
    for position, part in enumerate(url.split(";"), start=1):
        try:
            parts = urlsplit(part.strip())
            port = parts.port or 26379
        except ValueError:
            raise ValueError(f"Sentinel URL #{position} is not a URL") from None
        if parts.scheme != "sentinel" or not parts.hostname:
            raise ValueError(f"Sentinel URL #{position} must be sentinel://host:port")
        nodes.append((parts.hostname, port))
    return nodes


_PRODUCTION_GATEWAY = ("ip2sms_send_url", "ip2sms_status_url", "ip2sms_login", "ip2sms_password")
# Where the simulator answers: this host, or docker-compose's `gateway-sim` service.
SIMULATOR_HOSTS = frozenset({"localhost", "gateway-sim", "ip6-localhost"})
DEMO_CREDENTIAL = "demo"  # the simulator's login and password
MIN_PRIVACY_KEY = 16


def is_simulator_url(url: str) -> bool:
    """The URL names the simulator's host: loopback, localhost or compose's `gateway-sim`."""
    import ipaddress

    try:
        host = (urlsplit(url).hostname or "").rstrip(".").lower()
    except ValueError:
        return False
    if host in SIMULATOR_HOSTS or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified  # 0.0.0.0 reaches this host too


def production_problems(settings: Settings) -> list[str]:
    """Why a production worker, beat or API must not start; empty when it may.

    Production is a server database or broker (`Settings.is_production`). It needs
    SMS_PRIVACY_KEY (the keyed hash of numbers, the same on every host), and a real gateway:
    IP2SMS_SEND_URL, IP2SMS_STATUS_URL, IP2SMS_LOGIN and IP2SMS_PASSWORD given, not the
    simulator's host and not its demo credentials, unless SMS_ALLOW_SIMULATOR=true (demo).
    """
    if not settings.is_production:
        return []
    problems = []
    key = settings.sms_privacy_key
    if key is None or len(key.get_secret_value()) < MIN_PRIVACY_KEY:
        problems.append(f"SMS_PRIVACY_KEY is not set (at least {MIN_PRIVACY_KEY} characters)")
    if settings.sms_allow_simulator:
        return problems
    given = {
        "ip2sms_send_url": settings.ip2sms_send_url,
        "ip2sms_status_url": settings.ip2sms_status_url,
        "ip2sms_login": settings.ip2sms_login,
        "ip2sms_password": settings.ip2sms_password.get_secret_value(),
    }
    missing = [
        n.upper()
        for n in _PRODUCTION_GATEWAY
        if n not in settings.explicit_gateway or not given[n].strip()
    ]
    if missing:
        problems.append(
            "no explicit " + ", ".join(missing) + " (the defaults point at the local simulator)"
        )
    demo = [
        name
        for name, value in (
            ("IP2SMS_LOGIN", settings.ip2sms_login),
            ("IP2SMS_PASSWORD", settings.ip2sms_password.get_secret_value()),
        )
        if value == DEMO_CREDENTIAL and name not in missing
    ]
    if demo:
        problems.append("/".join(demo) + " is the simulator's demo credential")
    at_simulator = [
        name
        for name, url in (
            ("IP2SMS_SEND_URL", settings.ip2sms_send_url),
            ("IP2SMS_STATUS_URL", settings.ip2sms_status_url),
        )
        if name not in missing and is_simulator_url(url)
    ]
    if at_simulator:
        problems.append(
            "/".join(at_simulator) + " points at the simulator (this host or gateway-sim)"
        )
    return problems


def require_production_gateway(settings: Settings) -> None:
    """Fail closed: a production process refuses to start without its secrets and gateway.

    Called by the worker and beat (Celery's init signals) and the API (`sms-pipeline api`,
    `create_app`). Without it a production worker would "deliver" patients' codes to the
    simulator as `demo`, and export/erasure would fail only when first asked (500).
    """
    problems = production_problems(settings)
    if problems:
        raise SettingsError(
            "refusing to start in production (a server database or broker): "
            + "; ".join(problems)
            + ". Set them, or SMS_ALLOW_SIMULATOR=true for a demo against the simulator"
        )


def source_of(name: str, overrides: Mapping[str, object] | None = None) -> str:
    """Where the variable `name` got its value: the environment, the `.env` file, the
    caller's arguments, or nowhere (its default)."""
    if overrides and name.lower() in {k.lower() for k in overrides}:
        return "an argument"
    if name.lower() in {k.lower() for k in os.environ}:
        return "the environment"
    env_file = Path(str(Settings.model_config.get("env_file") or ".env"))
    try:
        in_file = env_file.is_file() and name.lower() in {
            k.lower() for k in dotenv_values(env_file, encoding="utf-8")
        }
    except (OSError, UnicodeDecodeError):
        in_file = False
    if in_file:
        return f"the .env file {env_file.resolve()}"
    return "the default"


def _problem_text(message: str) -> str:
    # pydantic says "Value error, needs ..." / "Input should be ...": one lower-case clause.
    message = message.removeprefix("Value error, ")
    return message[:1].lower() + message[1:]


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment; raise SettingsError naming each bad variable,
    its problem and where its value came from (environment, `.env`, argument)."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = ".".join(str(p) for p in err["loc"]).upper()
            message = str(err["msg"])
            if not name:  # a rule across variables names its variable in its message
                head, sep, rest = message.removeprefix("Value error, ").partition(": ")
                name, message = (head, rest) if sep and head.isupper() else ("settings", message)
            # Never echo the input: it may be a password.
            where = source_of(name, overrides) if name != "settings" else "the settings"
            problems.append(f"{name} (from {where}): {_problem_text(message)}")
        raise SettingsError("invalid configuration: " + "; ".join(problems)) from None


def data_dir_problem(settings: Settings, *, create: bool) -> str | None:
    """Why SMS_DATA_DIR cannot hold the embedded data, or None. With `create` the folder
    is made; without, a missing one is made and removed again (a probe: `--help` leaves
    nothing behind)."""
    folder = settings.sms_data_dir
    where = source_of("SMS_DATA_DIR")
    prefix = f"SMS_DATA_DIR={folder} (from {where})"
    if folder.exists():
        if not folder.is_dir():
            return f"{prefix}: not a folder"
        if not os.access(folder, os.W_OK | os.X_OK):
            return f"{prefix}: the folder cannot be written"
        return None
    made: list[Path] = []
    try:
        for parent in reversed([folder, *folder.parents]):
            if not parent.exists():
                # The data folder itself private (0700, as db/files.py keeps it); parents
                # as the umask says.
                parent.mkdir(mode=0o700 if parent == folder else 0o777)
                made.append(parent)
            elif not parent.is_dir():
                return f"{prefix}: {parent} is not a folder"
    except OSError as exc:
        return f"{prefix}: cannot create the folder ({exc.strerror or type(exc).__name__})"
    finally:
        if not create:
            for path in reversed(made):
                with contextlib.suppress(OSError):
                    path.rmdir()
    return None


def check_data_dir(settings: Settings, *, create: bool = True) -> None:
    """Raise SettingsError when SMS_DATA_DIR cannot hold the embedded data."""
    problem = data_dir_problem(settings, create=create)
    if problem is not None:
        raise SettingsError(problem)


_settings_lock = threading.Lock()
_settings: Settings | None = None
_settings_generation = 0


def get_settings() -> Settings:
    """The process-wide settings, read once."""
    global _settings
    cached = _settings
    if cached is not None:
        return cached
    with _settings_lock:
        generation = _settings_generation
    loaded = load_settings()
    with _settings_lock:
        # A reset while another thread was reading the environment (functools.cache kept
        # that thread's stale result: a test's gateway URL replaced by the default one)
        # means this result may predate the change: hand it out, but do not keep it.
        if generation == _settings_generation and _settings is None:
            _settings = loaded
        return _settings or loaded


def reset_settings_cache() -> None:
    """Forget the cached settings (tests and the CLI change the environment)."""
    global _settings, _settings_generation
    with _settings_lock:
        _settings = None
        _settings_generation += 1
