"""Flower opens on the sends: the documented tasks-page search matches the send tasks and
none of the upkeep tasks beat schedules every few seconds; in embedded mode
`sms-pipeline flower` says in one line why it cannot help and what to run instead."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from types import SimpleNamespace

from flower.events import EventsState
from flower.utils.tasks import search_tasks

from sms_pipeline import celery_app
from sms_pipeline.cli.monitoring import SENDS_SEARCH_NAME, sends_url

ROOT = Path(__file__).resolve().parents[2]


def _our_task_names() -> set[str]:
    import sms_pipeline.tasks.callbacks
    import sms_pipeline.tasks.inbound
    import sms_pipeline.tasks.privacy
    import sms_pipeline.tasks.replication
    import sms_pipeline.tasks.send
    import sms_pipeline.tasks.status  # noqa: F401  (registers the tasks)

    names = {name for name in celery_app.app.tasks if name.startswith("sms_pipeline.")}
    return names | {"celery.chunks", "celery.starmap"}


def test_the_sends_search_shows_the_send_tasks_and_no_upkeep_task() -> None:
    names = _our_task_names()
    assert {celery_app.SEND_TASK, celery_app.SEND_DUE_TASK, celery_app.STATUS_SWEEP_TASK} <= names
    state = EventsState()
    for name in sorted(names):
        state.event(
            {
                "type": "task-received",
                "uuid": str(uuid.uuid4()),
                "name": name,
                "args": "[]",
                "kwargs": "{}",
                "timestamp": time.time(),
                "local_received": time.time(),
                "hostname": "celery@test",
                "clock": 1,
            }
        )
    page = search_tasks(SimpleNamespace(state=state), search=f"name:{SENDS_SEARCH_NAME}")
    shown = {state.tasks[task_id].name for task_id in page.task_ids}
    assert shown == {celery_app.SEND_TASK, celery_app.SEND_DUE_TASK}


def test_the_sends_url_and_its_documentation() -> None:
    assert sends_url("0.0.0.0", 5555) == "http://127.0.0.1:5555/tasks?name=sms_pipeline.send"
    assert "/tasks?name=sms_pipeline.send" in (ROOT / "docs" / "metrics.md").read_text()
