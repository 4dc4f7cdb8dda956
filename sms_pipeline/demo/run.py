"""Running the demo: its child processes, started, followed and stopped.

`sms-pipeline demo` starts the gateway simulator, a worker and beat as child processes
(SQLite database and a serverless broker in the demo's own data folder), then a producer
child that enqueues a realistic mix of messages (the four types, bad numbers, gateway
faults chosen by the number's last digits, SQL-route rows and a verification row for
replication). It follows them to their final states; then, as a second act (demo/outage.py),
two more gateways are added and one is stopped mid-run. It prints the report. Every child
is stopped on the way out, also on Ctrl-C.

Each child gets its environment as an explicit dict; this process reads the demo's
database through a Settings object and never changes its own environment.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

from rich.console import Console

from sms_pipeline.demo.environment import (
    SIM_DELIVER_AFTER,
    SIM_ENROUTE_AFTER,
    SIM_SLOW_SECONDS,
    TERMINATE_AFTER_SECONDS,
    child_environment,
    demo_settings,
)
from sms_pipeline.demo.outage import (
    Outage,
    OutageVerdict,
    outage_verdict,
    print_gateway_list,
    run_outage,
    start_gateways,
)
from sms_pipeline.demo.progress import check_alive, follow
from sms_pipeline.demo.record import RunRecord
from sms_pipeline.demo.report import Finished, summarise
from sms_pipeline.supervise import CLI, ChildError, ChildProcess, stop_all

DEMO_FOLDER = "demo"  # inside SMS_DATA_DIR: the demo wipes it, never the data beside it
CHILD_STOP_TIMEOUT = 10.0
PRODUCER = (sys.executable, "-m", "sms_pipeline.demo.producer")


@dataclasses.dataclass(frozen=True)
class DemoOptions:
    count: int = 200
    keep: bool = False
    data_dir: Path | None = None  # None: SMS_DATA_DIR/demo
    timeout: float | None = None  # None: scaled with count
    concurrency: int = 8
    seed: int | None = None
    gateway_outage: bool = True  # the second act (demo/outage.py)

    @property
    def wait_seconds(self) -> float:
        if self.timeout is not None:
            return self.timeout
        return 60.0 + TERMINATE_AFTER_SECONDS + 0.1 * self.count


def spawn(name: str, args: Sequence[str], env: Mapping[str, str], log_dir: Path) -> ChildProcess:
    """`python -m sms_pipeline.cli ARGS` in its own process group, output to NAME.log."""
    return ChildProcess(name, [*CLI, *args], env, log_dir / f"{name}.log")


def demo_data_dir(chosen: Path | None) -> Path:
    """--data-dir, else the `demo` folder inside SMS_DATA_DIR; absolute."""
    if chosen is not None:
        return chosen.expanduser().resolve()
    from sms_pipeline.settings import get_settings

    return get_settings().sms_data_dir / DEMO_FOLDER


def start_pipeline(
    console: Console,
    data_dir: Path,
    concurrency: int,
    children: list[ChildProcess],
    one_shot: list[ChildProcess],
) -> dict[str, str]:
    """Simulator, migrations, worker and beat; returns the environment they run with.

    Long-running children go to `children`, the ones that finish to `one_shot`, as soon
    as each starts: the caller stops them all, whatever fails here.
    """
    log_dir = data_dir / "logs"
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
    one_shot.append(migrate)
    gateway_url = simulator.wait_for_log(r"listening on (http://\S+)", timeout=30).group(1)
    env = child_environment(data_dir, gateway_url, concurrency)
    if migrate.popen.wait(timeout=120) != 0:
        raise ChildError("db upgrade failed", migrate)
    console.print(f"  gateway   simulator at {gateway_url} (faults chosen by number suffix)")
    worker = spawn("worker", ["worker"], env, log_dir)
    children.append(worker)
    children.append(spawn("beat", ["beat"], env, log_dir))
    # Enqueue once the worker consumes, so the timings below are the pipeline's own.
    worker.wait_for_log(r"celery@\S+ ready", timeout=120)
    console.print(
        f"  started   gateway-sim, worker ({concurrency} threads), beat"
        " [dim](pids " + ", ".join(str(c.pid) for c in children) + ")[/dim]"
    )
    return env


def run_producer(
    env: Mapping[str, str],
    data_dir: Path,
    options: DemoOptions,
    children: Sequence[ChildProcess],
    one_shot: list[ChildProcess],
) -> RunRecord:
    """Enqueue the run's messages from a producer child; what it put in."""
    tag = f"demo-{uuid.uuid4().hex[:8]}"
    out = data_dir / f"{tag}.json"
    args = ["--tag", tag, "--count", str(options.count), "--out", str(out)]
    if options.seed is not None:
        args += ["--seed", str(options.seed)]
    producer = ChildProcess("producer", [*PRODUCER, *args], env, data_dir / "logs/producer.log")
    one_shot.append(producer)
    deadline = time.monotonic() + options.wait_seconds
    while True:
        try:
            code = producer.popen.wait(timeout=0.5)
            break
        except subprocess.TimeoutExpired:
            check_alive(children)
            if time.monotonic() > deadline:
                message = f"producer: still enqueuing after {options.wait_seconds:.0f} s"
                raise ChildError(message, producer) from None
    if code != 0:
        raise ChildError(f"producer exited with code {code}", producer)
    return RunRecord.from_json(out.read_text(encoding="utf-8"))


def _console() -> Console:
    console = Console(highlight=False)
    if not console.is_terminal:
        # Logs and CI: tables laid out for 80 columns, text lines never broken.
        console = Console(highlight=False, width=80, soft_wrap=True)
    return console


def run_demo(options: DemoOptions, console: Console | None = None) -> int:
    """Run the demo; returns the exit code (0: every message reached its final state)."""
    from sms_pipeline.simulator import require_aiohttp

    require_aiohttp()  # the `demo` extra (simulator, plots): fail now, with the install hint
    console = console or _console()
    data_dir = demo_data_dir(options.data_dir)
    if data_dir.exists() and not options.keep:
        shutil.rmtree(data_dir)
    (data_dir / "logs").mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    console.print(
        f"[bold]sms-pipeline demo[/bold]: {options.count} messages through the embedded "
        "pipeline (SQLite + serverless broker, no server to install)"
    )
    console.print(f"  data      {data_dir}")

    children: list[ChildProcess] = []
    one_shot: list[ChildProcess] = []
    outage: Outage | None = None
    verdict: OutageVerdict | None = None
    try:
        env = start_pipeline(console, data_dir, options.concurrency, children, one_shot)
        settings = demo_settings(env)
        run_since = dt.datetime.now(dt.UTC)
        record = run_producer(env, data_dir, options, children, one_shot)
        refused = sum(record.refused.values())
        console.print(
            f"  enqueued  {len(record.by_id)} messages in {record.enqueue_seconds:.1f} s"
            f" ({refused} refused at enqueue: invalid phone number), "
            f"{len(record.by_queue_id)} SQL-route rows, "
            f"{len(record.by_verification_id)} verification to replicate"
        )
        wait_started = time.monotonic()
        rows = follow(console, record, settings, children, wait_started + options.wait_seconds)
        if options.gateway_outage and sum(r.final_at is not None for r in rows) == len(rows):
            console.print("[bold]Second act[/bold]: a gateway outage")
            log_dir = data_dir / "logs"
            outage = start_gateways(console, env, log_dir, one_shot)
            more = run_outage(
                console, env, data_dir, record.tag, settings, children, one_shot, outage
            )
            record.by_id.update(more.by_id)
            rows = follow(
                console, record, settings, children, time.monotonic() + options.wait_seconds
            )
            print_gateway_list(console, env, log_dir, one_shot, "at the end")
            verdict = outage_verdict(outage, settings)
        waited = time.monotonic() - wait_started
    except ChildError as exc:
        console.print(f"[red]demo failed: {exc}[/red]")
        console.print(f"  see {exc.child.log_path}")
        return 1
    except KeyboardInterrupt:
        console.print("\n[yellow]interrupted: stopping the demo's processes[/yellow]")
        return 130
    finally:
        stop_all([*children, *one_shot], CHILD_STOP_TIMEOUT)
        if outage is not None:
            outage.stop()

    finished = Finished(
        rows=rows,
        record=record,
        data_dir=data_dir,
        settings=settings,
        since=run_since,
        logs=[child.log_path for child in children],
        wait_seconds=options.wait_seconds,
        waited=waited,
        started=started,
        outage=verdict,
    )
    return summarise(console, finished)
