"""Tests for emojax.stats: exact rank AUROC, TPR at fixed FPR, calibration and the bootstrap."""

from __future__ import annotations

import fractions

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from sklearn.metrics import roc_auc_score

from emojax import stats


def _exact_auroc(scores: np.ndarray, labels: np.ndarray) -> fractions.Fraction:
    """Mann-Whitney pair count as an exact fraction (ties count 1/2)."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    twice = sum(2 * int(np.sum(p > neg)) + int(np.sum(p == neg)) for p in pos)
    return fractions.Fraction(twice, 2 * len(pos) * len(neg))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_exact_on_ties(seed: int) -> None:
    rs = np.random.default_rng(seed)
    scores = rs.integers(0, 6, size=257).astype(np.float32)  # heavy ties
    labels = (rs.uniform(size=257) < 0.3).astype(np.int32)
    got = np.float32(stats.auroc(scores, labels))
    exact = _exact_auroc(scores, labels)
    assert got == np.float32(float(exact))
    assert got == np.float32(roc_auc_score(labels, scores))


def test_auroc_weights_equal_repetition_and_vmap() -> None:
    rs = np.random.default_rng(3)
    scores = rs.integers(0, 10, size=60).astype(np.float32)
    labels = rs.integers(0, 2, size=60)
    counts = rs.integers(0, 4, size=60)
    weighted = stats.auroc(scores, labels, counts.astype(np.float32))
    repeated = stats.auroc(np.repeat(scores, counts), np.repeat(labels, counts))
    assert float(weighted) == float(repeated)
    batch = rs.normal(size=(5, 60)).astype(np.float32)
    vmapped = jax.jit(jax.vmap(lambda s: stats.auroc(s, labels)))(batch)
    np.testing.assert_allclose(vmapped, [roc_auc_score(labels, s) for s in batch], atol=1e-6)
    assert np.isnan(stats.auroc(scores, np.zeros(60)))


def _tpr_reference(scores: np.ndarray, labels: np.ndarray, fpr: float) -> float:
    """Best TPR over all thresholds (flag score > t) with FPR <= fpr, by brute force."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    best = 0.0
    for t in np.concatenate([scores, [-np.inf]]):
        if np.mean(neg > t) <= fpr:
            best = max(best, float(np.mean(pos > t)))
    return best


@pytest.mark.parametrize("fpr", [0.0, 0.01, 0.1, 0.5])
def test_tpr_at_fpr_matches_brute_force(fpr: float) -> None:
    rs = np.random.default_rng(4)
    labels = rs.integers(0, 2, size=300)
    scores = np.round(rs.normal(size=300) + labels, 1).astype(np.float32)  # with ties
    got = float(stats.tpr_at_fpr(scores, labels, fpr))
    assert got == pytest.approx(_tpr_reference(scores, labels, fpr), abs=1e-6)


def test_calibration() -> None:
    rs = np.random.default_rng(5)
    probs = rs.uniform(size=500).astype(np.float32)
    labels = (rs.uniform(size=500) < probs).astype(np.float32)
    assert float(stats.brier_score(probs, labels)) == pytest.approx(
        np.mean((probs - labels) ** 2), rel=1e-5
    )
    bins = np.minimum((probs * 10).astype(int), 9)
    ece = sum(
        np.sum(bins == b) / 500 * abs(probs[bins == b].mean() - labels[bins == b].mean())
        for b in range(10)
        if np.any(bins == b)
    )
    assert float(stats.expected_calibration_error(probs, labels)) == pytest.approx(ece, abs=1e-5)


def test_chi2_sf() -> None:
    x = np.array([0.0, 0.5, 3.84, 10.0, 30.0])
    for df in (1, 3, 7):
        np.testing.assert_allclose(stats.chi2_sf(x, df), scipy.stats.chi2.sf(x, df), rtol=1e-4)


def test_bootstrap_helpers() -> None:
    rng = jax.random.key(0)
    idx = stats.bootstrap_indices(rng, 17, 40)
    assert idx.shape == (40, 17) and int(idx.min()) >= 0 and int(idx.max()) < 17
    w = stats.bootstrap_weights(rng, 17, 40)
    np.testing.assert_array_equal(w.sum(1), np.full(40, 17.0))
    samples = np.random.default_rng(0).normal(size=(1000, 3))
    lo, hi = stats.percentile_ci(samples, 0.9)
    np.testing.assert_allclose(lo, np.quantile(samples, 0.05, axis=0), rtol=1e-5)
    np.testing.assert_allclose(hi, np.quantile(samples, 0.95, axis=0), rtol=1e-5)


def test_paired_bootstrap() -> None:
    rs = np.random.default_rng(6)
    a = rs.normal(size=400).astype(np.float32)
    b = a + 0.5 + 0.1 * rs.normal(size=400).astype(np.float32)
    diff = lambda x, y: jnp.mean(y) - jnp.mean(x)
    iv = jax.jit(lambda r: stats.paired_bootstrap(r, a, b, diff, num=500))(jax.random.key(1))
    assert float(iv.estimate) == pytest.approx(float(np.mean(b) - np.mean(a)), abs=1e-5)
    assert 0.48 < float(iv.lo) < float(iv.estimate) < float(iv.hi) < 0.52  # pairing: narrow
    same = stats.paired_bootstrap(jax.random.key(2), a, a, diff, num=100)
    assert bool(same.covers(0.0)) and float(same.hi - same.lo) == 0.0
    d = iv.to_dict()
    assert set(d) == {"estimate", "lo", "hi"} and isinstance(d["lo"], float)
    assert bool(iv.excludes(0.0))


def test_request_draws_are_a_cluster_bootstrap():
    u, r = 7, 4000
    draws = stats.request_draws(u, r, seed=0)
    assert draws.shape == (r, u) and draws.dtype.kind == "i"
    np.testing.assert_array_equal(draws.sum(1), np.full(r, u))
    np.testing.assert_array_equal(draws, stats.request_draws(u, r, seed=0))  # seeded
    # Multinomial(U, 1/U) margins: mean 1, variance 1 - 1/U.
    assert draws.mean() == pytest.approx(1.0, abs=0.02)
    assert draws.var(0).mean() == pytest.approx(1 - 1 / u, abs=0.05)


def test_request_weighted_statistic_equals_reference_loop():
    """Weighted means with request multiplicities = means over explicitly copied requests."""
    rs = np.random.default_rng(1)
    u = 9
    request = rs.integers(0, u, size=40)  # unequal cluster sizes
    x = rs.normal(size=40)
    draws = stats.request_draws(u, 25, seed=3)
    w = draws[:, request]  # [R, N] prompt weights
    vectorised = (w * x).sum(1) / w.sum(1)
    for row, got in zip(draws, vectorised, strict=True):
        copies = [x[request == k] for k in range(u) for _ in range(row[k])]
        assert got == pytest.approx(np.concatenate(copies).mean(), abs=1e-12)


def test_grouped_folds_never_split_a_request():
    request = np.repeat(np.arange(23), 4)  # 23 requests x 4 cues
    folds = stats.grouped_folds(23, 5, seed=0)
    sizes = np.bincount(folds, minlength=5)
    assert sizes.max() - sizes.min() <= 1 and sizes.sum() == 23
    per_prompt = folds[request]
    for k in range(23):
        assert len(set(per_prompt[request == k])) == 1
    assert not np.array_equal(folds, stats.grouped_folds(23, 5, seed=1))
    np.testing.assert_array_equal(folds, stats.grouped_folds(23, 5, seed=0))
    with pytest.raises(ValueError):
        stats.grouped_folds(3, 5, seed=0)


def test_centred_interval_contains_its_estimate():
    rs = np.random.default_rng(2)
    est = rs.normal(size=(3, 4))
    samples = est[..., None] + 2.0 + rs.exponential(size=(3, 4, 500))  # draws far off the estimate
    lo, hi = stats.centred_interval(est, samples)
    assert lo.shape == (3, 4) and np.all((lo <= est) & (est <= hi))
    plain = np.quantile(samples, [0.025, 0.975], axis=-1)
    assert np.all(plain[0] > est)  # a plain percentile interval would miss the estimate
    np.testing.assert_allclose(hi - lo, plain[1] - plain[0])  # same width (and skew)
    med = np.median(samples, -1)
    np.testing.assert_allclose(lo, est + plain[0] - med)
    # Vectorised over leading axes = one row at a time; NaN draws are ignored.
    row = stats.centred_interval(est[1, 2], samples[1, 2])
    assert (float(row[0]), float(row[1])) == pytest.approx((lo[1, 2], hi[1, 2]))
    with_nan = np.concatenate([samples[1, 2], np.full(50, np.nan)])
    assert stats.centred_interval(est[1, 2], with_nan)[1] == pytest.approx(hi[1, 2])
    lo_n, hi_n = stats.centred_interval(np.array([0.0, np.nan]), np.full((2, 3), np.nan))
    assert np.isnan(lo_n).all() and np.isnan(hi_n).all()
