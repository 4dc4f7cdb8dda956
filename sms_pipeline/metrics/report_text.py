"""The channel report as plain-text tables (`sms-pipeline report` and the demo print it)."""

from __future__ import annotations

import io
from collections.abc import Callable

from sms_pipeline.metrics.report import (
    SHORT_TYPE_NAMES,
    SQLITE_LATENCY_LIMIT,
    ChannelReport,
    TypeReport,
)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def _secs(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.1f}s" if value < 120 else f"{value / 60:.1f}m"


def render_text(report: ChannelReport, *, width: int = 80) -> str:
    """The report as plain-text tables that fit `width` columns (80 by default)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
    console.print(
        f"SMS channel report: enqueued {report.since:%Y-%m-%d %H:%M:%S} to "
        f"{report.until:%Y-%m-%d %H:%M:%S} UTC\n"
    )
    rows = (*report.types, report.overall)
    last = report.types[-1] if report.types else None
    per_type_names = {row.type for row in report.types}

    def table(title: str, caption: str | None = None) -> Table:
        return Table(
            title=title, caption=caption, box=box.SIMPLE_HEAD, title_justify="left",
            caption_justify="left", pad_edge=False, collapse_padding=True,
        )  # fmt: skip

    # Footnotes explain only what the tables show.
    short_names = [
        f"{short}: {name}." for name, short in SHORT_TYPE_NAMES.items() if name in per_type_names
    ]

    def per_type(
        title: str, caption: str, columns: tuple[str, ...], cells: Callable[[TypeReport], list[str]]
    ) -> None:
        """A table of a row per type, then the overall row."""
        per = table(title, caption)
        for column in columns:
            per.add_column(column, justify="left" if column == "type" else "right")
        for row in rows:
            per.add_row(
                SHORT_TYPE_NAMES.get(row.type, row.type), *cells(row), end_section=row is last
            )
        console.print(per)
        console.print()

    per_type(
        "Delivery by type",
        " ".join(
            [
                "final: in a final state. rates: shares of the final messages the gateway was "
                "asked to send (invalid input and opt-outs left out).",
                *short_names,
            ]
        ),
        ("type", "enqueued", "final", "delivered", "delivery\nrate", "Terminated",
         "RETRYCOUNT\nEXCEEDED"),
        lambda row: [
            str(row.total),
            str(row.final),
            str(row.delivered),
            _pct(row.delivery_rate),
            _pct(row.terminated_share),
            _pct(row.retrycount_exceeded_share),
        ],
    )  # fmt: skip
    per_type(
        "Time from submission to Delivered",
        "percentiles over the n delivered messages",
        ("type", "n", "median", "95th pct", "99th pct"),
        lambda row: [
            str(row.latency_count),
            _secs(row.latency_p50),
            _secs(row.latency_p95),
            _secs(row.latency_p99),
        ],
    )

    statuses = sorted({s for row in report.types for s in row.by_status})
    if statuses:
        notes = {
            "pending": "pending: not yet with the gateway",
            "moving": "moving: with the gateway, not final yet",
        }
        by_status = table(
            "Messages by status", "; ".join(n for s, n in notes.items() if s in statuses) or None
        )
        by_status.add_column("status")
        for row in rows:
            by_status.add_column(SHORT_TYPE_NAMES.get(row.type, row.type), justify="right")
        for status in statuses:
            by_status.add_row(status, *(str(row.by_status.get(status, 0)) for row in rows))
        console.print(by_status)
        console.print()

    gateway = table("Gateway requests", "stored counters, since they began")
    for column in ("operation", "requests", "errors", "outcomes"):
        gateway.add_column(
            column, justify="left" if column in ("operation", "outcomes") else "right"
        )
    for g in report.gateway:
        outcomes = ", ".join(f"{k} {v}" for k, v in g.by_outcome.items())
        gateway.add_row(g.operation, str(g.requests), _pct(g.error_rate), outcomes)
    if report.gateway:
        console.print(gateway)
    else:
        console.print("Gateway requests: none recorded yet")
    if len(report.by_gateway) > 1 or report.gateway_switches:
        console.print(
            "Messages by gateway: " + ", ".join(f"{g} {n}" for g, n in report.by_gateway.items())
        )
    if report.gateway_switches:
        switches = table("Gateway switches", "verification.gateway_events (docs/gateways.md)")
        for column in ("at (UTC)", "gateway", "change", "why"):
            switches.add_column(column)
        for e in report.gateway_switches:
            switches.add_row(e["at"][11:19], e["gateway"], f"{e['from']} → {e['to']}", e["reason"])
        console.print(switches)
    if report.otp_fallbacks:
        console.print(
            f"OTP fallbacks: {report.otp_fallbacks['copies']} codes sent once more via another "
            f"gateway, {report.otp_fallbacks['delivered']} of them Delivered"
        )
    if report.privacy:
        console.print(
            "Data protection (since counting began): "
            + ", ".join(f"{k} {v}" for k, v in report.privacy.items())
        )
    if report.latency_sample_truncated:
        console.print(f"(latency from the newest {SQLITE_LATENCY_LIMIT} deliveries only)")
    return console.export_text()
