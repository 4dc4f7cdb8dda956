"""`make bench` (= `python -m bench`): every benchmark, each against its baseline in the same run.

    python -m bench                  # everything (~10 min on 2 cores)
    python -m bench --quick          # smaller counts (~2-3 min)
    python -m bench send --count 10000 [--latency-ms 100] [--concurrency 16] [--workers 2]
    python -m bench send --pool prefork   # one process per CPU instead of 16 threads
    python -m bench status|history|urgent|replication|enqueue [--count N]
    python -m bench send status --latency-ms 0 --workers 1   # status as a multiple of send
    python -m bench send --profile 10     # py-spy record of the worker for 10 s
    python -m bench status|mix --profile 10   # yappi inside the worker for 10 s

Needs PostgreSQL and Redis (SMS_TEST_POSTGRES_URL / SMS_TEST_REDIS_URL, as the tests):
a database of its own is created, migrated and dropped; a Redis db is claimed as the
tests claim theirs (tests/support.py). Figures are printed and merged into
.sms_pipeline/bench-results.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time
from collections.abc import Sequence
from typing import Any

from bench.common import REPO, BenchEnv, load_average, log, save_results

BENCHMARKS = (
    "send", "status", "history", "urgent", "replication", "enqueue", "api", "mix", "slow",
)  # fmt: skip
# Long: only when named (`python -m bench soak --minutes 30`, `make bench-soak`).
OPTIONAL = ("soak",)
POOL = "threads"
# Chosen by measurement (docs/performance.md): enough threads to keep PostgreSQL and the
# gateway busy, few enough that the GIL is not fought over.
SEND_CONCURRENCY = 16

FULL: dict[str, Any] = {
    "send": 10_000,
    "status": 20_000,
    "history_small": 10_000,
    "history_large": 1_000_000,
    "history_pending": 1_000,
    "history_recent": 5_000,
    "history_reps": 9,
    "urgent_bulk": 20_000,
    "urgent": 50,
    "urgent_spread": 5.0,
    "replication": 100_000,
    "replication_rate": 2_000.0,
    "enqueue": 2_000,
    "api": 2_000,
    "api_seconds": 20.0,
    "mix": 10_000,
    "slow": 4_000,
}
QUICK: dict[str, Any] = {
    **FULL,
    "send": 2_000,
    "status": 5_000,
    "history_large": 100_000,
    "history_reps": 5,
    "urgent_bulk": 4_000,
    "urgent": 30,
    "urgent_spread": 3.0,
    "replication": 10_000,
    "enqueue": 500,
    "api": 500,
    "api_seconds": 8.0,
    "mix": 2_000,
    "slow": 2_000,
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "benchmark", nargs="*", default="all", choices=("all", *BENCHMARKS, *OPTIONAL),
        help="one or more; `send status` prints the status rate as a multiple of the send rate",
    )  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="smaller counts (~2-3 minutes)")
    parser.add_argument("--minutes", type=float, default=30.0, help="soak: length (minutes)")
    parser.add_argument("--rate", type=float, default=40.0, help="soak: messages per second")
    parser.add_argument(
        "--trace", action="store_true",
        help="soak: run the worker under tracemalloc (bench.traced_worker): where memory grows",
    )  # fmt: skip
    parser.add_argument("--count", type=int, default=None, help="main count of the benchmark")
    parser.add_argument("--concurrency", type=int, default=None, help="worker threads")
    parser.add_argument("--latency-ms", type=float, default=None, help="send: gateway latency")
    parser.add_argument(
        "--pool", choices=("threads", "prefork"), default=POOL,
        help="worker pool of ours and of the baseline (default %(default)s; prefork: one "
        "process per CPU unless --concurrency)",
    )  # fmt: skip
    parser.add_argument(
        "--workers", type=int, default=None, help="send: worker processes (default: 1, then 2)"
    )
    parser.add_argument(
        "--profile", type=float, default=0.0, metavar="SECONDS",
        help="send, api: py-spy record the worker (the API) for SECONDS; status, mix: yappi "
        "inside the worker (bench.profiled_worker) (.sms_pipeline/profile-*.txt)",
    )  # fmt: skip
    return parser


def _met(value: float | None, target: float, higher_is_better: bool = True) -> str:
    if value is None:
        return "—"
    return "yes" if (value >= target if higher_is_better else value <= target) else "NO"


def _table(results: dict[str, Any]) -> list[list[str]]:
    rows: list[list[str]] = []
    if "baseline" in results:
        b = results["baseline"]
        rows.append([
            f"baseline: raw Celery defaults, noop.delay(i) ({b['pool']} c={b['concurrency']})",
            f"{b['per_second']:.0f} tasks/s", "—", "1.00", "—", "—",
        ])  # fmt: skip
    for key in sorted(k for k in results if k.startswith("send_")):
        r = results[key]
        target = 0.8 if r["gateway_latency_ms"] == 0 else 0.7
        workers = r.get("workers", 1)
        rows.append([
            f"end to end, 1 producer, {r['gateway_latency_ms']:g} ms gateway "
            f"({workers} × {r['pool']} c={r['concurrency']})",
            f"{r['per_second']:.0f} SMS/s", f"{r['baseline_per_second']:.0f} tasks/s",
            f"{r['ratio']:.2f}", f"≥ {target} × baseline" if workers == 1 else "—",
            _met(r["ratio"], target) if workers == 1 else "—",
        ])  # fmt: skip
        rows.append([
            f"  worker CPU per message, RSS ({workers} worker(s))",
            f"{r['worker_cpu_ms_per_message']} ms, {r['worker_rss_mib']} MiB",
            f"{r['baseline_worker_cpu_ms_per_task']} ms, {r['baseline_worker_rss_mib']} MiB",
            "—", "—", "—",
        ])  # fmt: skip
    if "status" in results:
        r = results["status"]
        send = r.get("send_per_second")
        rows.append([
            f"status checks ({r['pool']} c={r['concurrency']})",
            f"{r['per_second']:.0f} checks/s", f"{r['baseline_per_second']:.0f} tasks/s",
            f"{r['ratio']:.2f}" + (f" ({r['ratio_to_send']:.2f} × send)" if send else ""),
            "≥ 2 × send rate", _met(r.get("ratio_to_send"), 2.0),
        ])  # fmt: skip
    if "history" in results:
        r = results["history"]
        for what in ("sweep", "report"):
            rows.append([
                f"{what} time, {r['small_history']:,} → {r['large_history']:,} rows",
                f"{r['large'][what + '_ms']} ms", f"{r['small'][what + '_ms']} ms",
                f"{r[what + '_ratio']:.2f}", "≤ 1.2", _met(r[what + "_ratio"], 1.2, False),
            ])  # fmt: skip
    if "urgent" in results:
        r = results["urgent"]
        rows.append([
            f"urgent p99 enqueue→submit under {r['bulk_messages']:,} bulk",
            f"{r['p99_ms']:.0f} ms (p50 {r['p50_ms']:.0f})", "—", "—", "≤ 2000 ms",
            _met(r["p99_ms"], 2000, False),
        ])  # fmt: skip
    if "replication" in results:
        r = results["replication"]
        rows.append([
            f"replication, {r['verifications']:,} rows (offered {r['offered_per_second']:.0f}/s)",
            f"{r['per_second']:.0f} rows/s", "—", "—", "all replicated", "yes",
        ])  # fmt: skip
        rows.append([
            f"replication lag at a steady {r['probe_per_second']:g} rows/s",
            f"p50 {r['lag_p50_ms']:.0f} ms, p99 {r['lag_p99_ms']:.0f} ms", "—", "—", "—", "—",
        ])  # fmt: skip
    if "enqueue" in results:
        r = results["enqueue"]
        for message_type, f in r.get("by_type", {}).items():
            met = _met(f["p50_ms"], 1.0, False) == "yes" and _met(f["p99_ms"], 3.0, False) == "yes"
            rows.append([
                f"enqueue_sms, own transaction, {message_type}",
                f"p50 {f['p50_ms']} ms, p99 {f['p99_ms']} ms",
                "—", "—", "p50 ≤ 1.0 ms, p99 ≤ 3 ms", "yes" if met else "NO",
            ])  # fmt: skip
        f = r["caller_session"]
        rows.append([
            "enqueue_sms, caller session (text)", f"p50 {f['p50_ms']} ms, p99 {f['p99_ms']} ms",
            "—", "—", "p50 ≤ 1.5 ms", _met(f["p50_ms"], 1.5, False),
        ])  # fmt: skip
        if "many" in r:
            rows.append([
                f"enqueue_many, batches of {r['many']['batch']}",
                f"{r['many']['rows_per_second']:.0f} rows/s", "—", "—", "—", "—",
            ])  # fmt: skip
    if "api" in results:
        r = results["api"]
        one, eight = r["single"], r["eight"]
        rows.append([
            f"POST /v1/messages, 1 keep-alive client, mix ({r['workers']} worker(s))",
            f"p50 {one['p50_ms']} ms, p99 {one['p99_ms']} ms",
            f"enqueue_sms p50 {r['enqueue_sms']['p50_ms']} ms",
            f"{r['single_p50_over_enqueue_p50']:.2f}", "p50 ≤ 3 ms",
            _met(one["p50_ms"], 3.0, False),
        ])  # fmt: skip
        rows.append([
            "POST /v1/messages, 8 keep-alive clients, mix",
            f"{eight['per_second']:.0f} req/s, {eight['errors']} errors",
            f"{r['baseline_per_second']:.0f} tasks/s" if "ratio" in r else "—",
            f"{r['ratio']:.2f}" if "ratio" in r else "—", "≥ 300 req/s, 0 errors",
            "yes" if eight["per_second"] >= 300 and eight["errors"] == 0 else "NO",
        ])  # fmt: skip
    for key in sorted(k for k in results if k.startswith("mix_")):
        r = results[key]
        target = 0.8 if r["gateway_latency_ms"] == 0 else 0.7
        rows.append([
            f"production mix end to end, 1 producer, {r['gateway_latency_ms']:g} ms gateway",
            f"{r['per_second']:.0f} SMS/s", f"{r['baseline_per_second']:.0f} tasks/s",
            f"{r['ratio']:.2f}", f"≥ {target} × baseline", _met(r["ratio"], target),
        ])  # fmt: skip
    if "slow" in results:
        r = results["slow"]
        rows.append([
            "slow minority: healthy texts' rate / clean rate (1 % hung)",
            f"{r['slow']['healthy_texts_per_second']:.0f} texts/s",
            f"{r['clean']['healthy_texts_per_second']:.0f} texts/s (clean)",
            f"{r['healthy_rate_ratio']:.2f}", "≥ 0.8", _met(r["healthy_rate_ratio"], 0.8),
        ])  # fmt: skip
        rows.append([
            "slow minority: healthy codes' enqueue→submission p99 (2 of 40 hung)",
            f"{r['slow']['healthy_codes_p99_s']} s", f"{r['clean']['healthy_codes_p99_s']} s",
            "—", "≤ 2 s", _met(r["slow"]["healthy_codes_p99_s"], 2.0, False),
        ])  # fmt: skip
    if "soak" in results:
        r = results["soak"]
        rows.append([
            f"soak {r['minutes']:g} min, {r['offered_per_second']:g} msg/s, mix, "
            f"{r['gateway_latency_ms']:g} ms gateway",
            f"{r['worker_bytes_per_message']} B/message "
            f"({r['worker_rss_start_mib']} → {r['worker_rss_end_mib']} MiB), backlog "
            f"{r['backlog_after_2_min']}",
            f"{r.get('baseline_worker_rss_mib', '—')} MiB",
            f"{r['rss_ratio']:.2f}" if "rss_ratio" in r else "—",
            "≤ 50 B/message, backlog 0",
            "yes"
            if (r["worker_bytes_per_message"] or 0) <= 50 and r["backlog_after_2_min"] == 0
            else "NO",
        ])  # fmt: skip
    return rows


def print_table(results: dict[str, Any]) -> None:
    header = ["benchmark", "ours", "baseline", "ratio", "target", "met?"]
    rows = [header, *_table(results)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for n, row in enumerate(rows):
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)))
        if n == 0:
            print("  ".join("-" * w for w in widths))


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    sizes = dict(QUICK if args.quick else FULL)
    chosen = (
        (*BENCHMARKS, *(b for b in args.benchmark if b in OPTIONAL))
        if "all" in args.benchmark
        else tuple(args.benchmark)
    )
    if args.count is not None:
        for benchmark in chosen:
            key = {"history": "history_large", "urgent": "urgent_bulk"}.get(benchmark, benchmark)
            sizes[key] = args.count
    run_info: dict[str, Any] = {
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "benchmarks": list(chosen),
        "load_average_before": load_average(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    log(f"load average {run_info['load_average_before']} on {os.cpu_count()} CPUs")
    if run_info["load_average_before"][0] > 1.0:
        log("WARNING: the machine is busy (load > 1): figures will be low and noisy")
    results: dict[str, Any] = {}
    started = time.perf_counter()
    pool = args.pool
    send_c = args.concurrency or (SEND_CONCURRENCY if pool == "threads" else os.cpu_count() or 1)
    with BenchEnv() as env:
        baseline: dict[str, Any] | None = None
        if any(b in chosen for b in ("send", "status", "api", "soak", "mix", "slow")):
            from bench import bench_send

            baseline = bench_send.raw_baseline(
                env, count=sizes["send"], pool=pool, concurrency=send_c
            )
            results["baseline"] = baseline
        if "send" in chosen:
            assert baseline is not None
            latencies = [args.latency_ms] if args.latency_ms is not None else [0.0, 100.0]
            runs = [(latency, args.workers or 1) for latency in latencies]
            if args.workers is None:
                runs.append((latencies[0], 2))  # 1 vs 2 worker processes
            for latency, workers in runs:
                profile_out = REPO / ".sms_pipeline" / f"profile-send-{latency:g}ms.txt"
                r = bench_send.run(
                    env, count=sizes["send"], latency_ms=latency, pool=pool,
                    concurrency=send_c, baseline=baseline, workers=workers,
                    profile_seconds=args.profile if workers == 1 else 0.0,
                    profile_out=profile_out,
                )  # fmt: skip
                key = f"send_{latency:g}ms" + (f"_{workers}workers" if workers > 1 else "")
                results[key] = r
                if args.profile and workers == 1 and profile_out.exists():
                    from bench.profile import summarise

                    r["profile"] = {"file": str(profile_out), **summarise(profile_out, 25)}
        if "status" in chosen:
            from bench import bench_status

            send_rate = results.get("send_0ms", {}).get("per_second")
            assert baseline is not None
            profile_out = REPO / ".sms_pipeline" / "profile-status.txt"
            r = bench_status.run(
                env, count=sizes["status"], pool=pool, concurrency=send_c,
                baseline=baseline, send_rate=send_rate,
                profile_seconds=args.profile, profile_out=profile_out,
            )  # fmt: skip
            results["status"] = r
            if args.profile and profile_out.exists():
                r["profile"] = str(profile_out)  # yappi's functions by total CPU
        if "history" in chosen:
            from bench import bench_history

            results["history"] = bench_history.run(
                env, small=sizes["history_small"], large=sizes["history_large"],
                pending=sizes["history_pending"], recent=sizes["history_recent"],
                reps=sizes["history_reps"],
            )  # fmt: skip
        if "urgent" in chosen:
            from bench import bench_urgent

            results["urgent"] = bench_urgent.run(
                env, bulk=sizes["urgent_bulk"], urgent=sizes["urgent"],
                spread=sizes["urgent_spread"], pool=pool, concurrency=send_c, latency_ms=0.0,
            )  # fmt: skip
        if "replication" in chosen:
            from bench import bench_replication

            results["replication"] = bench_replication.run(
                env, count=sizes["replication"], batch=1000, rate=sizes["replication_rate"]
            )
        if "enqueue" in chosen:
            from bench import bench_enqueue

            results["enqueue"] = bench_enqueue.run(env, count=sizes["enqueue"])
        if "api" in chosen:
            from bench import bench_api

            profile_out = REPO / ".sms_pipeline" / "profile-api.txt"
            results["api"] = bench_api.run(
                env, count=sizes["api"], seconds=sizes["api_seconds"], baseline=baseline,
                workers=args.workers, profile_seconds=args.profile, profile_out=profile_out,
            )  # fmt: skip
            if args.profile and profile_out.exists():
                from bench.profile import summarise

                results["api"]["profile"] = {"file": str(profile_out), **summarise(profile_out, 25)}
        if "mix" in chosen:
            from bench import bench_mix

            assert baseline is not None
            latencies = [args.latency_ms] if args.latency_ms is not None else [0.0, 100.0]
            for latency in latencies:
                mix_profile = REPO / ".sms_pipeline" / f"profile-mix-{latency:g}ms.txt"
                results[f"mix_{latency:g}ms"] = bench_mix.run_mix(
                    env, count=sizes["mix"], latency_ms=latency, concurrency=send_c,
                    baseline=baseline, profile_seconds=args.profile, profile_out=mix_profile,
                )  # fmt: skip
                if args.profile and mix_profile.exists():
                    results[f"mix_{latency:g}ms"]["profile"] = str(mix_profile)
        if "slow" in chosen:
            from bench import bench_mix

            results["slow"] = bench_mix.run_slow(
                env, texts=sizes["slow"], concurrency=send_c, baseline=baseline
            )
        if "soak" in chosen:
            from bench import bench_soak

            latency = 20.0 if args.latency_ms is None else args.latency_ms
            results["soak"] = bench_soak.run(
                env, minutes=args.minutes, rate=args.rate, latency_ms=latency,
                concurrency=send_c, baseline=baseline, trace=args.trace,
            )  # fmt: skip
    run_info["seconds"] = round(time.perf_counter() - started, 1)
    run_info["load_average_after"] = load_average()
    results["run"] = run_info
    path = save_results(results)
    print()
    print(
        f"sms-pipeline benchmarks ({'quick' if args.quick else 'full'}; "
        f"{run_info['seconds']:.0f} s; load average before {run_info['load_average_before']}, "
        f"after {run_info['load_average_after']}; {os.cpu_count()} CPUs)"
    )
    print_table(results)
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
