"""The embedded broker: many producers and a consumer never see a half-written message."""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path
from typing import Any

from kombu.connection import Connection

import sms_pipeline.broker.embedded  # noqa: F401  (registers the transport for filesystem://)


def connect(**options: Any) -> Any:
    """A kombu connection to the embedded broker (kombu's Connection is untyped)."""
    return Connection("filesystem://", **options)  # type: ignore[no-untyped-call]


def test_concurrent_producers_and_consumer_see_only_whole_messages(tmp_path: Path) -> None:
    folder = tmp_path / "queue"
    folder.mkdir()
    processed = tmp_path / "processed"
    processed.mkdir()
    # Read messages and the exchange's bindings are kept in folders of this test's own
    # (kombu's defaults are the system's temporary folder and `control/` in the working
    # directory), so nothing else on the machine can touch them. A fresh control folder is
    # also the case that lost messages: producers binding the queue at once.
    options = {
        "control_folder": str(tmp_path / "control"),
        "data_folder_in": str(folder),
        "data_folder_out": str(folder),
        "store_processed": True,
        "processed_folder": str(processed),
    }
    producers, per_producer = 4, 250
    received: list[dict[str, object]] = []
    failures: list[BaseException] = []
    done = threading.Event()

    def produce(n: int) -> None:
        try:
            with connect(transport_options=options) as conn:
                queue = conn.SimpleQueue("q")
                for i in range(per_producer):
                    queue.put({"producer": n, "i": i, "pad": "x" * 2000})
                queue.close()
        except BaseException as exc:
            failures.append(exc)
            done.set()  # the consumer would wait for messages that never come

    def consume() -> None:
        try:
            with connect(transport_options=options) as conn:
                queue = conn.SimpleQueue("q")
                while len(received) < producers * per_producer and not done.is_set():
                    try:
                        message = queue.get(timeout=0.5)
                    except queue.Empty:
                        continue
                    received.append(message.payload)
                    message.ack()
                queue.close()
        except BaseException as exc:  # reported by the assertion below, not lost in a thread
            failures.append(exc)

    consumer = threading.Thread(target=consume)
    consumer.start()
    threads = [threading.Thread(target=produce, args=(n,)) for n in range(producers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    consumer.join(120)
    done.set()
    left = sorted(p.name for p in folder.iterdir())
    assert not failures, f"a producer or the consumer failed: {failures!r}"
    assert len(received) == producers * per_producer, (
        f"{len(received)} received; left: {left[:5]}; processed: {len(list(processed.iterdir()))}"
    )
    assert {(m["producer"], m["i"]) for m in received} == {
        (n, i) for n in range(producers) for i in range(per_producer)
    }
    assert not list(folder.glob(".*.part"))


def _publish(options: dict[str, object], n: int, count: int) -> None:
    with connect(transport_options=options) as conn:
        queue = conn.SimpleQueue("q")
        for i in range(count):
            queue.put({"producer": n, "i": i})
        queue.close()


def test_processes_binding_a_fresh_queue_at_once_lose_no_message(tmp_path: Path) -> None:
    # Several processes (worker, beat, API) starting on a fresh data folder all write the
    # exchange's binding file; none may read it empty and drop what it publishes.
    options: dict[str, object] = {
        "control_folder": str(tmp_path / "control"),
        "data_folder_in": str(tmp_path / "queue"),
        "data_folder_out": str(tmp_path / "queue"),
    }
    (tmp_path / "queue").mkdir()
    context = multiprocessing.get_context("spawn")
    rounds, processes, count = 5, 4, 20
    for r in range(rounds):
        options["control_folder"] = str(tmp_path / f"control{r}")
        children = [
            context.Process(target=_publish, args=(options, n, count)) for n in range(processes)
        ]
        for child in children:
            child.start()
        for child in children:
            child.join(60)
            assert child.exitcode == 0
    assert len(list((tmp_path / "queue").glob("*.q.msg"))) == rounds * processes * count


def test_transport_is_registered_for_filesystem_urls() -> None:
    with connect() as conn:
        assert type(conn.transport).__module__ == "sms_pipeline.broker.embedded"
