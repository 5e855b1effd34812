"""Audit benchmark: one nightly audit of 1,000,000 audit records (issue 18, target: at most 60 s on this machine).

A day of synthetic support traffic (`llmops_kit.audit.synthetic`: the gateway's record shape, guardrail verdicts,
tenants, routes, models) is written through the kit's real `AuditWriter` into rotated JSONL files (64 MB each) with a
keyed hash chain, in a temporary folder. Then each stage of the audit is timed as `llmops audit run` runs it:

- read: `read_window` (DuckDB reads the rotated files, checks every record, keeps the window),
- drift: `drift_summary` (a seeded sample of `[audit_run] drift_sample` records per 6 h period against the packaged
  reference profile: MiniLM embeddings of each distinct text once, the calibrated tests and the retrain policy; nothing
  is emitted; the synthetic texts repeat more than real ones may, so `drift_distinct_texts_embedded` is reported),
- guardrails: `guardrail_summary` (verdicts over time, top blocked patterns, redactions),
- cost: `cost_sla_summary` (latency percentiles per route and model, errors, spend per tenant against budget),
- chain: `verify_log` (the serving log's own verification of every record's HMAC and link, in order in this process).

The total of these five is the figure the target is about. Also measured, outside the total: the Great Expectations
suite on the whole window, the chain checked with one worker process helping (`workers=1`), and the peer in the same run: the kit's earlier reader `llmops_kit.drift.profile.audit_frame`
(one `json.loads` and `InferenceRecord` per line, into pandas) on the first 100,000 records, against DuckDB on the
same files.

Run: `nice -n 10 .venv/bin/python benchmarks/audit.py` (`--records 100000` for a quick run). Writes
`benchmarks/results/audit.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RESULTS = REPO / "benchmarks" / "results"


def timed(stages: dict, name: str, fn):
    start = time.perf_counter()
    value = fn()
    stages[name] = round(time.perf_counter() - start, 3)
    print(f"{name}: {stages[name]} s", flush=True)
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--peer-records", type=int, default=100_000)
    parser.add_argument(
        "--keep", default=None, help="write the log here and keep it (default: a temporary folder)"
    )
    args = parser.parse_args()

    import pandas as pd

    from llmops_kit.audit.expectations import validate_window
    from llmops_kit.audit.records import read_window
    from llmops_kit.audit.summaries import Reference, cost_sla_summary, drift_summary, guardrail_summary
    from llmops_kit.audit.synthetic import synthetic_records, write_log
    from llmops_kit.core import AuditRunSettings, EmbeddingSettings, Settings
    from llmops_kit.drift.profile import ReferenceProfile, audit_frame
    from llmops_kit.embeddings import Embedder
    from llmops_kit.serving.auditlog import ChainKeys, verify_log

    work = Path(args.keep or tempfile.mkdtemp(prefix="llmops-audit-bench-"))
    log, keys = work / "audit", work / "keys" / "audit-chain.jsonl"
    settings = Settings(
        root=work,
        embeddings=EmbeddingSettings(cache=False),
        audit_run=AuditRunSettings(budgets="acme=100, globex=100, initech=100"),
    )
    setup: dict = {}
    try:
        end = pd.Timestamp.now(tz="UTC").floor("h")
        if not (log.is_dir() and any(log.glob("audit-*.jsonl"))):
            timed(
                setup,
                "write_log",
                lambda: write_log(
                    log, synthetic_records(args.records, end=end, span="24h", seed=2026), chain_keys=keys
                ),
            )
        files = sorted(log.glob("audit-*.jsonl"))
        size = sum(f.stat().st_size for f in files)
        print(f"{len(files)} files, {size / 1e9:.2f} GB", flush=True)
        reference = Reference(
            ReferenceProfile.load(REPO / "llmops_kit" / "data" / "audit" / "sample-reference"),
            "sample-reference",
        )
        embedder = timed(setup, "load_embedder", lambda: Embedder.from_settings(settings))
        embedder.encode(["warm up"])

        stages: dict = {}
        window = timed(
            stages, "read", lambda: read_window(log, end - pd.Timedelta("24h"), end + pd.Timedelta("1s"))
        )
        drift = timed(stages, "drift", lambda: drift_summary(window, reference, settings, embedder=embedder))
        guards = timed(stages, "guardrails", lambda: guardrail_summary(window, block_rate=0.25))
        cost = timed(stages, "cost", lambda: cost_sla_summary(window, 5000, 0.05, {"acme": 100.0}))
        chain = timed(stages, "chain", lambda: verify_log(log, ChainKeys.load(keys)))
        total = round(sum(stages.values()), 3)
        print(f"total: {total} s (target 60 s)", flush=True)
        extra: dict = {}
        quality = timed(extra, "expectations", lambda: validate_window(window, settings))
        helped = timed(extra, "chain_with_a_worker", lambda: verify_log(log, ChainKeys.load(keys), workers=1))
        assert helped == chain

        # the peer: the kit's per-line reader on the first --peer-records records, DuckDB on the same files
        peer_dir = work / "peer"
        peer_dir.mkdir(exist_ok=True)
        count, peer_files = 0, []
        for f in files:
            if count >= args.peer_records:
                break
            link = peer_dir / f.name
            if not link.exists():
                link.symlink_to(f)
            peer_files.append(f)
            with open(f, "rb") as fh:
                count += sum(1 for _ in fh)
        peer: dict = {"records": count, "files": len(peer_files)}
        frame = timed(peer, "audit_frame_s", lambda: audit_frame(peer_dir))
        duck = timed(peer, "duckdb_read_window_s", lambda: read_window(peer_dir))
        assert len(frame) == duck.n == count
        peer["speedup"] = round(peer["audit_frame_s"] / peer["duckdb_read_window_s"], 2)

        result = {
            "benchmark": "audit",
            "records": window.n,
            "files": len(files),
            "bytes": size,
            "stages_s": stages,
            "total_s": total,
            "target_s": 60,
            "within_target": total <= 60,
            "outside_total_s": extra,
            "setup_s": setup,
            "figures": {
                "chain_ok": chain.ok,
                "chain_records": chain.count,
                "drift_windows": drift.figures.get("drift.windows"),
                "drift_sampled_records": drift.figures.get("drift.sampled_records"),
                "drift_distinct_texts_embedded": drift.figures.get("drift.distinct_texts"),
                "drift_sampled_per_window": settings.audit_run.drift_sample,  # [audit_run] default
                "guardrails_blocked": guards.figures["guardrails.blocked"],
                "sla_p95_ms": cost.figures["sla.p95_ms"],
                "expectations_failed": quality.figures["expectations.failed"],
            },
            "peer": {
                "name": "llmops_kit.drift.profile.audit_frame (json.loads + InferenceRecord per line, pandas)",
                **peer,
            },
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "machine": {
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
            },
        }
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "audit.json").write_text(json.dumps(result, indent=1) + "\n")
        print(json.dumps(result, indent=1))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
