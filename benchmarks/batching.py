"""Micro-batching on the support router: the same registered router served twice, with `[serving] batching` on and
off, same settings otherwise, same run, one worker each.

Load comes from `wrk` (Debian) in separate processes with a Lua script (a `/v1/route` body with a different ticket
number per request and a bearer JWT), in alternating rounds: throughput at concurrency 64, p50 at concurrency 1.
Targets (issue 17): batched throughput >= 2x unbatched at concurrency 64; batched p50 at concurrency 1 at most
`batch_max_wait_ms` + 1 ms above unbatched.

Usage: nice -n 10 .venv/bin/python benchmarks/batching.py [--duration 10] [--rounds 3] [--max-batch 16] [--max-concurrent 2] [--max-wait-ms 2]
Writes benchmarks/results/batching.json.
"""

from __future__ import annotations

import json
import os
import secrets
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
    median_of,
    options,
    run_wrk,
    wait_ok,
)

RESULTS = HERE / "results" / "batching.json"
BODY = {
    "model": "support-router",
    "input": "Ticket %d: my card payment was declined twice today, what should I do?",
}


def main() -> int:
    parser = options(__doc__, rounds=3)
    parser.add_argument(
        "--max-batch", type=int, default=16, help="[serving] batch_max_size of the batched server"
    )
    parser.add_argument(
        "--max-concurrent", type=int, default=2, help="[serving] batch_max_concurrent of the batched server"
    )
    parser.add_argument("--max-wait-ms", type=float, default=2.0, help="[serving] batch_max_wait_ms")
    args = parser.parse_args()
    load_at_start = os.getloadavg()
    wrk = ensure_wrk()
    secret = secrets.token_urlsafe(32)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base = "[project]\nstate_dir = .llmops\nlog_level = WARNING\n"
        (root / "settings.ini").write_text(base)
        env = bench_env(secret)
        print("training and registering the support router (llmops quickstart) ...", flush=True)
        subprocess.run([str(LLMOPS), "quickstart", "--skip", "serve", "--skip", "audit", "--skip", "export"],
                       cwd=root, env=env, check=True, capture_output=True)  # fmt: skip
        common = (
            "[guardrails]\nembedding_guards = false\n[serving]\nbackend = mlflow\nrequest_timeout_s = 60\n"
        )
        configs = {
            "unbatched": common + "batching = false\n",
            "batched": common
            + f"batching = true\nbatch_max_size = {args.max_batch}\nbatch_max_concurrent = {args.max_concurrent}\n"
            f"batch_max_wait_ms = {args.max_wait_ms}\n",
        }
        urls = {}
        with Servers(root / "servers.log") as servers:
            for name, extra in configs.items():  # each its own audit folder: no lock shared between the two
                ini = root / f"{name}.ini"
                ini.write_text(base + f"[audit]\ndir = .llmops/audit-{name}\n" + extra)
                port = free_port()
                servers.start([str(LLMOPS), "serve", "--config", str(ini), "--port", str(port)], root, env)
                urls[name] = f"http://127.0.0.1:{port}/v1/route"
            for url in urls.values():
                wait_ok(url.replace("/v1/route", "/readyz"), timeout=300)
            token = bench_token(root / "settings.ini", secret, ["chat"], 3600)
            script = root / "post.lua"
            script.write_text(LUA.replace("BODY", json.dumps(BODY)).replace("TOKEN", token))
            for url in urls.values():  # warm-up
                run_wrk(wrk, url, script, 8, 2)
            points = {}
            for c in (64, 1):
                runs: dict[str, list] = {"unbatched": [], "batched": []}
                for r in range(args.rounds):
                    for name in ("unbatched", "batched") if r % 2 == 0 else ("batched", "unbatched"):
                        runs[name].append(run_wrk(wrk, urls[name], script, c, args.duration))
                points[str(c)] = {name: median_of(v) for name, v in runs.items()}
                b, u = points[str(c)]["batched"], points[str(c)]["unbatched"]
                points[str(c)]["throughput_ratio"] = round(b["rps"] / u["rps"], 3)
                points[str(c)]["added_p50_ms"] = round(b["p50_ms"] - u["p50_ms"], 3)
                print(f"c={c:3d}  batched {b['rps']:8.1f} rps p50 {b['p50_ms']:7.2f} p99 {b['p99_ms']:7.2f} ms | "
                      f"unbatched {u['rps']:8.1f} rps p50 {u['p50_ms']:7.2f} p99 {u['p99_ms']:7.2f} ms | ratio "
                      f"{points[str(c)]['throughput_ratio']:.2f}, added p50 {points[str(c)]['added_p50_ms']:+.2f} ms",
                      flush=True)  # fmt: skip
            import httpx

            metrics_token = bench_token(root / "settings.ini", secret, ["metrics"], 600)
            scrape = httpx.get(urls["batched"].replace("/v1/route", "/metrics"),
                               headers={"Authorization": f"Bearer {metrics_token}"}, timeout=10).text  # fmt: skip
            batch_stats = _batch_stats(scrape)

    targets = {
        "throughput_ratio_ge_2_at_c64": points["64"]["throughput_ratio"] >= 2.0,
        "added_p50_at_c1_le_max_wait_plus_1ms": points["1"]["added_p50_ms"] <= args.max_wait_ms + 1.0,
    }
    result = {
        "benchmark": "micro-batching: support router /v1/route, [serving] batching on vs off, same run",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(load_at_start),
        "setup": {
            "model": "the quickstart's support router (MiniLM embeddings + classifier), registered in MLflow, "
            "served with the mlflow backend, 1 uvicorn worker per server",
            "batched": {
                "batch_max_size": args.max_batch,
                "batch_max_concurrent": args.max_concurrent,
                "batch_max_wait_ms": args.max_wait_ms,
            },
            "duration_s": args.duration,
            "rounds": args.rounds,
            "load_generator": "wrk (separate process, same 2-core machine), Lua script: /v1/route body with a "
            "different ticket number per request + bearer JWT",
            "chain": "JWT, rule-based input and output guardrails (embedding guards off), audit log, metrics: "
            "the same on both servers",
        },
        "points": points,
        "batched_server_batch_size": batch_stats,
        "targets": targets,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"targets": targets, "batch_size": batch_stats}, indent=2))
    print(f"wrote {RESULTS}")
    return 0


def _batch_stats(text: str) -> dict:
    """Batched calls, texts and mean texts per call of the batched server (its `llmops_batch_size` histogram)."""
    from prometheus_client.parser import text_string_to_metric_families

    count = total = 0.0
    for family in text_string_to_metric_families(text):
        if family.name == "llmops_batch_size":
            for s in family.samples:
                if s.labels.get("call") == "predict" and s.name.endswith("_count"):
                    count = s.value
                elif s.labels.get("call") == "predict" and s.name.endswith("_sum"):
                    total = s.value
    return {"calls": count, "texts": total, "mean_texts_per_call": round(total / count, 2) if count else None}


if __name__ == "__main__":
    sys.exit(main())
