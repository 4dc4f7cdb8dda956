"""In-flight requests of the send window: one `Flight` per request, settled by its own
future (the pool's thread), and the waits over them that never wait for the slowest."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from sms_pipeline.gateway import GatewayError, GatewayTimeout, SendResult

Answer = SendResult | GatewayError


@dataclass(eq=False)
class Flight:
    """One request of one claim's attempt, out to `gateway`; `ended` is set (monotonic) by
    the pool's thread when its answer is in."""

    claim: Any
    gateway: str
    account_id: int
    future: Future[Answer]
    started: float
    deadline: float  # monotonic: unanswered by then, it is a timeout (the pool is stuck)
    ended: float | None = None

    def done(self, now: float) -> bool:
        return self.future.done() or now >= self.deadline

    def answer(self) -> Answer:
        if self.future.done():
            return self.future.result()
        return GatewayTimeout("total deadline exceeded")

    def seconds(self, now: float) -> float:
        return (self.ended or now) - self.started


def _ended(flight: Flight, clock: Callable[[], float], _future: Future[Answer]) -> None:
    flight.ended = clock()


def wait_any(flights: Sequence[Flight], timeout: float | None, clock: Callable[[], float]) -> None:
    """Wait until one flight is answered (or past its deadline), `timeout` at most."""
    if not flights:
        return
    until = min(f.deadline for f in flights) - clock()
    limit = until if timeout is None else min(timeout, until)
    concurrent.futures.wait(
        [f.future for f in flights], max(0.0, limit), concurrent.futures.FIRST_COMPLETED
    )


def wait_all(
    flights: Sequence[Flight], timeout: float, clock: Callable[[], float], enough: int | None = None
) -> None:
    """Wait until every flight is answered (or past its deadline), `timeout` at most; with
    `enough`, until that many are."""
    if not flights:
        return
    ends = clock() + max(0.0, min(timeout, min(f.deadline for f in flights) - clock()))
    futures = {f.future for f in flights}
    wanted = len(futures) if enough is None else min(enough, len(futures))
    answered = sum(1 for f in futures if f.done())
    while answered < wanted and (left := ends - clock()) > 0:
        done, _ = concurrent.futures.wait(
            [f for f in futures if not f.done()], left, concurrent.futures.FIRST_COMPLETED
        )
        if not done:
            return
        answered = sum(1 for f in futures if f.done())


def split_done(flights: Sequence[Flight], now: float) -> tuple[list[Flight], list[Flight]]:
    """(answered or past their deadline, still out): each flight looked at once, so one
    answered meanwhile is in exactly one of them."""
    answered: list[Flight] = []
    out: list[Flight] = []
    for flight in flights:
        (answered if flight.done(now) else out).append(flight)
    return answered, out
