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


def test_status_precedence_and_not_estimable_is_undetermined():
    lo = np.array([0.01, -0.02, 0.02, -0.1, np.nan, 0.01])
    hi = np.array([0.04, 0.03, 0.12, 0.2, np.nan, 0.04])
    ok = np.array([True, True, True, True, False, True])
    elim = np.array([False, False, False, False, False, True])
    got = [bp.STATUSES[s] for s in bp.delta_status(lo, hi, 0.05, ok, elim)]
    assert got == ["vanished", "vanished", "present", "undetermined", "undetermined",
                   "failures eliminated"]  # fmt: skip
    # Bounds that would pass, on a Δ that is not estimable, stay undetermined.
    assert bp.delta_status(0.0, 0.0, 0.05, False, False) == bp.UNDETERMINED


def test_break_at_the_first_point_under_a_null():
    d = _delta([0.01, -0.02, 0.0, 0.005], [0.04, 0.03, 0.045, 0.05])
    brk = bp.find_break_point(LABELS, {"delta_steer/harmful_compliance": d}, {"delta_steer": 0.08})
    assert (brk.index, brk.label, brk.outcome) == (0, "base", "break")
    assert brk.status["delta_steer/harmful_compliance"] == ["vanished"] * 4
    assert brk.interval == ("base", "base") and brk.interval_index == (0, 0)
    assert all(isinstance(i, int) for i in brk.interval_index)
    assert brk.reached_fraction == 1.0 and brk.draw_outcomes["break"] == 1.0
    np.testing.assert_allclose(
        brk.min_margin["delta_steer/harmful_compliance"], [0.03, 0.05, 0.045, 0.045]
    )
    json.dumps(brk.to_json())


def test_break_not_reached_when_value_persists_at_the_last_point():
    d = _delta([0.2, 0.01, 0.0, 0.15], [0.25, 0.03, 0.04, 0.2])
    brk = bp.find_break_point(LABELS, {"delta_steer/over_refusal": d}, {"delta_steer": 0.08})
    assert brk.index is None and brk.label is None and brk.outcome == "not reached"
    assert brk.status["delta_steer/over_refusal"] == ["present", "vanished", "vanished",
                                                      "present"]  # fmt: skip
    assert brk.interval == ("not reached", "not reached")
    assert brk.interval_index == (4, 4) and brk.reached_fraction == 0.0
    assert brk.to_json()["label"] is None


def test_a_not_estimable_delta_never_passes_the_replayed_gpu_run():
    # The GPU run of issue 23: Δ_steer never estimable, Δ_mon HC estimable up to α=0.75,
    # present at 0.5 and vanished at 0.75, Δ_mon OR estimable only at α=1 (vanished). The old
    # rule (a missing Δ counts as below its margin) reported a break at α=1; nothing here can
    # place one.
    labels = ["0.0", "0.25", "0.5", "0.75", "1.0"]
    nan = np.nan
    mon_hc = _delta([0.03, -0.03, 0.1, 0.005, nan], [0.2, 0.17, 0.15, 0.03, nan],
                    ok=[True, True, True, True, False])  # fmt: skip
    mon_or = _delta([nan] * 4 + [0.0], [nan] * 4 + [0.03], ok=[False] * 4 + [True])
    never = _delta([nan] * 5, [nan] * 5, ok=[False] * 5)
    deltas = {
        "delta_mon/harmful_compliance": mon_hc,
        "delta_mon/over_refusal": mon_or,
        "delta_steer/harmful_compliance": never,
        "delta_steer/over_refusal": never,
    }
    brk = bp.find_break_point(labels, deltas, {"delta_mon": 0.05, "delta_steer": 0.05})
    assert brk.outcome == "insufficient data" and brk.index is None
    assert brk.status["delta_steer/over_refusal"] == ["undetermined"] * 5
    assert {t: v["outcome"] for t, v in brk.per_type.items()} == {
        "harmful_compliance": "insufficient data",
        "over_refusal": "insufficient data",
    }
    assert brk.reached_fraction == 0.0 and brk.interval[1] == "insufficient data"
    # Only Δ_mon HC required: it vanished at α=0.75 but is not estimable at α=1: still
    # insufficient data, never a break.
    brk = bp.find_break_point(labels, deltas, {"delta_mon": 0.05, "delta_steer": 0.05},
                              required=["delta_mon/harmful_compliance"])  # fmt: skip
    assert brk.outcome == "insufficient data"
    # Once the failures are shown to be gone at α=1 (rate upper bound below the floor), the
    # rule can decide: value vanished at α=0.75, before the failures went.
    rates = {"harmful_compliance": {"estimate": np.array([0.5, 0.4, 0.3, 0.2, 0.001]),
                                    "hi": np.array([0.6, 0.5, 0.4, 0.3, 0.004])}}  # fmt: skip
    margins = {"delta_mon": 0.05, "delta_steer": 0.05}
    brk = bp.find_break_point(labels, deltas, margins, failure_rates=rates, floor=0.01,
                              required=["delta_mon/harmful_compliance"])  # fmt: skip
    assert (brk.outcome, brk.label) == ("break", "0.75")
    assert brk.status["delta_mon/harmful_compliance"][-1] == "failures eliminated"


def test_failures_eliminated_first_when_the_policy_removes_failures_while_value_is_present():
    # Value at the first two points; then the policy removes every failure. A Δ of 0 with a
    # [0, 0] interval there must not be read as "emotion value vanished".
    est, hi = [0.2, 0.18, 0.0, 0.0], [0.26, 0.24, 0.0, 0.0]
    d = _delta(est, hi, ok=[True, True, False, False])
    rates = {"harmful_compliance": {"estimate": np.array([0.4, 0.3, 0.0, 0.0]),
                                    "hi": np.array([0.5, 0.4, 0.005, 0.005])}}  # fmt: skip
    brk = bp.find_break_point(LABELS, {"delta_steer/harmful_compliance": d}, {"delta_steer": 0.08},
                              failure_rates=rates, floor=0.01)  # fmt: skip
    assert (brk.outcome, brk.index, brk.label) == ("failures eliminated first", 2, "safety-1")
    assert brk.status["delta_steer/harmful_compliance"] == [
        "present",
        "present",
        "failures eliminated",
        "failures eliminated",
    ]
    assert brk.reached_fraction == 0.0 and brk.draw_outcomes["failures eliminated first"] == 1.0
    # Without the failure rates the same data cannot decide: insufficient data, not a break.
    brk = bp.find_break_point(LABELS, {"delta_steer/harmful_compliance": d}, {"delta_steer": 0.08})
    assert brk.outcome == "insufficient data"
    # The same numbers read as estimable would give a break at safety-1.
    wrong = bp.find_break_point(LABELS, {"delta_steer/x": _delta(est, hi)}, {"delta_steer": 0.08})
    assert wrong.index == 2 and wrong.outcome == "break"


def test_a_straddling_delta_where_the_rule_needs_it_is_insufficient_data():
    # Present, then straddling the margin (lo <= 0 <= margin <= hi), then vanished.
    d = {"estimate": np.array([0.2, 0.05, 0.0, 0.0]), "lo": np.array([0.1, -0.05, -0.02, -0.02]),
         "hi": np.array([0.3, 0.15, 0.02, 0.02]), "samples": np.zeros((4, 10)),
         "estimable": np.ones(4, bool)}  # fmt: skip
    brk = bp.find_break_point(LABELS, {"delta_mon/h": d}, {"delta_mon": 0.08})
    assert brk.status["delta_mon/h"] == ["present", "undetermined", "vanished", "vanished"]
    assert brk.outcome == "insufficient data"
    # An undetermined point before a present one does not matter: the break is after it.
    d["lo"][1], d["estimate"][2], d["lo"][2], d["hi"][2] = -0.05, 0.2, 0.1, 0.3
    brk = bp.find_break_point(LABELS, {"delta_mon/h": d}, {"delta_mon": 0.08})
    assert (brk.outcome, brk.label) == ("break", "safety-2")


def test_break_per_failure_type_and_across_types():
    margins = {"delta_mon": 0.02, "delta_steer/over_refusal": 0.05, "delta_steer": 0.08}
    mon = _delta([0.1, 0.0, 0.0, 0.0], [0.15, 0.01, 0.01, 0.01])
    steer_hc = _delta([0.1, 0.06, 0.0, 0.0], [0.12, 0.07, 0.03, 0.02])
    # Over-refusal: hi 0.06 < 0.08 but not < its own margin 0.05 at instruct, and lo > 0.
    steer_or = _delta([0.1, 0.03, 0.0, 0.0], [0.13, 0.06, 0.04, 0.03])
    steer_or["lo"] = np.array([0.07, 0.001, -0.04, -0.03])
    deltas = {"delta_mon/harmful_compliance": mon, "delta_steer/harmful_compliance": steer_hc,
              "delta_steer/over_refusal": steer_or}  # fmt: skip
    brk = bp.find_break_point(LABELS, deltas, margins)
    assert brk.margins == {"delta_mon/harmful_compliance": 0.02,
                           "delta_steer/harmful_compliance": 0.08,
                           "delta_steer/over_refusal": 0.05}  # fmt: skip
    assert brk.per_type["harmful_compliance"]["label"] == "instruct"  # Δ_steer HC 0.07 < 0.08
    assert brk.per_type["over_refusal"]["label"] == "safety-1"
    assert (brk.outcome, brk.label) == ("break", "safety-1")  # the later of the two
    # Over-refusal keeps value at the end: not reached overall, whatever the other type does.
    steer_or["lo"][3], steer_or["hi"][3], steer_or["estimate"][3] = 0.05, 0.2, 0.12
    brk = bp.find_break_point(LABELS, deltas, margins)
    assert brk.per_type["over_refusal"]["outcome"] == "not reached"
    assert brk.per_type["harmful_compliance"]["outcome"] == "break"
    assert brk.outcome == "not reached" and brk.index is None
    # Only the required Δs count.
    brk = bp.find_break_point(LABELS, deltas, margins, required=["delta_mon/harmful_compliance"])
    assert (brk.outcome, brk.label, list(brk.per_type)) == (
        "break",
        "instruct",
        ["harmful_compliance"],
    )
    with pytest.raises(KeyError, match="no margin"):
        bp.find_break_point(LABELS, {"delta_x/y": mon}, margins)
    with pytest.raises(KeyError, match="required"):
        bp.find_break_point(LABELS, deltas, margins, required=["delta_mon/over_refusal"])


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
    d["lo"] = est - np.array([0.05, 0.01, 0.03, 0.03])  # instruct: present (lo > 0)
    brk = bp.find_break_point(LABELS, {"delta_steer/h": d}, {"delta_steer": 0.08})
    assert brk.index == 2 and brk.label == "safety-1"  # hi 0.09 at instruct >= 0.08
    assert brk.interval == ("instruct", "safety-1") and brk.interval_index == (1, 2)
    assert brk.reached_fraction > 0.93
    assert sum(brk.draw_outcomes.values()) == pytest.approx(1.0)
    # Draws that keep value at the last point put "not reached" in the interval.
    samples[3] = 0.06 + rng.normal(0, 0.02, r)
    d = _delta(est, est + half, samples=samples)
    brk = bp.find_break_point(LABELS, {"delta_steer/h": d}, {"delta_steer": 0.08})
    assert brk.interval[1] == "not reached" and brk.interval_index[1] == 4
    assert 0.2 < brk.reached_fraction < 0.9
    # Estimability is resampled too: draws in which the last point is not estimable say
    # "insufficient data", never a break.
    d = _delta(est, est + half, samples=est[:, None] + rng.normal(0, 0.005, (4, r)))
    d["estimable_draws"] = np.ones((4, r), bool)
    d["estimable_draws"][3, : r // 2] = False
    brk = bp.find_break_point(LABELS, {"delta_steer/h": d}, {"delta_steer": 0.08})
    assert brk.outcome == "break"
    assert brk.draw_outcomes["insufficient data"] == pytest.approx(0.5)
    assert brk.interval[1] == "insufficient data" and brk.reached_fraction == pytest.approx(0.5)


@pytest.mark.parametrize("seed", range(20))
def test_break_point_never_before_a_point_with_value_or_missing_data(seed):
    rng = np.random.default_rng(seed)
    est = rng.normal(0.0, 0.03, size=6)
    hi = est + rng.uniform(0.005, 0.04, size=6)
    ok = rng.uniform(size=6) < 0.8
    d = _delta(np.where(ok, est, np.nan), np.where(ok, hi, np.nan), ok=ok, seed=seed)
    brk = bp.find_break_point(
        [str(i) for i in range(6)], {"delta_steer/h": d}, {"delta_steer": 0.03}
    )
    gone = ok & (hi < 0.03)
    if brk.outcome == "break":
        assert gone[brk.index :].all()  # every later point estimable and below the margin
        assert brk.index == 0 or not gone[brk.index - 1]
    elif brk.outcome == "not reached":
        assert ok[-1] and not gone[-1] and est[-1] - (hi[-1] - est[-1]) > 0
    else:
        assert brk.outcome == "insufficient data" and not gone.all()
    lo_i, hi_i = brk.interval_index
    assert 0 <= lo_i <= hi_i <= 7


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
