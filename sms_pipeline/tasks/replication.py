"""Replication of verification SMS from `verification.verifications` (beat)."""

from __future__ import annotations

from sms_pipeline.broker.app import REPLICATE_TASK, app
from sms_pipeline.services.intake import replication


@app.task(name=REPLICATE_TASK)
def replicate() -> dict[str, int]:
    result = replication.replicate_verifications()
    return {
        "inserted": result.inserted,
        "dispatched": result.dispatched,
        "tracked": result.tracked,
        "invalid": result.invalid,
    }
