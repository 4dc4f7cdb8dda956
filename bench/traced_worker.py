"""`sms-pipeline worker` under tracemalloc: where does the memory that stays go?

For hunting growth found by the soak (`python -m bench soak --trace`), not for figures
(tracing slows the worker and adds its own memory). After SMS_TRACE_WARMUP seconds
(default 60) it takes a snapshot; every SMS_TRACE_EVERY seconds (default 60) it writes
the allocation sites that grew most since then (net of frees) to SMS_TRACE_OUT.

    python -m bench.traced_worker --pool threads --concurrency 16
"""

from __future__ import annotations

import os
import sys
import threading
import time
import tracemalloc

from sms_pipeline.cli import main


def _report() -> None:
    out = os.environ.get("SMS_TRACE_OUT", "traced-worker.txt")
    time.sleep(float(os.environ.get("SMS_TRACE_WARMUP", "60")))
    first = tracemalloc.take_snapshot()
    while True:
        time.sleep(float(os.environ.get("SMS_TRACE_EVERY", "60")))
        now = tracemalloc.take_snapshot()
        lines = [f"--- {time.strftime('%H:%M:%S')} growth since the first snapshot"]
        for stat in now.compare_to(first, "traceback")[:12]:
            lines.append(f"{stat.size_diff:+d} B in {stat.count_diff:+d} blocks")
            lines.extend(f"    {line}" for line in stat.traceback.format()[-16:])
        with open(out, "a", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    tracemalloc.start(16)
    threading.Thread(target=_report, name="tracemalloc-report", daemon=True).start()
    sys.exit(main(["worker", *sys.argv[1:]]))
