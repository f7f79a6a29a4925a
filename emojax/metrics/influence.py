"""Causal influence of a steering vector: dose-response slopes, spread, null comparison.

Dimension legend: K coefficients, N prompts, R random directions, S style readouts.

A vector's *steerability* (Tan et al. 2024, "Analyzing the generalization and reliability of
steering vectors") is the slope of a readout against the steering coefficient. It is fitted
per prompt (ordinary least squares over the coefficient grid), so its spread over prompts
and the *anti-steerable fraction* (prompts whose slope has the opposite sign to the intended
effect) come for free, and every interval can be bootstrapped over prompts.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def per_prompt_slopes(coefs: np.ndarray, y: np.ndarray) -> np.ndarray:
    """OLS slope of y against the coefficient, per prompt.

    Args:
      coefs: [K] coefficients.
      y: [..., K, N] readouts (any leading axes).

    Returns:
      [..., N] slopes (readout units per unit coefficient).
    """
    c = np.asarray(coefs, np.float64)
    y = np.asarray(y, np.float64)
    if y.shape[-2] != c.shape[0]:
        raise ValueError(f"y has {y.shape[-2]} coefficients on axis -2, coefs has {c.shape[0]}")
    cc = c - c.mean()
    denom = np.sum(cc**2)
    if denom == 0:
        raise ValueError("need at least two distinct coefficients for a slope")
    return np.einsum("k,...kn->...n", cc, y - y.mean(axis=-2, keepdims=True)) / denom


def steerability(
    coefs: np.ndarray, y: np.ndarray, expected_sign: float | None = None
) -> dict[str, Any]:
    """Dose-response summary of one vector on one readout.

    Args:
      coefs: [K] coefficients.
      y: [K, N] readouts per coefficient and prompt.
      expected_sign: sign of the intended effect (+1 / -1); None takes the sign of the mean
        slope.

    Returns:
      `slope` (mean per-prompt slope = slope of the mean curve), `slope_std`, `slope_iqr`
      (spread over prompts), `anti_steerable_fraction` (prompts whose slope has the opposite
      sign to the intended effect) and `per_prompt` [N].
    """
    s = per_prompt_slopes(coefs, y)
    mean = float(np.mean(s))
    sign = np.sign(mean) if expected_sign is None else np.sign(expected_sign)
    anti = float(np.mean(np.sign(s) == -sign)) if sign != 0 else 0.0
    q75, q25 = np.percentile(s, [75, 25])
    return {
        "slope": mean,
        "slope_std": float(np.std(s, ddof=1)) if s.size > 1 else 0.0,
        "slope_iqr": float(q75 - q25),
        "anti_steerable_fraction": anti,
        "per_prompt": s,
    }


def slope_interval(
    coefs: np.ndarray, y: np.ndarray, *, num: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """Mean slope with a percentile bootstrap interval over prompts: (estimate, lo, hi)."""
    s = per_prompt_slopes(coefs, y)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, s.shape[-1], size=(num, s.shape[-1]))
    boots = s[..., idx].mean(axis=-1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(boots, [alpha, 1 - alpha], axis=-1)
    return float(s.mean()), float(lo), float(hi)


def null_comparison(observed: np.ndarray, null: np.ndarray) -> dict[str, np.ndarray]:
    """Observed statistics against a null sample (e.g. slopes of random directions).

    Args:
      observed: [...] statistics of the real vectors.
      null: [R] the same statistic for R null draws (R >= 2).

    Returns:
      `z` = (observed - mean(null)) / std(null), and `p` the two-sided permutation p-value
      (1 + #{|null - m| >= |observed - m|}) / (R + 1), m = mean(null).
    """
    observed = np.asarray(observed, np.float64)
    null = np.asarray(null, np.float64).reshape(-1)
    if null.size < 2:
        raise ValueError("need at least two null draws")
    m, sd = null.mean(), null.std(ddof=1)
    z = (observed - m) / max(sd, 1e-12)
    exceed = np.abs(null - m)[None, :] >= np.abs(observed.reshape(-1, 1) - m)
    p = (1.0 + exceed.sum(axis=1)) / (null.size + 1.0)
    return {"z": z, "p": p.reshape(observed.shape), "null_mean": m, "null_std": sd}


def random_null_slopes(coefs: np.ndarray, y_random: np.ndarray) -> np.ndarray:
    """Mean slope of each random direction: y_random [R, K, N] -> [R]."""
    return per_prompt_slopes(coefs, y_random).mean(axis=-1)


def style_vs_safety_ratio(
    coefs: np.ndarray, style: np.ndarray, failure: np.ndarray, eps: float = 1e-3
) -> float:
    """Effect on style over effect on safety, both as absolute dose-response slopes.

    Args:
      coefs: [K].
      style: [S, K, N] style readouts (apology, hedging, warmth rates, ...).
      failure: [K, N] failure indicators (harmful compliance or over-refusal).
      eps: floor of the safety effect (a vector with no safety effect gets a large ratio,
        not a division by zero).

    Returns:
      sum_s |slope(style_s)| / max(|slope(failure)|, eps). Large = mostly stylistic.
    """
    style_effect = np.abs(per_prompt_slopes(coefs, style).mean(axis=-1)).sum()
    safety_effect = abs(float(per_prompt_slopes(coefs, failure).mean()))
    return float(style_effect / max(safety_effect, eps))
