"""Throughput of the gateway simulator: send + status pairs over loopback.

The simulator runs in a separate process (its own GIL); this process drives it with
``--concurrency`` keep-alive connections on one asyncio loop, each doing send then status
of the returned id, for ``--seconds`` (and at most ``--max-requests``). Prints requests/s
and p50/p99 latency; ``main()`` returns the figures.

    python -m bench.bench_simulator --seconds 5 --concurrency 32
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

LOGIN = "bench"
PASSWORD = "bench-only-password"  # noqa: S105 - a throwaway loopback simulator
_ID = re.compile(rb'id="([^"]+)"')


def _start_simulator(latency_ms: float) -> tuple[subprocess.Popen[bytes], str]:
    env = dict(os.environ, IP2SMS_LOGIN=LOGIN, IP2SMS_PASSWORD=PASSWORD)
    cmd = [
        sys.executable,
        "-m",
        "sms_pipeline.simulator.cli",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--no-faults",
        "--latency-ms",
        str(latency_ms),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env)
    assert proc.stdout is not None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        match = re.search(rb"(http://127\.0\.0\.1:\d+)", line)
        if match:
            return proc, match.group(1).decode()
    proc.kill()
    raise RuntimeError("simulator did not report its address")


class _Conn:
    """A minimal keep-alive HTTP/1.1 client: the load generator must cost less CPU than
    the server it measures, which a full client library does not on a 2-core machine."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        token = base64.b64encode(f"{LOGIN}:{PASSWORD}".encode()).decode()
        self.head = (
            f"Host: {host}:{port}\r\nAuthorization: Basic {token}\r\n"
            "Content-Type: text/xml; charset=utf-8\r\n"
        ).encode()

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(
            b"POST %s HTTP/1.1\r\n%sContent-Length: %d\r\n\r\n%s"
            % (path.encode(), self.head, len(body), body)
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def _drive(
    base_url: str, seconds: float, concurrency: int, max_requests: int
) -> tuple[list[float], int, float]:
    from sms_pipeline.gateway.codec import build_send_xml, build_status_xml

    host, port = base_url.removeprefix("http://").rsplit(":", 1)
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds
    run_tag = f"{time.monotonic_ns():x}"  # uniq_keys must not repeat across runs

    async def worker(n: int) -> None:
        nonlocal errors
        conn = _Conn(host, int(port))
        i = 0
        try:
            while time.perf_counter() < stop_at and len(latencies) < max_requests:
                i += 1
                payload = build_send_xml(
                    f"+3809312{n:03d}99",
                    f"bench {i}",
                    source="BENCH",
                    uniq_key=f"{run_tag}-{n}-{i}",
                )
                t0 = time.perf_counter()
                status, answer = await conn.post("/ip2sms/", payload)
                t1 = time.perf_counter()
                latencies.append(t1 - t0)
                match = _ID.search(answer)
                if status != 200 or match is None:
                    errors += 1
                    continue
                status, answer = await conn.post(
                    "/ip2sms-request/", build_status_xml(match.group(1).decode())
                )
                latencies.append(time.perf_counter() - t1)
                if status != 200:
                    errors += 1
        finally:
            conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    return latencies, errors, time.perf_counter() - started


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, round(q * (len(sorted_values) - 1)))
    return sorted_values[index]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns requests_per_second, p50_ms, p99_ms, requests, errors."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-requests", type=int, default=200_000)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    args = parser.parse_args(argv)

    proc, base_url = _start_simulator(args.latency_ms)
    try:
        if args.warmup > 0:
            asyncio.run(_drive(base_url, args.warmup, args.concurrency, args.max_requests))
        latencies, errors, elapsed = asyncio.run(
            _drive(base_url, args.seconds, args.concurrency, args.max_requests)
        )
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    latencies.sort()
    result = {
        "requests": len(latencies),
        "errors": errors,
        "seconds": round(elapsed, 3),
        "concurrency": args.concurrency,
        "requests_per_second": round(len(latencies) / elapsed, 1) if elapsed else 0.0,
        "p50_ms": round(_percentile(latencies, 0.50) * 1000, 3),
        "p99_ms": round(_percentile(latencies, 0.99) * 1000, 3),
    }
    print(
        f"simulator: {result['requests_per_second']:.0f} req/s "
        f"({result['requests']} requests, {errors} errors, {elapsed:.1f} s, "
        f"concurrency {args.concurrency}), p50 {result['p50_ms']:.2f} ms, "
        f"p99 {result['p99_ms']:.2f} ms"
    )
    return result


if __name__ == "__main__":
    main()
