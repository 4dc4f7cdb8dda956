"""The published OpenAPI document against the running API: schemathesis over loopback.

`sms-pipeline api` runs as a subprocess on a loopback port, with no worker: whatever the
fuzzer enqueues stays QUEUED, nothing is delivered and no callback is ever sent.
schemathesis (from the package index, the test extra) then checks every operation with
its own command line, bounded to a few examples per operation. Left out on purpose:
`positive_data_acceptance` — a schema cannot say which numbers are real phone numbers or
how many characters fit into six SMS segments, so some schema-valid requests are refused
with 422 by the rules `enqueue_sms` applies to every producer.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from sms_pipeline.db import session_scope
from sms_pipeline.services.accounts.api_keys import create_api_key
from tests.support import free_port, wait_until

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
    "negative_data_rejection",
    "missing_required_header",
    "unsupported_method",
)
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


@pytest.fixture
def api_url(db: Any, redis_url: str, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    log = (tmp_path / "api.log").open("wb")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sms_pipeline.cli",
            "api",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=dict(os.environ),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def healthy() -> bool:
            assert server.poll() is None, (tmp_path / "api.log").read_text()
            try:
                return requests.get(f"{url}/healthz", timeout=1).status_code == 200
            except (requests.ConnectionError, requests.Timeout):  # still starting (or busy)
                return False

        wait_until(healthy, 60, "the API to answer /healthz", 0.2)
        yield url
    finally:
        server.terminate()
        server.wait(15)
        log.close()


def test_schemathesis_finds_nothing_against_the_running_api(api_url: str, tmp_path: Path) -> None:
    with session_scope() as session:
        key = create_api_key(session, "contract-test", None).key
    result = subprocess.run(
        [
            str(SCHEMATHESIS),
            "run",
            f"{api_url}/openapi.json",
            f"--checks={','.join(CHECKS)}",
            "--max-examples=15",
            "--phases=examples,coverage,fuzzing",
            "--generation-deterministic",
            "--no-color",
            "--request-timeout=10",
            "-H",
            f"Authorization: Bearer {key}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def test_invalid_json_names_the_body(api_url: str) -> None:
    with session_scope() as session:
        key = create_api_key(session, "json-test", None).key
    answer = requests.post(
        f"{api_url}/v1/messages",
        data=b'{"phone_number": ',
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        timeout=10,
    )
    assert answer.status_code == 422
    assert [e["field"] for e in answer.json()["errors"]] == ["body"]
