"""API keys, callback signatures and request validation, without servers."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac

import pytest
from pydantic import ValidationError

from sms_pipeline.api.schemas import MessageIn
from sms_pipeline.services import callbacks
from sms_pipeline.services.accounts import api_keys
from sms_pipeline.settings import load_settings


def test_signature_is_hmac_sha256_of_timestamp_dot_event_id_dot_body() -> None:
    body = b'{"id":"x","status":"Delivered"}'
    expected = hmac.new(b"s3cret", b"1700000000.42." + body, hashlib.sha256).hexdigest()
    assert callbacks.sign("s3cret", "1700000000", "42", body) == f"sha256={expected}"


def test_verify_signature_accepts_fresh_and_refuses_tampered_or_stale() -> None:
    body = b'{"id":"x"}'
    signature = callbacks.sign("k", "1000", "7", body)
    assert callbacks.verify_signature("k", "1000", "7", body, signature, now=1100)
    assert not callbacks.verify_signature("k", "1000", "7", body + b" ", signature, now=1100)
    assert not callbacks.verify_signature("other", "1000", "7", body, signature, now=1100)
    assert not callbacks.verify_signature("k", "1001", "7", body, signature, now=1100)
    # The event id receivers de-duplicate on is signed: a replay under a new id fails.
    assert not callbacks.verify_signature("k", "1000", "8", body, signature, now=1100)
    # An old event replayed later fails on its (signed) timestamp.
    assert not callbacks.verify_signature("k", "1000", "7", body, signature, now=1000 + 301)
    assert not callbacks.verify_signature("k", "not-a-time", "7", body, signature, now=1100)


def test_final_status_prefers_the_gateways_final_word() -> None:
    assert callbacks.final_status("SUBMITTED", "Delivered") == "Delivered"
    assert callbacks.final_status("REJECTED", "Rejected") == "Rejected"
    assert callbacks.final_status("RETRYCOUNT EXCEEDED", None) == "RETRYCOUNT EXCEEDED"
    assert callbacks.final_status("SUBMITTED", "Enroute") == "SUBMITTED"


def test_default_retry_schedule_is_six_attempts_over_about_half_an_hour() -> None:
    settings = load_settings()
    assert settings.sms_callback_max_attempts == 6
    waits = [callbacks.retry_delay(n, settings) for n in range(1, 6)]
    assert waits == [60, 120, 240, 480, 960]
    assert 25 * 60 <= sum(waits) <= 35 * 60


def test_api_key_hash_is_keyed_and_not_the_plain_sha256() -> None:
    key = "sk_0123abcd_" + "x" * 43
    assert api_keys.hash_key(key) == api_keys.hash_key(key)
    assert api_keys.hash_key(key) != hashlib.sha256(key.encode()).hexdigest()
    assert api_keys.hash_key(key) != api_keys.hash_key(key + "y")


@pytest.mark.parametrize(
    ("presented", "prefix"),
    [
        ("sk_0123abcd_secret_with_underscores", "0123abcd"),
        ("sk__secret", None),
        ("pk_0123abcd_secret", None),
        ("sk_0123abcd", None),
        ("", None),
    ],
)
def test_key_prefix_is_read_only_from_well_formed_keys(presented: str, prefix: str | None) -> None:
    assert api_keys._split(presented) == prefix


@pytest.mark.parametrize(
    "extra",
    [
        {"ext_id": "a\x00b"},
        {"body": "\ud800"},
        {"priority": 2**31},
        {"priority": True},
        {"priority": "1"},
        {"send_at": dt.datetime(1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=5)))},
        {"unknown": 1},
        {"phone_number": 380931234567},
    ],
)
def test_request_model_refuses_what_the_database_could_not_store(extra: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        MessageIn.model_validate({"phone_number": "+380931234567", "body": "hi", **extra})


def test_request_model_leaves_message_rules_to_enqueue_sms() -> None:
    # Invalid for enqueue_sms (bad number, unknown type) yet valid JSON types.
    message = MessageIn.model_validate({"phone_number": "12", "body": "hi", "type": "promo"})
    assert message.type == "promo"


@pytest.mark.parametrize(
    "send_at", [0, 1900000000, "0", "1900000000", "2030-01-01T00:00:00", "2030-01-01", "tomorrow"]
)
def test_send_at_over_http_is_only_an_rfc3339_time_with_offset(send_at: object) -> None:
    with pytest.raises(ValidationError, match="RFC 3339"):
        MessageIn.model_validate(
            {"phone_number": "+380931234567", "body": "hi", "send_at": send_at}
        )


@pytest.mark.parametrize(
    ("send_at", "utc"),
    [("2030-01-01T08:00:00+02:00", "2030-01-01T06:00:00"), ("2030-01-01T06:00:00.5Z", None)],
)
def test_send_at_accepts_rfc3339_with_offset(send_at: str, utc: str | None) -> None:
    message = MessageIn.model_validate(
        {"phone_number": "+380931234567", "body": "hi", "send_at": send_at}
    )
    assert message.send_at is not None and message.send_at.utcoffset() is not None
    if utc:
        assert message.send_at.astimezone(dt.UTC).replace(tzinfo=None).isoformat() == utc


def test_openapi_states_the_rules() -> None:
    schema = MessageIn.model_json_schema()
    fields = schema["properties"]
    assert fields["type"]["enum"] == ["verification", "medication_request", "text", "2FA"]
    assert fields["phone_number"]["minLength"] == 1 and fields["phone_number"]["maxLength"] == 32
    assert fields["sender_id"]["anyOf"][0]["maxLength"] == 16
    assert (fields["priority"]["minimum"], fields["priority"]["maximum"]) == (0, 9)
    assert fields["send_at"]["anyOf"][0] == {"type": "string", "format": "date-time"}
    assert "example.invalid" in schema["examples"][0]["callback_url"]


def _receiver_snippet() -> dict[str, object]:
    """The receiver example of docs/api.md, executed as a module (not as __main__)."""
    from pathlib import Path

    docs = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text(encoding="utf-8")
    start = docs.index("```python\nimport hashlib")
    code = docs[start + len("```python\n") : docs.index("```", start + 10)]
    namespace: dict[str, object] = {"__name__": "receiver"}
    exec(compile(code, "docs/api.md", "exec"), namespace)  # noqa: S102  (our own docs)
    return namespace


def test_the_documented_receiver_verifies_our_signatures_and_refuses_tampering() -> None:
    verify = _receiver_snippet()["verify"]
    assert callable(verify)
    body = b'{"event":"message.final","id":"x"}'
    headers = {
        "X-SMS-Timestamp": "1700000000",
        "X-SMS-Event-Id": "42",
        "X-SMS-Signature": callbacks.sign("whsec_k", "1700000000", "42", body),
    }
    assert verify("whsec_k", headers, body, now=1700000010)
    assert not verify("whsec_k", headers, body + b" ", now=1700000010)
    assert not verify("whsec_k", {**headers, "X-SMS-Event-Id": "43"}, body, now=1700000010)
    assert not verify("whsec_k", headers, body, now=1700000000 + 301)
    assert not verify("other", headers, body, now=1700000010)
