"""The metrics catalogue, label encoding, histogram maths, report helpers and Flower's launch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from sms_pipeline.metrics import catalogue as c
from sms_pipeline.metrics.report import parse_duration, percentile_cont
from sms_pipeline.metrics.store import MetricsStore, format_labels, parse_labels

ROOT = Path(__file__).resolve().parents[2]

REQUIRED = {
    "sms_messages_total",
    "sms_gateway_requests_total",
    "sms_gateway_request_duration_seconds",
    "sms_status_transitions_total",
    "sms_enqueue_to_submit_seconds",
    "sms_submit_to_delivered_seconds",
    "sms_message_attempts",
    "sms_queue_depth",
    "sms_queue_oldest_age_seconds",
    "sms_messages_moving",
    "sms_terminated_ratio",
    "sms_delivery_ratio",
}


def test_catalogue_has_every_required_metric_once() -> None:
    names = [spec.name for spec in c.CATALOGUE]
    assert len(names) == len(set(names))
    assert set(names) >= REQUIRED


def test_counters_end_in_total_and_others_do_not() -> None:
    for spec in c.CATALOGUE:
        assert spec.name.endswith("_total") == (spec.kind is c.Kind.COUNTER), spec.name
        assert spec.name.startswith("sms_")
        if spec.kind is c.Kind.HISTOGRAM:
            assert spec.buckets == tuple(sorted(spec.buckets)) and spec.buckets
            assert spec.source is c.Source.STORED


def test_no_metric_is_labelled_by_a_number_or_an_id() -> None:
    forbidden = {"phone", "phone_number", "id", "message_id", "gateway_id", "uniq_key", "body"}
    for spec in c.CATALOGUE:
        assert not forbidden & set(spec.labels), spec.name


def test_docs_table_is_the_generated_one() -> None:
    docs = (ROOT / "docs" / "metrics.md").read_text(encoding="utf-8")
    assert c.render_markdown() in docs, "regenerate: python -m sms_pipeline.metrics.catalogue"


def test_markdown_has_one_row_per_metric() -> None:
    table = c.render_markdown().splitlines()
    assert len(table) == 2 + len(c.CATALOGUE)
    assert all(line.startswith("| `sms_") for line in table[2:])


def test_labels_are_canonical_whatever_their_order() -> None:
    assert format_labels({"b": "2", "a": "1"}) == "a=1,b=2"
    assert format_labels({"a": "1", "b": "2"}) == "a=1,b=2"
    assert format_labels(None) == ""
    assert parse_labels("a=1,b=2") == {"a": "1", "b": "2"}


def test_separators_in_a_label_value_cannot_forge_another_label() -> None:
    text = format_labels({"account": "acme,status=evil"})
    assert parse_labels(text) == {"account": "acme_status_evil"}


def observed(labels: dict[str, object], value: float, buckets: tuple[float, ...]) -> Any:
    """What the store buffers for one observation (never flushed: no database needed)."""
    store = MetricsStore(lambda: None)  # type: ignore[arg-type, return-value]
    store.observe("h", labels, value, buckets)
    return store.pending()


def reference_increments(
    labels: dict[str, object], value: float, buckets: tuple[float, ...]
) -> dict[tuple[str, str], float]:
    """A cumulative histogram written out plainly: every bucket at or above the value."""
    out = {
        ("h_bucket", format_labels({**labels, "le": le})): 1.0
        for bound, le in [*((b, repr(float(b))) for b in sorted(buckets)), (float("inf"), "+Inf")]
        if value <= bound
    }
    out[("h_sum", format_labels(labels))] = float(value)
    out[("h_count", format_labels(labels))] = 1.0
    return out


def test_histogram_observation_increments_every_bucket_at_or_above_it() -> None:
    rows = observed({"op": "send"}, 0.3, (0.1, 0.5, 1.0))
    assert rows == {
        ("h_bucket", "le=0.5,op=send"): 1.0,
        ("h_bucket", "le=1.0,op=send"): 1.0,
        ("h_bucket", "le=+Inf,op=send"): 1.0,
        ("h_sum", "op=send"): 0.3,
        ("h_count", "op=send"): 1.0,
    }


_LABEL_SETS = [{}, {"op": "send"}, {"op": "status", "type": "2FA"}, {"type": "2FA", "op": "status"}]


@settings(max_examples=200, deadline=None)
@given(
    items=st.lists(
        st.tuples(
            st.sampled_from(range(len(_LABEL_SETS))),
            st.floats(min_value=0, max_value=20, allow_nan=False),
            st.booleans(),
        ),
        max_size=60,
    )
)
def test_one_batch_adds_up_to_its_items_one_by_one(items: list[tuple[int, float, bool]]) -> None:
    """A send batch records its metrics in one add(); the sums are those of one add per item
    (the same label set written in another key order is the same series)."""
    buckets = (0.1, 0.5, 1.0, 5.0)
    increments = [("n", _LABEL_SETS[i], 1.0) for i, _v, counted in items if counted]
    observations = [("h", _LABEL_SETS[i], v, buckets) for i, v, _counted in items]
    batch = MetricsStore(lambda: None)  # type: ignore[arg-type, return-value]
    batch.add(increments, observations)
    single = MetricsStore(lambda: None)  # type: ignore[arg-type, return-value]
    for increment in increments:
        single.add(increments=[increment])
    for observation in observations:
        single.add(observations=[observation])
    expected = single.pending()
    assert batch.pending().keys() == expected.keys()
    for key, value in batch.pending().items():
        assert value == pytest.approx(expected[key]), key


def test_observation_on_a_bucket_bound_counts_in_that_bucket() -> None:
    assert ("h_bucket", "le=0.5") in observed({}, 0.5, (0.5,))


def test_percentile_cont_interpolates_like_postgresql() -> None:
    values = [10.0, 20.0, 30.0, 40.0]
    assert percentile_cont(values, 0.5) == 25.0
    assert percentile_cont(values, 0.95) == pytest.approx(38.5)
    assert percentile_cont([7.0], 0.99) == 7.0
    assert percentile_cont([], 0.5) is None


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("30m", 1800), ("24h", 86400), ("7d", 604800), ("15", 15)]
)
def test_durations_parse(text: str, seconds: int) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "0h", "-1h", "abc", "5y"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_flower_refuses_to_start_without_a_login() -> None:
    from sms_pipeline.cli.monitoring import flower_command
    from sms_pipeline.settings import load_settings

    with pytest.raises(PermissionError, match="SMS_FLOWER_BASIC_AUTH"):
        flower_command(
            load_settings(sms_flower_basic_auth=None), port=5555, address="127.0.0.1", no_auth=False
        )
    argv, env = flower_command(
        load_settings(sms_flower_basic_auth=None), port=5555, address="127.0.0.1", no_auth=True
    )
    assert "flower" in argv and env == {}


def test_flower_login_goes_through_the_environment_not_argv() -> None:
    from sms_pipeline.cli.monitoring import flower_command
    from sms_pipeline.settings import load_settings

    settings = load_settings(sms_flower_basic_auth=SecretStr("ops:s3cret-pw"))
    argv, env = flower_command(settings, port=5601, address="0.0.0.0", no_auth=False)
    assert env == {"FLOWER_BASIC_AUTH": "ops:s3cret-pw"}
    assert not any("s3cret" in part for part in argv)
    assert argv[argv.index("-A") + 1] == "sms_pipeline.celery_app"
    assert "--port=5601" in argv and "--address=0.0.0.0" in argv
    assert "s3cret" not in repr(settings)


def test_flower_login_with_a_comma_is_refused_without_echoing_it() -> None:
    from sms_pipeline.cli.monitoring import flower_command
    from sms_pipeline.settings import load_settings

    settings = load_settings(sms_flower_basic_auth=SecretStr("ops:a,b"))
    with pytest.raises(ValueError, match="user:password") as info:
        flower_command(settings, port=5555, address="127.0.0.1", no_auth=False)
    assert "a,b" not in str(info.value)


@pytest.mark.parametrize("value", [0.0, 0.05, 0.1, 0.3, 1.0, 99.0])
def test_buffered_observation_equals_the_reference_increments(value: float) -> None:
    buckets = (0.1, 0.5, 1.0)
    assert observed({"op": "send"}, value, buckets) == reference_increments(
        {"op": "send"}, value, buckets
    )
