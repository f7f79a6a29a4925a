"""The calibration of the break rule as shipped, fast (`python scripts/calibrate.py` is the full
study, the README's tables).

* The pieces: the NumPy probe against scikit-learn, its folds, the stratum weights against the
  pipeline's, every planted truth recomputed.
* The study on a small regime (`quick_regime`, 3 seeds, the null, persistent and
  missing-data scenarios): intervals cover the truth, no false "present" under the null, the
  planted value found, no false break, and a deliberately broken rule (a not-estimable Δ
  counted as vanished) caught making false breaks on the missing-data axes.
* Δ_steer where better cells sit just outside the constraints (the vanishing scenario's last
  points): the interval with the bounds of undecided feasibility covers the truth 0, the
  estimate's own interval did not.
"""

import functools
import importlib.util
import json
import pathlib
import sys

import numpy as np
import pytest
from absl import flags

from emojax import calibration as cal
from emojax import workdir
from emojax.calibration import axis, grids, world
from emojax.metrics import incremental

ROOT = pathlib.Path(__file__).resolve().parents[1]
LAT = world.Latents()


def _unsteered(seed, num_requests=80, rate=0.25, coupling=0.7):
    rng = np.random.default_rng(seed)
    req = world.draw_requests(rng, num_requests, (2, 8), LAT)
    return req, world.unsteered(rng, req, LAT, LAT.base_logit(rate, coupling), coupling)


def test_numpy_logistic_matches_sklearn_and_weights_are_repetitions():
    from sklearn.linear_model import LogisticRegression

    req, d = _unsteered(0)
    x, y = np.hstack([d["x_controls"], d["x_emotion"]]), d["failure"]
    counts = np.random.default_rng(1).integers(0, 3, len(y)).astype(float)
    beta = cal.fit_logistic(x, y, np.stack([np.ones(len(y)), counts]), l2=1.0, iters=12)
    ref = LogisticRegression(C=1.0, tol=1e-10).fit(x, y)
    np.testing.assert_allclose(beta[0], np.r_[ref.intercept_, ref.coef_[0]], atol=1e-3)
    rep = LogisticRegression(C=1.0, tol=1e-10).fit(np.repeat(x, counts.astype(int), 0),
                                                   np.repeat(y, counts.astype(int)))  # fmt: skip
    np.testing.assert_allclose(beta[1], np.r_[rep.intercept_, rep.coef_[0]], atol=1e-3)
    # The chord steps of the draws land where Newton's method does.
    chord = cal.fit_logistic(x, y, counts[None], 1.0, iters=4, init=beta[0], newton=1)
    np.testing.assert_allclose(chord[0], beta[1], atol=1e-3)


def test_folds_group_requests_and_balance_failing_ones():
    rng = np.random.default_rng(0)
    failing = (rng.uniform(size=50) < 0.3) * rng.integers(1, 4, 50)
    m = np.vstack([np.ones(50), rng.multinomial(50, np.full(50, 0.02), size=3)])
    folds = cal.stratified_grouped_folds(rng, failing.astype(float), m, 5)
    assert folds.shape == (4, 50) and set(np.unique(folds)) == set(range(5))
    for f, w in zip(folds, m, strict=True):
        present = w > 0
        sizes = np.bincount(f[present], minlength=5)
        bad = np.bincount(f[present & (failing > 0)], minlength=5)
        assert sizes.max() - sizes.min() <= 1 and bad.max() - bad.min() <= 1


@pytest.mark.parametrize("tolerance", [None, 0.05])
@pytest.mark.parametrize("relative", [0.0, 0.4])
def test_planted_steering_truth_is_what_was_planted(relative, tolerance):
    arms = grids.build_arms(np.random.default_rng(0), 3)
    assert len(arms.controls) == len(arms.emotion) == 27  # equal arms: 3 grids of 3 x 3
    assert arms.controls[arms.zero[0]] == arms.emotion[arms.zero[1]] == 0  # the centre cell
    for rates, coupling in (((0.3, 0.15), 0.0), ((0.12, 0.2), 0.7)):
        points = {t: (LAT.base_logit(r, coupling), coupling)
                  for t, r in zip(grids.TYPES, rates, strict=True)}  # fmt: skip
        plain = grids.true_steer(arms, arms.effect, LAT, points, 0.1, tolerance)
        for t, r in zip(grids.TYPES, rates, strict=True):
            assert plain[t]["unsteered"] == pytest.approx(r)
        planted = {grids.TYPES[0]: relative, grids.TYPES[1]: relative / 2}
        effects = grids.plant(arms, LAT, points, planted, 0.1, tolerance)
        truth = grids.true_steer(arms, effects, LAT, points, 0.1, tolerance)
        for t in grids.TYPES:
            assert truth[t]["relative"] == pytest.approx(planted[t], abs=1e-9)
            # Only interventions with an emotion coefficient moved.
            np.testing.assert_array_equal(
                effects[t][~arms.emotional], arms.effect[t][~arms.emotional]
            )
    with pytest.raises(ValueError, match="cannot plant"):
        grids.plant(arms, LAT, points, {t: 0.95 for t in grids.TYPES}, 0.1, tolerance)


def test_monitoring_truth_is_zero_without_coupling_and_positive_with_it():
    null = world.true_mon(LAT, 0.2, 0.0, 50_000)
    planted = world.true_mon(LAT, 0.2, 0.7, 50_000)
    assert abs(null["absolute"]) < 2e-3 and 0.7 < null["auroc_controls"] < 0.95
    assert planted["absolute"] > 0.03 and planted["relative"] > 0.15


def test_the_rule_as_shipped_is_calibrated_and_the_study_sees_a_broken_rule():
    chosen = [s for s in cal.SCENARIOS if s.name in ("null", "persistent", "missing")]
    res = cal.run_calibration(3, quick=True, scenarios=chosen)
    values = res["values"]
    assert {v["name"] for v in values} == set(cal.Regime().required)
    cases = lambda rows, k: sum(v[k] * v["estimable"] for v in rows)  # noqa: E731
    est = sum(v["estimable"] for v in values)
    assert cases(values, "coverage_relative") / est >= 0.85  # goal 0.9 (full study)
    assert cases(values, "coverage_absolute") / est >= 0.85
    null = [v for v in values if v["truth"] == "0"]
    assert cases(null, "present") / sum(v["estimable"] for v in null) <= 0.1  # goal 0.05
    planted = [v for v in values if v["truth"] == "planted"]
    assert cases(planted, "present") / sum(v["estimable"] for v in planted) >= 0.6
    shipped = {s: r["shipped"] for s, r in res["scenarios"].items()}
    assert sum(r["false_break"] * r["num"] for r in shipped.values()) <= 1  # goal 5 %
    assert shipped["persistent"]["right"] >= 2 / 3 and shipped["missing"]["right"] >= 2 / 3
    # A not-estimable Δ counted as vanished turns missing data into breaks (where the rare
    # type happens to be estimable, both rules say 'insufficient data').
    assert shipped["missing"]["false_break"] == 0
    assert res["scenarios"]["missing"]["not-estimable-as-vanished"]["false_break"] >= 1 / 3
    table = cal.markdown_table(res)
    assert "| missing | insufficient data |" in table and "| delta_mon/over_refusal | 0 |" in table
    assert set(res["null_by_scenario"]) == {"null"} and "| null | 0 % (" in table
    json.dumps(res)


def test_steering_at_the_edge_of_the_constraints_covers_its_truth(monkeypatch):
    """The vanishing scenario's points 3-4: Δ_steer's truth is 0, but the emotion arm has
    cells much better than its best feasible one just outside the tolerance or κ. With the
    interval of the estimate alone (`feasibility_z=0`, the rule before the fix) a third of
    those cases read "present"; with the bounds of undecided feasibility none does."""
    chosen = [s for s in cal.SCENARIOS if s.name == "vanishing"]
    shipped = {"shipped": cal.RULES["shipped"]}

    def steer_null(res):
        rows = res["null_by_scenario"]["vanishing"]
        return [rows[f"delta_steer/{t}"] for t in grids.TYPES]

    fixed = steer_null(cal.run_calibration(4, quick=True, scenarios=chosen, rules=shipped))
    assert sum(r["cases"] for r in fixed) >= 12
    assert all(r["present"] == 0.0 and r["coverage_relative"] == 1.0 for r in fixed)
    plain = functools.partial(incremental.delta_steer, feasibility_z=0.0)
    monkeypatch.setattr(axis.incremental, "delta_steer", plain)
    before = steer_null(cal.run_calibration(4, quick=True, scenarios=chosen, rules=shipped))
    present = sum(r["present"] * r["cases"] for r in before) / sum(r["cases"] for r in before)
    assert present >= 0.2


def test_random_arm_hook_on_exchangeable_grids():
    rng = np.random.default_rng(0)
    grids_ = cal.simulate_random_grids(rng, cal.SteerSim(num_requests=100, num_cells=6), 8)
    out = cal.random_arm_calibration(
        grids_["fail"], grids_["kl"], grids_["request"], 0.15, num_requests=100, num_pairs=12,
        num_draws=200, num_splits=2,
    )  # fmt: skip
    assert out["coverage_zero"] >= 0.8 and out["significant"] <= 0.2
    assert out["estimate"].shape == (12,)
    with pytest.raises(ValueError, match="random grids"):
        cal.random_arm_calibration(
            grids_["fail"][:5], grids_["kl"][:5], grids_["request"], 0.15, num_requests=100
        )


def test_validation_flag_without_the_validation_study_is_one_error_line(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "emojax.validation.study", None)  # as if not written yet
    before, was_parsed = set(flags.FLAGS), flags.FLAGS.is_parsed()
    path = ROOT / "scripts" / "calibrate.py"
    try:
        spec = importlib.util.spec_from_file_location("_calibrate_script", path)
        script = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(script)
        flags.FLAGS([str(path), "--validation", "--seeds=2"])
        with pytest.raises(SystemExit) as info:
            workdir.main_errors(script.main)([])
    finally:
        for name in set(flags.FLAGS) - before:
            delattr(flags.FLAGS, name)
        if not was_parsed:
            flags.FLAGS.unparse_flags()
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --validation needs emojax/validation/study.py")
    assert err.count("\n") == 1
