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


def _templated(directions, per_template, num_templates, template_part, noise, seed=0):
    """One concept: pair m of template t differs by directions + template_part * u_t (u_t a
    unit direction of its own) + noise. Returns (items [1, 2, M, L, D], template [1, M])."""
    rng = np.random.default_rng(seed)
    u = rng.normal(size=(num_templates, L, D))
    u /= np.linalg.norm(u, axis=-1, keepdims=True)
    template = np.repeat(np.arange(num_templates), per_template)
    rng.shuffle(template)
    content = rng.normal(size=(template.size, L, D))
    diff = directions[None] + template_part * u[template]
    items = np.stack([content + diff, content], axis=0)[None]
    items = items + noise * rng.normal(size=items.shape)
    return jnp.asarray(items, jnp.float32), template[None]


def test_template_ids_fall_back_to_one_template_per_pair():
    valid = np.ones((2, 2, 5), np.float32)
    valid[1, :, 4] = 0.0
    template = np.array([[7, 7, 3, -1, 3], [-1, -1, 2, 2, 9]])
    np.testing.assert_array_equal(
        st.template_ids(template, valid), [[0, 0, 1, 2, 1], [0, 1, 2, 2, -1]]
    )
    np.testing.assert_array_equal(st.template_ids(None, valid)[0], np.arange(5))
    assert not st.has_templates(None) and not st.has_templates(np.full((2, 5), -1))
    assert st.has_templates(template)


def test_template_split_keeps_templates_whole():
    template = np.tile(np.repeat(np.arange(7), 3), (2, 1))  # 7 templates x 3 pairs
    valid = jnp.ones((2, 2, 21))
    a, b = st.template_split_weights(jax.random.key(0), valid, template, 50)
    a, b = np.asarray(a), np.asarray(b)
    assert np.all(a * b == 0)
    np.testing.assert_array_equal(a.sum(-1), 9)  # floor(7 / 2) = 3 templates of 3 pairs
    np.testing.assert_array_equal(b.sum(-1), 9)
    per_template = a[..., 0, :].reshape(50, 2, 7, 3)
    assert np.all(per_template.min(-1) == per_template.max(-1))  # a template is in or out
    train, held = st.held_out_weights(jax.random.key(1), valid, template, 20, holdout=0.3)
    train, held = np.asarray(train), np.asarray(held)
    assert np.all(train * held == 0)
    np.testing.assert_array_equal(held.sum(-1), 6)  # round(0.3 * 7) = 2 templates
    np.testing.assert_array_equal(train.sum(-1), 15)
    counts = np.asarray(st.cluster_counts(jax.random.key(2), jnp.asarray([[1, 1, 0, 1]]), 30))
    np.testing.assert_array_equal(counts.sum(-1), 3)
    assert np.all(counts[..., 2] == 0) and counts.max() > 1


def test_split_half_by_template_alike_templates_agree():
    v = np.random.default_rng(7).normal(size=(L, D))
    v /= np.linalg.norm(v, axis=-1, keepdims=True)
    items, template = _templated(v, per_template=6, num_templates=4, template_part=0.0, noise=0.02)
    valid = jnp.ones(items.shape[:3])
    sh = st.split_half_cosine(jax.random.key(0), items, valid, (True,), num=50, template=template)
    assert np.all(np.asarray(sh.estimate) > 0.99) and np.all(np.asarray(sh.lo) > 0.98)


def test_template_specific_directions_lower_template_stability_not_pair_stability():
    """Pairs that share a cue sentence share its direction: a split by pairs puts every
    template in both halves (cosine ~1), a split by templates does not."""
    v = np.random.default_rng(8).normal(size=(L, D))
    v /= np.linalg.norm(v, axis=-1, keepdims=True)
    items, template = _templated(v, per_template=8, num_templates=6, template_part=1.5, noise=0.05)
    valid, key = jnp.ones(items.shape[:3]), jax.random.key(0)
    by_pair = st.split_half_cosine(key, items, valid, (True,), num=100)
    by_template = st.split_half_cosine(key, items, valid, (True,), num=100, template=template)
    assert np.all(np.asarray(by_pair.estimate) > 0.95)
    assert np.all(np.asarray(by_template.estimate) < 0.8)
    assert np.all(np.asarray(by_template.hi) < np.asarray(by_pair.lo))
    held = st.held_out_template_cosine(key, items, valid, (True,), template, num=50)
    assert np.all(np.asarray(held["cosine"].estimate) < 0.8)
    # The same data with one shared direction: held-out templates agree and are separated.
    clean, _ = _templated(v, per_template=8, num_templates=6, template_part=0.0, noise=0.05)
    held = st.held_out_template_cosine(key, clean, valid, (True,), template, num=50)
    assert np.all(np.asarray(held["cosine"].estimate) > 0.95)
    np.testing.assert_allclose(held["accuracy"].estimate, 1.0)
    # Unpaired: no pair accuracy.
    held = st.held_out_template_cosine(key, clean, valid, (False,), template, num=5)
    assert np.all(np.isnan(np.asarray(held["accuracy"].estimate)))


def test_intervals_contain_their_estimate_even_when_resamples_are_skewed():
    samples = jnp.concatenate([jnp.full((98,), 0.99), jnp.full((2,), -0.5)])[:, None]
    assert float(samples.mean()) < 0.975  # the mean lies below every percentile bound
    iv = st._split_interval(samples, 0.95)
    assert float(iv.lo[0]) <= float(iv.estimate[0]) <= float(iv.hi[0])
    iv = st._bias_corrected(jnp.array([0.99]), samples, 0.95)
    assert float(iv.lo[0]) <= float(iv.estimate[0]) <= float(iv.hi[0])
    # And on every metric of a noisy report.
    items, _ = _items(2.0)
    g = 3
    domain = jnp.asarray(np.tile(np.arange(M) % g, (C, 1)))
    template = np.tile(np.arange(M) % 10, (C, 1))
    cap = Captured.from_items(
        items, domain=domain, domain_names=("a", "b", "c"), template=jnp.asarray(template),
        concepts=("e", "k1", "k2"),
    )  # fmt: skip
    rep = st.stability_report(jax.random.key(0), cap, ["e"], ["k1", "k2"], num=40)
    assert rep["unit"] == "template"
    np.testing.assert_array_equal(rep["num_templates"], [10, 10, 10])
    for key in ("split_half", "split_half_pairs", "held_out", "cross_domain", "layer_cosine",
                "control_cosine"):  # fmt: skip
        iv = rep[key]
        est, lo, hi = (np.asarray(x) for x in iv)
        ok = np.isfinite(est)
        assert ok.any(), key
        assert np.all((lo[ok] <= est[ok] + 1e-6) & (est[ok] <= hi[ok] + 1e-6)), key
    rows, crows = st.report_rows(rep)
    assert {"held_out", "held_out_lo", "split_half_pairs", "num_templates"} <= set(rows[0])
    assert len(rows) == C * L and len(crows) == 2 * L


def test_domain_mean_cosine_weights_distinct_domain_pairs_by_their_counts():
    rng = np.random.default_rng(9)
    v = jnp.asarray(rng.normal(size=(1, 3, L, D)), jnp.float32)
    cos = lambda g, h: np.asarray(st.cosine(v[0, g], v[0, h]))
    got = np.asarray(st._domain_mean_cosine(v, jnp.asarray([[2.0, 1.0, 1.0]])))[0]
    np.testing.assert_allclose(got, (2 * cos(0, 1) + 2 * cos(0, 2) + cos(1, 2)) / 5, rtol=1e-5)
    got = np.asarray(st._domain_mean_cosine(v, jnp.asarray([[1.0, 1.0, 0.0]])))[0]
    np.testing.assert_allclose(got, cos(0, 1), rtol=1e-5)
    assert np.all(np.isnan(np.asarray(st._domain_mean_cosine(v, jnp.asarray([[3.0, 0, 0]])))))
