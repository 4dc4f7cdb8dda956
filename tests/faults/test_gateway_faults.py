"""A gateway that misbehaves in every way seen in the wild: the worker never hangs or crashes,
memory stays bounded, and every message ends in a final state that says why."""

from __future__ import annotations

import contextlib
import datetime as dt
import http.server
import re
import socket
import struct
import threading
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest

from sms_pipeline import enqueue_sms
from sms_pipeline.db import session_scope
from sms_pipeline.db.models import SendStatus, SmsLog, utcnow
from sms_pipeline.gateway import GatewayError, IP2SMSClient
from sms_pipeline.gateway.codec import parse_answer
from tests.faults.conftest import (
    GATEWAY_LOGIN,
    GATEWAY_PASSWORD,
    pipeline_env,
    record_figure,
    settle,
)
from tests.helpers import attempt_send

BIG = 5 * 1024 * 1024
BOMB = (
    b'<?xml version="1.0"?><!DOCTYPE status [<!ENTITY a "aaaaaaaaaa">'
    + b"".join(
        f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">'.encode() for i in range(9)
    )
    + b']><status id="1" date=""><state>&j;</state></status>'
)
XXE = (
    b'<?xml version="1.0"?><!DOCTYPE status [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    b'<status id="1" date=""><state>&x;</state></status>'
)
ACCEPTED = (
    b'<status id="77" date="Fri, 06 Sep 2013 19:11:16 +0300"><state>Accepted</state></status>'
)

# Destination-number suffix -> (fault, expected send_status, words expected in last_error).
FAULTS: dict[str, tuple[str, str, str]] = {
    "21": ("slow past the read timeout", "RETRYCOUNT EXCEEDED", "timeout"),
    "22": ("connection reset", "RETRYCOUNT EXCEEDED", "connection"),
    "23": ("HTTP 502", "RETRYCOUNT EXCEEDED", "502"),
    "24": ("HTTP 429 storm", "RETRYCOUNT EXCEEDED", "429"),
    "25": ("garbage bytes", "RETRYCOUNT EXCEEDED", "answer"),
    "26": ("truncated XML", "RETRYCOUNT EXCEEDED", "answer"),
    "27": ("entity bomb", "RETRYCOUNT EXCEEDED", "DTD"),
    "28": ("external entity", "RETRYCOUNT EXCEEDED", "DTD"),
    "29": ("5 MB answer, Content-Length", "RETRYCOUNT EXCEEDED", "larger"),
    "30": ("5 MB answer, no length", "RETRYCOUNT EXCEEDED", "larger"),
    "31": ("<error> root", "RETRYCOUNT EXCEEDED", "answer"),
    "32": ("HTTP 401", "REJECTED", "401"),
    "33": ("plain-text parse failure", "RETRYCOUNT EXCEEDED", "answer"),
}
COPIES = 3  # messages per fault


class OddGateway(http.server.BaseHTTPRequestHandler):
    """Answers by the last two digits of the destination number."""

    protocol_version = "HTTP/1.0"
    slow_seconds = 3.0

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def _answer(self, body: bytes, status: int = 200, length: bool = True, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/xml")
        if length:
            self.send_header("Content-Length", str(len(body)))
        for key, value in headers.items():
            self.send_header(key.replace("_", "-"), value)
        self.end_headers()
        with contextlib.suppress(OSError):
            self.wfile.write(body)

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        found = re.search(rb"<to[^>]*>\+?\d*(\d\d)</to>", raw)
        suffix = found.group(1).decode() if found else ""
        if suffix == "21":
            time.sleep(self.slow_seconds)
            self._answer(ACCEPTED)
        elif suffix == "22":
            # RST instead of an answer.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        elif suffix == "23":
            self._answer(b"Application Error", 502)
        elif suffix == "24":
            self._answer(b"Too Many Requests", 429, Retry_After="1")
        elif suffix == "25":
            self._answer(b"\x00\xff\xfe<<<>>\x01garbage")
        elif suffix == "26":
            self._answer(b'<status id="1" date="Fri, 06 Sep 2013 19:11:16 +0300"><state>Acc')
        elif suffix == "27":
            self._answer(BOMB)
        elif suffix == "28":
            self._answer(XXE)
        elif suffix == "29":
            self._answer(b"<status>" + b"x" * BIG + b"</status>")
        elif suffix == "30":
            self._answer(b"<status>" + b"x" * BIG + b"</status>", length=False)
        elif suffix == "31":
            self._answer(b"<error>Internal failure</error>")
        elif suffix == "32":
            self._answer(b"Unauthorized", 401)
        elif suffix == "33":
            self._answer(b"Request not recognized - xml parse failed")
        else:
            self._answer(ACCEPTED)


class _GatewayServer(http.server.ThreadingHTTPServer):
    # A gateway's listen backlog, not http.server's 5: the worker sends a batch concurrently.
    request_queue_size = 128


@contextlib.contextmanager
def odd_gateway() -> Iterator[str]:
    server = _GatewayServer(("127.0.0.1", 0), OddGateway)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def resetting_server() -> Iterator[str]:
    """A raw socket server that accepts every connection and closes it at once."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/ip2sms/"
    finally:
        stop.set()
        thread.join(2)
        sock.close()


@pytest.mark.slow
def test_odd_gateway_answers_end_every_message_explained_and_memory_bounded(
    db: Any, clean_broker: str, settings_env: Any, procs: Any
) -> None:
    with odd_gateway() as base:
        urls = {
            "IP2SMS_SEND_URL": f"{base}/ip2sms/",
            "IP2SMS_STATUS_URL": f"{base}/ip2sms-request/",
            "IP2SMS_LOGIN": GATEWAY_LOGIN,
            "IP2SMS_PASSWORD": GATEWAY_PASSWORD,
        }
        settings_env(**urls)
        env = pipeline_env(
            IP2SMS_READ_TIMEOUT=1,
            IP2SMS_CONNECT_TIMEOUT=1,
            SMS_RETRY_BACKOFF_SECONDS=0.2,
            SMS_RETRY_BACKOFF_MAX_SECONDS=1,
            SMS_RATE_LIMIT_BACKOFF_SECONDS=1,
            **urls,
        )
        procs.beat(env)
        worker = procs.worker(env)
        warm = [enqueue_sms(f"+3809312345{50 + i}", "warm up", "text") for i in range(5)]
        counts, _ = settle(warm, timeout=60)
        assert counts == {"SUBMITTED": 5}, counts
        rss_before = worker.rss_kib()

        ids: dict[Any, str] = {}
        for suffix in FAULTS:
            for copy in range(COPIES):
                number = f"+3809312{copy:03d}{suffix}"
                ids[enqueue_sms(number, f"fault {suffix}", "text")] = suffix
        counts, waited = settle(list(ids), timeout=150)
        rss_after = worker.rss_kib()
        # Still alive and still sending: a healthy message goes through after the storm.
        after = enqueue_sms("+380931234599", "after the storm", "text")
        after_counts, _ = settle([after], timeout=60)
        log_text = worker.log_text()

    with session_scope() as session:
        rows = [session.get(SmsLog, message_id) for message_id in ids]
    wrong = []
    for row in rows:
        assert row is not None
        fault, status, words = FAULTS[ids[row.id]]
        if (
            row.send_status != status
            or not row.last_error
            or words.lower() not in row.last_error.lower()
        ):
            wrong.append((fault, row.send_status, row.attempts, row.last_error))
    growth_mib = round((rss_after - rss_before) / 1024, 1)
    record_figure(
        "gateway_faults",
        faults=len(FAULTS),
        messages=len(ids),
        lost=sum(1 for r in rows if r is not None and not SendStatus(r.send_status).is_final),
        unexplained=len(wrong),
        worker_rss_growth_mib=growth_mib,
        seconds_to_settle=round(waited, 1),
    )
    assert wrong == [], wrong
    assert after_counts == {"SUBMITTED": 1}, after_counts
    assert worker.alive()
    assert "WorkerLostError" not in log_text
    # 13 faults x 3 messages x 3 attempts, two of them 5 MB answers: a worker that buffered
    # whole answers would grow by far more than this.
    assert growth_mib < 64, f"worker RSS grew by {growth_mib} MiB"


def test_parser_refuses_bombs_and_huge_answers_without_expanding_them() -> None:
    tracemalloc.start()
    try:
        for raw in (BOMB, XXE, b"<status>" + b"x" * BIG + b"</status>"):
            tracemalloc.reset_peak()
            before = tracemalloc.get_traced_memory()[0]
            with pytest.raises(GatewayError):
                parse_answer(raw)
            peak = tracemalloc.get_traced_memory()[1] - before
            # An expanded bomb is ~1 GB; a copy of the 5 MB answer is 5 MB.
            assert peak < 1024 * 1024, f"parsing used {peak} bytes"
    finally:
        tracemalloc.stop()


def test_gateway_that_accepts_and_closes_ends_in_retrycount_exceeded(
    db: Any, settings_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sms_pipeline.services import outbox

    monkeypatch.setattr(outbox, "publish", lambda dispatches: 0)
    settings = settings_env(SMS_RETRY_BACKOFF_SECONDS=0.1, SMS_RETRY_BACKOFF_MAX_SECONDS=0.2)
    with resetting_server() as url:
        client = IP2SMSClient(url, url, GATEWAY_LOGIN, GATEWAY_PASSWORD, "HEALTH", (1.0, 1.0))
        message_id = enqueue_sms("+380931234567", "reset me", "text")
        outcomes = []
        clock = utcnow()
        for _ in range(10):  # bounded: 3 attempts are expected
            result = attempt_send(message_id, settings=settings, client=client, now=clock)
            outcomes.append(result.outcome)
            if result.outcome not in ("retry", "skipped"):
                break
            # The backoff passes on the clock the next attempt is given, not in a sleep.
            clock = max(utcnow(), clock) + dt.timedelta(seconds=result.retry_in or 0.3)
    with session_scope() as session:
        row = session.get(SmsLog, message_id)
        assert row is not None
        assert row.send_status == SendStatus.RETRYCOUNT_EXCEEDED.value, outcomes
        assert row.attempts == 3
        assert row.last_error and "connection" in row.last_error
