"""What a demo run put in, and the rows it finds again.

The producer child writes its record as JSON (message ids and scenario names, never a
number or a body); the demo process reads it back and follows those rows, tagged with
the run's cost centre so an older `--keep` run beside them is left out.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from sms_pipeline.demo.scenario import BY_NAME, Scenario
from sms_pipeline.settings import Settings


@dataclasses.dataclass
class RunRecord:
    """What this run put in, to find its rows again (also next to an older --keep run)."""

    tag: str
    by_id: dict[uuid.UUID, Scenario] = dataclasses.field(default_factory=dict)
    by_queue_id: dict[int, Scenario] = dataclasses.field(default_factory=dict)
    by_verification_id: dict[uuid.UUID, Scenario] = dataclasses.field(default_factory=dict)
    refused: Counter[str] = dataclasses.field(default_factory=Counter)
    enqueue_seconds: float = 0.0  # the producer's time for all of the above

    @property
    def expected_rows(self) -> int:
        return len(self.by_id) + len(self.by_queue_id) + len(self.by_verification_id)

    def to_json(self) -> str:
        return json.dumps(
            {
                "tag": self.tag,
                "by_id": {str(k): s.name for k, s in self.by_id.items()},
                "by_queue_id": {str(k): s.name for k, s in self.by_queue_id.items()},
                "by_verification_id": {str(k): s.name for k, s in self.by_verification_id.items()},
                "refused": dict(self.refused),
                "enqueue_seconds": self.enqueue_seconds,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> RunRecord:
        data: dict[str, Any] = json.loads(text)
        return cls(
            tag=data["tag"],
            by_id={uuid.UUID(k): BY_NAME[n] for k, n in data["by_id"].items()},
            by_queue_id={int(k): BY_NAME[n] for k, n in data["by_queue_id"].items()},
            by_verification_id={
                uuid.UUID(k): BY_NAME[n] for k, n in data["by_verification_id"].items()
            },
            refused=Counter(data["refused"]),
            enqueue_seconds=float(data["enqueue_seconds"]),
        )

    def save(self, path: Path) -> None:
        # Written whole, then renamed: the demo never reads half a record.
        partial = path.with_suffix(".partial")
        partial.write_text(self.to_json(), encoding="utf-8")
        partial.replace(path)


@dataclasses.dataclass(frozen=True)
class Row:
    id: uuid.UUID
    queue_id: int | None
    verification_id: uuid.UUID | None
    send_status: str
    gateway_status: str | None
    attempts: int
    inserted_at: dt.datetime
    submitted_at: dt.datetime | None
    final_at: dt.datetime | None
    last_error: str | None


def outcome_of(row: Row) -> str:
    """The label a message ended with: the gateway's status once submitted, else ours."""
    if row.send_status == "SUBMITTED":
        return row.gateway_status or "SUBMITTED (gateway id unknown)"
    return row.send_status


def load_rows(record: RunRecord, settings: Settings) -> list[Row]:
    """The run's rows in the demo's database (named by `settings`, not the environment)."""
    from sqlalchemy import or_, select

    from sms_pipeline.db import session_scope
    from sms_pipeline.db.models import SmsLog

    columns = [getattr(SmsLog, f.name) for f in dataclasses.fields(Row)]
    with session_scope(settings) as session:
        query = select(*columns).where(
            or_(
                SmsLog.cost_centre == record.tag,
                SmsLog.verification_id.in_(list(record.by_verification_id)),
            )
        )
        return [Row(*r) for r in session.execute(query)]


def scenario_of(row: Row, record: RunRecord) -> Scenario | None:
    if row.id in record.by_id:
        return record.by_id[row.id]
    if row.queue_id is not None and row.queue_id in record.by_queue_id:
        return record.by_queue_id[row.queue_id]
    if row.verification_id is not None:
        return record.by_verification_id.get(row.verification_id)
    return None
