"""Two gateways by weight and one of them failing mid-run (issue 30): a real worker on
PostgreSQL and Redis, two loopback simulators, every send request the worker makes recorded.

- **stopped** (connection refused), then started again on its port with what it had
  accepted: 0 lost, 0 accepted by both, no send request to it later than 10 s after it died,
  traffic back within 60 s of its return, every switch in gateway_events.
- **503** to everything (sends and probes alike), then healthy again: the same.
- **timeout** (answers after the read timeout, then accepts): ambiguous, so those messages
  stay on it and are retried there with their uniq_key; it is never taken out of rotation.
Status checks reach the gateway that accepted each message (both simulators answer only
for their own messages).
"""

from __future__ import annotations

import dataclasses
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select, text

from sms_pipeline import enqueue_many
from sms_pipeline.db import get_engine, session_scope
from sms_pipeline.db.models import GatewayEvent, SmsLog
from sms_pipeline.gateway import IP2SMSClient
from sms_pipeline.services import gateways as registry
from sms_pipeline.services.gateways import health as gateway_health
from sms_pipeline.simulator import SimulatorConfig
from sms_pipeline.simulator.rules import Action, Rule, RuleTable
from sms_pipeline.simulator.runner import SimulatorServer
from tests.faults.conftest import record_figure

OUTAGE_AT = 5.0  # seconds into the run
OUTAGE_FOR = 8.0


class Requests:
    """Every send request the worker makes: (monotonic time, send URL, messages)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: list[tuple[float, str, int]] = []

    def after(self, url: str, since: float, until: float = float("inf")) -> int:
        with self.lock:
            return sum(n for t, u, n in self.seen if u == url and since < t < until)


@pytest.fixture
def requests_seen(monkeypatch: pytest.MonkeyPatch) -> Requests:
    seen = Requests()
    original = IP2SMSClient.start_send

    def start_send(self: IP2SMSClient, batch: Any) -> Any:
        with seen.lock:
            seen.seen.append((time.monotonic(), self.send_url, len(batch)))
        return original(self, batch)

    monkeypatch.setattr(IP2SMSClient, "start_send", start_send)
    return seen


def sim_config(login: str, password: str) -> SimulatorConfig:
    return SimulatorConfig(
        host="127.0.0.1", port=0, login=login, password=password, rules=(),
        enroute_after=0.1, deliver_after=0.2, shutdown_timeout=0.2,
    )  # fmt: skip


@pytest.fixture
def live_worker(db: Any, redis_url: str, settings_env: Any) -> Iterator[Any]:
    from celery.contrib.testing.worker import start_worker

    from sms_pipeline.broker.app import app

    gateway_health.HEALTH.reset()
    registry.forget()
    with start_worker(
        app, pool="threads", concurrency=8, perform_ping_check=False, loglevel="WARNING",
        shutdown_timeout=30,
    ) as controller:  # fmt: skip
        yield controller


def settle(ids: list[Any], delivered: bool, timeout: float = 60.0) -> dict[Any, Any]:
    from sms_pipeline.services import status

    deadline = time.monotonic() + timeout
    while True:
        status.sweep_statuses(inline=True)
        with session_scope() as session:
            rows = {r.id: r for r in session.scalars(select(SmsLog).where(SmsLog.id.in_(ids)))}
        waiting = [
            r
            for r in rows.values()
            if r.send_status in ("QUEUED", "SENDING")
            or (delivered and r.gateway_status != "Delivered")
        ]
        if not waiting or time.monotonic() > deadline:
            return rows
        time.sleep(0.5)


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["stopped", "503", "timeout"])
def test_failover_loses_nothing_and_sends_nothing_twice(
    fault: str, settings_env: Any, requests_seen: Requests, db: Any, redis_url: str
) -> None:
    a = SimulatorServer(sim_config("gw-a", "pa"))
    b = SimulatorServer(sim_config("gw-b", "pb"))
    a.start()
    b.start()
    port_a = int(a.base_url.rsplit(":", 1)[1])
    settings_env(
        GW_A_PW="pa", GW_B_PW="pb", IP2SMS_LOGIN="nobody", IP2SMS_PASSWORD="nothing",
        IP2SMS_CONNECT_TIMEOUT="1", IP2SMS_READ_TIMEOUT="1", IP2SMS_TOTAL_TIMEOUT="1.5",
        SMS_GATEWAY_PROBE_SECONDS="2", SMS_GATEWAY_RAMP_SECONDS="5",
        SMS_STATUS_FIRST_CHECK_SECONDS="1", SMS_STATUS_CHECK_BACKOFF="1,2",
        SMS_RETRY_BACKOFF_SECONDS="1", SMS_MAX_ATTEMPTS="3",
    )  # fmt: skip
    with get_engine().begin() as conn:
        for name, server, login, ref in (("a", a, "gw-a", "GW_A_PW"), ("b", b, "gw-b", "GW_B_PW")):
            conn.execute(
                text(
                    "INSERT INTO verification.gateways (name, send_url, status_url, login, "
                    "password_ref, weight) VALUES (:n, :s, :t, :l, :p, 1)"
                ),
                {"n": name, "s": server.send_url, "t": server.status_url, "l": login, "p": ref},
            )
    send_url_a = a.send_url
    total = 2000 if fault == "stopped" else 600
    chunk = 40 if fault == "stopped" else 12
    from celery.contrib.testing.worker import start_worker

    from sms_pipeline.broker.app import app

    gateway_health.HEALTH.reset()
    registry.forget()
    ids: list[Any] = []
    died = returned = 0.0
    died_wall = returned_wall = 0.0
    try:
        with start_worker(
            app, pool="threads", concurrency=8, perform_ping_check=False, loglevel="WARNING",
            shutdown_timeout=30,
        ):  # fmt: skip
            began = time.monotonic()
            n = 0
            while n < total:
                now = time.monotonic() - began
                if not died and now >= OUTAGE_AT:
                    died, died_wall = time.monotonic(), time.time()
                    if fault == "stopped":
                        a.stop()
                    elif fault == "503":
                        a.state.fail_all = 503
                    else:
                        a.state.rules = RuleTable(
                            Rule(str(d), "slow", Action.SLOW, delay=2.0) for d in range(10)
                        )
                if died and not returned and now >= OUTAGE_AT + OUTAGE_FOR:
                    if fault == "stopped":
                        config = dataclasses.replace(a.config, port=port_a)
                        a = SimulatorServer(config, state=a.state)
                        a.start()
                    elif fault == "503":
                        a.state.fail_all = None
                    else:
                        a.state.rules = RuleTable(())
                    returned, returned_wall = time.monotonic(), time.time()
                ids += enqueue_many(
                    [
                        {"phone_number": f"+38093{n + i:07d}", "body": f"{fault} {n + i}"}
                        for i in range(chunk)
                    ]
                )
                n += chunk
                time.sleep(0.5)  # traffic spread over the fault and the return
            rows = settle(ids, delivered=fault != "timeout")
        with session_scope() as session:
            events = list(
                session.scalars(select(GatewayEvent).order_by(GatewayEvent.at, GatewayEvent.id))
            )
    finally:
        a.stop()
        b.stop()
    keys = {r.uniq_key: r for r in rows.values()}
    at_a, at_b = set(a.state.accepted_keys), set(b.state.accepted_keys)
    statuses: dict[str, int] = {}
    for r in rows.values():
        statuses[r.send_status] = statuses.get(r.send_status, 0) + 1
    # 0 lost, 0 accepted by both.
    errors = sorted({str(r.last_error) for r in rows.values() if r.send_status != "SUBMITTED"})
    assert statuses == {"SUBMITTED": total}, (statuses, errors[:5])
    assert not at_a & at_b
    assert set(keys) <= at_a | at_b
    for key, r in keys.items():
        assert r.gateway == ("a" if key in at_a else "b"), (r.gateway, r.last_error)
    switches = [(e.gateway, e.from_state, e.to_state) for e in events]
    late = requests_seen.after(send_url_a, died + 10.0, returned)
    back_after = None
    if fault != "timeout":
        # Status checks reached the gateway that accepted each message.
        assert all(r.gateway_status == "Delivered" for r in rows.values())
        # (asked at the other one, a message is "not found" there: never Delivered)
        assert a.state.stats["status_requests"] > 0 and b.state.stats["status_requests"] > 0
        assert switches[:3] == [("a", "up", "down"), ("a", "down", "probing"),
                                ("a", "probing", "up")], switches  # fmt: skip
        assert events[0].at.timestamp() - died_wall <= 10.0
        assert events[1].at.timestamp() >= returned_wall  # no probe succeeded while it was out
        assert late == 0, "send requests to the dead gateway after 10 s"
        first_back = min(
            m.created_wall for m in a.state.messages.values() if m.created_wall > returned_wall
        )
        back_after = round(first_back - returned_wall, 2)
        assert back_after <= 60.0
    else:
        # Timeouts are ambiguous: never a switch; the messages that met one stayed on a.
        assert switches == []
        retried = [r for r in rows.values() if r.attempts > 1]
        assert retried and all(r.gateway == "a" for r in retried)
    if fault == "stopped":
        # What an operator sees: the switch, why, and the recent figures from every worker.
        import subprocess

        from sms_pipeline.supervise import CLI

        listed = subprocess.run(
            [*CLI, "gateway", "list", "--figures"], capture_output=True, text=True, timeout=60,
            check=False,
        )  # fmt: skip
        assert listed.returncode == 0, listed.stderr
        line_a = next(x for x in listed.stdout.splitlines() if x.startswith("a: "))
        assert line_a.startswith("a: up, weight 1"), line_a
        assert "probing -> up: probing ended without refusals" in line_a
        assert re.search(r"\d+ requests, error rate \d+\.\d %, mean latency \d+ ms", line_a)
        assert "error rate 0.0 %" not in line_a, line_a  # its refusals were counted
        report = subprocess.run(
            [*CLI, "report", "--since", "1h"], capture_output=True, text=True, timeout=60,
            check=False,
        )  # fmt: skip
        assert report.returncode == 0, report.stderr
        assert "Gateway switches" in report.stdout
        assert re.search(r"a\s+up → down\s+definite refusals over the threshold", report.stdout)
        assert re.search(r"a\s+probing → up", report.stdout), report.stdout
        assert re.search(r"Messages by gateway: a \d+, b \d+", report.stdout)
    record_figure(
        f"gateway_failover_{fault}",
        messages=total,
        accepted_a=len(at_a & set(keys)),
        accepted_b=len(at_b & set(keys)),
        accepted_by_both=len(at_a & at_b),
        lost=total - statuses.get("SUBMITTED", 0),
        down_after_s=round(events[0].at.timestamp() - died_wall, 2) if events else None,
        requests_to_dead_after_10s=late,
        traffic_back_after_s=back_after,
        retried_same_gateway=sum(1 for r in rows.values() if r.attempts > 1),
        switches=len(switches),
    )
