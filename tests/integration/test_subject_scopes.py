"""Who may export and erase whose data over HTTP: every key kind x route x account.

One person has data in two clinics (accounts). An account admin sees and erases its own
clinic's rows only; a platform admin (command line only) every clinic's; any other key,
and an admin key bound to no account (before platform admins existed), gets 403 and leaves
no audit row. Issue 32: `clinicBadmin` read clinic A's "secret appointment".
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from sms_pipeline import enqueue_sms
from sms_pipeline.api.app import create_app
from sms_pipeline.db import session_scope
from sms_pipeline.db.models import (
    Account,
    ApiKey,
    AuditEvent,
    OptOut,
    SmsLog,
    SmsQueue,
    SmsReply,
)
from sms_pipeline.services import privacy
from sms_pipeline.services.accounts.api_keys import ApiKeyError, create_api_key
from tests.factories import make_account
from tests.helpers import run_cli

NUMBER = "+380931234567"
BODIES = {"clinicA": "clinic A secret appointment", "clinicB": "clinic B secret appointment"}
ROUTES = ("export", "erase")
# kind -> (account the key is bound to, what it may touch: None = 403, "*" = every account)
KINDS: dict[str, tuple[str | None, str | None]] = {
    "sender of A": ("clinicA", None),
    "sender of any account": (None, None),
    "admin of A": ("clinicA", "clinicA"),
    "admin of B": ("clinicB", "clinicB"),
    "admin bound to no account": (None, None),
    "platform admin": (None, "*"),
}


@pytest.fixture
def api(db: Any, redis_url: str, no_dispatch: list[Any]) -> Iterator[TestClient]:
    with TestClient(create_app()) as test_client:
        yield test_client


def _seed() -> dict[str, int]:
    ids: dict[str, int] = {}
    for name in BODIES:
        ids[name] = make_account(name)
    for name, body in BODIES.items():
        message_id = enqueue_sms(NUMBER, body, account=name)
        with session_scope() as session:
            session.add(
                SmsReply(account_id=ids[name], message_id=message_id, phone_number=NUMBER[1:],
                         received_data="thanks")
            )  # fmt: skip
            session.add(SmsQueue(account_id=ids[name], num_to=NUMBER, data1=f"{name} queued"))
    with session_scope() as session:
        session.add(OptOut(phone_number=NUMBER, source="reply", keyword="STOP"))
    return ids


def _key(kind: str) -> str:
    account, _ = KINDS[kind]
    name = f"k-{uuid.uuid4().hex[:8]}"
    with session_scope() as session:
        if kind == "platform admin":
            return create_api_key(session, name, platform_admin=True).key
        if kind == "admin bound to no account":
            # What `--admin` without `--account` made before platform admins were a kind.
            key = create_api_key(session, name, "clinicA", admin=True)
            session.execute(update(ApiKey).where(ApiKey.name == name).values(account_id=None))
            return key.key
        return create_api_key(session, name, account, admin=kind.startswith("admin")).key


def _rows(account_id: int) -> dict[str, int]:
    with session_scope() as session:
        return {
            model.__tablename__: session.scalar(
                select(func.count()).select_from(model).where(model.account_id == account_id)
            )
            or 0
            for model in (SmsLog, SmsReply, SmsQueue)
        }


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_key_kind_exports_and_erases_exactly_its_scope(
    api: TestClient, kind: str, route: str
) -> None:
    accounts = _seed()
    headers = {"Authorization": f"Bearer {_key(kind)}"}
    answer = api.post(f"/v1/subjects/{route}", json={"phone_number": NUMBER}, headers=headers)
    _, scope = KINDS[kind]
    with session_scope() as session:
        audit = session.scalars(select(AuditEvent)).all()
        opted_out = session.get(OptOut, NUMBER) is not None

    if scope is None:
        assert answer.status_code == 403, answer.text
        assert "clinic" not in answer.text
        assert audit == []
        for account_id in accounts.values():  # nothing touched
            assert _rows(account_id) == {"sms_log": 1, "sms_replies": 1, "sms_queue": 1}
        assert opted_out
        return

    assert answer.status_code == 200, answer.text
    inside = set(BODIES) if scope == "*" else {scope}
    outside = set(BODIES) - inside
    assert [(a.action, a.account) for a in audit] == [(route, None if scope == "*" else scope)]
    assert audit[0].subject_hash == privacy.subject_hash(NUMBER)
    if route == "export":
        tables = answer.json()["tables"]
        assert {m["body"] for m in tables["sms_log"]} == {BODIES[n] for n in inside}
        assert {r["account_id"] for r in tables["sms_replies"]} == {accounts[n] for n in inside}
        assert {q["data1"] for q in tables["sms_queue"]} == {f"{n} queued" for n in inside}
        for name in outside:
            assert BODIES[name] not in answer.text
        assert len(tables["opt_outs"]) == (1 if scope == "*" else 0)  # the platform's list
    else:
        removed = answer.json()["removed"]
        assert (removed["sms_log"], removed["sms_replies"], removed["sms_queue"]) == (
            len(inside),
            len(inside),
            len(inside),
        )
        for name in inside:
            assert _rows(accounts[name]) == {"sms_log": 0, "sms_replies": 0, "sms_queue": 0}
        for name in outside:
            assert _rows(accounts[name]) == {"sms_log": 1, "sms_replies": 1, "sms_queue": 1}
        assert opted_out == (scope != "*")  # an account admin leaves the opt-out alone


def test_the_old_path_routes_with_the_number_in_the_url_are_gone(api: TestClient) -> None:
    _seed()
    headers = {"Authorization": f"Bearer {_key('platform admin')}"}
    for method in ("GET", "DELETE"):
        answer = api.request(method, f"/v1/subjects/{NUMBER}", headers=headers)
        assert answer.status_code in {404, 405}, answer.text
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(AuditEvent)) == 0


def test_an_admin_key_needs_an_account_and_a_platform_admin_has_none(db: Any) -> None:
    with session_scope() as session:
        session.add(Account(name="clinicA", username="demo", postpaid=True, credits=0))
    with session_scope() as session, pytest.raises(ApiKeyError, match="--platform-admin"):
        create_api_key(session, "unbound", admin=True)
    with session_scope() as session, pytest.raises(ApiKeyError):
        create_api_key(session, "both", "clinicA", platform_admin=True)


def test_the_cli_creates_and_lists_the_three_kinds(db: Any) -> None:
    with session_scope() as session:
        session.add(Account(name="clinicA", username="demo", postpaid=True, credits=0))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(["api-key", *args])

    assert cli("create", "a-admin", "--account", "clinicA", "--admin").returncode == 0
    made = cli("create", "dpo", "--platform-admin")
    assert made.returncode == 0, made.stderr
    assert "every account" in made.stdout
    refused = cli("create", "loose", "--admin")
    assert refused.returncode == 2 and "--platform-admin" in refused.stderr
    both = cli("create", "x", "--admin", "--platform-admin")
    assert both.returncode == 2  # argparse: not allowed with each other
    listed = cli("list").stdout
    assert "platform-admin" in listed and " admin " in listed
