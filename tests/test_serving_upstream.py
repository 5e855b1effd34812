"""The gateway in front of a real OpenAI-compatible upstream (an aiohttp app on 127.0.0.1): retried successes and
clean OpenAI-shaped errors for a 5xx, a 429 with Retry-After, a hang and a dropped stream; never a 500 or a hang."""

from __future__ import annotations

import json
import time

import openai
import pytest
from test_models_upstream import Upstream
from test_serving_app_support import start_server


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    upstream = Upstream().start()
    extra = (
        "[model.up]\nkind = openai\n"
        f"base_url = {upstream.base_url}\nupstream_model = small\nmax_retries = 2\nread_timeout_s = 1\n"
        "prompt_usd_per_mtok = 0.5\ncompletion_usd_per_mtok = 1.5\n"
    )
    srv = start_server(tmp_path_factory.mktemp("gateway"), extra_ini=extra, serving={"request_timeout_s": 10})
    yield srv, upstream
    srv.stop()
    upstream.stop()


def ask(srv, **kw):
    client = openai.OpenAI(base_url=srv.base_url + "/v1", api_key=srv.token(), max_retries=0, timeout=20)
    return client.chat.completions.create(
        model="up", messages=[{"role": "user", "content": "Where is my card?"}], **kw
    )


def test_answer_usage_and_cost_from_the_upstream(gateway):
    srv, upstream = gateway
    out = ask(srv)
    assert out.choices[0].message.content == "Your card ships tomorrow."
    assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (11, 4)
    assert out.model_extra["llmops"]["answered_by"] == "up"
    assert upstream.seen[-1]["body"]["model"] == "small"
    rid = out.model_extra["llmops"]["request_id"]
    rec = srv.wait_records([rid])[rid][0]
    assert (
        abs(rec["cost_usd"] - 12e-6) < 1e-12  # integer micro-USD, each part rounded up: 5.5 -> 6, plus 6
        and rec["prediction"]["upstream_status"] == 200
    )


@pytest.mark.parametrize("script", [[(500, {}), "ok"], [(429, {"Retry-After": "1"}), "ok"], ["reset", "ok"]])
def test_retried_success(gateway, script):
    srv, upstream = gateway
    upstream.script = list(script)
    started = time.monotonic()
    out = ask(srv)
    assert out.choices[0].message.content == "Your card ships tomorrow."
    if script[0][0] == 429:
        assert time.monotonic() - started >= 0.9  # Retry-After was honoured


def test_upstream_errors_are_openai_shaped(gateway):
    srv, upstream = gateway
    upstream.script = [(503, {}), (503, {}), (503, {})]
    with pytest.raises(openai.APIStatusError) as failed:
        ask(srv)
    err = failed.value
    assert (
        err.status_code == 502 and err.body["code"] == "upstream_error" and err.body["upstream_status"] == 503
    )
    rid = err.response.headers["x-request-id"]
    rec = srv.wait_records([rid])[rid][0]
    assert rec["outcome"] == "upstream_error" and rec["prediction"]["upstream_status"] == 503
    upstream.script = ["hang"]
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as hung:
        ask(srv)
    assert hung.value.status_code == 504 and time.monotonic() - started < 8
    upstream.script = [(400, {}, "max_tokens is too large")]
    with pytest.raises(openai.BadRequestError) as bad:
        ask(srv)
    assert "max_tokens is too large" in bad.value.body["message"]


def test_dropped_stream_ends_cleanly(gateway):
    srv, upstream = gateway
    upstream.script = ["drop"]
    with srv.client() as c:
        body = {"model": "up", "stream": True, "messages": [{"role": "user", "content": "Where is my card?"}]}
        r = c.post("/v1/chat/completions", headers=srv.headers(), json=body, timeout=20)
    assert r.status_code == 200
    events = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    errors = [json.loads(e)["error"] for e in events[:-1] if "error" in json.loads(e)]
    assert errors and errors[0]["code"] == "upstream_stream_dropped"


def test_moderation_by_rewriting_through_the_gateway(tmp_path):
    """An insult is paraphrased by the rewrite model (a real upstream), checked again, and only then routed."""
    upstream = Upstream().start()
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "version: 1\nname: rewrite-insults\ninput:\n  - guard: content\n    action: block\n"
        "    actions: {INSULT: rewrite, PROFANITY: rewrite}\noutput: []\nrewrite:\n  model: up\n"
    )
    extra = (
        f"[model.up]\nkind = openai\nbase_url = {upstream.base_url}\nmax_retries = 0\nread_timeout_s = 5\n"
    )
    srv = start_server(
        tmp_path / "srv", extra_ini=extra + f"[guardrails]\npolicy = {policy}\nembedding_guards = false\n"
    )
    try:
        with srv.client() as c:
            body = {
                "model": "llmops-benchmark-echo",
                "messages": [{"role": "user", "content": "You stupid idiot, where is my card?"}],
            }
            r = c.post("/v1/chat/completions", headers=srv.headers(), json=body)
            assert r.status_code == 200, r.text
            assert r.json()["choices"][0]["message"]["content"] == "echo: Your card ships tomorrow."
            rid = r.headers["x-request-id"]
            upstream.script = [
                "hang"
            ]  # the rewrite model fails: the request is blocked, never passed on as it was
            blocked = c.post("/v1/chat/completions", headers=srv.headers(), json=body, timeout=30)
            assert blocked.status_code == 400 and blocked.json()["error"]["code"] == "guardrail_blocked"
        verdict = srv.wait_records([rid])[rid][0]["guardrails"][0]
        assert verdict["action"] == "rewrite" and verdict["rewrite"]["after"]["action"] == "allow"
        assert verdict["rewrite"]["original_sha256"] != verdict["rewrite"]["rewritten_sha256"]
        assert "idiot" not in json.dumps(verdict)
    finally:
        srv.stop()
        upstream.stop()
