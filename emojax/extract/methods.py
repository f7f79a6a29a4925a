"""Direction methods: every concept x layer direction from the captured statistics at once.

`directions` runs the chosen `METHODS` in one jitted call: diff-of-means, the first principal
component of paired differences, logistic-probe weights, and diff-of-means with the top
neutral-text components projected out ("denoised").

Dimension legend: C concepts, L residual sites, D model, M item slots per concept side.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from emojax.extract.activations import Captured

Array = jax.Array

METHODS = ("diff_of_means", "pca", "probe", "denoised")


def _unit(x: Array, axis: int = -1) -> Array:
    return x / jnp.maximum(jnp.linalg.norm(x, axis=axis, keepdims=True), 1e-12)


def diff_of_means(sums: Array, counts: Array) -> Array:
    """[C, L, D] mean(positive) - mean(negative) from streamed sums [C, 2, L, D], counts [C, 2]."""
    means = sums / jnp.maximum(counts, 1.0)[..., None, None]
    return means[:, 0] - means[:, 1]


def paired_differences(items: Array, valid: Array) -> tuple[Array, Array]:
    """Paired differences `[C, M, L, D]` and their validity `[C, M]`."""
    pair = valid[:, 0] * valid[:, 1]
    return (items[:, 0] - items[:, 1]) * pair[..., None, None], pair


def pca_direction(items: Array, valid: Array) -> Array:
    """[C, L, D] unit first principal component of the paired differences.

    Uncentered, as the PCA of the sign-symmetrised differences {+d_i, -d_i} (the random
    sign flips of representation engineering), so the concept direction itself is the top
    component rather than being centred away; the sign makes it agree with the mean
    difference.
    """
    diffs, pair = paired_differences(items, valid)  # [C, M, L, D]
    x = jnp.swapaxes(diffs, 1, 2)  # [C, L, M, D]
    _, _, vt = jnp.linalg.svd(x, full_matrices=False)
    v = vt[..., 0, :]  # [C, L, D]
    mean = jnp.einsum("cm,cmld->cld", pair, diffs)
    return v * jnp.where(jnp.sum(v * mean, -1, keepdims=True) < 0, -1.0, 1.0)


def _default_fit(x: Array, y: Array, w: Array, l2: float) -> Array:
    from emojax.probes import fit_logistic  # the one solver shared with the monitoring probes

    return fit_logistic(x, y, l2, w).weights


def probe_direction(items: Array, valid: Array, l2: float = 1e-2, fit=None) -> Array:
    """[C, L, D] unit weight vectors of logistic probes positive-vs-negative, per (c, l).

    The objective is the weighted mean log-loss + (l2 / 2) |w|^2 on features divided by the
    (c, l) RMS feature norm, so one `l2` means the same strength at every layer (an isotropic
    rescaling leaves the direction's geometry alone).

    Args:
      items: [C, 2, M, L, D].
      valid: [C, 2, M].
      l2: L2 strength.
      fit: `fit(x [N, D], y [N], w [N], l2) -> w [D]`; default: `emojax.probes.fit_logistic`.
    """
    fit = fit or _default_fit
    c, _, m, nl, d = items.shape
    x = jnp.moveaxis(items.reshape(c, 2 * m, nl, d), 2, 1)  # [C, L, 2M, D]
    w = valid.reshape(c, 2 * m)
    y = jnp.concatenate([jnp.ones(m), jnp.zeros(m)])
    rms = jnp.sqrt(jnp.einsum("clnd,cn->cl", x**2, w) / jnp.maximum(w.sum(-1), 1.0)[:, None])
    x = x / jnp.maximum(rms, 1e-12)[..., None, None]
    per_cl = jax.vmap(jax.vmap(lambda xx, ww: fit(xx, y, ww, l2), in_axes=(0, None)))
    return _unit(per_cl(x, w))


def neutral_components(captured: Captured, variance_fraction: float = 0.5):
    """Top principal components of neutral text covering `variance_fraction` of its variance.

    Returns:
      `(components [L, D, D], keep [L, D])`: eigenvectors as columns, largest first, and a
      mask of those in the smallest top set whose variance reaches the fraction.
    """
    evals, evecs = jnp.linalg.eigh(captured.neutral_covariance())
    evals, evecs = jnp.maximum(evals[:, ::-1], 0.0), evecs[:, :, ::-1]
    frac = jnp.cumsum(evals, -1) / jnp.maximum(evals.sum(-1, keepdims=True), 1e-12)
    keep = (frac - evals / jnp.maximum(evals.sum(-1, keepdims=True), 1e-12)) < variance_fraction
    return evecs, keep


def project_out(vectors: Array, components: Array, keep: Array) -> Array:
    """Removes the kept components `[L, D, D]` (columns) from `vectors [..., L, D]`."""
    coef = jnp.einsum("...ld,lde->...le", vectors, components) * keep
    return vectors - jnp.einsum("...le,lde->...ld", coef, components)


def directions(
    captured: Captured,
    methods: Sequence[str] = METHODS,
    *,
    l2: float = 1e-2,
    variance_fraction: float = 0.5,
    fit=None,
) -> dict[str, tuple[Array, Array]]:
    """Directions for every concept and layer, per method.

    Returns:
      `{method: (unit [C, L, D], scale [C, L])}`; `scale` is the length of the mean
      difference along the unit direction (for diff-of-means, its norm). Where the two sides
      do not differ beyond rounding (|diff| <= 1e-5 |mean|) the direction is all zeros.
    """
    return _directions(captured, tuple(methods), l2, variance_fraction, fit)


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _directions(captured, methods, l2, variance_fraction, fit):
    dom = diff_of_means(captured.sums, captured.counts)
    # A site where both sides are the same (embeddings of a fixed template token at site 0)
    # has only rounding noise as its difference: no direction there (zeros, not noise).
    means = captured.sums / jnp.maximum(captured.counts, 1.0)[..., None, None]
    scale = jnp.linalg.norm(means, axis=-1).max(1)  # [C, L]
    defined = (jnp.linalg.norm(dom, axis=-1) > 1e-5 * scale)[..., None]
    out = {}
    for method in methods:
        if method == "diff_of_means":
            v = dom
        elif method == "pca":
            v = pca_direction(captured.items, captured.valid)
        elif method == "probe":
            v = probe_direction(captured.items, captured.valid, l2, fit)
        elif method == "denoised":
            v = project_out(dom, *neutral_components(captured, variance_fraction))
        else:
            raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
        unit = jnp.where(defined, _unit(v), 0.0)
        out[method] = (unit, jnp.sum(unit * dom, -1))
    return out
