"""The README's layout section names every module and package of the tree."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _layout() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"^## Layout\n\n```\n(.*?)```", readme, flags=re.S | re.M)
    assert match, "README.md has no layout block"
    return match.group(1)


def test_layout_names_every_top_level_module_package_and_folder() -> None:
    layout = _layout()
    package = ROOT / "sms_pipeline"
    names = [
        p.name + ("/" if p.is_dir() else "")
        for p in package.iterdir()
        if not p.name.startswith("__pycache__") and p.suffix in {".py", ""} and p.name != "py.typed"
    ]
    missing = [n for n in names if n not in layout]
    assert not missing, f"README layout misses: {missing}"
    for folder in ("config/", "docs/", "bench/", "scripts/", "tests/"):
        assert folder in layout


def test_layout_names_every_doc_and_status_module() -> None:
    layout = _layout()
    for doc in (ROOT / "docs").glob("*.md"):
        assert doc.stem in layout, doc.name
    for module in (ROOT / "sms_pipeline" / "services" / "status").glob("*.py"):
        if module.stem != "__init__":
            assert module.stem in layout, module.name
