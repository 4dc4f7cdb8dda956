"""What every benchmark shares: its own database and Redis db, subprocesses, the baseline.

`BenchEnv` claims a Redis db as the tests do (tests/support.py, shared with them: a lock key
in db 0; only that db is ever flushed) and creates, migrates and finally drops a
PostgreSQL database of its own. It sets the environment BEFORE anything imports
`sms_pipeline.broker.app` (the app reads its broker at import), so import pipeline
modules inside functions, after `BenchEnv.open()`.

Worker, beat and simulator run as subprocesses in their own process groups (killed by
their own pid at the end), like tests/faults/conftest.py: the bench measures the real
processes. The baseline is a no-op task run by `bench.noop_worker` (the same worker
command and app configuration) on the same broker, pool and concurrency.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from sms_pipeline.supervise import CLI, ChildProcess
from tests.support import (
    REDIS_BASE_URL,
    claim_redis_db,
    create_database,
    database_url,
    drop_database,
    empty_tables,
    free_port,
    merge_json,
    release_redis_db,
)
from tests.support import wait_until as _wait_until

REPO = Path(__file__).resolve().parents[1]
RESULTS_FILE = REPO / ".sms_pipeline" / "bench-results.json"
LOGIN = "bench"
PASSWORD = "bench-only-password"  # noqa: S105 - a throwaway loopback simulator
QUEUE_PRIORITIES = range(10)  # kombu's Redis priority steps: `q`, `q:1` ... `q:9`


def log(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", flush=True)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an unsorted sequence (0.0 when empty)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def load_average() -> tuple[float, float, float]:
    one, five, fifteen = os.getloadavg()
    return round(one, 2), round(five, 2), round(fifteen, 2)


# --- processes -------------------------------------------------------------------------


class Proc(ChildProcess):
    """A child in its own process group, output to FOLDER/NAME.log."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], folder: Path) -> None:
        super().__init__(name, argv, env, folder / f"{name}.log", cwd=REPO)

    def _group(self) -> list[str]:
        """The pids of the process's group: itself and a prefork pool's children."""
        pids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int(stat.read_text().rsplit(")", 1)[1].split()[2]) == self.pid:
                    pids.append(stat.parent.name)
        return pids

    def rss_mib(self) -> float:
        """Resident memory of the whole group (a prefork pool's children included)."""
        kib = 0
        for pid in self._group():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        kib += int(line.split()[1])
        return round((kib or self.rss_kib()) / 1024, 1)

    def cpu_seconds(self) -> float:
        """User + system CPU of the whole group so far (prefork children included)."""
        ticks = 0
        for pid in self._group():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                ticks += int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK") if ticks else super().cpu_seconds()


# --- the environment -------------------------------------------------------------------


class BenchEnv:
    """A PostgreSQL database and a Redis db of the bench's own, and its subprocesses."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="sms-bench-"))
        self.db_name = f"sms_bench_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        self.pg_url = database_url(self.db_name)
        self.redis_db: int | None = None
        self.redis_url = ""
        self.procs: list[Proc] = []
        self._db_created = False
        self.sim_url = ""
        self.results: dict[str, Any] = {}
        self._baselines: dict[tuple[str, int], dict[str, Any]] = {}

    # --- set up / tear down
    def open(self) -> BenchEnv:
        self.redis_db = claim_redis_db()  # emptied: leftovers would skew the queue
        self.redis_url = f"{REDIS_BASE_URL}/{self.redis_db}"
        create_database(self.db_name)
        self._db_created = True
        os.environ.update(self.base_env())
        from sms_pipeline.settings import reset_settings_cache

        reset_settings_cache()
        from sms_pipeline.db import get_engine, migrate

        engine = get_engine()
        assert engine.url.database == self.db_name
        migrate.upgrade(engine)
        return self

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()
        with contextlib.suppress(Exception):
            from sms_pipeline.db import dispose_engines
            from sms_pipeline.metrics.store import shutdown_store

            shutdown_store()  # its flush thread must not outlive the database
            dispose_engines()
        if self._db_created:
            drop_database(self.db_name)
            self._db_created = False
        if self.redis_db is not None:
            with contextlib.suppress(Exception):
                release_redis_db(self.redis_db)
            self.redis_db = None

    def __enter__(self) -> BenchEnv:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def base_env(self) -> dict[str, str]:
        return {
            "SMS_DATA_DIR": str(self.folder),
            "SMS_DATABASE_URL": self.pg_url,
            "SMS_BROKER_URL": self.redis_url,
            "IP2SMS_LOGIN": LOGIN,
            "IP2SMS_PASSWORD": PASSWORD,
            "IP2SMS_READ_TIMEOUT": "10",
            # The loopback simulator stands in for the gateway: production processes refuse
            # to start against it (and without a privacy key) unless told it is a demo.
            "SMS_ALLOW_SIMULATOR": "true",
            "SMS_PRIVACY_KEY": "bench-privacy-key-not-a-secret",
        }

    def redis(self) -> Any:
        import redis

        return redis.Redis.from_url(self.redis_url)

    # --- the database
    @contextlib.contextmanager
    def second_database(self, suffix: str) -> Iterator[str]:
        """A second migrated database of the bench's own (dropped on exit); its URL."""
        name = f"{self.db_name}_{suffix}"
        url = database_url(name)
        create_database(name)
        try:
            with self.using_database(url):
                from sms_pipeline.db import get_engine, migrate

                migrate.upgrade(get_engine())
            yield url
        finally:
            with self.using_database(url):
                from sms_pipeline.db import dispose_engines

                dispose_engines()
            drop_database(name)

    @contextlib.contextmanager
    def using_database(self, url: str) -> Iterator[None]:
        """Point this process (settings, engines, COPY, VACUUM) at `url` for the block."""
        from sms_pipeline.settings import reset_settings_cache

        previous = self.pg_url
        self.pg_url = os.environ["SMS_DATABASE_URL"] = url
        reset_settings_cache()
        try:
            yield
        finally:
            self.pg_url = os.environ["SMS_DATABASE_URL"] = previous
            reset_settings_cache()

    def truncate(self) -> None:
        """Empty every pipeline table (between benchmarks) and the broker db."""
        from sms_pipeline.db import get_engine

        empty_tables(get_engine())
        self.redis().flushdb()
        from sms_pipeline.metrics.hooks import forget_account_names

        forget_account_names()

    def vacuum_analyze(self, table: str = "verification.sms_log") -> None:
        import psycopg

        dsn = self.pg_url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"VACUUM ANALYZE {table}")
            # Write the bulk load out now, not in the middle of the next measurement.
            conn.execute("CHECKPOINT")

    # --- processes
    def pipeline_env(self, concurrency: int, **overrides: object) -> dict[str, str]:
        """A worker/beat environment: periodic jobs a benchmark does not use stay quiet."""
        env = dict(os.environ)
        env.update(self.base_env())
        env.update(
            PYTHONUNBUFFERED="1",
            SMS_WORKER_CONCURRENCY=str(concurrency),  # sizes the PG pool (concurrency + 2)
            SMS_OUTBOX_SWEEP_SECONDS="3600",
            SMS_STATUS_POLL_SECONDS="3600",
            SMS_QUEUE_POLL_SECONDS="3600",
            SMS_REPLICATION_SECONDS="3600",
            SMS_INBOUND_POLL_SECONDS="3600",
            IP2SMS_SEND_URL=f"{self.sim_url}/ip2sms/",
            IP2SMS_STATUS_URL=f"{self.sim_url}/ip2sms-request/",
        )
        env.update({k.upper(): str(v) for k, v in overrides.items()})
        return env

    def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> Proc:
        proc = Proc(name, argv, env, self.folder)
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc) -> None:
        proc.stop()
        if proc in self.procs:
            self.procs.remove(proc)

    def start_simulator(self, latency_ms: float = 0.0) -> Proc:
        """`sms-pipeline gateway-sim --no-faults`: every message Delivered at once."""
        import requests

        port = free_port()
        argv = [*CLI, "gateway-sim", "--no-faults", "--port", str(port)]
        argv += ["--latency-ms", str(latency_ms), "--enroute-after", "0", "--deliver-after", "0"]
        proc = self.spawn(f"simulator-{port}", argv, dict(os.environ, **self.base_env()))
        self.sim_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(f"{self.sim_url}/_sim/stats", timeout=1).raise_for_status()
                break
            except requests.RequestException:
                if time.monotonic() > deadline or not proc.alive():
                    raise RuntimeError(
                        f"simulator did not start:\n{proc.log_text()[-2000:]}"
                    ) from None
                time.sleep(0.05)
        from sms_pipeline.settings import reset_settings_cache

        os.environ["IP2SMS_SEND_URL"] = f"{self.sim_url}/ip2sms/"
        os.environ["IP2SMS_STATUS_URL"] = f"{self.sim_url}/ip2sms-request/"
        reset_settings_cache()
        return proc

    def start_worker(
        self,
        *,
        pool: str,
        concurrency: int,
        baseline: bool = False,
        queues: str | None = None,
        name: str = "worker",
        **env_overrides: object,
    ) -> Proc:
        entry = [sys.executable, "-m", "bench.noop_worker"] if baseline else [*CLI, "worker"]
        if env_overrides.pop("traced", False):
            entry = [sys.executable, "-m", "bench.traced_worker"]
        if env_overrides.get("sms_profile_out"):
            entry = [sys.executable, "-m", "bench.profiled_worker"]
        argv = [*entry, "--pool", pool, "--concurrency", str(concurrency)]
        argv += [f"--hostname={name}-{uuid.uuid4().hex[:6]}@%h"]
        if queues:
            argv += ["--queues", queues]
        proc = self.spawn(name, argv, self.pipeline_env(concurrency, **env_overrides))
        proc.wait_for_log(" ready.")
        return proc

    def start_beat(self, **env_overrides: object) -> Proc:
        schedule = self.folder / f"beat-{uuid.uuid4().hex[:6]}"
        argv = [*CLI, "beat", f"--schedule={schedule}"]
        return self.spawn("beat", argv, self.pipeline_env(1, **env_overrides))

    # --- the broker
    def queued(self, queues: Iterable[str] = ("bulk", "urgent", "status")) -> int:
        """Messages waiting in the broker (every priority list of `queues`)."""
        pipe = self.redis().pipeline()
        for queue in queues:
            for p in QUEUE_PRIORITIES:
                pipe.llen(queue if p == 0 else f"{queue}:{p}")
        return int(sum(pipe.execute()))

    def unacked(self) -> int:
        return int(self.redis().hlen("unacked"))

    def drop_queue(self, queue: str) -> None:
        self.redis().delete(*[queue if p == 0 else f"{queue}:{p}" for p in QUEUE_PRIORITIES])

    # --- the baseline
    def baseline(self, pool: str, concurrency: int, count: int) -> dict[str, Any]:
        """No-op tasks/s through the same kind of worker (measured once per pool+concurrency)."""
        key = (pool, concurrency)
        if key in self._baselines:
            return self._baselines[key]
        from bench.noop_worker import NOOP_TASK
        from sms_pipeline.broker.app import BULK_QUEUE, app

        for _ in range(count):
            app.send_task(NOOP_TASK, queue=BULK_QUEUE)
        worker = self.start_worker(pool=pool, concurrency=concurrency, baseline=True, name="noop")
        cpu0 = worker.cpu_seconds()
        started = wait_until(lambda: self.queued() < count, 60, "the noop worker to start")
        finished = wait_until(
            lambda: self.queued() == 0 and self.unacked() == 0, 300, "noop tasks", interval=0.005
        )
        cpu = worker.cpu_seconds() - cpu0
        rss = worker.rss_mib()
        self.stop(worker)
        seconds = finished - started
        result = {
            "pool": pool,
            "concurrency": concurrency,
            "tasks": count,
            "seconds": round(seconds, 3),
            "per_second": round(count / seconds, 1),
            "worker_rss_mib": rss,
            "worker_cpu_ms_per_task": round(1000 * cpu / count, 3),
        }
        log(f"baseline no-op {pool} c={concurrency}: {result['per_second']:.0f} tasks/s")
        self._baselines[key] = result
        return result


def wait_until(
    condition: Callable[[], object], timeout: float, what: str, interval: float = 0.01
) -> float:
    """tests.support.wait_until polled finely: its result is the end of a timed run."""
    return _wait_until(condition, timeout, what, interval)


# --- rows ------------------------------------------------------------------------------


class WorkerProfile:
    """yappi inside the worker (`bench.profiled_worker`) for `seconds` once `start()` is called:
    py-spy cannot read this machine's processes. Off when seconds is 0 or out is None."""

    def __init__(self, seconds: float, out: Path | None) -> None:
        self.on = seconds > 0 and out is not None
        self.seconds, self.out = seconds, out
        self.env: dict[str, Any] = {}
        if self.on and out is not None:
            out.unlink(missing_ok=True)
            Path(f"{out}.start").unlink(missing_ok=True)
            self.env = {"sms_profile_out": str(out), "sms_profile_seconds": seconds}

    def start(self) -> None:
        if self.on:
            Path(f"{self.out}.start").touch()

    def wait(self) -> None:
        """Until the worker has written its profile."""
        if self.on and self.out is not None:
            wait_until(self.out.exists, self.seconds + 60, "the worker's profile", 0.2)


def phone(i: int) -> str:
    return f"+38093{i % 10_000_000:07d}"


def default_account_id() -> int:
    from sms_pipeline.db import session_scope
    from sms_pipeline.services.accounts import get_or_create_default_account

    with session_scope() as session:
        return get_or_create_default_account(session).id


def message_row(i: int, account_id: int, now: dt.datetime, **values: Any) -> dict[str, Any]:
    """A sms_log row as enqueue_sms writes it (QUEUED, due now), overridable."""
    message_id = uuid.uuid4()
    row: dict[str, Any] = {
        "id": message_id,
        "phone_number": phone(i),
        "type": "text",
        "body": f"Bench message {i}: your appointment is tomorrow at 10:00.",
        "account_id": account_id,
        "priority": 0,
        "due_at": now,
        "attempts": 0,
        "send_status": "QUEUED",
        "uniq_key": message_id.hex,
        "segments": 1,
        "encoding": "GSM-7",
        "flash": False,
        "status_checks": 0,
        "inserted_at": now,
        "updated_at": now,
        "dispatched_at": now,
    }
    row.update(values)
    return row


def insert_rows(rows: list[dict[str, Any]], batch: int = 5000) -> None:
    from sqlalchemy import insert

    from sms_pipeline.db import get_engine
    from sms_pipeline.db.models import SmsLog

    keys = {k for r in rows for k in r}
    rows = [{k: r.get(k) for k in keys} for r in rows]  # one statement: the same columns
    engine = get_engine()
    for start in range(0, len(rows), batch):
        with engine.begin() as conn:
            conn.execute(insert(SmsLog), rows[start : start + batch])


_HISTORY_COLUMNS = (
    "id, phone_number, type, body, gateway_id, gateway_status, status_changed_at, "
    "updated_at, inserted_at, account_id, priority, due_at, attempts, send_status, "
    "submitted_at, flash, segments, encoding, status_checks, final_at"
)


def copy_delivered_rows(
    env: BenchEnv,
    count: int,
    account_id: int,
    *,
    age_days: int,
    spread_days: int,
    step_seconds: float,
    start_index: int = 0,
    types: Sequence[str] = ("text",),
) -> float:
    """COPY `count` final (Delivered) rows, row i inserted `age_days` plus
    `i * step_seconds` (modulo `spread_days`) ago, its type taken from `types` in turn;
    returns rows/s. A history this size is loaded far faster than by INSERT."""
    import psycopg

    now = dt.datetime.now(dt.UTC)
    dsn = env.pg_url.replace("postgresql+psycopg://", "postgresql://")
    started = time.perf_counter()
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY verification.sms_log ({_HISTORY_COLUMNS}) FROM STDIN") as copy:
            buf = io.StringIO()
            for n in range(count):
                i = start_index + n
                offset = (i * step_seconds) % (spread_days * 86400)
                at = now - dt.timedelta(days=age_days, seconds=offset)
                ts, done = at.isoformat(), (at + dt.timedelta(seconds=7)).isoformat()
                kind = types[i % len(types)]
                buf.write(
                    f"{uuid.uuid4()}\t{phone(i)}\t{kind}\tHistory message {i}\t"
                    f"{10**15 + i}\tDelivered\t{done}\t{done}\t{ts}\t{account_id}\t0\t{ts}\t1\t"
                    f"SUBMITTED\t{ts}\tf\t1\tGSM-7\t1\t{done}\n"
                )
                if n % 20000 == 19999:
                    copy.write(buf.getvalue())
                    buf = io.StringIO()
            copy.write(buf.getvalue())
        conn.commit()
    return count / (time.perf_counter() - started)


def publish_sends(rows: list[dict[str, Any]]) -> None:
    """Publish the send tasks of rows just inserted, through the outbox's own publish()."""
    from sms_pipeline.services.outbox import Dispatch, publish

    publish(Dispatch(r["id"], r["type"], r["priority"]) for r in rows)


def count_where(sql: str, **params: Any) -> int:
    from sqlalchemy import text

    from sms_pipeline.db import get_engine

    with get_engine().connect() as conn:
        return int(conn.execute(text(sql), params).scalar() or 0)


# --- results ---------------------------------------------------------------------------


def save_results(results: dict[str, Any]) -> Path:
    """Merge this run's figures into .sms_pipeline/bench-results.json."""
    merge_json(RESULTS_FILE, results)
    return RESULTS_FILE
