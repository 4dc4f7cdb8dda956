"""The waits over the send window's requests (`services/gateways/flights.py`)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from typing import Any

from sms_pipeline.services.gateways import flights
from sms_pipeline.services.gateways.flights import Flight


def _flight(future: Future[Any]) -> Flight:
    now = time.monotonic()
    return Flight(None, "default", 1, future, now, now + 3600)


def _answer(futures: list[Future[Any]]) -> None:
    for future in futures:
        future.set_result(object())  # the waits look at whether, not at what


def test_waiting_for_enough_answers_returns_while_the_rest_are_still_out() -> None:
    futures: list[Future[Any]] = [Future() for _ in range(4)]
    out = [_flight(f) for f in futures]
    _answer(futures[:2])
    # Whatever still waits when this fires was waited for in vain.
    rescue = threading.Timer(10, _answer, [futures[2:]])
    rescue.start()
    try:
        flights.wait_all(out, 60, time.monotonic, enough=2)
        assert not futures[2].done() and not futures[3].done()
    finally:
        rescue.cancel()


def test_waiting_for_all_returns_when_the_last_is_answered() -> None:
    futures: list[Future[Any]] = [Future() for _ in range(3)]
    out = [_flight(f) for f in futures]
    _answer(futures[:1])
    threading.Timer(0.05, _answer, [futures[1:]]).start()
    flights.wait_all(out, 60, time.monotonic)
    assert all(f.done() for f in futures)
