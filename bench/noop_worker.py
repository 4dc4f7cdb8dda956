"""The baseline worker: `sms-pipeline worker` with one extra task that does nothing.

Same app, same configuration (late acks, prefetch 1, events on), same command line and
pool: the only difference from the real worker is the work each task does, so
`ours / baseline` says what our task costs on top of Celery's own per-task cost.

    python -m bench.noop_worker --concurrency 8 --pool threads
"""

from __future__ import annotations

import sys

from sms_pipeline.broker.app import app
from sms_pipeline.cli import main

NOOP_TASK = "bench.noop"


@app.task(name=NOOP_TASK, acks_late=True)  # type: ignore[untyped-decorator]
def noop() -> None:
    """Nothing: the per-task cost of Celery itself."""


if __name__ == "__main__":
    sys.exit(main(["worker", *sys.argv[1:]]))
