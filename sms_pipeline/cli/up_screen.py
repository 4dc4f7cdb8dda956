"""What `sms-pipeline up` shows: one status line (live in a terminal, a new line per
change otherwise) and the children's warnings repeated."""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import os
from typing import Any, TextIO

from sms_pipeline.supervise import ChildProcess


def status_counts(since: dt.datetime) -> dict[str, Any]:
    """Queued and in-flight now; final since `since` by status; messages with gateway errors."""
    from sqlalchemy import func, select

    from sms_pipeline.db import session_scope
    from sms_pipeline.db.models import SendStatus, SmsLog
    from sms_pipeline.db.pauses import active_pauses
    from sms_pipeline.services.callbacks import final_status

    with session_scope() as session:
        pending = dict(
            session.execute(
                select(SmsLog.send_status, func.count())
                .where(SmsLog.final_at.is_(None))
                .group_by(SmsLog.send_status)
            ).all()
        )
        finals = session.execute(
            select(SmsLog.send_status, SmsLog.gateway_status, func.count())
            .where(SmsLog.final_at >= since)
            .group_by(SmsLog.send_status, SmsLog.gateway_status)
        ).all()
        errors = session.scalar(
            select(func.count())
            .select_from(SmsLog)
            .where(SmsLog.updated_at >= since, SmsLog.last_error.is_not(None))
            .where(
                SmsLog.send_status.in_(
                    [
                        SendStatus.QUEUED.value,
                        SendStatus.SENDING.value,
                        SendStatus.REJECTED.value,
                        SendStatus.RETRYCOUNT_EXCEEDED.value,
                        SendStatus.SUBMITTED.value,
                    ]
                )
            )
        )
        paused = active_pauses(session, dt.datetime.now(dt.UTC))
    final: collections.Counter[str] = collections.Counter()
    for send_status, gateway_status, count in finals:
        final[final_status(send_status, gateway_status)] += count
    return {
        "paused": paused,
        "queued": pending.get(SendStatus.QUEUED.value, 0),
        "sending": pending.get(SendStatus.SENDING.value, 0),
        "awaiting": pending.get(SendStatus.SUBMITTED.value, 0),
        "final": final,
        "gateway_errors": errors or 0,
    }


def status_line(counts: dict[str, Any]) -> str:
    final = counts["final"]
    finals = ", ".join(f"{name} {n}" for name, n in final.most_common()) or "none yet"
    # Most important first: a narrow terminal cuts the end of the line. A paused account
    # holds its messages: say which, why and until when, next to the queue it holds.
    paused = "".join(
        f" (paused: {p.account}, {p.kind}, until {p.until:%H:%M:%S}Z, {p.waiting} waiting)"
        for p in counts.get("paused", ())
    )
    return (
        f"queued {counts['queued']}{paused} · sending {counts['sending']} · "
        f"awaiting status {counts['awaiting']} · gateway errors {counts['gateway_errors']} · "
        f"final: {finals}"
    )


class Screen:
    """A live status line in a terminal; plain lines (on change only) otherwise."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.live = out.isatty()
        self.shown = ""

    def line(self, text: str) -> None:
        if self.live and self.shown:
            self.out.write("\r\x1b[2K")
        self.out.write(text + "\n")
        self.out.flush()
        if self.live and self.shown:
            self._draw(self.shown)

    def status(self, text: str) -> None:
        if text == self.shown:
            return
        self.shown = text
        if self.live:
            self._draw(text)
        else:
            self.out.write(f"status: {text}\n")
            self.out.flush()

    def _draw(self, text: str) -> None:
        self.out.write("\r\x1b[2K" + text[: _columns() - 1])
        self.out.flush()

    def close(self) -> None:
        if self.live and self.shown:
            self.out.write("\n")
            self.out.flush()


def _columns() -> int:
    with contextlib.suppress(OSError):
        return os.get_terminal_size().columns
    return 120


class LogEcho:
    """Repeat the WARNING/ERROR lines of the children's logs (nothing else) on screen; only
    what this run's children wrote, not the lines of an earlier run in the same file."""

    MARKERS = (" WARNING ", " ERROR ", " CRITICAL ", "Traceback")

    def __init__(self, children: list[ChildProcess]) -> None:
        self.children = children
        self.offsets: dict[str, int] = {}

    def lines(self) -> list[str]:
        found = []
        for child in self.children:
            path = child.log_path
            offset = self.offsets.get(child.name, child.log_start)
            with contextlib.suppress(OSError), path.open("rb") as handle:
                handle.seek(offset)
                chunk = handle.read()
                cut = chunk.rfind(b"\n") + 1
                self.offsets[child.name] = offset + cut
                for raw in chunk[:cut].decode("utf-8", "replace").splitlines():
                    if any(marker in raw for marker in self.MARKERS):
                        found.append(f"{child.name}: {raw}")
        return found
