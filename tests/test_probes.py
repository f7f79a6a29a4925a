"""Tests for emojax.probes: agreement with scikit-learn, and the behaviour of delta_mon."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from emojax import probes, stats


def _data(seed: int, n: int, p: int) -> tuple[np.ndarray, np.ndarray]:
    rs = np.random.default_rng(seed)
    X = rs.normal(size=(n, p)).astype(np.float32) * rs.uniform(0.5, 2.0, size=p)
    logit = X @ rs.normal(size=p) * 0.7 + 0.3
    y = (rs.uniform(size=n) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    return X.astype(np.float32), y


def _sklearn(X, y, l2, sample_weight=None) -> LogisticRegression:
    n_eff = len(y) if sample_weight is None else sample_weight.sum()
    clf = LogisticRegression(C=1.0 / (l2 * n_eff), tol=1e-10, max_iter=10_000)
    return clf.fit(X, y, sample_weight=sample_weight)


def test_fit_logistic_matches_sklearn() -> None:
    X, y = _data(0, 150, 6)
    w = np.random.default_rng(1).integers(0, 3, size=150).astype(np.float32)
    fit = jax.jit(jax.vmap(probes.fit_logistic, (None, None, 0, None)))
    for weights in (None, w):
        got = fit(X, y, jnp.array([1e-3, 1e-1]), weights)
        for i, l2 in enumerate((1e-3, 1e-1)):
            ref = _sklearn(X, y, l2, weights)
            np.testing.assert_allclose(got.weights[i], ref.coef_[0], atol=1e-3, rtol=2e-3)
            assert float(got.bias[i]) == pytest.approx(ref.intercept_[0], abs=1e-3)
    # A masked column gets weight 0 and leaves the others as if it were absent.
    masked = probes.fit_logistic(X, y, 1e-2, mask=jnp.array([1, 1, 1, 1, 1, 0.0]))
    assert float(masked.weights[5]) == 0.0
    np.testing.assert_allclose(masked.weights[:5], _sklearn(X[:, :5], y, 1e-2).coef_[0], atol=2e-4)


def test_fit_logistic_wide_matches_sklearn() -> None:
    X, y = _data(2, 40, 120)  # P > N: solved in the row space of X
    got = probes.fit_logistic(X, y, 0.05)
    ref = _sklearn(X, y, 0.05)
    np.testing.assert_allclose(got.weights, ref.coef_[0], atol=2e-4)
    logits = probes.predict_logits(got, X)
    np.testing.assert_allclose(logits, ref.decision_function(X), rtol=2e-3, atol=2e-3)


def _nested_cv_sklearn(X, y, folds, l2_grid):
    """Reference: the nested CV of probes.cross_validate, one sklearn fit at a time."""
    k = folds.max() + 1
    oof, chosen = np.zeros(len(y)), []
    for outer in range(k):
        losses = []
        for l2 in l2_grid:
            nll, count = 0.0, 0
            for inner in range(k):
                if inner == outer:
                    continue
                tr = (folds != outer) & (folds != inner)
                va = folds == inner
                z = _sklearn(X[tr], y[tr], l2).decision_function(X[va])
                nll += np.sum(np.logaddexp(0, z) - y[va] * z)
                count += va.sum()
            losses.append(nll / count)
        best = l2_grid[int(np.argmin(losses))]
        chosen.append(best)
        tr = folds != outer
        oof[~tr] = _sklearn(X[tr], y[tr], best).decision_function(X[~tr])
    return oof, np.array(chosen)


def test_nested_cross_validation_matches_sklearn() -> None:
    X, y = _data(3, 160, 5)
    folds = np.asarray(probes.stratified_folds(jax.random.key(0), y, 4))
    assert np.ptp(np.bincount(folds)) <= 2 and np.ptp(np.bincount(folds[y == 1])) <= 1
    l2_grid = np.array([1e-3, 3e-2, 1.0], np.float32)
    cv = jax.jit(probes.cross_validate, static_argnames=("num_folds",))(
        X[None], jnp.ones((1, 5)), y, folds, l2_grid, num_folds=4
    )
    oof_ref, chosen_ref = _nested_cv_sklearn(X, y, folds, l2_grid)
    np.testing.assert_allclose(cv.chosen_l2[0], chosen_ref)
    np.testing.assert_allclose(cv.oof_logits[0], oof_ref, atol=2e-3)
    for k in range(4):  # fold-wise and pooled out-of-fold AUROC
        f = folds == k
        got = float(stats.auroc(cv.oof_logits[0][f], y[f]))
        assert got == pytest.approx(roc_auc_score(y[f], oof_ref[f]), abs=0.005)
    assert float(stats.auroc(cv.oof_logits[0], y)) == pytest.approx(
        roc_auc_score(y, oof_ref), abs=0.005
    )
    # The all-prompt fit behind the likelihood-ratio test is maximum likelihood.
    ref = LogisticRegression(C=np.inf, tol=1e-10, max_iter=10_000).fit(X, y)
    z = ref.decision_function(X)
    deviance = 2 * np.sum(np.logaddexp(0, z) - y * z)
    assert float(cv.full_deviance[0]) == pytest.approx(deviance, rel=1e-3)
    # The standalone likelihood-ratio test: deviance difference of nested models.
    small = LogisticRegression(C=np.inf, tol=1e-10, max_iter=10_000).fit(X[:, :3], y)
    z_small = small.decision_function(X[:, :3])
    ref_stat = 2 * np.sum(np.logaddexp(0, z_small) - y * z_small) - deviance
    stat, df, p = probes.likelihood_ratio_test(X[:, :3], X, y)
    assert float(stat) == pytest.approx(ref_stat, rel=1e-2, abs=1e-2) and float(df) == 2.0
    assert float(p) == pytest.approx(float(stats.chi2_sf(ref_stat, 2)), abs=1e-3)


def _synthetic_monitor(seed: jax.Array, signal: jax.Array) -> probes.MonitorArrays:
    """Controls carry signal; the one 'emotion' column carries `signal` extra (or none)."""
    n = 120
    k1, k2, k3, k4 = jax.random.split(jax.random.key(seed), 4)
    controls = jax.random.normal(k1, (n, 4))
    emotion = jax.random.normal(k2, (n, 1))
    logit = controls @ jnp.array([1.0, -0.5, 0.5, 0.0]) + signal * emotion[:, 0]
    y = (jax.random.uniform(k3, (n,)) < jax.nn.sigmoid(logit)).astype(jnp.float32)
    x = jnp.stack([jnp.pad(controls, ((0, 0), (0, 1))), jnp.concatenate([controls, emotion], 1)])
    mask = jnp.array([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1.0]])
    return probes.monitor_arrays.__wrapped__(
        x[:, None], mask, y, k4, jnp.array([1e-2, 1.0]), num_folds=3, num_bootstrap=200,
        num_refit_bootstrap=20, num_steps=8, batch_size=2,
    )  # fmt: skip


def test_delta_mon_null_coverage_and_planted_signal() -> None:
    num_null, num_signal = 100, 10
    seeds = jnp.arange(num_null + num_signal)
    signal = jnp.concatenate([jnp.zeros(num_null), jnp.full(num_signal, 2.0)])
    out = jax.jit(jax.vmap(_synthetic_monitor))(seeds, signal)
    delta = jax.tree.map(lambda x: np.asarray(x)[:, 0], out.delta_mon)  # layer 0
    covers = np.asarray(stats.Interval(*delta).covers(0.0))
    assert covers[:num_null].mean() >= 0.9
    assert not covers[num_null:].any() and (delta.lo[num_null:] > 0).all()
    p = np.asarray(out.lrt_p)[:, 0]
    assert (p[:num_null] < 0.05).mean() <= 0.15 and (p[num_null:] < 1e-3).all()
    assert np.asarray(out.lrt_df)[0] == 1.0
    auroc = np.asarray(out.auroc.estimate)[:, :, 0]  # [seed, set]
    assert (auroc[num_null:, 1] > auroc[num_null:, 0]).all()
    assert np.asarray(out.oof_logits).shape == (num_null + num_signal, 2, 1, 120)
    assert np.asarray(out.delta_mon_samples).shape == (num_null + num_signal, 1, 20)
    for field in ("tpr_at_fpr", "ece", "brier", "log_loss"):
        assert np.isfinite(np.asarray(getattr(out, field))).all()
    # Tables of one data set.
    result = probes.MonitorResult(
        ("controls", "controls+emotion"), jax.tree.map(lambda x: x[0], out)
    )
    rows = result.layer_rows()
    assert len(rows) == 1 and rows[0]["lrt_df"] == 1.0
    assert rows[0]["delta_mon_lo"] <= rows[0]["delta_mon"] <= rows[0]["delta_mon_hi"]
    assert rows[0]["delta_mon_refit_lo"] == rows[0]["delta_mon_lo"]
    assert np.isfinite(rows[0]["delta_mon_oof_lo"]) and result.best_layer() == 0


def test_feature_sets_and_monitor_tables() -> None:
    rs = np.random.default_rng(7)
    n, num_layers, d = 90, 2, 16
    acts = rs.normal(size=(n, num_layers, d)).astype(np.float32)
    names = (*probes.CONTROLS, *probes.EMOTIONS)
    directions = {k: rs.normal(size=(num_layers, d)).astype(np.float32) for k in names}
    policy = rs.normal(size=n).astype(np.float32)
    fs = probes.build_feature_sets(acts, directions, policy, residual_dims=8)
    assert fs.names == probes.FEATURE_SET_NAMES
    assert fs.features.shape == (3, num_layers, n, 9)
    np.testing.assert_array_equal(fs.mask.sum(1), [4, 7, 9])
    assert fs.columns[1] == (*probes.CONTROLS, probes.POLICY_LOGIT, *probes.EMOTIONS)
    unit = directions["concern"][1] / np.linalg.norm(directions["concern"][1])
    proj = acts[:, 1] @ unit
    np.testing.assert_allclose(
        fs.features[1, 1, :, 4], (proj - proj.mean()) / proj.std(), atol=1e-4
    )
    # A column that is constant up to float round-off carries nothing (not z-scored noise).
    flat = {k: np.full((n, num_layers), 3.0, np.float32) for k in names}
    flat["caution"] = flat["caution"] * (1 + 1e-7 * rs.normal(size=(n, num_layers)))
    fs_flat = probes.feature_sets_from_projections(flat, policy, residual=None)
    np.testing.assert_array_equal(fs_flat.features[1, :, :, :3], 0.0)
    with pytest.raises(KeyError, match="self_doubt"):
        probes.build_feature_sets(acts, {k: directions[k] for k in names[:-1]}, policy)


def test_finetune_shift() -> None:
    rs = np.random.default_rng(8)
    n, num_layers, d = 200, 3, 8
    base = rs.normal(size=(n, num_layers, d)).astype(np.float32)
    directions = {"concern": rs.normal(size=(num_layers, d)), "caution": np.eye(num_layers, d)}
    unit = directions["concern"] / np.linalg.norm(directions["concern"], axis=-1, keepdims=True)
    tuned = base + 0.3 * unit[None] + 0.05 * rs.normal(size=base.shape)
    shift = probes.finetune_shift(base, tuned, directions, jax.random.key(0), num=200)
    concern = shift["concern"]
    assert concern.estimate.shape == (num_layers,)
    assert np.all(np.asarray(concern.excludes(0.0)))
    np.testing.assert_allclose(concern.estimate, 0.3, atol=0.02)
    assert np.all(np.asarray(concern.hi - concern.lo) < 0.05)
    cos = np.einsum("ld,ld->l", unit, np.eye(num_layers, d))
    np.testing.assert_allclose(shift["caution"].estimate, 0.3 * cos, atol=0.02)


def test_bench_probes_small() -> None:
    out = probes.bench_probes(num_prompts=100, num_features=4, num_layers=2, num_folds=3)
    assert out["num_probes"] == 2 * 2 * 3 * 4
    assert out["max_auroc_diff"] < 0.005 and out["speedup"] > 0
