"""Flower shows the pipeline's tasks although workers send no task events by default.

Events cost worker CPU on every task, so `SMS_TASK_EVENTS` is off; Flower switches them on
at run time (its `--enable_events`, a remote-control broadcast every few seconds) while it
watches. This runs the real thing: a worker, `sms-pipeline flower` and Flower's HTTP API.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests

from sms_pipeline import enqueue_sms
from sms_pipeline.supervise import CLI
from tests.faults.conftest import phone, pipeline_env, settle
from tests.support import free_port, wait_until

LOGIN = ("flower-test", "not-a-real-secret")


@pytest.mark.slow
def test_flower_lists_send_tasks_of_a_worker_started_without_task_events(
    db: Any, clean_broker: str, start_sim: Any, procs: Any
) -> None:
    start_sim()
    env = pipeline_env(SMS_TASK_EVENTS="false", SMS_FLOWER_BASIC_AUTH=":".join(LOGIN))
    port = free_port()
    procs.worker(env)
    flower = procs.spawn(
        "flower", [*CLI, "flower", "--address", "127.0.0.1", "--port", str(port)], env
    )
    api = f"http://127.0.0.1:{port}/api"

    def workers_seen() -> bool:
        answer = requests.get(f"{api}/workers", auth=LOGIN, params={"refresh": "1"}, timeout=5)
        return answer.status_code == 200 and bool(answer.json())

    wait_until(
        workers_seen, 60, f"Flower to see the worker ({flower.log_path})", 0.5, retry_errors=True
    )
    # Flower's events switch reaches the worker by broadcast: keep sending until it shows.
    ids: list[Any] = []
    seen: set[str] = set()
    deadline = time.monotonic() + 60
    while not seen and time.monotonic() < deadline:
        ids.append(enqueue_sms(phone(len(ids)), "flower", "text"))
        time.sleep(1)
        tasks = requests.get(f"{api}/tasks", auth=LOGIN, timeout=5).json()
        seen = {task["name"] for task in tasks.values() if task.get("name")}
    assert any(name.startswith("sms_pipeline.") for name in seen), (
        f"Flower listed no task of ours: {sorted(seen)}"
    )
    # The documented page opens on the sends: Flower's own search behind it.
    page = f"http://127.0.0.1:{port}/tasks?name=sms_pipeline.send"
    assert requests.get(page, auth=LOGIN, timeout=5).status_code == 200
    table = requests.get(
        f"http://127.0.0.1:{port}/tasks/datatable",
        auth=LOGIN,
        params={
            "draw": "1",
            "start": "0",
            "length": "100",
            "search[value]": "name:sms_pipeline.send",
            "order[0][column]": "0",
            "columns[0][data]": "received",
            "order[0][dir]": "desc",
        },
        timeout=5,
    ).json()
    listed = {row["name"] for row in table["data"]}
    assert listed and listed <= {"sms_pipeline.send", "sms_pipeline.send_due"}, table
    counts, _ = settle(ids, timeout=60)
    assert counts.get("SUBMITTED", 0) + counts.get("DELIVERED", 0) == len(ids), counts
    # Without the login the API refuses.
    assert requests.get(f"{api}/tasks", timeout=5).status_code == 401
