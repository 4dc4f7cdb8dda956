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
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import TRANSPORT_ALIASES, filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

POLLING_INTERVAL = 0.1


class Channel(filesystem.Channel):  # type: ignore[misc]
    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:
        """Write `payload` to a hidden file, then rename it to `<ms>_<uuid>.<queue>.msg`."""
        name = f"{round(time.monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        # A leading dot: the reader matches `name.partition('.')[2] == '<queue>.msg'`,
        # which a hidden name never does.
        partial = os.path.join(self.data_folder_out, f".{name}.part")
        try:
            with open(partial, "wb") as handle:
                handle.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc


class Transport(filesystem.Transport):  # type: ignore[misc]
    Channel = Channel
    polling_interval = POLLING_INTERVAL


TRANSPORT_ALIASES["filesystem"] = f"{__name__}:Transport"
