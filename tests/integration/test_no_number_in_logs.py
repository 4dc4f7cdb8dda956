"""No phone number in any log line: the API served as users run it, its logs grepped.

`sms-pipeline api` and `sms-pipeline worker` run as subprocesses at DEBUG (embedded
database and broker, the gateway simulator on loopback); every request that could carry a
number is made — enqueue (the worker submits it to the gateway), export and erase (number
in the body), and clients that put numbers in URL paths and queries, authenticated or not.
Then every log the run wrote (the API's and the worker's stdout and stderr, the CLI's
stderr, any *.log file in the data folder) is searched for every number used, in every
spelling. Issue 32: uvicorn's
access log held 11 full numbers in one run.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import requests

from sms_pipeline.simulator import SimulatorConfig
from sms_pipeline.simulator.runner import SimulatorServer
from tests.helpers import run_cli
from tests.support import wait_until

SENT = "+380931234567"  # enqueued, exported, erased (in bodies)
IN_PATH = "+380671112233"  # put in URL paths by careless clients
IN_QUERY = "+380501234560"  # put in a query string
UNAUTHENTICATED = "+380991112244"  # a request without a key
NUMBERS = (SENT, IN_PATH, IN_QUERY, UNAUTHENTICATED)


def _spellings(number: str) -> set[str]:
    digits = number[1:]
    return {number, digits, "%2B" + digits, "%2b" + digits, digits[-9:]}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _env(data_dir: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SMS_", "IP2SMS_")) or k == "SMS_ALLOW_SIMULATOR"
    }
    env.update(SMS_DATA_DIR=str(data_dir), SMS_LOG_LEVEL="DEBUG", PYTHONUNBUFFERED="1")
    return env


def _cli(env: dict[str, str], cwd: Path, logs: list[str], *args: str) -> str:
    result = run_cli(args, env, cwd)
    logs.append(result.stderr)  # stdout is the command's answer (a key), not a log
    assert result.returncode == 0, result.stderr
    return result.stdout


def _key(created: str) -> str:
    return next(line.split()[-1] for line in created.splitlines() if line.startswith("key:"))


def _wait_until_up(base: str, server: subprocess.Popen[Any]) -> None:
    def answers() -> bool:
        assert server.poll() is None, "the API exited"
        try:
            requests.get(f"{base}/healthz", timeout=2)
        except requests.ConnectionError:
            return False
        return True

    wait_until(answers, 60, "the API to answer", 0.2)


def _wait_until_submitted(base: str, message_id: str, headers: dict[str, str]) -> None:
    seen = [""]

    def submitted() -> bool:
        state = requests.get(f"{base}/v1/messages/{message_id}", headers=headers, timeout=10)
        seen[0] = state.text
        return bool(state.json().get("send_status") == "SUBMITTED")

    wait_until(submitted, 60, lambda: f"the message to be submitted: {seen[0]}", 0.2)


def test_no_log_line_of_an_api_run_holds_a_phone_number(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    simulator = SimulatorServer(SimulatorConfig(host="127.0.0.1", port=0, rules=()))
    simulator.start()
    env = {
        **_env(data_dir),
        "IP2SMS_SEND_URL": simulator.send_url,
        "IP2SMS_STATUS_URL": simulator.status_url,
    }
    logs: list[str] = []
    _cli(env, tmp_path, logs, "db", "upgrade")
    sender = _key(_cli(env, tmp_path, logs, "api-key", "create", "sender"))
    admin = _key(_cli(env, tmp_path, logs, "api-key", "create", "dpo", "--platform-admin"))

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    outputs = [tmp_path / f"{name}.{stream}" for name in ("api", "worker") for stream in "12"]
    with contextlib.ExitStack() as stack:
        files = [stack.enter_context(path.open("w")) for path in outputs]
        server = subprocess.Popen(
            [sys.executable, "-m", "sms_pipeline.cli", "api", "--port", str(port)],
            env=env,
            cwd=tmp_path,
            stdout=files[0],
            stderr=files[1],
        )
        worker = subprocess.Popen(
            [sys.executable, "-m", "sms_pipeline.cli", "worker", "--concurrency", "2"],
            env=env,
            cwd=tmp_path,
            stdout=files[2],
            stderr=files[3],
        )
        try:
            _wait_until_up(base, server)
            as_sender = {"Authorization": f"Bearer {sender}"}
            as_admin = {"Authorization": f"Bearer {admin}"}
            made = requests.post(
                f"{base}/v1/messages",
                json={"phone_number": SENT, "body": "Your prescription is ready"},
                headers=as_sender,
                timeout=30,
            )
            assert made.status_code == 201, made.text
            _wait_until_submitted(base, made.json()["id"], as_sender)  # through the gateway
            person = {"phone_number": SENT}
            for route in ("export", "erase"):
                answer = requests.post(
                    f"{base}/v1/subjects/{route}", json=person, headers=as_admin, timeout=30
                )
                assert answer.status_code == 200, answer.text
            unauthenticated = requests.post(
                f"{base}/v1/subjects/export", json={"phone_number": UNAUTHENTICATED}, timeout=30
            )
            assert unauthenticated.status_code == 401
            digits = IN_PATH[1:]
            for path, headers in (
                (f"/v1/subjects/{IN_PATH}", {}),
                (f"/v1/subjects/{IN_PATH}", as_admin),
                (f"/v1/subjects/%2B{digits}", as_admin),
                (f"/v1/messages/{digits}", as_sender),
                (f"/no-such-page/{IN_PATH}", {}),
                (f"/v1/messages?phone={IN_QUERY}", as_sender),
                (f"/healthz?phone={IN_QUERY[1:]}", {}),
            ):
                answer = requests.get(f"{base}{path}", headers=headers, timeout=30)
                assert answer.status_code in {200, 401, 404, 405, 422}, (path, answer.text)
        finally:
            for process in (server, worker):
                process.terminate()
            for process in (server, worker):
                process.wait(timeout=60)
            simulator.stop()

    logs += [path.read_text(errors="replace") for path in outputs]
    logs += [p.read_text(errors="replace") for p in data_dir.rglob("*.log")]
    everything = "\n".join(logs)
    # The run did log what happened, masked: the test reads real access lines.
    assert '"GET /v1/subjects/' in everything and '"POST /v1/subjects/erase' in everything
    assert "Task sms_pipeline.send" in everything  # the worker's lines are in, at DEBUG
    assert "+380*******33" in everything  # IN_PATH, masked in the access log
    leaks = [
        (number, spelling, line)
        for number in NUMBERS
        for spelling in _spellings(number)
        for line in everything.splitlines()
        if spelling in line
    ]
    assert leaks == [], leaks[:5]
