"""Following a demo run until every message is final: a progress bar, or plain lines."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from sms_pipeline.demo.environment import TERMINATE_AFTER_SECONDS
from sms_pipeline.demo.record import Row, RunRecord, load_rows
from sms_pipeline.settings import Settings
from sms_pipeline.supervise import ChildError, ChildProcess

PLAIN_PROGRESS_SECONDS = 3.0


def waiting_for(rows: Sequence[Row], total: int) -> str:
    """What the demo is waiting for, in words: the slowest messages and why they are slow."""
    pending = sum(1 for r in rows if r.final_at is None and r.submitted_at is None)
    moving = sum(1 for r in rows if r.final_at is None and r.submitted_at is not None)
    missing = max(0, total - len(rows))
    parts = []
    if pending or missing:
        parts.append(f"{pending + missing} to send (retries wait 1-4 s)")
    if moving:
        parts.append(
            f"{moving} awaiting a delivery status (never-final ones end Terminated "
            f"{TERMINATE_AFTER_SECONDS} s after submission)"
        )
    return "waiting: " + "; ".join(parts) if parts else "all final"


def follow(
    console: Console,
    record: RunRecord,
    settings: Settings,
    children: Sequence[ChildProcess],
    deadline: float,
) -> list[Row]:
    """Show progress until every message of the run is final, or the deadline passes.

    In a terminal: a progress bar with what it waits for. Elsewhere (logs, CI): a plain
    line every few seconds, so the story is there without a terminal. A child that exits
    meanwhile ends the wait with ChildError.
    """
    total = record.expected_rows
    columns = (
        TextColumn("final"),
        BarColumn(bar_width=20),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
    )
    live = console.is_terminal
    started = time.monotonic()
    last_line = 0.0
    with contextlib.ExitStack() as stack:
        progress = None
        if live:
            progress = stack.enter_context(Progress(*columns, console=console, transient=False))
            task = progress.add_task("", total=total)
        while True:
            rows = load_rows(record, settings)
            final = sum(1 for r in rows if r.final_at is not None)
            why = waiting_for(rows, total)
            if progress is not None:
                progress.update(task, completed=final, description=f"[dim]{why}[/dim]")
            elif final >= total or time.monotonic() - last_line >= PLAIN_PROGRESS_SECONDS:
                last_line = time.monotonic()
                console.print(
                    f"  progress  {final}/{total} final after {last_line - started:.0f} s; {why}",
                    soft_wrap=True,  # one line per update in a log, however long
                )
            if final >= total:
                return rows
            check_alive(children)
            if time.monotonic() > deadline:
                return rows
            time.sleep(0.5)


def check_alive(children: Sequence[ChildProcess]) -> None:
    """Raise ChildError naming the first child that has exited."""
    dead = [c for c in children if not c.alive()]
    if dead:
        raise ChildError(f"{dead[0].name} exited with code {dead[0].returncode}", dead[0])
