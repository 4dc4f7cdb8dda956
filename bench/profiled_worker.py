"""`sms-pipeline worker` under yappi (CPU clock, every thread): where a message's CPU goes.

For finding per-message costs (`python -m bench mix --profile SECONDS`), not for figures
(the profiler slows the worker). py-spy cannot read this machine's processes, so the
worker profiles itself: once the file SMS_PROFILE_OUT + ".start" exists (the bench makes
it when its run starts) it profiles SMS_PROFILE_SECONDS (default 10) and writes the
functions by total CPU to SMS_PROFILE_OUT.

    python -m bench.profiled_worker --pool threads --concurrency 16
"""

from __future__ import annotations

import os
import sys
import threading
import time

from sms_pipeline.cli import main

try:  # a bench tool, not a dependency: .venv/bin/pip install yappi
    import yappi  # type: ignore[import-untyped,import-not-found,unused-ignore]
except ImportError:  # pragma: no cover
    sys.exit("bench.profiled_worker needs yappi: .venv/bin/pip install yappi")


def _profile() -> None:
    out = os.environ.get("SMS_PROFILE_OUT", "profiled-worker.txt")
    while not os.path.exists(out + ".start"):
        time.sleep(0.05)
    yappi.set_clock_type("cpu")
    yappi.start(builtins=True, profile_threads=True)
    time.sleep(float(os.environ.get("SMS_PROFILE_SECONDS", "10")))
    yappi.stop()
    stats = yappi.get_func_stats()
    stats.sort("ttot", "desc")
    with open(out, "w", encoding="utf-8") as f:
        stats.print_all(
            out=f,
            columns={
                0: ("name", 90),
                1: ("ncall", 10),
                2: ("tsub", 8),
                3: ("ttot", 8),
                4: ("tavg", 8),
            },
        )
        threads = yappi.get_thread_stats()
        threads.print_all(out=f)
    stats.save(out + ".pstat", type="pstat")


if __name__ == "__main__":
    threading.Thread(target=_profile, name="yappi-profile", daemon=True).start()
    sys.exit(main(["worker", *sys.argv[1:]]))
