"""Simulator fault rules and message state, with a fake clock (no server, no I/O)."""

from __future__ import annotations

import pytest

from sms_pipeline.gateway.codec import SendRequest
from sms_pipeline.gateway.statuses import GatewayStatus
from sms_pipeline.simulator import rules as r
from sms_pipeline.simulator.rules import DEFAULT_RULES, Action, Rule, RuleTable
from sms_pipeline.simulator.state import SimState, gateway_date


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def req(
    number: str = "+380931234500", body: str = "hello", uniq_key: str | None = None
) -> SendRequest:
    return SendRequest(phone_number=number, body=body, source="S", uniq_key=uniq_key)


TABLE = RuleTable()


@pytest.mark.parametrize(
    ("suffix", "attempt_actions"),
    [
        (r.SUFFIX_TRANSIENT_ONCE, [Action.HTTP_ERROR, Action.ACCEPT, Action.ACCEPT]),
        (r.SUFFIX_TRANSIENT_TWICE, [Action.HTTP_ERROR, Action.HTTP_ERROR, Action.ACCEPT]),
        (r.SUFFIX_TRANSIENT_ALWAYS, [Action.HTTP_ERROR] * 5),
        (r.SUFFIX_REJECT, [Action.REJECT] * 3),
        (r.SUFFIX_NEVER_FINAL, [Action.ACCEPT]),
        (r.SUFFIX_SLOW, [Action.SLOW, Action.SLOW]),
        (r.SUFFIX_MALFORMED, [Action.MALFORMED, Action.MALFORMED]),
        (r.SUFFIX_UNDELIVERABLE, [Action.ACCEPT]),
        (r.SUFFIX_THROTTLED, [Action.HTTP_ERROR, Action.ACCEPT]),
        (r.SUFFIX_CREDITS, [Action.REJECT, Action.ACCEPT]),
        ("99", [Action.ACCEPT, Action.ACCEPT]),
        ("00", [Action.ACCEPT]),
    ],
)
def test_default_table_action_per_suffix_and_attempt(
    suffix: str, attempt_actions: list[Action]
) -> None:
    number = "+3809312345" + suffix
    actions = [TABLE.decide(number, n).action for n in range(1, len(attempt_actions) + 1)]
    assert actions == attempt_actions


def test_default_table_details_match_the_documented_behaviour() -> None:
    by_suffix = {rule.suffix: rule for rule in DEFAULT_RULES}
    assert by_suffix["01"].http_status == 503
    assert by_suffix["04"].error == "Invalid abonent number"
    assert by_suffix["05"].never_final is True
    assert by_suffix["08"].final_status is GatewayStatus.UNDELIVERABLE
    assert (by_suffix["09"].http_status, by_suffix["09"].retry_after) == (429, 1)
    assert by_suffix["10"].error == "Prepaid messages limit exceed"
    assert len(by_suffix) == len(DEFAULT_RULES) == 10


def test_longest_suffix_wins() -> None:
    table = RuleTable(
        [
            Rule("4", "short", Action.REJECT, error="short"),
            Rule("1234", "long", Action.MALFORMED),
        ]
    )
    assert table.decide("+380930001234", 1).action is Action.MALFORMED
    assert table.decide("+380930000004", 1).action is Action.REJECT
    assert table.match("+380930000005") is None


def test_empty_table_always_accepts() -> None:
    assert RuleTable(()).decide("+380931234503", 1).action is Action.ACCEPT


@pytest.mark.parametrize(
    "kwargs",
    [
        {"suffix": "", "name": "x"},
        {"suffix": "0a", "name": "x"},
        {"suffix": "01", "name": "x", "action": Action.REJECT},
        {"suffix": "01", "name": "x", "action": Action.DUPLICATE},
        {"suffix": "01", "name": "x", "attempts": -1},
    ],
)
def test_invalid_rules_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="rule"):
        Rule(**kwargs)  # type: ignore[arg-type]


def test_two_rules_for_one_suffix_are_refused() -> None:
    with pytest.raises(ValueError, match="two rules"):
        RuleTable([Rule("01", "a"), Rule("01", "b")])


# ------------------------------------------------------------------ state


def test_status_progresses_on_the_clock() -> None:
    clock = FakeClock()
    state = SimState(enroute_after=1.0, deliver_after=2.0, clock=clock)
    request = req()
    message = state.accept(request, state.submit(request))
    seen = []
    for advance in (0.0, 0.99, 0.02, 0.98, 0.02, 100.0):
        clock.now += advance
        found = state.status(message.gateway_id)
        assert found is not None
        seen.append(found[1])
    assert seen == [
        GatewayStatus.ACCEPTED,
        GatewayStatus.ACCEPTED,
        GatewayStatus.ENROUTE,
        GatewayStatus.ENROUTE,
        GatewayStatus.DELIVERED,
        GatewayStatus.DELIVERED,
    ]


@pytest.mark.parametrize(
    ("suffix", "final"),
    [
        ("05", GatewayStatus.ENROUTE),
        ("08", GatewayStatus.UNDELIVERABLE),
        ("00", GatewayStatus.DELIVERED),
    ],
)
def test_rule_decides_where_the_progression_ends(suffix: str, final: GatewayStatus) -> None:
    clock = FakeClock()
    state = SimState(clock=clock)
    request = req("+3809312345" + suffix)
    message = state.accept(request, state.submit(request))
    clock.now += 10_000
    found = state.status(message.gateway_id)
    assert found is not None
    assert found[1] is final


def test_attempts_are_counted_per_uniq_key() -> None:
    state = SimState()
    number = "+380931234502"
    first = state.submit(req(number, "a", uniq_key="k1"))
    second = state.submit(req(number, "different body", uniq_key="k1"))
    third = state.submit(req(number, "a", uniq_key="k1"))
    other = state.submit(req(number, "a", uniq_key="k2"))
    assert [d.attempt for d in (first, second, third, other)] == [1, 2, 3, 1]
    assert third.action is Action.ACCEPT
    assert other.action is Action.HTTP_ERROR
    assert state.submissions_for("k1")["submissions"] == 3


def test_attempts_without_uniq_key_are_counted_per_number_and_body() -> None:
    state = SimState()
    number = "+380931234501"
    assert state.submit(req(number, "a")).action is Action.HTTP_ERROR
    assert state.submit(req(number, "b")).action is Action.HTTP_ERROR
    assert state.submit(req(number, "a")).action is Action.ACCEPT


def test_accepted_uniq_key_makes_the_next_submission_a_duplicate() -> None:
    state = SimState()
    request = req(uniq_key="once")
    state.accept(request, state.submit(request))
    assert state.submit(request).action is Action.DUPLICATE
    stats = state.stats_dict()
    assert stats["duplicates"] == 1
    assert stats["accepted"] == 1
    assert stats["submissions"] == 2
    assert state.submissions_for("once")["gateway_id"] is not None


def test_stats_count_faults_by_rule_and_suffix() -> None:
    state = SimState()
    state.submit(req("+380931234504"))
    state.submit(req("+380931234507"))
    state.submit(req("+380931234599"))
    stats = state.stats_dict()
    assert stats["faults_injected"] == 2
    assert stats["rejected"] == 1
    assert stats["by_rule"] == {"reject_invalid_number": 1, "malformed": 1}
    assert stats["by_number_suffix"] == {"04": 1, "07": 1}


def test_unknown_id_has_no_status() -> None:
    state = SimState()
    assert state.status("nope") is None
    assert state.stats_dict()["status_unknown"] == 1


def test_reset_forgets_everything() -> None:
    state = SimState()
    request = req(uniq_key="k")
    message = state.accept(request, state.submit(request))
    state.reset()
    assert state.message_dict(message.gateway_id) is None
    assert state.submit(request).action is Action.ACCEPT
    assert state.stats_dict()["submissions"] == 1


def test_store_is_bounded() -> None:
    state = SimState(max_messages=3)
    ids = []
    for n in range(5):
        request = req(body=str(n), uniq_key=f"k{n}")
        ids.append(state.accept(request, state.submit(request)).gateway_id)
    assert len(state.messages) == 3
    assert state.message_dict(ids[0]) is None
    assert state.message_dict(ids[-1]) is not None


def test_message_dict_never_holds_the_body() -> None:
    state = SimState()
    request = req(body="secret code 424242")
    message = state.accept(request, state.submit(request))
    data = state.message_dict(message.gateway_id)
    assert data is not None
    assert "424242" not in repr(data)
    assert data["body_chars"] == len("secret code 424242")


def test_gateway_date_is_rfc1123_with_the_gateway_offset() -> None:
    assert gateway_date(0) == "Thu, 01 Jan 1970 03:00:00 +0300"
