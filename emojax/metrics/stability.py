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
`valid [C, 2, M]` (see `emojax.extract.Captured`); the resample weights, the diff-of-means of
every resample and the intervals are `emojax.metrics.resample`, the cross-model statistics
`emojax.metrics.cross_model` (both importable from here too).

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

from emojax.metrics.cross_model import (
    cross_model_cosine,
    cross_model_report,
    item_projections,
    matched_layers,
    projection_correlation,
    weighted_correlation,
)
from emojax.metrics.resample import (
    _bias_corrected,
    _bootstrap_weights,
    _split_interval,
    _template_of,
    auto_chunk,
    bootstrap_item_weights,
    cluster_counts,
    cosine,
    has_templates,
    held_out_weights,
    map_resamples,
    split_half_weights,
    template_bootstrap_weights,
    template_ids,
    template_split_weights,
    weighted_diff_of_means,
)
from emojax.stats import Interval

Array = jax.Array

# The resampling primitives and cross-model statistics live in emojax.metrics.resample and
# emojax.metrics.cross_model; every name stays importable from here.
__all__ = [
    "auto_chunk",
    "bootstrap_item_weights",
    "cluster_counts",
    "control_cosines",
    "cosine",
    "cross_domain_cosine",
    "cross_model_cosine",
    "cross_model_report",
    "has_templates",
    "held_out_template_cosine",
    "held_out_weights",
    "item_projections",
    "layer_cosine",
    "layer_cosine_matrix",
    "map_resamples",
    "matched_layers",
    "projection_correlation",
    "report_rows",
    "split_half_cosine",
    "split_half_weights",
    "stability_report",
    "template_bootstrap_weights",
    "template_ids",
    "template_split_weights",
    "weighted_correlation",
    "weighted_diff_of_means",
]


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
