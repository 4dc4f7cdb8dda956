"""The embedded broker: kombu's filesystem transport, made safe for several producers.

kombu 5.7's filesystem transport creates the message file under its final name and only
then writes it, while a consumer lists the folder, moves and reads any `*.msg` it sees
without taking the writer's lock. A consumer that wins that race reads an empty file and
the worker dies with `JSONDecodeError` (seen in the demo and the broker benchmark, with
the demo, beat and the worker all publishing). Here a message is written under a hidden
name and renamed into place: a rename is atomic, so a reader sees all of it or nothing.

The consumer also sleeps `polling_interval` whenever it has nothing to take, which
includes every moment its prefetch window is full: kombu's default of 1 s caps a worker
at about one prefetch window per second. 0.1 s keeps an idle worker at ten directory
listings a second.

Bindings have the same flaw: kombu creates `<exchange>.exchange` by opening it for writing
(which empties it) before it takes its lock, so a producer that reads the table in that
moment gets an empty file and its publish fails with `JSONDecodeError` (two processes
starting at once, or a fresh data folder). Here the table is rewritten whole under a
hidden name and renamed into place, with a lock file of its own serialising the
read-modify-write of concurrent binders. And kombu keeps its bindings in a state shared by
every connection of a process, marked bound before the file is written: a second thread
that declares the same queue meanwhile skips the bind, publishes, finds no file and its
message is dropped without a word (73 of 1,000 in a test with four producer threads). A
process-wide lock makes "mark and write" one step.

Flower works here too: kombu's filesystem channel has fanout (remote control) and topic
(task events) exchanges through the same shared tables. What it lacks is auto-delete: a
Flower that stops leaves its event queue bound, and every event after that would wait in
a file for a consumer that never comes. `forget_event_consumers` unbinds them.

Importing this module registers the transport for `filesystem://` URLs in this process
(celery_app imports it), so the URL users see stays kombu's.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import TRANSPORT_ALIASES, filesystem, virtual
from kombu.utils import json as kombu_json

POLLING_INTERVAL = 0.1
# kombu's encoder (it knows datetimes and UUIDs), as the original transport writes.
_dumps: Callable[[Any], str] = kombu_json.dumps
# kombu's binding state is per process (a class attribute), so is the lock guarding it.
_BIND_LOCK = threading.Lock()


class Channel(filesystem.Channel):
    def _put(self, queue: Any, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        """Write `payload` to a hidden file, then rename it to `<ms>_<uuid>.<queue>.msg`."""
        name = f"{round(time.monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        # A leading dot: the reader matches `name.partition('.')[2] == '<queue>.msg'`,
        # which a hidden name never does.
        partial = os.path.join(self.data_folder_out, f".{name}.part")
        try:
            with open(partial, "wb") as handle:
                handle.write(_dumps(payload).encode())
            os.replace(partial, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc

    def queue_bind(self, *args: Any, **kwargs: Any) -> Any:
        with _BIND_LOCK:
            return super().queue_bind(*args, **kwargs)  # type: ignore[no-untyped-call]

    def _queue_bind(self, exchange: Any, routing_key: Any, pattern: Any, queue: Any) -> None:
        entry = filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or "")
        with self._table_lock(exchange):
            table = self.get_table(exchange)  # type: ignore[no-untyped-call]
            if entry not in table:
                self._write_table(exchange, [entry, *table])

    def _delete(
        self, queue: Any, exchange: Any, routing_key: Any, pattern: Any, *args: Any, **kwargs: Any
    ) -> None:
        # The virtual base forgets the queue; the exchange file is ours to rewrite.
        virtual.Channel._delete(self, queue, exchange, routing_key, pattern, *args, **kwargs)  # type: ignore[no-untyped-call]
        entry = filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or "")
        with self._table_lock(exchange):
            table = self.get_table(exchange)  # type: ignore[no-untyped-call]
            if entry in table:
                self._write_table(exchange, [q for q in table if q != entry])

    def _table_lock(self, exchange: Any) -> Any:
        return _table_lock(self.control_folder, exchange)

    def _write_table(self, exchange: Any, table: list[Any]) -> None:
        _replace_table(self._exchange_file(exchange), table)  # type: ignore[no-untyped-call]


@contextmanager
def _table_lock(control_folder: Path, exchange: str) -> Iterator[None]:
    control_folder.mkdir(parents=True, exist_ok=True)
    path = control_folder / f"{exchange}.exchange.lock"
    with open(path, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _replace_table(final: Path, table: list[Any]) -> None:
    partial = final.with_name(f".{final.name}.{uuid.uuid4().hex}.part")
    try:
        partial.write_text(_dumps(table))
        os.replace(partial, final)
    except OSError as exc:
        raise ChannelError(f"Cannot write {final}") from exc


EVENT_EXCHANGE = "celeryev"  # Celery's task-event exchange (Flower binds a queue to it)


def forget_event_consumers(control_folder: Path, queue_folder: Path) -> int:
    """Unbind every task-event consumer (a Flower that stopped, or is about to start) and
    delete the events waiting for it; the number of files deleted."""
    with _table_lock(control_folder, EVENT_EXCHANGE):
        _replace_table(control_folder / f"{EVENT_EXCHANGE}.exchange", [])
    deleted = 0
    for name in os.listdir(queue_folder):
        # `<ms>_<uuid>.<queue>.msg` with queue `celeryev.<uuid>`
        if name.partition(".")[2].startswith(f"{EVENT_EXCHANGE}.") and name.endswith(".msg"):
            try:
                os.unlink(queue_folder / name)
                deleted += 1
            except FileNotFoundError:
                pass  # a consumer took it meanwhile
    return deleted


class Transport(filesystem.Transport):
    Channel = Channel
    polling_interval = POLLING_INTERVAL


TRANSPORT_ALIASES["filesystem"] = f"{__name__}:Transport"
