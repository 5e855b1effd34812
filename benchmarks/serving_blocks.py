"""Cost of the serving building blocks on the request path: token verification, audit writes, metrics.

Each figure is measured beside a peer in the same run:
- auth: `Authenticator.authenticate` (first sight of a token, and a reused token) vs `jwt.decode` of PyJWT with
  the same checks (HS256 and RS256);
- audit: `AuditWriter` (hash chain, per fsync policy) vs the standard `logging` module writing the same JSON lines
  to a file (no chain, no durability wait): records per second from 4 threads, and the latency of awaiting one write;
- metrics: `Metrics.request` + `Metrics.stage` vs the same updates through plain `prometheus_client` `.labels()`;
  per observation, the kit's totals read by its custom collector (`HistogramTotals.observe`) vs
  `Histogram.observe` on a cached label child, in memory and file-backed (multiprocess mode, where the kit
  calls it at flush time); and `observe_request` (a request with five stages) plus its share of `flush`.

Usage: .venv/bin/python benchmarks/serving_blocks.py [--n 20000]
Writes benchmarks/results/serving_blocks.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "serving_blocks.json"


def per_call_us(fn, items) -> float:
    t0 = time.perf_counter()
    for item in items:
        fn(item)
    return (time.perf_counter() - t0) / len(items) * 1e6


def bench_auth(n: int) -> dict:
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    from llmops_kit.serving.auth import Authenticator, PublicKey

    secret = "benchmark-secret-" + "x" * 32
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    claims = {"iss": "llmops-kit", "aud": "llmops-kit", "sub": "bench", "tenant": "acme", "scope": "chat"}
    out = {}
    for alg, sign_key, verify_key in (("HS256", secret, secret), ("RS256", key, key.public_key())):
        auth = Authenticator(
            algorithms=[alg],
            secret=secret if alg == "HS256" else None,
            public_keys=[] if alg == "HS256" else [PublicKey(None, "RSA", "RS256", key.public_key())],
            issuer="llmops-kit",
            audience="llmops-kit",
        )
        count = n if alg == "HS256" else n // 10
        tokens = [
            jwt.encode({**claims, "exp": now + 3600, "jti": str(i)}, sign_key, algorithm=alg)
            for i in range(count)
        ]
        headers = [f"Bearer {t}" for t in tokens]
        first = per_call_us(auth.authenticate, headers)
        reused = headers[: min(len(headers), 5000)]  # fewer distinct tokens than the cache holds (10,000)
        per_call_us(auth.authenticate, reused)  # into the cache
        cached = per_call_us(auth.authenticate, reused)

        def pyjwt(token, verify_key=verify_key, alg=alg):
            jwt.decode(
                token,
                verify_key,
                algorithms=[alg],
                audience="llmops-kit",
                issuer="llmops-kit",
                leeway=30,
                options={"require": ["exp", "iss", "aud"]},
            )

        peer = per_call_us(pyjwt, tokens)
        out[alg] = {
            "ours_first_us": round(first, 2),
            "ours_cached_us": round(cached, 3),
            "pyjwt_decode_us": round(peer, 2),
            "tokens": count,
        }
    return out


def record(i: int):
    from llmops_kit.core import InferenceRecord, TextRecord

    return InferenceRecord(
        request_id=f"req-{i:08d}",
        ts="2026-11-25T09:30:00.000000+00:00",
        route="/v1/chat/completions",
        status=200,
        outcome="ok",
        tenant="acme",
        model="support-router",
        model_version="3",
        latency_ms=1.234,
        stages_ms={"auth": 0.01, "input_guard": 0.3, "model": 0.5, "output_guard": 0.2, "audit": 0.05},
        prompt_tokens=12,
        completion_tokens=30,
        input=TextRecord("0" * 64, 40, "my card <CREDIT_CARD> was declined"),
        output=TextRecord("1" * 64, 60, "Sorry to hear that: please check the card's status in the app."),
        guardrails=[
            {"guard": "pii", "stage": "input", "action": "redact", "findings": [{"type": "CREDIT_CARD"}]}
        ],
    )


def threads_rate(submit, n: int, threads: int = 4) -> float:
    per = n // threads

    def work(t):
        for i in range(per):
            submit(record(t * per + i))

    ts = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return per * threads / (time.perf_counter() - t0)


def bench_audit(n: int) -> dict:
    from llmops_kit.serving.auditlog import AuditWriter, _as_dict, canonical_json, verify_log

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for policy in ("never", "interval", "always"):
            folder = Path(tmp) / policy
            writer = AuditWriter(folder, fsync=policy)
            count = n if policy != "always" else n // 4
            t0 = time.perf_counter()
            rate = threads_rate(writer.submit, count)
            writer.flush()
            rate = count / (time.perf_counter() - t0)

            async def awaited(writer=writer, policy=policy):
                lat = []
                for i in range(2000 if policy != "always" else 300):
                    s = time.perf_counter()
                    await writer.write(record(i))
                    lat.append(time.perf_counter() - s)
                return sorted(lat)

            lat = asyncio.run(awaited())
            writer.close()
            result = verify_log(folder)
            assert result.ok, result
            out[policy] = {
                "records_per_s": round(rate),
                "await_p50_us": round(statistics.median(lat) * 1e6, 1),
                "await_p99_us": round(lat[int(0.99 * len(lat))] * 1e6, 1),
                "verified": result.count,
            }
        log = logging.getLogger("bench.peer")
        log.propagate = False
        handler = logging.FileHandler(Path(tmp) / "peer.jsonl")
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        t0 = time.perf_counter()
        threads_rate(lambda r: log.info(canonical_json(_as_dict(r))), n)
        handler.flush()
        out["peer_logging_filehandler"] = {"records_per_s": round(n / (time.perf_counter() - t0))}
        handler.close()
    t0 = time.perf_counter()
    for i in range(5000):
        record(i)
    out["building_a_record_us"] = round((time.perf_counter() - t0) / 5000 * 1e6, 2)
    return out


STAGES = {"auth": 0.02, "limits": 0.001, "input_guard": 0.3, "model": 0.5, "output_guard": 0.2}


def bench_metrics(n: int) -> dict:
    from prometheus_client import CollectorRegistry, Counter, Histogram

    from llmops_kit.serving.metrics import OVERHEAD_BUCKETS, REQUEST_BUCKETS, HistogramTotals, Metrics

    m = Metrics()
    ours = per_call_us(
        lambda i: (
            m.request("/v1/chat/completions", "support-router", 200, "ok", 0.004),
            m.stage("auth", 0.00002),
        ),
        range(n),
    )
    bulk = per_call_us(
        lambda i: m.observe_request(
            "/v1/chat/completions", "support-router", 200, "ok", 0.004, STAGES, 12, 30
        ),
        range(n),
    )
    reg = CollectorRegistry()
    c = Counter("peer_requests_total", "x", ["route", "model", "status", "outcome"], registry=reg)
    h = Histogram("peer_duration_seconds", "x", ["route", "model"], buckets=REQUEST_BUCKETS, registry=reg)
    s = Histogram("peer_stage_seconds", "x", ["stage"], buckets=OVERHEAD_BUCKETS, registry=reg)
    peer = per_call_us(
        lambda i: (
            c.labels("/v1/chat/completions", "support-router", "200", "ok").inc(),
            h.labels("/v1/chat/completions", "support-router").observe(0.004),
            s.labels("auth").observe(0.00002),
        ),
        range(n),
    )
    values = [(i % 1000) / 1e4 for i in range(n)]  # 0 to 0.1 s: spread over the buckets
    child = h.labels("/v1/chat/completions", "support-router")
    histogram_observe = per_call_us(child.observe, values)
    totals_observe = per_call_us(HistogramTotals(REQUEST_BUCKETS).observe, values)
    t0 = time.perf_counter()
    for _ in range(20):
        m.render()
    render_ms = (time.perf_counter() - t0) / 20 * 1e3
    return {
        "ours_request_plus_stage_us": round(ours, 2),
        "peer_prometheus_labels_us": round(peer, 2),
        "ours_observe_request_5_stages_us": round(bulk, 2),
        "per_observation": {
            "histogram_observe_us": round(histogram_observe, 3),
            "kit_totals_for_collector_us": round(totals_observe, 3),
        },
        "render_ms": round(render_ms, 2),
    }


def bench_metrics_multiprocess(n: int) -> dict:
    """In a child process: the same calls with file-backed (multiprocess) values."""
    import subprocess

    code = """
import json, sys, time
from llmops_kit.serving.metrics import REQUEST_BUCKETS, Metrics
from prometheus_client import CollectorRegistry, Histogram
stages = json.loads(sys.argv[2])
m = Metrics(); n = int(sys.argv[1]); t0 = time.perf_counter()
for i in range(n): m.request('/v1/chat/completions', 'support-router', 200, 'ok', 0.004); m.stage('auth', 2e-05)
each = (time.perf_counter() - t0) / n * 1e6
t0 = time.perf_counter()
for i in range(n): m.observe_request('/v1/chat/completions', 'support-router', 200, 'ok', 0.004, stages, 12, 30)
recorded = time.perf_counter() - t0
t0 = time.perf_counter(); m.flush(0); flushed = time.perf_counter() - t0
h = Histogram('peer_duration_seconds', 'x', ['route'], buckets=REQUEST_BUCKETS, registry=CollectorRegistry()).labels('r')
values = [(i % 1000) / 1e4 for i in range(n)]
t0 = time.perf_counter()
for v in values: h.observe(v)
observe = (time.perf_counter() - t0) / n * 1e6
t0 = time.perf_counter(); m.render(); render = time.perf_counter() - t0
print(json.dumps({'ours_request_plus_stage_us': round(each, 2),
                  'ours_observe_request_5_stages_us': round(recorded / n * 1e6, 2),
                  'flush_per_request_us': round(flushed / n * 1e6, 2),
                  'histogram_observe_file_backed_us': round(observe, 3),
                  'render_ms': round(render * 1e3, 2)}))
"""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": tmp}
        proc = subprocess.run(
            [sys.executable, "-c", code, str(n), json.dumps(STAGES)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        return json.loads(proc.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000, help="operations per measurement")
    args = parser.parse_args()
    results = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_avg_1m": os.getloadavg()[0],
        },
        "auth": bench_auth(args.n),
        "audit": bench_audit(args.n),
        "metrics": bench_metrics(args.n),
        "metrics_multiprocess": bench_metrics_multiprocess(args.n),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
