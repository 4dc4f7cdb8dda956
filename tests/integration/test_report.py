"""`sms-pipeline report` against a hand-computed fixture, on PostgreSQL and on SQLite."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from sms_pipeline.db.engine import make_engine
from sms_pipeline.db.models import Account, SmsLog
from sms_pipeline.metrics import catalogue as c
from sms_pipeline.metrics.plot import render_png
from sms_pipeline.metrics.report import (
    ChannelReport,
    bucket_seconds_for,
    build_report,
)
from sms_pipeline.metrics.report_text import render_text
from sms_pipeline.metrics.store import MetricsStore

UNTIL = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)
H = dt.timedelta(hours=1)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _row(account_id: int, inserted: dt.datetime, **values: Any) -> SmsLog:
    message_id = uuid.uuid4()
    fields: dict[str, Any] = {
        "id": message_id,
        "phone_number": "+380931234567",
        "type": "verification",
        "body": "code",
        "account_id": account_id,
        "inserted_at": inserted,
        "updated_at": inserted,
        "due_at": inserted,
        "send_status": "QUEUED",
        "uniq_key": message_id.hex,
    }
    fields.update(values)
    return SmsLog(**fields)


def _delivered(
    account_id: int, inserted: dt.datetime, seconds: float, type_: str = "verification"
) -> SmsLog:
    submitted = inserted + dt.timedelta(seconds=2)
    return _row(
        account_id,
        inserted,
        type=type_,
        send_status="SUBMITTED",
        gateway_status="Delivered",
        submitted_at=submitted,
        status_changed_at=submitted + dt.timedelta(seconds=seconds),
    )


def _fill(engine: Engine) -> None:
    t10 = UNTIL - 2 * H + dt.timedelta(minutes=5)  # 10:05
    t11 = UNTIL - H + dt.timedelta(minutes=30)  # 11:30
    with Session(engine) as session, session.begin():
        account = Account(name="default", username="u")
        session.add(account)
        session.flush()
        a = account.id
        session.add_all(
            [
                # verification: 4 Delivered (10, 20, 30, 40 s), 1 Terminated,
                # 1 RETRYCOUNT EXCEEDED, 1 still waiting
                _delivered(a, t10, 10),
                _delivered(a, t10, 20),
                _delivered(a, t11, 30),
                _delivered(a, t11, 40),
                _row(
                    a,
                    t10,
                    send_status="SUBMITTED",
                    gateway_status="Terminated",
                    submitted_at=t10,
                    status_changed_at=t10 + dt.timedelta(minutes=30),
                ),
                _row(a, t11, send_status="RETRYCOUNT EXCEEDED", attempts=3),
                _row(a, t11),
                # text: 2 Delivered (5 s, 100 s), 1 opted out, 1 moving
                _delivered(a, t10, 5, "text"),
                _delivered(a, t11, 100, "text"),
                _row(a, t11, type="text", send_status="OPTED OUT"),
                _row(a, t11, type="text", send_status="SUBMITTED", gateway_status="Enroute"),
                # outside the window: ignored
                _delivered(a, UNTIL - 25 * H, 1),
                _delivered(a, UNTIL + dt.timedelta(minutes=1), 1),
            ]
        )
    store = MetricsStore(engine)
    store.inc(c.GATEWAY_REQUESTS_TOTAL, {"operation": "send", "outcome": "ok"}, 8)
    store.inc(c.GATEWAY_REQUESTS_TOTAL, {"operation": "send", "outcome": "timeout"}, 2)
    store.inc(c.GATEWAY_REQUESTS_TOTAL, {"operation": "status", "outcome": "ok"}, 5)
    store.flush()


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    from sms_pipeline.db import migrate

    engine = make_engine(f"sqlite:///{tmp_path}/report.db")
    migrate.upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture(params=["postgresql", "sqlite"])
def report(request: pytest.FixtureRequest) -> ChannelReport:
    engine: Engine = request.getfixturevalue(
        "db" if request.param == "postgresql" else "sqlite_engine"
    )
    _fill(engine)
    return build_report(engine, since=dt.timedelta(hours=24), until=UNTIL)


def test_per_type_counts_rates_and_latency_match_the_fixture(report: ChannelReport) -> None:
    by_type = {t.type: t for t in report.types}
    assert list(by_type) == ["verification", "text"]
    v = by_type["verification"]
    assert v.by_status == {
        "Delivered": 4,
        "RETRYCOUNT EXCEEDED": 1,
        "Terminated": 1,
        "pending": 1,
    }
    assert (v.total, v.finished, v.delivered) == (7, 6, 4)
    assert v.delivery_rate == pytest.approx(4 / 6)
    assert v.terminated_share == pytest.approx(1 / 6)
    assert v.retrycount_exceeded_share == pytest.approx(1 / 6)
    assert v.latency_count == 4
    assert v.latency_p50 == pytest.approx(25.0)
    assert v.latency_p95 == pytest.approx(38.5)
    assert v.latency_p99 == pytest.approx(39.7)

    t = by_type["text"]
    assert t.by_status == {"Delivered": 2, "OPTED OUT": 1, "moving": 1}
    assert (t.total, t.finished) == (4, 2)  # opted out is not the channel's doing
    assert t.delivery_rate == 1.0
    assert t.terminated_share == 0.0
    assert t.latency_p50 == pytest.approx(52.5)


def test_overall_row_and_latency_distribution(report: ChannelReport) -> None:
    overall = report.overall
    assert (overall.total, overall.finished, overall.delivered) == (11, 8, 6)
    assert overall.delivery_rate == pytest.approx(6 / 8)
    # latencies 5, 10, 20, 30, 40, 100
    assert overall.latency_count == 6
    assert overall.latency_p50 == pytest.approx(25.0)
    assert overall.latency_p95 == pytest.approx(85.0)
    assert overall.latency_p99 == pytest.approx(97.0)
    bins = dict(report.latency_histogram)
    # bins are [previous edge, edge): 5 → [5,10), 10 → [10,20), 20 → [20,30),
    # 30 and 40 → [30,60), 100 → [60,120)
    assert {edge: n for edge, n in bins.items() if n} == {
        10.0: 1,
        20.0: 1,
        30.0: 1,
        60.0: 2,
        120.0: 1,
    }


def test_volume_by_status_over_the_span_of_the_data(report: ChannelReport) -> None:
    # Messages at 10:05 and 11:30 of a 24-hour window: the timeline covers 10:05-11:30 in
    # 5-minute buckets, not 24 hours of which 22 are empty.
    assert report.bucket_seconds == 300
    starts = [start for start, _ in report.timeline]
    t10, t11 = UNTIL - 2 * H + dt.timedelta(minutes=5), UNTIL - H + dt.timedelta(minutes=30)
    assert (starts[0], starts[-1]) == (t10, t11)
    assert len(starts) == 18
    buckets = dict(report.timeline)
    assert buckets[t10] == {"Delivered": 3, "Terminated": 1}
    assert buckets[t11] == {
        "Delivered": 3,
        "OPTED OUT": 1,
        "RETRYCOUNT EXCEEDED": 1,
        "moving": 1,
        "pending": 1,
    }
    assert buckets[t10 + dt.timedelta(minutes=5)] == {}


def test_gateway_error_rates_from_the_stored_counters(report: ChannelReport) -> None:
    gateway = {g.operation: g for g in report.gateway}
    assert gateway["send"].requests == 10
    assert gateway["send"].by_outcome == {"ok": 8, "timeout": 2}
    assert gateway["send"].error_rate == pytest.approx(0.2)
    assert gateway["status"].error_rate == 0.0


def test_renders_as_text_json_and_png(report: ChannelReport, tmp_path: Path) -> None:
    text = render_text(report)
    assert "verification" in text and "66.7%" in text and "25.0s" in text
    data = json.loads(report.to_json())
    assert data["overall"]["delivered"] == 6
    assert data["types"][0]["type"] == "verification"
    png = render_png(report, tmp_path / "report.png")
    content = png.read_bytes()
    assert content.startswith(PNG_MAGIC) and len(content) > 5000


def test_report_command_prints_json_and_writes_the_plot(
    db: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sms_pipeline.cli import main

    with Session(db) as session, session.begin():
        account = Account(name="default", username="u")
        session.add(account)
        session.flush()
        now = dt.datetime.now(dt.UTC)
        session.add(_delivered(account.id, now - dt.timedelta(minutes=5), 3))
    plot = tmp_path / "out.png"
    assert main(["report", "--since", "1h", "--format", "json", "--plot", str(plot)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["overall"]["delivered"] == 1
    assert plot.read_bytes().startswith(PNG_MAGIC)


@pytest.mark.parametrize(
    ("window", "bucket"),
    [
        (dt.timedelta(seconds=30), 1),
        (dt.timedelta(minutes=10), 10),
        (dt.timedelta(hours=1), 60),
        (dt.timedelta(hours=24), 3600),
        (dt.timedelta(days=7), 6 * 3600),
        (dt.timedelta(days=30), 86400),
    ],
)
def test_chart_bucket_follows_the_window(window: dt.timedelta, bucket: int) -> None:
    assert bucket_seconds_for(window) == bucket


def test_text_report_fits_80_columns_and_names_what_percentiles_measure(
    report: ChannelReport,
) -> None:
    text = render_text(report)
    assert max(len(line) for line in text.splitlines()) <= 80, text
    assert "Time from submission to Delivered" in text
    assert "median" in text and "95th pct" in text and "99th pct" in text


def _history(engine: Engine, start: dt.datetime, span: dt.timedelta, count: int) -> None:
    """`count` messages spread over `span`: mostly delivered, a mix of failures."""
    import random

    rng = random.Random(5)
    outcomes = [
        ({"send_status": "SUBMITTED", "gateway_status": "Delivered"}, 85),
        ({"send_status": "SUBMITTED", "gateway_status": "Terminated"}, 3),
        ({"send_status": "RETRYCOUNT EXCEEDED"}, 3),
        ({"send_status": "REJECTED", "gateway_status": "Rejected"}, 2),
        ({"send_status": "SUBMITTED", "gateway_status": "Undeliverable"}, 3),
        ({"send_status": "number invalid"}, 2),
        ({"send_status": "SUBMITTED", "gateway_status": "Enroute"}, 2),
    ]
    with Session(engine) as session, session.begin():
        account = Account(name="default", username="u")
        session.add(account)
        session.flush()
        rows = []
        for _ in range(count):
            inserted = start + span * rng.random()
            values, _w = rng.choices(outcomes, weights=[w for _, w in outcomes])[0]
            extra: dict[str, Any] = dict(values)
            if extra.get("gateway_status"):
                submitted = inserted + dt.timedelta(seconds=rng.uniform(0.1, 2))
                extra["submitted_at"] = submitted
                extra["status_changed_at"] = submitted + dt.timedelta(seconds=rng.expovariate(0.2))
            rows.append(
                _row(
                    account.id, inserted, type=rng.choice(["verification", "text", "2FA"]), **extra
                )
            )
        session.add_all(rows)


@pytest.mark.parametrize(
    ("name", "span", "count"),
    [
        ("30-second-run", dt.timedelta(seconds=30), 200),
        ("30-day-history", dt.timedelta(days=30), 3000),
    ],
)
def test_png_of_a_short_run_and_of_a_month(
    sqlite_engine: Engine, tmp_path: Path, name: str, span: dt.timedelta, count: int
) -> None:
    # Rendered into tmp_path (never into the repository); `pytest --basetemp DIR` keeps them
    # where a person can look at them.
    start = UNTIL - span
    _history(sqlite_engine, start, span, count)
    report = build_report(sqlite_engine, since=span, until=UNTIL)
    assert len(report.timeline) <= 60
    assert sum(sum(c.values()) for _, c in report.timeline) == count
    png = render_png(report, tmp_path / f"{name}.png")
    assert png.read_bytes().startswith(PNG_MAGIC)


def test_png_of_a_short_run_in_a_long_window_has_a_headline_a_fitted_axis_and_headroom(
    sqlite_engine: Engine,
) -> None:
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    from sms_pipeline.metrics.plot import build_figure

    # A 45-second run an hour before the end of the default 24-hour window.
    start = UNTIL - H
    _history(sqlite_engine, start, dt.timedelta(seconds=45), 200)
    report = build_report(sqlite_engine, since=dt.timedelta(hours=24), until=UNTIL)
    assert report.bucket_seconds == 1
    fig = build_figure(report)
    try:
        title = fig._suptitle.get_text()
        overall = report.overall
        assert overall.delivery_rate is not None
        assert f"{overall.delivery_rate * 100:.1f} % delivered" in title
        assert f"{overall.total} messages enqueued in 24 h" in title
        volume, failures, latency = fig.axes[:3]
        left, right = (mdates.num2date(x) for x in volume.get_xlim())  # type: ignore[no-untyped-call]
        assert start <= left and right <= start + dt.timedelta(seconds=47), (left, right)
        for axes in (volume, failures, latency):
            highest = max((p.get_y() + p.get_height() for p in axes.patches), default=0)
            assert highest > 0
            assert axes.get_ylim()[1] >= highest * 1.1, axes.get_title()
    finally:
        plt.close(fig)


def test_text_footnotes_explain_only_what_is_shown(sqlite_engine: Engine) -> None:
    with Session(sqlite_engine) as session, session.begin():
        account = Account(name="default", username="u")
        session.add(account)
        session.flush()
        session.add(_delivered(account.id, UNTIL - H, 3))  # one verification, delivered
    text = render_text(build_report(sqlite_engine, since=dt.timedelta(hours=24), until=UNTIL))
    assert "medication" not in text and "pending:" not in text and "moving:" not in text
    with Session(sqlite_engine) as session, session.begin():
        a = session.scalars(select(Account.id)).one()
        session.add(_row(a, UNTIL - H, type="medication_request"))  # waiting
    text = render_text(build_report(sqlite_engine, since=dt.timedelta(hours=24), until=UNTIL))
    text = " ".join(text.split())  # captions wrap at 80 columns
    assert "medication: medication_request." in text
    assert "pending: not yet with the gateway" in text and "moving:" not in text
