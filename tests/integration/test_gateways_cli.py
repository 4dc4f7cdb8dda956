"""`sms-pipeline gateway add|list|disable|enable` as a subprocess (embedded SQLite), and the
gateways table written by plain SQL on PostgreSQL (issue 30, docs/gateways.md)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from tests.helpers import run_cli
from tests.integration.test_cli_up import embedded_env
from tests.support import free_port


def test_gateway_cli_add_list_disable_enable_on_sqlite(tmp_path: Path) -> None:
    env = embedded_env(tmp_path / "data", free_port())
    cwd = tmp_path
    assert run_cli(["db", "upgrade"], env, cwd).returncode == 0
    listed = run_cli(["gateway", "list"], env, cwd)
    assert listed.returncode == 0, listed.stderr
    # No rows: the IP2SMS_* settings are the one gateway `default`.
    assert listed.stdout.startswith("default: up, weight 1"), listed.stdout
    assert "the IP2SMS_* settings" in listed.stdout
    added = run_cli(
        [
            "gateway", "add", "second", "--send-url", "http://127.0.0.1:9/ip2sms/",
            "--status-url", "http://127.0.0.1:9/ip2sms-request/", "--login", "two",
            "--password-env", "SECOND_PASSWORD", "--weight", "3", "--source", "CLINIC",
        ],
        env,
        cwd,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    again = run_cli(
        ["gateway", "add", "second", "--send-url", "u", "--status-url", "u", "--login", "x",
         "--password-env", "X"],
        env,
        cwd,
    )  # fmt: skip
    assert again.returncode == 1 and "exists already" in again.stderr
    listed = run_cli(["gateway", "list"], env, cwd)
    assert "second: up, weight 3" in listed.stdout
    # Its password variable is not set: refused loudly, never used with another login.
    assert "REFUSED gateway second: password_ref 'SECOND_PASSWORD'" in listed.stdout
    env_with = {**env, "SECOND_PASSWORD": "s3cret"}
    listed = run_cli(["gateway", "list"], env_with, cwd)
    assert "REFUSED" not in listed.stdout and "s3cret" not in listed.stdout
    disabled = run_cli(["gateway", "disable", "second"], env_with, cwd)
    assert disabled.returncode == 0, disabled.stderr
    assert "gateway second disabled by an operator" in disabled.stderr  # the one WARNING
    listed = run_cli(["gateway", "list"], env_with, cwd)
    assert "second: disabled, weight 3" in listed.stdout
    assert "up -> disabled: disabled by an operator" in listed.stdout
    assert run_cli(["gateway", "enable", "second"], env_with, cwd).returncode == 0
    listed = run_cli(["gateway", "list"], env_with, cwd)
    assert "second: up, weight 3" in listed.stdout
    assert "disabled -> up: enabled by an operator" in listed.stdout
    assert run_cli(["gateway", "disable", "nope"], env, cwd).returncode == 1


def test_plain_sql_insert_gets_server_defaults(db: Any) -> None:
    with db.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO verification.gateways (name, send_url) "
                "VALUES ('b', 'http://127.0.0.1:9/ip2sms/')"
            )
        )
        conn.execute(text("INSERT INTO verification.accounts (name, username) VALUES ('a', 'u')"))
        conn.execute(
            text(
                "INSERT INTO verification.account_gateways (account_id, gateway_id) "
                "SELECT a.id, g.id FROM verification.accounts a, verification.gateways g"
            )
        )
        row = conn.execute(text("SELECT * FROM verification.gateways")).mappings().one()
        link = conn.execute(text("SELECT * FROM verification.account_gateways")).mappings().one()
    assert row["weight"] == 1 and row["active"] is True and row["state"] == "up"
    assert row["status_url"] == "" and row["login"] == "" and row["password_ref"] == ""
    assert row["max_per_second"] is None and row["state_since"] is not None
    assert link["position"] == 0 and link["login"] == "" and link["password_ref"] == ""
    from sms_pipeline.services import gateways
    from sms_pipeline.settings import get_settings

    with db.connect() as conn:
        table = gateways.read_table(conn, get_settings())
    (route,) = table.routes
    # An empty status URL is the send URL's sibling; an empty login is IP2SMS_LOGIN.
    assert route.status_url == "http://127.0.0.1:9/ip2sms-request/"
    assert route.login == get_settings().ip2sms_login
    from sqlalchemy.exc import IntegrityError

    with pytest.raises(IntegrityError), db.begin() as conn:
        conn.execute(text("UPDATE verification.gateways SET weight = -1"))


@pytest.mark.slow
def test_up_and_the_worker_name_an_account_whose_password_cannot_be_found(tmp_path: Path) -> None:
    import sqlite3

    from tests.integration.test_cli_up import Up

    env = embedded_env(tmp_path / "data", free_port())
    assert run_cli(["db", "upgrade"], env, tmp_path).returncode == 0
    with sqlite3.connect(tmp_path / "data" / "sms_pipeline.db") as conn:
        conn.execute(
            "INSERT INTO accounts (name, username, password_ref) "
            "VALUES ('clinic', 'clinic', 'CLINIC_PW_NOT_SET')"
        )
    up = Up([], env, tmp_path)
    try:
        up.wait_for(r"(?m)^ready\b")
        assert re.search(
            r"REFUSED\s+account clinic: password_ref 'CLINIC_PW_NOT_SET' for login 'clinic' "
            r"on gateway default resolves to nothing",
            up.output,
        ), up.output
        assert up.interrupt() == 0, up.output
    finally:
        up.kill()
    worker_log = (tmp_path / "data" / "logs" / "worker.log").read_text(encoding="utf-8")
    assert "REFUSED account clinic: password_ref 'CLINIC_PW_NOT_SET'" in worker_log
