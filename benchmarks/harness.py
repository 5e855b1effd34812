"""What the HTTP benchmarks (serving, gateway, batching) share: their common options, the servers' environment, a
group of server processes started and stopped together, a bearer JWT, the `wrk` load script and runner, medians of
rounds and the machine's description.

Imported by the benchmarks as a sibling module (`python benchmarks/NAME.py` puts benchmarks/ on `sys.path`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

__all__ = ["LLMOPS", "LUA", "Servers", "bench_env", "bench_token", "ensure_wrk", "free_port", "machine", "median_of",
           "medians", "options", "run_wrk", "wait_ok"]  # fmt: skip

LLMOPS = Path(sys.executable).parent / "llmops"

# every request carries a different ticket number, so no cache (embedding memo, verdict cache) sees a repeat
LUA = r"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer TOKEN"
local counter = 0
request = function()
  counter = counter + 1
  return wrk.format(nil, nil, nil, string.format([==[BODY]==], counter))
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRKJSON {\"requests\":%d,\"duration_us\":%d,\"socket_errors\":%d,\"non2xx\":%d," ..
    "\"p50_us\":%d,\"p90_us\":%d,\"p99_us\":%d,\"mean_us\":%.1f,\"max_us\":%d}\n",
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max))
end
"""


def options(
    doc: str, *, rounds: int, workers: str | None = None, concurrency: str | None = None
) -> argparse.ArgumentParser:
    """The options every HTTP benchmark takes: `--duration`, `--rounds` and, when given their help or default,
    `--workers` and `--concurrency`; a benchmark adds its own before parsing."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10, help="seconds per measurement")
    if workers:
        parser.add_argument("--workers", type=int, default=1, help=workers)
    if concurrency:
        parser.add_argument(
            "--concurrency", default=concurrency, help="comma-separated wrk connection counts"
        )
    parser.add_argument(
        "--rounds", type=int, default=rounds, help="alternating rounds per point; medians are reported"
    )
    return parser


def bench_env(secret: str, **extra: str) -> dict[str, str]:
    """The servers' environment: this one without `LLMOPS_*` overrides, the JWT secret, offline model hubs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMOPS_")}
    env.update(LLMOPS_JWT_SECRET=secret, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", **extra)
    return env


class Servers:
    """Server processes, each in its own session and logging to one file, stopped together on leaving the block:
    SIGINT to each process group, SIGKILL to those still running 20 s later."""

    def __init__(self, log: Path):
        self.log = open(log, "wb")
        self.procs: list[subprocess.Popen] = []

    def start(self, cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen:
        """Start `cmd` in `cwd`, its output to the log."""
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        """Interrupt every process group, then kill those that have not exited within 20 s."""
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGINT)
        for p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        self.log.close()

    def __enter__(self) -> Servers:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def bench_token(ini: Path, secret: str, scopes: list[str], ttl_s: int) -> str:
    """A bearer JWT for tenant `bench`, signed with `secret` under the settings of `ini`."""
    from llmops_kit.core import load_settings
    from llmops_kit.serving.auth import mint_token

    return mint_token(
        load_settings(ini, environ={}), "bench", scopes, ttl_s, environ={"LLMOPS_JWT_SECRET": secret}
    )


def ensure_wrk() -> str:
    path = shutil.which("wrk")
    if path:
        return path
    print("wrk not found: installing it from Debian (apt-get install -y wrk)", flush=True)
    if subprocess.run(["apt-get", "install", "-y", "wrk"], capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update"], capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "wrk"], check=True, capture_output=True)
    return shutil.which("wrk") or "/usr/bin/wrk"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ok(url: str, method: str = "GET", timeout: float = 120, **kw) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.request(method, url, timeout=2, **kw).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer 200 within {timeout} s")


def run_wrk(wrk: str, url: str, script: Path, connections: int, duration: float) -> dict:
    threads = 1 if connections == 1 else 2
    cmd = [wrk, "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(duration))}s", "--timeout", "10s", "-s",
           str(script), url]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("WRKJSON "))
    r = json.loads(line[len("WRKJSON ") :])
    return {
        "requests": r["requests"],
        "rps": round(r["requests"] / (r["duration_us"] / 1e6), 1),
        "p50_ms": r["p50_us"] / 1000,
        "p90_ms": r["p90_us"] / 1000,
        "p99_ms": r["p99_us"] / 1000,
        "mean_ms": round(r["mean_us"] / 1000, 3),
        "max_ms": r["max_us"] / 1000,
        "socket_errors": r["socket_errors"],
        "non2xx": r["non2xx"],
    }


def medians(runs: list[dict]) -> dict:
    """Medians of the rounds' throughput and latencies."""
    keys = ("rps", "p50_ms", "p90_ms", "p99_ms", "mean_ms")
    return {k: round(statistics.median(r[k] for r in runs), 3) for k in keys}


def median_of(runs: list[dict]) -> dict:
    """Medians of the rounds, their requests and errors summed, and the rounds themselves."""
    out = medians(runs)
    out["requests"] = sum(r["requests"] for r in runs)
    out["errors"] = sum(r["socket_errors"] + r["non2xx"] for r in runs)
    out["runs"] = runs
    return out


def machine(load_at_start: tuple[float, float, float]) -> dict:
    """CPUs, Python version and load average at the start and at the end of the run."""
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_avg_at_start": load_at_start,
        "load_avg_at_end": os.getloadavg(),
    }
