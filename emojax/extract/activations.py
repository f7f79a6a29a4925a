"""Batched activation capture: every contrast prompt and neutral text through the model once.

One jitted program per prompt-length bucket runs the model forward (no logits), reads the
residual stream `resid[l]` of every layer at each prompt's capture site and folds it into
float32 statistics that stay on device (`Captured`). Prompts are left padded into a few bucket
lengths so that every bucket compiles once.

Dimension legend: B batch, T time, D model, L residual sites `resid[0..num_layers]` (one
more than the decoder layers: `resid[l]` enters layer l, the last one leaves the last layer),
C concepts, S sides (0 = positive, 1 = negative), M item slots per concept side.

Why per-item features and not paired second moments: the capture keeps each prompt's feature
at its capture site, `items [C, 2, M, L, D]` (slot m of both sides is pair m of a paired
contrast). Logistic probes need individual examples anyway, and per-item features make every
split-half or bootstrap statistic exact for any method at O(N L D) memory, where per-concept
second moments of paired differences cost O(C L D^2) (13 GB for C=6, L=32, D=4096 against
~1 GB of items for 1,000 prompts). `M` caps the buffer (`max_items`); the streamed
`sums`/`counts` always cover every prompt, so diff-of-means never depends on the cap. Neutral
text only needs its streamed mean, centred second moment `[L, D, D]` (neutral PCs) and
per-token norms (for the norm units); `[N, L, D]` never reaches the host.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from emojax.extract.contrast import ContrastSet, Prompt, _as_prompt, site_range

Array = jax.Array

DEFAULT_BUCKETS = (16, 32, 64, 128, 256, 512, 1024, 2048)


@dataclasses.dataclass
class _Row:
    tokens: tuple[int, ...]
    start: int
    end: int
    concept: int  # C (out of range) for neutral rows
    side: int
    slot: int  # M (out of range) when the item buffer is full
    neutral: bool


def _bucket(n: int, buckets: Sequence[int]) -> int:
    for b in sorted(buckets):
        if n <= b:
            return b
    return max(buckets)


def _pad_batches(
    rows: list[_Row],
    batch_size: int,
    buckets: Sequence[int],
    *,
    pad_id: int,
    bos_id: int | None,
    num_concepts: int,
    num_slots: int,
) -> list[dict]:
    """Groups rows by bucket length and packs them into fixed-shape left-padded batches."""
    by_key: dict[tuple[int, bool], list[_Row]] = {}
    for r in rows:
        by_key.setdefault((_bucket(len(r.tokens), buckets), r.neutral), []).append(r)
    batches = []
    for (t, neutral), group in sorted(by_key.items()):
        for i in range(0, len(group), batch_size):
            chunk = group[i : i + batch_size]
            b = {
                "tokens": np.full((batch_size, t), pad_id, np.int32),
                "mask": np.zeros((batch_size, t), np.int32),
                "site": np.zeros((batch_size, t), np.float32),
                "neutral": np.zeros((batch_size, t), np.float32),
                "concept": np.full((batch_size,), num_concepts, np.int32),
                "side": np.zeros((batch_size,), np.int32),
                "slot": np.full((batch_size,), num_slots, np.int32),
            }
            for j, r in enumerate(chunk):
                toks = r.tokens[-t:]  # too long: keep the end, where every capture site lies
                off = t - len(toks)  # left padding
                cut = len(r.tokens) - len(toks)
                b["tokens"][j, off:] = toks
                b["mask"][j, off:] = 1
                if r.neutral:
                    w = np.ones(len(toks), np.float32)
                    if bos_id is not None and cut == 0 and toks[0] == bos_id:
                        w[0] = 0.0  # the BOS attention sink has an outsized norm
                    b["neutral"][j, off:] = w
                else:
                    s, e = max(r.start - cut, 0), max(r.end - cut, 1)
                    b["site"][j, off + s : off + e] = 1.0 / (e - s)
                    b["concept"][j], b["side"][j], b["slot"][j] = r.concept, r.side, r.slot
            b["has_neutral"] = np.asarray(neutral)
            batches.append(b)
    return batches


@flax.struct.dataclass
class Captured:
    """Float32 statistics of one capture pass; every array lives on device.

    Attributes:
      items: [C, 2, M, L, D] per-item features at the capture site (zeros in empty slots).
      valid: [C, 2, M] 1.0 where a slot holds an item.
      sums: [C, 2, L, D] streamed feature sums over every item (not capped by M).
      counts: [C, 2] streamed item counts.
      domain: [C, M] int32 domain id of pair slot m (-1 = none).
      template: [C, M] int32 cue-template id of pair slot m, numbered per concept (-1 = none:
        `emojax.metrics.stability` then treats the pair as its own template).
      neutral_mean: [L, D] mean of neutral-text token features.
      neutral_m2: [L, D, D] sum of centred outer products of neutral-text token features
        (merged batch by batch, Chan et al., so large mean components cannot cancel).
      neutral_count: [] number of neutral tokens.
      layer_norms: [L] median residual norm over neutral-text tokens (norm units).
      concepts: concept names (static).
      positions: capture site per concept (static).
      paired: whether each concept's contrast is paired (static).
      domain_names: names of the domain ids (static).
    """

    items: Array
    valid: Array
    sums: Array
    counts: Array
    domain: Array
    neutral_mean: Array
    neutral_m2: Array
    neutral_count: Array
    layer_norms: Array
    template: Array | None = None
    concepts: tuple[str, ...] = flax.struct.field(pytree_node=False, default=())
    positions: tuple[str, ...] = flax.struct.field(pytree_node=False, default=())
    paired: tuple[bool, ...] = flax.struct.field(pytree_node=False, default=())
    domain_names: tuple[str, ...] = flax.struct.field(pytree_node=False, default=())

    @classmethod
    def from_items(
        cls,
        items: Array,
        valid: Array | None = None,
        *,
        neutral: Array | None = None,
        concepts: Sequence[str] | None = None,
        positions: Sequence[str] | None = None,
        paired: Sequence[bool] | None = None,
        domain: Array | None = None,
        domain_names: Sequence[str] = (),
        template: Array | None = None,
    ) -> Captured:
        """Statistics from activations already in memory (e.g. your own capture).

        Args:
          items: [C, 2, M, L, D] features at the capture site.
          valid: [C, 2, M] (default: all valid).
          neutral: [N, L, D] neutral-text token features (norm units and neutral PCs).
          concepts, positions, paired, domain, domain_names, template: as in the class
            attributes.
        """
        items = jnp.asarray(items, jnp.float32)
        c, _, m, nl, d = items.shape
        valid = jnp.ones((c, 2, m), jnp.float32) if valid is None else jnp.asarray(valid)
        valid = valid.astype(jnp.float32)
        items = items * valid[..., None, None]
        if neutral is None:
            neutral = jnp.zeros((0, nl, d), jnp.float32)
        neutral = jnp.asarray(neutral, jnp.float32)
        mean = neutral.mean(0) if neutral.shape[0] else jnp.zeros((nl, d), jnp.float32)
        return cls(
            items=items,
            valid=valid,
            sums=items.sum(2),
            counts=valid.sum(-1),
            domain=jnp.full((c, m), -1, jnp.int32) if domain is None else jnp.asarray(domain),
            neutral_mean=mean,
            neutral_m2=jnp.einsum("nld,nle->lde", neutral - mean, neutral - mean),
            neutral_count=jnp.asarray(neutral.shape[0], jnp.float32),
            layer_norms=jnp.median(jnp.linalg.norm(neutral, axis=-1), axis=0)
            if neutral.shape[0]
            else jnp.full((nl,), jnp.nan),
            concepts=tuple(concepts or (f"concept_{i}" for i in range(c))),
            positions=tuple(positions or ("last",) * c),
            paired=tuple(paired if paired is not None else (True,) * c),
            domain_names=tuple(domain_names),
            template=jnp.full((c, m), -1, jnp.int32)
            if template is None
            else jnp.asarray(template, jnp.int32),
        )

    def neutral_covariance(self) -> Array:
        """[L, D, D] covariance of neutral-text token features."""
        return self.neutral_m2 / jnp.maximum(self.neutral_count, 1.0)


@dataclasses.dataclass
class CaptureStats:
    """What a capture pass cost: compiles are counted at trace time."""

    num_prompts: int
    num_batches: int
    num_compiles: int
    buckets: tuple[int, ...]
    seconds: float


_TRACES = [0]  # incremented while tracing `_capture_step`, i.e. once per compiled program


def capture_features(params, config, tokens: Array, mask: Array, site: Array) -> Array:
    """[B, L, D] float32 features `sum_t site[b, t] * resid[l, b, t]` at every site.

    Args:
      params: model parameters.
      config: ModelConfig.
      tokens: [B, T] int32, left padded.
      mask: [B, T] 1 for real tokens.
      site: [B, T] float weights over positions (rows sum to 1 for a mean).
    """
    resid = _resid(params, config, tokens, mask)
    return jnp.einsum("lbtd,bt->bld", resid, site.astype(jnp.float32))


def _resid(params, config, tokens, mask) -> Array:
    """[L, B, T, D] float32 residual stream at every site `resid[0..num_layers]`."""
    from emojax.model import forward  # local import: the model imports nothing from here

    positions = jnp.maximum(jnp.cumsum(mask, axis=-1) - 1, 0).astype(jnp.int32)
    out = forward(
        params,
        config,
        tokens,
        attention_mask=mask,
        positions=positions,
        return_logits=False,
        capture=True,
    )
    return out.resid.astype(jnp.float32)


def _capture_step_impl(params, config, acc: Captured, batch: dict) -> tuple[Captured, Array]:
    _TRACES[0] += 1
    resid = _resid(params, config, batch["tokens"], batch["mask"])  # [L, B, T, D]
    feats = jnp.einsum("lbtd,bt->bld", resid, batch["site"])
    c, s, m = batch["concept"], batch["side"], batch["slot"]
    num_concepts = acc.sums.shape[0]
    # Rows with an out-of-range index (padding, neutral, full buffer) are dropped.
    items = acc.items.at[c, s, m].set(feats, mode="drop")
    valid = acc.valid.at[c, s, m].set(1.0, mode="drop")
    onehot = jax.nn.one_hot(c * 2 + s, num_concepts * 2, dtype=jnp.float32)  # [B, 2C]
    onehot = onehot.reshape(-1, num_concepts, 2)
    sums = acc.sums + jnp.einsum("bcs,bld->csld", onehot, feats)
    counts = acc.counts + onehot.sum(0)

    w = batch["neutral"]  # [B, T] token weights, zero outside neutral text

    def neutral_update(_):  # merge this batch's mean and centred moments (Chan et al.)
        n_a, n_b = acc.neutral_count, w.sum()
        n = jnp.maximum(n_a + n_b, 1.0)
        mean_b = jnp.einsum("lbtd,bt->ld", resid, w) / jnp.maximum(n_b, 1.0)
        delta = mean_b - acc.neutral_mean
        m2 = acc.neutral_m2
        if m2.size:  # static: second moments switched off -> [L, 0, 0]
            x = resid - mean_b[:, None, None]
            m2 = m2 + jnp.einsum("lbtd,lbte,bt->lde", x, x, w)
            m2 = m2 + jnp.einsum("ld,le->lde", delta, delta) * (n_a * n_b / n)
        return acc.neutral_mean + delta * (n_b / n), m2

    neutral_mean, neutral_m2 = jax.lax.cond(
        batch["has_neutral"], neutral_update, lambda _: (acc.neutral_mean, acc.neutral_m2), None
    )
    norms = jnp.where(w[None] > 0, jnp.linalg.norm(resid, axis=-1), jnp.nan)  # [L, B, T]
    acc = acc.replace(
        items=items,
        valid=valid,
        sums=sums,
        counts=counts,
        neutral_mean=neutral_mean,
        neutral_m2=neutral_m2,
        neutral_count=acc.neutral_count + w.sum(),
    )
    return acc, norms


_capture_step = jax.jit(_capture_step_impl, static_argnums=(1,), donate_argnums=(2,))


def capture(
    params,
    config,
    contrast_sets: Sequence[ContrastSet],
    neutral: Sequence[Sequence[int] | Prompt] = (),
    *,
    batch_size: int = 32,
    buckets: Sequence[int] = DEFAULT_BUCKETS,
    max_items: int | None = None,
    max_item_bytes: float = 2e9,
    neutral_second_moment: bool = True,
    bos_id: int | None = None,
    pad_id: int = 0,
) -> tuple[Captured, CaptureStats]:
    """Runs every contrast prompt and neutral text once and returns on-device statistics.

    Args:
      params: model parameters.
      config: ModelConfig (static).
      contrast_sets: one per concept.
      neutral: neutral texts (for norm units and neutral PCs); every non-BOS token counts.
      batch_size: prompts per forward (fixed, so each bucket compiles once).
      buckets: padded prompt lengths; longer prompts keep their last `max(buckets)` tokens.
      max_items: item slots M per concept side (None: the largest side, bounded by
        `max_item_bytes`); items beyond it still count in `sums`/`counts`.
      max_item_bytes: memory bound on the `[C, 2, M, L, D]` float32 item buffer.
      neutral_second_moment: accumulate `[L, D, D]` (needed for the neutral PCs); switch off
        for very wide models if the memory is not there (L * D^2 * 4 bytes).
      bos_id: BOS token id (excluded from prompt means, neutral norms and PCs).
      pad_id: padding token id.

    Returns:
      `(Captured, CaptureStats)`.
    """
    from emojax import validate

    validate.capture_inputs(config, contrast_sets, neutral)
    t0 = time.perf_counter()
    nc, nl, d = len(contrast_sets), config.num_layers + 1, config.d_model
    largest = max([max(len(cs.positive), len(cs.negative)) for cs in contrast_sets] + [1])
    cap = int(max_item_bytes // max(nc * 2 * nl * d * 4, 1))
    num_slots = max(1, min(largest if max_items is None else max_items, cap))

    rows: list[_Row] = []
    domain_names: list[str] = []
    domain = np.full((nc, num_slots), -1, np.int32)
    template = np.full((nc, num_slots), -1, np.int32)
    for ci, cs in enumerate(contrast_sets):
        for side, prompts in enumerate((cs.positive, cs.negative)):
            for i, p in enumerate(prompts):
                p = _as_prompt(p)
                s, e = site_range(p, cs.position, k=cs.post_instruction_len, bos_id=bos_id)
                rows.append(_Row(p.tokens, s, e, ci, side, min(i, num_slots), False))
        for i, name in enumerate(cs.domains or ()):
            if name not in domain_names:
                domain_names.append(name)
            if i < num_slots:
                domain[ci, i] = domain_names.index(name)
        ids: dict[str, int] = {}
        for i, name in enumerate(cs.templates or ()):
            tid = ids.setdefault(name, len(ids))  # numbered per concept, in order of appearance
            if i < num_slots:
                template[ci, i] = tid
    rows += [_Row(_as_prompt(p).tokens, 0, 0, nc, 0, num_slots, True) for p in neutral]

    sq_shape = (nl, d, d) if neutral_second_moment else (nl, 0, 0)
    acc = Captured(
        items=jnp.zeros((nc, 2, num_slots, nl, d), jnp.float32),
        valid=jnp.zeros((nc, 2, num_slots), jnp.float32),
        sums=jnp.zeros((nc, 2, nl, d), jnp.float32),
        counts=jnp.zeros((nc, 2), jnp.float32),
        domain=jnp.asarray(domain),
        neutral_mean=jnp.zeros((nl, d), jnp.float32),
        neutral_m2=jnp.zeros(sq_shape, jnp.float32),
        neutral_count=jnp.zeros((), jnp.float32),
        layer_norms=jnp.full((nl,), jnp.nan, jnp.float32),
        template=jnp.asarray(template),
        concepts=tuple(cs.concept for cs in contrast_sets),
        positions=tuple(cs.position for cs in contrast_sets),
        paired=tuple(bool(cs.paired) for cs in contrast_sets),
        domain_names=tuple(domain_names),
    )
    batches = _pad_batches(
        rows,
        batch_size,
        buckets,
        pad_id=pad_id,
        bos_id=bos_id,
        num_concepts=nc,
        num_slots=num_slots,
    )
    traces0 = _TRACES[0]
    norms = []
    for b in batches:
        acc, n = _capture_step(params, config, acc, b)
        if b["has_neutral"]:
            norms.append(n.reshape(nl, -1))
    if norms:
        acc = acc.replace(layer_norms=jnp.nanmedian(jnp.concatenate(norms, axis=1), axis=1))
    jax.block_until_ready(acc)
    from emojax.stats import require_finite

    require_finite(acc.sums, "captured residual activations (concept sums)")
    require_finite(acc.neutral_mean, "captured residual activations (neutral text)")
    stats = CaptureStats(
        num_prompts=len(rows),
        num_batches=len(batches),
        num_compiles=_TRACES[0] - traces0,
        buckets=tuple(sorted({b["tokens"].shape[1] for b in batches})),
        seconds=time.perf_counter() - t0,
    )
    return acc, stats
