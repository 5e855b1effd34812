"""Support-router benchmark on BANKING77: accuracy, macro-F1, abstention and single-query latency.

One command: `.venv/bin/python benchmarks/router.py` (writes `benchmarks/results/router.json` and logs a run to the
project's local MLflow store). Trains on the full `train.csv` (10,003 queries, 77 intents) with `C` tuned on a 20%
hold-out of the training set, evaluates on `test.csv` (3,080 queries), times single queries one at a time on an
uncached encoder, and compares with other heads on the same embeddings and with the published figures of
Casanueva et al. (2020).
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "router.json"

# Casanueva et al. 2020, "Efficient Intent Detection with Dual Sentence Encoders" (NLP4ConvAI @ ACL 2020), Table 3,
# BANKING77 test accuracy (%) with 10 and 30 training examples per intent and with the full training set.
# The full-data BERT-TUNED (93.66) and USE+ConveRT (93.36) figures and the 10-shot USE+ConveRT figure (85.19) were
# checked against two independent citations of the table found with the search tool; the other cells are quoted
# from the paper's table as we know it and were not re-checked against a copy of the paper here.
PUBLISHED = {
    "source": "Casanueva et al. 2020, Efficient Intent Detection with Dual Sentence Encoders, Table 3 (BANKING77)",
    "url": "https://aclanthology.org/2020.nlp4convai-1.5",
    "columns": ["10 per intent", "30 per intent", "full"],
    "rows": {
        "BERT-FIXED": [67.55, 80.07, 87.19],
        "BERT-TUNED": [83.42, 90.03, 93.66],
        "USE": [84.23, 89.74, 92.81],
        "CONVERT": [83.32, 89.37, 93.01],
        "USE+CONVERT": [85.19, 90.49, 93.36],
    },
    "checked_against_citations": ["BERT-TUNED full", "USE+CONVERT full", "USE+CONVERT 10 per intent"],
}


def log(msg: str) -> None:
    print(f"[router bench] {msg}", file=sys.stderr, flush=True)


def holdout_split(labels: np.ndarray, seed: int = 0):
    from sklearn.model_selection import train_test_split

    return train_test_split(np.arange(len(labels)), test_size=0.2, stratify=labels, random_state=seed)


def other_heads(Xtr, ytr, Xte, yte) -> dict:
    """Other classifiers on the same embeddings, each tuned on the same 20% hold-out of the training set."""
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    candidates = {
        "linear_svm": [
            (f"C={c}", lambda c=c: make_pipeline(StandardScaler(), LinearSVC(C=c, max_iter=5000)))
            for c in (0.001, 0.003, 0.01)
        ],
        "knn_cosine": [
            (f"k={k}", lambda k=k: KNeighborsClassifier(n_neighbors=k, metric="cosine", weights="distance"))
            for k in (5, 15)
        ],
        "mlp_512": [
            (
                f"alpha={a}",
                lambda a=a: make_pipeline(
                    StandardScaler(),
                    MLPClassifier(
                        hidden_layer_sizes=(512,), alpha=a, early_stopping=True, random_state=0, max_iter=200
                    ),
                ),
            )
            for a in (1e-2, 1.0)
        ],
    }
    tr, va = holdout_split(ytr)
    out = {}
    for name, options in candidates.items():
        t0 = time.perf_counter()
        scored = []
        for label, make in options:
            model = make().fit(Xtr[tr], ytr[tr])
            scored.append((accuracy_score(ytr[va], model.predict(Xtr[va])), label, make))
        best_score, best_label, make = max(scored, key=lambda s: s[0])
        model = make().fit(Xtr, ytr)
        pred = model.predict(Xte)
        out[name] = {
            "chosen": best_label,
            "holdout_accuracy": {label: round(float(s), 4) for s, label, _ in scored},
            "test_accuracy": round(float(accuracy_score(yte, pred)), 4),
            "test_macro_f1": round(float(f1_score(yte, pred, average="macro")), 4),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        log(f"{name}: {out[name]}")
    return out


def default_thread_latency(router, texts) -> dict:
    """Single-query latency without the one-thread path, for comparison."""
    from llmops_kit.router.model import shared_embedder

    embedder = shared_embedder()
    for t in texts[:5]:
        router.predict_vectors(embedder.encode([t]))
    times = []
    for t in texts:
        t0 = time.perf_counter()
        router.predict_vectors(embedder.encode([t]))
        times.append((time.perf_counter() - t0) * 1000)
    a = np.asarray(times)
    return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)), "n": len(a)}


def lower_priority(target: int) -> int:
    """Move this process to niceness `target` if allowed (raising priority needs root); return the niceness now."""
    try:
        os.nice(target - os.nice(0))
    except PermissionError:
        pass
    return os.nice(0)


def latency_rerun(train, Xtr, test, n: int) -> int:
    """Re-measure single-query latency with the last run's C; append it to the results file."""
    from llmops_kit.router.model import SupportRouter, single_query_latency

    result = json.loads(RESULTS.read_text())
    router = SupportRouter.fit(train.text, train.category, C=result["model"]["C"], vectors=Xtr)
    lower_priority(0)
    load = os.getloadavg()
    latency = single_query_latency(router, test.text.tolist()[:n])
    rerun = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average": [round(x, 2) for x in load],
        "nice": os.nice(0),
        "single_query_latency_ms": {k: round(v, 2) for k, v in latency.items()},
        "p99 <= 50 ms": latency["p99"] <= 50,
    }
    result.setdefault("latency_reruns", []).append(rerun)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(rerun, indent=2))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", default=None, help="folder holding train.csv and test.csv (default: shared banking77)"
    )
    parser.add_argument("--latency-queries", type=int, default=1000, help="test queries timed one at a time")
    parser.add_argument("--no-other-heads", action="store_true", help="skip the comparison classifiers")
    parser.add_argument("--no-mlflow", action="store_true", help="do not log the run to MLflow")
    parser.add_argument(
        "--latency-only",
        action="store_true",
        help="refit with the C of the last results file and only re-measure latency (appended to latency_reruns)",
    )
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import pandas as pd

    from llmops_kit.core import load_settings, shared_data_dir
    from llmops_kit.embeddings import Embedder
    from llmops_kit.router.model import SupportRouter, evaluate_router, plot_confusion

    folder = Path(args.data) if args.data else (shared_data_dir(REPO) or Path("/nonexistent")) / "banking77"
    if not (folder / "train.csv").is_file() or not (folder / "test.csv").is_file():
        print(
            f"skipped: BANKING77 not found at {folder} (set LLMOPS_SHARED_DATA or pass --data)",
            file=sys.stderr,
        )
        return 0
    train, test = pd.read_csv(folder / "train.csv"), pd.read_csv(folder / "test.csv")
    load_start = os.getloadavg()
    lower_priority(max(os.nice(0), 10))  # the heavy phases (tuning, other heads) yield to other jobs
    settings = load_settings(REPO / "settings.ini", environ={})
    embedder = Embedder.from_settings(settings)  # cached under .llmops/: re-runs skip the encoding
    t0 = time.perf_counter()
    Xtr, Xte = embedder.encode(train.text.tolist()), embedder.encode(test.text.tolist())
    embed_s = time.perf_counter() - t0
    log(f"embedded {len(train)} + {len(test)} queries in {embed_s:.1f}s (cached after the first run)")

    if args.latency_only:
        return latency_rerun(train, Xtr, test, args.latency_queries)

    from llmops_kit.router.model import tune_c

    t0 = time.perf_counter()
    best_c, c_scores = tune_c(Xtr, train.category.tolist())
    tune_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    router = SupportRouter.fit(train.text, train.category, C=best_c, vectors=Xtr)
    fit_s = time.perf_counter() - t0
    log(f"C={best_c} (hold-out accuracy {c_scores}), tuned in {tune_s:.1f}s, final fit {fit_s:.1f}s")

    report = evaluate_router(router, test.text, test.category, vectors=Xte, latency_queries=0)
    log(f"accuracy {report.accuracy:.4f}, macro-F1 {report.macro_f1:.4f}")
    heads = (
        {}
        if args.no_other_heads
        else other_heads(Xtr, train.category.to_numpy(), Xte, test.category.to_numpy())
    )

    # Latency last, at normal priority: the heavy phases above run at nice 10 to spare the shared machine, but a
    # niced process timing single queries would measure the scheduler, not the router.
    latency_nice = lower_priority(0)
    load_latency = os.getloadavg()
    from llmops_kit.router.model import single_query_latency

    report.latency_ms = single_query_latency(router, test.text.tolist()[: args.latency_queries])
    log(f"single-query latency at nice {latency_nice}: {report.latency_ms}")
    default_threads = default_thread_latency(router, test.text.tolist()[:200])
    log(f"latency without the one-thread path (200 queries): {default_threads}")

    mlflow_run = None
    if not args.no_mlflow:
        from llmops_kit.registry.bundle import DataFile, log_app, quiet_mlflow

        with tempfile.TemporaryDirectory() as work, quiet_mlflow():
            fig = plot_confusion(report)
            fig.savefig(Path(work) / "confusion.png", dpi=90)
            (Path(work) / "evaluation.json").write_text(json.dumps(report.__dict__, default=str))
            data = [
                DataFile.from_path("train", folder / "train.csv", len(train)),
                DataFile.from_path("eval", folder / "test.csv", len(test)),
            ]
            logged = log_app(
                router,
                settings,
                data=data,
                metrics=report.metrics(),
                params={"C": best_c, "n_train": len(train), "benchmark": "banking77"},
                notebook="benchmarks/router.py",
                run_name="benchmark-banking77",
                artifacts=[Path(work) / "confusion.png", Path(work) / "evaluation.json"],
            )
            mlflow_run = logged.run_id

    lat = report.latency_ms
    result = {
        "benchmark": "support router on BANKING77 (train.csv -> test.csv)",
        "command": ".venv/bin/python benchmarks/router.py",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_start": [round(x, 2) for x in load_start],
            "load_average_at_latency": [round(x, 2) for x in load_latency],
            "load_average_end": [round(x, 2) for x in os.getloadavg()],
            "nice_during_latency": latency_nice,
            "note": "2 cores shared with other jobs; latency is sensitive to that load",
        },
        "data": {"train_rows": len(train), "test_rows": len(test), "intents": int(train.category.nunique())},
        "model": {
            "encoder": router.embedder_id,
            "head": "multinomial logistic regression on standardised MiniLM embeddings (weights folded back)",
            "C": best_c,
            "holdout_accuracy_by_C": c_scores,
            "threshold": router.threshold,
        },
        "timing_s": {
            "embed_train_and_test": round(embed_s, 1),
            "tune_C": round(tune_s, 1),
            "final_fit": round(fit_s, 1),
        },
        "results": {
            "accuracy": round(report.accuracy, 4),
            "macro_f1": round(report.macro_f1, 4),
            "abstain_rate": round(report.abstain_rate, 4),
            "answered_accuracy": round(report.answered_accuracy, 4),
            "single_query_latency_ms": {k: round(v, 2) for k, v in lat.items()},
            "single_query_latency_ms_default_threads": {k: round(v, 2) for k, v in default_threads.items()},
        },
        "targets": {
            "accuracy >= 0.92": report.accuracy >= 0.92,
            "p99 single-query latency <= 50 ms": lat["p99"] <= 50,
        },
        "other_heads_same_embeddings": heads,
        "published": PUBLISHED,
        "mlflow_run_id": mlflow_run,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    log(f"wrote {RESULTS}")
    print(json.dumps(result["results"] | {"targets": result["targets"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
