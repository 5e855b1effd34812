"""Fallback wiring through the real app, in process: a model that failed to load, a busy model, a tenant whose
budget is spent (`Server.overflow_model`), an open breaker in /readyz and /metrics. (Failing upstreams under load:
tests/reliability/test_upstream_outage.py.)"""

from __future__ import annotations

import json
import time

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from test_serving_app_support import SECRET, write_settings

from llmops_kit.core import load_settings
from llmops_kit.errors import ConfigurationError
from llmops_kit.serving.app import create_app
from llmops_kit.serving.auth import mint_token
from llmops_kit.serving.gateway import RequestContext

MODELS = """
[model.gpt]
kind = benchmark
fallbacks = claude
overflow_to = local-chat
overflow_in_flight = 2
breaker_failures = 3
breaker_open_s = 600
[model.claude]
kind = benchmark
[model.local-chat]
kind = benchmark
"""


@pytest.fixture
def served(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMOPS_JWT_SECRET", SECRET)
    settings = load_settings(write_settings(tmp_path, {"backend": "benchmark"}, MODELS), environ={})
    token = mint_token(settings, "acme", ["chat", "metrics"], 600, environ={"LLMOPS_JWT_SECRET": SECRET})
    with TestClient(create_app(settings)) as client:
        server = client.app.state.server
        deadline = time.monotonic() + 60
        while not server.guards_warm and time.monotonic() < deadline:
            time.sleep(0.05)
        yield client, server, {"Authorization": f"Bearer {token}"}


def ask(client: TestClient, auth: dict, model: str = "gpt", **kw):
    body = {"model": model, "messages": [{"role": "user", "content": "Where is my card?"}], **kw}
    return client.post("/v1/chat/completions", headers=auth, json=body)


def fallbacks_counted(client: TestClient, auth: dict) -> dict[tuple[str, str, str], float]:
    text = client.get("/metrics", headers=auth).text
    return {
        (s.labels["from"], s.labels["to"], s.labels["reason"]): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "llmops_fallbacks_total"
    }


def test_a_model_that_failed_to_load_passes_its_requests_on(served):
    client, server, auth = served
    server.chat_errors["gpt"] = "RuntimeError: the upstream refused the warm-up"
    r = ask(client, auth)
    assert (
        r.status_code == 200
        and r.json()["model"] == "claude"
        and r.json()["llmops"]["answered_by"] == "claude"
    )
    server.chat_errors["claude"] = "RuntimeError: down too"
    r = ask(client, auth, stream=True)
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
    text = "".join(c["delta"].get("content") or "" for e in events for c in e.get("choices", []))
    assert r.status_code == 200 and events[-1]["model"] == "local-chat" and text == "echo: Where is my card?"
    assert fallbacks_counted(client, auth) == {
        ("gpt", "claude", "not_ready"): 2,
        ("claude", "local-chat", "not_ready"): 1,
    }
    server.chat_errors["local-chat"] = "RuntimeError: no model file"  # no fallback left: 503 as before
    r = ask(client, auth, model="local-chat")
    assert r.status_code == 503 and r.json()["error"]["code"] == "model_not_ready"


def test_a_busy_model_overflows_to_the_local_one(served):
    client, server, auth = served
    server.chains.in_flight["gpt"] = 2  # two calls running: at overflow_in_flight
    r = ask(client, auth)
    server.chains.in_flight["gpt"] = 0
    assert r.status_code == 200 and r.json()["model"] == "local-chat"
    assert fallbacks_counted(client, auth) == {("gpt", "local-chat", "queue_full"): 1}
    assert ask(client, auth).json()["model"] == "gpt"


def test_overflow_model_for_a_spent_budget(served):
    client, server, auth = served
    ctx = RequestContext("budget-test-0001", "POST", "/v1/chat/completions", time.perf_counter(), "")
    ctx.model = "gpt"
    model = server.overflow_model(ctx, "budget")
    assert model is server.chat_models["local-chat"] and ctx.model == "local-chat"
    assert ctx.prediction == {"fallbacks": [{"from": "gpt", "to": "local-chat", "reason": "budget"}]}
    for name in ("claude", "not-a-model"):  # no overflow_to; no such model
        other = RequestContext("budget-test-0002", "POST", "/v1/chat/completions", time.perf_counter(), "")
        other.model = name
        assert server.overflow_model(other, "budget") is None and other.prediction is None
    assert fallbacks_counted(client, auth) == {("gpt", "local-chat", "budget"): 1}


def test_an_open_breaker_degrades_readiness_and_serves_from_the_fallback(served):
    client, server, auth = served
    breaker = server.chains.breakers["gpt"]
    for _ in range(3):
        breaker.record(breaker.acquire(), False)
    r = ask(client, auth)
    assert r.status_code == 200 and r.json()["model"] == "claude"
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "degraded"
    check = ready.json()["checks"]["breaker:gpt"]
    assert check["state"] == "open" and "'claude'" in check["detail"] and check["retry_after_s"] > 500
    text = client.get("/metrics", headers=auth).text
    assert 'llmops_breaker_state{backend="gpt"} 2.0' in text
    assert 'llmops_breaker_state{backend="claude"} 0.0' in text
    assert fallbacks_counted(client, auth) == {("gpt", "claude", "breaker_open"): 1}


def test_a_chain_must_name_chat_models(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMOPS_JWT_SECRET", SECRET)
    ini = write_settings(
        tmp_path, {"backend": "benchmark"}, "[model.gpt]\nkind = benchmark\nfallbacks = gtp\n"
    )
    with pytest.raises(ConfigurationError, match=r"\[model.gpt\] fallbacks names 'gtp'"):
        create_app(load_settings(ini, environ={}))
