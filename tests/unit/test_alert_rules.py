"""config/alerts.yml: promtool checks it and runs its unit tests (config/alerts.test.yml);
every rule is tested firing and quiet, queries only metrics the exporter serves, has a
runbook section in docs/metrics.md, and the compose Prometheus loads the file.

promtool comes from `make promtool` (scripts/get_promtool.sh, run by `make test`). Without
it these tests skip, or fail under CI=true.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from sms_pipeline.metrics import catalogue as c
from tests.helpers import sample_names

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config"
RULES = CONFIG / "alerts.yml"
RULE_TESTS = CONFIG / "alerts.test.yml"
METRIC = re.compile(r"\bsms_[a-z_]+\b")


def _promtool() -> str:
    beside = Path(sys.executable).parent / "promtool"
    found = str(beside) if beside.exists() else shutil.which("promtool")
    if found:
        return found
    reason = "promtool not found: run `make promtool` (scripts/get_promtool.sh)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def _rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in data["groups"] for rule in group["rules"]]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_promtool(), *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_promtool_check_rules_accepts_the_rules() -> None:
    result = _run("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout


def test_promtool_rule_unit_tests_pass() -> None:
    result = _run("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_tested_firing_and_quiet() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))
    assert tests["rule_files"] == [RULES.name]
    fired: set[str] = set()
    quiet: set[str] = set()
    for group in tests["tests"]:
        for case in group["alert_rule_test"]:
            (fired if case["exp_alerts"] else quiet).add(case["alertname"])
    alerts = {rule["alert"] for rule in _rules()}
    assert alerts - fired == set(), "never shown firing"
    assert alerts - quiet == set(), "never shown quiet"


def test_rules_query_only_metrics_the_exporter_serves() -> None:
    served = {name for spec in c.CATALOGUE for name in sample_names(spec)}
    for rule in _rules():
        used = set(METRIC.findall(rule["expr"]))
        assert used, rule["alert"]
        assert used <= served, (rule["alert"], used - served)


def test_every_alert_says_what_to_do_and_has_a_runbook_section() -> None:
    docs = (ROOT / "docs" / "metrics.md").read_text(encoding="utf-8")
    headings = {
        re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-")
        for h in re.findall(r"^#{2,4} (.+)$", docs, flags=re.M)
    }
    for rule in _rules():
        notes = rule["annotations"]
        assert notes["summary"] and len(notes["description"]) > 80, rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}
        assert notes["runbook_url"] == f"docs/metrics.md#{rule['alert'].lower()}"
        assert rule["alert"].lower() in headings, f"docs/metrics.md has no ### {rule['alert']}"


def test_the_compose_prometheus_loads_the_rules() -> None:
    prometheus = yaml.safe_load((CONFIG / "prometheus.yml").read_text(encoding="utf-8"))
    assert "/etc/prometheus/alerts.yml" in prometheus["rule_files"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    volumes = compose["services"]["prometheus"]["volumes"]
    assert "./config/alerts.yml:/etc/prometheus/alerts.yml:ro" in volumes


def test_promtool_check_config_loads_prometheus_yml_with_the_rules(tmp_path: Path) -> None:
    # As the container sees it: the rules mounted where prometheus.yml expects them.
    text = (CONFIG / "prometheus.yml").read_text(encoding="utf-8")
    config = tmp_path / "prometheus.yml"
    config.write_text(text.replace("/etc/prometheus/alerts.yml", str(RULES)), encoding="utf-8")
    result = _run("check", "config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout
