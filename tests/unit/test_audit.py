"""`make audit` fails when nothing (or anything less than everything) could be audited.

No network here: the advisory database is made unreachable through a dead proxy on
loopback, and pip-audit's own messages (2.10) are read as it writes them.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "audit.py"
LOCK = "requirements.lock"
_spec = importlib.util.spec_from_file_location("audit_script", SCRIPT)
assert _spec is not None and _spec.loader is not None
audit = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(audit)


def test_an_unreachable_vulnerability_database_fails_the_audit_in_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "HTTPS_PROXY": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}
    env.pop("NO_PROXY", None)
    env.pop("no_proxy", None)
    result = subprocess.run(
        # A pip-audit that does not exist: it must not even be started.
        [
            sys.executable,
            str(SCRIPT),
            str(tmp_path / "no-pip-audit"),
            str(ROOT / "requirements.lock"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "no vulnerability database reachable" in lines[0]
    assert "nothing audited" in lines[0]


def test_packages_pip_audit_could_not_audit_are_named_once_each() -> None:
    # pip-audit 2.10 with --strict: a table row and an ERROR log line per package.
    stderr = (
        "ERROR:pip_audit._cli:aiohttp: Dependency not found on PyPI and could not be "
        "audited: aiohttp (3.14.5)\n"
        "aiohttp  Dependency not found on PyPI and could not be audited: aiohttp (3.14.5)\n"
        "six      Dependency not found on PyPI and could not be audited: six (1.17.0)\n"
        "No known vulnerabilities found\n"
    )
    assert audit.unaudited(stderr) == ["aiohttp", "six"]
    assert audit.unaudited("No known vulnerabilities found\n") == []


def test_make_audit_runs_pip_audit_strict_through_the_script() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    recipe = makefile.split("\naudit:", 1)[1].split("\n\n", 1)[0]
    assert "scripts/audit.py" in recipe
    assert '"--strict"' in SCRIPT.read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "audit" not in ci  # needs the network: never a CI step
