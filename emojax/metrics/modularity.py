"""Modularity of steering vectors: cross-steering matrix, selectivity, off-target cost.

Dimension legend: I steering vectors, J concept readouts, K coefficients, N prompts,
M neutral prompts, D model width, Q random directions.

`M[i, j]` is the change of concept `j`'s readout (projection of a later-layer activation on
concept `j`'s direction, in units of that layer's median norm) per unit coefficient of vector
`i`. A modular vector moves its own concept and little else: selectivity
`|M_ii| / mean_{j≠i} |M_ij|` is large. It is about 1 for a direction that favours no
concept, so it is read against its null (`selectivity_null`): the same statistic for
norm-matched random directions scored against the same target column.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from emojax.metrics.influence import per_prompt_slopes


def cross_steering_matrix(coefs: np.ndarray, readouts: np.ndarray) -> np.ndarray:
    """M [I, J]: slope of the mean readout j against the coefficient of vector i.

    Args:
      coefs: [K] coefficients.
      readouts: [I, K, N, J] readouts of concept j per vector, coefficient and prompt.

    Returns:
      [I, J] mean per-prompt slopes.
    """
    r = np.moveaxis(np.asarray(readouts, np.float64), -1, 1)  # [I, J, K, N]
    return per_prompt_slopes(coefs, r).mean(axis=-1)


def _on_off(matrix: np.ndarray, own: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`(|M[r, own_r]|, mean_{j≠own_r} |M[r, j]|)` for every row r."""
    m = np.abs(np.asarray(matrix, np.float64))
    rows = np.arange(m.shape[0])
    on = m[rows, own]
    off = (m.sum(axis=1) - on) / max(m.shape[1] - 1, 1)
    return on, off


def _ratio(on: np.ndarray, off: np.ndarray) -> np.ndarray:
    """on / off; inf where only off is 0, NaN where both are (undefined)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(off > 0, on / np.where(off > 0, off, 1.0), np.where(on > 0, np.inf, np.nan))


def selectivity(matrix: np.ndarray, own: Sequence[int] | None = None) -> np.ndarray:
    """|M[i, own_i]| / mean_{j≠own_i} |M[i, j]| per row.

    The mean (not the sum) of the off-target entries, so the value does not fall with the
    number of concepts read out: ~1 for a vector that moves every concept alike.

    Args:
      matrix: [I, J] cross-steering matrix (J >= 2).
      own: per row, the column of the vector's own concept (default: the diagonal).

    Returns:
      [I] selectivity (inf when every off-target entry is zero, NaN for an all-zero row).
    """
    m = np.asarray(matrix, np.float64)
    own = np.arange(m.shape[0]) if own is None else np.asarray(own)
    return _ratio(*_on_off(m, own))


def selectivity_null(
    matrix_random: np.ndarray,
    own: Sequence[int],
    observed: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Selectivity of norm-matched random directions: the null of `selectivity`.

    Random direction k scored against concept i's target column: |M_k,own_i| /
    mean_{j≠own_i} |M_kj|.

    Args:
      matrix_random: [Q, J] cross-steering rows of Q random directions (Q >= 1).
      own: [I] the target column of each concept vector.
      observed: [I] selectivity of the concept vectors (default: not compared).

    Returns:
      `null` [I, Q] the null distribution per concept; with `observed`, also `p` [I], the
      one-sided permutation p-value (1 + #{null >= observed}) / (Q + 1) (NaN where observed
      is NaN), and `quantile` [I], the share of the null below the observed value.
    """
    mr = np.asarray(matrix_random, np.float64)
    own = np.asarray(own).reshape(-1)
    null = np.stack([_ratio(*_on_off(mr, np.full(mr.shape[0], j))) for j in own])  # [I, Q]
    out = {"null": null}
    if observed is not None:
        obs = np.asarray(observed, np.float64).reshape(-1, 1)
        # NaN null draws (an all-zero random row) count as not exceeding.
        exceed = np.sum(np.nan_to_num(null, nan=-np.inf) >= obs, axis=1)
        below = np.sum(np.nan_to_num(null, nan=np.inf) < obs, axis=1)
        bad = np.isnan(obs[:, 0])
        out["p"] = np.where(bad, np.nan, (1.0 + exceed) / (null.shape[1] + 1.0))
        out["quantile"] = np.where(bad, np.nan, below / null.shape[1])
    return out


def offtarget_kl_per_unit_effect(
    coefs: np.ndarray, kl: np.ndarray, target: np.ndarray, eps: float = 1e-6
) -> np.ndarray:
    """Off-target cost: KL spent per unit change of the vector's own readout.

    Pools the nonzero coefficients: Σ_k mean KL(c_k) / Σ_k |mean target(c_k) − mean
    target(0)|, with target(0) the readout at the coefficient nearest zero.

    Args:
      coefs: [K].
      kl: [I, K, M] KL(unsteered ‖ steered) on neutral prompts.
      target: [I, K, N] the vector's own-concept readout on evaluation prompts.
      eps: floor of the denominator.

    Returns:
      [I] KL (nats) per unit target effect.
    """
    coefs = np.asarray(coefs, np.float64)
    zero = int(np.argmin(np.abs(coefs)))
    nz = np.arange(coefs.size) != zero
    kl_mean = np.asarray(kl, np.float64).mean(axis=-1)  # [I, K]
    t = np.asarray(target, np.float64).mean(axis=-1)  # [I, K]
    effect = np.abs(t - t[:, zero : zero + 1])[:, nz].sum(axis=1)
    return kl_mean[:, nz].sum(axis=1) / np.maximum(effect, eps)


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity [I, J] between rows of a [I, D] and b [J, D]."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    a = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
    return a @ b.T
