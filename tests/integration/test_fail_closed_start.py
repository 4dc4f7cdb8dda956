"""Fail closed at start: a production worker, beat or API refuses, in one line, exit 2.

Production = a server database or broker (here both unreachable on loopback: the refusal
comes before any connection). Each finding of issue 32 on its own: no SMS_PRIVACY_KEY (the
API answered 500 on export later), the simulator's demo credentials, the simulator's URL
(this host, or compose's `gateway-sim`: compose set those, so the old check never fired).
SMS_ALLOW_SIMULATOR=true (compose's demo profile) lets the simulator through, never a
missing privacy key.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from sms_pipeline.settings import load_settings, production_problems
from tests.helpers import run_cli
from tests.support import wait_until

REAL_GATEWAY = {
    "IP2SMS_SEND_URL": "https://gateway.example.org/ip2sms/",
    "IP2SMS_STATUS_URL": "https://gateway.example.org/ip2sms-request/",
    "IP2SMS_LOGIN": "clinic",
    "IP2SMS_PASSWORD": "gw-Pw-7Qx2ZrK9",
}
PRIVACY_KEY = {"SMS_PRIVACY_KEY": "a-long-random-privacy-key-0123456789"}
FINDINGS = {
    "no privacy key": ({**REAL_GATEWAY}, "SMS_PRIVACY_KEY is not set"),
    "demo credentials": (
        {**REAL_GATEWAY, **PRIVACY_KEY, "IP2SMS_LOGIN": "demo", "IP2SMS_PASSWORD": "demo"},
        "IP2SMS_LOGIN/IP2SMS_PASSWORD is the simulator's demo credential",
    ),
    "simulator on this host": (
        {**REAL_GATEWAY, **PRIVACY_KEY, "IP2SMS_SEND_URL": "http://127.0.0.1:8080/ip2sms/"},
        "IP2SMS_SEND_URL points at the simulator",
    ),
    "compose's simulator": (
        {**REAL_GATEWAY, **PRIVACY_KEY, "IP2SMS_STATUS_URL": "http://gateway-sim:8080/r/"},
        "IP2SMS_STATUS_URL points at the simulator",
    ),
    "simulator allowed, privacy key still required": (
        {
            "SMS_ALLOW_SIMULATOR": "true",
            "IP2SMS_SEND_URL": "http://gateway-sim:8080/ip2sms/",
            "IP2SMS_LOGIN": "demo",
        },
        "SMS_PRIVACY_KEY is not set",
    ),
}


def _env(tmp_path: Path, values: dict[str, str]) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "SMS_DATA_DIR": str(tmp_path / "data"),
        # Production: a server database and broker, never reached (nothing listens on :1).
        "SMS_DATABASE_URL": "postgresql+psycopg://sms@127.0.0.1:1/sms",
        "SMS_BROKER_URL": "redis://127.0.0.1:1/0",
        **values,
    }


@pytest.mark.parametrize("finding", sorted(FINDINGS))
@pytest.mark.parametrize("program", ["worker", "beat", "api"])
def test_a_production_process_refuses_to_start_in_one_line_exit_2(
    tmp_path: Path, program: str, finding: str
) -> None:
    values, reason = FINDINGS[finding]
    done = run_cli([program], _env(tmp_path, values), tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("sms-pipeline: refusing to start in production")
    assert reason in lines[0]
    assert "gw-Pw-7Qx2ZrK9" not in done.stdout + done.stderr


def test_celery_started_directly_refuses_too(tmp_path: Path) -> None:
    values, reason = FINDINGS["demo credentials"]
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "sms_pipeline.celery_app", "worker"],
        env=_env(tmp_path, values),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert reason in done.stderr


def test_allow_simulator_lets_a_demo_api_start(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = _env(
        tmp_path,
        {
            **PRIVACY_KEY,
            "SMS_ALLOW_SIMULATOR": "true",
            "IP2SMS_SEND_URL": "http://gateway-sim:8080/ip2sms/",
            "IP2SMS_LOGIN": "demo",
            "IP2SMS_PASSWORD": "demo",
        },
    )
    api = subprocess.Popen(
        [sys.executable, "-m", "sms_pipeline.cli", "api", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        answers: list[requests.Response] = []

        def answered() -> bool:
            assert api.poll() is None, "the demo API exited"
            try:
                answers.append(requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10))
            except requests.ConnectionError:
                return False
            return True

        wait_until(answered, 60, "the demo API to answer", 0.2)
        assert answers[-1].status_code == 503  # it runs; the database it names is unreachable
    finally:
        api.terminate()
        api.wait(timeout=30)


def test_the_checks_in_process_match() -> None:
    production = {
        "sms_database_url": "postgresql+psycopg://sms@db/sms",
        "sms_allow_simulator": False,
    }
    real = {k.lower(): v for k, v in {**REAL_GATEWAY, **PRIVACY_KEY}.items()}
    assert production_problems(load_settings(**production, **real)) == []
    embedded = load_settings(sms_database_url="", sms_broker_url="", sms_allow_simulator=False)
    assert not embedded.is_production and production_problems(embedded) == []
    for url in ("http://[::1]:8080/ip2sms/", "http://0.0.0.0:8080/", "http://localhost/"):
        this_host = {**real, "ip2sms_send_url": url}
        assert production_problems(load_settings(**production, **this_host)), url
    empty_password = {**real, "ip2sms_password": ""}
    problems = production_problems(load_settings(**production, **empty_password))
    assert "IP2SMS_PASSWORD" in problems[0]
