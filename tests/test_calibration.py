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
    res = cal.break_study(range(8), scenario, margin=0.1, sim=SIM, num_draws=200)
    # Value that is still there is never declared vanished.
    assert res["false_break"] <= 0.125
    if scenario.name in ("persistent", "eliminated"):
        assert res["correct"] >= 0.875 and res["break_found"] == 0.0
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


def test_markdown_table_and_json_ready():
    res = cal.run_calibration(3, quick=True)
    table = cal.markdown_table(res)
    assert "| null (mean Δ +0.000)" in table and "| persistent | not reached |" in table
    import json

    json.dumps(res)
