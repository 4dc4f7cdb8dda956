"""Fault-suite helpers: real worker/beat subprocesses, a Redis and a PostgreSQL of our own.

Every process started here lives in its own process group and is killed (SIGKILL to the
group) in fixture teardown, whatever the test did. Every wait is bounded in time. Figures
each test measures are printed (`FIGURE: ...`), shown again in the terminal summary
(tests/conftest.py) and merged into `.sms_pipeline/reliability.json` so RELIABILITY.md can
be refreshed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from sms_pipeline.supervise import CLI, ChildProcess
from tests.conftest import PG_PROBLEM, REDIS_PROBLEM, REDIS_TEST_URL, require
from tests.support import free_port, merge_json
from tests.support import wait_until as _wait_until

REPO = Path(__file__).resolve().parents[2]
FIGURES_FILE = REPO / ".sms_pipeline" / "reliability.json"
# Distinctive, so that a leak of it into a log or the broker is findable.
GATEWAY_LOGIN = "fault-suite"
GATEWAY_PASSWORD = "gw-Pw-7Qx2ZrK9"


# --- figures ---------------------------------------------------------------------------


def record_figure(name: str, **values: Any) -> None:
    """Print one figure line and merge it into the JSON file of the suite's figures."""
    line = f"FIGURE: {name} " + " ".join(f"{k}={v}" for k, v in values.items())
    print(line)
    measured_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    merge_json(FIGURES_FILE, {name: {**values, "measured_at": measured_at}})


# --- processes -------------------------------------------------------------------------


class Proc(ChildProcess):
    """A child process in its own process group, its output in a log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        super().__init__(name, argv, env, log_path, cwd=REPO)


class Procs:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.started: list[Proc] = []

    def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> Proc:
        proc = Proc(name, argv, env, self.folder / f"{name}.log")
        self.started.append(proc)
        return proc

    def worker(self, env: dict[str, str], name: str = "worker", concurrency: int = 8) -> Proc:
        argv = [*CLI, "worker", "--concurrency", str(concurrency), f"--hostname={name}@%h"]
        return self.spawn(name, argv, env)

    def beat(self, env: dict[str, str], name: str = "beat") -> Proc:
        schedule = self.folder / f"{name}-schedule"
        return self.spawn(name, [*CLI, "beat", f"--schedule={schedule}"], env)

    def logs(self) -> dict[str, str]:
        return {p.log_path.name: p.log_text() for p in self.started}

    def kill_all(self) -> None:
        for proc in reversed(self.started):
            proc.kill()


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    """Start subprocesses through this; every one is killed at teardown."""
    registry = Procs(tmp_path)
    try:
        yield registry
    finally:
        registry.kill_all()


def pipeline_env(**overrides: object) -> dict[str, str]:
    """The environment of a worker/beat: this test's settings plus short fault clocks.

    Periodic jobs a test does not exercise get an hour-long period, so they stay quiet.
    """
    env = dict(os.environ)
    env.update(
        PYTHONUNBUFFERED="1",
        SMS_LOG_LEVEL="INFO",
        SMS_SEND_LEASE_SECONDS="10",
        SMS_OUTBOX_GRACE_SECONDS="3",
        SMS_OUTBOX_SWEEP_SECONDS="1",
        SMS_STATUS_POLL_SECONDS="3600",
        SMS_QUEUE_POLL_SECONDS="3600",
        SMS_REPLICATION_SECONDS="3600",
        SMS_INBOUND_POLL_SECONDS="3600",
        SMS_WORKER_CONCURRENCY="8",
    )
    env.pop("PYTEST_CURRENT_TEST", None)
    env.update({key.upper(): str(value) for key, value in overrides.items()})
    return env


# --- the gateway simulator, with its live state --------------------------------------------


@pytest.fixture
def start_sim(settings_env: Any) -> Iterator[Callable[..., Any]]:
    """Start the simulator (state readable in-process); settings point at it."""
    from sms_pipeline.simulator import SimulatorConfig
    from sms_pipeline.simulator.runner import SimulatorServer

    servers: list[Any] = []

    def start(**config: Any) -> Any:
        config.setdefault("rules", ())
        config.setdefault("enroute_after", 0.2)
        config.setdefault("deliver_after", 0.4)
        server = SimulatorServer(
            SimulatorConfig(
                host="127.0.0.1", port=0, login=GATEWAY_LOGIN, password=GATEWAY_PASSWORD, **config
            )
        )
        server.start()
        servers.append(server)
        settings_env(
            IP2SMS_SEND_URL=server.send_url,
            IP2SMS_STATUS_URL=server.status_url,
            IP2SMS_LOGIN=GATEWAY_LOGIN,
            IP2SMS_PASSWORD=GATEWAY_PASSWORD,
        )
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.stop()


def sim_snapshot(state: Any) -> dict[str, Any]:
    """Copies of the simulator's counters (taken when traffic has stopped)."""
    for _ in range(5):
        try:
            return {
                "stats": dict(state.stats),
                "attempts": dict(state.attempts),
                "accepted_keys": dict(state.accepted_keys),
            }
        except RuntimeError:  # mutated while copying: try again
            time.sleep(0.05)
    raise AssertionError("simulator state kept changing")


# --- our own Redis -------------------------------------------------------------------------


class RedisServer:
    """A redis-server of the test's own on a free port (no persistence: a restart loses all)."""

    def __init__(self, procs: Procs) -> None:
        self.procs = procs
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: Proc | None = None
        self.starts = 0

    def start(self) -> None:
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
        self.starts += 1
        self.proc = self.procs.spawn(f"redis-{self.starts}", argv, dict(os.environ))
        self.wait_ready()

    def wait_ready(self, timeout: float = 15.0) -> None:
        import redis

        deadline = time.monotonic() + timeout
        while True:
            try:
                redis.Redis.from_url(self.url, socket_timeout=1).ping()
                return
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise AssertionError("own redis-server did not start") from None
                time.sleep(0.05)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()


@pytest.fixture
def own_redis(procs: Procs) -> RedisServer:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server binary not installed: cannot run a Redis of our own")
    server = RedisServer(procs)
    server.start()
    return server  # killed with the other processes by `procs`


@pytest.fixture
def use_broker(settings_env: Any, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], Any]:
    """Point this process's publishing (enqueue's outbox) at another broker URL."""
    from sms_pipeline.broker import dispatch
    from sms_pipeline.broker.app import create_app

    def use(url: str) -> Any:
        settings = settings_env(SMS_BROKER_URL=url)
        other = create_app(settings)
        monkeypatch.setattr(dispatch, "_app", lambda: other)
        return other

    return use


# --- our own PostgreSQL cluster ---------------------------------------------------------


def _pg_bindir() -> Path | None:
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists() and (candidate / "pg_ctl").exists():
            return candidate
    return None


class PgCluster:
    """A throwaway PostgreSQL cluster (initdb + pg_ctl) on a free port."""

    def __init__(self, bindir: Path, folder: Path, as_user: list[str]) -> None:
        self.bindir = bindir
        self.folder = folder
        self.data = folder / "data"
        self.as_user = as_user
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/faults"

    def _run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.as_user, *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=str(self.folder),
        )

    def init(self) -> str | None:
        """initdb; returns a reason when it cannot run here."""
        done = self._run(
            str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres",
            "--auth=trust", "-E", "UTF8", "--no-sync",
        )  # fmt: skip
        if done.returncode != 0:
            return f"initdb failed: {done.stderr.strip()[-300:]}"
        return None

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c max_connections=100"
        )
        done = self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", options,
            "-l", str(self.folder / "postgres.log"), "-w", "-t", "30", "start",
        )  # fmt: skip
        if done.returncode != 0:
            raise AssertionError(f"pg_ctl start failed: {done.stderr.strip()[-300:]}")

    def stop(self, mode: str = "immediate") -> None:
        self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop"
        )

    def kill_leftovers(self) -> None:
        pid_file = self.data / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError, ProcessLookupError):
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)


@pytest.fixture
def own_postgres() -> Iterator[PgCluster]:
    """A PostgreSQL cluster of the test's own, database `faults` created; stopped at teardown."""
    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
    as_user: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="sms-faults-pg-"))
    if os.geteuid() == 0:
        # initdb refuses to run as root: run the cluster as the postgres user.
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser: cannot start a cluster")
        import pwd

        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and no postgres user to run initdb as")
        os.chown(folder, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    cluster = PgCluster(bindir, folder, as_user)
    try:
        reason = cluster.init()
        if reason is not None:
            pytest.skip(reason)
        cluster.start()
        import psycopg

        with psycopg.connect(
            f"postgresql://postgres@127.0.0.1:{cluster.port}/postgres", autocommit=True
        ) as conn:
            conn.execute("CREATE DATABASE faults")
        yield cluster
    finally:
        cluster.stop()
        cluster.kill_leftovers()
        shutil.rmtree(folder, ignore_errors=True)


# --- the session's services --------------------------------------------------------------


@pytest.fixture
def session_redis() -> str:
    """The Redis db this test session claimed (tests/conftest.py); emptied after the test."""
    require(REDIS_PROBLEM)
    assert REDIS_TEST_URL is not None
    return REDIS_TEST_URL


@pytest.fixture
def clean_broker(session_redis: str) -> Iterator[str]:
    """The session's Redis db, emptied after the test: no stale task reaches the next one."""
    import redis

    try:
        yield session_redis
    finally:
        redis.Redis.from_url(session_redis).flushdb()


@pytest.fixture
def needs_postgres() -> None:
    require(PG_PROBLEM)


# --- counting messages -------------------------------------------------------------------


# Numbers the simulator treats as "always behaves" when its rules are on: suffixes 11..99.
def phone(i: int) -> str:
    return f"+38093{(i // 89) % 100_000:05d}{11 + i % 89:02d}"


def tally(ids: list[uuid.UUID] | None = None) -> dict[str, int]:
    """Messages per send_status (of `ids`, or of the whole log)."""
    from sms_pipeline.db import session_scope
    from sms_pipeline.db.models import SmsLog

    query = select(SmsLog.send_status, func.count()).group_by(SmsLog.send_status)
    if ids is not None:
        query = query.where(SmsLog.id.in_(ids))
    with session_scope() as session:
        return {status: int(n) for status, n in session.execute(query).all()}


def pending(counts: dict[str, int]) -> int:
    return counts.get("QUEUED", 0) + counts.get("SENDING", 0)


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    """tests.support.wait_until for the fault suite: a server may be restarting, so an
    error from `condition` means "ask again" until the deadline."""
    _wait_until(condition, timeout, what, 0.25, retry_errors=True)


def settle(ids: list[uuid.UUID], timeout: float) -> tuple[dict[str, int], float]:
    """Wait (bounded) until no message of `ids` is waiting or being sent; never fails.

    Returns the final tally and the seconds waited; the caller asserts on the tally, so
    a message still pending at the deadline is reported as lost.
    """
    started = time.monotonic()
    counts: dict[str, int] = {}
    while time.monotonic() - started < timeout:
        try:
            counts = tally(ids)
        except Exception:
            counts = {}
        if counts and pending(counts) == 0 and sum(counts.values()) == len(ids):
            break
        time.sleep(0.5)
    return counts, time.monotonic() - started


def lost_of(ids: list[uuid.UUID], counts: dict[str, int]) -> int:
    """Messages not in a final state (or missing altogether)."""
    return pending(counts) + (len(ids) - sum(counts.values()))


def outcome(sim: Any, ids: list[uuid.UUID], timeout: float) -> dict[str, Any]:
    """Once `ids` settle: their counts by status, how many were lost, and what the gateway
    saw (accepted twice, submitted more than once, duplicates it refused)."""
    counts, _ = settle(ids, timeout=timeout)
    snap = sim_snapshot(sim.state)
    return {
        "counts": counts,
        "lost": lost_of(ids, counts),
        "accepted_twice": snap["stats"].get("accepted", 0) - len(snap["accepted_keys"]),
        "submitted_twice": sum(1 for n in snap["attempts"].values() if n > 1),
        "duplicates_refused": snap["stats"].get("duplicates", 0),
    }
