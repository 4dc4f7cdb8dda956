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

Importing this module registers the transport for `filesystem://` URLs in this process
(celery_app imports it), so the URL users see stays kombu's.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import TRANSPORT_ALIASES, filesystem
from kombu.utils import json as kombu_json

POLLING_INTERVAL = 0.1
# kombu's encoder (it knows datetimes and UUIDs), as the original transport writes.
_dumps: Callable[[Any], str] = kombu_json.dumps


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


class Transport(filesystem.Transport):
    Channel = Channel
    polling_interval = POLLING_INTERVAL


TRANSPORT_ALIASES["filesystem"] = f"{__name__}:Transport"
