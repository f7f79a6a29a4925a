"""Stability of concept vectors, each with a resampling 95 % interval.

Split-half stability reports the mean cosine over random disjoint halves and the 2.5-97.5
percentiles of those cosines; every bootstrap metric (cross-domain, layer x layer, control,
cross-model cosines, projection correlation) reports the bootstrap bias-corrected estimate with
the basic bootstrap interval (`_bias_corrected`), because a cosine of noisy means is biased
toward 0.

Everything works from per-item activations at the capture site, `items [C, 2, M, L, D]` with
`valid [C, 2, M]` (see `emojax.extract.Captured`), so resampling runs on device: a resample is
a weight array `w [R, C, 2, M]` (split-half 0/1 indicators or bootstrap counts), and the
resampled diff-of-means vectors are one einsum, `R` resamples at a time (`chunk`) so that
`[R, C, L, D]` never has to exist at once for wide models.

Dimension legend: R resamples, C concepts, M item slots, L layers, D model, G domains,
E emotions, K controls, N prompts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from emojax.stats import Interval, percentile_ci

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
    """`fn(diff_of_means)` for every resample, `chunk` resamples per step: [R, ...]."""
    chunk = auto_chunk(weights.shape[0], items, chunk)
    return jax.lax.map(lambda w: fn(weighted_diff_of_means(w, items)), weights, batch_size=chunk)


def _interval(estimate: Array, samples: Array, level: float) -> Interval:
    """Percentile interval of resampled values around `estimate` (split halves)."""
    lo, hi = percentile_ci(samples, level)
    return Interval(estimate, lo, hi)


def _bias_corrected(full: Array, samples: Array, level: float, bound: float = 1.0) -> Interval:
    """Bootstrap bias-corrected estimate `2 t - mean(t*)` and basic interval
    `(2 t - q_hi, 2 t - q_lo)`, clipped to [-bound, bound].

    Cosines and correlations of noisy means are biased toward 0 (resampling noise shrinks
    them further), so plain percentile intervals can sit entirely below the full-sample value.
    """
    lo, hi = percentile_ci(samples, level)
    clip = lambda x: jnp.clip(x, -bound, bound)
    est = clip(2 * full - jnp.nanmean(samples, axis=0))
    return Interval(est, clip(2 * full - hi), clip(2 * full - lo))


def split_half_cosine(
    rng: Array,
    items: Array,
    valid: Array,
    paired: Sequence[bool],
    num: int = 200,
    level: float = 0.95,
    chunk: int | None = None,
) -> Interval:
    """Cosine between the diff-of-means vectors of two random disjoint halves of the items.

    Returns:
      Interval of [C, L]: mean over `num` random splits and the percentile interval.
    """
    a, b = split_half_weights(rng, valid, paired, num)
    cos = jax.lax.map(
        lambda ab: cosine(
            weighted_diff_of_means(ab[0], items), weighted_diff_of_means(ab[1], items)
        ),
        (a, b),
        batch_size=auto_chunk(num, items, chunk, 2),
    )  # [R, C, L]
    return _interval(cos.mean(0), cos, level)


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
) -> Interval:
    full = weighted_diff_of_means(valid, items)
    samples = map_resamples(fn, bootstrap_item_weights(rng, valid, paired, num), items, chunk)
    return _bias_corrected(fn(full), samples, level)


def layer_cosine(
    rng: Array,
    items: Array,
    valid: Array,
    paired: Sequence[bool],
    num: int = 200,
    level: float = 0.95,
    chunk: int | None = None,
) -> Interval:
    """Layer x layer cosine matrix of each concept's diff-of-means, [C, L, L], bootstrapped."""
    return _bootstrap_metric(rng, items, valid, paired, layer_cosine_matrix, num, level, chunk)


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
) -> Interval:
    """Cosine of each emotion vector with each control direction per layer: [E, K, L]."""
    e, k = jnp.asarray(emotions), jnp.asarray(controls)
    fn = lambda v: cosine(v[e][:, None], v[k][None])
    return _bootstrap_metric(rng, items, valid, paired, fn, num, level, chunk)


def _domain_mean_cosine(vectors: Array, present: Array) -> Array:
    """Mean pairwise cosine over present domains: vectors [C, G, L, D], present [C, G]."""
    cos = cosine(vectors[:, :, None], vectors[:, None, :])  # [C, G, G, L]
    cos = jnp.moveaxis(cos, -1, 1)  # [C, L, G, G]
    both = present[:, None, :, None] * present[:, None, None, :]
    both = both * (1.0 - jnp.eye(present.shape[-1]))
    mean = jnp.sum(jnp.where(both > 0, cos, 0.0), (-1, -2)) / jnp.sum(both, (-1, -2))
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
) -> Interval:
    """Mean pairwise cosine between per-domain diff-of-means vectors, [C, L], bootstrapped.

    Args:
      domain: [C, M] domain id of pair slot m (both sides), -1 for none.
      num_domains: G.
      min_items: a domain counts when each of its sides has at least this many items.
    """
    onehot = jax.nn.one_hot(domain, num_domains, dtype=jnp.float32)  # [C, M, G]
    per_domain = jnp.einsum("csm,cmg->cgsm", valid, onehot)  # [C, G, 2, M]
    present = (per_domain.sum(-1).min(-1) >= min_items).astype(jnp.float32)  # [C, G]

    def fn(w):  # w [C, 2, M] -> [C, L]
        wd = jnp.einsum("csm,cmg->cgsm", w, onehot)
        wd = wd / jnp.maximum(wd.sum(-1, keepdims=True), 1e-12)
        means = jnp.einsum("cgsm,csmld->cgsld", wd, items)
        return _domain_mean_cosine(means[:, :, 0] - means[:, :, 1], present)

    weights = bootstrap_item_weights(rng, valid, paired, num)
    samples = jax.lax.map(fn, weights, batch_size=auto_chunk(num, items, chunk, num_domains))
    return _bias_corrected(fn(valid), samples, level)


def cross_model_cosine(
    rng: Array,
    items_a: Array,
    items_b: Array,
    valid: Array,
    paired: Sequence[bool],
    num: int = 200,
    level: float = 0.95,
    chunk: int | None = None,
) -> Interval:
    """Cosine at matched layers between two models sharing a base (hence a basis), [C, L].

    Both models saw the same prompts, so the bootstrap resamples items jointly.
    """

    def fn(w):
        return cosine(weighted_diff_of_means(w, items_a), weighted_diff_of_means(w, items_b))

    weights = bootstrap_item_weights(rng, valid, paired, num)
    samples = jax.lax.map(fn, weights, batch_size=auto_chunk(num, items_a, chunk, 2))
    return _bias_corrected(fn(valid), samples, level)


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
) -> Interval:
    """Correlation across prompts of two models' projections on their own concept vectors.

    For models of different architectures (no shared basis): same prompts, each model's
    projection on its own vector (`item_projections`, matched layers); bootstrap over prompts.

    Args:
      proj_a: [..., N] projections in model a.
      proj_b: [..., N] projections in model b (same prompts).
      weights: [..., N] item weights (0 = absent).
    """
    n = proj_a.shape[-1]
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
    k1, k2 = jax.random.split(rng)
    cos = None
    if a.items.shape == b.items.shape:
        cos = cross_model_cosine(k1, a.items, b.items, a.valid, a.paired, num=num)
    pa, w = item_projections(a.items, a.valid, weighted_diff_of_means(a.valid, a.items))
    pb, _ = item_projections(b.items, b.valid, weighted_diff_of_means(b.valid, b.items))
    corr = projection_correlation(k2, pa, pb[:, layers_b], w[:, None], num=num)
    return jax.device_get({"cosine": cos, "proj_corr": corr, "layers_b": layers_b})


def stability_report(
    rng: Array,
    captured,
    emotions: Sequence[str],
    controls: Sequence[str],
    num: int = 200,
    level: float = 0.95,
    chunk: int | None = None,
) -> dict:
    """Every single-model stability metric of a capture (`emojax.extract.Captured`).

    Returns:
      `{"split_half": Interval [C, L], "cross_domain": Interval [C, L] (NaN without domain
      labels), "layer_cosine": Interval [C, L, L], "control_cosine": Interval [E, K, L],
      "concepts", "emotions", "controls"}` with the intervals as NumPy arrays.
    """
    names = list(captured.concepts)
    emotions = [e for e in emotions if e in names]
    controls = [k for k in controls if k in names]
    args = (captured.items, captured.valid, captured.paired)
    k1, k2, k3, k4 = jax.random.split(rng, 4)
    out = {
        "split_half": split_half_cosine(k1, *args, num=num, level=level, chunk=chunk),
        "cross_domain": cross_domain_cosine(
            k2,
            *args,
            captured.domain,
            max(len(captured.domain_names), 1),
            num=num,
            level=level,
            chunk=chunk,
        ),
        "layer_cosine": layer_cosine(k3, *args, num=num, level=level, chunk=chunk),
    }
    if emotions and controls:
        out["control_cosine"] = control_cosines(
            k4,
            *args,
            [names.index(e) for e in emotions],
            [names.index(k) for k in controls],
            num=num,
            level=level,
            chunk=chunk,
        )
    out = jax.device_get(out)
    return {**out, "concepts": names, "emotions": emotions, "controls": controls}


def report_rows(report: dict, layer_norms=None, scales=None) -> tuple[list[dict], list[dict]]:
    """Flat table rows of `stability_report`: per (concept, layer) and per (emotion, control,
    layer)."""
    rows = []
    sh, cd = report["split_half"], report["cross_domain"]
    for c, name in enumerate(report["concepts"]):
        for layer in range(np.shape(sh.estimate)[1]):
            row = {"concept": name, "layer": layer}
            for key, iv in (("split_half", sh), ("cross_domain", cd)):
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
