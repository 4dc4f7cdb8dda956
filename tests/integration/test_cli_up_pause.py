"""`up`, `send` and `account` as a newcomer runs them, with an account paused (issue 27):
the status line says which account holds how many messages, why and until when."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest

from tests.helpers import run_cli
from tests.integration.test_cli_up import NUMBER, Up, fresh  # noqa: F401  (fixture)


@pytest.mark.slow
def test_up_status_line_and_send_name_a_paused_account(
    fresh: tuple[dict[str, str], Path],  # noqa: F811
) -> None:
    env, cwd = fresh
    up = Up([], env, cwd)
    try:
        up.wait_for(r"(?m)^ready\b")
        first = run_cli(["send", "--to", NUMBER, "--body", "hi"], env, cwd)  # creates `default`
        assert first.returncode == 0, first.stderr
        paused = run_cli(
            ["account", "pause", "default", "--until", "+10m", "--reason", "maintenance"],
            env,
            cwd,
        )
        assert paused.returncode == 0, paused.stderr
        assert "paused (manual: maintenance) until " in paused.stderr  # the one WARNING
        sent = run_cli(["send", "--to", NUMBER, "--type", "verification", "--body", "1"], env, cwd)
        assert sent.returncode == 0, sent.stderr
        message_id = uuid.UUID(sent.stdout.strip())
        assert "waits behind a paused account: account default paused (manual" in sent.stderr
        held = up.wait_for(
            r"queued 1 \(paused: default, manual, until \d\d:\d\d:\d\dZ, 1 waiting\)"
        )
        shown = run_cli(["show", str(message_id)], env, cwd)
        assert "behind a paused account" in shown.stdout
        resumed = run_cli(["account", "resume", "default"], env, cwd)
        assert resumed.returncode == 0, resumed.stderr
        # Resumed: the code goes out and the line says so (a later line than the pause's).
        up.wait_for(rf"(?s){re.escape(held.group(0))}.*status: queued 0 · sending 0")
        assert up.interrupt() == 0, up.output
    finally:
        up.kill()
