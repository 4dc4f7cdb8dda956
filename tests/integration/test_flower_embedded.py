"""Flower on the embedded broker, as a new user runs it: `sms-pipeline worker` and
`sms-pipeline flower` on a fresh data folder, a message sent with `sms-pipeline send`.

kombu's filesystem channel carries Flower's broadcasts and the task events, but has no
auto-delete: a Flower that stops (or is killed) would leave its event queue bound and the
events piling up in files. `sms-pipeline flower` unbinds it when it stops and when the
next one starts.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import requests

from sms_pipeline.cli.children import CLI
from tests.support import free_port, wait_until

LOGIN = ("flower-test", "not-a-real-secret")


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("SMS_", "IP2SMS_"))}
    env.update(
        SMS_DATA_DIR=str(tmp_path / "data"),
        SMS_FLOWER_BASIC_AUTH=":".join(LOGIN),
        SMS_OUTBOX_SWEEP_SECONDS="1",
        PYTHONUNBUFFERED="1",
    )
    return env


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [*CLI, *args],
            env=env,
            cwd=log.parent,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a SIGKILL reaches Flower under `sms-pipeline flower` too
        )


def _event_bindings(tmp_path: Path) -> list[Any]:
    table = tmp_path / "data" / "broker" / "control" / "celeryev.exchange"
    return list(json.loads(table.read_text())) if table.exists() else []


def _event_files(tmp_path: Path) -> list[str]:
    queue = tmp_path / "data" / "broker" / "queue"
    return [n for n in os.listdir(queue) if n.partition(".")[2].startswith("celeryev.")]


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if sig == signal.SIGKILL:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_flower_shows_the_sends_of_an_embedded_worker_and_unbinds_its_events_when_it_stops(
    tmp_path: Path,
) -> None:
    env = _env(tmp_path)
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    worker = _spawn(["worker", "--concurrency", "4"], env, tmp_path / "worker.log")
    flowers: list[subprocess.Popen[bytes]] = []
    try:
        wait_until(
            lambda: "ready" in (tmp_path / "worker.log").read_text(errors="replace"),
            90,
            "the embedded worker ready",
            0.2,
        )

        def start_flower() -> subprocess.Popen[bytes]:
            flower = _spawn(
                ["flower", "--address", "127.0.0.1", "--port", str(port)],
                env,
                tmp_path / f"flower{len(flowers)}.log",
            )
            flowers.append(flower)

            def workers_seen() -> bool:
                answer = requests.get(
                    f"{api}/workers", auth=LOGIN, params={"refresh": "1"}, timeout=5
                )
                return answer.status_code == 200 and bool(answer.json())

            wait_until(workers_seen, 60, "Flower to see the worker", 0.5, retry_errors=True)
            return flower

        flower = start_flower()
        # Flower switches task events on by broadcast: send until a send task shows.
        seen: set[str] = set()
        for n in range(30):
            sent = subprocess.run(
                [*CLI, "send", "--to", f"+38093123{n:04d}", "--body", "flower"],
                env=env,
                cwd=tmp_path,
                capture_output=True,
                timeout=60,
                check=False,
            )
            assert sent.returncode == 0, sent.stderr
            tasks = requests.get(f"{api}/tasks", auth=LOGIN, timeout=5).json()
            seen = {t["name"] for t in tasks.values() if t.get("name")}
            if seen & {"sms_pipeline.send", "sms_pipeline.send_due"}:
                break
        assert seen & {"sms_pipeline.send", "sms_pipeline.send_due"}, sorted(seen)
        assert _event_bindings(tmp_path), "Flower's event queue is bound while it runs"

        _stop(flower)  # what Ctrl-C or `kill` does
        assert _event_bindings(tmp_path) == []
        assert _event_files(tmp_path) == []

        # A Flower killed outright cannot clean up: the next one does, when it starts.
        flower = start_flower()
        _stop(flower, signal.SIGKILL)
        assert _event_bindings(tmp_path), "a killed Flower leaves its binding"
        flower = start_flower()
        assert len(_event_bindings(tmp_path)) == 1  # its own only
        _stop(flower)
        assert _event_bindings(tmp_path) == []
    finally:
        for proc in flowers:
            _stop(proc, signal.SIGKILL)
        _stop(worker)
