"""Prometheus and Grafana files: they parse and only query metrics the exporter serves."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from sms_pipeline.metrics import catalogue as c

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
    served = {name for spec in c.CATALOGUE for name in spec.sample_names}
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
