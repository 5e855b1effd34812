"""The job queue against direct calls: the same support-router work on the same `llmops serve`, same run.

Direct: N `POST /v1/route` calls at a fixed concurrency (the peer). Jobs: N `POST /v1/jobs` of the same body at the
same concurrency, run by `llmops worker` with 1 and then 2 processes; the clock stops when the last job's answer is
stored (the stream is empty: every job acknowledged). Reports requests or jobs per second and the latency of the
HTTP calls (for jobs, of the submission: what a client waits for before it is free). A real redis-server, the
benchmark backend (a deterministic echo), guardrails, JWT auth and the audit log on in both.

Usage: nice -n 10 .venv/bin/python benchmarks/jobs.py [--jobs 1000] [--concurrency 16]
Writes benchmarks/results/jobs.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "jobs.json"
LLMOPS = Path(sys.executable).parent / "llmops"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready after {timeout} s")
        time.sleep(0.1)


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


async def load(
    base: str, path: str, bodies: list[dict], token: str, concurrency: int
) -> tuple[float, list[float], list]:
    """POST each body at `concurrency` (aiohttp: httpx's pool would be the bottleneck): (seconds, latencies in ms, answers)."""
    import aiohttp

    sem, latencies, answers = asyncio.Semaphore(concurrency), [], []
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(
        base, headers=headers, connector=aiohttp.TCPConnector(limit=concurrency)
    ) as c:

        async def one(body):
            async with sem:
                t = time.perf_counter()
                async with c.post(path, json=body) as r:
                    answer = await r.json()
                    if r.status not in (200, 202):
                        raise RuntimeError(f"{path}: {r.status} {answer}")
                latencies.append((time.perf_counter() - t) * 1000)
                answers.append(answer)

        t0 = time.perf_counter()
        await asyncio.gather(*(one(b) for b in bodies))
        return time.perf_counter() - t0, latencies, answers


def summary(n: int, seconds: float, latencies: list[float]) -> dict:
    return {
        "n": n,
        "seconds": round(seconds, 3),
        "per_s": round(n / seconds, 1),
        "p50_ms": round(percentile(latencies, 50), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=16)
    args = ap.parse_args()
    import redis

    from llmops_kit.core import load_settings
    from llmops_kit.serving.auth import mint_token

    root, procs, load_start = Path(tempfile.mkdtemp(prefix="bench-jobs-")), [], os.getloadavg()[0]
    rport, port, secret = free_port(), free_port(), secrets.token_urlsafe(32)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMOPS_")} | {"LLMOPS_JWT_SECRET": secret}
    try:
        procs.append(subprocess.Popen(["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL))  # fmt: skip
        r = redis.Redis(port=rport, decode_responses=True)
        wait_for(lambda: _ping(r), "redis-server")
        ini = root / "settings.ini"
        ini.write_text(
            "[project]\nstate_dir = .llmops\nlog_level = WARNING\n[audit]\ndir = .llmops/audit\n"
            "[guardrails]\nembedding_guards = false\n[serving]\nbackend = benchmark\n"
            f"[jobs]\nredis_url = redis://127.0.0.1:{rport}/0\nconcurrency = {args.concurrency}\n"
        )
        token = mint_token(
            load_settings(ini, environ={}), "bench", ("chat",), 3600, environ={"LLMOPS_JWT_SECRET": secret}
        )
        server = subprocess.Popen([str(LLMOPS), "serve", "--config", str(ini), "--port", str(port)], cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        procs.append(server)
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: _ok(base + "/readyz"), "llmops serve")
        tickets = [{"input": f"My card payment number {i} was declined twice today, what should I do?"} for i in range(args.jobs)]  # fmt: skip
        asyncio.run(load(base, "/v1/route", tickets[:50], token, args.concurrency))  # warm-up
        seconds, lat, _ = asyncio.run(load(base, "/v1/route", tickets, token, args.concurrency))
        results = {"direct": summary(args.jobs, seconds, lat), "jobs": {}}
        print("direct", results["direct"], flush=True)
        for processes in (1, 2):
            log = root / f"worker{processes}.log"
            with open(log, "wb") as fh:
                worker = subprocess.Popen([str(LLMOPS), "worker", "--config", str(ini), "--processes", str(processes)], cwd=root, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
            procs.append(worker)
            wait_for(
                lambda log=log, n=processes: log.read_text().count("consuming") >= n,
                f"{processes} worker process(es)",
            )
            bodies = [{"endpoint": "/v1/route", "body": t} for t in tickets]
            t0 = time.perf_counter()
            submit_s, lat, answers = asyncio.run(load(base, "/v1/jobs", bodies, token, args.concurrency))
            wait_for(lambda: r.xlen("llmops:jobs") == 0, "the queue to drain", timeout=600)
            total_s = time.perf_counter() - t0
            statuses = {r.hget("llmops:job:" + a["id"], "status") for a in answers}
            answered = {r.hget("llmops:job:" + a["id"], "answers") for a in answers}
            assert statuses == {"succeeded"} and answered == {"1"}, (statuses, answered)
            results["jobs"][f"{processes}_worker_process"] = {
                "submit": summary(args.jobs, submit_s, lat),
                "end_to_end_s": round(total_s, 3),
                "jobs_per_s": round(args.jobs / total_s, 1),
            }
            print(
                f"jobs, {processes} worker process(es)",
                results["jobs"][f"{processes}_worker_process"],
                flush=True,
            )
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(60)
    finally:
        for p in procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM) if p.args[0] != "redis-server" else p.terminate()
                    p.wait(30)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    p.kill()
        shutil.rmtree(root, ignore_errors=True)
    RESULTS.write_text(
        json.dumps(
            {
                "benchmark": "jobs",
                "method": __doc__.split("\n\n")[1].replace("\n", " "),
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "note": "2 cores shared with other jobs; the load generator runs on the same cores",
                    "load_average_1m": [
                        round(load_start, 2),
                        round(os.getloadavg()[0], 2),
                    ],  # at start, at end
                },
                "jobs": args.jobs,
                "concurrency": args.concurrency,
                "results": results,
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {RESULTS}")


def _ping(r) -> bool:
    try:
        return r.ping()
    except Exception:
        return False


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    main()
