"""The audited financial-advice assistant behind the gateway: a portfolio question answered through the `openai`
client with figures that match the simulation rerun from the audit record; the plain simulation endpoint."""

from __future__ import annotations

import openai
import pytest
from test_serving_app_support import start_server

from llmops_kit.advisor import format_figures, rerun


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_server(
        tmp_path_factory.mktemp("advisor"), extra_ini="[model.financial-advisor]\nkind = advisor\n"
    )
    yield srv
    srv.stop()


def test_portfolio_answer_matches_the_simulation_rerun_from_its_audit_record(server):
    client = openai.OpenAI(base_url=server.base_url + "/v1", api_key=server.token(), max_retries=0)
    question = "I have $20,000 to invest, 60% stocks and 40% bonds, for 10 years. What could happen?"
    out = client.chat.completions.create(
        model="financial-advisor", messages=[{"role": "user", "content": question}], seed=11
    )
    content, extra = out.choices[0].message.content, out.model_extra["llmops"]
    assert extra["answered_by"] == "financial-advisor"
    assert extra["tool_calls"][0]["function"]["name"] == "simulate_portfolio"
    record = server.wait_records([extra["request_id"]])[extra["request_id"]][0]
    simulation = record["prediction"]["advisor"]["simulation"]
    assert record["prediction"]["advisor"]["seed"] == 11
    assert rerun(simulation).matches  # an auditor recomputes the same figures from the record alone
    figures = format_figures(simulation).splitlines()
    assert all(line in content for line in figures[1:3]), (
        figures,
        content,
    )  # the answer quotes those figures
    assert (
        "not financial advice" in content.lower()
        or "disclaimer" in content.lower()
        or "general information" in content.lower()
    )


def test_plain_simulation_endpoint_and_its_errors(server):
    body = {
        "allocation": {"us_equity": 0.6, "bonds": 0.4},
        "horizon_years": 10,
        "initial_amount": 20000,
        "seed": 7,
    }
    with server.client() as c:
        r = c.post("/v1/advisor/simulate", headers=server.headers(), json=body)
        assert r.status_code == 200, r.text
        assert rerun(r.json()).matches
        bad = c.post("/v1/advisor/simulate", headers=server.headers(), json={**body, "horizon_years": 99})
        assert bad.status_code == 400 and "horizon_years" in bad.json()["error"]["message"]
        assert c.post("/v1/advisor/simulate", json=body).status_code == 401
    rid = r.headers["x-request-id"]
    rec = server.wait_records([rid])[rid][0]
    assert rec["prediction"]["advisor"]["simulation"]["figures"] == r.json()["figures"]
