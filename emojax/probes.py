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

Monitoring value (DESIGN.md section 4): out-of-fold AUROC for predicting the model's own
failures from last-prompt-token features; ``delta_mon = AUROC(controls + emotion) -
AUROC(controls)`` with a paired bootstrap interval over prompts and a likelihood-ratio test of
the nested models.

Dimension letters: N prompts, L layers, D model, P (padded) features, S feature sets,
G probe groups (= S * L), B refit-bootstrap resamples, K folds, R regularisation values,
M bootstrap resamples.
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
    X: Array, y: Array, sample_weights: Array, l2: Array, mask: Array, num_steps: int
) -> Array:
    """Damped Newton solve of one probe; returns theta = [weights (P), bias] of size P + 1."""
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

    def newton_step(_: int, state: tuple[Array, Array]) -> tuple[Array, Array]:
        theta, loss = state
        logits = Xa @ theta
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
        cand_logits = logits[None] - steps[:, None] * (Xa @ delta)[None]
        cand_theta = theta[None] - steps[:, None] * delta[None]
        losses = jax.vmap(objective)(cand_logits, cand_theta)
        losses = jnp.concatenate([jnp.where(jnp.isfinite(losses), losses, jnp.inf), loss[None]])
        best = jnp.argmin(losses)
        return jnp.concatenate([cand_theta, theta[None]])[best], losses[best]

    theta0 = jnp.zeros(d, X.dtype)
    state = (theta0, objective(jnp.zeros(n, X.dtype), theta0))
    return jax.lax.fori_loop(0, num_steps, newton_step, state)[0]


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
) -> MonitorArrays:
    """All probes and monitoring metrics in one jitted (and vmappable) program.

    Sets 0 and 1 must be nested (set 1 = set 0 + extra columns): they define ``delta_mon``
    and the likelihood-ratio test (NaN when S = 1). Fold assignment is stratified and random
    (from ``rng``).

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

    Returns:
      MonitorArrays.
    """
    s, l, n, p = features.shape
    b = num_refit_bootstrap
    y = jnp.asarray(labels, jnp.float32)
    rng_folds, rng_boot = jax.random.split(rng)
    folds = stratified_folds(rng_folds, y, num_folds)
    # One draw of resample counts serves both the OOF bootstrap and the refit resamples.
    counts = stats.bootstrap_weights(rng_boot, n, max(num_bootstrap, b))
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
    **kwargs: Any,
) -> MonitorResult:
    """Runs ``monitor_arrays`` on a ``FeatureSets``; kwargs as for ``monitor_arrays``."""
    arrays = monitor_arrays(
        features.features,
        features.mask,
        jnp.asarray(labels, jnp.float32),
        jax.random.key(seed),
        jnp.asarray(l2_grid, jnp.float32),
        **kwargs,
    )
    return MonitorResult(features.names, arrays)


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
