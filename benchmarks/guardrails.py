"""Guardrails: PII accuracy next to Presidio, prompt-injection detection and false positives, and latency next to
Presidio and LLM Guard's rule-based scanners, all in one run.

Usage: nice -n 10 .venv/bin/python benchmarks/guardrails.py [--embedding-sample 1000] [--skip-peers]
Writes benchmarks/results/guardrails.json. Needs ../shared/data (or $LLMOPS_SHARED_DATA) with pii_synth/,
prompt_injection/ and banking77/. Creates the peers' own virtual environments on first use:
benchmarks/.venv-presidio (presidio-analyzer) and benchmarks/.venv-llmguard (torch==2.13.0, llm-guard==0.3.16).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
import venv
from collections import Counter, defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402

from llmops_kit.core import read_table, shared_data_dir  # noqa: E402
from llmops_kit.guardrails.base import normalise  # noqa: E402
from llmops_kit.guardrails.chain import GuardChain, load_policy  # noqa: E402
from llmops_kit.guardrails.pii import PiiGuard  # noqa: E402
from llmops_kit.guardrails.security import ATTACK_EXEMPLARS, InjectionGuard  # noqa: E402

HERE = Path(__file__).parent
RESULTS = HERE / "results" / "guardrails.json"
TARGET_TYPES = ["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "IP_ADDRESS"]
# Dataset labels -> Presidio entity names (identity where Presidio uses the same name or has no equivalent).
LABEL_MAP = {"GPE": "LOCATION", "DOMAIN_NAME": "URL"}
PEERS = {
    "presidio": ["presidio-analyzer"],
    "llmguard": ["torch==2.13.0", "llm-guard==0.3.16"],
}

PRESIDIO_WORKER = r"""
import json, sys, time, tempfile, spacy
from presidio_analyzer import AnalyzerEngine
from presidio_analyzer.nlp_engine import NlpEngineProvider
folder = tempfile.mkdtemp()
spacy.blank("en").to_disk(folder)  # no English model installs offline: a blank pipeline, pattern recognizers only
provider = NlpEngineProvider(nlp_configuration={"nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": folder}]})
engine = AnalyzerEngine(nlp_engine=provider.create_engine(), supported_languages=["en"])
job = json.load(open(sys.argv[1]))
engine.analyze(text="warm up 4111 1111 1111 1111", language="en")
out = {"spans": [], "ms": {}}
for t in job["pii"]:
    out["spans"].append([[r.entity_type, r.start, r.end, r.score] for r in engine.analyze(text=t, language="en")])
for name, texts in job["latency"].items():
    ms = []
    for t in texts:
        t0 = time.perf_counter(); engine.analyze(text=t, language="en"); ms.append((time.perf_counter() - t0) * 1000)
    out["ms"][name] = ms
import presidio_analyzer, importlib.metadata as md
out["version"] = md.version("presidio-analyzer")
json.dump(out, open(sys.argv[2], "w"))
"""

LLMGUARD_WORKER = r"""
import json, sys, time, logging
from llm_guard.util import configure_logger
configure_logger(log_level="ERROR")
from llm_guard.input_scanners import InvisibleText, Regex, Secrets
from llm_guard import scan_prompt
patterns = [r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}", r"\b(?:\d[ -]?){13,19}\b", r"\b\d{3}-\d{2}-\d{4}\b"]
scanners = {"Secrets": Secrets(), "Regex": Regex(patterns=patterns), "InvisibleText": InvisibleText()}
job = json.load(open(sys.argv[1]))
scan_prompt(list(scanners.values()), "warm up a@b.com")
out = {"ms": {}}
for name, texts in job["latency"].items():
    chain, per = [], {k: [] for k in scanners}
    for t in texts:
        t0 = time.perf_counter(); scan_prompt(list(scanners.values()), t, fail_fast=False); chain.append((time.perf_counter() - t0) * 1000)
        for k, s in scanners.items():
            t0 = time.perf_counter(); s.scan(t); per[k].append((time.perf_counter() - t0) * 1000)
    out["ms"][name] = {"chain": chain, **per}
import importlib.metadata as md
out["version"] = md.version("llm-guard")
json.dump(out, open(sys.argv[2], "w"))
"""


def ensure_venv(name: str) -> Path:
    """The python of `benchmarks/.venv-<name>`, created and filled on first use."""
    folder = HERE / f".venv-{name}"
    python = folder / "bin" / "python"
    if not python.exists():
        print(f"creating {folder} ...", file=sys.stderr)
        venv.EnvBuilder(with_pip=True).create(folder)
        subprocess.run(
            ["nice", "-n", "10", str(python), "-m", "pip", "install", "-q", *PEERS[name]], check=True
        )
    return python


def run_worker(name: str, code: str, job: dict) -> dict:
    python = ensure_venv(name)
    with tempfile.TemporaryDirectory() as tmp:
        script, inp, out = Path(tmp, "worker.py"), Path(tmp, "in.json"), Path(tmp, "out.json")
        script.write_text(code)
        inp.write_text(json.dumps(job))
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
        subprocess.run(
            ["nice", "-n", "10", str(python), str(script), str(inp), str(out)], check=True, env=env
        )
        return json.loads(out.read_text())


def pct(ms: list[float]) -> dict:
    a = np.asarray(ms, dtype=float)
    return {
        "n": int(a.size),
        "p50_ms": round(float(np.percentile(a, 50)), 4),
        "p99_ms": round(float(np.percentile(a, 99)), 4),
        "mean_ms": round(float(a.mean()), 4),
    }


# ---------------------------------------------------------------- PII
def iou(a: tuple[int, int], b: tuple[int, int]) -> float:
    inter = max(0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union else 0.0


def span_scores(gold: list[list[tuple]], pred: list[list[tuple]], types: set[str]) -> dict:
    """Per-type and micro precision, recall, F2 with one-to-one IoU >= 0.5 matching; predictions outside `types` ignored."""
    tp, fp, fn = Counter(), Counter(), Counter()
    for g_spans, p_spans in zip(gold, pred, strict=True):
        used = set()
        for typ, s, e in p_spans:
            if typ not in types:
                continue
            hit = next(
                (
                    j
                    for j, (gt, gs, ge) in enumerate(g_spans)
                    if j not in used and gt == typ and iou((s, e), (gs, ge)) >= 0.5
                ),
                None,
            )
            if hit is None:
                fp[typ] += 1
            else:
                tp[typ] += 1
                used.add(hit)
        for j, (gt, _, _) in enumerate(g_spans):
            if j not in used:
                fn[gt] += 1

    def prf(t, f_p, f_n):
        p = t / (t + f_p) if t + f_p else 0.0
        r = t / (t + f_n) if t + f_n else 0.0
        f2 = 5 * p * r / (4 * p + r) if p + r else 0.0
        return {
            "precision": round(p, 4),
            "recall": round(r, 4),
            "f2": round(f2, 4),
            "tp": t,
            "fp": f_p,
            "fn": f_n,
        }

    per = {t: prf(tp[t], fp[t], fn[t]) for t in sorted(types)}
    micro = prf(sum(tp.values()), sum(fp.values()), sum(fn.values()))
    return {"per_type": per, "micro": micro}


def ours_pii(texts: list[str]) -> list[list[tuple]]:
    guard = PiiGuard()
    out = []
    for t in texts:
        n = normalise(t)
        out.append([(f.type, *n.span(f.start, f.end)) for f in guard.scan(n.text)])
    return out


# ---------------------------------------------------------------- injection
def injection_eval(cases: list[dict], benign: list[str], guards: dict) -> dict:
    res = {}
    for name, detect in guards.items():
        by_type, by_variant = defaultdict(lambda: [0, 0]), defaultdict(lambda: [0, 0])
        for c in cases:
            hit = detect(c["user_input"])
            by_type[c["injection_type"]][0] += hit
            by_type[c["injection_type"]][1] += 1
            key = f"{c['injection_type']}/{c['injection_variant']}"
            by_variant[key][0] += hit
            by_variant[key][1] += 1
        fps = [t for t in benign if detect(t)]
        res[name] = {
            "detection_rate": {k: round(h / n, 4) for k, (h, n) in by_type.items()},
            "detected": {k: f"{h}/{n}" for k, (h, n) in by_type.items()},
            "per_variant": {k: f"{h}/{n}" for k, (h, n) in sorted(by_variant.items())},
            "false_positive_rate_banking77_test": round(len(fps) / len(benign), 5),
            "false_positives": len(fps),
            "false_positive_examples": fps[:5],
        }
    return res


# ---------------------------------------------------------------- latency
def chain_latency(chain: GuardChain, texts: list[str], stage: str) -> dict:
    """Wall-clock percentiles, and the thread's CPU time, which shows the work apart from waiting for a shared core."""
    ms, cpu = [], []
    for t in texts:
        t0, c0 = time.perf_counter(), time.thread_time()
        chain.check(t, stage=stage)
        ms.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.thread_time() - c0) * 1000)
    out = pct(ms)
    c = pct(cpu)
    out.update(cpu_p50_ms=c["p50_ms"], cpu_p99_ms=c["p99_ms"])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--embedding-sample", type=int, default=300, help="texts per set timed with embedding guards"
    )
    parser.add_argument("--skip-peers", action="store_true", help="do not run Presidio and LLM Guard")
    args = parser.parse_args()
    data = shared_data_dir(HERE)
    if data is None:
        print(
            "shared data not found: set LLMOPS_SHARED_DATA to the folder holding pii_synth/", file=sys.stderr
        )
        return 2
    started = time.time()
    pii = json.loads((data / "pii_synth" / "synth_dataset_v2.json").read_text())
    pii_texts = [x["full_text"] for x in pii]
    gold = [
        [
            (LABEL_MAP.get(s["entity_type"], s["entity_type"]), s["start_position"], s["end_position"])
            for s in x["spans"]
        ]
        for x in pii
    ]
    types = {t for g in gold for t, _, _ in g}
    cases = json.loads((data / "prompt_injection" / "prompt_injection.json").read_text())
    banking = read_table(data / "banking77" / "test.csv", ["text"])["text"].astype(str).tolist()
    rng = random.Random(0)
    sets = {"banking77_test": banking, "pii_synth": pii_texts}
    emb_sets = {k: rng.sample(v, min(args.embedding_sample, len(v))) for k, v in sets.items()}

    results: dict = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "datasets": {
            "pii_synth": len(pii),
            "prompt_injection": Counter(c["injection_type"] for c in cases),
            "banking77_test": len(banking),
        },
    }

    # PII accuracy
    t0 = time.perf_counter()
    ours = ours_pii(pii_texts)
    results["pii"] = {
        "matching": "same type and IoU >= 0.5, one-to-one; micro figures over all 17 dataset types; predictions of types the dataset does not label are ignored",
        "label_map": LABEL_MAP,
        "ours": span_scores(gold, ours, types),
        "ours_ms_per_sentence": round((time.perf_counter() - t0) * 1000 / len(pii), 4),
    }
    ours_per = results["pii"]["ours"]["per_type"]
    results["pii"]["targets"] = {
        t: {
            "recall>=0.95": ours_per[t]["recall"] >= 0.95,
            "precision>=0.90": ours_per[t]["precision"] >= 0.90,
        }
        for t in TARGET_TYPES
    }

    # Prompt injection
    rules = InjectionGuard()
    from llmops_kit.embeddings import Embedder

    # Accuracy runs use a cached encoder filled in batches (fast); latency runs below use an uncached one.
    cache_dir = tempfile.TemporaryDirectory()
    embedder = Embedder(cache_path=Path(cache_dir.name) / "emb.sqlite", batch_size=64)
    embedder.encode([t[:2000] for t in [c["user_input"] for c in cases] + banking])
    with_emb = InjectionGuard(embedder=embedder)
    chain_emb = GuardChain.from_policy(load_policy(None), embedder=embedder)
    chain_rules = GuardChain.from_policy(load_policy(None), embedding_guards=False)

    actions: dict[str, str] = {}

    def fires(guard):
        return lambda t: bool([f for f in guard.scan(normalise(t).text) if f.score >= 0.6])

    results["prompt_injection"] = {
        "held_out": f"attack exemplars (ATTACK_EXEMPLARS, {len(ATTACK_EXEMPLARS)} sentences) and rules were written for the kit, "
        "none taken from the evaluation set; the similarity threshold (0.72) and topic/domain thresholds were set on "
        "BANKING77 train.csv, not test.csv",
        "detected_means": "injection guard: any finding with score >= 0.6 (the default policy's threshold); chain: verdict action is not 'allow'",
        **injection_eval(
            cases,
            banking,
            {
                "injection_guard_rules": fires(rules),
                "injection_guard_rules_and_embeddings": fires(with_emb),
                "default_input_chain_rules_only": lambda t: chain_rules.check(t).action != "allow",
                "default_input_chain_with_embeddings": lambda t: (
                    actions.setdefault(t, chain_emb.check(t).action) != "allow"
                ),
            },
        ),
    }
    verdicts = Counter(actions[t] for t in banking)
    chain_res = results["prompt_injection"]["default_input_chain_with_embeddings"]
    chain_res["actions_banking77_test"] = dict(verdicts)
    # A benign query counts as an attack-side false positive when a non-PII guard flags or blocks it; PII redaction of a
    # name in a benign query is reported apart (it changes what the model sees, not whether it answers).
    attack_fp, pii_only = [], []
    for t in banking:
        v = chain_emb.check(t)
        acted = [f for f in v.findings if f.action != "allow"]
        if any(f.guard != "pii" for f in acted):
            attack_fp.append((t, sorted({f"{f.guard}/{f.type}" for f in acted if f.guard != "pii"})))
        elif acted:
            pii_only.append((t, sorted({f.type for f in acted})))
    chain_res["attack_false_positive_rate_banking77_test"] = round(len(attack_fp) / len(banking), 5)
    chain_res["attack_false_positives"] = Counter(x for _, kinds in attack_fp for x in kinds)
    chain_res["attack_false_positive_examples"] = attack_fp[:8]
    chain_res["pii_redaction_rate_banking77_test"] = round(len(pii_only) / len(banking), 5)
    chain_res["pii_redaction_examples"] = pii_only[:8]
    cache_dir.cleanup()

    # Latency: fresh chains, uncached embedder (every text a cache miss: texts are distinct and the memo is per chain)
    lat: dict = {
        "note": "per request, in-process, after one warm-up call; embedding runs use an uncached encoder on texts not seen before"
    }
    chain_rules = GuardChain.from_policy(load_policy(None), embedding_guards=False)
    chain_rules.warm_up()  # both stages: name lists, prefilter databases
    for name, texts in sets.items():
        lat[f"ours_rules_input/{name}"] = chain_latency(chain_rules, texts, "input")
        lat[f"ours_rules_output/{name}"] = chain_latency(chain_rules, texts, "output")
        short = [t for t in texts if len(t) <= 1000]
        lat[f"ours_rules_input/{name}"]["max_chars"] = max(map(len, texts))
        lat[f"ours_rules_input/{name}"]["texts_over_1000_chars"] = len(texts) - len(short)
    # One request embeds one short text: a single intra-op thread is fastest and does not fight other work for cores.
    emb_fresh = Embedder(cache_path=None, threads=1)
    chain_e = GuardChain.from_policy(load_policy(None), embedder=emb_fresh)
    chain_e.check("warm up the encoder", stage="input")
    chain_e.check("warm up the encoder output", stage="output")
    for name, texts in emb_sets.items():
        lat[f"ours_embeddings_input/{name}"] = chain_latency(chain_e, texts, "input")
        lat[f"ours_embeddings_output/{name}"] = chain_latency(chain_e, [t + " " for t in texts], "output")
    results["latency"] = lat

    # Peers
    if not args.skip_peers:
        job = {"pii": pii_texts, "latency": sets}
        pres = run_worker("presidio", PRESIDIO_WORKER, job)
        pred = [[(s[0], s[1], s[2]) for s in spans] for spans in pres["spans"]]
        results["pii"]["presidio"] = span_scores(gold, pred, types)
        results["pii"]["presidio_config"] = (
            f"presidio-analyzer {pres['version']} AnalyzerEngine, default recognizers, spaCy NLP engine pointed at a saved "
            "spacy.blank('en') pipeline (no English model installs offline): pattern recognizers work, NER entities "
            "(PERSON, LOCATION, ORGANIZATION, NRP) are not produced"
        )
        results["pii"]["micro_f2_ours_minus_presidio"] = round(
            results["pii"]["ours"]["micro"]["f2"] - results["pii"]["presidio"]["micro"]["f2"], 4
        )
        for name, ms in pres["ms"].items():
            lat[f"presidio_analyze/{name}"] = pct(ms)
        lg = run_worker("llmguard", LLMGUARD_WORKER, {"latency": sets})
        results["llm_guard_config"] = (
            f"llm-guard {lg['version']} input scanners Secrets, Regex (email, card, SSN patterns), InvisibleText via scan_prompt "
            "(fail_fast=False); its model-based scanners need downloads and do not run offline"
        )
        for name, per in lg["ms"].items():
            for scanner, ms in per.items():
                lat[f"llm_guard_{scanner}/{name}"] = pct(ms)

    lat_b = lat["ours_rules_input/banking77_test"]
    lat_p = lat["ours_rules_input/pii_synth"]
    results["targets"] = {
        "pii_per_type_recall_precision": all(all(v.values()) for v in results["pii"]["targets"].values()),
        "pii_micro_f2_above_presidio": results["pii"].get("micro_f2_ours_minus_presidio", 0) > 0
        if not args.skip_peers
        else None,
        "direct_injection_detection>=0.90 (default input chain with embeddings)": results["prompt_injection"][
            "default_input_chain_with_embeddings"
        ]["detection_rate"]["direct"]
        >= 0.90,
        "direct_injection_detection>=0.90 (injection guard, rules and embeddings)": results[
            "prompt_injection"
        ]["injection_guard_rules_and_embeddings"]["detection_rate"]["direct"]
        >= 0.90,
        "false_positives<=1% (injection guard, rules and embeddings)": results["prompt_injection"][
            "injection_guard_rules_and_embeddings"
        ]["false_positive_rate_banking77_test"]
        <= 0.01,
        "attack_false_positives<=1% (default input chain with embeddings: non-PII flag or block)": results[
            "prompt_injection"
        ]["default_input_chain_with_embeddings"]["attack_false_positive_rate_banking77_test"]
        <= 0.01,
        "rule_chain_p50<=1ms": max(lat_b["p50_ms"], lat_p["p50_ms"]) <= 1.0,
        "rule_chain_p99<=5ms": max(lat_b["p99_ms"], lat_p["p99_ms"]) <= 5.0,
        "embedding_chain_p50<=15ms_cache_miss": max(
            lat[f"ours_embeddings_input/{k}"]["p50_ms"] for k in emb_sets
        )
        <= 15.0,
    }
    results["machine"]["load_average_at_end"] = os.getloadavg()
    results["seconds"] = round(time.time() - started, 1)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2, default=dict) + "\n")
    print(json.dumps(results["targets"], indent=2))
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
