"""Batched activation capture and direction finding for all concepts x all layers.

One jitted program per prompt-length bucket runs the model forward (no logits), reads the
residual stream `resid[l]` of every layer at each prompt's capture site and folds it into
float32 statistics that stay on device (`Captured`). Directions for every concept and layer
then come from those statistics in one vmapped call per method (`directions`).

Dimension legend: B batch, T time, D model, L layers (steering sites `resid[0..L-1]`, i.e.
the inputs of the decoder layers), C concepts, S sides (0 = positive, 1 = negative),
M item slots per concept side, R resamples.

Why per-item features and not paired second moments: the capture keeps each prompt's feature
at its capture site, `items [C, 2, M, L, D]` (slot m of both sides is pair m of a paired
contrast). Logistic probes need individual examples anyway, and per-item features make every
split-half or bootstrap statistic exact for any method at O(N L D) memory, where per-concept
second moments of paired differences cost O(C L D^2) (13 GB for C=6, L=32, D=4096 against
~1 GB of items for 1,000 prompts). `M` caps the buffer (`max_items`); the streamed
`sums`/`counts` always cover every prompt, so diff-of-means never depends on the cap. Neutral
text only needs its streamed mean, second moment `[L, D, D]` (for the neutral PCs) and
per-token norms (for the norm units); `[N, L, D]` never reaches the host.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

POSITIONS = ("last", "prompt_mean", "response_mean", "post_instruction")
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
    """

    tokens: tuple[int, ...]
    prompt_len: int | None = None


@dataclasses.dataclass
class ContrastSet:
    """Positive and negative prompts of one concept and where to read them.

    Attributes:
      concept: concept name (e.g. "concern", "refusal").
      positive: prompts showing the concept (token lists or `Prompt`s).
      negative: contrast prompts; for `paired=True`, negative[i] is the pair of positive[i].
      position: capture site, one of `POSITIONS`: "last" (last prompt token), "prompt_mean"
        (mean over prompt tokens, a leading BOS excluded), "response_mean" (mean over the
        continuation), "post_instruction" (mean over the last `post_instruction_len` prompt
        tokens: the chat-template tokens between the instruction and the response).
      paired: whether positive and negative are aligned pairs.
      domains: optional domain label per positive item (per pair).
      post_instruction_len: number of post-instruction template tokens.
    """

    concept: str
    positive: Sequence[Sequence[int] | Prompt]
    negative: Sequence[Sequence[int] | Prompt]
    position: str = "last"
    paired: bool = True
    domains: Sequence[str] | None = None
    post_instruction_len: int = 1


def _as_prompt(p: Sequence[int] | Prompt) -> Prompt:
    return p if isinstance(p, Prompt) else Prompt(tuple(int(t) for t in p))


def site_range(prompt: Prompt, position: str, *, k: int = 1, bos_id: int | None = None):
    """`(start, end)` token range (into `prompt.tokens`) averaged at a capture site."""
    n = len(prompt.tokens)
    p = n if prompt.prompt_len is None else prompt.prompt_len
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
        return max(p - k, 0), p
    raise ValueError(f"unknown position {position!r}; expected one of {POSITIONS}")


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
      neutral_sum: [L, D] sum of neutral-text token features.
      neutral_sq: [L, D, D] second moment sum of neutral-text token features.
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
    neutral_sum: Array
    neutral_sq: Array
    neutral_count: Array
    layer_norms: Array
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
    ) -> Captured:
        """Statistics from activations already in memory (e.g. your own capture).

        Args:
          items: [C, 2, M, L, D] features at the capture site.
          valid: [C, 2, M] (default: all valid).
          neutral: [N, L, D] neutral-text token features (norm units and neutral PCs).
          concepts, positions, paired, domain, domain_names: as in the class attributes.
        """
        items = jnp.asarray(items, jnp.float32)
        c, _, m, nl, d = items.shape
        valid = jnp.ones((c, 2, m), jnp.float32) if valid is None else jnp.asarray(valid)
        valid = valid.astype(jnp.float32)
        items = items * valid[..., None, None]
        if neutral is None:
            neutral = jnp.zeros((0, nl, d), jnp.float32)
        neutral = jnp.asarray(neutral, jnp.float32)
        return cls(
            items=items,
            valid=valid,
            sums=items.sum(2),
            counts=valid.sum(-1),
            domain=jnp.full((c, m), -1, jnp.int32) if domain is None else jnp.asarray(domain),
            neutral_sum=neutral.sum(0),
            neutral_sq=jnp.einsum("nld,nle->lde", neutral, neutral),
            neutral_count=jnp.asarray(neutral.shape[0], jnp.float32),
            layer_norms=jnp.median(jnp.linalg.norm(neutral, axis=-1), axis=0)
            if neutral.shape[0]
            else jnp.full((nl,), jnp.nan),
            concepts=tuple(concepts or (f"concept_{i}" for i in range(c))),
            positions=tuple(positions or ("last",) * c),
            paired=tuple(paired if paired is not None else (True,) * c),
            domain_names=tuple(domain_names),
        )

    def neutral_mean(self) -> Array:
        """[L, D] mean neutral-text feature."""
        return self.neutral_sum / jnp.maximum(self.neutral_count, 1.0)

    def neutral_covariance(self) -> Array:
        """[L, D, D] covariance of neutral-text token features."""
        n = jnp.maximum(self.neutral_count, 1.0)
        mu = self.neutral_sum / n
        return self.neutral_sq / n - jnp.einsum("ld,le->lde", mu, mu)


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
    """[B, L, D] float32 features `sum_t site[b, t] * resid[l, b, t]` for l < L.

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
    """[L, B, T, D] float32 residual stream entering each decoder layer."""
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
    return out.resid[: config.num_layers].astype(jnp.float32)


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

    def neutral_update(_):
        sq = acc.neutral_sq
        if sq.size:  # static: second moments switched off -> [L, 0, 0]
            sq = sq + jnp.einsum("lbtd,lbte,bt->lde", resid, resid, w)
        return acc.neutral_sum + jnp.einsum("lbtd,bt->ld", resid, w), sq

    neutral_sum, neutral_sq = jax.lax.cond(
        batch["has_neutral"], neutral_update, lambda _: (acc.neutral_sum, acc.neutral_sq), None
    )
    norms = jnp.where(w[None] > 0, jnp.linalg.norm(resid, axis=-1), jnp.nan)  # [L, B, T]
    acc = acc.replace(
        items=items,
        valid=valid,
        sums=sums,
        counts=counts,
        neutral_sum=neutral_sum,
        neutral_sq=neutral_sq,
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
    t0 = time.perf_counter()
    nc, nl, d = len(contrast_sets), config.num_layers, config.d_model
    largest = max([max(len(cs.positive), len(cs.negative)) for cs in contrast_sets] + [1])
    cap = int(max_item_bytes // max(nc * 2 * nl * d * 4, 1))
    num_slots = max(1, min(largest if max_items is None else max_items, cap))

    rows: list[_Row] = []
    domain_names: list[str] = []
    domain = np.full((nc, num_slots), -1, np.int32)
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
    rows += [_Row(_as_prompt(p).tokens, 0, 0, nc, 0, num_slots, True) for p in neutral]

    sq_shape = (nl, d, d) if neutral_second_moment else (nl, 0, 0)
    acc = Captured(
        items=jnp.zeros((nc, 2, num_slots, nl, d), jnp.float32),
        valid=jnp.zeros((nc, 2, num_slots), jnp.float32),
        sums=jnp.zeros((nc, 2, nl, d), jnp.float32),
        counts=jnp.zeros((nc, 2), jnp.float32),
        domain=jnp.asarray(domain),
        neutral_sum=jnp.zeros((nl, d), jnp.float32),
        neutral_sq=jnp.zeros(sq_shape, jnp.float32),
        neutral_count=jnp.zeros((), jnp.float32),
        layer_norms=jnp.full((nl,), jnp.nan, jnp.float32),
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


def masked_means(items: Array, valid: Array) -> Array:
    """[C, 2, L, D] per-side means of `items [C, 2, M, L, D]` over valid slots."""
    w = valid / jnp.maximum(valid.sum(-1, keepdims=True), 1.0)
    return jnp.einsum("csm,csmld->csld", w, items)


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


def _newton_logistic(x: Array, y: Array, w: Array, l2: float, steps: int = 30) -> Array:
    """Weighted L2 logistic regression by Newton's method; returns [D + 1] (weights, bias)."""
    n, d = x.shape
    xb = jnp.concatenate([x, jnp.ones((n, 1), x.dtype)], axis=1)
    reg = jnp.full((d + 1,), l2).at[-1].set(0.0)
    wn = w / jnp.maximum(w.sum(), 1.0)

    def step(beta, _):
        p = jax.nn.sigmoid(xb @ beta)
        grad = xb.T @ (wn * (p - y)) + reg * beta
        hess = (xb.T * (wn * p * (1 - p))) @ xb + jnp.diag(reg + 1e-8)
        return beta - jnp.linalg.solve(hess, grad), None

    beta, _ = jax.lax.scan(step, jnp.zeros(d + 1, x.dtype), None, length=steps)
    return beta


def _default_fit() -> Callable[[Array, Array, Array, float], Array]:
    return lambda x, y, w, l2: _newton_logistic(x, y, w, l2)[:-1]


def probe_direction(items: Array, valid: Array, l2: float = 1e-2, fit=None) -> Array:
    """[C, L, D] unit weight vectors of logistic probes positive-vs-negative, per (c, l).

    The objective is the weighted mean log-loss + (l2 / 2) |w|^2 on features divided by the
    (c, l) RMS feature norm, so one `l2` means the same strength at every layer (an isotropic
    rescaling leaves the direction's geometry alone).

    Args:
      items: [C, 2, M, L, D].
      valid: [C, 2, M].
      l2: L2 strength.
      fit: `fit(x [N, D], y [N], w [N], l2) -> w [D]`; default: Newton's method.
    """
    fit = fit or _default_fit()
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
      difference along the unit direction (for diff-of-means, its norm).
    """
    dom = diff_of_means(captured.sums, captured.counts)
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
        unit = _unit(v)
        out[method] = (unit, jnp.sum(unit * dom, -1))
    return out


def random_directions(rng: Array, num: int, num_layers: int, d_model: int) -> Array:
    """[num, L, D] random unit directions: the null, norm-matched through `scale`/norm units."""
    return _unit(jax.random.normal(rng, (num, num_layers, d_model), jnp.float32))


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
    prompts, among those whose addition raises refusal on harmless prompts (Arditi et al.);
    the last `exclude_last_fraction` of layers are never candidates.

    Args:
      params: model parameters.
      config: ModelConfig.
      vectors: [L, D] harmful-minus-harmless mean per layer (unnormalised).
      harmful: `(tokens [B, T], mask [B, T])`, left padded.
      harmless: `(tokens [B, T], mask [B, T])`, left padded.
      refusal_ids: token ids that start a refusal.
      exclude_last_fraction: fraction of the deepest layers excluded.
    """
    from emojax.interventions import Intervention
    from emojax.model import forward
    from emojax.readouts import refusal_mask, refusal_score

    nl = config.num_layers
    n_cand = max(1, int(np.floor(nl * (1 - exclude_last_fraction))))
    refusal = refusal_mask(np.asarray(refusal_ids), config.vocab_size)

    def score(tokens, mask, iv):
        positions = jnp.maximum(jnp.cumsum(mask, -1) - 1, 0).astype(jnp.int32)
        last = jnp.full((tokens.shape[0], 1), tokens.shape[1] - 1, jnp.int32)
        out = forward(
            params,
            config,
            tokens,
            attention_mask=mask,
            positions=positions,
            intervention=iv,
            logit_positions=last,
            capture=False,
        )
        return jnp.mean(refusal_score(out.logits[:, 0], refusal))

    @jax.jit
    def effects(vecs, h_tok, h_mask, s_tok, s_mask):
        def one(layer):
            v = vecs[layer]
            ablate = Intervention.ablate(config, _unit(v))
            add = Intervention.steer(config, jax.nn.one_hot(layer, nl), v, 1.0)
            return score(h_tok, h_mask, ablate), score(s_tok, s_mask, add)

        base = Intervention.none(config)
        bypass, induce = jax.lax.map(one, jnp.arange(n_cand))
        return bypass, induce, score(h_tok, h_mask, base), score(s_tok, s_mask, base)

    bypass, induce, b_h, b_s = jax.device_get(effects(jnp.asarray(vectors), *harmful, *harmless))
    ok = induce > b_s
    layer = int(np.argmin(np.where(ok, bypass, np.inf)) if ok.any() else np.argmin(bypass))
    pad = np.full(nl - n_cand, np.nan, np.float32)
    return RefusalSelection(
        layer, np.concatenate([bypass, pad]), np.concatenate([induce, pad]), float(b_h), float(b_s)
    )
