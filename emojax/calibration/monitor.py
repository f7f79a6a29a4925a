"""Δ_mon in NumPy for the calibration: the probes' estimator with a fixed penalty.

Dimension legend: N prompts, U requests, F features (Fc controls, Fe emotion), D = 1 + R
draws (the full data first), K folds, B = D·K fits.

`delta_mon_numpy` computes what `emojax.probes.delta_mon` computes (out-of-fold AUROC of
controls + emotion minus controls alone; folds grouped by request and stratified by failing
requests, dealt again in every draw; every probe refitted in every cluster draw; a centred
interval), with one L2 penalty instead of a nested-CV choice among four. It exists because
the calibration refits Δ_mon 2 x 5 times per simulated axis: on this project's 2-core CPU the
JAX estimator takes ~17 s per call at 200 draws and ~1,000 prompts, this one ~0.3 s.
`fit_logistic` is tested against scikit-learn.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from emojax import stats


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # = 1 / (1 + exp(-x)), without overflow


def fit_logistic(
    x: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    l2: float,
    iters: int = 8,
    init: np.ndarray | None = None,
    newton: int | None = None,
) -> np.ndarray:
    """Batched weighted L2 logistic regression by Newton's method.

    Args:
      x: [N, F] features (an intercept column is added; it is not penalised).
      y: [N] 0/1 labels.
      w: [B, N] non-negative prompt weights, one fit per row.
      l2: penalty on the slopes (on the weighted sum of log losses).
      iters: steps.
      init: [B, F + 1] or [F + 1] starting coefficients (zeros when None).
      newton: steps that recompute the Hessian (all when None); later steps reuse the last
        one (the chord method: from a close start it converges as fast, and the Hessian is
        most of a step's cost).

    Returns:
      [B, F + 1] coefficients (intercept first).
    """
    # float32 products (half the time of float64 on this CPU), float64 Newton solves.
    x1 = np.hstack([np.ones((len(x), 1)), x]).astype(np.float32)
    y = np.asarray(y, np.float32)
    w = np.asarray(w, np.float32)
    f1 = x1.shape[1]
    beta = np.zeros((w.shape[0], f1)) if init is None else np.broadcast_to(init, (w.shape[0], f1))
    pen = l2 * np.eye(f1)
    pen[0, 0] = 1e-8
    outer = (x1[:, :, None] * x1[:, None, :]).reshape(len(x), f1 * f1)  # [N, (F + 1)^2]
    for step in range(iters):
        p = _sigmoid(beta.astype(np.float32) @ x1.T)  # [B, N]
        grad = ((w * (p - y)) @ x1).astype(np.float64) + beta @ pen
        if newton is None or step < newton:
            hess = ((w * p * (1 - p)) @ outer).reshape(-1, f1, f1).astype(np.float64) + pen
            inv = np.linalg.inv(hess)
        beta = beta - (inv @ grad[..., None])[..., 0]
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


def stratified_grouped_folds(
    rng: np.random.Generator, failing: np.ndarray, multiplicity: np.ndarray, num_folds: int
) -> np.ndarray:
    """[D, U] folds per draw: grouped by request, stratified by failing prompts.

    The NumPy form of `emojax.probes.stratified_grouped_folds`: requests ordered by (present,
    failing prompts x multiplicity descending, multiplicity descending, random) are dealt to
    folds in a serpentine under a random relabelling, so fold sizes and failing requests per
    fold differ by at most one.

    Args:
      rng: generator.
      failing: [U] failing prompts per request.
      multiplicity: [D, U] request multiplicities of each draw.
      num_folds: K.
    """
    m = np.asarray(multiplicity, np.float64)
    d, u = m.shape
    keys = (rng.uniform(size=(d, u)), -m, -m * failing[None], m <= 0)
    order = np.lexsort(keys, axis=-1)
    pos = np.arange(u) % (2 * num_folds)
    deal = np.where(pos < num_folds, pos, 2 * num_folds - 1 - pos)
    relabel = np.stack([rng.permutation(num_folds) for _ in range(d)])
    folds = np.empty((d, u), np.int64)
    np.put_along_axis(folds, order, np.take_along_axis(relabel, deal[None].repeat(d, 0), 1), 1)
    return folds


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
    iters: int = 3,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Out-of-fold AUROC(controls + emotion) − AUROC(controls), cluster bootstrap with refits.

    In every draw the folds are dealt again (`stratified_grouped_folds` on the draw's
    multiplicities) and both probes are refitted on each fold's training prompts (weights:
    the draw's multiplicities), starting from the full-data fit: one Newton step, then chord
    steps (``iters`` in all: draws agree with fits to convergence to ~1e-4 in AUROC); the
    interval is centred on the full-data estimate.

    Args:
      x_controls: [N, Fc] control features.
      x_emotion: [N, Fe] emotion features.
      failure: [N] 0/1 failures of one type.
      request: [N] request ids in [0, U).
      num_requests: U.
      weights: [R, U] request draws.
      num_folds: K.
      l2: penalty on standardised slopes.
      iters: steps per draw.
      seed: seed of the folds.
      level: coverage.

    Returns:
      ``estimate``, ``lo``, ``hi``, ``samples`` [R] (NaN where a draw lacks a class),
      ``auroc_controls`` and its draws ``auroc_controls_samples`` [R] (the relative scale's
      denominator), ``auroc_full``.
    """
    request = np.asarray(request)
    w_req = np.vstack([np.ones((1, num_requests)), np.asarray(weights, np.float64)])  # [D, U]
    w = w_req[:, request]  # [D, N]
    y = np.asarray(failure, np.float64)
    failing = np.bincount(request, y, num_requests)
    folds = stratified_grouped_folds(np.random.default_rng([seed, 5]), failing, w_req, num_folds)
    fold = folds[:, request]  # [D, N]
    train = w[:, None, :] * (fold[:, None, :] != np.arange(num_folds)[None, :, None])  # [D, K, N]
    auc = []
    for x in (x_controls, np.hstack([x_controls, x_emotion])):
        x = (x - x.mean(0)) / x.std(0)
        start = fit_logistic(x, y, np.ones((1, len(y))), l2, iters=10)[0]
        beta = fit_logistic(x, y, train.reshape(-1, len(y)), l2, iters, start, newton=1)
        beta = beta.reshape(len(w), num_folds, -1)
        logits = beta[..., :1] + beta[..., 1:] @ x.T  # [D, K, N]
        oof = np.take_along_axis(logits, fold[:, None], 1)[:, 0]  # each prompt's own fold
        auc.append(weighted_auroc(oof, y, w))
    delta = auc[1] - auc[0]
    lo, hi = stats.centred_interval(delta[0], delta[1:], level)
    return {
        "estimate": float(delta[0]),
        "lo": float(lo),
        "hi": float(hi),
        "samples": delta[1:],
        "auroc_controls": float(auc[0][0]),
        "auroc_controls_samples": auc[0][1:],
        "auroc_full": float(auc[1][0]),
    }
