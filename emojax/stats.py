"""Small, general statistics in pure JAX: AUROC, TPR at a fixed FPR, calibration, bootstrap.

Every function is jittable and vmappable (shapes are static, no Python branching on values),
so a whole sweep of readouts can be bootstrapped inside one compiled program. Per-item
statistics take an optional ``weights`` array of non-negative item weights; bootstrap counts
(``bootstrap_weights``) are the usual weights, and a weight of 0 drops an item without
changing shapes.

Dimension letters: N items, M bootstrap resamples.

The request-level resampling tools at the end (``request_draws``, ``grouped_folds``,
``centred_interval``) are NumPy: a request shown under several cues is one cluster, so every
bootstrap draw and CV split moves whole requests (DESIGN.md §3).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


class Interval(NamedTuple):
    """A point estimate with a (percentile bootstrap) confidence interval.

    A NamedTuple, hence a pytree: it passes through ``jit``/``vmap`` and its fields may be arrays
    of any (matching) shape, e.g. one interval per layer.
    """

    estimate: Any
    lo: Any
    hi: Any

    def covers(self, value: float = 0.0) -> Any:
        """Whether ``value`` lies inside ``[lo, hi]`` (elementwise)."""
        return (self.lo <= value) & (value <= self.hi)

    def excludes(self, value: float = 0.0) -> Any:
        """Whether ``value`` lies outside ``[lo, hi]`` (elementwise)."""
        return (value < self.lo) | (self.hi < value)

    def to_dict(self) -> dict[str, Any]:
        """Plain ``{'estimate', 'lo', 'hi'}`` with NumPy values (floats for scalars)."""

        def plain(x: Any) -> Any:
            x = np.asarray(x)
            return x.item() if x.ndim == 0 else x.tolist()

        return {"estimate": plain(self.estimate), "lo": plain(self.lo), "hi": plain(self.hi)}


def _weights(labels: Array, weights: Array | None) -> Array:
    if weights is None:
        return jnp.ones(labels.shape, jnp.float32)
    return jnp.asarray(weights, jnp.float32)


def auroc(scores: Array, labels: Array, weights: Array | None = None) -> Array:
    """Area under the ROC curve, i.e. the Mann-Whitney probability P(s_pos > s_neg).

    Exact and rank based: every (positive, negative) pair counts 1 if the positive scores
    higher, 1/2 on a tie, 0 otherwise (the trapezoidal ROC area). With integer weights the
    numerator is a sum of half-integers, so the result is exact in float32 for < 2^23 pairs.

    Args:
      scores: [N] real scores, higher = more positive.
      labels: [N] bool or {0, 1}.
      weights: optional [N] non-negative item weights (e.g. bootstrap counts).

    Returns:
      Scalar float32 AUROC; NaN when one class has zero total weight.
    """
    scores = jnp.asarray(scores, jnp.float32)
    n = scores.shape[0]
    order = jnp.argsort(scores)
    s = scores[order]
    pos = jnp.asarray(labels).astype(bool)[order]
    w = _weights(pos, None if weights is None else jnp.asarray(weights)[order])
    w_neg = jnp.where(pos, 0.0, w)
    # cum_neg[k] = negative weight among the k lowest scores (cum_neg[0] = 0).
    cum_neg = jnp.concatenate([jnp.zeros(1, jnp.float32), jnp.cumsum(w_neg)])
    # Tie groups in sorted order: [first, last] index of the run of equal scores.
    idx = jnp.arange(n)
    differs = s[1:] != s[:-1]
    first = jax.lax.cummax(jnp.where(jnp.concatenate([jnp.ones(1, bool), differs]), idx, 0))
    last = jax.lax.cummin(
        jnp.where(jnp.concatenate([differs, jnp.ones(1, bool)]), idx, n), reverse=True
    )
    # Twice the pair count (below + at-or-below) keeps ties (1/2) integral until the division.
    twice_wins = jnp.sum(jnp.where(pos, w * (cum_neg[first] + cum_neg[last + 1]), 0.0))
    total_pos = jnp.sum(jnp.where(pos, w, 0.0))
    return twice_wins / (2.0 * total_pos * jnp.sum(w_neg))


def tpr_at_fpr(
    scores: Array, labels: Array, fpr: float = 0.01, weights: Array | None = None
) -> Array:
    """True-positive rate at the strictest threshold whose false-positive rate is <= ``fpr``.

    An item is flagged when its score is strictly above the threshold; the threshold is the
    lowest negative score that keeps the flagged negative weight <= ``fpr`` x total negative
    weight (ties at the threshold are not flagged, so the FPR bound always holds).

    Args:
      scores: [N] real scores.
      labels: [N] bool or {0, 1}.
      fpr: false-positive budget in [0, 1].
      weights: optional [N] item weights.

    Returns:
      Scalar float32 TPR in [0, 1].
    """
    scores = jnp.asarray(scores, jnp.float32)
    pos = jnp.asarray(labels).astype(bool)
    w = _weights(pos, weights)
    w_neg = jnp.where(pos, 0.0, w)
    # Negatives in descending order; positives sink to the end with zero weight.
    neg_scores = jnp.where(pos, -jnp.inf, scores)
    order = jnp.argsort(-neg_scores)
    cum = jnp.cumsum(w_neg[order])
    budget = fpr * jnp.sum(w_neg) * (1.0 + 1e-6)  # 1e-6: fpr * n_neg is often an integer.
    over = cum > budget
    first_over = jnp.argmax(over)
    threshold = jnp.where(jnp.any(over), neg_scores[order][first_over], -jnp.inf)
    w_pos = jnp.where(pos, w, 0.0)
    return jnp.sum(jnp.where(scores > threshold, w_pos, 0.0)) / jnp.sum(w_pos)


def brier_score(probs: Array, labels: Array, weights: Array | None = None) -> Array:
    """Weighted mean squared error of predicted probabilities."""
    y = jnp.asarray(labels, jnp.float32)
    w = _weights(y, weights)
    return jnp.sum(w * (jnp.asarray(probs, jnp.float32) - y) ** 2) / jnp.sum(w)


def expected_calibration_error(
    probs: Array, labels: Array, num_bins: int = 10, weights: Array | None = None
) -> Array:
    """ECE with equal-width probability bins: sum_b (W_b / W) |mean p_b - mean y_b|."""
    probs = jnp.asarray(probs, jnp.float32)
    y = jnp.asarray(labels, jnp.float32)
    w = _weights(y, weights)
    bins = jnp.clip((probs * num_bins).astype(jnp.int32), 0, num_bins - 1)
    onehot = jax.nn.one_hot(bins, num_bins, dtype=jnp.float32) * w[:, None]  # [N, bins]
    gap = jnp.abs(onehot.T @ probs - onehot.T @ y)  # per bin: W_b |mean p - mean y|
    return jnp.sum(gap) / jnp.sum(w)


def chi2_sf(x: Array, df: Array) -> Array:
    """Survival function P(X > x) of a chi-squared variable with ``df`` degrees of freedom."""
    x = jnp.maximum(jnp.asarray(x, jnp.float32), 0.0)
    return jax.scipy.special.gammaincc(jnp.asarray(df, jnp.float32) / 2.0, x / 2.0)


def bootstrap_indices(rng: Array, n: int, num: int) -> Array:
    """[num, n] int32 indices, each row a resample of ``range(n)`` with replacement."""
    return jax.random.randint(rng, (num, n), 0, n, dtype=jnp.int32)


def bootstrap_weights(rng: Array, n: int, num: int) -> Array:
    """[num, n] float32 resample counts (rows sum to n); the weights form of bootstrap_indices."""
    idx = bootstrap_indices(rng, n, num)
    return jax.vmap(lambda i: jnp.zeros(n, jnp.float32).at[i].add(1.0))(idx)


def percentile_ci(samples: Array, level: float = 0.95, axis: int = 0) -> tuple[Array, Array]:
    """Percentile interval ``(lo, hi)`` covering ``level`` of ``samples`` along ``axis``."""
    alpha = (1.0 - level) / 2.0
    q = jnp.quantile(jnp.asarray(samples), jnp.array([alpha, 1.0 - alpha]), axis=axis)
    return q[0], q[1]


def bootstrap(
    rng: Array,
    per_item: Any,
    stat_fn: Callable[[Any], Array],
    num: int = 1000,
    level: float = 0.95,
) -> Interval:
    """Percentile bootstrap over items of ``stat_fn(per_item)``.

    Args:
      rng: PRNG key.
      per_item: array or pytree of arrays sharing a leading item axis [N, ...].
      stat_fn: maps a (resampled) ``per_item`` to a statistic (any array shape).
      num: number of resamples (static).
      level: interval coverage.

    Returns:
      Interval with ``estimate = stat_fn(per_item)`` and the percentile bounds.
    """
    per_item = jax.tree.map(jnp.asarray, per_item)
    n = jax.tree.leaves(per_item)[0].shape[0]
    idx = bootstrap_indices(rng, n, num)
    samples = jax.vmap(lambda i: stat_fn(jax.tree.map(lambda x: x[i], per_item)))(idx)
    lo, hi = percentile_ci(samples, level)
    return Interval(stat_fn(per_item), lo, hi)


def paired_bootstrap(
    rng: Array,
    per_item_a: Any,
    per_item_b: Any,
    stat_fn: Callable[[Any, Any], Array],
    num: int = 1000,
    level: float = 0.95,
) -> Interval:
    """Paired percentile bootstrap: both arms are resampled with the *same* item indices.

    Typical use is a difference of a statistic between two systems scored on the same items,
    e.g. ``stat_fn = lambda a, b: auroc(*a) - auroc(*b)`` with ``a = (scores_a, labels)``.

    Args:
      rng: PRNG key.
      per_item_a: array or pytree with leading item axis [N, ...].
      per_item_b: array or pytree with the same leading item axis [N, ...].
      stat_fn: ``stat_fn(a, b) -> statistic`` (any array shape).
      num: number of resamples (static).
      level: interval coverage.

    Returns:
      Interval(estimate, lo, hi), estimate on the full sample.
    """
    return bootstrap(rng, (per_item_a, per_item_b), lambda ab: stat_fn(*ab), num, level)


def require_finite(x, what: str):
    """Returns `x` as a NumPy array, or raises FloatingPointError naming `what` and where.

    Activations, features or readouts with NaN/inf (a diverged checkpoint, a bf16 overflow)
    would otherwise flow silently into means, probes and bootstrap intervals.
    """
    arr = np.asarray(x)
    bad = ~np.isfinite(arr)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise FloatingPointError(
            f"{what}: {int(bad.sum())} of {arr.size} values are NaN or infinite "
            f"(first at index {first}); check the checkpoint and dtype"
        )
    return arr


# ---------------------------------------------------------------------------------------------
# Request-level (cluster) resampling, in NumPy. A request shown under several cues or templates
# is one cluster: every bootstrap draw and every CV split moves whole requests.
# Dimension letters: U requests, R bootstrap draws, K folds.


def request_draws(num_requests: int, num: int, seed: int) -> np.ndarray:
    """Multiplicities of a cluster (request) bootstrap.

    Row r is a resample with replacement of the U requests, stored as counts: request u
    appears ``draws[r, u]`` times in draw r (a multinomial(U, 1/U) vector, rows sum to U).
    One matrix is meant to be shared by every arm, every statistic and every axis point, so
    differences between them are paired. A prompt's weight in draw r is
    ``draws[r, request[prompt]]``: all cue variants of a request move together.

    Args:
      num_requests: U, the number of requests (ids 0..U-1).
      num: R, the number of draws.
      seed: NumPy seed.

    Returns:
      [R, U] int64 counts.
    """
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, num_requests, size=(num, num_requests))
    flat = idx + num_requests * np.arange(num)[:, None]
    return np.bincount(flat.ravel(), minlength=num * num_requests).reshape(num, num_requests)


def grouped_folds(num_requests: int, num_folds: int, seed: int | Sequence[int]) -> np.ndarray:
    """Balanced fold ids per request for K-fold cross-fitting grouped by request.

    Folds are assigned to requests, never to prompts, so no request is split between a
    training and a held-out set. Sizes differ by at most one.

    Args:
      num_requests: U.
      num_folds: K (at most U).
      seed: NumPy seed (an int or a tuple of ints, e.g. ``(seed, split)``).

    Returns:
      [U] int fold ids in 0..K-1, a random permutation of ``arange(U) % K``.
    """
    if not 1 <= num_folds <= num_requests:
        raise ValueError(f"need 1 <= num_folds <= num_requests, got {num_folds}, {num_requests}")
    rng = np.random.default_rng(seed)
    return rng.permutation(np.arange(num_requests) % num_folds)


def stratum_weights(multiplicity: Any, population: Any, sample: Any) -> np.ndarray:
    """[..., U] request weights of one stratum of a stratified sample, reweighted to its
    population: ``m_u · Σ_pop m / Σ_sample m`` on the sample's requests, 0 elsewhere.

    Args:
      multiplicity: [..., U] request multiplicities (ones for the full data, a draw's counts).
      population: [U] bool, the stratum's requests in the population.
      sample: [U] bool, the stratum's requests that were sampled (steered).

    Returns:
      [..., U] float64 weights; a draw that holds none of the sample gets 0 everywhere.
    """
    m = np.asarray(multiplicity, np.float64)
    pop = (m * np.asarray(population, bool)).sum(-1, keepdims=True)
    smp = (m * np.asarray(sample, bool)).sum(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.where(smp > 0, pop / smp, 0.0)
    return np.where(sample, m * scale, 0.0)


def centred_interval(
    estimate: Any, samples: Any, level: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of bootstrap draws, moved to be centred on the full-data estimate.

    ``lo = estimate + q_lo - median``, ``hi = estimate + q_hi - median`` with ``q_lo, q_hi``
    the (1 ± level)/2 quantiles of the draws. A plain percentile interval of a non-smooth
    statistic (a minimum, a cross-fitted selection) can miss its own estimate when the draws
    are shifted relative to it; moving the draws' median onto the estimate keeps the
    bootstrap's spread (and skew) but guarantees ``lo <= estimate <= hi``.

    Args:
      estimate: [...] full-data estimates.
      samples: [..., R] bootstrap draws (NaN draws are ignored).
      level: coverage.

    Returns:
      ``(lo, hi)`` each of shape [...] (NaN where the estimate or every draw is NaN).
    """
    est = np.asarray(estimate, np.float64)
    x = np.asarray(samples, np.float64)
    alpha = (1.0 - level) / 2.0
    if x.shape[-1] == 0:  # no draws: no interval
        nan = np.full(np.broadcast_shapes(est.shape, x.shape[:-1]), np.nan)
        return nan, nan.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices give NaN
        q = np.nanquantile(x, [alpha, 0.5, 1.0 - alpha], axis=-1)
    lo, hi = est + q[0] - q[1], est + q[2] - q[1]
    return lo, hi
