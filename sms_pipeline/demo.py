"""The embedded demo: the whole pipeline on one machine, no server to install.

`sms-pipeline demo` starts the gateway simulator, a worker and beat as child processes
(SQLite database and a serverless broker in the demo's own data folder), enqueues a
realistic mix of messages (the four types, bad numbers, gateway faults chosen by the
number's last digits, SQL-route rows and a verification row for replication), follows
them to their final states and prints the report. Every child is stopped on the way out,
also on Ctrl-C.

The demo prints counts, never a message body or a full phone number.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import random
import shlex
import shutil
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sms_pipeline.children import CLI, ChildError, ChildProcess, stop_all

DEMO_FOLDER = "demo"  # inside SMS_DATA_DIR: the demo wipes it, never the data beside it
CHILD_STOP_TIMEOUT = 10.0

# Clocks shortened so every scenario ends within the demo: the simulator delivers after
# 3 s, a message still moving after 20 s becomes Terminated, retries wait about a second.
SIM_ENROUTE_AFTER = 1.0
SIM_DELIVER_AFTER = 3.0
# The slow rule answers after 2 s: well inside the client's 5 s read timeout, so it shows
# as latency. (Longer than the timeout it would end as a `uniq_key dupe` on the resend.)
SIM_SLOW_SECONDS = 2.0
TERMINATE_AFTER_SECONDS = 20


def demo_environment(data_dir: Path, gateway_url: str, concurrency: int = 8) -> dict[str, str]:
    """The settings of every demo process: embedded database and broker, short clocks."""
    return {
        "SMS_DATA_DIR": str(data_dir),
        # Empty means embedded: a DATABASE_URL or BROKER_URL in the caller's environment
        # (or .env) must not send demo traffic to a real server.
        "SMS_DATABASE_URL": "",
        "SMS_BROKER_URL": "",
        "SMS_REDIS_URL": "",
        "IP2SMS_SEND_URL": f"{gateway_url}/ip2sms/",
        "IP2SMS_STATUS_URL": f"{gateway_url}/ip2sms-request/",
        "IP2SMS_LOGIN": "demo",
        "IP2SMS_PASSWORD": "demo",
        "IP2SMS_READ_TIMEOUT": "5",
        "SMS_RETRY_BACKOFF_SECONDS": "1",
        "SMS_RETRY_BACKOFF_MAX_SECONDS": "4",
        "SMS_STATUS_POLL_SECONDS": "2",
        "SMS_STATUS_CHECK_BACKOFF": "1,2,3",
        "SMS_TERMINATE_AFTER_SECONDS": str(TERMINATE_AFTER_SECONDS),
        "SMS_OUTBOX_SWEEP_SECONDS": "2",
        "SMS_OUTBOX_GRACE_SECONDS": "5",
        "SMS_QUEUE_POLL_SECONDS": "1",
        "SMS_REPLICATION_SECONDS": "1",
        "SMS_WORKER_CONCURRENCY": str(concurrency),
        "SMS_LOG_LEVEL": "INFO",
    }


def child_environment(data_dir: Path, gateway_url: str, concurrency: int = 8) -> dict[str, str]:
    """This process's environment without its SMS_/IP2SMS_ settings, plus the demo's."""
    inherited = {
        k: v for k, v in os.environ.items() if not k.upper().startswith(("SMS_", "IP2SMS_"))
    }
    return {**inherited, **demo_environment(data_dir, gateway_url, concurrency)}


# --- the message mix ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    suffix: str | None  # the simulator's fault rule (None: a number with no rule)
    expected: str  # the outcome label the message must end with
    share: float  # fraction of --count
    story: str


NORMAL = Scenario("delivered", None, "Delivered", 0.0, "Accepted → Enroute → Delivered")
SCENARIOS: tuple[Scenario, ...] = (
    Scenario("transient once", "01", "Delivered", 0.03, "HTTP 503 once, retried, delivered"),
    Scenario("transient twice", "02", "Delivered", 0.02, "HTTP 503 twice, delivered on the 3rd"),
    Scenario("gateway down", "03", "RETRYCOUNT EXCEEDED", 0.02, "HTTP 503 on all 3 attempts"),
    Scenario("rejected", "04", "REJECTED", 0.02, "Rejected: Invalid abonent number"),
    Scenario("never final", "05", "Terminated", 0.02, "stays Enroute; ours to terminate"),
    Scenario("slow gateway", "06", "Delivered", 0.02, "answer after 2 s, still in time"),
    Scenario("undeliverable", "08", "Undeliverable", 0.03, "the handset never got it"),
)
INVALID_SHARE = 0.02
SQL_ROUTE_GOOD = Scenario("SQL route", None, "Delivered", 0.0, "row in sms_queue → sent")
SQL_ROUTE_BAD_NUMBER = Scenario(
    "SQL route, bad number", None, "number invalid", 0.0, "garbage NumTo: logged, not sent"
)
SQL_ROUTE_EMPTY_TEXT = Scenario(
    "SQL route, empty text", None, "data1 invalid", 0.0, "empty Data1: logged, not sent"
)
REPLICATED = Scenario(
    "replicated verification", None, "Delivered", 0.0, "row in verifications → sms_log"
)

# Ukrainian mobile operator codes: realistic numbers for the simulator, never real people
# in practice (random subscriber digits), and still never printed.
_OPERATOR_CODES = ("50", "63", "66", "67", "68", "73", "93", "95", "96", "97", "98", "99")
_INVALID_NUMBERS = ("+38012", "12345", "not-a-number", "+380 93 ABC", "+999999999999999")
_TYPES = ("verification", "2FA", "medication_request", "text")
_TYPE_WEIGHTS = (30, 15, 20, 35)
_TEXTS = (
    "Reminder: your appointment is tomorrow at {hh}:30. Reply STOP to opt out.",
    "Нагадування: прийом у лікаря завтра о {hh}:30.",
    "Your test results are ready in your patient account.",
)


def phone_number(rng: random.Random, suffix: str | None) -> str:
    """A valid +380 mobile number ending in `suffix` (or in no fault suffix at all)."""
    tail = suffix if suffix is not None else f"{rng.randint(11, 99)}"
    return f"+380{rng.choice(_OPERATOR_CODES)}{rng.randint(0, 99999):05d}{tail}"


def message_body(rng: random.Random, message_type: str) -> str:
    code = f"{rng.randint(0, 999999):06d}"
    if message_type == "verification":
        return f"Your verification code is {code}. Never share it."
    if message_type == "2FA":
        return f"Login code: {code}. Valid for 5 minutes."
    if message_type == "medication_request":
        return f"Prescription {rng.randint(1000, 9999)}-{code[:4]} is ready: show code {code}."
    return rng.choice(_TEXTS).format(hh=rng.randint(8, 17))


@dataclasses.dataclass(frozen=True)
class PlannedMessage:
    scenario: Scenario | None  # None: an invalid number, refused at enqueue
    number: str
    body: str
    type: str
    priority: int


def plan_messages(count: int, rng: random.Random) -> list[PlannedMessage]:
    """`count` messages: a few of each fault scenario and bad numbers, the rest normal."""
    specials: list[Scenario | None] = [None] * max(1, round(count * INVALID_SHARE))
    for fault in SCENARIOS:
        specials += [fault] * max(1, round(count * fault.share))
    chosen = specials[:count] + [NORMAL] * max(0, count - len(specials))
    rng.shuffle(chosen)
    planned = []
    for scenario in chosen:
        message_type = rng.choices(_TYPES, weights=_TYPE_WEIGHTS)[0]
        number = (
            rng.choice(_INVALID_NUMBERS) if scenario is None else phone_number(rng, scenario.suffix)
        )
        priority = 1 if message_type in ("verification", "2FA") else 0
        body = message_body(rng, message_type)
        planned.append(PlannedMessage(scenario, number, body, message_type, priority))
    return planned


# --- child processes ----------------------------------------------------------------------


def spawn(name: str, args: Sequence[str], env: Mapping[str, str], log_dir: Path) -> ChildProcess:
    """`python -m sms_pipeline.cli ARGS` in its own process group, output to NAME.log."""
    return ChildProcess(name, [*CLI, *args], env, log_dir / f"{name}.log")


# --- the run --------------------------------------------------------------------------------


@dataclasses.dataclass
class RunRecord:
    """What this run put in, to find its rows again (also next to an older --keep run)."""

    tag: str
    by_id: dict[uuid.UUID, Scenario] = dataclasses.field(default_factory=dict)
    by_queue_id: dict[int, Scenario] = dataclasses.field(default_factory=dict)
    by_verification_id: dict[uuid.UUID, Scenario] = dataclasses.field(default_factory=dict)
    refused: Counter[str] = dataclasses.field(default_factory=Counter)

    @property
    def expected_rows(self) -> int:
        return len(self.by_id) + len(self.by_queue_id) + len(self.by_verification_id)


@dataclasses.dataclass(frozen=True)
class Row:
    id: uuid.UUID
    queue_id: int | None
    verification_id: uuid.UUID | None
    send_status: str
    gateway_status: str | None
    attempts: int
    inserted_at: dt.datetime
    submitted_at: dt.datetime | None
    final_at: dt.datetime | None
    last_error: str | None


def outcome_of(row: Row) -> str:
    """The label a message ended with: the gateway's status once submitted, else ours."""
    if row.send_status == "SUBMITTED":
        return row.gateway_status or "SUBMITTED (gateway id unknown)"
    return row.send_status


def use_demo_settings(env: Mapping[str, str]) -> None:
    """Point this process (the enqueuing side) at the demo's database and broker."""
    import logging

    # "No hostname was supplied" is how kombu greets every serverless transport.
    logging.getLogger("kombu.connection").setLevel(logging.ERROR)
    from sms_pipeline.celery_app import app, configure
    from sms_pipeline.db import dispose_engines
    from sms_pipeline.settings import get_settings, reset_settings_cache

    os.environ.update(env)
    reset_settings_cache()
    dispose_engines()
    # The app was built at import with the caller's settings; nothing was published yet.
    configure(app, get_settings())


def enqueue_planned(planned: Sequence[PlannedMessage], record: RunRecord) -> None:
    from sms_pipeline import InvalidMessage, enqueue_sms

    for message in planned:
        try:
            message_id = enqueue_sms(
                message.number,
                message.body,
                message.type,
                priority=message.priority,
                cost_centre=record.tag,
            )
        except InvalidMessage as exc:
            record.refused[exc.field] += 1
            continue
        assert message.scenario is not None, "an invalid number was accepted"
        record.by_id[message_id] = message.scenario


def insert_side_doors(rng: random.Random, record: RunRecord) -> None:
    """Rows other systems write: the SQL route's queue and a verification to replicate."""
    from sms_pipeline.db import session_scope
    from sms_pipeline.db.models import SmsQueue, Verification, utcnow
    from sms_pipeline.services.accounts import get_or_create_default_account

    with session_scope() as session:
        account = get_or_create_default_account(session)
        rows = [
            (SQL_ROUTE_GOOD, phone_number(rng, None), message_body(rng, "text")),
            (SQL_ROUTE_GOOD, phone_number(rng, None), message_body(rng, "medication_request")),
            (SQL_ROUTE_GOOD, phone_number(rng, None), message_body(rng, "text")),
            (SQL_ROUTE_BAD_NUMBER, "0000-garbage", message_body(rng, "text")),
            (SQL_ROUTE_EMPTY_TEXT, phone_number(rng, None), ""),
        ]
        queued = []
        for scenario, number, body in rows:
            row = SmsQueue(
                account_id=account.id,
                message_type="text",
                num_to=number,
                data1=body,
                cost_centre=record.tag,
            )
            session.add(row)
            queued.append((scenario, row))
        # The verification service's real row: an integer code that is valid 10 minutes.
        verification = Verification(
            phone_number=phone_number(rng, None),
            code=rng.randint(100000, 999999),
            check_digit=rng.randint(0, 9),
            code_expired_at=utcnow() + dt.timedelta(minutes=10),
        )
        session.add(verification)
        session.flush()
        for scenario, row in queued:
            record.by_queue_id[row.id] = scenario
        record.by_verification_id[verification.id] = REPLICATED


def load_rows(record: RunRecord) -> list[Row]:
    from sqlalchemy import or_, select

    from sms_pipeline.db import session_scope
    from sms_pipeline.db.models import SmsLog

    columns = [getattr(SmsLog, f.name) for f in dataclasses.fields(Row)]
    with session_scope() as session:
        query = select(*columns).where(
            or_(
                SmsLog.cost_centre == record.tag,
                SmsLog.verification_id.in_(list(record.by_verification_id)),
            )
        )
        return [Row(*r) for r in session.execute(query)]


def scenario_of(row: Row, record: RunRecord) -> Scenario | None:
    if row.id in record.by_id:
        return record.by_id[row.id]
    if row.queue_id is not None and row.queue_id in record.by_queue_id:
        return record.by_queue_id[row.queue_id]
    if row.verification_id is not None:
        return record.by_verification_id.get(row.verification_id)
    return None


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
    order = [NORMAL, *SCENARIOS, SQL_ROUTE_GOOD, SQL_ROUTE_BAD_NUMBER, SQL_ROUTE_EMPTY_TEXT,
             REPLICATED]  # fmt: skip
    for scenario in order:
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


@dataclasses.dataclass(frozen=True)
class DemoOptions:
    count: int = 200
    keep: bool = False
    data_dir: Path | None = None  # None: SMS_DATA_DIR/demo
    timeout: float | None = None  # None: scaled with count
    concurrency: int = 8
    seed: int | None = None

    @property
    def wait_seconds(self) -> float:
        if self.timeout is not None:
            return self.timeout
        return 60.0 + TERMINATE_AFTER_SECONDS + 0.1 * self.count


def waiting_for(rows: Sequence[Row], total: int) -> str:
    """What the demo is waiting for, in words: the slowest messages and why they are slow."""
    pending = sum(1 for r in rows if r.final_at is None and r.submitted_at is None)
    moving = sum(1 for r in rows if r.final_at is None and r.submitted_at is not None)
    missing = max(0, total - len(rows))
    parts = []
    if pending or missing:
        parts.append(f"{pending + missing} to send (retries wait 1-4 s)")
    if moving:
        parts.append(
            f"{moving} awaiting a delivery status (never-final ones end Terminated "
            f"{TERMINATE_AFTER_SECONDS} s after submission)"
        )
    return "waiting: " + "; ".join(parts) if parts else "all final"


PLAIN_PROGRESS_SECONDS = 3.0


def _follow(
    console: Console,
    record: RunRecord,
    children: Sequence[ChildProcess],
    deadline: float,
) -> list[Row]:
    """Show progress until every message of the run is final, or the deadline passes.

    In a terminal: a progress bar with what it waits for. Elsewhere (logs, CI): a plain
    line every few seconds, so the story is there without a terminal.
    """
    total = record.expected_rows
    columns = (
        TextColumn("final"),
        BarColumn(bar_width=20),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
    )
    live = console.is_terminal
    started = time.monotonic()
    last_line = 0.0
    with contextlib.ExitStack() as stack:
        progress = None
        if live:
            progress = stack.enter_context(Progress(*columns, console=console, transient=False))
            task = progress.add_task("", total=total)
        while True:
            rows = load_rows(record)
            final = sum(1 for r in rows if r.final_at is not None)
            why = waiting_for(rows, total)
            if progress is not None:
                progress.update(task, completed=final, description=f"[dim]{why}[/dim]")
            elif final >= total or time.monotonic() - last_line >= PLAIN_PROGRESS_SECONDS:
                last_line = time.monotonic()
                console.print(
                    f"  progress  {final}/{total} final after {last_line - started:.0f} s; {why}",
                    soft_wrap=True,  # one line per update in a log, however long
                )
            if final >= total:
                return rows
            dead = [c for c in children if not c.alive()]
            if dead:
                raise ChildError(f"{dead[0].name} exited with code {dead[0].returncode}", dead[0])
            if time.monotonic() > deadline:
                return rows
            time.sleep(0.5)


def channel_report(console: Console, data_dir: Path, since: dt.datetime) -> Path:
    """The channel report (metrics.report) for this run's messages, and its PNG chart."""
    from sms_pipeline.metrics.plot import render_png
    from sms_pipeline.metrics.report import build_report, render_text

    report = build_report(since=since, until=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1))
    console.print(render_text(report, width=min(console.width, 80)))
    return render_png(report, data_dir / "report.png")


def demo_data_dir(chosen: Path | None) -> Path:
    """--data-dir, else the `demo` folder inside SMS_DATA_DIR; absolute."""
    if chosen is not None:
        return chosen.expanduser().resolve()
    from sms_pipeline.settings import get_settings

    return get_settings().sms_data_dir / DEMO_FOLDER


def run_demo(options: DemoOptions, console: Console | None = None) -> int:
    """Run the demo; returns the exit code (0: every message reached its final state)."""
    from sms_pipeline.simulator import require_aiohttp

    require_aiohttp()  # the `demo` extra (simulator, plots): fail now, with the install hint
    if console is None:
        console = Console(highlight=False)
        if not console.is_terminal:
            # Logs and CI: tables laid out for 80 columns, text lines never broken.
            console = Console(highlight=False, width=80, soft_wrap=True)
    data_dir = demo_data_dir(options.data_dir)
    if data_dir.exists() and not options.keep:
        shutil.rmtree(data_dir)
    log_dir = data_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(options.seed)
    started = time.monotonic()
    console.print(
        f"[bold]sms-pipeline demo[/bold]: {options.count} messages through the embedded "
        "pipeline (SQLite + serverless broker, no server to install)"
    )
    console.print(f"  data      {_short(data_dir)}")

    children: list[ChildProcess] = []
    try:
        sim_env = child_environment(data_dir, "http://127.0.0.1:0")
        simulator = spawn(
            "gateway-sim",
            [
                "gateway-sim",
                "--port=0",
                f"--enroute-after={SIM_ENROUTE_AFTER}",
                f"--deliver-after={SIM_DELIVER_AFTER}",
                f"--slow-seconds={SIM_SLOW_SECONDS}",
            ],
            sim_env,
            log_dir,
        )
        children.append(simulator)
        migrate = spawn("migrate", ["db", "upgrade"], sim_env, log_dir)
        gateway_url = simulator.wait_for_log(r"listening on (http://\S+)", timeout=30).group(1)
        env = child_environment(data_dir, gateway_url, options.concurrency)
        if migrate.popen.wait(timeout=120) != 0:
            raise ChildError("db upgrade failed", migrate)
        console.print(f"  gateway   simulator at {gateway_url} (faults chosen by number suffix)")
        worker = spawn("worker", ["worker"], env, log_dir)
        children.append(worker)
        children.append(spawn("beat", ["beat"], env, log_dir))
        # Enqueue once the worker consumes, so the timings below are the pipeline's own.
        worker.wait_for_log(r"celery@\S+ ready", timeout=120)
        console.print(
            f"  started   gateway-sim, worker ({options.concurrency} threads), beat"
            " [dim](pids " + ", ".join(str(c.pid) for c in children) + ")[/dim]"
        )

        use_demo_settings(env)
        record = RunRecord(tag=f"demo-{uuid.uuid4().hex[:8]}")
        run_since = dt.datetime.now(dt.UTC)
        planned = plan_messages(options.count, rng)
        t0 = time.monotonic()
        enqueue_planned(planned, record)
        insert_side_doors(rng, record)
        refused = sum(record.refused.values())
        console.print(
            f"  enqueued  {len(record.by_id)} messages in {time.monotonic() - t0:.1f} s"
            f" ({refused} refused at enqueue: invalid phone number), "
            f"{len(record.by_queue_id)} SQL-route rows, "
            f"{len(record.by_verification_id)} verification to replicate"
        )
        wait_started = time.monotonic()
        rows = _follow(console, record, children, wait_started + options.wait_seconds)
        waited = time.monotonic() - wait_started
    except ChildError as exc:
        console.print(f"[red]demo failed: {exc}[/red]")
        console.print(f"  see {_short(exc.child.log_path)}")
        return 1
    except KeyboardInterrupt:
        console.print("\n[yellow]interrupted: stopping the demo's processes[/yellow]")
        return 130
    finally:
        stop_all(children, CHILD_STOP_TIMEOUT)

    final = sum(1 for r in rows if r.final_at is not None)
    total = record.expected_rows
    table, surprises = scenario_table(rows, record)
    console.print()
    console.print(table)
    for line in timing_lines(rows):
        console.print(f"  {line}")
    console.print()
    report_problem = None
    try:
        png = channel_report(console, data_dir, run_since)
        console.print(f"  report    {_short(png)}")
    except Exception as exc:  # the demo's own table above still tells the story
        report_problem = f"the channel report failed: {type(exc).__name__}: {exc}"
        console.print(f"[red]{report_problem}[/red]")
    for child in children:
        console.print(f"  log       {_short(child.log_path)}")
    console.print(f"  database  {_short(data_dir / 'sms_pipeline.db')}")
    console.print(
        f"  look at it: SMS_DATA_DIR={shlex.quote(str(data_dir))} sms-pipeline report --since 1h"
    )
    elapsed = time.monotonic() - started
    if final < total:
        console.print(
            f"[red]{total - final} of {total} messages did not reach a final state within "
            f"{options.wait_seconds:.0f} s[/red]"
        )
        for hint in diagnose(rows, record):
            console.print(f"  - {hint}")
        return 1
    if report_problem:
        return 1
    if surprises:
        console.print("[red]some messages ended differently than the rules promise:[/red]")
        for line in surprises:
            console.print(f"  - {line}")
        return 1
    refused = sum(record.refused.values())
    console.print(
        f"[green]all {total} messages final in {waited:.1f} s[/green] "
        f"(demo total {elapsed:.1f} s): "
        f"{len(record.by_id)} enqueued + {len(record.by_queue_id)} SQL-route rows + "
        f"{len(record.by_verification_id)} replicated verification; {refused} more refused "
        "at enqueue, never stored"
    )
    return 0


def _short(path: Path) -> str:
    # Absolute: the same path works from any folder.
    return str(path)


__all__ = ["DemoOptions", "plan_messages", "run_demo"]
