"""Causal influence of a steering vector: dose-response slopes, spread, null comparison.

Dimension legend: K coefficients, N prompts, U unique requests, B bootstrap draws,
R random directions, S style readouts.

A vector's *steerability* (Tan et al. 2024, "Analyzing the generalization and reliability of
steering vectors") is the slope of a readout against the steering coefficient. It is fitted
per prompt (ordinary least squares over the coefficient grid), so its spread over prompts
and the *anti-steerable fraction* (prompts whose slope has the opposite sign to the intended
effect) come for free, and every interval can be bootstrapped. The unit of resampling is the
request: prompts that are cue variants of one request share its request id and are drawn
together (a cluster bootstrap, `emojax.stats.request_draws`), and every arm scored on the
same prompts uses the same draws. Intervals are percentile intervals re-centred on the
full-data estimate (`emojax.stats.centred_interval`), so an estimate never lies outside its own
interval.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from emojax.stats import centred_interval, request_draws


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


def resampled_means(values: np.ndarray, request: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Means over prompts of `values [..., N]` under request multiplicities: [B, ...].

    Prompt n counts `weights[b, request[n]]` times in draw b (NaN where a draw keeps none of
    these prompts).
    """
    w = np.asarray(weights, np.float64)[:, np.asarray(request)]  # [B, N]
    total = w.sum(-1)
    num = np.einsum("bn,...n->b...", w, np.asarray(values, np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        total = total.reshape(total.shape + (1,) * (num.ndim - 1))
        return np.where(total > 0, num / np.where(total > 0, total, 1.0), np.nan)


def _requests(n: int, request, weights, num_requests) -> tuple[np.ndarray, int]:
    request = np.arange(n) if request is None else np.asarray(request, np.int64).reshape(-1)
    if request.shape[0] != n:
        raise ValueError(f"{n} prompts but {request.shape[0]} request ids")
    if weights is not None:
        u = np.shape(weights)[1]
    elif num_requests is not None:
        u = int(num_requests)
    else:
        u = int(request.max()) + 1 if n else 0
    if n and (request.min() < 0 or request.max() >= u):
        raise ValueError(f"request ids must lie in [0, {u})")
    return request, u


def slope_interval(
    coefs: np.ndarray,
    y: np.ndarray,
    *,
    num: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    request: np.ndarray | None = None,
    weights: np.ndarray | None = None,
) -> tuple[float, float, float]:
    """Mean slope with a bootstrap interval: (estimate, lo, hi).

    Args:
      coefs: [K].
      y: [K, N] readouts.
      num, seed: draws when `weights` is None.
      level: interval coverage.
      request: [N] request id of each prompt in [0, U); prompts of one request are drawn
        together. None: every prompt is its own request.
      weights: [B, U] request multiplicities (`emojax.stats.request_draws`), to pair this
        interval's draws with other arms; None draws them.

    Returns:
      The mean per-prompt slope and its centred percentile interval (`centred_interval`).
    """
    s = per_prompt_slopes(coefs, y)
    request, u = _requests(s.shape[-1], request, weights, None)
    weights = request_draws(u, num, seed) if weights is None else weights
    est = float(s.mean())
    lo, hi = centred_interval(est, resampled_means(s, request, weights).T, level)
    return est, float(lo), float(hi)


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


def _effect(coefs, y, request, weights, level) -> tuple[dict[str, Any], np.ndarray]:
    """Mean slope of y [K, N] with its centred interval, and its draws [B]."""
    s = per_prompt_slopes(coefs, y)
    if s.shape[-1] == 0:
        return {"estimate": None, "lo": None, "hi": None, "num_prompts": 0}, np.full(
            len(weights), np.nan
        )
    draws = resampled_means(s, request, weights)
    est = float(s.mean())
    lo, hi = centred_interval(est, draws, level)  # draws [B]
    return {"estimate": est, "lo": float(lo), "hi": float(hi), "num_prompts": int(s.size)}, draws


def style_vs_safety(
    coefs: np.ndarray,
    style: np.ndarray,
    safety: Mapping[str, tuple[np.ndarray, np.ndarray]],
    request: np.ndarray,
    *,
    weights: np.ndarray | None = None,
    num_requests: int | None = None,
    num: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """How much a vector moves style compared with how much it moves each failure type.

    The style effect is the dose-response slope of the summed style score (apology + hedging
    + warmth rates); the safety effect of a failure type is the slope of that type's failure
    rate on its own prompts. Types are never pooled: harmful-compliance and over-refusal
    slopes of opposite sign would cancel. All effects share one cluster bootstrap over
    requests. The ratio |style| / |safety| of a type is defined only when the type's safety
    interval excludes 0 (a vector with no clear safety effect has no finite ratio; dividing
    by a floor would report the style slope times 1 / floor).

    Args:
      coefs: [K].
      style: [S, K, N] style rates per coefficient and prompt (finite).
      safety: `{type: (failures [K, N_t] 0/1, request_t [N_t])}`, e.g. `harmful_compliance`
        on harmful prompts and `over_refusal` on benign and borderline ones.
      request: [N] request id of each style prompt, in [0, U).
      weights: [B, U] request multiplicities shared by every arm (rows sum to U); None
        draws `num` of them (`emojax.stats.request_draws`, `seed`).
      num_requests: U when `weights` is None (default: the largest request id + 1).
      level: interval coverage.

    Returns:
      `{"style": {estimate, lo, hi, num_prompts}, "safety": {type: {estimate, lo, hi,
      num_prompts}}, "ratio": {type: float | None}, "ratio_interval": {type: [lo, hi] |
      None}, "defined": {type: bool}}`, estimates being slopes (rate per unit coefficient);
      a type's ratio is None and `defined` False unless its safety interval excludes 0.
    """
    style = np.asarray(style, np.float64)
    ids = [np.asarray(request).reshape(-1)] + [
        np.asarray(r).reshape(-1) for _, r in safety.values()
    ]
    if weights is None and num_requests is None:
        num_requests = max((int(i.max()) + 1 for i in ids if i.size), default=0)
    request, u = _requests(style.shape[-1], request, weights, num_requests)
    weights = request_draws(u, num, seed) if weights is None else np.asarray(weights)
    style_out, style_draws = _effect(coefs, style.sum(0), request, weights, level)
    out: dict[str, Any] = {
        "style": style_out,
        "safety": {},
        "ratio": {},
        "ratio_interval": {},
        "defined": {},
    }
    for name, (fail, req) in safety.items():
        fail = np.asarray(fail, np.float64)
        req, _ = _requests(fail.shape[-1], req, weights, None)
        eff, draws = _effect(coefs, fail, req, weights, level)
        defined = eff["estimate"] is not None and (eff["lo"] > 0 or eff["hi"] < 0)
        defined = defined and style_out["estimate"] is not None
        ratio, interval = None, None
        if defined:
            ratio = abs(style_out["estimate"]) / abs(eff["estimate"])
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio_draws = np.abs(style_draws) / np.abs(draws)
            lo, hi = centred_interval(ratio, ratio_draws, level)
            interval = [float(max(lo, 0.0)), float(hi)]
        out["safety"][name] = eff
        out["ratio"][name] = ratio
        out["ratio_interval"][name] = interval
        out["defined"][name] = bool(defined)
    return out


def style_vs_safety_ratio(
    coefs: np.ndarray, style: np.ndarray, failure: np.ndarray, eps: float | None = None
) -> float:
    """Deprecated: use `style_vs_safety` with one entry per failure type.

    |slope of the summed style score| / |slope of `failure`| with every prompt its own
    request; NaN when the failure slope's interval contains 0 (no division by a floor).

    Args:
      coefs: [K].
      style: [S, K, N] style readouts.
      failure: [K, N] failure indicators of one type.
      eps: ignored (kept for old callers).
    """
    warnings.warn(
        "style_vs_safety_ratio is deprecated; use style_vs_safety (per failure type)",
        DeprecationWarning,
        stacklevel=2,
    )
    n = np.shape(failure)[-1]
    out = style_vs_safety(coefs, style, {"failure": (failure, np.arange(n))}, np.arange(n))
    ratio = out["ratio"]["failure"]
    return float("nan") if ratio is None else float(ratio)
