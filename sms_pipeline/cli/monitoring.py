"""`sms-pipeline metrics-server`, `sms-pipeline flower` and `sms-pipeline report`."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from sms_pipeline.settings import Settings, get_settings

CELERY_APP = "sms_pipeline.celery_app"


# --- metrics-server ------------------------------------------------------------------------


def _metrics_server(args: argparse.Namespace) -> int:
    from sms_pipeline.metrics.collector import SmsCollector, build_registry, serve
    from sms_pipeline.metrics.report import parse_duration

    settings = get_settings()
    port = args.port if args.port is not None else settings.sms_metrics_port
    registry = build_registry(SmsCollector(window=parse_duration(args.window)))
    server, thread = serve(args.host, port, registry)
    host, bound = server.server_address[:2]
    print(f"serving Prometheus metrics at http://{host}:{bound}/metrics", flush=True)
    try:
        while thread.is_alive():
            thread.join(timeout=1.0)
    finally:
        server.shutdown()
    return 0


# --- flower --------------------------------------------------------------------------------


def flower_command(
    settings: Settings, *, port: int, address: str, no_auth: bool
) -> tuple[list[str], dict[str, str]]:
    """The argv and extra environment that start Flower on our Celery app.

    The basic-auth pair goes through Flower's own FLOWER_BASIC_AUTH variable, not argv:
    any local user can read a process's command line in `ps`.
    """
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        CELERY_APP,
        "flower",
        f"--port={port}",
        f"--address={address}",
    ]
    env: dict[str, str] = {}
    if settings.sms_flower_basic_auth is not None:
        pair = settings.sms_flower_basic_auth.get_secret_value()
        if ":" not in pair or "," in pair:
            # Flower splits FLOWER_BASIC_AUTH on ","; say what is wrong, never the value.
            raise ValueError("SMS_FLOWER_BASIC_AUTH must be user:password (no commas)")
        env["FLOWER_BASIC_AUTH"] = pair
    elif not no_auth:
        raise PermissionError(
            "SMS_FLOWER_BASIC_AUTH is not set: refusing to start Flower without a login "
            "(pass --no-auth for a local-only session)"
        )
    return argv, env


# Flower's tasks page opens filtered by this search (a substring of the task name): the
# sends (`sms_pipeline.send_due`, the drains) without the upkeep tasks that beat
# schedules every few seconds (sweeps, polls, replication), which would bury them.
SENDS_SEARCH_NAME = "sms_pipeline.send"


def sends_url(address: str, port: int) -> str:
    """Flower's tasks page showing only the send tasks (docs/metrics.md)."""
    host = "127.0.0.1" if address in ("0.0.0.0", "") else address  # noqa: S104 - a URL to open
    return f"http://{host}:{port}/tasks?name={SENDS_SEARCH_NAME}"


def _flower(args: argparse.Namespace) -> int:
    settings = get_settings()
    try:
        argv, env = flower_command(
            settings, port=args.port, address=args.address, no_auth=args.no_auth
        )
    except (PermissionError, ValueError) as exc:
        print(f"sms-pipeline flower: {exc}", file=sys.stderr)
        return 2
    if not env:
        print("sms-pipeline flower: WARNING: no login (--no-auth)", file=sys.stderr)
    environment = {k: v for k, v in os.environ.items() if k != "FLOWER_BASIC_AUTH"}
    environment.update(env)
    print(
        f"starting Flower at http://{args.address}:{args.port} "
        "(its /metrics and /healthcheck need no login: keep it on a private network); "
        f"the sends without the upkeep tasks: {sends_url(args.address, args.port)}",
        flush=True,
    )
    if settings.is_embedded_broker:
        return _embedded_flower(settings, argv, environment)
    # Replace this process: Flower gets the signals (Ctrl-C, docker stop) directly.
    os.execve(sys.executable, argv, environment)  # noqa: S606 - fixed argv, no shell
    return 0  # pragma: no cover


def _embedded_flower(settings: Settings, argv: list[str], environment: dict[str, str]) -> int:
    """Flower as a child, so that its event queue is unbound when it stops: the embedded
    broker has no auto-delete, and the workers' events would pile up for nobody."""
    from sms_pipeline.broker.app import app
    from sms_pipeline.broker.embedded import forget_event_consumers

    folders = (settings.broker_folder / "control", settings.broker_folder / "queue")
    forget_event_consumers(*folders)  # a Flower killed before this one
    child = subprocess.Popen(argv, env=environment)

    def stop(_signum: int, _frame: object) -> None:
        raise SystemExit(0)  # to the `finally` below, Flower stopped on the way

    signal.signal(signal.SIGTERM, stop)
    try:
        return child.wait()
    except KeyboardInterrupt:  # Ctrl-C reached Flower too: let it stop
        return child.wait()
    finally:
        if child.poll() is None:
            child.terminate()
            child.wait()
        with contextlib.suppress(Exception):  # no worker running: nothing to switch off
            app.control.broadcast("disable_events")
        forget_event_consumers(*folders)


# --- report --------------------------------------------------------------------------------


def _report(args: argparse.Namespace) -> int:
    from sms_pipeline.metrics.report import build_report, parse_duration
    from sms_pipeline.metrics.report_text import render_text

    try:
        since = parse_duration(args.since)
    except ValueError as exc:
        print(f"sms-pipeline report: {exc}", file=sys.stderr)
        return 2
    report = build_report(since=since)
    if args.format == "json":
        print(report.to_json())
    else:
        print(render_text(report), end="")
    if args.plot:
        from sms_pipeline.metrics.plot import render_png

        target = Path(args.plot) if args.plot is not DEFAULT_PLOT else default_plot_path()
        target.parent.mkdir(parents=True, exist_ok=True)
        path = render_png(report, target)
        print(f"plot written to {path}", file=sys.stderr)
    return 0


DEFAULT_PLOT = "DATA_DIR/report.png"  # a marker: `--plot` given without a file


def default_plot_path() -> Path:
    """`--plot` without a file: report.png in the data folder (never the working tree)."""
    return get_settings().sms_data_dir / "report.png"


def register(subparsers: Any) -> None:
    server = subparsers.add_parser(
        "metrics-server", help="serve Prometheus /metrics from the database"
    )
    server.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    server.add_argument("--port", type=int, default=None, help="port (default SMS_METRICS_PORT)")
    server.add_argument(
        "--window", default="1h", help="look-back of the ratio gauges (default %(default)s)"
    )
    server.set_defaults(func=_metrics_server)

    flower = subparsers.add_parser("flower", help="run Flower (Celery monitoring UI)")
    flower.add_argument("--port", type=int, default=5555, help="port (default %(default)s)")
    flower.add_argument(
        "--address", default="127.0.0.1", help="address to bind (default %(default)s)"
    )
    flower.add_argument(
        "--no-auth",
        action="store_true",
        help="run without SMS_FLOWER_BASIC_AUTH (local use only)",
    )
    flower.set_defaults(func=_flower)

    report = subparsers.add_parser("report", help="the channel's health over a window")
    report.add_argument(
        "--since", default="24h", help="window, e.g. 30m, 24h, 7d (default %(default)s)"
    )
    report.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="a table for people or JSON for scripts (default %(default)s)",
    )
    report.add_argument(
        "--plot",
        metavar="FILE.png",
        nargs="?",
        const=DEFAULT_PLOT,
        help="also write the charts as PNG (without FILE: report.png in the data folder)",
    )
    report.set_defaults(func=_report, reads_only=True)
