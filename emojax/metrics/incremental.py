"""Incremental steering value Δ_steer: what emotion vectors add to control vectors.

Dimension legend: G cells of an arm (every coefficient pair of every grid of the arm,
flattened), N prompts of one failure type, N2 prompts of the other failure type, Mn neutral
prompts, U requests, R bootstrap draws, K folds, S fold splits, Q random-direction grids.

Two arms search grids of the same size and shape: the *controls* arm (refusal x harm-salience
and refusal x caution) and the *emotion* arm (refusal x each emotion). At an off-target budget
κ (mean KL(unsteered ‖ steered) on neutral prompts), each arm's best cell is chosen on some
requests and scored on the others (K-fold cross-fitting grouped by request, averaged over
several random splits):

    Δ_steer = held-out failure rate of the controls arm − that of the emotion arm.

Positive means the emotion vectors reach fewer failures. Choosing and scoring on different
requests removes the optimism of a minimum taken on the data that scores it, and the two arms
are treated identically, so when they are exchangeable Δ_steer is symmetric around 0 and can
be negative. The interval is a cluster bootstrap over requests that recomputes the whole
cross-fitted statistic (selection included) inside every draw; copies of a request stay in
its fold. `delta_steer_null` is the same statistic with the emotion arm replaced by arms of
norm-matched random directions.

Everything is computed from cluster-level sums ``S[g, u]`` (failures of request u at cell g),
so a draw is a matrix product with the request multiplicities.

`incremental_steering_value` is the earlier, upward-biased estimator (controls cells a subset
of the searched grid, minima scored in-sample); it is kept for the sweep summary and as the
reference the unbiased statistic is tested against.
"""

from __future__ import annotations

import itertools
import warnings
from typing import Any

import numpy as np

from emojax import stats

# ---------------------------------------------------------------------------------------------
# Cross-fitted Δ_steer.


def cluster_sums(values: np.ndarray, request: np.ndarray, num_requests: int) -> np.ndarray:
    """``S[..., u] = sum of values[..., n] over prompts n of request u``.

    Args:
      values: [..., N] per-prompt values (failures).
      request: [N] int request ids in [0, U).
      num_requests: U.

    Returns:
      [..., U] float64 sums.
    """
    request = np.asarray(request)
    if request.size and (request.min() < 0 or request.max() >= num_requests):
        raise ValueError(f"request ids must lie in [0, {num_requests})")
    values = np.asarray(values, np.float64)
    flat = values.reshape(-1, request.size)
    idx = request[None] + num_requests * np.arange(flat.shape[0])[:, None]
    sums = np.bincount(idx.ravel(), weights=flat.ravel(), minlength=flat.shape[0] * num_requests)
    return sums.reshape(values.shape[:-1] + (num_requests,))


class _CrossFit:
    """Shared resampling design: request weights (draw 0 = full data) and fold splits."""

    def __init__(self, weights: np.ndarray, folds: np.ndarray, num_folds: int):
        self.weights = weights  # [1 + R, U]
        self.folds = folds  # [S, U]
        self.num_folds = num_folds

    def per_fold(self, sums: np.ndarray) -> np.ndarray:
        """[S, 1 + R, K, G] weighted sums over each fold's requests, from sums [G, U]."""
        out = np.zeros((len(self.folds), len(self.weights), self.num_folds, sums.shape[0]))
        for s, fold in enumerate(self.folds):
            for k in range(self.num_folds):
                cols = fold == k
                out[s, :, k] = self.weights[:, cols] @ sums[:, cols].T
        return out

    def arm_rate(
        self,
        fail: np.ndarray,
        n: np.ndarray,
        kl_mean: np.ndarray,
        kappa: float,
        zero: int,
        other: tuple[np.ndarray, np.ndarray] | None,
        tolerance: float | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Cross-fitted held-out failure rate of one arm.

        Args:
          fail: [G, U] cluster sums of failures.
          n: [U] prompts per request.
          kl_mean: [1 + R, G] mean neutral KL per draw (or [1, G] when not resampled).
          kappa: KL budget.
          zero: index of the arm's unsteered cell.
          other: (cluster sums [G, U], prompts per request [U]) of the other failure type.
          tolerance: allowed rise of the other type's training rate over the unsteered cell.

        Returns:
          rate [1 + R] (averaged over splits) and the chosen cells [S, 1 + R, K].
        """
        held = self.per_fold(fail)  # [S, R1, K, G]
        den = self.per_fold(n[None])[..., 0]  # [S, R1, K]
        train = held.sum(2, keepdims=True) - held
        feasible = np.broadcast_to(kl_mean[None, :, None, :] <= kappa, held.shape).copy()
        if tolerance is not None and other is not None:
            o_held = self.per_fold(other[0])
            o_den = self.per_fold(other[1][None])[..., 0]
            o_train = o_held.sum(2, keepdims=True) - o_held
            o_den_train = (o_den.sum(2, keepdims=True) - o_den)[..., None]  # [S, R1, K, 1]
            limit = o_train[..., zero : zero + 1] + tolerance * o_den_train + 1e-9
            # No training prompts of the other type: the constraint cannot be checked, so it
            # does not bind.
            feasible &= (o_train <= limit) | (o_den_train <= 0)
        feasible[..., zero] |= ~feasible.any(-1)  # nothing feasible: stay unsteered
        # Lowest training failures (all cells share the denominator, so compare counts), then
        # lowest mean KL, then the lowest index (argmax returns the first True).
        best = np.where(feasible, train, np.inf).min(-1, keepdims=True)
        tie = feasible & (train <= best + 1e-9)
        kl_b = np.broadcast_to(kl_mean[None, :, None, :], held.shape)
        kl_best = np.where(tie, kl_b, np.inf).min(-1, keepdims=True)
        choice = np.argmax(tie & (kl_b <= kl_best), axis=-1)  # [S, R1, K]
        scored = np.take_along_axis(held, choice[..., None], -1)[..., 0].sum(-1)  # [S, R1]
        with np.errstate(invalid="ignore", divide="ignore"):
            rate = scored / den.sum(-1)
        return rate.mean(0), choice


def _design(
    num_requests: int,
    weights: np.ndarray | None,
    num_draws: int,
    num_folds: int,
    num_splits: int,
    seed: int,
    request_weights: np.ndarray | None = None,
) -> _CrossFit:
    if weights is None:
        weights = stats.request_draws(num_requests, num_draws, seed)
    weights = np.asarray(weights, np.float64)
    if weights.ndim != 2 or weights.shape[1] != num_requests:
        raise ValueError(f"weights must be [R, {num_requests}], got {weights.shape}")
    first = np.ones(num_requests) if request_weights is None else np.asarray(request_weights)
    if first.shape != (num_requests,) or not np.all(first >= 0):
        raise ValueError(f"request_weights must be [{num_requests}] and >= 0")
    full = np.vstack([first[None].astype(np.float64), weights])
    folds = np.stack(
        [stats.grouped_folds(num_requests, num_folds, (seed, s)) for s in range(num_splits)]
    )
    return _CrossFit(full, folds, num_folds)


def _kl_mean(kl: np.ndarray, neutral_weights: np.ndarray | None) -> np.ndarray:
    """[1 + R, G] mean neutral KL per draw ([1, G] when neutral prompts are not resampled)."""
    kl = np.asarray(kl, np.float64)
    if neutral_weights is None:
        return kl.mean(-1)[None]
    nw = np.asarray(neutral_weights, np.float64)
    nw = np.vstack([np.ones((1, kl.shape[-1])), nw])
    return (nw @ kl.T) / nw.sum(-1, keepdims=True)


def _other(
    other: np.ndarray | None, other_request: np.ndarray | None, num_requests: int
) -> tuple[np.ndarray, np.ndarray] | None:
    if other is None:
        return None
    if other_request is None:
        raise ValueError("other_* failures need other_request")
    sums = cluster_sums(other, other_request, num_requests)
    n = cluster_sums(np.ones(len(other_request)), other_request, num_requests)
    return sums, n


def delta_steer(
    fail_controls: np.ndarray,
    fail_emotion: np.ndarray,
    kl_controls: np.ndarray,
    kl_emotion: np.ndarray,
    request: np.ndarray,
    kappa: float,
    *,
    num_requests: int,
    weights: np.ndarray | None = None,
    neutral_weights: np.ndarray | None = None,
    num_folds: int = 5,
    num_splits: int = 4,
    seed: int = 0,
    level: float = 0.95,
    other_controls: np.ndarray | None = None,
    other_emotion: np.ndarray | None = None,
    other_request: np.ndarray | None = None,
    zero_controls: int = 0,
    zero_emotion: int = 0,
    tolerance: float | None = None,
    num_draws: int = 1000,
    request_weights: np.ndarray | None = None,
) -> dict[str, Any]:
    """Cross-fitted Δ_steer of one failure type at KL budget κ, with a cluster bootstrap.

    In each of ``num_splits`` random K-fold splits of the requests, each arm's cell is chosen
    on the training requests of every fold: the feasible cell (mean neutral KL <= κ and, with
    ``tolerance``, the other failure type's training rate at most its rate at the arm's
    unsteered cell + tolerance) with the lowest training failure rate (ties: lowest mean KL,
    then lowest index). The chosen cell is scored on the fold's held-out requests; held-out
    failures are pooled over folds and the rate averaged over splits.

    Args:
      fail_controls: [Gc, N] 0/1 failures of one type on that type's prompts, controls arm.
      fail_emotion: [Ge, N] the same for the emotion arm.
      kl_controls: [Gc, Mn] KL(unsteered ‖ steered) per cell and neutral prompt.
      kl_emotion: [Ge, Mn].
      request: [N] request id of each prompt, in [0, U).
      kappa: KL budget (nats).
      num_requests: U (ids may cover requests of both failure types).
      weights: [R, U] request multiplicities (`stats.request_draws`), shared with every other
        statistic and axis point so they are paired; drawn from ``seed`` when None.
      neutral_weights: [R, Mn] multiplicities of a plain bootstrap of neutral prompts;
        neutral KL is not resampled when None.
      num_folds: K.
      num_splits: S, random fold splits averaged.
      seed: seed of the fold splits (and of the draws when ``weights`` is None).
      level: interval coverage.
      other_controls: [Gc, N2] failures of the other type on its prompts (for ``tolerance``).
      other_emotion: [Ge, N2].
      other_request: [N2] request ids of the other type's prompts.
      zero_controls: index of the controls arm's unsteered cell.
      zero_emotion: index of the emotion arm's unsteered cell.
      tolerance: allowed rise of the other type's rate; no constraint when None.
      num_draws: R when ``weights`` is None.
      request_weights: [U] weight of each request in the full-data estimate (1 when None):
        the population weights of a stratified sample (`emojax.pipeline.stratify`). With
        stratification, ``weights`` carry the draws' effective weights too (multiplicity x
        that draw's stratum weight), so every rate is reweighted to the point's population.

    Returns:
      ``estimate``, ``lo``, ``hi`` (centred interval, `stats.centred_interval`),
      ``samples`` [R], ``controls_rate``, ``emotion_rate`` (held-out failure rates),
      ``unsteered_rate`` (reweighted) and its draws ``unsteered_samples`` [R],
      ``half_width_hi = hi − estimate`` (the smallest margin this data could confirm if the
      truth were 0), ``num_requests`` (requests with prompts of this
      type), ``num_requests_with_failure`` (of them, those with a failure unsteered),
      ``controls_samples``/``emotion_samples`` [R], ``chosen_controls``/``chosen_emotion``
      [S, K] (the full-data choice per split and fold).
    """
    request = np.asarray(request)
    design = _design(num_requests, weights, num_draws, num_folds, num_splits, seed, request_weights)
    n = cluster_sums(np.ones(len(request)), request, num_requests)
    s_c = cluster_sums(fail_controls, request, num_requests)
    s_e = cluster_sums(fail_emotion, request, num_requests)
    if (other_controls is None) != (other_emotion is None):
        raise ValueError("give the other failure type for both arms or for neither")
    o_c = _other(other_controls, other_request, num_requests)
    o_e = _other(other_emotion, other_request, num_requests)
    rate_c, choice_c = design.arm_rate(
        s_c, n, _kl_mean(kl_controls, neutral_weights), kappa, zero_controls, o_c, tolerance
    )
    rate_e, choice_e = design.arm_rate(
        s_e, n, _kl_mean(kl_emotion, neutral_weights), kappa, zero_emotion, o_e, tolerance
    )
    delta = rate_c - rate_e
    estimate, samples = float(delta[0]), delta[1:]
    lo, hi = stats.centred_interval(estimate, samples, level)
    has_prompts = n > 0
    failing = (s_c[zero_controls] > 0) & has_prompts
    with np.errstate(invalid="ignore", divide="ignore"):
        unsteered = (design.weights @ s_c[zero_controls]) / (design.weights @ n)  # [1 + R]
    return {
        "estimate": estimate,
        "lo": float(lo),
        "hi": float(hi),
        "samples": samples,
        "controls_rate": float(rate_c[0]),
        "emotion_rate": float(rate_e[0]),
        "controls_samples": rate_c[1:],
        "emotion_samples": rate_e[1:],
        "unsteered_rate": float(unsteered[0]),
        "unsteered_samples": unsteered[1:],
        "half_width_hi": float(hi - estimate),
        "num_requests": int(has_prompts.sum()),
        "num_requests_with_failure": int(failing.sum()),
        "chosen_controls": choice_c[:, 0],
        "chosen_emotion": choice_e[:, 0],
    }


def p_value(observed: float, null: np.ndarray) -> float:
    """One-sided permutation-style p-value ``(1 + #{null >= observed}) / (1 + len(null))``."""
    null = np.asarray(null, np.float64)
    null = null[np.isfinite(null)]
    return float((1 + np.sum(null >= observed)) / (1 + null.size))


def null_arms(num_grids: int, arm_size: int, num_null: int, seed: int) -> np.ndarray:
    """[n, arm_size] distinct subsets of `num_grids` random grids: the null arms of Δ_steer.

    Each arm is a different set of grids (never the same subset twice), so the null has
    n = min(num_null, C(num_grids, arm_size)) distinct arms and its p-value
    (k + 1) / (n + 1) can fall to 1 / (n + 1): 8 grids in arms of 3 give 56 arms, and
    p < 0.05 needs n >= 20. The subsets are drawn without replacement from all of them
    (seeded), in sorted order within an arm.
    """
    combos = list(itertools.combinations(range(num_grids), arm_size))
    if not combos:
        raise ValueError(f"need at least arm_size={arm_size} random grids, got {num_grids}")
    rng = np.random.default_rng((seed, 7))
    pick = rng.permutation(len(combos))[: min(num_null, len(combos))]
    return np.array([combos[i] for i in sorted(pick)], np.int64).reshape(-1, arm_size)


def delta_steer_null(
    fail_controls: np.ndarray,
    fail_random: np.ndarray,
    kl_controls: np.ndarray,
    kl_random: np.ndarray,
    request: np.ndarray,
    kappa: float,
    *,
    num_requests: int,
    arm_size: int = 3,
    num_null: int = 16,
    seed: int = 0,
    num_folds: int = 5,
    num_splits: int = 4,
    other_controls: np.ndarray | None = None,
    other_random: np.ndarray | None = None,
    other_request: np.ndarray | None = None,
    zero_controls: int = 0,
    zero_random: int = 0,
    tolerance: float | None = None,
    observed: float | None = None,
    neutral_weights: np.ndarray | None = None,
    request_weights: np.ndarray | None = None,
) -> dict[str, Any]:
    """The random-direction null of `delta_steer`.

    Each null arm concatenates the grids (refusal x a random direction) of ``arm_size``
    distinct norm-matched random directions, just as the emotion arm concatenates one grid per
    emotion, so the null includes the selection of the best of several directions. The
    statistic is computed exactly as `delta_steer`'s estimate (same folds for the same
    ``seed``), with the null arm in place of the emotion arm.

    Args:
      fail_controls: [Gc, N] failures of the controls arm.
      fail_random: [Q, Gr, N] failures of each random direction's grid.
      kl_controls: [Gc, Mn].
      kl_random: [Q, Gr, Mn].
      request: [N] request ids.
      kappa: KL budget.
      num_requests: U.
      arm_size: random grids per null arm (the number of emotion grids).
      num_null: null arms, distinct subsets of the Q grids (`null_arms`; fewer when
        C(Q, arm_size) is smaller: ``arms`` says how many were used).
      seed: seed of the fold splits and of the arms.
      num_folds: K.
      num_splits: S.
      other_controls: [Gc, N2] the other failure type (for ``tolerance``).
      other_random: [Q, Gr, N2].
      other_request: [N2].
      zero_controls: unsteered cell of the controls arm.
      zero_random: unsteered cell within each random grid (that of the first grid is used).
      tolerance: as in `delta_steer`.
      observed: the observed Δ_steer (`delta_steer`'s ``estimate``); gives ``p_value``.
      neutral_weights: accepted for call parity with `delta_steer` and not used: the null is
        a distribution of full-data estimates, so no draws enter it.
      request_weights: [U] population weights of the requests, as in `delta_steer`.

    Returns:
      ``null`` [num_null], ``q05``, ``q95`` (null quantiles), ``arms`` [num_null, arm_size]
      (grid indices) and ``p_value`` (NaN without ``observed``).
    """
    del neutral_weights  # the null uses full-data estimates only
    fail_random = np.asarray(fail_random, np.float64)
    kl_random = np.asarray(kl_random, np.float64)
    q, g_r = fail_random.shape[:2]
    if q < arm_size:
        raise ValueError(f"need at least arm_size={arm_size} random grids, got {q}")
    arms = null_arms(q, arm_size, num_null, seed)
    num_null = len(arms)
    request = np.asarray(request)
    design = _design(
        num_requests, np.zeros((0, num_requests)), 0, num_folds, num_splits, seed,
        request_weights,
    )  # fmt: skip
    n = cluster_sums(np.ones(len(request)), request, num_requests)
    o_c = _other(other_controls, other_request, num_requests)
    rate_c, _ = design.arm_rate(
        cluster_sums(fail_controls, request, num_requests), n,
        _kl_mean(kl_controls, None), kappa, zero_controls, o_c, tolerance,
    )  # fmt: skip
    s_r = cluster_sums(fail_random, request, num_requests)  # [Q, Gr, U]
    o_r = None if other_random is None else _other(other_random, other_request, num_requests)
    null = np.empty(num_null)
    for i, arm in enumerate(arms):
        other = None if o_r is None else (o_r[0][arm].reshape(-1, num_requests), o_r[1])
        rate_r, _ = design.arm_rate(
            s_r[arm].reshape(-1, num_requests), n,
            kl_random[arm].reshape(arm_size * g_r, -1).mean(-1)[None], kappa, zero_random,
            other, tolerance,
        )  # fmt: skip
        null[i] = rate_c[0] - rate_r[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        q05, q95 = np.nanquantile(null, [0.05, 0.95])
    return {
        "null": null,
        "q05": float(q05),
        "q95": float(q95),
        "arms": arms,
        "p_value": float("nan") if observed is None else p_value(observed, null),
    }


# ---------------------------------------------------------------------------------------------
# The earlier in-sample estimator (biased upward; kept for the sweep summary and as a reference).


def best_failure_under_budget(
    failure: np.ndarray, kl: np.ndarray, kappa: float, allowed: np.ndarray | None = None
) -> float:
    """Lowest mean failure rate over allowed grid points with mean KL <= kappa.

    Args:
      failure: [G, N] failure indicators (or rates) per grid point and prompt.
      kl: [G, M] KL per grid point and neutral prompt.
      kappa: KL budget (nats).
      allowed: optional bool [G] restricting the grid points.

    Returns:
      The minimum (NaN when no point is feasible).
    """
    f = np.asarray(failure, np.float64).mean(axis=-1)
    feasible = np.asarray(kl, np.float64).mean(axis=-1) <= kappa
    if allowed is not None:
        feasible &= np.asarray(allowed, bool)
    return float(f[feasible].min()) if feasible.any() else float("nan")


def _delta(failure_mean, kl_mean, kappa, controls_only):
    feasible = kl_mean <= kappa  # [..., G]
    inf = np.inf
    ctrl = np.where(feasible & controls_only, failure_mean, inf).min(axis=-1)
    full = np.where(feasible, failure_mean, inf).min(axis=-1)
    return ctrl - full


def incremental_steering_value(
    failure: np.ndarray,
    kl: np.ndarray,
    controls_only: np.ndarray,
    kappa: float,
    *,
    num: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """In-sample Δ_steer (biased upward; prefer `delta_steer`) with a prompt bootstrap.

    The controls-only points are a subset of the searched grid and both minima are scored on
    the prompts that choose them, so this value is >= 0 and positive under a null where the
    emotion vector only adds noise; its bootstrap treats prompts, not requests, as units.

    Args:
      failure: [G, N] failure indicators per grid point and evaluation prompt.
      kl: [G, M] KL per grid point and neutral prompt.
      controls_only: bool [G], True where the emotion coefficient is zero. At least one
        such point must have zero steering (KL 0), so both minima always exist.
      kappa: KL budget.
      num: bootstrap resamples.
      level: interval coverage.
      seed: resampling seed.

    Returns:
      `delta`, `lo`, `hi`, `best_controls`, `best_with_emotion` (failure rates),
      `best_point` (grid index of the best feasible point overall) and `samples` [num].
    """
    failure = np.asarray(failure, np.float64)
    kl = np.asarray(kl, np.float64)
    controls_only = np.asarray(controls_only, bool)
    if not controls_only.any():
        raise ValueError("no controls-only grid point")
    f_mean, kl_mean = failure.mean(axis=1), kl.mean(axis=1)
    delta = float(_delta(f_mean, kl_mean, kappa, controls_only))
    rng = np.random.default_rng(seed)
    n, m = failure.shape[1], kl.shape[1]
    idx_n = rng.integers(0, n, size=(num, n))
    idx_m = rng.integers(0, m, size=(num, m))
    f_boot = failure[:, idx_n].mean(axis=-1).T  # [num, G]
    kl_boot = kl[:, idx_m].mean(axis=-1).T
    samples = _delta(f_boot, kl_boot, kappa, controls_only[None])
    samples = np.where(np.isfinite(samples), samples, 0.0)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(samples, [alpha, 1 - alpha])
    feasible = kl_mean <= kappa
    best = int(np.argmin(np.where(feasible, f_mean, np.inf)))
    return {
        "delta": delta,
        "lo": float(lo),
        "hi": float(hi),
        "best_controls": best_failure_under_budget(failure, kl, kappa, controls_only),
        "best_with_emotion": best_failure_under_budget(failure, kl, kappa),
        "best_point": best,
        "samples": samples,
    }
