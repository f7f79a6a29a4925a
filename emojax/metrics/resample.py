"""Resampling of concept vectors: resample weights, resampled diff-of-means, and intervals.

Everything works from per-item activations at the capture site, `items [C, 2, M, L, D]` with
`valid [C, 2, M]` (see `emojax.extract.Captured`), so resampling runs on device: a resample is
a weight array `w [R, C, 2, M]` (split-half 0/1 indicators, held-out partitions or bootstrap
counts, drawn over cue templates, pairs or domains), and the resampled diff-of-means vectors
are one einsum, `R` resamples at a time (`chunk`) so that `[R, C, L, D]` never has to exist at
once for wide models. Intervals: the median over random splits with its percentile interval
(`_split_interval`), or for a bootstrap the bias-corrected estimate `2 t - median(t*)` with
the basic interval (`_bias_corrected`). The statistics built on these are in
`emojax.metrics.stability` and `emojax.metrics.cross_model`.

Dimension legend: R resamples, C concepts, M item slots, L layers, D model, T cue templates
(per concept).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from emojax.stats import Interval

Array = jax.Array


def cosine(a: Array, b: Array, axis: int = -1) -> Array:
    """Cosine similarity along `axis` (NaN where either vector is exactly 0: undefined, e.g.
    the embeddings of a fixed template token)."""
    nab = jnp.linalg.norm(a, axis=axis) * jnp.linalg.norm(b, axis=axis)
    return jnp.where(nab > 0, jnp.sum(a * b, axis=axis) / jnp.where(nab > 0, nab, 1.0), jnp.nan)


def _paired_mask(paired: Sequence[bool]) -> Array:
    return jnp.asarray(paired, bool)[None, :, None]  # broadcasts over [R, C, M]


def split_half_weights(rng: Array, valid: Array, paired: Sequence[bool], num: int):
    """Random disjoint halves of the items of each concept side.

    Pairs stay together: for a paired concept slot m goes to the same half on both sides.

    Returns:
      `(half_a, half_b)`, each [R, C, 2, M] 0/1 with floor(n/2) items per concept side.
    """
    c, _, m = valid.shape
    u = jax.random.uniform(rng, (num, c, 2, m))
    u = u.at[:, :, 1].set(jnp.where(_paired_mask(paired), u[:, :, 0], u[:, :, 1]))
    u = jnp.where(valid[None] > 0, u, jnp.inf)
    rank = jnp.argsort(jnp.argsort(u, axis=-1), axis=-1)
    half = jnp.floor(valid.sum(-1) / 2)[None, ..., None]  # [1, C, 2, 1]
    a = (rank < half).astype(jnp.float32)
    b = ((rank >= half) & (rank < 2 * half)).astype(jnp.float32)
    return a, b


def bootstrap_item_weights(rng: Array, valid: Array, paired: Sequence[bool], num: int) -> Array:
    """[R, C, 2, M] bootstrap counts: n draws with replacement among each side's valid slots;
    a paired concept draws pairs (the same counts on both sides)."""
    c, _, m = valid.shape
    logits = jnp.where(valid > 0, 0.0, -jnp.inf)  # [C, 2, M]
    draws = jax.random.categorical(rng, logits, shape=(num, m, c, 2))  # [R, M, C, 2]
    draws = jnp.moveaxis(draws, 1, -1)  # [R, C, 2, M]
    draws = draws.at[:, :, 1].set(jnp.where(_paired_mask(paired), draws[:, :, 0], draws[:, :, 1]))
    keep = (jnp.arange(m) < valid.sum(-1)[..., None]).astype(jnp.float32)  # [C, 2, M]
    r_idx, c_idx, s_idx, _ = jnp.indices(draws.shape)
    return (
        jnp.zeros((num, c, 2, m))
        .at[r_idx, c_idx, s_idx, draws]
        .add(jnp.broadcast_to(keep, draws.shape))
    )


def template_ids(template, valid) -> np.ndarray:
    """Compact cue-template ids [C, M] numbered per concept in order of appearance (host).

    Args:
      template: [C, M] template id of pair slot m (-1 = none), or None.
      valid: [C, 2, M].

    Returns:
      int32 [C, M] ids in [0, T_c); a used slot without a template id is its own template,
      a slot with no item on either side gets -1.
    """
    valid = np.asarray(valid)
    c, _, m = valid.shape
    t = np.full((c, m), -1) if template is None else np.asarray(template)
    used = valid.max(1) > 0
    out = np.full((c, m), -1, np.int32)
    for ci in range(c):
        ids: dict[tuple[str, int], int] = {}
        for mi in np.flatnonzero(used[ci]):
            key = ("template", int(t[ci, mi])) if t[ci, mi] >= 0 else ("pair", int(mi))
            out[ci, mi] = ids.setdefault(key, len(ids))
    return out


def has_templates(template) -> bool:
    """Whether a capture carries template ids (else pairs are the resampling unit)."""
    return template is not None and bool(np.any(np.asarray(template) >= 0))


def _template_onehot(template, valid) -> tuple[Array, Array]:
    """`(onehot [C, M, T], present [C, T])` of the compact template ids."""
    ids = template_ids(template, valid)
    onehot = jax.nn.one_hot(ids, max(int(ids.max()) + 1, 1), dtype=jnp.float32)
    return onehot, onehot.max(1)


def _random_ranks(rng: Array, present: Array, num: int) -> Array:
    """[R, C, T] random order of each concept's present templates (absent ones rank last)."""
    u = jax.random.uniform(rng, (num, *present.shape))
    u = jnp.where(present[None] > 0, u, jnp.inf)
    return jnp.argsort(jnp.argsort(u, axis=-1), axis=-1)


def _template_to_items(per_template: Array, onehot: Array, valid: Array) -> Array:
    """Item weights [R, C, 2, M] from per-template weights [R, C, T]."""
    per_slot = jnp.einsum("rct,cmt->rcm", per_template.astype(jnp.float32), onehot)
    return per_slot[:, :, None] * valid[None]


def template_split_weights(rng: Array, valid: Array, template, num: int):
    """Random disjoint halves of each concept's cue templates, as item weights.

    Each half holds floor(T_c / 2) templates and every item (both sides) of those templates.

    Returns:
      `(half_a, half_b)`, each [R, C, 2, M] 0/1.
    """
    onehot, present = _template_onehot(template, valid)
    rank = _random_ranks(rng, present, num)
    half = jnp.floor(present.sum(-1) / 2)[None, :, None]  # [1, C, 1]
    a = rank < half
    b = (rank >= half) & (rank < 2 * half)
    return _template_to_items(a, onehot, valid), _template_to_items(b, onehot, valid)


def held_out_weights(rng: Array, valid: Array, template, num: int, holdout: float = 0.25):
    """Random training / held-out partitions of each concept's cue templates.

    round(holdout * T_c) templates (at least one, at most T_c - 1) are held out; a concept
    with fewer than two templates gets empty partitions (its statistics are NaN).

    Returns:
      `(train, held)`, each [R, C, 2, M] 0/1 item weights.
    """
    onehot, present = _template_onehot(template, valid)
    n = present.sum(-1)  # [C]
    n_hold = jnp.where(n >= 2, jnp.clip(jnp.round(holdout * n), 1, n - 1), 0)[None, :, None]
    rank = _random_ranks(rng, present, num)
    held = rank < n_hold
    train = (rank >= n_hold) & (rank < n[None, :, None]) & (n_hold > 0)
    return _template_to_items(train, onehot, valid), _template_to_items(held, onehot, valid)


def cluster_counts(rng: Array, present: Array, num: int) -> Array:
    """Cluster bootstrap counts [R, C, T]: n_c draws with replacement among the present
    clusters (templates, domains) of each concept c, n_c their number (rows sum to n_c)."""
    c, t = present.shape
    logits = jnp.where(present > 0, 0.0, -jnp.inf)  # [C, T]
    draws = jnp.moveaxis(jax.random.categorical(rng, logits, shape=(num, t, c)), 1, -1)
    keep = (jnp.arange(t) < present.sum(-1)[:, None]).astype(jnp.float32)  # [C, T]
    r_idx, c_idx, _ = jnp.indices(draws.shape)
    return jnp.zeros((num, c, t)).at[r_idx, c_idx, draws].add(jnp.broadcast_to(keep, draws.shape))


def template_bootstrap_weights(rng: Array, valid: Array, template, num: int) -> Array:
    """[R, C, 2, M] cluster-bootstrap item weights: templates drawn with replacement, each
    draw counting every item (both sides) of its template."""
    onehot, present = _template_onehot(template, valid)
    return _template_to_items(cluster_counts(rng, present, num), onehot, valid)


def _bootstrap_weights(rng, valid, paired, template, num) -> Array:
    """Template cluster bootstrap when `template` is given, else the pair / item bootstrap."""
    if template is None:
        return bootstrap_item_weights(rng, valid, paired, num)
    return template_bootstrap_weights(rng, valid, template, num)


def weighted_diff_of_means(weights: Array, items: Array) -> Array:
    """[..., C, L, D] diff-of-means under item weights `[..., C, 2, M]`."""
    w = weights / jnp.maximum(weights.sum(-1, keepdims=True), 1e-12)
    means = jnp.einsum("...csm,csmld->...csld", w, items)
    return means[..., 0, :, :] - means[..., 1, :, :]


def auto_chunk(
    num: int, items: Array, chunk: int | None, factor: int = 1, budget_bytes: float = 2**30
) -> int:
    """Resamples per step: `chunk`, or as many as keep `factor` resampled vectors
    `[C, 2, L, D]` float32 per resample under `budget_bytes` (all of them for small models)."""
    if chunk:
        return chunk
    c, _, _, nl, d = items.shape
    return int(max(1, min(num, budget_bytes // (factor * c * 2 * nl * d * 4))))


def map_resamples(
    fn: Callable[[Array], Array], weights: Array, items: Array, chunk: int | None = None
) -> Array:
    """`fn(diff_of_means)` for every resample, `chunk` resamples per step: [R, ...].

    Compiled once per `fn` and shapes: pass a module-level function or a hashable callable
    (a new lambda compiles anew)."""
    return _map_resamples(fn, weights, items, auto_chunk(weights.shape[0], items, chunk))


@functools.partial(jax.jit, static_argnums=(0, 3))
def _map_resamples(fn, weights, items, chunk):
    return jax.lax.map(lambda w: fn(weighted_diff_of_means(w, items)), weights, batch_size=chunk)


def _quantiles(samples: Array, level: float) -> tuple[Array, Array, Array]:
    """`(q_lo, median, q_hi)` over axis 0, NaN resamples (an undefined cosine) left out."""
    alpha = (1.0 - level) / 2.0
    q = jnp.nanquantile(jnp.asarray(samples), jnp.array([alpha, 0.5, 1.0 - alpha]), axis=0)
    return q[0], q[1], q[2]


def _split_interval(samples: Array, level: float) -> Interval:
    """Median over random splits with the percentile interval (contains the median)."""
    lo, med, hi = _quantiles(samples, level)
    return Interval(med, lo, hi)


def _bias_corrected(full: Array, samples: Array, level: float, bound: float = 1.0) -> Interval:
    """Bootstrap bias-corrected estimate `2 t - median(t*)` and basic interval
    `(2 t - q_hi, 2 t - q_lo)`, clipped to [-bound, bound].

    Cosines and correlations of noisy means are biased toward 0 (resampling noise shrinks
    them further), so plain percentile intervals can sit entirely below the full-sample value.
    The median (not the mean) of the resamples lies between their quantiles, so the interval
    always contains the estimate, however skewed the resamples.
    """
    lo, med, hi = _quantiles(samples, level)
    clip = lambda x: jnp.clip(x, -bound, bound)
    return Interval(clip(2 * full - med), clip(2 * full - hi), clip(2 * full - lo))


def _template_of(captured):
    """The capture's template ids, or None when it has none (pairs are the unit then)."""
    template = getattr(captured, "template", None)
    return np.asarray(template) if has_templates(template) else None
