"""`make audit`: known vulnerabilities in requirements.lock, failing when anything went unaudited.

pip-audit reports a package it could not look up as "could not be audited" and still exits 0
(61 of 61 once, when the advisory database was not reachable). Here:
- the vulnerability database is probed first; when it does not answer with advisory data,
  one line says so and the audit fails (exit 2): nothing was audited;
- pip-audit runs with `--strict`: one package that could not be audited fails the audit,
  summed up in one line (exit 1), as does any known vulnerability.

Not a CI step (it needs the network); run it by hand or on a schedule.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

PYPI_JSON = "https://pypi.org/pypi/{name}/{version}/json"  # pip-audit's default service
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", re.MULTILINE)
_UNAUDITED = re.compile(r"could not be audited: (\S+) \(")


def first_pin(lock: Path) -> tuple[str, str]:
    found = _PIN.search(lock.read_text(encoding="utf-8"))
    if found is None:
        raise SystemExit(f"make audit: FAILED: no pinned package in {lock}")
    return found.group(1), found.group(2)


def database_problem(name: str, version: str, timeout: float = 15.0) -> str | None:
    """Why the advisory database cannot be used, or None when it answers with advisories."""
    url = PYPI_JSON.format(name=name, version=version)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:  # noqa: S310 (https only)
            data = json.loads(answer.read(5_000_000))
    except urllib.error.HTTPError as exc:
        return f"{url} answered HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or type(exc).__name__
        return f"{url} is not reachable ({reason})"
    if not isinstance(data, dict) or "vulnerabilities" not in data:
        return f"{url} has no advisory data"
    return None


def unaudited(stderr: str) -> list[str]:
    """The packages pip-audit says it could not audit (each once, in order)."""
    return list(dict.fromkeys(_UNAUDITED.findall(stderr)))


def main(argv: list[str]) -> int:
    pip_audit, lock = argv[1], Path(argv[2])
    problem = database_problem(*first_pin(lock))
    if problem is not None:
        print(
            f"make audit: FAILED, nothing audited: no vulnerability database reachable: {problem}",
            file=sys.stderr,
        )
        return 2
    result = subprocess.run(
        [pip_audit, "--strict", "--require-hashes", "--disable-pip", "--progress-spinner",
         "off", "--requirement", str(lock)],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    sys.stdout.write(result.stdout)
    skipped = unaudited(result.stderr + result.stdout)
    if skipped:
        print(
            f"make audit: FAILED: {len(skipped)} package(s) could not be audited: "
            + ", ".join(skipped),
            file=sys.stderr,
        )
        return result.returncode or 1
    sys.stderr.write(result.stderr)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv))
