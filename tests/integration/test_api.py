"""The HTTP API against real PostgreSQL and Redis (FastAPI's TestClient, no mocks)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import hypothesis
import pytest
import schemathesis
from fastapi.testclient import TestClient
from schemathesis.checks import not_a_server_error
from sqlalchemy import func, select, text

from sms_pipeline.api import auth as api_auth
from sms_pipeline.api.app import create_app, create_message
from sms_pipeline.api.schemas import MessageIn
from sms_pipeline.db import session_scope
from sms_pipeline.db.models import IdempotencyRecord, OptOut, SendStatus, SmsLog
from sms_pipeline.services.accounts.api_keys import (
    NewApiKey,
    Principal,
    authenticate,
    create_api_key,
    revoke_api_key,
)
from sms_pipeline.services.intake.enqueue import enqueue_sms
from sms_pipeline.services.masking import mask_phone
from tests.factories import make_account
from tests.support import wait_until

NUMBER = "+380931234567"
MASKED = mask_phone(NUMBER)
BODY = "Your code is 123456"


def make_key(name: str = "backend", account: str | None = None) -> NewApiKey:
    with session_scope() as session:
        return create_api_key(session, name, account)


def auth(key: NewApiKey | str) -> dict[str, str]:
    value = key if isinstance(key, str) else key.key
    return {"Authorization": f"Bearer {value}"}


def message_count() -> int:
    with session_scope() as session:
        return int(session.scalar(select(func.count()).select_from(SmsLog)) or 0)


@pytest.fixture
def client(db: Any, redis_url: str) -> Iterator[TestClient]:
    with TestClient(create_app()) as test_client:
        yield test_client


@pytest.fixture
def key(db: Any) -> NewApiKey:
    return make_key()


def test_post_message_returns_201_and_stores_it_under_the_key(
    client: TestClient, key: NewApiKey
) -> None:
    answer = client.post(
        "/v1/messages",
        json={"phone_number": NUMBER, "body": BODY, "type": "verification", "ext_id": "e-1"},
        headers=auth(key),
    )
    assert answer.status_code == 201, answer.text
    message_id = uuid.UUID(answer.json()["id"])
    with session_scope() as session:
        row = session.get(SmsLog, message_id)
        assert row is not None
        assert row.phone_number == NUMBER and row.body == BODY and row.ext_id == "e-1"
        assert row.send_status == SendStatus.QUEUED.value
        assert row.dispatched_at is not None  # dispatched after the commit
        principal = authenticate(session, key.key)
        assert principal is not None and row.api_key_id == principal.key_id


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer sk_deadbeef_not-a-real-key"},
        {"Authorization": "Basic dXNlcjpwdw=="},
        {"Authorization": "Bearer "},
    ],
    ids=["missing", "wrong", "other-scheme", "empty"],
)
def test_request_without_a_valid_key_is_401_and_stores_nothing(
    client: TestClient, key: NewApiKey, headers: dict[str, str]
) -> None:
    answer = client.post(
        "/v1/messages", json={"phone_number": NUMBER, "body": BODY}, headers=headers
    )
    assert answer.status_code == 401
    assert answer.json()["error"] == "unauthorized"
    assert answer.headers["www-authenticate"] == "Bearer"
    assert client.get(f"/v1/messages/{uuid.uuid4()}", headers=headers).status_code == 401
    assert message_count() == 0


def test_malformed_body_without_a_key_is_401_not_422(client: TestClient, key: NewApiKey) -> None:
    answer = client.post(
        "/v1/messages", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert answer.status_code == 401


def test_revoked_key_is_refused(client: TestClient, key: NewApiKey) -> None:
    with session_scope() as session:
        assert revoke_api_key(session, key.name)
    answer = client.post(
        "/v1/messages", json={"phone_number": NUMBER, "body": BODY}, headers=auth(key)
    )
    assert answer.status_code == 401
    assert message_count() == 0


def test_a_key_found_valid_is_trusted_for_a_second_then_read_again(
    client: TestClient, key: NewApiKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    monkeypatch.setattr(api_auth, "_clock", lambda: now[0])
    message = {"phone_number": NUMBER, "body": BODY}
    assert client.post("/v1/messages", json=message, headers=auth(key)).status_code == 201
    with session_scope() as session:
        assert revoke_api_key(session, key.name)
    now[0] += api_auth.KEY_CACHE_SECONDS / 2  # still trusted: not read back yet
    assert client.post("/v1/messages", json=message, headers=auth(key)).status_code == 201
    now[0] += api_auth.KEY_CACHE_SECONDS / 2  # the trust ran out: read again, revoked
    answer = client.post("/v1/messages", json=message, headers=auth(key))
    assert answer.status_code == 401
    assert message_count() == 2


def test_a_request_with_a_known_key_takes_one_thread_pool_hop(
    client: TestClient, key: NewApiKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key is trusted from the first request on, and the principal is read without a
    hop: only the route (the INSERT) runs in the thread pool."""
    import anyio.to_thread

    message = {"phone_number": NUMBER, "body": BODY}
    assert client.post("/v1/messages", json=message, headers=auth(key)).status_code == 201
    hops: list[object] = []
    real = anyio.to_thread.run_sync

    async def counted(func: Any, *args: Any, **kwargs: Any) -> Any:
        hops.append(func)
        return await real(func, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counted)
    assert client.post("/v1/messages", json=message, headers=auth(key)).status_code == 201
    assert len(hops) == 1


def test_key_with_the_right_prefix_but_wrong_secret_is_refused(
    client: TestClient, key: NewApiKey
) -> None:
    forged = key.key[:-4] + ("AAAA" if not key.key.endswith("AAAA") else "BBBB")
    answer = client.post(
        "/v1/messages", json={"phone_number": NUMBER, "body": BODY}, headers=auth(forged)
    )
    assert answer.status_code == 401


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"phone_number": "12", "body": BODY}, "phone_number"),
        ({"phone_number": NUMBER, "body": "   "}, "body"),
        ({"phone_number": NUMBER, "body": "x" * 2000}, "body"),
        ({"phone_number": NUMBER, "body": BODY, "type": "promo"}, "type"),
        ({"phone_number": NUMBER, "body": BODY, "account": "nope"}, "account"),
        ({"phone_number": NUMBER, "body": BODY, "send_at": "2030-01-01T10:00:00"}, "send_at"),
        ({"phone_number": NUMBER, "body": BODY, "callback_url": "ftp://x"}, "callback_url"),
        ({"phone_number": NUMBER, "body": BODY, "sender_id": "x" * 17}, "sender_id"),
        ({"phone_number": NUMBER, "body": BODY, "ext_id": "a\x00b"}, "ext_id"),
        ({"phone_number": NUMBER, "body": BODY, "priority": "high"}, "priority"),
        ({"phone_number": NUMBER, "body": BODY, "priority": 2**40}, "priority"),
        ({"phone_number": NUMBER, "body": BODY, "colour": "red"}, "colour"),
        ({"body": BODY}, "phone_number"),
    ],
)
def test_bad_input_is_422_naming_the_field_and_stores_nothing(
    client: TestClient, key: NewApiKey, payload: dict[str, Any], field: str
) -> None:
    answer = client.post("/v1/messages", json=payload, headers=auth(key))
    assert answer.status_code == 422, answer.text
    data = answer.json()
    assert data["error"] == "invalid"
    assert [e["field"] for e in data["errors"]] == [field]
    assert message_count() == 0


def test_reasons_are_the_same_as_enqueue_sms(client: TestClient, key: NewApiKey) -> None:
    from sms_pipeline.errors import InvalidMessage

    with pytest.raises(InvalidMessage) as raised:
        enqueue_sms("+380", BODY)
    answer = client.post(
        "/v1/messages", json={"phone_number": "+380", "body": BODY}, headers=auth(key)
    )
    assert answer.json()["errors"] == [{"field": "phone_number", "reason": raised.value.reason}]


def test_body_over_the_limit_is_413_before_parsing(
    db: Any, redis_url: str, settings_env: Any, key: NewApiKey
) -> None:
    settings_env(SMS_API_MAX_BODY_BYTES=2048)
    with TestClient(create_app()) as client:
        big = b'{"phone_number": "' + b"1" * 4000 + b'"}'
        # Declared length too large: refused on the headers, before the key is even checked.
        assert client.post("/v1/messages", content=big).status_code == 413
        answer = client.post(
            "/v1/messages",
            content=big,
            headers={**auth(key), "Content-Type": "application/json"},
        )
        assert answer.status_code == 413
        assert answer.json()["error"] == "too_large"

        # No Content-Length (chunked): read only up to the limit, then refused.
        def chunks() -> Iterator[bytes]:
            yield b'{"phone_number": "'
            for _ in range(10):
                yield b"1" * 1000

        answer = client.post(
            "/v1/messages",
            content=chunks(),
            headers={**auth(key), "Content-Type": "application/json"},
        )
        assert answer.status_code == 413
        # A body within the limit still works.
        ok = client.post(
            "/v1/messages", json={"phone_number": NUMBER, "body": BODY}, headers=auth(key)
        )
        assert ok.status_code == 201
    assert message_count() == 1


def test_same_idempotency_key_twice_gives_one_message(client: TestClient, key: NewApiKey) -> None:
    payload = {"phone_number": NUMBER, "body": BODY, "type": "2FA"}
    headers = {**auth(key), "Idempotency-Key": "order-42-code"}
    first = client.post("/v1/messages", json=payload, headers=headers)
    second = client.post("/v1/messages", json=payload, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json()["id"] == second.json()["id"]
    assert second.headers.get("idempotent-replayed") == "true"
    assert message_count() == 1
    # Without the key, the same body is a new message.
    assert client.post("/v1/messages", json=payload, headers=auth(key)).status_code == 201
    assert message_count() == 2


def test_same_idempotency_key_with_another_body_is_422(client: TestClient, key: NewApiKey) -> None:
    headers = {**auth(key), "Idempotency-Key": "k-1"}
    assert (
        client.post(
            "/v1/messages", json={"phone_number": NUMBER, "body": BODY}, headers=headers
        ).status_code
        == 201
    )
    answer = client.post(
        "/v1/messages", json={"phone_number": NUMBER, "body": "other"}, headers=headers
    )
    assert answer.status_code == 422
    assert answer.json()["error"] == "idempotency_mismatch"
    assert message_count() == 1


def test_idempotency_keys_are_per_api_key(client: TestClient, key: NewApiKey) -> None:
    other = make_key("other-service")
    payload = {"phone_number": NUMBER, "body": BODY}
    a = client.post("/v1/messages", json=payload, headers={**auth(key), "Idempotency-Key": "x"})
    b = client.post("/v1/messages", json=payload, headers={**auth(other), "Idempotency-Key": "x"})
    assert a.status_code == b.status_code == 201
    assert a.json()["id"] != b.json()["id"]


def test_concurrent_identical_request_waits_and_returns_the_winners_message(
    db: Any, redis_url: str, key: NewApiKey
) -> None:
    with session_scope() as session:
        principal = authenticate(session, key.key)
    assert principal is not None
    message = MessageIn(phone_number=NUMBER, body=BODY)
    from sms_pipeline.api.messages import _request_hash
    from sms_pipeline.db import get_sessionmaker

    # "The other request": enqueued and its idempotency record inserted, not yet committed.
    winner = get_sessionmaker()()
    winner_id = enqueue_sms(NUMBER, BODY, session=winner)
    winner.add(
        IdempotencyRecord(
            api_key_id=principal.key_id,
            key="race",
            request_hash=_request_hash(message),
            message_id=winner_id,
        )
    )
    winner.flush()
    answers: list[Any] = []
    loser = threading.Thread(
        target=lambda: answers.append(create_message(message, principal, "race"))
    )
    loser.start()

    # Wait until the loser is blocked on the record's primary key, then let the winner commit.
    def blocked() -> bool:
        with session_scope() as probe:
            return bool(probe.scalar(text("SELECT count(*) FROM pg_locks WHERE NOT granted")))

    wait_until(blocked, 30, "the second request to wait for the first")
    winner.commit()
    winner.close()
    loser.join(30)
    assert len(answers) == 1
    assert answers[0].status_code == 201
    assert answers[0].body == f'{{"id":"{winner_id}"}}'.encode()
    assert answers[0].headers["idempotent-replayed"] == "true"
    assert message_count() == 1


def test_get_message_masks_the_number_and_never_returns_the_body(
    client: TestClient, key: NewApiKey
) -> None:
    created = client.post(
        "/v1/messages",
        json={"phone_number": NUMBER, "body": BODY, "customer_id": "c-9"},
        headers=auth(key),
    ).json()
    answer = client.get(f"/v1/messages/{created['id']}", headers=auth(key))
    assert answer.status_code == 200
    data = answer.json()
    assert data["id"] == created["id"]
    assert data["phone_number"] == MASKED
    assert data["send_status"] == "QUEUED" and data["status"] == "QUEUED"
    assert data["final"] is False and data["attempts"] == 0
    assert data["customer_id"] == "c-9" and data["account"] == "default"
    assert "body" not in data
    assert BODY not in answer.text and NUMBER not in answer.text


def test_get_unknown_message_is_404(client: TestClient, key: NewApiKey) -> None:
    answer = client.get(f"/v1/messages/{uuid.uuid4()}", headers=auth(key))
    assert answer.status_code == 404
    assert answer.json()["error"] == "not_found"
    assert client.get("/v1/messages/not-a-uuid", headers=auth(key)).status_code == 422


def test_account_limited_key_sends_for_its_account_only(client: TestClient, key: NewApiKey) -> None:
    clinic = make_account("clinic")
    make_account("pharmacy")
    limited = make_key("clinic-app", account="clinic")
    payload = {"phone_number": NUMBER, "body": BODY}

    own = client.post("/v1/messages", json=payload, headers=auth(limited))
    assert own.status_code == 201
    named = client.post(
        "/v1/messages", json={**payload, "account": "clinic"}, headers=auth(limited)
    )
    assert named.status_code == 201
    with session_scope() as session:
        accounts = {
            session.get(SmsLog, uuid.UUID(a.json()["id"])).account_id  # type: ignore[union-attr]
            for a in (own, named)
        }
    assert accounts == {clinic}

    other = client.post(
        "/v1/messages", json={**payload, "account": "pharmacy"}, headers=auth(limited)
    )
    assert other.status_code == 403
    assert other.json()["error"] == "forbidden"
    assert message_count() == 2

    # Messages of other accounts are invisible to it; the unlimited key sees everything.
    foreign = client.post(
        "/v1/messages", json={**payload, "account": "pharmacy"}, headers=auth(key)
    ).json()["id"]
    assert client.get(f"/v1/messages/{foreign}", headers=auth(limited)).status_code == 404
    assert client.get(f"/v1/messages/{own.json()['id']}", headers=auth(limited)).status_code == 200
    assert client.get(f"/v1/messages/{own.json()['id']}", headers=auth(key)).status_code == 200


def test_text_to_an_opted_out_number_is_409_with_the_stored_id(
    client: TestClient, key: NewApiKey
) -> None:
    with session_scope() as session:
        session.add(OptOut(phone_number=NUMBER, source="api"))
    headers = {**auth(key), "Idempotency-Key": "promo-1"}
    answer = client.post(
        "/v1/messages", json={"phone_number": NUMBER, "body": "Sale!"}, headers=headers
    )
    assert answer.status_code == 409
    data = answer.json()
    assert data["error"] == "opted_out"
    with session_scope() as session:
        row = session.get(SmsLog, uuid.UUID(data["id"]))
        assert row is not None and row.send_status == SendStatus.OPTED_OUT.value
    again = client.post(
        "/v1/messages", json={"phone_number": NUMBER, "body": "Sale!"}, headers=headers
    )
    assert again.status_code == 409 and again.json()["id"] == data["id"]
    # Verification codes still go.
    code = client.post(
        "/v1/messages",
        json={"phone_number": NUMBER, "body": BODY, "type": "verification"},
        headers=auth(key),
    )
    assert code.status_code == 201


def test_healthz_is_ok_when_database_and_broker_answer(client: TestClient) -> None:
    answer = client.get("/healthz")
    assert answer.status_code == 200
    assert answer.json() == {"database": "ok", "broker": "ok"}


def test_healthz_is_503_when_the_broker_is_unreachable(db: Any) -> None:
    from sms_pipeline.api.app import broker_reachable

    dead = "redis://127.0.0.1:1/0"
    with TestClient(create_app(broker_check=lambda: broker_reachable(dead))) as client:
        answer = client.get("/healthz")
    assert answer.status_code == 503
    assert answer.json()["database"] == "ok"
    assert answer.json()["broker"].startswith("unreachable")


def test_openapi_document_describes_the_routes(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    assert {"/v1/messages", "/v1/messages/{message_id}", "/healthz"} <= set(document["paths"])
    post = document["paths"]["/v1/messages"]["post"]
    assert {"201", "401", "413", "422"} <= set(post["responses"])
    assert "HTTPBearer" in document["components"]["securitySchemes"]


def test_api_key_cli_prints_the_key_once_and_lists_without_it(
    db: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from sms_pipeline.cli import main

    make_account("clinic")
    assert main(["api-key", "create", "clinic-app", "--account", "clinic"]) == 0
    out = capsys.readouterr().out
    api_key = next(line.split()[-1] for line in out.splitlines() if line.startswith("key:"))
    secret = next(line.split()[-1] for line in out.splitlines() if line.startswith("signing"))
    with session_scope() as session:
        principal = authenticate(session, api_key)
    assert isinstance(principal, Principal) and principal.account_id is not None

    assert main(["api-key", "create", "clinic-app"]) == 2  # names are unique
    capsys.readouterr()
    assert main(["api-key", "list"]) == 0
    listing = capsys.readouterr().out
    assert "clinic-app" in listing and "active" in listing
    assert api_key not in listing and secret not in listing
    assert api_key.split("_", 2)[2] not in listing  # the secret may itself hold "_"

    assert main(["api-key", "revoke", "clinic-app"]) == 0
    with session_scope() as session:
        assert authenticate(session, api_key) is None
    assert main(["api-key", "revoke", "clinic-app"]) == 1


# --- OpenAPI-driven fuzzing ------------------------------------------------------------------

fuzz_schema = schemathesis.openapi.from_asgi("/openapi.json", create_app())


@pytest.fixture
def fuzz_key(db: Any, redis_url: str) -> NewApiKey:
    # One key per fuzzed operation: the `db` fixture empties the tables after it.
    return make_key("fuzzer")


@fuzz_schema.parametrize()
@hypothesis.settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck),
    derandomize=True,
)
def test_fuzzed_requests_never_cause_a_server_error(case: Any, fuzz_key: NewApiKey) -> None:
    case.headers = {**(case.headers or {}), **auth(fuzz_key)}
    response = case.call()
    case.validate_response(response, checks=[not_a_server_error])
    assert response.status_code < 500 or (
        case.path == "/healthz" and response.status_code == 503
    ), response.text
