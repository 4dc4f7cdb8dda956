"""docker-compose.yml: valid against the Compose specification, and consistent with the code.

No Docker engine runs here; check-jsonschema ships the official Compose schema.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from sms_pipeline.cli import build_parser
from sms_pipeline.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
APP_IMAGE = "sms-pipeline:local"
SIMULATOR_IMAGE = "sms-pipeline:simulator"  # the production image plus the simulator extra


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = YAML(typ="safe").load(COMPOSE.read_text(encoding="utf-8"))
    return data


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _app_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in compose["services"].items()
        if service.get("image") in {APP_IMAGE, SIMULATOR_IMAGE}
    }


def test_compose_file_matches_the_compose_specification_schema() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
         str(COMPOSE)],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_pipeline_variable_in_compose_is_a_setting(compose: dict[str, Any]) -> None:
    known = {name.upper() for name in Settings.model_fields}
    used = {
        (service, key)
        for service, spec in compose["services"].items()
        for key in _env(spec)
        if key.startswith(("SMS_", "IP2SMS_"))
    }
    assert used, "the app services set no SMS_/IP2SMS_ variables"
    unknown = sorted((service, key) for service, key in used if key not in known)
    assert not unknown, f"not settings (typo?): {unknown}"


def test_every_sms_pipeline_command_in_compose_parses(compose: dict[str, Any]) -> None:
    parser = build_parser()
    apps = _app_services(compose)
    assert {"migrate", "worker", "beat", "flower", "metrics", "api", "gateway-sim"} <= set(apps)
    for name, service in apps.items():
        command = service["command"]
        try:
            args = parser.parse_args(command)
        except SystemExit:
            pytest.fail(f"service {name}: `sms-pipeline {' '.join(command)}` does not parse")
        assert callable(args.func), name


def _default(value: str) -> str:
    """The value compose uses when the variable is unset: `${VAR:-default}` -> default."""
    if value.startswith("${") and ":-" in value:
        return value[value.index(":-") + 2 : -1]
    return value


def test_app_services_reach_postgres_and_redis_not_the_embedded_defaults(
    compose: dict[str, Any],
) -> None:
    for name, service in _app_services(compose).items():
        env = _env(service)
        assert env["SMS_DATABASE_URL"].startswith("postgresql+psycopg://"), name
        assert _default(env["SMS_BROKER_URL"]).startswith("redis://redis:"), name
        # The broker is the operator's choice (SMS_BROKER_URL): RabbitMQ with the profile.
        assert env["SMS_BROKER_URL"].startswith("${SMS_BROKER_URL:-"), name


def test_the_rabbitmq_profile_is_a_healthy_dependency_only_when_enabled(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    rabbitmq = services["rabbitmq"]
    assert rabbitmq["profiles"] == ["rabbitmq"]
    assert "ports" not in rabbitmq  # reached by the app services on the compose network
    assert rabbitmq["environment"]["RABBITMQ_DEFAULT_PASS"] == "${RABBITMQ_PASSWORD}"
    assert any("rabbitdata" in str(v) for v in rabbitmq["volumes"])
    for name in ("worker", "beat", "api"):
        rule = services[name]["depends_on"]["rabbitmq"]
        assert rule == {"condition": "service_healthy", "required": False}, name
    # The documented way to switch: amqp:// through SMS_BROKER_URL, Redis kept for limits.
    text = COMPOSE.read_text(encoding="utf-8")
    assert "--profile rabbitmq" in text and 'SMS_BROKER_URL="amqp://' in text
    assert Settings(sms_broker_url="amqp://sms:pw@rabbitmq:5672//").broker_kind == "amqp"


def test_secrets_have_no_silent_production_default(compose: dict[str, Any]) -> None:
    text = COMPOSE.read_text(encoding="utf-8")
    assert "${POSTGRES_PASSWORD:?" in text
    assert "${FLOWER_BASIC_AUTH:?" in text
    assert "${GRAFANA_ADMIN_PASSWORD:?" in text  # no admin/admin
    for line in text.splitlines():
        if ":-" in line and any(s in line for s in ("PASSWORD", "SECRET", "AUTH")):
            assert "local only" in line, f"a password default must say 'local only': {line}"


def test_redis_keeps_its_queue_across_restarts_and_never_evicts(compose: dict[str, Any]) -> None:
    command = compose["services"]["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"


def test_exactly_one_beat_and_flower_only_on_loopback(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["beat"]["deploy"]["replicas"] == 1
    assert all(str(p).startswith("127.0.0.1:") for p in services["flower"]["ports"])


def test_every_published_port_is_on_loopback_the_api_behind_a_tls_proxy(
    compose: dict[str, Any],
) -> None:
    # The API speaks plain HTTP with bearer keys: published to this host only; the TLS
    # proxy in front of it is documented in docs/security.md.
    for name, service in compose["services"].items():
        for port in service.get("ports") or []:
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    assert "TLS" in (ROOT / "docs" / "security.md").read_text(encoding="utf-8")


def test_production_image_installs_the_hashed_lock_without_plots() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert "--require-hashes --requirement requirements.lock" in dockerfile
    lock = (ROOT / "requirements.lock").read_text(encoding="utf-8")
    pinned = {
        line.split("==", 1)[0].lower()
        for line in lock.splitlines()
        if line and not line.startswith((" ", "#"))
    }
    # pycurl is a base dependency (the gateway client's transport); plotting is an extra.
    assert "pycurl" in pinned and "matplotlib" not in pinned
    assert all("--hash=sha256:" in block for block in lock.split("==")[1:])
    # Every base dependency of pyproject.toml is pinned in the lock (it is not stale).
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    for requirement in project["dependencies"]:
        name = requirement.split("[")[0].split(">")[0].split("<")[0].split("=")[0].strip()
        assert name.lower().replace("_", "-") in pinned, f"{name} missing: run `make lock`"


def test_dependencies_wait_for_health_or_completion(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        for target, rule in (service.get("depends_on") or {}).items():
            assert target in services, f"{name} depends on unknown {target}"
            condition = rule["condition"]
            if condition == "service_healthy":
                check = services[target].get("healthcheck") or {}
                assert check.get("test") and not check.get("disable"), (name, target)
            elif condition == "service_completed_successfully":
                assert services[target].get("restart") == "no", (name, target)
    assert services["worker"]["depends_on"]["migrate"]["condition"] == (
        "service_completed_successfully"
    )
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_mounted_monitoring_config_exists(compose: dict[str, Any]) -> None:
    for name in ("prometheus", "grafana"):
        service = compose["services"][name]
        assert service["profiles"] == ["monitoring"]
        for volume in service["volumes"]:
            source = str(volume).split(":", 1)[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"


# --- fail closed: the production profile never runs on the simulator (issue 32) -------------

_VARIABLE = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


def _interpolate(value: str, exported: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR-default}, ${VAR:-default} and ${VAR:?error}."""

    def one(found: re.Match[str]) -> str:
        name, operator, rest = found.group(1), found.group(2) or "", found.group(3) or ""
        if operator.endswith("?"):
            assert name in exported, f"compose requires {name}: {rest}"
            return exported[name]
        if operator == ":-":
            return exported.get(name) or rest
        return exported.get(name, rest)

    return _VARIABLE.sub(one, value)


def _settings_of(service: dict[str, Any], exported: dict[str, str]) -> Any:
    from sms_pipeline.settings import load_settings

    env = {k.lower(): _interpolate(v, exported) for k, v in _env(service).items()}
    return load_settings(**env)  # empty values too, as the container would see them


def _runs_the_gateway(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in _app_services(compose).items()
        if service["command"][0] in {"worker", "beat", "api"}
    }


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith(("SMS_", "IP2SMS_")):
            monkeypatch.delenv(key)


def test_production_profile_refuses_the_simulator_and_the_demo_profile_is_allowed_it(
    compose: dict[str, Any], clean_environment: None
) -> None:
    from sms_pipeline.settings import production_problems

    required = {"POSTGRES_PASSWORD": "pg", "SMS_PRIVACY_KEY": "a-long-random-privacy-key-0123"}
    real = {
        "IP2SMS_SEND_URL": "https://gateway.example.org/ip2sms/",
        "IP2SMS_STATUS_URL": "https://gateway.example.org/ip2sms-request/",
        "IP2SMS_LOGIN": "clinic",
        "IP2SMS_PASSWORD": "real-password",
    }
    services = _runs_the_gateway(compose)
    production = {n: s for n, s in services.items() if s.get("profiles") == ["production"]}
    demo = {n: s for n, s in services.items() if s.get("profiles") == ["demo"]}
    assert {"worker", "beat", "api"} <= set(production)
    # Every worker, beat and API runs in one of the two profiles, with its demo twin.
    assert set(services) == set(production) | set(demo), "a worker/beat/api outside a profile"
    assert set(demo) == {f"{n}-demo" for n in production}
    for name, service in production.items():
        assert "SMS_ALLOW_SIMULATOR" not in _env(service), name
        # Nothing exported but the required secrets: refused, naming the gateway settings.
        problems = production_problems(_settings_of(service, required))
        assert any("IP2SMS_SEND_URL" in p for p in problems), (name, problems)
        # The real gateway exported: it starts.
        assert production_problems(_settings_of(service, {**required, **real})) == [], name
        # Someone exports the simulator's values: still refused.
        simulator = {**required, **real, "IP2SMS_SEND_URL": "http://gateway-sim:8080/ip2sms/"}
        assert production_problems(_settings_of(service, simulator)), name
    for name, service in demo.items():
        assert _env(service)["SMS_ALLOW_SIMULATOR"] == "true", name
        assert production_problems(_settings_of(service, required)) == [], name
        assert "gateway-sim" in service["depends_on"], name
    assert compose["services"]["gateway-sim"]["profiles"] == ["demo"]
