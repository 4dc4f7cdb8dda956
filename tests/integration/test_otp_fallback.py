"""OTP fallback (issue 30, item 5): a verification/2FA code not Delivered within
SMS_OTP_FALLBACK_SECONDS while still valid is sent once more, the same code, through another
gateway; recorded on both rows and counted; never for other types, never twice. Two
loopback simulators that accept only their own logins; the sweep's clock passed in."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select, text

from sms_pipeline.db import get_engine, session_scope
from sms_pipeline.db.models import SendStatus, SmsLog, utcnow
from sms_pipeline.metrics import catalogue as c
from sms_pipeline.metrics.store import get_store
from sms_pipeline.services import gateways as registry
from sms_pipeline.services.accounts import get_or_create_default_account
from sms_pipeline.services.gateways.fallback import sweep_fallbacks
from sms_pipeline.simulator import SimulatorConfig
from sms_pipeline.simulator.runner import SimulatorServer
from tests.factories import message
from tests.helpers import attempt_send

FALLBACK = 60.0


def fallbacks(message_type: str, gateway: str) -> float:
    get_store().flush()
    return get_store().value(c.OTP_FALLBACKS_TOTAL, {"type": message_type, "gateway": gateway})


def test_a_late_code_is_sent_once_more_through_the_other_gateway(
    db: Any, redis_url: str, settings_env: Any
) -> None:
    configs = {
        name: SimulatorConfig(port=0, login=f"gw-{name}", password=f"p{name}", rules=(),
                              enroute_after=0.1, deliver_after=0.2)
        for name in ("a", "b")
    }  # fmt: skip
    with SimulatorServer(configs["a"]) as sim_a, SimulatorServer(configs["b"]) as sim_b:
        settings_env(
            GW_A_PW="pa", GW_B_PW="pb", IP2SMS_LOGIN="nobody", IP2SMS_PASSWORD="no",
            SMS_OTP_FALLBACK_SECONDS=str(FALLBACK),
        )  # fmt: skip
        registry.forget()
        with get_engine().begin() as conn:
            for name, sim in (("a", sim_a), ("b", sim_b)):
                conn.execute(
                    text(
                        "INSERT INTO verification.gateways (name, send_url, status_url, login, "
                        "password_ref, state) VALUES (:n, :s, :t, :l, :p, :state)"
                    ),
                    {"n": name, "s": sim.send_url, "t": sim.status_url, "l": f"gw-{name}",
                     "p": f"GW_{name.upper()}_PW", "state": "down" if name == "b" else "up"},
                )  # fmt: skip
        now = utcnow()
        valid = now + dt.timedelta(minutes=5)

        def submitted(ago: float, message_type: str, **values: Any) -> dict[str, Any]:
            return {
                "type": message_type, "body": f"Your code is {int(ago):06d}",
                "send_status": SendStatus.SUBMITTED.value, "gateway": "a",
                "gateway_id": "1", "submitted_at": now - dt.timedelta(seconds=ago),
                "gateway_status": "Enroute", "expires_at": valid, "priority": 1, **values,
            }  # fmt: skip

        rows = {
            "late code": submitted(90, "verification"),
            "late 2FA, not asked yet": submitted(91, "2FA", gateway_status=None),
            "late text": submitted(92, "text", priority=0),
            "code in time so far": submitted(30, "verification"),
            "delivered code": submitted(
                93, "verification", gateway_status="Delivered", final_at=now
            ),
            "expired code": submitted(94, "verification", expires_at=now - dt.timedelta(1)),
            "a copy itself": submitted(95, "verification", fallback_of=None),
        }
        ids = {}
        with session_scope() as session:
            account_id = get_or_create_default_account(session).id
            for name, values in rows.items():
                row = message(account_id, now, **values)
                if name == "a copy itself":
                    row.fallback_of = row.id  # (any id: it is a copy, never copied again)
                session.add(row)
                ids[name] = row.id
        before = (fallbacks("verification", "b"), fallbacks("2FA", "b"))

        # b out of rotation: nowhere else to go yet, nothing recorded.
        first = sweep_fallbacks(now=now)
        assert (first.copied, first.no_other_gateway) == (0, 2)
        with get_engine().begin() as conn:
            conn.execute(text("UPDATE verification.gateways SET state = 'up' WHERE name = 'b'"))
        registry.forget()

        second = sweep_fallbacks(now=now)
        again = sweep_fallbacks(now=now)

        assert (second.copied, second.by_gateway) == (2, {"b": 2})
        assert again.copied == 0  # once per code
        with session_scope() as session:
            by_id = {r.id: r for r in session.scalars(select(SmsLog))}
            originals = {name: by_id[i] for name, i in ids.items()}
            copies = [r for r in by_id.values() if r.fallback_of in set(ids.values())]
            copies = [r for r in copies if r.id != ids["a copy itself"]]
            session.expunge_all()
        late = {"late code", "late 2FA, not asked yet"}
        assert {n for n, r in originals.items() if r.fallback_id is not None} == late
        assert len(copies) == 2
        for copy in copies:
            assert copy.fallback_of is not None
            original = by_id[copy.fallback_of]
            assert original.fallback_id == copy.id
            # The same code, bound to the other gateway, waiting to be sent, still as valid.
            assert (copy.body, copy.type, copy.phone_number) == (
                original.body, original.type, original.phone_number,
            )  # fmt: skip
            assert (copy.gateway, copy.send_status) == ("b", "QUEUED")
            assert copy.expires_at == original.expires_at and copy.callback_url is None
        assert (fallbacks("verification", "b"), fallbacks("2FA", "b")) == (
            before[0] + 1, before[1] + 1,
        )  # fmt: skip

        # Sent by the ordinary pipeline: through b, with b's login; a never sees it.
        for copy in copies:
            assert attempt_send(copy.id).outcome == "submitted"
        with session_scope() as session:
            sent = list(
                session.scalars(select(SmsLog).where(SmsLog.id.in_([c.id for c in copies])))
            )
        assert {(r.gateway, r.send_status) for r in sent} == {("b", "SUBMITTED")}
        keys = {r.uniq_key for r in sent}
        assert keys <= set(sim_b.state.accepted_keys)
        assert not keys & set(sim_a.state.accepted_keys)
        assert sim_b.state.stats["auth_failures"] == 0
        # The channel report counts the copies of its window (the rows above were enqueued
        # ten minutes before it, "a copy itself" among them).
        from sms_pipeline.metrics.report import build_report
        from sms_pipeline.metrics.report_text import render_text

        report = build_report(
            get_engine(), since=now - dt.timedelta(minutes=1), until=utcnow() + dt.timedelta(1)
        )
        assert report.otp_fallbacks == {"copies": 2, "delivered": 0}
        assert "OTP fallbacks: 2 codes sent once more via another gateway" in render_text(report)
    registry.forget()


def test_off_by_default(db: Any, settings_env: Any) -> None:
    settings_env(SMS_OTP_FALLBACK_SECONDS="0")
    assert sweep_fallbacks().copied == 0


def test_the_status_sweep_task_runs_it(db: Any, redis_url: str, settings_env: Any) -> None:
    """Beat's status sweep is what runs the fallback (the task body, called as beat would)."""
    from sms_pipeline.tasks.status import status_sweep

    settings_env(SMS_OTP_FALLBACK_SECONDS=str(FALLBACK), GW_PW="x")
    registry.forget()
    with get_engine().begin() as conn:
        for name in ("a", "b"):
            conn.execute(
                text(
                    "INSERT INTO verification.gateways (name, send_url, password_ref) "
                    "VALUES (:n, :s, 'GW_PW')"
                ),
                {"n": name, "s": f"http://{name}.invalid/ip2sms/"},
            )
    now = utcnow()
    with session_scope() as session:
        account_id = get_or_create_default_account(session).id
        late = message(
            account_id, now, type="verification", send_status=SendStatus.SUBMITTED.value,
            gateway="a", gateway_id="1", gateway_status="Enroute",
            submitted_at=now - dt.timedelta(seconds=FALLBACK + 5),
            expires_at=now + dt.timedelta(minutes=5), next_check_at=now + dt.timedelta(hours=1),
        )  # fmt: skip
        session.add(late)

    assert status_sweep()["fallbacks"] == 1
    with session_scope() as session:
        copy = session.scalars(select(SmsLog).where(SmsLog.fallback_of.is_not(None))).one()
        assert copy.gateway == "b"
    registry.forget()
