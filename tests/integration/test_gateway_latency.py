"""Latency-based demotion (issue 30): a gateway whose recent messages are too often not
Delivered within SMS_GATEWAY_SLOW_SECONDS goes out of rotation like a refusing one, judged
from sms_log's recorded times with a clock passed in, and comes back the gradual way."""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

import pytest
from sqlalchemy import select, text, update

from sms_pipeline.db import get_engine, session_scope
from sms_pipeline.db.models import Gateway, GatewayEvent, SendStatus, utcnow
from sms_pipeline.metrics import catalogue as c
from sms_pipeline.metrics.store import get_store
from sms_pipeline.services import gateways as registry
from sms_pipeline.services.accounts import get_or_create_default_account
from sms_pipeline.services.gateways import health
from sms_pipeline.services.gateways.latency import judge_latency
from sms_pipeline.settings import get_settings
from tests.factories import message

SLOW = 60.0
NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)  # the judge's clock


@pytest.fixture
def gateways(db: Any, settings_env: Any) -> Any:
    settings_env(
        SMS_GATEWAY_SLOW_SECONDS=str(SLOW), SMS_GATEWAY_SLOW_SHARE="0.2",
        SMS_GATEWAY_SLOW_MESSAGES="10", SMS_GATEWAY_PROBE_SECONDS="1",
        SMS_GATEWAY_RAMP_SECONDS="5",
    )  # fmt: skip
    registry.forget()
    health.HEALTH.reset()
    with get_engine().begin() as conn:
        for name, up_since in (("fast", NOW - dt.timedelta(days=1)),
                               ("slow", NOW - dt.timedelta(days=1)),
                               ("back", NOW - dt.timedelta(seconds=200))):  # fmt: skip
            conn.execute(
                text(
                    "INSERT INTO verification.gateways (name, send_url, state_since) "
                    "VALUES (:n, :u, :s)"
                ),
                {"n": name, "u": f"http://{name}.invalid/ip2sms/", "s": up_since},
            )
    yield
    registry.forget()
    health.HEALTH.reset()


def sent(gateway: str, ago: float, status: str | None, *, delivered_after: float | None = None,
         checked_after: float | None = None, final: bool = False) -> Any:  # fmt: skip
    """A message `gateway` accepted `ago` seconds before NOW, as its row records it."""
    submitted = NOW - dt.timedelta(seconds=ago)
    values: dict[str, Any] = {
        "gateway": gateway, "gateway_id": "1", "send_status": SendStatus.SUBMITTED.value,
        "submitted_at": submitted, "gateway_status": status,
    }  # fmt: skip
    if delivered_after is not None:
        values["status_changed_at"] = submitted + dt.timedelta(seconds=delivered_after)
        values["final_at"] = submitted + dt.timedelta(seconds=delivered_after + 2)
    if checked_after is not None:
        values["last_checked_at"] = submitted + dt.timedelta(seconds=checked_after)
    if final and "final_at" not in values:
        values["final_at"] = submitted + dt.timedelta(seconds=SLOW * 2)
    return values


def store(rows: list[dict[str, Any]]) -> None:
    with session_scope() as session:
        account_id = get_or_create_default_account(session).id
        for values in rows:
            session.add(message(account_id, NOW, **values))


def table_now() -> registry.GatewayTable:
    """The gateways table as it is now (read on a connection of its own)."""
    with get_engine().connect() as conn:
        return registry.read_table(conn, get_settings())


def slow_demotions(gateway: str) -> float:
    get_store().flush()
    return get_store().value(c.GATEWAY_SLOW_DEMOTIONS_TOTAL, {"gateway": gateway})


def test_a_slow_gateway_is_taken_out_once_with_its_figures_and_comes_back_gradually(
    gateways: Any, caplog: pytest.LogCaptureFixture
) -> None:
    rows = (
        # slow: 8 Delivered late, 8 in time, 2 moving though asked after S, 2 Undeliverable
        # (not its delay: not judged), 3 moving never asked since S (unknown: not judged),
        # 5 Delivered late but submitted less than S ago (not judged yet).
        [sent("slow", 120, "Delivered", delivered_after=90) for _ in range(8)]
        + [sent("slow", 120, "Delivered", delivered_after=5) for _ in range(8)]
        + [sent("slow", 150, "Enroute", checked_after=70) for _ in range(2)]
        + [sent("slow", 150, "Undeliverable", final=True) for _ in range(2)]
        + [sent("slow", 150, "Enroute", checked_after=10) for _ in range(3)]
        + [sent("slow", 30, "Enroute", checked_after=20) for _ in range(5)]
        # fast: 20 in time and one Terminated: 1/21 slow, under the share.
        + [sent("fast", 100, "Delivered", delivered_after=4) for _ in range(20)]
        + [sent("fast", 100, "Terminated", final=True)]
        # back: up again 200 s ago; its slow messages from before do not count.
        + [sent("back", 230, "Delivered", delivered_after=120) for _ in range(20)]
        # and messages older than 4·S count for nobody.
        + [sent("fast", SLOW * 4 + 30, "Delivered", delivered_after=200) for _ in range(20)]
    )
    store(rows)
    settings = get_settings()
    before = slow_demotions("slow")

    with caplog.at_level(logging.WARNING), get_engine().connect() as conn:
        table = table_now()
        taken = judge_latency(conn, table, settings, now=NOW, due=lambda _name: True)
        # Judged again with the table this process had: another worker's change stands.
        again = judge_latency(conn, table, settings, now=NOW, due=lambda _name: True)

    assert taken == ["slow"] and again == []
    with session_scope() as session:
        states = dict(session.execute(select(Gateway.name, Gateway.state)).all())
        events = list(session.scalars(select(GatewayEvent)))
    assert states == {"fast": "up", "slow": "down", "back": "up"}
    (event,) = events
    assert (event.gateway, event.from_state, event.to_state) == ("slow", "up", "down")
    assert event.reason == "deliveries slower than SMS_GATEWAY_SLOW_SECONDS"
    figures = json.loads(event.figures)
    assert (figures["judged"], figures["slow"], figures["share"]) == (18, 10, 0.556)
    assert figures["slow_s"] == SLOW
    assert slow_demotions("slow") == before + 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith("gateway slow: up -> down ("), warnings

    # Back the usual way, but first probed only S after it went out (a probe cannot tell
    # slowness): not before, then probing, then up at the end of the ramp.
    asked: list[str] = []

    def ask(route: registry.Route) -> None:
        asked.append(route.name)

    def set_since(when: dt.datetime) -> None:
        with session_scope() as session:
            session.execute(update(Gateway).where(Gateway.name == "slow").values(state_since=when))

    with get_engine().connect() as conn:
        health.probe(conn, table_now(), settings, ask)
        assert asked == []
        set_since(utcnow() - dt.timedelta(seconds=SLOW + 1))
        health.HEALTH.reset()
        health.probe(conn, table_now(), settings, ask)
        assert asked == ["slow"]
        set_since(utcnow() - dt.timedelta(seconds=settings.sms_gateway_ramp_seconds + 1))
        health.judge(conn, table_now(), settings)
        # Up again: the slow messages from before it went out no longer count.
        assert judge_latency(conn, table_now(), settings, now=utcnow(), due=lambda _n: True) == []
    with session_scope() as session:
        path = [(e.from_state, e.to_state) for e in session.scalars(
            select(GatewayEvent).where(GatewayEvent.gateway == "slow").order_by(GatewayEvent.id)
        )]  # fmt: skip
    assert path == [("up", "down"), ("down", "probing"), ("probing", "up")]


def test_off_by_default_and_below_the_fewest_messages(gateways: Any, settings_env: Any) -> None:
    store([sent("slow", 120, "Delivered", delivered_after=90) for _ in range(9)])
    settings = get_settings()
    with get_engine().connect() as conn:
        table = table_now()
        # 9 judged, all slow: under SMS_GATEWAY_SLOW_MESSAGES (10).
        assert judge_latency(conn, table, settings, now=NOW, due=lambda _n: True) == []
        settings_env(SMS_GATEWAY_SLOW_SECONDS="0")
        store([sent("slow", 120, "Delivered", delivered_after=90)])
        off = get_settings()
        assert off.sms_gateway_slow_seconds == 0
        assert judge_latency(conn, table, off, now=NOW, due=lambda _n: True) == []


def test_a_send_batch_judges_latency_on_the_workers_path(
    db: Any, redis_url: str, settings_env: Any
) -> None:
    """The wiring: after a real send batch (routing.after_batch on the batch's connection),
    a gateway with a slow history goes out of rotation; the message itself is sent."""
    from sms_pipeline import enqueue_sms
    from sms_pipeline.services.gateways import latency
    from sms_pipeline.simulator import SimulatorConfig
    from sms_pipeline.simulator.runner import SimulatorServer
    from tests.helpers import attempt_send

    config = SimulatorConfig(port=0, login="demo", password="demo", rules=())
    with SimulatorServer(config) as sim_a, SimulatorServer(config) as sim_b:
        settings_env(
            SMS_GATEWAY_SLOW_SECONDS=str(SLOW), SMS_GATEWAY_SLOW_MESSAGES="10",
            IP2SMS_LOGIN="demo", IP2SMS_PASSWORD="demo",
        )  # fmt: skip
        registry.forget()
        latency.DUE.reset()
        now = utcnow()
        with get_engine().begin() as conn:
            for name, sim in (("a", sim_a), ("b", sim_b)):
                conn.execute(
                    text(
                        "INSERT INTO verification.gateways (name, send_url, status_url, "
                        "state_since) VALUES (:n, :s, :t, :since)"
                    ),
                    {"n": name, "s": sim.send_url, "t": sim.status_url,
                     "since": now - dt.timedelta(days=1)},
                )  # fmt: skip
        history = []
        for _ in range(12):
            values = sent("a", 120, "Delivered", delivered_after=90)
            values["submitted_at"] = now - dt.timedelta(seconds=120)
            values["status_changed_at"] = values["submitted_at"] + dt.timedelta(seconds=90)
            values["final_at"] = values["status_changed_at"]
            history.append(values)
        store(history)
        message_id = enqueue_sms("+380931234567", "hello")

        assert attempt_send(message_id).outcome == "submitted"

        with session_scope() as session:
            states = dict(session.execute(select(Gateway.name, Gateway.state)).all())
            reasons = [e.reason for e in session.scalars(select(GatewayEvent))]
        assert states == {"a": "down", "b": "up"}
        assert reasons == ["deliveries slower than SMS_GATEWAY_SLOW_SECONDS"]
    registry.forget()
    latency.DUE.reset()
