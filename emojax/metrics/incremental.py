"""Incremental steering value Δ_steer: what an emotion vector adds to control vectors.

Dimension legend: G grid points (joint coefficients of a control and an emotion vector),
N evaluation prompts, M neutral prompts.

At an off-target budget κ (mean KL(unsteered ‖ steered) on neutral prompts), Δ_steer is the
lowest failure rate reachable by steering with controls alone minus the lowest reachable
with controls plus the emotion vector. Both minima are taken over the grid points whose mean
KL is within budget; controls-alone points are the grid points whose emotion coefficient is
zero, so Δ_steer >= 0 and it is 0 when the emotion vector adds nothing. The interval is a
paired bootstrap: one resample of prompts (and of neutral prompts) is shared by both arms.
"""

from __future__ import annotations

from typing import Any

import numpy as np


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
    """Δ_steer at budget κ with a paired bootstrap interval over prompts.

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
