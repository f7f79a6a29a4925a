"""Single L2 logistic probes: the damped Newton solver, fit / predict, and the LR test.

A probe is L2-regularised logistic regression fitted by damped Newton (IRLS) steps; the solver
is jittable and vmappable, so every probe of an analysis can run in one program. Loss of one
probe (weights w [P], bias b, sample weights s [N]):

    sum_n s_n * nll(x_n . w + b, y_n) / sum_n s_n  +  l2 / 2 * |w|^2

(the bias is not penalised). scikit-learn's ``LogisticRegression(C=C)`` minimises
``C * sum_n nll + |w|^2 / 2``, so the two agree for ``C = 1 / (l2 * N_train)``.

Dimension letters: N items, P (padded) features.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from emojax import stats

Array = jax.Array

_JITTER = 1e-6  # Keeps the Newton system positive definite; does not change the optimum.
_STEP_SIZES = (1.0, 0.5, 0.125)  # Backtracking candidates (staying put is the fourth).


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
