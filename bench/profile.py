"""Summarise a py-spy `--format raw` profile (collapsed stacks): where the time goes.

    python -m bench.profile .sms_pipeline/profile-send.txt [--top 30] [--filter sms_pipeline]

Inclusive share = samples whose stack contains the function (counted once per stack);
self share = samples where it is the innermost frame. Only sampled (non-idle) threads
count, so threads waiting on sockets are left out: the shares are of CPU time.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_LINE = re.compile(r":\d+\)$")


def _frame(raw: str) -> str:
    # "func (path/to/module.py:123)" -> "func (module.py)"; a function, not a line.
    name, _, where = raw.partition(" (")
    where = _LINE.sub(")", where)
    short = where.rsplit("site-packages/", 1)[-1].rsplit("/work/main/", 1)[-1]
    return f"{name} ({short}" if where else name


def summarise(path: Path, top: int = 25, contains: str = "") -> dict[str, Any]:
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame(f) for f in stack.split(";") if f and not f.startswith("thread")]
        if not frames:
            continue
        total += count
        for name in set(frames):
            inclusive[name] += count
        own[frames[-1]] += count

    def pick(counter: Counter[str]) -> list[tuple[str, float]]:
        rows = [(n, c) for n, c in counter.most_common() if contains in n]
        return [(n, round(100 * c / total, 1)) for n, c in rows[:top]] if total else []

    return {"samples": total, "inclusive_pct": pick(inclusive), "self_pct": pick(own)}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("path", type=Path)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--filter", default="")
    args = parser.parse_args(argv)
    result = summarise(args.path, args.top, args.filter)
    print(f"{result['samples']} samples")
    print("inclusive %:")
    for name, pct in result["inclusive_pct"]:
        print(f"  {pct:5.1f}  {name}")
    print("self %:")
    for name, pct in result["self_pct"]:
        print(f"  {pct:5.1f}  {name}")


if __name__ == "__main__":
    main()
