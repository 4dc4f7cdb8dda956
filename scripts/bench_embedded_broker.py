"""Measure the embedded broker candidates with the real processes (docs/embedded.md).

For each broker URL: a fresh data folder, the gateway simulator (no faults), one worker
and beat as child processes (as the demo starts them), then N messages enqueued from
this process; the clock runs from the first enqueue until every message is SUBMITTED.

    .venv/bin/python scripts/bench_embedded_broker.py --count 500 --runs 3
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sms_pipeline.demo import (
    child_environment,
    phone_number,
    spawn,
    stop_children,
    use_demo_settings,
    wait_for_line,
)


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


def one_run(kind: str, count: int, root: Path, timeout: float) -> str:
    import random

    from sms_pipeline import enqueue_sms

    data_dir = root / kind
    shutil.rmtree(data_dir, ignore_errors=True)
    log_dir = data_dir / "logs"
    log_dir.mkdir(parents=True)
    children = []
    try:
        env0 = child_environment(data_dir, "http://127.0.0.1:0")
        sim = spawn("gateway-sim", ["gateway-sim", "--port=0", "--no-faults"], env0, log_dir)
        children.append(sim)
        url = wait_for_line(sim, r"listening on (http://\S+)", 30).group(1)
        env = child_environment(data_dir, url)
        if kind == "sqla":
            env["SMS_BROKER_URL"] = f"sqla+sqlite:///{data_dir / 'broker.db'}"
        migrate = spawn("migrate", ["db", "upgrade"], env, log_dir)
        assert migrate.process.wait(120) == 0, "migration failed"
        worker = spawn("worker", ["worker"], env, log_dir)
        children += [worker, spawn("beat", ["beat"], env, log_dir)]
        wait_for_line(worker, r"celery@\S+ ready", 120)
        use_demo_settings(env)
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
            crashed = [c.name for c in children if not c.alive]
            if crashed:
                return f"{kind}: {done}/{count} submitted, then {crashed} exited (see {log_dir})"
            time.sleep(0.05)
        total = time.monotonic() - t0
        return (
            f"{kind}: {done}/{count} submitted in {total:.2f} s "
            f"(enqueue {enqueued:.2f} s, {done / total:.0f} msg/s end to end)"
        )
    finally:
        stop_children(children)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=180)
    parser.add_argument("--brokers", default="filesystem,sqla")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        # Each run in a fresh interpreter: the Celery app caches its broker connection.
        print(one_run(args.one, args.count, args.root, args.timeout), flush=True)
        return 0
    root = Path(tempfile.mkdtemp(prefix="sms-broker-bench-"))
    for run in range(args.runs):
        for kind in args.brokers.split(","):
            result = subprocess.run(
                [sys.executable, __file__, f"--one={kind}", f"--root={root / str(run)}",
                 f"--count={args.count}", f"--timeout={args.timeout}"],
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
