"""The financial-advice assistant: simulations reproducible from their audit record, bad input named, sane figures
at full size, the policy against promised returns, and the assistant end to end."""

import asyncio
import json

import pytest

from llmops_kit.advisor import (
    DISCLAIMER,
    FinancialAssistant,
    SimulationResult,
    load_advisor_policy,
    parse_portfolio_request,
    rerun,
    run_tool_call,
    simulate_portfolio,
)
from llmops_kit.errors import InputError
from llmops_kit.guardrails.chain import GuardChain

GOOD = dict(allocation={"stocks": 60, "bonds": 40}, horizon_years=10, initial_amount=20_000, seed=11)


def test_rerun_of_the_recorded_dict_reproduces_every_figure():
    result = simulate_portfolio(**GOOD, annual_contribution=1_200)
    record = json.loads(json.dumps(result.to_dict()))  # as the audit log stores it
    assert SimulationResult.from_dict(record) == result
    report = rerun(record)
    assert report.matches and report.differences == {}
    assert report.recomputed == result
    record["inputs"]["seed"] += 1  # another seed is another simulation
    changed = rerun(record)
    assert not changed.matches and "median_final" in changed.differences


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("horizon_years", 0),
        ("horizon_years", 61),
        ("horizon_years", "ten"),
        ("initial_amount", -1),
        ("annual_contribution", -100),
        ("n_paths", 5),
        ("n_paths", 10**7),
        ("seed", -3),
        ("allocation", {"stocks": 60, "bonds": 30}),
        ("allocation", {"stocks": 60, "dogecoin": 40}),
        ("allocation", {"stocks": 110, "bonds": -10}),
    ],
)
def test_bad_input_is_an_input_error_naming_the_field(field, value):
    with pytest.raises(InputError) as info:
        simulate_portfolio(**(GOOD | {field: value}))
    assert info.value.message.startswith(field), info.value.message
    assert info.value.status == 400


def test_ten_thousand_paths_over_thirty_years_give_sane_figures():
    r = simulate_portfolio(
        {"us_equity": 0.5, "intl_equity": 0.2, "bonds": 0.25, "gold": 0.05}, 30, 50_000, seed=3
    )
    assert r.n_paths == 10_000
    assert r.p5_final <= r.median_final <= r.p95_final
    assert r.invested - r.var_95 == pytest.approx(r.p5_final)  # VaR is measured from the amount paid in
    assert r.es_95 >= r.var_95  # the mean of the worst 5% is no better than its threshold
    assert 0.03 < r.expected_return < 0.08 and 0.05 < r.volatility < 0.2
    assert r.sharpe_ratio == pytest.approx((r.expected_return - r.risk_free_rate) / r.volatility)
    assert 0 <= r.probability_of_loss < 0.2


# --- the policy and the assistant ---


@pytest.fixture(scope="module")
def chain():
    return GuardChain.from_policy(load_advisor_policy())


@pytest.mark.parametrize(
    "reply",
    [
        "This fund has a guaranteed return of 9% a year.",
        "Trust me, you will make money with this portfolio.",
        "Gold is a risk-free profit right now.",
        "You can't lose with index funds.",
        "We guarantee 10% annual returns.",
    ],
)
def test_the_policy_blocks_a_promised_return(chain, reply):
    verdict = chain.check(reply, "output")
    assert verdict.action == "block"
    assert [f.type for f in verdict.findings if f.action == "block"] == ["PROMISED_RETURNS"]


@pytest.mark.parametrize(
    "reply",
    [
        "Returns are not guaranteed, and you could lose money.",
        "There is no guaranteed return in investing.",
        "The Sharpe ratio compares the return above the risk-free rate with the volatility.",
        DISCLAIMER,
    ],
)
def test_the_policy_lets_honest_text_through(chain, reply):
    assert chain.check(reply, "output").action == "allow"


def test_a_portfolio_question_end_to_end_is_audited_and_reproducible():
    question = "I'm Ann Lee, ann.lee@example.com: 60% stocks and 40% bonds for 10 years, $20,000?"
    answer = asyncio.run(FinancialAssistant().answer([{"role": "user", "content": question}]))
    assert answer.route == "simulation" and answer.content.endswith(DISCLAIMER)
    assert "Final value: median $" in answer.content
    record = json.loads(json.dumps(answer.to_dict()))
    assert "Ann Lee" not in json.dumps(record) and "ann.lee" not in json.dumps(record)
    assert json.loads(record["tool_call"]["function"]["arguments"])["seed"] == record["seed"]
    assert run_tool_call(record["tool_call"]) == record["simulation"]
    assert rerun(record["simulation"]).matches
    again = asyncio.run(FinancialAssistant().answer([{"role": "user", "content": question}]))
    assert again.content == answer.content and again.seed == answer.seed


def test_the_parser_reads_plain_language_and_ignores_other_questions():
    p = parse_portfolio_request("60% stocks and 40% bonds for 10 years, $20,000")
    assert (p["allocation"], p["horizon_years"], p["initial_amount"]) == (
        {"us_equity": 60.0, "bonds": 40.0},
        10.0,
        20_000.0,
    )
    assert parse_portfolio_request("How do bonds work?") is None


def test_a_bad_tool_call_is_an_input_error_naming_the_field():
    call = {
        "type": "function",
        "function": {
            "name": "simulate_portfolio",
            "arguments": json.dumps({"allocation": {"bonds": 1}, "horizon_years": 5, "initial_amount": -10}),
        },
    }
    with pytest.raises(InputError, match=r"^initial_amount: -10"):
        run_tool_call(call)
