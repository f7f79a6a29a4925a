"""Break-point logic, the weight dial and the policy-dominance index."""

import dataclasses

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


def test_break_index_needs_a_persistent_vanishing():
    lo = np.array([0.05, -0.01, 0.02, -0.01, -0.02])
    hi = np.array([0.20, 0.005, 0.008, 0.004, 0.003])
    # Point 2's interval excludes 0, so the break cannot be at or before it.
    assert bp.break_index(lo, hi, lo, hi) == 3
    assert bp.first_crossing(hi, hi) == 1
    assert bp.break_index(lo, hi + 1, lo, hi) is None


@pytest.mark.parametrize("seed", range(20))
def test_break_point_never_before_a_significant_point(seed):
    rng = np.random.default_rng(seed)
    est = rng.normal(0.0, 0.02, size=(2, 6))
    half = rng.uniform(0.001, 0.02, size=(2, 6))
    lo, hi = est - half, est + half
    idx = bp.break_index(lo[0], hi[0], lo[1], hi[1])
    if idx is not None:
        assert not np.any(lo[:, idx:] > 0)
        assert np.all(hi[:, idx:] < 0.01)


def test_break_samples_and_interval():
    labels = ["a", "b", "c", "d"]
    r = 200
    rng = np.random.default_rng(0)
    centre = np.array([0.2, 0.1, -0.05, -0.05])[:, None]
    samples = centre + rng.normal(0, 0.005, size=(4, r))
    mon = {"lo": np.percentile(samples, 2.5, 1), "hi": np.percentile(samples, 97.5, 1),
           "samples": samples}  # fmt: skip
    result = bp.find_break_point(labels, mon, mon)
    assert result.index == 2 and result.label == "c"
    assert result.interval == (2.0, 2.0)
    assert result.reached_fraction == 1.0
    never = {k: v + 1.0 for k, v in mon.items()}
    assert bp.find_break_point(labels, never, mon).label == "not reached"
    assert bp.find_break_point(labels, never, mon).reached_fraction == 0.0


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
