"""KV-cache decoding with interventions active on prompt and generated tokens.

Dimension legend: B batch, T prompt length, N new tokens, S = T + N cache length,
L layers, G key/value heads, K head dim, V vocabulary.

Prompts are left-padded (`attention_mask` 0 on the left), so every row's next token is
written at the same cache slot and one jitted loop serves the batch. Additive steering
entries built with `positions=None` also act on generated tokens; entries with a position
mask act on the prompt only. Generation runs for exactly `max_new_tokens`; callers cut at
the end-of-sequence token.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental import checkify

from emojax import validate
from emojax.config import ModelConfig
from emojax.interventions import Intervention
from emojax.model import default_positions, embed, init_cache, run_layers, unembed
from emojax.params import Params

Array = jax.Array


def _pick(logits: Array, temperature: Array, rng: Array) -> Array:
    """Greedy when temperature == 0, else a sample from softmax(logits / temperature)."""
    greedy = jnp.argmax(logits, axis=-1)
    sampled = jax.random.categorical(rng, logits / jnp.maximum(temperature, 1e-6), axis=-1)
    return jnp.where(temperature > 0, sampled, greedy).astype(jnp.int32)


@validate.validated(validate.generate_inputs)
@functools.partial(jax.jit, static_argnames=("config", "max_new_tokens"))
def generate(
    params: Params,
    config: ModelConfig,
    tokens: Array,
    *,
    max_new_tokens: int,
    attention_mask: Array | None = None,
    intervention: Intervention | None = None,
    temperature: float | Array = 0.0,
    rng: Array | None = None,
) -> Array:
    """Generates `max_new_tokens` tokens after each (left-padded) prompt.

    Args:
      params: model parameters.
      config: the static model config.
      tokens: int [B, T] prompts, left-padded.
      max_new_tokens: number of tokens to generate (static).
      attention_mask: [B, T] 1 for real prompt tokens; None = all real.
      intervention: applied to the prompt and (see module docstring) to new tokens.
      temperature: 0 for greedy decoding, > 0 to sample.
      rng: PRNG key for sampling (required when temperature > 0).

    Returns:
      int32 [B, T + max_new_tokens]: the prompts followed by the generated tokens.

    Raises:
      TypeError / ValueError: invalid input, named (`emojax.validate.generate_inputs`); value
        checks run on concrete inputs only, see `checked_generate` under jit.
    """
    if max_new_tokens == 0:  # the prefill below always picks one token
        return tokens.astype(jnp.int32)
    b, t = tokens.shape
    s = t + max_new_tokens
    tokens = tokens.astype(jnp.int32)
    mask = jnp.ones((b, t), jnp.int32) if attention_mask is None else attention_mask
    mask = mask.astype(jnp.int32)
    iv = Intervention.none(config) if intervention is None else intervention
    rng = jax.random.PRNGKey(0) if rng is None else rng
    temperature = jnp.asarray(temperature, jnp.float32)
    dtype = params.embed.dtype
    cache = init_cache(config, b, s, dtype)
    k_valid = jnp.concatenate([mask, jnp.ones((b, max_new_tokens), jnp.int32)], 1).astype(bool)

    positions = default_positions(tokens, mask)
    h = embed(params, config, tokens, positions)
    h, _, cache = run_layers(
        params,
        config,
        h,
        positions=positions,
        q_slots=jnp.arange(t),
        k_valid=k_valid,
        intervention=iv,
        weights=iv.position_weights(b, t),
        capture=False,
        cache=cache,
        cache_slot=0,
        out_index=jnp.full((b, 1), t - 1),
    )
    rng, key = jax.random.split(rng)
    first = _pick(unembed(params, config, h[:, -1]), temperature, key)
    new = decode_tokens(
        params,
        config,
        first,
        positions[:, -1] + 1,
        cache,
        k_valid=k_valid,
        intervention=iv,
        weights=iv.position_weights(b, 1, new_tokens=True),
        start_slot=t,
        num_steps=max_new_tokens - 1,
        pick=lambda logits, key: _pick(logits, temperature, key),
        rng=rng,
    )
    return jnp.concatenate([tokens, new], axis=1)


def decode_tokens(
    params: Params,
    config: ModelConfig,
    first: Array,
    position: Array,
    cache: tuple[Array, Array],
    *,
    k_valid: Array,
    intervention: Intervention,
    weights: Array,
    start_slot: int,
    num_steps: int,
    pick,
    rng: Array | None = None,
) -> Array:
    """Cached decoding after a prefill: `first` [B] then `num_steps` more tokens.

    Args:
      params: model parameters.
      config: the static model config.
      first: int32 [B] the token chosen after the prompt (written at `start_slot`).
      position: [B] its position id.
      cache: (keys, values) [L, B, G, S, K] holding the prompt.
      k_valid: [B, S] real-token mask over cache slots.
      intervention: applied at every step.
      weights: [A, B, 1] position weights of the additive entries for new tokens.
      start_slot: cache slot of `first`.
      num_steps: tokens to generate after `first` (static).
      pick: (logits [B, V], key) -> int32 [B].
      rng: PRNG key passed to `pick` (split per step).

    Returns:
      int32 [B, 1 + num_steps]: `first` and the generated tokens.
    """
    rng = jax.random.PRNGKey(0) if rng is None else rng

    def step(carry, i):
        token, position, cache, rng = carry
        slot = start_slot + i
        x = embed(params, config, token[:, None], position[:, None])
        x, _, cache = run_layers(
            params,
            config,
            x,
            positions=position[:, None],
            q_slots=slot[None],
            k_valid=k_valid,
            intervention=intervention,
            weights=weights,
            capture=False,
            cache=cache,
            cache_slot=slot,
        )
        rng, key = jax.random.split(rng)
        nxt = pick(unembed(params, config, x[:, -1]), key)
        return (nxt, position + 1, cache, rng), nxt

    carry = (first, position, cache, rng)
    _, rest = jax.lax.scan(step, carry, jnp.arange(num_steps))
    return jnp.concatenate([first[:, None], rest.T], axis=1)


def checked_generate(
    params: Params, config: ModelConfig, tokens: Array, **kwargs: Any
) -> tuple[checkify.Error, Array]:
    """`generate` with its value checks as checkify checks (also on traced inputs).

    Args:
      params, config, tokens, **kwargs: as for `generate` (`max_new_tokens` static).

    Returns:
      `(err, tokens [B, T + max_new_tokens])`; see `emojax.model.checked_forward`.
    """
    return validate.checkified(generate, params, config, tokens, kwargs)
