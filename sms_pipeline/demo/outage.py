"""The demo's second act: two gateways, one stopped mid-run, nothing lost, nothing twice.

After the fault mix is final, two more simulators (`north`, `south`) run in this process
and are added as gateways with `sms-pipeline gateway add`, the way an operator adds a second
gateway: from then on only they are gateways (the worker reads the table, no restart). A
producer child enqueues plain messages steadily; once `south` has accepted a few, it is
stopped (connection refused), and the worker takes it out of rotation and sends through
`north`. It is restarted on its port with what it had accepted (its earlier messages are
still delivered), probed, ramped back, and takes traffic again. `gateway list` is printed
while it is out and at the end; the verdict counts what each simulator accepted.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from rich.console import Console

from sms_pipeline.demo.environment import SIM_DELIVER_AFTER, SIM_ENROUTE_AFTER
from sms_pipeline.demo.progress import check_alive
from sms_pipeline.demo.record import RunRecord
from sms_pipeline.settings import Settings
from sms_pipeline.simulator.runner import SimulatorServer
from sms_pipeline.simulator.server import SimulatorConfig
from sms_pipeline.supervise import CLI, ChildError, ChildProcess

PRODUCER = (sys.executable, "-m", "sms_pipeline.demo.producer")
GATEWAYS = ("north", "south")
STOPPED = "south"
ACCEPTED_BEFORE_STOP = 4  # south's share of the traffic before it is stopped
# How long south stays stopped once the worker has taken it out: traffic meanwhile goes
# to north alone. Short, because the messages south accepted before it stopped wait for
# their status there (and end Terminated SMS_TERMINATE_AFTER_SECONDS after submission).
OUTAGE_SECONDS = 5.0
STEP_TIMEOUT = 60.0


@dataclasses.dataclass
class Outage:
    """The act's two simulators and what happened when."""

    servers: dict[str, SimulatorServer]
    stopped_wall: float = 0.0
    restarted_wall: float = 0.0
    record: RunRecord | None = None

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()


def _cli(
    name: str,
    args: Sequence[str],
    env: Mapping[str, str],
    log_dir: Path,
    one_shot: list[ChildProcess],
) -> str:
    """`sms-pipeline ARGS` as a child; its output (ChildError if it fails)."""
    child = ChildProcess(name, [*CLI, *args], env, log_dir / f"{name}.log")
    one_shot.append(child)
    if child.popen.wait(timeout=STEP_TIMEOUT) != 0:
        raise ChildError(f"sms-pipeline {' '.join(args[:2])} failed", child)
    return child.log_text()


def _wait(
    what: str, done: Callable[[], bool], children: Sequence[ChildProcess], producer: ChildProcess
) -> None:
    deadline = time.monotonic() + STEP_TIMEOUT
    while not done():
        check_alive([*children, producer])
        if time.monotonic() > deadline:
            message = f"gateway outage: {what} did not happen in {STEP_TIMEOUT:.0f} s"
            raise ChildError(message, producer)
        time.sleep(0.2)


def gateway_state(settings: Settings, name: str) -> str | None:
    from sqlalchemy import select

    from sms_pipeline.db import session_scope
    from sms_pipeline.db.models import Gateway

    with session_scope(settings) as session:
        return session.scalar(select(Gateway.state).where(Gateway.name == name))


def print_gateway_list(
    console: Console, env: Mapping[str, str], log_dir: Path, one_shot: list[ChildProcess], when: str
) -> None:
    output = _cli(f"gateway-list-{when}", ["gateway", "list"], env, log_dir, one_shot)
    console.print(f"  [bold]sms-pipeline gateway list[/bold] ({when}):")
    for line in output.splitlines():
        # (the CLI's own first line names the data folder, printed at the top already)
        if line.strip() and not line.startswith("sms-pipeline: data folder"):
            console.print(f"    {line}")


def start_gateways(
    console: Console, env: Mapping[str, str], log_dir: Path, one_shot: list[ChildProcess]
) -> Outage:
    """Two more simulators, added as the gateways `north` and `south`, weight 1 each."""
    config = SimulatorConfig(
        host="127.0.0.1",
        port=0,
        login=env["IP2SMS_LOGIN"],
        password=env["IP2SMS_PASSWORD"],
        rules=(),  # plain messages: this act is about the gateways, not the message faults
        enroute_after=SIM_ENROUTE_AFTER,
        deliver_after=SIM_DELIVER_AFTER,
        shutdown_timeout=0.2,
    )
    outage = Outage(servers={name: SimulatorServer(config) for name in GATEWAYS})
    for name, server in outage.servers.items():
        server.start()
        # The password stays in a variable the worker has (here the demo's IP2SMS_PASSWORD).
        _cli(
            f"gateway-add-{name}",
            ["gateway", "add", name, "--send-url", server.send_url, "--status-url",
             server.status_url, "--login", env["IP2SMS_LOGIN"], "--password-env",
             "IP2SMS_PASSWORD", "--weight", "1"],
            env, log_dir, one_shot,
        )  # fmt: skip
    console.print(
        "  gateways  north and south added (sms-pipeline gateway add, weight 1 each); "
        "from now on only they are gateways"
    )
    return outage


def run_outage(
    console: Console,
    env: Mapping[str, str],
    data_dir: Path,
    tag: str,
    settings: Settings,
    children: Sequence[ChildProcess],
    one_shot: list[ChildProcess],
    outage: Outage,
) -> RunRecord:
    """Steady traffic; south stopped, taken out, restarted, back in rotation. What went in."""
    log_dir = data_dir / "logs"
    stop_file = data_dir / f"{tag}.outage-stop"
    out = data_dir / f"{tag}.outage.json"
    producer = ChildProcess(
        "producer-outage",
        [*PRODUCER, "--tag", tag, "--steady-until", str(stop_file), "--out",
         str(out)],
        env, log_dir / "producer-outage.log",
    )  # fmt: skip
    one_shot.append(producer)
    south = outage.servers[STOPPED]
    _wait(
        f"{STOPPED} accepting messages",
        lambda: len(south.state.accepted_keys) >= ACCEPTED_BEFORE_STOP,
        children,
        producer,
    )
    port = int(south.base_url.rsplit(":", 1)[1])
    south.stop()
    outage.stopped_wall = time.time()
    console.print(
        f"  outage    {STOPPED} stopped after it accepted {len(south.state.accepted_keys)} "
        "messages: connection refused"
    )
    _wait(
        f"{STOPPED} out of rotation",
        lambda: gateway_state(settings, STOPPED) == "down",
        children,
        producer,
    )
    console.print(
        f"  outage    {STOPPED} out of rotation after "
        f"{time.time() - outage.stopped_wall:.1f} s; new messages go to north"
    )
    print_gateway_list(console, env, log_dir, one_shot, "south out of rotation")
    time.sleep(OUTAGE_SECONDS)  # the outage itself: traffic meanwhile goes to north alone
    # Restarted on its port with its store: what it accepted before is still delivered.
    south = SimulatorServer(dataclasses.replace(south.config, port=port), state=south.state)
    outage.servers[STOPPED] = south
    south.start()
    outage.restarted_wall = time.time()
    console.print(f"  outage    {STOPPED} restarted on its port; probed, then ramped back")
    _wait(
        f"{STOPPED} back in rotation",
        lambda: gateway_state(settings, STOPPED) == "up",
        children,
        producer,
    )
    _wait(
        f"traffic back on {STOPPED}",
        lambda: any(
            m.created_wall > outage.restarted_wall for m in list(south.state.messages.values())
        ),
        children,
        producer,
    )
    stop_file.touch()
    if producer.popen.wait(timeout=STEP_TIMEOUT) != 0:
        raise ChildError(f"producer-outage exited with code {producer.returncode}", producer)
    outage.record = RunRecord.from_json(out.read_text(encoding="utf-8"))
    console.print(
        f"  enqueued  {len(outage.record.by_id)} plain messages steadily across the outage"
    )
    return outage.record


@dataclasses.dataclass(frozen=True)
class OutageVerdict:
    lines: list[str]
    problems: list[str]


def outage_verdict(outage: Outage, settings: Settings) -> OutageVerdict:
    """What each simulator accepted against what the database says; the switches."""
    from sqlalchemy import select

    from sms_pipeline.db import session_scope
    from sms_pipeline.db.models import GatewayEvent, SmsLog

    assert outage.record is not None
    ids = list(outage.record.by_id)
    with session_scope(settings) as session:
        rows = session.execute(
            select(SmsLog.uniq_key, SmsLog.gateway, SmsLog.gateway_status).where(SmsLog.id.in_(ids))
        ).all()
        switches = [
            (e.from_state, e.to_state)
            for e in session.scalars(
                select(GatewayEvent)
                .where(GatewayEvent.gateway == STOPPED)
                .order_by(GatewayEvent.at, GatewayEvent.id)
            )
        ]
    accepted = {name: server.state.accepted_keys for name, server in outage.servers.items()}
    by_gateway = dict.fromkeys(GATEWAYS, 0)
    both = wrong_row = not_delivered = 0
    for uniq_key, gateway, status in rows:
        holders = [name for name, keys in accepted.items() if uniq_key in keys]
        both += len(holders) > 1
        wrong_row += holders != [gateway]
        not_delivered += status != "Delivered"
        if gateway in by_gateway:
            by_gateway[gateway] += 1
    during = sum(
        1
        for m in list(outage.servers["north"].state.messages.values())
        if outage.stopped_wall < m.created_wall < outage.restarted_wall
    )
    back = sum(
        1
        for m in list(outage.servers[STOPPED].state.messages.values())
        if m.created_wall > outage.restarted_wall
    )
    path = " → ".join([switches[0][0], *(to for _, to in switches)]) if switches else "no switch"
    lines = [
        f"gateway outage: {len(rows)} messages, "
        + ", ".join(f"{name} {n}" for name, n in by_gateway.items())
        + f"; {during} through north while {STOPPED} was stopped, {back} on {STOPPED} "
        "after it returned",
        f"accepted by both simulators: {both}; sms_log.gateway not the simulator that "
        f"accepted it: {wrong_row}; not Delivered: {not_delivered}",
        f"{STOPPED} in gateway_events: {path}",
    ]
    problems = []
    if len(rows) != len(ids):
        problems.append(f"{len(ids) - len(rows)} outage messages missing from sms_log")
    if both:
        problems.append(f"{both} messages accepted by both simulators")
    if wrong_row:
        problems.append(f"{wrong_row} messages whose sms_log.gateway is not where they went")
    if not_delivered:
        problems.append(f"{not_delivered} outage messages not Delivered")
    if ("up", "down") not in switches or not switches or switches[-1][1] != "up":
        problems.append(f"{STOPPED}'s switches were {path}, not up → down … → up")
    if not during:
        problems.append(f"no message went through north while {STOPPED} was stopped")
    return OutageVerdict(lines, problems)
