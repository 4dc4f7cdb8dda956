"""The real client against the simulator on a loopback port: every fault kind end to end."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from aiohttp import web

from sms_pipeline.gateway import (
    GatewayAuthError,
    GatewayCreditsExhausted,
    GatewayDuplicate,
    GatewayHTTPError,
    GatewayProtocolError,
    GatewayRejected,
    GatewayStatus,
    GatewayThrottled,
    GatewayTimeout,
    IP2SMSClient,
)
from sms_pipeline.simulator import STATE_KEY, SimulatorConfig
from sms_pipeline.simulator.runner import SimulatorServer
from sms_pipeline.simulator.server import SEND_PATH, STATUS_PATH
from tests.helpers import SimClock
from tests.support import wait_until

pytestmark = pytest.mark.timeout(60)

LOGIN, PASSWORD = "sim-user", "sim-pass"
ENROUTE_AFTER, DELIVER_AFTER, SLOW_SECONDS = 0.2, 0.4, 1.0


def _ping_routes(app: web.Application) -> None:
    async def ping(request: web.Request) -> web.Response:
        return web.json_response({"messages": len(request.app[STATE_KEY].messages)})

    app.router.add_get("/_sim/ping", ping)


@pytest.fixture(scope="module")
def server() -> Iterator[SimulatorServer]:
    config = SimulatorConfig(
        port=0,
        login=LOGIN,
        password=PASSWORD,
        enroute_after=ENROUTE_AFTER,
        deliver_after=DELIVER_AFTER,
        slow_seconds=SLOW_SECONDS,
        extra_routes=(_ping_routes,),
    )
    with SimulatorServer(config) as running:
        yield running


@pytest.fixture(scope="module")
def base_url(server: SimulatorServer) -> str:
    return server.base_url


@pytest.fixture
def sim_clock(server: SimulatorServer, monkeypatch: pytest.MonkeyPatch) -> SimClock:
    """The simulator's clock, for this test to move forward (the real one after it)."""
    clock = SimClock()
    monkeypatch.setattr(server.state, "clock", clock)
    return clock


@pytest.fixture
def make_client(base_url: str) -> Iterator[Callable[..., IP2SMSClient]]:
    clients: list[IP2SMSClient] = []

    def make(password: str = PASSWORD, read_timeout: float = 5.0) -> IP2SMSClient:
        client = IP2SMSClient(
            base_url + SEND_PATH,
            base_url + STATUS_PATH,
            LOGIN,
            password,
            "HEALTH",
            timeout=(2.0, read_timeout),
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def client(make_client: Callable[..., IP2SMSClient]) -> IP2SMSClient:
    return make_client()


def key() -> str:
    return uuid.uuid4().hex


def number(suffix: str) -> str:
    return f"+38093{uuid.uuid4().int % 10_000:04d}00{suffix}"


def wait_for_status(client: IP2SMSClient, gateway_id: str, wanted: GatewayStatus) -> list[str]:
    seen: list[str] = []

    def reached() -> bool:
        status = client.status(gateway_id).status
        if not seen or seen[-1] != status:
            seen.append(status.value)
        return status is wanted

    wait_until(reached, 5, lambda: f"{wanted}: {seen}")
    return seen


def test_send_then_status_progresses_to_delivered(client: IP2SMSClient) -> None:
    sent = client.send(number("99"), "Ваш код </body> & 1234", uniq_key=key(), ext_id="own-1")
    assert sent.status is GatewayStatus.ACCEPTED
    assert sent.gateway_id
    assert sent.ext_id == "own-1"
    assert sent.date is not None
    seen = wait_for_status(client, sent.gateway_id, GatewayStatus.DELIVERED)
    assert seen == ["Accepted", "Enroute", "Delivered"]


def test_undeliverable_number_ends_undeliverable(client: IP2SMSClient) -> None:
    sent = client.send(number("08"), "x", uniq_key=key())
    assert sent.gateway_id
    assert wait_for_status(client, sent.gateway_id, GatewayStatus.UNDELIVERABLE)[-1] == (
        "Undeliverable"
    )


def test_never_final_number_stays_enroute(client: IP2SMSClient, sim_clock: SimClock) -> None:
    sent = client.send(number("05"), "x", uniq_key=key())
    assert sent.gateway_id
    sim_clock.advance(DELIVER_AFTER + 0.1)
    assert client.status(sent.gateway_id).status is GatewayStatus.ENROUTE


def test_simulator_receives_the_body_intact(client: IP2SMSClient, base_url: str) -> None:
    body = "</body><to>+1</to> & 'q' \"Привіт\" 😀"
    sent = client.send(number("99"), body, uniq_key=key())
    data = requests.get(f"{base_url}/_sim/messages/{sent.gateway_id}", timeout=5).json()
    assert data["body_chars"] == len(body)


@pytest.mark.parametrize(("suffix", "failures"), [("01", 1), ("02", 2)])
def test_transient_failures_then_success_with_the_same_uniq_key(
    client: IP2SMSClient, base_url: str, suffix: str, failures: int
) -> None:
    uniq, to = key(), number(suffix)
    for _ in range(failures):
        with pytest.raises(GatewayHTTPError) as info:
            client.send(to, "x", uniq_key=uniq)
        assert info.value.permanent is False
        assert info.value.status_code == 503
        assert info.value.outcome == "http_5xx"
    assert client.send(to, "x", uniq_key=uniq).status is GatewayStatus.ACCEPTED
    seen = requests.get(f"{base_url}/_sim/submissions", params={"uniq_key": uniq}, timeout=5)
    assert seen.json()["submissions"] == failures + 1


def test_always_failing_number_stays_transient(client: IP2SMSClient) -> None:
    uniq, to = key(), number("03")
    for _ in range(3):
        with pytest.raises(GatewayHTTPError) as info:
            client.send(to, "x", uniq_key=uniq)
        assert info.value.permanent is False


def test_invalid_number_is_a_permanent_rejection(client: IP2SMSClient) -> None:
    with pytest.raises(GatewayRejected) as info:
        client.send(number("04"), "x", uniq_key=key())
    assert info.value.permanent is True
    assert info.value.error == "Invalid abonent number"


def test_wrong_password_is_a_permanent_auth_error(
    make_client: Callable[..., IP2SMSClient],
) -> None:
    bad = make_client(password="wrong-password")
    with pytest.raises(GatewayAuthError) as info:
        bad.send(number("99"), "x")
    assert info.value.permanent is True
    assert info.value.outcome == "auth"
    assert "wrong-password" not in repr(info.value)


def test_throttled_first_attempt_carries_retry_after(client: IP2SMSClient) -> None:
    uniq, to = key(), number("09")
    with pytest.raises(GatewayThrottled) as info:
        client.send(to, "x", uniq_key=uniq)
    assert info.value.retry_after == 1.0
    assert info.value.permanent is False
    assert client.send(to, "x", uniq_key=uniq).gateway_id


def test_malformed_answer_is_a_transient_protocol_error(client: IP2SMSClient) -> None:
    with pytest.raises(GatewayProtocolError) as info:
        client.send(number("07"), "x", uniq_key=key())
    assert info.value.permanent is False
    assert info.value.outcome == "parse_error"


def test_credit_exhaustion_once_then_accepted(client: IP2SMSClient) -> None:
    uniq, to = key(), number("10")
    with pytest.raises(GatewayCreditsExhausted) as info:
        client.send(to, "x", uniq_key=uniq)
    assert info.value.permanent is False
    assert client.send(to, "x", uniq_key=uniq).gateway_id


def test_slow_answer_times_out_and_the_retry_is_refused_as_duplicate(
    make_client: Callable[..., IP2SMSClient], base_url: str
) -> None:
    impatient = make_client(read_timeout=0.3)
    uniq, to = key(), number("06")
    started = time.monotonic()
    with pytest.raises(GatewayTimeout) as info:
        impatient.send(to, "x", uniq_key=uniq)
    assert time.monotonic() - started < SLOW_SECONDS
    assert info.value.permanent is False

    # The gateway accepted the message after all; resending it must not double it.
    def accepted() -> bool:
        answer = requests.get(f"{base_url}/_sim/submissions", params={"uniq_key": uniq}, timeout=5)
        return answer.json()["gateway_id"] is not None

    wait_until(accepted, 10 * SLOW_SECONDS, "the slow submission to be accepted")
    with pytest.raises(GatewayDuplicate):
        impatient.send(to, "x", uniq_key=uniq)


def test_second_submission_of_a_uniq_key_is_a_duplicate(
    client: IP2SMSClient, base_url: str
) -> None:
    uniq = key()
    client.send(number("99"), "x", uniq_key=uniq)
    before = requests.get(f"{base_url}/_sim/stats", timeout=5).json()["duplicates"]
    with pytest.raises(GatewayDuplicate) as info:
        client.send(number("99"), "x", uniq_key=uniq)
    assert info.value.duplicate is True
    assert info.value.permanent is True
    assert requests.get(f"{base_url}/_sim/stats", timeout=5).json()["duplicates"] == before + 1


def test_unknown_gateway_id_reports_unknown(client: IP2SMSClient) -> None:
    result = client.status("000000")
    assert result.status is GatewayStatus.UNKNOWN
    assert result.gateway_id == "000000"


def test_garbage_request_gets_the_gateways_parse_failure_text(base_url: str) -> None:
    answer = requests.post(
        base_url + SEND_PATH, data=b"<message><to>", auth=(LOGIN, PASSWORD), timeout=5
    )
    assert answer.status_code == 200
    assert answer.text == "Request not recognized - xml parse failed"


def test_concurrent_sends_share_one_client(client: IP2SMSClient) -> None:
    def one(n: int) -> str | None:
        return client.send(number("99"), f"n{n}", uniq_key=key()).gateway_id

    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(one, range(80)))
    assert len(set(ids)) == 80


def test_extra_routes_reach_the_state(client: IP2SMSClient, base_url: str) -> None:
    def stored() -> int:
        return int(requests.get(f"{base_url}/_sim/ping", timeout=5).json()["messages"])

    before = stored()
    client.send(number("99"), "x", uniq_key=key())
    assert stored() == before + 1


def test_rules_endpoint_lists_the_table(base_url: str) -> None:
    rules = requests.get(f"{base_url}/_sim/rules", timeout=5).json()
    assert {rule["suffix"] for rule in rules} >= {"01", "04", "10"}


def test_simulator_shows_full_numbers_only_to_the_gateway_login(
    client: IP2SMSClient, base_url: str
) -> None:
    to = number("99")
    sent = client.send(to, "x", uniq_key=key())
    url = f"{base_url}/_sim/messages/{sent.gateway_id}"
    anonymous = requests.get(url, timeout=5).json()
    assert anonymous["phone_number"] != to and anonymous["phone_number"][-2:] == to[-2:]
    authorised = requests.get(url, auth=(LOGIN, PASSWORD), timeout=5).json()
    assert authorised["phone_number"] == to
