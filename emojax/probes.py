"""Batched linear monitoring probes and the incremental monitoring value of emotion features.

A probe is L2-regularised logistic regression fitted by damped Newton (IRLS) steps. Every
probe of an analysis (feature set x layer x refit-bootstrap resample x fold x regularisation
value) is fitted in one jitted program: feature sets of different widths are zero-padded to a
common width P and carry a column mask, and folds and bootstrap resamples are sample-weight
vectors, so all probes share static shapes and stack.

Loss of one probe (weights w [P], bias b, sample weights s [N]):

    sum_n s_n * nll(x_n . w + b, y_n) / sum_n s_n  +  l2 / 2 * |w|^2

(the bias is not penalised). scikit-learn's ``LogisticRegression(C=C)`` minimises
``C * sum_n nll + |w|^2 / 2``, so the two agree for ``C = 1 / (l2 * N_train)``.

Regularisation is chosen by nested cross-validation: for outer fold k, every other fold j
serves once as the inner validation fold (train on folds not in {k, j}); the l2 with the lowest
pooled inner validation log loss is refitted on all folds but k and scores fold k.

Monitoring value (DESIGN.md section 4), per failure type: ``delta_mon`` is the out-of-fold
AUROC of predicting the model's own failures of ONE type from controls + emotion projections
minus controls alone. The request is the unit: CV folds are grouped by request (cue variants
of a request never straddle train and test), L2 is chosen by nested CV inside the training
folds, every training set is standardised on its own prompts, and the interval is a cluster
bootstrap over requests that refits every probe (nested CV included) in every draw, centred
on the full-data estimate. ``delta_mon_null`` is the same statistic with norm-matched random
directions in place of the emotions. ``monitor`` is the per-layer scan (all sets x layers in
one program, optionally grouped by request, with an LR test of the nested models).

Dimension letters: N prompts, L layers, D model, P (padded) features, S feature sets,
G probe groups (= S * L), B refit-bootstrap resamples, K folds, R regularisation values,
M bootstrap resamples. In the Δ_mon section R counts bootstrap draws (``weights [R, U]``) and
V regularisation values; U requests, D = 1 + R draws (the full data first), T training sets
of a nested CV, A arms, Q random directions.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from emojax import stats

Array = jax.Array

CONTROLS = ("harm_salience", "caution", "refusal")
EMOTIONS = ("concern", "eagerness", "self_doubt")
POLICY_LOGIT = "policy_logit"
FEATURE_SET_NAMES = ("controls", "controls+emotion", "residual")
DEFAULT_L2_GRID = (1e-3, 1e-2, 1e-1, 1.0)
_JITTER = 1e-6  # Keeps the Newton system positive definite; does not change the optimum.
_STEP_SIZES = (1.0, 0.5, 0.125)  # Backtracking candidates (staying put is the fourth).
_NEWTON_TOL = 1e-4  # Δ_mon probes stop once no training logit moves more than this in a step.


# ----------------------------------------------------------------------------------------
# Single probes.


class LogisticFit(NamedTuple):
    """A fitted logistic probe: ``logit = x . weights + bias``."""

    weights: Array  # [P]
    bias: Array  # []


def _nll(logits: Array, y: Array) -> Array:
    """Per-item negative log-likelihood of {0, 1} labels under ``sigmoid(logits)``."""
    return jax.nn.softplus(logits) - y * logits


def _newton_logistic(
    X: Array,
    y: Array,
    sample_weights: Array,
    l2: Array,
    mask: Array,
    num_steps: int,
    tol: float | None = None,
) -> Array:
    """Damped Newton solve of one probe; returns theta = [weights (P), bias] of size P + 1.

    ``l2`` is a scalar or a [P] per-column penalty. With ``tol`` the iterations stop early
    (at most ``num_steps``) once no training logit moves by more than ``tol`` in a step;
    under vmap the batch runs until its slowest fit has converged.
    """
    n = X.shape[0]
    Xa = jnp.concatenate([X * mask, jnp.ones((n, 1), X.dtype)], axis=1)  # [N, P+1]
    # Padded columns get a unit penalty (their weight stays exactly 0); the bias gets none.
    penalty = jnp.concatenate([l2 * mask + (1.0 - mask), jnp.zeros(1, X.dtype)])
    s = sample_weights / jnp.maximum(jnp.sum(sample_weights), 1e-12)
    steps = jnp.asarray(_STEP_SIZES, X.dtype)
    d = Xa.shape[1]
    # Per-item outer products turn every vmapped fit's Hessian into one shared GEMM; only
    # worth their N * (P+1)^2 memory for narrow probes.
    outer = (Xa[:, :, None] * Xa[:, None, :]).reshape(n, d * d) if n * d * d <= 2**24 else None

    def objective(logits: Array, theta: Array) -> Array:
        return jnp.sum(s * _nll(logits, y)) + 0.5 * jnp.sum(penalty * theta**2)

    def newton_step(state: tuple[Array, ...]) -> tuple[Array, ...]:
        theta, logits, loss, step, _ = state  # logits = Xa @ theta, carried
        p = jax.nn.sigmoid(logits)
        grad = Xa.T @ (s * (p - y)) + penalty * theta
        curvature = s * p * (1.0 - p)
        if outer is None:
            hess = (Xa * curvature[:, None]).T @ Xa
        else:
            hess = (curvature @ outer).reshape(d, d)
        delta = jnp.linalg.solve(hess + jnp.diag(penalty + _JITTER), grad)
        # Backtracking over a fixed set of step sizes keeps Newton monotone under vmap; the
        # current point (step 0) competes with its carried loss.
        move = Xa @ delta
        cand_logits = jnp.concatenate([logits[None] - steps[:, None] * move[None], logits[None]])
        cand_theta = jnp.concatenate([theta[None] - steps[:, None] * delta[None], theta[None]])
        losses = jax.vmap(objective)(cand_logits[:-1], cand_theta[:-1])
        losses = jnp.concatenate([jnp.where(jnp.isfinite(losses), losses, jnp.inf), loss[None]])
        best = jnp.argmin(losses)
        moved = jnp.concatenate([steps, jnp.zeros(1, X.dtype)])[best] * jnp.max(jnp.abs(move))
        return cand_theta[best], cand_logits[best], losses[best], step + 1, moved

    theta0, logits0 = jnp.zeros(d, X.dtype), jnp.zeros(n, X.dtype)
    state = (theta0, logits0, objective(logits0, theta0), 0, jnp.asarray(jnp.inf, X.dtype))
    if tol is None:
        return jax.lax.fori_loop(0, num_steps, lambda _, st: newton_step(st), state)[0]
    running = lambda st: (st[3] < num_steps) & (st[4] > tol)
    return jax.lax.while_loop(running, newton_step, state)[0]


@functools.partial(jax.jit, static_argnames=("num_steps",))
def fit_logistic(
    X: Array,
    y: Array,
    l2: float | Array,
    weights: Array | None = None,
    *,
    mask: Array | None = None,
    num_steps: int = 20,
) -> LogisticFit:
    """Fits one L2-regularised logistic regression (jittable, vmappable).

    Args:
      X: [N, P] features (not standardised here; standardise first if scales differ).
      y: [N] labels in {0, 1} (bool or numeric).
      l2: penalty on the weights (see module docstring for the loss and the sklearn ``C``).
      weights: optional [N] non-negative sample weights (default: all 1).
      mask: optional [P] {0, 1} column mask; masked columns get weight exactly 0.
      num_steps: Newton iterations (static); 20 converges to float32 precision in practice.

    Returns:
      LogisticFit(weights [P], bias []). When P > N the solve runs in the N-dimensional row
      space of X (exact: the penalty removes any component orthogonal to it), so a probe on
      a full residual stream (D in the thousands) costs an N x N solve, not D x D.
    """
    X = jnp.asarray(X, jnp.float32)
    n, p = X.shape
    y = jnp.asarray(y, jnp.float32)
    weights = jnp.ones(n, jnp.float32) if weights is None else jnp.asarray(weights, jnp.float32)
    mask = jnp.ones(p, jnp.float32) if mask is None else jnp.asarray(mask, jnp.float32)
    l2 = jnp.asarray(l2, jnp.float32)
    if p > n:
        _, sv, vt = jnp.linalg.svd(X * mask, full_matrices=False)  # vt [N, P]
        theta = _newton_logistic(
            (X * mask) @ vt.T, y, weights, l2, jnp.ones(n, jnp.float32), num_steps
        )
        return LogisticFit(vt.T @ theta[:-1], theta[-1])
    theta = _newton_logistic(X, y, weights, l2, mask, num_steps)
    return LogisticFit(theta[:-1], theta[-1])


def predict_logits(fit: LogisticFit, X: Array) -> Array:
    """Probe logits ``X @ weights + bias`` for X [..., P]."""
    return jnp.asarray(X, jnp.float32) @ fit.weights + fit.bias


# ----------------------------------------------------------------------------------------
# Folds and nested cross-validation of many probes at once.


def stratified_folds(rng: Array, labels: Array, num_folds: int) -> Array:
    """[N] int32 fold ids in [0, num_folds): a random split balanced within each class."""
    y = jnp.asarray(labels).astype(jnp.int32)
    u = jax.random.uniform(rng, y.shape)
    order = jnp.argsort(y + u)  # class 0 first, random within class
    rank = jnp.zeros_like(y).at[order].set(jnp.arange(y.shape[0], dtype=jnp.int32))
    rank_in_class = rank - jnp.where(y == 1, jnp.sum(y == 0), 0)
    return (rank_in_class % num_folds).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("num_folds", "num_requests"))
def stratified_grouped_folds(
    rng: Array,
    labels: Array,
    request: Array,
    num_folds: int,
    *,
    num_requests: int,
    request_weights: Array | None = None,
) -> Array:
    """[U] int32 fold of every request: CV grouped by request, stratified by its failures.

    A prompt's fold is ``folds[request[prompt]]``, so cue variants of one request (and, in a
    cluster-bootstrap draw, every copy of it) always share a fold. Requests are ordered by
    (present in the data, failing prompts x multiplicity descending, multiplicity
    descending, random) and dealt to folds in a serpentine (0..K-1, K-1..0, ...) under a
    random relabelling of the folds: fold sizes in requests, and in failing requests, differ
    by at most one. Jittable (``num_folds`` and ``num_requests`` static), so every bootstrap
    draw deals its own folds inside the draw program; ``stats.grouped_folds`` is the
    unstratified NumPy counterpart.

    Args:
      rng: PRNG key.
      labels: [N] {0, 1} failure labels.
      request: [N] int request ids in [0, U).
      num_folds: K.
      num_requests: U (ids without prompts, or with weight 0, are dealt last).
      request_weights: optional [U] multiplicities of a cluster-bootstrap draw.

    Returns:
      [U] fold ids in [0, K).
    """
    y = jnp.asarray(labels, jnp.float32)
    request = jnp.asarray(request, jnp.int32)
    w = (
        jnp.ones(num_requests, jnp.float32)
        if request_weights is None
        else jnp.asarray(request_weights, jnp.float32)
    )
    failing = jax.ops.segment_sum(y, request, num_requests) * w
    present = jax.ops.segment_sum(jnp.ones_like(y), request, num_requests) * w > 0
    k_order, k_label = jax.random.split(rng)
    order = jnp.lexsort((jax.random.uniform(k_order, (num_requests,)), -w, -failing, ~present))
    rank = jnp.zeros(num_requests, jnp.int32).at[order].set(jnp.arange(num_requests))
    block, pos = rank // num_folds, rank % num_folds
    slot = jnp.where(block % 2 == 0, pos, num_folds - 1 - pos)
    return jax.random.permutation(k_label, num_folds)[slot].astype(jnp.int32)


class CrossValidated(NamedTuple):
    """Nested cross-validation of G probe groups (arrays; leading axis G)."""

    oof_logits: Array  # [G, N] out-of-fold logits (the l2 chosen per outer fold)
    chosen_l2: Array  # [G, K] l2 picked by the inner CV for each outer fold
    inner_loss: Array  # [G, K, R] pooled inner validation log loss
    full_deviance: Array  # [G] deviance of a fit on all prompts at full_fit_l2
    refit_oof_logits: Array  # [G, B, N] out-of-fold logits refitted on each resample


def cross_validate(
    X: Array,
    mask: Array,
    y: Array,
    folds: Array,
    l2_grid: Array,
    *,
    num_folds: int,
    sample_weights: Array | None = None,
    refit_weights: Array | None = None,
    full_fit_l2: float = 1e-6,
    num_steps: int = 20,
    batch_size: int = 4,
) -> CrossValidated:
    """Nested-CV probes for every group x fold pair x l2 (x refit resample) in one program.

    Jittable (``num_folds``, ``num_steps``, ``batch_size`` static) and vmappable. Per group it
    fits K * K * R nested-CV probes, one probe on all prompts (for likelihood-ratio tests)
    and, per refit resample, K * R outer-fold probes; all of them in one batch of Newton solves.

    Args:
      X: [G, N, P] features per probe group (e.g. feature set x layer, flattened).
      mask: [G, P] column masks.
      y: [N] labels in {0, 1}.
      folds: [N] fold ids in [0, num_folds).
      l2_grid: [R] candidate penalties.
      num_folds: K.
      sample_weights: optional [N] prompt weights for the main fits.
      refit_weights: optional [B, N] resample weights (bootstrap counts). Each resample's
        out-of-fold logits come from probes refitted on it with the l2 chosen for that outer
        fold on the original sample (hyperparameter choice held fixed). A prompt's copies
        share its fold, so resampling never leaks a prompt across folds.
      full_fit_l2: penalty of the all-prompt fit behind ``full_deviance`` (near 0: a
        maximum-likelihood fit, as the chi-squared approximation assumes).
      num_steps: Newton iterations per probe.
      batch_size: probe groups vmapped at once (memory ~ (K^2 R + B K R) * N * P floats each).

    Returns:
      CrossValidated arrays.
    """
    y = jnp.asarray(y, jnp.float32)
    l2_grid = jnp.asarray(l2_grid, jnp.float32)
    g, n, p = X.shape
    k, r = num_folds, l2_grid.shape[0]
    sw = jnp.ones(n, jnp.float32) if sample_weights is None else jnp.asarray(sample_weights)
    rw = jnp.zeros((0, n), jnp.float32) if refit_weights is None else jnp.asarray(refit_weights)
    b = rw.shape[0]
    k_idx = jnp.arange(k)
    # Fit (k, j): train on folds not in {k, j}; j != k is an inner fit, j == k the outer refit.
    in_fold = folds[None, :] == k_idx[:, None]  # [K, N]
    train = ~in_fold[:, None, :] & ~in_fold[None, :, :]  # [K, K, N]
    fit_w = jnp.concatenate(
        [
            jnp.broadcast_to((train * sw)[:, :, None], (k, k, r, n)).reshape(-1, n),
            sw[None],
            jnp.broadcast_to((~in_fold * rw[:, None])[:, :, None], (b, k, r, n)).reshape(-1, n),
        ]
    )  # [K*K*R + 1 + B*K*R, N]
    fit_l2 = jnp.concatenate(
        [jnp.tile(l2_grid, k * k), jnp.full(1, full_fit_l2, jnp.float32), jnp.tile(l2_grid, b * k)]
    )
    nested = k * k * r
    valid = (~jnp.eye(k, dtype=bool)[:, :, None, None] & in_fold[None, :, None, :]) * sw

    def one_group(args: tuple[Array, Array]) -> tuple[Array, ...]:
        x, m = args
        # One flat batch of fits keeps a single Newton program (compile time matters on CPU).
        fit = lambda w, l2: _newton_logistic(x, y, w, l2, m, num_steps)
        theta = jax.vmap(fit)(fit_w, fit_l2)  # [F, P+1]
        logits = theta[:, :-1] @ (x * m).T + theta[:, -1:]  # [F, N]
        nll = _nll(logits[:nested].reshape(k, k, r, n), y)
        loss = jnp.sum(valid * nll, axis=(1, 3)) / jnp.maximum(jnp.sum(valid, axis=(1, 3)), 1e-12)
        best = jnp.argmin(loss, axis=1)  # [K]
        outer = logits[:nested].reshape(k, k, r, n)[k_idx, k_idx, best]  # [K, N]
        oof = jnp.sum(jnp.where(in_fold, outer, 0.0), axis=0)
        full_deviance = 2.0 * jnp.sum(sw * _nll(logits[nested], y))
        if b == 0:  # lax.map's batching cannot return zero-size outputs
            return oof, l2_grid[best], loss, full_deviance
        refit = logits[nested + 1 :].reshape(b, k, r, n)[:, k_idx, best]  # [B, K, N]
        refit_oof = jnp.sum(jnp.where(in_fold, refit, 0.0), axis=1)
        return oof, l2_grid[best], loss, full_deviance, refit_oof

    # Pad G to a multiple of batch_size: lax.map would compile a second body for a remainder.
    bs = max(1, min(batch_size, g))
    pad = -g % bs
    X = jnp.concatenate([X, jnp.zeros((pad, n, p), X.dtype)])
    mask = jnp.concatenate([mask, jnp.ones((pad, p), mask.dtype)])
    out = tuple(o[:g] for o in jax.lax.map(one_group, (X, mask), batch_size=bs))
    if b == 0:
        out = (*out, jnp.zeros((g, 0, n), jnp.float32))
    return CrossValidated(*out)


def likelihood_ratio_test(
    X_restricted: Array,
    X_full: Array,
    y: Array,
    *,
    mask_restricted: Array | None = None,
    mask_full: Array | None = None,
    l2: float = 1e-6,
    num_steps: int = 25,
) -> tuple[Array, Array, Array]:
    """Likelihood-ratio test of nested logistic models (the full one adds columns).

    Both models are fitted on all items with a negligible ridge ``l2`` (for numerical safety
    only); the statistic is the deviance difference, chi-squared with df = the number of added
    columns under the null.

    Returns:
      (statistic, df, p_value), scalars.
    """
    y = jnp.asarray(y, jnp.float32)

    def deviance(X: Array, mask: Array | None) -> tuple[Array, Array]:
        X = jnp.asarray(X, jnp.float32)
        m = jnp.ones(X.shape[1], jnp.float32) if mask is None else jnp.asarray(mask, jnp.float32)
        theta = _newton_logistic(X, y, jnp.ones_like(y), jnp.float32(l2), m, num_steps)
        logits = (X * m) @ theta[:-1] + theta[-1]
        return 2.0 * jnp.sum(_nll(logits, y)), jnp.sum(m)

    dev_r, p_r = deviance(X_restricted, mask_restricted)
    dev_f, p_f = deviance(X_full, mask_full)
    stat = jnp.maximum(dev_r - dev_f, 0.0)
    df = p_f - p_r
    return stat, df, stats.chi2_sf(stat, df)


# ----------------------------------------------------------------------------------------
# Features.


class FeatureSets(NamedTuple):
    """Stacked, zero-padded feature sets for the probes."""

    names: tuple[str, ...]  # S names, e.g. FEATURE_SET_NAMES
    columns: tuple[tuple[str, ...], ...]  # per set, the names of its real columns
    features: Array  # [S, L, N, P]
    mask: Array  # [S, P] 1.0 for real columns

    def subset(self, names: Sequence[str]) -> FeatureSets:
        """The named sets only (in that order), padding trimmed to their widest."""
        idx = [self.names.index(k) for k in names]
        width = max(len(self.columns[i]) for i in idx)
        return FeatureSets(
            tuple(names),
            tuple(self.columns[i] for i in idx),
            self.features[jnp.asarray(idx), ..., :width],
            self.mask[jnp.asarray(idx), :width],
        )


def project(acts: Array, directions: Array) -> Array:
    """Projections [N, L, K] of activations [N, L, D] on unit directions [K, L, D]."""
    directions = jnp.asarray(directions, jnp.float32)
    unit = directions / jnp.maximum(jnp.linalg.norm(directions, axis=-1, keepdims=True), 1e-12)
    return jnp.einsum("nld,kld->nlk", jnp.asarray(acts, jnp.float32), unit)


def residual_components(acts: Array, num_components: int) -> Array:
    """Top principal-component scores [N, L, C] of each layer's activations [N, L, D]."""
    acts = jnp.asarray(acts, jnp.float32)
    centred = jnp.swapaxes(acts - acts.mean(0), 0, 1)  # [L, N, D]
    u, sv, _ = jnp.linalg.svd(centred, full_matrices=False)
    c = min(num_components, u.shape[-1])
    return jnp.swapaxes(u[..., :c] * sv[:, None, :c], 0, 1)


def _standardize(x: Array) -> Array:
    """Z-scores every column over items (axis 0); constant columns become 0.

    "Constant" is relative (sd <= 1e-5 x rms): a projection of one repeated token's
    activation varies only by float round-off, which z-scoring would blow up into noise.
    """
    sd = x.std(0)
    constant = sd <= 1e-5 * jnp.sqrt(jnp.mean(x**2, axis=0)) + 1e-30
    return jnp.where(constant, 0.0, (x - x.mean(0)) / jnp.where(constant, 1.0, sd))


def feature_sets_from_projections(
    projections: Mapping[str, Array],
    policy_logit: Array,
    *,
    controls: Sequence[str] = CONTROLS,
    emotions: Sequence[str] = EMOTIONS,
    residual: Array | None = None,
    standardize: bool = True,
) -> FeatureSets:
    """Builds the monitoring feature sets from per-layer projections.

    Projections can be accumulated chunk by chunk (``project`` on each chunk of prompts), so
    this works for activations that never fit in memory at once.

    Args:
      projections: {direction name: [N, L]} projections at the last prompt token.
      policy_logit: [N] the policy's refusal logit (layer independent).
      controls: names of the control directions.
      emotions: names of the emotion directions.
      residual: optional [N, L, C] residual features (e.g. ``residual_components``) for the
        upper-bound set ``residual`` (+ policy logit).
      standardize: z-score every column over prompts (unsupervised, so no label leak).

    Returns:
      FeatureSets with sets ``controls`` (controls + policy logit), ``controls+emotion`` and,
      if ``residual`` is given, ``residual``.
    """
    missing = [k for k in (*controls, *emotions) if k not in projections]
    if missing:
        raise KeyError(f"missing projections {missing}; have {sorted(projections)}")
    logit = jnp.asarray(policy_logit, jnp.float32)
    num_layers = jnp.asarray(projections[controls[0]]).shape[1]
    logit = jnp.broadcast_to(logit[:, None, None], (logit.shape[0], num_layers, 1))
    cols = lambda names: jnp.stack([jnp.asarray(projections[k], jnp.float32) for k in names], -1)
    sets = {"controls": (jnp.concatenate([cols(controls), logit], -1), (*controls, POLICY_LOGIT))}
    sets["controls+emotion"] = (
        jnp.concatenate([cols(controls), logit, cols(emotions)], -1),
        (*controls, POLICY_LOGIT, *emotions),
    )
    if residual is not None:
        residual = jnp.asarray(residual, jnp.float32)
        names = tuple(f"pc{i}" for i in range(residual.shape[-1])) + (POLICY_LOGIT,)
        sets["residual"] = (jnp.concatenate([residual, logit], -1), names)
    width = max(x.shape[-1] for x, _ in sets.values())
    feats, masks = [], []
    for x, names in sets.values():
        x = _standardize(x) if standardize else x
        feats.append(jnp.pad(x, ((0, 0), (0, 0), (0, width - x.shape[-1]))))
        masks.append(jnp.arange(width) < len(names))
    features = jnp.transpose(jnp.stack(feats), (0, 2, 1, 3))  # [S, L, N, P]
    return FeatureSets(
        tuple(sets),
        tuple(names for _, names in sets.values()),
        features,
        jnp.stack(masks).astype(jnp.float32),
    )


def build_feature_sets(
    acts: Array,
    directions: Mapping[str, Array],
    policy_logit: Array,
    *,
    controls: Sequence[str] = CONTROLS,
    emotions: Sequence[str] = EMOTIONS,
    residual_dims: int = 64,
    standardize: bool = True,
) -> FeatureSets:
    """Feature sets from last-prompt-token activations [N, L, D] and directions {name: [L, D]}.

    The ``residual`` upper bound uses the top ``residual_dims`` principal components of each
    layer's activations (0 disables it); projections are on unit-normalised directions.
    """
    names = (*controls, *emotions)
    missing = [k for k in names if k not in directions]
    if missing:
        raise KeyError(f"missing directions {missing}; have {sorted(directions)}")
    stats.require_finite(acts, "probe activations")
    stats.require_finite(policy_logit, "policy logit (refusal score)")
    proj = project(acts, jnp.stack([jnp.asarray(directions[k]) for k in names]))
    projections = {k: proj[..., i] for i, k in enumerate(names)}
    residual = residual_components(acts, residual_dims) if residual_dims > 0 else None
    return feature_sets_from_projections(
        projections,
        policy_logit,
        controls=controls,
        emotions=emotions,
        residual=residual,
        standardize=standardize,
    )


# ----------------------------------------------------------------------------------------
# Monitoring metrics.


class MonitorArrays(NamedTuple):
    """Per feature set and layer monitoring metrics (arrays; a pytree, vmappable)."""

    auroc: stats.Interval  # [S, L] out-of-fold AUROC with a bootstrap interval over prompts
    tpr_at_fpr: Array  # [S, L] TPR at the FPR budget
    ece: Array  # [S, L] expected calibration error (10 bins)
    brier: Array  # [S, L]
    log_loss: Array  # [S, L] out-of-fold mean log loss
    delta_mon: stats.Interval  # [L] AUROC(set 1) - AUROC(set 0): delta_mon_refit if B > 0
    delta_mon_oof: stats.Interval  # [L] paired bootstrap of the out-of-fold scores over prompts
    delta_mon_refit: stats.Interval  # [L] paired bootstrap refitting every probe (NaN if B = 0)
    delta_mon_samples: Array  # [L, B] refit draws of delta_mon if B > 0, else [L, M] OOF draws
    lrt_stat: Array  # [L] deviance difference set 0 vs set 1 (nested, fitted on all prompts)
    lrt_df: Array  # [] number of added columns
    lrt_p: Array  # [L] chi-squared p-value
    chosen_l2: Array  # [S, L, K] l2 chosen for each outer fold (original sample)
    oof_logits: Array  # [S, L, N] out-of-fold logits (original sample)


@functools.partial(
    jax.jit,
    static_argnames=(
        "num_folds",
        "num_bootstrap",
        "num_refit_bootstrap",
        "fpr",
        "level",
        "num_steps",
        "batch_size",
        "num_requests",
    ),
)
def monitor_arrays(
    features: Array,
    mask: Array,
    labels: Array,
    rng: Array,
    l2_grid: Array = DEFAULT_L2_GRID,
    *,
    num_folds: int = 5,
    num_bootstrap: int = 1000,
    num_refit_bootstrap: int = 0,
    fpr: float = 0.01,
    level: float = 0.95,
    num_steps: int = 20,
    batch_size: int = 4,
    request: Array | None = None,
    num_requests: int | None = None,
) -> MonitorArrays:
    """All probes and monitoring metrics in one jitted (and vmappable) program.

    Sets 0 and 1 must be nested (set 1 = set 0 + extra columns): they define ``delta_mon``
    and the likelihood-ratio test (NaN when S = 1). Fold assignment is stratified and random
    (from ``rng``). With ``request`` the folds are grouped by request and every bootstrap
    resamples requests (all cue variants of a request move together); without it every prompt
    is its own request. The per-failure-type statistic with refitted nested CV in every
    draw is ``delta_mon``; this program is the per-layer scan.

    ``delta_mon_oof`` resamples prompts with the out-of-fold scores held fixed; it ignores the
    probes' own training noise and, when the added columns carry no signal, sits below 0 by
    about half its width (covering 0 in ~85 % of null data sets in our tests).
    ``delta_mon_refit`` refits on each resample (96-99 % coverage with 20-40 resamples); use
    it with ``num_refit_bootstrap`` >= 50 for reported intervals (with 12 resamples the
    percentile tails are too short: 90 % coverage).

    Args:
      features: [S, L, N, P] padded features (``FeatureSets.features``).
      mask: [S, P] column masks.
      labels: [N] failure labels in {0, 1}.
      rng: PRNG key (folds, bootstrap).
      l2_grid: [R] candidate penalties for the inner CV.
      num_folds: K outer folds (the inner CV reuses the other K - 1 folds).
      num_bootstrap: M paired bootstrap resamples of out-of-fold scores over prompts.
      num_refit_bootstrap: B resamples on which every outer-fold probe is refitted (the
        inner-CV choice of l2 held fixed); gives ``delta_mon_refit``, which also carries the
        probes' training variability, and then serves as ``delta_mon`` (0 = none).
      fpr: FPR budget for ``tpr_at_fpr``.
      level: interval coverage.
      num_steps: Newton iterations per probe.
      batch_size: probe groups (set x layer) vmapped at once.
      request: optional [N] int request ids in [0, U) (cluster folds and bootstrap).
      num_requests: U (static; required with ``request``).

    Returns:
      MonitorArrays.
    """
    s, l, n, p = features.shape
    b = num_refit_bootstrap
    y = jnp.asarray(labels, jnp.float32)
    rng_folds, rng_boot = jax.random.split(rng)
    num_counts = max(num_bootstrap, b)
    if request is None:
        folds = stratified_folds(rng_folds, y, num_folds)
        # One draw of resample counts serves both the OOF bootstrap and the refit resamples.
        counts = stats.bootstrap_weights(rng_boot, n, num_counts)
    else:
        if num_requests is None:
            raise ValueError("monitor_arrays: request needs num_requests (static)")
        request = jnp.asarray(request, jnp.int32)
        folds = stratified_grouped_folds(
            rng_folds, y, request, num_folds, num_requests=num_requests
        )[request]
        # Request multiplicities, broadcast to the request's prompts.
        counts = stats.bootstrap_weights(rng_boot, num_requests, num_counts)[:, request]
    cv = cross_validate(
        features.reshape(s * l, n, p),
        jnp.broadcast_to(mask[:, None], (s, l, p)).reshape(s * l, p),
        y,
        folds,
        jnp.asarray(l2_grid, jnp.float32),
        num_folds=num_folds,
        refit_weights=counts[:b],
        num_steps=num_steps,
        batch_size=batch_size,
    )
    oof0 = cv.oof_logits.reshape(s, l, n)
    # Original + M paired OOF resamples (same counts for every set): the scores are fixed, so
    # vmapping over weights only sorts each probe's scores once.
    oof_weights = jnp.concatenate([jnp.ones((1, n)), counts[:num_bootstrap]])  # [1 + M, N]
    auc = jax.vmap(jax.vmap(lambda z: jax.vmap(lambda w: stats.auroc(z, y, w))(oof_weights)))(
        oof0
    )  # [S, L, 1 + M]
    auc0, auc_boot = auc[..., 0], auc[..., 1:]
    # Refit resamples: each probe is scored on its own resample.
    auc_refit = jax.vmap(jax.vmap(jax.vmap(lambda z, w: stats.auroc(z, y, w), (0, 0))))(
        cv.refit_oof_logits.reshape(s, l, b, n), jnp.broadcast_to(counts[:b], (s, l, b, n))
    )  # [S, L, B]
    nan = jnp.full(l, jnp.nan)
    if s < 2:  # a lone feature set (e.g. the residual upper bound) has no delta_mon
        delta_oof = delta_refit = stats.Interval(nan, nan, nan)
        samples = jnp.full((l, b or num_bootstrap), jnp.nan)
    else:
        samples = (auc_refit[1] - auc_refit[0]) if b > 0 else (auc_boot[1] - auc_boot[0])
        delta0 = auc0[1] - auc0[0]
        delta_oof = stats.Interval(
            delta0, *stats.percentile_ci(auc_boot[1] - auc_boot[0], level, axis=-1)
        )
        delta_refit = stats.Interval(delta0, nan, nan)
        if b > 0:
            refit_ci = stats.percentile_ci(auc_refit[1] - auc_refit[0], level, axis=-1)
            delta_refit = stats.Interval(delta0, *refit_ci)
    per_probe = lambda f, a: jax.vmap(jax.vmap(f))(a)
    prob0 = jax.nn.sigmoid(oof0)
    deviance = cv.full_deviance.reshape(s, l)
    if s < 2:
        lrt_stat, lrt_df = nan, jnp.float32(jnp.nan)
    else:
        lrt_stat = jnp.maximum(deviance[0] - deviance[1], 0.0)
        lrt_df = jnp.sum(mask[1]) - jnp.sum(mask[0])
    return MonitorArrays(
        auroc=stats.Interval(auc0, *stats.percentile_ci(auc_boot, level, axis=-1)),
        tpr_at_fpr=per_probe(lambda z: stats.tpr_at_fpr(z, y, fpr), oof0),
        ece=per_probe(lambda q: stats.expected_calibration_error(q, y), prob0),
        brier=per_probe(lambda q: stats.brier_score(q, y), prob0),
        log_loss=per_probe(lambda z: jnp.mean(_nll(z, y)), oof0),
        delta_mon=delta_refit if b > 0 else delta_oof,
        delta_mon_oof=delta_oof,
        delta_mon_refit=delta_refit,
        delta_mon_samples=samples,
        lrt_stat=lrt_stat,
        lrt_df=lrt_df,
        lrt_p=stats.chi2_sf(lrt_stat, lrt_df),
        chosen_l2=cv.chosen_l2.reshape(s, l, num_folds),
        oof_logits=oof0,
    )


class MonitorResult(NamedTuple):
    """``MonitorArrays`` plus names, with table helpers."""

    set_names: tuple[str, ...]
    arrays: MonitorArrays

    def layer_rows(self) -> list[dict[str, Any]]:
        """One row per layer: per-set AUROC/TPR/ECE/Brier, delta_mon with interval, LR test."""
        a = jax.tree.map(np.asarray, self.arrays)
        rows = []
        for layer in range(a.lrt_p.shape[0]):
            row: dict[str, Any] = {"layer": layer}
            for i, name in enumerate(self.set_names):
                row[f"auroc[{name}]"] = float(a.auroc.estimate[i, layer])
                row[f"auroc_lo[{name}]"] = float(a.auroc.lo[i, layer])
                row[f"auroc_hi[{name}]"] = float(a.auroc.hi[i, layer])
                row[f"tpr_at_fpr[{name}]"] = float(a.tpr_at_fpr[i, layer])
                row[f"ece[{name}]"] = float(a.ece[i, layer])
                row[f"brier[{name}]"] = float(a.brier[i, layer])
                row[f"median_l2[{name}]"] = float(np.median(a.chosen_l2[i, layer]))
            row["delta_mon"] = float(a.delta_mon.estimate[layer])
            row["delta_mon_lo"] = float(a.delta_mon.lo[layer])
            row["delta_mon_hi"] = float(a.delta_mon.hi[layer])
            row["delta_mon_oof_lo"] = float(a.delta_mon_oof.lo[layer])
            row["delta_mon_oof_hi"] = float(a.delta_mon_oof.hi[layer])
            row["delta_mon_refit_lo"] = float(a.delta_mon_refit.lo[layer])
            row["delta_mon_refit_hi"] = float(a.delta_mon_refit.hi[layer])
            row["lrt_stat"] = float(a.lrt_stat[layer])
            row["lrt_df"] = float(a.lrt_df)
            row["lrt_p"] = float(a.lrt_p[layer])
            rows.append(row)
        return rows

    def best_layer(self) -> int:
        """Layer with the highest controls+emotion AUROC (the reported operating point)."""
        return int(
            np.argmax(np.asarray(self.arrays.auroc.estimate[min(1, len(self.set_names) - 1)]))
        )


def monitor(
    features: FeatureSets,
    labels: Array,
    *,
    seed: int = 0,
    l2_grid: Sequence[float] = DEFAULT_L2_GRID,
    request: Array | None = None,
    num_requests: int | None = None,
    **kwargs: Any,
) -> MonitorResult:
    """Runs ``monitor_arrays`` on a ``FeatureSets``; kwargs as for ``monitor_arrays``.

    ``request`` ([N] int ids) groups folds and bootstraps by request (``num_requests``
    defaults to ``max(request) + 1``); without it every prompt is its own request.
    """
    if request is not None:
        request = np.asarray(request, np.int32)
        num_requests = int(request.max()) + 1 if num_requests is None else int(num_requests)
    arrays = monitor_arrays(
        features.features,
        features.mask,
        jnp.asarray(labels, jnp.float32),
        jax.random.key(seed),
        jnp.asarray(l2_grid, jnp.float32),
        request=None if request is None else jnp.asarray(request),
        num_requests=num_requests,
        **kwargs,
    )
    return MonitorResult(features.names, arrays)


# ----------------------------------------------------------------------------------------
# Δ_mon per failure type: request-grouped nested CV, cluster bootstrap with refits, and its
# random-direction null. Dimension letters: U requests, D draws (the full data + R bootstrap
# draws), T training sets of the nested CV, A extended arms (1, or the null draws).


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
      draw lacks a class), ``auroc_controls``, ``auroc_full``, ``tpr_at_fpr_controls``,
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


# ----------------------------------------------------------------------------------------
# Finetuning-shift monitor.


def projection_shift(
    proj_base: Array, proj_tuned: Array, rng: Array, *, num: int = 1000, level: float = 0.95
) -> stats.Interval:
    """Mean shift ``proj_tuned - proj_base`` over the same prompts, paired bootstrap interval.

    Args:
      proj_base: [N, ...] projections of the base model's activations (e.g. [N, L, K]).
      proj_tuned: [N, ...] the fine-tuned model's projections on the same prompts.
      rng: PRNG key.
      num: bootstrap resamples.
      level: interval coverage.

    Returns:
      Interval with arrays of shape [...] (e.g. [L, K]).
    """
    diff = jnp.asarray(proj_tuned, jnp.float32) - jnp.asarray(proj_base, jnp.float32)
    return stats.bootstrap(rng, diff, lambda d: d.mean(0), num, level)


def finetune_shift(
    acts_base: Array,
    acts_tuned: Array,
    directions: Mapping[str, Array],
    rng: Array,
    *,
    num: int = 1000,
    level: float = 0.95,
) -> dict[str, stats.Interval]:
    """Shift of activations along each direction between two models of one family.

    As in persona-vector monitoring: project both models' last-prompt-token activations
    [N, L, D] (same prompts) on each unit direction ``{name: [L, D]}`` (fine-tunes of one base
    share a basis) and report the mean shift per layer with a paired bootstrap interval.

    Returns:
      {name: Interval of [L] arrays}.
    """
    names = tuple(directions)
    dirs = jnp.stack([jnp.asarray(directions[k]) for k in names])
    shift = projection_shift(
        project(acts_base, dirs), project(acts_tuned, dirs), rng, num=num, level=level
    )  # [L, K]
    return {k: jax.tree.map(lambda x, i=i: x[:, i], shift) for i, k in enumerate(names)}


# ----------------------------------------------------------------------------------------
# Benchmark: all probes in one program vs a scikit-learn loop.


def bench_probes(
    *,
    num_prompts: int = 400,
    num_features: int = 8,
    num_layers: int = 12,
    num_sets: int = 2,
    num_folds: int = 5,
    l2_grid: Sequence[float] = (1e-3, 1e-2, 1e-1, 1.0),
    num_steps: int = 15,
    seed: int = 0,
) -> dict[str, Any]:
    """Times every (set, layer, fold, l2) probe in one jitted program against sklearn.

    Synthetic data with a planted linear signal; each probe is trained on K - 1 folds and
    scored (AUROC) on the held-out fold, by both implementations with matched penalties
    (``C = 1 / (l2 * N_train)``, sklearn's default lbfgs solver and tolerance).

    Returns:
      dict with ``num_probes``, ``jax_s`` (steady state), ``jax_compile_s`` (first call),
      ``sklearn_s``, ``speedup``, ``speedup_incl_compile``, ``max_auroc_diff`` (over probes),
      ``mean_auroc`` and ``mean_auroc_sklearn``.
    """
    from sklearn.linear_model import LogisticRegression  # test/bench-only dependency

    rs = np.random.default_rng(seed)
    g, n, p, k = num_sets * num_layers, num_prompts, num_features, num_folds
    # Every group sees a noisy linear image of one latent that drives the label.
    latent = rs.normal(size=n)
    beta = rs.normal(size=(g, p)) / np.sqrt(p)
    X = (rs.normal(size=(g, n, p)) + latent[None, :, None] * beta[:, None]).astype(np.float32)
    y = (rs.uniform(size=n) < 1 / (1 + np.exp(-2.0 * latent))).astype(np.float32)
    folds = np.arange(n) % k
    rs.shuffle(folds)
    train = (folds[None, :] != np.arange(k)[:, None]).astype(np.float32)  # [K, N]
    test = ~train.astype(bool)
    l2 = np.asarray(l2_grid, np.float32)

    @jax.jit
    def all_probes(X: Array, y: Array, train: Array, l2: Array) -> Array:
        def group(x: Array) -> Array:
            fit = lambda w, lam: _newton_logistic(x, y, w, lam, jnp.ones(p), num_steps)
            theta = jax.vmap(jax.vmap(fit, (None, 0)), (0, None))(train, l2)  # [K, R, P+1]
            logits = jnp.einsum("np,krp->krn", x, theta[..., :-1]) + theta[..., -1:]
            held_out = 1.0 - train[:, None, :]
            return jax.vmap(jax.vmap(lambda z, w: stats.auroc(z, y, w)))(
                logits, jnp.broadcast_to(held_out, logits.shape)
            )

        return jax.vmap(group)(X)  # [G, K, R]

    args = (jnp.asarray(X), jnp.asarray(y), jnp.asarray(train), jnp.asarray(l2))
    t0 = time.perf_counter()
    auroc_jax = np.asarray(all_probes(*args).block_until_ready())
    jax_compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    auroc_jax = np.asarray(all_probes(*args).block_until_ready())
    jax_s = time.perf_counter() - t0

    from sklearn.metrics import roc_auc_score

    auroc_sk = np.zeros_like(auroc_jax)
    t0 = time.perf_counter()
    for gi in range(g):
        for ki in range(k):
            tr = train[ki].astype(bool)
            for ri, lam in enumerate(l2):
                clf = LogisticRegression(C=1.0 / (float(lam) * tr.sum()))
                clf.fit(X[gi, tr], y[tr])
                auroc_sk[gi, ki, ri] = roc_auc_score(
                    y[test[ki]], clf.decision_function(X[gi, test[ki]])
                )
    sklearn_s = time.perf_counter() - t0
    return {
        "num_probes": int(g * k * len(l2)),
        "num_prompts": n,
        "num_features": p,
        "jax_s": jax_s,
        "jax_compile_s": jax_compile_s,
        "sklearn_s": sklearn_s,
        "speedup": sklearn_s / jax_s,
        "speedup_incl_compile": sklearn_s / jax_compile_s,
        "max_auroc_diff": float(np.max(np.abs(auroc_jax - auroc_sk))),
        "mean_auroc": float(auroc_jax.mean()),
        "mean_auroc_sklearn": float(auroc_sk.mean()),
    }
