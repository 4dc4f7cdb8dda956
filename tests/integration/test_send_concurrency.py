"""How many gateway requests a send batch keeps in flight, seen from the gateway's side.

With a gateway that takes a while to answer, a batch costs one round trip only if all of
its requests are out at once; a pool smaller than the batch makes it two or more (the
default pool was once half the default batch: throughput at 100 ms latency fell to
0.66 x raw Celery). The simulator counts the most requests it answered at once.
"""

from __future__ import annotations

from typing import Any

import pytest

from sms_pipeline import enqueue_many
from sms_pipeline.broker.dispatch import QueueClass
from sms_pipeline.services import outbox, sending
from sms_pipeline.settings import get_settings

pytestmark = pytest.mark.timeout(60)


def _numbers(count: int) -> list[str]:
    # Ending in 5x..9x: no fault rule of the simulator matches (those end in 01..10).
    return [f"+38093{5_000_000 + i * 100 + 55:07d}" for i in range(count)]


@pytest.mark.parametrize("simulator", [{"latency_ms": 1000.0}], indirect=True)
def test_a_full_default_batch_is_one_wave_of_gateway_requests(
    db: Any, simulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox, "publish", lambda dispatches: 0)  # the batch is run by hand
    size = get_settings().sms_send_batch_size
    enqueue_many({"phone_number": n, "body": "hello"} for n in _numbers(size))

    batch = sending.send_batch(queue_class=QueueClass.BULK)

    assert batch.counts() == {"submitted": size}
    stats = simulator.stats()
    assert stats["accepted"] == size
    assert stats["peak_in_flight"] == size
    assert stats["in_flight"] == 0


@pytest.mark.parametrize("simulator", [{"latency_ms": 300.0}], indirect=True)
def test_a_pool_smaller_than_the_batch_caps_requests_in_flight(
    db: Any, simulator: Any, settings_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox, "publish", lambda dispatches: 0)
    settings_env(SMS_GATEWAY_CONNECTIONS=7)
    enqueue_many({"phone_number": n, "body": "hello"} for n in _numbers(20))

    batch = sending.send_batch(queue_class=QueueClass.BULK)

    assert batch.counts() == {"submitted": 20}
    assert simulator.stats()["peak_in_flight"] == 7
