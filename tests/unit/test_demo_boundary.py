"""The demo is a tool beside the runtime: the core never imports it, and no module of the
package (the demo included) changes its own process's environment."""

from __future__ import annotations

import ast
import collections
import uuid
from pathlib import Path

import pytest

from sms_pipeline.demo.environment import demo_environment, demo_settings
from sms_pipeline.demo.record import RunRecord
from sms_pipeline.demo.scenario import ALL_SCENARIOS, BY_NAME, NORMAL, REPLICATED, SQL_ROUTE_GOOD

PACKAGE = Path(__file__).resolve().parents[2] / "sms_pipeline"
DEMO = PACKAGE / "demo"
# The `demo` command is the one way in (and it imports the package only when run).
DEMO_COMMAND = PACKAGE / "cli" / "demo.py"
_ENVIRON_WRITES = {"update", "setdefault", "pop", "popitem", "clear", "__setitem__"}


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _imported(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _is_os_environ(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "environ"
        and isinstance(node.value, ast.Name)
        and node.value.id == "os"
    )


def _environ_writes(tree: ast.AST) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store | ast.Del):
            if _is_os_environ(node.value):
                lines.append(node.lineno)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            func = node.func
            environ_method = _is_os_environ(func.value) and func.attr in _ENVIRON_WRITES
            os_call = isinstance(func.value, ast.Name) and func.value.id == "os"
            if environ_method or (os_call and func.attr in ("putenv", "unsetenv")):
                lines.append(node.lineno)
    return lines


def test_the_core_imports_nothing_from_the_demo_package() -> None:
    offenders = [
        str(path.relative_to(PACKAGE.parent))
        for path in _modules()
        if DEMO not in path.parents and path != DEMO_COMMAND
        if any(
            name == "sms_pipeline.demo" or name.startswith("sms_pipeline.demo.")
            for name in _imported(ast.parse(path.read_text(encoding="utf-8")))
        )
    ]
    assert offenders == []
    assert "sms_pipeline.demo" in _imported(ast.parse(DEMO_COMMAND.read_text(encoding="utf-8")))


def test_no_module_writes_its_own_process_environment() -> None:
    writes = {
        str(path.relative_to(PACKAGE.parent)): lines
        for path in _modules()
        if (lines := _environ_writes(ast.parse(path.read_text(encoding="utf-8"))))
    }
    assert writes == {}


def test_the_environment_check_sees_every_kind_of_write() -> None:
    source = (
        "import os\n"
        "os.environ.update(x)\n"
        "os.environ['A'] = '1'\n"
        "del os.environ['A']\n"
        "os.environ.setdefault('B', '2')\n"
        "os.putenv('C', '3')\n"
        "value = os.environ.get('D')\n"  # a read is not a write
    )
    assert _environ_writes(ast.parse(source)) == [2, 3, 4, 5, 6]


def test_demo_settings_name_the_demo_database_whatever_the_callers_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SMS_DATABASE_URL", "postgresql+psycopg://app@production-db/sms")
    monkeypatch.setenv("SMS_BROKER_URL", "redis://production-redis:6379/0")
    monkeypatch.setenv("SMS_STATUS_POLL_SECONDS", "600")
    settings = demo_settings(demo_environment(tmp_path, "http://127.0.0.1:9", concurrency=3))
    assert settings.database_url == f"sqlite:///{tmp_path.resolve() / 'sms_pipeline.db'}"
    assert settings.is_embedded_broker
    assert settings.redis_url is None
    assert settings.ip2sms_send_url == "http://127.0.0.1:9/ip2sms/"
    assert settings.sms_status_poll_seconds == 2
    assert settings.sms_status_check_backoff == [1, 2, 3]
    assert settings.sms_worker_concurrency == 3


def test_the_producers_record_comes_back_whole() -> None:
    assert len(BY_NAME) == len(ALL_SCENARIOS), "scenario names must be unique"
    record = RunRecord(
        tag="demo-1234abcd",
        by_id={uuid.uuid4(): NORMAL, uuid.uuid4(): BY_NAME["rejected"]},
        by_queue_id={7: SQL_ROUTE_GOOD, 8: BY_NAME["SQL route, bad number"]},
        by_verification_id={uuid.uuid4(): REPLICATED},
        refused=collections.Counter({"phone_number": 4}),
        enqueue_seconds=1.25,
    )
    assert RunRecord.from_json(record.to_json()) == record
