"""The financial-advice assistant: simulations reproducible from their audit record, bad input named, sane figures
at full size, the policy against promised returns, and the assistant end to end."""

import json

import pytest

from llmops_kit.advisor import SimulationResult, rerun, simulate_portfolio
from llmops_kit.errors import InputError

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
