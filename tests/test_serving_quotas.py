"""Quotas, budgets and rate limits through a running server: admission, 429s, headers, settlement, the budget CLI."""

import json

import pytest
from test_models_upstream import Upstream
from test_serving_app_support import start_server

from conftest import run_llmops

# A priced echo model: the answer of a long prompt is exactly `max_tokens` tokens, so the estimate is the cost.
PRICED = """
[model.priced]
kind = benchmark
max_tokens = 10
prompt_usd_per_mtok = 0
completion_usd_per_mtok = 1000
[model.capped]
kind = benchmark
max_tokens = 10
completion_usd_per_mtok = 1000
overflow_to = free
overflow_on = budget
[model.free]
kind = benchmark
max_tokens = 10
"""
COST = 10 * 1000  # micro-USD per answer: 10 tokens at 1,000 USD per million tokens
LONG = "please tell me everything about my card and my account and the transfer from yesterday"


def quotas_ini(**limits) -> str:
    return "[quotas]\nstore = sqlite\n" + "".join(f"{k} = {v}\n" for k, v in limits.items()) + PRICED


@pytest.fixture(scope="module")
def upstream():
    up = Upstream().start()
    yield up
    up.stop()


@pytest.fixture(scope="module")
def srv(tmp_path_factory, upstream):
    root = tmp_path_factory.mktemp("quotas")
    broken = (  # an upstream the test makes fail
        f"[model.broken]\nkind = openai\nbase_url = {upstream.base_url}\nupstream_model = x\n"
        "max_retries = 0\ncompletion_usd_per_mtok = 1000\n"
        # a cheap model whose failures fall back to the dear `priced`
        f"[model.thrifty]\nkind = openai\nbase_url = {upstream.base_url}\nupstream_model = x\n"
        "max_retries = 0\nmax_tokens = 10\ncompletion_usd_per_mtok = 100\nfallbacks = priced\n"
    )
    server = start_server(
        root,
        extra_ini=quotas_ini(tenant_micro_usd_per_day=5 * COST, tenant_requests_per_minute=1000) + broken,
    )
    yield server
    server.stop()


def ask(client, srv, tenant="acme", model="priced", **kw):
    body = {"model": model, "messages": [{"role": "user", "content": LONG}], **kw}
    return client.post("/v1/chat/completions", json=body, headers=srv.headers(tenant))


def budget(srv, *args):
    out = run_llmops("budget", *args, "--config", str(srv.root / "settings.ini"), cwd=srv.root)
    return out


def test_budget_admits_exactly_what_it_pays_for(srv):
    with srv.client() as c:
        answers = [ask(c, srv) for _ in range(7)]
    assert [r.status_code for r in answers] == [200] * 5 + [429] * 2
    ok, refused = answers[0], answers[5]
    assert ok.json()["usage"]["completion_tokens"] == 10
    assert ok.headers["x-ratelimit-limit-requests"] == "1000"
    assert int(ok.headers["x-ratelimit-remaining-requests"]) == 999
    err = refused.json()["error"]
    assert err["type"] == "rate_limit_error" and err["code"] == "quota_exceeded"
    assert "daily budget of tenant:acme" in err["message"] and "50,000 of 50,000 micro-USD" in err["message"]
    assert int(refused.headers["retry-after"]) >= 1
    # another tenant has its own budget
    with srv.client() as c:
        assert ask(c, srv, tenant="globex").status_code == 200
    # the store's spend equals the audit records' cost, and every refusal is in the audit log
    ids = [r.headers["x-request-id"] for r in answers]
    recs = srv.wait_records(ids)
    assert sum(round(recs[i][0]["cost_usd"] * 1e6) for i in ids) == 5 * COST
    assert [recs[i][0]["prediction"]["quota"].get("refused") for i in ids[5:]] == ["micro_usd_per_day"] * 2
    shown = budget(srv, "show", "--tenant", "acme")
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)["limits"]["micro_usd_per_day"]
    assert report == {"limit": 5 * COST, "source": "settings", "settled": 5 * COST, "held": 0, "remaining": 0}
    with srv.client() as c:
        scraped = c.get("/metrics", headers=srv.headers("ops", scopes=("metrics",))).text
    assert 'llmops_quota_refusals_total{limit="micro_usd_per_day"} 2.0' in scraped


def test_budget_cli_raises_and_resets_without_restart(srv):
    with srv.client() as c:
        while ask(c, srv, tenant="initech").status_code == 200:
            pass
        raised = budget(srv, "set", "--tenant", "initech", "usd_per_day", "0.06")
        assert raised.returncode == 0, raised.stderr
        assert json.loads(raised.stdout)["limits"]["micro_usd_per_day"]["source"] == "override"
        assert ask(c, srv, tenant="initech").status_code == 200  # one more answer fits the raised budget
        assert ask(c, srv, tenant="initech").status_code == 429
        assert budget(srv, "reset", "--tenant", "initech", "--clear-limits").returncode == 0
        assert ask(c, srv, tenant="initech").status_code == 200
    shown = json.loads(budget(srv, "show", "--tenant", "initech").stdout)["limits"]["micro_usd_per_day"]
    assert (shown["source"], shown["settled"]) == ("settings", COST)


def test_failed_requests_release_their_reservation(srv, upstream):
    upstream.script = [(500, {}, "the upstream is down")]
    with srv.client() as c:
        r = ask(c, srv, tenant="hooli", model="broken", max_tokens=10)
    assert r.status_code == 502, r.text
    shown = json.loads(budget(srv, "show", "--tenant", "hooli").stdout)["limits"]["micro_usd_per_day"]
    assert (shown["settled"], shown["held"], shown["remaining"]) == (0, 0, 5 * COST)


def test_a_fallback_to_a_dearer_model_never_overspends(srv, upstream):
    """The estimate is priced at the dearest model of the chain: the second request no longer fits, so it is refused."""
    assert (
        budget(srv, "set", "--tenant", "wonka", "usd_per_day", "0.015").returncode == 0
    )  # 1.5 answers of `priced`
    upstream.script = [(500, {}, "the upstream is down")]
    try:
        with srv.client() as c:
            first, second = (
                ask(c, srv, tenant="wonka", model="thrifty"),
                ask(c, srv, tenant="wonka", model="thrifty"),
            )
    finally:
        upstream.script = []
    assert (first.status_code, second.status_code) == (200, 429), second.text
    assert "daily budget of tenant:wonka" in second.json()["error"]["message"]
    rec = srv.wait_records([first.headers["x-request-id"]])[first.headers["x-request-id"]][0]
    assert [h["to"] for h in rec["prediction"]["fallbacks"]] == ["priced"]
    shown = json.loads(budget(srv, "show", "--tenant", "wonka").stdout)["limits"]["micro_usd_per_day"]
    assert (shown["settled"], shown["held"]) == (COST, 0) and shown["settled"] <= shown["limit"]


def test_requested_max_tokens_is_capped_by_what_was_reserved(srv):
    with srv.client() as c:
        r = ask(c, srv, tenant="umbrella", max_tokens=4)
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 4
    shown = json.loads(budget(srv, "show", "--tenant", "umbrella").stdout)["limits"]["micro_usd_per_day"]
    assert shown["settled"] == 4 * 1000


def test_budget_cli_errors_name_the_problem(srv, tmp_path):
    bad = budget(srv, "set", "--tenant", "acme", "per_week", "3")
    assert bad.returncode == 2 and "unknown limit 'per_week'" in bad.stderr
    neither = budget(srv, "set", "--tenant", "acme", "requests_per_day", "-3")
    assert neither.returncode == 2 and "requests_per_day='-3'" in neither.stderr
    (tmp_path / "settings.ini").write_text("[project]\nstate_dir = .llmops\n")
    off = run_llmops(
        "budget", "show", "--tenant", "acme", "--config", str(tmp_path / "settings.ini"), cwd=tmp_path
    )
    assert off.returncode == 2 and "[quotas] store is empty" in off.stderr


def test_a_spent_budget_overflows_to_the_local_model_where_policy_allows(srv):
    with srv.client() as c:
        paid = [ask(c, srv, tenant="frugal", model="capped") for _ in range(5)]
        spilled = ask(c, srv, tenant="frugal", model="capped")
        refused = ask(c, srv, tenant="frugal", model="priced")  # no overflow policy: a 429
    assert [r.status_code for r in paid] == [200] * 5
    assert spilled.status_code == 200 and spilled.json()["model"] == "free"
    assert refused.status_code == 429
    rec = srv.wait_records([spilled.headers["x-request-id"]])[spilled.headers["x-request-id"]][0]
    assert rec["model"] == "free" and rec["cost_usd"] == 0
    assert rec["prediction"]["fallbacks"] == [{"from": "capped", "to": "free", "reason": "budget"}]
    shown = json.loads(budget(srv, "show", "--tenant", "frugal").stdout)["limits"]["micro_usd_per_day"]
    assert (shown["settled"], shown["held"]) == (5 * COST, 0)
