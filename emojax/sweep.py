"""Steering sweeps: vectors x layers x coefficients x prompts in one program per layer.

Dimension legend: B batch rows (= conditions x prompts), T time, D model width, L layers,
V vocabulary, I steering vectors (named concepts, then random directions), J concept
readouts, K coefficients, C conditions, N evaluation prompts, M neutral prompts, P joint
pairs (control, emotion), A sweep layers, W generated tokens.

A *condition* is a layer and a coefficient per vector (in units of that layer's median
residual norm): it adds `layer_norms[l] * Σ_i w_i v̂_i[l]` to `resid[l]` at every position,
which is exactly a PyTorch forward-pre-hook on decoder layer `l`. Single-vector grids
(`w = coef · e_i`) and joint control x emotion grids (`w = a · e_c + b · e_e`, for Δ_steer)
are both conditions.

How the work is laid out:
* One unsteered forward captures `resid[l]` for every prompt (prefix reuse, DESIGN.md §2);
  each steered prefill then runs only layers `l..L-1`, with logits at the first response
  position only (evaluation prompts) or at every position (neutral text, for the
  cross-entropy change).
* Conditions of one layer are folded into the batch axis of a single jitted program
  (`start_layer` is the only static value, so one compile per layer serves every vector
  and coefficient). Steered generation (`steered_generate`) shares the prompt prefill of
  the layers below the injection layer too and vmaps the rest (upper prefill and cached
  greedy decoding) over conditions.
* Conditions are processed in fixed-size chunks (sized from a memory budget, last chunk
  padded so shapes never change); each chunk is stored atomically (`results.ChunkStore`),
  so a killed sweep resumes and produces identical results.

Entry point: `run_sweep(model, vectors, prompts, config, workdir) -> SweepResults`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from emojax import readouts as ro
from emojax import results as res
from emojax import stats, validate
from emojax.config import ModelConfig
from emojax.generate import decode_tokens
from emojax.interventions import Intervention
from emojax.metrics import incremental, influence, modularity
from emojax.model import default_positions, embed, forward, init_cache, run_layers, unembed
from emojax.params import Params

Array = jax.Array

EMOTIONS = ("concern", "eagerness", "self_doubt")
CONTROLS = ("harm_salience", "caution", "refusal")
STYLE_KEYS = ("apology", "hedging", "warmth", "length")
BEHAVIOUR_KEYS = ("refused", "harmful_compliance", "over_refusal")
# Keys of a config's `sweep` section that choose the inputs, read by scripts, not run_sweep.
INPUT_KEYS = ("method", "prompts_per_kind", "requests_per_kind", "neutral_prompts")


# ---------------------------------------------------------------------------------------------
# Configuration and inputs.


def default_config() -> dict[str, Any]:
    """The sweep settings (the `sweep` section of configs/zoo.py overrides these).

    Keys:
      layers: injection layers; ints (negative counts from the end) or floats in [0, 1)
        (fraction of depth, so one config serves models of different depth).
      coefs: coefficients in units of the layer's median residual norm.
      vectors: named vectors to sweep (None = every concept of the VectorSet).
      num_random: norm-matched random directions (the null).
      generate_random: also generate (behaviour readouts) for random directions.
      max_new_tokens: length of the steered greedy responses.
      readout_layer: residual-stream index r in [0, L] (-1 = L, the last layer's output)
        whose last-position activation is projected on every concept direction (the
        directions and norm unit of vector layer min(r, L_v - 1)); only conditions injected
        below r get projections.
      joint_controls / joint_emotions / joint_coefs: the joint grids for Δ_steer: each
        shared control (the refusal direction) x each partner, on a K' x K' coefficient
        grid. Partners form three arms of equal-shaped grids: `joint_control_partners`
        (the controls arm: harm-salience, caution), `joint_emotions` (the emotion arm) and
        the first `joint_random` random directions (the random-direction null arm).
      joint_control_partners: non-emotional partners of the controls arm.
      joint_random: random directions paired with each shared control (the null of Δ_steer).
      kappas: KL budgets (nats, mean over neutral prompts) for Δ_steer.
      memory_mb: activation memory budget per program (sets the chunk sizes). On CPUs a
        small budget (tens of MB: batches that stay in cache) is fastest; on accelerators
        use most of the device memory.
      num_bootstrap: bootstrap resamples for intervals.
      seed: seed of the random directions and the bootstrap.
    """
    return dict(
        layers=(0.5,),
        coefs=(-0.5, -0.25, 0.0, 0.25, 0.5),
        vectors=None,
        num_random=16,
        generate_random=True,
        max_new_tokens=10,
        readout_layer=-1,
        joint_controls=("refusal",),
        joint_control_partners=("harm_salience", "caution"),
        joint_emotions=EMOTIONS,
        joint_random=16,
        joint_coefs=(-0.5, -0.25, 0.0, 0.25, 0.5),
        kappas=(0.05, 0.1, 0.25),
        memory_mb=64,
        num_bootstrap=1000,
        seed=0,
    )


def _resolve_config(config: Any) -> dict[str, Any]:
    out = default_config()
    if config is None:
        return out
    if hasattr(config, "to_dict"):
        config = config.to_dict()
    # Keys of the config section that choose inputs (prompts, vector method), not settings.
    config = {k: v for k, v in config.items() if k not in INPUT_KEYS}
    unknown = set(config) - set(out)
    if unknown:
        raise ValueError(f"unknown sweep config keys {sorted(unknown)}; known: {sorted(out)}")
    out.update(config)
    keys = ("layers", "coefs", "joint_controls", "joint_control_partners", "joint_emotions")
    for k in keys + ("joint_coefs", "kappas"):
        out[k] = tuple(out[k])
    if out["joint_random"] > out["num_random"]:
        raise ValueError(
            f"joint_random={out['joint_random']} exceeds num_random={out['num_random']}"
        )
    if out["vectors"] is not None:
        out["vectors"] = tuple(out["vectors"])
    if out["joint_emotions"] and not any(c == 0 for c in out["joint_coefs"]):
        raise ValueError("joint_coefs must contain 0 (the controls-alone points of Δ_steer)")
    return out


ARMS = ("controls", "emotion", "random")


def _arm_of(cfg: dict[str, Any], partner: str) -> str:
    if partner in cfg["joint_control_partners"]:
        return "controls"
    return "emotion" if partner in cfg["joint_emotions"] else "random"


def joint_pairs(
    cfg: dict[str, Any], names: Sequence[str], num_named: int
) -> tuple[list[tuple[int, int]], list[str]]:
    """The joint grids of Δ_steer: (shared control, partner) vector indices and each one's arm.

    Every shared control (the refusal direction) is paired with every non-emotional partner
    (the controls arm), every emotion (the emotion arm) and the first `joint_random` random
    directions (the null arm), so the three arms search grids of the same shape.
    """
    named = list(names[:num_named])
    randoms = [n for n in names[num_named:]][: cfg["joint_random"]]
    partners = [p for p in cfg["joint_control_partners"] + cfg["joint_emotions"] if p in named]
    pairs, arms = [], []
    for c in cfg["joint_controls"]:
        if c not in named:
            continue
        for p in partners + randoms:
            if p == c:
                continue
            pairs.append((list(names).index(c), list(names).index(p)))
            arms.append(_arm_of(cfg, p))
    return pairs, arms


def resolve_layers(layers: Sequence[float | int], num_layers: int) -> tuple[int, ...]:
    """Ints (negative from the end) or depth fractions in [0, 1) -> sorted unique layers."""
    out = {validate.depth_layer(x, num_layers, name=f"layers[{i}]") for i, x in enumerate(layers)}
    return tuple(sorted(out))


@dataclasses.dataclass
class SweepPrompts:
    """Tokenised prompts of a sweep (left-padded to fixed lengths).

    Attributes:
      tokens: int32 [N, T] evaluation prompts in the chat template, ending with the assistant
        header (so the last position predicts the first response token).
      mask: int32 [N, T] 1 for real tokens.
      harmful: bool [N] True for harmful requests.
      kinds: N kind names ('harmful', 'harmless', 'borderline', ...).
      neutral_tokens: int32 [M, T'] neutral text (KL at the last position, cross-entropy).
      neutral_mask: int32 [M, T'].
      ids: N prompt ids (for the record).
      request: int [N] index of each prompt's underlying request (cue and framing variants
        of one request share it; the unit of every resampling). Default: one per prompt.
      num_requests: U, the size of the request index space (requests may be shared with
        other prompt sets of the same analysis, so U can exceed the number used here).
    """

    tokens: np.ndarray
    mask: np.ndarray
    harmful: np.ndarray
    kinds: tuple[str, ...]
    neutral_tokens: np.ndarray
    neutral_mask: np.ndarray
    ids: tuple[str, ...] = ()
    request: np.ndarray | None = None
    num_requests: int = 0

    def __post_init__(self):
        if self.request is None:
            self.request = np.arange(len(self.tokens))
        self.request = np.asarray(self.request, np.int32)
        self.num_requests = int(max(self.num_requests, self.request.max(initial=-1) + 1))
        if self.request.shape != (len(self.tokens),) or self.request.min(initial=0) < 0:
            raise ValueError("request must be [N] non-negative request indices")
        self.tokens = np.asarray(self.tokens, np.int32)
        self.mask = np.asarray(self.mask, np.int32)
        self.harmful = np.asarray(self.harmful, bool)
        self.kinds = tuple(self.kinds)
        self.neutral_tokens = np.asarray(self.neutral_tokens, np.int32)
        self.neutral_mask = np.asarray(self.neutral_mask, np.int32)
        if self.tokens.shape != self.mask.shape or self.harmful.shape != self.tokens.shape[:1]:
            raise ValueError("tokens, mask [N, T] and harmful [N] disagree")
        if self.mask[:, -1].min() < 1 or self.neutral_mask[:, -1].min() < 1:
            raise ValueError("prompts must be left-padded (last position a real token)")

    @property
    def num_prompts(self) -> int:
        return self.tokens.shape[0]

    def fingerprint(self) -> str:
        return res.fingerprint(
            [self.tokens, self.mask, self.harmful, self.neutral_tokens, self.neutral_mask,
             self.request]
        )  # fmt: skip

    @classmethod
    def from_texts(
        cls,
        tokenizer: Any,
        eval_texts: Sequence[str],
        harmful: Sequence[bool],
        kinds: Sequence[str],
        neutral_texts: Sequence[str],
        *,
        template_source: Any = None,
        pad_multiple: int = 16,
        ids: Sequence[str] = (),
        request: Sequence[int] | None = None,
        num_requests: int = 0,
    ) -> SweepPrompts:
        """Formats `eval_texts` through the chat template and tokenises everything.

        Neutral texts are tokenised as plain text (with the tokenizer's special tokens).
        Lengths are rounded up to `pad_multiple` so models of one family share compiles.
        """
        from emojax.concepts.chat import format_chat, left_pad

        pad_id = _pad_id(tokenizer)
        ev = [
            tokenizer.encode(format_chat(tokenizer, t, template_source), add_special_tokens=False)
            for t in eval_texts
        ]
        ne = [tokenizer.encode(t) for t in neutral_texts]
        rnd = lambda n: -(-n // pad_multiple) * pad_multiple
        tokens, mask = left_pad(ev, pad_id, rnd(max(map(len, ev))))
        ntokens, nmask = left_pad(ne, pad_id, rnd(max(map(len, ne))))
        return cls(
            tokens, mask, np.asarray(harmful, bool), tuple(kinds), ntokens, nmask, tuple(ids),
            None if request is None else np.asarray(request), num_requests,
        )  # fmt: skip

    @classmethod
    def from_concepts(
        cls,
        tokenizer: Any,
        *,
        num_per_kind: int | dict[str, int] = 16,
        num_neutral: int = 16,
        split: str | None = "test",
        template_source: Any = None,
        kinds: Sequence[str] = ("harmful", "harmless", "borderline"),
        data_dir: str | None = None,
        rendering: str = "zoo",
    ) -> SweepPrompts:
        """Evaluation prompts from the datasets (`emojax.concepts`).

        `num_per_kind` is a count for every kind or `{kind: count}` (kinds with a count).
        `data_dir` holds the user's eval_<kind> files (others fall back to the shipped ones);
        `rendering` is 'zoo' or 'english'.
        """
        from emojax import concepts

        if isinstance(num_per_kind, dict):
            kinds = tuple(num_per_kind)
        items = []
        for kind in kinds:
            limit = num_per_kind[kind] if isinstance(num_per_kind, dict) else num_per_kind
            items += concepts.load_eval(
                kind, split, limit=limit, data_dir=data_dir, rendering=rendering
            )
        neutral = concepts.load_eval(
            "neutral", split, limit=num_neutral, data_dir=data_dir, rendering=rendering
        )
        return cls.from_texts(
            tokenizer,
            [p.text for p in items],
            [p.kind == "harmful" for p in items],
            [p.kind for p in items],
            [p.text for p in neutral],
            template_source=template_source,
            ids=[p.id for p in items],
        )


def _pad_id(tokenizer: Any) -> int:
    for name in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            return int(value)
    return 0


@dataclasses.dataclass
class SteeringVectors:
    """Unit directions [I, L, D] with names and the per-layer norm unit [L]."""

    names: tuple[str, ...]
    vectors: np.ndarray
    layer_norms: np.ndarray
    num_named: int

    @classmethod
    def build(
        cls, vectors: Any, names: Sequence[str] | None, num_random: int, seed: int
    ) -> SteeringVectors:
        """Named vectors of a `VectorSet` (or anything with `.concepts`, `.vectors` [C, L, D],
        `.layer_norms` [L]) plus `num_random` seeded random unit directions per layer."""
        all_names = tuple(vectors.concepts)
        names = tuple(all_names if names is None else names)
        v = np.asarray(vectors.vectors, np.float32)[[all_names.index(n) for n in names]]
        v = v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)
        rng = np.random.default_rng(seed)
        r = rng.standard_normal((num_random, v.shape[1], v.shape[2])).astype(np.float32)
        r /= np.maximum(np.linalg.norm(r, axis=-1, keepdims=True), 1e-12)
        return cls(
            names=names + tuple(f"random_{i:02d}" for i in range(num_random)),
            vectors=np.concatenate([v, r], axis=0),
            layer_norms=np.asarray(vectors.layer_norms, np.float32),
            num_named=len(names),
        )


# ---------------------------------------------------------------------------------------------
# Conditions.


@dataclasses.dataclass
class Conditions:
    """The flat condition table and where each condition sits in the output grids.

    Attributes:
      layer: int [C] injection layer.
      weights: float [C, I] coefficient of every vector (norm units).
      generate: bool [C] run steered generation for this condition.
      grid_index: int [C, 3] (layer slot, vector, coef) for grid conditions, -1 otherwise.
      joint_index: int [C, 4] (layer slot, pair, a, b) for joint conditions, -1 otherwise.
      is_base: bool [C] the unsteered condition (zero weights; gives the baseline responses).
    """

    layer: np.ndarray
    weights: np.ndarray
    generate: np.ndarray
    grid_index: np.ndarray
    joint_index: np.ndarray
    is_base: np.ndarray


def build_conditions(
    layers: Sequence[int],
    num_vectors: int,
    num_named: int,
    coefs: Sequence[float],
    pairs: Sequence[tuple[int, int]],
    joint_coefs: Sequence[float],
    generate_random: bool,
) -> Conditions:
    """Single-vector grid [A, I, K] and joint grid [A, P, K', K'] as one condition table.

    Row 0 is the unsteered baseline (zero weights at the first layer), so the baseline
    responses come from the same compiled program as the steered ones.
    """
    rows = [(layers[0], np.zeros(num_vectors, np.float32), True, (-1, -1, -1), (-1,) * 4)]
    for a, layer in enumerate(layers):
        for i in range(num_vectors):
            for k, c in enumerate(coefs):
                w = np.zeros(num_vectors, np.float32)
                w[i] = c
                gen = generate_random or i < num_named
                rows.append((layer, w, gen, (a, i, k), (-1, -1, -1, -1)))
        for p, (ci, ei) in enumerate(pairs):
            for ka, ca in enumerate(joint_coefs):
                for kb, cb in enumerate(joint_coefs):
                    w = np.zeros(num_vectors, np.float32)
                    w[ci] += ca
                    w[ei] += cb
                    rows.append((layer, w, True, (-1, -1, -1), (a, p, ka, kb)))
    return Conditions(
        layer=np.asarray([r[0] for r in rows], np.int32),
        weights=np.stack([r[1] for r in rows]),
        generate=np.asarray([r[2] for r in rows], bool),
        grid_index=np.asarray([r[3] for r in rows], np.int32),
        joint_index=np.asarray([r[4] for r in rows], np.int32),
        is_base=np.arange(len(rows)) == 0,
    )


def steering_matrix(cond: Conditions, vecs: SteeringVectors) -> np.ndarray:
    """[C, D] vector added to resid[layer_c]: layer_norms[l] · Σ_i w_ci v̂_i[l]."""
    v = vecs.vectors[:, cond.layer]  # [I, C, D]
    s = np.einsum("ci,icd->cd", cond.weights, v)
    return (s * vecs.layer_norms[cond.layer][:, None]).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Batch sizes from a memory budget.


def prefill_row_bytes(
    config: ModelConfig, t: int, start_layer: int, logit_positions: int, capture: bool
) -> int:
    """Rough peak activation bytes of one batch row of a prefill from `start_layer`."""
    c = config
    per_layer = t * (4 * c.d_model + 3 * c.d_ff) + c.num_heads * t * t * 2
    kept = t * c.d_model * ((c.num_layers + 1 - start_layer) if capture else 2)
    return 4 * (per_layer + kept + 2 * logit_positions * c.vocab_size)


def generate_row_bytes(config: ModelConfig, t: int, new: int) -> int:
    """Rough peak bytes of one batch row of cached generation."""
    c = config
    s = t + new
    cache = 2 * c.num_layers * s * c.num_kv_heads * c.head_dim
    act = t * (4 * c.d_model + 3 * c.d_ff) + c.num_heads * t * s * 2
    return 4 * (cache + act + 2 * c.vocab_size)


def rows_for_budget(row_bytes: int, memory_mb: float) -> int:
    return max(1, int(memory_mb * 2**20) // max(row_bytes, 1))


# ---------------------------------------------------------------------------------------------
# The jitted programs.


@functools.partial(jax.jit, static_argnames=("config", "start_layer", "readout"))
def steered_eval(
    params: Params,
    config: ModelConfig,
    tokens: Array,
    mask: Array,
    h: Array,
    steer: Array,
    refusal: Array,
    read_dirs: Array,
    *,
    start_layer: int,
    readout: int | None,
) -> tuple[Array, Array]:
    """Refusal score and concept projections of C conditions on N prompts.

    Args:
      params: model parameters.
      config: static model config.
      tokens: int [N, T] left-padded prompts.
      mask: [N, T] attention mask.
      h: [N, T, D] unsteered resid[start_layer] (prefix reuse).
      steer: [C, D] vectors added to resid[start_layer].
      refusal: bool [V] refusal-start tokens.
      read_dirs: [J, D] unit concept directions at the readout layer, pre-divided by that
        layer's norm unit.
      start_layer: injection layer (static).
      readout: readout layer minus start_layer (static), or None for no projections.

    Returns:
      refusal scores [C, N] and projections [C, N, J] (zeros [C, N, J] without readout).
    """
    c, (n, t, d) = steer.shape[0], h.shape
    x = (h[None] + steer[:, None, None, :].astype(h.dtype)).reshape(c * n, t, d)
    mask = jnp.tile(mask, (c, 1))
    none = Intervention.none(config)
    # Only the last position of the output is read: the last layer computes it alone, and
    # the residual is captured only when the readout lies below the output.
    upper = config.num_layers - start_layer
    out, captured, _ = run_layers(
        params,
        config,
        x.astype(params.embed.dtype),
        positions=default_positions(tokens, mask),
        q_slots=jnp.arange(t),
        k_valid=mask.astype(bool),
        intervention=none,
        weights=none.position_weights(c * n, t),
        start_layer=start_layer,
        capture=readout is not None and readout < upper,
        out_index=jnp.full((c * n, 1), t - 1),
    )
    score = ro.refusal_score(unembed(params, config, out[:, -1]), refusal).reshape(c, n)
    return score, _projections(out[:, -1], captured, readout, upper, read_dirs, c, n)


@functools.partial(jax.jit, static_argnames=("config", "start_layer"))
def steered_neutral(
    params: Params,
    config: ModelConfig,
    tokens: Array,
    mask: Array,
    h: Array,
    steer: Array,
    base_last_logits: Array,
    base_nll: Array,
    *,
    start_layer: int,
) -> tuple[Array, Array]:
    """KL(unsteered ‖ steered) at the last position and cross-entropy change, on neutral text.

    Returns:
      kl [C, M] and nll_delta [C, M] (steered minus unsteered mean token NLL).
    """
    c, (m, t, d) = steer.shape[0], h.shape
    x = (h[None] + steer[:, None, None, :].astype(h.dtype)).reshape(c * m, t, d)
    tk, mk = jnp.tile(tokens, (c, 1)), jnp.tile(mask, (c, 1))
    out = forward(
        params, config, tk, attention_mask=mk, start_layer=start_layer, resid=x, capture=False
    )
    kl = ro.kl_divergence(jnp.tile(base_last_logits, (c, 1)), out.logits[:, -1]).reshape(c, m)
    nll = ro.token_nll(out.logits, tk, mk).reshape(c, m)
    return kl, nll - base_nll[None]


@functools.partial(jax.jit, static_argnames=("config", "layer", "max_new_tokens"))
def steered_generate(
    params: Params,
    config: ModelConfig,
    tokens: Array,
    mask: Array,
    steer: Array,
    *,
    layer: int,
    max_new_tokens: int,
) -> Array:
    """Greedy responses of C conditions on N prompts with prefix reuse: int32 [C, N, W].

    Equals `emojax.generate(..., intervention=Intervention.add(config, layer, steer[c]))` per
    condition (steering on prompt and generated tokens), but the prompt prefill of layers
    `0..layer-1` runs once for all conditions: its keys/values and `resid[layer]` are shared,
    and each condition prefills only layers `layer..L-1` before its cached decoding steps.
    Conditions are folded into the batch axis (one additive entry per condition, picked per
    row by the position weights), so every matmul sees C x N rows.

    Args:
      params: model parameters.
      config: static model config.
      tokens: int [N, T] left-padded prompts.
      mask: [N, T] attention mask.
      steer: [C, D] vectors added to resid[layer] at every position.
      layer: injection layer (static).
      max_new_tokens: W (static).
    """
    return _steered_decode(
        params, config, tokens, mask, steer, layer=layer, max_new_tokens=max_new_tokens
    )[0]


@functools.partial(jax.jit, static_argnames=("config", "layer", "max_new_tokens", "readout"))
def steered_generate_and_eval(
    params: Params,
    config: ModelConfig,
    tokens: Array,
    mask: Array,
    steer: Array,
    refusal: Array,
    read_dirs: Array,
    *,
    layer: int,
    max_new_tokens: int,
    readout: int | None,
) -> tuple[Array, Array, Array]:
    """`steered_generate` and the `steered_eval` readouts of the same steered prefill.

    The prefill that generation needs anyway yields the refusal score at the first response
    position and the readout projections, so a sweep that generates does not run that
    prefill a second time.

    Returns:
      (tokens int32 [C, N, W], refusal scores [C, N], projections [C, N, J]) with the
      arguments and readouts of `steered_eval` and `steered_generate`.
    """
    c, n = steer.shape[0], tokens.shape[0]
    upper = config.num_layers - layer
    ids, logits, last, captured = _steered_decode(
        params,
        config,
        tokens,
        mask,
        steer,
        layer=layer,
        max_new_tokens=max_new_tokens,
        capture=readout is not None and readout < upper,
    )
    score = ro.refusal_score(logits, refusal).reshape(c, n)
    return ids, score, _projections(last, captured, readout, upper, read_dirs, c, n)


def _projections(last, captured, readout, upper, read_dirs, c, n) -> Array:
    """Readout projections [C, N, J] at the last prompt position (zeros without readout).

    `last` [C*N, D] is the output of the last layer there; `captured` holds the inputs of
    layers start..L-1 (needed when the readout lies below the output).
    """
    if readout is None:
        return jnp.zeros((c, n, read_dirs.shape[0]), jnp.float32)
    x = last if readout == upper else captured[readout][:, -1]  # [C*N, D]
    return jnp.einsum("bd,jd->bj", x.astype(jnp.float32), read_dirs).reshape(c, n, -1)


def _steered_decode(params, config, tokens, mask, steer, *, layer, max_new_tokens, capture=False):
    """The program behind `steered_generate` and `steered_generate_and_eval`.

    Returns:
      (tokens int32 [C, N, W], the prefill's last-position logits [C*N, V], the last layer's
      output there [C*N, D], and with `capture` the inputs of layers `layer..L-1`, else None).
    """
    n, t = tokens.shape
    c, w = steer.shape[0], max_new_tokens
    s, b = t + w, steer.shape[0] * tokens.shape[0]
    mask = mask.astype(jnp.int32)
    dtype = params.embed.dtype
    k_valid = jnp.concatenate([mask, jnp.ones((n, w), jnp.int32)], 1).astype(bool)
    positions = default_positions(tokens, mask)
    none = Intervention.none(config)
    # Shared, unsteered prefill of layers 0..layer-1: their prompt keys/values and resid[layer].
    h0 = embed(params, config, tokens, positions)
    resid, _, shared = run_layers(
        params,
        config,
        h0,
        positions=positions,
        q_slots=jnp.arange(t),
        k_valid=k_valid,
        intervention=none,
        weights=none.position_weights(n, t),
        end_layer=layer,
        capture=False,
        cache=init_cache(config, n, s, dtype),
        cache_slot=0,
    )
    # Conditions folded into the batch (row r = condition r // N, prompt r % N): one additive
    # entry per condition at `layer`, selected per row by the position weights.
    tile = lambda x, axis=0: jnp.concatenate([x] * c, axis=axis)
    onehot = jnp.zeros((config.num_layers,), jnp.float32).at[layer].set(1.0)
    iv = none.replace(
        add_vectors=onehot[None, :, None] * steer.astype(jnp.float32)[:, None, :],
        add_masks=jnp.ones((c, 1, 1)),
        add_on_new=jnp.ones((c,)),
    )
    rows = (jnp.arange(b) // n)[None, :] == jnp.arange(c)[:, None]  # [C, B]
    row_weights = rows.astype(jnp.float32)[:, :, None]
    positions_b, k_valid_b = tile(positions), tile(k_valid)
    h, captured, upper = run_layers(
        params,
        config,
        tile(resid),
        positions=positions_b,
        q_slots=jnp.arange(t),
        k_valid=k_valid_b,
        intervention=iv,
        weights=jnp.broadcast_to(row_weights, (c, b, t)),
        start_layer=layer,
        capture=capture,
        cache=tuple(tile(x, 1) for x in shared),
        cache_slot=0,
        out_index=jnp.full((b, 1), t - 1),
    )
    # Layers below `layer` keep the shared prompt cache; the rest hold each condition's.
    cache = upper
    logits = unembed(params, config, h[:, -1])
    first = jnp.argmax(logits, axis=-1).astype(jnp.int32)

    greedy = lambda logits, key: jnp.argmax(logits, axis=-1).astype(jnp.int32)
    out = decode_tokens(
        params,
        config,
        first,
        positions_b[:, -1] + 1,
        cache,
        k_valid=k_valid_b,
        intervention=iv,
        weights=row_weights,
        start_slot=t,
        num_steps=w - 1,
        pick=greedy,
    )
    return out.reshape(c, n, w), logits, h[:, -1], captured


@functools.partial(jax.jit, static_argnames=("config",))
def _base_pass(params, config, tokens, mask, refusal):
    out = forward(
        params,
        config,
        tokens,
        attention_mask=mask,
        logit_positions=jnp.full((tokens.shape[0], 1), tokens.shape[1] - 1, jnp.int32),
    )
    return out.resid, ro.refusal_score(out.logits[:, 0], refusal)


@functools.partial(jax.jit, static_argnames=("config",))
def _base_neutral(params, config, tokens, mask):
    out = forward(params, config, tokens, attention_mask=mask)
    return out.resid, out.logits[:, -1], ro.token_nll(out.logits, tokens, mask)


# ---------------------------------------------------------------------------------------------
# Results.


@dataclasses.dataclass
class SweepResults:
    """Per-prompt readouts of a sweep, the metadata to read them, and the summary metrics.

    `arrays` (all saved to `readouts.npz`):
      grid_<r> [A, I, K, N] for r in refusal_score, refused, harmful_compliance,
        over_refusal, apology, hedging, warmth, length (behaviour/style NaN where no
        generation ran); grid_projection [A, I, K, N, J] (in norm units of the readout
        layer); grid_kl, grid_nll_delta [A, I, K, M]; grid_tokens int32 [A, I, K, N, W]
        (-1 where no generation ran).
      joint_<r> [A, P, K', K', N or M ...]: the same readouts on the joint grid.
      base_<r> [N] unsteered readouts (refusal_score, behaviour, style, projection [N, J],
        tokens [N, W]); base_nll [M]; harmful bool [N]; vector_cosine [A, I', I'] cosines
        of the named steering directions at each sweep layer.
    `meta`: vector_names (named first, then random_XX), num_named, concepts (readout columns
      J), layers, coefs, joint_pairs, joint_coefs, kinds, readout_layer, config.
    `summary`: metrics (see `summarize`).
    """

    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]
    summary: dict[str, Any] = dataclasses.field(default_factory=dict)

    def save(self, workdir: str) -> None:
        res.save_arrays(os.path.join(workdir, "readouts.npz"), self.arrays)
        res.write_json(os.path.join(workdir, "sweep_meta.json"), self.meta)
        res.write_json(os.path.join(workdir, "summary.json"), self.summary)

    @classmethod
    def load(cls, workdir: str) -> SweepResults:
        with open(os.path.join(workdir, "sweep_meta.json")) as f:
            meta = json.load(f)
        summary = {}
        path = os.path.join(workdir, "summary.json")
        if os.path.exists(path):
            with open(path) as f:
                summary = json.load(f)
        return cls(res.load_arrays(os.path.join(workdir, "readouts.npz")), meta, summary)


# ---------------------------------------------------------------------------------------------
# The sweep.


def _chunks(idx: np.ndarray, size: int) -> list[np.ndarray]:
    return [idx[i : i + size] for i in range(0, len(idx), size)]


def _pad_rows(x: np.ndarray, size: int) -> np.ndarray:
    if x.shape[0] == size:
        return x
    pad = np.zeros((size - x.shape[0], *x.shape[1:]), x.dtype)
    return np.concatenate([x, pad], axis=0)


def _blocks(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def _blocked(fn: Callable, n: int, block: int, *arrays: np.ndarray) -> list[np.ndarray]:
    """Applies fn to prompt blocks of fixed size (last block padded), concatenating on axis 1."""
    outs = []
    for sl in _blocks(n, block):
        args = [_pad_rows(a[sl], block) if a is not None else None for a in arrays]
        out = fn(*args)
        outs.append([np.asarray(o)[:, : sl.stop - sl.start] for o in out])
    return [np.concatenate(parts, axis=1) for parts in zip(*outs, strict=True)]


def run_sweep(
    model: Any,
    vectors: Any,
    prompts: SweepPrompts,
    config: Any = None,
    workdir: str | None = None,
    *,
    refusal_ids: Sequence[int] | None = None,
    progress: Callable[[int, int, float], None] | None = None,
    classify: Callable[[str], bool] | None = None,
) -> SweepResults:
    """Runs a steering sweep and its metrics on one model.

    Args:
      model: an `emojax.Model` (config, params, tokenizer), or a checkpoint directory.
      vectors: a `VectorSet` (unit `vectors [C, L, D]`, `layer_norms [L]`, `concepts`).
      prompts: the tokenised evaluation and neutral prompts (`SweepPrompts`).
      config: sweep settings (dict or ConfigDict; see `default_config`).
      workdir: where chunks (`chunks/`), `readouts.npz`, `sweep_meta.json` and
        `summary.json` go; None keeps everything in memory (no resumption).
      refusal_ids: refusal-start token ids; default from the tokenizer
        (`readouts.refusal_token_ids`).
      progress: called after each chunk with (conditions done, total, seconds elapsed).
      classify: the refusal classifier of the responses (`readouts.response_classifier`);
        None = `readouts.classify_response`.

    Returns:
      `SweepResults` with per-prompt readouts, metadata and `summary` metrics.
    """
    if isinstance(model, str | os.PathLike):
        from emojax.loading import load_model

        model = load_model(os.fspath(model))
    cfg = _resolve_config(config)
    mcfg, params, tok = model.config, model.params, model.tokenizer
    validate.sweep_inputs(mcfg, vectors, prompts, cfg)
    vecs = SteeringVectors.build(vectors, cfg["vectors"], cfg["num_random"], cfg["seed"])
    layers = resolve_layers(cfg["layers"], mcfg.num_layers)
    readout_layer = cfg["readout_layer"] % (mcfg.num_layers + 1)
    dir_layer = min(readout_layer, vecs.vectors.shape[1] - 1)
    named = vecs.names[: vecs.num_named]
    pairs, _ = joint_pairs(cfg, vecs.names, vecs.num_named)
    cond = build_conditions(
        layers,
        len(vecs.names),
        vecs.num_named,
        cfg["coefs"],
        pairs,
        cfg["joint_coefs"],
        cfg["generate_random"],
    )
    steer_all = steering_matrix(cond, vecs)
    if refusal_ids is None:
        refusal_ids = ro.refusal_token_ids(tok)
    validate.check_token_ids(refusal_ids, mcfg.vocab_size, name="refusal_ids")
    refusal = ro.refusal_mask(np.asarray(refusal_ids), mcfg.vocab_size)
    read_dirs = jnp.asarray(vecs.vectors[: vecs.num_named, dir_layer] / vecs.layer_norms[dir_layer])
    eos = tuple(mcfg.eos_token_id) or ((tok.eos_token_id,) if tok is not None else ())

    spec = {
        "config": cfg,
        "prompts": prompts.fingerprint(),
        "vectors": res.fingerprint([vecs.names, vecs.vectors, vecs.layer_norms]),
        "params": res.fingerprint(
            [np.asarray(x.reshape(-1)[:64]) for x in jax.tree.leaves(params)]
        ),
        "refusal_ids": list(map(int, refusal_ids)),
        "model": repr(mcfg),
    }
    store = None
    if workdir is not None:
        store = res.ChunkStore(os.path.join(workdir, "chunks"), res.fingerprint(spec))

    tokens, mask = jnp.asarray(prompts.tokens), jnp.asarray(prompts.mask)
    ntokens, nmask = jnp.asarray(prompts.neutral_tokens), jnp.asarray(prompts.neutral_mask)
    n, t = prompts.tokens.shape
    m, tn = prompts.neutral_tokens.shape
    w = cfg["max_new_tokens"]

    # Unsteered pass: resid[l] for prefix reuse and the baseline readouts.
    timing, t_start = {}, time.perf_counter()
    resid, base_score = _base_pass(params, mcfg, tokens, mask, refusal)
    nresid, base_last, base_nll = _base_neutral(params, mcfg, ntokens, nmask)
    base_proj = np.asarray(
        jnp.einsum("nd,jd->nj", resid[readout_layer][:, -1].astype(jnp.float32), read_dirs)
    )
    h_eval = {layer: resid[layer] for layer in layers}
    h_neutral = {layer: nresid[layer] for layer in layers}
    del resid, nresid
    timing["base_s"] = time.perf_counter() - t_start

    # Chunk sizes from the memory budget (fixed per layer, so shapes never change).
    total = len(cond.layer)
    done, t0 = 0, time.perf_counter()
    chunk_out: list[tuple[np.ndarray, dict[str, np.ndarray]]] = []
    for layer in layers:
        readout = readout_layer - layer if readout_layer > layer else None
        rows_e = rows_for_budget(
            prefill_row_bytes(mcfg, t, layer, 1, readout is not None), cfg["memory_mb"]
        )
        rows_n = rows_for_budget(prefill_row_bytes(mcfg, tn, layer, tn, False), cfg["memory_mb"])
        gen_bytes = generate_row_bytes(mcfg, t, w)
        if readout is not None:  # generation also captures the prefill for the projections
            gen_bytes += 4 * t * mcfg.d_model * (mcfg.num_layers - layer)
        rows_g = rows_for_budget(gen_bytes, cfg["memory_mb"])
        for gen_flag in (True, False):
            idx = np.nonzero((cond.layer == layer) & (cond.generate == gen_flag))[0]
            if not len(idx):
                continue
            # A chunk holds `size` conditions; each program splits prompts into blocks when
            # even one condition's rows exceed the budget.
            size = max(1, min(rows_e // n, rows_n // m, rows_g // n))
            size = min(size, len(idx))
            blk_e, blk_n, blk_g = (
                max(1, min(x // size, k)) for x, k in ((rows_e, n), (rows_n, m), (rows_g, n))
            )
            for ci, chunk in enumerate(_chunks(idx, size)):
                key = f"l{layer:03d}_{'gen' if gen_flag else 'pre'}_{ci:05d}"
                if store is not None and store.has(key):
                    out = store.load(key)
                else:
                    steer = jnp.asarray(_pad_rows(steer_all[chunk], size))
                    out = _run_chunk(
                        params,
                        mcfg,
                        layer,
                        readout,
                        steer,
                        gen_flag,
                        (tokens, mask, h_eval[layer]),
                        (ntokens, nmask, h_neutral[layer]),
                        refusal,
                        read_dirs,
                        base_last,
                        base_nll,
                        w,
                        (blk_e, blk_n, blk_g),
                    )
                    out = {k: v[: len(chunk)] for k, v in out.items()}
                    if store is not None:
                        store.save(key, out)
                chunk_out.append((chunk, out))
                done += len(chunk)
                if progress is not None:
                    progress(done, total, time.perf_counter() - t0)

    timing["chunks_s"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    flat = _assemble_flat(chunk_out, total, n, m, w, len(named))
    results = _to_grids(
        flat,
        cond,
        prompts,
        tok,
        eos,
        layers,
        vecs,
        cfg,
        pairs,
        readout_layer,
        base_score,
        base_proj,
        base_nll,
        classify or ro.classify_response,
    )
    timing["readouts_s"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    results.summary = summarize(results)
    timing["summary_s"] = time.perf_counter() - t1
    timing["total_s"] = time.perf_counter() - t_start
    results.meta["timing_s"] = timing
    results.meta["num_conditions"] = total
    if workdir is not None:
        results.save(workdir)
    return results


def _run_chunk(
    params,
    mcfg,
    layer,
    readout,
    steer,
    gen_flag,
    eval_in,
    neutral_in,
    refusal,
    read_dirs,
    base_last,
    base_nll,
    w,
    blocks,
) -> dict[str, np.ndarray]:
    tokens, mask, h = eval_in
    ntokens, nmask, nh = neutral_in
    blk_e, blk_n, blk_g = blocks
    n, m = tokens.shape[0], ntokens.shape[0]
    out = {}
    if gen_flag:  # one steered prefill serves the prefill readouts and generation
        ids, score, proj = _blocked(
            lambda tk, mk: steered_generate_and_eval(
                params,
                mcfg,
                tk,
                mk,
                steer,
                refusal,
                read_dirs,
                layer=layer,
                max_new_tokens=w,
                readout=readout,
            ),
            n,
            blk_g,
            tokens,
            mask,
        )
        out["tokens"] = ids.astype(np.int32)
    else:
        score, proj = _blocked(
            lambda tk, mk, hh: steered_eval(
                params,
                mcfg,
                tk,
                mk,
                hh,
                steer,
                refusal,
                read_dirs,
                start_layer=layer,
                readout=readout,
            ),
            n,
            blk_e,
            tokens,
            mask,
            h,
        )
    kl, nll = _blocked(
        lambda tk, mk, hh, bl, bn: steered_neutral(
            params, mcfg, tk, mk, hh, steer, bl, bn, start_layer=layer
        ),
        m,
        blk_n,
        ntokens,
        nmask,
        nh,
        base_last,
        base_nll,
    )
    out.update(refusal_score=score, projection=proj, kl=kl, nll_delta=nll)
    return out


def _assemble_flat(chunk_out, total, n, m, w, j) -> dict[str, np.ndarray]:
    flat = {
        "refusal_score": np.full((total, n), np.nan, np.float32),
        "projection": np.full((total, n, j), np.nan, np.float32),
        "kl": np.full((total, m), np.nan, np.float32),
        "nll_delta": np.full((total, m), np.nan, np.float32),
        "tokens": np.full((total, n, w), -1, np.int32),
    }
    for idx, out in chunk_out:
        for k, v in out.items():
            flat[k][idx] = v
    return flat


def _text_readouts(
    tokenizer, ids: np.ndarray, eos, harmful: np.ndarray, classify=ro.classify_response
) -> dict[str, np.ndarray]:
    """Behaviour and style readouts of generated ids [R, N, W] -> each [R, N] float.

    Steered responses repeat a lot (greedy decoding, small models), so each distinct
    response (cut at eos) is decoded and classified once.
    """
    r, n, w = ids.shape
    flat = ids.reshape(r * n, w).copy()
    is_eos = np.isin(flat, np.asarray(eos, flat.dtype)) if len(eos) else np.zeros_like(flat, bool)
    after = np.cumsum(is_eos, axis=1) > 0
    flat[after] = -1  # everything from the first eos on
    uniq, inverse = np.unique(flat, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    rows = [[int(x) for x in row if x >= 0] for row in uniq]
    texts = list(tokenizer.batch_decode(rows, skip_special_tokens=True))
    refused = np.array([classify(t) for t in texts], bool)[inverse].reshape(r, n)
    harm = np.broadcast_to(np.asarray(harmful, bool), (r, n))
    out = {
        "refused": refused.astype(np.float32),
        "harmful_compliance": (harm & ~refused).astype(np.float32),
        "over_refusal": (~harm & refused).astype(np.float32),
    }
    sty = ro.style_rates(texts)
    out.update({k: sty[k][inverse].reshape(r, n) for k in STYLE_KEYS})
    return out


def _to_grids(
    flat,
    cond,
    prompts,
    tok,
    eos,
    layers,
    vecs,
    cfg,
    pairs,
    readout_layer,
    base_score,
    base_proj,
    base_nll,
    classify=ro.classify_response,
) -> SweepResults:
    n = prompts.num_prompts
    gen = cond.generate
    text = {k: np.full((len(gen), n), np.nan, np.float32) for k in BEHAVIOUR_KEYS + STYLE_KEYS}
    if gen.any():
        texts = _text_readouts(tok, flat["tokens"][gen], eos, prompts.harmful, classify)
        for k, v in texts.items():
            text[k][gen] = v
    per_cond = {**flat, **text}
    a, i, k = len(layers), len(vecs.names), len(cfg["coefs"])
    p, kj = len(pairs), len(cfg["joint_coefs"])
    arrays = {}
    g = cond.grid_index[:, 0] >= 0
    order_g = np.lexsort(tuple(cond.grid_index[g].T[::-1]))
    jn = cond.joint_index[:, 0] >= 0
    order_j = np.lexsort(tuple(cond.joint_index[jn].T[::-1]))
    for name, v in per_cond.items():
        arrays[f"grid_{name}"] = v[g][order_g].reshape(a, i, k, *v.shape[1:])
        if p:
            arrays[f"joint_{name}"] = v[jn][order_j].reshape(a, p, kj, kj, *v.shape[1:])
    base = int(np.nonzero(cond.is_base)[0][0])
    arrays.update({f"base_{k}": text[k][base] for k in BEHAVIOUR_KEYS + STYLE_KEYS})
    base_tokens = flat["tokens"][base]
    arrays["base_refusal_score"] = np.asarray(base_score)
    arrays["base_projection"] = base_proj
    arrays["base_nll"] = np.asarray(base_nll)
    arrays["base_tokens"] = base_tokens.astype(np.int32)
    arrays["harmful"] = prompts.harmful
    arrays["request"] = prompts.request
    named_v = vecs.vectors[: vecs.num_named]
    arrays["vector_cosine"] = np.stack(
        [modularity.cosine_matrix(named_v[:, l], named_v[:, l]) for l in layers]
    ).astype(np.float32)
    named = vecs.names[: vecs.num_named]
    meta = {
        "vector_names": list(vecs.names),
        "num_named": vecs.num_named,
        "concepts": list(named),
        "layers": list(layers),
        "coefs": list(cfg["coefs"]),
        "joint_pairs": [[vecs.names[c], vecs.names[e]] for c, e in pairs],
        "joint_arms": [_arm_of(cfg, vecs.names[e]) for _, e in pairs],
        "joint_coefs": list(cfg["joint_coefs"]),
        "kinds": list(prompts.kinds),
        "num_requests": int(prompts.num_requests),
        "prompt_ids": list(prompts.ids),
        "readout_layer": int(readout_layer),
        "readout_direction_layer": int(min(readout_layer, vecs.vectors.shape[1] - 1)),
        "layer_norms": vecs.layer_norms.tolist(),
        "config": cfg,
    }
    return SweepResults(arrays, meta)


# ---------------------------------------------------------------------------------------------
# Metrics over a sweep's readouts.


def summarize(results: SweepResults) -> dict[str, Any]:
    """Steerability (with random null), modularity and Δ_steer for every sweep layer.

    Returns, per layer (key = layer index as a string):
      steerability[vector][readout]: slope, slope_std, slope_iqr, anti_steerable_fraction,
        ci [lo, hi], null_z, null_p, for readouts refusal_score (all prompts),
        harmful_compliance (harmful prompts), over_refusal (benign prompts) and failure
        (either, all prompts);
      null[readout]: mean and std of the random directions' slopes;
      cross_steering: matrix [I_named, J], selectivity [I_named],
        offtarget_kl_per_unit_effect [I_named], cosine [I_named, I_named] between the
        steering directions at the layer (emotions vs controls), rows/cols names;
      style_vs_safety[vector]; delta_steer[failure type][kappa]: estimate, lo, hi,
        controls_rate, emotion_rate, null_p (emotion arm vs controls arm, cross-fitted,
        request bootstrap; `delta_steer_from_sweep`).
    """
    arr, meta = results.arrays, results.meta
    cfg = meta["config"]
    coefs = np.asarray(meta["coefs"], np.float64)
    names = meta["vector_names"]
    num_named = meta["num_named"]
    concepts = meta["concepts"]
    harmful = np.asarray(arr["harmful"], bool)
    seed, nboot = cfg["seed"], cfg["num_bootstrap"]
    out: dict[str, Any] = {}
    request = np.asarray(arr.get("request", np.arange(len(harmful))))
    num_requests = int(meta.get("num_requests", 0)) or int(request.max(initial=-1) + 1)
    draws = stats.request_draws(num_requests, nboot, seed)  # shared by every statistic here
    for a, layer in enumerate(meta["layers"]):
        # Failure types stay separate: never pooled into one label.
        readouts = {
            "refusal_score": (arr["grid_refusal_score"][a], request),
            "harmful_compliance": (arr["grid_harmful_compliance"][a][..., harmful],
                                   request[harmful]),
            "over_refusal": (arr["grid_over_refusal"][a][..., ~harmful], request[~harmful]),
        }  # fmt: skip
        steer: dict[str, Any] = {nm: {} for nm in names[:num_named]}
        null: dict[str, Any] = {}
        for rname, (y, req) in readouts.items():
            if y.shape[-1] == 0:
                continue
            rand = y[num_named:]
            rand = rand[~np.isnan(rand).any(axis=(1, 2))] if len(rand) else rand
            null_slopes = (
                influence.random_null_slopes(coefs, rand) if len(rand) >= 2 else np.zeros(0)
            )
            null[rname] = {
                "mean": float(null_slopes.mean()) if null_slopes.size else float("nan"),
                "std": float(null_slopes.std(ddof=1)) if null_slopes.size > 1 else float("nan"),
                "slopes": null_slopes.tolist(),
            }
            for i in range(num_named):
                if np.isnan(y[i]).any():
                    continue
                st = influence.steerability(coefs, y[i])
                est, lo, hi = influence.slope_interval(coefs, y[i], request=req, weights=draws)
                entry = {k: v for k, v in st.items() if k != "per_prompt"}
                entry["ci"] = [lo, hi]
                if null_slopes.size >= 2:
                    cmp = influence.null_comparison(np.asarray(st["slope"]), null_slopes)
                    entry["null_z"], entry["null_p"] = float(cmp["z"]), float(cmp["p"])
                steer[names[i]][rname] = entry
        proj = arr["grid_projection"][a]  # [I, K, N, J]
        matrix = modularity.cross_steering_matrix(coefs, proj[:num_named])
        own = [concepts.index(nm) for nm in names[:num_named]]
        target = np.stack([proj[i, ..., own[i]] for i in range(num_named)])
        selectivity = modularity.selectivity(matrix, own)
        cross = {
            "rows": names[:num_named],
            "cols": concepts,
            "matrix": matrix.tolist(),
            "selectivity": selectivity.tolist(),
            "offtarget_kl_per_unit_effect": modularity.offtarget_kl_per_unit_effect(
                coefs, arr["grid_kl"][a][:num_named], target
            ).tolist(),
            "cosine": arr["vector_cosine"][a].tolist() if "vector_cosine" in arr else None,
        }
        if len(names) - num_named >= 2:  # random directions scored against each target
            m_rand = modularity.cross_steering_matrix(coefs, proj[num_named:])
            sel_null = modularity.selectivity_null(m_rand, own, selectivity)
            cross["selectivity_null_p"] = np.asarray(sel_null["p"]).tolist()
        style = {}
        for i in range(num_named):
            sty = np.stack([arr[f"grid_{k}"][a][i] for k in ("apology", "hedging", "warmth")])
            safety = {t: (y[i], req) for t, (y, req) in readouts.items() if t in FAILURE_TYPES}
            if np.isnan(sty).any() or any(np.isnan(v[0]).any() for v in safety.values()):
                continue
            style[names[i]] = _jsonable(
                influence.style_vs_safety(coefs, sty, safety, request, weights=draws)
            )
        delta = {}
        if "joint_harmful_compliance" in arr and "emotion" in meta.get("joint_arms", ["emotion"]):
            for ftype in FAILURE_TYPES:
                delta[ftype] = {}
                for kappa in cfg["kappas"]:
                    d = delta_steer_from_sweep(results, a, ftype, kappa, weights=draws,
                                               seed=seed)  # fmt: skip
                    delta[ftype][str(kappa)] = _delta_summary(d)
        out[str(layer)] = {
            "steerability": steer,
            "null": null,
            "cross_steering": cross,
            "style_vs_safety": style,
            "delta_steer": delta,
        }
    return out


FAILURE_TYPES = ("harmful_compliance", "over_refusal")


@dataclasses.dataclass
class JointArms:
    """The Δ_steer grids of one sweep layer for one failure type, arm by arm.

    Dimension legend: G cells of an arm (its grids' coefficient pairs, flattened), Q random
    partners, N_t prompts of the failure type, N_o prompts of the other type, M neutral.

    Attributes:
      failure_type: 'harmful_compliance' (harmful prompts) or 'over_refusal' (the others).
      fail: arm -> [G, N_t] failure indicators ('controls', 'emotion'); 'random' [Q, G', N_t].
      other: the other failure type's indicators on its prompts, same layout.
      kl: arm -> [G, M] KL(unsteered ‖ steered) on neutral prompts; 'random' [Q, G', M].
      zero: arm -> the arm's unsteered cell (both coefficients 0, first grid).
      request: int [N_t] request index of the type's prompts; other_request [N_o].
      num_requests: U.
      partners: arm -> partner vector names, one per grid.
    """

    failure_type: str
    fail: dict[str, np.ndarray]
    other: dict[str, np.ndarray]
    kl: dict[str, np.ndarray]
    zero: dict[str, int]
    request: np.ndarray
    other_request: np.ndarray
    num_requests: int
    partners: dict[str, list[str]]


def joint_arms(results: SweepResults, layer_pos: int, failure_type: str) -> JointArms:
    """Splits a sweep's joint grids into the controls, emotion and random-direction arms."""
    arr, meta = results.arrays, results.meta
    if failure_type not in FAILURE_TYPES:
        raise ValueError(f"failure_type must be one of {FAILURE_TYPES}, not {failure_type!r}")
    if "joint_harmful_compliance" not in arr:
        raise ValueError("the sweep has no joint grids (sweep.joint_* config)")
    harmful = np.asarray(arr["harmful"], bool)
    request = np.asarray(arr.get("request", np.arange(len(harmful))), np.int64)
    cols = harmful if failure_type == "harmful_compliance" else ~harmful
    other_type = FAILURE_TYPES[1 - FAILURE_TYPES.index(failure_type)]
    arms = meta.get("joint_arms") or ["emotion"] * len(meta["joint_pairs"])
    jc = np.asarray(meta["joint_coefs"], np.float64)
    k0 = int(np.flatnonzero(np.isclose(jc, 0.0))[0])
    zero = k0 * len(jc) + k0  # the (0, 0) cell of the first grid of an arm
    fail, other, kl, partners = {}, {}, {}, {}
    for arm in ARMS:
        sel = [p for p, a in enumerate(arms) if a == arm]
        if not sel:
            continue
        f = arr[f"joint_{failure_type}"][layer_pos][sel][..., cols]  # [P, K, K, N_t]
        o = arr[f"joint_{other_type}"][layer_pos][sel][..., ~cols]
        k = arr["joint_kl"][layer_pos][sel]  # [P, K, K, M]
        p = len(sel)
        if arm == "random":
            fail[arm] = f.reshape(p, -1, f.shape[-1])
            other[arm] = o.reshape(p, -1, o.shape[-1])
            kl[arm] = k.reshape(p, -1, k.shape[-1])
        else:
            fail[arm] = f.reshape(-1, f.shape[-1])
            other[arm] = o.reshape(-1, o.shape[-1])
            kl[arm] = k.reshape(-1, k.shape[-1])
        partners[arm] = [meta["joint_pairs"][q][1] for q in sel]
    return JointArms(
        failure_type=failure_type,
        fail=fail,
        other=other,
        kl=kl,
        zero={arm: zero for arm in fail},
        request=request[cols],
        other_request=request[~cols],
        num_requests=int(meta.get("num_requests", request.max(initial=-1) + 1)),
        partners=partners,
    )


def delta_steer_from_sweep(
    results: SweepResults,
    layer_pos: int,
    failure_type: str,
    kappa: float,
    *,
    weights: np.ndarray | None = None,
    neutral_weights: np.ndarray | None = None,
    tolerance: float | None = None,
    num_folds: int = 5,
    num_splits: int = 4,
    num_null: int = 16,
    seed: int = 0,
) -> dict[str, Any]:
    """Δ_steer of one failure type at one sweep layer, with its random-direction null.

    Calls `emojax.metrics.incremental.delta_steer` (controls arm vs emotion arm) and
    `delta_steer_null` (controls arm vs arms of random directions of the same shape) on the
    arms of `joint_arms`. `weights` [R, U] are the shared request draws (paired across arms,
    failure types and axis points); `tolerance` bounds how much the other failure type may
    rise at the chosen cell (None: the KL budget alone).
    """
    arms = joint_arms(results, layer_pos, failure_type)
    common = dict(
        num_requests=arms.num_requests,
        neutral_weights=neutral_weights,
        num_folds=num_folds,
        num_splits=num_splits,
        seed=seed,
        other_request=arms.other_request if tolerance is not None else None,
        tolerance=tolerance,
    )
    other = (lambda a: arms.other[a]) if tolerance is not None else (lambda a: None)
    out = incremental.delta_steer(
        arms.fail["controls"], arms.fail["emotion"], arms.kl["controls"], arms.kl["emotion"],
        arms.request, kappa, weights=weights, other_controls=other("controls"),
        other_emotion=other("emotion"), zero_controls=arms.zero["controls"],
        zero_emotion=arms.zero["emotion"], **common,
    )  # fmt: skip
    out["partners"] = arms.partners
    if "random" in arms.fail and num_null:
        null = incremental.delta_steer_null(
            arms.fail["controls"], arms.fail["random"], arms.kl["controls"], arms.kl["random"],
            arms.request, kappa, arm_size=len(arms.partners["emotion"]), num_null=num_null,
            other_controls=other("controls"), other_random=other("random"),
            zero_controls=arms.zero["controls"], zero_random=arms.zero["random"],
            observed=out["estimate"], **common,
        )  # fmt: skip
        out["null"] = null
    return out


def _delta_summary(d: dict[str, Any]) -> dict[str, Any]:
    keys = ("estimate", "lo", "hi", "controls_rate", "emotion_rate", "half_width_hi")
    out = {k: float(d[k]) for k in keys if k in d}
    if "null" in d:
        out["null_p"] = float(d["null"]["p_value"])
    return out


def _jsonable(x: Any) -> Any:
    """numpy scalars and arrays inside a result dict -> plain Python (for summary.json)."""
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    return x
