"""The forward pass: `lax.scan` over stacked layers, with capture and interventions.

Dimension legend: B batch, T time, S key time (cache length), D model width, L layers,
H heads, G key/value heads, K head dim, V vocabulary, P logit positions.

`resid[l]` is the residual stream entering decoder layer `l` (after that layer's input
interventions); `resid[0]` is the embedding output and `resid[L]` leaves the last layer,
before the final norm. Steering "at layer l" adds to `resid[l]`.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from jax.experimental import checkify

from emojax import layers as nn
from emojax import validate
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
        A plain array, so indexing it out of range clamps as every JAX array does
        (`out.resid[31]` of a 30-layer model is `resid[30]`); `resid_at(l)` raises instead.
      start_layer: the call's `start_layer` (static): `resid[0]` enters that layer.
    """

    logits: Array | None
    resid: Array | None
    start_layer: int = struct.field(pytree_node=False, default=0)

    def resid_at(self, layer: int) -> Array:
        """`resid[layer]` [..., B, T, D], the residual stream entering decoder layer `layer`.

        `layer` is the model's layer index whatever `start_layer` was: 0 is the embedding
        output, L (the model's layers) leaves the last layer before the final norm, and a
        negative index counts back from L + 1 (-1 is L). Leading axes added by `vmap` stay.

        Raises:
          TypeError: `layer` is not a concrete integer.
          IndexError: `layer` is outside 0..L, or below `start_layer` (not computed).
          ValueError: `forward` ran with `capture=False`.
        """
        if self.resid is None:
            raise ValueError("no residual stream to index: forward ran with capture=False")
        i = validate.check_int(layer, name="layer")
        last = self.start_layer + self.resid.shape[-4] - 1  # L
        site = i + last + 1 if i < 0 else i
        if not 0 <= site <= last:
            raise IndexError(
                f"resid layer {i} is out of range for a model with {last} layers (resid[l] "
                f"enters layer l for l in 0..{last - 1}; resid[{last}] leaves the last layer)"
            )
        if site < self.start_layer:
            raise IndexError(
                f"resid layer {i} was not computed: forward started at start_layer="
                f"{self.start_layer} (layers {self.start_layer}..{last} are captured)"
            )
        return self.resid[..., site - self.start_layer, :, :, :]


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
    kv: tuple[Array, Array, Array, Array] | None = None,
    out_index: Array | None = None,
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
      kv: for cached decoding, (key cache [L, B, G, S, K], value cache, this layer's index,
        write slot): this layer's keys and values are written in place at `slot`.
      out_index: int [B, P]: compute the output only at these positions (queries, attention,
        MLP); keys and values still cover all T positions.

    Returns:
      The layer output [B, T, D] ([B, P, D] with `out_index`) and the (updated) caches, or
      (k, v) [B, G, T, K] of this layer.
    """
    x = nn.norm(lp.attn_norm, h, config)
    k, v = nn.project_kv(lp, config, x, cos, sin)
    if kv is not None:
        # The whole [L, ...] cache is a loop carry: writing only the new slots of this layer
        # keeps the update in place (a per-layer cache as scan xs/ys is copied every step).
        k_all, v_all, index, slot = kv
        at = (index, 0, 0, slot, 0)
        k_all = jax.lax.dynamic_update_slice(k_all, k[None].astype(k_all.dtype), at)
        v_all = jax.lax.dynamic_update_slice(v_all, v[None].astype(v_all.dtype), at)
        k = jax.lax.dynamic_index_in_dim(k_all, index, 0, keepdims=False)
        v = jax.lax.dynamic_index_in_dim(v_all, index, 0, keepdims=False)
    if out_index is not None:
        take = lambda a, axis=1: jnp.take_along_axis(
            a, jnp.expand_dims(out_index, tuple(range(2, a.ndim))), axis=axis
        )
        h, x, cos, sin = take(h), take(x), take(cos), take(sin)
        mask = jnp.take_along_axis(mask, out_index[:, None, None, :, None], axis=3)
    q = nn.project_q(lp, config, x, cos, sin)
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
    end_layer: int | None = None,
    capture: bool = True,
    cache: tuple[Array, Array] | None = None,
    cache_slot: Array | int = 0,
    out_index: Array | None = None,
) -> tuple[Array, Array | None, tuple[Array, Array] | None]:
    """Scans layers `start_layer..end_layer-1` over h [B, T, D].

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
      end_layer: one past the last layer (static); None = L.
      capture: also return every layer's input.
      cache: (keys, values) [L, B, G, S, K] (see `init_cache`) to write at `cache_slot` and
        attend over; only layers `start_layer..end_layer-1` are written.
      cache_slot: slot where these tokens' keys and values are written.
      out_index: int [B, P]: positions whose output is needed. The last layer then computes
        queries, attention and MLP there only (its keys and values, the cache and every
        captured input still cover all T positions); the output is [B, P, D].

    Returns:
      (output of the last layer [B, T, D] or [B, P, D], inputs of each layer [L', B, T, D]
      or None, the updated full [L, ...] cache or None).
    """
    end_layer = config.num_layers if end_layer is None else end_layer
    cos, sin = nn.rope_tables(config, positions, h.dtype)
    k_slots = jnp.arange(k_valid.shape[1])
    full, sliding = nn.attention_mask(q_slots, k_slots, k_valid, config.sliding_window)
    sliding_flags = jnp.asarray(config.sliding_layers or (False,) * config.num_layers)
    iv = intervention

    def layer(h, kv, lp, layer_slices, is_sliding, index, out_index=None):
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
            kv=None if kv is None else (*kv, index, cache_slot),
            out_index=out_index,
        )
        return h, out, (new_kv if kv is not None else None)

    # Layers are read by index from the stacked leaves: slicing the stack to
    # [start_layer:end_layer] first would copy those layers' weights on every call.
    tree = (params.layers, iv.per_layer(), sliding_flags)
    at = lambda i: jax.tree.map(lambda x: jax.lax.dynamic_index_in_dim(x, i, keepdims=False), tree)
    last = end_layer - 1 if out_index is not None and end_layer > start_layer else None
    scanned = jnp.arange(start_layer, end_layer if last is None else last)

    def body(carry, index):
        h, kv = carry
        h_in, out, kv = layer(h, kv, *at(index), index)
        return (out, kv), (h_in if capture else None)

    (h, cache), captured = jax.lax.scan(body, (h, cache), scanned)
    if last is not None:  # the last layer on its own, with queries at out_index only
        h_in, h, cache = layer(h, cache, *at(last), last, out_index)
        if capture:
            captured = jnp.concatenate([captured, h_in[None]], axis=0)
    return h, captured, cache


def init_cache(config: ModelConfig, batch: int, length: int, dtype) -> tuple[Array, Array]:
    """An empty KV cache: zero keys and values [L, B, G, S, K] for `length` slots.

    Head-major (G before S) so that each layer's keys for one row and head are contiguous:
    a decoding step's attention reads them in place.
    """
    shape = (config.num_layers, batch, config.num_kv_heads, length, config.head_dim)
    return jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)


@validate.validated(validate.forward_inputs)
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
      logit_positions: int [B, P]: compute logits only at these positions. Without
        capture, the last layer then also runs only there (its keys and values still
        cover every position), which the returned logits do not depend on.
      return_logits: compute logits at all (the vocabulary projection is the largest matmul
        of small models, so readouts that need none skip it).
      capture: return the residual stream of every layer.

    Returns:
      An `Output` with `logits` and `resid` (see `Output`).

    Raises:
      TypeError / ValueError: invalid input, named (`emojax.validate.forward_inputs`); value
        checks run on concrete inputs only, see `checked_forward` under jit.
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

    if logit_positions is not None:
        logit_positions = logit_positions.astype(jnp.int32)
    # Without capture, only the logit positions of the last layer's output are needed.
    trim = logit_positions is not None and not capture and start_layer < config.num_layers
    h, captured, _ = run_layers(
        params,
        config,
        h,
        positions=positions,
        q_slots=jnp.arange(t),
        k_valid=valid,
        intervention=iv,
        weights=iv.position_weights(b, t),
        start_layer=start_layer,
        capture=capture,
        out_index=logit_positions if trim else None,
    )
    resid_out = jnp.concatenate([captured, h[None]], axis=0) if capture else None
    logits = None
    if return_logits:
        if logit_positions is not None and not trim:
            h = jnp.take_along_axis(h, logit_positions[..., None], axis=1)
        logits = unembed(params, config, h)
    return Output(logits=logits, resid=resid_out, start_layer=start_layer)


def checked_forward(
    params: Params, config: ModelConfig, tokens: Array, **kwargs: Any
) -> tuple[checkify.Error, Output]:
    """`forward` with its value checks as checkify checks (also on traced inputs).

    Args:
      params, config, tokens, **kwargs: as for `forward`.

    Returns:
      `(err, out)`: `err.throw()` raises a `JaxRuntimeError` naming the first failed check
      (e.g. "tokens[1, 3] = 300 is not a token id ..."); `out` is forward's `Output`.
      Jit it with `static_argnames=("config", "start_layer", "return_logits", "capture")`.
    """
    return validate.checkified(forward, params, config, tokens, kwargs)


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
