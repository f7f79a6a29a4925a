"""Cross-model stability: do two models' concept vectors agree?

Models sharing a base (hence a residual basis) are compared by the cosine of their vectors at
matched layers, bootstrapped over templates (or pairs) jointly since both saw the same
prompts; models of different architectures by the correlation across prompts of each model's
projections on its own vector. Both report the bias-corrected estimate with its basic interval
(`emojax.metrics.resample`).

Dimension legend: R resamples, C concepts, M item slots, L layers (L_a, L_b per model),
D model, N prompts.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from emojax.metrics.resample import (
    _bias_corrected,
    _bootstrap_weights,
    _template_of,
    auto_chunk,
    cosine,
    template_bootstrap_weights,
    weighted_diff_of_means,
)
from emojax.stats import Interval

Array = jax.Array


def cross_model_cosine(
    rng: Array,
    items_a: Array,
    items_b: Array,
    valid: Array,
    paired: Sequence[bool],
    num: int = 200,
    level: float = 0.95,
    chunk: int | None = None,
    *,
    template=None,
) -> Interval:
    """Cosine at matched layers between two models sharing a base (hence a basis), [C, L].

    Both models saw the same prompts, so the bootstrap resamples templates (or pairs)
    jointly.
    """

    weights = _bootstrap_weights(rng, valid, paired, template, num)
    full, samples = _cross_model_stats(
        valid, weights, items_a, items_b, auto_chunk(num, items_a, chunk, 2)
    )
    return _bias_corrected(full, samples, level)


@functools.partial(jax.jit, static_argnums=(4,))
def _cross_model_stats(valid, weights, items_a, items_b, chunk):
    def fn(w):
        return cosine(weighted_diff_of_means(w, items_a), weighted_diff_of_means(w, items_b))

    return fn(valid), jax.lax.map(fn, weights, batch_size=chunk)


def item_projections(items: Array, valid: Array, vectors: Array) -> tuple[Array, Array]:
    """Projections of each concept's items (both sides) on its unit vector at every layer.

    Returns:
      `(proj [C, L, 2M], weights [C, 2M])`.
    """
    c, _, m, nl, d = items.shape
    u = vectors / jnp.maximum(jnp.linalg.norm(vectors, axis=-1, keepdims=True), 1e-20)
    proj = jnp.einsum("csmld,cld->clsm", items, u).reshape(c, nl, 2 * m)
    return proj, valid.reshape(c, 2 * m)


def weighted_correlation(x: Array, y: Array, w: Array) -> Array:
    """Pearson correlation of x and y over the last axis with item weights w (NaN when one
    of them is constant)."""
    w = w / jnp.maximum(w.sum(-1, keepdims=True), 1e-12)
    mx, my = jnp.sum(w * x, -1, keepdims=True), jnp.sum(w * y, -1, keepdims=True)
    cov = jnp.sum(w * (x - mx) * (y - my), -1)
    vx, vy = jnp.sum(w * (x - mx) ** 2, -1), jnp.sum(w * (y - my) ** 2, -1)
    return jnp.where(vx * vy > 0, cov / jnp.sqrt(jnp.where(vx * vy > 0, vx * vy, 1.0)), jnp.nan)


def matched_layers(num_layers_a: int, num_layers_b: int) -> np.ndarray:
    """Layer of model b at the same relative depth as each layer of model a: [L_a]."""
    rel = np.arange(num_layers_a) / max(num_layers_a - 1, 1)
    return np.rint(rel * (num_layers_b - 1)).astype(np.int32)


def projection_correlation(
    rng: Array,
    proj_a: Array,
    proj_b: Array,
    weights: Array,
    num: int = 200,
    level: float = 0.95,
    *,
    counts: Array | None = None,
) -> Interval:
    """Correlation across prompts of two models' projections on their own concept vectors.

    For models of different architectures (no shared basis): same prompts, each model's
    projection on its own vector (`item_projections`, matched layers); bootstrap over prompts.

    Args:
      proj_a: [..., N] projections in model a.
      proj_b: [..., N] projections in model b (same prompts).
      weights: [..., N] item weights (0 = absent).
      counts: [R, ..., N] resample counts (e.g. a template cluster bootstrap); default: `num`
        bootstrap draws of single prompts.
    """
    n = proj_a.shape[-1]
    if counts is None:
        idx = jax.random.randint(rng, (num, n), 0, n)
        counts = jax.vmap(lambda i: jnp.zeros(n).at[i].add(1.0))(idx)  # [R, N]
    samples = jax.vmap(lambda c: weighted_correlation(proj_a, proj_b, weights * c))(counts)
    return _bias_corrected(weighted_correlation(proj_a, proj_b, weights), samples, level)


def cross_model_report(rng: Array, captured_a, captured_b, num: int = 200) -> dict:
    """Two models' captures of the same prompts: `{"cosine": Interval [C, L_a] or None (no
    shared basis: different shapes), "proj_corr": Interval [C, L_a], "layers_b": [L_a]}`,
    model b's sites matched to model a's by relative depth."""
    a, b = captured_a, captured_b
    layers_b = matched_layers(a.items.shape[3], b.items.shape[3])
    template = _template_of(a)
    k1, k2 = jax.random.split(rng)
    cos = None
    if a.items.shape == b.items.shape:
        cos = cross_model_cosine(
            k1, a.items, b.items, a.valid, a.paired, num=num, template=template
        )
    pa, w = item_projections(a.items, a.valid, weighted_diff_of_means(a.valid, a.items))
    pb, _ = item_projections(b.items, b.valid, weighted_diff_of_means(b.valid, b.items))
    counts = None
    if template is not None:  # [R, C, 1, 2M]: whole templates, both sides
        counts = template_bootstrap_weights(k2, a.valid, template, num)
        counts = counts.reshape(num, a.valid.shape[0], 1, -1)
    corr = projection_correlation(k2, pa, pb[:, layers_b], w[:, None], num=num, counts=counts)
    return jax.device_get({"cosine": cos, "proj_corr": corr, "layers_b": layers_b})
