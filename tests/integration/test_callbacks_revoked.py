"""A revoked API key's callbacks are dropped with the reason on the event, never signed or sent.

Issue 32: after `api-key revoke`, events of the key's messages were still signed with its
secret and POSTed.
"""

from __future__ import annotations

from typing import Any

from sms_pipeline.db import session_scope
from sms_pipeline.services import callbacks
from sms_pipeline.services.accounts.api_keys import create_api_key, revoke_api_key
from tests.integration.test_callbacks import (  # noqa: F401  (fixtures)
    NUMBER,
    Receiver,
    deliver_all,
    events_of,
    loopback_receivers,
    make_final,
    post_via_api,
    receiver,
)


def test_a_revoked_keys_callback_is_dropped_with_the_reason_and_never_sent(
    db: Any,
    redis_url: str,
    receiver: Receiver,  # noqa: F811  (the imported fixture)
) -> None:
    with session_scope() as session:
        kept = create_api_key(session, "kept")
        revoked = create_api_key(session, "revoked")
    kept_id = post_via_api(kept, NUMBER, receiver.url)
    revoked_id = post_via_api(revoked, NUMBER, receiver.url)
    for message_id in (kept_id, revoked_id):
        make_final(message_id)
    callbacks.sweep_callbacks()
    with session_scope() as session:
        assert revoke_api_key(session, "revoked")

    assert deliver_all(revoked_id) == ["given up"]
    assert deliver_all(kept_id) == ["delivered"]  # the other key's event still goes
    assert len(receiver.received) == 1
    assert revoked.signing_secret not in str(receiver.received[0].headers)
    [event] = events_of(revoked_id)
    assert event.last_error == callbacks.REVOKED
    assert event.delivered_at is None and event.next_attempt_at is None  # never again
    assert deliver_all(revoked_id) == ["skipped"]
