"""Modularity of steering vectors: cross-steering matrix, selectivity, off-target cost.

Dimension legend: I steering vectors, J concept readouts, K coefficients, N prompts,
M neutral prompts, D model width.

`M[i, j]` is the change of concept `j`'s readout (projection of a later-layer activation on
concept `j`'s direction, in units of that layer's median norm) per unit coefficient of vector
`i`. A modular vector moves its own concept and little else: selectivity
`|M_ii| / Σ_{j≠i} |M_ij|` is large.
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


def selectivity(matrix: np.ndarray, own: Sequence[int] | None = None) -> np.ndarray:
    """|M[i, own_i]| / Σ_{j≠own_i} |M[i, j]| per row.

    Args:
      matrix: [I, J] cross-steering matrix.
      own: per row, the column of the vector's own concept (default: the diagonal).

    Returns:
      [I] selectivity (inf when every off-target entry is zero).
    """
    m = np.abs(np.asarray(matrix, np.float64))
    own = np.arange(m.shape[0]) if own is None else np.asarray(own)
    rows = np.arange(m.shape[0])
    on = m[rows, own]
    off = m.sum(axis=1) - on
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(off > 0, on / np.where(off > 0, off, 1.0), np.inf)


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
