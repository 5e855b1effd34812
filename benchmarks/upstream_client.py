"""Which HTTP client should the OpenAI-compatible upstream backend use? One shared `httpx.AsyncClient` against one
`aiohttp.ClientSession`, both sized for 64 concurrent requests, driving the same local OpenAI-shaped upstream
(aiohttp.web in a child process on 127.0.0.1, a free port, a fixed JSON answer), in the same run, rounds alternated.

Usage: .venv/bin/python benchmarks/upstream_client.py [--requests 5000] [--concurrency 64] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import socket
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import httpx
from aiohttp import web

ANSWER = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 0,
    "model": "bench",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Hello there."}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12},
}
BODY = {"model": "bench", "messages": [{"role": "user", "content": "Where is my card?"}], "max_tokens": 16}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(port: int) -> None:
    """The upstream: POST /v1/chat/completions answers a fixed completion."""

    async def chat(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response(ANSWER)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, backlog=1024)


def wait_for(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"the upstream did not listen on port {port} within {timeout_s} s")


async def drive(call, n: int, concurrency: int) -> dict:
    """Send `n` requests through `call`, `concurrency` at a time; requests/s and latency percentiles."""
    latencies: list[float] = []
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < n:
            next_index += 1
            t0 = time.perf_counter()
            answer = await call()
            latencies.append(time.perf_counter() - t0)
            assert answer["usage"]["total_tokens"] == 12

    t0 = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), timeout=300)
    elapsed = time.perf_counter() - t0
    q = statistics.quantiles(latencies, n=100)
    return {
        "requests": len(latencies),
        "elapsed_s": round(elapsed, 3),
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(q[49] * 1000, 2),
        "p99_ms": round(q[98] * 1000, 2),
    }


async def with_httpx(url: str, n: int, concurrency: int) -> dict:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(30.0, connect=5.0)) as client:

        async def call() -> dict:
            r = await client.post(url, json=BODY)
            r.raise_for_status()
            return r.json()

        await drive(call, min(n, 200), concurrency)  # warm the pool
        return await drive(call, n, concurrency)


async def with_aiohttp(url: str, n: int, concurrency: int) -> dict:
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    timeout = aiohttp.ClientTimeout(sock_connect=5.0, sock_read=30.0)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def call() -> dict:
            async with session.post(url, json=BODY) as r:
                r.raise_for_status()
                return await r.json()

        await drive(call, min(n, 200), concurrency)
        return await drive(call, n, concurrency)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "upstream_client.json"
    )
    args = parser.parse_args()

    port = free_port()
    upstream = mp.get_context("spawn").Process(target=serve, args=(port,), daemon=True)
    upstream.start()
    load_start = os.getloadavg()
    try:
        wait_for(port)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        runs: dict[str, list[dict]] = {"httpx": [], "aiohttp": []}
        for _ in range(args.rounds):  # alternate, so neither client always gets the quieter machine
            runs["httpx"].append(asyncio.run(with_httpx(url, args.requests, args.concurrency)))
            runs["aiohttp"].append(asyncio.run(with_aiohttp(url, args.requests, args.concurrency)))
    finally:
        upstream.terminate()
        upstream.join(10)

    def best(rs: list[dict]) -> dict:
        return max(rs, key=lambda r: r["requests_per_s"])

    summary = {name: best(rs) for name, rs in runs.items()}
    result = {
        "benchmark": "upstream HTTP client: one shared httpx.AsyncClient vs one aiohttp.ClientSession",
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_avg_at_start": load_start,
            "load_avg_at_end": os.getloadavg(),
        },
        "setup": {
            "requests": args.requests,
            "concurrency": args.concurrency,
            "rounds": args.rounds,
            "upstream": "aiohttp.web in a child process on 127.0.0.1, fixed JSON chat completion",
            "httpx": f"httpx {httpx.__version__}, Limits(max_connections={args.concurrency}, "
            f"max_keepalive_connections={args.concurrency})",
            "aiohttp": f"aiohttp {aiohttp.__version__}, TCPConnector(limit={args.concurrency})",
            "loop": "asyncio default loop, clients in the parent process; 200 warm-up requests per run",
        },
        "runs": runs,
        "best": summary,
        "aiohttp_over_httpx": round(
            summary["aiohttp"]["requests_per_s"] / summary["httpx"]["requests_per_s"], 2
        ),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["best"], indent=2), "aiohttp/httpx:", result["aiohttp_over_httpx"])


if __name__ == "__main__":
    main()
