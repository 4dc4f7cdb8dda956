"""A started worker keeps what it built to start out of the cyclic collector's full scans."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from celery import signals
from celery.utils.dispatch import Signal

from sms_pipeline.broker import app as broker_app


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


@pytest.mark.parametrize("signal", [signals.worker_ready, signals.worker_process_init])
def test_a_starting_worker_freezes_its_startup_objects(signal: Signal, unfrozen: None) -> None:
    # worker_ready: the threads pool's one process; worker_process_init: a prefork child.
    assert broker_app._freeze_startup_objects in [r for _, r in signal.receivers]
    assert gc.get_freeze_count() == 0
    broker_app._freeze_startup_objects()
    # Everything alive then is frozen: the modules, the app, this test's own objects.
    assert gc.get_freeze_count() > 10_000
