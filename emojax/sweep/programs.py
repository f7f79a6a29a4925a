"""The compiled programs of a sweep: steered prefills and steered greedy generation.

Dimension legend: C conditions, N evaluation prompts, M neutral prompts, T time, D model
width, L layers, V vocabulary, J concept readouts, W generated tokens.

One unsteered forward (`_base_pass`, `_base_neutral`) captures `resid[l]` for every prompt
(prefix reuse, DESIGN.md §2); each steered prefill then runs only layers `l..L-1`, with logits
at the first response position only (evaluation prompts) or at every position (neutral text,
for the cross-entropy change). Conditions of one layer are folded into the batch axis of a
single jitted program (`start_layer` is the only static value, so one compile per layer serves
every vector and coefficient). Steered generation (`steered_generate`) shares the prompt
prefill of the layers below the injection layer too and vmaps the rest (upper prefill and
cached greedy decoding) over conditions.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from emojax import readouts as ro
from emojax.config import ModelConfig
from emojax.generate import decode_tokens
from emojax.interventions import Intervention
from emojax.model import default_positions, embed, forward, init_cache, run_layers, unembed
from emojax.params import Params

Array = jax.Array


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
