"""`sms-pipeline up`: the whole pipeline in the foreground, one command.

Starts a worker, a callbacks worker (its own process: slow receivers hold only its
threads), beat and, when the gateway URL points at this machine and nothing
answers there yet, the gateway simulator, each as a child process in its own process
group with its output in `SMS_DATA_DIR/logs/NAME.log`. Prints a `ready` line once the
worker takes messages, then one status line (a live one in a terminal, a new line per
change otherwise), and repeats the children's warnings. Ctrl-C or SIGTERM stops every
child it started (SIGTERM to each group, SIGKILL after the stop timeout).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, TextIO
from urllib.parse import urlsplit

from sms_pipeline.cli.up_screen import LogEcho, Screen, status_counts, status_line
from sms_pipeline.settings import Settings, get_settings, mask_url
from sms_pipeline.supervise import CLI, ChildError, ChildProcess, stop_all

STOP_TIMEOUT = 15.0
READY_TIMEOUT = 120.0
# With the simulator, status checks start sooner than the production defaults, so a
# message reaches Delivered within seconds. A value set in the environment wins.
SIMULATOR_CLOCKS = {
    "sms_status_poll_seconds": "2",
    "sms_status_check_backoff": "2,5,10,30,60",
}
SAMPLE_SEND = "send --to +380931234567 --body hi"


def command_for_another_shell() -> str:
    """How a new shell runs this `sms-pipeline`: the bare name when PATH finds this very
    script, else its path (relative to the working folder when inside it, as
    `.venv/bin/sms-pipeline` after `make run`)."""
    import shutil

    script = Path(sys.executable).parent / "sms-pipeline"
    found = shutil.which("sms-pipeline")
    if found and script.exists() and Path(found).resolve() == script.resolve():
        return "sms-pipeline"
    if not script.exists():
        return f"{sys.executable} -m sms_pipeline.cli"
    try:
        return str(script.relative_to(Path.cwd()))
    except ValueError:
        return str(script)


def simulator_reason(settings: Settings) -> str:
    """Why `up` started the simulator, in the words of the settings the user gave."""
    if "ip2sms_send_url" in settings.explicit_gateway:
        return "IP2SMS_SEND_URL points at this machine and nothing answered there"
    return "no real gateway configured: IP2SMS_SEND_URL is not set"


class StopRequested(Exception):  # noqa: N818 - a request, not an error
    """SIGTERM or SIGINT arrived: stop the children and leave."""


def _raise_stop(signum: int, _frame: FrameType | None) -> None:
    raise StopRequested(signal.Signals(signum).name)


def listening(url: str, timeout: float = 0.5) -> bool:
    """Something accepts TCP connections at the URL's host and port."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def wants_simulator(settings: Settings, choice: str) -> bool:
    from sms_pipeline.hints import is_loopback_url

    if choice != "auto":
        return choice == "yes"
    return is_loopback_url(settings.ip2sms_send_url) and not listening(settings.ip2sms_send_url)


def child_env(settings: Settings, simulator: bool) -> dict[str, str]:
    env = dict(os.environ)
    # The children read the same folder even if they resolve paths from elsewhere.
    env["SMS_DATA_DIR"] = str(settings.sms_data_dir)
    env.setdefault("PYTHONUNBUFFERED", "1")
    if simulator:
        for name, value in SIMULATOR_CLOCKS.items():
            if name not in settings.model_fields_set:
                env[name.upper()] = value
    return env


# --- the command --------------------------------------------------------------------------


def _start(
    name: str, args: list[str], env: dict[str, str], log_dir: Path, children: list[ChildProcess]
) -> ChildProcess:
    child = ChildProcess(name, [*CLI, *args], env, log_dir / f"{name}.log")
    children.append(child)
    return child


def check_database(settings: Settings) -> None:
    """Embedded: migrate on first use. PostgreSQL: tables must be there (`db upgrade`)."""
    from sms_pipeline.db import get_engine, migrate

    engine = get_engine(settings)  # migrates the embedded database
    if migrate.current(engine) != migrate.head():
        from sms_pipeline.settings import SettingsError

        raise SettingsError(
            f"the database {mask_url(settings.database_url)} is not at the current schema: "
            "run `sms-pipeline db upgrade`"
        )


def gateway_problems(settings: Settings) -> list[str]:
    """One line per account or gateway whose password_ref resolves to nothing."""
    from sms_pipeline.db import get_engine
    from sms_pipeline.services.gateways import credential_problems

    with get_engine(settings).connect() as conn:
        return credential_problems(conn, settings)


def run_up(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    from sms_pipeline.broker.app import CALLBACKS_QUEUE

    settings = get_settings()
    screen = Screen(out)
    log_dir = settings.sms_data_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    check_database(settings)
    simulator = wants_simulator(settings, args.simulator)
    env = child_env(settings, simulator)
    screen.line(
        "sms-pipeline up: worker + callbacks worker + beat"
        + (" + gateway simulator" if simulator else "")
    )
    screen.line(f"  data      {settings.sms_data_dir}")
    screen.line(f"  database  {mask_url(settings.database_url)}")
    broker = mask_url(settings.broker_url)
    if settings.broker_url.startswith("filesystem:"):
        broker += f" (embedded, folder {settings.broker_folder})"
    screen.line(f"  broker    {broker}")
    screen.line(f"  logs      {log_dir}")
    for problem in gateway_problems(settings):
        # An account (or gateway) whose password cannot be found: refused, loudly; its
        # messages wait (docs/gateways.md), the others go.
        screen.line(f"  REFUSED   {problem}")

    previous: dict[int, Callable[..., Any] | int | None] = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, _raise_stop)
    children: list[ChildProcess] = []
    code = 0
    try:
        if simulator:
            parts = urlsplit(settings.ip2sms_send_url)
            sim = _start(
                "gateway-sim",
                ["gateway-sim", f"--host={parts.hostname}", f"--port={parts.port or 80}"],
                env,
                log_dir,
                children,
            )
            sim.wait_for_log(r"listening on (http://\S+)", timeout=30)
            screen.line(
                f"  gateway   simulator at {settings.ip2sms_send_url} "
                f"({simulator_reason(settings)}; faults by the number's last two digits, "
                "see README)"
            )
        else:
            screen.line(f"  gateway   {mask_url(settings.ip2sms_send_url)}")
        worker_args = ["worker"]
        if args.concurrency:
            worker_args.append(f"--concurrency={args.concurrency}")
        worker = _start("worker", worker_args, env, log_dir, children)
        # Callbacks in a process of their own with its own threads (SMS_CALLBACK_CONCURRENCY)
        # and connections: no number of slow receivers holds a send or a status check.
        callbacks = _start(
            "callbacks",
            ["worker", f"--queues={CALLBACKS_QUEUE}", f"--hostname={CALLBACKS_QUEUE}@%h"],
            env,
            log_dir,
            children,
        )
        _start("beat", ["beat"], env, log_dir, children)
        screen.line("  started   " + ", ".join(f"{c.name} (pid {c.pid})" for c in children))
        echo = LogEcho(children)
        worker.wait_for_log(r"celery@\S+ ready", timeout=READY_TIMEOUT)
        callbacks.wait_for_log(r"callbacks@\S+ ready", timeout=READY_TIMEOUT)
        for line in echo.lines():
            screen.line(line)
        command = command_for_another_shell()
        screen.line(
            f"ready: the worker takes messages. In another shell, in this folder: "
            f"{command} {SAMPLE_SEND}"
        )
        screen.line(f"        then `{command} show ID` and `{command} report`. Ctrl-C stops.")
        since = dt.datetime.now(dt.UTC)
        while True:
            for line in echo.lines():
                screen.line(line)
            dead = [c for c in children if not c.alive()]
            if dead:
                raise ChildError(f"{dead[0].name} exited with code {dead[0].returncode}", dead[0])
            screen.status(status_line(status_counts(since)))
            time.sleep(args.interval)
    except StopRequested as exc:
        screen.close()
        screen.line(f"stopping ({exc}): " + ", ".join(c.name for c in reversed(children)))
    except ChildError as exc:
        screen.close()
        screen.line(f"sms-pipeline up: {exc}; its log: {exc.child.log_path}")
        for line in exc.child.log_text().splitlines()[-5:]:
            screen.line(f"  {line}")
        code = 1
    finally:
        # A second Ctrl-C while stopping must not leave children behind.
        for number in previous:
            signal.signal(number, signal.SIG_IGN)
        stop_all(children, STOP_TIMEOUT)
        for number, handler in previous.items():
            signal.signal(number, handler)
    screen.line("stopped")
    return code


def register(subparsers: Any) -> None:
    up = subparsers.add_parser(
        "up",
        help="run worker, callbacks worker, beat (and the gateway simulator) in the "
        "foreground; Ctrl-C stops",
        description="Run the pipeline in the foreground: a worker, a callbacks worker (its "
        "own process, SMS_CALLBACK_CONCURRENCY threads), beat and, when "
        "IP2SMS_SEND_URL points at this machine and nothing listens there, the gateway "
        "simulator. Embedded by default (SQLite and a broker folder in SMS_DATA_DIR; the "
        "database is created on first use). Prints `ready` when the worker takes messages, "
        "then a status line. Ctrl-C (or SIGTERM) stops everything it started.",
    )
    up.add_argument(
        "--simulator",
        choices=("auto", "yes", "no"),
        default="auto",
        help="start the gateway simulator at IP2SMS_SEND_URL: auto = when it is a loopback "
        "URL nothing answers yet (default %(default)s)",
    )
    up.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="worker threads (default SMS_WORKER_CONCURRENCY)",
    )
    up.add_argument(
        "--interval",
        type=float,
        default=1.0,
        help="seconds between status updates (default %(default)s)",
    )
    up.set_defaults(func=run_up, uses_data=False)
