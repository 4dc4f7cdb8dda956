"""sms-pipeline: the SMS channel of a health-care platform.

    from sms_pipeline import enqueue_sms
    message_id = enqueue_sms("+380931234567", "Your code is 123456", type="verification")

Names are loaded on first use, so importing a submodule (the gateway client, say)
does not build the Celery app or read settings.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sms_pipeline.errors import InvalidMessage, OptedOut
    from sms_pipeline.services.inbound import record_inbound
    from sms_pipeline.services.intake.enqueue import enqueue_many, enqueue_sms

__all__ = ["InvalidMessage", "OptedOut", "enqueue_many", "enqueue_sms", "record_inbound"]

_LAZY = {
    "enqueue_sms": "sms_pipeline.services.intake.enqueue",
    "enqueue_many": "sms_pipeline.services.intake.enqueue",
    "InvalidMessage": "sms_pipeline.errors",
    "OptedOut": "sms_pipeline.errors",
    "record_inbound": "sms_pipeline.services.inbound",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sms_pipeline' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
