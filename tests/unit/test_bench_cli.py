"""`make bench` runs `python -m bench` with no argument: its parser must take that."""

from __future__ import annotations

from bench.__main__ import BENCHMARKS, _parser


def test_no_argument_means_every_benchmark() -> None:
    args = _parser().parse_args([])
    chosen = BENCHMARKS if "all" in args.benchmark else tuple(args.benchmark)
    assert chosen == BENCHMARKS


def test_several_benchmarks_and_a_pool_can_be_named() -> None:
    args = _parser().parse_args(["send", "status", "--pool", "prefork"])
    assert list(args.benchmark) == ["send", "status"] and args.pool == "prefork"
