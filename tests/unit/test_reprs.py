"""No repr or str shows a secret: every public class that holds a URL, a password, a key,
a signing secret, a code or a number is listed here with an instance full of sentinels.

A new public class with such a field (found by name across the package) fails
`test_every_class_holding_a_secret_is_covered` until it is added below.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

import sms_pipeline

SECRET = "s3cr3t-SENTINEL"
NUMBER = "+380931234567"
URL = f"https://gw-user:{SECRET}@gateway.example/ip2sms/?login=x&password={SECRET}&token={SECRET}"
# Field names that hold a URL or a secret; `key` alone is an API key or an idempotency key.
SECRET_FIELD = re.compile(r"(^|_)(url|secret|password|passwd|token|dsn)s?($|_)|^key$")


def _public_classes() -> dict[str, type]:
    root = Path(sms_pipeline.__file__).parent
    found: dict[str, type] = {}
    for path in sorted(root.rglob("*.py")):
        parts = ("sms_pipeline", *path.relative_to(root).with_suffix("").parts)
        name = ".".join(parts).removesuffix(".__init__")
        if name.endswith("__main__") or ".migrations" in name:
            continue
        module = importlib.import_module(name)
        for attr, cls in vars(module).items():
            if not attr.startswith("_") and inspect.isclass(cls) and cls.__module__ == name:
                found[f"{name}.{attr}"] = cls
    return found


def _field_names(cls: type) -> set[str]:
    names = set(getattr(cls, "__annotations__", {})) | set(getattr(cls, "model_fields", {}))
    if dataclasses.is_dataclass(cls):
        names |= {f.name for f in dataclasses.fields(cls)}
    with contextlib.suppress(TypeError, ValueError):
        names |= set(inspect.signature(cls).parameters)
    return {n for n in names if not n.startswith("_")}


def _client() -> Any:
    from sms_pipeline.gateway.client import IP2SMSClient

    return IP2SMSClient(URL, URL, "gw-user", SECRET, "HEALTH")


def _inbound() -> Any:
    from sms_pipeline.gateway.inbound import InboundClient

    return InboundClient(URL, "gw-user", SECRET)


def _settings() -> Any:
    from sms_pipeline.settings import Settings

    return Settings(
        sms_database_url=f"postgresql+psycopg://sms:{SECRET}@db/sms?password={SECRET}",
        sms_broker_url=f"redis://:{SECRET}@redis:6379/0",
        sms_redis_url=f"redis://:{SECRET}@redis:6379/1",
        ip2sms_send_url=URL,
        ip2sms_status_url=URL,
        ip2sms_inbound_url=URL,
        ip2sms_password=SecretStr(SECRET),
        sms_callback_secret=SecretStr(SECRET),
        sms_privacy_key=SecretStr(SECRET),
        sms_flower_basic_auth=SecretStr(f"admin:{SECRET}"),
    )


def _message_in() -> Any:
    from sms_pipeline.api.schemas import MessageIn

    return MessageIn(
        phone_number=NUMBER,
        body=f"Your code is {SECRET}",
        callback_url=f"https://hooks.example/sms?token={SECRET}",
    )


def _new_api_key() -> Any:
    from sms_pipeline.services.accounts.api_keys import NewApiKey

    return NewApiKey("k", f"sk_abcd_{SECRET}", f"whsec_{SECRET}", None)


def _api_key_row() -> Any:
    from sms_pipeline.db.models import ApiKey

    return ApiKey(name="k", prefix="abcd", key_hash=SECRET, signing_secret=SECRET)


def _sms_log_row() -> Any:
    from sms_pipeline.db.models import SmsLog

    return SmsLog(phone_number=NUMBER, body=SECRET, callback_url=f"https://h.example/?t={SECRET}")


def _idempotency_row() -> Any:
    from sms_pipeline.db.models import IdempotencyRecord

    return IdempotencyRecord(key=SECRET, request_hash=SECRET)


def _account_row() -> Any:
    from sms_pipeline.db.models import Account

    return Account(name="a", password_ref=SECRET)


def _simulator_config() -> Any:
    from sms_pipeline.simulator.server import SimulatorConfig

    return SimulatorConfig(password=SECRET)


def _target() -> Any:
    from sms_pipeline import http

    return http.parse_url(f"https://hooks.example/sms?token={SECRET}&password={SECRET}")


def _send_request() -> Any:
    from sms_pipeline.gateway.client import SendRequest

    return SendRequest(NUMBER, f"Your code is {SECRET}")


def _gateway_row() -> Any:
    from sms_pipeline.db.models import Gateway

    return Gateway(name="g", send_url="http://127.0.0.1:9/ip2sms/", password_ref=SECRET)


def _account_gateway_row() -> Any:
    from sms_pipeline.db.models import AccountGateway

    return AccountGateway(account_id=1, gateway_id=1, login="l", password_ref=SECRET)


def _route() -> Any:
    from sms_pipeline.services.gateways import default_route
    from sms_pipeline.settings import load_settings

    return dataclasses.replace(default_route(load_settings()), password_ref=SECRET)


def _login() -> Any:
    from sms_pipeline.services.gateways import Login

    return Login("l", SECRET, own=True)


def _intake_message() -> Any:
    from sms_pipeline.services.intake import Message, ValidBody

    return Message(
        phone_number=NUMBER,
        body=ValidBody(f"Your code is {SECRET}", 1, "GSM-7"),
        type="verification",
        priority=0,
        send_at=None,
        sender_id=None,
        ext_id=SECRET,
        customer_id=SECRET,
        cost_centre=None,
        callback_url=f"https://h.example/?token={SECRET}",
        account=None,
    )


def _valid_body() -> Any:
    from sms_pipeline.services.intake import ValidBody

    return ValidBody(f"Your code is {SECRET}", 1, "GSM-7")


INSTANCES: dict[str, Callable[[], Any]] = {
    "sms_pipeline.db.models.gateways.Gateway": _gateway_row,
    "sms_pipeline.db.models.gateways.AccountGateway": _account_gateway_row,
    "sms_pipeline.db.gateways.Route": _route,
    "sms_pipeline.services.gateways.registry.Login": _login,
    "sms_pipeline.gateway.client.IP2SMSClient": _client,
    "sms_pipeline.gateway.inbound.InboundClient": _inbound,
    "sms_pipeline.settings.Settings": _settings,
    "sms_pipeline.api.schemas.MessageIn": _message_in,
    "sms_pipeline.services.accounts.api_keys.NewApiKey": _new_api_key,
    "sms_pipeline.db.models.api.ApiKey": _api_key_row,
    "sms_pipeline.db.models.messages.SmsLog": _sms_log_row,
    "sms_pipeline.db.models.api.IdempotencyRecord": _idempotency_row,
    "sms_pipeline.db.models.accounts.Account": _account_row,
    "sms_pipeline.simulator.server.SimulatorConfig": _simulator_config,
    # Not found by field name, but they hold a URL's query, a number or a code:
    "sms_pipeline.http.Target": _target,
    "sms_pipeline.gateway.client.SendRequest": _send_request,
    "sms_pipeline.services.intake.validate.Message": _intake_message,
    "sms_pipeline.services.intake.texts.ValidBody": _valid_body,
}


def test_every_class_holding_a_secret_is_covered() -> None:
    holding = {
        name for name, cls in _public_classes().items() if _field_names(cls) & _secret_names(cls)
    }
    assert holding, "the discovery found nothing: the pattern or the walk is broken"
    assert holding <= set(INSTANCES), sorted(holding - set(INSTANCES))


def _secret_names(cls: type) -> set[str]:
    return {n for n in _field_names(cls) if SECRET_FIELD.search(n)}


@pytest.mark.parametrize("name", sorted(INSTANCES))
def test_repr_and_str_show_no_secret_url_password_number_or_code(name: str) -> None:
    instance = INSTANCES[name]()
    for shown in (repr(instance), str(instance), f"{instance!r:>10}"):
        assert SECRET not in shown, shown
        assert NUMBER not in shown and NUMBER[-9:] not in shown, shown
