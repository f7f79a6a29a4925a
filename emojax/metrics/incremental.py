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

**Feasibility is estimated, and the interval says so.** A cell is feasible when its mean
neutral KL is within κ and (with ``tolerance``) the other failure type's rate rises by at most
the tolerance over the arm's unsteered cell; the truth is defined by the population values.
Both are estimated, the KL from Mn neutral prompts (standard error: their sd / sqrt(Mn)) and
the rise from the other type's training requests (standard error: the clustered sandwich of
a ratio, `_CrossFit.rise`). The estimate decides feasibility from those point estimates, so it
converges to the exact feasibility (the estimand) as the samples grow. At finite samples a
cell whose true KL or rise lies within about a standard error of its limit is admitted or
excluded almost at random, and Δ_steer jumps by the gap between that cell and the arm's
best cell on the other side of the limit: Δ_steer is a discontinuous function of the
constraints, so no estimator is unbiased there, and a bootstrap centred on the estimate does
not see the bias. In the calibration (`emojax.calibration`, scenario 'vanishing', points 3-4,
truth 0) the emotion arm has cells 0.06 better than its best feasible one with a true rise of
0.06 against a tolerance of 0.05 and a standard error of ~0.02: the estimate was biased by
+0.13 to +0.16 of the unsteered rate, its interval covered 0 in 72 % of seeds and read
"present" in 28 %.

A one-sided margin on the point estimate (admit a cell only when ``estimate + z·se`` is
within the limit) does not cure this; it moves the error to the cells just inside the limits.
In the same scenario the controls arm's best feasible cell raises the other type by 0.034,
which the margin then excludes: at z = 1.645 coverage fell to 68 % (bias +0.23) for harmful
compliance. So the choice that gives the estimate and its draws keeps the plain rule, and the
*interval* carries the doubt (partial identification). A cell is *undecided* when a
constraint's estimate lies within ``z = FEASIBILITY_Z`` standard errors of its limit. Two more
statistics are computed exactly as Δ_steer is (cross-fitted, in every draw): ``low``, the
controls arm allowed every cell not confirmed infeasible (``estimate − z·se`` within the
limits) minus the emotion arm restricted to the cells confirmed feasible (``estimate + z·se``
within them), and ``high``, the mirror image. The interval is the union of the estimate's
centred interval, the lower bound of ``low`` and the upper bound of ``high``: whichever way
the undecided cells fall, their effect on either arm is inside it. The unsteered cell is
always feasible. Swapping the arms maps ``[lo, hi]`` to ``[−hi, −lo]``, so under exchangeable
arms the interval is as symmetric as the estimate; as the standard errors shrink, the
undecided cells go and the interval becomes the estimate's. The random-direction null is a
distribution of estimates, so it uses the same plain rule as the estimate.

z = 1 is what the calibration supports: with z = 0.5 the vanishing points still read
"present" in 8 %, with 0.75 in 4-5 %, with 1 in 3 % (coverage 97 %; 30 seeds, Δ_steer
alone). The price is width where cells are undecided (mean relative half-width 0.42 against
0.23 where the truth is 0), so fewer statuses are decided; that is what the data support.

Everything is computed from cluster-level sums ``S[g, u]`` (failures of request u at cell g),
so a draw is a matrix product with the request multiplicities.

`incremental_steering_value` is the earlier, upward-biased estimator (controls cells a subset
of the searched grid, minima scored in-sample); it is kept for the sweep summary and as the
reference the unbiased statistic is tested against.
"""

from __future__ import annotations

import itertools
import warnings
from statistics import NormalDist
from typing import Any

import numpy as np

from emojax import stats
from emojax.metrics import scales

# ---------------------------------------------------------------------------------------------
# Cross-fitted Δ_steer.

# Standard errors within which a cell's constraint is undecided (module docstring).
FEASIBILITY_Z = 1.0


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
    """Shared resampling design: request weights (draw 0 = full data) and fold splits.

    ``var_weights`` weigh squared residuals in the clustered variance of a training-set rate
    (`arm_rate`): the draw's weight times the full-data weight, i.e. multiplicity x stratum
    scale² (exact when a draw keeps the strata's scales), so the copies of a request in a
    draw count as separate clusters, as the copies of its prompts do.
    """

    def __init__(self, weights: np.ndarray, folds: np.ndarray, num_folds: int):
        self.weights = weights  # [1 + R, U]
        self.var_weights = weights * weights[:1]  # [1 + R, U]
        self.folds = folds  # [S, U]
        self.num_folds = num_folds

    def per_fold(self, sums: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """[S, 1 + R, K, G] weighted sums over each fold's requests, from sums [G, U]."""
        weights = self.weights if weights is None else weights
        out = np.zeros((len(self.folds), len(weights), self.num_folds, sums.shape[0]))
        for s, fold in enumerate(self.folds):
            for k in range(self.num_folds):
                cols = fold == k
                out[s, :, k] = weights[:, cols] @ sums[:, cols].T
        return out

    def training(self, sums: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """[S, 1 + R, K, G] weighted sums over each fold's training requests."""
        held = self.per_fold(sums, weights)
        return held.sum(2, keepdims=True) - held

    def rise(
        self, other: tuple[np.ndarray, np.ndarray], zero: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The other type's training-rate rise over the unsteered cell, with its standard error.

        The rise of cell g on a fold's training requests is the ratio
        ``r_g = Σ_u w_u d_gu / Σ_u w_u n_u`` with ``d_gu = o_gu − o_0u`` (the request's
        failures at g minus those unsteered: paired within the request). Its linearised
        (sandwich) variance over clusters is ``Σ_u v_u (d_gu − r_g n_u)² / (Σ_u w_u n_u)²``,
        ``v`` the variance weights; strata are not centred, which can only overstate it.

        Args:
          other: cluster sums [G, U] of the other type's failures, prompts per request [U].
          zero: the arm's unsteered cell.

        Returns:
          rise, standard error [S, 1 + R, K, G] and the training prompts' weight
          [S, 1 + R, K, 1] (0: no training prompt of the other type).
        """
        sums, n = other
        d = sums - sums[zero : zero + 1]  # [G, U]
        den = self.training(n[None])  # [S, R1, K, 1]
        with np.errstate(invalid="ignore", divide="ignore"):
            rise = self.training(d) / den
            v = self.var_weights
            ss = (self.training(d * d, v) - 2 * rise * self.training(d * n, v)
                  + rise**2 * self.training((n * n)[None], v))  # fmt: skip
            se = np.sqrt(np.maximum(ss, 0.0)) / den
        ok = den > 0
        return np.where(ok, rise, 0.0), np.where(ok, se, 0.0), den

    def arm_rate(
        self,
        fail: np.ndarray,
        n: np.ndarray,
        kl: tuple[np.ndarray, np.ndarray],
        kappa: float,
        zero: int,
        other: tuple[np.ndarray, np.ndarray] | None,
        tolerance: float | None,
        z: float = 0.0,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Cross-fitted held-out failure rate of one arm.

        Args:
          fail: [G, U] cluster sums of failures.
          n: [U] prompts per request.
          kl: mean neutral KL and its standard error, each [1 + R, G] (or [1, G] when not
            resampled).
          kappa: KL budget.
          zero: index of the arm's unsteered cell (always feasible).
          other: (cluster sums [G, U], prompts per request [U]) of the other failure type.
          tolerance: allowed rise of the other type's training rate over the unsteered cell.
          z: a cell is feasible when ``KL + z·se <= κ`` and ``rise + z·se <= tolerance``:
            0 for the estimate, +z for the cells confirmed feasible, −z for those not
            confirmed infeasible (module docstring).

        Returns:
          rate [1 + R] (averaged over splits) and the chosen cells [S, 1 + R, K].
        """
        held = self.per_fold(fail)  # [S, R1, K, G]
        den = self.per_fold(n[None])[..., 0]  # [S, R1, K]
        train = held.sum(2, keepdims=True) - held
        kl_mean, kl_se = kl
        kl_ok = kl_mean + z * kl_se <= kappa + 1e-12
        feasible = np.broadcast_to(kl_ok[None, :, None, :], held.shape).copy()
        if tolerance is not None and other is not None:
            rise, se, o_den = self.rise(other, zero)
            # No training prompts of the other type: the constraint cannot be checked, so it
            # does not bind.
            feasible &= (rise + z * se <= tolerance + 1e-9) | (o_den <= 0)
        feasible[..., zero] = True  # staying unsteered is always allowed
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


def _kl_stats(kl: np.ndarray, neutral_weights: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Mean neutral KL per draw and its standard error, each [1 + R, G] ([1, G] when neutral
    prompts are not resampled): ``se = sd / sqrt(Mn)``, the sd over the draw's neutral
    prompts (copies counted) with ddof 1."""
    kl = np.asarray(kl, np.float64)
    mn = kl.shape[-1]
    nw = np.ones((1, mn))
    if neutral_weights is not None:
        nw = np.vstack([nw, np.asarray(neutral_weights, np.float64)])
    total = nw.sum(-1, keepdims=True)
    mean = (nw @ kl.T) / total
    with np.errstate(invalid="ignore", divide="ignore"):
        var = np.maximum(nw @ (kl**2).T - total * mean**2, 0.0) / (total - 1)
        se = np.where(total > 1, np.sqrt(var / total), 0.0)
    return mean, se


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
    feasibility_z: float = FEASIBILITY_Z,
) -> dict[str, Any]:
    """Cross-fitted Δ_steer of one failure type at KL budget κ, with a cluster bootstrap.

    In each of ``num_splits`` random K-fold splits of the requests, each arm's cell is chosen
    on the training requests of every fold: the feasible cell (mean neutral KL <= κ and, with
    ``tolerance``, the other failure type's training rate at most its rate at the arm's
    unsteered cell + tolerance) with the lowest training failure rate (ties: lowest mean KL,
    then lowest index). The chosen cell is scored on the fold's held-out requests; held-out
    failures are pooled over folds and the rate averaged over splits. The interval also
    covers the bounds of cells whose feasibility the data leave undecided (module docstring).

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
      feasibility_z: standard errors within which a constraint is undecided (0: the
        estimate's centred interval alone).

    Returns:
      ``estimate``, ``lo``, ``hi`` (the centred interval, `stats.centred_interval`, widened
      to the bounds), ``samples`` [R], ``low``/``high`` ({``estimate``, ``samples`` [R]}: the
      bounding statistics; `relative_interval` puts them on the relative scale),
      ``feasibility_z``, ``controls_rate``, ``emotion_rate`` (held-out failure rates),
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
    arms = {
        "controls": (s_c, _kl_stats(kl_controls, neutral_weights), zero_controls,
                     _other(other_controls, other_request, num_requests)),
        "emotion": (s_e, _kl_stats(kl_emotion, neutral_weights), zero_emotion,
                    _other(other_emotion, other_request, num_requests)),
    }  # fmt: skip

    def rate(arm: str, z: float) -> tuple[np.ndarray, np.ndarray]:
        sums, kl, zero, other = arms[arm]
        return design.arm_rate(sums, n, kl, kappa, zero, other, tolerance, z)

    (rate_c, choice_c), (rate_e, choice_e) = rate("controls", 0.0), rate("emotion", 0.0)
    delta = rate_c - rate_e
    estimate, samples = float(delta[0]), delta[1:]
    lo, hi = stats.centred_interval(estimate, samples, level)
    # The bounds: each arm restricted to the cells confirmed feasible (+z) or allowed every
    # cell not confirmed infeasible (−z); the arm gaining from the doubt gets the wider set.
    z = abs(float(feasibility_z))
    low = rate("controls", -z)[0] - rate("emotion", z)[0] if z else delta
    high = rate("controls", z)[0] - rate("emotion", -z)[0] if z else delta
    lo = float(np.fmin(lo, stats.centred_interval(low[0], low[1:], level)[0]))
    hi = float(np.fmax(hi, stats.centred_interval(high[0], high[1:], level)[1]))
    has_prompts = n > 0
    failing = (s_c[zero_controls] > 0) & has_prompts
    with np.errstate(invalid="ignore", divide="ignore"):
        unsteered = (design.weights @ s_c[zero_controls]) / (design.weights @ n)  # [1 + R]
    return {
        "estimate": estimate,
        "lo": float(lo),
        "hi": float(hi),
        "samples": samples,
        "low": {"estimate": float(low[0]), "samples": low[1:]},
        "high": {"estimate": float(high[0]), "samples": high[1:]},
        "feasibility_z": z,
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


def relative_interval(
    d: dict[str, Any], min_denominator: float = 0.0, level: float = 0.95
) -> dict[str, Any]:
    """`delta_steer`'s value on the relative scale (over the unsteered rate), bounds included.

    `emojax.metrics.scales.on_scale` of the estimate and its draws, with the interval widened
    to the relative bounds (`delta_steer`'s ``low`` and ``high``, each over the same
    denominator draw by draw) exactly as `delta_steer` widens the absolute one.

    Args:
      d: a `delta_steer` result.
      min_denominator: the floor on the unsteered rate (`breakpoint.steer_min_rate`).
      level: interval coverage.

    Returns:
      ``estimate``, ``lo``, ``hi``, ``samples`` [R], as `scales.on_scale`.
    """
    den = (d["unsteered_rate"], d["unsteered_samples"], level, min_denominator)
    out = scales.on_scale(d["estimate"], d["samples"], *den)
    if "low" in d and np.isfinite(out["estimate"]):
        low = scales.on_scale(d["low"]["estimate"], d["low"]["samples"], *den)
        high = scales.on_scale(d["high"]["estimate"], d["high"]["samples"], *den)
        out["lo"] = float(np.fmin(out["lo"], low["lo"]))
        out["hi"] = float(np.fmax(out["hi"], high["hi"]))
    return out


def _intraclass_correlation(failures: np.ndarray, prompts: np.ndarray) -> float:
    """One-way ANOVA estimate of the correlation of failures within a request, in [0, 1].

    ``ρ = (MSB − MSW) / (MSB + (m0 − 1) MSW)`` over the requests with prompts, ``m0`` the
    size-adjusted mean number of prompts per request; 1 (every request one trial) where it
    cannot be estimated (no failure, or no request with two prompts).
    """
    keep = prompts > 0
    f, n = failures[keep], prompts[keep]
    u, total = len(n), n.sum()
    if u < 2 or total <= u:
        return 1.0
    p = f.sum() / total
    share = f / n
    msb = (n * (share - p) ** 2).sum() / (u - 1)
    msw = (f * (1.0 - share)).sum() / (total - u)
    m0 = (total - (n**2).sum() / total) / (u - 1)
    den = msb + (m0 - 1.0) * msw
    return float(np.clip((msb - msw) / den, 0.0, 1.0)) if den > 0 else 1.0


def failure_rate_interval(
    failures: np.ndarray, prompts: np.ndarray, weights: np.ndarray, level: float = 0.95
) -> dict[str, Any]:
    """A failure rate over prompts, clustered by request, with an interval that holds near 0.

    The estimate is ``Σ_u f_u / Σ_u n_u`` and its draws weigh each request by its multiplicity.
    The interval is the union of the centred bootstrap interval (`stats.centred_interval`) and
    the Wilson score interval at the effective number of prompts. Near 0 the bootstrap alone
    is anti-conservative: a sample with fewer failures than its truth also has a smaller
    spread, so its upper bound falls below the truth too often (at a true 2 % over 240
    requests of 2-8 prompts in the calibration's latent model, in 8 % of 600 samples against
    a nominal 2.5 %; with the Wilson bound in 4 %, while a true 0.1 % still reads below a 2 %
    floor in 91 %). The Wilson bound evaluates the binomial variance at the bound instead of
    at the estimate. Prompts of a request are correlated, so the binomial count is the
    effective number of prompts ``n_eff = (Σ n_u)² / Σ n_u (1 + (n_u − 1) ρ)`` (the design
    effect of clustered 0/1 outcomes), ρ the intraclass correlation
    (`_intraclass_correlation`): ``n_eff`` lies between the number of prompts (ρ = 0) and
    ``(Σ n_u)² / Σ n_u²``, every request one trial (ρ = 1, used when there is no failure to
    estimate ρ from). The remaining excess over 2.5 % comes from ρ estimated on the few
    failing requests of a rare type.

    Args:
      failures: [U] failing prompts per request.
      prompts: [U] prompts per request.
      weights: [R, U] request multiplicities of the draws.
      level: interval coverage.

    Returns:
      ``estimate`` (0 without prompts), ``lo``, ``hi``, ``samples`` [R] and ``effective_n``.
    """
    f = np.asarray(failures, np.float64)
    n = np.asarray(prompts, np.float64)
    total = n.sum()
    est = float(f.sum() / max(total, 1.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        samples = (np.asarray(weights, np.float64) @ f) / (np.asarray(weights, np.float64) @ n)
    lo, hi = stats.centred_interval(est, samples, level)
    if total > 0:
        rho = _intraclass_correlation(f, n)
        n_eff = float(total**2 / (n * (1.0 + (n - 1.0) * rho)).sum())
        z = NormalDist().inv_cdf(1.0 - (1.0 - level) / 2.0)
        den = 1.0 + z**2 / n_eff
        centre = (est + z**2 / (2.0 * n_eff)) / den
        half = z * np.sqrt(est * (1.0 - est) / n_eff + z**2 / (4.0 * n_eff**2)) / den
        lo, hi = np.fmin(lo, centre - half), np.fmax(hi, centre + half)
    else:
        n_eff = 0.0
    return {"estimate": est, "lo": float(lo), "hi": float(hi), "samples": samples,
            "effective_n": n_eff}  # fmt: skip


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
        _kl_stats(kl_controls, None), kappa, zero_controls, o_c, tolerance,
    )  # fmt: skip
    s_r = cluster_sums(fail_random, request, num_requests)  # [Q, Gr, U]
    o_r = None if other_random is None else _other(other_random, other_request, num_requests)
    null = np.empty(num_null)
    for i, arm in enumerate(arms):
        other = None if o_r is None else (o_r[0][arm].reshape(-1, num_requests), o_r[1])
        rate_r, _ = design.arm_rate(
            s_r[arm].reshape(-1, num_requests), n,
            _kl_stats(kl_random[arm].reshape(arm_size * g_r, -1), None), kappa, zero_random,
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
