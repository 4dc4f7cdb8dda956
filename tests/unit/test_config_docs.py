"""docs/configuration.md and config/.env.example follow `Settings` (no drift)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

from sms_pipeline.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gen_config_docs", ROOT / "scripts" / "gen_config_docs.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_configuration_md_is_what_the_generator_writes_from_settings() -> None:
    checked_in = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert checked_in == _generator().markdown(), (
        "docs/configuration.md is stale: run .venv/bin/python scripts/gen_config_docs.py"
    )


def test_env_example_lists_every_setting() -> None:
    text = (ROOT / "config" / ".env.example").read_text(encoding="utf-8")
    listed = set(re.findall(r"^#? ?([A-Z0-9_]+)=", text, flags=re.MULTILINE))
    missing = {name.upper() for name in Settings.model_fields} - listed
    unknown = listed - {name.upper() for name in Settings.model_fields}
    assert not missing, f"missing from config/.env.example: {sorted(missing)}"
    assert not unknown, f"not settings, yet in config/.env.example: {sorted(unknown)}"


def test_env_example_shows_no_password_but_the_local_simulators() -> None:
    text = (ROOT / "config" / ".env.example").read_text(encoding="utf-8")
    assert re.search(r"^# IP2SMS_PASSWORD=(demo)?$", text, flags=re.MULTILINE)
    assert "SMS_FLOWER_BASIC_AUTH=\n" in text
