"""Δ_mon per failure type and its random-direction null (DESIGN.md section 4).

``delta_mon`` is the out-of-fold AUROC of predicting the model's own failures of ONE type from
controls + emotion projections minus controls alone. The request is the unit: CV folds are
grouped by request (cue variants of a request never straddle train and test), L2 is chosen by
nested CV inside the training folds, every training set is standardised on its own prompts,
and the interval is a cluster bootstrap over requests that refits every probe (nested CV
included) in every draw, centred on the full-data estimate. ``delta_mon_null`` is the same
statistic with norm-matched random directions in place of the emotions.

Dimension letters: N prompts, U requests, R bootstrap draws (``weights [R, U]``), D = 1 + R
draws (the full data first), T training sets of a nested CV, V regularisation values, K folds,
P features, A extended arms (1, or the null draws), Q random directions.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from emojax import stats
from emojax.probes.crossval import DEFAULT_L2_GRID, stratified_grouped_folds
from emojax.probes.features import FeatureSets, _standardize
from emojax.probes.fit import _newton_logistic, _nll

Array = jax.Array

_NEWTON_TOL = 1e-4  # Δ_mon probes stop once no training logit moves more than this in a step.


@functools.cache
def _nested_cv_sets(num_folds: int) -> tuple[np.ndarray, np.ndarray]:
    """The distinct training sets of a K-fold nested CV and where each (outer, inner) fit is.

    Set k < K leaves out fold k (the outer fit of fold k); the inner fit (k, j) trains on the
    folds not in {k, j}, the same set as (j, k), so only K (K - 1) / 2 inner sets are fitted.

    Returns:
      excluded [T, K] {0, 1} folds each set leaves out (T = K (K + 1) / 2) and index [K, K]
      of the set of the inner fit (k, j) (the diagonal holds the outer set, never used).
    """
    k = num_folds
    pairs = [(a, b) for a in range(k) for b in range(a + 1, k)]
    excluded = np.zeros((k + len(pairs), k), np.float32)
    excluded[np.arange(k), np.arange(k)] = 1.0
    index = np.diag(np.arange(k))
    for t, (a, b) in enumerate(pairs, start=k):
        excluded[t, [a, b]] = 1.0
        index[a, b] = index[b, a] = t
    return excluded, index


_MIN_FOLD_VAR = 1e-4  # A column (near) constant on a training set is penalised as if sd = 0.01.


def _nested_cv_oof(
    x: Array, y: Array, s: Array, folds: Array, l2_grid: Array, num_folds: int, num_steps: int
) -> Array:
    """Out-of-fold logits [N] of one probe family under prompt weights and grouped folds.

    Every training set is standardised on its own (weighted) prompts: a probe on columns
    z = (x - m) / sd with penalty l2 |v|^2 equals a probe on x with penalty l2 sd^2 |w|^2 (the
    unpenalised bias absorbs m), so the in-fold standardisation costs a per-fit penalty
    vector, not a per-fit copy of x. The l2 of outer fold k minimises the pooled validation
    log loss of the inner fits (k, j), j != k.

    Args:
      x: [N, P] features (standardised on all prompts, for conditioning only).
      y: [N] labels in {0, 1}.
      s: [N] prompt weights (request multiplicities of a draw; 0 drops a prompt).
      folds: [N] prompt folds (grouped by request).
      l2_grid: [V] candidate penalties (on standardised weights).
      num_folds: K.
      num_steps: at most this many Newton iterations (converged fits stop early).
    """
    excluded, index = (jnp.asarray(a) for a in _nested_cv_sets(num_folds))
    n, p = x.shape
    in_fold = jax.nn.one_hot(folds, num_folds, dtype=jnp.float32)  # [N, K]
    train = s[None, :] * (1.0 - excluded @ in_fold.T)  # [T, N]
    tw = train / jnp.maximum(jnp.sum(train, axis=1, keepdims=True), 1e-12)
    mean = tw @ x
    var = jnp.maximum(tw @ x**2 - mean**2, _MIN_FOLD_VAR)  # [T, P]
    v = l2_grid.shape[0]
    penalty = l2_grid[None, :, None] * var[:, None, :]  # [T, V, P]
    ones = jnp.ones(p, jnp.float32)
    fit = lambda w, pen: _newton_logistic(x, y, w, pen, ones, num_steps, _NEWTON_TOL)
    theta = jax.vmap(fit)(jnp.repeat(train, v, axis=0), penalty.reshape(-1, p))  # [T*V, P+1]
    logits = (theta[:, :-1] @ x.T + theta[:, -1:]).reshape(-1, v, n)  # [T, V, N]
    nll = _nll(logits, y)
    off_diag = 1.0 - jnp.eye(num_folds, dtype=jnp.float32)
    valid = off_diag[:, :, None] * (in_fold.T * s)[None]  # [K(outer), K(inner), N]
    loss = jnp.einsum("kjn,kjvn->kv", valid, nll[index])  # pooled inner validation loss
    best = jnp.argmin(loss, axis=1)  # [K]
    return logits[folds, best[folds], jnp.arange(n)]


@functools.partial(
    jax.jit, static_argnames=("num_requests", "num_folds", "num_steps", "fpr", "draw_batch")
)
def _delta_mon_program(
    x_controls: Array,
    x_extra: Array,
    y: Array,
    request: Array,
    weights: Array,
    fold_keys: Array,
    l2_grid: Array,
    *,
    num_requests: int,
    num_folds: int,
    num_steps: int,
    fpr: float,
    draw_batch: int,
) -> dict[str, Array]:
    """Out-of-fold AUROC of the controls arm and of A extended arms in D draws, one program.

    The controls arm runs as one more arm, zero-padded to the extended width (a zero column
    gets weight 0, so its fit is the controls-only fit): one nested-CV body to compile.

    Args:
      x_controls: [N, Pc] controls features.
      x_extra: [A, N, Pe] columns each extended arm adds to the controls.
      y: [N] labels; request: [N] request ids.
      weights: [D, U] request multiplicities (row 0: ones, the full data).
      fold_keys: [D] PRNG keys of each draw's grouped folds.
      l2_grid: [V] penalties.

    Returns:
      {auroc [D, 1 + A] (arm 0: controls), oof [D, 1 + A, N], folds [D, U],
      tpr_at_fpr [1 + A] (full data, row 0 of ``weights``)}.
    """
    a, n, pe = x_extra.shape
    padded = jnp.pad(x_controls, ((0, 0), (0, pe)))[None]
    tile = jnp.broadcast_to(x_controls, (a, *x_controls.shape))
    arms = jnp.concatenate([padded, jnp.concatenate([tile, x_extra], axis=-1)])  # [1+A, N, P]

    def one_draw(args: tuple[Array, Array]) -> dict[str, Array]:
        w_u, key = args
        folds_u = stratified_grouped_folds(
            key, y, request, num_folds, num_requests=num_requests, request_weights=w_u
        )
        s, f = w_u[request], folds_u[request]
        oof = jax.vmap(lambda x: _nested_cv_oof(x, y, s, f, l2_grid, num_folds, num_steps))(arms)
        auroc = jax.vmap(lambda z: stats.auroc(z, y, s))(oof)
        return {"auroc": auroc, "oof": oof, "folds": folds_u}

    d = weights.shape[0]
    bs = max(1, min(draw_batch, d))
    pad = -d % bs  # a remainder would compile a second body
    weights = jnp.concatenate([weights, jnp.ones((pad, weights.shape[1]), weights.dtype)])
    fold_keys = jnp.concatenate([fold_keys, fold_keys[:pad]])
    out = {k: v[:d] for k, v in jax.lax.map(one_draw, (weights, fold_keys), batch_size=bs).items()}
    s0 = weights[0, request]
    out["tpr_at_fpr"] = jax.vmap(lambda z: stats.tpr_at_fpr(z, y, fpr, s0))(out["oof"][0])
    return out


def null_p_value(null: np.ndarray, observed: float) -> float:
    """One-sided p-value ``(1 + #{null >= observed}) / (1 + #null)`` (NaN draws dropped)."""
    null = np.asarray(null, np.float64)
    null = null[np.isfinite(null)]
    if not null.size or not np.isfinite(observed):
        return float("nan")
    return float((1.0 + np.sum(null >= observed)) / (1.0 + null.size))


def _delta_mon_inputs(
    features_controls: Array, labels: Array, request: Array, num_requests: int | None
) -> tuple[Array, np.ndarray, np.ndarray, int, dict[str, int]]:
    """Standardised controls, labels, request ids, U and the failure counts; validates."""
    y = np.asarray(labels, np.float32)
    request = np.asarray(request, np.int64)
    xc = jnp.asarray(stats.require_finite(features_controls, "Δ_mon controls features"))
    if xc.ndim != 2 or y.shape != (xc.shape[0],) or request.shape != y.shape:
        raise ValueError(
            f"Δ_mon: features_controls [N, Fc], labels [N] and request [N] expected; got "
            f"{xc.shape}, {y.shape}, {request.shape}"
        )
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("Δ_mon: labels must be 0/1")
    u = int(request.max()) + 1 if num_requests is None else int(num_requests)
    if request.min() < 0 or request.max() >= u:
        raise ValueError(f"Δ_mon: request ids must lie in [0, {u})")
    failing = np.zeros(u, bool)
    failing[request[y == 1]] = True
    present = np.zeros(u, bool)
    present[request] = True
    counts = {
        "num_failing_requests": int(failing.sum()),
        "num_requests": int(present.sum()),
        "num_failing_prompts": int(y.sum()),
        "num_prompts": int(y.shape[0]),
    }
    return _standardize(xc.astype(jnp.float32)), y, request.astype(np.int32), u, counts


def delta_mon(
    features_controls: Array,
    features_emotion: Array,
    labels: Array,
    request: Array,
    *,
    num_requests: int | None = None,
    weights: np.ndarray | None = None,
    num_draws: int = 200,
    l2_grid: Sequence[float] = DEFAULT_L2_GRID,
    num_folds: int = 5,
    num_steps: int = 30,
    seed: int = 0,
    fpr: float = 0.01,
    level: float = 0.95,
    draw_batch: int = 8,
) -> dict[str, Any]:
    """Δ_mon of one failure type: AUROC(controls + emotion) - AUROC(controls), out of fold.

    Both probes are L2 logistic regressions under nested CV: folds are grouped by request
    (``stratified_grouped_folds``), the l2 of each outer fold is chosen on the other folds,
    and every training set is standardised on its own prompts. The interval is a cluster
    bootstrap with refits: draw r gives request u the multiplicity ``weights[r, u]`` (copies
    of a request share a fold; the folds are drawn again, stratified, in every draw) and the
    whole nested CV of both arms is refitted. The interval is the percentile interval of the
    draws moved so that it is centred on the full-data estimate (``lo = estimate + q_lo -
    median``, ``hi = estimate + q_hi - median``): it always contains the estimate. Its null is
    ``delta_mon_null`` (same folds, emotion columns replaced by random directions).

    All draws (1 + R nested CVs of both arms, each K (K + 1) / 2 x V Newton fits)
    run in one jitted program, ``draw_batch`` draws vmapped at once.

    Args:
      features_controls: [N, Fc] controls: harm-salience, caution and refusal projections and
        the policy logit (``monitor_features`` cuts them from ``build_feature_sets``).
      features_emotion: [N, Fe] emotion projections.
      labels: [N] {0, 1}: the prompt's failure of ONE type (harmful compliance on harmful
        requests, or over-refusal on benign/borderline requests; never pooled).
      request: [N] int request ids in [0, U); cue variants of a request share one.
      num_requests: U (default ``max(request) + 1``); the column count of ``weights``.
      weights: [R, U] int request multiplicities (e.g. ``stats.request_draws``, shared with
        other statistics and axis points so they pair); default: R = ``num_draws`` fresh
        draws from ``seed``.
      num_draws: R when ``weights`` is None.
      l2_grid: candidate penalties on standardised weights.
      num_folds: K.
      num_steps: at most this many Newton iterations per probe (each stops once its logits
        move less than 1e-4 in a step).
      seed: folds (the full-data folds are shared with ``delta_mon_null`` of the same seed).
      fpr: FPR budget of the reported TPRs.
      level: interval coverage.
      draw_batch: draws vmapped at once (memory ~ draw_batch T V N floats per arm).

    Returns:
      dict: ``estimate``, ``lo``, ``hi``, ``half_width_hi`` (= hi - estimate, the smallest
      margin an equivalence test can confirm), ``samples`` [R] (draws of Δ_mon, NaN where a
      draw lacks a class), ``auroc_controls``, ``auroc_full``, ``auroc_controls_samples`` [R]
      (the relative scale's denominator, `emojax.metrics.scales`), ``tpr_at_fpr_controls``,
      ``tpr_at_fpr_full``, ``oof_logits`` [2, N] (controls, full), ``folds`` [U] (full data),
      ``draw_folds`` [R, U],
      ``num_failing_requests``, ``num_requests`` (present), ``num_failing_prompts``,
      ``num_prompts``, ``num_nan_draws``. Floats and NumPy arrays; NaN estimate when one class
      is absent.
    """
    xc, y, request, u, counts = _delta_mon_inputs(features_controls, labels, request, num_requests)
    xe = jnp.asarray(stats.require_finite(features_emotion, "Δ_mon emotion features"))
    if xe.ndim != 2 or xe.shape[0] != y.shape[0]:
        raise ValueError(f"Δ_mon: features_emotion [N, Fe] expected, got {xe.shape}")
    if weights is None:
        weights = stats.request_draws(u, num_draws, seed)
    weights = np.asarray(weights)
    if weights.ndim != 2 or weights.shape[1] != u:
        raise ValueError(f"Δ_mon: weights [R, {u}] expected, got {weights.shape}")
    all_weights = np.concatenate([np.ones((1, u)), weights]).astype(np.float32)
    base = jax.random.key(seed)
    keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.arange(all_weights.shape[0]))
    out = _delta_mon_program(
        xc,
        _standardize(xe.astype(jnp.float32))[None],
        jnp.asarray(y),
        jnp.asarray(request),
        jnp.asarray(all_weights),
        keys,
        jnp.asarray(l2_grid, jnp.float32),
        num_requests=u,
        num_folds=num_folds,
        num_steps=num_steps,
        fpr=fpr,
        draw_batch=draw_batch,
    )
    out = jax.tree.map(np.asarray, out)
    delta = out["auroc"][:, 1] - out["auroc"][:, 0]  # [1 + R]
    estimate, samples = float(delta[0]), delta[1:].astype(np.float64)
    lo, hi = (float(b) for b in stats.centred_interval(estimate, samples, level))
    return {
        "estimate": estimate,
        "lo": lo,
        "hi": hi,
        "half_width_hi": hi - estimate,
        "samples": samples,
        "auroc_controls": float(out["auroc"][0, 0]),
        "auroc_full": float(out["auroc"][0, 1]),
        "auroc_controls_samples": out["auroc"][1:, 0].astype(np.float64),
        "tpr_at_fpr_controls": float(out["tpr_at_fpr"][0]),
        "tpr_at_fpr_full": float(out["tpr_at_fpr"][1]),
        "oof_logits": out["oof"][0],
        "folds": out["folds"][0],
        "draw_folds": out["folds"][1:],
        "num_nan_draws": int(np.sum(~np.isfinite(samples))),
        **counts,
    }


def _null_columns(num_columns: int, num_null: int, arm_size: int, seed: int) -> np.ndarray:
    """[num_null, arm_size] distinct random columns per null draw, each column used as evenly
    as possible (disjoint arms while ``num_columns >= num_null * arm_size``: overlapping arms
    make correlated null draws and too narrow a null)."""
    rs = np.random.default_rng([seed, 17])
    used = np.zeros(num_columns)
    columns = []
    for _ in range(num_null):
        pick = np.lexsort((rs.uniform(size=num_columns), used))[:arm_size]
        used[pick] += 1
        columns.append(pick)
    return np.stack(columns)


def delta_mon_null(
    features_controls: Array,
    random_features: Array,
    labels: Array,
    request: Array,
    *,
    num_requests: int | None = None,
    num_null: int = 16,
    arm_size: int = 3,
    observed: float | None = None,
    l2_grid: Sequence[float] = DEFAULT_L2_GRID,
    num_folds: int = 5,
    num_steps: int = 30,
    seed: int = 0,
    fpr: float = 0.01,
    draw_batch: int = 8,
) -> dict[str, Any]:
    """The null of ``delta_mon``: the same statistic with random directions as the emotions.

    Null draw i adds ``arm_size`` distinct random-direction projections (chosen at random from
    the Q available) to the controls, in place of the emotion projections, and computes the
    full-data Δ_mon on the same folds as ``delta_mon`` with the same ``seed`` (so the controls
    arm, and its AUROC, is shared). All null arms run in one program.

    Args:
      features_controls: [N, Fc] as for ``delta_mon``.
      random_features: [Q, N] projections on Q norm-matched random directions (e.g.
        ``project(acts, random_dirs)[:, layer].T``), or [Q, N, F], read as Q x F columns.
        With Q >= num_null x arm_size the null arms are disjoint (independent draws); with
        fewer they share columns and the null is too narrow (p-values too small).
      labels, request, num_requests: as for ``delta_mon``.
      num_null: null draws (>= 16 for a p-value resolution of 1/17).
      arm_size: random columns per null draw (= the number of emotions); needs Q >= arm_size.
      observed: the Δ_mon estimate to test; gives ``p_value`` (else NaN; see
        ``null_p_value``).
      l2_grid, num_folds, num_steps, seed, fpr, draw_batch: as for ``delta_mon``.

    Returns:
      dict: ``null`` [num_null], ``q05``, ``q95``, ``p_value`` (one-sided, ``(1 + #{null >=
      observed}) / (1 + num_null)``), ``auroc_controls``, ``auroc_null`` [num_null],
      ``columns`` [num_null, arm_size] (which random columns each draw used).
    """
    xc, y, request, u, _ = _delta_mon_inputs(features_controls, labels, request, num_requests)
    rf = np.asarray(stats.require_finite(random_features, "Δ_mon random features"), np.float32)
    if rf.ndim == 3:
        rf = np.moveaxis(rf, 2, 1).reshape(-1, rf.shape[1])  # [Q*F, N]
    if rf.ndim != 2 or rf.shape[1] != y.shape[0]:
        raise ValueError(
            f"Δ_mon null: random_features [Q, N] or [Q, N, F] expected, got {rf.shape}"
        )
    if rf.shape[0] < arm_size:
        raise ValueError(f"Δ_mon null: {rf.shape[0]} random columns < arm_size {arm_size}")
    columns = _null_columns(rf.shape[0], num_null, arm_size, seed)
    x_rand = _standardize(jnp.asarray(rf.T))  # [N, Q']
    x_extra = jnp.moveaxis(x_rand[:, columns], 1, 0)  # [num_null, N, arm_size]
    out = _delta_mon_program(
        xc,
        x_extra,
        jnp.asarray(y),
        jnp.asarray(request),
        jnp.ones((1, u), jnp.float32),
        jax.random.fold_in(jax.random.key(seed), 0)[None],
        jnp.asarray(l2_grid, jnp.float32),
        num_requests=u,
        num_folds=num_folds,
        num_steps=num_steps,
        fpr=fpr,
        draw_batch=draw_batch,
    )
    auc_c = float(out["auroc"][0, 0])
    auc_null = np.asarray(out["auroc"][0, 1:], np.float64)
    null = auc_null - auc_c
    finite = null[np.isfinite(null)]
    q05, q95 = np.quantile(finite, [0.05, 0.95]) if finite.size else (np.nan, np.nan)
    return {
        "null": null,
        "q05": float(q05),
        "q95": float(q95),
        "p_value": float("nan") if observed is None else null_p_value(null, observed),
        "auroc_controls": auc_c,
        "auroc_null": auc_null,
        "columns": columns,
    }


def monitor_features(features: FeatureSets, layer: int) -> tuple[Array, Array]:
    """``(features_controls [N, Fc], features_emotion [N, Fe])`` at one layer: ``delta_mon``'s
    inputs cut from ``build_feature_sets`` / ``feature_sets_from_projections`` output."""
    ci, fi = features.names.index("controls"), features.names.index("controls+emotion")
    nc, nf = len(features.columns[ci]), len(features.columns[fi])
    if features.columns[fi][:nc] != features.columns[ci]:
        raise ValueError("monitor_features: controls+emotion must extend the controls set")
    full = features.features[fi, layer, :, :nf]
    return full[:, :nc], full[:, nc:]
