"""Stored counters: totals that survive restarts and agree across workers."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Float, String
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, utcnow


class MetricCounter(Base):
    """One counter series: a metric name and its labels rendered canonically."""

    __tablename__ = "metric_counters"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    # Sorted "key=value" pairs joined by ","; bounded vocabularies only, never a number/id.
    labels: Mapped[str] = mapped_column(String(512), primary_key=True, default="")
    value: Mapped[float] = mapped_column(Float, default=0.0)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
