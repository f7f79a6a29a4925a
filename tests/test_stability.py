"""Stability metrics of concept vectors (emojax.metrics.stability) on planted activations."""

from __future__ import annotations

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from emojax.extract import Captured  # noqa: E402
from emojax.metrics import stability as st  # noqa: E402

C, M, L, D = 3, 40, 2, 12


def _items(noise: float, seed: int = 0, directions=None):
    """items [C, 2, M, L, D]: pair m differs by directions[c] (unit, [C, L, D]) plus noise."""
    rng = np.random.default_rng(seed)
    if directions is None:
        directions = rng.normal(size=(C, L, D))
        directions /= np.linalg.norm(directions, axis=-1, keepdims=True)
    content = rng.normal(size=(C, M, L, D))
    items = np.stack([content + directions[:, None], content], axis=1)
    items = items + noise * rng.normal(size=items.shape)
    return jnp.asarray(items, jnp.float32), directions


def test_split_half_weights_are_disjoint_equal_halves_keeping_pairs():
    valid = np.ones((C, 2, M), np.float32)
    valid[1, :, 30:] = 0.0
    valid[2, 1, 35:] = 0.0  # unpaired concept with unequal sides
    a, b = st.split_half_weights(jax.random.key(0), jnp.asarray(valid), (True, True, False), 7)
    a, b = np.asarray(a), np.asarray(b)
    assert np.all(a * b == 0) and np.all((a + b) <= valid)
    np.testing.assert_array_equal(a.sum(-1), b.sum(-1))
    np.testing.assert_array_equal(a[0, :, 0].sum(-1), [20, 15, 20])
    np.testing.assert_array_equal(a[0, :, 1].sum(-1), [20, 15, 17])
    np.testing.assert_array_equal(a[:, :2, 0], a[:, :2, 1])  # paired: same half both sides
    assert np.any(a[:, 2, 0, :35] != a[:, 2, 1, :35])


def test_bootstrap_weights_resample_valid_items():
    valid = np.ones((C, 2, M), np.float32)
    valid[1, :, 25:] = 0.0
    w = np.asarray(
        st.bootstrap_item_weights(jax.random.key(1), jnp.asarray(valid), (True, True, False), 9)
    )
    np.testing.assert_array_equal(w.sum(-1), np.broadcast_to(valid.sum(-1), (9, C, 2)))
    assert np.all(w[:, 1, :, 25:] == 0)
    np.testing.assert_array_equal(w[:, 0, 0], w[:, 0, 1])


def test_split_half_stability_falls_as_noise_rises():
    valid = jnp.ones((C, 2, M))
    means = []
    for noise in (0.05, 1.0, 4.0):
        items, _ = _items(noise)
        sh = st.split_half_cosine(jax.random.key(0), items, valid, (True,) * C, num=100)
        assert np.all(np.asarray(sh.lo) <= np.asarray(sh.hi))
        means.append(np.asarray(sh.estimate))
    assert np.all(means[0] > 0.99)  # noise 0.05: halves agree
    assert np.all(means[0] > means[1]) and np.all(means[1] > means[2])


def test_layer_and_control_cosines():
    rng = np.random.default_rng(3)
    v = rng.normal(size=(C, L, D))
    v /= np.linalg.norm(v, axis=-1, keepdims=True)
    # Concept 0 ("emotion") = cos 60 deg along concept 1 ("control") + an orthogonal part.
    ortho = v[2] - np.sum(v[2] * v[1], -1, keepdims=True) * v[1]
    ortho /= np.linalg.norm(ortho, axis=-1, keepdims=True)
    v[0] = 0.5 * v[1] + np.sqrt(0.75) * ortho
    items, _ = _items(0.05, directions=v)
    valid, paired = jnp.ones((C, 2, M)), (True,) * C
    cc = st.control_cosines(jax.random.key(0), items, valid, paired, [0], [1, 2], num=50)
    np.testing.assert_allclose(np.asarray(cc.estimate)[0, 0], 0.5, atol=0.03)
    assert np.asarray(cc.estimate).shape == (1, 2, L)
    lc = st.layer_cosine(jax.random.key(0), items, valid, paired, num=50)
    est = np.asarray(lc.estimate)
    np.testing.assert_allclose(np.diagonal(est, axis1=1, axis2=2), 1.0, atol=1e-5)
    np.testing.assert_allclose(est, np.swapaxes(est, 1, 2), atol=1e-6)
    np.testing.assert_allclose(est[:, 0, 1], np.sum(v[:, 0] * v[:, 1], -1), atol=0.05)


def test_cross_domain_cosine_separates_shared_from_domain_specific():
    rng = np.random.default_rng(4)
    g = 4
    domain = np.tile(np.arange(M) % g, (C, 1))
    per_domain = rng.normal(size=(g, L, D))
    per_domain /= np.linalg.norm(per_domain, axis=-1, keepdims=True)
    items, _ = _items(0.05)
    specific = np.asarray(items).copy()
    specific[1, 0] = specific[1, 1] + per_domain[domain[1]]  # concept 1: a vector per domain
    valid = jnp.ones((C, 2, M))
    cd = st.cross_domain_cosine(
        jax.random.key(0), jnp.asarray(specific), valid, (True,) * C, jnp.asarray(domain), g, num=50
    )
    est = np.asarray(cd.estimate)
    assert np.all(est[0] > 0.95) and np.all(np.abs(est[1]) < 0.5)
    none = st.cross_domain_cosine(
        jax.random.key(0), items, valid, (True,) * C, jnp.full((C, M), -1), g, num=5
    )
    assert np.all(np.isnan(np.asarray(none.estimate)))


def test_cross_model_cosine_and_projection_correlation():
    items, _ = _items(0.3)
    valid, paired = jnp.ones((C, 2, M)), (True,) * C
    same = st.cross_model_cosine(jax.random.key(0), items, 2.0 * items, valid, paired, num=20)
    np.testing.assert_allclose(same.estimate, 1.0, atol=1e-5)
    # A different architecture: an unrelated basis (random rotation). Cosine is meaningless,
    # but the projections of the same prompts on each model's own vector agree.
    q, _ = np.linalg.qr(np.random.default_rng(5).normal(size=(D, D)))
    rotated = items @ jnp.asarray(q, jnp.float32)
    diff = st.cross_model_cosine(jax.random.key(0), items, rotated, valid, paired, num=20)
    assert np.all(np.abs(np.asarray(diff.estimate)) < 0.9)
    # Different depth and width: 2 layers of width 12 vs 3 layers of width 16 (zero-padded).
    wide = jnp.concatenate([rotated, jnp.zeros((*rotated.shape[:-1], 4))], axis=-1)
    wide = jnp.concatenate([wide[..., :1, :], wide], axis=-2)  # site 0 duplicated
    rep = st.cross_model_report(
        jax.random.key(0), Captured.from_items(items), Captured.from_items(wide), num=50
    )
    assert rep["cosine"] is None
    np.testing.assert_array_equal(rep["layers_b"], [0, 2])
    np.testing.assert_allclose(rep["proj_corr"].estimate, 1.0, atol=1e-5)
    np.testing.assert_array_equal(st.matched_layers(4, 8), [0, 2, 5, 7])
