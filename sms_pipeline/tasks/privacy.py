"""Data protection jobs (beat): expire and redact; retention in bounded batches."""

from __future__ import annotations

from sms_pipeline.broker.app import PRIVACY_SWEEP_TASK, RETENTION_TASK, app
from sms_pipeline.services import privacy


@app.task(name=PRIVACY_SWEEP_TASK)
def privacy_sweep() -> dict[str, int]:
    return privacy.privacy_sweep()


@app.task(name=RETENTION_TASK)
def retention_purge() -> dict[str, int]:
    return privacy.purge_expired_rows().as_dict()
