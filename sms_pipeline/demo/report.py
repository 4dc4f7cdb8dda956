"""What the demo prints at the end: each scenario's outcome, timings, the channel report.

Counts and timings only, never a number or a body. `summarise` is also the verdict: the
demo's exit code.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import shlex
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table

from sms_pipeline.demo.environment import SIM_DELIVER_AFTER
from sms_pipeline.demo.outage import OutageVerdict
from sms_pipeline.demo.record import Row, RunRecord, outcome_of, scenario_of
from sms_pipeline.demo.scenario import ALL_SCENARIOS, Scenario
from sms_pipeline.settings import Settings


def _seconds(later: dt.datetime | None, earlier: dt.datetime) -> float | None:
    return None if later is None else (later - earlier).total_seconds()


def _p(values: list[float], q: float) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, int(q * len(ordered)))]:.1f} s"


def scenario_table(rows: Sequence[Row], record: RunRecord) -> tuple[Table, list[str]]:
    """One line per scenario: what happened, and whether it is what the rules promise."""
    grouped: dict[str, list[tuple[Scenario, Row]]] = defaultdict(list)
    for row in rows:
        scenario = scenario_of(row, record)
        if scenario is not None:
            grouped[scenario.name].append((scenario, row))
    table = Table(
        title="What happened to each kind of message",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        collapse_padding=True,
        pad_edge=False,
    )
    for column in ("scenario", "what the gateway does", "n", "outcome", "attempts", "ok"):
        table.add_column(column, justify="right" if column in ("n", "attempts") else "left")
    surprises = []
    for scenario in ALL_SCENARIOS:
        members = grouped.get(scenario.name, [])
        if not members:
            continue
        outcomes = Counter(outcome_of(row) for _, row in members)
        attempts = Counter(row.attempts for _, row in members)
        wrong = sum(n for outcome, n in outcomes.items() if outcome != scenario.expected)
        if wrong:
            surprises.append(
                f"{scenario.name}: {wrong} of {len(members)} ended "
                + ", ".join(f"{o} ×{n}" for o, n in outcomes.items() if o != scenario.expected)
                + f" (expected {scenario.expected})"
            )
        table.add_row(
            scenario.name,
            f"[dim]{scenario.story}[/dim]",
            str(len(members)),
            ", ".join(f"{o} ×{n}" if len(outcomes) > 1 else o for o, n in outcomes.most_common()),
            "/".join(str(a) for a in sorted(attempts)),
            "[green]yes[/green]" if not wrong else f"[red]no ({wrong})[/red]",
        )
    refused = sum(record.refused.values())
    if refused:
        table.add_row(
            "invalid number",
            "[dim]InvalidMessage at enqueue[/dim]",
            str(refused),
            "refused, nothing stored",
            "0",
            "[green]yes[/green]",
        )
    return table, surprises


def timing_lines(rows: Sequence[Row]) -> list[str]:
    submitted = [s for r in rows if (s := _seconds(r.submitted_at, r.inserted_at)) is not None]
    delivered = [
        s
        for r in rows
        if r.gateway_status == "Delivered" and (s := _seconds(r.final_at, r.inserted_at))
    ]
    return [
        f"time from enqueue to submission ({len(submitted)} messages): median "
        f"{_p(submitted, 0.5)}, 95th percentile {_p(submitted, 0.95)}, "
        f"slowest {_p(submitted, 1.0)}",
        f"time from enqueue to Delivered ({len(delivered)} messages): median "
        f"{_p(delivered, 0.5)}, 95th percentile {_p(delivered, 0.95)} (the simulator "
        f"delivers after {SIM_DELIVER_AFTER:.0f} s; status checks poll)",
    ]


def diagnose(rows: Sequence[Row], record: RunRecord) -> list[str]:
    """Why some messages are not final yet, in words that point at the stage to look at."""
    hints = []
    waiting = Counter((r.send_status, r.gateway_status) for r in rows if r.final_at is None)
    for (send_status, gateway_status), n in waiting.most_common():
        if send_status in ("QUEUED", "SENDING"):
            hints.append(f"{n} still {send_status}: not sent yet (worker.log, beat.log)")
        else:
            hints.append(
                f"{n} {send_status} / {gateway_status}: never reached a final status; is the "
                "status sweep (sms_pipeline.status_sweep) running? (worker.log)"
            )
    present_queue = {r.queue_id for r in rows if r.queue_id is not None}
    missing_queue = len(set(record.by_queue_id) - present_queue)
    if missing_queue:
        hints.append(f"{missing_queue} SQL-route rows never reached sms_log (queue poll)")
    present_verifications = {r.verification_id for r in rows if r.verification_id is not None}
    missing_verifications = len(set(record.by_verification_id) - present_verifications)
    if missing_verifications:
        hints.append(
            f"{missing_verifications} verification rows never replicated into sms_log "
            "(sms_pipeline.replicate)"
        )
    return hints


def channel_report(
    console: Console, data_dir: Path, since: dt.datetime, settings: Settings
) -> Path:
    """The channel report (metrics.report) for this run's messages, and its PNG chart."""
    from sms_pipeline.db import get_engine
    from sms_pipeline.metrics.plot import render_png
    from sms_pipeline.metrics.report import build_report
    from sms_pipeline.metrics.report_text import render_text

    report = build_report(
        get_engine(settings),
        since=since,
        until=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1),
    )
    console.print(render_text(report, width=min(console.width, 80)))
    return render_png(report, data_dir / "report.png")


@dataclasses.dataclass(frozen=True)
class Finished:
    """How the run went, for the closing lines."""

    rows: list[Row]
    record: RunRecord
    data_dir: Path
    settings: Settings  # the demo's database
    since: dt.datetime  # when the run started enqueueing
    logs: list[Path]
    wait_seconds: float  # how long the demo was prepared to wait
    waited: float  # how long it waited
    started: float  # time.monotonic() at the start of the demo
    outage: OutageVerdict | None = None  # the second act's verdict, when it ran


def summarise(console: Console, run: Finished) -> int:
    """Print what happened and the channel report; 0 when every message ended as promised."""
    rows, record = run.rows, run.record
    final = sum(1 for r in rows if r.final_at is not None)
    total = record.expected_rows
    table, surprises = scenario_table(rows, record)
    console.print()
    console.print(table)
    for line in timing_lines(rows):
        console.print(f"  {line}")
    for line in run.outage.lines if run.outage else ():
        console.print(f"  {line}")
    console.print()
    report_problem = None
    try:
        png = channel_report(console, run.data_dir, run.since, run.settings)
        console.print(f"  report    {png}")
    except Exception as exc:  # the demo's own table above still tells the story
        report_problem = f"the channel report failed: {type(exc).__name__}: {exc}"
        console.print(f"[red]{report_problem}[/red]")
    for log_path in run.logs:
        console.print(f"  log       {log_path}")
    console.print(f"  database  {run.data_dir / 'sms_pipeline.db'}")
    console.print(
        f"  look at it: SMS_DATA_DIR={shlex.quote(str(run.data_dir))} "
        "sms-pipeline report --since 1h"
    )
    elapsed = time.monotonic() - run.started
    if final < total:
        console.print(
            f"[red]{total - final} of {total} messages did not reach a final state within "
            f"{run.wait_seconds:.0f} s[/red]"
        )
        for hint in diagnose(rows, record):
            console.print(f"  - {hint}")
        return 1
    if report_problem:
        return 1
    if run.outage and run.outage.problems:
        console.print("[red]the gateway outage did not end as promised:[/red]")
        for line in run.outage.problems:
            console.print(f"  - {line}")
        return 1
    if surprises:
        console.print("[red]some messages ended differently than the rules promise:[/red]")
        for line in surprises:
            console.print(f"  - {line}")
        return 1
    refused = sum(record.refused.values())
    console.print(
        f"[green]all {total} messages final in {run.waited:.1f} s[/green] "
        f"(demo total {elapsed:.1f} s): "
        f"{len(record.by_id)} enqueued + {len(record.by_queue_id)} SQL-route rows + "
        f"{len(record.by_verification_id)} replicated verification; {refused} more refused "
        "at enqueue, never stored"
    )
    return 0
