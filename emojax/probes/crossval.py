"""Folds and nested cross-validation of many probes at once.

Regularisation is chosen by nested cross-validation: for outer fold k, every other fold j
serves once as the inner validation fold (train on folds not in {k, j}); the l2 with the lowest
pooled inner validation log loss is refitted on all folds but k and scores fold k. Feature sets
of different widths are zero-padded to a common width P and carry a column mask, and folds and
bootstrap resamples are sample-weight vectors, so all probes share static shapes and stack.

Dimension letters: N prompts, U requests, P (padded) features, G probe groups, K folds,
R regularisation values, B refit-bootstrap resamples.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from emojax.probes.fit import _newton_logistic, _nll

Array = jax.Array

DEFAULT_L2_GRID = (1e-3, 1e-2, 1e-1, 1.0)


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
