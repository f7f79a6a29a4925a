"""The forward pass: `lax.scan` over stacked layers, with capture and interventions.

Dimension legend: B batch, T time, S key time (cache length), D model width, L layers,
H heads, G key/value heads, K head dim, V vocabulary, P logit positions.

`resid[l]` is the residual stream entering decoder layer `l` (after that layer's input
interventions); `resid[0]` is the embedding output and `resid[L]` leaves the last layer,
before the final norm. Steering "at layer l" adds to `resid[l]`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import struct

from emojax import layers as nn
from emojax.config import ModelConfig
from emojax.interventions import Intervention, ablate, apply_at_input
from emojax.params import LayerParams, Params

Array = jax.Array


@struct.dataclass
class Output:
    """What `forward` returns.

    Attributes:
      logits: float32 [B, T, V], or [B, P, V] at `logit_positions`; None if not requested.
      resid: [L + 1 - start_layer, B, T, D] residual stream per layer; None if not captured.
    """

    logits: Array | None
    resid: Array | None


def default_positions(tokens: Array, attention_mask: Array | None) -> Array:
    """RoPE / learned positions [B, T]: 0.. over real tokens, so left padding is invisible."""
    if attention_mask is None:
        return jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
    return jnp.maximum(jnp.cumsum(attention_mask.astype(jnp.int32), axis=1) - 1, 0)


def embed(params: Params, config: ModelConfig, tokens: Array, positions: Array) -> Array:
    """resid[0] [B, T, D]: token embeddings (scaled for Gemma) plus learned positions."""
    h = params.embed[tokens]
    if config.embed_scale != 1.0:  # Gemma rounds the normaliser to the model dtype.
        h = h * jnp.asarray(config.embed_scale, h.dtype)
    if params.pos_embed is not None:
        h = h + params.pos_embed[positions]
    return h


def unembed(params: Params, config: ModelConfig, h: Array) -> Array:
    """Final norm and vocabulary projection of h [..., D] -> float32 logits [..., V]."""
    x = nn.norm(params.final_norm, h, config)
    w = params.embed.T if params.lm_head is None else params.lm_head
    logits = nn.dense(x, w).astype(jnp.float32)  # ...d,dv->...v
    if config.final_softcap is not None:
        logits = jnp.tanh(logits / config.final_softcap) * config.final_softcap
    return logits


def decoder_layer(
    lp: LayerParams,
    config: ModelConfig,
    h: Array,
    *,
    cos: Array,
    sin: Array,
    mask: Array,
    ablate_dirs: Array,
    ablate_w: Array,
    kv: tuple[Array, Array, Array] | None = None,
) -> tuple[Array, tuple[Array, Array]]:
    """One pre-norm decoder layer on h [B, T, D] (one layer's slice of LayerParams).

    Args:
      lp: this layer's parameters.
      config: the model config.
      h: the layer input (interventions at the input already applied).
      cos: rotary table [B, T, K] (ignored for learned positions).
      sin: rotary table [B, T, K].
      mask: boolean attention mask broadcastable to [B, G, R, T, S].
      ablate_dirs: [R, D] unit directions projected out of this layer's writes.
      ablate_w: [R] 1 where direction r is ablated at this layer.
      kv: for cached decoding, (key cache [L, B, S, G, K], value cache, this layer's index,
        write slot): this layer's keys and values are written in place at `slot`.

    Returns:
      The layer output [B, T, D] and the (updated) caches, or (k, v) of this layer.
    """
    x = nn.norm(lp.attn_norm, h, config)
    q, k, v = nn.project_qkv(lp, config, x, cos, sin)
    if kv is not None:
        # The whole [L, ...] cache is a loop carry: writing only the new slots of this layer
        # keeps the update in place (a per-layer cache as scan xs/ys is copied every step).
        k_all, v_all, index, slot = kv
        at = (index, 0, slot, 0, 0)
        k_all = jax.lax.dynamic_update_slice(k_all, k[None].astype(k_all.dtype), at)
        v_all = jax.lax.dynamic_update_slice(v_all, v[None].astype(v_all.dtype), at)
        k = jax.lax.dynamic_index_in_dim(k_all, index, 0, keepdims=False)
        v = jax.lax.dynamic_index_in_dim(v_all, index, 0, keepdims=False)
    attn = nn.attend(lp, config, q, k, v, mask)
    if lp.post_attn_norm is not None:
        attn = nn.norm(lp.post_attn_norm, attn, config)
    h = h + ablate(attn, ablate_dirs, ablate_w)
    x = nn.norm(lp.mlp_norm, h, config)
    out = nn.mlp(lp, config, x)
    if lp.post_mlp_norm is not None:
        out = nn.norm(lp.post_mlp_norm, out, config)
    h = h + ablate(out, ablate_dirs, ablate_w)
    return h, ((k_all, v_all) if kv is not None else (k, v))


def run_layers(
    params: Params,
    config: ModelConfig,
    h: Array,
    *,
    positions: Array,
    q_slots: Array,
    k_valid: Array,
    intervention: Intervention,
    weights: Array,
    start_layer: int = 0,
    capture: bool = True,
    cache: tuple[Array, Array] | None = None,
    cache_slot: Array | int = 0,
) -> tuple[Array, Array | None, tuple[Array, Array] | None]:
    """Scans layers `start_layer..L-1` over h [B, T, D].

    Args:
      params: model parameters.
      config: the model config.
      h: residual entering `start_layer`.
      positions: [B, T] position ids (RoPE or learned).
      q_slots: [T] sequence slots of the tokens in h.
      k_valid: [B, S] real-token mask over the keys (S = T without a cache).
      intervention: the intervention.
      weights: [A, B, T] position weights of the additive entries for these tokens.
      start_layer: first layer (static).
      capture: also return every layer's input.
      cache: (keys, values) [L, B, S, G, K] to write at `cache_slot` and attend over; only
        layers `start_layer..L-1` are written.
      cache_slot: slot where these tokens' keys and values are written.

    Returns:
      (output of the last layer [B, T, D], inputs of each layer [L', B, T, D] or None,
      the updated full [L, ...] cache or None).
    """
    cos, sin = nn.rope_tables(config, positions, h.dtype)
    k_slots = jnp.arange(k_valid.shape[1])
    full, sliding = nn.attention_mask(q_slots, k_slots, k_valid, config.sliding_window)
    sliding_flags = jnp.asarray(config.sliding_layers or (False,) * config.num_layers)
    iv = intervention

    def layer(h, lp, layer_slices, is_sliding, kv):
        h = apply_at_input(iv, h, layer_slices, weights)
        out, new_kv = decoder_layer(
            lp,
            config,
            h,
            cos=cos,
            sin=sin,
            mask=jnp.where(is_sliding, sliding, full),
            ablate_dirs=iv.ablate_dirs,
            ablate_w=layer_slices[1],
            kv=kv,
        )
        return h, out, new_kv

    xs = slice_layers((params.layers, iv.per_layer(), sliding_flags), start_layer)
    if cache is None:

        def body(h, xs):
            h_in, out, _ = layer(h, *xs, None)
            return out, (h_in if capture else None)

        h, captured = jax.lax.scan(body, h, xs)
        return h, captured, None

    def cached_body(carry, xs):
        h, k_all, v_all = carry
        *layer_xs, index = xs
        h_in, out, (k_all, v_all) = layer(h, *layer_xs, (k_all, v_all, index, cache_slot))
        return (out, k_all, v_all), (h_in if capture else None)

    indices = jnp.arange(start_layer, config.num_layers)
    (h, k_all, v_all), captured = jax.lax.scan(cached_body, (h, *cache), (*xs, indices))
    return h, captured, (k_all, v_all)


def slice_layers(tree, start: int):
    """Leaves [L, ...] -> [L - start, ...]."""
    return jax.tree.map(lambda x: x[start:], tree)


@functools.partial(jax.jit, static_argnames=("config", "start_layer", "return_logits", "capture"))
def forward(
    params: Params,
    config: ModelConfig,
    tokens: Array,
    *,
    attention_mask: Array | None = None,
    positions: Array | None = None,
    intervention: Intervention | None = None,
    start_layer: int = 0,
    resid: Array | None = None,
    logit_positions: Array | None = None,
    return_logits: bool = True,
    capture: bool = True,
) -> Output:
    """Runs the model on a batch of token sequences.

    Args:
      params: model parameters (per-layer leaves stacked on axis 0).
      config: the static model config.
      tokens: int [B, T] token ids (left-padded when rows differ in length).
      attention_mask: [B, T], 1 for real tokens, 0 for padding; None = all real.
      positions: [B, T] position ids; default counts real tokens from 0.
      intervention: steering / ablation / capping to apply, or None.
      start_layer: first layer to run (static); requires `resid` when > 0.
      resid: [B, T, D] residual entering `start_layer` (from an earlier forward's capture).
      logit_positions: int [B, P]: compute logits only at these positions.
      return_logits: compute logits at all (the vocabulary projection is the largest matmul
        of small models, so readouts that need none skip it).
      capture: return the residual stream of every layer.

    Returns:
      An `Output` with `logits` and `resid` (see `Output`).
    """
    b, t = tokens.shape
    if not 0 <= start_layer < config.num_layers + (resid is not None):
        raise IndexError(f"start_layer {start_layer} out of range for {config.num_layers} layers")
    if start_layer > 0 and resid is None:
        raise ValueError("start_layer > 0 needs the residual entering that layer (resid=...)")
    if positions is None:
        positions = default_positions(tokens, attention_mask)
    valid = jnp.ones((b, t), bool) if attention_mask is None else attention_mask.astype(bool)
    if resid is None:
        h = embed(params, config, tokens, positions)
    else:
        if resid.shape != (b, t, config.d_model):
            raise ValueError(f"resid has shape {resid.shape}, expected {(b, t, config.d_model)}")
        h = resid.astype(params.embed.dtype)
    iv = Intervention.none(config) if intervention is None else intervention

    slots = jnp.arange(t)
    h, captured, _ = run_layers(
        params,
        config,
        h,
        positions=positions,
        q_slots=slots,
        k_valid=valid,
        intervention=iv,
        weights=iv.position_weights(b, t),
        start_layer=start_layer,
        capture=capture,
    )
    resid_out = jnp.concatenate([captured, h[None]], axis=0) if capture else None
    logits = None
    if return_logits:
        if logit_positions is not None:
            h = jnp.take_along_axis(h, logit_positions[..., None].astype(jnp.int32), axis=1)
        logits = unembed(params, config, h)
    return Output(logits=logits, resid=resid_out)


def loss_fn(
    params: Params,
    config: ModelConfig,
    tokens: Array,
    loss_mask: Array,
    attention_mask: Array | None = None,
) -> Array:
    """Mean next-token cross-entropy over positions where loss_mask [B, T] is 1."""
    logits = forward(params, config, tokens, attention_mask=attention_mask, capture=False).logits[
        :, :-1
    ]
    targets = tokens[:, 1:]
    logp = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    m = loss_mask[:, 1:].astype(jnp.float32)
    return (nll * m).sum() / jnp.maximum(m.sum(), 1.0)
