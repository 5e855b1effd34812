"""Gateway mode against the LiteLLM proxy: both in front of the same local OpenAI-shaped upstream, same run, same
machine, same worker count, load from `wrk` in its own processes at concurrency 16 and 64.

The kit runs with everything on: JWT auth, quotas (a daily USD budget, daily tokens and requests and per-minute
rate limits for the tenant and the key, none of them reached) in SQLite (one host) and, as a second server, in Redis
(several replicas; Debian's redis-server on a free port), the input and output guardrail chain
(rule-based guards; the embedding guards are off, as in benchmarks/serving.py), the hash-chained audit log and the
Prometheus metrics. LiteLLM 1.108.7 (`litellm[proxy]`, in benchmarks/.venv-litellm) runs with a master key, a global
`max_budget` and a deployment `rpm` limit: its virtual keys and per-key budgets need a Postgres database through
Prisma, whose engines download from the internet, which these machines cannot reach (recorded in the results).
The upstream (aiohttp.web, fixed answer with usage) runs in a child process; it is measured alone too, so each
gateway's added latency is its p50/p99 minus the upstream's at the same concurrency. A third kit server without
quotas shows what the quota store costs (attribution, not a target).

Usage: nice -n 10 .venv/bin/python benchmarks/gateway.py [--duration 10] [--workers 1] [--concurrency 16,64]
Writes benchmarks/results/gateway.json.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from harness import (  # noqa: E402
    LLMOPS,
    LUA,
    Servers,
    bench_env,
    bench_token,
    ensure_wrk,
    free_port,
    machine,
    medians,
    options,
    run_wrk,
    wait_ok,
)

RESULTS = HERE / "results" / "gateway.json"
LITELLM_VENV = HERE / ".venv-litellm"
LITELLM_PIN = "litellm[proxy]==1.108.7"
BODY = {"model": "up", "messages": [{"role": "user", "content": "My card payment was declined twice today, what should I do?"}], "max_tokens": 16}  # fmt: skip
PRICES = (0.15, 0.6)  # USD per million prompt and completion tokens, the same for both gateways

KIT_INI = """[project]
state_dir = .llmops
log_level = WARNING
[audit]
dir = .llmops/audit
[guardrails]
embedding_guards = false
[serving]
backend = benchmark
chat_model =
[quotas]
store = sqlite
tenant_micro_usd_per_day = 1000000000000
tenant_tokens_per_day = 1000000000000
tenant_requests_per_day = 1000000000
tenant_requests_per_minute = 100000000
tenant_tokens_per_minute = 10000000000
key_micro_usd_per_day = 1000000000000
key_requests_per_minute = 100000000
[model.up]
kind = openai
base_url = http://127.0.0.1:{port}/v1
upstream_model = bench
api_key_env = UPSTREAM_KEY
max_concurrency = 128
max_retries = 0
prompt_usd_per_mtok = {p}
completion_usd_per_mtok = {c}
"""

LITELLM_YAML = """model_list:
  - model_name: up
    litellm_params:
      model: openai/bench
      api_base: http://127.0.0.1:{port}/v1
      api_key: sk-upstream
      rpm: 100000000
      input_cost_per_token: {p}
      output_cost_per_token: {c}
litellm_settings:
  max_budget: 1000000
  budget_duration: 1d
  telemetry: false
general_settings:
  master_key: {key}
"""


def ensure_litellm() -> Path:
    """The LiteLLM proxy's own virtual environment (made on first use; it never shares the kit's)."""
    exe = LITELLM_VENV / "bin" / "litellm"
    if not exe.exists():
        print(f"installing {LITELLM_PIN} into {LITELLM_VENV} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
        subprocess.run([str(LITELLM_VENV / "bin" / "pip"), "install", "-q", LITELLM_PIN], check=True)
    return exe


def litellm_version() -> str:
    out = subprocess.run(
        [str(LITELLM_VENV / "bin" / "pip"), "show", "litellm"], capture_output=True, text=True
    )
    return next(
        (line.split(":", 1)[1].strip() for line in out.stdout.splitlines() if line.startswith("Version")), "?"
    )


def median_of(runs: list[dict]) -> dict:
    """Medians of the rounds, with their requests, socket errors and non-2xx answers summed."""
    return medians(runs) | {k: sum(r[k] for r in runs) for k in ("requests", "socket_errors", "non2xx")}


def main() -> int:
    parser = options(__doc__, rounds=2, workers="worker processes of both gateways", concurrency="16,64")
    args = parser.parse_args()
    wrk, litellm = ensure_wrk(), ensure_litellm()
    levels = [int(c) for c in args.concurrency.split(",")]
    load_at_start = os.getloadavg()
    jwt_secret, master_key = secrets.token_urlsafe(32), "sk-" + secrets.token_hex(16)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        up_port, kit_port, lite_port, redis_port = free_port(), free_port(), free_port(), free_port()
        redis_kit_port, bare_kit_port = free_port(), free_port()
        ini = KIT_INI.format(port=up_port, p=PRICES[0], c=PRICES[1])
        (root / "settings.ini").write_text(ini)
        for name, store in (
            ("redis", f"store = redis\nredis_url = redis://127.0.0.1:{redis_port}/0"),
            ("noquota", "store ="),
        ):
            (root / name).mkdir()
            (root / name / "settings.ini").write_text(ini.replace("store = sqlite", store))
        (root / "litellm.yaml").write_text(
            LITELLM_YAML.format(port=up_port, p=PRICES[0] / 1e6, c=PRICES[1] / 1e6, key=master_key)
        )
        env = bench_env(jwt_secret, UPSTREAM_KEY="sk-upstream")
        lite_env = {**env, "LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False", "DISABLE_ADMIN_UI": "True"}
        with Servers(root / "servers.log") as servers:
            upstream_code = f"import sys; sys.path.insert(0, {str(HERE)!r}); from upstream_client import serve; serve({up_port})"  # fmt: skip
            servers.start([sys.executable, "-c", upstream_code], root, env)
            redis = shutil.which("redis-server") or sys.exit(
                "redis-server is missing: apt-get install redis-server"
            )
            servers.start([redis, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], root, env)  # fmt: skip
            for folder, port in (
                (root, kit_port),
                (root / "redis", redis_kit_port),
                (root / "noquota", bare_kit_port),
            ):
                servers.start([str(LLMOPS), "serve", "--config", "settings.ini", "--port", str(port),
                               "--workers", str(args.workers)], folder, env)  # fmt: skip
            t0 = time.monotonic()
            servers.start([str(litellm), "--config", "litellm.yaml", "--host", "127.0.0.1", "--port",
                           str(lite_port), "--num_workers", str(args.workers)], root, lite_env)  # fmt: skip
            wait_ok(f"http://127.0.0.1:{up_port}/v1/chat/completions", "POST", json=BODY)
            for port in (kit_port, redis_kit_port, bare_kit_port):
                wait_ok(f"http://127.0.0.1:{port}/readyz")
            wait_ok(f"http://127.0.0.1:{lite_port}/health/liveliness", timeout=180)
            litellm_start_s = round(time.monotonic() - t0, 1)
            token = bench_token(root / "settings.ini", jwt_secret, ["chat"], 7200)
            numbered = json.dumps(BODY).replace("%", "%%").replace("My card", "Ticket %d: my card")
            scripts = {}
            for name, key in (
                ("upstream", "none"),
                ("llmops", token),
                ("llmops_redis", token),
                ("llmops_no_quotas", token),
                ("litellm", master_key),
            ):
                scripts[name] = root / f"{name}.lua"
                scripts[name].write_text(LUA.replace("BODY", numbered).replace("TOKEN", key))
            urls = {
                "upstream": f"http://127.0.0.1:{up_port}/v1/chat/completions",
                "llmops": f"http://127.0.0.1:{kit_port}/v1/chat/completions",
                "llmops_redis": f"http://127.0.0.1:{redis_kit_port}/v1/chat/completions",
                "llmops_no_quotas": f"http://127.0.0.1:{bare_kit_port}/v1/chat/completions",
                "litellm": f"http://127.0.0.1:{lite_port}/v1/chat/completions",
            }
            import httpx

            checks = {}  # one request each: both gateways answer, ours with its rate-limit headers
            for name in ("llmops", "litellm"):
                key = token if name == "llmops" else master_key
                r = httpx.post(urls[name], json=BODY, headers={"Authorization": f"Bearer {key}"}, timeout=30)
                checks[name] = {"status": r.status_code, "ratelimit_headers": sorted(h for h in r.headers if h.startswith("x-ratelimit"))}  # fmt: skip
                if r.status_code != 200:
                    raise RuntimeError(f"{name} answered {r.status_code}: {r.text[:500]}")
            for name, url in urls.items():  # warm-up
                run_wrk(wrk, url, scripts[name], 4, 2)
            points = {}
            for c in levels:
                runs: dict[str, list] = {k: [] for k in urls}
                for r in range(args.rounds):
                    order = list(urls) if r % 2 == 0 else list(reversed(urls))
                    for name in order:
                        runs[name].append(run_wrk(wrk, urls[name], scripts[name], c, args.duration))
                med = {k: median_of(v) for k, v in runs.items()}
                up, lite = med["upstream"], med["litellm"]
                points[str(c)] = dict(med)
                for name in ("llmops", "llmops_redis", "llmops_no_quotas", "litellm"):
                    points[str(c)][f"{name}_added_p50_ms"] = round(med[name]["p50_ms"] - up["p50_ms"], 3)
                    points[str(c)][f"{name}_added_p99_ms"] = round(med[name]["p99_ms"] - up["p99_ms"], 3)
                for name in ("llmops", "llmops_redis"):
                    points[str(c)][f"throughput_ratio_{name}_to_litellm"] = round(
                        med[name]["rps"] / lite["rps"], 2
                    )
                    points[str(c)][f"p99_ratio_{name}_to_litellm"] = round(
                        med[name]["p99_ms"] / lite["p99_ms"], 3
                    )
                print(f"c={c:3d}  " + " | ".join(f"{k} {v['rps']:.1f} rps p99 {v['p99_ms']:.2f} ms" for k, v in med.items()), flush=True)  # fmt: skip
            time.sleep(1.5)  # let the audit writer drain
            audit = sum(
                1 for p in (root / ".llmops" / "audit").glob("*.jsonl") for line in p.open() if line.strip()
            )
            spent = subprocess.run([str(LLMOPS), "budget", "show", "--tenant", "bench", "--config", "settings.ini"],
                                   cwd=root, env=env, capture_output=True, text=True)  # fmt: skip
            budget = json.loads(spent.stdout)["limits"] if spent.returncode == 0 else spent.stderr

    top = points[str(max(levels))]
    targets = {}
    for name, store in (("llmops", "sqlite"), ("llmops_redis", "redis")):
        targets[f"{store}_throughput_ge_10x_litellm_at_every_concurrency"] = all(
            p[f"throughput_ratio_{name}_to_litellm"] >= 10 for p in points.values()
        )
        targets[f"{store}_p99_le_tenth_of_litellm_at_c{max(levels)}"] = (
            top[f"p99_ratio_{name}_to_litellm"] <= 0.1
        )
    result = {
        "benchmark": "gateway mode: llmops-kit vs the LiteLLM proxy in front of the same local upstream",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(load_at_start),
        "setup": {
            "workers": args.workers,
            "duration_s": args.duration,
            "rounds": args.rounds,
            "load_generator": "wrk in its own process (same 2-core machine), POST with a numbered ticket per request",
            "upstream": "aiohttp.web child process, fixed chat completion with usage (benchmarks/upstream_client.py)",
            "llmops": "llmops serve (llmops_redis: the same with the quotas in Redis; llmops_no_quotas: without quotas, for attribution): JWT (HS256), quotas in SQLite (daily USD budget, tokens, requests, per-minute "
            "requests and tokens for tenant and key; reserved before, settled after every request), input and "
            "output guardrails (default policy, rule-based guards; embedding guards off), hash-chained audit log, "
            "Prometheus metrics; aiohttp client to the upstream",
            "litellm": f"litellm[proxy] {litellm_version()} in its own venv, master key, global max_budget with "
            "budget_duration 1d, deployment rpm limit; no database, so no virtual keys or per-key budgets "
            "(they need Postgres through Prisma, whose engines download from the internet)",
            "litellm_start_s": litellm_start_s,
        },
        "first_requests": checks,
        "points": points,
        "targets": targets,
        "llmops_audit_records": audit,
        "llmops_budget_after": budget,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(targets, indent=2))
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
