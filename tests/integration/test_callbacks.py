"""Status callbacks: events recorded once per final status, signed, retried, never resent.

A loopback HTTP server (http.server in a thread, port 0) stands in for the producer's
callback endpoint; PostgreSQL and Redis are real.
"""

from __future__ import annotations

import datetime as dt
import http.server
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from sms_pipeline.api.app import create_app
from sms_pipeline.broker import dispatch
from sms_pipeline.db import session_scope
from sms_pipeline.db.models import CallbackEvent, SendStatus, SmsLog, utcnow
from sms_pipeline.errors import InvalidMessage
from sms_pipeline.services import callbacks
from sms_pipeline.services.accounts.api_keys import NewApiKey, create_api_key
from sms_pipeline.services.intake.enqueue import enqueue_sms
from sms_pipeline.services.masking import mask_phone
from tests.helpers import TaskWatch
from tests.support import wait_until

NUMBER = "+380931234567"
REJECTED_NUMBER = "+380931234504"  # the simulator rejects it: final at once
BODY = "Your code is 424242"


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    answered: int


@dataclass
class Receiver:
    """A loopback callback endpoint; `answers` are the status codes to give, in order."""

    url: str = ""
    answers: list[int] = field(default_factory=list)
    delay: float = 0.0
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Received]:
        wait_until(
            lambda: len(self.received) >= count,
            timeout,
            lambda: f"{count} callbacks (got {len(self.received)})",
        )
        return list(self.received)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if state.delay:
                time.sleep(state.delay)
            with state.lock:
                code = state.answers.pop(0) if state.answers else 200
                state.received.append(Received(dict(self.headers.items()), body, code))
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    # Polls for shutdown every 50 ms (default 0.5 s): teardown waits that long at most.
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/sms-events?token=abc"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(autouse=True)
def loopback_receivers(settings_env: Any) -> Any:
    """The receivers here listen on 127.0.0.1: allowed only as on-premise receivers are."""
    return settings_env(SMS_CALLBACK_ALLOW_PRIVATE="true", SMS_CALLBACK_SECRET="global-secret")


@pytest.fixture
def fast_callbacks(settings_env: Any) -> Any:
    return settings_env(SMS_CALLBACK_BACKOFF_SECONDS="0.05", SMS_CALLBACK_TIMEOUT_SECONDS="3")


@pytest.fixture
def api_key(db: Any) -> NewApiKey:
    with session_scope() as session:
        return create_api_key(session, "backend")


def post_via_api(key: NewApiKey, number: str, callback_url: str) -> uuid.UUID:
    with TestClient(create_app()) as client:
        answer = client.post(
            "/v1/messages",
            json={"phone_number": number, "body": BODY, "callback_url": callback_url},
            headers={"Authorization": f"Bearer {key.key}"},
        )
    assert answer.status_code == 201, answer.text
    return uuid.UUID(answer.json()["id"])


def make_final(message_id: uuid.UUID, gateway_status: str = "Delivered") -> None:
    """What the pipeline does when a message ends (the send and status services)."""
    now = utcnow()
    with session_scope() as session:
        session.execute(
            update(SmsLog)
            .where(SmsLog.id == message_id)
            .values(
                send_status=SendStatus.SUBMITTED.value,
                gateway_status=gateway_status,
                gateway_id="G-1",
                attempts=1,
                submitted_at=now,
                status_changed_at=now,
                final_at=now,
            )
        )


def events_of(message_id: uuid.UUID) -> list[CallbackEvent]:
    with session_scope() as session:
        return list(
            session.scalars(select(CallbackEvent).where(CallbackEvent.message_id == message_id))
        )


def assert_signed(got: Received, secret: str) -> dict[str, Any]:
    timestamp = got.headers["X-SMS-Timestamp"]
    event_id = got.headers["X-SMS-Event-Id"]
    signature = got.headers["X-SMS-Signature"]
    assert signature.startswith("sha256=")
    assert callbacks.verify_signature(secret, timestamp, event_id, got.body, signature)
    # The timestamp is inside the signed string: a replay with a fresh timestamp fails.
    later = str(int(timestamp) + 1)
    assert not callbacks.verify_signature(secret, later, event_id, got.body, signature)
    # So is the event id receivers de-duplicate on: it cannot be changed to replay a body.
    other = str(int(event_id) + 1)
    assert not callbacks.verify_signature(secret, timestamp, other, got.body, signature)
    payload: dict[str, Any] = json.loads(got.body)
    return payload


def backoff_passed(message_id: uuid.UUID) -> None:
    """The message's waiting event is due now, as it is once its backoff has passed (the
    event's row is changed: the service reads the clock itself, and moving the process's
    clock under live threads is not safe)."""
    with session_scope() as session:
        session.execute(
            update(CallbackEvent)
            .where(CallbackEvent.message_id == message_id)
            .where(CallbackEvent.next_attempt_at.is_not(None))
            .values(next_attempt_at=utcnow())
        )


def deliver_all(message_id: uuid.UUID) -> list[str]:
    return [callbacks.deliver_event(e.id) for e in events_of(message_id)]


def test_final_message_gets_one_signed_event_however_often_the_sweep_runs(
    db: Any, redis_url: str, receiver: Receiver, api_key: NewApiKey, fast_callbacks: Any
) -> None:
    message_id = post_via_api(api_key, NUMBER, receiver.url)
    assert callbacks.sweep_callbacks().created == 0  # not final yet: nothing to say
    make_final(message_id)

    assert callbacks.sweep_callbacks().created == 1
    assert callbacks.sweep_callbacks().created == 0
    assert deliver_all(message_id) == ["delivered"]
    assert deliver_all(message_id) == ["skipped"]
    assert callbacks.sweep_callbacks() == callbacks.CallbackSweep(created=0, dispatched=0)

    (got,) = receiver.wait_for(1)
    payload = assert_signed(got, api_key.signing_secret)
    assert payload["id"] == str(message_id)
    assert payload["status"] == "Delivered" and payload["send_status"] == "SUBMITTED"
    assert payload["gateway_status"] == "Delivered" and payload["attempts"] == 1
    assert payload["phone_number"] == mask_phone(NUMBER)
    assert payload["final_at"] is not None
    assert BODY not in got.body.decode() and NUMBER not in got.body.decode()
    (event,) = events_of(message_id)
    assert got.headers["X-SMS-Event-Id"] == str(event.id)
    assert event.delivered_at is not None and event.next_attempt_at is None
    assert event.attempts == 1
    assert len(receiver.received) == 1


def test_failed_callback_is_retried_with_backoff_then_delivered(
    db: Any, redis_url: str, receiver: Receiver, api_key: NewApiKey, fast_callbacks: Any
) -> None:
    receiver.answers = [500]
    message_id = post_via_api(api_key, NUMBER, receiver.url)
    make_final(message_id, "Undeliverable")
    callbacks.sweep_callbacks()

    before = utcnow()
    assert deliver_all(message_id) == ["retry"]
    (event,) = events_of(message_id)
    assert event.last_error == "delivery failed" and event.attempts == 1
    assert event.next_attempt_at is not None and event.next_attempt_at > before
    backoff_passed(message_id)
    assert deliver_all(message_id) == ["delivered"]
    first, second = receiver.wait_for(2)
    assert (first.answered, second.answered) == (500, 200)
    assert first.body == second.body  # the same event, re-signed
    assert first.headers["X-SMS-Event-Id"] == second.headers["X-SMS-Event-Id"]
    assert_signed(second, api_key.signing_secret)
    assert deliver_all(message_id) == ["skipped"]


def test_retry_waits_for_its_backoff(
    db: Any, redis_url: str, receiver: Receiver, api_key: NewApiKey, settings_env: Any
) -> None:
    settings_env(SMS_CALLBACK_BACKOFF_SECONDS="600")
    receiver.answers = [503]
    message_id = post_via_api(api_key, NUMBER, receiver.url)
    make_final(message_id)
    callbacks.sweep_callbacks()
    assert deliver_all(message_id) == ["retry"]
    assert deliver_all(message_id) == ["skipped"]  # due in 10 minutes, not now
    assert callbacks.sweep_callbacks().dispatched == 0
    assert len(receiver.received) == 1


def test_callback_is_given_up_after_the_last_attempt(
    db: Any, redis_url: str, receiver: Receiver, api_key: NewApiKey, settings_env: Any
) -> None:
    settings_env(SMS_CALLBACK_BACKOFF_SECONDS="0.01", SMS_CALLBACK_MAX_ATTEMPTS="3")
    receiver.answers = [500, 502, 404, 200]
    message_id = post_via_api(api_key, NUMBER, receiver.url)
    make_final(message_id)
    callbacks.sweep_callbacks()
    outcomes = []
    for _ in range(3):
        backoff_passed(message_id)
        outcomes += deliver_all(message_id)
    assert outcomes == ["retry", "retry", "given up"]
    (event,) = events_of(message_id)
    assert event.delivered_at is None and event.next_attempt_at is None
    assert event.last_error == "given up after 3 attempts: delivery failed"
    assert deliver_all(message_id) == ["skipped"]
    assert callbacks.sweep_callbacks() == callbacks.CallbackSweep(created=0, dispatched=0)
    assert len(receiver.received) == 3


def test_unreachable_callback_url_is_a_retry(
    db: Any, redis_url: str, api_key: NewApiKey, fast_callbacks: Any
) -> None:
    message_id = post_via_api(api_key, NUMBER, "http://127.0.0.1:1/never")
    make_final(message_id)
    callbacks.sweep_callbacks()
    assert deliver_all(message_id) == ["retry"]
    (event,) = events_of(message_id)
    # Producers are told no more than this: the detail would make us their port scanner.
    assert event.last_error == "delivery failed"
    with TestClient(create_app()) as client:
        shown = client.get(
            f"/v1/messages/{message_id}", headers={"Authorization": f"Bearer {api_key.key}"}
        ).json()
    assert shown["callbacks"][0]["last_error"] == "delivery failed"


def test_two_concurrent_deliveries_of_one_event_post_once(
    db: Any, redis_url: str, receiver: Receiver, api_key: NewApiKey, fast_callbacks: Any
) -> None:
    receiver.delay = 0.5
    message_id = post_via_api(api_key, NUMBER, receiver.url)
    make_final(message_id)
    callbacks.sweep_callbacks()
    (event,) = events_of(message_id)
    outcomes: list[str] = []
    threads = [
        threading.Thread(target=lambda: outcomes.append(callbacks.deliver_event(event.id)))
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(outcomes) == ["delivered", "skipped"]
    assert len(receiver.received) == 1


def test_message_enqueued_from_python_is_signed_with_the_global_secret(
    db: Any, redis_url: str, receiver: Receiver, settings_env: Any
) -> None:
    settings_env(SMS_CALLBACK_SECRET="global-secret")
    message_id = enqueue_sms(NUMBER, BODY, callback_url=receiver.url)
    make_final(message_id, "Expired")
    callbacks.sweep_callbacks()
    assert deliver_all(message_id) == ["delivered"]
    (got,) = receiver.wait_for(1)
    assert assert_signed(got, "global-secret")["status"] == "Expired"


def test_without_a_secret_enqueue_from_python_refuses_a_callback_url(
    db: Any, redis_url: str, receiver: Receiver, settings_env: Any
) -> None:
    settings_env(SMS_CALLBACK_SECRET="")
    with pytest.raises(InvalidMessage) as refused:
        enqueue_sms(NUMBER, BODY, callback_url=receiver.url)
    assert refused.value.field == "callback_url"


def test_an_event_whose_secret_has_gone_is_given_up_never_sent_unsigned(
    db: Any, redis_url: str, receiver: Receiver, settings_env: Any
) -> None:
    message_id = enqueue_sms(NUMBER, BODY, callback_url=receiver.url)
    make_final(message_id)
    callbacks.sweep_callbacks()
    settings_env(SMS_CALLBACK_SECRET="")  # removed from the configuration meanwhile
    assert deliver_all(message_id) == ["given up"]
    assert receiver.received == []


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:6379/",
        "http://[::1]:5555/",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.7/",
        "http://localhost@evil.example/",
        "http://[::ffff:127.0.0.1]/",
    ],
)
def test_the_api_refuses_callback_urls_that_reach_our_own_network(
    db: Any, api_key: NewApiKey, settings_env: Any, url: str
) -> None:
    settings_env(SMS_CALLBACK_ALLOW_PRIVATE="false")
    with TestClient(create_app()) as client:
        answer = client.post(
            "/v1/messages",
            json={"phone_number": NUMBER, "body": BODY, "callback_url": url},
            headers={"Authorization": f"Bearer {api_key.key}"},
        )
    assert answer.status_code == 422, answer.text
    assert [e["field"] for e in answer.json()["errors"]] == ["callback_url"]
    with session_scope() as session:
        assert session.scalar(select(SmsLog.id)) is None


def test_delivery_checks_the_address_again_and_never_connects_to_a_forbidden_one(
    db: Any, redis_url: str, receiver: Receiver, api_key: NewApiKey, settings_env: Any
) -> None:
    message_id = post_via_api(api_key, NUMBER, receiver.url)  # allowed at enqueue
    make_final(message_id)
    callbacks.sweep_callbacks()
    settings_env(SMS_CALLBACK_ALLOW_PRIVATE="false")  # no longer allowed at delivery
    assert deliver_all(message_id) == ["given up"]
    assert receiver.received == []
    (event,) = events_of(message_id)
    assert event.last_error == "given up after 1 attempts: delivery failed"


def test_a_tarpit_receiver_holds_a_delivery_no_longer_than_the_deadline(
    db: Any, redis_url: str, api_key: NewApiKey, settings_env: Any
) -> None:
    settings_env(SMS_CALLBACK_TIMEOUT_SECONDS="1")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    stop = threading.Event()

    def drip() -> None:  # accepts, then answers one byte every 0.2 s for ever
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            while not stop.wait(0.2):
                try:
                    conn.sendall(b"H")
                except OSError:
                    return

    thread = threading.Thread(target=drip, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/hook"
        message_id = post_via_api(api_key, NUMBER, url)
        make_final(message_id)
        callbacks.sweep_callbacks()
        assert deliver_all(message_id) == ["retry"]
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def test_callback_deliveries_go_to_their_own_queue() -> None:
    from sms_pipeline.broker.app import CALLBACKS_QUEUE, DELIVER_CALLBACK_TASK, app

    assert CALLBACKS_QUEUE not in {"urgent", "bulk", "status", "maintenance"}
    route = app.amqp.router.route({}, DELIVER_CALLBACK_TASK)
    assert route["queue"].name == CALLBACKS_QUEUE


def test_messages_without_callback_url_or_final_long_ago_get_no_event(
    db: Any, redis_url: str, receiver: Receiver
) -> None:
    plain = enqueue_sms(NUMBER, BODY)
    make_final(plain)
    old = enqueue_sms(NUMBER, BODY, callback_url=receiver.url)
    make_final(old)
    with session_scope() as session:
        session.execute(
            update(SmsLog).where(SmsLog.id == old).values(final_at=utcnow() - dt.timedelta(days=30))
        )
    assert callbacks.sweep_callbacks().created == 0


def test_send_status_endings_are_events_too(db: Any, redis_url: str, receiver: Receiver) -> None:
    message_id = enqueue_sms(NUMBER, BODY, callback_url=receiver.url)
    with session_scope() as session:
        session.execute(
            update(SmsLog)
            .where(SmsLog.id == message_id)
            .values(
                send_status=SendStatus.RETRYCOUNT_EXCEEDED.value,
                attempts=3,
                last_error="HTTP 503",
                final_at=utcnow(),
            )
        )
    callbacks.sweep_callbacks()
    (event,) = events_of(message_id)
    assert event.status == "RETRYCOUNT EXCEEDED"
    assert json.loads(event.payload)["error"] == "HTTP 503"


def test_pipeline_end_to_end_rejected_message_calls_back_once_after_a_500(
    worker: Any, receiver: Receiver, api_key: NewApiKey, fast_callbacks: Any
) -> None:
    from sms_pipeline.broker.app import CALLBACKS_SWEEP_TASK, DELIVER_CALLBACK_TASK, app

    receiver.answers = [500]
    message_id = post_via_api(api_key, REJECTED_NUMBER, receiver.url)

    def final() -> bool:
        with session_scope() as session:
            row = session.get(SmsLog, message_id)
            return row is not None and row.final_at is not None

    wait_until(final, 30, "the message to end")
    with TaskWatch([CALLBACKS_SWEEP_TASK, DELIVER_CALLBACK_TASK]) as tasks:
        # Beat's job, run through the broker: the sweep dispatches deliveries to the worker.
        def delivered() -> bool:
            app.send_task(CALLBACKS_SWEEP_TASK)
            return any(r.answered == 200 for r in receiver.received)

        wait_until(delivered, 30, "a sweep's delivery to be answered 200", 0.2)
        for _ in range(3):  # more sweeps after delivery send nothing more
            app.send_task(CALLBACKS_SWEEP_TASK)
        # Every sweep has run, and every delivery any of them dispatched.
        wait_until(tasks.settled, 60, "the sweeps and their deliveries to run")
    assert [r.answered for r in receiver.received] == [500, 200]
    payload = assert_signed(receiver.received[-1], api_key.signing_secret)
    assert payload["status"] == "Rejected" and payload["send_status"] == "REJECTED"
    (event,) = events_of(message_id)
    assert event.delivered_at is not None and event.attempts == 2


def test_dispatched_deliveries_expire_after_two_callback_sweeps_not_outbox_sweeps(
    db: Any,
    redis_url: str,
    receiver: Receiver,
    api_key: NewApiKey,
    fast_callbacks: Any,
    settings_env: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings_env(SMS_CALLBACK_SWEEP_SECONDS=100, SMS_OUTBOX_SWEEP_SECONDS=1)
    published: list[tuple[list[Any], float]] = []

    def callback_deliveries(ids: Any, expires: float) -> int:
        published.append((list(ids), expires))
        return len(published[-1][0])

    monkeypatch.setattr(dispatch, "callback_deliveries", callback_deliveries)
    make_final(post_via_api(api_key, NUMBER, receiver.url))
    assert callbacks.sweep_callbacks().dispatched == 1
    assert [expires for _, expires in published] == [200.0]
