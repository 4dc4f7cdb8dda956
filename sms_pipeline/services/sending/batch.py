"""One batch, the one-shot path (CLI, tests): a send window filled once and waited for."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence

from sms_pipeline.broker import dispatch
from sms_pipeline.gateway import IP2SMSClient
from sms_pipeline.services.sending.results import BatchResult
from sms_pipeline.services.sending.scope import _database, _Db, _Scope
from sms_pipeline.services.sending.window import Window
from sms_pipeline.settings import Settings, get_settings


def send_batch(
    *,
    queue_class: dispatch.QueueClass | None = None,
    ids: Sequence[uuid.UUID] | None = None,
    settings: Settings | None = None,
    client: IP2SMSClient | None = None,
    now: dt.datetime | None = None,
    limit: int | None = None,
    db: _Db | None = None,
) -> BatchResult:
    """Claim, submit and record one batch of due messages of `queue_class` (or of `ids`).

    The window's code, filled once (SMS_SEND_BATCH_SIZE, or `limit`) and waited for; the
    answers are recorded in groups as they come. Safe to run twice at once and twice for
    the same ids: the claim is conditional and skips rows another batch holds.
    """
    settings = settings or get_settings()
    if db is None:
        with _database(settings) as own:
            return send_batch(
                queue_class=queue_class, ids=ids, settings=settings, client=client, now=now,
                limit=limit, db=own,
            )  # fmt: skip
    size = limit or settings.sms_send_batch_size
    scope = _Scope(queue_class, tuple(ids) if ids is not None else None)
    window = Window(scope, size, settings, db, client)
    window.fill(size, now)
    window.finish()
    return window.result
