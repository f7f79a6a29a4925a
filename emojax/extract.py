"""Batched activation capture and direction finding for all concepts x all layers.

One jitted program per prompt-length bucket runs the model forward (no logits), reads the
residual stream `resid[l]` of every layer at each prompt's capture site and folds it into
float32 statistics that stay on device (`Captured`). Directions for every concept and layer
then come from those statistics in one vmapped call per method (`directions`).

Dimension legend: B batch, T time, D model, L residual sites `resid[0..num_layers]` (one
more than the decoder layers: `resid[l]` enters layer l, the last one leaves the last layer),
C concepts, S sides (0 = positive, 1 = negative), M item slots per concept side, R resamples.

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
import functools
import os
import time
from collections.abc import Sequence
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

POSITIONS = ("last", "prompt_mean", "response_mean", "post_instruction", "last_instruction")
METHODS = ("diff_of_means", "pca", "probe", "denoised")
DEFAULT_BUCKETS = (16, 32, 64, 128, 256, 512, 1024, 2048)


# ---------------------------------------------------------------------------------------------
# Inputs


@dataclasses.dataclass(frozen=True)
class Prompt:
    """One tokenized prompt, optionally followed by a response continuation.

    Attributes:
      tokens: token ids of prompt + continuation.
      prompt_len: number of prompt tokens (None: every token is prompt).
      instruction_end: index of the first token after the user's instruction (the start of
        the chat-template tokens before the response); None: `post_instruction_len` of the
        contrast set decides.
    """

    tokens: tuple[int, ...]
    prompt_len: int | None = None
    instruction_end: int | None = None


@dataclasses.dataclass
class ContrastSet:
    """Positive and negative prompts of one concept and where to read them.

    Attributes:
      concept: concept name (e.g. "concern", "refusal").
      positive: prompts showing the concept (token lists or `Prompt`s).
      negative: contrast prompts; for `paired=True`, negative[i] is the pair of positive[i].
      position: capture site, one of `POSITIONS`: "last" (last prompt token), "prompt_mean"
        (mean over prompt tokens, a leading BOS excluded), "response_mean" (mean over the
        continuation), "post_instruction" (mean over the chat-template tokens between the
        instruction and the response, Arditi et al.), "last_instruction" (the instruction's
        last token).
      paired: whether positive and negative are aligned pairs.
      domains: optional domain label per positive item (per pair).
      post_instruction_len: post-instruction tokens of prompts without `instruction_end`.
      templates: optional cue-template label per positive item (per pair); stability
        resamples templates, so pairs built from one template are never counted as
        independent (None: every pair is its own template).
    """

    concept: str
    positive: Sequence[Sequence[int] | Prompt]
    negative: Sequence[Sequence[int] | Prompt]
    position: str = "last"
    paired: bool = True
    domains: Sequence[str] | None = None
    post_instruction_len: int = 1
    templates: Sequence[str] | None = None


def _as_prompt(p: Sequence[int] | Prompt) -> Prompt:
    return p if isinstance(p, Prompt) else Prompt(tuple(int(t) for t in p))


def site_range(
    prompt: Prompt, position: str, *, k: int = 1, bos_id: int | None = None
) -> tuple[int, int]:
    """`(start, end)` token range (into `prompt.tokens`) averaged at a capture site."""
    n = len(prompt.tokens)
    p = n if prompt.prompt_len is None else prompt.prompt_len
    inst = max(p - k, 1) if prompt.instruction_end is None else prompt.instruction_end
    if position == "last":
        return p - 1, p
    if position == "prompt_mean":
        skip = 1 if (bos_id is not None and p > 1 and prompt.tokens[0] == bos_id) else 0
        return skip, p
    if position == "response_mean":
        if p >= n:
            raise ValueError("response_mean needs a continuation after the prompt")
        return p, n
    if position == "post_instruction":
        return min(inst, p - 1), p
    if position == "last_instruction":
        return inst - 1, inst
    raise ValueError(f"unknown position {position!r}; expected one of {POSITIONS}")


# ---------------------------------------------------------------------------------------------
# The shipped concept datasets, through the family's chat template.

# Emotions and caution at the last prompt token (the state the response starts from),
# harm salience at the instruction's last token, refusal at the post-instruction template tokens.
DEFAULT_POSITIONS = {
    "concern": "last",
    "eagerness": "last",
    "self_doubt": "last",
    "harm_salience": "last_instruction",
    "caution": "last",
    "refusal": "post_instruction",
}


def encode_prompt(
    tokenizer, user_text: str, template_source=None, continuation: str | None = None
) -> Prompt:
    """Chat-formats and tokenizes one user turn, locating where the instruction ends."""
    from emojax.concepts import format_chat

    text = format_chat(tokenizer, user_text, template_source)
    ids = tokenizer.encode(text, add_special_tokens=False)
    cut = text.rfind(user_text)
    inst = None
    if cut >= 0:
        inst = len(tokenizer.encode(text[: cut + len(user_text)], add_special_tokens=False))
        inst = min(max(inst, 1), len(ids) - 1)
    prompt_len = len(ids)
    if continuation:
        ids = ids + tokenizer.encode(continuation, add_special_tokens=False)
        return Prompt(tuple(ids), prompt_len, inst)
    return Prompt(tuple(ids), None, inst)


def load_contrast_sets(
    tokenizer,
    concepts: Sequence[str] | None = None,
    *,
    split: str | None = None,
    limit: int | None = None,
    template_source=None,
    positions: dict[str, str] | None = None,
    paths: dict[str, str] | None = None,
    data_dir: str | None = None,
    rendering: str = "zoo",
) -> list[ContrastSet]:
    """Contrast sets of `emojax.concepts` (or the user's JSONL files), chat-formatted.

    Args:
      tokenizer: the model's tokenizer.
      concepts: names (default: `emojax.concepts.CONCEPTS`).
      split: "train" | "val" | "test" | None (all).
      limit: pairs per concept (the first ones).
      template_source: the tuned model's tokenizer or directory, for a base model.
      positions: capture site per concept (default `DEFAULT_POSITIONS`, else "last").
      paths: optional `{concept: jsonl/csv path}` overrides.
      data_dir: a directory of user files (`emojax.concepts.find_data_file`: a concept's
        file there replaces the shipped set, a missing one falls back to it).
      rendering: 'zoo' (the shipped text) or 'english' (natural English for real tokenizers;
        same ids and templates, `emojax.concepts.english`).
    """
    from emojax import concepts as cdata

    positions = {**DEFAULT_POSITIONS, **(positions or {})}
    out = []
    for name in concepts or cdata.CONCEPTS:
        pairs = cdata.load_contrast(
            name, split, (paths or {}).get(name), data_dir=data_dir, rendering=rendering
        )
        pairs = pairs[:limit]
        enc = lambda t: encode_prompt(tokenizer, t, template_source)
        out.append(
            ContrastSet(
                concept=name,
                positive=[enc(p.positive) for p in pairs],
                negative=[enc(p.negative) for p in pairs],
                position=positions.get(name, "last"),
                paired=True,
                domains=[p.domain for p in pairs],
                # A pair without a template label is its own template (the pair id).
                templates=[getattr(p, "template", "") or p.id for p in pairs],
            )
        )
    return out


def load_neutral(
    tokenizer,
    *,
    split: str | None = None,
    limit: int | None = None,
    template_source=None,
    data_dir: str | None = None,
    rendering: str = "zoo",
) -> list[Prompt]:
    """Neutral eval texts through the chat template (norm units and neutral PCs)."""
    from emojax import concepts as cdata

    texts = [
        p.text
        for p in cdata.load_eval("neutral", split, limit=limit, data_dir=data_dir,
                                 rendering=rendering)
    ]  # fmt: skip
    return [encode_prompt(tokenizer, t, template_source) for t in texts]


# ---------------------------------------------------------------------------------------------
# Batching: left padding into a few bucket lengths so every bucket compiles once.


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


# ---------------------------------------------------------------------------------------------
# Captured statistics


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


# ---------------------------------------------------------------------------------------------
# Directions: all concepts x all layers at once.


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


# ---------------------------------------------------------------------------------------------
# Refusal direction (Arditi et al. 2024): layer chosen by its causal effect.


@dataclasses.dataclass
class RefusalSelection:
    """Per-candidate-layer effects of the refusal direction and the chosen layer.

    Attributes:
      layer: chosen layer.
      bypass: [L] mean refusal score on harmful prompts with the layer's direction ablated
        everywhere (lower = stronger); NaN for excluded layers.
      induce: [L] mean refusal score on harmless prompts with the direction added at its
        layer; NaN for excluded layers.
      baseline_harmful: mean refusal score on harmful prompts without intervention.
      baseline_harmless: same on harmless prompts.
    """

    layer: int
    bypass: np.ndarray
    induce: np.ndarray
    baseline_harmful: float
    baseline_harmless: float


def _refusal_score(params, config, tokens, mask, refusal, iv) -> Array:
    """Mean refusal score at the first response position of left-padded prompts."""
    from emojax.model import forward
    from emojax.readouts import refusal_score

    positions = jnp.maximum(jnp.cumsum(mask, -1) - 1, 0).astype(jnp.int32)
    last = jnp.full((tokens.shape[0], 1), tokens.shape[1] - 1, jnp.int32)
    out = forward(params, config, tokens, attention_mask=mask, positions=positions,
                  intervention=iv, logit_positions=last, capture=False)  # fmt: skip
    return jnp.mean(refusal_score(out.logits[:, 0], refusal))


@functools.partial(jax.jit, static_argnums=(1, 2))
def _refusal_effects(params, config, n_cand, refusal, vecs, h_tok, h_mask, s_tok, s_mask):
    """Ablation (harmful) and addition (harmless) refusal scores of candidate sites < n_cand."""
    from emojax.interventions import Intervention

    def one(layer):
        v = vecs[layer]
        ablate = Intervention.ablate(config, _unit(v))
        add = Intervention.steer(config, jax.nn.one_hot(layer, config.num_layers), v, 1.0)
        return (_refusal_score(params, config, h_tok, h_mask, refusal, ablate),
                _refusal_score(params, config, s_tok, s_mask, refusal, add))  # fmt: skip

    bypass, induce = jax.lax.map(one, jnp.arange(n_cand))
    base = Intervention.none(config)
    return (bypass, induce, _refusal_score(params, config, h_tok, h_mask, refusal, base),
            _refusal_score(params, config, s_tok, s_mask, refusal, base))  # fmt: skip


def select_refusal_layer(
    params,
    config,
    vectors: Array,
    harmful: tuple[Array, Array],
    harmless: tuple[Array, Array],
    refusal_ids: Sequence[int],
    *,
    exclude_last_fraction: float = 0.2,
) -> RefusalSelection:
    """Picks the refusal layer: the candidate whose ablation lowers refusal most on harmful
    prompts, among those whose addition raises refusal on harmless prompts (Arditi et al.;
    sites with an all-zero vector are never chosen);
    the last `exclude_last_fraction` of the residual sites are never candidates (nor the
    output of the last layer, where nothing can be added).

    Args:
      params: model parameters.
      config: ModelConfig.
      vectors: [L, D] harmful-minus-harmless mean per residual site (unnormalised), L =
        num_layers + 1.
      harmful: `(tokens [B, T], mask [B, T])`, left padded.
      harmless: `(tokens [B, T], mask [B, T])`, left padded.
      refusal_ids: token ids that start a refusal.
      exclude_last_fraction: fraction of the deepest layers excluded.
    """
    from emojax import validate
    from emojax.readouts import refusal_mask

    validate.refusal_inputs(config, vectors, harmful, harmless, refusal_ids)
    nl = config.num_layers
    n_cand = max(1, min(int(np.floor((nl + 1) * (1 - exclude_last_fraction))), nl))
    refusal = refusal_mask(np.asarray(refusal_ids), config.vocab_size)
    bypass, induce, b_h, b_s = jax.device_get(
        _refusal_effects(params, config, n_cand, refusal, jnp.asarray(vectors), *harmful, *harmless)
    )
    ok = (induce > b_s) & (np.linalg.norm(np.asarray(vectors)[:n_cand], axis=-1) > 0)
    layer = int(np.argmin(np.where(ok, bypass, np.inf)) if ok.any() else np.argmin(bypass))
    pad = np.full(vectors.shape[0] - n_cand, np.nan, np.float32)
    return RefusalSelection(
        layer, np.concatenate([bypass, pad]), np.concatenate([induce, pad]), float(b_h), float(b_s)
    )


# ---------------------------------------------------------------------------------------------
# The whole extraction of one model: capture, every method, the refusal layer, a VectorSet each.


@dataclasses.dataclass
class Extraction:
    """Everything one model's extraction produced.

    Attributes:
      vector_sets: `{method: VectorSet}`.
      captured: the on-device statistics (for stability metrics).
      stats: capture cost (prompts, batches, compiles, seconds).
      refusal: the refusal layer selection (None without a "refusal" concept).
      seconds: wall time of the whole extraction (capture + directions + selection).
    """

    vector_sets: dict[str, Any]
    captured: Captured
    stats: CaptureStats
    refusal: RefusalSelection | None
    seconds: float


def config_kwargs(cfg) -> dict[str, Any]:
    """`extract_model` keyword arguments from a run config's `data` and `extract` sections."""
    d, e = cfg.data, cfg.extract
    return dict(
        concepts=(*d.emotions, *d.controls),
        methods=tuple(e.methods),
        split=d.extract_split,
        max_pairs=d.max_pairs or None,
        neutral_prompts=e.neutral_prompts or None,
        refusal_prompts=e.refusal_prompts,
        refusal_exclude_last=e.refusal_exclude_last,
        positions=dict(e.positions),
        template_source=e.template_source or None,
        data_dir=d.dir or None,
        rendering=d.get("rendering", "zoo"),
        batch_size=e.batch_size,
        buckets=tuple(e.buckets),
        max_items=e.max_items or None,
        l2=e.probe_l2,
        variance_fraction=e.neutral_variance,
    )


def extract_model(
    params,
    config,
    tokenizer,
    *,
    concepts: Sequence[str] | None = None,
    methods: Sequence[str] = METHODS,
    split: str | None = "train",
    max_pairs: int | None = None,
    neutral_prompts: int | None = 200,
    refusal_prompts: int = 32,
    refusal_exclude_last: float = 0.2,
    positions: dict[str, str] | None = None,
    template_source=None,
    data_paths: dict[str, str] | None = None,
    data_dir: str | None = None,
    rendering: str = "zoo",
    batch_size: int = 32,
    buckets: Sequence[int] = DEFAULT_BUCKETS,
    max_items: int | None = None,
    l2: float = 1e-2,
    variance_fraction: float = 0.5,
    metadata: dict[str, Any] | None = None,
) -> Extraction:
    """Directions of every concept x layer x method for one model, ready to save.

    Args:
      params, config, tokenizer: the model (`emojax.load_model`).
      concepts: concept names (default `emojax.concepts.CONCEPTS`).
      methods: subset of `METHODS`.
      split: dataset split of the contrast pairs and neutral texts.
      max_pairs: pairs per concept (None: all).
      neutral_prompts: neutral texts for norm units and neutral PCs (None: all).
      refusal_prompts: harmful and harmless eval prompts (each) scoring the refusal layers.
      refusal_exclude_last: fraction of the deepest layers never chosen for refusal.
      positions: capture site overrides per concept (see `DEFAULT_POSITIONS`).
      template_source: chat template source for a base model (see `emojax.concepts`).
      data_paths: `{concept: jsonl/csv}` overrides of the shipped contrast sets.
      data_dir: a directory of user files (the config's `data.dir`): its contrast files and
        its eval_neutral / eval_harmful / eval_harmless files replace the shipped ones, a
        missing file falls back to the shipped one (`emojax.concepts.find_data_file`).
      rendering: how the contrast, neutral and refusal-scoring texts are written: 'zoo' or
        'english' (natural English for real tokenizers; the config's `data.rendering`).
      batch_size, buckets, max_items: see `capture`.
      l2: probe L2 strength.
      variance_fraction: neutral variance removed by the "denoised" method.
      metadata: extra provenance stored with the vectors (e.g. model name and hash).
    """
    from emojax import concepts as cdata
    from emojax.results import fingerprint
    from emojax.vectors import VectorSet

    t0 = time.perf_counter()
    sets = load_contrast_sets(
        tokenizer,
        concepts,
        split=split,
        limit=max_pairs,
        template_source=template_source,
        positions=positions,
        paths=data_paths,
        data_dir=data_dir,
        rendering=rendering,
    )
    neutral = load_neutral(
        tokenizer,
        split=split,
        limit=neutral_prompts,
        template_source=template_source,
        data_dir=data_dir,
        rendering=rendering,
    )
    pad_id = config.pad_token_id if config.pad_token_id is not None else 0
    captured, stats = capture(
        params,
        config,
        sets,
        neutral,
        batch_size=batch_size,
        buckets=buckets,
        max_items=max_items,
        bos_id=config.bos_token_id,
        pad_id=pad_id,
    )
    # Diff-of-means always: the refusal layer selection uses it.
    computed = tuple(dict.fromkeys(("diff_of_means", *methods)))
    dirs = jax.device_get(
        directions(captured, computed, l2=l2, variance_fraction=variance_fraction)
    )
    names = captured.concepts
    refusal = None
    if "refusal" in names:
        from emojax.readouts import refusal_token_ids

        enc = lambda kind: cdata.encode_chat(
            tokenizer,
            [
                p.text
                for p in cdata.load_eval(
                    kind, split, limit=refusal_prompts, data_dir=data_dir, rendering=rendering
                )
            ],
            template_source,
        )
        unit, scale = dirs["diff_of_means"]
        raw = unit[names.index("refusal")] * scale[names.index("refusal")][:, None]  # 0: undefined
        refusal = select_refusal_layer(
            params,
            config,
            raw,
            enc("harmful"),
            enc("harmless"),
            refusal_token_ids(tokenizer),
            exclude_last_fraction=refusal_exclude_last,
        )
    meta = {
        **(metadata or {}),
        "dataset_hash": fingerprint([[cs.positive, cs.negative] for cs in sets]),
        "neutral_hash": fingerprint(neutral),
        "positions": dict(zip(names, captured.positions, strict=True)),
        "pairs": {cs.concept: len(cs.positive) for cs in sets},
        "split": split,
        "rendering": rendering,
        "num_layers": config.num_layers,
        "sites": "resid[0..num_layers]",
        "d_model": config.d_model,
    }
    if refusal is not None:
        meta["selected_layer"] = {"refusal": refusal.layer}
    layer_norms = np.asarray(captured.layer_norms)
    vector_sets = {
        m: VectorSet(unit, scale, layer_norms, names, m, {**meta, "method": m})
        for m, (unit, scale) in dirs.items()
        if m in methods
    }
    return Extraction(vector_sets, captured, stats, refusal, time.perf_counter() - t0)


def load_or_extract_vectors(path: str, model, cfg, method: str):
    """The VectorSet saved at `path` (orbax directory or .safetensors export), or, when `path`
    is empty, `method`'s vectors extracted now with the run config's `data`/`extract` sections.
    """
    from emojax.vectors import VectorSet

    if path:
        if os.path.exists(os.path.join(path, "metadata.json")):
            return VectorSet.load(path)
        return VectorSet.load_safetensors(path)
    kwargs = {**config_kwargs(cfg), "methods": (method,)}
    ex = extract_model(model.params, model.config, model.tokenizer, **kwargs)
    return ex.vector_sets[method]
