"""Prometheus and Grafana files: they parse and only query metrics the exporter serves."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from sms_pipeline.metrics import catalogue as c
from tests.helpers import sample_names

CONFIG = Path(__file__).resolve().parents[2] / "config"
METRIC = re.compile(r"\bsms_[a-z_]+\b")


def _exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def test_prometheus_scrapes_the_metrics_service() -> None:
    config = yaml.safe_load((CONFIG / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = jobs["sms-pipeline"]["static_configs"][0]["targets"]
    assert targets == ["metrics:9808"]
    assert jobs["sms-pipeline"]["metrics_path"] == "/metrics"


def test_grafana_provisioning_points_at_prometheus_and_the_dashboards() -> None:
    provisioning = CONFIG / "grafana" / "provisioning"
    sources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    assert sources["datasources"][0]["type"] == "prometheus"
    providers = yaml.safe_load((provisioning / "dashboards" / "dashboards.yml").read_text())
    assert providers["providers"][0]["options"]["path"]


def test_dashboard_queries_only_metrics_the_exporter_serves() -> None:
    dashboard = json.loads((CONFIG / "grafana" / "dashboards" / "sms-pipeline.json").read_text())
    served = {name for spec in c.CATALOGUE for name in sample_names(spec)}
    exprs = _exprs(dashboard)
    assert exprs
    used = {name for expr in exprs for name in METRIC.findall(expr)}
    assert used <= served, used - served
    # the panels the team asked for
    assert any("histogram_quantile" in e and "submit_to_delivered" in e for e in exprs)
    assert {"sms_delivery_ratio", "sms_terminated_ratio", "sms_queue_depth"} <= used
    assert any('outcome!="ok"' in e for e in exprs)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def _panel(title_start: str) -> dict[str, Any]:
    dashboard = json.loads((CONFIG / "grafana" / "dashboards" / "sms-pipeline.json").read_text())
    (panel,) = [p for p in dashboard["panels"] if p["title"].startswith(title_start)]
    return dict(panel)


def test_final_status_panel_includes_refusals_at_send_time() -> None:
    exprs = [t["expr"] for t in _panel("Messages per minute by final status")["targets"]]
    assert any("sms_status_transitions_total" in e and "Delivered" in e for e in exprs)
    # Rejected in the send answer and RETRYCOUNT EXCEEDED never get a delivery status.
    assert any("sms_messages_total" in e and "rejected|retrycount_exceeded" in e for e in exprs)


def test_attempts_panel_is_a_whole_number_quantile_of_the_histogram() -> None:
    exprs = [t["expr"] for t in _panel("Send attempts per message")["targets"]]
    assert exprs and all(
        e.startswith("ceil(histogram_quantile(") and "sms_message_attempts_bucket" in e
        for e in exprs
    )
    # The buckets are whole attempts, so ceil() returns a bucket bound: 1, never 0.95.
    assert all(float(edge).is_integer() for edge in c.ATTEMPT_BUCKETS)
