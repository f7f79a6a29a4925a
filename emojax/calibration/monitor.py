"""A monitoring null: Δ_mon with plain NumPy L2 logistic probes (not the probes module).

`monitor_study` runs Δ_mon (grouped folds, refits in every cluster draw) on simulated data in
which emotion features predict failures only through the controls, and measures the coverage
of 0 and the false-positive rate of its interval.

Dimension legend: N prompts, U requests, F features (Fc controls, Fe emotion), B fits,
R bootstrap draws, K folds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from emojax import stats
from emojax.calibration.steer import _sigmoid


def fit_logistic(x: np.ndarray, y: np.ndarray, w: np.ndarray, l2: float, iters: int = 8):
    """Batched weighted L2 logistic regression by Newton's method.

    Args:
      x: [N, F] features (an intercept column is added; it is not penalised).
      y: [N] 0/1 labels.
      w: [B, N] non-negative prompt weights, one fit per row.
      l2: penalty on the slopes.
      iters: Newton steps.

    Returns:
      [B, F + 1] coefficients (intercept first).
    """
    x1 = np.hstack([np.ones((len(x), 1)), x])
    f1 = x1.shape[1]
    beta = np.zeros((w.shape[0], f1))
    pen = l2 * np.eye(f1)
    pen[0, 0] = 1e-8
    outer = (x1[:, :, None] * x1[:, None, :]).reshape(len(x), f1 * f1)  # [N, (F + 1)^2]
    for _ in range(iters):
        p = _sigmoid(beta @ x1.T)  # [B, N]
        grad = (w * (p - y)) @ x1 + beta @ pen
        hess = ((w * p * (1 - p)) @ outer).reshape(-1, f1, f1) + pen  # one GEMM for all fits
        beta = beta - np.linalg.solve(hess, grad[..., None])[..., 0]
    return beta


def weighted_auroc(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Row-wise weighted AUROC P(s_pos > s_neg) of [B, N] scores (continuous: no ties)."""
    order = np.argsort(scores, axis=1)
    y = np.asarray(labels, np.float64)[order]
    w = np.take_along_axis(weights, order, axis=1)
    w_neg = w * (1 - y)
    below = np.cumsum(w_neg, axis=1) - w_neg
    with np.errstate(invalid="ignore", divide="ignore"):
        return (w * y * below).sum(1) / ((w * y).sum(1) * w_neg.sum(1))


def delta_mon_numpy(
    x_controls: np.ndarray,
    x_emotion: np.ndarray,
    failure: np.ndarray,
    request: np.ndarray,
    *,
    num_requests: int,
    weights: np.ndarray,
    num_folds: int = 5,
    l2: float = 1.0,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Out-of-fold AUROC(controls + emotion) − AUROC(controls), cluster bootstrap with refits.

    Folds are grouped by request; in every draw both probes are refitted on the draw's
    training weights and scored on its held-out prompts; the interval is centred.

    Args:
      x_controls: [N, Fc] control features.
      x_emotion: [N, Fe] emotion features.
      failure: [N] 0/1 failures of one type.
      request: [N] request ids.
      num_requests: U.
      weights: [R, U] request draws.
      num_folds: K.
      l2: penalty.
      seed: fold seed.
      level: coverage.

    Returns:
      ``estimate``, ``lo``, ``hi``, ``samples`` [R].
    """
    w_req = np.vstack([np.ones((1, num_requests)), np.asarray(weights, np.float64)])
    w = w_req[:, request]  # [1 + R, N]
    fold = stats.grouped_folds(num_requests, num_folds, seed)[request]
    y = np.asarray(failure, np.float64)
    auc = []
    for x in (x_controls, np.hstack([x_controls, x_emotion])):
        x = (x - x.mean(0)) / x.std(0)
        train = w[:, None, :] * (fold[None, None, :] != np.arange(num_folds)[None, :, None])
        beta = fit_logistic(x, y, train.reshape(-1, len(y)), l2)
        beta = beta.reshape(len(w), num_folds, -1)[:, fold]  # [1 + R, N, F + 1] own fold
        oof = beta[..., 0] + (beta[..., 1:] * x[None]).sum(-1)
        auc.append(weighted_auroc(oof, y, w))
    delta = auc[1] - auc[0]
    lo, hi = stats.centred_interval(delta[0], delta[1:], level)
    return {"estimate": float(delta[0]), "lo": float(lo), "hi": float(hi), "samples": delta[1:]}


def simulate_monitoring(
    rng: np.random.Generator, *, num_requests: int = 180, cues: int = 4, coupling: float = 0.0
) -> dict[str, np.ndarray]:
    """Clustered probe data in which failures depend on the controls (and, planted, an emotion).

    Per request: 4 control features (harm salience, caution, refusal, policy logit), a latent
    emotion m_u and a failure propensity r_u; each cue adds noise to the features. Emotion
    features are mixtures of the controls plus m_u, so they predict failures marginally, but
    under the null (``coupling`` 0) failures depend on the controls and r_u only: emotion
    features add nothing given the controls.
    """
    u, c = num_requests, cues
    request = np.repeat(np.arange(u), c)
    ctrl_u = rng.normal(size=(u, 4))
    m_u = rng.normal(size=u)
    r_u = rng.normal(0, 1.0, u)
    x_c = ctrl_u[request] + rng.normal(0, 0.5, (u * c, 4))
    mix = rng.normal(0, 0.5, (4, 3))
    x_e = x_c @ mix + m_u[request, None] + rng.normal(0, 0.5, (u * c, 3))
    logit = -1.0 + x_c @ np.array([1.2, -0.5, 0.8, 0.6]) + r_u[request] + coupling * m_u[request]
    y = (rng.uniform(size=u * c) < _sigmoid(logit)).astype(np.float64)
    return {"x_controls": x_c, "x_emotion": x_e, "failure": y, "request": request}


def monitor_study(
    seeds: Sequence[int],
    *,
    coupling: float = 0.0,
    num_requests: int = 180,
    cues: int = 4,
    num_draws: int = 200,
) -> dict[str, Any]:
    """Coverage of 0 and false-positive rate of the Δ_mon interval (numpy probes) over seeds."""
    rows = []
    for seed in seeds:
        rng = np.random.default_rng((seed, 19))
        data = simulate_monitoring(rng, num_requests=num_requests, cues=cues, coupling=coupling)
        out = delta_mon_numpy(
            data["x_controls"], data["x_emotion"], data["failure"], data["request"],
            num_requests=num_requests, weights=stats.request_draws(num_requests, num_draws, seed),
            seed=seed,
        )  # fmt: skip
        rows.append((out["estimate"], out["lo"], out["hi"]))
    est, lo, hi = np.array(rows).T
    return {
        "num_seeds": len(rows),
        "coupling": coupling,
        "coverage_zero": float(np.mean((lo <= 0) & (0 <= hi))),
        "significant": float(np.mean(lo > 0)),
        "negative": float(np.mean(hi < 0)),
        "positive_fraction": float(np.mean(est > 0)),
        "mean_estimate": float(np.mean(est)),
        "mean_half_width": float(np.mean(hi - est)),
    }
