"""Stability of concept vectors, each with a resampling 95 % interval.

The unit of resampling is the cue *template*: the contrast pairs of one concept are built from
a few dozen cue sentences, and pairs that share a sentence are not independent evidence, so
every resample draws whole templates (a pair without a template label is its own template).
Split-half stability is the cosine between the diff-of-means of two random disjoint halves of
the templates; held-out stability the cosine between the vector of a random (1 - holdout)
share of the templates and that of the held-out rest (with the held-out pairs' sign accuracy
on the training vector); cross-domain stability resamples templates and domains together.
Split-half and held-out report the median over random splits with the 2.5-97.5 percentiles;
every bootstrap metric (cross-domain, layer x layer, control, cross-model cosines, projection
correlation) reports the bias-corrected estimate `2 t - median(t*)` with the basic interval
(`_bias_corrected`), because a cosine of noisy means is biased toward 0. Medians (not means)
of the resamples make every interval contain its estimate.

Everything works from per-item activations at the capture site, `items [C, 2, M, L, D]` with
`valid [C, 2, M]` (see `emojax.extract.Captured`), so resampling runs on device: a resample is
a weight array `w [R, C, 2, M]` (split-half 0/1 indicators or bootstrap counts), and the
resampled diff-of-means vectors are one einsum, `R` resamples at a time (`chunk`) so that
`[R, C, L, D]` never has to exist at once for wide models.

Dimension legend: R resamples, C concepts, M item slots, L layers, D model, G domains,
T cue templates (per concept), E emotions, K controls, N prompts.
"""

from __future__ import annotations

import dataclasses
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


def split_half_cosine(
    rng: Array,
    items: Array,
    valid: Array,
    paired: Sequence[bool],
    num: int = 200,
    level: float = 0.95,
    chunk: int | None = None,
    *,
    template=None,
) -> Interval:
    """Cosine between the diff-of-means vectors of two random disjoint halves.

    Args:
      template: [C, M] cue-template ids (see `template_ids`): each half is a random half of
        the templates with all their pairs. None: each half is a random half of the pairs
        (items of an unpaired concept).

    Returns:
      Interval of [C, L]: median over `num` random splits and the percentile interval.
    """
    if template is None:
        a, b = split_half_weights(rng, valid, paired, num)
    else:
        a, b = template_split_weights(rng, valid, template, num)
    return _split_interval(_split_cosines(a, b, items, auto_chunk(num, items, chunk, 2)), level)


@functools.partial(jax.jit, static_argnums=(3,))
def _split_cosines(a, b, items, chunk):
    """[R, C, L] cosines between the diff-of-means of halves a and b."""
    dom = lambda w: weighted_diff_of_means(w, items)
    return jax.lax.map(lambda ab: cosine(dom(ab[0]), dom(ab[1])), (a, b), batch_size=chunk)


def held_out_template_cosine(
    rng: Array,
    items: Array,
    valid: Array,
    paired: Sequence[bool],
    template=None,
    *,
    holdout: float = 0.25,
    num: int = 200,
    level: float = 0.95,
    chunk: int | None = None,
) -> dict[str, Interval]:
    """Does the vector of some templates carry over to templates it never saw?

    Over `num` random partitions of each concept's templates (`held_out_weights`), the cosine
    between the diff-of-means of the training templates and that of the held-out templates,
    and the share of held-out pairs whose positive item projects above its negative on the
    training vector (ties count 1/2; NaN for unpaired concepts).

    Args:
      template: [C, M] cue-template ids; None: every pair is its own template.
      holdout: share of the templates held out.

    Returns:
      `{"cosine": Interval [C, L], "accuracy": Interval [C, L]}`: medians over the partitions
      with percentile intervals.
    """
    train, held = held_out_weights(rng, valid, template, num, holdout)
    chunk = auto_chunk(num, items, chunk, 2)
    cos, acc = _held_out_stats(train, held, items, tuple(bool(p) for p in paired), chunk)
    return {"cosine": _split_interval(cos, level), "accuracy": _split_interval(acc, level)}


@functools.partial(jax.jit, static_argnums=(3, 4))
def _held_out_stats(train, held, items, paired, chunk):
    """[R, C, L] cosines (training vs held-out vector) and held-out pair sign accuracies."""
    is_paired = jnp.asarray(paired, bool)[:, None]  # [C, 1]
    pair_diff = items[:, 0] - items[:, 1]  # [C, M, L, D]

    def fn(tw):
        tr, he = tw
        v = weighted_diff_of_means(tr, items)  # [C, L, D]
        norm = jnp.linalg.norm(v, axis=-1)  # [C, L]
        u = v / jnp.maximum(norm, 1e-20)[..., None]
        d = jnp.einsum("cmld,cld->cml", pair_diff, u)
        w = he[:, 0] * he[:, 1]  # [C, M] held-out pairs
        hit = (d > 0) + 0.5 * (d == 0)
        acc = jnp.einsum("cm,cml->cl", w, hit) / jnp.maximum(w.sum(-1), 1e-12)[:, None]
        ok = is_paired & (w.sum(-1) > 0)[:, None] & (norm > 0)
        return cosine(v, weighted_diff_of_means(he, items)), jnp.where(ok, acc, jnp.nan)

    return jax.lax.map(fn, (train, held), batch_size=chunk)


def layer_cosine_matrix(vectors: Array) -> Array:
    """[..., L, L] cosine between the vectors of every pair of layers ([..., L, D] in)."""
    u = vectors / jnp.maximum(jnp.linalg.norm(vectors, axis=-1, keepdims=True), 1e-20)
    return jnp.einsum("...ld,...kd->...lk", u, u)


def _bootstrap_metric(
    rng: Array,
    items: Array,
    valid: Array,
    paired: Sequence[bool],
    fn: Callable[[Array], Array],
    num: int,
    level: float,
    chunk: int | None,
    template=None,
) -> Interval:
    full = weighted_diff_of_means(valid, items)
    weights = _bootstrap_weights(rng, valid, paired, template, num)
    return _bias_corrected(fn(full), map_resamples(fn, weights, items, chunk), level)


def layer_cosine(
    rng: Array,
    items: Array,
    valid: Array,
    paired: Sequence[bool],
    num: int = 200,
    level: float = 0.95,
    chunk: int | None = None,
    *,
    template=None,
) -> Interval:
    """Layer x layer cosine matrix of each concept's diff-of-means, [C, L, L], bootstrapped
    over templates (`template` [C, M]) or, without them, over pairs."""
    fn = layer_cosine_matrix
    return _bootstrap_metric(rng, items, valid, paired, fn, num, level, chunk, template)


def control_cosines(
    rng: Array,
    items: Array,
    valid: Array,
    paired: Sequence[bool],
    emotions: Sequence[int],
    controls: Sequence[int],
    num: int = 200,
    level: float = 0.95,
    chunk: int | None = None,
    *,
    template=None,
) -> Interval:
    """Cosine of each emotion vector with each control direction per layer: [E, K, L]
    (every concept's templates resampled independently)."""
    fn = _ControlCosine(tuple(int(e) for e in emotions), tuple(int(k) for k in controls))
    return _bootstrap_metric(rng, items, valid, paired, fn, num, level, chunk, template)


@dataclasses.dataclass(frozen=True)
class _ControlCosine:
    """[E, K, L] cosines of emotion and control vectors (hashable: compiled once)."""

    emotions: tuple[int, ...]
    controls: tuple[int, ...]

    def __call__(self, v: Array) -> Array:
        e, k = jnp.asarray(self.emotions), jnp.asarray(self.controls)
        return cosine(v[e][:, None], v[k][None])


def _domain_mean_cosine(vectors: Array, weights: Array) -> Array:
    """Weighted mean cosine over pairs of distinct domains: vectors [C, G, L, D], weights
    [C, G] (0/1 presence, or bootstrap counts: a domain drawn twice is never paired with
    itself)."""
    cos = cosine(vectors[:, :, None], vectors[:, None, :])  # [C, G, G, L]
    cos = jnp.moveaxis(cos, -1, 1)  # [C, L, G, G]
    both = weights[:, None, :, None] * weights[:, None, None, :]
    both = both * (1.0 - jnp.eye(weights.shape[-1]))
    mean = jnp.sum(jnp.where(both > 0, both * cos, 0.0), (-1, -2)) / jnp.sum(both, (-1, -2))
    # NaN with < 2 domains, or where a domain's vector is 0 (a site without a direction).
    undefined = jnp.any((both > 0) & jnp.isnan(cos), (-1, -2))
    return jnp.where(undefined, jnp.nan, mean)


def cross_domain_cosine(
    rng: Array,
    items: Array,
    valid: Array,
    paired: Sequence[bool],
    domain: Array,
    num_domains: int,
    num: int = 200,
    level: float = 0.95,
    min_items: int = 2,
    chunk: int | None = None,
    *,
    template=None,
) -> Interval:
    """Mean pairwise cosine between per-domain diff-of-means vectors, [C, L], bootstrapped.

    Each resample draws the domains (with replacement, among those present) and the
    templates (or pairs, without `template`) together, so the interval covers both the choice
    of domains and the choice of cue sentences.

    Args:
      domain: [C, M] domain id of pair slot m (both sides), -1 for none.
      num_domains: G.
      min_items: a domain counts when each of its sides has at least this many items.
      template: [C, M] cue-template ids, or None.
    """
    onehot = jax.nn.one_hot(domain, num_domains, dtype=jnp.float32)  # [C, M, G]
    per_domain = jnp.einsum("csm,cmg->cgsm", valid, onehot)  # [C, G, 2, M]
    present = (per_domain.sum(-1).min(-1) >= min_items).astype(jnp.float32)  # [C, G]
    k1, k2 = jax.random.split(rng)
    weights = _bootstrap_weights(k1, valid, paired, template, num)
    domain_counts = cluster_counts(k2, present, num)
    chunk = auto_chunk(num, items, chunk, num_domains)
    full, samples = _cross_domain_stats(
        valid, present, weights, domain_counts, items, onehot, present, chunk
    )
    return _bias_corrected(full, samples, level)


@functools.partial(jax.jit, static_argnums=(7,))
def _cross_domain_stats(valid, full_domains, weights, domain_counts, items, onehot, present, chunk):
    """Full-data and resampled [.., C, L] mean cross-domain cosines."""

    def fn(w, dw):  # item weights [C, 2, M], domain weights [C, G] -> [C, L]
        wd = jnp.einsum("csm,cmg->cgsm", w, onehot)
        drawn = (wd.sum(-1).min(-1) > 0).astype(jnp.float32)  # both sides kept some items
        wd = wd / jnp.maximum(wd.sum(-1, keepdims=True), 1e-12)
        means = jnp.einsum("cgsm,csmld->cgsld", wd, items)
        return _domain_mean_cosine(means[:, :, 0] - means[:, :, 1], dw * present * drawn)

    samples = jax.lax.map(lambda wd: fn(*wd), (weights, domain_counts), batch_size=chunk)
    return fn(valid, full_domains), samples


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


def _template_of(captured):
    """The capture's template ids, or None when it has none (pairs are the unit then)."""
    template = getattr(captured, "template", None)
    return np.asarray(template) if has_templates(template) else None


def stability_report(
    rng: Array,
    captured,
    emotions: Sequence[str],
    controls: Sequence[str],
    num: int = 200,
    level: float = 0.95,
    chunk: int | None = None,
    *,
    holdout: float = 0.25,
) -> dict:
    """Every single-model stability metric of a capture (`emojax.extract.Captured`).

    Resamples cue templates (`Captured.template`); a capture without template ids resamples
    pairs, every pair its own template.

    Args:
      holdout: share of the templates held out by the held-out check.

    Returns:
      `{"split_half": Interval [C, L] (halves of the templates), "split_half_pairs": Interval
      [C, L] (halves of the pairs, for comparison: shared templates make it optimistic),
      "held_out": Interval [C, L] (cosine, training vs held-out templates),
      "held_out_accuracy": Interval [C, L], "cross_domain": Interval [C, L] (NaN without
      domain labels), "layer_cosine": Interval [C, L, L], "control_cosine": Interval
      [E, K, L], "num_templates": [C], "unit": "template" | "pair", "concepts", "emotions",
      "controls"}` with the intervals as NumPy arrays.
    """
    names = list(captured.concepts)
    emotions = [e for e in emotions if e in names]
    controls = [k for k in controls if k in names]
    template = _template_of(captured)
    args = (captured.items, captured.valid, captured.paired)
    kw = {"num": num, "level": level, "chunk": chunk}
    k1, k2, k3, k4, k5, k6 = jax.random.split(rng, 6)
    held = held_out_template_cosine(k5, *args, template, holdout=holdout, **kw)
    out = {
        "split_half": split_half_cosine(k1, *args, template=template, **kw),
        "split_half_pairs": split_half_cosine(k6, *args, **kw),
        "held_out": held["cosine"],
        "held_out_accuracy": held["accuracy"],
        "cross_domain": cross_domain_cosine(
            k2,
            *args,
            captured.domain,
            max(len(captured.domain_names), 1),
            template=template,
            **kw,
        ),
        "layer_cosine": layer_cosine(k3, *args, template=template, **kw),
    }
    if emotions and controls:
        out["control_cosine"] = control_cosines(
            k4,
            *args,
            [names.index(e) for e in emotions],
            [names.index(k) for k in controls],
            template=template,
            **kw,
        )
    out = jax.device_get(out)
    ids = template_ids(template, captured.valid)
    return {
        **out,
        "num_templates": (ids.max(-1) + 1).astype(np.int64),
        "unit": "pair" if template is None else "template",
        "concepts": names,
        "emotions": emotions,
        "controls": controls,
    }


def report_rows(report: dict, layer_norms=None, scales=None) -> tuple[list[dict], list[dict]]:
    """Flat table rows of `stability_report`: per (concept, layer) and per (emotion, control,
    layer)."""
    rows = []
    sh = report["split_half"]
    keys = ("split_half", "split_half_pairs", "held_out", "held_out_accuracy", "cross_domain")
    intervals = [(k, report[k]) for k in keys if report.get(k) is not None]
    num_templates = report.get("num_templates")
    for c, name in enumerate(report["concepts"]):
        for layer in range(np.shape(sh.estimate)[1]):
            row = {"concept": name, "layer": layer}
            if num_templates is not None:
                row["num_templates"] = int(num_templates[c])
            for key, iv in intervals:
                row[key] = float(iv.estimate[c, layer])
                row[key + "_lo"], row[key + "_hi"] = float(iv.lo[c, layer]), float(iv.hi[c, layer])
            if scales is not None:
                row["scale"] = float(scales[c, layer])
                if layer_norms is not None:
                    row["scale_norm_units"] = float(scales[c, layer] / layer_norms[layer])
            rows.append(row)
    crows = []
    cc = report.get("control_cosine")
    for e, emo in enumerate(report["emotions"] if cc is not None else []):
        for k, ctl in enumerate(report["controls"]):
            for layer in range(np.shape(cc.estimate)[-1]):
                crows.append({
                    "emotion": emo, "control": ctl, "layer": layer,
                    "cosine": float(cc.estimate[e, k, layer]),
                    "cosine_lo": float(cc.lo[e, k, layer]),
                    "cosine_hi": float(cc.hi[e, k, layer]),
                })  # fmt: skip
    return rows, crows
