"""The report as a PNG: hourly volume by status and the time-to-Delivered distribution."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from sms_pipeline.metrics.report import ChannelReport

# Fixed colours so the same status looks the same in every report.
STATUS_COLOURS: Final = {
    "Delivered": "#2ca02c",
    "moving": "#aec7e8",
    "pending": "#c7c7c7",
    "Terminated": "#d62728",
    "RETRYCOUNT EXCEEDED": "#ff7f0e",
    "Rejected": "#9467bd",
    "Undeliverable": "#8c564b",
    "Expired": "#e377c2",
    "OPTED OUT": "#7f7f7f",
    "number invalid": "#bcbd22",
    "data1 invalid": "#17becf",
    "Unaccepted": "#393b79",
    "Deleted": "#637939",
}


def _edge_label(edge: float | None, previous: float | None) -> str:
    if edge is None:
        return f"≥{previous:g}s"
    return f"<{edge:g}s"


def render_png(report: ChannelReport, path: str | Path) -> Path:
    """Write the two charts to `path` (PNG) and return it (needs the `plot` extra)."""
    try:
        import matplotlib
    except ImportError as exc:  # the production image has no plotting extra
        raise ImportError(
            "charts need matplotlib, which the production image does not install: "
            "pip install 'sms-pipeline[plot]'"
        ) from exc

    matplotlib.use("Agg")  # no display: servers, CI, containers
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    path = Path(path)
    fig, (volume, latency) = plt.subplots(2, 1, figsize=(11, 8), constrained_layout=True)
    try:
        hours = [hour for hour, _ in report.hourly]
        order = list(STATUS_COLOURS)
        statuses = sorted(
            {s for _, counts in report.hourly for s in counts},
            key=lambda s: (order.index(s) if s in order else len(order), s),
        )
        bottom = [0] * len(hours)
        width = 1 / 24 * 0.9  # days, as matplotlib dates count
        for status in statuses:
            values = [counts.get(status, 0) for _, counts in report.hourly]
            volume.bar(
                hours,
                values,
                width=width,
                bottom=bottom,
                label=status,
                color=STATUS_COLOURS.get(status),
                align="edge",
            )
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
        volume.set_title("Messages per hour by status (by enqueue time, UTC)")
        volume.set_ylabel("messages")
        if statuses:
            volume.legend(loc="upper left", fontsize="small", ncol=4)
        formatter = mdates.DateFormatter("%m-%d %H:%M")  # type: ignore[no-untyped-call]
        volume.xaxis.set_major_formatter(formatter)
        volume.yaxis.set_major_locator(MaxNLocator(integer=True))
        for label in volume.get_xticklabels():
            label.set_rotation(30)
            label.set_horizontalalignment("right")

        labels = []
        previous: float | None = None
        for edge, _count in report.latency_histogram:
            labels.append(_edge_label(edge, previous))
            previous = edge
        counts = [count for _, count in report.latency_histogram]
        latency.bar(range(len(counts)), counts, color="#1f77b4")
        latency.set_xticks(range(len(counts)), labels, rotation=45, fontsize="small")
        overall = report.overall
        latency.set_title(
            "Time from submission to Delivered "
            f"(n={overall.latency_count}, p50={_fmt(overall.latency_p50)}, "
            f"p95={_fmt(overall.latency_p95)}, p99={_fmt(overall.latency_p99)})"
        )
        latency.set_ylabel("messages")
        latency.yaxis.set_major_locator(MaxNLocator(integer=True))
        fig.savefig(path, format="png", dpi=100)
    finally:
        plt.close(fig)
    return path


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}s"
