"""The settings of every demo process: embedded database and broker, short clocks.

The child processes get them as their environment, an explicit `env=` dict; the demo
process reads the demo's database through a `Settings` object built from the same
values. The demo's own environment is never changed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from sms_pipeline.settings import Settings, load_settings

# Clocks shortened so every scenario ends within the demo: the simulator delivers after
# 3 s, a message still moving after 20 s becomes Terminated, retries wait about a second.
SIM_ENROUTE_AFTER = 1.0
SIM_DELIVER_AFTER = 3.0
# The slow rule answers after 2 s: well inside the client's 5 s read timeout, so it shows
# as latency. (Longer than the timeout it would end as a `uniq_key dupe` on the resend.)
SIM_SLOW_SECONDS = 2.0
TERMINATE_AFTER_SECONDS = 20


def demo_environment(data_dir: Path, gateway_url: str, concurrency: int = 8) -> dict[str, str]:
    """The settings of every demo process: embedded database and broker, short clocks."""
    return {
        "SMS_DATA_DIR": str(data_dir),
        # Empty means embedded: a DATABASE_URL or BROKER_URL in the caller's environment
        # (or .env) must not send demo traffic to a real server.
        "SMS_DATABASE_URL": "",
        "SMS_BROKER_URL": "",
        "SMS_REDIS_URL": "",
        "IP2SMS_SEND_URL": f"{gateway_url}/ip2sms/",
        "IP2SMS_STATUS_URL": f"{gateway_url}/ip2sms-request/",
        "IP2SMS_LOGIN": "demo",
        "IP2SMS_PASSWORD": "demo",
        "IP2SMS_READ_TIMEOUT": "5",
        "SMS_RETRY_BACKOFF_SECONDS": "1",
        "SMS_RETRY_BACKOFF_MAX_SECONDS": "4",
        # ...09 (429) and ...10 (prepaid limit) pause the whole account: seconds, not minutes.
        "SMS_RATE_LIMIT_BACKOFF_SECONDS": "1",
        "SMS_CREDIT_PAUSE_SECONDS": "2",
        "SMS_STATUS_POLL_SECONDS": "2",
        "SMS_STATUS_CHECK_BACKOFF": "1,2,3",
        "SMS_TERMINATE_AFTER_SECONDS": str(TERMINATE_AFTER_SECONDS),
        "SMS_OUTBOX_SWEEP_SECONDS": "2",
        "SMS_OUTBOX_GRACE_SECONDS": "5",
        "SMS_QUEUE_POLL_SECONDS": "1",
        "SMS_REPLICATION_SECONDS": "1",
        "SMS_WORKER_CONCURRENCY": str(concurrency),
        "SMS_LOG_LEVEL": "INFO",
        # The gateway outage act: a stopped gateway is probed every 2 s and ramped back
        # over 5 s once it answers (defaults 5 s and 20 s).
        "SMS_GATEWAY_PROBE_SECONDS": "2",
        "SMS_GATEWAY_RAMP_SECONDS": "5",
    }


def child_environment(data_dir: Path, gateway_url: str, concurrency: int = 8) -> dict[str, str]:
    """This process's environment without its SMS_/IP2SMS_ settings, plus the demo's."""
    inherited = {
        k: v for k, v in os.environ.items() if not k.upper().startswith(("SMS_", "IP2SMS_"))
    }
    return {**inherited, **demo_environment(data_dir, gateway_url, concurrency)}


def demo_settings(env: Mapping[str, str]) -> Settings:
    """The settings the children read from `env`, as an object for the demo process."""
    return load_settings(
        **{
            name.lower(): value
            for name, value in env.items()
            if name.upper().startswith(("SMS_", "IP2SMS_"))
        }
    )
