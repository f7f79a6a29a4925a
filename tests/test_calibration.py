"""Fast calibration of Δ_steer and of the break rule on simulated data with known answers.

The full study is `python scripts/calibrate.py` (50 seeds, larger samples); this is its quick
version: the same estimators on fewer requests and draws.
"""

import numpy as np
import pytest

from emojax import calibration as cal

SIM = cal.SteerSim(num_requests=120)
SEEDS = range(50)


def test_delta_steer_interval_calibrated_under_null_and_detects_a_planted_effect():
    null = cal.steer_study(SEEDS, effect=0.0, sim=SIM, num_draws=200)
    assert null["mean_truth"] == 0.0
    assert null["coverage_zero"] >= 0.9
    assert null["significant"] <= 0.1  # false "emotion adds steering value"
    assert 0.3 <= null["positive_fraction"] <= 0.7  # symmetric around 0
    planted = cal.steer_study(SEEDS, effect=1.0, sim=SIM, num_draws=200)
    assert planted["mean_truth"] > 0.08
    assert planted["significant"] >= 0.8  # the right answer differs, and is found
    assert planted["coverage_truth"] >= 0.85


@pytest.mark.parametrize("scenario", cal.SCENARIOS, ids=lambda s: s.name)
def test_break_rule_on_planted_axes(scenario):
    res = cal.break_study(range(20), scenario, margin=0.1, sim=SIM, num_draws=200)
    # Value that is still there is never declared vanished.
    assert res["false_break"] <= 0.1
    if scenario.name in ("persistent", "marginal", "eliminated"):
        assert res["correct"] >= 0.9 and res["break_found"] <= 0.05
    if scenario.name == "null":
        assert res["break_found"] >= 0.5  # a break is found where there is no value ...
    if scenario.name == "vanishing":
        assert res["break_found"] >= 0.5  # ... and where the coupling stops
    if isinstance(scenario.expected, int):
        assert res["interval_covers"] >= 0.75


def test_random_arm_hook_on_exchangeable_grids():
    rng = np.random.default_rng(0)
    grids = cal.simulate_random_grids(rng, cal.SteerSim(num_requests=100, num_cells=6), 8)
    out = cal.random_arm_calibration(
        grids["fail"], grids["kl"], grids["request"], 0.15, num_requests=100, num_pairs=12,
        num_draws=200, num_splits=2,
    )  # fmt: skip
    assert out["coverage_zero"] >= 0.8 and out["significant"] <= 0.2
    assert out["estimate"].shape == (12,)
    with pytest.raises(ValueError, match="random grids"):
        cal.random_arm_calibration(
            grids["fail"][:5], grids["kl"][:5], grids["request"], 0.15, num_requests=100
        )


def test_numpy_logistic_matches_sklearn_and_weights_are_repetitions():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    d = cal.simulate_monitoring(rng, num_requests=60)
    x, y = np.hstack([d["x_controls"], d["x_emotion"]]), d["failure"]
    counts = rng.integers(0, 3, len(y)).astype(float)
    beta = cal.fit_logistic(x, y, np.stack([np.ones(len(y)), counts]), l2=1.0, iters=12)
    ref = LogisticRegression(C=1.0, tol=1e-10).fit(x, y)
    np.testing.assert_allclose(beta[0], np.r_[ref.intercept_, ref.coef_[0]], atol=1e-3)
    rep = LogisticRegression(C=1.0, tol=1e-10).fit(np.repeat(x, counts.astype(int), 0),
                                                   np.repeat(y, counts.astype(int)))  # fmt: skip
    np.testing.assert_allclose(beta[1], np.r_[rep.intercept_, rep.coef_[0]], atol=1e-3)


def test_monitoring_null_not_significant_and_planted_coupling_found():
    kw = dict(num_requests=100, num_draws=60)
    null = cal.monitor_study(range(4), coupling=0.0, **kw)
    assert null["significant"] == 0.0 and null["coverage_zero"] >= 0.75
    planted = cal.monitor_study(range(4), coupling=1.5, **kw)
    assert planted["significant"] >= 0.75 and planted["mean_estimate"] > 0.02


def test_markdown_table_and_json_ready():
    res = cal.run_calibration(3, quick=True)
    table = cal.markdown_table(res)
    assert "| null (mean Δ +0.000)" in table and "| persistent | not reached |" in table
    assert "| null (Δ 0) |" in table and "| marginal | not reached |" in table
    import json

    json.dumps(res)
