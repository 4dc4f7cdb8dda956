"""The metrics' account-name cache: read through the caller's bind, bounded, expiring."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import pytest

from sms_pipeline.metrics import hooks


class FakeBind:
    """Answers `SELECT accounts.name WHERE id = …` with a name from `names`; counts reads."""

    def __init__(self, names: dict[int, str]) -> None:
        self.names = names
        self.reads = 0

    def execute(self, statement: Any) -> Any:
        self.reads += 1
        account_id = statement.compile().params["id_1"]
        name = self.names.get(account_id)

        class Result:
            def scalar(self) -> str | None:
                return name

        return Result()


def name_of(account_id: int, bind: FakeBind) -> str:
    return hooks.account_name(account_id, cast(Any, bind))  # a session or connection in use


@pytest.fixture(autouse=True)
def empty_cache() -> Iterator[None]:
    hooks.forget_account_names()
    yield
    hooks.forget_account_names()


def test_a_name_is_read_once_then_served_from_the_cache() -> None:
    bind = FakeBind({7: "clinic"})
    assert [name_of(7, bind) for _ in range(3)] == ["clinic"] * 3
    assert bind.reads == 1


def test_an_unknown_account_is_labelled_unknown_and_not_cached() -> None:
    bind = FakeBind({})
    assert name_of(8, bind) == "unknown"
    bind.names[8] = "created-later"
    assert name_of(8, bind) == "created-later"


def test_a_renamed_account_shows_its_new_name_once_the_entry_expires(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(hooks, "_clock", lambda: clock[0])
    bind = FakeBind({7: "clinic"})
    assert name_of(7, bind) == "clinic"
    bind.names[7] = "clinic-renamed"
    clock[0] += hooks._NAMES_TTL_SECONDS - 1
    assert name_of(7, bind) == "clinic"
    clock[0] += 2
    assert name_of(7, bind) == "clinic-renamed"


def test_the_cache_is_bounded_and_drops_the_least_recently_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(hooks, "_NAMES_MAX", 3)
    bind = FakeBind({i: f"account-{i}" for i in range(10)})
    for account_id in (1, 2, 3):
        name_of(account_id, bind)
    name_of(1, bind)  # 1 used again: 2 is now the oldest
    name_of(4, bind)
    assert list(hooks._account_names) == [3, 1, 4]
    reads = bind.reads
    name_of(2, bind)
    assert bind.reads == reads + 1  # dropped, so read again
