"""Measure the embedded broker candidates with the real processes (docs/embedded.md).

For each broker URL: a fresh data folder, the gateway simulator (no faults), one worker
and beat as child processes (as the demo starts them), then N messages enqueued from
the run's own interpreter, started with the run's settings as its environment; the clock
runs from the first enqueue until every message is SUBMITTED.

    .venv/bin/python scripts/bench_embedded_broker.py --count 500 --runs 3
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sms_pipeline.demo.environment import child_environment
from sms_pipeline.demo.run import spawn
from sms_pipeline.demo.scenario import phone_number
from sms_pipeline.supervise import stop_all


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_environment(kind: str, data_dir: Path, port: int) -> dict[str, str]:
    """The settings of one run's processes, the enqueuing interpreter included."""
    env = child_environment(data_dir, f"http://127.0.0.1:{port}")
    if kind == "sqla":
        env["SMS_BROKER_URL"] = f"sqla+sqlite:///{data_dir / 'broker.db'}"
    return env


def submitted_count() -> int:
    from sqlalchemy import func, select

    from sms_pipeline.db import session_scope
    from sms_pipeline.db.models import SmsLog

    with session_scope() as session:
        return int(
            session.scalar(
                select(func.count()).select_from(SmsLog).where(SmsLog.send_status == "SUBMITTED")
            )
            or 0
        )


def one_run(kind: str, count: int, data_dir: Path, port: int, timeout: float) -> str:
    """One measurement; this interpreter was started with run_environment() as its own."""
    import logging
    import random

    from sms_pipeline import enqueue_sms

    # "No hostname was supplied" is how kombu greets every serverless transport.
    logging.getLogger("kombu.connection").setLevel(logging.ERROR)
    log_dir = data_dir / "logs"
    log_dir.mkdir(parents=True)
    env = run_environment(kind, data_dir, port)
    children = []
    try:
        sim = spawn("gateway-sim", ["gateway-sim", f"--port={port}", "--no-faults"], env, log_dir)
        children.append(sim)
        sim.wait_for_log(r"listening on (http://\S+)", 30)
        migrate = spawn("migrate", ["db", "upgrade"], env, log_dir)
        assert migrate.popen.wait(120) == 0, "migration failed"
        worker = spawn("worker", ["worker"], env, log_dir)
        children += [worker, spawn("beat", ["beat"], env, log_dir)]
        worker.wait_for_log(r"celery@\S+ ready", 120)
        rng = random.Random(count)
        numbers = [phone_number(rng, None) for _ in range(count)]
        t0 = time.monotonic()
        for number in numbers:
            enqueue_sms(number, "Benchmark message", "text")
        enqueued = time.monotonic() - t0
        done = 0
        while time.monotonic() - t0 < timeout:
            done = submitted_count()
            if done >= count:
                break
            crashed = [c.name for c in children if not c.alive()]
            if crashed:
                return f"{kind}: {done}/{count} submitted, then {crashed} exited (see {log_dir})"
            time.sleep(0.05)
        total = time.monotonic() - t0
        return (
            f"{kind}: {done}/{count} submitted in {total:.2f} s "
            f"(enqueue {enqueued:.2f} s, {done / total:.0f} msg/s end to end)"
        )
    finally:
        stop_all(children)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=180)
    parser.add_argument("--brokers", default="filesystem,sqla")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(one_run(args.one, args.count, args.data_dir, args.port, args.timeout), flush=True)
        return 0
    root = Path(tempfile.mkdtemp(prefix="sms-broker-bench-"))
    for run in range(args.runs):
        for kind in args.brokers.split(","):
            data_dir = root / str(run) / kind
            port = free_port()
            # Each run in a fresh interpreter with the run's settings as its environment:
            # enqueue_sms and the Celery app read theirs from it, and the app caches its
            # broker connection.
            result = subprocess.run(
                [sys.executable, __file__, f"--one={kind}", f"--data-dir={data_dir}",
                 f"--port={port}", f"--count={args.count}", f"--timeout={args.timeout}"],
                env=run_environment(kind, data_dir, port),
                capture_output=True,
                text=True,
                check=False,
            )  # fmt: skip
            line = (result.stdout.strip().splitlines() or [result.stderr.strip()[-300:]])[-1]
            print(f"run {run + 1}: {line}", flush=True)
    print(f"logs under {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
