"""Break-point logic, the weight dial and the policy-dominance index."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import emojax
from emojax import breakpoint as bp

TINY = dict(
    model_type="llama", vocab_size=64, hidden_size=32, intermediate_size=64,
    num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
)  # fmt: skip


def _config(**kw):
    return emojax.ModelConfig.from_hf_dict({**TINY, **kw})


def test_dial_reproduces_both_ends_exactly():
    config = _config()
    base = emojax.init_params(config, jax.random.PRNGKey(0))
    tuned = emojax.init_params(config, jax.random.PRNGKey(1))
    tokens = jnp.arange(12, dtype=jnp.int32).reshape(2, 6) % 64
    for alpha, ref in ((0.0, base), (1.0, tuned)):
        mixed = bp.interpolate_params(base, tuned, alpha)
        for a, b in zip(jax.tree.leaves(mixed), jax.tree.leaves(ref), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        got = emojax.forward(mixed, config, tokens).logits
        want = emojax.forward(ref, config, tokens).logits
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    half = bp.interpolate_params(base, tuned, 0.5)
    np.testing.assert_allclose(half.embed, (base.embed + tuned.embed) / 2, atol=1e-7)
    far = bp.interpolate_params(base, tuned, 1.5)  # extrapolation past the tuned model
    np.testing.assert_allclose(far.embed, base.embed + 1.5 * (tuned.embed - base.embed), atol=1e-6)


def test_dial_rejects_different_architectures():
    with pytest.raises(bp.DialError, match="num_layers"):
        bp.check_dial_compatible(_config(), _config(num_hidden_layers=3))
    bp.check_dial_compatible(_config(), _config())


def _delta(est, hi, ok=None, samples=None, r=200, sd=0.01, seed=0):
    """A Δ entry for find_break_point: draws around the estimate with a known spread."""
    est, hi = np.asarray(est, float), np.asarray(hi, float)
    ok = np.isfinite(est) if ok is None else np.asarray(ok, bool)
    if samples is None:
        rng = np.random.default_rng(seed)
        samples = est[:, None] + rng.normal(0, sd, (len(est), r))
    return {"estimate": est, "lo": est - (hi - est), "hi": hi, "samples": samples, "estimable": ok}


LABELS = ["base", "instruct", "safety-1", "safety-2"]


def test_estimable_counts_failing_and_non_failing_requests():
    assert not bp.estimable(0, 100)  # a zero-failure point
    assert not bp.estimable(9, 100) and bp.estimable(10, 100)
    assert not bp.estimable(95, 100)  # only 5 requests without a failure
    assert bp.estimable(5, 100, min_failures=5)
    np.testing.assert_array_equal(bp.estimable(np.array([0, 20, 99]), 100), [False, True, False])


def test_break_at_the_first_point_under_a_null():
    d = _delta([0.01, -0.02, 0.0, 0.005], [0.04, 0.03, 0.045, 0.05])
    brk = bp.find_break_point(LABELS, {"delta_steer/harmful_compliance": d}, {"delta_steer": 0.08})
    assert (brk.index, brk.label, brk.outcome) == (0, "base", "break")
    assert brk.interval == ("base", "base") and brk.interval_index == (0, 0)
    assert all(isinstance(i, int) for i in brk.interval_index)
    assert brk.reached_fraction == 1.0 and brk.first_crossing == 0
    np.testing.assert_allclose(
        brk.min_margin["delta_steer/harmful_compliance"], [0.03, 0.05, 0.045, 0.045]
    )
    json.dumps(brk.to_json())


def test_break_not_reached_when_value_persists_at_the_last_point():
    d = _delta([0.2, 0.01, 0.0, 0.15], [0.25, 0.03, 0.04, 0.2])
    brk = bp.find_break_point(LABELS, {"delta_steer/over_refusal": d}, {"delta_steer": 0.08})
    assert brk.index is None and brk.label is None and brk.outcome == "not reached"
    assert brk.interval == ("not reached", "not reached")
    assert brk.interval_index == (4, 4) and brk.reached_fraction == 0.0
    assert brk.first_crossing == 1  # the bounds dip below the margin without persisting
    assert brk.to_json()["label"] is None


def test_zero_failure_points_are_not_estimable_and_never_count_as_vanished():
    # Value at the first two points; then the policy removes every failure. A Δ of 0 with a
    # [0, 0] interval there must not be read as "emotion value vanished".
    est, hi = [0.2, 0.18, 0.0, 0.0], [0.26, 0.24, 0.0, 0.0]
    d = _delta(est, hi, ok=[True, True, False, False])
    brk = bp.find_break_point(LABELS, {"delta_steer/harmful_compliance": d}, {"delta_steer": 0.08})
    assert brk.index is None and brk.outcome == "failures eliminated first"
    assert brk.vanished == [False, False, False, False]
    assert brk.estimable == [True, True, False, False]
    assert brk.min_margin["delta_steer/harmful_compliance"][2:] == [None, None]
    assert brk.interval == ("not reached", "not reached")
    # The same numbers read as estimable would (wrongly) give a break at safety-1.
    d_wrong = _delta(est, hi)
    wrong = bp.find_break_point(LABELS, {"delta_steer/x": d_wrong}, {"delta_steer": 0.08})
    assert wrong.index == 2
    # Nothing estimable anywhere: also failures eliminated, never a break.
    none = _delta([np.nan] * 4, [np.nan] * 4, ok=[False] * 4)
    brk = bp.find_break_point(LABELS, {"delta_steer/x": none}, {"delta_steer": 0.08})
    assert brk.outcome == "failures eliminated first" and brk.reached_fraction == 0.0


def test_break_skips_points_with_nothing_estimable_and_uses_every_estimable_delta():
    margins = {"delta_mon": 0.02, "delta_steer/over_refusal": 0.05, "delta_steer": 0.08}
    mon = _delta([0.1, 0.0, 0.0, 0.0], [0.15, 0.01, 0.01, 0.01])
    steer_hc = _delta([0.1, 0.06, np.nan, 0.0], [0.12, 0.07, np.nan, 0.02])
    # Over-refusal: hi 0.06 < 0.08 but not < its own margin 0.05 at instruct.
    steer_or = _delta([0.0, 0.03, 0.0, 0.0], [0.03, 0.06, 0.04, 0.03])
    deltas = {
        "delta_mon/harmful_compliance": mon,
        "delta_steer/harmful_compliance": steer_hc,
        "delta_steer/over_refusal": steer_or,
    }
    brk = bp.find_break_point(LABELS, deltas, margins)
    assert brk.margins == {
        "delta_mon/harmful_compliance": 0.02,
        "delta_steer/harmful_compliance": 0.08,
        "delta_steer/over_refusal": 0.05,
    }
    assert brk.vanished == [False, False, True, True] and brk.index == 2
    # Over-refusal not estimable at safety-2 and the rest vanished there: the break moves on
    # to the next point only when an estimable Δ keeps value.
    steer_or_gap = _delta([0.0, 0.03, np.nan, 0.0], [0.03, 0.06, np.nan, 0.03])
    mon_gap = _delta([0.1, 0.0, np.nan, 0.0], [0.15, 0.01, np.nan, 0.01])
    gap = {"delta_mon/h": mon_gap, "delta_steer/harmful_compliance": steer_hc,
           "delta_steer/over_refusal": steer_or_gap}  # fmt: skip
    brk = bp.find_break_point(LABELS, gap, margins)
    assert brk.estimable == [True, True, False, True] and brk.index == 3
    with pytest.raises(KeyError, match="no margin"):
        bp.find_break_point(LABELS, {"delta_x/y": mon}, margins)


def test_break_interval_is_the_same_rule_under_resampling():
    r = 1000
    rng = np.random.default_rng(0)
    est = np.array([0.2, 0.06, 0.0, 0.0])
    half = np.array([0.05, 0.03, 0.03, 0.03])
    # Draws at instruct straddle the margin minus the half-width: the break is at instruct in
    # about half of the draws and at safety-1 in the others.
    samples = est[:, None] + rng.normal(0, 0.02, (4, r))
    samples[1] = 0.05 + rng.normal(0, 0.02, r)
    d = _delta(est, est + half, samples=samples)
    brk = bp.find_break_point(LABELS, {"delta_steer/h": d}, {"delta_steer": 0.08})
    assert brk.index == 2 and brk.label == "safety-1"  # hi 0.09 at instruct >= 0.08
    assert brk.interval == ("instruct", "safety-1") and brk.interval_index == (1, 2)
    assert brk.reached_fraction > 0.95
    # Draws that keep value at the last point put "not reached" in the interval.
    samples[3] = 0.03 + rng.normal(0, 0.02, r)
    d = _delta(est, est + half, samples=samples)
    brk = bp.find_break_point(LABELS, {"delta_steer/h": d}, {"delta_steer": 0.08})
    assert brk.interval[1] == "not reached" and brk.interval_index[1] == 4
    assert 0.2 < brk.reached_fraction < 0.9


@pytest.mark.parametrize("seed", range(20))
def test_break_point_never_before_a_point_with_value(seed):
    rng = np.random.default_rng(seed)
    est = rng.normal(0.0, 0.03, size=6)
    hi = est + rng.uniform(0.005, 0.04, size=6)
    ok = rng.uniform(size=6) < 0.8
    d = _delta(np.where(ok, est, np.nan), np.where(ok, hi, np.nan), ok=ok, seed=seed)
    brk = bp.find_break_point(
        [str(i) for i in range(6)], {"delta_steer/h": d}, {"delta_steer": 0.03}
    )
    if brk.index is not None:
        assert ok[brk.index]
        assert np.all(hi[brk.index :][ok[brk.index :]] < 0.03)
    elif brk.outcome == "not reached":
        assert ok[-1]
    lo_i, hi_i = brk.interval_index
    assert 0 <= lo_i <= hi_i <= 6


def test_policy_dominance_index():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 3))
    y = x @ np.array([1.0, -2.0, 0.5]) + 3.0
    assert bp.policy_dominance_index(y, x) == pytest.approx(1.0)
    noise = rng.normal(size=500)
    assert bp.policy_dominance_index(noise, x) < 0.05


def test_diagnostics_flags():
    d = bp.diagnostics(
        controls_auroc=0.95, failure_rate=0.3, style_vs_safety=2.0,
        cross_model_cosine=0.2, selectivity=0.5,
    )  # fmt: skip
    assert all(d.values())
    d = bp.diagnostics(
        controls_auroc=0.6, failure_rate=0.3, style_vs_safety=0.5,
        cross_model_cosine=0.9, selectivity=3.0,
    )  # fmt: skip
    assert not any(d.values())
    assert dataclasses.asdict(bp.DiagnosticThresholds())["style_ratio"] == 1.0
    # Per failure type: controlled only when every type is; intervals instead of the ratio.
    kw = dict(cross_model_cosine=0.2, selectivity=0.5)
    d = bp.diagnostics(
        controls_auroc={"harmful_compliance": 0.95, "over_refusal": 0.6},
        failure_rate={"harmful_compliance": 0.3, "over_refusal": 0.2},
        style_effect=(0.1, 0.3), safety_effect={"harmful_compliance": (-0.02, 0.03)}, **kw,
    )  # fmt: skip
    assert not d["failures_controlled_by_policy"] and d["emotion_mostly_stylistic"]
    d = bp.diagnostics(
        controls_auroc={"harmful_compliance": 0.95, "over_refusal": float("nan")},
        failure_rate={"harmful_compliance": 0.3, "over_refusal": 0.0},
        style_effect=(0.1, 0.3), safety_effect={"harmful_compliance": (0.01, 0.03)}, **kw,
    )  # fmt: skip
    assert d["failures_controlled_by_policy"] and not d["emotion_mostly_stylistic"]
    d = bp.diagnostics(controls_auroc=0.5, failure_rate=0.3, style_vs_safety=None, **kw)
    assert not d["emotion_mostly_stylistic"]  # ratio not defined


def test_nan_activations_raise_a_clear_error():
    """NaNs in a checkpoint surface as an error naming the activations, not as NaN results."""
    from emojax import extract, probes

    config = _config()
    params = emojax.init_params(config, jax.random.PRNGKey(0))
    params = params.replace(embed=params.embed.at[5].set(jnp.nan))
    sets = [extract.ContrastSet("concern", [[1, 5, 7]], [[1, 6, 7]], paired=True)]
    with pytest.raises(FloatingPointError, match="captured residual activations"):
        extract.capture(params, config, sets, [[1, 2, 3]], batch_size=2, buckets=(8,))
    acts = np.ones((4, 2, 32), np.float32)
    acts[2, 1, 3] = np.nan
    with pytest.raises(FloatingPointError, match=r"probe activations: 1 of .*index \(2, 1, 3\)"):
        probes.build_feature_sets(acts, {}, np.zeros(4), controls=(), emotions=())
