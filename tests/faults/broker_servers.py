"""Brokers of the fault suite's own: Redis + Sentinels, and a RabbitMQ node, on loopback.

Each server is a child process of `Procs` (its own process group, SIGKILLed at teardown);
its data lives in the test's tmp_path. None of them touches the machine's shared Redis
(6379) or RabbitMQ node (5672): own ports, own node name, own Erlang cookie and data.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from tests.faults.conftest import Proc, Procs
from tests.support import free_port

MASTER_NAME = "sms-faults"
# The Redis master's password (replica too): distinctive, so a leak into a log is findable.
MASTER_PASSWORD = "sentinel-Pw-4Rt8xQ"


def _client(port: int, password: str | None = None) -> Any:
    """A client on one of our loopback servers (redis-py's Sentinel calls are untyped)."""
    import redis

    return redis.Redis(port=port, password=password, socket_timeout=1)


def _wait(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):  # a server still starting: ask again
            if condition():
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


# --- Redis with Sentinel ---------------------------------------------------------------


class SentinelGroup:
    """A Redis master, one replica and three Sentinels (quorum 2), no persistence; the
    data nodes want MASTER_PASSWORD (in every URL of the list, as operators write it)."""

    def __init__(self, procs: Procs, folder: Path) -> None:
        self.procs = procs
        self.folder = folder
        self.redis_ports = [free_port(), free_port()]  # [0] starts as the master
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.servers: dict[int, Proc] = {}
        self.url = ";".join(
            f"sentinel://:{MASTER_PASSWORD}@127.0.0.1:{p}" for p in self.sentinel_ports
        )

    def _redis(self, port: int, *extra: str) -> None:
        argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1"]
        # Its own folder: a replica's full sync writes dump.rdb there even with --save "".
        argv += ["--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", str(self.folder)]
        argv += ["--requirepass", MASTER_PASSWORD, "--masterauth", MASTER_PASSWORD, *extra]
        self.servers[port] = self.procs.spawn(f"redis-{port}", argv, dict(os.environ))

    def start(self) -> None:
        master, replica = self.redis_ports
        self._redis(master)
        self._redis(replica, "--replicaof", "127.0.0.1", str(master))
        _wait(
            lambda: (
                _client(replica, MASTER_PASSWORD).info("replication")["master_link_status"] == "up"
            ),
            30,
            "the replica in sync",
        )
        for port in self.sentinel_ports:
            conf = self.folder / f"sentinel-{port}.conf"  # Sentinel rewrites its own file
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.folder}\n"
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master} 2\n"
                f"sentinel auth-pass {MASTER_NAME} {MASTER_PASSWORD}\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} 1000\n"
                f"sentinel failover-timeout {MASTER_NAME} 10000\n"
                f"sentinel parallel-syncs {MASTER_NAME} 1\n",
                encoding="utf-8",
            )
            argv = ["redis-server", str(conf), "--sentinel"]
            self.servers[port] = self.procs.spawn(f"sentinel-{port}", argv, dict(os.environ))

        def all_sentinels_see_everyone() -> bool:
            for port in self.sentinel_ports:
                state = _client(port).sentinel_master(MASTER_NAME)
                if state["num-slaves"] < 1 or state["num-other-sentinels"] < 2:
                    return False
            return True

        _wait(all_sentinels_see_everyone, 30, "three Sentinels that know master and replica")

    def master_port(self) -> int:
        """The master's port as the first Sentinel that answers tells it."""
        import redis

        for port in self.sentinel_ports:
            try:
                _host, master = _client(port).sentinel_get_master_addr_by_name(MASTER_NAME)
                return int(master)
            except redis.RedisError:
                continue
        raise AssertionError("no Sentinel answers")

    def kill_master(self) -> int:
        """kill -9 of the current master; returns its port."""
        port = self.master_port()
        self.servers[port].kill()
        return port

    def wait_promotion(self, old_master: int, timeout: float = 30.0) -> int:
        """Wait until the Sentinels name another master, and it answers as one."""

        _wait(lambda: self.master_port() != old_master, timeout, "a replica promoted")
        new = self.master_port()
        _wait(
            lambda: _client(new, MASTER_PASSWORD).info("replication")["role"] == "master",
            timeout,
            "the promoted replica to act as master",
        )
        return new


def start_sentinel_group(procs: Procs, tmp_path: Path) -> SentinelGroup:
    """For a fixture: a running group (killed with the other processes by `procs`)."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server binary not installed: cannot run Redis with Sentinel")
    group = SentinelGroup(procs, tmp_path)
    group.start()
    return group


# --- a RabbitMQ node -------------------------------------------------------------------


def declare_queues(app: Any) -> None:
    """Declare every queue of `app` (the callbacks queue too, which `sms-pipeline worker`
    does not consume: a callbacks worker of its own does), as a deployment has them."""
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        for queue in app.amqp.queues.values():
            queue.bind(channel).declare()


def _rabbitmq_server() -> Path | None:
    # The packaged script itself: /usr/sbin/rabbitmq-server is a wrapper that, run as root,
    # switches to the rabbitmq user (and its HOME, cookie and data) with `su`.
    found = sorted(Path("/usr/lib/rabbitmq/lib").glob("rabbitmq_server-*/sbin/rabbitmq-server"))
    if found:
        return found[-1]
    on_path = shutil.which("rabbitmq-server")
    return Path(on_path) if on_path and os.geteuid() != 0 else None


class RabbitNode:
    """A single RabbitMQ node with its own name, ports, cookie and data folder.

    Its data (quorum queues included) survives `kill()` + `start()`: a crash and restart.
    """

    def __init__(
        self,
        procs: Procs,
        folder: Path,
        server: Path,
        label: str = "rabbitmq",
        cookie: str | None = None,
    ) -> None:
        self.procs = procs
        self.server = server
        self.label = label
        self.folder = folder / label
        self.port = free_port()
        self.dist_port = free_port()
        self.name = f"sms-test-{os.getpid()}-{self.port}@localhost"
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}//"
        self.proc: Proc | None = None
        self.starts = 0
        home = self.folder / "home"
        for sub in (home, self.folder / "mnesia", self.folder / "log"):
            sub.mkdir(parents=True, exist_ok=True)
        cookie_file = home / ".erlang.cookie"
        cookie_file.write_text(cookie or f"smsfaults{os.getpid()}{self.port}", encoding="ascii")
        cookie_file.chmod(0o400)
        self.configure()
        (self.folder / "enabled_plugins").write_text("[].\n", encoding="ascii")  # no management

    def configure(self, peers: tuple[str, ...] = ()) -> None:
        """Write rabbitmq.conf; with `peers` (node names) the nodes form a cluster at boot."""
        lines = [f"listeners.tcp.1 = 127.0.0.1:{self.port}"]
        if peers:
            lines.append("cluster_formation.peer_discovery_backend = classic_config")
            lines += [
                f"cluster_formation.classic_config.nodes.{i} = {n}" for i, n in enumerate(peers, 1)
            ]
            lines.append("cluster_formation.randomized_startup_delay_range.min = 0")
            lines.append("cluster_formation.randomized_startup_delay_range.max = 1")
        (self.folder / "rabbitmq.conf").write_text("\n".join(lines) + "\n", encoding="ascii")

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            HOME=str(self.folder / "home"),
            RABBITMQ_NODENAME=self.name,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(self.folder / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.folder / "log"),
            RABBITMQ_CONFIG_FILE=str(self.folder / "rabbitmq.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.folder / "enabled_plugins"),
            RABBITMQ_PID_FILE=str(self.folder / "pid"),
        )
        return env

    def start(self, timeout: float = 60.0) -> None:
        self.spawn()
        self.wait_ready(timeout)

    def spawn(self) -> None:
        self.starts += 1
        name = f"{self.label}-{self.starts}"
        self.proc = self.procs.spawn(name, [str(self.server)], self.env())

    def wait_ready(self, timeout: float = 60.0) -> None:
        _wait(self.answers, timeout, f"RabbitMQ node {self.name} to accept AMQP connections")

    def answers(self) -> bool:
        import amqp  # type: ignore[import-untyped]

        connection = amqp.Connection(
            f"127.0.0.1:{self.port}", userid="guest", password="guest", connect_timeout=1
        )
        try:
            connection.connect()
            return True
        finally:
            connection.collect()

    def kill(self) -> None:
        """kill -9 of the node (a crash: quorum queues keep what they confirmed)."""
        assert self.proc is not None
        self.proc.kill()

    def _ctl(self, *args: str) -> str:
        import subprocess

        done = subprocess.run(
            [str(self.server.parent / "rabbitmqctl"), "-n", self.name, "-q", *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
            cwd=str(self.folder),
        )
        return done.stdout

    def provision(self, app: Any) -> None:
        """Declare `app`'s queues, then restart the node cleanly, as a deployment that has
        been running a while: RabbitMQ 3.10 writes a new quorum queue's Ra registration to
        disk lazily, and a queue created seconds before a kill -9 came back without a
        leader (`leader not known`; the worker's declare then waited forever: 1 run in 4).
        """
        declare_queues(app)
        self._ctl("stop")  # a clean stop flushes the registrations
        assert self.proc is not None
        self.proc.popen.wait(60)
        self.start()

    def queue_types(self) -> dict[str, str]:
        """queue name -> x-queue-type, as the node reports it (rabbitmqctl)."""
        types = {}
        for line in self._ctl("list_queues", "name", "type", "durable").splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] != "name":
                types[parts[0]] = f"{parts[1]} durable={parts[2]}"
        return types


def start_rabbit_node(procs: Procs, tmp_path: Path) -> RabbitNode:
    """For a fixture: a running node (killed with the other processes by `procs`)."""
    server = _rabbitmq_server()
    if server is None:
        pytest.skip("no RabbitMQ server script under /usr/lib/rabbitmq: cannot run a node")
    node = RabbitNode(procs, tmp_path, server)
    node.start()
    return node


class RabbitCluster:
    """Three RabbitMQ nodes on loopback forming one cluster at boot (classic peer discovery,
    one cookie); quorum queues get a member on each."""

    def __init__(self, procs: Procs, folder: Path, server: Path, size: int = 3) -> None:
        cookie = f"smsfaultscluster{os.getpid()}{free_port()}"
        self.nodes = [RabbitNode(procs, folder, server, f"rabbit{i}", cookie) for i in range(size)]
        peers = tuple(node.name for node in self.nodes)
        for node in self.nodes:
            node.configure(peers)
        # kombu's failover list: a client whose node goes tries the next one.
        self.url = ";".join(node.url for node in self.nodes)

    def start(self, timeout: float = 90.0) -> None:
        for node in self.nodes:
            node.spawn()
        for node in self.nodes:
            node.wait_ready(timeout)
        _wait(self.formed, timeout, "the three nodes to form one cluster")

    def members(self) -> dict[str, int]:
        """queue name -> how many nodes hold a member of it (asked of the second node)."""
        import json

        listed = self.nodes[1]._ctl("list_queues", "name", "members", "--formatter", "json")
        return {q["name"]: len(q["members"]) for q in json.loads(listed)}

    def formed(self) -> bool:
        status = self.nodes[0]._ctl("cluster_status", "--formatter", "json")
        import json

        running = json.loads(status).get("running_nodes", [])
        return len(running) == len(self.nodes)


def start_rabbit_cluster(procs: Procs, tmp_path: Path) -> RabbitCluster:
    """For a fixture: a running three-node cluster (killed with the other processes)."""
    server = _rabbitmq_server()
    if server is None:
        pytest.skip("no RabbitMQ server script under /usr/lib/rabbitmq: cannot run nodes")
    cluster = RabbitCluster(procs, tmp_path, server)
    cluster.start()
    return cluster
