"""Beat's inbound poll: replies and shortcode messages of every due account."""

from __future__ import annotations

from sms_pipeline.broker.app import INBOUND_POLL_TASK, app
from sms_pipeline.services import inbound


@app.task(name=INBOUND_POLL_TASK)
def inbound_poll() -> dict[str, int]:
    # Safe to run twice at once: each (account, kind) round is claimed in the database.
    return inbound.poll_inbound().as_dict()
