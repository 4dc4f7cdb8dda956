"""The report as a PNG, for a person: volume by status over time, what failed and why,
and how long delivery took.

A headline says the answer first (delivered share, messages, window). The time axis spans
the data (from the first message's bucket to the last one's) in the report's bucket
(seconds for a 30-second run, days for a month), every tick carries its full date, bars
keep headroom under the frame, legends sit outside the plotting area, and the failures get
a panel of their own, so a handful of them is not a sliver under a tall bar of deliveries.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Final

from sms_pipeline.metrics import queries as q
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
# What each status means, for the failure panel's legend.
FAILURE_REASONS: Final = {
    "Terminated": "no final status in time",
    "RETRYCOUNT EXCEEDED": "every attempt failed",
    "Rejected": "refused by the gateway",
    "Undeliverable": "handset never got it",
    "Expired": "validity ran out",
    "OPTED OUT": "number sent STOP",
    "number invalid": "not a phone number",
    "data1 invalid": "unusable text",
}


def bucket_label(seconds: int) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            n = seconds // size
            return f"{n} {unit}s" if n > 1 else f"1 {unit}"
    return f"{seconds} seconds" if seconds > 1 else "1 second"


def date_format(bucket_seconds: int) -> str:
    """Full dates on every tick; the time of day only where the buckets need it."""
    if bucket_seconds < 60:
        return "%Y-%m-%d\n%H:%M:%S"
    if bucket_seconds < 86400:
        return "%Y-%m-%d\n%H:%M"
    return "%Y-%m-%d"


def _order(statuses: set[str]) -> list[str]:
    order = list(STATUS_COLOURS)
    return sorted(statuses, key=lambda s: (order.index(s) if s in order else len(order), s))


def _stacked(
    axes: Any,
    timeline: list[tuple[dt.datetime, dict[str, int]]],
    statuses: list[str],
    width_days: float,
    labels: dict[str, str],
) -> None:
    starts = [start for start, _ in timeline]
    bottom = [0] * len(timeline)
    for status in statuses:
        values = [counts.get(status, 0) for _, counts in timeline]
        axes.bar(
            starts,
            values,
            width=width_days,
            bottom=bottom,
            label=labels.get(status, status),
            color=STATUS_COLOURS.get(status),
            align="edge",
        )
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]


HEADROOM: Final = 1.12  # the tallest bar stops below the frame, its legend clear of it


def time_span(report: ChannelReport) -> tuple[dt.datetime, dt.datetime]:
    """The x axis: from the first bucket with messages to the end of the last one."""
    used = [start for start, counts in report.timeline if counts] or [
        start for start, _ in report.timeline
    ]
    if not used:
        return report.since, report.until
    return used[0], used[-1] + dt.timedelta(seconds=report.bucket_seconds)


def tallest(timeline: list[tuple[dt.datetime, dict[str, int]]], statuses: list[str]) -> int:
    return max((sum(c.get(s, 0) for s in statuses) for _, c in timeline), default=0)


def headline(report: ChannelReport) -> str:
    """Delivered share, messages and window: the answer before the charts."""
    overall = report.overall
    rate = overall.delivery_rate
    share = f"{rate * 100:.1f} % delivered" if rate is not None else "nothing finished yet"
    return (
        f"{share} ({overall.delivered} of {overall.finished} finished) · "
        f"{overall.total} messages enqueued in {_window(report.until - report.since)}"
    )


def _window(span: dt.timedelta) -> str:
    """`24 h`, `7 d`, `90 min`, `45 s`: the largest unit the window is a whole number of."""
    seconds = round(span.total_seconds())
    for unit, size, least in (("d", 86400, 2), ("h", 3600, 1), ("min", 60, 1)):
        if seconds % size == 0 and seconds // size >= least:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def _time_axis(axes: Any, report: ChannelReport, top: int) -> None:
    import matplotlib.dates as mdates
    from matplotlib.ticker import MaxNLocator

    locator = mdates.AutoDateLocator(minticks=4, maxticks=8)  # type: ignore[no-untyped-call]
    axes.xaxis.set_major_locator(locator)
    formatter = mdates.DateFormatter(date_format(report.bucket_seconds))  # type: ignore[no-untyped-call]
    axes.xaxis.set_major_formatter(formatter)
    axes.set_xlim(*time_span(report))
    axes.set_ylim(0, max(1.0, top * HEADROOM))
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel(
        f"enqueued at (UTC); one bar = {bucket_label(report.bucket_seconds)}", fontsize="small"
    )
    axes.set_ylabel("messages")
    axes.grid(axis="y", alpha=0.3)


def _legend(axes: Any) -> None:
    handles, labels = axes.get_legend_handles_labels()
    if handles:
        axes.legend(
            handles[::-1],
            labels[::-1],
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            fontsize="small",
            frameon=False,
        )


def render_png(report: ChannelReport, path: str | Path) -> Path:
    """Write the charts to `path` (PNG) and return it (needs the `plot` extra)."""
    path = Path(path)
    fig = build_figure(report)
    import matplotlib.pyplot as plt

    try:
        fig.savefig(path, format="png", dpi=100)
    finally:
        plt.close(fig)
    return path


def build_figure(report: ChannelReport) -> Any:
    """The charts as a matplotlib Figure (the caller closes it)."""
    try:
        import matplotlib
    except ImportError as exc:  # the production image has no plotting extra
        raise ImportError(
            "charts need matplotlib, which the production image does not install: "
            "pip install 'sms-pipeline[plot]'"
        ) from exc

    matplotlib.use("Agg")  # no display: servers, CI, containers
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (volume, failures, latency) = plt.subplots(
        3, 1, figsize=(12, 11.5), constrained_layout=True, height_ratios=(3, 2, 2)
    )
    try:
        fig.suptitle(
            f"{headline(report)}\n"
            f"SMS channel, messages enqueued {report.since:%Y-%m-%d %H:%M:%S} to "
            f"{report.until:%Y-%m-%d %H:%M:%S} UTC",
            fontsize="x-large",
        )
        width = report.bucket_seconds / 86400 * 0.9  # matplotlib dates count in days
        totals: dict[str, int] = {}
        for _, counts in report.timeline:
            for status, n in counts.items():
                totals[status] = totals.get(status, 0) + n

        all_statuses = _order(set(totals))
        _stacked(
            volume,
            report.timeline,
            all_statuses,
            width,
            {s: f"{s} ({totals[s]})" for s in all_statuses},
        )
        volume.set_title("All messages by status", loc="left")
        _time_axis(volume, report, tallest(report.timeline, all_statuses))
        _legend(volume)

        failed = [s for s in all_statuses if q.is_finished(s) and s != "Delivered"]
        labels = {
            s: f"{s} ({totals[s]}): {FAILURE_REASONS[s]}" if s in FAILURE_REASONS else
            f"{s} ({totals[s]})"
            for s in failed
        }  # fmt: skip
        _stacked(failures, report.timeline, failed, width, labels)
        failures.set_title(
            f"Not delivered, by reason ({sum(totals[s] for s in failed)} messages)", loc="left"
        )
        _time_axis(failures, report, tallest(report.timeline, failed))
        if failed:
            _legend(failures)
        else:
            failures.text(0.5, 0.5, "none", transform=failures.transAxes, ha="center", va="center")

        tick_labels = []
        previous: float | None = None
        for edge, _count in report.latency_histogram:
            tick_labels.append(f"≥ {previous:g}" if edge is None else f"< {edge:g}")
            previous = edge
        bins = [count for _, count in report.latency_histogram]
        # Bins past the slowest delivery say nothing: keep one empty bin after it.
        used = max((i for i, n in enumerate(bins) if n), default=len(bins) - 1)
        shown = min(len(bins), max(used + 2, 6))
        latency.bar(range(shown), bins[:shown], color="#1f77b4")
        latency.set_ylim(0, max(1.0, max(bins[:shown], default=0) * HEADROOM))
        latency.set_xticks(range(shown), tick_labels[:shown])
        overall = report.overall
        latency.set_title(
            "Time from submission to Delivered "
            f"(n = {overall.latency_count}; median {_fmt(overall.latency_p50)}, "
            f"95th percentile {_fmt(overall.latency_p95)}, "
            f"99th percentile {_fmt(overall.latency_p99)})",
            loc="left",
        )
        latency.set_xlabel("seconds from submission to the Delivered status", fontsize="small")
        latency.set_ylabel("messages")
        latency.yaxis.set_major_locator(MaxNLocator(integer=True))
        latency.grid(axis="y", alpha=0.3)
    except BaseException:
        plt.close(fig)
        raise
    return fig


def _fmt(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min"
