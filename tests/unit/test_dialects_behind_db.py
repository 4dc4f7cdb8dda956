"""Only `sms_pipeline/db/` knows how PostgreSQL and SQLite differ: no code outside it tests
the dialect (`is_sqlite`, `dialect.name`) or imports a dialect's constructs."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "sms_pipeline"


def _dialect_tests(tree: ast.AST) -> list[str]:
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id == "is_sqlite":
            found.append(f"is_sqlite (line {node.lineno})")
        elif isinstance(node, ast.Attribute) and node.attr == "is_sqlite":
            found.append(f".is_sqlite (line {node.lineno})")
        elif (
            isinstance(node, ast.Attribute)
            and node.attr == "name"
            and isinstance(node.value, ast.Attribute)
            and node.value.attr == "dialect"
        ):
            found.append(f"dialect.name (line {node.lineno})")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
            "sqlalchemy.dialects"
        ):
            found.append(f"from {node.module} import ... (line {node.lineno})")
    return found


# Files allowed a dialect test outside db/: none. Nothing may be added here.
KNOWN: set[str] = set()


def test_no_dialect_test_outside_db() -> None:
    offenders = {
        name: found
        for path in PACKAGE.rglob("*.py")
        if "db" not in path.relative_to(PACKAGE).parts[:1]
        and (name := str(path.relative_to(PACKAGE))) not in KNOWN
        and (found := _dialect_tests(ast.parse(path.read_text(encoding="utf-8"))))
    }
    assert not offenders, offenders
    for name in KNOWN:  # a file that lost its dialect test leaves the list
        assert _dialect_tests(ast.parse((PACKAGE / name).read_text(encoding="utf-8"))), name


def test_the_check_sees_a_dialect_test() -> None:
    code = (
        "from sqlalchemy.dialects.postgresql import ARRAY\n"
        "if engine.dialect.name == 'x': is_sqlite(e)\n"
    )
    assert len(_dialect_tests(ast.parse(code))) == 3
